//! `kvmtune tune`: from host facts and what the user wants, a plan for each VM. Every choice is
//! a [`Decision`] with its reason and source; emitters in [`crate::output`] turn a plan into
//! libvirt XML, QEMU arguments and the other formats.
//!
//! The plan is held to `check`: its libvirt rendering, checked against the same host, has no
//! finding of warning severity or above (a property test over every corpus host).

pub mod existing;
pub mod features;
pub mod host_side;

use serde::Serialize;
use thiserror::Error;

use crate::analysis::Workload;
use crate::analysis::placement::{
    self, HostCore, HostShare, HostShareSource, Placement, PlacementError, PlacementWish, place_all,
};
use crate::config::model::WindowsVersion;
use crate::host::HostFacts;
use crate::host::fact::Fact;
use crate::values::{CpuSet, PciAddress};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the host is too small: {0}")]
    HostTooSmall(String),
    #[error("unknown device: {0}")]
    UnknownDevice(String),
    #[error("contradicting options: {0}")]
    Contradiction(String),
    #[error("host facts missing: {0}")]
    MissingFacts(String),
}

impl From<PlacementError> for PlanError {
    fn from(error: PlacementError) -> Self {
        match error {
            PlacementError::HostTooSmall(why) => PlanError::HostTooSmall(why),
            PlacementError::Contradiction(why) => PlanError::Contradiction(why),
        }
    }
}

/// One VM the user asks for.
#[derive(Debug, Clone)]
pub struct VmRequest {
    pub name: String,
    /// `None`: the largest L3-aligned set that leaves the housekeeping CPUs.
    pub vcpus: Option<u32>,
    pub memory_mib: u64,
    /// PCI addresses to pass through (`0000:01:00.0`).
    pub devices: Vec<PciAddress>,
}

#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub windows: WindowsVersion,
    pub workload: Workload,
    pub migratable: bool,
    /// WSL2, VBS/HVCI or the Hyper-V role inside the guest.
    pub nested: bool,
    /// Overrides the default housekeeping CPUs.
    pub housekeeping: Option<CpuSet>,
    pub vms: Vec<VmRequest>,
}

/// One choice, why, and where that knowledge comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// `pinning`, `enlightenments`, `timers`, `cpu`, `memory`, `devices`.
    pub topic: &'static str,
    pub choice: String,
    pub reason: String,
    pub source: String,
    /// The `check` rules that would flag the opposite choice; empty for choices no rule checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<&'static str>,
    /// Changes to the host this choice needs first (`kvmtune host` applies such actions).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_actions: Vec<crate::hostchange::HostAction>,
}

impl Decision {
    pub fn new(
        topic: &'static str,
        choice: impl Into<String>,
        reason: impl Into<String>,
        source: &'static str,
    ) -> Self {
        Self {
            topic,
            choice: choice.into(),
            reason: reason.into(),
            source: source.to_string(),
            rules: Vec::new(),
            host_actions: Vec::new(),
        }
    }

