//! What hardware virtualization in the guest CPU costs on a host: `check` (CPU007) objects by
//! this answer and `tune` plans by it, so the two agree.

use crate::host::HostFacts;
use crate::host::cpu::CpuVendor;
use crate::values::Version;

/// The kernels whose KVM switches AVIC off for a whole VM whose guest CPU has SVM: from the
/// commit that added the inhibition (Linux 5.6, 9a0bf0543069) to the one that limited it to a
/// vCPU while it runs a nested guest (Linux 5.19, f44509f849fe).
pub const SVM_INHIBITS_AVIC: (Version, Version) = (Version::new(5, 6, 0), Version::new(5, 19, 0));

/// A host whose KVM turns AVIC off for any VM whose guest CPU has SVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvmInhibitsAvic {
    /// The kernel release, as `uname -r` prints it.
    pub release: String,
    /// The parameter that lets guests have SVM, as `module/parameter=value`.
    pub nested: String,
}

/// On this host, does SVM in a guest CPU switch AVIC off for the whole VM? Only where every
/// part is known: an AMD CPU, AVIC on, kvm_amd's nested on, and an upstream kernel release in
/// [`SVM_INHIBITS_AVIC`] (not a RHEL-family one, which backports KVM).
pub fn svm_inhibits_avic(host: &HostFacts) -> Option<SvmInhibitsAvic> {
    if host.cpu.vendor.known() != Some(&CpuVendor::Amd) {
        return None;
    }
    if !host.kvm.apic_virtualization.known()?.enabled {
        return None;
    }
    let nested = host.kvm.nested_virtualization().filter(|n| n.offered)?;
    let kernel = crate::analysis::hyperv_support::kernel_version(host)?;
    let (from, fixed_in) = SVM_INHIBITS_AVIC;
    if kernel < from || kernel >= fixed_in {
        return None;
    }
    Some(SvmInhibitsAvic { release: host.kernel.release.known()?.clone(), nested: nested.evidence })
}
