//! VM-exit statistics: one profile model, one vocabulary of what each row counts
//! ([`reasons`]), readers for the text users already have (`perf kvm stat report`/`live`,
//! `kvm_stat`, `virsh domstats`, QMP), one module per format under [`read`], and the recorder
//! that samples a running VM ([`record`]).
//!
//! A profile is input data like a host snapshot or a VM config; the diagnosis that reads it lives
//! in [`crate::analysis::exit_rules`].

pub mod model;
pub mod read;
pub mod reasons;
pub mod record;

pub use model::{ExitProfile, ExitRow, Isa, RowKind};
pub use read::{ExitParseError, parse};
