//! kvmtune's part of a libvirt domain's `<metadata>`: what the VM asks of its host while it
//! runs. The libvirt hook (`kvmtune hook`) acts only on domains that carry it; `tune` writes
//! it from the plan's [`HostSide`]; `check` validates it; [`crate::config::libvirt`] reads it
//! into [`crate::config::model::HostRequest`].
//!
//! ```xml
//! <metadata>
//!   <kvmtune:host xmlns:kvmtune="https://kvmtune.dev/xmlns/libvirt/host/1">
//!     <kvmtune:isolate housekeeping="0-1" irqs="yes"/>  <!-- host tasks, IRQs off the VM's pins -->
//!     <kvmtune:cpufreq governor="performance"/>          <!-- and/or epp="..." -->
//!     <kvmtune:hugepages/>                               <!-- as <memoryBacking> and <memory> need -->
//!     <kvmtune:vfio single-gpu="no">                     <!-- each device with its IOMMU group -->
//!       <kvmtune:device address="0000:01:00.0"/>
//!     </kvmtune:vfio>
//!   </kvmtune:host>
//! </metadata>
//! ```
//!
//! libvirt keeps a `<metadata>` child verbatim as long as it has a namespace of its own
//! (libvirt docs/formatdomain.rst, "General metadata").

use serde::Serialize;

use crate::values::{CpuSet, PciAddress};

/// The namespace of `<kvmtune:host>`; the version is its last segment.
pub const NAMESPACE: &str = "https://kvmtune.dev/xmlns/libvirt/host/1";
/// The prefix kvmtune writes (a domain may use any prefix for the namespace).
pub const PREFIX: &str = "kvmtune";
/// The parts `<kvmtune:host>` may hold.
pub const PARTS: [&str; 4] = ["isolate", "cpufreq", "hugepages", "vfio"];

/// `<kvmtune:host>` for a plan's host side, one line per element (the caller indents: the
/// first and last lines are the element's own, the others one level deeper, the devices two),
/// with attribute values in `quote`.
pub fn render_lines(side: &HostSide, quote: char) -> Vec<(usize, String)> {
    let q = quote;
    let mut lines = vec![(0, format!("<{PREFIX}:host xmlns:{PREFIX}={q}{NAMESPACE}{q}>"))];
    lines.push((1, format!("<{PREFIX}:isolate housekeeping={q}{}{q} irqs={q}yes{q}/>", side.housekeeping)));
    if let Some(governor) = side.governor {
        lines.push((1, format!("<{PREFIX}:cpufreq governor={q}{governor}{q}/>")));
    }
    if side.hugepages.is_some() {
        lines.push((1, format!("<{PREFIX}:hugepages/>")));
    }
    if !side.devices.is_empty() {
        lines.push((1, format!("<{PREFIX}:vfio single-gpu={q}no{q}>")));
        for device in &side.devices {
            lines.push((2, format!("<{PREFIX}:device address={q}{device}{q}/>")));
        }
        lines.push((1, format!("</{PREFIX}:vfio>")));
    }
    lines.push((0, format!("</{PREFIX}:host>")));
    lines
}

/// Hugepages a VM needs on one node (`None`: from the host-wide pool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HugepageNeed {
    pub size_kib: u64,
    pub count: u64,
    pub node: Option<u32>,
}

/// The host side of a VM's plan: what `kvmtune host prepare` and `kvmtune vfio bind` do for it
/// while it runs. The plan's text prints it as a command line, and the libvirt domain carries it
/// as `<metadata><kvmtune:host>` ([`render_lines`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSide {
    /// Every CPU the VM takes from the host: its vCPUs, and its emulator and iothreads where
    /// they are not on housekeeping CPUs.
    pub cpus: CpuSet,
    pub housekeeping: CpuSet,
    pub hugepages: Option<HugepageNeed>,
    /// Set only where the host runs a slow governor.
    pub governor: Option<&'static str>,
    /// PCI devices handed to vfio-pci, each with its IOMMU group.
    pub devices: Vec<PciAddress>,
}
