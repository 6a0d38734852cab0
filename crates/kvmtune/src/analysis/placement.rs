//! Where vCPUs go: whole host cores, inside as few L3 groups and NUMA nodes as the size allows,
//! off the housekeeping CPUs, never shared between VMs.
//!
//! The unit is the host core (its SMT siblings): a guest core's threads land on one host core's
//! siblings, so the guest's scheduler and the host's agree on what shares a core.

use serde::Serialize;

use crate::host::HostFacts;
use crate::host::fact::Fact;
use crate::host::topology::CoreType;
use crate::values::CpuSet;
use thiserror::Error;

/// Why no placement fits; the planner reports it as its own error.
#[derive(Debug, Error)]
pub enum PlacementError {
    #[error("the host is too small: {0}")]
    HostTooSmall(String),
    #[error("contradicting options: {0}")]
    Contradiction(String),
}

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

/// Why the host keeps the CPUs it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostShareSource {
    /// `--housekeeping`.
    Configured,
    /// The CPUs the kernel's `isolcpus=` leaves to the host.
    Isolcpus,
    /// A hybrid Intel part: the E-cores take the host's work.
    EfficiencyCores,
    /// A config's own emulator and iothread pins (`check`).
    ConfigPins,
    /// Chosen with the VMs: the fewest whole cores (one) that cost no VM an L3 group or a NUMA
    /// node it could otherwise avoid.
    Chosen,
}

/// The host's share of the CPUs: where its interrupts, QEMU's emulator and I/O threads run.
/// Every CPU that no VM takes is the host's too; this is the part set aside for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostShare {
    pub cpus: CpuSet,
    pub source: HostShareSource,
}

impl HostShare {
    pub fn reason(&self) -> &'static str {
        match self.source {
            HostShareSource::Configured => "as configured (--housekeeping)",
            HostShareSource::Isolcpus => "the CPUs the kernel's isolcpus= leaves to the host",
            HostShareSource::EfficiencyCores => {
                "a hybrid part: the E-cores take the host's work, the P-cores run vCPUs"
            }
            HostShareSource::ConfigPins => "the config's own emulator and iothread pins",
            HostShareSource::Chosen => {
                "chosen with the VMs: one whole core (with its SMT siblings) where it costs no VM an L3 group or a NUMA node, as near the VM as that allows, and a core left free on each other VM's node for its emulator; every CPU no VM takes stays the host's too"
            }
        }
    }
}

/// Housekeeping the host has decided for itself, whatever the VMs: `isolcpus=` or E-cores.
/// `tune` and `check` both count it before anything else.
pub fn host_wide_share(host: &HostFacts) -> Option<HostShare> {
    if let Fact::Known(cmdline) = &host.kernel.cmdline
        && let (Some(isolated), Fact::Known(online)) = (&cmdline.isolcpus, &host.topology.online)
    {
        return Some(HostShare {
            cpus: online.difference(&isolated.cpus),
            source: HostShareSource::Isolcpus,
        });
    }
    if let Fact::Known(Some(types)) = &host.topology.core_types
        && !types.efficiency.is_empty()
        && !types.performance.is_empty()
    {
        return Some(HostShare { cpus: types.efficiency.clone(), source: HostShareSource::EfficiencyCores });
    }
    None
}

/// The host share for vCPUs already placed on `vcpu_cpus`, where nothing else says it: the
/// host-wide share if there is one, else the free core nearest the vCPUs (in one of their L3
/// groups, else on one of their nodes, else anywhere; the lowest-numbered among equals, so
/// CPU 0's core where it is free). Empty when the vCPUs leave the host no core. This is what
/// `tune` chooses for one VM and what `check` assumes when a config shows no host share.
pub fn default_host_share(host: &HostFacts, vcpu_cpus: &CpuSet) -> HostShare {
    if let Some(share) = host_wide_share(host) {
        return share;
    }
    HostShare {
        cpus: nearest_free_core(&host_cores(host), vcpu_cpus, vcpu_cpus),
        source: HostShareSource::Chosen,
    }
}