    /// A choice that `check` rules also check: the reason and source are the rules', cited by
    /// id rather than restated, so plan and check cannot drift apart.
    pub fn checked_by(topic: &'static str, choice: impl Into<String>, rules: &[&'static str]) -> Self {
        let titles: Vec<String> = rules
            .iter()
            .map(|id| match crate::analysis::rule::find(id) {
                Some(rule) => format!("{id}, {}", rule.meta().title),
                None => id.to_string(),
            })
            .collect();
        Self {
            topic,
            choice: choice.into(),
            reason: format!("avoids what `kvmtune check` reports: {}", titles.join("; ")),
            source: format!("kvmtune explain {} (each rule names its sources)", rules.join(", ")),
            rules: rules.to_vec(),
            host_actions: Vec::new(),
        }
    }

    /// The same decision, needing these host changes first.
    pub fn with_host_actions(mut self, actions: Vec<crate::hostchange::HostAction>) -> Self {
        self.host_actions = actions;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuestTopology {
    pub sockets: u32,
    pub dies: u32,
    pub cores: u32,
    pub threads: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HugepagePlan {
    pub page_size_kib: u64,
    pub pages: u64,
    pub node: Option<u32>,
    /// The host has them reserved and free now; only then does the config ask for them (a VM
    /// asking for pages the host lacks does not start).
    pub reserved: bool,
}

/// One guest NUMA node of a VM that spans host nodes: the vCPUs and memory it puts on one host
/// node, so that Windows' scheduler and allocator see the host's real nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuestNumaCell {
    pub id: u32,
    /// Guest vCPU numbers.
    pub vcpus: CpuSet,
    pub memory_mib: u64,
    pub host_node: u32,
}

impl GuestNumaCell {
    /// As the fix action that writes it into a config.
    pub fn as_fix(&self) -> crate::config::edit::GuestCell {
        crate::config::edit::GuestCell {
            id: self.id,
            cpus: self.vcpus.to_string(),
            memory_kib: self.memory_mib * 1024,
            host_node: self.host_node,
        }
    }
}

/// One cell per host node the placement uses, in the placement's node order, with memory in
/// proportion to the cell's vCPUs, in whole units of `granularity_mib` (the hugepage size),
/// the last cell taking the rest. Empty for a VM on one node.
fn guest_numa(
    host: &HostFacts,
    placement: &Placement,
    memory_mib: u64,
    granularity_mib: u64,
) -> Vec<GuestNumaCell> {
    if placement.nodes.len() < 2 {
        return Vec::new();
    }
    let total = placement.vcpu_cpus.len() as u64;
    let granularity = granularity_mib.max(1);
    let mut cells: Vec<GuestNumaCell> = Vec::new();
    for (id, &node) in placement.nodes.iter().enumerate() {
        let Some(node_cpus) = host.topology.numa_nodes.iter().find(|n| n.node == node).map(|n| &n.cpus)
        else {
            continue;
        };
        let vcpus: CpuSet = (0u32..)
            .zip(&placement.vcpu_cpus)
            .filter(|(_, cpu)| node_cpus.contains(**cpu))
            .map(|(vcpu, _)| vcpu)
            .collect();
        let share = memory_mib * vcpus.len() as u64 / total.max(1) / granularity * granularity;
        cells.push(GuestNumaCell { id: id as u32, vcpus, memory_mib: share, host_node: node });
    }
    let assigned: u64 = cells.iter().map(|c| c.memory_mib).sum();
    if let Some(last) = cells.last_mut() {
        last.memory_mib += memory_mib - assigned;
    }
    cells
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Passthrough {
    pub address: PciAddress,
    pub node: Option<u32>,
    pub is_gpu: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmPlan {
    pub name: String,
    pub vcpus: u32,
    pub placement: Placement,
    pub topology: GuestTopology,
    pub emulator_cpus: CpuSet,
    pub iothreads: u32,
    pub iothread_cpus: CpuSet,
    pub memory_mib: u64,
    /// The node memory is bound to (`numatune strict`), when the vCPUs use one.
    pub memory_node: Option<u32>,
    /// A VM that spans nodes: one guest NUMA node per host node, each with its memory bound
    /// there. Empty on one node.
    pub guest_numa: Vec<GuestNumaCell>,
    pub hugepages: Option<HugepagePlan>,
    pub cpu: features::CpuPlan,
    pub enlightenments: Vec<features::EnlightenmentChoice>,
    pub clock: features::ClockPlan,
    pub devices: Vec<Passthrough>,
    pub memballoon: bool,
    /// What the host does for the VM while it runs (`kvmtune host prepare`, `vfio bind`).
    pub host_side: crate::config::host_needs::HostNeeds,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub windows: String,
    pub workload: Workload,
    pub housekeeping: CpuSet,
    pub vms: Vec<VmPlan>,
    /// Host-wide decisions (housekeeping, what the host lacks).
    pub decisions: Vec<Decision>,
}

fn passthrough(host: &HostFacts, address: &PciAddress) -> Result<Passthrough, PlanError> {
    let Fact::Known(devices) = &host.pci_devices else {
        return Err(PlanError::UnknownDevice(format!(
            "{address}: this host's PCI devices could not be read"
        )));
    };
    let device = devices.iter().find(|d| d.address == *address).ok_or_else(|| {
        PlanError::UnknownDevice(format!(
            "{address}: no such PCI device on this host (`kvmtune probe` lists them)"
        ))
    })?;
    Ok(Passthrough { address: device.address, node: device.numa_node, is_gpu: device.is_gpu })
}

fn node_list(nodes: &[u32]) -> String {
    nodes.iter().map(|n| format!("node {n}")).collect::<Vec<_>>().join(", ")
}

fn cores_of_node(cores: &[HostCore], node: u32) -> usize {
    cores.iter().filter(|c| c.node == node).count()
}

pub fn plan(host: &HostFacts, request: &PlanRequest) -> Result<Plan, PlanError> {
    if host.topology.smt_sibling_sets.is_empty() {
        return Err(PlanError::MissingFacts(
            "the host's CPU topology (SMT sibling sets) could not be read".into(),
        ));
    }
    if request.vms.is_empty() {
        return Err(PlanError::Contradiction("no VM to plan".into()));
    }
    let mut names: Vec<&str> = request.vms.iter().map(|v| v.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(PlanError::Contradiction("two VMs with the same name".into()));
    }
    if request.vms.len() > 1 && request.vms.iter().any(|v| v.vcpus.is_none()) {
        return Err(PlanError::Contradiction(
            "with several VMs, give each its vCPU count (--vm NAME:VCPUS)".into(),
        ));
    }
    let cores = placement::host_cores(host);
    let given = match &request.housekeeping {
        Some(cpus) => {
            let online = host.topology.online.known().cloned().unwrap_or_default();
            if !cpus.is_subset(&online) {
                return Err(PlanError::Contradiction(format!(
                    "housekeeping CPUs {} are not all online (online: {online})",
                    cpus.difference(&online)
                )));
            }
            Some(HostShare { cpus: cpus.clone(), source: HostShareSource::Configured })
        }
        None => None,
    };
    let mut decisions = Vec::new();

    // Bigger VMs first, so that they get whole L3 groups; the plan lists them as asked.
    let mut order: Vec<usize> = (0..request.vms.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(request.vms[i].vcpus.unwrap_or(u32::MAX)));
    let mut devices_of: Vec<Vec<Passthrough>> = vec![Vec::new(); request.vms.len()];
    let mut wishes = Vec::with_capacity(order.len());
    for &index in &order {
        let vm = &request.vms[index];
        let devices: Vec<Passthrough> =
            vm.devices.iter().map(|d| passthrough(host, d)).collect::<Result<_, _>>()?;
        let mut device_nodes: Vec<u32> = devices.iter().filter_map(|d| d.node).collect();
        device_nodes.sort_unstable();
        device_nodes.dedup();
        if device_nodes.len() > 1 {
            return Err(PlanError::Contradiction(format!(
                "{}: the devices sit on NUMA nodes {device_nodes:?}; one VM can be local to one only",
                vm.name
            )));
        }
        if vm.vcpus == Some(0) {
            return Err(PlanError::Contradiction(format!("{}: a VM needs at least one vCPU", vm.name)));
        }
        wishes.push(PlacementWish {
            vcpus: vm.vcpus,
            node: device_nodes.first().copied(),
            prefer_vcache: matches!(request.workload, Workload::Gaming),
            ..PlacementWish::default()
        });
        devices_of[index] = devices;
    }
    let placed = place_all(host, &cores, &wishes, given).map_err(PlanError::from).map_err(|e| match order
        .as_slice()
    {
        [only] => prefix_error(e, &request.vms[*only].name),
        _ => e,
    })?;
    let share = placed.host_share;
    let mut vm_plans: Vec<Option<VmPlan>> = vec![None; request.vms.len()];
    for (&index, placement) in order.iter().zip(placed.placements) {
        let vm = &request.vms[index];
        let devices = std::mem::take(&mut devices_of[index]);
        vm_plans[index] = Some(vm_plan(host, request, vm, devices, placement, &share, &cores)?);
    }
    let housekeeping = share.cpus.clone();
    decisions.push(housekeeping_decision(&share));
    if host.topology.numa_nodes.len() > 1 {
        decisions.push(Decision::new(
            "pinning",
            format!("{} NUMA nodes", host.topology.numa_nodes.len()),
            format!(
                "node sizes in cores: {}",
                host.topology
                    .numa_nodes
                    .iter()
                    .map(|n| format!("node {}: {}", n.node, cores_of_node(&cores, n.node)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "/sys/devices/system/node",
        ));
    }
    Ok(Plan {
        windows: format!("{:?}", request.windows),
        workload: request.workload,
        housekeeping,
        vms: vm_plans.into_iter().flatten().collect(),
        decisions,
    })
}

fn prefix_error(error: PlanError, vm: &str) -> PlanError {
    match error {
        PlanError::HostTooSmall(why) => PlanError::HostTooSmall(format!("{vm}: {why}")),
        PlanError::Contradiction(why) => PlanError::Contradiction(format!("{vm}: {why}")),
        other => other,
    }
}

fn housekeeping_decision(share: &HostShare) -> Decision {
    Decision::new(
        "pinning",
        format!("housekeeping CPUs {}", share.cpus),
        share.reason(),
        "libvirt docs/formatdomain.rst emulatorpin, iothreadpin; Linux isolcpus (Documentation/admin-guide/kernel-parameters.txt)",
    )
}

fn vm_plan(
    host: &HostFacts,
    request: &PlanRequest,
    vm: &VmRequest,
    devices: Vec<Passthrough>,
    placement: Placement,
    share: &HostShare,
    cores: &[HostCore],
) -> Result<VmPlan, PlanError> {
    let vcpus = placement.vcpu_cpus.len() as u32;
    let mut decisions = Vec::new();
    let topology = GuestTopology { sockets: 1, dies: 1, cores: placement.cores, threads: placement.threads };
    decisions.push(pinning_decision(host, &placement, vm.vcpus.is_none(), cores));
    let emulator_cpus = placement::nearest_share(host, &share.cpus, &placement);
    decisions.push(Decision::checked_by(
        "pinning",
        format!("emulator and iothread on host CPUs {emulator_cpus}"),
        &["PIN003"],
    ));
    let emulator_nodes = host.topology.nodes_holding(&emulator_cpus);
    if !emulator_nodes.is_empty() && emulator_nodes.iter().all(|n| !placement.nodes.contains(n)) {
        decisions.push(Decision::new(
            "pinning",
            format!("emulator and iothread on another NUMA node than the vCPUs ({})", node_list(&emulator_nodes)),
            "the host's share has no CPU on the VM's nodes: the VM takes them whole, which keeps it off the interconnect; QEMU's main loop and disk I/O cross the interconnect instead, and memory stays on the vCPUs' nodes because numatune binds it there (QEMU's main thread would otherwise touch it first)",
            "libvirt docs/formatdomain.rst emulatorpin, numatune",
        ));
    }
    if topology.threads == 1 && host.topology.smt_sibling_sets.iter().any(|s| s.len() > 1) {
        decisions.push(Decision::new(
            "pinning",
            "one vCPU per host core (threads=1)",
            "an odd vCPU count cannot be whole SMT pairs, so each vCPU gets a core to itself; ask for an even count to use SMT",
            "libvirt docs/formatdomain.rst CPU tuning, numatune",
        ));
    }
    let memory_node =
        (placement.nodes.len() == 1 && host.topology.numa_nodes.len() > 1).then(|| placement.nodes[0]);
    if let Some(total_kib) = host.memory.total_kib.known()
        && vm.memory_mib * 1024 > *total_kib
    {
        return Err(PlanError::HostTooSmall(format!(
            "{}: {} MiB of memory asked for, the host has {} MiB",
            vm.name,
            vm.memory_mib,
            total_kib / 1024
        )));
    }
    if let Some(node) = memory_node {
        decisions.push(Decision::checked_by(
            "memory",
            format!("memory bound to NUMA node {node} (numatune strict)"),
            &["MEM003"],
        ));
    }
    let hugepages = features::hugepages(host, vm.memory_mib, memory_node, &mut decisions);
    let granularity_mib = hugepages.as_ref().map_or(1, |h| (h.page_size_kib / 1024).max(1));
    let guest_numa = guest_numa(host, &placement, vm.memory_mib, granularity_mib);
    if !guest_numa.is_empty() {
        decisions.push(Decision::checked_by(
            "memory",
            format!(
                "guest NUMA: {} nodes mirroring host {} ({}), each cell's memory bound to its host node",
                guest_numa.len(),
                node_list(&placement.nodes),
                guest_numa
                    .iter()
                    .map(|c| format!("vCPUs {} and {} MiB on node {}", c.vcpus, c.memory_mib, c.host_node))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            &["MEM004"],
        ));
    }
    let cpu = features::cpu(host, request, &placement, &mut decisions);
    let enlightenments = features::enlightenments(host, request, &cpu, &mut decisions);
    let clock = features::clock(host, request, &enlightenments, &mut decisions);
    let memballoon = devices.is_empty();
    if !devices.is_empty() {
        decisions.push(Decision::new(
            "devices",
            format!(
                "pass through {}",
                devices.iter().map(|d| d.address.to_string()).collect::<Vec<_>>().join(", ")
            ),
            match devices[0].node {
                Some(node) => format!("vCPUs and memory follow the device to NUMA node {node}"),
                None => "the device reports no NUMA node".to_string(),
            },
            "libvirt docs/formatdomain.rst numatune; Linux Documentation/ABI/testing/sysfs-bus-pci (numa_node)",
        ));
        decisions.push(Decision::checked_by("devices", "memory balloon off", &["DEV001"]));
    }
    decisions.push(Decision::checked_by(
        "devices",
        "virtio disk with its own iothread, virtio NIC with one queue per vCPU (up to 8)",
        &["DEV002", "DEV003", "DEV004"],
    ));
    let host_side = host_side::host_side(
        host,
        &share.cpus,
        &placement.vcpu_cpus,
        &emulator_cpus,
        hugepages.as_ref(),
        &devices,
    );
    Ok(VmPlan {
        name: vm.name.clone(),
        host_side,
        vcpus,
        topology,
        emulator_cpus: emulator_cpus.clone(),
        iothreads: 1,
        iothread_cpus: emulator_cpus,
        memory_mib: vm.memory_mib,
        memory_node,
        guest_numa,
        hugepages,
        cpu,
        enlightenments,
        clock,
        devices,
        memballoon,
        decisions,
        placement,
    })
}

fn pinning_decision(
    host: &HostFacts,
    placement: &Placement,
    defaulted: bool,
    cores: &[HostCore],
) -> Decision {
    let l3 = &host.topology.l3_groups;
    let vcache = placement.l3_groups.iter().any(|&g| l3.get(g).is_some_and(|g| g.larger_than_others));
    let hybrid = cores.iter().any(|c| c.efficiency);
    let cores = if placement.threads > 1 {
        format!(
            "{} host cores of {} threads: each guest core's threads are one host core's SMT siblings",
            placement.cores, placement.threads
        )
    } else {
        format!("{} host core(s), one vCPU each", placement.cores)
    };
    let mut reason = format!(
        "{cores}; {} L3 group(s), {} NUMA node(s) ({})",
        placement.l3_groups.len(),
        placement.nodes.len(),
        placement.nodes.iter().map(|n| format!("node {n}")).collect::<Vec<_>>().join(", ")
    );
    if defaulted {
        reason.push_str(
            "; the vCPU count is the largest set inside one L3 group that leaves the housekeeping CPUs",
        );
    }
    if vcache {
        reason.push_str("; the V-Cache CCD, whose larger L3 games benefit from");
    }
    if hybrid {
        reason.push_str("; P-cores only");
    }
    Decision::new(
        "pinning",
        format!("vCPUs 0-{} on host CPUs {}", placement.vcpu_cpus.len().saturating_sub(1), placement.cpus()),
        reason,
        "libvirt docs/formatdomain.rst vcpupin and CPU topology; Linux Documentation/admin-guide/cputopology.rst; hwloc (L3 groups)",
    )
}
