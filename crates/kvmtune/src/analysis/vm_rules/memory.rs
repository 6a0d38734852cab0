//! Memory: hugepages and NUMA locality.

use super::prelude::*;
use crate::knowledge::recommended;

pub(super) const MEM001: VmRule = VmRule {
    check: hugepages_not_reserved,
    needs_host: true,
    housekeeping_suffices: false,
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
        source: "Linux Documentation/admin-guide/mm/hugetlbpage.rst; libvirt docs/formatdomain.rst memoryBacking",
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
    housekeeping_suffices: false,
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

/// Every vCPU the config declares is pinned, on a multi-node host: only then is there a node
/// the vCPUs are confined to.
fn pinned_on_multi_node_host<'a>(ctx: &'a RuleContext) -> Option<(&'a crate::host::HostFacts, CpuSet)> {
    let host = ctx.host?;
    if host.topology.numa_nodes.len() < 2 {
        return None;
    }
    let vcpus = ctx.config.vcpus.as_ref()?.value;
    let pinned = ctx.config.pinning.vcpupin.iter().filter(|p| p.id < vcpus).count();
    (vcpus > 0 && pinned as u32 == vcpus).then(|| (host, ctx.vcpu_cpus()))
}

/// `numatune` keeps all memory on these nodes: a strict or restrictive binding to a subset of
/// them, for all memory or for each guest cell (`preferred` falls back elsewhere when the node
/// runs short; `interleave` spreads).
fn memory_bound_to(ctx: &RuleContext, nodes: &[u32]) -> bool {
    let within = |set: &Option<CpuSet>| {
        set.as_ref().is_some_and(|set| !set.is_empty() && set.iter().all(|n| nodes.contains(&n)))
    };
    let memory = &ctx.config.memory;
    let whole = memory.numatune.as_ref().is_some_and(|tune| {
        matches!(tune.value.mode.as_deref(), Some("strict" | "restrictive") | None)
            && within(&tune.value.nodeset)
    });
    // Or every guest cell bound on its own: a libvirt <memnode> per <cell>, or Proxmox's numaN
    // lines (which are the guest's nodes) with policy=bind.
    let cells = ctx.config.cpu.numa_cells.len().max(1);
    let per_cell = memory.memnodes.len() >= cells
        && memory.memnodes.iter().all(|cell| {
            matches!(cell.value.mode.as_deref(), Some("strict" | "restrictive" | "bind") | None)
                && within(&cell.value.nodeset)
        });
    whole || per_cell
}

/// Memory is preallocated when the VM starts (hugepages, or locked memory), so the thread
/// that touches it first decides where it lands: QEMU's main thread, the emulator.
fn preallocated(ctx: &RuleContext) -> bool {
    ctx.config.memory.hugepages.is_some() || ctx.config.memory.locked.is_some()
}

/// The emulator is pinned to nodes none of the vCPUs use.
fn emulator_elsewhere(
    ctx: &RuleContext,
    host: &crate::host::HostFacts,
    vcpu_nodes: &[u32],
) -> Option<Vec<u32>> {
    let emulator = ctx.config.pinning.emulatorpin.as_ref()?;
    let nodes = host.topology.nodes_holding(&emulator.value);
    (!nodes.is_empty() && nodes.iter().all(|n| !vcpu_nodes.contains(n))).then_some(nodes)
}

fn node_names(nodes: &[u32]) -> String {
    nodes.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

pub(super) const MEM003: VmRule = VmRule {
    check: memory_off_vcpu_node,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "MEM003",
        name: "memory-off-vcpu-node",
        category: Category::Memory,
        severity: Severity::Warning,
        title: "vCPUs on one NUMA node, guest memory free to land on another",
        explanation: "Pinning keeps the vCPUs on one node, but without a numatune binding the kernel allocates guest memory wherever the touching thread runs or memory is free, often on another node. Every access to it then crosses the interconnect, at roughly twice the latency and a fraction of the bandwidth. A strict numatune to the vCPUs' node keeps it local.",
        example: "every <vcpupin> on node 1's CPUs and no <numatune>, or <numatune><memory nodeset='0-1'/>",
        fix: "bind memory to the vCPUs' node: <numatune><memory mode='strict' nodeset='N'/></numatune>",
        fix_safety: Applicability::Unsafe,
        source: "libvirt docs/formatdomain.rst numatune; Linux Documentation/admin-guide/mm/numa_memory_policy.rst",
    },
};

