//! VM-config rules: every trap kvmtune knows in a Windows guest's configuration, one
//! declaration each in [`VM_RULES`].
//!
//! A rule reads the typed model (and, when `needs_host`, the host facts) and returns findings
//! with the span they point at and, where one exists, a fix. Ids are stable and never reused;
//! `kvmtune rules` lists them and `kvmtune explain ID` prints one in full.
//!
//! To add a rule: write its `check` function below, add its declaration to `VM_RULES`, and add
//! `tests/fixtures/check/<ID>.bad.xml` and `<ID>.good.xml` (the fixture test fails until both
//! exist and behave).

use serde::Serialize;

use crate::analysis::Severity;
use crate::analysis::fix::{Fix, FixAction};
use crate::analysis::hyperv_support::{Layer, Offer, offer};
use crate::config::model::{VmConfig, WindowsVersion};
use crate::config::span::Span;
use crate::host::kvm::HypervSupport;
use crate::host::{CpuSet, Fact, HostFacts};
use crate::knowledge::hyperv::{DEPENDENCIES, closed_under_dependencies};

/// What the VM is for; some trade-offs flip with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Gaming,
    Desktop,
    Server,
    /// Cloud gaming and similar: many vCPUs exchanging IPIs.
    IpiHeavy,
}

pub struct RuleContext<'a> {
    pub config: &'a VmConfig,
    pub host: Option<&'a HostFacts>,
    /// From `--windows`, else from the config's libosinfo id.
    pub windows: Option<WindowsVersion>,
    pub workload: Workload,
}

impl RuleContext<'_> {
    /// kvmtune is for Windows guests: a config that names no OS is taken as Windows; one that
    /// names another OS is not.
    pub fn is_windows(&self) -> bool {
        self.windows.is_some()
            || self.config.os_id.as_ref().is_none_or(|id| id.value.contains("microsoft.com/win"))
    }

    /// Enlightenments reach the guest at all: the hypervisor CPUID bit is visible, and the
    /// guest is not Windows XP/2003, which predate Hyper-V and use none.
    fn enlightenments_visible(&self) -> bool {
        self.config.hypervisor_bit_disabled().is_none() && self.windows != Some(WindowsVersion::Xp)
    }

    /// The config lists enlightenments one by one (not passthrough/host-model, which take
    /// whatever the host offers).
    fn custom_hyperv(&self) -> bool {
        !self.config.hyperv.passthrough() && !self.config.hyperv.host_model()
    }

    fn on(&self, feature: &str) -> bool {
        self.config.hyperv.is_on(feature) || !self.custom_hyperv()
    }

    fn apic_virtualization(&self) -> Option<bool> {
        self.host?.kvm.apic_virtualization.known().map(|a| a.enabled)
    }

    fn host_vendor(&self) -> Option<crate::host::cpu::CpuVendor> {
        self.host?.cpu.vendor.known().copied()
    }

    /// Where a diagnostic about something missing from `<hyperv>` points.
    fn hyperv_anchor(&self) -> Option<Span> {
        let anchors = &self.config.anchors;
        anchors.hyperv.or(anchors.features).or(anchors.root)
    }

    fn clock_anchor(&self) -> Option<Span> {
        self.config.anchors.clock.or(self.config.anchors.root)
    }

    fn vcpu_cpus(&self) -> CpuSet {
        self.config.pinning.vcpupin.iter().fold(CpuSet::new(), |all, pin| all.union(&pin.cpus))
    }
}

pub struct Finding {
    pub span: Option<Span>,
    pub message: String,
    pub fix: Option<Fix>,
    /// Overrides the rule's default severity for this finding.
    pub severity: Option<Severity>,
}

impl Finding {
    fn new(span: Option<Span>, message: impl Into<String>) -> Self {
        Self { span, message: message.into(), fix: None, severity: None }
    }
    fn with_fix(mut self, fix: Fix) -> Self {
        self.fix = Some(fix);
        self
    }
    fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = Some(severity);
        self
    }
}

pub struct VmRule {
    /// Stable id; never reused for another rule.
    pub id: &'static str,
    pub name: &'static str,
    /// `hyperv`, `timers`, `pinning`, `cpu`, `memory`, `devices`.
    pub category: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    /// What happens in the guest and why, with the measured impact where a source gives one.
    pub explanation: &'static str,
    pub source: &'static str,
    /// The fix, in words (findings carry the concrete action).
    pub fix: &'static str,
    pub needs_host: bool,
    pub check: fn(&RuleContext) -> Vec<Finding>,
}

/// How libvirt spells a QEMU Hyper-V property, for messages.
fn spelled(feature: &str) -> String {
    match feature {
        "hv-time" => "hv-time (libvirt: <timer name='hypervclock' present='yes'/>)".to_string(),
        "hv-crash" => "hv-crash (libvirt: <panic model='hyperv'/>)".to_string(),
        _ => match crate::knowledge::libvirt::hyperv_element(feature) {
            Some(element) => format!("{feature} (libvirt: <{element}>)"),
            None => feature.to_string(),
        },
    }
}

fn enable(features: &[&'static str], config: &VmConfig) -> Fix {
    let missing: Vec<String> = closed_under_dependencies(features)
        .into_iter()
        .filter(|f| !config.hyperv.is_on(f))
        .map(str::to_string)
        .collect();
    Fix::safe(FixAction::EnableHyperv { features: missing })
}

// ---------------------------------------------------------------------------------------------
// Hyper-V enlightenments

fn hv_dependency_missing(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.custom_hyperv() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for (feature, requires) in DEPENDENCIES {
        let Some(enabled) = ctx.config.hyperv.get(feature).filter(|f| f.on) else { continue };
        for required in *requires {
            if ctx.config.hyperv.is_on(required) {
                continue;
            }
            let state =
                if ctx.config.hyperv.get(required).is_some() { "is turned off" } else { "is not enabled" };
            findings.push(
                Finding::new(
                    Some(enabled.span),
                    format!("{feature} requires {}, which {state}", spelled(required)),
                )
                .with_fix(enable(&[required], ctx.config)),
            );
        }
    }
    findings
}

/// hv-time has its own rule, TIME001.
const RECOMMENDED: &[&str] = crate::knowledge::hyperv::RECOMMENDED_FOR_WINDOWS;

fn hv_recommended_missing(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.is_windows() || !ctx.custom_hyperv() || !ctx.enlightenments_visible() {
        return Vec::new();
    }
    let host_supports = |feature: &str| ctx.host.is_none_or(|host| !offer(host, feature).is_lacking());
    let missing: Vec<&'static str> =
        RECOMMENDED.iter().copied().filter(|f| !ctx.config.hyperv.is_on(f) && host_supports(f)).collect();
    if missing.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(ctx.hyperv_anchor(), format!("missing enlightenments: {}", missing.join(", ")))
            .with_fix(enable(&missing, ctx.config)),
    ]
}

