//! The guest CPU as libvirt and QEMU build it: sockets Windows will not use, `<cpu>` elements
//! libvirt refuses, features of the other vendor's CPUs, SMT no x86 part has, host-model where
//! nothing needs it, an IA32_ARCH_CAPABILITIES KVM refuses, SVM and x2APIC where they switch
//! AVIC off, and more vCPUs than the host has CPUs.

use super::prelude::*;
use crate::host::cpu::CpuVendor;

/// The most CPU sockets a Windows client edition uses (Pro's; Home uses one).
const WINDOWS_CLIENT_SOCKETS: u32 = crate::knowledge::windows::CLIENT_SOCKETS;

pub(super) const CPU001: VmRule = VmRule {
    check: sockets_windows_ignores,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "CPU001",
        name: "vcpus-as-sockets",
        category: Category::Cpu,
        severity: Severity::Warning,
        title: "vCPUs presented as more sockets than Windows uses",
        explanation: "Without a <topology>, libvirt (unlike QEMU alone since its 6.2 machine types, which prefers cores) gives QEMU `-smp N,sockets=N,cores=1,threads=1`: every vCPU is a CPU package of its own. Windows client editions use at most two sockets (Pro, Enterprise, Education; Home one, Pro for Workstations four) and leave the rest idle: 6 or 12 vCPUs become 1 or 2 in Task Manager. The same holds for a <topology> that asks for more sockets. One socket with cores (and threads, where the vCPUs are pinned to host SMT pairs) gives Windows every vCPU.",
        example: "<vcpu>8</vcpu> with no <topology> in <cpu>",
        fix: "<topology sockets='1' dies='1' cores='N' threads='1'/> (threads='2' with N/2 cores where vCPU pairs are pinned to host SMT siblings)",
        fix_safety: Applicability::Safe,
        source: "libvirt src/qemu/qemu_command.c qemuBuildSmpCommandLine (sockets = vCPUs without a topology; checked with virsh domxml-to-native); QEMU hw/core/machine-smp.c (prefer_sockets only for machine types before 6.2); Microsoft, Announcing Windows 10 Pro for Workstations (blogs.windows.com/business/2017/08/10/microsoft-announces-windows-10-pro-workstations: Pro two CPU sockets, Pro for Workstations four); Microsoft, Compare Windows editions (Home: one CPU socket)",
    },
};

fn sockets_windows_ignores(ctx: &RuleContext) -> Vec<Finding> {
    let Some(vcpus) = &ctx.config.vcpus else { return Vec::new() };
    if !ctx.is_windows() || !ctx.windows.is_none_or(WindowsVersion::is_client) || vcpus.value < 2 {
        return Vec::new();
    }
    let topology = ctx.config.cpu.topology.as_ref();
    // Only libvirt turns a missing topology into one socket per vCPU; QEMU itself (machine
    // types 6.2 on) and Proxmox (sockets=1 by default) make cores of them.
    if topology.is_none() && ctx.config.format != SourceFormat::Libvirt {
        return Vec::new();
    }
    let sockets = topology.map_or(vcpus.value, |t| t.value.sockets);
    if sockets < WINDOWS_CLIENT_SOCKETS {
        return Vec::new();
    }
    // A <topology> of two sockets is a choice someone made; without one it is libvirt's.
    if sockets == WINDOWS_CLIENT_SOCKETS && topology.is_some() {
        return Vec::new();
    }
    let threads = smt_threads_from_pins(ctx, vcpus.value);
    let (cores, threads) = (vcpus.value / threads, threads);
    let fix_text = format!("<topology sockets='1' dies='1' cores='{cores}' threads='{threads}'/>");
    let fix = if ctx.config.anchors.cpu.is_some() {
        Fix::safe(ConfigEdit::SetCpuTopology { sockets: 1, dies: 1, cores, threads })
    } else {
        Fix::manual(format!("add <cpu> with {fix_text}"))
    };
    let (span, origin) = match topology {
        Some(t) => (Some(t.span), format!("<topology> asks for {sockets} sockets")),
        None => (
            Some(vcpus.span),
            format!("no <topology>: libvirt makes each of the {} vCPUs a socket of its own", vcpus.value),
        ),
    };
    let finding = Finding::new(
        span,
        format!(
            "{origin}; Windows client editions use at most two sockets (Home one), so the others stay idle"
        ),
    )
    .with_fix(fix);
    // Two sockets: Pro uses both, only Home loses one.
    if sockets == WINDOWS_CLIENT_SOCKETS {
        return vec![finding.with_severity(Severity::Info)];
    }
    vec![finding]
}

