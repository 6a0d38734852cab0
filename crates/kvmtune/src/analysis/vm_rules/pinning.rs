//! Pinning and CPU topology: vCPU pins, SMT siblings, L3 groups and NUMA nodes, housekeeping
//! CPUs, and the guest topology that describes them.

use super::prelude::*;
use crate::analysis::placement::{HostShare, HostShareSource, default_host_share, host_wide_share};

/// The host CPU each vCPU is pinned to, when every vCPU is pinned to exactly one.
fn one_to_one_pins(config: &VmConfig) -> Option<Vec<(u32, u32, Span)>> {
    let vcpus = config.vcpus.as_ref()?.value;
    let mut pins: Vec<(u32, u32, Span)> = Vec::new();
    for vcpu in 0..vcpus {
        let (cpu, span) = config.pinning.only_cpu(vcpu)?;
        pins.push((vcpu, cpu, span));
    }
    Some(pins)
}

pub(super) const PIN001: VmRule = VmRule {
    check: vcpus_unpinned,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN001",
        name: "vcpus-unpinned",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "vCPUs without a host CPU pin",
        explanation: "An unpinned vCPU thread migrates between host CPUs, losing its caches and sometimes its NUMA node, and competes with host work: the frame-time spikes gamers call stutter. For a desktop VM (`--workload desktop`, or by default one with no passed-through device and a SPICE or VNC display) the scheduler's choice is usually good enough, and the finding is information.",
        example: "<vcpu>8</vcpu> and no <vcpupin> in <cputune>",
        fix: "pin every vCPU (kvmtune tune plans it)",
        fix_safety: Applicability::Manual,
        source: "libvirt docs/formatdomain.rst CPU tuning",
    },
};

fn vcpus_unpinned(ctx: &RuleContext) -> Vec<Finding> {
    let Some(vcpus) = &ctx.config.vcpus else { return Vec::new() };
    // Only the vCPUs that run need a pin: those declared enabled='no' (or beyond `current`)
    // are hot-pluggable and idle until plugged.
    let running = ctx.config.running_vcpus();
    let pinned: std::collections::BTreeSet<u32> = ctx.config.pinning.vcpupin.iter().map(|p| p.id).collect();
    let unpinned: Vec<u32> = running.iter().filter(|v| !pinned.contains(v)).collect();
    if unpinned.is_empty() {
        return Vec::new();
    }
    let which = if unpinned.len() == running.len() {
        "no vCPU is pinned".to_string()
    } else {
        format!("vCPUs {} are not pinned", unpinned.iter().copied().collect::<CpuSet>())
    };
    // `<vcpu cpuset>` confines the unpinned vCPUs to its CPUs, but they still float among them.
    let where_they_float = match &ctx.config.pinning.domain_cpuset {
        Some(domain) => format!(
            "they float over host CPUs {} (<vcpu cpuset>), and the host scheduler moves them between those cores and their caches",
            domain.value
        ),
        None => "the host scheduler moves them across cores, caches and NUMA nodes".to_string(),
    };
    let finding = Finding::new(Some(vcpus.span), format!("{which}: {where_they_float}"))
        .with_fix(Fix::manual("pin each vCPU to its own host CPU (`kvmtune tune` plans it)"));
    // Pinning buys latency: a gaming, server or IPI-heavy VM needs it, a desktop rarely does.
    if ctx.workload == Workload::Desktop {
        return vec![Finding {
            message: format!("{} (a desktop VM: pin only if it stutters)", finding.message),
            ..finding.with_severity(Severity::Info)
        }];
    }
    vec![finding]
}

pub(super) const PIN002: VmRule = VmRule {
    check: vcpus_share_a_cpu,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN002",
        name: "vcpus-share-a-cpu",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "two vCPUs pinned to one host CPU",
        explanation: "Two vCPUs on one CPU take turns; a spinning or IPI-waiting vCPU then waits for the other's time slice.",
        example: "<vcpupin vcpu='0' cpuset='2'/> and <vcpupin vcpu='1' cpuset='2'/>",
        fix: "one host CPU per vCPU",
        fix_safety: Applicability::Manual,
        source: "libvirt docs/formatdomain.rst vcpupin",
    },
};

fn vcpus_share_a_cpu(ctx: &RuleContext) -> Vec<Finding> {
    let mut owner: std::collections::BTreeMap<u32, u32> = std::collections::BTreeMap::new();
    let mut findings = Vec::new();
    for pin in &ctx.config.pinning.vcpupin {
        if pin.cpus.len() != 1 {
            continue;
        }
        let cpu = pin.cpus.first().unwrap_or_default();
        match owner.get(&cpu) {
            Some(first) => findings.push(
                Finding::new(
                    Some(pin.span),
                    format!(
                        "vCPU {} is pinned to host CPU {cpu}, like vCPU {first}: they take turns on one CPU",
                        pin.id
                    ),
                )
                .with_fix(Fix::manual("give every vCPU its own host CPU")),
            ),
            None => {
                owner.insert(cpu, pin.id);
            }
        }
    }
    findings
}