/// The whole core outside `taken` nearest to `near`: in one of its L3 groups, else on one of
/// its nodes, else anywhere; the lowest-numbered among equals. Empty when none is free.
fn nearest_free_core(cores: &[HostCore], taken: &CpuSet, near: &CpuSet) -> CpuSet {
    let used: Vec<&HostCore> =
        cores.iter().filter(|c| c.cpus.iter().any(|cpu| near.contains(*cpu))).collect();
    cores
        .iter()
        .filter(|c| c.cpus.iter().all(|cpu| !taken.contains(*cpu)))
        .min_by_key(|c| {
            let same_l3 = c.l3.is_some() && used.iter().any(|u| u.l3 == c.l3);
            let same_node = used.iter().any(|u| u.node == c.node);
            (!same_l3, !same_node, c.cpus[0])
        })
        .map_or_else(CpuSet::new, |c| c.cpus.iter().copied().collect())
}

/// The part of the host's share nearest a VM, for its emulator and I/O threads: the share's
/// CPUs in the VM's L3 groups, else on its nodes, else all of it.
pub fn nearest_share(host: &HostFacts, share: &CpuSet, placement: &Placement) -> CpuSet {
    let topology = &host.topology;
    let in_groups = |cpus: &mut dyn Iterator<Item = &CpuSet>| {
        cpus.fold(CpuSet::new(), |all, group| all.union(&group.intersection(share)))
    };
    let local_l3 = in_groups(
        &mut placement.l3_groups.iter().filter_map(|&g| topology.l3_groups.get(g)).map(|g| &g.cpus),
    );
    if !local_l3.is_empty() {
        return local_l3;
    }
    let local_node = in_groups(
        &mut topology.numa_nodes.iter().filter(|n| placement.nodes.contains(&n.node)).map(|n| &n.cpus),
    );
    if !local_node.is_empty() {
        return local_node;
    }
    share.clone()
}

