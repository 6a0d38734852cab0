//! Every check rule on its fixtures: `fixtures/check/<ID>.bad.xml` must trigger it,
//! `<ID>.good.xml` must be clean (no finding of any rule), the rendered diagnostics of the bad
//! case must match `<ID>.bad.txt`, and applying the safe fixes must make the rule go quiet.
//! Set `KVMTUNE_UPDATE_SNAPSHOTS=1` to rewrite the `.txt` files after an intended change.
//!
//! The first line of a fixture, an XML comment, says which host it is checked against
//! (`host=none|amd|amd-apicv-off|amd-no-hugepages|intel-no-flexpriority`) and optionally `windows=` and
//! `workload=`. The hosts are synthetic sysfs trees built below (no corpus snapshot has
//! KVM, IOMMU and GPU facts together); their Hyper-V support is the reconstructed AMD answer
//! described in `fixtures/hv-cpuid-intel-linux6.json`.

mod common;

use std::path::{Path, PathBuf};

use kvmtune::analysis::Workload;
use kvmtune::analysis::check::{CheckOptions, check};
use kvmtune::analysis::fix::Applicability;
use kvmtune::analysis::vm_rules::VM_RULES;
use kvmtune::config::model::WindowsVersion;
use kvmtune::config::{SourceText, libvirt, libvirt_edit};
use kvmtune::host::kvm::{HypervSupport, KvmDeviceReport};
use kvmtune::host::{self, Fact, HostFacts, SnapshotHost};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check")
}

fn write(root: &Path, path: &str, contents: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, contents).unwrap();
}

/// An AMD host: 2 NUMA nodes, one 32 MiB L3 each, 4 cores x 2 threads per node (CPU c and
/// c+8 are siblings; node 0 = 0-3,8-11), GPUs at 0000:0a:00.0 (node 0) and 0000:0b:00.0
/// (node 1), 2048 x 2 MiB hugepages unless `hugepages` is false.
fn synthetic_host(apicv: bool, hugepages: bool) -> HostFacts {
    synthetic_host_of("amd", apicv, hugepages)
}

/// `vendor` is `amd`, or `intel` for an older Intel part without FlexPriority (for LEG001).
fn synthetic_host_of(vendor: &str, apicv: bool, hugepages: bool) -> HostFacts {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    if vendor == "intel" {
        write(
            root,
            "proc/cpuinfo",
            "processor : 0\nvendor_id : GenuineIntel\ncpu family : 6\nmodel : 23\nmodel name : Intel(R) Core(TM)2 Quad CPU Q9550\nstepping : 10\nflags : vmx constant_tsc nonstop_tsc x2apic tpr_shadow vnmi ept vpid\n\n",
        );
        write(root, "sys/module/kvm_intel/parameters/enable_apicv", if apicv { "Y\n" } else { "N\n" });
        write(root, "sys/module/kvm_intel/parameters/nested", "N\n");
    } else {
        write(
            root,
            "proc/cpuinfo",
            "processor : 0\nvendor_id : AuthenticAMD\ncpu family : 25\nmodel : 33\nmodel name : AMD Ryzen 9 5950X\nstepping : 0\nflags : svm constant_tsc nonstop_tsc topoext x2apic avic npt\n\n",
        );
        write(root, "sys/module/kvm_amd/parameters/avic", if apicv { "Y\n" } else { "N\n" });
        write(root, "sys/module/kvm_amd/parameters/nested", "1\n");
    }
    write(root, "sys/devices/system/cpu/online", "0-15\n");
    for cpu in 0..16u32 {
        let core = cpu % 8;
        let node = core / 4;
        let base = format!("sys/devices/system/cpu/cpu{cpu}");
        write(root, &format!("{base}/topology/physical_package_id"), "0\n");
        write(root, &format!("{base}/topology/core_id"), &format!("{core}\n"));
        write(root, &format!("{base}/topology/core_cpus_list"), &format!("{core},{}\n", core + 8));
        write(root, &format!("{base}/cache/index3/level"), "3\n");
        write(root, &format!("{base}/cache/index3/type"), "Unified\n");
        write(root, &format!("{base}/cache/index3/size"), "32768K\n");
        let l3 = if node == 0 { "0-3,8-11" } else { "4-7,12-15" };
        write(root, &format!("{base}/cache/index3/shared_cpu_list"), &format!("{l3}\n"));
    }
    write(root, "sys/devices/system/node/node0/cpulist", "0-3,8-11\n");
    write(root, "sys/devices/system/node/node1/cpulist", "4-7,12-15\n");
    write(root, "sys/module/kvm/parameters/halt_poll_ns", "200000\n");
    write(
        root,
        "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        if hugepages { "2048\n" } else { "0\n" },
    );
    write(
        root,
        "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
        if hugepages { "2048\n" } else { "0\n" },
    );
    for (address, node) in [("0000:0a:00.0", "0"), ("0000:0b:00.0", "1")] {
        let device = format!("sys/bus/pci/devices/{address}");
        write(root, &format!("{device}/class"), "0x030000\n");
        write(root, &format!("{device}/vendor"), "0x10de\n");
        write(root, &format!("{device}/device"), "0x2684\n");
        write(root, &format!("{device}/numa_node"), &format!("{node}\n"));
    }
    let mut facts = host::probe(&SnapshotHost::open(root).unwrap());
    // What this kernel's KVM would answer: the AMD variant of the reconstructed Hyper-V leaves
    // (no eVMCS), decoded as the live probe decodes them.
    let enlightenments: Vec<String> = kvmtune::knowledge::hyperv::supported(&common::hv_cpuid_amd())
        .iter()
        .map(|e| e.qemu.to_string())
        .collect();
    facts.kvm.device = Fact::Known(KvmDeviceReport {
        present: true,
        usable: Fact::Known(true),
        api_version: Fact::Known(12),
        capabilities: Vec::new(),
        hyperv: HypervSupport::Supported {
            queried_on: "system fd".into(),
            signature: Some("Linux KVM Hv".into()),
            enlightenments,
            leaves: Vec::new(),
        },
    });
    facts
}