pub(super) const PIN003: VmRule = VmRule {
    check: emulator_on_vcpu_cpus,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN003",
        name: "emulator-on-vcpu-cpus",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "emulator or iothreads share CPUs with vCPUs",
        explanation: "QEMU's main loop wakes for its timers (the emulated clocks and controllers), for the file descriptors it watches (virtio queue notifications of devices without an iothread, network backends, the display) and for I/O completions; an iothread wakes for its devices' queues and I/O. On a vCPU's CPU either preempts the vCPU.",
        example: "<emulatorpin cpuset='2'/> where <vcpupin vcpu='0' cpuset='2'/>",
        fix: "pin them to housekeeping CPUs",
        fix_safety: Applicability::Manual,
        source: "libvirt docs/formatdomain.rst emulatorpin, iothreadpin; Stefan Hajnoczi, 'QEMU Internals: Overall architecture and threading model' (blog.vmsplice.net, 2011: the main loop waits on file descriptors and runs timers and bottom halves, vCPU threads run guest code)",
    },
};

fn emulator_on_vcpu_cpus(ctx: &RuleContext) -> Vec<Finding> {
    let vcpu_cpus = ctx.vcpu_cpus();
    let mut findings = Vec::new();
    if let Some(emulator) = &ctx.config.pinning.emulatorpin {
        let shared = emulator.value.intersection(&vcpu_cpus);
        if !shared.is_empty() {
            findings.push(Finding::new(
                Some(emulator.span),
                format!("the emulator thread shares host CPUs {shared} with vCPUs"),
            ));
        }
    }
    let used = ctx.config.devices.used_iothreads();
    // An iothread no disk or controller uses idles: its pin preempts nothing (DEV006 says so).
    for pin in ctx.config.pinning.iothreadpin.iter().filter(|pin| used.contains(&pin.id)) {
        let shared = pin.cpus.intersection(&vcpu_cpus);
        if !shared.is_empty() {
            findings.push(Finding::new(
                Some(pin.span),
                format!("iothread {} shares host CPUs {shared} with vCPUs", pin.id),
            ));
        }
    }
    findings
        .into_iter()
        .map(|f| {
            f.with_fix(Fix::manual("pin the emulator and iothreads to housekeeping CPUs that no vCPU uses"))
        })
        .collect()
}

pub(super) const PIN004: VmRule = VmRule {
    check: topology_mismatch,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN004",
        name: "topology-mismatch",
        category: Category::Cpu,
        severity: Severity::Error,
        title: "CPU topology does not match the vCPU count",
        explanation: "sockets x dies x clusters x cores x threads must equal the number of vCPUs; libvirt refuses a mismatch, and a topology that disagrees with the pinning misleads the guest scheduler.",
        example: "<vcpu>8</vcpu> with <topology sockets='1' cores='6' threads='2'/>",
        fix: "make the product equal the vCPU count",
        fix_safety: Applicability::Manual,
        source: "libvirt docs/formatdomain.rst CPU topology",
    },
};

fn topology_mismatch(ctx: &RuleContext) -> Vec<Finding> {
    let (Some(vcpus), Some(topology)) = (&ctx.config.vcpus, &ctx.config.cpu.topology) else {
        return Vec::new();
    };
    let product = topology.value.vcpus();
    if product == u64::from(vcpus.value) {
        return Vec::new();
    }
    let t = topology.value;
    vec![
        Finding::new(
            Some(topology.span),
            format!(
                "topology {}s x {}d x {}cl x {}c x {}t = {product} vCPUs, but <vcpu> is {}",
                t.sockets, t.dies, t.clusters, t.cores, t.threads, vcpus.value
            ),
        )
        .with_fix(Fix::manual("make sockets*dies*clusters*cores*threads equal the vCPU count")),
    ]
}

pub(super) const PIN005: VmRule = VmRule {
    check: smt_siblings_split,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN005",
        name: "smt-siblings-split",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "guest SMT siblings are not host SMT siblings",
        explanation: "Windows schedules threads knowing which logical CPUs share a core. If the guest's sibling pairs run on unrelated host cores (or host siblings appear as separate guest cores), its placement decisions are wrong.",
        example: "threads='2' with vCPUs 0 and 1 on host CPUs 2 and 3, whose siblings are 2/18 and 3/19",
        fix: "pin each guest core's threads to one host core",
        fix_safety: Applicability::Manual,
        source: "Linux Documentation/admin-guide/cputopology.rst; libvirt docs/formatdomain.rst CPU model and topology",
    },
};

