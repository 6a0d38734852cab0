//! The reconstructed KVM_GET_SUPPORTED_HV_CPUID answer (`fixtures/hv-cpuid-intel-linux6.json`,
//! whose `_provenance` says where its numbers come from), shared by the tests that need a host
//! with Hyper-V support; and a guest program's report around given hypervisor leaves.
#![allow(dead_code)]

use kvmtune::knowledge::kvm_api::CpuidEntry;

fn hex(value: &serde_json::Value) -> u32 {
    u32::from_str_radix(value.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// The Intel answer, as recorded in the fixture.
pub fn hv_cpuid_intel() -> Vec<CpuidEntry> {
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

/// The same kernel on AMD: no eVMCS bit in 0x40000004 and no eVMCS version in 0x4000000A.
pub fn hv_cpuid_amd() -> Vec<CpuidEntry> {
    let mut entries = hv_cpuid_intel();
    for entry in &mut entries {
        match entry.function {
            0x4000_0004 => entry.eax &= !(1 << 14),
            0x4000_000A => entry.eax &= !0xffff,
            _ => {}
        }
    }
    entries
}

/// A guest program's report of a Linux guest on an Intel CPU with the hypervisor bit and four
/// processors, whose `cpuid.hypervisor` member is `hypervisor`.
pub fn guest_report_seeing(hypervisor: serde_json::Value) -> kvmtune::guest::GuestReport {
    let text = serde_json::json!({
        "schema_version": 1,
        "program": {"name": "kvmtune-guest", "version": "0.1.0"},
        "os": {"family": "linux", "name": null},
        "cpuid": {"vendor": "GenuineIntel", "hypervisor_bit": true, "hypervisor": hypervisor},
        "topology": {"logical_processors": 4, "cores": 4, "sockets": 1, "numa_nodes": 1},
        "time": {"counter": "clock_gettime(CLOCK_MONOTONIC)"}
    })
    .to_string();
    kvmtune::guest::GuestReport::from_json(&text, "test").unwrap()
}
