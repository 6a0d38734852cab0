//! `kvmtune verify`: a VM's configuration held against what its guest sees from inside (the
//! guest program's report). Each rule is one declaration beside its check; a finding carries
//! both sides of the evidence and the fix.

use serde::Serialize;

use crate::analysis::Severity;
use crate::analysis::fix::Applicability;
use crate::analysis::meta::{Category, RuleMeta};
use crate::config::model::{SourceFormat, VmConfig};
use crate::guest::GuestReport;
use crate::host::HostFacts;
use crate::knowledge::hyperv::{ENLIGHTENMENTS, Hv};
use crate::knowledge::windows;
use crate::values::CpuSet;

/// What a verify rule looks at.
pub struct VerifyContext<'a> {
    pub config: &'a VmConfig,
    pub guest: &'a GuestReport,
    /// The host the VM runs on, where known: the SMT and L3 groups its pinned CPUs are in.
    pub host: Option<&'a HostFacts>,
}

pub struct VerifyRule {
    pub meta: RuleMeta,
    pub check: fn(&VerifyContext) -> Vec<VerifyFinding>,
}

/// One way the guest differs from its configuration.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyFinding {
    pub rule: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    /// What the configuration asks for.
    pub configured: String,
    /// What the guest sees.
    pub seen: String,
    /// Why they differ, where the report tells.
    pub why: String,
    pub fix: String,
    pub source: &'static str,
}

impl VerifyFinding {
    fn of(meta: &'static RuleMeta, configured: String, seen: String, why: String) -> Self {
        VerifyFinding {
            rule: meta.id,
            name: meta.name,
            severity: meta.severity,
            title: meta.title,
            configured,
            seen,
            why,
            fix: meta.fix.to_string(),
            source: meta.source,
        }
    }

    fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
}

/// Runs every rule; findings in rule order. Without the host's facts the rules that hold the
/// guest's groups against the host's (VER009-VER011) have nothing to compare with.
pub fn verify(config: &VmConfig, guest: &GuestReport, host: Option<&HostFacts>) -> Vec<VerifyFinding> {
    let context = VerifyContext { config, guest, host };
    VERIFY_RULES.iter().flat_map(|rule| (rule.check)(&context)).collect()
}

pub static VERIFY_RULES: &[VerifyRule] =
    &[VER001, VER002, VER003, VER004, VER005, VER006, VER007, VER008, VER009, VER010, VER011, VER012, VER013];

/// Why an enlightenment the config asks for may be missing, from what else the guest sees.
fn why_no_hyperv(ctx: &VerifyContext) -> String {
    if !ctx.guest.cpuid.hypervisor_bit {
        return "the guest does not see the hypervisor CPUID bit, so it reads no hypervisor leaves at all"
            .into();
    }
    if !ctx.guest.has_hyperv_interface() {
        let signature = ctx.guest.signature().unwrap_or("none");
        return format!(
            "the guest sees no Hyper-V interface (leaf 0x40000001 is not Hv#1; signature '{signature}'): the VM \
             runs without any enlightenment, as under TCG, on a KVM built without CONFIG_KVM_HYPERV, or when it was \
             started before the configuration asked for them"
        );
    }
    "the guest sees Hyper-V leaves without this bit: the running VM was started from another definition \
     (restart it), or QEMU turned the property off (hv-passthrough and host-model take only what this host's KVM offers)"
        .into()
}

pub(crate) const VER001: VerifyRule = VerifyRule {
    check: enlightenment_not_seen,
    meta: RuleMeta {
        id: "VER001",
        name: "enlightenment-not-seen",
        category: Category::Hyperv,
        severity: Severity::Error,
        title: "an enlightenment the configuration turns on that the guest does not see",
        explanation: "Each Hyper-V enlightenment reaches the guest as CPUID bits in leaves 0x40000003, 0x40000004 and 0x4000000A, set by QEMU for each hv-* property that is on (QEMU target/i386/kvm/kvm.c, kvm_hyperv_properties[]). Windows uses an enlightenment only when it finds its bits; a bit the guest does not see means the feature is not in effect, whatever the XML says. The report says which of the usual causes it is: the hypervisor bit hidden (every leaf lost), no Hyper-V interface at all (TCG, a kernel without CONFIG_KVM_HYPERV, a VM not restarted since the change), or a single property QEMU left out.",
        example: "<stimer state='on'/> configured; leaf 0x40000003 EAX bit 3 (AccessSyntheticTimerRegs) clear in the guest",
        fix: "restart the VM from this definition; if it persists, run `kvmtune check` with host facts (HV011 says whether this host can give it)",
        fix_safety: Applicability::Manual,
        source: "Microsoft Hyper-V TLFS, Feature discovery (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/feature-discovery); QEMU docs/system/i386/hyperv.rst; QEMU target/i386/kvm/kvm.c kvm_hyperv_properties[]",
    },
};