fn smt_siblings_split(ctx: &RuleContext) -> Vec<Finding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let Some(pins) = one_to_one_pins(ctx.config) else { return Vec::new() };
    let threads = ctx.config.cpu.topology.as_ref().map_or(1, |t| t.value.threads.max(1));
    let siblings_of = |cpu: u32| host.topology.cpu(cpu).and_then(|c| c.smt_siblings.clone());
    let mut findings = Vec::new();
    if threads > 1 {
        for core in pins.chunks(threads as usize) {
            // A pin to a CPU the host does not have is PIN012's: it has no siblings to compare.
            if core.iter().any(|(_, cpu, _)| host.topology.cpu(*cpu).is_none()) {
                continue;
            }
            let host_cpus: CpuSet = core.iter().map(|(_, cpu, _)| *cpu).collect();
            let same_core = siblings_of(core[0].1).is_some_and(|s| host_cpus.is_subset(&s))
                && host_cpus.len() == core.len();
            if !same_core {
                let vcpus: CpuSet = core.iter().map(|(v, _, _)| *v).collect();
                findings.push(Finding::new(Some(core[0].2), format!("guest core (vCPUs {vcpus}) is pinned to host CPUs {host_cpus}, which are not SMT siblings of one core: the guest schedules as if they shared a core")));
            }
        }
    } else {
        let host_cpus: CpuSet = pins.iter().map(|(_, cpu, _)| *cpu).collect();
        if let Some((_, cpu, span)) = pins.iter().find(|(_, cpu, _)| {
            siblings_of(*cpu).is_some_and(|s| {
                s.len() > 1 && s.difference(&[*cpu].into_iter().collect()).is_subset(&host_cpus)
            })
        }) {
            findings.push(Finding::new(Some(*span), format!("vCPUs are pinned to SMT siblings (host CPU {cpu} and its sibling) but the guest topology has threads=1: Windows treats them as separate cores")));
        }
    }
    findings.into_iter().map(|f| f.with_fix(Fix::manual("pin each guest core's threads to one host core's SMT siblings, and set threads to match (`kvmtune tune`)"))).collect()
}

pub(super) const PIN006: VmRule = VmRule {
    check: placement_spread,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN006",
        name: "placement-spread",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "vCPUs spread over more L3 groups or NUMA nodes than needed",
        explanation: "On AMD each CCX/CCD has its own L3, and a cache line shared across them costs a trip over Infinity Fabric; across NUMA nodes memory latency rises too. A placement should touch no more L3 groups and nodes than the vCPU count forces.",
        example: "8 vCPUs on a Ryzen 7950X pinned to four cores of each CCD",
        fix: "pin inside as few L3 groups and NUMA nodes as possible",
        fix_safety: Applicability::Manual,
        source: "Linux cacheinfo (shared_cpu_list); hwloc topology model",
    },
};

fn placement_spread(ctx: &RuleContext) -> Vec<Finding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let cpus = ctx.vcpu_cpus();
    if cpus.is_empty() {
        return Vec::new();
    }
    let needed = ctx.config.vcpus.as_ref().map_or(cpus.len(), |v| v.value as usize).min(cpus.len());
    let anchor = ctx.config.anchors.cputune;
    let mut findings = Vec::new();
    let l3_used = host.topology.l3_groups.iter().filter(|g| !g.cpus.intersection(&cpus).is_empty()).count();
    // The bounds count only CPUs a VM may use: housekeeping CPUs are not among them.
    let threads = ctx.config.cpu.topology.as_ref().map_or(1, |t| t.value.threads.max(1));
    let (l3_needed, nodes_needed) = crate::analysis::placement::spread_lower_bounds(host, needed, threads);
    if l3_used > l3_needed {
        findings.push(Finding::new(anchor, format!("the vCPUs span {l3_used} L3 groups where {l3_needed} would hold them: threads that share data pay cross-CCX/CCD latency")));
    }
    let nodes_used =
        host.topology.numa_nodes.iter().filter(|n| !n.cpus.intersection(&cpus).is_empty()).count();
    if nodes_used > nodes_needed {
        findings.push(Finding::new(anchor, format!("the vCPUs span {nodes_used} NUMA nodes where {nodes_needed} would hold them: memory accesses cross the interconnect")));
    }
    findings.into_iter().map(|f| f.with_fix(Fix::manual("pin the vCPUs inside as few L3 groups and NUMA nodes as their number allows (`kvmtune tune`)"))).collect()
}

pub(super) const PIN007: VmRule = VmRule {
    check: vcpu_on_housekeeping,
    needs_host: true,
    housekeeping_suffices: true,
    meta: RuleMeta {
        id: "PIN007",
        name: "vcpu-on-housekeeping",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "vCPUs on the host's housekeeping CPUs",
        explanation: "The host needs CPUs for its own interrupts, kernel threads, QEMU's emulator thread and I/O; vCPUs there get interrupted. The host's share is taken from the config's own evidence first: its emulator and iothread pins (an overlap with those is PIN003's), then the CPUs isolcpus= leaves to the host, then --housekeeping, then the E-cores of a hybrid part; otherwise it is the one whole core `kvmtune tune` would keep, the free core nearest the vCPUs, and only vCPUs that leave the host no core at all are flagged. A vCPU on CPU 0 outside that share is information: the boot CPU keeps the legacy timer interrupt (IRQ 0, requested with IRQF_NOBALANCING), which matters little once the local APIC timer runs the host's ticks, and isolation setups conventionally leave CPU 0 to the host.",
        example: "<vcpupin vcpu='0' cpuset='0'/> where CPU 0's core is the host's",
        fix: "move vCPUs off those CPUs",
        fix_safety: Applicability::Manual,
        source: "Linux isolcpus (Documentation/admin-guide/kernel-parameters.txt); Linux arch/x86/kernel/time.c setup_default_timer_irq (IRQ 0 with IRQF_NOBALANCING); tuned's cpu-partitioning profile (github.com/redhat-performance/tuned, profiles/cpu-partitioning)",
    },
};