/// The CPUs of the core that holds the lowest-numbered online CPU (CPU 0's core, usually):
/// the boot CPU, which keeps work that cannot move. Plans keep it for the host where that
/// costs nothing.
fn boot_core(cores: &[HostCore]) -> CpuSet {
    cores.iter().min_by_key(|c| c.cpus[0]).map_or_else(CpuSet::new, |c| c.cpus.iter().copied().collect())
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
/// `threads` vCPUs per host core, counted in whole cores (a guest core is one host core). The
/// host keeps its host-wide share (`isolcpus=`, E-cores) where it has one; otherwise it needs
/// one core, anywhere: the bound is the best over every place that core could go.
pub fn spread_lower_bounds(host: &HostFacts, vcpus: usize, threads: u32) -> (usize, usize) {
    let host_wide = host_wide_share(host);
    let threads = threads.max(1) as usize;
    let all = host_cores(host);
    let cores: Vec<&HostCore> = all
        .iter()
        .filter(|c| c.cpus.len() >= threads)
        .filter(|c| host_wide.as_ref().is_none_or(|s| c.cpus.iter().all(|cpu| !s.cpus.contains(*cpu))))
        .collect();
    let needed = vcpus.div_ceil(threads);
    // A core too small for a guest core (an offline sibling) can be the host's at no cost.
    let one_core_kept = host_wide.is_none() && cores.len() == all.len();
    let capacity = |cpus: &CpuSet| cores.iter().filter(|c| cpus.contains(c.cpus[0])).count();
    let bound = |capacities: Vec<usize>| {
        if !one_core_kept {
            return fewest_groups(capacities, needed);
        }
        (0..capacities.len())
            .filter(|&i| capacities[i] > 0)
            .map(|i| {
                let mut less = capacities.clone();
                less[i] -= 1;
                fewest_groups(less, needed)
            })
            .min()
            .unwrap_or_else(|| fewest_groups(capacities, needed))
    };
    let l3 = bound(host.topology.l3_groups.iter().map(|g| capacity(&g.cpus)).collect());
    let nodes = bound(host.topology.numa_nodes.iter().map(|n| capacity(&n.cpus)).collect());
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
    /// The node of the host's housekeeping core: among equal choices the VM goes there, so
    /// that its emulator and I/O threads are local.
    pub near_node: Option<u32>,
    /// CPUs the VM leaves alone among equal choices (CPU 0's core).
    pub avoid: CpuSet,
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
) -> Result<Placement, PlacementError> {
    let mut free: Vec<&HostCore> = cores
        .iter()
        .filter(|c| c.cpus.iter().all(|cpu| !reserved.contains(*cpu) && !taken.contains(*cpu)))
        .collect();
    // On hybrid parts vCPUs run on P-cores only, whatever the housekeeping set says.
    if free.iter().any(|c| !c.efficiency) {
        free.retain(|c| !c.efficiency);
    }
    if free.is_empty() {
        return Err(PlacementError::HostTooSmall(
            "no host core is left for vCPUs after housekeeping and other VMs".into(),
        ));
    }
    // The host's SMT width; cores with an offline sibling cannot hold a guest core's threads.
    let smt = free.iter().map(|c| c.cpus.len()).max().unwrap_or(1).max(1) as u32;
    let whole = free.iter().filter(|c| c.cpus.len() as u32 >= smt).count() as u32;
    let threads = match wish.vcpus {
        Some(0) => return Err(PlacementError::Contradiction("a VM needs at least one vCPU".into())),
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
        (
            Some(n) != wish.node,
            !(wish.prefer_vcache && has_vcache(n)),
            Some(n) != wish.near_node,
            std::cmp::Reverse(free_in(n)),
            n,
        )
    });
    if let Some(node) = wish.node
        && !nodes.contains(&node)
    {
        return Err(PlacementError::HostTooSmall(format!(
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
        return Err(PlacementError::HostTooSmall(format!(
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
    let touches_avoided =
        |members: &[&HostCore]| members.iter().any(|c| c.cpus.iter().any(|cpu| wish.avoid.contains(*cpu)));
    let fitting = (chosen_nodes.len() == 1).then(|| groups_of(chosen_nodes[0])).and_then(|groups| {
        groups.into_iter().filter(|(_, m)| m.len() >= cores_needed as usize).min_by_key(|(l3, m)| {
            // A group that holds more than the VM keeps its spare cores for the host, so the
            // avoided core only counts where the VM would have to take it.
            let takes_avoided = m.len() == cores_needed as usize && touches_avoided(m);
            (!(wish.prefer_vcache && m[0].vcache), takes_avoided, m.len(), *l3)
        })
    });
    match fitting {
        Some((_, mut members)) => {
            members.sort_by_key(|c| (c.cpus.iter().any(|cpu| wish.avoid.contains(*cpu)), c.cpus[0]));
            picked.extend(members.into_iter().take(cores_needed as usize));
        }
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

/// Every VM placed, and the host's share chosen with them.
#[derive(Debug, Clone)]
pub struct Placed {
    /// In the order of the wishes.
    pub placements: Vec<Placement>,
    pub host_share: HostShare,
}

/// Places every VM, in the order given (the caller puts larger VMs first so that they get
/// whole L3 groups), and chooses the host's share with them.
///
/// With a share given (`--housekeeping`) or host-wide (`isolcpus=`, E-cores), the VMs go
/// around it. Otherwise the host needs one whole core, and where it goes is part of the
/// choice: each group of cores (a NUMA node's L3 group) offers its lowest core, the VMs are
/// placed around it, and the best outcome wins, by
/// 1. the fewest L3 groups and NUMA nodes beyond each VM's lower bound;
/// 2. the largest VMs where their size is left to the planner;
/// 3. VMs on their passed-through device's node;
/// 4. gaming VMs on the V-Cache CCD;
/// 5. CPU 0's core left to the host;
/// 6. the host's core on the first VM's node, then in its L3 group;
/// 7. the lowest-numbered host core.
///
/// (Hybrid parts put vCPUs on P-cores in [`place`] itself.)
pub fn place_all(
    host: &HostFacts,
    cores: &[HostCore],
    wishes: &[PlacementWish],
    given: Option<HostShare>,
) -> Result<Placed, PlacementError> {
    if let Some(share) = given.or_else(|| host_wide_share(host)) {
        let placements = place_each(cores, &share.cpus, wishes)?;
        return Ok(Placed { placements, host_share: share });
    }
    let boot = boot_core(cores);
    let mut candidates: Vec<&HostCore> = Vec::new();
    for core in cores {
        if !candidates.iter().any(|c| c.node == core.node && c.l3 == core.l3) {
            candidates.push(core);
        }
    }
    let has_vcache = cores.iter().any(|c| c.vcache);
    let mut best: Option<(PlacementScore, Vec<Placement>)> = None;
    let mut last_error = None;
    for candidate in candidates {
        let reserved: CpuSet = candidate.cpus.iter().copied().collect();
        let around: Vec<PlacementWish> = wishes
            .iter()
            .map(|w| PlacementWish { near_node: Some(candidate.node), avoid: boot.clone(), ..w.clone() })
            .collect();
        let placements = match place_each(cores, &reserved, &around) {
            Ok(placements) => placements,
            Err(error) => {
                last_error = Some(error);
                continue;
            }
        };
        let first = &placements[0];
        let score = PlacementScore {
            excess: wishes
                .iter()
                .zip(&placements)
                .map(|(_, p)| {
                    let (l3, nodes) = spread_lower_bounds(host, p.vcpu_cpus.len(), p.threads);
                    p.l3_groups.len().saturating_sub(l3) + p.nodes.len().saturating_sub(nodes)
                })
                .sum(),
            smaller: std::cmp::Reverse(
                wishes.iter().zip(&placements).filter(|(w, _)| w.vcpus.is_none()).map(|(_, p)| p.cores).sum(),
            ),
            off_device_node: wishes
                .iter()
                .zip(&placements)
                .filter(|(w, p)| w.node.is_some_and(|n| !p.nodes.contains(&n)))
                .count(),
            off_vcache: wishes
                .iter()
                .zip(&placements)
                .filter(|(w, p)| {
                    w.prefer_vcache
                        && has_vcache
                        && !p
                            .l3_groups
                            .iter()
                            .any(|&g| host.topology.l3_groups.get(g).is_some_and(|g| g.larger_than_others))
                })
                .count(),
            takes_boot_core: placements.iter().any(|p| p.vcpu_cpus.iter().any(|cpu| boot.contains(*cpu))),
            host_core_far: (
                !first.nodes.contains(&candidate.node),
                candidate.l3.is_none_or(|l3| !first.l3_groups.contains(&l3)),
            ),
            host_core: candidate.cpus[0],
        };
        if best.as_ref().is_none_or(|(best_score, _)| score < *best_score) {
            best = Some((score, placements));
        }
    }
    let Some((_, placements)) = best else {
        return Err(last_error.unwrap_or_else(|| PlacementError::HostTooSmall("the host has no core".into())));
    };
    let mut taken = placements.iter().fold(CpuSet::new(), |all, p| all.union(&p.cpus()));
    let mut share = nearest_free_core(cores, &taken, &placements[0].cpus());
    // A VM whose node the share misses gets the nearest core left free on its node, where there
    // is one: it costs no VM anything, and keeps that VM's emulator and I/O threads local.
    for placement in &placements[1..] {
        taken = taken.union(&share);
        let on_its_node = cores
            .iter()
            .any(|c| placement.nodes.contains(&c.node) && c.cpus.iter().any(|cpu| share.contains(*cpu)));
        if on_its_node {
            continue;
        }
        let local = nearest_free_core(cores, &taken, &placement.cpus());
        let local_core = cores.iter().find(|c| local.first().is_some_and(|cpu| c.cpus.contains(&cpu)));
        if local_core.is_some_and(|c| placement.nodes.contains(&c.node)) {
            share = share.union(&local);
        }
    }
    Ok(Placed { placements, host_share: HostShare { cpus: share, source: HostShareSource::Chosen } })
}

/// How [`place_all`] ranks the outcomes of each place the host's core could go; lower is better,
/// field by field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PlacementScore {
    excess: usize,
    smaller: std::cmp::Reverse<u32>,
    off_device_node: usize,
    off_vcache: usize,
    takes_boot_core: bool,
    host_core_far: (bool, bool),
    host_core: u32,
}

/// Each VM in turn on the cores the others and `reserved` leave.
fn place_each(
    cores: &[HostCore],
    reserved: &CpuSet,
    wishes: &[PlacementWish],
) -> Result<Vec<Placement>, PlacementError> {
    let mut taken = CpuSet::new();
    let mut placements = Vec::with_capacity(wishes.len());
    for wish in wishes {
        let placement = place(cores, reserved, &taken, wish)?;
        taken = taken.union(&placement.cpus());
        placements.push(placement);
    }
    Ok(placements)
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

/// Measures any pinning (vCPU i on host CPU `vcpu_cpus[i]`, guest cores of `threads`) against
/// the host's share of the CPUs.
pub fn quality(host: &HostFacts, vcpu_cpus: &[u32], threads: u32, housekeeping: &CpuSet) -> PlacementQuality {
    let cpus: CpuSet = vcpu_cpus.iter().copied().collect();
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
        housekeeping_overlaps: cpus.intersection(housekeeping).len(),
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
