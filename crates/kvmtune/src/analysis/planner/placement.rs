//! Where vCPUs go: whole host cores, inside as few L3 groups and NUMA nodes as the size allows,
//! off the housekeeping CPUs, never shared between VMs.
//!
//! The unit is the host core (its SMT siblings): a guest core's threads land on one host core's
//! siblings, so the guest's scheduler and the host's agree on what shares a core.

use serde::Serialize;

use crate::analysis::planner::PlanError;
use crate::host::HostFacts;
use crate::host::cpulist::CpuSet;
use crate::host::fact::Fact;
use crate::host::topology::CoreType;

/// One host core as the planner sees it.
#[derive(Debug, Clone)]
pub struct HostCore {
    /// Its online hardware threads, lowest first.
    pub cpus: Vec<u32>,
    pub l3: Option<usize>,
    pub node: u32,
    pub efficiency: bool,
    pub vcache: bool,
}

/// Host CPUs no vCPU may take:
/// - the non-isolated CPUs when the kernel has `isolcpus=`;
/// - the E-cores on hybrid Intel parts;
/// - else the first core of every NUMA node with its SMT siblings. A node that gets vCPUs keeps
///   its first core for the host, so no node's first core is ever a vCPU's; which of them are
///   housekeeping depends on where the vCPUs go ([`housekeeping_for`]).
///
/// `check` holds configs to the same default (PIN007), so what `tune` plans, `check` accepts.
pub fn reserved_for_host(host: &HostFacts) -> CpuSet {
    if let Some(set) = host_wide_housekeeping(host) {
        return set;
    }
    host.topology
        .numa_nodes
        .iter()
        .map(|node| first_core_of(host, &node.cpus))
        .fold(CpuSet::new(), |all, set| all.union(&set))
}

/// The housekeeping CPUs for vCPUs on `vcpu_cpus`: where the host's emulator, I/O threads and
/// interrupts go. By default the first core of each NUMA node the vCPUs use, with its SMT
/// siblings; a node without vCPUs needs none, it is the host's anyway.
pub fn housekeeping_for(host: &HostFacts, vcpu_cpus: &CpuSet) -> CpuSet {
    if let Some(set) = host_wide_housekeeping(host) {
        return set;
    }
    host.topology
        .numa_nodes
        .iter()
        .filter(|node| !node.cpus.intersection(vcpu_cpus).is_empty())
        .map(|node| first_core_of(host, &node.cpus))
        .fold(CpuSet::new(), |all, set| all.union(&set))
}

/// Housekeeping the host has decided for itself, whatever the VMs: `isolcpus=` or E-cores.
fn host_wide_housekeeping(host: &HostFacts) -> Option<CpuSet> {
    if let Fact::Known(cmdline) = &host.kernel.cmdline
        && let (Some(isolated), Fact::Known(online)) = (&cmdline.isolcpus, &host.topology.online)
    {
        return Some(online.difference(&isolated.cpus));
    }
    if let Fact::Known(Some(types)) = &host.topology.core_types
        && !types.efficiency.is_empty()
        && !types.performance.is_empty()
    {
        return Some(types.efficiency.clone());
    }
    None
}

fn first_core_of(host: &HostFacts, cpus: &CpuSet) -> CpuSet {
    let Some(first) = cpus.first() else { return CpuSet::new() };
    host.topology
        .cpu(first)
        .and_then(|c| c.smt_siblings.clone())
        .unwrap_or_else(|| [first].into_iter().collect())
}

pub fn host_cores(host: &HostFacts) -> Vec<HostCore> {
    let topology = &host.topology;
    let mut cores: Vec<HostCore> = topology
        .smt_sibling_sets
        .iter()
        .filter(|set| !set.is_empty())
        .map(|set| {
            let cpus: Vec<u32> = set.iter().collect();
            let first = cpus[0];
            let l3 = topology.l3_groups.iter().position(|g| g.cpus.contains(first));
            HostCore {
                l3,
                node: topology.cpu(first).and_then(|c| c.numa_node).unwrap_or(0),
                efficiency: topology.cpu(first).and_then(|c| c.core_type) == Some(CoreType::Efficiency),
                vcache: l3.is_some_and(|i| topology.l3_groups[i].larger_than_others),
                cpus,
            }
        })
        .collect();
    cores.sort_by_key(|c| c.cpus[0]);
    cores
}