/// The host's share as this config and its host show it, in the order PIN007 explains;
/// without host facts, only the config's pins and `--housekeeping` tell it.
fn config_host_share(ctx: &RuleContext, host: Option<&crate::host::HostFacts>) -> Option<HostShare> {
    let pinning = &ctx.config.pinning;
    let pinned = pinning
        .iothreadpin
        .iter()
        .map(|pin| pin.cpus.clone())
        .chain(pinning.emulatorpin.as_ref().map(|pin| pin.value.clone()))
        .fold(CpuSet::new(), |all, cpus| all.union(&cpus));
    if !pinned.is_empty() {
        return Some(HostShare { cpus: pinned, source: HostShareSource::ConfigPins });
    }
    let host_wide = host.and_then(host_wide_share);
    if let Some(share) = host_wide.clone().filter(|s| s.source == HostShareSource::Isolcpus) {
        return Some(share);
    }
    if let Some(cpus) = ctx.housekeeping {
        return Some(HostShare { cpus: cpus.clone(), source: HostShareSource::Configured });
    }
    let host = host?;
    Some(host_wide.unwrap_or_else(|| default_host_share(host, &ctx.vcpu_cpus())))
}

fn vcpu_on_housekeeping(ctx: &RuleContext) -> Vec<Finding> {
    let vcpu_cpus = ctx.vcpu_cpus();
    if vcpu_cpus.is_empty() {
        return Vec::new();
    }
    let Some(share) = config_host_share(ctx, ctx.host) else { return Vec::new() };
    if share.source == HostShareSource::ConfigPins {
        // Whatever overlaps the emulator and iothread pins, PIN003 reports.
        return Vec::new();
    }
    if share.cpus.is_empty() {
        return vec![
            Finding::new(ctx.config.anchors.cputune.or(ctx.config.vcpus.as_ref().map(|v| v.span)), format!("the vCPUs take every host core ({vcpu_cpus}): the host's interrupts, QEMU's emulator and I/O threads have no CPU of their own and preempt vCPUs"))
                .with_fix(Fix::manual("leave at least one whole core (with its SMT siblings) to the host and pin the emulator and iothreads there")),
        ];
    }
    let housekeeping = &share.cpus;
    let why = share.reason();
    let mut findings: Vec<Finding> = ctx
        .config
        .pinning
        .vcpupin
        .iter()
        .filter(|pin| !pin.cpus.intersection(housekeeping).is_empty())
        .map(|pin| {
            Finding::new(Some(pin.span), format!("vCPU {} runs on host CPU(s) {} that the host keeps for its own work (housekeeping: {housekeeping}, {why})", pin.id, pin.cpus.intersection(housekeeping)))
                .with_fix(Fix::manual("move the vCPU off the housekeeping CPUs"))
        })
        .collect();
    // CPU 0 when the host's share lies elsewhere: the boot CPU keeps the legacy timer
    // interrupt, and isolation setups conventionally leave it to the host. Small, so info.
    if !housekeeping.contains(0)
        && let Some(pin) = ctx.config.pinning.vcpupin.iter().find(|pin| pin.cpus.contains(0))
    {
        findings.push(
            Finding::new(Some(pin.span), format!("vCPU {} runs on host CPU 0, the boot CPU: the legacy timer interrupt (IRQ 0) cannot move off it, and isolation setups leave it to the host; a small cost while the local APIC timer does the host's timekeeping", pin.id))
                .with_severity(Severity::Info)
                .with_fix(Fix::manual(format!("prefer the host's share ({housekeeping}) plus CPU 0's core for the host, and other cores for vCPUs"))),
        );
    }
    findings
}

/// The first Linux release whose KVM offers TOPOEXT to guests: the kvm-4.16-1 merge (commit
/// 15303ba5d1cd, "allow guests to see TOPOEXT").
const TOPOEXT_IN_KVM_SINCE: crate::values::Version = crate::values::Version::new(4, 16, 0);

pub(super) const PIN008: VmRule = VmRule {
    check: amd_smt_without_topoext,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN008",
        name: "amd-smt-without-topoext",
        category: Category::Cpu,
        severity: Severity::Warning,
        title: "SMT topology on AMD without topoext",
        explanation: "AMD guests learn their SMT siblings and CCX layout from the topology-extension CPUID leaves; without topoext, threads>1 is presented in a way Windows does not read as SMT. host-passthrough (`-cpu host`) already has it wherever the host's KVM offers it, which kvmtune asks KVM itself (KVM_GET_SUPPORTED_CPUID) on a live host and otherwise infers from the kernel release (Linux 4.16 and later offer it) and the CPU's flags; the rule fires for a named or host-model CPU, for host-passthrough on a host CPU without it, and where the config disables it.",
        example: "<topology sockets='1' cores='4' threads='2'/> on an AMD host without <feature policy='require' name='topoext'/>",
        fix: "<feature policy='require' name='topoext'/>",
        fix_safety: Applicability::Safe,
        source: "QEMU target/i386/cpu.c (topoext: AMD cache and core topology in CPUID 0x8000001D/0x8000001E); Linux arch/x86/kvm/cpuid.c kvm_set_cpu_caps (TOPOEXT in the supported CPUID 0x80000001 ECX), added in the kvm-4.16-1 merge (commit 15303ba5d1cd: allow guests to see TOPOEXT); libvirt docs/formatdomain.rst CPU model and topology",
    },
};

