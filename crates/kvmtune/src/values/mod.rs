//! The value types every layer shares, and nothing else: the leaf every other module may use
//! and which uses none of them. CPU sets, release numbers, PCI addresses, sizes, byte spans
//! into a source text, escaping for the formats kvmtune writes, and small English.

pub mod cpuset;
pub mod escape;
pub mod pci;
pub mod size;
pub mod span;
pub mod text;
pub mod version;

pub use cpuset::{CpuListError, CpuSet};
pub use pci::{PciAddress, PciAddressError};
pub use span::{SourceText, Span};
pub use version::Version;
