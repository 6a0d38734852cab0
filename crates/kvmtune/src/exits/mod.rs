//! VM-exit statistics: one profile model, and readers for the text users already have
//! (`perf kvm stat report`/`live`, `kvm_stat`), each a separate format module here.
//!
//! A profile is input data like a host snapshot or a VM config; the diagnosis that reads it lives
//! in [`crate::analysis::exit_rules`].

pub mod model;
pub mod parse;
pub mod record;

pub use model::{ExitProfile, ExitRow, Isa};
pub use parse::{ExitParseError, parse};