fn amd_smt_without_topoext(ctx: &RuleContext) -> Vec<Finding> {
    if ctx.host_vendor() != Some(crate::host::cpu::CpuVendor::Amd) {
        return Vec::new();
    }
    let Some(topology) = ctx.config.cpu.topology.as_ref().filter(|t| t.value.threads > 1) else {
        return Vec::new();
    };
    let topoext = ctx.config.cpu.features.iter().find(|f| f.name == "topoext");
    if topoext.is_some_and(|f| f.enables()) {
        return Vec::new();
    }
    let host_passthrough = ctx.config.cpu.mode.as_ref().is_some_and(|m| m.value == "host-passthrough");
    // KVM's own answer (KVM_GET_SUPPORTED_CPUID, live hosts) first, else the kernel release
    // (KVM offers TOPOEXT since Linux 4.16), else the CPU's flags.
    let kvm_offers = ctx.host.and_then(|h| h.kvm.device.known()).and_then(|d| d.topoext.known().copied());
    let kernel_too_old = ctx
        .host
        .and_then(crate::analysis::hyperv_support::kernel_version)
        .filter(|running| *running < TOPOEXT_IN_KVM_SINCE);
    let cpu_has = ctx.host.and_then(|h| h.cpu.flags.known()).and_then(|flags| flags.get("topoext").copied());
    let offered = kvm_offers.or(kernel_too_old.map(|_| false)).or(cpu_has);
    // `-cpu host` hands the guest every feature KVM supports on this CPU: host-passthrough has
    // topoext unless KVM or the CPU lack it, or the config turns it off.
    if host_passthrough && topoext.is_none() && offered != Some(false) {
        return Vec::new();
    }
    let why = if topoext.is_some() {
        "the config turns the topoext CPU feature off".to_string()
    } else if host_passthrough && kvm_offers == Some(false) {
        "this host's KVM does not offer topoext (KVM_GET_SUPPORTED_CPUID), so host-passthrough cannot pass it"
            .to_string()
    } else if let (true, Some(running)) = (host_passthrough, kernel_too_old) {
        format!(
            "this host runs Linux {running}, whose KVM does not offer topoext yet (4.16 and later do), so host-passthrough cannot pass it"
        )
    } else if host_passthrough {
        "this host's CPU does not report topoext, so host-passthrough cannot pass it".to_string()
    } else {
        "the CPU model does not require the topoext feature".to_string()
    };
    vec![
        Finding::new(
            Some(topology.span),
            format!("threads>1 on an AMD host, but {why}: the guest cannot see which vCPUs are SMT siblings"),
        )
        .with_fix(Fix::safe(ConfigEdit::RequireCpuFeature { name: "topoext".into() })),
    ]
}

pub(super) const PIN009: VmRule = VmRule {
    check: no_cache_passthrough,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN009",
        name: "no-cache-passthrough",
        category: Category::Cpu,
        severity: Severity::Info,
        title: "host-passthrough CPU without cache passthrough",
        explanation: "With <cache mode='passthrough'/> the guest sees the host's real cache hierarchy, including which vCPUs share an L3; otherwise QEMU reports a made-up layout.",
        example: "<cpu mode='host-passthrough'> without <cache mode='passthrough'/>",
        fix: "<cache mode='passthrough'/>",
        fix_safety: Applicability::Safe,
        source: "libvirt docs/formatdomain.rst cpu cache; libvirt src/qemu/qemu_command.c (host-cache-info)",
    },
};

fn no_cache_passthrough(ctx: &RuleContext) -> Vec<Finding> {
    let Some(mode) = ctx.config.cpu.mode.as_ref().filter(|m| m.value == "host-passthrough") else {
        return Vec::new();
    };
    // Without pins there is no host L3 layout for the guest to mirror; with one L3 for every
    // core the emulated description already says the same.
    if ctx.config.pinning.vcpupin.is_empty() {
        return Vec::new();
    }
    if ctx.host.is_some_and(|host| host.topology.l3_groups.len() <= 1) {
        return Vec::new();
    }
    if ctx.config.cpu.cache_mode.as_ref().is_some_and(|c| c.value == "passthrough") {
        return Vec::new();
    }
    vec![
        Finding::new(ctx.config.anchors.cpu.or(Some(mode.span)), "host-passthrough CPU without <cache mode='passthrough'/>: the guest sees an invented cache layout instead of the host's L3 groups")
            .with_fix(Fix::safe(ConfigEdit::SetCpuCacheMode { mode: "passthrough".into() })),
    ]
}

pub(super) const PIN010: VmRule = VmRule {
    check: guest_pairs_on_consecutive_cpus,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN010",
        name: "guest-smt-on-consecutive-cpus",
        category: Category::Pinning,
        severity: Severity::Info,
        title: "guest SMT pairs on consecutive host CPUs, with no host to check them against",
        explanation: "With threads=2 the guest takes vCPUs 0 and 1 for one core's two threads. Pinned to host CPUs n and n+1 they are one core only on hosts that number siblings next to each other; most AMD and Intel desktops under Linux number them n and n+cores (CPU 0's sibling is 8 on an 8-core part), so there n and n+1 are two cores and the guest schedules as if they shared one. Without host facts kvmtune cannot tell; with --host, PIN005 checks the real siblings.",
        example: "<topology threads='2'/> with <vcpupin vcpu='0' cpuset='2'/> and <vcpupin vcpu='1' cpuset='3'/>",
        fix: "run `kvmtune check --host live` (or --host-root, --host-json) to check the pairs against the host's SMT siblings",
        fix_safety: Applicability::Manual,
        source: "Linux Documentation/admin-guide/cputopology.rst (thread_siblings_list); lscpu -e on AMD and Intel desktops",
    },
};

