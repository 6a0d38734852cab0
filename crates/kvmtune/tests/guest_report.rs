//! The guest program's report read back on the host: the Hyper-V leaves decoded on real dumps
//! from public sources (the fixture's `_provenance`), every enlightenment against the bits
//! QEMU sets for it, and reports that are not one.

use kvmtune::guest::GuestReport;
use kvmtune::knowledge::hyperv::{ENLIGHTENMENTS, Hv};
use serde_json::{Value, json};

fn hex(value: &Value) -> u32 {
    u32::from_str_radix(value.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// A report of a guest that sees a Hyper-V interface with these leaves.
fn report_with(leaves: Vec<Value>) -> GuestReport {
    let text = json!({
        "schema_version": 1,
        "program": {"name": "kvmtune-guest", "version": "0.1.0"},
        "os": {"family": "linux", "name": null},
        "cpuid": {
            "vendor": "GenuineIntel", "hypervisor_bit": true,
            "hypervisor": {"max_leaf": 0x4000_000a_u32, "signature": "Microsoft Hv", "hyperv_interface": true, "leaves": leaves}
        },
        "topology": {"logical_processors": 4, "cores": 4, "sockets": 1, "numa_nodes": 1},
        "time": {"counter": "clock_gettime(CLOCK_MONOTONIC)"}
    })
    .to_string();
    GuestReport::from_json(&text, "test").unwrap()
}

fn names(list: &Value) -> Vec<Hv> {
    list.as_array().unwrap().iter().map(|n| Hv::from_qemu(n.as_str().unwrap()).unwrap()).collect()
}

#[test]
fn real_dumps_decode_as_their_guests_report() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/guest-cpuid-dumps.json")).unwrap();
    let dumps = fixture["dumps"].as_array().unwrap();
    assert_eq!(dumps.len(), 3);
    for dump in dumps {
        let leaves = dump["leaves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| json!({"leaf": hex(&l["leaf"]), "eax": hex(&l["eax"]), "ebx": hex(&l["ebx"]), "ecx": hex(&l["ecx"]), "edx": hex(&l["edx"])}))
            .collect();
        let report = report_with(leaves);
        let source = dump["source"].as_str().unwrap();
        for hv in names(&dump["sees"]) {
            assert_eq!(report.sees(hv), Some(true), "{hv} in {source}");
        }
        for hv in names(&dump["not_seen"]) {
            assert_eq!(report.sees(hv), Some(false), "{hv} in {source}");
            assert!(!report.missing_bits(hv).is_empty(), "{hv} names its missing bits");
        }
        for hv in names(&dump["unknown"]) {
            assert_eq!(report.sees(hv), None, "{hv} in {source}: its leaf is not in the dump");
        }
        // Every enlightenment is in exactly one of the three lists.
        let listed =
            names(&dump["sees"]).len() + names(&dump["not_seen"]).len() + names(&dump["unknown"]).len();
        assert_eq!(listed, ENLIGHTENMENTS.len(), "{source}");
    }
}

/// For each enlightenment, a guest that sees exactly the bits QEMU sets for it
/// (`kvm_hyperv_properties[]`, the shared table) sees it, and with any one of them cleared does not.
#[test]
fn each_enlightenment_needs_every_bit_qemu_sets_for_it() {
    const LEAVES: [u32; 3] = [0x4000_0003, 0x4000_0004, 0x4000_000A];
    for enlightenment in ENLIGHTENMENTS {
        let bits: Vec<_> = enlightenment.bits().collect();
        assert!(!bits.is_empty(), "{} has no bits", enlightenment.hv);
        let leaves_with = |skip: Option<usize>| -> Vec<Value> {
            LEAVES
                .iter()
                .map(|&leaf| {
                    let mut registers = [0u32; 4];
                    for (index, bit) in bits.iter().enumerate() {
                        if bit.leaf == leaf && Some(index) != skip {
                            registers[bit.register as usize] |= 1 << bit.bit;
                        }
                    }
                    json!({"leaf": leaf, "eax": registers[0], "ebx": registers[1], "ecx": registers[2], "edx": registers[3]})
                })
                .collect()
        };
        assert_eq!(report_with(leaves_with(None)).sees(enlightenment.hv), Some(true), "{}", enlightenment.hv);
        for (index, bit) in bits.iter().enumerate() {
            assert_eq!(
                report_with(leaves_with(Some(index))).sees(enlightenment.hv),
                Some(false),
                "{} without {}",
                enlightenment.hv,
                bit.name
            );
        }
    }
}

#[test]
fn a_report_that_is_not_one_names_where() {
    let error =
        GuestReport::from_json("{\n  \"schema_version\": 1,\n  \"program\": 5\n}", "saved.json").unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("saved.json:3:"), "{text}");
    assert!(text.contains("not a kvmtune-guest report"), "{text}");

    let truncated = GuestReport::from_json("{\"schema_version\": 1,", "cut.json").unwrap_err().to_string();
    assert!(truncated.starts_with("cut.json:1:"), "{truncated}");

    let other = json!({"schema_version": 1, "program": {"name": "coreinfo"}, "os": {"family": "windows"},
        "cpuid": {"vendor": "x", "hypervisor_bit": false}, "topology": {"logical_processors": 1, "cores": 1, "sockets": 1, "numa_nodes": 1},
        "time": {"counter": "QueryPerformanceCounter"}});
    let error = GuestReport::from_json(&other.to_string(), "other.json").unwrap_err().to_string();
    assert!(error.contains("written by coreinfo"), "{error}");

    let mut newer = other.clone();
    newer["program"]["name"] = json!("kvmtune-guest");
    newer["schema_version"] = json!(2);
    let error = GuestReport::from_json(&newer.to_string(), "newer.json").unwrap_err().to_string();
    assert!(error.contains("schema version 2"), "{error}");
}
