//! The host side of a VM's plan: what `kvmtune host prepare` and `kvmtune vfio bind` do for it
//! while it runs. Worked out once here; the plan's text prints it as a command line, and the
//! libvirt domain carries it as `<metadata><kvmtune:host>` for the libvirt hook
//! ([`crate::config::host_request`]).

use crate::analysis::planner::{HugepagePlan, Passthrough};
use crate::config::host_request::{HostSide, HugepageNeed};
use crate::host::HostFacts;
use crate::knowledge::recommended;
use crate::values::CpuSet;

pub fn host_side(
    host: &HostFacts,
    housekeeping: &CpuSet,
    vcpu_cpus: &[u32],
    emulator_cpus: &CpuSet,
    hugepages: Option<&HugepagePlan>,
    devices: &[Passthrough],
) -> HostSide {
    let vcpus: CpuSet = vcpu_cpus.iter().copied().collect();
    let slow_governor = host.host_state.cpufreq_governors.known().is_some_and(|governors| {
        governors.iter().any(|(name, _)| recommended::SLOW_GOVERNORS.contains(&name.as_str()))
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