fn guest_pairs_on_consecutive_cpus(ctx: &RuleContext) -> Vec<Finding> {
    if ctx.host.is_some() {
        return Vec::new();
    }
    let threads = ctx.config.cpu.topology.as_ref().map_or(1, |t| t.value.threads);
    if threads != 2 {
        return Vec::new();
    }
    let Some(pins) = one_to_one_pins(ctx.config) else { return Vec::new() };
    let consecutive: Vec<&[(u32, u32, Span)]> =
        pins.chunks(2).filter(|pair| pair.len() == 2 && pair[1].1 == pair[0].1 + 1).collect();
    let Some(first) = consecutive.first() else { return Vec::new() };
    vec![
        Finding::new(Some(first[0].2), format!("{} guest core(s) are pinned to consecutive host CPUs (vCPUs {} and {} on CPUs {} and {}, ...): on hosts that number SMT siblings n and n+cores those are separate cores", consecutive.len(), first[0].0, first[1].0, first[0].1, first[1].1))
            .with_fix(Fix::manual("give --host (live, a snapshot or probe JSON) so that PIN005 checks the pairs against the host's real siblings")),
    ]
}

pub(super) const PIN011: VmRule = VmRule {
    check: realtime_vcpus_unguarded,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN011",
        name: "realtime-vcpus-unguarded",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "real-time vCPUs on host CPUs that are not set aside for them",
        explanation: "`<vcpusched scheduler='fifo'>` (or `rr`) runs the vCPU threads in a real-time class, ahead of every normal task on their host CPUs. A vCPU that spins (a guest idling with polling, a busy game loop) then keeps kernel threads bound to those CPUs (per-CPU workqueues, RCU callbacks, ksoftirqd) from running: the host stalls, with RCU stall warnings and hung tasks as its symptoms. It is safe where those CPUs are set aside: isolated from the scheduler (isolcpus=) or the tick (nohz_full=, with rcu_nocbs=), with host CPUs left for everything else, and with the kernel's real-time throttling on (sched_rt_runtime_us not -1), which keeps 5% of each second for normal tasks.",
        example: "<vcpusched vcpus='0-3' scheduler='fifo' priority='1'/> with no isolcpus= or nohz_full= on the host",
        fix: "isolate the vCPUs' host CPUs (isolcpus=/nohz_full= and rcu_nocbs=), keep real-time throttling on, or drop <vcpusched>",
        fix_safety: Applicability::Manual,
        source: "libvirt docs/formatdomain.rst CPU tuning (vcpusched); Linux Documentation/scheduler/sched-rt-group.rst (sched_rt_runtime_us, -1 disables throttling); Linux Documentation/admin-guide/kernel-parameters.txt (isolcpus, nohz_full, rcu_nocbs); Linux Documentation/RCU/stallwarn.rst (a real-time task hogging a CPU)",
    },
};

fn realtime_vcpus_unguarded(ctx: &RuleContext) -> Vec<Finding> {
    let Some(first) = ctx.config.pinning.vcpusched.iter().find(|s| s.is_realtime()) else {
        return Vec::new();
    };
    let running = ctx.config.running_vcpus();
    let rt_vcpus: CpuSet = ctx
        .config
        .pinning
        .vcpusched
        .iter()
        .filter(|s| s.is_realtime())
        .fold(CpuSet::new(), |all, s| all.union(s.vcpus.as_ref().unwrap_or(&running)));
    let pins = &ctx.config.pinning.vcpupin;
    let unpinned: CpuSet = rt_vcpus.iter().filter(|v| !pins.iter().any(|p| p.id == *v)).collect();
    let host_cpus: CpuSet =
        pins.iter().filter(|p| rt_vcpus.contains(p.id)).fold(CpuSet::new(), |all, p| all.union(&p.cpus));
    let scheduler = &first.scheduler;
    if !unpinned.is_empty() {
        return vec![Finding::new(Some(first.span), format!("vCPUs {unpinned} run as {scheduler} real-time threads without a pin: they may take any host CPU and starve the kernel threads there"))
            .with_fix(Fix::manual("pin every real-time vCPU to host CPUs set aside for it, or drop <vcpusched>"))];
    }
    let Some(host) = ctx.host else {
        return vec![Finding::new(Some(first.span), format!("vCPUs {rt_vcpus} run as {scheduler} real-time threads on host CPUs {host_cpus}: safe only where those CPUs are isolated (isolcpus=, nohz_full=), the host keeps CPUs of its own and real-time throttling is on; give --host to check"))
            .with_fix(Fix::manual("isolate those host CPUs and keep sched_rt_runtime_us at its default, or drop <vcpusched>"))];
    };
    let mut missing = Vec::new();
    if let Some(cmdline) = host.kernel.cmdline.known() {
        let isolated = cmdline
            .isolcpus
            .as_ref()
            .map(|i| i.cpus.clone())
            .unwrap_or_default()
            .union(cmdline.nohz_full.as_ref().unwrap_or(&CpuSet::new()));
        if !host_cpus.is_subset(&isolated) {
            missing.push(format!(
                "host CPUs {} are not isolated (no isolcpus= or nohz_full= for them)",
                host_cpus.difference(&isolated)
            ));
        }
    }
    if let Some(online) = host.topology.online.known()
        && online.is_subset(&host_cpus)
    {
        missing.push("they take every online host CPU, leaving none to the host".to_string());
    }
    if host.kernel.sched_rt_runtime_us.known() == Some(&-1) {
        missing.push(
            "real-time throttling is off (sched_rt_runtime_us is -1), so nothing else ever runs there"
                .to_string(),
        );
    }
    if missing.is_empty() {
        return Vec::new();
    }
    vec![Finding::new(Some(first.span), format!("vCPUs {rt_vcpus} run as {scheduler} real-time threads on host CPUs {host_cpus}, but {}", missing.join("; ")))
        .with_fix(Fix::manual("isolate those host CPUs, keep CPUs for the host and sched_rt_runtime_us at its default, or drop <vcpusched>"))]
}

