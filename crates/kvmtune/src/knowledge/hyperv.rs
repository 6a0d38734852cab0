//! Hyper-V enlightenments: which CPUID bits in `KVM_GET_SUPPORTED_HV_CPUID` mean that KVM can
//! give a guest each one.
//!
//! Bit positions: ../shared/knowledge.md section 1a/4b (L-TLFS, Q-KVM `kvm_hyperv_properties[]`,
//! which QEMU itself checks against the same ioctl before it enables a feature).

use crate::sys::CpuidEntry;

/// A CPUID register in the Hyper-V leaf range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One bit of one Hyper-V leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidBit {
    pub leaf: u32,
    pub register: Register,
    pub bit: u8,
}

/// One enlightenment as QEMU names it, the libvirt element for it, and the bits KVM must report.
#[derive(Debug, Clone, Copy)]
pub struct Enlightenment {
    /// QEMU `-cpu` property (`hv-relaxed`).
    pub qemu: &'static str,
    /// libvirt spelling: a `<hyperv>` child, except hv-time which is `<timer name='hypervclock'>`.
    pub libvirt: &'static str,
    pub bits: &'static [CpuidBit],
    pub source: &'static str,
}

const FEATURES: u32 = 0x4000_0003;
const RECOMMENDATIONS: u32 = 0x4000_0004;
const NESTED: u32 = 0x4000_000A;

const fn bit(leaf: u32, register: Register, bit: u8) -> CpuidBit {
    CpuidBit { leaf, register, bit }
}

use Register::{Eax, Edx};

pub const ENLIGHTENMENTS: &[Enlightenment] = &[
    Enlightenment {
        qemu: "hv-relaxed",
        libvirt: "relaxed",
        bits: &[bit(RECOMMENDATIONS, Eax, 5)],
        source: "L-TLFS 4A.5; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-vapic",
        libvirt: "vapic",
        bits: &[bit(FEATURES, Eax, 4)],
        source: "L-TLFS 3A.4; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-vpindex",
        libvirt: "vpindex",
        bits: &[bit(FEATURES, Eax, 6)],
        source: "L-TLFS 3A.6; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-runtime",
        libvirt: "runtime",
        bits: &[bit(FEATURES, Eax, 0)],
        source: "L-TLFS 3A.0; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-crash",
        libvirt: "crash (as <panic model='hyperv'/>)",
        bits: &[bit(FEATURES, Edx, 10)],
        source: "L-TLFS 3D.10; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-time",
        libvirt: "timer hypervclock",
        bits: &[bit(FEATURES, Eax, 1), bit(FEATURES, Eax, 9)],
        source: "L-TLFS 3A.1 + 3A.9; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-synic",
        libvirt: "synic",
        bits: &[bit(FEATURES, Eax, 2)],
        source: "L-TLFS 3A.2; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-stimer",
        libvirt: "stimer",
        bits: &[bit(FEATURES, Eax, 3)],
        source: "L-TLFS 3A.3; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-stimer-direct",
        libvirt: "stimer/direct",
        bits: &[bit(FEATURES, Edx, 19)],
        source: "L-TLFS 3D.19; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-tlbflush",
        libvirt: "tlbflush",
        bits: &[bit(RECOMMENDATIONS, Eax, 2), bit(RECOMMENDATIONS, Eax, 11)],
        source: "L-TLFS 4A.2 + 4A.11; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-tlbflush-ext",
        libvirt: "tlbflush/extended",
        bits: &[bit(FEATURES, Edx, 14)],
        source: "L-TLFS 3D.14; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-tlbflush-direct",
        libvirt: "tlbflush/direct",
        bits: &[bit(NESTED, Eax, 17)],
        source: "L-TLFS AA.17; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-ipi",
        libvirt: "ipi",
        bits: &[bit(RECOMMENDATIONS, Eax, 10), bit(RECOMMENDATIONS, Eax, 11)],
        source: "L-TLFS 4A.10 + 4A.11; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-reset",
        libvirt: "reset",
        bits: &[bit(FEATURES, Eax, 7)],
        source: "L-TLFS 3A.7; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-frequencies",
        libvirt: "frequencies",
        bits: &[bit(FEATURES, Eax, 11), bit(FEATURES, Edx, 8)],
        source: "L-TLFS 3A.11 + 3D.8; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-reenlightenment",
        libvirt: "reenlightenment",
        bits: &[bit(FEATURES, Eax, 13)],
        source: "L-TLFS 3A.13; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-evmcs",
        libvirt: "evmcs",
        bits: &[bit(RECOMMENDATIONS, Eax, 14)],
        source: "L-TLFS 4A.14; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-emsr-bitmap",
        libvirt: "emsr_bitmap",
        bits: &[bit(NESTED, Eax, 19)],
        source: "L-TLFS AA.19; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-xmm-input",
        libvirt: "xmm_input",
        bits: &[bit(FEATURES, Edx, 4)],
        source: "L-TLFS 3D.4; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-avic",
        libvirt: "avic",
        bits: &[bit(RECOMMENDATIONS, Eax, 9)],
        source: "L-TLFS 4A.9; Q-KVM, Q-DOC",
    },
    Enlightenment {
        qemu: "hv-syndbg",
        libvirt: "(none)",
        bits: &[bit(FEATURES, Edx, 11)],
        source: "L-TLFS 3D.11; Q-KVM",
    },
    Enlightenment {
        qemu: "hv-no-nonarch-coresharing",
        libvirt: "(none)",
        bits: &[bit(RECOMMENDATIONS, Eax, 18)],
        source: "L-TLFS 4A.18; Q-KVM (KVM sets it only when SMT is impossible)",
    },
];

