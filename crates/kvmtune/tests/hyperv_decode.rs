//! Decoding KVM_GET_SUPPORTED_HV_CPUID into enlightenments, on reconstructed data: the positive
//! path cannot run here (this machine's kernel has no KVM Hyper-V; see the live test). The
//! fixture's `_provenance` says where its numbers come from.

mod common;

use kvmtune::knowledge::hyperv;

fn fixture() -> Vec<kvmtune::knowledge::kvm_api::CpuidEntry> {
    common::hv_cpuid_intel()
}

#[test]
fn intel_host_offers_every_enlightenment_but_core_sharing() {
    let entries = fixture();
    assert_eq!(hyperv::signature(&entries).as_deref(), Some("Linux KVM Hv"));
    let names: Vec<&str> = hyperv::supported(&entries).iter().map(|e| e.hv.qemu()).collect();
    for expected in [
        "hv-relaxed",
        "hv-vapic",
        "hv-vpindex",
        "hv-runtime",
        "hv-crash",
        "hv-time",
        "hv-synic",
        "hv-stimer",
        "hv-stimer-direct",
        "hv-tlbflush",
        "hv-tlbflush-ext",
        "hv-tlbflush-direct",
        "hv-ipi",
        "hv-reset",
        "hv-frequencies",
        "hv-reenlightenment",
        "hv-evmcs",
        "hv-emsr-bitmap",
        "hv-xmm-input",
        "hv-avic",
        "hv-syndbg",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    // KVM sets NO_NONARCH_CORESHARING only when SMT is impossible (knowledge.md 4b).
    assert!(!names.contains(&"hv-no-nonarch-coresharing"));
}

#[test]
fn amd_style_host_without_evmcs() {
    let entries = common::hv_cpuid_amd();
    let names: Vec<&str> = hyperv::supported(&entries).iter().map(|e| e.hv.qemu()).collect();
    assert!(!names.contains(&"hv-evmcs"));
    assert!(names.contains(&"hv-avic") && names.contains(&"hv-stimer-direct"));
}

#[test]
fn old_kernel_without_ipi_or_tlbflush() {
    // Before Linux 4.18/4.20 the recommendation leaf had neither remote TLB flush nor cluster IPI.
    let mut entries = fixture();
    for entry in &mut entries {
        if entry.function == 0x4000_0004 {
            entry.eax &= !((1 << 2) | (1 << 10) | (1 << 11));
        }
    }
    let names: Vec<&str> = hyperv::supported(&entries).iter().map(|e| e.hv.qemu()).collect();
    assert!(!names.contains(&"hv-ipi") && !names.contains(&"hv-tlbflush"));
    assert!(names.contains(&"hv-relaxed"));
}
