//! `tune` held to `check`: for every corpus host and the synthetic ones, several VM sizes, every
//! workload and Windows version, the plan's libvirt XML, checked against the same host, has no
//! finding of warning severity or above. And the placement reaches its lower bounds.

use std::path::PathBuf;

use kvmtune::analysis::Severity;
use kvmtune::analysis::Workload;
use kvmtune::analysis::check::{CheckOptions, check};
use kvmtune::analysis::placement::quality;
use kvmtune::analysis::planner::{PlanError, PlanRequest, VmRequest, plan};
use kvmtune::config::model::WindowsVersion;
use kvmtune::host::{self, Fact, Host, HostFacts};
use kvmtune::knowledge::hyperv::Hv;
use kvmtune::knowledge::hyperv::availability;
use kvmtune::output::libvirt_domain::render_domain;
use kvmtune::values::SourceText;
use kvmtune::values::Version;
use kvmtune_testkit::synthetic::SyntheticHost;

const WORKLOADS: [Workload; 4] = [Workload::Gaming, Workload::Desktop, Workload::Server, Workload::IpiHeavy];
const WINDOWS: [WindowsVersion; 6] = [
    WindowsVersion::Win11,
    WindowsVersion::Win10,
    WindowsVersion::Win7,
    WindowsVersion::Server2022,
    WindowsVersion::Server2025,
    WindowsVersion::Xp,
];

/// Every corpus snapshot, unpacked: (name, facts, the temp dir keeping it alive).
fn corpus_hosts() -> Vec<(String, HostFacts, tempfile::TempDir)> {
    let mut tarballs: Vec<PathBuf> = ["hwloc", "lscpu-dumps"]
        .into_iter()
        .flat_map(kvmtune_testkit::corpus_files)
        .filter(|path| {
            let name = path.to_string_lossy();
            name.ends_with(".tar.bz2") || name.ends_with(".tar.gz")
        })
        .collect();
    tarballs.sort();
    assert!(tarballs.len() >= 12, "the corpus has its snapshots");
    tarballs
        .into_iter()
        .map(|tarball| {
            let (guard, root) = kvmtune_testkit::unpack(&tarball);
            let facts = host::probe(&Host::snapshot(&root).unwrap());
            (tarball.file_name().unwrap().to_string_lossy().to_string(), facts, guard)
        })
        .collect()
}

fn synthetic_hosts() -> Vec<(String, HostFacts, tempfile::TempDir)> {
    SyntheticHost::all()
        .into_iter()
        .map(|machine| {
            let dir = tempfile::tempdir().unwrap();
            machine.write(dir.path());
            let facts = host::probe(&Host::snapshot(dir.path()).unwrap());
            (machine.name.to_string(), facts, dir)
        })
        .collect()
}

fn request(windows: WindowsVersion, workload: Workload, vcpus: Option<u32>) -> PlanRequest {
    PlanRequest {
        windows,
        workload,
        migratable: false,
        nested: false,
        housekeeping: None,
        vms: vec![VmRequest { name: "win".into(), vcpus, memory_mib: 8192, devices: Vec::new() }],
    }
}

