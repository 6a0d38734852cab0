//! Hyper-V enlightenments: their dependencies as QEMU enforces them, the ones Windows needs,
//! the harmful ones, and the host's support for each.

use super::prelude::*;
use crate::knowledge::recommended;

/// How libvirt spells a QEMU Hyper-V property, for messages.
fn spelled(feature: Hv) -> String {
    match feature {
        Hv::Time => format!("{feature} (libvirt: <timer name='hypervclock' present='yes'/>)"),
        Hv::Crash => format!("{feature} (libvirt: <panic model='hyperv'/>)"),
        _ => match crate::knowledge::libvirt::hyperv_element(feature) {
            Some(element) => format!("{feature} (libvirt: <{element}>)"),
            None => feature.qemu().to_string(),
        },
    }
}

/// hv-time has its own rule, TIME001.
const RECOMMENDED: &[Hv] = crate::knowledge::hyperv::RECOMMENDED_FOR_WINDOWS;

pub(super) const HV001: VmRule = VmRule {
    check: hv_dependency_missing,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV001",
        name: "hv-dependency-missing",
        category: Category::Hyperv,
        severity: Severity::Error,
        title: "an enlightenment is on without the ones it depends on",
        explanation: "QEMU checks Hyper-V dependencies and refuses to start: synic needs vpindex; stimer needs synic and time; stimer-direct needs stimer; tlbflush and ipi need vpindex; tlbflush-ext needs tlbflush; tlbflush-direct and evmcs need vapic; syndbg needs synic and relaxed. libvirt defines such domains without complaint (before 11.9), so the error shows only at start. In libvirt, hv-time is <timer name='hypervclock' present='yes'/> in <clock>, not a <hyperv> child.",
        example: "<synic state='on'/> without <vpindex state='on'/>",
        fix: "enable the missing dependencies",
        fix_safety: Applicability::Safe,
        source: "QEMU target/i386/kvm/kvm.c kvm_hyperv_properties[] and kvm_hyperv_expand_features; libvirt NEWS.rst 11.9.0",
    },
};

fn hv_dependency_missing(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.custom_hyperv() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    for (feature, requires) in DEPENDENCIES {
        let Some(enabled) = ctx.config.hyperv.get(*feature).filter(|f| f.on) else { continue };
        for &required in *requires {
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

pub(super) const HV002: VmRule = VmRule {
    check: hv_recommended_missing,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV002",
        name: "hv-recommended-missing",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "enlightenments that every current Windows benefits from are missing",
        explanation: "Without them Windows runs as on bare metal: watchdog timeouts it must ride out (relaxed), APIC EOIs and TPR writes that exit (vapic), spinlocks that burn CPU while the lock holder is descheduled (spinlocks), remote TLB flushes and IPIs sent one vCPU at a time (tlbflush, ipi), and periodic timers from emulated devices instead of synthetic timers (synic, stimer). QEMU's documentation recommends enabling all of them except the debug, nested and passthrough ones.",
        example: "<hyperv mode='custom'><relaxed state='on'/></hyperv> and nothing else",
        fix: "enable the missing enlightenments (with their dependencies)",
        fix_safety: Applicability::Safe,
        source: "QEMU docs/system/i386/hyperv.rst",
    },
};

fn hv_recommended_missing(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.is_windows() || !ctx.custom_hyperv() || !ctx.enlightenments_visible() {
        return Vec::new();
    }
    let host_supports = |feature: Hv| ctx.host.is_none_or(|host| !offer(host, feature).is_lacking());
    let missing: Vec<Hv> =
        RECOMMENDED.iter().copied().filter(|f| !ctx.config.hyperv.is_on(*f) && host_supports(*f)).collect();
    if missing.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(
            ctx.hyperv_anchor(),
            format!(
                "missing enlightenments: {}",
                missing.iter().map(|f| f.qemu()).collect::<Vec<_>>().join(", ")
            ),
        )
        .with_fix(enable(&missing, ctx.config)),
    ]
}

pub(super) const HV003: VmRule = VmRule {
    check: hv_evmcs_pointless,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV003",
        name: "hv-evmcs-pointless",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "hv-evmcs where it cannot help",
        explanation: "Enlightened VMCS speeds up a Hyper-V hypervisor running inside the guest (WSL2, VBS) on Intel hosts only. On AMD, or when the guest has no VMX, it does nothing useful, and on Intel it disables features such as posted interrupts.",
        example: "<evmcs state='on'/> on an AMD host",
        fix: "turn hv-evmcs off",
        fix_safety: Applicability::Safe,
        source: "QEMU docs/system/i386/hyperv.rst hv-evmcs",
    },
};