/// What QEMU enforces before it starts a guest: `(feature, requires)`. QEMU refuses to start
/// with "Hyper-V <feature> requires Hyper-V <dependency>" (Q-KVM `kvm_hyperv_properties[]`
/// `.dependencies` and the extra synic check in `kvm_hyperv_expand_features`; knowledge.md 1b).
/// What every Windows since Vista benefits from, hv-time aside (QEMU docs hyperv.rst recommend
/// all but the debug, nested-only and passthrough ones, and neither hv-reset nor hv-crash;
/// ../shared/knowledge.md 1a). `check` wants them (HV002); `tune` plans them.
pub const RECOMMENDED_FOR_WINDOWS: &[&str] = &[
    "hv-relaxed",
    "hv-vapic",
    "hv-spinlocks",
    "hv-vpindex",
    "hv-runtime",
    "hv-synic",
    "hv-stimer",
    "hv-frequencies",
    "hv-tlbflush",
    "hv-ipi",
];

pub const DEPENDENCIES: &[(&str, &[&str])] = &[
    ("hv-synic", &["hv-vpindex"]),
    ("hv-stimer", &["hv-synic", "hv-time"]),
    ("hv-stimer-direct", &["hv-stimer"]),
    ("hv-tlbflush", &["hv-vpindex"]),
    ("hv-tlbflush-ext", &["hv-tlbflush"]),
    ("hv-tlbflush-direct", &["hv-vapic"]),
    ("hv-ipi", &["hv-vpindex"]),
    ("hv-evmcs", &["hv-vapic"]),
    ("hv-syndbg", &["hv-synic", "hv-relaxed"]),
];

/// `features` plus everything they need, transitively, in a stable order.
pub fn closed_under_dependencies(features: &[&'static str]) -> Vec<&'static str> {
    let mut closed: Vec<&'static str> = Vec::new();
    let mut pending: Vec<&'static str> = features.to_vec();
    while let Some(feature) = pending.pop() {
        if closed.contains(&feature) {
            continue;
        }
        closed.push(feature);
        if let Some((_, requires)) = DEPENDENCIES.iter().find(|(f, _)| *f == feature) {
            pending.extend(requires.iter().copied());
        }
    }
    closed.sort_by_key(|name| ENLIGHTENMENTS.iter().position(|e| e.qemu == *name).unwrap_or(usize::MAX));
    closed
}

fn register_value(entries: &[CpuidEntry], leaf: u32, register: Register) -> Option<u32> {
    let entry = entries.iter().find(|e| e.function == leaf)?;
    Some(match register {
        Register::Eax => entry.eax,
        Register::Ebx => entry.ebx,
        Register::Ecx => entry.ecx,
        Register::Edx => entry.edx,
    })
}

/// The enlightenments whose every bit KVM reports, in table order.
pub fn supported(entries: &[CpuidEntry]) -> Vec<&'static Enlightenment> {
    ENLIGHTENMENTS
        .iter()
        .filter(|e| {
            e.bits
                .iter()
                .all(|b| register_value(entries, b.leaf, b.register).is_some_and(|v| v & (1 << b.bit) != 0))
        })
        .collect()
}

/// The 12-byte vendor signature in leaf 0x40000000 (`Linux KVM Hv` on KVM).
pub fn signature(entries: &[CpuidEntry]) -> Option<String> {
    let leaf = entries.iter().find(|e| e.function == 0x4000_0000)?;
    let bytes: Vec<u8> = [leaf.ebx, leaf.ecx, leaf.edx].iter().flat_map(|r| r.to_le_bytes()).collect();
    Some(String::from_utf8_lossy(&bytes).trim_end_matches('\0').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, eax: u32, ebx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry { function, index: 0, eax, ebx, ecx: 0, edx }
    }

    #[test]
    fn a_bit_alone_is_not_enough_when_two_are_needed() {
        // hv-time needs 3A.1 and 3A.9; hv-ipi needs 4A.10 and 4A.11.
        let only_time_count = [entry(FEATURES, 1 << 1, 0, 0), entry(RECOMMENDATIONS, 1 << 10, 0, 0)];
        let names: Vec<_> = supported(&only_time_count).iter().map(|e| e.qemu).collect();
        assert!(!names.contains(&"hv-time") && !names.contains(&"hv-ipi"));
    }

    #[test]
    fn dependency_closure_is_transitive() {
        assert_eq!(
            closed_under_dependencies(&["hv-stimer-direct"]),
            ["hv-vpindex", "hv-time", "hv-synic", "hv-stimer", "hv-stimer-direct"]
        );
        assert_eq!(closed_under_dependencies(&["hv-relaxed"]), ["hv-relaxed"]);
    }

    #[test]
    fn no_entries_means_nothing() {
        assert!(supported(&[]).is_empty());
        assert_eq!(signature(&[]), None);
    }

    #[test]
    fn every_enlightenment_has_a_source_and_distinct_name() {
        let mut names: Vec<_> = ENLIGHTENMENTS.iter().map(|e| e.qemu).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ENLIGHTENMENTS.len());
        assert!(ENLIGHTENMENTS.iter().all(|e| !e.source.is_empty() && !e.bits.is_empty()));
    }
}