fn memory_off_vcpu_node(ctx: &RuleContext) -> Vec<Finding> {
    let Some((host, vcpu_cpus)) = pinned_on_multi_node_host(ctx) else { return Vec::new() };
    let nodes = host.topology.nodes_holding(&vcpu_cpus);
    let [node] = nodes.as_slice() else { return Vec::new() };
    if !absent_numatune_bindings(ctx, host).is_empty() {
        // The domain does not start at all: MEM007 says so.
        return Vec::new();
    }
    if memory_bound_to(ctx, &nodes)
        || ctx.config.memory.numatune.as_ref().is_some_and(|t| t.value.placement.as_deref() == Some("auto"))
    {
        return Vec::new();
    }
    if preallocated(ctx) && emulator_elsewhere(ctx, host, &nodes).is_some() {
        // MEM005 says it, with the reason the memory lands elsewhere.
        return Vec::new();
    }
    let now = match &ctx.config.memory.numatune {
        None => "no numatune".to_string(),
        Some(tune) => format!(
            "numatune {} on node(s) {}",
            tune.value.mode.as_deref().unwrap_or("strict"),
            tune.value.nodeset.as_ref().map_or("-".to_string(), |s| s.to_string())
        ),
    };
    let anchor = ctx.config.memory.numatune.as_ref().map(|t| t.span).or(ctx.config.anchors.cputune);
    vec![
        Finding::new(anchor, format!("the vCPUs all run on NUMA node {node}, but guest memory is not bound there ({now}): the kernel may place it on another node"))
            .with_fix(Fix::unsafe_(ConfigEdit::SetNumatune { nodeset: node.to_string() })),
    ]
}

pub(super) const MEM004: VmRule = VmRule {
    check: spans_nodes_without_guest_numa,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "MEM004",
        name: "spans-nodes-without-guest-numa",
        category: Category::Memory,
        severity: Severity::Warning,
        title: "vCPUs span NUMA nodes, but the guest sees one node",
        explanation: "A VM too big for one node has vCPUs on several. Without a guest NUMA topology (<numa> cells, each with its memory bound to its host node by <memnode>), Windows sees one node: its scheduler moves threads across the host nodes freely and its allocator cannot keep a thread's memory near it, so a good share of accesses crosses the interconnect. Cells that mirror the host let Windows keep work and memory together.",
        example: "vCPUs pinned to CPUs of host nodes 0 and 1 and no <cpu><numa>",
        fix: "give the guest one NUMA cell per host node it uses, with its vCPUs and memory, bound there (`kvmtune tune` plans them)",
        fix_safety: Applicability::Unsafe,
        source: "libvirt docs/formatdomain.rst (cpu numa cells, numatune memnode); Microsoft Hyper-V virtual NUMA guidance",
    },
};

fn spans_nodes_without_guest_numa(ctx: &RuleContext) -> Vec<Finding> {
    let Some((host, vcpu_cpus)) = pinned_on_multi_node_host(ctx) else { return Vec::new() };
    let nodes = host.topology.nodes_holding(&vcpu_cpus);
    if nodes.len() < 2 || !ctx.config.cpu.numa_cells.is_empty() {
        return Vec::new();
    }
    let finding = Finding::new(
        ctx.config.anchors.cpu.or(ctx.config.anchors.cputune),
        format!(
            "the vCPUs run on NUMA nodes {}, but the guest has no NUMA topology: Windows sees one node and spreads threads and memory across the interconnect",
            node_names(&nodes)
        ),
    );
    match guest_cells(ctx, host, &nodes) {
        Some(cells) => vec![finding.with_fix(Fix::unsafe_(ConfigEdit::SetGuestNuma { cells }))],
        None => vec![finding.with_fix(Fix::manual("add <numa> cells to <cpu>, one per host node with the vCPUs pinned there, and a strict <memnode> per cell"))],
    }
}