fn hv_evmcs_pointless(ctx: &RuleContext) -> Vec<Finding> {
    let Some(evmcs) = ctx.config.hyperv.get(Hv::Evmcs).filter(|f| f.on) else { return Vec::new() };
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
                .with_fix(Fix::safe(ConfigEdit::DisableHyperv { feature: Hv::Evmcs }))
        })
        .into_iter()
        .collect()
}

pub(super) const HV004: VmRule = VmRule {
    check: hv_blocks_migration,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV004",
        name: "hv-blocks-migration",
        category: Category::Hyperv,
        severity: Severity::Info,
        title: "Hyper-V settings that break live migration of a migratable VM",
        explanation: "hv-passthrough copies whatever this host's KVM supports and blocks migration. hv-reenlightenment lets a nested hypervisor follow TSC changes, but after migration to a host with another TSC rate the guest needs TSC scaling or a fixed tsc-frequency.",
        example: "<hyperv mode='passthrough'/> with <cpu mode='host-passthrough' migratable='on'>",
        fix: "list enlightenments explicitly, fix the TSC frequency, or mark the VM non-migratable",
        fix_safety: Applicability::Manual,
        source: "QEMU docs/system/i386/hyperv.rst hv-passthrough, hv-reenlightenment",
    },
};

fn hv_blocks_migration(ctx: &RuleContext) -> Vec<Finding> {
    // A VM with a passed-through PCI device does not migrate anyway (short of VFIO migration,
    // which GPUs for Windows guests do not offer): what else blocks migration is moot.
    if !ctx.config.cpu_migratable() || ctx.config.devices.hostdevs.iter().any(|h| h.kind == "pci") {
        return Vec::new();
    }
    let mut findings = Vec::new();
    if let Some(mode) = ctx.config.hyperv.mode.as_ref().filter(|m| m.value == "passthrough") {
        findings.push(
            Finding::new(Some(mode.span), "hv-passthrough copies this host's Hyper-V support into the guest and blocks live migration, but the CPU is configured migratable")
                .with_fix(Fix::manual("list the enlightenments explicitly (mode='custom'), or mark the CPU migratable='off'")),
        );
    }
    if let Some(reenlightenment) = ctx.config.hyperv.get(Hv::Reenlightenment).filter(|f| f.on) {
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

pub(super) const HV005: VmRule = VmRule {
    check: hv_reset,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV005",
        name: "hv-reset",
        category: Category::Hyperv,
        severity: Severity::Info,
        title: "hv-reset is on",
        explanation: "The Hyper-V reset MSR lets the guest reset the VM by an MSR write. Modern Hyper-V does not offer it, Windows does not need it and QEMU's documentation recommends leaving it off. It has no effect on performance either way: this is hygiene, not speed.",
        example: "<reset state='on'/>",
        fix: "turn hv-reset off",
        fix_safety: Applicability::Safe,
        source: "QEMU docs/system/i386/hyperv.rst",
    },
};

fn hv_reset(ctx: &RuleContext) -> Vec<Finding> {
    ctx.config
        .hyperv
        .get(Hv::Reset)
        .filter(|f| f.on)
        .map(|reset| {
            Finding::new(
                Some(reset.span),
                "hv-reset is on; modern Hyper-V does not offer it and QEMU recommends leaving it off (no effect on performance)",
            )
            .with_fix(Fix::safe(ConfigEdit::DisableHyperv { feature: Hv::Reset }))
        })
        .into_iter()
        .collect()
}

pub(super) const HV006: VmRule = VmRule {
    check: hv_spinlocks_low,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV006",
        name: "hv-spinlocks-retries-low",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "hv-spinlocks retries below 4095",
        explanation: "The retry count is how often a vCPU spins on a lock before it tells the hypervisor it is waiting. libvirt requires at least 4095; 8191 (0x1fff) is the common choice.",
        example: "<spinlocks state='on' retries='1024'/>",
        fix: "set retries to 8191",
        fix_safety: Applicability::Safe,
        source: "libvirt docs/formatdomain.rst hyperv spinlocks",
    },
};

