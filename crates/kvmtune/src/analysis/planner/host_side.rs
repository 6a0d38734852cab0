//! The host side of a VM's plan: what `kvmtune host prepare` and `kvmtune vfio bind` do for it
//! while it runs. Worked out once here; the plan's text prints it as a command line, and the
//! libvirt domain carries it as `<metadata><kvmtune:host>` for the libvirt hook
//! ([`crate::config::host_request`]).

use serde::Serialize;

use crate::analysis::host_rules::SLOW_GOVERNORS;
use crate::analysis::planner::{HugepagePlan, Passthrough};
use crate::host::HostFacts;
use crate::hostchange::prepare::HugepageNeed;
use crate::knowledge::recommended;
use crate::values::{CpuSet, PciAddress};

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

pub fn host_side(
    host: &HostFacts,
    housekeeping: &CpuSet,
    vcpu_cpus: &[u32],
    emulator_cpus: &CpuSet,
    hugepages: Option<&HugepagePlan>,
    devices: &[Passthrough],
) -> HostSide {
    let vcpus: CpuSet = vcpu_cpus.iter().copied().collect();
    let slow_governor =
        host.host_state.cpufreq_governors.known().is_some_and(|governors| {
            governors.iter().any(|(name, _)| SLOW_GOVERNORS.contains(&name.as_str()))
        });
    HostSide {
        cpus: vcpus.union(&emulator_cpus.difference(housekeeping)),
        housekeeping: housekeeping.clone(),
        hugepages: hugepages.map(|h| HugepageNeed {
            size_kib: h.page_size_kib,
            count: h.pages,
            node: h.node,
        }),
        governor: slow_governor.then_some(recommended::GOVERNOR),
        devices: devices.iter().map(|d| d.address).collect(),
    }
}
