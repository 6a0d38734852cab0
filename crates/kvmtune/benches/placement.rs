//! Placement quality: for every corpus topology and the synthetic ones (Threadripper 2950X,
//! Ryzen 7950X3D, 2x EPYC 9654, Core i9-14900K), and every VM size that fits, the planner's
//! SMT splits, L3 groups and NUMA nodes spanned beyond their lower bound, and vCPUs on
//! housekeeping CPUs. Then the same measures for the real pinnings in
//! ../shared/corpus/user-xml whose host CPU is known, on a host built to that CPU's topology.
//!
//!   cargo bench -p kvmtune --bench placement

use std::path::PathBuf;

use kvmtune::analysis::Workload;
use kvmtune::analysis::planner::placement::{PlacementQuality, quality};
use kvmtune::analysis::planner::{PlanError, PlanRequest, VmRequest, plan};
use kvmtune::config::model::WindowsVersion;
use kvmtune::host::{self, HostFacts, SnapshotHost};
use kvmtune_testkit::synthetic::SyntheticHost;

fn hosts() -> Vec<(String, HostFacts, tempfile::TempDir)> {
    let corpus = kvmtune_testkit::corpus();
    let mut hosts = Vec::new();
    let mut tarballs: Vec<PathBuf> = ["hwloc", "lscpu-dumps"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(corpus.join(dir)).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.to_string_lossy().ends_with(".tar.bz2") || p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    tarballs.sort();
    for tarball in tarballs {
        let (guard, root) = kvmtune_testkit::unpack(&tarball);
        let facts = host::probe(&SnapshotHost::open(&root).unwrap());
        let name = tarball.file_name().unwrap().to_string_lossy().split(".tar").next().unwrap().to_string();
        hosts.push((name, facts, guard));
    }
    for machine in SyntheticHost::all() {
        let dir = tempfile::tempdir().unwrap();
        machine.write(dir.path());
        hosts.push((
            format!("synthetic {}", machine.name),
            host::probe(&SnapshotHost::open(dir.path()).unwrap()),
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
        "{:<42} {:>6} {:>6} {:>11} {:>12} {:>13}",
        "host", "CPUs", "sizes", "SMT splits", "L3 excess", "node excess"
    );
    let mut all = Totals::default();
    for (name, facts, _guard) in hosts() {
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
                    devices: Vec::new(),
                }],
            };
            match plan(&facts, &request) {
                Ok(plan) => {
                    let vm = &plan.vms[0];
                    let q = quality(&facts, &vm.placement.vcpu_cpus, vm.placement.threads);
                    if q.excess() > 0 {
                        println!("  excess at {vcpus} vCPUs on {name}: {q:?}, CPUs {}", vm.placement.cpus());
                    }
                    totals.add(&q);
                    all.add(&q);
                }
                Err(PlanError::HostTooSmall(_)) => {}
                Err(e) => panic!("{name} {vcpus}: {e}"),
            }
        }
        println!(
            "{:<42} {:>6} {:>6} {:>11} {:>12} {:>13}   housekeeping overlaps {}",
            name,
            cpus,
            totals.sizes,
            totals.smt_splits,
            totals.l3_excess,
            totals.node_excess,
            totals.housekeeping
        );
    }
    println!(
        "{:<42} {:>6} {:>6} {:>11} {:>12} {:>13}   housekeeping overlaps {}",
        "all", "", all.sizes, all.smt_splits, all.l3_excess, all.node_excess, all.housekeeping
    );
}

fn user_table() {
    println!();
    println!("real pinnings (../shared/corpus/user-xml), on a host built to the CPU their SOURCES.md names,");
    println!(
        "numbered as Linux usually does (SMT sibling of core c is c + cores), housekeeping = first core"
    );
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
        let facts = host::probe(&SnapshotHost::open(root.path()).unwrap());
        let vcpus = config.vcpus.as_ref().map_or(0, |v| v.value);
        let pins: Option<Vec<u32>> = (0..vcpus)
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
        let q = quality(&facts, &pins, threads);
        let vcpu_set: kvmtune::host::cpulist::CpuSet = pins.iter().copied().collect();
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