fn hv_spinlocks_low(ctx: &RuleContext) -> Vec<Finding> {
    let Some(spinlocks) = ctx.config.hyperv.get(Hv::Spinlocks).filter(|f| f.on) else { return Vec::new() };
    match spinlocks.value.as_deref().map(str::parse::<u64>) {
        Some(Ok(retries)) if retries < u64::from(recommended::SPINLOCK_RETRIES_MIN) => vec![
            Finding::new(Some(spinlocks.span), format!("hv-spinlocks retries={retries} is below libvirt's minimum of {}: the guest gives up spinning and calls the hypervisor almost at once", recommended::SPINLOCK_RETRIES_MIN))
                .with_fix(Fix::safe(ConfigEdit::SetSpinlockRetries { retries: recommended::SPINLOCK_RETRIES })),
        ],
        _ => Vec::new(),
    }
}

pub(super) const HV007: VmRule = VmRule {
    check: hv_vendor_id_too_long,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV007",
        name: "hv-vendor-id-too-long",
        category: Category::Hyperv,
        severity: Severity::Error,
        title: "hv-vendor-id longer than 12 characters",
        explanation: "The Hyper-V vendor signature lives in three 4-byte CPUID registers; QEMU and libvirt accept at most 12 characters.",
        example: "<vendor_id state='on' value='GenuineIntelKVM'/> (15 characters)",
        fix: "shorten the value",
        fix_safety: Applicability::Manual,
        source: "QEMU docs/system/i386/hyperv.rst hv-vendor-id; libvirt docs/formatdomain.rst hyperv vendor_id",
    },
};

fn hv_vendor_id_too_long(ctx: &RuleContext) -> Vec<Finding> {
    let Some(vendor) = ctx.config.hyperv.get(Hv::VendorId).filter(|f| f.on) else { return Vec::new() };
    match &vendor.value {
        Some(value) if value.chars().count() > recommended::VENDOR_ID_MAX_CHARS => vec![
            Finding::new(
                Some(vendor.span),
                format!(
                    "vendor_id '{value}' has {} characters; CPUID leaf 0x40000000 holds {}",
                    value.chars().count(),
                    recommended::VENDOR_ID_MAX_CHARS
                ),
            )
            .with_fix(Fix::manual("shorten the vendor_id value to at most 12 characters")),
        ],
        _ => Vec::new(),
    }
}

pub(super) const HV008: VmRule = VmRule {
    check: synic_inhibits_apicv,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV008",
        name: "synic-inhibits-apicv",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "SynIC without hv-avic turns APICv/AVIC off",
        explanation: "With SynIC, Windows uses AutoEOI for its synthetic interrupts, which APIC virtualization cannot emulate, so KVM inhibits APICv/AVIC for the whole VM (APICV_INHIBIT_REASON_HYPERV). Every interrupt and EOI then exits. On IPI-heavy workloads this can make 'all enlightenments on' slower than none. hv-avic (DEPRECATING_AEOI) tells Windows not to use AutoEOI and keeps APICv/AVIC on; with hv-vapic on as well, it also withdraws QEMU's recommendation to use the Hyper-V APIC MSRs, whose every access exits (HV013). The rule runs only where the host's APICv/AVIC state is known to be on: hv-avic hurts without it (HV009), so with the state unknown kvmtune does not guess; `kvmtune probe` on the host settles it. Where the host cannot offer hv-avic (its KVM does not list it, or its kernel, QEMU or libvirt predates it; kernels before 5.15 switch APICv/AVIC off as soon as a vCPU activates SynIC, AutoEOI or not), SynIC's synthetic timers against APIC virtualization is a trade-off with no fix here, and the rule says so as information only: hv-avic would be refused there (HV011).",
        example: "<synic state='on'/> without <avic state='on'/> on a host with APICv on",
        fix: "enable hv-avic",
        fix_safety: Applicability::Safe,
        source: "QEMU docs/system/i386/hyperv.rst hv-avic; Linux arch/x86/kvm/hyperv.c (APICV_INHIBIT_REASON_HYPERV while SynIC AutoEOI is in use); Linux commit 0f250a646382 'KVM: x86: hyper-v: Deactivate APICv only when AutoEOI feature is in use' (5.15; before it kvm_hv_activate_synic inhibited APICv for every SynIC); LKML 2021 (Kechen Lu)",
    },
};

