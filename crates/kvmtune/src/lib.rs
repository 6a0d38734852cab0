//! kvmtune: make Windows guests on KVM fast, and prove it.
//!
//! Data flows one way through this crate, and its modules are laid out in that order:
//!
//! 1. **Inputs.**
//!    - [`host`]: facts about the machine (topology, memory, KVM, IOMMU, host state), read
//!      through the [`host::HostSource`] trait from the live host or from a snapshot directory.
//!    - [`config`]: the tuning-relevant model of a VM, read from libvirt XML, QEMU argv or Proxmox.
//! 2. **Knowledge.** [`knowledge`]: facts about KVM, QEMU, libvirt and Windows, each with its
//!    source, that the analysis relies on (for example which CPUID bit is which enlightenment).
//! 3. **Analysis.** [`analysis`]: rules over host facts and VM configs, the planner and the
//!    exit diagnosis. Every rule is one declaration in a registry with an id, an explanation and a
//!    source.
//! 4. **Outputs.** [`output`]: renderers for people (text) and for tools (JSON, later SARIF,
//!    libvirt XML, QEMU argv, Proxmox, KubeVirt).
//! 5. **Host changes.** [`hostchange`]: the only part that writes to a host; journaled, opt-in.
//!
//! All `unsafe` code lives in `sys` (private to the crate; typed KVM handles).

pub mod analysis;
pub mod config;
pub mod exits;
pub mod host;
pub mod hostchange;
pub mod knowledge;
pub mod live;
pub mod output;
mod sys;
pub mod values;