fn enlightenment_not_seen(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let configured: Vec<Hv> = ctx
        .config
        .hyperv
        .features
        .iter()
        .filter(|f| f.on)
        .filter_map(|f| f.hv())
        .filter(|hv| ENLIGHTENMENTS.iter().any(|e| e.hv == *hv))
        .collect();
    let missing: Vec<Hv> =
        configured.iter().copied().filter(|hv| ctx.guest.sees(*hv) != Some(true)).collect();
    if missing.is_empty() {
        return Vec::new();
    }
    let why = why_no_hyperv(ctx);
    if !ctx.guest.has_hyperv_interface() {
        // One finding: the cause is the same for all.
        let names: Vec<&str> = missing.iter().map(|hv| hv.qemu()).collect();
        return vec![VerifyFinding::of(
            &VER001.meta,
            format!("{} on: {}", crate::values::text::plural(names.len(), "enlightenment"), names.join(", ")),
            "no Hyper-V leaves".into(),
            why,
        )];
    }
    missing
        .into_iter()
        .map(|hv| {
            VerifyFinding::of(&VER001.meta, format!("{} on", hv.qemu()), seen_of(ctx.guest, hv), why.clone())
        })
        .collect()
}

/// What the guest shows of an enlightenment it does not see: the bits that are clear, and
/// whether that is because their leaf lies above the highest Hyper-V leaf the guest has.
fn seen_of(guest: &GuestReport, hv: Hv) -> String {
    let missing = guest.missing_bits(hv);
    if missing.is_empty() {
        return "the leaves of its bits are not in the report".into();
    }
    let mut seen = format!("clear in the guest: {}", missing.join(", "));
    let max = guest.max_hyperv_leaf();
    let above = ENLIGHTENMENTS
        .iter()
        .filter(|e| e.hv == hv)
        .flat_map(|e| e.bits())
        .map(|b| b.leaf)
        .find(|leaf| max.is_some_and(|max| *leaf > max));
    if let (Some(leaf), Some(max)) = (above, max) {
        seen.push_str(&format!(
            " (leaf 0x{leaf:08X} is above the guest's highest Hyper-V leaf, 0x{max:08X})"
        ));
    }
    seen
}

pub(crate) const VER002: VerifyRule = VerifyRule {
    check: vendor_id_not_seen,
    meta: RuleMeta {
        id: "VER002",
        name: "vendor-id-not-seen",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "the guest sees another hypervisor signature than hv-vendor-id sets",
        explanation: "hv-vendor-id (libvirt <vendor_id state='on' value='...'/>) replaces the 12-byte signature of CPUID leaf 0x40000000, which NVIDIA's drivers before 465 and some anti-cheat software read to detect a VM. A guest that still sees 'Microsoft Hv' or 'KVMKVMKVM' runs on another definition than this one.",
        example: "<vendor_id state='on' value='randomid'/>; the guest reads 'Microsoft Hv'",
        fix: "restart the VM from this definition",
        fix_safety: Applicability::Manual,
        source: "QEMU docs/system/i386/hyperv.rst (hv-vendor-id); libvirt docs/formatdomain.rst (hyperv vendor_id)",
    },
};

fn vendor_id_not_seen(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let Some(wanted) = ctx.config.hyperv.get(Hv::VendorId).filter(|f| f.on).and_then(|f| f.value.as_deref())
    else {
        return Vec::new();
    };
    let seen = ctx.guest.signature().unwrap_or("");
    if !ctx.guest.has_hyperv_interface() || seen == wanted {
        // Without Hyper-V leaves VER001 already says why; the vendor id is one of them.
        return Vec::new();
    }
    vec![VerifyFinding::of(
        &VER002.meta,
        format!("hv-vendor-id={wanted}"),
        format!("signature '{seen}'"),
        "the running VM was started from another definition".into(),
    )]
}

pub(crate) const VER003: VerifyRule = VerifyRule {
    check: hypervisor_bit_differs,
    meta: RuleMeta {
        id: "VER003",
        name: "hypervisor-bit-differs",
        category: Category::Cpu,
        severity: Severity::Error,
        title: "the guest's hypervisor CPUID bit is not what the configuration says",
        explanation: "CPUID.1:ECX[31] tells an OS it runs in a VM; Windows reads the Hyper-V leaves only when it is set, and Windows 7 picks its QueryPerformanceCounter source by it. The configuration hides it (<feature policy='disable' name='hypervisor'/>, -cpu ...,-hypervisor) or leaves it; a guest that sees the other state runs on another definition.",
        example: "<feature policy='disable' name='hypervisor'/>; the guest sees the bit set",
        fix: "restart the VM from this definition",
        fix_safety: Applicability::Manual,
        source: "Intel SDM vol. 2A, CPUID leaf 1 ECX bit 31 (not used by hardware, reserved for hypervisors); Microsoft Hyper-V TLFS, Feature discovery",
    },
};

