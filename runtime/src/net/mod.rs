//! Container networking: venet (routed veth), veth (bridged), device passthrough, announce.
