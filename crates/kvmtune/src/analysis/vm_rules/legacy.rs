//! Old guests: Windows XP and Server 2003.

use super::prelude::*;

pub(super) const LEG001: VmRule = VmRule {
    check: tpr_patching_off,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "LEG001",
        name: "tpr-patching-off",
        category: Category::OldGuests,
        severity: Severity::Warning,
        title: "TPR patching off for a 32-bit Windows XP/2003 guest",
        explanation: "32-bit Windows XP and Server 2003 write the APIC task-priority register through MMIO thousands of times a second. Intel CPUs without FlexPriority (TPR shadow for MMIO) and without APICv exit on every write; QEMU's kvm-vapic patches those instructions in the guest to avoid the exits. Switching it off brings the exits back.",
        example: "-global kvm-apic.vapic=off for a 32-bit Windows XP guest on an Intel host without FlexPriority",
        fix: "remove the vapic=off override",
        fix_safety: Applicability::Manual,
        source: "QEMU hw/i386/kvmvapic.c; Linux arch/x86/kvm/vmx/vmx.c (TPR shadow, flexpriority; TPR_BELOW_THRESHOLD exits)",
    },
};

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
