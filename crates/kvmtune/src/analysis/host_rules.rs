//! Host rules: facts about a host that hurt Windows guests, each one declaration in
//! [`HOST_RULES`] with its id, explanation and source. `kvmtune probe` prints what they find.

use serde::Serialize;

use crate::analysis::Severity;
use crate::analysis::fix::Applicability;
use crate::analysis::meta::{Category, RuleMeta};
use crate::host::HostFacts;
use crate::host::fact::Fact;
use crate::host::kvm::HypervSupport;
use crate::hostchange::HostAction;
use crate::knowledge::recommended;

/// One rule. `check` returns the specific message for this host, or `None` when the rule
/// does not apply.
#[derive(Debug)]
pub struct HostRule {
    pub meta: RuleMeta,
    pub check: fn(&HostFacts) -> Option<String>,
    /// The host changes that fix what `check` found, where they are file writes kvmtune can
    /// make (`kvmtune host` applies them); `None` where the fix is a step outside kvmtune.
    pub actions: Option<fn(&HostFacts) -> Vec<HostAction>>,
}

/// What a host rule found on one host: the rule's own description (its id, title, explanation,
/// fix and source, as `explain` prints them) and the specifics here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFinding {
    #[serde(flatten)]
    pub rule: &'static RuleMeta,
    pub message: String,
    /// The same fix as host changes, where kvmtune can make it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<HostAction>,
}

