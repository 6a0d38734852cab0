//! Decoding KVM_GET_SUPPORTED_HV_CPUID into enlightenments, on reconstructed data: the positive
//! path cannot run here (this machine's kernel has no KVM Hyper-V; see the live test). The
//! fixture's `_provenance` says where its numbers come from.

use kvmtune::knowledge::hyperv;
use kvmtune::sys::CpuidEntry;

fn hex(value: &serde_json::Value) -> u32 {
    u32::from_str_radix(value.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn fixture() -> Vec<CpuidEntry> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hv-cpuid-intel-linux6.json"
    ))
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| CpuidEntry {
            function: hex(&e["function"]),
            index: 0,
            eax: hex(&e["eax"]),
            ebx: hex(&e["ebx"]),
            ecx: hex(&e["ecx"]),
            edx: hex(&e["edx"]),
        })
        .collect()
}

#[test]
fn intel_host_offers_every_enlightenment_but_core_sharing() {
    let entries = fixture();
    assert_eq!(hyperv::signature(&entries).as_deref(), Some("Linux KVM Hv"));
    let names: Vec<&str> = hyperv::supported(&entries).iter().map(|e| e.qemu).collect();
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
    // The same kernel on AMD: no eVMCS bit in 0x40000004 and no eVMCS version in 0x4000000A.
    let mut entries = fixture();
    for entry in &mut entries {
        match entry.function {
            0x4000_0004 => entry.eax &= !(1 << 14),
            0x4000_000A => entry.eax &= !0xffff,
            _ => {}
        }
    }
    let names: Vec<&str> = hyperv::supported(&entries).iter().map(|e| e.qemu).collect();
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
    let names: Vec<&str> = hyperv::supported(&entries).iter().map(|e| e.qemu).collect();
    assert!(!names.contains(&"hv-ipi") && !names.contains(&"hv-tlbflush"));
    assert!(names.contains(&"hv-relaxed"));
}