fn hv_evmcs_pointless(ctx: &RuleContext) -> Vec<Finding> {
    let Some(evmcs) = ctx.config.hyperv.get("hv-evmcs").filter(|f| f.on) else { return Vec::new() };
    let reason = if ctx.host_vendor() == Some(crate::host::cpu::CpuVendor::Amd) {
        Some("enlightened VMCS exists only on Intel (VMX); this host is AMD".to_string())
    } else if ctx.config.cpu.features.iter().any(|f| f.name == "vmx" && !f.enables()) {
        Some("the guest CPU has vmx disabled, so there is no nested hypervisor to use it".to_string())
    } else {
        ctx.host
            .and_then(|h| h.kvm.modules.known())
            .and_then(|m| m.parameter("kvm_intel", "nested"))
            .filter(|v| matches!(*v, "N" | "0"))
            .map(|nested| format!("nested virtualization is off on this host (kvm_intel.nested={nested})"))
    };
    reason
        .map(|reason| {
            Finding::new(Some(evmcs.span), format!("hv-evmcs is on, but {reason}"))
                .with_fix(Fix::safe(FixAction::DisableHyperv { feature: "hv-evmcs".into() }))
        })
        .into_iter()
        .collect()
}

fn hv_blocks_migration(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.config.cpu_migratable() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    if let Some(mode) = ctx.config.hyperv.mode.as_ref().filter(|m| m.value == "passthrough") {
        findings.push(
            Finding::new(Some(mode.span), "hv-passthrough copies this host's Hyper-V support into the guest and blocks live migration, but the CPU is configured migratable")
                .with_fix(Fix::manual("list the enlightenments explicitly (mode='custom'), or mark the CPU migratable='off'")),
        );
    }
    if let Some(reenlightenment) = ctx.config.hyperv.get("hv-reenlightenment").filter(|f| f.on) {
        let tsc_frequency = ctx.config.clock.timer("tsc").is_some_and(|t| t.frequency.is_some());
        if !tsc_frequency {
            findings.push(
                Finding::new(Some(reenlightenment.span), "hv-reenlightenment on a migratable VM without a fixed TSC frequency: after migration the guest's TSC rate changes under it")
                    .with_fix(Fix::manual("set <timer name='tsc' frequency='...'/> (hosts with TSC scaling), or turn hv-reenlightenment off unless the guest runs Hyper-V/WSL2")),
            );
        }
    }
    findings
}

fn hv_reset(ctx: &RuleContext) -> Vec<Finding> {
    ctx.config
        .hyperv
        .get("hv-reset")
        .filter(|f| f.on)
        .map(|reset| {
            Finding::new(
                Some(reset.span),
                "hv-reset is on; modern Hyper-V does not offer it and QEMU recommends leaving it off",
            )
            .with_fix(Fix::safe(FixAction::DisableHyperv { feature: "hv-reset".into() }))
        })
        .into_iter()
        .collect()
}

fn hv_spinlocks_low(ctx: &RuleContext) -> Vec<Finding> {
    let Some(spinlocks) = ctx.config.hyperv.get("hv-spinlocks").filter(|f| f.on) else { return Vec::new() };
    match spinlocks.value.as_deref().map(str::parse::<u64>) {
        Some(Ok(retries)) if retries < 4095 => vec![
            Finding::new(Some(spinlocks.span), format!("hv-spinlocks retries={retries} is below libvirt's minimum of 4095: the guest gives up spinning and calls the hypervisor almost at once"))
                .with_fix(Fix::safe(FixAction::SetSpinlockRetries { retries: 8191 })),
        ],
        _ => Vec::new(),
    }
}

fn hv_vendor_id_too_long(ctx: &RuleContext) -> Vec<Finding> {
    let Some(vendor) = ctx.config.hyperv.get("hv-vendor-id").filter(|f| f.on) else { return Vec::new() };
    match &vendor.value {
        Some(value) if value.chars().count() > 12 => vec![
            Finding::new(
                Some(vendor.span),
                format!(
                    "vendor_id '{value}' has {} characters; CPUID leaf 0x40000000 holds 12",
                    value.chars().count()
                ),
            )
            .with_fix(Fix::manual("shorten the vendor_id value to at most 12 characters")),
        ],
        _ => Vec::new(),
    }
}

fn synic_inhibits_apicv(ctx: &RuleContext) -> Vec<Finding> {
    if ctx.apic_virtualization() != Some(true) || !ctx.enlightenments_visible() || ctx.on("hv-avic") {
        return Vec::new();
    }
    let Some(synic) = ctx.config.hyperv.get("hv-synic").filter(|f| f.on) else { return Vec::new() };
    let kind =
        ctx.host.and_then(|h| h.kvm.apic_virtualization.known()).map_or("APICv/AVIC", |a| a.kind.as_str());
    let mut finding = Finding::new(
        Some(synic.span),
        format!(
            "hv-synic without hv-avic: Windows uses AutoEOI, which makes KVM switch {kind} off on this host"
        ),
    )
    .with_fix(enable(&["hv-avic"], ctx.config));
    if ctx.workload == Workload::IpiHeavy {
        finding = finding.with_severity(Severity::Error);
    }
    vec![finding]
}

fn hv_avic_without_apicv(ctx: &RuleContext) -> Vec<Finding> {
    if ctx.apic_virtualization() != Some(false) {
        return Vec::new();
    }
    ctx.config
        .hyperv
        .get("hv-avic")
        .filter(|f| f.on)
        .map(|avic| {
            Finding::new(Some(avic.span), "hv-avic asks Windows not to use AutoEOI, but this host has APICv/AVIC off: Windows loses AutoEOI and gains nothing")
                .with_fix(Fix::safe(FixAction::DisableHyperv { feature: "hv-avic".into() }))
        })
        .into_iter()
        .collect()
}

fn hypervisor_bit_hidden(ctx: &RuleContext) -> Vec<Finding> {
    let Some(feature) = ctx.config.hypervisor_bit_disabled() else { return Vec::new() };
    let named: Vec<&str> =
        ctx.config.hyperv.features.iter().filter(|f| f.on).map(|f| f.name.as_str()).collect();
    let lost =
        if named.is_empty() { String::new() } else { format!(" ({} configured, all unused)", named.len()) };
    let mut finding = Finding::new(
        Some(feature.span),
        format!("the hypervisor CPUID bit is disabled: Windows ignores every Hyper-V enlightenment{lost}"),
    )
    .with_fix(Fix::unsafe_(FixAction::RemoveCpuFeature { name: "hypervisor".into() }));
    let trade_off = ctx.workload == Workload::IpiHeavy || ctx.windows == Some(WindowsVersion::Win7);
    if trade_off {
        finding = finding.with_severity(Severity::Info);
        finding
            .message
            .push_str("; for this workload/guest that can be the faster choice, see `kvmtune explain HV010`");
    }
    vec![finding]
}