pub const HOST_RULES: &[HostRule] = &[
    HostRule {
        meta: RuleMeta {
            id: "HOST001",
            name: "tsc-not-trustworthy",
            category: Category::Host,
            severity: Severity::Warning,
            title: "the host clock is not a stable TSC",
            explanation: "KVM gives guests a stable kvmclock and Hyper-V reference TSC page only while the host \
                          itself runs on an invariant TSC. Otherwise Windows falls back to clock reads that exit \
                          (reference counter MSR, HPET, ACPI PM timer), each costing microseconds instead of nanoseconds.",
            example: "current_clocksource is hpet: the kernel marked the TSC unstable",
            fix: "run the host on an invariant TSC: no tsc=unstable or clocksource= override, and firmware that keeps the TSCs in sync",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/x86.c (master clock needs a TSC host clocksource); \
                     Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers)",
        },
        check: |facts| {
            let verdict = facts.time.tsc.known()?;
            (!verdict.trustworthy).then(|| verdict.reasons.join("; "))
        },
        actions: None,
    },
    HostRule {
        meta: RuleMeta {
            id: "HOST002",
            name: "apic-virtualization-off",
            category: Category::Host,
            severity: Severity::Warning,
            title: "APICv/AVIC is switched off in KVM",
            explanation: "Without APIC virtualization every interrupt acknowledgement, EOI and IPI of the guest \
                          is a VM exit. Windows sends many IPIs (TLB shootdowns, DPCs), so exits per second climb \
                          with vCPU count. hv-vapic and hv-ipi soften it; turning APICv/AVIC on removes it.",
            example: "kvm_intel loaded with enable_apicv=N (or kvm_amd with avic=0)",
            fix: "load kvm_intel with enable_apicv=1 (kvm_amd with avic=1) on hardware that has it, for example as an option in /etc/modprobe.d",
            fix_safety: Applicability::Manual,
            source: "QEMU docs/system/i386/hyperv.rst (hv-avic); Linux kvm_intel enable_apicv / kvm_amd avic \
                     (arch/x86/kvm/vmx/vmx.c, arch/x86/kvm/svm/svm.c)",
        },
        check: |facts| {
            let apic = facts.kvm.apic_virtualization.known()?;
            (!apic.enabled).then(|| format!("{} is off ({})", apic.kind, apic.evidence))
        },
        actions: None,
    },
    HostRule {
        meta: RuleMeta {
            id: "HOST003",
            name: "kvm-device-unusable",
            category: Category::Host,
            severity: Severity::Warning,
            title: "/dev/kvm is missing or unusable",
            explanation: "Without /dev/kvm QEMU runs guests under TCG emulation, orders of magnitude slower; \
                          no tuning helps.",
            example: "no /dev/kvm: kvm_intel/kvm_amd not loaded, or virtualization off in firmware",
            fix: "enable VT-x/AMD-V in firmware, load kvm_intel or kvm_amd, and give the user running QEMU access to /dev/kvm",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/virt/kvm/api.rst (KVM_GET_API_VERSION must return 12)",
        },
        check: |facts| {
            let device = facts.kvm.device.known()?;
            match (&device.present, &device.usable) {
                (false, _) => Some("/dev/kvm does not exist".to_string()),
                (true, Fact::Known(false)) => {
                    Some(format!("/dev/kvm answered API version {:?}", device.api_version))
                }
                (true, Fact::Unknown(reason)) => Some(reason.clone()),
                (true, Fact::Known(true)) => None,
            }
        },
        actions: None,
    },
    HostRule {
        meta: RuleMeta {
            id: "HOST004",
            name: "no-kvm-hyperv",
            category: Category::Host,
            severity: Severity::Warning,
            title: "this kernel's KVM has no Hyper-V emulation",
            explanation: "Every hv-* enlightenment is unavailable: QEMU refuses them (\"not supported by kernel\") \
                          or the guest cannot use them. Windows then keeps its emulated timers (HPET, RTC, ACPI PM), \
                          its APIC traps and its native spinlocks, the slow paths the enlightenments exist to avoid.",
            example: "KVM_GET_SUPPORTED_HV_CPUID fails with EINVAL: a kernel without CONFIG_KVM_HYPERV",
            fix: "run a kernel built with CONFIG_KVM_HYPERV (distribution kernels are)",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/hyperv.c (CONFIG_KVM_HYPERV); QEMU target/i386/kvm/kvm.c; \
                     Linux Documentation/virt/kvm/api.rst (KVM_GET_SUPPORTED_HV_CPUID)",
        },
        check: |facts| match &facts.kvm.device.known()?.hyperv {
            HypervSupport::NotSupported { evidence } => Some(evidence.clone()),
            _ => None,
        },
        actions: None,
    },
    HostRule {
        meta: RuleMeta {
            id: "HOST005",
            name: "nested-host",
            category: Category::Host,
            severity: Severity::Info,
            title: "this host is itself a virtual machine",
            explanation: "Nested KVM depends on what the outer hypervisor passes down: Hyper-V emulation, APICv, \
                          and fast paths may be missing, and measured numbers do not carry over to bare metal.",
            example: "`hypervisor` among the CPU flags in /proc/cpuinfo",
            fix: "measure on bare metal before trusting the numbers, or ask the outer hypervisor to pass Hyper-V, APICv and nested paging down",
            fix_safety: Applicability::Manual,
            source: "CPUID.1:ECX[31] (the `hypervisor` flag), Intel SDM / AMD APM",
        },
        check: |facts| {
            facts.cpu.has_flag("hypervisor").then(|| "the CPU reports the `hypervisor` flag".to_string())
        },
        actions: None,
    },
    HostRule {
        meta: RuleMeta {
            id: "HOST006",
            name: "irqbalance-running",
            category: Category::Host,
            severity: Severity::Info,
            title: "irqbalance is running",
            explanation: "irqbalance moves device interrupts across all CPUs, including those later given to \
                          vCPUs, and each one that lands there is an EXTERNAL_INTERRUPT exit and a stutter. \
                          Isolation bans vCPU cores from it or stops it while the VM runs.",
            example: "an irqbalance process is running",
            fix: "`kvmtune host prepare --cpus <the VM's CPUs> --apply` bans them in irqbalance through its socket and moves \
                  IRQs off them while the VM runs (`kvmtune host release` undoes both); or start irqbalance with \
                  IRQBALANCE_BANNED_CPULIST, or stop it",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/core-api/irq/irq-affinity.rst; irqbalance(1) (IRQBALANCE_BANNED_CPULIST); \
                     tuned's cpu-partitioning profile (github.com/redhat-performance/tuned, profiles/cpu-partitioning)",
        },
        check: |facts| {
            facts
                .host_state
                .irqbalance_running
                .known()?
                .then(|| "an irqbalance process is running".to_string())
        },
        actions: None,
    },
    HostRule {
        meta: RuleMeta {
            id: "HOST007",
            name: "power-saving-governor",
            category: Category::Host,
            severity: Severity::Info,
            title: "CPUs run a power-saving cpufreq governor",
            explanation: "A vCPU that wakes on a slow-clocked core runs its first milliseconds slowly; for gaming \
                          and latency-bound desktops that shows as frame-time spikes. The `performance` governor \
                          while the VM runs avoids the ramp-up.",
            example: "scaling_governor is powersave on CPUs 0-15",
            fix: "`kvmtune host prepare --cpus <the VM's CPUs> --governor performance --apply` switches their cpufreq \
                  policies while the VM runs; `kvmtune host release` puts the governor back",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/admin-guide/pm/cpufreq.rst (scaling governors); tuned's virtual-host profile (github.com/redhat-performance/tuned)",
        },
        check: |facts| {
            let governors = facts.host_state.cpufreq_governors.known()?;
            let slow: Vec<String> = governors
                .iter()
                .filter(|(name, _)| recommended::SLOW_GOVERNORS.contains(&name.as_str()))
                .map(|(name, cpus)| format!("{name} on CPUs {cpus}"))
                .collect();
            (!slow.is_empty()).then(|| slow.join(", "))
        },
        actions: Some(|facts| {
            let Some(governors) = facts.host_state.cpufreq_governors.known() else { return Vec::new() };
            governors
                .iter()
                .filter(|(name, _)| recommended::SLOW_GOVERNORS.contains(&name.as_str()))
                .flat_map(|(name, cpus)| {
                    cpus.iter().map(move |cpu| {
                        HostAction::set_governor(cpu, Some(name), crate::knowledge::recommended::GOVERNOR)
                    })
                })
                .collect()
        }),
    },
    HostRule {
        meta: RuleMeta {
            id: "HOST008",
            name: "iommu-off-with-gpu",
            category: Category::Host,
            severity: Severity::Info,
            title: "the IOMMU is off, so no GPU can be passed through",
            explanation: "VFIO needs IOMMU groups. Enable VT-d/AMD-Vi in firmware and, on Intel, boot with \
                          intel_iommu=on.",
            example: "a GPU in lspci and /sys/kernel/iommu_groups empty",
            fix: "enable VT-d/AMD-Vi in firmware and, on Intel, boot with intel_iommu=on",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/driver-api/vfio.rst",
        },
        check: |facts| {
            let gpus = facts.gpus();
            (facts.iommu.enabled == Fact::Known(false) && !gpus.is_empty())
                .then(|| format!("{} GPU(s) present, no IOMMU groups", gpus.len()))
        },
        actions: None,
    },
];

pub fn evaluate(facts: &HostFacts) -> Vec<HostFinding> {
    HOST_RULES
        .iter()
        .filter_map(|rule| {
            (rule.check)(facts).map(|message| HostFinding {
                rule: &rule.meta,
                message,
                actions: rule.actions.map_or_else(Vec::new, |actions| actions(facts)),
            })
        })
        .collect()
}