/// 2 where the host facts show vCPU pairs (0,1), (2,3), ... pinned one to one to host SMT
/// siblings, else 1.
fn smt_threads_from_pins(ctx: &RuleContext, vcpus: u32) -> u32 {
    let Some(host) = ctx.host else { return 1 };
    if !vcpus.is_multiple_of(2) {
        return 1;
    }
    let pin_of = |vcpu: u32| {
        ctx.config
            .pinning
            .vcpupin
            .iter()
            .find(|p| p.id == vcpu)
            .filter(|p| p.cpus.len() == 1)
            .and_then(|p| p.cpus.first())
    };
    let paired = (0..vcpus).step_by(2).all(|v| match (pin_of(v), pin_of(v + 1)) {
        (Some(a), Some(b)) => {
            a != b
                && host.topology.cpu(a).and_then(|c| c.smt_siblings.as_ref()).is_some_and(|s| s.contains(b))
        }
        _ => false,
    });
    if paired { 2 } else { 1 }
}

pub(super) const CPU002: VmRule = VmRule {
    check: features_without_model,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "CPU002",
        name: "cpu-features-without-model",
        category: Category::Cpu,
        severity: Severity::Error,
        title: "CPU features listed without a CPU mode or model",
        explanation: "A <cpu> without a mode is mode='custom', which needs a <model>. With <feature> elements but neither, libvirt refuses the domain (\"Non-empty feature list specified without CPU model\"), so the VM is never defined or started. Guides that say \"add topoext\" often leave the mode out.",
        example: "<cpu><feature policy='require' name='topoext'/></cpu>",
        fix: "<cpu mode='host-passthrough' check='none' migratable='off'> (or name a <model>)",
        fix_safety: Applicability::Unsafe,
        source: "libvirt src/conf/cpu_conf.c virCPUDefParseXML (\"Non-empty feature list specified without CPU model\"); checked with virsh domxml-to-native",
    },
};

fn features_without_model(ctx: &RuleContext) -> Vec<Finding> {
    let cpu = &ctx.config.cpu;
    let Some(first) = cpu.features.first() else { return Vec::new() };
    if cpu.named_cpu().is_some() {
        return Vec::new();
    }
    vec![
        Finding::new(
            ctx.config.anchors.cpu.or(Some(first.span)),
            format!("<cpu> lists {} but has no mode and no <model>: libvirt refuses the domain (\"Non-empty feature list specified without CPU model\")", crate::values::text::plural(cpu.features.len(), "feature")),
        )
        .with_fix(Fix::unsafe_(ConfigEdit::SetCpuMode { mode: "host-passthrough".into(), migratable: false })),
    ]
}

/// CPU features that only one vendor's parts have (and KVM offers only there), as libvirt and
/// QEMU name them. Features both vendors have under one name (prefetchw, the SSBD controls KVM
/// emulates on either) are not listed.
const AMD_ONLY: &[&str] = &[
    "svm",
    "topoext",
    "sse4a",
    "xop",
    "fma4",
    "tbm",
    "npt",
    "nrip-save",
    "perfctr_core",
    "perfctr-core",
    "clzero",
    "misalignsse",
    "cr8legacy",
];
const INTEL_ONLY: &[&str] = &["vmx", "intel-pt"];