pub(super) const PIN012: VmRule = VmRule {
    check: pins_to_absent_cpus,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN012",
        name: "pins-to-absent-cpus",
        category: Category::Pinning,
        severity: Severity::Error,
        title: "pins to host CPUs this host does not have online",
        explanation: "A pin names host CPUs by number, so a pin written for another machine (a guide's XML, a VM moved to a smaller host) or for a host whose SMT siblings are now off (nosmt, SMT disabled in firmware) names CPUs that are not there. libvirt puts each vCPU, emulator and iothread pin into that thread's cpuset cgroup and its CPU affinity at start. A CPU number at or past the kernel's CPU count is refused by the kernel's CPU-list parser with ERANGE, which libvirt reports as \"Unable to write to '.../vcpu0/cpuset.cpus': Numerical result out of range\", and the domain does not start, even when the same pin also names CPUs that exist; an affinity with no online CPU in it is refused with EINVAL (\"cannot set CPU affinity ... Invalid argument\"). Launchers that set only the affinity (taskset, for one) run the threads, where some CPUs of a set are online, on those alone: a narrower placement than written, without a word.",
        example: "<vcpupin vcpu='0' cpuset='12'/> on a host with CPUs 0-7 online",
        fix: "pin to CPUs this host has online; `kvmtune tune` plans the pins for this host",
        fix_safety: Applicability::Manual,
        source: "Linux lib/bitmap-str.c bitmap_parselist ('-ERANGE: bit number specified too large for mask'), used for cpuset.cpus by kernel/cgroup/cpuset.c; Linux man-pages sched_setaffinity(2) (EINVAL when the mask holds no CPU that is on the system and permitted); tp-libvirt's cpuset_range_check (github.com/autotest/tp-libvirt/pull/2036, after Red Hat bug 852688): a domain whose cpuset lies outside the host's CPUs must fail to start; libvirt docs/formatdomain.rst CPU tuning (vcpupin, emulatorpin, iothreadpin)",
    },
};

fn pins_to_absent_cpus(ctx: &RuleContext) -> Vec<Finding> {
    let Some(online) = ctx.host.and_then(|host| host.topology.online.known()) else { return Vec::new() };
    if online.is_empty() {
        return Vec::new();
    }
    let pinning = &ctx.config.pinning;
    let outside = |cpus: &CpuSet| !cpus.difference(online).is_empty();
    // One finding for the whole config, anchored at the first such pin: a config written for
    // another host usually has every pin off, and each would say the same.
    let vcpus: CpuSet = pinning.vcpupin.iter().filter(|pin| outside(&pin.cpus)).map(|pin| pin.id).collect();
    let iothreads: CpuSet =
        pinning.iothreadpin.iter().filter(|pin| outside(&pin.cpus)).map(|pin| pin.id).collect();
    let mut who = Vec::new();
    match vcpus.len() {
        0 => {}
        1 => who.push(format!("vCPU {vcpus}")),
        _ => who.push(format!("vCPUs {vcpus}")),
    }
    match iothreads.len() {
        0 => {}
        1 => who.push(format!("iothread {iothreads}")),
        _ => who.push(format!("iothreads {iothreads}")),
    }
    let singles = [
        (pinning.emulatorpin.as_ref(), "the emulator thread"),
        (pinning.process_affinity.as_ref(), "the QEMU process"),
        (pinning.domain_cpuset.as_ref(), "the domain's <vcpu cpuset>"),
    ];
    who.extend(
        singles
            .iter()
            .filter(|(pin, _)| pin.is_some_and(|p| outside(&p.value)))
            .map(|(_, name)| name.to_string()),
    );
    let pins: Vec<(&CpuSet, Span)> = pinning
        .vcpupin
        .iter()
        .chain(&pinning.iothreadpin)
        .map(|pin| (&pin.cpus, pin.span))
        .chain(singles.iter().filter_map(|(pin, _)| pin.map(|p| (&p.value, p.span))))
        .filter(|(cpus, _)| outside(cpus))
        .collect();
    let Some(anchor) = pins.iter().map(|(_, span)| *span).min_by_key(|span| span.start) else {
        return Vec::new();
    };
    let absent = pins.iter().fold(CpuSet::new(), |all, (cpus, _)| all.union(&cpus.difference(online)));
    let stranded = pins.iter().any(|(cpus, _)| cpus.intersection(online).is_empty());
    let launchers = if stranded {
        "launchers that only set the affinity run such threads on fewer CPUs than written, or refuse where none of a pin's CPUs is online"
    } else {
        "launchers that only set the affinity run those threads on fewer CPUs than written"
    };
    vec![
        Finding::new(
            Some(anchor),
            format!(
                "the pins of {} name host CPUs {absent}, which this host does not have online ({online}): libvirt refuses to start the domain, and {launchers}",
                who.join(", ")
            ),
        )
        .with_fix(Fix::manual(format!("pin every thread to CPUs among {online} (`kvmtune tune` plans them for this host)"))),
    ]
}

