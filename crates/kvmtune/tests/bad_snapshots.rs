//! Broken snapshots: truncated files, empty directories, garbage numbers, binary junk. The probe
//! must answer with unknowns that name the file, and never panic.

use std::path::Path;

use kvmtune::host::{self, Fact, Host};
use proptest::prelude::*;

fn write(root: &Path, path: &str, contents: &[u8]) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, contents).unwrap();
}

/// A small but complete two-CPU host: one package, one core with two threads, one L3, one node.
fn healthy(root: &Path) {
    write(root, "proc/cpuinfo", b"processor : 0\nvendor_id : GenuineIntel\ncpu family : 6\nmodel : 158\nmodel name : Test CPU\nstepping : 10\nflags : vmx constant_tsc nonstop_tsc\n\n");
    write(root, "proc/meminfo", b"MemTotal: 1000 kB\nMemAvailable: 500 kB\n");
    write(root, "proc/cmdline", b"isolcpus=1 intel_iommu=on\n");
    write(root, "proc/version", b"Linux version 6.1.0-test (x) #1\n");
    write(root, "proc/mounts", b"cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
    write(root, "sys/devices/system/cpu/online", b"0-1\n");
    write(root, "sys/devices/system/cpu/present", b"0-1\n");
    write(root, "sys/devices/system/cpu/possible", b"0-1\n");
    for cpu in 0..2 {
        let base = format!("sys/devices/system/cpu/cpu{cpu}");
        write(root, &format!("{base}/topology/physical_package_id"), b"0\n");
        write(root, &format!("{base}/topology/core_id"), b"0\n");
        write(root, &format!("{base}/topology/thread_siblings_list"), b"0-1\n");
        write(root, &format!("{base}/cache/index3/level"), b"3\n");
        write(root, &format!("{base}/cache/index3/type"), b"Unified\n");
        write(root, &format!("{base}/cache/index3/size"), b"8192K\n");
        write(root, &format!("{base}/cache/index3/shared_cpu_list"), b"0-1\n");
    }
    write(root, "sys/devices/system/node/node0/cpulist", b"0-1\n");
    write(
        root,
        "sys/devices/system/node/node0/meminfo",
        b"Node 0 MemTotal: 1000 kB\nNode 0 MemFree: 400 kB\n",
    );
}

fn probe(root: &Path) -> host::HostFacts {
    host::probe(&Host::snapshot(root).unwrap())
}

/// The healthy snapshot with these files overwritten, probed.
fn probe_healthy_with(changes: &[(&str, &[u8])]) -> host::HostFacts {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    for (path, contents) in changes {
        write(dir.path(), path, contents);
    }
    probe(dir.path())
}

#[test]
fn healthy_fixture_reads_completely() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    let facts = probe(dir.path());
    assert_eq!(facts.topology.smt_sibling_sets.len(), 1);
    assert_eq!(facts.topology.l3_groups.len(), 1);
    assert_eq!(facts.topology.l3_groups[0].size_kib, Some(8192));
    assert!(facts.topology.unknowns.is_empty(), "{:?}", facts.topology.unknowns);
    assert_eq!(facts.kernel.release, Fact::Known("6.1.0-test".into()));
    assert_eq!(facts.kernel.cmdline.known().unwrap().isolcpus.as_ref().unwrap().cpus.to_string(), "1");
    assert_eq!(facts.host_state.cgroups.known().unwrap().layout, "v2");
    assert!(matches!(facts.kvm.device, Fact::Unknown(ref r) if r.contains("never on a snapshot")));
}

#[test]
fn garbage_numbers_become_named_unknowns() {
    let facts = probe_healthy_with(&[
        ("sys/devices/system/cpu/cpu1/topology/core_id", b"banana\n"),
        ("sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list", b"7-2\n"),
        ("sys/devices/system/node/node0/meminfo", b"Node 0 MemTotal: many kB\n"),
        ("proc/cpuinfo", b"vendor_id : GenuineIntel\ncpu family : six\n"),
    ]);
    let unknowns = facts.topology.unknowns.join("\n");
    assert!(unknowns.contains("cpu1/topology/core_id: `banana` is not a number"), "{unknowns}");
    assert!(unknowns.contains("cpu0/cache/index3/shared_cpu_list: range `7-2` runs backwards"), "{unknowns}");
    assert!(matches!(facts.cpu.family, Fact::Unknown(ref r) if r.contains("`six`")));
    let node = &facts.memory.nodes.known().unwrap()[0];
    assert!(matches!(node.total_kib, Fact::Unknown(ref r) if r.contains("node0/meminfo")));
}

#[test]
fn truncated_and_empty_files_and_dirs() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    write(dir.path(), "sys/devices/system/cpu/online", b"");
    write(dir.path(), "sys/devices/system/cpu/cpu0/topology/thread_siblings_list", b"");
    write(dir.path(), "proc/meminfo", b"MemTot");
    std::fs::remove_dir_all(dir.path().join("sys/devices/system/node/node0")).unwrap();
    std::fs::create_dir_all(dir.path().join("sys/devices/system/node/node0")).unwrap();
    let facts = probe(dir.path());
    // An empty online list is a fact (nothing online), not a crash.
    assert_eq!(facts.topology.online.known().map(|s| s.len()), Some(0));
    assert!(matches!(facts.memory.total_kib, Fact::Unknown(ref r) if r.contains("proc/meminfo")));
    assert!(
        facts.topology.unknowns.iter().any(|u| u.contains("node0/cpulist is missing")),
        "{:?}",
        facts.topology.unknowns
    );
}

#[test]
fn empty_tree_is_all_unknown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sys")).unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    let facts = probe(dir.path());
    assert!(!facts.cpu.vendor.is_known());
    assert!(!facts.topology.online.is_known());
    assert!(facts.topology.cpus.is_empty());
    assert!(!facts.time.current_clocksource.is_known());
    assert!(!facts.kvm.modules.is_known());
    assert!(!facts.host_state.cgroups.is_known());
    // Still a document a tool can read.
    let json = serde_json::to_string(&facts).unwrap();
    let back: host::HostFacts = serde_json::from_str(&json).unwrap();
    assert_eq!(back, facts);
}

#[test]
fn unreadable_file_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    healthy(dir.path());
    // A directory where a file should be gives an I/O error on read, on any user (root
    // bypasses permission bits, so permissions cannot be tested as root).
    std::fs::remove_file(dir.path().join("proc/cmdline")).unwrap();
    std::fs::create_dir_all(dir.path().join("proc/cmdline")).unwrap();
    let facts = probe(dir.path());
    assert!(matches!(facts.kernel.cmdline, Fact::Unknown(ref r) if r.contains("proc/cmdline")));
}

const FILES: &[&str] = &[
    "proc/cpuinfo",
    "proc/meminfo",
    "proc/cmdline",
    "proc/mounts",
    "sys/devices/system/cpu/online",
    "sys/devices/system/cpu/present",
    "sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
    "sys/devices/system/cpu/cpu1/topology/core_id",
    "sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list",
    "sys/devices/system/cpu/cpu0/cache/index3/size",
    "sys/devices/system/cpu/cpu0/cache/index3/level",
    "sys/devices/system/node/node0/cpulist",
    "sys/devices/system/node/node0/meminfo",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_junk_in_any_file_never_panics(
        which in 0..FILES.len(),
        junk in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let facts = probe_healthy_with(&[(FILES[which], &junk)]);
        let _ = kvmtune::output::probe_text::render(&facts, &kvmtune::analysis::host_rules::evaluate(&facts));
    }
}
