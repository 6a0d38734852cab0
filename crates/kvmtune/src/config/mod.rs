//! The VM configuration model and its readers.
//!
//! Every reader turns one format into the same typed model, [`model::VmConfig`], whose values
//! carry [`span::Span`]s back into the original text. Rules read the model; diagnostics and
//! fixes use the spans. A new format gets a reader module here that produces a `VmConfig`.
//!
//! - [`libvirt`]: libvirt domain XML (roxmltree keeps byte ranges; edits splice the original).

pub mod cpuset;
pub mod libvirt;
pub mod libvirt_edit;
pub mod model;
pub mod shell;
pub mod span;

use thiserror::Error;

pub use model::VmConfig;
pub use span::{SourceText, Span};

/// Why a VM config could not be read. Every variant carries the place in the file.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Not well-formed XML.
    #[error("{path}:{line}:{column}: malformed XML: {message}")]
    MalformedXml { path: String, line: u32, column: u32, message: String },
    /// Well-formed, but a value has the wrong type or an element is one libvirt would reject.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: String, line: u32, column: u32, message: String },
}
