//! Hyper-V enlightenments: which CPUID bits in `KVM_GET_SUPPORTED_HV_CPUID` mean that KVM can
//! give a guest each one.
//!
//! Bit positions: ../shared/knowledge.md section 1a/4b (L-TLFS, Q-KVM `kvm_hyperv_properties[]`,
//! which QEMU itself checks against the same ioctl before it enables a feature).

use crate::knowledge::hyperv_cpuid::{HV_CPUID_BITS, HvCpuidBit, LEAF_VENDOR, Register, signature_of};
use crate::knowledge::kvm_api::CpuidEntry;
use crate::values::Version;

/// Declares [`Hv`] from one list: each variant beside the QEMU `-cpu` property it stands for.
macro_rules! hyperv_properties {
    ($($(#[$doc:meta])* $variant:ident = $qemu:literal,)*) => {
        /// A Hyper-V property of QEMU's x86 CPU (`hv-...`, target/i386/cpu.c `x86_cpu_properties`):
        /// the enlightenments of [`ENLIGHTENMENTS`] and the properties that carry a value or a mode.
        /// Code names an enlightenment by this type; text (configs, plans, messages) by
        /// [`Hv::qemu`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Hv {
            $($(#[$doc])* $variant,)*
        }

        impl Hv {
            pub const ALL: &'static [Hv] = &[$(Hv::$variant,)*];

            /// QEMU's name for it (`hv-relaxed`).
            pub const fn qemu(self) -> &'static str {
                match self {
                    $(Hv::$variant => $qemu,)*
                }
            }

            /// The property QEMU calls `name`, if kvmtune knows it.
            pub fn from_qemu(name: &str) -> Option<Hv> {
                match name {
                    $($qemu => Some(Hv::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

hyperv_properties! {
    Relaxed = "hv-relaxed",
    Vapic = "hv-vapic",
    /// Takes a retry count (`hv-spinlocks=0x1fff`).
    Spinlocks = "hv-spinlocks",
    Vpindex = "hv-vpindex",
    Runtime = "hv-runtime",
    Crash = "hv-crash",
    Time = "hv-time",
    Synic = "hv-synic",
    Stimer = "hv-stimer",
    StimerDirect = "hv-stimer-direct",
    Tlbflush = "hv-tlbflush",
    TlbflushExt = "hv-tlbflush-ext",
    TlbflushDirect = "hv-tlbflush-direct",
    Ipi = "hv-ipi",
    Reset = "hv-reset",
    Frequencies = "hv-frequencies",
    Reenlightenment = "hv-reenlightenment",
    Evmcs = "hv-evmcs",
    EmsrBitmap = "hv-emsr-bitmap",
    XmmInput = "hv-xmm-input",
    Avic = "hv-avic",
    Syndbg = "hv-syndbg",
    NoNonarchCoresharing = "hv-no-nonarch-coresharing",
    /// Takes a string of up to 12 bytes.
    VendorId = "hv-vendor-id",
    /// Every enlightenment this host's KVM offers (a mode, not one enlightenment).
    Passthrough = "hv-passthrough",
}

impl std::fmt::Display for Hv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.qemu())
    }
}

impl serde::Serialize for Hv {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.qemu())
    }
}

/// One enlightenment as QEMU names it, the libvirt element for it, and where its CPUID bits
/// are told ([`HV_CPUID_BITS`], the table the guest program decodes with too).
#[derive(Debug, Clone, Copy)]
pub struct Enlightenment {
    pub hv: Hv,
    /// libvirt spelling: a `<hyperv>` child, except hv-time which is `<timer name='hypervclock'>`.
    pub libvirt: &'static str,
    pub source: &'static str,
}

impl Enlightenment {
    /// The bits KVM must report for it and a guest sees when it is on.
    pub fn bits(&self) -> impl Iterator<Item = &'static HvCpuidBit> + '_ {
        HV_CPUID_BITS.iter().filter(move |b| b.qemu.contains(&self.hv.qemu()))
    }
}

pub const ENLIGHTENMENTS: &[Enlightenment] = &[
    Enlightenment { hv: Hv::Relaxed, libvirt: "relaxed", source: "L-TLFS 4A.5; Q-KVM" },
    Enlightenment { hv: Hv::Vapic, libvirt: "vapic", source: "L-TLFS 3A.4; Q-KVM" },
    Enlightenment { hv: Hv::Vpindex, libvirt: "vpindex", source: "L-TLFS 3A.6; Q-KVM" },
    Enlightenment { hv: Hv::Runtime, libvirt: "runtime", source: "L-TLFS 3A.0; Q-KVM" },
    Enlightenment {
        hv: Hv::Crash,
        libvirt: "crash (as <panic model='hyperv'/>)",
        source: "L-TLFS 3D.10; Q-KVM",
    },
    Enlightenment { hv: Hv::Time, libvirt: "timer hypervclock", source: "L-TLFS 3A.1 + 3A.9; Q-KVM" },
    Enlightenment { hv: Hv::Synic, libvirt: "synic", source: "L-TLFS 3A.2; Q-KVM" },
    Enlightenment { hv: Hv::Stimer, libvirt: "stimer", source: "L-TLFS 3A.3; Q-KVM" },
    Enlightenment { hv: Hv::StimerDirect, libvirt: "stimer/direct", source: "L-TLFS 3D.19; Q-KVM" },
    Enlightenment { hv: Hv::Tlbflush, libvirt: "tlbflush", source: "L-TLFS 4A.2 + 4A.11; Q-KVM" },
    Enlightenment { hv: Hv::TlbflushExt, libvirt: "tlbflush/extended", source: "L-TLFS 3D.14; Q-KVM" },
    Enlightenment { hv: Hv::TlbflushDirect, libvirt: "tlbflush/direct", source: "L-TLFS AA.17; Q-KVM" },
    Enlightenment { hv: Hv::Ipi, libvirt: "ipi", source: "L-TLFS 4A.10 + 4A.11; Q-KVM" },
    Enlightenment { hv: Hv::Reset, libvirt: "reset", source: "L-TLFS 3A.7; Q-KVM" },
    Enlightenment { hv: Hv::Frequencies, libvirt: "frequencies", source: "L-TLFS 3A.11 + 3D.8; Q-KVM" },
    Enlightenment { hv: Hv::Reenlightenment, libvirt: "reenlightenment", source: "L-TLFS 3A.13; Q-KVM" },
    Enlightenment { hv: Hv::Evmcs, libvirt: "evmcs", source: "L-TLFS 4A.14; Q-KVM" },
    Enlightenment { hv: Hv::EmsrBitmap, libvirt: "emsr_bitmap", source: "L-TLFS AA.19; Q-KVM" },
    Enlightenment { hv: Hv::XmmInput, libvirt: "xmm_input", source: "L-TLFS 3D.4; Q-KVM" },
    Enlightenment { hv: Hv::Avic, libvirt: "avic", source: "L-TLFS 4A.9; Q-KVM, Q-DOC" },
    Enlightenment { hv: Hv::Syndbg, libvirt: "(none)", source: "L-TLFS 3D.11; Q-KVM" },
    Enlightenment {
        hv: Hv::NoNonarchCoresharing,
        libvirt: "(none)",
        source: "L-TLFS 4A.18; Q-KVM (KVM sets it only when SMT is impossible)",
    },
];

/// What QEMU enforces before it starts a guest: `(feature, requires)`. QEMU refuses to start
/// with "Hyper-V <feature> requires Hyper-V <dependency>" (Q-KVM `kvm_hyperv_properties[]`
/// `.dependencies` and the extra synic check in `kvm_hyperv_expand_features`; knowledge.md 1b).
/// What every Windows since Vista benefits from, hv-time aside (QEMU docs hyperv.rst recommend
/// all but the debug, nested-only and passthrough ones, and neither hv-reset nor hv-crash;
/// ../shared/knowledge.md 1a). `check` wants them (HV002); `tune` plans them.
pub const RECOMMENDED_FOR_WINDOWS: &[Hv] = &[
    Hv::Relaxed,
    Hv::Vapic,
    Hv::Spinlocks,
    Hv::Vpindex,
    Hv::Runtime,
    Hv::Synic,
    Hv::Stimer,
    Hv::Frequencies,
    Hv::Tlbflush,
    Hv::Ipi,
];

pub const DEPENDENCIES: &[(Hv, &[Hv])] = &[
    (Hv::Synic, &[Hv::Vpindex]),
    (Hv::Stimer, &[Hv::Synic, Hv::Time]),
    (Hv::StimerDirect, &[Hv::Stimer]),
    (Hv::Tlbflush, &[Hv::Vpindex]),
    (Hv::TlbflushExt, &[Hv::Tlbflush]),
    (Hv::TlbflushDirect, &[Hv::Vapic]),
    (Hv::Ipi, &[Hv::Vpindex]),
    (Hv::Evmcs, &[Hv::Vapic]),
    (Hv::Syndbg, &[Hv::Synic, Hv::Relaxed]),
];

/// `features` plus everything they need, transitively, in a stable order.
pub fn closed_under_dependencies(features: &[Hv]) -> Vec<Hv> {
    let mut closed: Vec<Hv> = Vec::new();
    let mut pending: Vec<Hv> = features.to_vec();
    while let Some(feature) = pending.pop() {
        if closed.contains(&feature) {
            continue;
        }
        closed.push(feature);
        if let Some((_, requires)) = DEPENDENCIES.iter().find(|(f, _)| *f == feature) {
            pending.extend(requires.iter().copied());
        }
    }
    closed.sort_by_key(|hv| ENLIGHTENMENTS.iter().position(|e| e.hv == *hv).unwrap_or(usize::MAX));
    closed
}

fn register_value(entries: &[CpuidEntry], leaf: u32, register: Register) -> Option<u32> {
    let entry = entries.iter().find(|e| e.function == leaf)?;
    Some(register.of([entry.eax, entry.ebx, entry.ecx, entry.edx]))
}

/// The enlightenments whose every bit KVM reports, in table order.
pub fn supported(entries: &[CpuidEntry]) -> Vec<&'static Enlightenment> {
    ENLIGHTENMENTS
        .iter()
        .filter(|e| {
            e.bits()
                .all(|b| register_value(entries, b.leaf, b.register).is_some_and(|v| v & (1 << b.bit) != 0))
        })
        .collect()
}

/// The 12-byte vendor signature in leaf 0x40000000 (`Linux KVM Hv` on KVM).
pub fn signature(entries: &[CpuidEntry]) -> Option<String> {
    let leaf = entries.iter().find(|e| e.function == LEAF_VENDOR)?;
    Some(signature_of([leaf.eax, leaf.ebx, leaf.ecx, leaf.edx]))
}

/// Since which release of each layer an enlightenment exists: KVM must emulate it, QEMU must
/// know the `-cpu` property, libvirt the XML element. The planner and `check` go by these only
/// where `/dev/kvm` could not be asked (the kernel) or always (QEMU, libvirt: KVM's answer says
/// nothing about them).
///
/// QEMU and libvirt releases: ../shared/knowledge.md 1a and 2a (Q-DOC, LV-FD, LV-NEWS). Linux
/// releases: the commit or KVM pull that added the emulation; "(unverified)" marks a release
/// inferred from the capability's place in `include/uapi/linux/kvm.h` or from the patch date,
/// not read from a release.
#[derive(Debug, Clone, Copy)]
pub struct Availability {
    pub hv: Hv,
    pub linux: Version,
    pub qemu: Version,
    /// `None`: libvirt has no element for it, or its first release is not recorded here.
    pub libvirt: Option<Version>,
    pub linux_source: &'static str,
}

const fn since(
    hv: Hv,
    linux: (u32, u32),
    qemu: (u32, u32),
    libvirt: Option<(u32, u32, u32)>,
    linux_source: &'static str,
) -> Availability {
    Availability {
        hv,
        linux: Version::new(linux.0, linux.1, 0),
        qemu: Version::new(qemu.0, qemu.1, 0),
        libvirt: match libvirt {
            Some((major, minor, micro)) => Some(Version::new(major, minor, micro)),
            None => None,
        },
        linux_source,
    }
}

pub const AVAILABILITY: &[Availability] = &[
    since(Hv::Relaxed, (2, 6), (2, 0), Some((1, 0, 0)), "KVM_CAP_HYPERV, Linux 2.6.34 (unverified)"),
    since(
        Hv::Vapic,
        (2, 6),
        (2, 0),
        Some((1, 1, 0)),
        "commit 10388a07164c (APIC access MSRs), Linux 2.6.34 (unverified)",
    ),
    since(Hv::Spinlocks, (2, 6), (2, 0), Some((1, 1, 0)), "KVM_CAP_HYPERV_SPIN, Linux 2.6.34 (unverified)"),
    since(Hv::Time, (3, 14), (2, 0), Some((1, 2, 2)), "KVM_CAP_HYPERV_TIME, Linux 3.14 (unverified)"),
    since(Hv::Crash, (4, 2), (2, 5), None, "crash MSRs, Linux 4.2 (unverified)"),
    since(Hv::Reset, (4, 4), (2, 5), Some((1, 3, 3)), "reset MSR, Linux 4.4 (unverified)"),
    since(Hv::Runtime, (4, 4), (2, 5), Some((1, 3, 3)), "VP_RUNTIME MSR, Linux 4.4 (unverified)"),
    since(
        Hv::Synic,
        (4, 5),
        (2, 6),
        Some((1, 3, 3)),
        "commit 5c919412fe61 (SynIC), Linux 4.5 (unverified: the commit is in 4.9-based trees)",
    ),
    since(
        Hv::Stimer,
        (4, 5),
        (2, 6),
        Some((1, 3, 3)),
        "commit 1f4b34f825e8 (SynIC timers), Linux 4.5 (unverified: the commit is in 4.9-based trees)",
    ),
    since(Hv::Vpindex, (4, 13), (2, 5), Some((1, 3, 3)), "KVM_CAP_HYPERV_VP_INDEX, kvm-4.13-2 pull"),
    since(Hv::Frequencies, (4, 14), (2, 12), Some((4, 7, 0)), "kvm-4.14-1 pull (Hyper-V TSC frequency MSRs)"),
    since(
        Hv::Reenlightenment,
        (4, 17),
        (3, 0),
        Some((4, 7, 0)),
        "reenlightenment MSRs, Linux 4.17 (unverified)",
    ),
    since(
        Hv::Tlbflush,
        (4, 18),
        (3, 0),
        Some((4, 7, 0)),
        "KVM_CAP_HYPERV_TLBFLUSH, Linux 4.18 (Documentation/virt/kvm/api.rst)",
    ),
    since(
        Hv::Ipi,
        (4, 20),
        (3, 1),
        Some((4, 10, 0)),
        "KVM_CAP_HYPERV_SEND_IPI, Linux 4.20 (Documentation/virt/kvm/api.rst)",
    ),
    since(
        Hv::Evmcs,
        (4, 20),
        (3, 1),
        Some((4, 10, 0)),
        "KVM_CAP_HYPERV_ENLIGHTENED_VMCS, numbered after SEND_IPI (unverified)",
    ),
    since(
        Hv::StimerDirect,
        (5, 0),
        (4, 1),
        Some((5, 7, 0)),
        "commit 2bc39970e932: KVM_CAP_HYPERV_CPUID took its number, Linux 5.0",
    ),
    since(Hv::Syndbg, (5, 8), (7, 1), None, "synthetic debugger MSRs, Linux 5.8 (unverified)"),
    since(
        Hv::NoNonarchCoresharing,
        (5, 8),
        (5, 1),
        None,
        "NO_NONARCH_CORESHARING in kvm_get_hv_cpuid (unverified)",
    ),
    since(
        Hv::XmmInput,
        (5, 14),
        (7, 1),
        Some((10, 7, 0)),
        "XMM fast hypercall input, Linux 5.14 (unverified)",
    ),
    since(
        Hv::Avic,
        (5, 15),
        (6, 2),
        Some((8, 10, 0)),
        "commit 0f250a646382 (APICv inhibited only while AutoEOI is in use), Linux 5.15; in Debian's 5.10 sources kvm_hv_activate_synic inhibits APICv for any SynIC and kvm_get_hv_cpuid lists no DEPRECATING_AEOI, in its 6.1 sources both changed",
    ),
    since(
        Hv::EmsrBitmap,
        (5, 18),
        (7, 1),
        Some((10, 7, 0)),
        "enlightened MSR bitmap for L1, Linux 5.18 (unverified)",
    ),
    since(
        Hv::TlbflushExt,
        (6, 2),
        (7, 1),
        Some((11, 0, 0)),
        "L2 TLB flush series (v7 posted 2022-06), Linux 6.2 (unverified)",
    ),
    since(
        Hv::TlbflushDirect,
        (6, 2),
        (7, 1),
        Some((11, 0, 0)),
        "L2 TLB flush series (v7 posted 2022-06), Linux 6.2 (unverified)",
    ),
];

pub fn availability(hv: Hv) -> Option<&'static Availability> {
    AVAILABILITY.iter().find(|a| a.hv == hv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::hyperv_cpuid::{LEAF_FEATURES, LEAF_RECOMMENDATIONS};

    fn entry(function: u32, eax: u32, ebx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry { function, index: 0, eax, ebx, ecx: 0, edx }
    }

    #[test]
    fn a_bit_alone_is_not_enough_when_two_are_needed() {
        // hv-time needs 3A.1 and 3A.9; hv-ipi needs 4A.10 and 4A.11.
        let only_time_count =
            [entry(LEAF_FEATURES, 1 << 1, 0, 0), entry(LEAF_RECOMMENDATIONS, 1 << 10, 0, 0)];
        let names: Vec<_> = supported(&only_time_count).iter().map(|e| e.hv).collect();
        assert!(!names.contains(&Hv::Time) && !names.contains(&Hv::Ipi));
    }

    #[test]
    fn dependency_closure_is_transitive() {
        assert_eq!(
            closed_under_dependencies(&[Hv::StimerDirect]),
            [Hv::Vpindex, Hv::Time, Hv::Synic, Hv::Stimer, Hv::StimerDirect]
        );
        assert_eq!(closed_under_dependencies(&[Hv::Relaxed]), [Hv::Relaxed]);
    }

    #[test]
    fn each_property_reads_back_from_its_qemu_name() {
        for hv in Hv::ALL {
            assert_eq!(Hv::from_qemu(hv.qemu()), Some(*hv));
        }
        assert_eq!(Hv::from_qemu("hv-nonesuch"), None);
    }

    #[test]
    fn no_entries_means_nothing() {
        assert!(supported(&[]).is_empty());
        assert_eq!(signature(&[]), None);
    }

    #[test]
    fn every_enlightenment_has_a_source_and_distinct_name() {
        let mut names: Vec<_> = ENLIGHTENMENTS.iter().map(|e| e.hv).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ENLIGHTENMENTS.len());
        assert!(ENLIGHTENMENTS.iter().all(|e| !e.source.is_empty() && e.bits().next().is_some()));
    }

    #[test]
    fn every_enlightenment_has_its_releases() {
        for name in ENLIGHTENMENTS.iter().map(|e| e.hv).chain(RECOMMENDED_FOR_WINDOWS.iter().copied()) {
            let entry = availability(name).unwrap_or_else(|| panic!("{name} has no availability entry"));
            assert!(!entry.linux_source.is_empty());
        }
    }

    #[test]
    fn no_feature_is_older_in_qemu_or_libvirt_than_what_it_requires() {
        for (feature, requires) in DEPENDENCIES {
            let feature = availability(*feature).unwrap();
            for required in requires.iter().map(|r| availability(*r).unwrap()) {
                assert!(feature.qemu >= required.qemu, "{} before {}", feature.hv, required.hv);
                if let (Some(a), Some(b)) = (feature.libvirt, required.libvirt) {
                    assert!(a >= b, "{} before {} in libvirt", feature.hv, required.hv);
                }
            }
        }
    }
}