fn hypervisor_bit_differs(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let hidden = ctx.config.hypervisor_bit_disabled().is_some();
    let seen = ctx.guest.cpuid.hypervisor_bit;
    if hidden != seen {
        return Vec::new();
    }
    let (configured, shown) = if hidden { ("hidden", "set") } else { ("left on (the default)", "clear") };
    vec![VerifyFinding::of(
        &VER003.meta,
        format!("hypervisor bit {configured}"),
        format!("hypervisor bit {shown}"),
        "the running VM was started from another definition, or another layer (a QEMU wrapper, <qemu:commandline>) changes -cpu".into(),
    )]
}

/// The vCPUs the guest should see at boot.
fn configured_vcpus(config: &VmConfig) -> Option<u32> {
    if let Some(enabled) = &config.vcpus_enabled {
        return u32::try_from(enabled.len()).ok();
    }
    config.vcpus.as_ref().map(|v| v.value)
}

/// The sockets the configuration gives: its `<topology>`, or libvirt's default without one
/// (a socket per vCPU; QEMU alone and Proxmox prefer cores, so they are not guessed).
fn configured_sockets(config: &VmConfig) -> Option<u32> {
    match &config.cpu.topology {
        Some(topology) => Some(topology.value.sockets),
        None if config.format == SourceFormat::Libvirt => configured_vcpus(config),
        None => None,
    }
}

pub(crate) const VER004: VerifyRule = VerifyRule {
    check: vcpus_not_counted,
    meta: RuleMeta {
        id: "VER004",
        name: "vcpus-not-counted",
        category: Category::Cpu,
        severity: Severity::Error,
        title: "the guest counts fewer logical processors than the configuration gives it",
        explanation: "A Windows client edition uses at most two CPU sockets (Home one, Pro for Workstations four): vCPUs beyond them stay idle and Task Manager shows fewer processors than the VM has, the most common form being libvirt's default of one socket per vCPU. Other causes: vCPUs hot-pluggable but not online, or a guest kernel limit.",
        example: "<vcpu>8</vcpu> without <topology>; Windows 11 Pro counts 2 logical processors",
        fix: "give the vCPUs as cores of one socket: <topology sockets='1' cores='N' threads='1'/> (threads='2' where vCPU pairs are pinned to host SMT siblings); `kvmtune check` (CPU001) makes the edit",
        fix_safety: Applicability::Manual,
        source: "Microsoft, Compare Windows editions (Home: one CPU socket); Microsoft, Announcing Windows 10 Pro for Workstations (blogs.windows.com/business/2017/08/10/microsoft-announces-windows-10-pro-workstations); libvirt src/qemu/qemu_command.c qemuBuildSmpCommandLine",
    },
};

fn vcpus_not_counted(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let Some(vcpus) = configured_vcpus(ctx.config) else { return Vec::new() };
    let counted = ctx.guest.topology.logical_processors;
    if counted >= vcpus {
        return Vec::new();
    }
    let sockets = configured_sockets(ctx.config);
    let edition = ctx.guest.os.edition.as_deref();
    let limit = edition.and_then(windows::socket_limit).filter(|_| ctx.guest.os.is_windows());
    let by_sockets = match (sockets, limit) {
        (Some(sockets), Some(limit)) if sockets > limit => Some(format!(
            "the configuration gives {}, and Windows {} uses at most {limit}",
            crate::values::text::plural(sockets as usize, "socket"),
            edition.unwrap_or("client")
        )),
        _ => None,
    };
    let configured = format!(
        "{vcpus} vCPUs{}",
        sockets
            .map(|s| format!(" in {}", crate::values::text::plural(s as usize, "socket")))
            .unwrap_or_default()
    );
    let seen = format!("{counted} logical processors");
    vec![match by_sockets {
        Some(why) => VerifyFinding::of(&VER004.meta, configured, seen, why),
        None => VerifyFinding::of(
            &VER004.meta,
            configured,
            seen,
            "the guest has not brought every vCPU online (hot-plugged vCPUs, a guest limit such as Linux \
             maxcpus=), or the running VM was started from another definition"
                .into(),
        )
        .with_fix("bring the vCPUs online in the guest (Linux: /sys/devices/system/cpu/cpuN/online), or restart the VM from this definition"),
    }]
}

pub(crate) const VER005: VerifyRule = VerifyRule {
    check: smt_not_seen,
    meta: RuleMeta {
        id: "VER005",
        name: "smt-not-seen",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "the guest does not see the SMT pairs the configuration gives it",
        explanation: "With <topology threads='2'/> the guest should see pairs of logical processors sharing a core, and schedules by them: it keeps two busy threads off one core while others idle. On AMD hosts the guest learns the pairs from CPUID leaf 0x8000001E, which QEMU gives only with the topoext feature; without it Windows counts every vCPU as a core of its own. The reverse (pairs the configuration does not ask for) means the VM runs on another definition.",
        example: "<topology sockets='1' cores='4' threads='2'/> on an AMD host without topoext: the guest sees 8 cores",
        fix: "on AMD, add <feature policy='require' name='topoext'/> (`kvmtune check` PIN008); otherwise restart the VM from this definition",
        fix_safety: Applicability::Manual,
        source: "AMD64 Architecture Programmer's Manual vol. 3, CPUID Fn8000_001E (core and thread ids, TopologyExtensions); QEMU target/i386/cpu.c (topoext); Microsoft, Processor groups and scheduling (GetLogicalProcessorInformationEx)",
    },
};

