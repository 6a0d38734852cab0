//! The `kvmtune` binary end to end: exit codes, output formats, and golden text output for
//! real snapshots. Set `KVMTUNE_UPDATE_SNAPSHOTS=1` to rewrite the golden files after an
//! intended change, then review the diff.

use std::path::Path;
use std::process::{Command, Output};

use kvmtune::host::HostFacts;

fn kvmtune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmtune")).args(args).output().expect("kvmtune runs")
}

fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("KVMTUNE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("golden file {} missing; run with KVMTUNE_UPDATE_SNAPSHOTS=1", path.display())
    });
    if expected != actual {
        panic!("{name} differs from the golden file.\n--- expected\n{expected}\n--- actual\n{actual}");
    }
}

fn snapshot_text(name: &str) -> String {
    let (_guard, root) = kvmtune_testkit::unpack_hwloc(name);
    let output = kvmtune(&["probe", "--root", root.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    // The first line names the temporary directory.
    text.replacen(root.to_str().unwrap(), &format!("<corpus>/{name}"), 1)
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn golden_hybrid_intel_laptop() {
    check_golden("probe-20em64t-hybrid.txt", &snapshot_text("20em64t-hybrid-1p6c2t+2ca4co1t"));
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn golden_snc_xeon_with_memory_side_caches() {
    check_golden("probe-memorysidecaches.txt", &snapshot_text("memorysidecaches"));
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn golden_offline_cpus() {
    check_golden("probe-16em64t-offlines.txt", &snapshot_text("16em64t-4s2c2t-offlines"));
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn json_is_the_documented_schema_and_reads_back() {
    let (_guard, root) = kvmtune_testkit::unpack_hwloc("32intel64-2p8co2t+8ve");
    let output = kvmtune(&["probe", "--root", root.to_str().unwrap(), "--format", "json"]);
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["host"]["schema_version"], 1);
    assert_eq!(json["host"]["topology"]["online"]["known"], "0-31");
    assert_eq!(json["host"]["topology"]["numa_nodes"].as_array().unwrap().len(), 2);
    assert!(json["findings"].is_array());
    let facts: HostFacts = serde_json::from_value(json["host"].clone()).unwrap();
    assert_eq!(facts.topology.smt_sibling_sets.len(), 16);
}

#[test]
#[cfg_attr(not(feature = "root"), ignore = "needs root: cargo test --features root")]
fn live_probe_succeeds_in_both_formats() {
    let text = kvmtune(&["probe"]);
    assert_eq!(text.status.code(), Some(0), "{}", String::from_utf8_lossy(&text.stderr));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("kvmtune probe: live host"));
    assert!(text.contains("/dev/kvm usable (API 12)"), "{text}");
    let json = kvmtune(&["probe", "--format", "json"]);
    assert_eq!(json.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["host"]["source"], "live host");
}

#[test]
fn missing_or_empty_root_is_an_error_with_exit_2() {
    let output = kvmtune(&["probe", "--root", "/nonexistent/kvmtune-test"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot read the snapshot at /nonexistent/kvmtune-test"), "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");

    let empty = tempfile::tempdir().unwrap();
    let output = kvmtune(&["probe", "--root", empty.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr).unwrap().contains("holds neither sys/ nor proc/"));
}

#[test]
fn bad_arguments_exit_2() {
    let output = kvmtune(&["probe", "--format", "yaml"]);
    assert_eq!(output.status.code(), Some(2));
}

/// Every member name the probe prints is documented in docs/probe-schema.md (names under the
/// free-form maps excepted), so the schema document cannot silently fall behind the code.
#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn every_json_member_is_documented() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/probe-schema.md"))
            .unwrap();
    // Maps whose keys are data (flag names, parameter names, governors), not schema, by path
    // below `host` with the `known` wrappers left out.
    const FREE_FORM: &[&str] = &[
        "cpu.flags",
        "kvm.modules.parameters",
        "host_state.cpufreq_governors",
        "kernel.cmdline.iommu",
        "kernel.cmdline.kvm_module_options",
        "kernel.cmdline.vfio_options",
        "kernel.cmdline.other",
    ];
    fn walk(value: &serde_json::Value, path: &str, names: &mut std::collections::BTreeSet<String>) {
        if FREE_FORM.contains(&path) {
            return;
        }
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map {
                    if key == "known" || key == "unknown" {
                        walk(child, path, names);
                        continue;
                    }
                    names.insert(key.clone());
                    let child_path = match path {
                        "" | "host" => key.clone(),
                        _ => format!("{path}.{key}"),
                    };
                    walk(child, &child_path, names);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| walk(item, path, names)),
            _ => {}
        }
    }
    let mut names = std::collections::BTreeSet::new();
    let output = kvmtune(&["probe", "--format", "json"]);
    walk(&serde_json::from_slice(&output.stdout).unwrap(), "", &mut names);
    let (_guard, root) = kvmtune_testkit::unpack_hwloc("20em64t-hybrid-1p6c2t+2ca4co1t");
    let output = kvmtune(&["probe", "--root", root.to_str().unwrap(), "--format", "json"]);
    walk(&serde_json::from_slice(&output.stdout).unwrap(), "", &mut names);
    let missing: Vec<&String> = names.iter().filter(|name| !doc.contains(&format!("`{name}`"))).collect();
    assert!(missing.is_empty(), "undocumented members: {missing:?}");
}

/// A host rule whose fix kvmtune can make names it as host actions, with the values it saw.
#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn host_rule_fix_is_named_as_host_actions() {
    let (_guard, root) = kvmtune_testkit::unpack_hwloc("20em64t-hybrid-1p6c2t+2ca4co1t");
    let output = kvmtune(&["probe", "--root", root.to_str().unwrap(), "--format", "json"]);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let findings = document["findings"].as_array().unwrap();
    let governor = findings.iter().find(|f| f["id"] == "HOST007").expect("HOST007 fires on this snapshot");
    let actions = governor["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 20, "one per CPU of the powersave policies: {actions:?}");
    assert_eq!(actions[0]["path"], "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor");
    assert_eq!(actions[0]["old"], "powersave");
    assert_eq!(actions[0]["new"], "performance");
    assert!(findings.iter().filter(|f| f["id"] != "HOST007").all(|f| f.get("actions").is_none()));
}
