//! What makes KVM switch AVIC off for a whole VM on a given host, where the VM's config can
//! avoid it: `check` objects by these answers (CPU007, CPU008, TIME007) and `tune` plans by
//! them, so the two agree. SynIC's AutoEOI, the other such cause, is HV008's and the planner's
//! hv-avic. Also here: which APIC registers AVIC virtualizes at all (HV013 and VER012 read it).

use crate::config::model::WindowsVersion;
use crate::host::HostFacts;
use crate::host::cpu::CpuVendor;
use crate::knowledge::recommended;
use crate::values::Version;

/// The kernels whose KVM switches AVIC off for a whole VM whose guest CPU has SVM: from the
/// commit that added the inhibition (Linux 5.6, 9a0bf0543069) to the one that limited it to a
/// vCPU while it runs a nested guest (Linux 5.19, f44509f849fe).
pub const SVM_INHIBITS_AVIC: (Version, Version) = (Version::new(5, 6, 0), Version::new(5, 19, 0));

/// The kernels whose KVM switches AVIC off for a whole VM whose guest CPU has x2APIC: from Oliver
/// Upton's "KVM: SVM: Inhibit APIC virtualization for X2APIC guest" (Linux 5.7; before it KVM
/// hid x2APIC from every guest while AVIC was on) to the x2AVIC series' "KVM: SVM: Introduce
/// hybrid-AVIC mode" (Linux 6.0), after which AVIC keeps delivering interrupts to a vCPU in
/// x2APIC mode while KVM emulates its x2APIC registers. Read in Debian's 5.10 sources
/// (svm_vcpu_after_set_cpuid sets APICV_INHIBIT_REASON_X2APIC; avic_init_vcpu refuses vCPU IDs
/// from 255, so no such VM needs x2APIC) and 6.1 sources (no such inhibition).
pub const X2APIC_INHIBITS_AVIC: (Version, Version) = (Version::new(5, 7, 0), Version::new(6, 0, 0));

/// The kernel that made AVIC work with KVM's in-kernel irqchip, and with it inhibit AVIC while
/// the in-kernel PIT reinjects missed ticks (the series with "kvm: i8254: Deactivate APICv when
/// using in-kernel PIT re-injection mode", Linux 5.6). Before it AVIC needed a split irqchip,
/// which has no in-kernel PIT. No kernel has ended it: Debian's 7.2.11 sources still inhibit
/// AVIC in kvm_pit_set_reinject, so the rule has no upper bound.
pub const PIT_REINJECTION_INHIBITS_AVIC_SINCE: Version = Version::new(5, 6, 0);

/// A host whose kernel switches AVIC off for any VM whose guest CPU has a given feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInhibitsAvic {
    /// The kernel release, as `uname -r` prints it.
    pub release: String,
    /// The module parameter that makes the inhibition apply, as `module/parameter=value`:
    /// kvm_amd's `nested` for SVM, its `avic` for x2APIC.
    pub evidence: String,
}

/// AVIC is on: an AMD host whose kvm_amd has it switched on. The evidence, as
/// `module/parameter=value`.
fn avic_on(host: &HostFacts) -> Option<&str> {
    if host.cpu.vendor.known() != Some(&CpuVendor::Amd) {
        return None;
    }
    let apic = host.kvm.apic_virtualization.known().filter(|a| a.enabled)?;
    Some(apic.evidence.as_str())
}

/// On this host, does SVM in a guest CPU switch AVIC off for the whole VM? Only where every
/// part is known: an AMD CPU, AVIC on, kvm_amd's nested on, and an upstream kernel release in
/// [`SVM_INHIBITS_AVIC`] (not a RHEL-family one, which backports KVM).
pub fn svm_inhibits_avic(host: &HostFacts) -> Option<KernelInhibitsAvic> {
    avic_on(host)?;
    let nested = host.kvm.nested_virtualization().filter(|n| n.offered)?;
    let kernel = crate::analysis::hyperv_support::kernel_version(host)?;
    let (from, fixed_in) = SVM_INHIBITS_AVIC;
    if kernel < from || kernel >= fixed_in {
        return None;
    }
    Some(KernelInhibitsAvic { release: host.kernel.release.known()?.clone(), evidence: nested.evidence })
}

/// On this host, does x2APIC in a guest CPU switch AVIC off for the whole VM? Only where every
/// part is known: an AMD CPU, AVIC on, and an upstream kernel release in
/// [`X2APIC_INHIBITS_AVIC`].
pub fn x2apic_inhibits_avic(host: &HostFacts) -> Option<KernelInhibitsAvic> {
    let evidence = avic_on(host)?;
    let kernel = crate::analysis::hyperv_support::kernel_version(host)?;
    let (from, fixed_in) = X2APIC_INHIBITS_AVIC;
    if kernel < from || kernel >= fixed_in {
        return None;
    }
    Some(KernelInhibitsAvic { release: host.kernel.release.known()?.clone(), evidence: evidence.to_string() })
}

/// On this host, does an in-kernel PIT that reinjects missed ticks (QEMU's and KVM's default,
/// libvirt's `delay` and `catchup`) switch AVIC off for the whole VM? Where AVIC is on, unless
/// the kernel is known to predate [`PIT_REINJECTION_INHIBITS_AVIC_SINCE`]. The answer is the
/// evidence that AVIC is on.
pub fn pit_reinjection_inhibits_avic(host: &HostFacts) -> Option<String> {
    let evidence = avic_on(host)?;
    let kernel = crate::analysis::hyperv_support::kernel_version(host);
    if kernel.is_some_and(|k| k < PIT_REINJECTION_INHIBITS_AVIC_SINCE) {
        return None;
    }
    Some(evidence.to_string())
}

/// Does this host's APIC virtualization take a guest's x2APIC register accesses? Intel's APICv
/// does (its MSR bitmap passes the x2APIC registers through), and AMD's AVIC only with x2AVIC
/// (Zen 4 and later): before it KVM emulates an x2APIC guest's registers, since Linux 6.0 while
/// AVIC stays on for the rest ("KVM: SVM: Introduce hybrid-AVIC mode", 0e311d33bfbe). Where it
/// does not, only a guest kept in xAPIC mode gains from AVIC at its EOIs (HV013, VER012).
pub fn virtualizes_x2apic(host: &HostFacts) -> bool {
    host.cpu.vendor.known() != Some(&CpuVendor::Amd) || host.cpu.has_flag("x2avic")
}

/// Windows XP and 2003 keep time by counting timer ticks, so a dropped tick slows their clock:
/// for them the PIT keeps reinjecting, AVIC or not (Linux Documentation/virt/kvm/x86/
/// timekeeping.rst, on guests that count interrupts).
pub fn guest_counts_ticks(windows: Option<WindowsVersion>) -> bool {
    windows == Some(WindowsVersion::Xp)
}

/// The PIT tick policy for a VM on `host`: [`recommended::PIT_TICKPOLICY`], or
/// [`recommended::PIT_TICKPOLICY_WITH_AVIC`] where reinjection would switch AVIC off and the
/// guest does not count ticks.
pub fn pit_tickpolicy(host: Option<&HostFacts>, windows: Option<WindowsVersion>) -> &'static str {
    match host.and_then(pit_reinjection_inhibits_avic) {
        Some(_) if !guest_counts_ticks(windows) => recommended::PIT_TICKPOLICY_WITH_AVIC,
        _ => recommended::PIT_TICKPOLICY,
    }
}
