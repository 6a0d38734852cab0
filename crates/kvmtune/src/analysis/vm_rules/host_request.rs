//! The host request: what `<metadata><kvmtune:host>` asks of the host at the VM's start
//! (config/host_needs.rs). The libvirt hook refuses to start a VM whose request cannot be
//! met; these rules say so before the VM is started.

use super::prelude::*;

pub(super) const HOOK001: VmRule = VmRule {
    check: isolation_without_pins,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HOOK001",
        name: "host-request-without-pins",
        category: Category::HostRequest,
        severity: Severity::Error,
        title: "the host request isolates CPUs or sets their governor, but the VM pins no vCPUs",
        explanation: "`kvmtune host prepare`, which the libvirt hook runs at the VM's start, keeps host tasks, IRQs and kernel threads off the CPUs the domain pins its vCPUs to, and sets the governor of those CPUs. A domain without <vcpupin> runs anywhere, so there is nothing to give it: the hook refuses, and libvirt does not start the VM.",
        example: "<kvmtune:isolate/> in a domain whose <cputune> has no <vcpupin>",
        fix: "pin the vCPUs (`kvmtune tune FILE` does), or drop <kvmtune:isolate> and <kvmtune:cpufreq>",
        fix_safety: Applicability::Manual,
        source: "Linux Documentation/admin-guide/cgroup-v2.rst (cpuset); Documentation/core-api/irq/irq-affinity.rst; kvmtune docs/host.md",
    },
};

fn isolation_without_pins(ctx: &RuleContext) -> Vec<Finding> {
    let Some(stated) = &ctx.config.host_needs else { return Vec::new() };
    let asks_for_cpus = stated.needs.asks_for_cpus();
    if !asks_for_cpus || !ctx.vcpu_cpus().is_empty() {
        return Vec::new();
    }
    let at = stated.at.isolate.or(stated.at.cpufreq).unwrap_or(stated.at.host);
    vec![Finding::new(Some(at), "the host request asks for the VM's CPUs, but no <vcpupin> says which they are: the libvirt hook will refuse to start the VM")
        .with_fix(Fix::manual("pin every vCPU in <cputune> (`kvmtune tune FILE` writes the pins)"))]
}

pub(super) const HOOK002: VmRule = VmRule {
    check: housekeeping_on_vcpus,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HOOK002",
        name: "housekeeping-on-vcpus",
        category: Category::HostRequest,
        severity: Severity::Error,
        title: "the host request keeps host CPUs that the VM pins vCPUs to",
        explanation: "<kvmtune:isolate housekeeping> names the CPUs the host keeps for its own tasks and IRQs. A vCPU pinned to one of them shares it with the host, which is what isolation is meant to prevent, so the hook refuses to start such a VM. The emulator and iothreads may share the housekeeping CPUs; vCPUs may not.",
        example: "<kvmtune:isolate housekeeping='0-3'/> with <vcpupin vcpu='0' cpuset='2'/>",
        fix: "take the vCPUs' CPUs out of housekeeping, or leave it out (default: every CPU the VM does not pin)",
        fix_safety: Applicability::Manual,
        source: "Linux Documentation/admin-guide/cgroup-v2.rst (cpuset.cpus); kvmtune docs/host.md",
    },
};

fn housekeeping_on_vcpus(ctx: &RuleContext) -> Vec<Finding> {
    let Some(stated) = &ctx.config.host_needs else { return Vec::new() };
    let (Some(housekeeping), Some(at)) = (&stated.needs.housekeeping, stated.at.housekeeping) else {
        return Vec::new();
    };
    let overlap = housekeeping.intersection(&ctx.vcpu_cpus());
    if overlap.is_empty() {
        return Vec::new();
    }
    vec![Finding::new(Some(at), format!("housekeeping CPUs {} include CPU(s) {overlap} that vCPUs are pinned to: the libvirt hook will refuse to start the VM", housekeeping))
        .with_fix(Fix::manual(format!("housekeeping='{}', or no housekeeping attribute", housekeeping.difference(&ctx.vcpu_cpus()))))]
}

pub(super) const HOOK003: VmRule = VmRule {
    check: hugepages_without_backing,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HOOK003",
        name: "hugepages-request-without-backing",
        category: Category::HostRequest,
        severity: Severity::Warning,
        title: "the host request allocates hugepages, but the domain's memory is not backed by them",
        explanation: "<kvmtune:hugepages/> has the hook allocate, before the VM starts, the pages <memoryBacking><hugepages> and <memory> need, and give them back after it stops. Without <memoryBacking><hugepages> QEMU uses ordinary pages, so nothing is allocated and the request does nothing.",
        example: "<kvmtune:hugepages/> in a domain with no <memoryBacking>",
        fix: "back the memory with hugepages (<memoryBacking><hugepages/>), or drop <kvmtune:hugepages>",
        fix_safety: Applicability::Manual,
        source: "libvirt docs/formatdomain.rst memoryBacking; Linux Documentation/admin-guide/mm/hugetlbpage.rst (per-node pools)",
    },
};

fn hugepages_without_backing(ctx: &RuleContext) -> Vec<Finding> {
    let Some(at) = ctx.config.host_needs.as_ref().and_then(|r| r.at.hugepages) else { return Vec::new() };
    if ctx.config.memory.hugepages.is_some() {
        return Vec::new();
    }
    vec![
        Finding::new(
            Some(at),
            "the VM's memory is not backed by hugepages: <kvmtune:hugepages/> allocates nothing",
        )
        .with_fix(Fix::manual(
            "add <memoryBacking><hugepages/></memoryBacking>, or drop <kvmtune:hugepages/>",
        )),
    ]
}

pub(super) const HOOK004: VmRule = VmRule {
    check: device_not_given_to_the_vm,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HOOK004",
        name: "vfio-device-not-in-domain",
        category: Category::HostRequest,
        severity: Severity::Warning,
        title: "the host request hands a device to vfio-pci that the domain does not use",
        explanation: "Each <kvmtune:device> leaves its host driver for vfio-pci, with its whole IOMMU group, while the VM runs. A device the domain has no PCI <hostdev> for is taken from the host and given to no one; usually a <hostdev> was removed or its address mistyped. The other members of the device's group are the exception: they go along without a <hostdev> of their own.",
        example: "<kvmtune:device address='0000:01:00.0'/> with the GPU's <hostdev> at 0000:02:00.0",
        fix: "list the addresses of the domain's PCI <hostdev> elements",
        fix_safety: Applicability::Manual,
        source: "libvirt docs/formatdomain.rst hostdev; Linux Documentation/driver-api/vfio.rst (IOMMU groups)",
    },
};

fn device_not_given_to_the_vm(ctx: &RuleContext) -> Vec<Finding> {
    let Some(stated) = &ctx.config.host_needs else { return Vec::new() };
    let given: Vec<PciAddress> = ctx.config.devices.hostdevs.iter().filter_map(|h| h.pci_address).collect();
    stated
        .needs
        .devices
        .iter()
        .zip(&stated.at.devices)
        .filter(|(device, _)| !given.contains(device))
        .map(|(device, at)| {
            Finding::new(
                Some(*at),
                format!(
                    "{} goes to vfio-pci at the VM's start, but the domain has no <hostdev> for it",
                    device
                ),
            )
            .with_fix(Fix::manual(format!(
                "add a PCI <hostdev> for {}, or remove it from <kvmtune:vfio>",
                device
            )))
        })
        .collect()
}
