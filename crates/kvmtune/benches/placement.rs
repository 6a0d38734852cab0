//! Placement quality: for every corpus topology and the synthetic ones (Threadripper 2950X,
//! Ryzen 7950X3D, 2x EPYC 9654, Core i9-14900K, a 48-core 8-node AMD, and the 2950X and 7950X3D
//! with a GPU to pass through), and every VM size that fits, the planner's SMT splits, L3 groups
//! and NUMA nodes spanned beyond their lower bound, vCPUs on the host's share, and VMs off their
//! GPU's node where a smaller span was possible. The lower bound is what the VM could reach if
//! the host needed one core anywhere (or its isolcpus=/E-core share). Then the same measures
//! for the real pinnings in ../shared/corpus/user-xml whose host CPU is known, on a host built
//! to that CPU's topology, against the host share their own emulator/iothread pins show.
//!
//!   cargo bench -p kvmtune --bench placement

use std::path::PathBuf;

use kvmtune::analysis::Workload;
use kvmtune::analysis::placement::{PlacementQuality, default_host_share, quality};
use kvmtune::analysis::planner::{PlanError, PlanRequest, VmRequest, plan};
use kvmtune::config::model::WindowsVersion;
use kvmtune::host::{self, Host, HostFacts};
use kvmtune_testkit::synthetic::SyntheticHost;