pub(super) const CPU003: VmRule = VmRule {
    check: other_vendor_feature,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "CPU003",
        name: "other-vendor-cpu-feature",
        category: Category::Cpu,
        severity: Severity::Warning,
        title: "a CPU feature only the other vendor's CPUs have",
        explanation: "Guides written for AMD hosts require topoext or svm; guides for Intel require vmx. On the other vendor's host KVM cannot offer the feature: QEMU drops it with a warning (\"host doesn't support requested feature\") and the guest runs without it, or, with check='full', libvirt refuses to start the VM. Either way the line does nothing it promises.",
        example: "<feature policy='require' name='topoext'/> on an Intel host",
        fix: "remove the feature's <feature> line",
        fix_safety: Applicability::Safe,
        source: "QEMU target/i386/kvm/kvm.c and target/i386/cpu.c (x86_cpu_filter_features: \"host doesn't support requested feature\"); AMD64 Architecture Programmer's Manual vol. 3, CPUID Fn8000_0001; Intel SDM vol. 2A, CPUID; libvirt docs/formatdomain.rst CPU model (check)",
    },
};

fn other_vendor_feature(ctx: &RuleContext) -> Vec<Finding> {
    let other_vendors = match ctx.host_vendor() {
        Some(CpuVendor::Intel) => AMD_ONLY,
        Some(CpuVendor::Amd) => INTEL_ONLY,
        _ => return Vec::new(),
    };
    let host = ctx.host_vendor().map_or("", |v| if v == CpuVendor::Intel { "Intel" } else { "AMD" });
    // With check='full' libvirt compares the guest CPU QEMU built with the XML's and refuses
    // to start on a required feature that is missing.
    let refused = ctx.config.cpu.check.as_deref() == Some("full");
    ctx.config
        .cpu
        .features
        .iter()
        .filter(|f| f.enables() && other_vendors.contains(&f.name.as_str()))
        .map(|feature| {
            let outcome = if refused && feature.policy == "require" {
                "with check='full' libvirt refuses to start the VM"
            } else {
                "QEMU drops it with a warning (libvirt would refuse with check='full')"
            };
            let finding = Finding::new(Some(feature.span), format!("CPU feature {} ({} policy) exists only on the other vendor's CPUs: on this {host} host {outcome}", feature.name, feature.policy))
                .with_fix(Fix::safe(ConfigEdit::RemoveCpuFeature { name: feature.name.clone() }));
            if refused && feature.policy == "require" { finding.with_severity(Severity::Error) } else { finding }
        })
        .collect()
}

pub(super) const CPU004: VmRule = VmRule {
    check: smt_no_x86_has,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "CPU004",
        name: "unreal-smt-topology",
        category: Category::Cpu,
        severity: Severity::Warning,
        title: "more threads per core than any current x86 CPU has",
        explanation: "Current Intel and AMD cores run at most two hardware threads. A topology of 4 threads per core (often meant as 4 cores) makes Windows treat four vCPUs as one core: its scheduler keeps them half idle to avoid sharing a core, and games that size their thread pools by physical cores start a quarter of them.",
        example: "<topology sockets='1' cores='1' threads='4'/>",
        fix: "threads='1' (or '2' on host SMT pairs), the rest as cores",
        fix_safety: Applicability::Safe,
        source: "Intel 64 and IA-32 Architectures SDM vol. 3A, 9.6 (two logical processors per core with Hyper-Threading); AMD64 Architecture Programmer's Manual vol. 2, 2.1 (SMT: two threads per core); Microsoft, Processor groups and scheduling (learn.microsoft.com/windows/win32/procthread/processor-groups)",
    },
};

fn smt_no_x86_has(ctx: &RuleContext) -> Vec<Finding> {
    let Some(topology) = ctx.config.cpu.topology.as_ref().filter(|t| t.value.threads > 2) else {
        return Vec::new();
    };
    let t = topology.value;
    vec![
        Finding::new(Some(topology.span), format!("threads='{}': no current x86 core runs more than two threads, and Windows schedules every {} vCPUs as one core", t.threads, t.threads))
            .with_fix(Fix::safe(ConfigEdit::SetCpuTopology { sockets: t.sockets, dies: t.dies, cores: t.cores * t.threads, threads: 1 })),
    ]
}

