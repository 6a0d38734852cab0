//! Every running QEMU/KVM VM on this host, now: found by its QEMU process ([`discover`]), its
//! KVM counters read through its monitor (QMP `query-stats`, or libvirt's monitor through
//! virsh), and what they mean ([`view`]: rates, the busiest exit kind, halt polling, and the
//! same EXIT diagnosis as `exits analyze`). `kvmtune top` and `kvmtune exporter` show it.
//!
//! Reading never changes a VM: `query-stats` only reads KVM's binary statistics.

pub mod discover;
pub mod view;

pub use discover::{LiveVm, discover};
pub use view::{Tracepoints, VmReading, VmView, read_all};