/// The fewest groups of the given capacities that hold `needed` (largest first).
pub fn fewest_groups(mut capacities: Vec<usize>, needed: usize) -> usize {
    capacities.sort_unstable_by(|a, b| b.cmp(a));
    let mut held = 0;
    for (count, capacity) in capacities.iter().enumerate() {
        if held >= needed {
            return count;
        }
        held += capacity;
    }
    capacities.len()
}

/// Lower bounds on the L3 groups and NUMA nodes `vcpus` vCPUs must span on this host, with
/// `threads` vCPUs per host core, when they stay off the housekeeping CPUs (and, on hybrid
/// parts, on P-cores). Counted in whole cores: a guest core is one host core.
pub fn spread_lower_bounds(host: &HostFacts, vcpus: usize, threads: u32) -> (usize, usize) {
    let housekeeping = reserved_for_host(host);
    let threads = threads.max(1) as usize;
    let cores: Vec<HostCore> = host_cores(host)
        .into_iter()
        .filter(|c| c.cpus.len() >= threads && c.cpus.iter().all(|cpu| !housekeeping.contains(*cpu)))
        .collect();
    let needed = vcpus.div_ceil(threads);
    let capacity = |cpus: &CpuSet| cores.iter().filter(|c| cpus.contains(c.cpus[0])).count();
    let l3 = fewest_groups(host.topology.l3_groups.iter().map(|g| capacity(&g.cpus)).collect(), needed);
    let nodes = fewest_groups(host.topology.numa_nodes.iter().map(|n| capacity(&n.cpus)).collect(), needed);
    (l3, nodes)
}

/// Preferences for one VM's placement.
#[derive(Debug, Clone, Default)]
pub struct PlacementWish {
    /// vCPUs; `None` for "the largest L3-aligned set".
    pub vcpus: Option<u32>,
    /// The NUMA node of the passed-through devices.
    pub node: Option<u32>,
    /// Gaming prefers the V-Cache CCD of an X3D part.
    pub prefer_vcache: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    /// Host CPU of vCPU i.
    pub vcpu_cpus: Vec<u32>,
    /// Guest threads per core: the host's SMT width, or 1 for an odd count.
    pub threads: u32,
    pub cores: u32,
    pub nodes: Vec<u32>,
    pub l3_groups: Vec<usize>,
}

impl Placement {
    pub fn cpus(&self) -> CpuSet {
        self.vcpu_cpus.iter().copied().collect()
    }
}

