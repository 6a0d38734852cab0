//! What a guest sees of its virtual machine, as the guest program `kvmtune-guest`
//! (`crates/kvmtune-guest`) reports it from inside: the report's model and reader
//! ([`report`]), and the QEMU guest agent that copies the program into a running guest, runs
//! it and brings the report back ([`agent`]).

pub mod agent;
pub mod report;

pub use report::{GuestReport, ReportError};
