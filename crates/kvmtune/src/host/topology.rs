//! Per-CPU topology and the groups a pinning planner works with: SMT sibling sets, L3 groups
//! (CCX/CCD on AMD), NUMA nodes, packages, and P/E core types on hybrid Intel parts.
//!
//! Source: the kernel's CPU topology ABI (Documentation/ABI/stable/sysfs-devices-system-cpu,
//! Documentation/admin-guide/cputopology.rst) and cacheinfo
//! (`/sys/devices/system/cpu/cpuN/cache/indexK/`). hwloc reads the same files; its output on
//! the corpus snapshots is the oracle for this module's tests.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::host::cpu::{CpuInfo, CpuVendor};
use crate::host::fact::Fact;
use crate::host::{Host, numbered_entries};
use crate::values::CpuSet;
use crate::values::size::{self, Units};

const CPU_DIR: &str = "/sys/devices/system/cpu";
const NODE_DIR: &str = "/sys/devices/system/node";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Every CPU number the kernel could ever bring up, hotplug slots included.
    pub possible: Fact<CpuSet>,
    /// CPUs that exist.
    pub present: Fact<CpuSet>,
    pub online: Fact<CpuSet>,
    /// Present CPUs that are not online. A planner must never pin to them.
    pub offline: Fact<CpuSet>,
    pub smt: Fact<SmtState>,
    /// One entry per logical CPU the kernel lists, online or not.
    pub cpus: Vec<LogicalCpu>,
    /// Hardware threads that share one core, one set per core (online CPUs only).
    pub smt_sibling_sets: Vec<CpuSet>,
    pub l3_groups: Vec<CacheGroup>,
    pub numa_nodes: Vec<NodeCpus>,
    pub packages: Vec<PackageCpus>,
    /// Present only on hybrid parts; `Known(None)` means "checked, not hybrid".
    pub core_types: Fact<Option<CoreTypes>>,
    /// Files that could not be read, with the reason. The facts that needed them are absent.
    pub unknowns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtState {
    /// `on`, `off`, `forceoff`, `notsupported` or `notimplemented`.
    pub control: String,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalCpu {
    pub cpu: u32,
    pub online: bool,
    pub package: Option<u32>,
    pub die: Option<u32>,
    pub core: Option<u32>,
    pub smt_siblings: Option<CpuSet>,
    pub l2: Option<CacheInstance>,
    pub l3: Option<CacheInstance>,
    pub numa_node: Option<u32>,
    pub core_type: Option<CoreType>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInstance {
    /// The kernel's cache `id` where it exports one (5.0 and later), else absent.
    pub id: Option<u32>,
    pub size_kib: Option<u64>,
    pub shared_cpus: CpuSet,
}

/// One last-level cache and the CPUs that share it: a CCX (Zen 1/2), a CCD (Zen 3 and later),
/// or a whole package on most Intel parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheGroup {
    /// Position in CPU order, stable across runs on the same host.
    pub index: usize,
    pub cache_id: Option<u32>,
    pub size_kib: Option<u64>,
    pub cpus: CpuSet,
    pub numa_nodes: Vec<u32>,
    /// Larger than the smallest L3 on this host: an X3D part's V-Cache CCD.
    pub larger_than_others: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCpus {
    pub node: u32,
    pub cpus: CpuSet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageCpus {
    pub package: u32,
    pub cpus: CpuSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreType {
    /// P-core (Intel "Core").
    Performance,
    /// E-core (Intel "Atom").
    Efficiency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreTypes {
    pub performance: CpuSet,
    pub efficiency: CpuSet,
    /// How the kinds were told apart: the kernel's hybrid PMUs (`cpu_core`/`cpu_atom`) or,
    /// failing that, cpufreq base frequencies (as hwloc does).
    pub method: String,
}

impl Topology {
    pub fn cpu(&self, cpu: u32) -> Option<&LogicalCpu> {
        self.cpus.iter().find(|c| c.cpu == cpu)
    }

    pub fn core_count(&self) -> usize {
        self.smt_sibling_sets.len()
    }

    /// The NUMA nodes that hold any of these CPUs.
    pub fn nodes_holding(&self, cpus: &CpuSet) -> Vec<u32> {
        self.numa_nodes.iter().filter(|n| !n.cpus.intersection(cpus).is_empty()).map(|n| n.node).collect()
    }
}

pub fn probe(host: &Host, cpu_info: &CpuInfo) -> Topology {
    let mut unknowns = Vec::new();
    let mut note = |what: String| unknowns.push(what);

    let listed: Vec<u32> = match numbered_entries(host, CPU_DIR, "cpu") {
        Ok(cpus) => cpus,
        Err(error) => {
            note(error.to_string());
            Vec::new()
        }
    };
    let read_set = |name: &str| -> Fact<CpuSet> {
        let path = format!("{CPU_DIR}/{name}");
        match host.read(&path) {
            Ok(text) => CpuSet::parse_list(&text).map_err(|e| format!("{path}: {e}")).into(),
            Err(error) => Fact::Unknown(error.to_string()),
        }
    };
    let possible = read_set("possible");
    let online = match read_set("online") {
        Fact::Known(set) => Fact::Known(set),
        // Old kernels and hand-made snapshots lack the summary file; each CPU's own `online`
        // file says the same (cpu0 often has none because it cannot go offline).
        Fact::Unknown(reason) if !listed.is_empty() => {
            note(reason);
            Fact::Known(
                listed
                    .iter()
                    .copied()
                    .filter(|cpu| {
                        host.read_trimmed(&format!("{CPU_DIR}/cpu{cpu}/online"))
                            .map(|v| v != "0")
                            .unwrap_or(true)
                    })
                    .collect(),
            )
        }
        unknown => unknown,
    };
    // `possible` counts hotplug slots that may never hold a CPU; `present` (or, where a
    // snapshot lacks it, the cpuN directories) is what exists, and what hwloc counts.
    let present = match read_set("present") {
        Fact::Unknown(_) if !listed.is_empty() => Fact::Known(listed.iter().copied().collect::<CpuSet>()),
        other => other,
    };
    let offline = match (&present, &online) {
        (Fact::Known(present), Fact::Known(online)) => Fact::Known(present.difference(online)),
        (Fact::Unknown(reason), _) | (_, Fact::Unknown(reason)) => Fact::Unknown(reason.clone()),
    };
    let smt = match (
        host.read_trimmed(&format!("{CPU_DIR}/smt/control")),
        host.read_trimmed(&format!("{CPU_DIR}/smt/active")),
    ) {
        (Ok(control), Ok(active)) => Fact::Known(SmtState { control, active: active == "1" }),
        (Err(error), _) | (_, Err(error)) => Fact::Unknown(error.to_string()),
    };

    let online_set = online.known().cloned().unwrap_or_default();
    let node_of = node_cpus(host, &online_set, &mut note);
    let mut cpus: Vec<LogicalCpu> = listed
        .iter()
        .map(|&cpu| read_cpu(host, cpu, online_set.contains(cpu), &node_of, &mut note))
        .collect();

    split_compute_units(&mut cpus);

    let core_types = detect_core_types(host, cpu_info, &online_set);
    if let Fact::Known(Some(types)) = &core_types {
        for cpu in &mut cpus {
            cpu.core_type = if types.performance.contains(cpu.cpu) {
                Some(CoreType::Performance)
            } else if types.efficiency.contains(cpu.cpu) {
                Some(CoreType::Efficiency)
            } else {
                None
            };
        }
    }

    let online_cpus: Vec<&LogicalCpu> = cpus.iter().filter(|c| c.online).collect();
    let smt_sibling_sets = distinct_sets(online_cpus.iter().map(|c| {
        c.smt_siblings
            .as_ref()
            .map(|s| s.intersection(&online_set))
            .unwrap_or_else(|| [c.cpu].into_iter().collect())
    }));
    let l3_groups = cache_groups(&online_cpus, &online_set, &node_of.nodes);
    let packages = {
        let mut by_package: BTreeMap<u32, CpuSet> = BTreeMap::new();
        for cpu in &online_cpus {
            if let Some(package) = cpu.package {
                by_package.entry(package).or_default().insert(cpu.cpu);
            }
        }
        by_package.into_iter().map(|(package, cpus)| PackageCpus { package, cpus }).collect()
    };

    Topology {
        possible,
        present,
        online,
        offline,
        smt,
        cpus,
        smt_sibling_sets,
        l3_groups,
        numa_nodes: node_of.nodes,
        packages,
        core_types,
        unknowns,
    }
}

struct NodeMap {
    nodes: Vec<NodeCpus>,
}

impl NodeMap {
    fn node_of(&self, cpu: u32) -> Option<u32> {
        self.nodes.iter().find(|n| n.cpus.contains(cpu)).map(|n| n.node)
    }
}

fn node_cpus(host: &Host, online: &CpuSet, note: &mut impl FnMut(String)) -> NodeMap {
    let numbers = match numbered_entries(host, NODE_DIR, "node") {
        Ok(numbers) if !numbers.is_empty() => numbers,
        Ok(_) | Err(_) => {
            // A kernel built without CONFIG_NUMA has no node directory: the whole machine is
            // one node, which is also how hwloc reports it.
            note(format!("{NODE_DIR} lists no nodes; treating the host as one NUMA node"));
            return NodeMap { nodes: vec![NodeCpus { node: 0, cpus: online.clone() }] };
        }
    };
    let mut nodes = Vec::new();
    for node in numbers {
        let dir = format!("{NODE_DIR}/node{node}");
        let cpus = match read_cpuset(host, &dir, &["cpulist"], &["cpumap"]) {
            Ok(cpus) => cpus.intersection(online),
            Err(reason) => {
                note(reason);
                CpuSet::new()
            }
        };
        nodes.push(NodeCpus { node, cpus });
    }
    NodeMap { nodes }
}

fn read_cpu(
    host: &Host,
    cpu: u32,
    online: bool,
    nodes: &NodeMap,
    note: &mut impl FnMut(String),
) -> LogicalCpu {
    let mut logical = LogicalCpu {
        cpu,
        online,
        package: None,
        die: None,
        core: None,
        smt_siblings: None,
        l2: None,
        l3: None,
        numa_node: nodes.node_of(cpu),
        core_type: None,
    };
    if !online {
        // The kernel tears down topology and cache directories of offline CPUs (or leaves
        // stale ones): nothing there is trustworthy.
        return logical;
    }
    let base = format!("{CPU_DIR}/cpu{cpu}");
    let mut number = |name: &str| -> Option<u32> {
        let path = format!("{base}/topology/{name}");
        match host.read_trimmed(&path) {
            // die_id is -1 where the architecture has no dies.
            Ok(text) => match text.parse::<i64>() {
                Ok(value) => u32::try_from(value).ok(),
                Err(_) => {
                    note(format!("{path}: `{text}` is not a number"));
                    None
                }
            },
            Err(error) => {
                note(error.to_string());
                None
            }
        }
    };
    logical.package = number("physical_package_id");
    logical.core = number("core_id");
    logical.die = if host.exists(&format!("{base}/topology/die_id")) { number("die_id") } else { None };
    let topology_dir = format!("{base}/topology");
    logical.smt_siblings = match read_cpuset(
        host,
        &topology_dir,
        &["core_cpus_list", "thread_siblings_list"],
        &["core_cpus", "thread_siblings"],
    ) {
        Ok(set) if set.contains(cpu) => Some(set),
        Ok(set) => {
            note(format!("{topology_dir}: SMT siblings `{set}` do not contain cpu{cpu}"));
            None
        }
        Err(reason) => {
            note(reason);
            None
        }
    };
    let (l2, l3) = read_caches(host, &base, note);
    logical.l2 = l2;
    logical.l3 = l3;
    logical
}

fn read_caches(
    host: &Host,
    base: &str,
    note: &mut impl FnMut(String),
) -> (Option<CacheInstance>, Option<CacheInstance>) {
    let cache_dir = format!("{base}/cache");
    let indexes = match numbered_entries(host, &cache_dir, "index") {
        Ok(indexes) => indexes,
        Err(error) => {
            note(error.to_string());
            return (None, None);
        }
    };
    let (mut l2, mut l3) = (None, None);
    for index in indexes {
        let dir = format!("{cache_dir}/index{index}");
        let level = host.read_trimmed(&format!("{dir}/level")).ok().and_then(|l| l.parse::<u32>().ok());
        let kind = host.read_trimmed(&format!("{dir}/type")).unwrap_or_default();
        if kind == "Instruction" || !matches!(level, Some(2 | 3)) {
            continue;
        }
        let shared_cpus = match read_cpuset(host, &dir, &["shared_cpu_list"], &["shared_cpu_map"]) {
            Ok(set) => set,
            Err(reason) => {
                note(reason);
                continue;
            }
        };
        let instance = CacheInstance {
            id: host.read_trimmed(&format!("{dir}/id")).ok().and_then(|id| id.parse().ok()),
            size_kib: host
                .read_trimmed(&format!("{dir}/size"))
                .ok()
                .and_then(|size| size::parse_kib(&size, "B", Units::Binary).ok()),
            shared_cpus,
        };
        match level {
            Some(2) => l2 = Some(instance),
            _ => l3 = Some(instance),
        }
    }
    (l2, l3)
}

/// Reads a CPU set from the first list file that exists in `dir`, else the first mask file:
/// kernels before 2.6.26 (and some hand-made snapshots) have only the `*_map`/mask spelling.
fn read_cpuset(host: &Host, dir: &str, lists: &[&str], masks: &[&str]) -> Result<CpuSet, String> {
    let candidates = lists.iter().map(|name| (name, true)).chain(masks.iter().map(|name| (name, false)));
    let mut first_error = None;
    for (name, is_list) in candidates {
        let path = format!("{dir}/{name}");
        match host.read(&path) {
            Ok(text) => {
                let parsed = if is_list { CpuSet::parse_list(&text) } else { CpuSet::parse_mask(&text) };
                return parsed.map_err(|error| format!("{path}: {error}"));
            }
            Err(error) => {
                first_error.get_or_insert(error.to_string());
            }
        }
    }
    Err(first_error.unwrap_or_else(|| format!("{dir}: nothing to read")))
}

/// Old kernels report the two integer cores of an AMD Bulldozer-family compute unit as
/// thread siblings, with distinct core ids. They are separate cores (own integer units, shared
/// FPU and L2), and hwloc splits them the same way: siblings must also share package, die and
/// core id.
fn split_compute_units(cpus: &mut [LogicalCpu]) {
    type CoreIdentity = (Option<u32>, Option<u32>, Option<u32>);
    let identity: BTreeMap<u32, CoreIdentity> =
        cpus.iter().filter(|c| c.online).map(|c| (c.cpu, (c.package, c.die, c.core))).collect();
    for cpu in cpus.iter_mut().filter(|c| c.online && c.core.is_some()) {
        let own = (cpu.package, cpu.die, cpu.core);
        if let Some(siblings) = &cpu.smt_siblings {
            cpu.smt_siblings =
                Some(siblings.iter().filter(|s| identity.get(s).is_none_or(|id| *id == own)).collect());
        }
    }
}

fn distinct_sets(sets: impl Iterator<Item = CpuSet>) -> Vec<CpuSet> {
    let unique: BTreeSet<CpuSet> = sets.filter(|s| !s.is_empty()).collect();
    let mut sets: Vec<CpuSet> = unique.into_iter().collect();
    sets.sort_by_key(|s| s.first());
    sets
}

fn cache_groups(online_cpus: &[&LogicalCpu], online: &CpuSet, nodes: &[NodeCpus]) -> Vec<CacheGroup> {
    let mut seen: Vec<(CpuSet, Option<u32>, Option<u64>)> = Vec::new();
    for cpu in online_cpus {
        let Some(l3) = &cpu.l3 else { continue };
        let cpus = l3.shared_cpus.intersection(online);
        if cpus.is_empty() || seen.iter().any(|(existing, _, _)| *existing == cpus) {
            continue;
        }
        seen.push((cpus, l3.id, l3.size_kib));
    }
    seen.sort_by_key(|(cpus, _, _)| cpus.first());
    let smallest = seen.iter().filter_map(|(_, _, size)| *size).min();
    seen.into_iter()
        .enumerate()
        .map(|(index, (cpus, cache_id, size_kib))| CacheGroup {
            index,
            cache_id,
            size_kib,
            numa_nodes: nodes
                .iter()
                .filter(|n| !n.cpus.intersection(&cpus).is_empty())
                .map(|n| n.node)
                .collect(),
            larger_than_others: matches!((size_kib, smallest), (Some(size), Some(min)) if size > min),
            cpus,
        })
        .collect()
}

/// Tells P-cores from E-cores. Only Intel parts are classified: AMD's Zen 5c "compact" cores
/// differ in cache and clocks, not in kind, and the kernel exposes no hybrid PMU for them.
fn detect_core_types(host: &Host, cpu_info: &CpuInfo, online: &CpuSet) -> Fact<Option<CoreTypes>> {
    match cpu_info.vendor {
        Fact::Known(CpuVendor::Intel) => {}
        Fact::Known(_) => return Fact::Known(None),
        Fact::Unknown(ref reason) => return Fact::Unknown(format!("CPU vendor unknown: {reason}")),
    }
    // Hybrid kernels (5.13+) register one PMU per core kind.
    let pmu = |name: &str| {
        host.read(&format!("/sys/devices/{name}/cpus")).ok().and_then(|t| CpuSet::parse_list(&t).ok())
    };
    if let (Some(performance), Some(efficiency)) = (pmu("cpu_core"), pmu("cpu_atom")) {
        return Fact::Known(Some(CoreTypes {
            performance: performance.intersection(online),
            efficiency: efficiency.intersection(online),
            method: "hybrid PMUs sys/devices/cpu_core and cpu_atom".to_string(),
        }));
    }
    // Without them, P- and E-cores still differ in base frequency, which intel_pstate exports.
    let mut by_base: BTreeMap<u64, CpuSet> = BTreeMap::new();
    for cpu in online.iter() {
        let path = format!("{CPU_DIR}/cpufreq/policy{cpu}/base_frequency");
        let alternative = format!("{CPU_DIR}/cpu{cpu}/cpufreq/base_frequency");
        let base = host.read_trimmed(&path).or_else(|_| host.read_trimmed(&alternative));
        match base.ok().and_then(|b| b.parse::<u64>().ok()) {
            Some(khz) => {
                by_base.entry(khz).or_default().insert(cpu);
            }
            None => return Fact::Known(None),
        }
    }
    if by_base.len() < 2 {
        return Fact::Known(None);
    }
    let mut kinds: Vec<CpuSet> = by_base.into_values().collect();
    let performance = kinds.pop().unwrap_or_default();
    let efficiency = kinds.into_iter().fold(CpuSet::new(), |all, set| all.union(&set));
    Fact::Known(Some(CoreTypes {
        performance,
        efficiency,
        method: "cpufreq base_frequency (highest = P-cores)".to_string(),
    }))
}