pub(super) const CPU005: VmRule = VmRule {
    check: host_model_on_pinned_vm,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "CPU005",
        name: "host-model-on-pinned-vm",
        category: Category::Cpu,
        severity: Severity::Warning,
        title: "host-model CPU on a VM tied to this host",
        explanation: "host-model picks the named CPU model closest to the host and adds features, so that the VM can migrate to similar hosts. The price: an emulated cache description, no invariant TSC (so Windows may not trust the TSC) and some features left out. A VM whose vCPUs are pinned to this host's CPUs, or that has a passed-through PCI device, does not migrate; host-passthrough gives it the host's real CPU.",
        example: "<cpu mode='host-model'> with <vcpupin> in <cputune>",
        fix: "<cpu mode='host-passthrough' check='none' migratable='off'>",
        fix_safety: Applicability::Unsafe,
        source: "libvirt docs/formatdomain.rst CPU model and topology (host-model, host-passthrough, migratable); QEMU docs/system/i386/cpu.rst (host passthrough: the best performance where migration is not needed; invtsc blocks migration)",
    },
};

fn host_model_on_pinned_vm(ctx: &RuleContext) -> Vec<Finding> {
    let Some(mode) = ctx.config.cpu.mode.as_ref().filter(|m| m.value == "host-model") else {
        return Vec::new();
    };
    let pinned = !ctx.config.pinning.vcpupin.is_empty();
    let passthrough = ctx.config.devices.hostdevs.iter().any(|h| h.kind == "pci");
    if !pinned && !passthrough {
        return Vec::new();
    }
    let why =
        if passthrough { "has a passed-through PCI device" } else { "pins its vCPUs to this host's CPUs" };
    vec![
        Finding::new(Some(mode.span), format!("host-model CPU on a VM that {why} and so does not migrate: host-passthrough gives it the real cache layout and invariant TSC"))
            .with_fix(Fix::unsafe_(ConfigEdit::SetCpuMode { mode: "host-passthrough".into(), migratable: false })),
    ]
}

pub(super) const CPU006: VmRule = VmRule {
    check: arch_capabilities_kvm_refuses,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "CPU006",
        name: "arch-capabilities-refused",
        category: Category::Cpu,
        severity: Severity::Error,
        title: "host-passthrough where KVM refuses its own IA32_ARCH_CAPABILITIES",
        explanation: "With host-passthrough (QEMU's -cpu host, or max), QEMU reads the IA32_ARCH_CAPABILITIES value (MSR 0x10a) KVM offers guests and sets it on every vCPU. The KVM of some hosts, nested ones in particular, offers a value it then refuses: QEMU aborts before the guest runs, with `failed to set MSR 0x10a` and an assertion in kvm_buf_set_msrs. kvmtune asks the host's KVM the same question on a scratch vCPU (`kvmtune probe`). Turning the feature off lets the VM start; the guest then lacks the MSR that declares which speculative-execution flaws the CPU does not have, and may turn on mitigations it would not need.",
        example: "<cpu mode='host-passthrough'/> on a nested host whose KVM offers ARCH_CAPABILITIES 0x400000000c000069 and refuses it",
        fix: "<feature policy='disable' name='arch-capabilities'/> in <cpu> (QEMU: -cpu host,arch-capabilities=off)",
        fix_safety: Applicability::Safe,
        source: "QEMU target/i386/kvm/kvm.c (kvm_put_msrs sets MSR_IA32_ARCH_CAPABILITIES; kvm_buf_set_msrs aborts when KVM sets fewer MSRs); Linux arch/x86/kvm/x86.c (kvm_set_msr_common, MSR_IA32_ARCH_CAPABILITIES); Linux Documentation/virt/kvm/api.rst (KVM_GET_MSRS on the system fd: feature MSRs); github.com/asterinas/asterinas/issues/2980 (the same abort on a nested host)",
    },
};