fn smt_not_seen(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let Some(topology) = &ctx.config.cpu.topology else { return Vec::new() };
    let threads = topology.value.threads;
    let pairs = ctx.guest.topology.smt_groups.len();
    if threads >= 2 && pairs == 0 {
        let amd = ctx.guest.cpuid.vendor == "AuthenticAMD" || ctx.guest.cpuid.vendor == "HygonGenuine";
        let why = if amd {
            "an AMD CPU: the guest reads SMT siblings from leaf 0x8000001E, which QEMU gives only with topoext".to_string()
        } else {
            "the running VM was started from another definition".to_string()
        };
        return vec![VerifyFinding::of(
            &VER005.meta,
            format!("threads='{threads}' per core"),
            format!("no SMT pairs: {} cores of one thread", ctx.guest.topology.cores),
            why,
        )];
    }
    if threads == 1 && pairs > 0 {
        return vec![
            VerifyFinding::of(
                &VER005.meta,
                "threads='1' per core".into(),
                format!("{} SMT pairs", pairs),
                "the running VM was started from another definition".into(),
            )
            .with_severity(Severity::Info)
            .with_fix("restart the VM from this definition"),
        ];
    }
    Vec::new()
}

pub(crate) const VER006: VerifyRule = VerifyRule {
    check: sockets_differ,
    meta: RuleMeta {
        id: "VER006",
        name: "sockets-differ",
        category: Category::Cpu,
        severity: Severity::Warning,
        title: "the guest counts another number of CPU sockets than the configuration gives",
        explanation: "The sockets a guest counts decide how much of the VM a Windows client edition uses (Home one, Pro two) and how it spreads work. A count different from the configuration's topology means the VM runs on another definition, or a layer between (a QEMU wrapper, <qemu:commandline> -smp) changes it.",
        example: "<topology sockets='1' cores='8' threads='1'/>; the guest counts 8 sockets",
        fix: "restart the VM from this definition; look for an -smp in <qemu:commandline>",
        fix_safety: Applicability::Manual,
        source: "libvirt docs/formatdomain.rst (CPU model and topology); QEMU docs (-smp)",
    },
};

fn sockets_differ(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let Some(sockets) = configured_sockets(ctx.config) else { return Vec::new() };
    let counted = ctx.guest.topology.sockets;
    // Fewer processors counted than configured is VER004's; sockets then differ as well.
    let all_counted = configured_vcpus(ctx.config).is_none_or(|v| ctx.guest.topology.logical_processors >= v);
    if counted == sockets || counted == 0 || !all_counted {
        return Vec::new();
    }
    vec![VerifyFinding::of(
        &VER006.meta,
        crate::values::text::plural(sockets as usize, "socket"),
        format!("{counted} counted by the guest"),
        "the running VM was started from another definition".into(),
    )]
}

pub(crate) const VER007: VerifyRule = VerifyRule {
    check: invtsc_not_seen,
    meta: RuleMeta {
        id: "VER007",
        name: "invtsc-not-seen",
        category: Category::Timers,
        severity: Severity::Warning,
        title: "the configuration asks for an invariant TSC the guest does not see",
        explanation: "CPUID 0x80000007 EDX bit 8 (invariant TSC) tells the OS the TSC runs at a constant rate; Windows uses the TSC for QueryPerformanceCounter only with it (or with the Hyper-V reference TSC page). QEMU gives it with the invtsc feature, which also blocks migration; libvirt's host-passthrough drops it while the CPU stays migratable.",
        example: "<feature policy='require' name='invtsc'/>; CPUID 0x80000007 EDX[8] clear in the guest",
        fix: "restart the VM from this definition; with host-passthrough set migratable='off'",
        fix_safety: Applicability::Manual,
        source: "Intel SDM vol. 3B 18.17.1 (invariant TSC); QEMU target/i386/cpu.c (invtsc, migration blocker); libvirt docs/formatdomain.rst (host-passthrough migratable)",
    },
};

fn invtsc_not_seen(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let asked = ctx.config.cpu.features.iter().any(|f| f.name == "invtsc" && f.enables());
    if !asked || ctx.guest.cpuid.invariant_tsc != Some(false) {
        return Vec::new();
    }
    vec![VerifyFinding::of(
        &VER007.meta,
        "invtsc required".into(),
        "CPUID 0x80000007 EDX[8] clear".into(),
        "the running VM was started from another definition, or QEMU dropped it (host-passthrough with migratable='on')".into(),
    )]
}

/// QueryPerformanceFrequency of the HPET (14.318180 MHz) and the ACPI PM timer (3.579545 MHz).
const HPET_HZ: u64 = 14_318_180;
const ACPI_PM_HZ: u64 = 3_579_545;
/// A clock read that costs more than this exits to the hypervisor (a read from the TSC or the
/// reference TSC page takes tens of nanoseconds; an exit, microseconds).
const EXITING_READ_NS: f64 = 1000.0;