/// One cell per host node, with the vCPUs pinned there and memory in proportion, in 2 MiB
/// units (the last cell takes the rest). `None` when the memory size is unknown or a vCPU's
/// pin spans nodes.
fn guest_cells(
    ctx: &RuleContext,
    host: &crate::host::HostFacts,
    nodes: &[u32],
) -> Option<Vec<crate::config::edit::GuestCell>> {
    let memory_kib = ctx.config.memory.size_kib.as_ref()?.value;
    let vcpus = ctx.config.vcpus.as_ref()?.value;
    let mut cells = Vec::new();
    let mut placed = 0;
    for (id, &node) in nodes.iter().enumerate() {
        let node_cpus = &host.topology.numa_nodes.iter().find(|n| n.node == node)?.cpus;
        let members: CpuSet =
            ctx.config.pinning.vcpupin.iter().filter(|p| p.cpus.is_subset(node_cpus)).map(|p| p.id).collect();
        placed += members.len();
        let share = memory_kib * members.len() as u64 / u64::from(vcpus) / 2048 * 2048;
        cells.push(crate::config::edit::GuestCell {
            id: id as u32,
            cpus: members.to_string(),
            memory_kib: share,
            host_node: node,
        });
    }
    if placed != vcpus as usize {
        return None;
    }
    let assigned: u64 = cells.iter().map(|c| c.memory_kib).sum();
    if let Some(last) = cells.last_mut() {
        last.memory_kib += memory_kib - assigned;
    }
    Some(cells)
}

pub(super) const MEM005: VmRule = VmRule {
    check: emulator_places_preallocated_memory,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "MEM005",
        name: "emulator-places-preallocated-memory",
        category: Category::Memory,
        severity: Severity::Warning,
        title: "preallocated memory follows the emulator to another NUMA node",
        explanation: "With hugepages or locked memory QEMU allocates all guest RAM at start, from its main thread: the emulator thread. Under the kernel's default first-touch policy the pages land on the emulator's node. With the emulator pinned to another node than every vCPU and no numatune binding, the whole guest memory ends up remote to the vCPUs.",
        example: "<emulatorpin cpuset='0,8'/> on node 0, every <vcpupin> on node 1, <hugepages/>, no <numatune>",
        fix: "bind memory to the vCPUs' nodes with numatune (strict), or pin the emulator on their node",
        fix_safety: Applicability::Unsafe,
        source: "QEMU hostmem prealloc (backends/hostmem.c); Linux Documentation/admin-guide/mm/numa_memory_policy.rst (first touch); libvirt formatdomain numatune",
    },
};

fn emulator_places_preallocated_memory(ctx: &RuleContext) -> Vec<Finding> {
    let Some((host, vcpu_cpus)) = pinned_on_multi_node_host(ctx) else { return Vec::new() };
    let vcpu_nodes = host.topology.nodes_holding(&vcpu_cpus);
    if !preallocated(ctx) || memory_bound_to(ctx, &vcpu_nodes) {
        return Vec::new();
    }
    let Some(emulator_nodes) = emulator_elsewhere(ctx, host, &vcpu_nodes) else { return Vec::new() };
    let span = ctx.config.pinning.emulatorpin.as_ref().map(|e| e.span);
    vec![
        Finding::new(span, format!("the emulator runs on node(s) {} and allocates the preallocated guest memory there, while the vCPUs run on node(s) {}: all of it is remote", node_names(&emulator_nodes), node_names(&vcpu_nodes)))
            .with_fix(Fix::unsafe_(ConfigEdit::SetNumatune { nodeset: vcpu_nodes.iter().copied().collect::<CpuSet>().to_string() })),
    ]
}