fn hv_unsupported_by_host(ctx: &RuleContext) -> Vec<Finding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let enabled: Vec<_> = ctx
        .config
        .hyperv
        .features
        .iter()
        .filter(|f| f.on && f.name != "hv-vendor-id" && f.name != "hv-spinlocks")
        .collect();
    let hyperv = host.kvm.device.known().map(|d| &d.hyperv);
    if let Some(HypervSupport::NotSupported { evidence }) = hyperv {
        return enabled
            .first()
            .map(|first| {
                Finding::new(Some(first.span), format!("{} enlightenment(s) configured, but this host's KVM has no Hyper-V support ({evidence})", enabled.len()))
                    .with_fix(Fix::manual("run the VM on a kernel built with CONFIG_KVM_HYPERV"))
            })
            .into_iter()
            .collect();
    }
    enabled
        .iter()
        .filter_map(|f| match offer(host, &f.name) {
            Offer::Lacking { layer, why } => {
                let finding =
                    Finding::new(Some(f.span), format!("{}: {why}; the VM would not start", f.name))
                        .with_fix(Fix::safe(FixAction::DisableHyperv { feature: f.name.clone() }));
                Some(if layer == Layer::KernelRelease {
                    finding.with_severity(Severity::Warning)
                } else {
                    finding
                })
            }
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Timers and clock

fn hypervclock_missing(ctx: &RuleContext) -> Vec<Finding> {
    let host_lacks_it = ctx.host.is_some_and(|host| offer(host, "hv-time").is_lacking());
    if !ctx.is_windows() || !ctx.enlightenments_visible() || ctx.on("hv-time") || host_lacks_it {
        return Vec::new();
    }
    vec![
        Finding::new(
            ctx.clock_anchor(),
            "no Hyper-V reference clock: every QueryPerformanceCounter falls back to an exiting clock source",
        )
        .with_fix(enable(&["hv-time"], ctx.config)),
    ]
}

fn timer_policy(ctx: &RuleContext, name: &str, policy: &str) -> Vec<Finding> {
    if !ctx.is_windows() {
        return Vec::new();
    }
    let timer = ctx.config.clock.timer(name);
    if timer.is_some_and(|t| t.present == Some(false) || t.tickpolicy.as_deref() == Some(policy)) {
        return Vec::new();
    }
    let found = match timer.and_then(|t| t.tickpolicy.as_deref()) {
        Some(other) => format!("tickpolicy='{other}'"),
        None => "no tickpolicy".to_string(),
    };
    vec![
        Finding::new(
            timer.map(|t| t.span).or(ctx.clock_anchor()),
            format!("{name} timer has {found}; Windows needs tickpolicy='{policy}'"),
        )
        .with_fix(Fix::safe(FixAction::SetTimer {
            name: name.into(),
            attributes: vec![("tickpolicy".into(), policy.into())],
        })),
    ]
}

fn rtc_without_catchup(ctx: &RuleContext) -> Vec<Finding> {
    timer_policy(ctx, "rtc", "catchup")
}

fn pit_catching_up(ctx: &RuleContext) -> Vec<Finding> {
    // QEMU's in-kernel PIT defaults to lost_tick_policy=delay and Proxmox picks discard; only
    // a policy that replays missed ticks costs anything.
    let Some(pit) = ctx.config.clock.timer("pit") else { return Vec::new() };
    if !ctx.is_windows() || !matches!(pit.tickpolicy.as_deref(), Some("catchup" | "merge")) {
        return Vec::new();
    }
    vec![
        Finding::new(Some(pit.span), format!("pit timer has tickpolicy='{}': missed PIT ticks are replayed into a guest that does not keep time with them", pit.tickpolicy.as_deref().unwrap_or("")))
            .with_fix(Fix::safe(FixAction::SetTimer { name: "pit".into(), attributes: vec![("tickpolicy".into(), "delay".into())] })),
    ]
}

fn utc_clock_offset(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.is_windows() {
        return Vec::new();
    }
    match &ctx.config.clock.offset {
        Some(offset) if offset.value == "localtime" || offset.value == "timezone" => Vec::new(),
        offset => vec![
            Finding::new(
                offset.as_ref().map(|o| o.span).or(ctx.clock_anchor()),
                format!(
                    "clock offset is {}; Windows keeps the RTC in local time",
                    offset.as_ref().map_or("utc (the default)", |o| o.value.as_str())
                ),
            )
            .with_fix(Fix::unsafe_(FixAction::SetClockOffset { offset: "localtime".into() })),
        ],
    }
}

fn hpet_off_without_stimer(ctx: &RuleContext) -> Vec<Finding> {
    let Some(hpet) = ctx.config.clock.timer("hpet").filter(|t| t.present == Some(false)) else {
        return Vec::new();
    };
    // XP/2003 keep time with the ACPI PM timer and never use the HPET or hv-stimer.
    if !ctx.is_windows()
        || ctx.windows == Some(WindowsVersion::Xp)
        || (ctx.on("hv-stimer") && ctx.enlightenments_visible())
    {
        return Vec::new();
    }
    if ctx.config.hypervisor_bit_disabled().is_some() {
        return vec![
            Finding::new(Some(hpet.span), "HPET is off and the hidden hypervisor bit keeps Windows from using hv-stimer: it falls back to the RTC, which costs more exits than the HPET did")
                .with_fix(Fix::manual("show the hypervisor bit again (see HV010) so hv-stimer works, or turn the HPET back on")),
        ];
    }
    vec![
        Finding::new(Some(hpet.span), "HPET is off but hv-stimer is not on: Windows falls back to the RTC for its timer, which costs more exits than the HPET did")
            .with_fix(enable(&["hv-stimer"], ctx.config)),
    ]
}

fn hpet_with_stimer(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.is_windows() || !ctx.enlightenments_visible() || !ctx.on("hv-stimer") {
        return Vec::new();
    }
    let hpet = ctx.config.clock.timer("hpet");
    if hpet.is_some_and(|t| t.present == Some(false)) {
        return Vec::new();
    }
    vec![
        Finding::new(hpet.map(|t| t.span).or(ctx.clock_anchor()), "HPET is present although hv-stimer drives Windows' timers: an emulated MMIO device left for nothing to use")
            .with_fix(Fix::safe(FixAction::SetTimer { name: "hpet".into(), attributes: vec![("present".into(), "no".into())] })),
    ]
}

// ---------------------------------------------------------------------------------------------
// Pinning and CPU topology

fn vcpus_unpinned(ctx: &RuleContext) -> Vec<Finding> {
    let Some(vcpus) = &ctx.config.vcpus else { return Vec::new() };
    let pinned: std::collections::BTreeSet<u32> = ctx.config.pinning.vcpupin.iter().map(|p| p.id).collect();
    let unpinned: Vec<u32> = (0..vcpus.value).filter(|v| !pinned.contains(v)).collect();
    if unpinned.is_empty() {
        return Vec::new();
    }
    let which = if unpinned.len() == vcpus.value as usize {
        "no vCPU is pinned".to_string()
    } else {
        format!("vCPUs {} are not pinned", unpinned.iter().copied().collect::<CpuSet>())
    };
    vec![
        Finding::new(
            Some(vcpus.span),
            format!("{which}: the host scheduler moves them across cores, caches and NUMA nodes"),
        )
        .with_fix(Fix::manual("pin each vCPU to its own host CPU (`kvmtune tune` plans it)")),
    ]
}

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
    for pin in &ctx.config.pinning.iothreadpin {
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

/// The host CPU each vCPU is pinned to, when every vCPU is pinned to exactly one.
fn one_to_one_pins(config: &VmConfig) -> Option<Vec<(u32, u32, Span)>> {
    let vcpus = config.vcpus.as_ref()?.value;
    let mut pins: Vec<(u32, u32, Span)> = Vec::new();
    for vcpu in 0..vcpus {
        let pin = config.pinning.vcpupin.iter().find(|p| p.id == vcpu)?;
        if pin.cpus.len() != 1 {
            return None;
        }
        pins.push((vcpu, pin.cpus.first()?, pin.span));
    }
    Some(pins)
}

fn smt_siblings_split(ctx: &RuleContext) -> Vec<Finding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let Some(pins) = one_to_one_pins(ctx.config) else { return Vec::new() };
    let threads = ctx.config.cpu.topology.as_ref().map_or(1, |t| t.value.threads.max(1));
    let siblings_of = |cpu: u32| host.topology.cpu(cpu).and_then(|c| c.smt_siblings.clone());
    let mut findings = Vec::new();
    if threads > 1 {
        for core in pins.chunks(threads as usize) {
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
    let (l3_needed, nodes_needed) =
        crate::analysis::planner::placement::spread_lower_bounds(host, needed, threads);
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

pub use crate::analysis::planner::placement::{housekeeping_for, reserved_for_host};

fn vcpu_on_housekeeping(ctx: &RuleContext) -> Vec<Finding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let housekeeping = housekeeping_for(host, &ctx.vcpu_cpus());
    ctx.config
        .pinning
        .vcpupin
        .iter()
        .filter(|pin| !pin.cpus.intersection(&housekeeping).is_empty())
        .map(|pin| {
            Finding::new(Some(pin.span), format!("vCPU {} runs on host CPU(s) {} that the host keeps for its own work (housekeeping: {housekeeping})", pin.id, pin.cpus.intersection(&housekeeping)))
                .with_fix(Fix::manual("move the vCPU off the housekeeping CPUs"))
        })
        .collect()
}

fn amd_smt_without_topoext(ctx: &RuleContext) -> Vec<Finding> {
    if ctx.host_vendor() != Some(crate::host::cpu::CpuVendor::Amd) {
        return Vec::new();
    }
    let Some(topology) = ctx.config.cpu.topology.as_ref().filter(|t| t.value.threads > 1) else {
        return Vec::new();
    };
    if ctx.config.cpu.features.iter().any(|f| f.name == "topoext" && f.enables()) {
        return Vec::new();
    }
    vec![
        Finding::new(Some(topology.span), "threads>1 on an AMD host without the topoext CPU feature: the guest cannot see which vCPUs are SMT siblings")
            .with_fix(Fix::safe(FixAction::RequireCpuFeature { name: "topoext".into() })),
    ]
}

fn no_cache_passthrough(ctx: &RuleContext) -> Vec<Finding> {
    let Some(mode) = ctx.config.cpu.mode.as_ref().filter(|m| m.value == "host-passthrough") else {
        return Vec::new();
    };
    if ctx.config.cpu.cache_mode.as_ref().is_some_and(|c| c.value == "passthrough") {
        return Vec::new();
    }
    vec![
        Finding::new(ctx.config.anchors.cpu.or(Some(mode.span)), "host-passthrough CPU without <cache mode='passthrough'/>: the guest sees an invented cache layout instead of the host's L3 groups")
            .with_fix(Fix::safe(FixAction::SetCpuCacheMode { mode: "passthrough".into() })),
    ]
}

// ---------------------------------------------------------------------------------------------
// Memory and devices

fn hugepages_not_reserved(ctx: &RuleContext) -> Vec<Finding> {
    let (Some(host), Some(hugepages), Some(size)) =
        (ctx.host, &ctx.config.memory.hugepages, &ctx.config.memory.size_kib)
    else {
        return Vec::new();
    };
    let Fact::Known(pools) = &host.memory.hugepages else { return Vec::new() };
    // Without <page size>, libvirt uses the default hugepage size (2 MiB on x86 unless
    // default_hugepagesz says otherwise).
    let page_kib = hugepages.value.iter().find_map(|p| p.size_kib).unwrap_or(2048);
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

fn memballoon_with_vfio(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.config.devices.hostdevs.iter().any(|h| h.kind == "pci") {
        return Vec::new();
    }
    match &ctx.config.devices.memballoon {
        Some(balloon) if balloon.value == "none" => Vec::new(),
        balloon => vec![
            Finding::new(
                balloon.as_ref().map(|b| b.span).or(ctx.config.anchors.devices),
                "a memory balloon with VFIO passthrough: all guest RAM is pinned for DMA, so the balloon cannot reclaim anything and only adds a device",
            )
            .with_fix(Fix::safe(FixAction::SetMemballoonModel { model: "none".into() })),
        ],
    }
}

fn virtio_disk_without_iothread(ctx: &RuleContext) -> Vec<Finding> {
    let assigned = ctx.config.devices.iothreads_for_unattached_disks();
    ctx.config
        .devices
        .disks
        .iter()
        .filter(|d| d.wants_iothread() && d.iothread.is_none())
        .map(|disk| {
            let finding = Finding::new(Some(disk.span), format!("virtio disk {} has no iothread: its I/O runs in QEMU's main loop, next to everything else", disk.target.as_deref().unwrap_or("?")));
            match assigned.iter().find(|(target, _)| Some(target) == disk.target.as_ref()) {
                Some((target, id)) => finding.with_fix(Fix::safe(FixAction::AttachDiskIothread { target: target.clone(), iothread: *id })),
                None => finding.with_fix(Fix::manual("add <iothreads>N</iothreads> and iothread='N' to the disk's <driver>")),
            }
        })
        .collect()
}

fn emulated_disk_bus(ctx: &RuleContext) -> Vec<Finding> {
    ctx.config
        .devices
        .disks
        .iter()
        .filter(|d| d.device == "disk" && matches!(d.bus.as_deref(), Some("sata" | "ide" | "fdc" | "usb")))
        .map(|disk| {
            Finding::new(Some(disk.span), format!("disk {} uses the emulated {} bus; virtio-blk or virtio-scsi needs far fewer exits per I/O", disk.target.as_deref().unwrap_or("?"), disk.bus.as_deref().unwrap_or("?")))
                .with_fix(Fix::manual("install the virtio-win storage driver in the guest first, then switch the disk to bus='virtio'"))
        })
        .collect()
}

fn emulated_nic_model(ctx: &RuleContext) -> Vec<Finding> {
    ctx.config
        .devices
        .nics
        .iter()
        .filter(|n| matches!(n.model.as_deref(), Some("e1000" | "e1000e" | "rtl8139")))
        .map(|nic| {
            Finding::new(
                Some(nic.span),
                format!(
                    "network card model {} is emulated register by register; virtio-net is paravirtual",
                    nic.model.as_deref().unwrap_or("?")
                ),
            )
            .with_fix(Fix::manual(
                "install the virtio-win network driver in the guest, then set <model type='virtio'/>",
            ))
        })
        .collect()
}

fn usb_tablet_with_gpu(ctx: &RuleContext) -> Vec<Finding> {
    let passes_gpu = ctx.config.devices.hostdevs.iter().any(|h| {
        let Some(address) = &h.pci_address else { return false };
        match ctx.host.and_then(|host| host.pci_devices.known()) {
            Some(devices) => devices.iter().any(|d| &d.address == address && d.is_gpu),
            // Without host facts a PCI hostdev next to a tablet is almost always the GPU.
            None => h.kind == "pci",
        }
    });
    if !passes_gpu {
        return Vec::new();
    }
    ctx.config
        .devices
        .inputs
        .iter()
        .filter(|i| i.kind == "tablet")
        .map(|tablet| {
            Finding::new(Some(tablet.span), "USB tablet on a VM driven through a passed-through GPU: nobody uses the absolute pointer, but the guest polls the USB controller for it")
                .with_fix(Fix::manual("remove the tablet (keep it only if you use a SPICE/VNC console)"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Old guests

fn tpr_patching_off(ctx: &RuleContext) -> Vec<Finding> {
    let Some(switch) = ctx.config.tpr_patching.as_ref().filter(|t| !t.value) else { return Vec::new() };
    let old_32_bit = ctx.windows.is_some_and(|w| w == WindowsVersion::Xp)
        && ctx.config.arch.as_ref().is_none_or(|a| a.value == "i686" || a.value == "i386");
    let Some(host) = ctx.host else { return Vec::new() };
    let intel = host.cpu.vendor.known() == Some(&crate::host::cpu::CpuVendor::Intel);
    let flexpriority = host.cpu.has_flag("flexpriority");
    let apicv = ctx.apic_virtualization() == Some(true);
    if !old_32_bit || !intel || flexpriority || apicv {
        return Vec::new();
    }
    vec![
        Finding::new(Some(switch.span), "TPR patching is switched off for a 32-bit Windows XP/2003 guest on an Intel host without FlexPriority or APICv: every TPR write exits")
            .with_fix(Fix::manual("remove the `kvm-apic.vapic=off` override")),
    ]
}

pub const VM_RULES: &[VmRule] = &[
    VmRule {
        id: "HV001",
        name: "hv-dependency-missing",
        category: "hyperv",
        severity: Severity::Error,
        title: "an enlightenment is on without the ones it depends on",
        explanation: "QEMU checks Hyper-V dependencies and refuses to start: synic needs vpindex; stimer needs synic and time; stimer-direct needs stimer; tlbflush and ipi need vpindex; tlbflush-ext needs tlbflush; tlbflush-direct and evmcs need vapic; syndbg needs synic and relaxed. libvirt defines such domains without complaint (before 11.9), so the error shows only at start. In libvirt, hv-time is <timer name='hypervclock' present='yes'/> in <clock>, not a <hyperv> child.",
        source: "QEMU target/i386/kvm/kvm.c kvm_hyperv_properties[] and kvm_hyperv_expand_features (../shared/knowledge.md 1b); libvirt NEWS 11.9.0",
        fix: "enable the missing dependencies",
        needs_host: false,
        check: hv_dependency_missing,
    },
    VmRule {
        id: "HV002",
        name: "hv-recommended-missing",
        category: "hyperv",
        severity: Severity::Warning,
        title: "enlightenments that every current Windows benefits from are missing",
        explanation: "Without them Windows runs as on bare metal: watchdog timeouts it must ride out (relaxed), APIC EOIs and TPR writes that exit (vapic), spinlocks that burn CPU while the lock holder is descheduled (spinlocks), remote TLB flushes and IPIs sent one vCPU at a time (tlbflush, ipi), and periodic timers from emulated devices instead of synthetic timers (synic, stimer). QEMU's documentation recommends enabling all of them except the debug, nested and passthrough ones.",
        source: "QEMU docs/system/i386/hyperv.rst (../shared/knowledge.md 1a)",
        fix: "enable the missing enlightenments (with their dependencies)",
        needs_host: false,
        check: hv_recommended_missing,
    },
    VmRule {
        id: "HV003",
        name: "hv-evmcs-pointless",
        category: "hyperv",
        severity: Severity::Warning,
        title: "hv-evmcs where it cannot help",
        explanation: "Enlightened VMCS speeds up a Hyper-V hypervisor running inside the guest (WSL2, VBS) on Intel hosts only. On AMD, or when the guest has no VMX, it does nothing useful, and on Intel it disables features such as posted interrupts.",
        source: "QEMU docs/system/i386/hyperv.rst hv-evmcs (../shared/knowledge.md 1a, 5)",
        fix: "turn hv-evmcs off",
        needs_host: false,
        check: hv_evmcs_pointless,
    },
    VmRule {
        id: "HV004",
        name: "hv-blocks-migration",
        category: "hyperv",
        severity: Severity::Info,
        title: "Hyper-V settings that break live migration of a migratable VM",
        explanation: "hv-passthrough copies whatever this host's KVM supports and blocks migration. hv-reenlightenment lets a nested hypervisor follow TSC changes, but after migration to a host with another TSC rate the guest needs TSC scaling or a fixed tsc-frequency.",
        source: "QEMU docs/system/i386/hyperv.rst hv-passthrough, hv-reenlightenment (../shared/knowledge.md 1a)",
        fix: "list enlightenments explicitly, fix the TSC frequency, or mark the VM non-migratable",
        needs_host: false,
        check: hv_blocks_migration,
    },
    VmRule {
        id: "HV005",
        name: "hv-reset",
        category: "hyperv",
        severity: Severity::Info,
        title: "hv-reset is on",
        explanation: "The Hyper-V reset MSR is not offered by modern Hyper-V and Windows does not need it; QEMU recommends leaving it off.",
        source: "QEMU docs/system/i386/hyperv.rst (../shared/knowledge.md 1a)",
        fix: "turn hv-reset off",
        needs_host: false,
        check: hv_reset,
    },
    VmRule {
        id: "HV006",
        name: "hv-spinlocks-retries-low",
        category: "hyperv",
        severity: Severity::Warning,
        title: "hv-spinlocks retries below 4095",
        explanation: "The retry count is how often a vCPU spins on a lock before it tells the hypervisor it is waiting. libvirt requires at least 4095; 8191 (0x1fff) is the common choice.",
        source: "libvirt docs/formatdomain.rst hyperv spinlocks (../shared/knowledge.md 2a)",
        fix: "set retries to 8191",
        needs_host: false,
        check: hv_spinlocks_low,
    },
    VmRule {
        id: "HV007",
        name: "hv-vendor-id-too-long",
        category: "hyperv",
        severity: Severity::Error,
        title: "hv-vendor-id longer than 12 characters",
        explanation: "The Hyper-V vendor signature lives in three 4-byte CPUID registers; QEMU and libvirt accept at most 12 characters.",
        source: "QEMU docs/system/i386/hyperv.rst hv-vendor-id (../shared/knowledge.md 1a, 2a)",
        fix: "shorten the value",
        needs_host: false,
        check: hv_vendor_id_too_long,
    },
    VmRule {
        id: "HV008",
        name: "synic-inhibits-apicv",
        category: "hyperv",
        severity: Severity::Warning,
        title: "SynIC without hv-avic turns APICv/AVIC off",
        explanation: "With SynIC, Windows uses AutoEOI for its synthetic interrupts, which APIC virtualization cannot emulate, so KVM inhibits APICv/AVIC for the whole VM (APICV_INHIBIT_REASON_HYPERV). Every interrupt and EOI then exits. On IPI-heavy workloads this can make 'all enlightenments on' slower than none. hv-avic (DEPRECATING_AEOI) tells Windows not to use AutoEOI and keeps APICv/AVIC on.",
        source: "QEMU docs/system/i386/hyperv.rst hv-avic; LKML 2021 (Kechen Lu); ../shared/knowledge.md 4c and landscape section 5",
        fix: "enable hv-avic",
        needs_host: true,
        check: synic_inhibits_apicv,
    },
    VmRule {
        id: "HV009",
        name: "hv-avic-without-apicv",
        category: "hyperv",
        severity: Severity::Warning,
        title: "hv-avic on a host without APICv/AVIC",
        explanation: "hv-avic only pays off when APIC virtualization is on. Without it, Windows gives up AutoEOI (one exit saved per interrupt) for nothing; QEMU documents it as harmful there.",
        source: "QEMU docs/system/i386/hyperv.rst hv-avic (../shared/knowledge.md 1a)",
        fix: "turn hv-avic off, or turn APICv/AVIC on in the host's KVM module",
        needs_host: true,
        check: hv_avic_without_apicv,
    },
    VmRule {
        id: "HV010",
        name: "hypervisor-bit-hidden",
        category: "hyperv",
        severity: Severity::Warning,
        title: "the hypervisor CPUID bit is disabled",
        explanation: "Windows looks for Hyper-V enlightenments only when CPUID.1:ECX[31] is set. With <feature policy='disable' name='hypervisor'/> every enlightenment is silently ignored: no reference TSC page, no synthetic timers, no paravirtual IPIs or TLB flushes. (<kvm><hidden state='on'/> is different: it hides only KVM's own signature and keeps the hypervisor bit.) The trade-off: Windows 7 uses the TSC for QueryPerformanceCounter only when it believes it runs on bare metal, and on IPI-heavy cloud-gaming workloads hiding the hypervisor has been measured fastest; for everything else it loses.",
        source: "Microsoft TLFS feature discovery; MS-QPC; libvirt docs/formatdomain.rst kvm hidden (../shared/knowledge.md 2b, 5)",
        fix: "remove the disable policy for `hypervisor`",
        needs_host: false,
        check: hypervisor_bit_hidden,
    },
    VmRule {
        id: "HV011",
        name: "hv-unsupported-by-host",
        category: "hyperv",
        severity: Severity::Error,
        title: "an enlightenment this host's KVM, QEMU or libvirt does not support",
        explanation: "QEMU checks each requested enlightenment against KVM_GET_SUPPORTED_HV_CPUID and refuses to start with 'Hyper-V <feature> is not supported by kernel'; a QEMU older than the property rejects it as unknown, and a libvirt older than the element rejects the XML. Where /dev/kvm cannot be asked, the kernel release stands in for KVM's answer (a warning then, since distributions backport).",
        source: "QEMU target/i386/kvm/kvm.c (../shared/knowledge.md 1a, 1b, 2a, 4a)",
        fix: "turn the feature off, or run on a kernel, QEMU and libvirt that support it",
        needs_host: true,
        check: hv_unsupported_by_host,
    },
    VmRule {
        id: "TIME001",
        name: "hypervclock-missing",
        category: "timers",
        severity: Severity::Warning,
        title: "no Hyper-V reference clock (hv-time)",
        explanation: "hv-time gives Windows the reference TSC page: time reads that cost nanoseconds and never exit. Without it, QueryPerformanceCounter uses the HPET, the ACPI PM timer or the RTC, which QEMU emulates in userspace at microseconds per read. It is also a dependency of hv-stimer.",
        source: "QEMU docs/system/i386/hyperv.rst hv-time; MS-TLFS timers; MS-QPC (../shared/knowledge.md 1a, 5)",
        fix: "add <timer name='hypervclock' present='yes'/>",
        needs_host: false,
        check: hypervclock_missing,
    },
    VmRule {
        id: "TIME002",
        name: "rtc-without-catchup",
        category: "timers",
        severity: Severity::Warning,
        title: "RTC tick policy is not catchup",
        explanation: "Windows keeps time by counting RTC ticks. When a vCPU was descheduled, catchup delivers the missed ticks faster until the guest is back in step; other policies let its clock drift.",
        source: "libvirt docs/formatdomain.rst Time keeping (../shared/knowledge.md 2b)",
        fix: "<timer name='rtc' tickpolicy='catchup'/>",
        needs_host: false,
        check: rtc_without_catchup,
    },
    VmRule {
        id: "TIME003",
        name: "pit-catching-up",
        category: "timers",
        severity: Severity::Warning,
        title: "PIT ticks are replayed (catchup/merge)",
        explanation: "Windows does not keep time with the PIT once booted. Replaying missed PIT ticks (catchup) only injects extra interrupts; delay (QEMU's default for the in-kernel PIT, and virt-manager's choice for Windows) or discard (Proxmox's) do not.",
        source: "libvirt docs/formatdomain.rst Time keeping; QEMU hw/i386/kvm/i8254.c lost_tick_policy default; ../shared/knowledge.md 2b",
        fix: "<timer name='pit' tickpolicy='delay'/>",
        needs_host: false,
        check: pit_catching_up,
    },
    VmRule {
        id: "TIME004",
        name: "utc-clock-offset",
        category: "timers",
        severity: Severity::Warning,
        title: "the clock offset is UTC for a Windows guest",
        explanation: "Windows stores local time in the RTC. With offset='utc' its clock is wrong by the time-zone offset until it syncs, and again after every boot.",
        source: "libvirt docs/formatdomain.rst clock offset (../shared/knowledge.md 2b)",
        fix: "<clock offset='localtime'>",
        needs_host: false,
        check: utc_clock_offset,
    },
    VmRule {
        id: "TIME005",
        name: "hpet-off-without-stimer",
        category: "timers",
        severity: Severity::Warning,
        title: "HPET off without hv-stimer",
        explanation: "Turning the HPET off is right only together with hv-stimer. Without synthetic timers Windows falls back from the HPET to the RTC, which costs more: a Windows 10 guest in the corpus (exitstats/intel_huataihuang_*) spent most of its exit time on RTC port I/O with HPET off, and less once HPET was back. The best fix is neither: it is hv-stimer, after which the HPET is not used at all.",
        source: "../shared/corpus/exitstats/intel_huataihuang_* (before/after); virt-manager issue #205; QEMU docs hv-stimer (../shared/knowledge.md 5)",
        fix: "enable hv-stimer (with hv-synic, hv-vpindex, hv-time)",
        needs_host: false,
        check: hpet_off_without_stimer,
    },
    VmRule {
        id: "TIME006",
        name: "hpet-with-stimer",
        category: "timers",
        severity: Severity::Info,
        title: "HPET present although hv-stimer is on",
        explanation: "With synthetic timers Windows does not need the HPET; left present, it is an emulated MMIO device that some drivers still probe.",
        source: "QEMU docs/system/i386/hyperv.rst hv-stimer (../shared/knowledge.md 5)",
        fix: "<timer name='hpet' present='no'/>",
        needs_host: false,
        check: hpet_with_stimer,
    },
    VmRule {
        id: "PIN001",
        name: "vcpus-unpinned",
        category: "pinning",
        severity: Severity::Warning,
        title: "vCPUs without a host CPU pin",
        explanation: "An unpinned vCPU thread migrates between host CPUs, losing its caches and sometimes its NUMA node, and competes with host work: the frame-time spikes gamers call stutter.",
        source: "libvirt docs/formatdomain.rst CPU tuning (../shared/knowledge.md 2c)",
        fix: "pin every vCPU (kvmtune tune plans it)",
        needs_host: false,
        check: vcpus_unpinned,
    },
    VmRule {
        id: "PIN002",
        name: "vcpus-share-a-cpu",
        category: "pinning",
        severity: Severity::Warning,
        title: "two vCPUs pinned to one host CPU",
        explanation: "Two vCPUs on one CPU take turns; a spinning or IPI-waiting vCPU then waits for the other's time slice.",
        source: "libvirt docs/formatdomain.rst vcpupin (../shared/knowledge.md 2c)",
        fix: "one host CPU per vCPU",
        needs_host: false,
        check: vcpus_share_a_cpu,
    },
    VmRule {
        id: "PIN003",
        name: "emulator-on-vcpu-cpus",
        category: "pinning",
        severity: Severity::Warning,
        title: "emulator or iothreads share CPUs with vCPUs",
        explanation: "QEMU's main loop and iothreads wake on every emulated device access and I/O completion; on a vCPU's CPU they preempt it.",
        source: "libvirt docs/formatdomain.rst emulatorpin, iothreadpin (../shared/knowledge.md 2c)",
        fix: "pin them to housekeeping CPUs",
        needs_host: false,
        check: emulator_on_vcpu_cpus,
    },
    VmRule {
        id: "PIN004",
        name: "topology-mismatch",
        category: "cpu",
        severity: Severity::Error,
        title: "CPU topology does not match the vCPU count",
        explanation: "sockets x dies x clusters x cores x threads must equal the number of vCPUs; libvirt refuses a mismatch, and a topology that disagrees with the pinning misleads the guest scheduler.",
        source: "libvirt docs/formatdomain.rst CPU topology",
        fix: "make the product equal the vCPU count",
        needs_host: false,
        check: topology_mismatch,
    },
    VmRule {
        id: "PIN005",
        name: "smt-siblings-split",
        category: "pinning",
        severity: Severity::Warning,
        title: "guest SMT siblings are not host SMT siblings",
        explanation: "Windows schedules threads knowing which logical CPUs share a core. If the guest's sibling pairs run on unrelated host cores (or host siblings appear as separate guest cores), its placement decisions are wrong.",
        source: "Linux cputopology ABI; libvirt docs CPU topology; ../shared/knowledge.md 2c",
        fix: "pin each guest core's threads to one host core",
        needs_host: true,
        check: smt_siblings_split,
    },
    VmRule {
        id: "PIN006",
        name: "placement-spread",
        category: "pinning",
        severity: Severity::Warning,
        title: "vCPUs spread over more L3 groups or NUMA nodes than needed",
        explanation: "On AMD each CCX/CCD has its own L3, and a cache line shared across them costs a trip over Infinity Fabric; across NUMA nodes memory latency rises too. A placement should touch no more L3 groups and nodes than the vCPU count forces.",
        source: "Linux cacheinfo (shared_cpu_list); hwloc topology model",
        fix: "pin inside as few L3 groups and NUMA nodes as possible",
        needs_host: true,
        check: placement_spread,
    },
    VmRule {
        id: "PIN007",
        name: "vcpu-on-housekeeping",
        category: "pinning",
        severity: Severity::Warning,
        title: "vCPUs on the host's housekeeping CPUs",
        explanation: "The host needs CPUs for its own interrupts, kernel threads, QEMU's emulator thread and I/O. kvmtune keeps the first core of each NUMA node the vCPUs use (or every CPU outside isolcpus, or the E-cores of a hybrid part) for that; vCPUs there get interrupted.",
        source: "Linux isolcpus (kernel-parameters.txt); tuned cpu-partitioning (../shared/landscape.md)",
        fix: "move vCPUs off those CPUs",
        needs_host: true,
        check: vcpu_on_housekeeping,
    },
    VmRule {
        id: "PIN008",
        name: "amd-smt-without-topoext",
        category: "cpu",
        severity: Severity::Warning,
        title: "SMT topology on AMD without topoext",
        explanation: "AMD guests learn their SMT siblings and CCX layout from the topology-extension CPUID leaves; without topoext, threads>1 is presented in a way Windows does not read as SMT.",
        source: "libvirt/QEMU AMD topology (topoext) practice; ../shared/knowledge.md 2b",
        fix: "<feature policy='require' name='topoext'/>",
        needs_host: true,
        check: amd_smt_without_topoext,
    },
    VmRule {
        id: "PIN009",
        name: "no-cache-passthrough",
        category: "cpu",
        severity: Severity::Info,
        title: "host-passthrough CPU without cache passthrough",
        explanation: "With <cache mode='passthrough'/> the guest sees the host's real cache hierarchy, including which vCPUs share an L3; otherwise QEMU reports a made-up layout.",
        source: "libvirt docs/formatdomain.rst cpu cache; qemu_command.c host-cache-info (../shared/knowledge.md 2b)",
        fix: "<cache mode='passthrough'/>",
        needs_host: false,
        check: no_cache_passthrough,
    },
    VmRule {
        id: "MEM001",
        name: "hugepages-not-reserved",
        category: "memory",
        severity: Severity::Warning,
        title: "hugepages asked for but not reserved on the host",
        explanation: "libvirt backs guest RAM with hugepages only from the host's reserved pool; with too few pages the VM fails to start.",
        source: "Linux Documentation/admin-guide/mm/hugetlbpage.rst; libvirt memoryBacking (../shared/knowledge.md 2c)",
        fix: "reserve enough pages on the VM's node",
        needs_host: true,
        check: hugepages_not_reserved,
    },
    VmRule {
        id: "MEM002",
        name: "away-from-passthrough-device",
        category: "memory",
        severity: Severity::Warning,
        title: "vCPUs or memory on another NUMA node than the passed-through device",
        explanation: "A GPU's DMA and interrupts go to its own NUMA node; vCPUs and memory elsewhere pay the interconnect on every frame.",
        source: "Linux sysfs-bus-pci numa_node; libvirt numatune",
        fix: "place vCPUs and memory on the device's node",
        needs_host: true,
        check: away_from_passthrough_device,
    },
    VmRule {
        id: "DEV001",
        name: "memballoon-with-vfio",
        category: "devices",
        severity: Severity::Warning,
        title: "memory balloon with VFIO passthrough",
        explanation: "VFIO pins all guest RAM for DMA, so a balloon can never give memory back; it is only one more device and driver.",
        source: "libvirt memballoon; Linux Documentation/driver-api/vfio.rst",
        fix: "<memballoon model='none'/>",
        needs_host: false,
        check: memballoon_with_vfio,
    },
    VmRule {
        id: "DEV002",
        name: "virtio-disk-without-iothread",
        category: "devices",
        severity: Severity::Info,
        title: "virtio disk without an iothread",
        explanation: "A dedicated iothread takes the disk's I/O out of QEMU's main loop, which also serves the monitor and every emulated device.",
        source: "libvirt docs/formatdomain.rst iothreads",
        fix: "add an iothread and assign it",
        needs_host: false,
        check: virtio_disk_without_iothread,
    },
    VmRule {
        id: "DEV003",
        name: "emulated-disk-bus",
        category: "devices",
        severity: Severity::Warning,
        title: "disk on an emulated bus",
        explanation: "SATA (AHCI) and IDE are emulated register by register: several exits per request. virtio-blk and virtio-scsi use shared queues.",
        source: "../shared/knowledge.md 6b (MMIO and port-I/O exits)",
        fix: "switch to virtio after installing its driver",
        needs_host: false,
        check: emulated_disk_bus,
    },
    VmRule {
        id: "DEV004",
        name: "emulated-nic-model",
        category: "devices",
        severity: Severity::Warning,
        title: "emulated network card",
        explanation: "e1000, e1000e and rtl8139 are emulated hardware: every packet costs MMIO exits. virtio-net batches through shared queues.",
        source: "../shared/knowledge.md 6b",
        fix: "switch to virtio after installing its driver",
        needs_host: false,
        check: emulated_nic_model,
    },
    VmRule {
        id: "DEV005",
        name: "usb-tablet-with-gpu",
        category: "devices",
        severity: Severity::Info,
        title: "USB tablet on a GPU-passthrough VM",
        explanation: "The tablet exists for absolute pointing in a SPICE/VNC window. With a passed-through GPU and real input devices nobody uses it, and the guest keeps polling the USB controller for it.",
        source: "common VFIO tuning guides; ../shared/landscape.md",
        fix: "remove the tablet",
        needs_host: false,
        check: usb_tablet_with_gpu,
    },
    VmRule {
        id: "LEG001",
        name: "tpr-patching-off",
        category: "old-guests",
        severity: Severity::Warning,
        title: "TPR patching off for a 32-bit Windows XP/2003 guest",
        explanation: "32-bit Windows XP and Server 2003 write the APIC task-priority register through MMIO thousands of times a second. Intel CPUs without FlexPriority (TPR shadow for MMIO) and without APICv exit on every write; QEMU's kvm-vapic patches those instructions in the guest to avoid the exits. Switching it off brings the exits back.",
        source: "QEMU hw/i386/kvmvapic.c; Linux KVM TPR shadow / FlexPriority (vmx flexpriority); ../shared/knowledge.md 6b (TPR_BELOW_THRESHOLD)",
        fix: "remove the vapic=off override",
        needs_host: true,
        check: tpr_patching_off,
    },
];

pub fn find(id: &str) -> Option<&'static VmRule> {
    VM_RULES.iter().find(|rule| rule.id.eq_ignore_ascii_case(id) || rule.name == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique() {
        for (index, rule) in VM_RULES.iter().enumerate() {
            for other in &VM_RULES[index + 1..] {
                assert_ne!(rule.id, other.id);
                assert_ne!(rule.name, other.name);
            }
            assert!(!rule.explanation.is_empty() && !rule.source.is_empty() && !rule.fix.is_empty());
        }
    }
}