fn problems(name: &str, host: &HostFacts, request: &PlanRequest) -> Vec<String> {
    let plan = match plan(host, request) {
        Ok(plan) => plan,
        Err(PlanError::HostTooSmall(_)) => return Vec::new(),
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let mut found = Vec::new();
    for vm in &plan.vms {
        let xml = render_domain(vm, request.windows);
        let config = kvmtune::config::read("tuned.xml", &xml).unwrap();
        let source = SourceText::new("tuned.xml", xml.clone());
        let options = CheckOptions {
            host: Some(host),
            windows: Some(request.windows),
            workload: Some(request.workload),
            select: Vec::new(),
            housekeeping: None,
        };
        for diagnostic in check(&config, &source, &options).diagnostics {
            if diagnostic.severity >= Severity::Warning {
                found.push(format!(
                    "{name} {:?} {:?} vcpus={:?}: {} {}",
                    request.windows,
                    request.workload,
                    request.vms[0].vcpus,
                    diagnostic.rule,
                    diagnostic.message
                ));
            }
        }
        let q = quality(host, &vm.placement.vcpu_cpus, vm.placement.threads, &plan.housekeeping);
        if q.excess() > 0 {
            found.push(format!("{name} vcpus={}: placement excess {q:?}", vm.vcpus));
        }
    }
    found
}

fn sizes(host: &HostFacts) -> Vec<Option<u32>> {
    let cpus = host.topology.online.known().map_or(0, |c| c.len() as u32);
    let mut sizes = vec![None, Some(1), Some(2), Some(4), Some(6), Some(8), Some(16)];
    sizes.extend([cpus / 2, cpus.saturating_sub(4)].into_iter().filter(|n| *n > 0).map(Some));
    sizes
}

fn assert_clean(hosts: &[(String, HostFacts, tempfile::TempDir)]) {
    let mut found = Vec::new();
    let mut plans = 0;
    for (name, facts, _) in hosts {
        for windows in WINDOWS {
            for workload in WORKLOADS {
                for vcpus in sizes(facts) {
                    found.extend(problems(name, facts, &request(windows, workload, vcpus)));
                    plans += 1;
                }
            }
        }
    }
    assert!(plans > 100);
    assert!(found.is_empty(), "{} problems in {plans} plans:\n{}", found.len(), found.join("\n"));
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn check_finds_nothing_in_tuned_configs_for_corpus_hosts() {
    assert_clean(&corpus_hosts());
}

#[test]
fn check_finds_nothing_in_tuned_configs_for_synthetic_hosts() {
    assert_clean(&synthetic_hosts());
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn placement_reaches_its_lower_bounds_at_every_size() {
    let mut hosts = corpus_hosts();
    hosts.extend(synthetic_hosts());
    let mut found = Vec::new();
    for (name, facts, _) in &hosts {
        let cpus = facts.topology.online.known().map_or(0, |c| c.len() as u32);
        for vcpus in 1..=cpus {
            let Ok(plan) = plan(facts, &request(WindowsVersion::Win11, Workload::Desktop, Some(vcpus)))
            else {
                continue;
            };
            let vm = &plan.vms[0];
            let q = quality(facts, &vm.placement.vcpu_cpus, vm.placement.threads, &plan.housekeeping);
            if q.excess() > 0 {
                found.push(format!("{name} {vcpus} vCPUs: {q:?}"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

fn synthetic(machine: SyntheticHost) -> (HostFacts, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    machine.write(dir.path());
    (host::probe(&Host::snapshot(dir.path()).unwrap()), dir)
}

#[test]
fn gaming_on_an_x3d_part_takes_the_vcache_ccd() {
    let (facts, _dir) = synthetic(SyntheticHost::ryzen_7950x3d());
    let plan = plan(&facts, &request(WindowsVersion::Win11, Workload::Gaming, None)).unwrap();
    let vm = &plan.vms[0];
    // CCD 0 (cores 0-7, siblings 16-23) has the V-Cache: the VM takes it whole, and the host
    // keeps a core of the other CCD.
    assert_eq!(plan.housekeeping.to_string(), "8,24");
    assert_eq!(vm.placement.cpus().to_string(), "0-7,16-23");
    assert_eq!((vm.topology.cores, vm.topology.threads), (8, 2));
    // Guest SMT pairs are host SMT pairs: vCPU 0 and 1 on CPU 0 and its sibling 16.
    assert_eq!(&vm.placement.vcpu_cpus[..2], &[0, 16]);
    // A server load does not care for the V-Cache and takes the whole other CCD.
    let server = plan_for(&facts, Workload::Server, None);
    assert_eq!(server.to_string(), "8-15,24-31");
}

fn plan_for(facts: &HostFacts, workload: Workload, vcpus: Option<u32>) -> kvmtune::values::CpuSet {
    plan(facts, &request(WindowsVersion::Win11, workload, vcpus)).unwrap().vms[0].placement.cpus()
}

#[test]
fn hybrid_intel_runs_vcpus_on_p_cores_and_keeps_e_cores_for_the_host() {
    let (facts, _dir) = synthetic(SyntheticHost::core_i9_14900k());
    let plan = plan(&facts, &request(WindowsVersion::Win11, Workload::Gaming, None)).unwrap();
    assert_eq!(plan.housekeeping.to_string(), "16-31");
    assert_eq!(plan.vms[0].placement.cpus().to_string(), "0-15");
    assert_eq!(plan.vms[0].emulator_cpus.to_string(), "16-31");
}

#[test]
fn threadripper_fills_one_ccx_then_one_node() {
    let (facts, _dir) = synthetic(SyntheticHost::threadripper_2950x());
    // 8 vCPUs = 4 cores: one CCX (4 cores); CCX 1 on node 0 is whole (core 0 is housekeeping).
    let cpus = plan_for(&facts, Workload::Gaming, Some(8));
    assert_eq!(cpus.to_string(), "4-7,20-23");
    // 12 vCPUs = 6 cores: more than a CCX, inside node 0 (7 free cores) or node 1 (7 free).
    let plan = plan(&facts, &request(WindowsVersion::Win11, Workload::Gaming, Some(12))).unwrap();
    assert_eq!(plan.vms[0].placement.nodes.len(), 1);
    assert_eq!(plan.vms[0].placement.l3_groups.len(), 2);
    assert_eq!(plan.vms[0].memory_node, Some(plan.vms[0].placement.nodes[0]));
}

#[test]
fn several_vms_never_share_a_cpu() {
    let (facts, _dir) = synthetic(SyntheticHost::epyc_9654_2p());
    let mut request = request(WindowsVersion::Win11, Workload::Desktop, None);
    request.vms = (0..20)
        .map(|i| VmRequest {
            name: format!("desk{i}"),
            vcpus: Some(if i % 3 == 0 { 16 } else { 8 }),
            memory_mib: 4096,
            devices: Vec::new(),
        })
        .collect();
    let plan = plan(&facts, &request).unwrap();
    let mut seen = kvmtune::values::CpuSet::new();
    for vm in &plan.vms {
        let cpus = vm.placement.cpus();
        assert!(cpus.intersection(&seen).is_empty(), "{} overlaps", vm.name);
        assert!(cpus.intersection(&plan.housekeeping).is_empty());
        // 8 vCPUs fill one CCD; 16 take exactly two.
        assert_eq!(vm.placement.l3_groups.len(), (vm.vcpus as usize).div_ceil(16), "{}", vm.name);
        seen = seen.union(&cpus);
    }
}

#[test]
fn impossible_requests_are_errors() {
    let (facts, _dir) = synthetic(SyntheticHost::ryzen_7950x3d());
    assert!(matches!(
        plan(&facts, &request(WindowsVersion::Win11, Workload::Gaming, Some(64))),
        Err(PlanError::HostTooSmall(_))
    ));
    let mut with_device = request(WindowsVersion::Win11, Workload::Gaming, None);
    with_device.vms[0].devices.push("0000:42:00.0".parse().unwrap());
    assert!(matches!(plan(&facts, &with_device), Err(PlanError::UnknownDevice(_))));
    let mut two = request(WindowsVersion::Win11, Workload::Gaming, Some(4));
    two.vms.push(two.vms[0].clone());
    assert!(matches!(plan(&facts, &two), Err(PlanError::Contradiction(_))));
    let mut huge = request(WindowsVersion::Win11, Workload::Gaming, Some(4));
    huge.vms[0].memory_mib = 10 << 20;
    assert!(matches!(plan(&facts, &huge), Err(PlanError::HostTooSmall(_))));
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn vcpus_and_memory_follow_the_passed_through_device() {
    let tarball = kvmtune_testkit::corpus().join("hwloc/32em64t-2n8c+dax+nvme+mic+dimms.tar.bz2");
    let (_guard, root) = kvmtune_testkit::unpack(&tarball);
    let facts = host::probe(&Host::snapshot(&root).unwrap());
    // Without a device the roomiest node comes first; with one on node 1, node 1 it is.
    let mut with_device = request(WindowsVersion::Win11, Workload::Gaming, Some(4));
    with_device.vms[0].devices.push("80:02.0".parse().unwrap());
    let plan = plan(&facts, &with_device).unwrap();
    let vm = &plan.vms[0];
    assert_eq!(vm.placement.nodes, vec![1]);
    assert_eq!(vm.memory_node, Some(1));
    assert_eq!(vm.devices[0].address.to_string(), "0000:80:02.0");
    assert!(!vm.memballoon, "no balloon with VFIO");
    let node1 = facts.topology.numa_nodes.iter().find(|n| n.node == 1).unwrap();
    assert!(vm.placement.cpus().is_subset(&node1.cpus));
    assert!(vm.emulator_cpus.is_subset(&node1.cpus), "emulator on the node's own housekeeping CPUs");
    let xml = render_domain(vm, WindowsVersion::Win11);
    assert!(xml.contains("<memory mode='strict' nodeset='1'/>"));
    assert!(xml.contains("<address domain='0x0000' bus='0x80' slot='0x02' function='0x0'/>"));
    assert!(xml.contains("<memballoon model='none'/>"));
}

/// Kernel, QEMU and libvirt releases from old to new, as a host without a /dev/kvm answer
/// (every snapshot) reports them.
const STACKS: [(&str, &str, &str); 5] = [
    ("4.4.0-21-generic", "2.5.0", "1.3.1"),
    ("4.19.0-27-amd64", "6.1.0", "8.0.0"),
    ("5.10.0-30-amd64", "5.2.0", "7.0.0"),
    ("6.1.0-13-amd64", "7.2.0", "9.0.0"),
    ("6.12.9-amd64", "10.0.2", "11.3.0"),
];

fn on_stack(facts: &HostFacts, (kernel, qemu, libvirt): (&str, &str, &str)) -> HostFacts {
    let mut facts = facts.clone();
    facts.kernel.release = Fact::Known(kernel.to_string());
    facts.software.qemu = Fact::Known(qemu.parse().unwrap());
    facts.software.libvirt = Fact::Known(libvirt.parse().unwrap());
    facts
}

#[test]
fn enlightenments_follow_the_kernel_qemu_and_libvirt_releases() {
    let (facts, _dir) = synthetic(SyntheticHost::core_i9_14900k());
    let mut found = Vec::new();
    let mut sets = Vec::new();
    for stack in STACKS {
        let host = on_stack(&facts, stack);
        let kernel = Version::find_in(stack.0).unwrap();
        for nested in [false, true] {
            for workload in WORKLOADS {
                let mut request = request(WindowsVersion::Win11, workload, Some(4));
                request.nested = nested;
                // check, on the same host, objects to nothing: neither a missing recommended
                // enlightenment the stack has (HV002) nor one it lacks (HV011).
                found.extend(problems(stack.0, &host, &request));
                let plan = plan(&host, &request).unwrap();
                let chosen: Vec<&str> = plan.vms[0].enlightenments.iter().map(|e| e.name.qemu()).collect();
                for name in &chosen {
                    let since = availability(Hv::from_qemu(name).unwrap()).unwrap();
                    if since.linux > kernel
                        || since.qemu > *host.software.qemu.known().unwrap()
                        || since.libvirt.is_some_and(|v| v > *host.software.libvirt.known().unwrap())
                    {
                        found.push(format!("{stack:?}: {name} chosen but not in this stack"));
                    }
                }
                sets.push((stack.0, nested, chosen.join(",")));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
    let set_of =
        |kernel: &str, nested: bool| sets.iter().find(|s| s.0 == kernel && s.1 == nested).unwrap().2.clone();
    // Linux 4.4 has no SynIC: no synic, no stimer, no vpindex-based ones.
    assert!(!set_of(STACKS[0].0, false).contains("hv-synic"));
    assert!(set_of(STACKS[0].0, false).contains("hv-relaxed"));
    // QEMU 6.1 lacks hv-avic; Linux 4.19 lacks hv-ipi.
    assert!(
        !set_of(STACKS[1].0, false).contains("hv-avic") && !set_of(STACKS[1].0, false).contains("hv-ipi")
    );
    // On Intel with nesting, libvirt 9.0 has no element for the direct TLB flush; 11.3 has.
    assert!(!set_of(STACKS[3].0, true).contains("hv-tlbflush-direct"));
    assert!(set_of(STACKS[4].0, true).contains("hv-tlbflush-direct"));
}

#[test]
fn with_no_release_known_the_plan_says_what_it_assumes() {
    let (facts, _dir) = synthetic(SyntheticHost::ryzen_7950x3d());
    let plan = plan(&facts, &request(WindowsVersion::Win11, Workload::Gaming, None)).unwrap();
    let assumed = plan.vms[0].decisions.iter().find(|d| d.choice == "assumed available").unwrap();
    // hv-avic (Linux 5.15, QEMU 6.2) is not planned where APICv/AVIC is unknown, so hv-ipi
    // sets the bar.
    assert!(
        assumed.reason.contains("Linux 4.20") && assumed.reason.contains("QEMU 3.1"),
        "{}",
        assumed.reason
    );
}

#[test]
fn housekeeping_is_chosen_with_the_vms() {
    let (facts, _dir) = synthetic(SyntheticHost::threadripper_2950x());
    // Node 0 is CPUs 0-7 and 16-23, node 1 8-15 and 24-31.
    let one = plan(&facts, &request(WindowsVersion::Win11, Workload::Gaming, Some(8))).unwrap();
    assert_eq!(one.vms[0].placement.nodes, [0]);
    assert_eq!(one.housekeeping.to_string(), "0,16");
    assert_eq!(one.vms[0].emulator_cpus.to_string(), "0,16");
    let decision = one.decisions.iter().find(|d| d.choice.starts_with("housekeeping")).unwrap();
    assert!(decision.reason.contains("chosen with the VMs"), "{}", decision.reason);

    // Two VMs, one per node: the host keeps CPU 0's core, and a core left free on the other
    // VM's node, so that each VM's emulator stays on its own node.
    let mut two = request(WindowsVersion::Win11, Workload::Gaming, None);
    two.vms = ["a", "b"]
        .map(|name| VmRequest { name: name.into(), vcpus: Some(12), memory_mib: 4096, devices: Vec::new() })
        .to_vec();
    let two = plan(&facts, &two).unwrap();
    assert_eq!(two.housekeeping.to_string(), "0,14,16,30");
    for vm in &two.vms {
        assert_eq!(vm.placement.nodes.len(), 1);
        let node = vm.placement.nodes[0];
        let expected = if node == 0 { "0,16" } else { "14,30" };
        assert_eq!(vm.emulator_cpus.to_string(), expected, "{}", vm.name);
    }

    // A configured set is kept as given.
    let mut configured = request(WindowsVersion::Win11, Workload::Gaming, Some(8));
    configured.housekeeping = Some(kvmtune::values::CpuSet::parse_list("0-1,16-17").unwrap());
    let configured = plan(&facts, &configured).unwrap();
    assert_eq!(configured.housekeeping.to_string(), "0-1,16-17");
    assert!(configured.vms[0].placement.cpus().intersection(&configured.housekeeping).is_empty());
}

/// Issue: a 16-vCPU gaming VM on a 2950X spanned both nodes because each node kept its first
/// core. It now takes node 1 whole (8 cores, 2 CCX) and leaves node 0 to the host, with the
/// emulator there.
#[test]
fn threadripper_16_vcpus_take_one_node_and_its_two_ccx_with_the_emulator_on_node_0() {
    let (facts, _dir) = synthetic(SyntheticHost::threadripper_2950x());
    let plan = plan(&facts, &request(WindowsVersion::Win11, Workload::Gaming, Some(16))).unwrap();
    let vm = &plan.vms[0];
    assert_eq!(vm.placement.nodes, [1]);
    assert_eq!(vm.placement.l3_groups.len(), 2);
    assert_eq!(vm.placement.cpus().to_string(), "8-15,24-31");
    assert_eq!(plan.housekeeping.to_string(), "0,16");
    assert_eq!(vm.emulator_cpus.to_string(), "0,16");
    assert_eq!(vm.memory_node, Some(1));
    assert!(
        vm.decisions.iter().any(|d| d.choice.starts_with("emulator and iothread on another NUMA node")),
        "the plan says the emulator sits on another node, and why"
    );
}

/// Issue: a 16-vCPU gaming VM on a 7950X3D landed on the frequency CCD because the V-Cache CCD
/// had lost core 0 to the host.
#[test]
fn x3d_gaming_16_vcpus_take_the_vcache_ccd_whole() {
    let (facts, _dir) = synthetic(SyntheticHost::ryzen_7950x3d());
    let plan = plan(&facts, &request(WindowsVersion::Win11, Workload::Gaming, Some(16))).unwrap();
    let vm = &plan.vms[0];
    assert_eq!(vm.placement.cpus().to_string(), "0-7,16-23");
    assert_eq!(vm.placement.l3_groups, [0]);
    assert!(plan.housekeeping.intersection(&vm.placement.cpus()).is_empty());
    assert_eq!(vm.emulator_cpus.to_string(), "8,24");
}

/// Issue: on a 48-core AMD with 8 nodes of 6 cores, a 6-vCPU VM spanned two nodes where one
/// whole node was free.
#[test]
fn eight_node_host_puts_6_vcpus_on_one_whole_node() {
    let (facts, _dir) = synthetic(SyntheticHost::amd_48c_8_nodes());
    let plan = plan(&facts, &request(WindowsVersion::Win11, Workload::Desktop, Some(6))).unwrap();
    let vm = &plan.vms[0];
    assert_eq!(vm.placement.nodes.len(), 1);
    assert_eq!(vm.placement.l3_groups.len(), 1);
    assert_ne!(vm.placement.nodes, [0], "node 0 keeps CPU 0 for the host");
    assert_eq!(vm.memory_node, Some(vm.placement.nodes[0]));
}

/// Two 8-vCPU VMs on a 2950X: one node each, and the host's share inside neither.
#[test]
fn two_vms_on_a_threadripper_get_a_node_each() {
    let (facts, _dir) = synthetic(SyntheticHost::threadripper_2950x());
    let mut two = request(WindowsVersion::Win11, Workload::Gaming, None);
    two.vms = ["a", "b"]
        .map(|name| VmRequest { name: name.into(), vcpus: Some(8), memory_mib: 4096, devices: Vec::new() })
        .to_vec();
    let plan = plan(&facts, &two).unwrap();
    let (a, b) = (&plan.vms[0], &plan.vms[1]);
    assert_eq!(a.placement.nodes.len(), 1);
    assert_eq!(b.placement.nodes.len(), 1);
    assert_ne!(a.placement.nodes, b.placement.nodes);
    for vm in [a, b] {
        assert!(vm.placement.cpus().intersection(&plan.housekeeping).is_empty(), "{}", vm.name);
        assert_eq!(vm.placement.l3_groups.len(), 1, "8 vCPUs are one CCX");
    }
}

/// Issue: `check` warned (PIN007) on a 2950X config that keeps node 0 for the host (emulator
/// and iothreads pinned there) and puts all 16 vCPUs on node 1. The user's split is the better
/// one: no finding.
#[test]
fn check_accepts_a_config_that_keeps_a_whole_node_for_the_host() {
    let (facts, _dir) = synthetic(SyntheticHost::threadripper_2950x());
    let plan = plan(&facts, &request(WindowsVersion::Win11, Workload::Gaming, Some(16))).unwrap();
    let xml = render_domain(&plan.vms[0], WindowsVersion::Win11)
        .replace("<emulatorpin cpuset='0,16'/>", "<emulatorpin cpuset='0-7,16-23'/>");
    assert!(xml.contains("<emulatorpin cpuset='0-7,16-23'/>"));
    let config = kvmtune::config::read("user.xml", &xml).unwrap();
    let options = CheckOptions {
        host: Some(&facts),
        windows: None,
        workload: Some(Workload::Gaming),
        select: kvmtune::analysis::rule::select_vm_rules(&["PIN007", "PIN006", "PIN003"]).unwrap(),
        housekeeping: None,
    };
    let report = check(&config, &SourceText::new("user.xml", xml.as_str()), &options);
    assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
    // With no host share in the config, `--housekeeping` names it; vCPUs on it are flagged.
    let bare = xml.replace("<emulatorpin cpuset='0-7,16-23'/>", "");
    let bare = without_iothreadpins(&bare);
    let config = kvmtune::config::read("bare.xml", &bare).unwrap();
    let options =
        CheckOptions { housekeeping: Some(kvmtune::values::CpuSet::parse_list("8,24").unwrap()), ..options };
    let report = check(&config, &SourceText::new("bare.xml", bare.as_str()), &options);
    assert_eq!(report.diagnostics.iter().filter(|d| d.rule == "PIN007").count(), 2, "{bare}");
}

/// The XML without its `<iothreadpin>` lines.
fn without_iothreadpins(xml: &str) -> String {
    xml.lines()
        .filter(|line| !line.trim_start().starts_with("<iothreadpin"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Passed-through devices the host does not list are named together, in one decision.
#[test]
fn missing_devices_are_one_decision() {
    let (facts, _dir) = synthetic(SyntheticHost::threadripper_2950x());
    let hostdevs: String = (1..=8)
        .map(|bus| {
            format!(
                "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x{bus:02x}' slot='0x00' function='0x0'/></source></hostdev>"
            )
        })
        .collect();
    let xml = format!(
        "<domain type='kvm'><name>w</name><memory unit='GiB'>8</memory><vcpu>8</vcpu><devices>{hostdevs}</devices></domain>"
    );
    let config = kvmtune::config::read("w.xml", &xml).unwrap();
    let (request, note) =
        kvmtune::analysis::planner::existing::request_from_config(&config, &facts, None, None);
    assert!(request.devices.is_empty());
    let note = note.expect("one decision names them");
    assert!(note.reason.starts_with("8 devices (0000:01:00.0, 0000:02:00.0,"), "{}", note.reason);
}

/// The real configs in ../shared/corpus/user-xml whose host CPU is known, on a host built to
/// it: PIN007 warns only where the vCPUs truly leave the host nothing. Where the config shows
/// its host share (emulator and iothread pins), PIN007 never fires: an overlap with those pins
/// is PIN003's to report.
#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn pin007_on_real_configs_fires_only_where_the_host_is_left_nothing() {
    use kvmtune::analysis::placement::default_host_share;
    let dir = kvmtune_testkit::corpus().join("user-xml");
    let mut fired = Vec::new();
    let mut expected = Vec::new();
    let mut with_pins = 0;
    for (file, machine) in SyntheticHost::for_user_xml() {
        let (facts, _guard) = synthetic(machine);
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let config = kvmtune::config::read(file, &text).unwrap();
        let options = CheckOptions {
            host: Some(&facts),
            windows: None,
            workload: Some(Workload::Gaming),
            select: kvmtune::analysis::rule::select_vm_rules(&["PIN007"]).unwrap(),
            housekeeping: None,
        };
        // Warnings only: a vCPU on CPU 0 outside the host's share is information.
        let diagnostics = check(&config, &SourceText::new(file, text.as_str()), &options).diagnostics;
        if diagnostics.iter().any(|d| d.severity != kvmtune::analysis::Severity::Info) {
            fired.push(file);
        }
        assert!(
            diagnostics
                .iter()
                .all(|d| d.severity != kvmtune::analysis::Severity::Info || d.message.contains("host CPU 0")),
            "{file}: {diagnostics:?}"
        );
        let pinning = &config.pinning;
        let shows_share = pinning.emulatorpin.is_some() || !pinning.iothreadpin.is_empty();
        with_pins += usize::from(shows_share);
        let vcpu_cpus =
            pinning.vcpupin.iter().fold(kvmtune::values::CpuSet::new(), |all, p| all.union(&p.cpus));
        if !shows_share && !vcpu_cpus.is_empty() && default_host_share(&facts, &vcpu_cpus).cpus.is_empty() {
            expected.push(file);
        }
    }
    assert!(with_pins >= 3, "only {with_pins} configs show their host share");
    assert_eq!(fired, expected);
}

/// hv-avic hurts without APICv/AVIC and helps with it; where the host's state is unknown (a
/// snapshot), the plan leaves it out and says how to settle it, instead of guessing.
#[test]
fn hv_avic_follows_the_hosts_apic_virtualization_and_is_not_guessed() {
    let (mut facts, _dir) = synthetic(SyntheticHost::ryzen_7950x3d());
    assert!(!facts.kvm.apic_virtualization.is_known(), "a snapshot does not know APICv/AVIC");
    let names = |facts: &HostFacts| -> (Vec<&'static str>, Vec<String>) {
        let plan = plan(facts, &request(WindowsVersion::Win11, Workload::Gaming, None)).unwrap();
        let vm = &plan.vms[0];
        (
            vm.enlightenments.iter().map(|e| e.name.qemu()).collect(),
            vm.decisions.iter().map(|d| d.choice.clone()).collect(),
        )
    };
    let (unknown, decisions) = names(&facts);
    assert!(!unknown.contains(&"hv-avic"), "{unknown:?}");
    assert!(decisions.iter().any(|d| d == "hv-avic left out: APICv/AVIC state unknown"), "{decisions:?}");
    let apic = |enabled: bool| kvmtune::host::kvm::ApicVirtualization {
        kind: "AVIC".into(),
        enabled,
        evidence: "kvm_amd.avic".into(),
    };
    facts.kvm.apic_virtualization = Fact::Known(apic(true));
    assert!(names(&facts).0.contains(&"hv-avic"));
    facts.kvm.apic_virtualization = Fact::Known(apic(false));
    assert!(!names(&facts).0.contains(&"hv-avic"));
}

/// host-passthrough hands the guest VMX or SVM wherever the host's KVM has nested
/// virtualization on; a Windows that starts its own hypervisor with it uses the synthetic
/// timers only in direct mode. The plan turns direct mode on exactly there, says why, and
/// `check` on the same host has nothing against the result either way.
#[test]
fn direct_synthetic_timers_follow_the_hosts_nested_virtualization() {
    use kvmtune::host::kvm::KvmModules;
    for (intel, module, value, offered) in [
        (false, "kvm_amd", Some("1"), true),
        (false, "kvm_amd", Some("0"), false),
        (false, "kvm_amd", None, false),
        (true, "kvm_intel", Some("Y"), true),
        (true, "kvm_intel", Some("N"), false),
    ] {
        let machine = if intel { SyntheticHost::core_i9_14900k() } else { SyntheticHost::ryzen_7950x3d() };
        let (mut facts, _dir) = synthetic(machine);
        let mut parameters = std::collections::BTreeMap::new();
        let mut vendor = std::collections::BTreeMap::new();
        if let Some(value) = value {
            vendor.insert("nested".to_string(), value.to_string());
        }
        parameters.insert(module.to_string(), vendor);
        facts.kvm.modules = Fact::Known(KvmModules {
            vendor_module: Some(module.into()),
            parameters,
            unreadable: Vec::new(),
        });
        let case = format!("{module} nested={value:?}");
        let request = request(WindowsVersion::Win11, Workload::Gaming, Some(4));
        let plan = plan(&facts, &request).unwrap();
        let vm = &plan.vms[0];
        let direct = vm.enlightenments.iter().any(|e| e.name == Hv::StimerDirect);
        assert_eq!(direct, offered, "{case}");
        let said = vm.decisions.iter().find(|d| d.choice.starts_with("hv-stimer-direct"));
        assert_eq!(said.is_some(), offered, "{case}");
        if let Some(decision) = said {
            let (feature, evidence) =
                if intel { ("vmx", "kvm_intel/nested=Y") } else { ("svm", "kvm_amd/nested=1") };
            assert!(
                decision.choice.contains(feature) && decision.choice.contains(evidence),
                "{}",
                decision.choice
            );
            assert!(decision.source.contains("vmx_set_cpu_caps"), "{}", decision.source);
        }
        let found = problems(&case, &facts, &request);
        assert!(found.is_empty(), "{}", found.join("\n"));
    }
}

/// On AMD hosts whose KVM (Linux 5.6 to 5.18) switches AVIC off for any VM whose guest CPU has
/// SVM, the plan turns svm off unless the VM is to run a hypervisor, and then says what that
/// costs; where it (Linux 5.7 to 5.19) does the same for x2APIC, the plan turns x2apic off.
/// `check` on the same host agrees either way (CPU007 for the nested plan only).
#[test]
fn svm_and_x2apic_follow_the_kernels_avic_inhibitions() {
    use kvmtune::host::kvm::{ApicVirtualization, KvmModules};
    let amd = |release: &str| {
        let (mut facts, dir) = synthetic(SyntheticHost::ryzen_7950x3d());
        let mut parameters = std::collections::BTreeMap::new();
        parameters.insert(
            "kvm_amd".to_string(),
            [("nested".to_string(), "1".to_string()), ("avic".to_string(), "1".to_string())].into(),
        );
        facts.kvm.modules = Fact::Known(KvmModules {
            vendor_module: Some("kvm_amd".into()),
            parameters,
            unreadable: Vec::new(),
        });
        facts.kvm.apic_virtualization = Fact::Known(ApicVirtualization {
            kind: "avic".into(),
            enabled: true,
            evidence: "kvm_amd/avic=1".into(),
        });
        facts.kernel.release = Fact::Known(release.into());
        (facts, dir)
    };
    // (release, svm inhibits AVIC, x2apic inhibits AVIC): 5.6..5.19 and 5.7..6.0.
    for (release, inhibits, x2apic_inhibits) in [
        ("5.4.0-150-generic", false, false),
        ("5.15.0-91-generic", true, true),
        ("5.19.17-1-pve", false, true),
        ("6.1.0-13-amd64", false, false),
    ] {
        let (facts, _dir) = amd(release);
        for nested in [false, true] {
            let mut request = request(WindowsVersion::Win11, Workload::Gaming, Some(4));
            request.nested = nested;
            let plan = plan(&facts, &request).unwrap();
            let vm = &plan.vms[0];
            let svm = vm.cpu.features.iter().find(|f| f.name == "svm").map(|f| f.policy);
            let case = format!("{release} nested={nested}");
            let expected = match (nested, inhibits) {
                (true, _) => Some("require"),
                (false, true) => Some("disable"),
                (false, false) => None,
            };
            assert_eq!(svm, expected, "{case}");
            let x2apic = vm.cpu.features.iter().find(|f| f.name == "x2apic").map(|f| f.policy);
            assert_eq!(x2apic, x2apic_inhibits.then_some("disable"), "{case}");
            // Direct synthetic timers go with a guest that can see svm.
            let direct = vm.enlightenments.iter().any(|e| e.name == Hv::StimerDirect);
            assert_eq!(direct, expected != Some("disable"), "{case}");
            let said = vm.decisions.iter().any(|d| d.choice == "svm on: AVIC off for this VM");
            assert_eq!(said, nested && inhibits, "{case}");
            let found = problems(&case, &facts, &request);
            if nested && inhibits {
                assert!(found.len() == 1 && found[0].contains("CPU007"), "{case}: {found:?}");
            } else {
                assert!(found.is_empty(), "{case}: {}", found.join("\n"));
            }
        }
    }
}

/// The PIT's lost-tick policy follows AVIC: on an AMD host with AVIC on, reinjection (delay)
/// would make KVM switch AVIC off for the whole VM, so the plan drops missed ticks (discard);
/// Intel's APICv is not affected and keeps delay. `check` agrees on each host.
#[test]
fn pit_tickpolicy_follows_avic() {
    use kvmtune::host::kvm::ApicVirtualization;
    for (machine, kind, enabled, expected) in [
        (SyntheticHost::ryzen_7950x3d(), "avic", true, "discard"),
        (SyntheticHost::ryzen_7950x3d(), "avic", false, "delay"),
        (SyntheticHost::core_i9_14900k(), "apicv", true, "delay"),
    ] {
        let (mut facts, _dir) = synthetic(machine);
        facts.kvm.apic_virtualization = Fact::Known(ApicVirtualization {
            kind: kind.into(),
            enabled,
            evidence: format!("{kind}={enabled}"),
        });
        let request = request(WindowsVersion::Win11, Workload::Gaming, Some(4));
        let tuned = plan(&facts, &request).unwrap();
        let case = format!("{kind} on={enabled}");
        assert_eq!(tuned.vms[0].clock.pit_tickpolicy, expected, "{case}");
        let decision = tuned.vms[0].decisions.iter().find(|d| d.choice.ends_with(&format!("PIT {expected}")));
        let decision = decision.unwrap_or_else(|| panic!("{case}: no PIT decision"));
        // It names TIME007 as what it avoids only where the policy was chosen for AVIC.
        assert_eq!(
            decision.rules.contains(&"TIME007"),
            expected == "discard",
            "{case}: {:?}",
            decision.rules
        );
        let found = problems(&case, &facts, &request);
        assert!(found.is_empty(), "{case}: {}", found.join("\n"));
        // Windows XP counts ticks as time: it keeps the reinjection, AVIC or not.
        let xp = plan(&facts, &request_for(WindowsVersion::Xp)).unwrap();
        assert_eq!(xp.vms[0].clock.pit_tickpolicy, "delay", "{case} XP");
    }
}

fn request_for(windows: WindowsVersion) -> PlanRequest {
    request(windows, Workload::Gaming, Some(4))
}