fn arch_capabilities_kvm_refuses(ctx: &RuleContext) -> Vec<Finding> {
    let Some(mode) = ctx.config.cpu.host_cpu_mode() else {
        return Vec::new();
    };
    if ctx.config.cpu.features.iter().any(|f| f.name == "arch-capabilities" && !f.enables()) {
        return Vec::new();
    }
    let refused = ctx
        .host
        .and_then(|h| h.kvm.device.known())
        .and_then(|d| d.arch_capabilities.known())
        .filter(|a| a.refused());
    let Some(refused) = refused else { return Vec::new() };
    vec![
        Finding::new(
            Some(mode.span),
            format!(
                "{}: this host's KVM offers IA32_ARCH_CAPABILITIES {} and refuses it on a vCPU, so QEMU aborts at start (`failed to set MSR 0x10a`)",
                mode.value,
                refused.offered.as_deref().unwrap_or("")
            ),
        )
        .with_fix(Fix::safe(ConfigEdit::DisableCpuFeature { name: "arch-capabilities".into() })),
    ]
}

pub(super) const CPU007: VmRule = VmRule {
    check: svm_inhibits_avic,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "CPU007",
        name: "svm-inhibits-avic",
        category: Category::Cpu,
        severity: Severity::Warning,
        title: "SVM in the guest CPU turns AVIC off for the whole VM",
        explanation: "From Linux 5.6 to 5.18, KVM on AMD switches AVIC off for a whole VM as soon as a vCPU's CPUID has SVM while kvm_amd allows nesting (APICV_INHIBIT_REASON_NESTED), whether or not the guest ever runs a hypervisor of its own. Every interrupt, IPI and EOI then exits to KVM again, which is what turning AVIC on was meant to end. host-passthrough hands the guest SVM wherever kvm_amd's nested parameter is on, and on is its default. Linux 5.19 and later inhibit AVIC only on a vCPU while it runs a nested guest. A guest that runs no hypervisor (no WSL 2, VBS or Hyper-V role) loses nothing without SVM. The rule runs where the host's kernel release, AVIC state and nested parameter are known; RHEL-family kernels, which backport KVM, are left out.",
        example: "<cpu mode='host-passthrough'/> on a Linux 5.15 host with kvm_amd avic=1 nested=1",
        fix: "<feature policy='disable' name='svm'/> in <cpu> where the guest runs no hypervisor of its own (or kvm_amd loaded with nested=0 where no guest on the host does); where it does, a host kernel of 5.19 or later",
        fix_safety: Applicability::Unsafe,
        source: "Linux commit 9a0bf0543069 'svm: Deactivate AVIC when launching guest with nested SVM support' (5.6: svm_cpuid_update inhibits AVIC when nested and the guest CPUID has SVM); Linux commit f44509f849fe 'KVM: x86: SVM: allow AVIC to co-exist with a nested guest running' (5.19: the inhibition only while a vCPU runs nested); Linux arch/x86/kvm/svm/svm.c svm_set_cpu_caps (SVM offered to guests when nested is on); reddit.com/r/VFIO/comments/fovu39 (an AVIC guide for Linux 5.6: remove svm from the guest CPU or load kvm_amd with nested=0)",
    },
};

fn svm_inhibits_avic(ctx: &RuleContext) -> Vec<Finding> {
    let Some(inhibition) = ctx.host.and_then(crate::analysis::avic_inhibitions::svm_inhibits_avic) else {
        return Vec::new();
    };
    let features = &ctx.config.cpu.features;
    if features.iter().any(|f| f.name == "svm" && !f.enables()) {
        return Vec::new();
    }
    let inhibited = format!(
        "on this host (Linux {}, {}) KVM switches AVIC off for the whole VM, not only while a guest runs nested as Linux 5.19 and later do",
        inhibition.release, inhibition.evidence
    );
    if let Some(required) = features.iter().find(|f| f.name == "svm" && f.enables()) {
        // The guest is meant to run a hypervisor: the fix is the host's kernel, not the feature.
        return vec![Finding::new(
            Some(required.span),
            format!("the guest CPU requires svm, and {inhibited}"),
        )];
    }
    let Some(mode) = ctx.config.cpu.host_cpu_mode() else {
        return Vec::new();
    };
    vec![
        Finding::new(Some(mode.span), format!("{} passes svm on to the guest, and {inhibited}", mode.value))
            .with_fix(Fix::unsafe_(ConfigEdit::DisableCpuFeature { name: "svm".into() })),
    ]
}

