//! Changes to a host (cpusets, IRQ affinity, governor, hugepages, vfio binding), journaled
//! before they are made and undone exactly. The only part of kvmtune that writes to a host,
//! and only with `--apply`.
//!
//! - [`change`]: what a change does, as data ([`HostAction`]: a path, its old value, its new
//!   value, and why), and how each kind of change is made and undone, one type per kind.
//!   Analysis produces actions (the planner's hugepage reservation, the fixes of host rules);
//!   nothing is written by producing one. Every change goes through a [`crate::host::Host`]:
//!   the machine itself, or a directory laid out like a host (tests, dry runs).
//!
//! - [`journal`]: every write recorded with the file's original bytes and synced before it is
//!   made; `release` replays a VM's records backwards, also after kill -9 at any step.
//!
//! - [`prepare`]: what `kvmtune host prepare` changes for one VM (cpufreq, hugepages, host
//!   tasks and kernel threads, IRQs and irqbalance, workqueues), with every refusal decided
//!   before the first write.
//! - [`vfio`]: what `kvmtune vfio bind` changes: each named device's whole IOMMU group handed
//!   to vfio-pci, with the refusals (no IOMMU, a device the host uses).
//!
//! - [`hook`]: the libvirt hook, which runs `prepare` and `vfio` at a VM's start and undoes
//!   them at its stop, for domains whose `<metadata>` asks.
//!
//! A new kind of change (a new kind of file or setting) is a file in [`change`]; a new action
//! of an existing kind is a constructor of [`HostAction`]. [`Journal::apply`] makes any list of
//! them, journaled.

pub mod change;
pub mod hook;
pub mod journal;
pub mod prepare;
pub mod private_files;
pub mod vfio;

pub use change::{Applied, ChangeKind, HostAction, HostChangeError, Outcome, Recompute};
pub use journal::{Journal, JournalError, JournalKind, Released, VmJournal};