pub(crate) const VER008: VerifyRule = VerifyRule {
    check: slow_clock,
    meta: RuleMeta {
        id: "VER008",
        name: "slow-clock",
        category: Category::Timers,
        severity: Severity::Warning,
        title: "the guest's clock is an emulated timer: each read exits to the hypervisor",
        explanation: "QueryPerformanceCounter reads the Hyper-V reference TSC page or the invariant TSC (QueryPerformanceFrequency 10 MHz on Windows 10 and later) in tens of nanoseconds; when Windows falls back to the HPET (14.318180 MHz) or the ACPI PM timer (3.579545 MHz) every read is a trap into QEMU's userspace emulation costing microseconds, and games that read it thousands of times a second stutter. The same holds for a Linux guest whose clocksource is hpet or acpi_pm. The usual causes: hv-time off, the hypervisor bit hidden, no invariant TSC, or the HPET left on.",
        example: "QueryPerformanceFrequency 14318180 Hz; one QueryPerformanceCounter call 3.1 us",
        fix: "turn on hv-time (libvirt <timer name='hypervclock' present='yes'/>), keep the hypervisor bit, and turn the HPET off (<timer name='hpet' present='no'/>)",
        fix_safety: Applicability::Manual,
        source: "Microsoft, Acquiring high-resolution time stamps (learn.microsoft.com/windows/win32/sysinfo/acquiring-high-resolution-time-stamps); QEMU docs/system/i386/hyperv.rst (hv-time); Linux Documentation/virt/kvm/x86/timekeeping.rst",
    },
};

fn slow_clock(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let time = &ctx.guest.time;
    let cost = time.call_cost.as_ref().and_then(|c| c.median_ns);
    let emulated = match (time.frequency_hz, time.clocksource.as_deref()) {
        (Some(HPET_HZ), _) | (_, Some("hpet")) => Some("the HPET"),
        (Some(ACPI_PM_HZ), _) | (_, Some("acpi_pm")) => Some("the ACPI PM timer"),
        _ => None,
    };
    let slow = cost.is_some_and(|ns| ns > EXITING_READ_NS);
    if emulated.is_none() && !slow {
        return Vec::new();
    }
    let mut seen = match (emulated, time.frequency_hz) {
        (Some(timer), Some(hz)) => format!("{} at {hz} Hz: {timer}", time.counter),
        (Some(timer), None) => format!("clocksource {timer}"),
        (None, _) => time.counter.clone(),
    };
    if let Some(ns) = cost {
        seen.push_str(&format!(
            "; one read {}",
            if ns >= 1000.0 { format!("{:.1} us", ns / 1000.0) } else { format!("{ns:.0} ns") }
        ));
    }
    let config = ctx.config;
    let mut causes = Vec::new();
    if !config.hyperv.is_on(Hv::Time) && ctx.guest.os.is_windows() {
        causes.push("hv-time is off");
    }
    if config.hypervisor_bit_disabled().is_some() {
        causes.push("the hypervisor bit is hidden");
    }
    if !config.clock.hpet_off() {
        causes.push("the HPET is on");
    } else if emulated == Some("the HPET") {
        causes.push("the guest uses the HPET the configuration turns off: the running VM was started from another definition");
    }
    if ctx.guest.cpuid.invariant_tsc == Some(false) {
        causes.push("the guest sees no invariant TSC");
    }
    let configured =
        if config.hyperv.is_on(Hv::Time) { "hv-time on".to_string() } else { "hv-time not on".to_string() };
    let why = if causes.is_empty() {
        "the configuration has none of the usual causes: the VM may run on another definition, or the guest forces the timer (bcdedit /set useplatformclock true)".to_string()
    } else {
        causes.join("; ")
    };
    vec![VerifyFinding::of(&VER008.meta, configured, seen, why)]
}

/// The one host CPU a vCPU is pinned to; none where it floats over several or is not pinned.
/// The guest numbers its processors in vCPU order (QEMU lists them so in the ACPI MADT, which
/// Linux and Windows number them by), so processor N is vCPU N.
fn pinned_cpu(config: &VmConfig, vcpu: u32) -> Option<u32> {
    config.pinning.only_cpu(vcpu).map(|(cpu, _)| cpu)
}

/// `guest processors 0-1 on host CPUs 2-3`, for the evidence.
fn on_host(processors: &[u32], cpus: &CpuSet) -> String {
    let processors: CpuSet = processors.iter().copied().collect();
    format!("guest processors {processors} on host CPUs {cpus}")
}