pub(super) const MEM006: VmRule = VmRule {
    check: shared_memory_without_hugepages,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "MEM006",
        name: "shared-memory-without-hugepages",
        category: Category::Memory,
        severity: Severity::Warning,
        title: "guest RAM in shared memory without hugepages",
        explanation: "`<memoryBacking><source type='memfd'/><access mode='shared'/>` (or a NUMA cell with memAccess='shared') without `<hugepages/>` puts all guest RAM on the host's shmem. Transparent hugepages for shmem follow their own switch, `/sys/kernel/mm/transparent_hugepage/shmem_enabled`, which is `never` by default: the guest's memory is then mapped with 4 KiB pages, and every TLB miss in the guest walks a longer two-level page table. Shared memory has users that need it (virtiofs and vhost-user devices read guest RAM from another process); they work as well on hugepages. Without such a device the shared mapping buys nothing.",
        example: "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking> with no <hugepages/>",
        fix: "add <hugepages/> (with pages reserved on the host), or drop <access mode='shared'/> when nothing needs it, or set shmem_enabled to advise (QEMU asks for hugepages on guest RAM with madvise)",
        fix_safety: Applicability::Manual,
        source: "Linux Documentation/admin-guide/mm/transhuge.rst (shmem_enabled, default never); libvirt docs/formatdomain.rst Memory Backing (source type memfd, access mode shared); libvirt docs/kbase/virtiofs.rst (virtiofs needs shared memory); QEMU system/physmem.c ram_block_add (guest RAM is madvised MADV_HUGEPAGE) and backends/hostmem-memfd.c",
    },
};

fn shared_memory_without_hugepages(ctx: &RuleContext) -> Vec<Finding> {
    let memory = &ctx.config.memory;
    let Some(span) = memory.on_shmem() else { return Vec::new() };
    let shmem_thp = ctx.host.and_then(|h| h.memory.transparent_hugepages_shmem.known().cloned());
    // QEMU madvises guest RAM for hugepages, so `advise` serves it as well as `always`.
    if shmem_thp.as_deref().is_some_and(|s| matches!(s, "always" | "within_size" | "advise" | "force")) {
        return Vec::new();
    }
    let host_says = match shmem_thp.as_deref() {
        Some(value) => format!("this host's shmem_enabled is {value}"),
        None => "shmem_enabled is never unless the host changed it".to_string(),
    };
    let users: Vec<&str> = ctx.config.devices.shared_memory_users.iter().map(|u| u.value.as_str()).collect();
    let (message, fix) = if users.is_empty() {
        (
            format!(
                "guest RAM is shared memory without hugepages: it sits on shmem, where transparent hugepages are off ({host_says}), and no device here (virtiofs, vhost-user) needs it shared"
            ),
            "drop <access mode='shared'/>, or add <hugepages/> with pages reserved on the host",
        )
    } else {
        (
            format!(
                "guest RAM is shared memory without hugepages ({} needs it shared): it sits on shmem, where transparent hugepages are off ({host_says})",
                users.join(", ")
            ),
            "keep it shared and add <hugepages/> with pages reserved on the host, or set transparent_hugepage/shmem_enabled to advise",
        )
    };
    vec![Finding::new(Some(span), message).with_fix(Fix::manual(fix))]
}

pub(super) const MEM007: VmRule = VmRule {
    check: numatune_absent_nodes,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "MEM007",
        name: "numatune-absent-nodes",
        category: Category::Memory,
        severity: Severity::Error,
        title: "numatune binds memory to host NUMA nodes this host does not have",
        explanation: "`<numatune><memory nodeset>` and each guest cell's `<numatune><memnode nodeset>` name host NUMA nodes by number, so XML written for a two-socket workstation, a Threadripper in NUMA mode or a guide's machine names a node that a one-node desktop does not have. Before it starts the domain, libvirt checks every node of every one of those sets against the host and refuses the domain with \"unsupported configuration: NUMA node N is unavailable\", in every mode (strict, preferred, interleave, restrictive), even when the set also names nodes that exist. Proxmox's `numaN: ...,hostnodes=` (read with `numa: 1`) is the same binding, and qemu-server stops the start with \"host NUMA nodeN doesn't exist\".",
        example: "<numatune><memory mode='strict' nodeset='1'/></numatune>, or <memnode cellid='0' mode='strict' nodeset='1'/>, on a host with node 0 only",
        fix: "bind memory (and each cell's memnode) to nodes this host has (the node of the vCPUs' CPUs), or drop <numatune> on a one-node host",
        fix_safety: Applicability::Manual,
        source: "libvirt src/util/virnuma.c virNumaNodesetIsAvailable ('NUMA node %zd is unavailable'), called for <memory> and for every <memnode> by src/conf/numa_conf.c virDomainNumatuneNodesetIsAvailable; libvirt docs/formatdomain.rst NUMA Node Tuning; Proxmox qemu-server src/PVE/QemuServer/Memory.pm print_numa_hostnodes (\"host NUMA node$i doesn't exist\")",
    },
};