struct Header {
    host: Option<HostFacts>,
    windows: Option<WindowsVersion>,
    workload: Workload,
}

fn header(text: &str) -> Header {
    let line = text.lines().next().unwrap();
    let field = |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).map(str::to_string)
    };
    let host = match field("host").as_deref() {
        Some("none") | None => None,
        Some("amd") => Some(synthetic_host(true, true)),
        Some("amd-apicv-off") => Some(synthetic_host(false, true)),
        Some("amd-no-hugepages") => Some(synthetic_host(true, false)),
        Some("intel-no-flexpriority") => Some(synthetic_host_of("intel", false, true)),
        Some(other) => panic!("unknown fixture host {other}"),
    };
    let workload = match field("workload").as_deref() {
        Some("ipi-heavy") => Workload::IpiHeavy,
        Some("desktop") => Workload::Desktop,
        Some("server") => Workload::Server,
        _ => Workload::Gaming,
    };
    Header { host, windows: field("windows").and_then(|w| WindowsVersion::parse(&w)), workload }
}

fn run(name: &str, text: &str) -> (kvmtune::analysis::check::CheckReport, SourceText, Header) {
    let head = header(text);
    let config = libvirt::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
    let source = SourceText::new(format!("fixtures/check/{name}"), text);
    let options = CheckOptions {
        host: head.host.as_ref(),
        windows: head.windows,
        workload: head.workload,
        select: Vec::new(),
    };
    (check(&config, &source, &options), source, head)
}