/// Places one VM on the cores not yet `taken`, none of them `reserved` for the host.
pub fn place(
    cores: &[HostCore],
    reserved: &CpuSet,
    taken: &CpuSet,
    wish: &PlacementWish,
) -> Result<Placement, PlanError> {
    let mut free: Vec<&HostCore> = cores
        .iter()
        .filter(|c| c.cpus.iter().all(|cpu| !reserved.contains(*cpu) && !taken.contains(*cpu)))
        .collect();
    // On hybrid parts vCPUs run on P-cores only, whatever the housekeeping set says.
    if free.iter().any(|c| !c.efficiency) {
        free.retain(|c| !c.efficiency);
    }
    if free.is_empty() {
        return Err(PlanError::HostTooSmall(
            "no host core is left for vCPUs after housekeeping and other VMs".into(),
        ));
    }
    // The host's SMT width; cores with an offline sibling cannot hold a guest core's threads.
    let smt = free.iter().map(|c| c.cpus.len()).max().unwrap_or(1).max(1) as u32;
    let whole = free.iter().filter(|c| c.cpus.len() as u32 >= smt).count() as u32;
    let threads = match wish.vcpus {
        Some(0) => return Err(PlanError::Contradiction("a VM needs at least one vCPU".into())),
        // An odd count cannot be whole SMT pairs: each vCPU gets a core of its own.
        Some(n) if n % smt != 0 || n / smt > whole => 1,
        _ => smt,
    };
    free.retain(|c| c.cpus.len() as u32 >= threads);

    // Nodes in order of preference: the device's, then the roomiest.
    let mut nodes: Vec<u32> = free.iter().map(|c| c.node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let free_in = |node: u32| free.iter().filter(|c| c.node == node).count();
    let has_vcache = |node: u32| free.iter().any(|c| c.node == node && c.vcache);
    nodes.sort_by_key(|&n| {
        (Some(n) != wish.node, !(wish.prefer_vcache && has_vcache(n)), std::cmp::Reverse(free_in(n)), n)
    });
    if let Some(node) = wish.node
        && !nodes.contains(&node)
    {
        return Err(PlanError::HostTooSmall(format!(
            "the device's NUMA node {node} has no free core for vCPUs"
        )));
    }

    // L3 groups of a node, roomiest first (V-Cache first when wished).
    let groups_of = |node: u32| -> Vec<(Option<usize>, Vec<&HostCore>)> {
        let mut groups: Vec<(Option<usize>, Vec<&HostCore>)> = Vec::new();
        for core in free.iter().filter(|c| c.node == node) {
            match groups.iter_mut().find(|(l3, _)| *l3 == core.l3) {
                Some((_, members)) => members.push(core),
                None => groups.push((core.l3, vec![core])),
            }
        }
        groups.sort_by_key(|(l3, members)| {
            (!(wish.prefer_vcache && members[0].vcache), std::cmp::Reverse(members.len()), *l3)
        });
        groups
    };

    let cores_needed = match wish.vcpus {
        None => groups_of(nodes[0]).first().map_or(0, |(_, members)| members.len()) as u32,
        Some(n) => n.div_ceil(threads),
    };
    let total_free = free.len() as u32;
    if cores_needed > total_free {
        return Err(PlanError::HostTooSmall(format!(
            "{} vCPUs need {cores_needed} host cores ({threads} thread(s) each), but only {total_free} are free after housekeeping{}",
            cores_needed * threads,
            if taken.is_empty() { "" } else { " and the other VMs" }
        )));
    }

    // Fewest nodes: the preferred node if it holds the VM, else the roomiest ones.
    let mut chosen_nodes = Vec::new();
    if free_in(nodes[0]) as u32 >= cores_needed {
        chosen_nodes.push(nodes[0]);
    } else {
        // As few nodes as their room allows; among such choices, nodes that share an L3 group
        // (sub-NUMA clustering splits one L3 into several nodes), then the roomiest.
        let rooms: Vec<usize> = nodes.iter().map(|&n| free_in(n)).collect();
        let node_count = fewest_groups(rooms, cores_needed as usize);
        let l3s_of = |node: u32| -> Vec<Option<usize>> {
            free.iter().filter(|c| c.node == node).map(|c| c.l3).collect()
        };
        let mut remaining = nodes.clone();
        remaining.sort_by_key(|&n| (Some(n) != wish.node, std::cmp::Reverse(free_in(n)), n));
        let mut held = 0usize;
        while held < cores_needed as usize && !remaining.is_empty() {
            let slots_after = node_count.saturating_sub(chosen_nodes.len() + 1);
            let feasible = |candidate: u32| {
                let mut others: Vec<usize> =
                    remaining.iter().filter(|&&n| n != candidate).map(|&n| free_in(n)).collect();
                others.sort_unstable_by(|a, b| b.cmp(a));
                held + free_in(candidate) + others.iter().take(slots_after).sum::<usize>()
                    >= cores_needed as usize
            };
            let chosen_l3s: Vec<Option<usize>> = chosen_nodes.iter().flat_map(|&n| l3s_of(n)).collect();
            let pick = remaining
                .iter()
                .copied()
                .filter(|&n| feasible(n))
                .min_by_key(|&n| {
                    let shares = l3s_of(n).iter().any(|l3| l3.is_some() && chosen_l3s.contains(l3));
                    (
                        chosen_nodes.is_empty() && Some(n) != wish.node,
                        !shares,
                        std::cmp::Reverse(free_in(n)),
                        n,
                    )
                })
                .unwrap_or(remaining[0]);
            remaining.retain(|&n| n != pick);
            held += free_in(pick);
            chosen_nodes.push(pick);
        }
    }

    // The fewest L3 groups: in one node, the one group that fits (the tightest fit, so big
    // groups stay whole for other VMs, unless V-Cache is wished); else the roomiest groups of
    // the chosen nodes first, the preferred node's before others of the same size.
    let mut picked: Vec<&HostCore> = Vec::new();
    let fitting = (chosen_nodes.len() == 1).then(|| groups_of(chosen_nodes[0])).and_then(|groups| {
        groups
            .into_iter()
            .filter(|(_, m)| m.len() >= cores_needed as usize)
            .min_by_key(|(l3, m)| (!(wish.prefer_vcache && m[0].vcache), m.len(), *l3))
    });
    match fitting {
        Some((_, members)) => picked.extend(members.into_iter().take(cores_needed as usize)),
        None => {
            let mut groups: Vec<(usize, Vec<&HostCore>)> = chosen_nodes
                .iter()
                .enumerate()
                .flat_map(|(rank, &node)| groups_of(node).into_iter().map(move |(_, m)| (rank, m)))
                .collect();
            groups.sort_by_key(|(rank, m)| (std::cmp::Reverse(m.len()), *rank));
            for (_, members) in groups {
                let still = cores_needed as usize - picked.len();
                if still == 0 {
                    break;
                }
                picked.extend(members.into_iter().take(still));
            }
        }
    }
    picked.sort_by_key(|c| (chosen_nodes.iter().position(|n| *n == c.node), c.l3, c.cpus[0]));
    let vcpu_cpus: Vec<u32> =
        picked.iter().flat_map(|core| core.cpus.iter().take(threads as usize).copied()).collect();
    let mut l3_groups: Vec<usize> = picked.iter().filter_map(|c| c.l3).collect();
    l3_groups.sort_unstable();
    l3_groups.dedup();
    Ok(Placement { threads, cores: picked.len() as u32, vcpu_cpus, nodes: chosen_nodes, l3_groups })
}

/// How good a placement is, against its lower bounds (the placement benchmark's measures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacementQuality {
    /// Guest cores whose threads are not siblings of one host core.
    pub smt_splits: usize,
    pub l3_spanned: usize,
    pub l3_lower_bound: usize,
    pub nodes_spanned: usize,
    pub nodes_lower_bound: usize,
    /// vCPUs on housekeeping CPUs.
    pub housekeeping_overlaps: usize,
}