fn synic_inhibits_apicv(ctx: &RuleContext) -> Vec<Finding> {
    if ctx.apic_virtualization() != Some(true) || !ctx.enlightenments_visible() || ctx.on(Hv::Avic) {
        return Vec::new();
    }
    let Some(synic) = ctx.config.hyperv.get(Hv::Synic).filter(|f| f.on) else { return Vec::new() };
    let kind = ctx.apic_virtualization_name();
    // A host that cannot offer hv-avic leaves a trade-off, not a fault: the fix would be refused
    // (HV011), and the plan keeps SynIC there for its timers.
    if let Some(Offer::Lacking { why, .. }) = ctx.host.map(|host| offer(host, Hv::Avic)) {
        return vec![
            Finding::new(
                Some(synic.span),
                format!(
                    "hv-synic: KVM switches {kind} off for the whole VM while SynIC is in use, and this host cannot keep it on with hv-avic ({why}); SynIC's timers against {kind} is a trade-off, worth measuring on IPI-heavy loads"
                ),
            )
            .with_severity(Severity::Info),
        ];
    }
    let mut message = format!(
        "hv-synic without hv-avic: Windows uses AutoEOI, which makes KVM switch {kind} off on this host"
    );
    if ctx.config.hyperv.is_on(Hv::Vapic) {
        message
            .push_str("; and with hv-vapic, QEMU recommends the Hyper-V APIC MSRs, whose every access exits");
    }
    let mut finding = Finding::new(Some(synic.span), message).with_fix(enable(&[Hv::Avic], ctx.config));
    if ctx.workload == Workload::IpiHeavy {
        finding = finding.with_severity(Severity::Error);
    }
    vec![finding]
}

pub(super) const HV009: VmRule = VmRule {
    check: hv_avic_without_apicv,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV009",
        name: "hv-avic-without-apicv",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "hv-avic on a host without APICv/AVIC",
        explanation: "hv-avic only pays off when APIC virtualization is on. Without it, Windows gives up AutoEOI (one exit saved per interrupt) for nothing, and with hv-vapic QEMU stops recommending the Hyper-V APIC MSRs, the path of the paravirtual EOI that spares EOI exits where APIC virtualization is off (Linux under Hyper-V takes that path only on the recommendation); QEMU documents it as harmful there (\"should not be enabled if the hardware does not support APIC virtualization\"). With SynIC on an APICv/AVIC host, its absence is HV008.",
        example: "<avic state='on'/> on a host booted with kvm_intel.enable_apicv=N",
        fix: "turn hv-avic off, or turn APICv/AVIC on in the host's KVM module",
        fix_safety: Applicability::Safe,
        source: "QEMU docs/system/i386/hyperv.rst hv-avic; QEMU commit e1f9a8e8c90a (hv-avic withdraws HV_APIC_ACCESS_RECOMMENDED); Linux arch/x86/hyperv/hv_apic.c (the enlightened APIC and its assist-page EOI only with HV_X64_APIC_ACCESS_RECOMMENDED)",
    },
};

fn hv_avic_without_apicv(ctx: &RuleContext) -> Vec<Finding> {
    if ctx.apic_virtualization() != Some(false) {
        return Vec::new();
    }
    ctx.config
        .hyperv
        .get(Hv::Avic)
        .filter(|f| f.on)
        .map(|avic| {
            Finding::new(Some(avic.span), "hv-avic asks Windows not to use AutoEOI, but this host has APICv/AVIC off: Windows loses AutoEOI and gains nothing")
                .with_fix(Fix::safe(ConfigEdit::DisableHyperv { feature: Hv::Avic }))
        })
        .into_iter()
        .collect()
}

