//! The guest program `kvmtune-guest` on this machine: the Linux build natively and the Windows
//! build (Debian's Rust 1.63 for x86_64-pc-windows-gnu) under Wine. Each report is valid
//! against docs/guest-schema.json, and what it read agrees with readers of its own: the
//! hypervisor leaves and bit with Debian's `cpuid` tool, the processors with sysfs.

use std::path::Path;
use std::process::Command;

use kvmtune_testkit::guest_program::{self, Builds};
use serde_json::Value;

/// `[eax, ebx, ecx, edx]` of a leaf, as `cpuid -1 -r -l LEAF` prints it.
fn cpuid_tool(leaf: u32) -> [u64; 4] {
    let output = Command::new("cpuid")
        .args(["-1", "-r", "-l", &format!("{leaf:#x}")])
        .output()
        .expect("cpuid (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{leaf:#010x}")))
        .unwrap_or_else(|| panic!("no leaf in {text}"));
    let value = |name: &str| {
        let at = line.find(&format!("{name}=0x")).unwrap() + name.len() + 3;
        u64::from_str_radix(&line[at..at + 8], 16).unwrap()
    };
    [value("eax"), value("ebx"), value("ecx"), value("edx")]
}

fn validate(report: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guest-schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(report).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "not valid against docs/guest-schema.json: {errors:#?}");
}

/// What both builds read from CPUID must be what the cpuid tool reads.
fn agrees_with_cpuid_tool(report: &Value) {
    let leaf1 = cpuid_tool(1);
    assert_eq!(report["cpuid"]["hypervisor_bit"].as_bool(), Some(leaf1[2] & (1 << 31) != 0));
    assert_eq!(report["cpuid"]["x2apic"].as_bool(), Some(leaf1[2] & (1 << 21) != 0));
    if leaf1[2] & (1 << 31) != 0 {
        let vendor = cpuid_tool(0x4000_0000);
        let leaves = report["cpuid"]["hypervisor"]["leaves"].as_array().unwrap();
        let first = &leaves[0];
        assert_eq!(first["leaf"].as_u64(), Some(0x4000_0000));
        for (index, register) in ["eax", "ebx", "ecx", "edx"].iter().enumerate() {
            assert_eq!(first[register].as_u64(), Some(vendor[index]), "leaf 0x40000000 {register}");
        }
        let signature: Vec<u8> =
            vendor[1..].iter().flat_map(|r| (*r as u32).to_le_bytes()).filter(|b| *b != 0).collect();
        assert_eq!(
            report["cpuid"]["hypervisor"]["signature"].as_str(),
            Some(String::from_utf8_lossy(&signature).as_ref())
        );
    }
}

fn online_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    text.trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

#[test]
#[cfg_attr(not(feature = "tools"), ignore = "needs Debian's cpuid tool: cargo test --features tools")]
fn the_linux_build_reads_this_machine_as_its_own_readers_do() {
    let program = guest_program::build_dir(Builds::Linux).join("kvmtune-guest");
    let started = std::time::Instant::now();
    let output = Command::new(&program).args(["--format", "json"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    validate(&report);
    agrees_with_cpuid_tool(&report);
    assert_eq!(report["os"]["family"], "linux");
    assert_eq!(report["topology"]["logical_processors"].as_u64(), Some(online_cpus() as u64));
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource").unwrap();
    assert_eq!(report["time"]["clocksource"].as_str(), Some(clocksource.trim()));
    assert!(report["time"]["call_cost"]["median_ns"].as_f64().unwrap() > 0.0);
    // Bounded: the issue's budget is two seconds for the whole run (timed loosely, as a bound, not a benchmark).
    assert!(started.elapsed().as_secs_f64() < 10.0, "took {:?}", started.elapsed());

    let text = Command::new(&program).output().unwrap();
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("hypervisor signature"));
    let bad = Command::new(&program).args(["--format", "yaml"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "needs Wine and Debian's Windows Rust toolchain: cargo test --features tools"
)]
fn the_windows_build_runs_under_wine_and_reads_the_same_cpuid() {
    let exe = guest_program::build_dir(Builds::LinuxAndWindows).join("kvmtune-guest.exe");
    let head = std::fs::read(&exe).unwrap();
    assert_eq!(&head[..2], b"MZ", "a PE executable");
    let prefix = tempfile::tempdir().unwrap();
    let output = guest_program::run_under_wine(&exe, prefix.path(), &["--format", "json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    validate(&report);
    agrees_with_cpuid_tool(&report);
    assert_eq!(report["os"]["family"], "windows");
    assert_eq!(report["topology"]["source"], "GetLogicalProcessorInformationEx");
    assert_eq!(report["topology"]["logical_processors"].as_u64(), Some(online_cpus() as u64));
    assert_eq!(report["time"]["counter"], "QueryPerformanceCounter");
    // Wine reports 10 MHz whatever the hardware (as Windows 10 does on the reference TSC page).
    assert_eq!(report["time"]["frequency_hz"].as_u64(), Some(10_000_000));
    assert!(report["time"]["call_cost"]["median_ns"].as_f64().unwrap() > 0.0);
    assert!(report["time"]["sleep_1ms"]["samples"].as_u64().unwrap() >= 1);
}