pub(super) const CPU008: VmRule = VmRule {
    check: x2apic_inhibits_avic,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "CPU008",
        name: "x2apic-inhibits-avic",
        category: Category::Cpu,
        severity: Severity::Warning,
        title: "x2APIC in the guest CPU turns AVIC off for the whole VM",
        explanation: "From Linux 5.7 to 5.19, KVM on AMD switches AVIC off for a whole VM as soon as a vCPU's CPUID has x2APIC (APICV_INHIBIT_REASON_X2APIC), whether or not the guest ever switches its APIC to x2APIC mode: that AVIC could not virtualize x2APIC. Every interrupt, IPI and EOI then exits to KVM again, which is what turning AVIC on was meant to end. Under KVM QEMU adds x2apic to every CPU model, and host-passthrough copies it from KVM, so every guest CPU has it unless the config turns it off. Before 5.7 KVM hid x2APIC from guests while AVIC was on; from 6.0 AVIC keeps delivering interrupts to a vCPU in x2APIC mode (hybrid AVIC, and x2AVIC on Zen 4). Windows needs x2APIC only for more than 255 vCPUs, which AVIC of these kernels does not run. The rule runs where the host's kernel release and AVIC state are known; RHEL-family kernels, which backport KVM, are left out.",
        example: "<cpu mode='host-passthrough'/> on a Linux 5.15 host with kvm_amd avic=1",
        fix: "<feature policy='disable' name='x2apic'/> in <cpu> (QEMU: -cpu host,x2apic=off), or a host kernel of 6.0 or later",
        fix_safety: Applicability::Safe,
        source: "Linux commit 'KVM: SVM: Inhibit APIC virtualization for X2APIC guest' (Oliver Upton, lore.kernel.org/kvm/20200228085905.22495-1-oupton@google.com, Linux 5.7: svm_cpuid_update inhibits AVIC when the guest CPUID has X2APIC, instead of hiding X2APIC); Linux commit 'KVM: SVM: Introduce hybrid-AVIC mode' (lore.kernel.org/kvm/20220518162652.100493-13-suravee.suthikulpanit@amd.com, Linux 6.0: the inhibition removed); QEMU target/i386/cpu.c kvm_default_props (x2apic on for every CPU model under KVM); reddit.com/r/VFIO/comments/fovu39 (an AVIC guide: remove x2apic from the guest CPU for Linux 5.7); github.com/cloud-hypervisor/cloud-hypervisor/pull/5972 (x2APIC off in the guest for AVIC on Linux 5.6 to 6.0)",
    },
};

