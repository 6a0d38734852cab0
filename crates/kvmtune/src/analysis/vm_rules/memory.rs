//! Memory: hugepages and NUMA locality.

use super::prelude::*;
use crate::knowledge::recommended;

pub(super) const MEM001: VmRule = VmRule {
    check: hugepages_not_reserved,
    needs_host: true,
    meta: RuleMeta {
        id: "MEM001",
        name: "hugepages-not-reserved",
        category: Category::Memory,
        severity: Severity::Warning,
        title: "hugepages asked for but not reserved on the host",
        explanation: "libvirt backs guest RAM with hugepages only from the host's reserved pool; with too few pages the VM fails to start.",
        example: "<memoryBacking><hugepages/></memoryBacking> for 16 GiB on a host with no 2 MiB pages reserved",
        fix: "reserve enough pages on the VM's node",
        fix_safety: Applicability::Manual,
        source: "Linux Documentation/admin-guide/mm/hugetlbpage.rst; libvirt memoryBacking (../shared/knowledge.md 2c)",
    },
};

fn hugepages_not_reserved(ctx: &RuleContext) -> Vec<Finding> {
    let (Some(host), Some(hugepages), Some(size)) =
        (ctx.host, &ctx.config.memory.hugepages, &ctx.config.memory.size_kib)
    else {
        return Vec::new();
    };
    let Fact::Known(pools) = &host.memory.hugepages else { return Vec::new() };
    // Without <page size>, libvirt uses the default hugepage size (2 MiB on x86 unless
    // default_hugepagesz says otherwise).
    let page_kib =
        hugepages.value.iter().find_map(|p| p.size_kib).unwrap_or(recommended::DEFAULT_HUGEPAGE_KIB);
    let reserved = pools
        .iter()
        .find(|p| p.page_size_kib == page_kib)
        .and_then(|p| p.total.known().copied())
        .unwrap_or(0);
    let reserved_kib = reserved.saturating_mul(page_kib);
    if reserved_kib >= size.value {
        return Vec::new();
    }
    vec![
        Finding::new(Some(hugepages.span), format!("the VM needs {} MiB in {} KiB hugepages; the host has {reserved} reserved ({} MiB): the VM will not start", size.value / 1024, page_kib, reserved_kib / 1024))
            .with_fix(Fix::manual(format!("reserve {} pages of {page_kib} KiB (on the VM's NUMA node), e.g. at boot with hugepagesz/hugepages", size.value.div_ceil(page_kib)))),
    ]
}

pub(super) const MEM002: VmRule = VmRule {
    check: away_from_passthrough_device,
    needs_host: true,
    meta: RuleMeta {
        id: "MEM002",
        name: "away-from-passthrough-device",
        category: Category::Memory,
        severity: Severity::Warning,
        title: "vCPUs or memory on another NUMA node than the passed-through device",
        explanation: "A GPU's DMA and interrupts go to its own NUMA node; vCPUs and memory elsewhere pay the interconnect on every frame.",
        example: "a GPU on NUMA node 1 and every <vcpupin> on node 0's CPUs",
        fix: "place vCPUs and memory on the device's node",
        fix_safety: Applicability::Manual,
        source: "Linux sysfs-bus-pci numa_node; libvirt numatune",
    },
};

fn away_from_passthrough_device(ctx: &RuleContext) -> Vec<Finding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let Fact::Known(devices) = &host.pci_devices else { return Vec::new() };
    let cpus = ctx.vcpu_cpus();
    let vcpu_nodes: Vec<u32> = host
        .topology
        .numa_nodes
        .iter()
        .filter(|n| !n.cpus.intersection(&cpus).is_empty())
        .map(|n| n.node)
        .collect();
    let memory_nodes: Vec<u32> = ctx
        .config
        .memory
        .numatune
        .as_ref()
        .and_then(|t| t.value.nodeset.as_ref())
        .map(|set| set.iter().collect())
        .unwrap_or_default();
    let mut findings = Vec::new();
    for hostdev in &ctx.config.devices.hostdevs {
        let Some(address) = &hostdev.pci_address else { continue };
        let Some(node) = devices.iter().find(|d| &d.address == address).and_then(|d| d.numa_node) else {
            continue;
        };
        let vcpus_away = !vcpu_nodes.is_empty() && !vcpu_nodes.contains(&node);
        let memory_away = !memory_nodes.is_empty() && !memory_nodes.contains(&node);
        if vcpus_away || memory_away {
            let what = match (vcpus_away, memory_away) {
                (true, true) => "vCPUs and memory",
                (true, false) => "vCPUs",
                _ => "memory",
            };
            findings.push(Finding::new(Some(hostdev.span), format!("passed-through device {address} sits on NUMA node {node}, but the VM's {what} are elsewhere: every DMA and interrupt crosses nodes"))
                .with_fix(Fix::manual(format!("place vCPUs and memory (numatune) on node {node}"))));
        }
    }
    findings
}
