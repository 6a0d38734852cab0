//! Host rules: facts about a host that hurt Windows guests, each one declaration in
//! [`HOST_RULES`] with its id, explanation and source. `kvmtune probe` prints what they find.

use serde::Serialize;

pub use crate::analysis::Severity;

use crate::host::HostFacts;
use crate::host::fact::Fact;
use crate::host::kvm::HypervSupport;

/// One rule. `check` returns the specific message for this host, or `None` when the rule
/// does not apply.
pub struct HostRule {
    /// Stable id; never reused for another rule.
    pub id: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    /// What it does to a Windows guest, and why.
    pub explanation: &'static str,
    pub source: &'static str,
    pub check: fn(&HostFacts) -> Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFinding {
    pub id: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub message: String,
    pub explanation: &'static str,
    pub source: &'static str,
}

pub const HOST_RULES: &[HostRule] = &[
    HostRule {
        id: "HOST001",
        name: "tsc-not-trustworthy",
        severity: Severity::Warning,
        title: "the host clock is not a stable TSC",
        explanation: "KVM gives guests a stable kvmclock and Hyper-V reference TSC page only while the host \
                      itself runs on an invariant TSC. Otherwise Windows falls back to clock reads that exit \
                      (reference counter MSR, HPET, ACPI PM timer), each costing microseconds instead of nanoseconds.",
        source: "Linux arch/x86/kvm/x86.c (master clock needs a TSC host clocksource); MS-TLFS timers; \
                 ../shared/knowledge.md section 5",
        check: |facts| {
            let verdict = facts.time.tsc.known()?;
            (!verdict.trustworthy).then(|| verdict.reasons.join("; "))
        },
    },
    HostRule {
        id: "HOST002",
        name: "apic-virtualization-off",
        severity: Severity::Warning,
        title: "APICv/AVIC is switched off in KVM",
        explanation: "Without APIC virtualization every interrupt acknowledgement, EOI and IPI of the guest \
                      is a VM exit. Windows sends many IPIs (TLB shootdowns, DPCs), so exits per second climb \
                      with vCPU count. hv-vapic and hv-ipi soften it; turning APICv/AVIC on removes it.",
        source: "QEMU docs/system/i386/hyperv.rst (hv-avic); Linux kvm_intel enable_apicv / kvm_amd avic \
                 (../shared/knowledge.md 4c)",
        check: |facts| {
            let apic = facts.kvm.apic_virtualization.known()?;
            (!apic.enabled).then(|| format!("{} is off ({})", apic.kind, apic.evidence))
        },
    },
    HostRule {
        id: "HOST003",
        name: "kvm-device-unusable",
        severity: Severity::Warning,
        title: "/dev/kvm is missing or unusable",
        explanation: "Without /dev/kvm QEMU runs guests under TCG emulation, orders of magnitude slower; \
                      no tuning helps.",
        source: "Linux Documentation/virt/kvm/api.rst (KVM_GET_API_VERSION must return 12)",
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
    },
    HostRule {
        id: "HOST004",
        name: "no-kvm-hyperv",
        severity: Severity::Warning,
        title: "this kernel's KVM has no Hyper-V emulation",
        explanation: "Every hv-* enlightenment is unavailable: QEMU refuses them (\"not supported by kernel\") \
                      or the guest cannot use them. Windows then keeps its emulated timers (HPET, RTC, ACPI PM), \
                      its APIC traps and its native spinlocks, the slow paths the enlightenments exist to avoid.",
        source: "Linux arch/x86/kvm/hyperv.c (CONFIG_KVM_HYPERV); QEMU target/i386/kvm/kvm.c; \
                 ../shared/knowledge.md 4a",
        check: |facts| match &facts.kvm.device.known()?.hyperv {
            HypervSupport::NotSupported { evidence } => Some(evidence.clone()),
            _ => None,
        },
    },
    HostRule {
        id: "HOST005",
        name: "nested-host",
        severity: Severity::Info,
        title: "this host is itself a virtual machine",
        explanation: "Nested KVM depends on what the outer hypervisor passes down: Hyper-V emulation, APICv, \
                      and fast paths may be missing, and measured numbers do not carry over to bare metal.",
        source: "CPUID.1:ECX[31] (the `hypervisor` flag), Intel SDM / AMD APM",
        check: |facts| {
            facts.cpu.has_flag("hypervisor").then(|| "the CPU reports the `hypervisor` flag".to_string())
        },
    },
    HostRule {
        id: "HOST006",
        name: "irqbalance-running",
        severity: Severity::Info,
        title: "irqbalance is running",
        explanation: "irqbalance moves device interrupts across all CPUs, including those later given to \
                      vCPUs, and each one that lands there is an EXTERNAL_INTERRUPT exit and a stutter. \
                      Isolation bans vCPU cores from it or stops it while the VM runs.",
        source: "../shared/knowledge.md 6b (EXTERNAL_INTERRUPT); tuned cpu-partitioning profile \
                 (../shared/landscape.md)",
        check: |facts| {
            facts
                .host_state
                .irqbalance_running
                .known()?
                .then(|| "an irqbalance process is running".to_string())
        },
    },
    HostRule {
        id: "HOST007",
        name: "power-saving-governor",
        severity: Severity::Info,
        title: "CPUs run a power-saving cpufreq governor",
        explanation: "A vCPU that wakes on a slow-clocked core runs its first milliseconds slowly; for gaming \
                      and latency-bound desktops that shows as frame-time spikes. The `performance` governor \
                      while the VM runs avoids the ramp-up.",
        source: "tuned virtual-host / throughput-performance profiles (../shared/landscape.md)",
        check: |facts| {
            let governors = facts.host_state.cpufreq_governors.known()?;
            let slow: Vec<String> = governors
                .iter()
                .filter(|(name, _)| matches!(name.as_str(), "powersave" | "ondemand" | "conservative"))
                .map(|(name, cpus)| format!("{name} on CPUs {cpus}"))
                .collect();
            (!slow.is_empty()).then(|| slow.join(", "))
        },
    },
    HostRule {
        id: "HOST008",
        name: "iommu-off-with-gpu",
        severity: Severity::Info,
        title: "the IOMMU is off, so no GPU can be passed through",
        explanation: "VFIO needs IOMMU groups. Enable VT-d/AMD-Vi in firmware and, on Intel, boot with \
                      intel_iommu=on.",
        source: "Linux Documentation/driver-api/vfio.rst",
        check: |facts| {
            let gpus = facts.gpus();
            (facts.iommu.enabled == Fact::Known(false) && !gpus.is_empty())
                .then(|| format!("{} GPU(s) present, no IOMMU groups", gpus.len()))
        },
    },
];

pub fn evaluate(facts: &HostFacts) -> Vec<HostFinding> {
    HOST_RULES
        .iter()
        .filter_map(|rule| {
            (rule.check)(facts).map(|message| HostFinding {
                id: rule.id,
                name: rule.name,
                severity: rule.severity,
                title: rule.title,
                message,
                explanation: rule.explanation,
                source: rule.source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique_and_documented() {
        let mut ids: Vec<_> = HOST_RULES.iter().map(|r| r.id).collect();
        let mut names: Vec<_> = HOST_RULES.iter().map(|r| r.name).collect();
        ids.sort_unstable();
        ids.dedup();
        names.sort_unstable();
        names.dedup();
        assert_eq!(ids.len(), HOST_RULES.len());
        assert_eq!(names.len(), HOST_RULES.len());
        assert!(HOST_RULES.iter().all(|r| !r.explanation.is_empty() && !r.source.is_empty()));
    }
}