pub(crate) const VER009: VerifyRule = VerifyRule {
    check: smt_pairs_not_host_cores,
    meta: RuleMeta {
        id: "VER009",
        name: "smt-pairs-not-host-cores",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "the SMT pairs the guest sees are not the host's",
        explanation: "A guest schedules by the SMT pairs it sees: it keeps two busy threads off one core's two processors and fills a core's second thread last. Where a pair it sees runs on two host CPUs of different cores, it leaves capacity idle for nothing; where two processors it counts as separate cores run on one host core's two threads, it puts two busy threads on one core and both run at half speed. Held against the host's own siblings of the CPUs the vCPUs are pinned to (Linux numbers a core's threads n and n+cores on most desktops, so vCPU pairs pinned to consecutive host CPUs are two cores there).",
        example: "the guest sees processors 0 and 1 as one core's threads; they are pinned to host CPUs 2 and 3, whose siblings are 18 and 19",
        fix: "pin each guest core's two vCPUs to one host core's two threads (`kvmtune tune` plans it), or, where they cannot be, give the guest threads='1'",
        fix_safety: Applicability::Manual,
        source: "Linux Documentation/admin-guide/cputopology.rst (thread_siblings_list); Microsoft, GetLogicalProcessorInformationEx (RelationProcessorCore); libvirt docs/formatdomain.rst (CPU model and topology, vcpupin)",
    },
};

fn smt_pairs_not_host_cores(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let host_core = |cpu: u32| host.topology.cpu(cpu).and_then(|c| c.smt_siblings.clone());
    let guest = &ctx.guest.topology;
    let mut split = Vec::new();
    for pair in &guest.smt_groups {
        let Some(cpus) = pair.iter().map(|&p| pinned_cpu(ctx.config, p)).collect::<Option<Vec<u32>>>() else {
            continue;
        };
        // A group of one (or none, in a report that is not the program's) is no pair.
        let Some(&first) = cpus.first().filter(|_| cpus.len() > 1) else { continue };
        let set: CpuSet = cpus.iter().copied().collect();
        let one_core = set.len() == cpus.len() && host_core(first).is_some_and(|s| set.is_subset(&s));
        if !one_core {
            split.push(on_host(pair, &set));
        }
    }
    let same_guest_core = |a: u32, b: u32| guest.smt_groups.iter().any(|g| g.contains(&a) && g.contains(&b));
    // The processors the guest has whose vCPU is pinned to one CPU: the configuration bounds
    // them, whatever count a report claims.
    let mut pinned: Vec<(u32, u32)> = ctx
        .config
        .pinning
        .vcpupin
        .iter()
        .filter(|pin| pin.id < guest.logical_processors)
        .filter_map(|pin| Some((pin.id, pinned_cpu(ctx.config, pin.id)?)))
        .collect();
    pinned.sort_unstable();
    pinned.dedup_by_key(|(vcpu, _)| *vcpu);
    let mut shared = Vec::new();
    for (i, &(a, x)) in pinned.iter().enumerate() {
        for &(b, y) in &pinned[i + 1..] {
            if x != y && host_core(x).is_some_and(|s| s.contains(y)) && !same_guest_core(a, b) {
                shared.push(on_host(&[a, b], &[x, y].into_iter().collect()));
            }
        }
    }
    let mut findings = Vec::new();
    if !split.is_empty() {
        findings.push(VerifyFinding::of(
            &VER009.meta,
            "vCPU pairs pinned one to a host CPU".into(),
            format!("pairs the guest sees as one core: {}", split.join("; ")),
            "each pair's host CPUs are threads of different host cores: the guest leaves a core's second thread idle that is a core of its own".into(),
        ));
    }
    if !shared.is_empty() {
        findings.push(
            VerifyFinding::of(
                &VER009.meta,
                "vCPUs pinned to both threads of host cores".into(),
                format!("separate cores to the guest: {}", shared.join("; ")),
                "the guest counts them as two cores and may run two busy threads on one host core".into(),
            )
            .with_fix("give the guest threads='2' with each pair's vCPUs numbered next to each other, or pin the vCPUs to different host cores"),
        );
    }
    findings
}

pub(crate) const VER010: VerifyRule = VerifyRule {
    check: l3_group_spans_host_l3s,
    meta: RuleMeta {
        id: "VER010",
        name: "l3-group-spans-host-l3s",
        category: Category::Pinning,
        severity: Severity::Warning,
        title: "processors the guest sees sharing an L3 run under different host L3 caches",
        explanation: "The guest keeps threads that share data on processors it sees sharing a last-level cache, and moves work freely among them. Where those processors are pinned to host CPUs of different L3 groups (the CCXs or CCDs of AMD parts, the sockets of a two-socket host), every such move and every shared cache line crosses between caches: latency a gaming or audio workload feels. QEMU shows one die's vCPUs one L3; the guest's groups follow its topology, not the host's.",
        example: "the guest sees processors 0-7 under one L3; they are pinned to host CPUs 4-7 and 8-11, two CCDs of a Ryzen 9",
        fix: "pin the vCPUs of one guest L3 group inside one host L3 group (`kvmtune tune` plans it); where the VM needs more CPUs than one holds, give the guest one die per host L3 group (<topology dies='N' .../>) so that it sees the split",
        fix_safety: Applicability::Manual,
        source: "Linux Documentation/admin-guide/cputopology.rst and cacheinfo (shared_cpu_list); QEMU target/i386/cpu.c (CPUID leaf 4: the L3 shared by one die's vCPUs); Microsoft, GetLogicalProcessorInformationEx (RelationCache); libvirt docs/formatdomain.rst (topology dies)",
    },
};