fn x2apic_inhibits_avic(ctx: &RuleContext) -> Vec<Finding> {
    let Some(inhibition) = ctx.host.and_then(crate::analysis::avic_inhibitions::x2apic_inhibits_avic) else {
        return Vec::new();
    };
    let cpu = &ctx.config.cpu;
    if cpu.features.iter().any(|f| f.name == "x2apic" && !f.enables()) {
        return Vec::new();
    }
    let inhibited = format!(
        "on this host (Linux {}, {}) KVM switches AVIC off for the whole VM; Linux 6.0 and later keep it on",
        inhibition.release, inhibition.evidence
    );
    // The CPU that carries x2apic: a feature that asks for it, else the mode or model under
    // which QEMU adds it. libvirt takes a <feature> only beside a mode or model that names the
    // CPU (CPU002), so only there is the fix.
    let named = cpu.named_cpu();
    let (span, who) = match (cpu.features.iter().find(|f| f.name == "x2apic"), named) {
        (Some(required), _) => (Some(required.span), "the guest CPU requires x2apic".to_string()),
        (None, Some(named)) => (Some(named.span), format!("{} has x2apic under KVM", named.value)),
        (None, None) => (
            ctx.config.anchors.cpu,
            "the guest CPU has x2apic (QEMU adds it to every CPU model under KVM)".to_string(),
        ),
    };
    let finding = Finding::new(span, format!("{who}, and {inhibited}"));
    if named.is_none() {
        return vec![finding];
    }
    vec![finding.with_fix(Fix::safe(ConfigEdit::DisableCpuFeature { name: "x2apic".into() }))]
}

pub(super) const CPU009: VmRule = VmRule {
    check: vcpus_exceed_host_cpus,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "CPU009",
        name: "vcpus-exceed-host-cpus",
        category: Category::Cpu,
        severity: Severity::Warning,
        title: "more vCPUs run than the host has CPUs",
        explanation: "Each vCPU is a host thread that needs a host CPU to run on. With more vCPUs running than the host has logical CPUs online, they cannot all run at once, so the host's scheduler takes turns among them: a vCPU that holds a lock, or that another vCPU waits on for an IPI or a TLB shootdown, is descheduled for whole time slices while the others spin (PAUSE-loop exits, EXIT007) or wait. A guest that does not know it shares its CPUs cannot plan around that. Since Linux 5.16, KVM's recommended vCPU count (KVM_CAP_NR_VCPUS) is the host's online CPU count, meant as \"no CPU overcommit\", and QEMU prints a warning when a VM asks for more. Hot-pluggable vCPUs that are not online at start (libvirt's <vcpu current>) do not run and are not counted here, although QEMU's warning counts them too. The count is of logical CPUs, SMT siblings included: a VM may use them all, though PIN007 asks that the host keep a core.",
        example: "<vcpu>24</vcpu> on a host with 16 logical CPUs",
        fix: "at most as many vCPUs as the host has logical CPUs online, better a core fewer for the host (PIN007)",
        fix_safety: Applicability::Manual,
        source: "Linux commit da1bfd52b930 'KVM: x86: Drop arbitrary KVM_SOFT_MAX_VCPUS' (5.16; lore.kernel.org/r/20211116163443.88707-7-vkuznets@redhat.com: KVM_CAP_NR_VCPUS becomes num_online_cpus(), 'no CPU overcommit'); QEMU accel/kvm/kvm-all.c kvm_init (warns 'Number of SMP cpus requested ... exceeds the recommended cpus supported by KVM'); Red Hat Enterprise Linux 10, Configuring and managing Linux virtual machines, Optimizing virtual machine CPU performance, Virtual CPU overcommitment (docs.redhat.com)",
    },
};

fn vcpus_exceed_host_cpus(ctx: &RuleContext) -> Vec<Finding> {
    let Some(online) = ctx.host.and_then(|host| host.topology.online.known()) else { return Vec::new() };
    let Some(vcpus) = &ctx.config.vcpus else { return Vec::new() };
    let running = ctx.config.running_vcpus().len();
    if online.is_empty() || running <= online.len() {
        return Vec::new();
    }
    let count = match ctx.config.vcpus_enabled {
        Some(_) => format!("{running} of the {} vCPUs are online at start", vcpus.value),
        None => format!("{running} vCPUs"),
    };
    vec![
        Finding::new(
            Some(vcpus.span),
            format!(
                "{count}, on a host with {} logical CPUs online ({online}): they cannot all run at once, so they take turns, and a vCPU that is descheduled holds up the others that wait on it",
                online.len()
            ),
        )
        .with_fix(Fix::manual(format!(
            "give the VM at most {} vCPUs, and a core fewer to leave the host its own (PIN007)",
            online.len()
        ))),
    ]
}