pub(super) const HV010: VmRule = VmRule {
    check: hypervisor_bit_hidden,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV010",
        name: "hypervisor-bit-hidden",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "the hypervisor CPUID bit is disabled",
        explanation: "Windows looks for Hyper-V enlightenments only when CPUID.1:ECX[31] is set. With <feature policy='disable' name='hypervisor'/> every enlightenment is silently ignored: no reference TSC page, no synthetic timers, no paravirtual IPIs or TLB flushes. (<kvm><hidden state='on'/> is different: it hides only KVM's own signature and keeps the hypervisor bit.) The trade-off: Windows 7 uses the TSC for QueryPerformanceCounter only when it believes it runs on bare metal, and on IPI-heavy cloud-gaming workloads hiding the hypervisor has been measured fastest; for everything else it loses.",
        example: "<feature policy='disable' name='hypervisor'/> beside a <hyperv> block",
        fix: "remove the disable policy for `hypervisor`",
        fix_safety: Applicability::Unsafe,
        source: "Microsoft Hyper-V TLFS, Feature discovery (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/feature-discovery); Microsoft, Acquiring high-resolution time stamps (learn.microsoft.com/windows/win32/sysinfo/acquiring-high-resolution-time-stamps); libvirt docs/formatdomain.rst kvm hidden",
    },
};

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
    .with_fix(Fix::unsafe_(ConfigEdit::RemoveCpuFeature { name: "hypervisor".into() }));
    let trade_off = ctx.workload == Workload::IpiHeavy || ctx.windows == Some(WindowsVersion::Win7);
    if trade_off {
        finding = finding.with_severity(Severity::Info);
        finding
            .message
            .push_str("; for this workload/guest that can be the faster choice, see `kvmtune explain HV010`");
    }
    vec![finding]
}

pub(super) const HV011: VmRule = VmRule {
    check: hv_unsupported_by_host,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV011",
        name: "hv-unsupported-by-host",
        category: Category::Hyperv,
        severity: Severity::Error,
        title: "an enlightenment this host's KVM, QEMU or libvirt does not support",
        explanation: "QEMU checks each requested enlightenment against KVM_GET_SUPPORTED_HV_CPUID and refuses to start with 'Hyper-V <feature> is not supported by kernel'; a QEMU older than the property rejects it as unknown, and a libvirt older than the element rejects the XML. Where /dev/kvm cannot be asked, the kernel release stands in for KVM's answer (a warning then, since distributions backport).",
        example: "<synic state='on'/> on a kernel built without CONFIG_KVM_HYPERV",
        fix: "turn the feature off, or run on a kernel, QEMU and libvirt that support it",
        fix_safety: Applicability::Safe,
        source: "QEMU target/i386/kvm/kvm.c (kvm_hyperv_properties[], hv_feature_check_deps); Linux Documentation/virt/kvm/api.rst (KVM_GET_SUPPORTED_HV_CPUID)",
    },
};

