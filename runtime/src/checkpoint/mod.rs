//! CRIU driven over its RPC (`criu swrk`): feature checks, dump, restore.