impl PlacementQuality {
    pub fn excess(&self) -> usize {
        self.smt_splits
            + self.l3_spanned.saturating_sub(self.l3_lower_bound)
            + self.nodes_spanned.saturating_sub(self.nodes_lower_bound)
            + self.housekeeping_overlaps
    }
}

/// Measures any pinning (vCPU i on host CPU `vcpu_cpus[i]`, guest cores of `threads`).
pub fn quality(host: &HostFacts, vcpu_cpus: &[u32], threads: u32) -> PlacementQuality {
    let cpus: CpuSet = vcpu_cpus.iter().copied().collect();
    let housekeeping = housekeeping_for(host, &cpus);
    let siblings = |cpu: u32| host.topology.cpu(cpu).and_then(|c| c.smt_siblings.clone());
    let smt_splits = if threads > 1 {
        vcpu_cpus
            .chunks(threads as usize)
            .filter(|core| {
                let set: CpuSet = core.iter().copied().collect();
                !(set.len() == core.len() && siblings(core[0]).is_some_and(|s| set.is_subset(&s)))
            })
            .count()
    } else {
        0
    };
    let l3_spanned =
        host.topology.l3_groups.iter().filter(|g| !g.cpus.intersection(&cpus).is_empty()).count();
    let nodes_spanned =
        host.topology.numa_nodes.iter().filter(|n| !n.cpus.intersection(&cpus).is_empty()).count();
    let (l3_lower_bound, nodes_lower_bound) = spread_lower_bounds(host, vcpu_cpus.len(), threads);
    PlacementQuality {
        smt_splits,
        l3_spanned,
        l3_lower_bound,
        nodes_spanned,
        nodes_lower_bound,
        housekeeping_overlaps: cpus.intersection(&housekeeping).len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewest_groups_takes_largest_first() {
        assert_eq!(fewest_groups(vec![8, 8, 16], 10), 1);
        assert_eq!(fewest_groups(vec![8, 8], 10), 2);
        assert_eq!(fewest_groups(vec![4], 10), 1);
    }
}
