//! Snapshots: a checkpoint plus the files at that moment, kept in a local store.

pub mod schedule;