fn hv_unsupported_by_host(ctx: &RuleContext) -> Vec<Finding> {
    let Some(host) = ctx.host else { return Vec::new() };
    let enabled: Vec<_> = ctx
        .config
        .hyperv
        .features
        .iter()
        .filter(|f| f.on && !matches!(f.hv(), Some(Hv::VendorId | Hv::Spinlocks)))
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
        // A property kvmtune does not know is QEMU's to judge.
        .filter_map(|f| Some((f, f.hv()?)))
        .filter_map(|(f, hv)| match offer(host, hv) {
            Offer::Lacking { layer, why } => {
                let finding =
                    Finding::new(Some(f.span), format!("{}: {why}; the VM would not start", f.name))
                        .with_fix(Fix::safe(ConfigEdit::DisableHyperv { feature: hv }));
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

pub(super) const HV012: VmRule = VmRule {
    check: nested_hyperv_without_direct_timers,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV012",
        name: "nested-hyperv-without-direct-timers",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "VMX or SVM given to a Windows guest whose synthetic timers have no direct mode",
        explanation: "A guest CPU that requires vmx or svm is given hardware virtualization so that it can run a hypervisor of its own. In Windows that is Microsoft's: WSL 2, the Hyper-V role, Windows Sandbox, or VBS and Memory integrity, which a clean install of Windows 11 turns on by itself on hardware that allows it. On KVM that hypervisor uses the synthetic timers only in direct mode, where an expiring timer is an ordinary interrupt instead of a SynIC message; without hv-stimer-direct it does without them. Windows running no hypervisor keeps to the classic mode, so direct mode costs it nothing.",
        example: "<feature policy='require' name='svm'/> with <stimer state='on'/> and no <direct state='on'/> in it",
        fix: "turn on direct mode for the synthetic timers: <stimer state='on'><direct state='on'/></stimer> (hv-stimer-direct)",
        fix_safety: Applicability::Safe,
        source: "QEMU docs/system/i386/hyperv.rst (hv-stimer-direct: nested Hyper-V uses synthetic timers only in direct mode); Linux commit 8644f771e07c (direct mode for synthetic timers: Hyper-V on KVM uses them only with it, Windows Server 2016 without Hyper-V keeps to the classic mode); Microsoft, Driver compatibility with memory integrity and VBS (learn.microsoft.com/windows-hardware/test/hlk/testref/driver-compatibility-with-device-guard: on by default on clean installs of Windows 11 on compatible hardware)",
    },
};

fn nested_hyperv_without_direct_timers(ctx: &RuleContext) -> Vec<Finding> {
    // Passthrough and host-model give the guest whatever the host offers, direct mode included.
    if !ctx.is_windows() || !ctx.enlightenments_visible() || !ctx.custom_hyperv() {
        return Vec::new();
    }
    let Some(stimer) = ctx.config.hyperv.get(Hv::Stimer).filter(|f| f.on) else { return Vec::new() };
    if ctx.config.hyperv.is_on(Hv::StimerDirect) {
        return Vec::new();
    }
    // A stack without direct mode (Linux before 5.0, QEMU before 4.1, libvirt before 5.7)
    // cannot take the fix: turning it on would keep the VM from starting (HV011).
    if ctx.host.is_some_and(|host| matches!(offer(host, Hv::StimerDirect), Offer::Lacking { .. })) {
        return Vec::new();
    }
    // Only a CPU feature the config asks for by name: host-passthrough alone says nothing of
    // whether the guest is meant to run a hypervisor.
    let Some(virtualization) =
        ctx.config.cpu.features.iter().find(|f| matches!(f.name.as_str(), "vmx" | "svm") && f.enables())
    else {
        return Vec::new();
    };
    vec![
        Finding::new(
            Some(stimer.span),
            format!(
                "the guest CPU requires {} for a hypervisor of its own, whose synthetic timers need direct mode, and hv-stimer-direct is off",
                virtualization.name
            ),
        )
        .with_fix(enable(&[Hv::StimerDirect], ctx.config)),
    ]
}

pub(super) const HV013: VmRule = VmRule {
    check: vapic_bypasses_apicv,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "HV013",
        name: "vapic-bypasses-apicv",
        category: Category::Hyperv,
        severity: Severity::Warning,
        title: "hv-vapic without hv-avic sends the guest's EOIs past APICv/AVIC, one exit each",
        explanation: "With hv-vapic and without hv-avic, QEMU sets the Hyper-V recommendation to reach the APIC through MSRs (CPUID 0x40000004 EAX bit 3, UseApicMsrs), and the guest follows it: it ends each interrupt by writing the synthetic EOI MSR 0x40000070, and in xAPIC mode sends IPIs and sets its task priority through 0x40000071-0x40000072 too (Linux under Hyper-V does exactly this; a KVM developer testing Windows found it 'won't use the real apic at all'). Those MSRs lie outside the ranges a VMX MSR bitmap or an SVM MSR permission map can pass through, so every access exits and KVM emulates it; the paravirtual EOI of the VP assist page, which could spare some of them, is never armed while APIC virtualization is active. On a host with APICv or AVIC on, the APIC the guest leaves alone would have taken most of those writes without an exit: EOIs and the task priority, and IPIs too with AVIC or Intel's IPI virtualization. With hv-avic on, QEMU stops recommending the MSRs (the VP assist page stays available), so the guest uses the virtualized APIC. AVIC before Zen 4's x2AVIC virtualizes only the xAPIC: there a guest whose CPU has x2apic exits on its EOIs either way, so on such AMD hosts the rule speaks only for a guest CPU with x2apic turned off (which CPU008 asks for on Linux 5.7 to 5.19). With SynIC on as well, HV008 asks for the same fix. Where the host cannot offer hv-avic, the rule says so as information only.",
        example: "<vapic state='on'/> without <avic state='on'/> on a host with kvm_intel enable_apicv=Y",
        fix: "enable hv-avic (libvirt 8.10+: <avic state='on'/>; QEMU 6.2+: hv-avic=on)",
        fix_safety: Applicability::Safe,
        source: "QEMU commit e1f9a8e8c90a 'i386: Implement pseudo 'hv-avic' ('hv-apicv') enlightenment' (target/i386/kvm/kvm.c hyperv_fill_cpuids: HV_APIC_ACCESS_RECOMMENDED only for hv-vapic without hv-avic) and its preparatory commit 050716292a63; Maxim Levitsky, kvm list, 2021-05 (lore.kernel.org/kvm/2409eb8593804eb879ae6fb961a709ca8c20f329.camel@redhat.com: hv_vapic's recommendation makes the guest use the Hyper-V APIC MSRs, which AVIC does not accelerate); reddit.com/r/VFIO/comments/fovu39 (a 2020 AVIC guide: vapic's paravirtual EOI conflicts with AVIC); Linux arch/x86/kvm/hyperv.c (HV_X64_MSR_EOI/ICR/TPR emulated by kvm_hv_vapic_msr_write); Linux arch/x86/hyperv/hv_apic.c (hv_apic_init: the Hyper-V APIC MSRs only with HV_X64_APIC_ACCESS_RECOMMENDED); Linux arch/x86/kvm/lapic.c (apic_sync_pv_eoi_to_guest arms no paravirtual EOI while irr_pending, which kvm_apic_update_apicv keeps set under APICv); Intel SDM vol. 3C, MSR-Bitmap Address, and AMD APM vol. 2, MSR Intercepts (MSRs outside the bitmap's ranges always exit); Linux commit 0e311d33bfbe 'KVM: SVM: Introduce hybrid-AVIC mode' (6.0: AVIC stays on for an x2APIC guest without x2AVIC, its x2APIC fully emulated by KVM); Microsoft Hyper-V TLFS, Feature and interface discovery (UseApicMsrs)",
    },
};

fn vapic_bypasses_apicv(ctx: &RuleContext) -> Vec<Finding> {
    if ctx.apic_virtualization() != Some(true) || !ctx.enlightenments_visible() || ctx.on(Hv::Avic) {
        return Vec::new();
    }
    // With SynIC on, HV008 asks for hv-avic and names this reason too.
    if ctx.config.hyperv.is_on(Hv::Synic) {
        return Vec::new();
    }
    let Some(vapic) = ctx.config.hyperv.get(Hv::Vapic).filter(|f| f.on) else { return Vec::new() };
    // Where APIC virtualization leaves x2APIC registers to KVM (AVIC before x2AVIC), a guest
    // with x2apic in its CPU would exit on its EOIs without hv-vapic too.
    let x2apic_off = ctx.config.cpu.features.iter().any(|f| f.name == "x2apic" && !f.enables());
    if ctx.host.is_some_and(|host| !crate::analysis::avic_inhibitions::virtualizes_x2apic(host))
        && !x2apic_off
    {
        return Vec::new();
    }
    let kind = ctx.apic_virtualization_name();
    let bypass = format!(
        "hv-vapic without hv-avic: QEMU recommends the Hyper-V APIC MSRs to the guest, so its EOIs (in xAPIC mode its IPIs and TPR writes too) exit instead of going to the {kind} this host has on"
    );
    if let Some(Offer::Lacking { why, .. }) = ctx.host.map(|host| offer(host, Hv::Avic)) {
        return vec![
            Finding::new(
                Some(vapic.span),
                format!("{bypass}; this host cannot offer hv-avic ({why}), which would withdraw the recommendation"),
            )
            .with_severity(Severity::Info),
        ];
    }
    vec![Finding::new(Some(vapic.span), bypass).with_fix(enable(&[Hv::Avic], ctx.config))]
}
