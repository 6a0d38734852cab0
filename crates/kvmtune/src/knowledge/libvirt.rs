//! How libvirt domain XML spells what QEMU calls by other names.
//!
//! Source: libvirt docs/formatdomain.rst (the `<hyperv>` and `<kvm>` tables, "Time keeping")
//! and src/qemu/qemu_command.c (qemuBuildCpuCommandLine), summarised in ../shared/knowledge.md
//! sections 2a and 2b.

/// `<features><hyperv>` child element -> QEMU `-cpu` property.
pub const HYPERV_ELEMENTS: &[(&str, &str)] = &[
    ("relaxed", "hv-relaxed"),
    ("vapic", "hv-vapic"),
    ("spinlocks", "hv-spinlocks"),
    ("vpindex", "hv-vpindex"),
    ("runtime", "hv-runtime"),
    ("synic", "hv-synic"),
    ("stimer", "hv-stimer"),
    ("reset", "hv-reset"),
    ("vendor_id", "hv-vendor-id"),
    ("frequencies", "hv-frequencies"),
    ("reenlightenment", "hv-reenlightenment"),
    ("tlbflush", "hv-tlbflush"),
    ("ipi", "hv-ipi"),
    ("evmcs", "hv-evmcs"),
    ("avic", "hv-avic"),
    ("emsr_bitmap", "hv-emsr-bitmap"),
    ("xmm_input", "hv-xmm-input"),
];

/// Grandchildren: (parent element, child element) -> QEMU property.
pub const HYPERV_SUB_ELEMENTS: &[(&str, &str, &str)] = &[
    ("stimer", "direct", "hv-stimer-direct"),
    ("tlbflush", "direct", "hv-tlbflush-direct"),
    ("tlbflush", "extended", "hv-tlbflush-ext"),
];

/// `<features><kvm>` children libvirt accepts.
pub const KVM_ELEMENTS: &[&str] = &["hidden", "hint-dedicated", "poll-control", "pv-ipi", "dirty-ring"];

/// `<clock><timer name>` values libvirt accepts.
pub const TIMER_NAMES: &[&str] =
    &["platform", "pit", "rtc", "hpet", "tsc", "kvmclock", "hypervclock", "armvtimer"];

/// The libvirt element for a QEMU Hyper-V property, if it is a `<hyperv>` child.
pub fn hyperv_element(qemu: &str) -> Option<&'static str> {
    HYPERV_ELEMENTS.iter().find(|(_, q)| *q == qemu).map(|(element, _)| *element)
}