pub(super) const PIN013: VmRule = VmRule {
    check: emulator_unpinned,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "PIN013",
        name: "emulator-unpinned",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "pinned vCPUs, but the emulator or a used iothread may run on any host CPU",
        explanation: "Pinning the vCPUs does not pin the rest of QEMU. Without <emulatorpin> (and without <vcpu cpuset>), libvirt lets the emulator threads (QEMU's main loop, which wakes for its timers, for virtio queue notifications of devices without an iothread, for network, display and I/O completions, and QEMU's helper threads) run on every host CPU, and without <iothreadpin> the same holds for each iothread. They run wherever the scheduler puts them, the pinned vCPUs' CPUs included, where they preempt a vCPU, as PIN003 describes for an explicit overlap. Where the vCPUs' CPUs are isolated from the scheduler (isolcpus=), floating threads keep off them, and with host facts that say so the rule stays quiet.",
        example: "every vCPU in <vcpupin> and no <emulatorpin>",
        fix: "pin the emulator (and each used iothread) to host CPUs that no vCPU uses; `kvmtune tune` plans them",
        fix_safety: Applicability::Manual,
        source: "libvirt docs/formatdomain.rst CPU Tuning (emulatorpin, iothreadpin: if omitted, and the cpuset attribute of <vcpu> is not given, pinned to all the physical CPUs by default); Stefan Hajnoczi, 'QEMU Internals: Overall architecture and threading model' (blog.vmsplice.net, 2011); Red Hat Enterprise Linux 6 Virtualization Tuning and Optimization Guide, 9.3.4 Using emulatorpin (docs.redhat.com)",
    },
};

fn emulator_unpinned(ctx: &RuleContext) -> Vec<Finding> {
    let pinning = &ctx.config.pinning;
    let vcpu_cpus = ctx.vcpu_cpus();
    // Proxmox's affinity confines the whole process, and vCPUs float in it (PIN001).
    if vcpu_cpus.is_empty() || pinning.process_affinity.is_some() {
        return Vec::new();
    }
    // <vcpu cpuset> is where threads without a pin of their own run: off the vCPUs' CPUs, it
    // keeps them away as well as a pin would.
    if pinning.domain_cpuset.as_ref().is_some_and(|domain| domain.value.intersection(&vcpu_cpus).is_empty()) {
        return Vec::new();
    }
    if let Some(cmdline) = ctx.host.and_then(|host| host.kernel.cmdline.known())
        && cmdline.isolcpus.as_ref().is_some_and(|isolated| vcpu_cpus.is_subset(&isolated.cpus))
    {
        return Vec::new();
    }
    let mut floating = Vec::new();
    if pinning.emulatorpin.is_none() {
        floating.push("the emulator threads".to_string());
    }
    let unpinned: CpuSet = ctx
        .config
        .devices
        .used_iothreads()
        .into_iter()
        .filter(|id| !pinning.iothreadpin.iter().any(|pin| pin.id == *id))
        .collect();
    match unpinned.len() {
        0 => {}
        1 => floating.push(format!("iothread {unpinned}")),
        _ => floating.push(format!("iothreads {unpinned}")),
    }
    if floating.is_empty() {
        return Vec::new();
    }
    let (span, where_) = match &pinning.domain_cpuset {
        Some(domain) => (
            Some(domain.span),
            format!("on host CPUs {} (<vcpu cpuset>), the vCPUs' among them", domain.value),
        ),
        None => (ctx.config.anchors.cputune, "on any host CPU, the vCPUs' included".to_string()),
    };
    let finding = Finding::new(
        span,
        format!(
            "the vCPUs are pinned (host CPUs {vcpu_cpus}), but {} may run {where_}, and preempt a vCPU where they wake",
            floating.join(" and ")
        ),
    )
    .with_fix(Fix::manual(
        "pin the emulator and the used iothreads to host CPUs no vCPU uses (<emulatorpin>, <iothreadpin>); `kvmtune tune` plans them",
    ));
    if ctx.workload == Workload::Desktop {
        return vec![Finding {
            message: format!("{} (a desktop VM: pin them if it stutters)", finding.message),
            ..finding.with_severity(Severity::Info)
        }];
    }
    vec![finding]
}
