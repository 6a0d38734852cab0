//! Whether a host can give a guest one Hyper-V enlightenment. `tune` plans by this answer and
//! `check` recommends and objects by it, so the two agree.
//!
//! The kernel's part comes from KVM itself when `/dev/kvm` answered (`KVM_GET_SUPPORTED_HV_CPUID`),
//! else from the kernel release. QEMU's and libvirt's parts come from their releases whenever
//! those are known: KVM's answer says nothing about them.

use crate::host::HostFacts;
use crate::host::fact::Fact;
use crate::host::kvm::HypervSupport;
use crate::knowledge::hyperv::{Availability, Hv, availability};
use crate::values::Version;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// KVM lists it (and QEMU and libvirt, where known, are new enough).
    ByKvm,
    /// KVM was not asked; the kernel release has it (and QEMU and libvirt, where known).
    ByRelease,
    /// Nothing says either way.
    Assumed,
    /// A layer lacks it; the reason names the release needed.
    Lacking { layer: Layer, why: String },
}

/// Which part of the stack lacks an enlightenment, and so how sure the verdict is: KVM's own
/// answer is certain; a kernel release can be wrong by a distribution's backport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Kvm,
    KernelRelease,
    Qemu,
    Libvirt,
}

impl Offer {
    pub fn is_lacking(&self) -> bool {
        matches!(self, Offer::Lacking { .. })
    }

    fn lacking(layer: Layer, why: String) -> Self {
        Offer::Lacking { layer, why }
    }
}

/// The upstream release of the running kernel, from `uname -r` (`6.1.0-13-amd64`), where that
/// number says what KVM can do: not for RHEL-family kernels (`3.10.0-1160.el7`), which carry
/// KVM features from far later upstream releases (RHEL 7 runs Windows guests with SynIC and
/// synthetic timers on 3.10; the corpus snapshot 32intel64-2p8co2t+8ve is such a host).
pub fn kernel_version(host: &HostFacts) -> Option<Version> {
    let release = host.kernel.release.known()?;
    if is_backporting_distribution(release) {
        return None;
    }
    Version::find_in(release)
}

/// `.el7`, `.el8_4`, `.el9uek`: Red Hat Enterprise Linux and its rebuilds (CentOS, Rocky,
/// Alma, Oracle).
pub fn is_backporting_distribution(release: &str) -> bool {
    release.match_indices(".el").any(|(at, _)| release[at + 3..].starts_with(|c: char| c.is_ascii_digit()))
}

/// What KVM, the kernel release, QEMU and libvirt say about one enlightenment.
pub fn offer(host: &HostFacts, feature: Hv) -> Offer {
    let since = availability(feature);
    let kernel_part = match host.kvm.device.known().map(|d| &d.hyperv) {
        // hv-spinlocks is a value QEMU writes into a CPUID leaf; KVM has no bit for it.
        Some(HypervSupport::Supported { enlightenments, .. }) => {
            if feature == Hv::Spinlocks || enlightenments.iter().any(|e| e == feature.qemu()) {
                Offer::ByKvm
            } else {
                return Offer::lacking(
                    Layer::Kvm,
                    "this host's KVM does not offer it (KVM_GET_SUPPORTED_HV_CPUID)".to_string(),
                );
            }
        }
        Some(HypervSupport::NotSupported { evidence }) => {
            return Offer::lacking(
                Layer::Kvm,
                format!("this host's KVM has no Hyper-V emulation ({evidence})"),
            );
        }
        _ => match (kernel_version(host), since) {
            (Some(running), Some(since)) if running < since.linux => {
                return Offer::lacking(
                    Layer::KernelRelease,
                    format!(
                        "needs Linux {} or later ({}); this host runs {running}",
                        short(since.linux),
                        since.linux_source
                    ),
                );
            }
            (Some(_), Some(_)) => Offer::ByRelease,
            _ => Offer::Assumed,
        },
    };
    if let Some(lacking) = since.and_then(|since| userspace_lacks(host, since)) {
        return lacking;
    }
    kernel_part
}

fn userspace_lacks(host: &HostFacts, since: &Availability) -> Option<Offer> {
    if let Fact::Known(qemu) = &host.software.qemu
        && *qemu < since.qemu
    {
        return Some(Offer::lacking(
            Layer::Qemu,
            format!("QEMU knows {} since {}; this host has {qemu}", since.hv, short(since.qemu)),
        ));
    }
    if let (Fact::Known(libvirt), Some(needed)) = (&host.software.libvirt, since.libvirt)
        && *libvirt < needed
    {
        return Some(Offer::lacking(
            Layer::Libvirt,
            format!("libvirt has an element for {} since {needed}; this host has {libvirt}", since.hv),
        ));
    }
    None
}

/// `4.18` rather than `4.18.0`, as kernel and QEMU releases are usually named.
pub fn short(version: Version) -> String {
    if version.micro == 0 { format!("{}.{}", version.major, version.minor) } else { version.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rhel_family_kernels_are_told_apart() {
        for release in [
            "3.10.0-1160.15.2.el7.x86_64",
            "4.18.0-513.el8_9.x86_64",
            "5.14.0-427.el9.x86_64",
            "5.15.0-200.131.27.el9uek.x86_64",
        ] {
            assert!(is_backporting_distribution(release), "{release}");
        }
        for release in ["6.1.0-13-amd64", "5.15.0-91-generic", "6.18.44-fc-v657", "6.6.0-elfoo"] {
            assert!(!is_backporting_distribution(release), "{release}");
        }
    }
}
