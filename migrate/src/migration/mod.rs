//! Live and offline migration, vzmigrate-style: preflight, iterative file sync while the
//! container runs, freeze, dump, final sync, restore on the destination, announce, clean up the
//! source; rollback on any failure after the freeze.

pub mod converge;
pub mod dest;
pub mod fault;
pub mod hostops;
pub mod image_stream;
pub mod journal;
pub mod link;
pub mod preflight;
pub mod recovery;
pub mod report;
pub mod source;

#[cfg(test)]
mod rollback_tests;
#[cfg(test)]
mod testkit;