fn l3_group_spans_host_l3s(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let mut spans = Vec::new();
    for group in &ctx.guest.topology.l3_groups {
        let cpus: CpuSet = group.iter().filter_map(|&p| pinned_cpu(ctx.config, p)).collect();
        let touched =
            host.topology.l3_groups.iter().filter(|g| !g.cpus.intersection(&cpus).is_empty()).count();
        if touched > 1 {
            spans.push(format!("{} ({touched} host L3 groups)", on_host(group, &cpus)));
        }
    }
    if spans.is_empty() {
        return Vec::new();
    }
    vec![VerifyFinding::of(
        &VER010.meta,
        "vCPUs pinned across host L3 groups".into(),
        format!("one L3 to the guest: {}", spans.join("; ")),
        "the guest treats them as sharing a cache they do not share".into(),
    )]
}

pub(crate) const VER011: VerifyRule = VerifyRule {
    check: host_l3_split_in_guest,
    meta: RuleMeta {
        id: "VER011",
        name: "host-l3-split-in-guest",
        category: Category::Pinning,
        severity: Severity::Info,
        title: "processors under one host L3 cache are split over several L3 groups in the guest",
        explanation: "The mirror of VER010: vCPUs pinned inside one host L3 group that the guest sees under different L3 caches, as it does when the VM has two sockets or dies while it runs on one CCX. The guest then thinks a move between its groups crosses caches, which it does not, and a Linux guest looks for an idle processor for a waking task only within one L3 group (that of the waker or of the task's last processor), so work can wait behind a busy processor while a processor in the other group, sharing the same real cache, is idle, until load balancing moves it. Cheaper than VER010's case, but the guest's picture is wrong.",
        example: "the guest sees processors 0-3 and 4-7 under two L3 caches (two sockets); all eight are pinned to host CPUs 2-5 and 18-21, one CCD",
        fix: "give the guest one socket and one die for vCPUs that share one host L3 group (<topology sockets='1' dies='1' .../>), or pin each guest L3 group to a host L3 group of its own",
        fix_safety: Applicability::Manual,
        source: "Linux kernel/sched/fair.c (select_idle_sibling searches the target processor's last-level-cache domain, sd_llc) and Documentation/scheduler/sched-domains.rst; Linux Documentation/admin-guide/cputopology.rst and cacheinfo (shared_cpu_list); QEMU target/i386/cpu.c (CPUID leaf 4: the L3 shared by one die's vCPUs); Microsoft, GetLogicalProcessorInformationEx (RelationCache)",
    },
};

fn host_l3_split_in_guest(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let guest_groups = &ctx.guest.topology.l3_groups;
    let mut splits = Vec::new();
    for host_group in &host.topology.l3_groups {
        // The guest's groups that hold a processor pinned into this host group.
        let mut touched: Vec<(usize, Vec<u32>)> = Vec::new();
        for (index, group) in guest_groups.iter().enumerate() {
            let inside: Vec<u32> = group
                .iter()
                .copied()
                .filter(|&p| pinned_cpu(ctx.config, p).is_some_and(|cpu| host_group.cpus.contains(cpu)))
                .collect();
            if !inside.is_empty() {
                touched.push((index, inside));
            }
        }
        if touched.len() > 1 {
            let processors: Vec<u32> =
                touched.iter().flat_map(|(_, inside)| inside.iter().copied()).collect();
            let cpus: CpuSet = processors.iter().filter_map(|&p| pinned_cpu(ctx.config, p)).collect();
            splits.push(format!("{} ({} guest L3 groups)", on_host(&processors, &cpus), touched.len()));
        }
    }
    if splits.is_empty() {
        return Vec::new();
    }
    vec![VerifyFinding::of(
        &VER011.meta,
        "vCPUs of several guest L3 groups pinned into one host L3 group".into(),
        format!("one L3 on the host: {}", splits.join("; ")),
        "the guest sees separate caches where the host has one".into(),
    )]
}

pub(crate) const VER012: VerifyRule = VerifyRule {
    check: apic_msrs_recommended,
    meta: RuleMeta {
        id: "VER012",
        name: "apic-msrs-recommended",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "the guest is told to reach its APIC through the Hyper-V MSRs on a host with APICv/AVIC on",
        explanation: "CPUID 0x40000004 EAX bit 3 (UseApicMsrs) recommends the synthetic MSRs 0x40000070-0x40000072 for EOI, ICR and TPR. A guest that follows it (Windows, Linux under Hyper-V) ends every interrupt with a write to 0x40000070, which always exits: KVM emulates the MSR, and hardware APIC virtualization never sees it. QEMU sets the bit for hv-vapic unless hv-avic is on; `kvmtune check` names the configuration that does it (HV013). Seen from inside the guest, the bit is the proof that it took effect. On AMD hosts without x2AVIC (before Zen 4) the rule speaks only for a guest that does not see x2APIC, since KVM emulates an x2APIC guest's registers there anyway.",
        example: "CPUID 0x40000004 EAX 0x00004e2c (bit 3 set) in a guest on a host with kvm_intel enable_apicv=Y",
        fix: "enable hv-avic (libvirt 8.10+: <avic state='on'/>; QEMU 6.2+: hv-avic=on) and restart the VM",
        fix_safety: Applicability::Manual,
        source: "QEMU commit e1f9a8e8c90a (target/i386/kvm/kvm.c hyperv_fill_cpuids: HV_APIC_ACCESS_RECOMMENDED only for hv-vapic without hv-avic); Linux arch/x86/kvm/hyperv.c (HV_X64_MSR_EOI emulated by kvm_hv_vapic_msr_write); Linux arch/x86/hyperv/hv_apic.c (hv_apic_init); Microsoft Hyper-V TLFS, Feature and interface discovery",
    },
};

