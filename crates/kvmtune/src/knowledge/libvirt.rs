//! How libvirt domain XML spells what QEMU calls by other names.
//!
//! Source: libvirt docs/formatdomain.rst (the `<hyperv>` and `<kvm>` tables, "Time keeping")
//! and src/qemu/qemu_command.c (qemuBuildCpuCommandLine), summarised in ../shared/knowledge.md
//! sections 2a and 2b.

use crate::knowledge::hyperv::Hv;

/// `<features><hyperv>` child element -> QEMU `-cpu` property.
pub const HYPERV_ELEMENTS: &[(&str, Hv)] = &[
    ("relaxed", Hv::Relaxed),
    ("vapic", Hv::Vapic),
    ("spinlocks", Hv::Spinlocks),
    ("vpindex", Hv::Vpindex),
    ("runtime", Hv::Runtime),
    ("synic", Hv::Synic),
    ("stimer", Hv::Stimer),
    ("reset", Hv::Reset),
    ("vendor_id", Hv::VendorId),
    ("frequencies", Hv::Frequencies),
    ("reenlightenment", Hv::Reenlightenment),
    ("tlbflush", Hv::Tlbflush),
    ("ipi", Hv::Ipi),
    ("evmcs", Hv::Evmcs),
    ("avic", Hv::Avic),
    ("emsr_bitmap", Hv::EmsrBitmap),
    ("xmm_input", Hv::XmmInput),
];

/// Grandchildren: (parent element, child element) -> QEMU property.
pub const HYPERV_SUB_ELEMENTS: &[(&str, &str, Hv)] = &[
    ("stimer", "direct", Hv::StimerDirect),
    ("tlbflush", "direct", Hv::TlbflushDirect),
    ("tlbflush", "extended", Hv::TlbflushExt),
];

/// `<features><kvm>` children libvirt accepts.
pub const KVM_ELEMENTS: &[&str] = &["hidden", "hint-dedicated", "poll-control", "pv-ipi", "dirty-ring"];

/// `<clock><timer name>` values libvirt accepts.
pub const TIMER_NAMES: &[&str] =
    &["platform", "pit", "rtc", "hpet", "tsc", "kvmclock", "hypervclock", "armvtimer"];

/// The libvirt element for a QEMU Hyper-V property, if it is a `<hyperv>` child.
pub fn hyperv_element(hv: Hv) -> Option<&'static str> {
    HYPERV_ELEMENTS.iter().find(|(_, h)| *h == hv).map(|(element, _)| *element)
}
