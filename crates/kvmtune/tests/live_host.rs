//! The probe on this machine, for real, checked against independent sources: hwloc's own view
//! of the live host (`lstopo --of xml`), the kernel's files read by other tools, and the KVM
//! capabilities' own consistency.

use std::collections::BTreeSet;
use std::process::Command;

use kvmtune::host::kvm::HypervSupport;
use kvmtune::host::{self, Fact, Host};
use kvmtune::values::CpuSet;

fn lstopo_xml() -> String {
    let output = Command::new("lstopo-no-graphics")
        .args(["--of", "xml", "-"])
        .output()
        .expect("lstopo-no-graphics (package hwloc) is installed by scripts/test.sh");
    assert!(output.status.success(), "lstopo failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
#[cfg_attr(not(feature = "tools"), ignore = "needs system tools: cargo test --features tools")]
fn topology_matches_hwloc_on_this_machine() {
    let facts = host::probe(&Host::live());
    let xml = lstopo_xml();
    let document = roxmltree::Document::parse_with_options(
        &xml,
        roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
    )
    .unwrap();
    let sets_of = |kind: &str| -> BTreeSet<CpuSet> {
        document
            .descendants()
            .filter(|n| n.has_tag_name("object") && n.attribute("type") == Some(kind))
            .map(|n| CpuSet::parse_mask(n.attribute("cpuset").unwrap()).unwrap())
            .collect()
    };
    let pus = sets_of("PU").into_iter().fold(CpuSet::new(), |all, pu| all.union(&pu));
    let topology = &facts.topology;
    assert_eq!(topology.online.known(), Some(&pus));
    assert_eq!(topology.smt_sibling_sets.iter().cloned().collect::<BTreeSet<_>>(), sets_of("Core"));
    assert_eq!(topology.packages.iter().map(|p| p.cpus.clone()).collect::<BTreeSet<_>>(), sets_of("Package"));
    assert_eq!(
        topology.l3_groups.iter().map(|g| g.cpus.clone()).collect::<BTreeSet<_>>(),
        sets_of("L3Cache")
    );
    assert_eq!(topology.numa_nodes.len(), sets_of("NUMANode").len());
}

#[test]
fn cpu_count_matches_the_c_library() {
    let facts = host::probe(&Host::live());
    // sysconf(_SC_NPROCESSORS_ONLN) is glibc's reading of the same kernel state.
    let output = Command::new("getconf").arg("_NPROCESSORS_ONLN").output().unwrap();
    let online: usize = String::from_utf8(output.stdout).unwrap().trim().parse().unwrap();
    assert_eq!(facts.topology.online.known().map(CpuSet::len), Some(online));
    assert!(facts.cpu.vendor.is_known() && facts.cpu.model_name.is_known());
}

#[test]
#[cfg_attr(not(feature = "root"), ignore = "needs root: cargo test --features root")]
fn kvm_device_answers_and_hyperv_support_agrees_with_capabilities() {
    let facts = host::probe(&Host::live());
    let Fact::Known(device) = &facts.kvm.device else { panic!("the live probe must ask /dev/kvm") };
    // The development and CI machines have /dev/kvm (the brief); a machine without it fails here.
    assert!(device.present, "/dev/kvm missing");
    assert_eq!(device.api_version, Fact::Known(12));
    assert_eq!(device.usable, Fact::Known(true));
    let cap = |name: &str| {
        device.capabilities.iter().find(|c| c.name == name).and_then(|c| c.value.known().copied())
    };
    assert!(cap("KVM_CAP_MAX_VCPUS").is_some_and(|v| v > 0));
    let hyperv_caps = cap("KVM_CAP_SYS_HYPERV_CPUID").unwrap_or(0) + cap("KVM_CAP_HYPERV_CPUID").unwrap_or(0);
    match &device.hyperv {
        // This nested machine's kernel lacks CONFIG_KVM_HYPERV: the ioctl answers EINVAL, and
        // that is reported as a fact, not a failure.
        HypervSupport::NotSupported { evidence } => {
            assert_eq!(hyperv_caps, 0, "capabilities say Hyper-V exists, yet: {evidence}");
            assert!(evidence.contains("os error 22") || evidence.contains("os error 25"), "{evidence}");
        }
        HypervSupport::Supported { enlightenments, .. } => {
            assert!(hyperv_caps > 0);
            assert!(enlightenments.iter().any(|e| e == "hv-relaxed"));
        }
        HypervSupport::Unknown { reason } => panic!("root on this machine can always ask: {reason}"),
    }
    // KVM offers TOPOEXT only where the CPU has it: never on Intel (this machine), and on
    // AMD parts that report it.
    let cpu_has = facts.cpu.has_flag("topoext");
    assert_eq!(device.topoext, Fact::Known(cpu_has), "KVM_GET_SUPPORTED_CPUID against /proc/cpuinfo");
}

#[test]
fn clocksource_and_tsc_verdict_are_consistent() {
    let facts = host::probe(&Host::live());
    let current = facts.time.current_clocksource.known().expect("clocksource readable");
    let available = facts.time.available_clocksources.known().expect("available clocksources readable");
    assert!(available.contains(current));
    let verdict = facts.time.tsc.known().expect("TSC verdict");
    let invariant = facts.cpu.has_flag("constant_tsc") && facts.cpu.has_flag("nonstop_tsc");
    assert_eq!(verdict.trustworthy, current == "tsc" && invariant, "{:?}", verdict.reasons);
}

#[test]
fn cgroup_layout_matches_the_mounted_filesystems() {
    let facts = host::probe(&Host::live());
    let cgroups = facts.host_state.cgroups.known().expect("cgroups readable");
    // stat(1) names the filesystem at the cgroup root: cgroup2fs for a pure v2 host, tmpfs
    // holding per-controller mounts otherwise.
    let output = Command::new("stat").args(["-f", "-c", "%T", "/sys/fs/cgroup"]).output().unwrap();
    let root_fs = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let expected = match root_fs.as_str() {
        "cgroup2fs" => "v2",
        _ if std::path::Path::new("/sys/fs/cgroup/unified").is_dir() => "hybrid",
        _ => "v1",
    };
    assert_eq!(cgroups.layout, expected);
    if std::path::Path::new("/sys/fs/cgroup/cpuset/cpuset.cpus").is_file() {
        assert_eq!(cgroups.cpuset_version.as_deref(), Some("v1"));
        assert!(cgroups.cpuset_usable);
    }
}

#[test]
fn probing_twice_gives_the_same_facts() {
    // Facts are deterministic: two probes agree on everything but what moves by itself (free
    // memory and the process list).
    let mut first = host::probe(&Host::live());
    let mut second = host::probe(&Host::live());
    for facts in [&mut first, &mut second] {
        facts.memory.available_kib = Fact::Unknown(String::new());
        facts.memory.nodes = Fact::Unknown(String::new());
        facts.memory.hugepages = Fact::Unknown(String::new());
        facts.host_state.irqbalance_running = Fact::Unknown(String::new());
    }
    assert_eq!(first, second);
}

/// The upstream release inside a Debian package version: `1:10.0.2+ds-2~bpo12+1` -> `10.0.2`.
fn packaged_release(package: &str) -> String {
    let output = Command::new("dpkg-query").args(["-W", "-f", "${Version}", package]).output().unwrap();
    assert!(output.status.success(), "{package} is installed by scripts/test.sh");
    let version = String::from_utf8(output.stdout).unwrap();
    let without_epoch = version.split_once(':').map_or(version.as_str(), |(_, rest)| rest);
    without_epoch.split(['+', '-', '~']).next().unwrap().to_string()
}

#[test]
#[cfg_attr(
    not(all(feature = "qemu", feature = "libvirt")),
    ignore = "needs QEMU and libvirt: cargo test --features qemu,libvirt"
)]
fn qemu_and_libvirt_releases_match_the_installed_packages() {
    let facts = host::probe(&Host::live());
    assert_eq!(
        facts.software.qemu.known().map(ToString::to_string),
        Some(packaged_release("qemu-system-x86"))
    );
    assert_eq!(
        facts.software.libvirt.known().map(ToString::to_string),
        Some(packaged_release("libvirt-daemon"))
    );
}

#[test]
fn a_snapshot_says_it_records_no_program_versions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sys")).unwrap();
    let facts = host::probe(&host::Host::snapshot(dir.path()).unwrap());
    let Fact::Unknown(reason) = &facts.software.qemu else { panic!("{:?}", facts.software.qemu) };
    assert!(reason.contains("records no program versions"), "{reason}");
}

#[test]
fn host_facts_saved_before_the_releases_were_probed_still_load() {
    let facts = host::probe(&Host::live());
    let mut json = serde_json::to_value(&facts).unwrap();
    json.as_object_mut().unwrap().remove("software");
    let loaded: host::HostFacts = serde_json::from_value(json).unwrap();
    assert!(!loaded.software.qemu.is_known() && !loaded.software.libvirt.is_known());
}