/// A `<numatune>` binding naming host nodes this host does not have: `<memory>` or one guest
/// cell's `<memnode>`, with what it binds and which of its nodes are absent.
struct AbsentBinding {
    span: Span,
    /// `None` for `<memory>`, else the `<memnode>`'s guest cell.
    cell: Option<Option<u32>>,
    nodeset: CpuSet,
    absent: CpuSet,
}

/// Every `<numatune>` binding (`<memory>`, then each `<memnode>`) naming absent host nodes.
fn absent_numatune_bindings(ctx: &RuleContext, host: &crate::host::HostFacts) -> Vec<AbsentBinding> {
    let host_nodes: CpuSet = host.topology.numa_nodes.iter().map(|n| n.node).collect();
    if host_nodes.is_empty() {
        return Vec::new();
    }
    let memory = &ctx.config.memory;
    let whole = memory.numatune.iter().map(|t| (t.span, None, t.value.nodeset.as_ref()));
    let cells = memory.memnodes.iter().map(|m| (m.span, Some(m.value.cellid), m.value.nodeset.as_ref()));
    whole
        .chain(cells)
        .filter_map(|(span, cell, nodeset)| {
            let nodeset = nodeset?.clone();
            let absent = nodeset.difference(&host_nodes);
            (!absent.is_empty()).then_some(AbsentBinding { span, cell, nodeset, absent })
        })
        .collect()
}

fn numatune_absent_nodes(ctx: &RuleContext) -> Vec<Finding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let host_nodes: CpuSet = host.topology.numa_nodes.iter().map(|n| n.node).collect();
    let proxmox = ctx.config.format == SourceFormat::Proxmox;
    absent_numatune_bindings(ctx, host)
        .into_iter()
        .map(|binding| {
            let AbsentBinding { span, cell, nodeset, absent } = binding;
            let (nodes, are) = if absent.len() == 1 { ("node", "is") } else { ("nodes", "are") };
            let what = match cell {
                None => "numatune binds memory".to_string(),
                Some(Some(cell)) if proxmox => format!("numa{cell} binds guest node {cell}'s memory"),
                Some(Some(cell)) => format!("numatune binds guest cell {cell}'s memory"),
                Some(None) => "a <memnode> binds its guest cell's memory".to_string(),
            };
            let first = absent.first().unwrap_or_default();
            let refusal = if proxmox {
                format!("Proxmox refuses to start the VM (host NUMA node{first} doesn't exist)")
            } else {
                format!("libvirt refuses to start the domain (NUMA node {first} is unavailable)")
            };
            let fix = match (cell, host_nodes.len()) {
                (None, 1) => format!("drop <numatune>: this host has one NUMA node ({host_nodes}), so all memory is local anyway"),
                (Some(_), 1) if proxmox => format!("drop hostnodes (and policy) from the numaN lines: this host has one NUMA node ({host_nodes}), so all memory is local anyway"),
                (Some(_), 1) => format!("drop the <memnode> bindings: this host has one NUMA node ({host_nodes}), so all memory is local anyway"),
                (None, _) => format!("bind memory to nodes among {host_nodes}, the one holding the vCPUs' CPUs"),
                (Some(_), _) if proxmox => format!("set hostnodes= to a node among {host_nodes}, the one holding that guest node's vCPUs' CPUs"),
                (Some(_), _) => format!("bind the cell to a node among {host_nodes}, the one holding that cell's vCPUs' CPUs"),
            };
            Finding::new(
                Some(span),
                format!("{what} to host NUMA nodes {nodeset}, but {nodes} {absent} {are} not on this host (nodes {host_nodes}): {refusal}"),
            )
            .with_fix(Fix::manual(fix))
        })
        .collect()
}
