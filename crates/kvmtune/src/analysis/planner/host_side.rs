//! The host side of a VM's plan: what `kvmtune host prepare` and `kvmtune vfio bind` do for it
//! while it runs. Worked out once here; the plan's text prints it as a command line, and the
//! libvirt domain carries it as `<metadata><kvmtune:host>` for the libvirt hook
//! ([`crate::config::host_needs`]).

use crate::analysis::planner::{HugepagePlan, Passthrough};
use crate::config::host_needs::{HostNeeds, HugepageNeed, Hugepages};
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
) -> HostNeeds {
    let vcpus: CpuSet = vcpu_cpus.iter().copied().collect();
    let slow_governor = host.host_state.cpufreq_governors.known().is_some_and(|governors| {
        governors.iter().any(|(name, _)| recommended::SLOW_GOVERNORS.contains(&name.as_str()))
    });
    HostNeeds {
        cpus: Some(vcpus.union(&emulator_cpus.difference(housekeeping))),
        housekeeping: Some(housekeeping.clone()),
        isolate: true,
        irqs: true,
        governor: slow_governor.then(|| recommended::GOVERNOR.to_string()),
        epp: None,
        hugepages: match hugepages {
            Some(h) => Hugepages::Exactly(vec![HugepageNeed {
                size_kib: h.page_size_kib,
                count: h.pages,
                node: h.node,
            }]),
            None => Hugepages::None,
        },
        devices: devices.iter().map(|d| d.address).collect(),
        single_gpu: false,
    }
}