#[test]
fn every_rule_fires_on_its_bad_fixture_and_not_on_its_good_one() {
    let mut failures = Vec::new();
    for rule in VM_RULES {
        let bad_name = format!("{}.bad.xml", rule.meta.id);
        let good_name = format!("{}.good.xml", rule.meta.id);
        let bad = std::fs::read_to_string(fixtures().join(&bad_name))
            .unwrap_or_else(|_| panic!("{bad_name} missing"));
        let good = std::fs::read_to_string(fixtures().join(&good_name))
            .unwrap_or_else(|_| panic!("{good_name} missing"));

        let (report, source, head) = run(&bad_name, &bad);
        if !report.diagnostics.iter().any(|d| d.rule == rule.meta.id) {
            failures.push(format!("{bad_name}: {} did not fire", rule.meta.id));
        }
        let rendered = kvmtune::output::diagnostics::render_text(&report, &source);
        let golden = fixtures().join(format!("{}.bad.txt", rule.meta.id));
        if std::env::var_os("KVMTUNE_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&golden, &rendered).unwrap();
        } else {
            let expected = std::fs::read_to_string(&golden).unwrap_or_default();
            if expected != rendered {
                failures
                    .push(format!("{bad_name}: rendering differs from {}:\n{rendered}", golden.display()));
            }
        }

        // The rule's safe fixes silence it.
        let actions: Vec<_> = report
            .diagnostics
            .iter()
            .filter(|d| d.rule == rule.meta.id)
            .filter_map(|d| d.fix.clone())
            .filter(|f| f.applicability == Applicability::Safe)
            .map(|f| f.action)
            .collect();
        if !actions.is_empty() {
            let fixed = libvirt_edit::apply_actions(&bad, &actions).unwrap();
            let config = libvirt::parse(&bad_name, &fixed).unwrap();
            let fixed_source = SourceText::new(bad_name.clone(), fixed.clone());
            let options = CheckOptions {
                host: head.host.as_ref(),
                windows: head.windows,
                workload: head.workload,
                select: Vec::new(),
            };
            let after = check(&config, &fixed_source, &options);
            if after.diagnostics.iter().any(|d| d.rule == rule.meta.id) {
                failures.push(format!("{bad_name}: {} still fires after its fix:\n{fixed}", rule.meta.id));
            }
        }

        let (report, _, _) = run(&good_name, &good);
        if !report.diagnostics.is_empty() {
            let found: Vec<String> =
                report.diagnostics.iter().map(|d| format!("{} {}", d.rule, d.message)).collect();
            failures.push(format!("{good_name} is not clean: {found:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn no_stray_fixtures() {
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        let id = name.split('.').next().unwrap();
        assert!(VM_RULES.iter().any(|r| r.meta.id == id), "{name} belongs to no rule");
    }
}

/// Where /dev/kvm was not asked, HV011 goes by the kernel release (a warning: distributions
/// backport) and, always, by the QEMU and libvirt releases (an error: the VM would not start).
#[test]
fn hv011_judges_by_releases_where_kvm_was_not_asked() {
    let text = std::fs::read_to_string(fixtures().join("HV011.good.xml")).unwrap();
    let config = libvirt::parse("HV011.good.xml", &text).unwrap();
    assert!(config.hyperv.is_on("hv-ipi") && config.hyperv.is_on("hv-avic"), "the fixture has both");
    let source = SourceText::new("HV011.good.xml", text.as_str());
    let findings = |host: &HostFacts| -> Vec<(String, kvmtune::analysis::Severity)> {
        let options = CheckOptions {
            host: Some(host),
            windows: None,
            workload: Workload::Gaming,
            select: kvmtune::analysis::rule::select_vm_rules(&["HV011"]).unwrap(),
        };
        check(&config, &source, &options).diagnostics.into_iter().map(|d| (d.message, d.severity)).collect()
    };
    let mut host = synthetic_host(true, true);
    host.kvm.device = Fact::Unknown("a snapshot".into());
    host.kernel.release = Fact::Known("4.19.0-27-amd64".into());
    host.software.qemu = Fact::Known("6.1.0".parse().unwrap());
    host.software.libvirt = Fact::Known("8.0.0".parse().unwrap());
    let old = findings(&host);
    assert_eq!(old.len(), 2, "{old:?}");
    let (ipi, avic) = (&old[0], &old[1]);
    assert!(
        ipi.0.starts_with("hv-ipi: needs Linux 4.20") && ipi.1 == kvmtune::analysis::Severity::Warning,
        "{ipi:?}"
    );
    assert!(avic.0.starts_with("hv-avic: needs Linux 5.15"), "{avic:?}");

    // A new kernel with an old QEMU: hv-avic is QEMU's to lack, and that is certain.
    host.kernel.release = Fact::Known("6.1.0-13-amd64".into());
    let qemu_old = findings(&host);
    assert_eq!(qemu_old.len(), 1, "{qemu_old:?}");
    assert!(qemu_old[0].0.starts_with("hv-avic: QEMU knows hv-avic since 6.2; this host has 6.1.0"));
    assert_eq!(qemu_old[0].1, kvmtune::analysis::Severity::Error);

    host.software.qemu = Fact::Known("10.0.2".parse().unwrap());
    host.software.libvirt = Fact::Known("11.3.0".parse().unwrap());
    assert!(findings(&host).is_empty());
}