/// Each host with the GPUs a VM on it passes through (the synthetic hosts that have one).
fn hosts() -> Vec<(String, HostFacts, Vec<kvmtune::values::PciAddress>, tempfile::TempDir)> {
    let mut hosts = Vec::new();
    let mut tarballs: Vec<PathBuf> = ["hwloc", "lscpu-dumps"]
        .into_iter()
        .flat_map(kvmtune_testkit::corpus_files)
        .filter(|p| p.to_string_lossy().ends_with(".tar.bz2") || p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    tarballs.sort();
    for tarball in tarballs {
        let (guard, root) = kvmtune_testkit::unpack(&tarball);
        let facts = host::probe(&Host::snapshot(&root).unwrap());
        let name = tarball.file_name().unwrap().to_string_lossy().split(".tar").next().unwrap().to_string();
        hosts.push((name, facts, Vec::new(), guard));
    }
    for machine in SyntheticHost::all() {
        let dir = tempfile::tempdir().unwrap();
        machine.write(dir.path());
        hosts.push((
            format!("synthetic {}", machine.name),
            host::probe(&Host::snapshot(dir.path()).unwrap()),
            machine
                .gpus
                .iter()
                .map(|(address, _)| address.parse().expect("a synthetic GPU address"))
                .collect(),
            dir,
        ));
    }
    hosts
}

#[derive(Default)]
struct Totals {
    sizes: usize,
    smt_splits: usize,
    l3_excess: usize,
    node_excess: usize,
    housekeeping: usize,
    off_gpu_node: usize,
}

impl Totals {
    fn add(&mut self, q: &PlacementQuality) {
        self.sizes += 1;
        self.smt_splits += q.smt_splits;
        self.l3_excess += q.l3_spanned.saturating_sub(q.l3_lower_bound);
        self.node_excess += q.nodes_spanned.saturating_sub(q.nodes_lower_bound);
        self.housekeeping += q.housekeeping_overlaps;
    }
}

fn planner_table() {
    println!("planner: every VM size that fits (1 vCPU up to the host's usable CPUs)");
    println!(
        "{:<42} {:>6} {:>6} {:>11} {:>12} {:>13} {:>13} {:>13}",
        "host", "CPUs", "sizes", "SMT splits", "L3 excess", "node excess", "on host share", "off GPU node"
    );
    let mut all = Totals::default();
    for (name, facts, gpus, _guard) in hosts() {
        let cpus = facts.topology.online.known().map_or(0, |c| c.len() as u32);
        let mut totals = Totals::default();
        for vcpus in 1..=cpus {
            let request = PlanRequest {
                windows: WindowsVersion::Win11,
                workload: Workload::Desktop,
                migratable: false,
                nested: false,
                housekeeping: None,
                vms: vec![VmRequest {
                    name: "vm".into(),
                    vcpus: Some(vcpus),
                    memory_mib: 4096,
                    devices: gpus.clone(),
                }],
            };
            match plan(&facts, &request) {
                Ok(plan) => {
                    let vm = &plan.vms[0];
                    let q =
                        quality(&facts, &vm.placement.vcpu_cpus, vm.placement.threads, &plan.housekeeping);
                    if q.excess() > 0 {
                        println!("  excess at {vcpus} vCPUs on {name}: {q:?}, CPUs {}", vm.placement.cpus());
                    }
                    totals.add(&q);
                    all.add(&q);
                    let off_gpu =
                        vm.devices.iter().any(|d| d.node.is_some_and(|n| !vm.placement.nodes.contains(&n)));
                    totals.off_gpu_node += usize::from(off_gpu);
                    all.off_gpu_node += usize::from(off_gpu);
                }
                Err(PlanError::HostTooSmall(_)) => {}
                Err(e) => panic!("{name} {vcpus}: {e}"),
            }
        }
        println!(
            "{:<42} {:>6} {:>6} {:>11} {:>12} {:>13} {:>13} {:>13}",
            name,
            cpus,
            totals.sizes,
            totals.smt_splits,
            totals.l3_excess,
            totals.node_excess,
            totals.housekeeping,
            totals.off_gpu_node
        );
    }
    println!(
        "{:<42} {:>6} {:>6} {:>11} {:>12} {:>13} {:>13} {:>13}",
        "all",
        "",
        all.sizes,
        all.smt_splits,
        all.l3_excess,
        all.node_excess,
        all.housekeeping,
        all.off_gpu_node
    );
}

fn user_table() {
    println!();
    println!("real pinnings (../shared/corpus/user-xml), on a host built to the CPU their SOURCES.md names,");
    println!(
        "numbered as Linux usually does (SMT sibling of core c is c + cores); the host share is what their"
    );
    println!("emulator/iothread pins show, else the one core kvmtune would keep (hk: vCPUs on it)");
    println!(
        "{:<64} {:<16} {:>6} {:>6} {:>8} {:>8} {:>6} {:>9}",
        "config", "host", "vCPUs", "SMT", "L3 +", "nodes +", "hk", "emu/vCPU"
    );
    let dir = kvmtune_testkit::corpus().join("user-xml");
    let (mut measured, mut defective) = (0, 0);
    for (file, machine) in SyntheticHost::for_user_xml() {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let config = kvmtune::config::read(file, &text).unwrap();
        let root = tempfile::tempdir().unwrap();
        machine.write(root.path());
        let facts = host::probe(&Host::snapshot(root.path()).unwrap());
        // Only the vCPUs that run (`current`, `<vcpus enabled='no'>`), as PIN001 counts them.
        let running = config.running_vcpus();
        let vcpus = running.len();
        let pins: Option<Vec<u32>> = running
            .iter()
            .map(|v| {
                config
                    .pinning
                    .vcpupin
                    .iter()
                    .find(|p| p.id == v)
                    .filter(|p| p.cpus.len() == 1)
                    .and_then(|p| p.cpus.first())
            })
            .collect();
        let Some(pins) = pins.filter(|p| !p.is_empty()) else {
            println!("{:<64} {:<16} {:>6} not pinned one vCPU to one CPU", file, machine.name, vcpus);
            continue;
        };
        let threads = config.cpu.topology.as_ref().map_or(1, |t| t.value.threads.max(1));
        let pinned_for_host = config
            .pinning
            .iothreadpin
            .iter()
            .map(|pin| pin.cpus.clone())
            .chain(config.pinning.emulatorpin.as_ref().map(|pin| pin.value.clone()))
            .fold(kvmtune::values::CpuSet::new(), |all, cpus| all.union(&cpus));
        let host_share = if pinned_for_host.is_empty() {
            default_host_share(&facts, &pins.iter().copied().collect()).cpus
        } else {
            pinned_for_host
        };
        let q = quality(&facts, &pins, threads, &host_share);
        let vcpu_set: kvmtune::values::CpuSet = pins.iter().copied().collect();
        let emulator_overlap =
            config.pinning.emulatorpin.as_ref().map_or(0, |e| e.value.intersection(&vcpu_set).len());
        measured += 1;
        if q.excess() + emulator_overlap > 0 {
            defective += 1;
        }
        println!(
            "{:<64} {:<16} {:>6} {:>6} {:>8} {:>8} {:>6} {:>9}",
            file,
            machine.name,
            vcpus,
            q.smt_splits,
            q.l3_spanned.saturating_sub(q.l3_lower_bound),
            q.nodes_spanned.saturating_sub(q.nodes_lower_bound),
            q.housekeeping_overlaps,
            emulator_overlap
        );
    }
    println!(
        "{defective} of {measured} measured real pinnings have at least one defect (kvmtune's plans: none, table above)"
    );
}

fn main() {
    planner_table();
    user_table();
}