fn apic_msrs_recommended(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    use crate::knowledge::hyperv_cpuid::{LEAF_RECOMMENDATIONS, Register};
    let Some(apic) = ctx.host.and_then(|host| host.kvm.apic_virtualization.known()).filter(|a| a.enabled)
    else {
        return Vec::new();
    };
    if ctx.guest.hyperv_bit(LEAF_RECOMMENDATIONS, Register::Eax, 3) != Some(true) {
        return Vec::new();
    }
    // Where APIC virtualization leaves x2APIC registers to KVM (AVIC before x2AVIC), a guest
    // that may use x2APIC exits on its EOIs either way (HV013 has the same exception).
    let x2apic_left_to_kvm =
        ctx.host.is_some_and(|host| !crate::analysis::avic_inhibitions::virtualizes_x2apic(host));
    if x2apic_left_to_kvm && ctx.guest.cpuid.x2apic != Some(false) {
        return Vec::new();
    }
    let hyperv = &ctx.config.hyperv;
    let (configured, why) = if hyperv.is_on(Hv::Avic) {
        (
            format!("hv-avic on; {} on in this host's KVM", apic.kind),
            "with hv-avic QEMU does not recommend the MSRs: the running VM was started from another definition, or its QEMU predates hv-avic (6.2)".to_string(),
        )
    } else {
        (
            format!(
                "{}hv-avic off; {} on in this host's KVM",
                if hyperv.is_on(Hv::Vapic) { "hv-vapic on, " } else { "" },
                apic.kind
            ),
            "QEMU recommends the Hyper-V APIC MSRs for hv-vapic unless hv-avic is on".to_string(),
        )
    };
    vec![VerifyFinding::of(
        &VER012.meta,
        configured,
        "CPUID 0x40000004 EAX[3] UseApicMsrs set: the guest ends each interrupt with a write to MSR 0x40000070, which exits".into(),
        why,
    )]
}

pub(crate) const VER013: VerifyRule = VerifyRule {
    check: spinlock_retries_differ,
    meta: RuleMeta {
        id: "VER013",
        name: "spinlock-retries-differ",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "the guest's spinlock retry count is not the hv-spinlocks value the configuration sets",
        explanation: "hv-spinlocks=N (libvirt <spinlocks state='on' retries='N'/>) reaches the guest as a number, not a bit: CPUID leaf 0x40000004 EBX, how often Windows spins on a lock before it tells the hypervisor that it waits. Without the property QEMU puts 0xFFFFFFFF there, which means never tell. A guest that reads another count runs on another definition than this one.",
        example: "<spinlocks state='on' retries='8191'/>; the guest reads 0xFFFFFFFF",
        fix: "restart the VM from this definition",
        fix_safety: Applicability::Manual,
        source: "Microsoft Hyper-V TLFS, Feature discovery (leaf 0x40000004 EBX); QEMU docs/system/i386/hyperv.rst (hv-spinlocks); QEMU target/i386/cpu.c (hv-spinlocks defaults to HYPERV_SPINLOCK_NEVER_NOTIFY) and target/i386/kvm/kvm.c (0x40000004 EBX from it)",
    },
};

fn spinlock_retries_differ(ctx: &VerifyContext) -> Vec<VerifyFinding> {
    let Some(wanted) = ctx
        .config
        .hyperv
        .get(Hv::Spinlocks)
        .filter(|f| f.on)
        .and_then(|f| f.value.as_deref()?.parse::<u32>().ok())
    else {
        return Vec::new();
    };
    // Without Hyper-V leaves there is no count to compare; VER001 names the missing interface
    // for the enlightenments that are bits.
    let Some(seen) = ctx.guest.spinlock_retries() else { return Vec::new() };
    if seen == wanted {
        return Vec::new();
    }
    let shown = if seen == u32::MAX {
        "0xFFFFFFFF, never notify: QEMU's value without hv-spinlocks".to_string()
    } else {
        seen.to_string()
    };
    vec![VerifyFinding::of(
        &VER013.meta,
        format!("hv-spinlocks={wanted}"),
        format!("0x40000004 EBX {shown}"),
        "the running VM was started from another definition".into(),
    )]
}
