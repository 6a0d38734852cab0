//! What `kvmtune host prepare` changes for one VM: worked out from the host as it is, every
//! refusal decided before the first write, and nothing written here ([`Journal::apply`] makes
//! the plan's actions).
//!
//! The order of the actions is the order they are made; undo runs it backwards:
//! 1. cpufreq, per policy covering the VM's CPUs: EPP, then the governor, so that undo puts
//!    the governor back before the EPP (intel_pstate rejects other EPPs under `performance`,
//!    kernel commit b388eb58; host-changes.md section 6).
//! 2. Hugepages on the VM's node: the pages it needs beyond the free ones, read back.
//! 3. Host tasks off the VM's CPUs, by [`CgroupLayout`]; then kernel threads that can move.
//! 4. irqbalance's ban, then `default_smp_affinity` and each IRQ (irqbalance first, so that it
//!    does not move an IRQ back in between; host-changes.md section 3).
//! 5. The unbound and writeback workqueue masks.
//!
//! [`Journal::apply`]: crate::hostchange::Journal::apply

use serde::Serialize;

use crate::config::host_needs::HostNeeds;
use crate::host::Host;
use crate::hostchange::change::{self, ChangeKind, HostAction, Recompute};
use crate::hostchange::journal::{JournalKind, VmJournal};
use crate::values::CpuSet;

/// Where cgroup v2 is mounted, and the v1 cpuset hierarchy (host-changes.md section 2).
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
pub const CPUSET_V1_MOUNT: &str = "/sys/fs/cgroup/cpuset";
/// The cgroup host tasks are moved into where no systemd owns the cgroups.
pub const HOST_CGROUP: &str = "kvmtune.host";
pub use crate::hostchange::change::allowed::{SYSTEMD_HOST_UNITS, SYSTEMD_PROPERTY};
/// Top-level cgroups libvirt runs VMs in: with systemd (machined) and without.
pub const VM_CGROUPS: [&str; 2] = ["machine.slice", "machine"];

/// `/proc/<pid>/stat` flags (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;
const PF_NO_SETAFFINITY: u64 = 0x0400_0000;

/// What `host prepare` is asked for one VM: its needs, resolved (its CPUs and hugepages worked
/// out, from the flags or the domain's `<cputune>` and `<memoryBacking>`), and the run-time facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrepareRequest {
    pub vm: String,
    pub needs: HostNeeds,
    /// The VM's own processes (QEMU), which keep its CPUs.
    pub vm_pids: Vec<u32>,
    /// kvmtune itself: not moved, it is gone in a moment.
    pub self_pid: u32,
}

impl PrepareRequest {
    /// Every CPU the VM runs on: vCPUs, emulator and iothreads.
    fn cpus(&self) -> CpuSet {
        self.needs.cpus.clone().unwrap_or_default()
    }
}

/// Who owns the host's cgroups, which decides how host tasks are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CgroupLayout {
    /// cgroup v2 with systemd as PID 1: only systemd writes its units' cgroups, so
    /// `AllowedCPUs=` at runtime through it. Tested under a real systemd as PID 1 in the lab
    /// guest (tests/systemd_lab.rs), and against the calls it makes (tests/host_prepare.rs).
    V2Systemd,
    /// cgroup v2 without systemd: `cpuset.cpus` on the top-level cgroups, and the root
    /// cgroup's tasks moved into a host cgroup.
    V2,
    /// The v1 cpuset hierarchy: a host cpuset and the root cpuset's tasks moved into it.
    V1,
    /// No cpuset controller at all.
    None,
}

impl CgroupLayout {
    /// As the plan and JSON name it.
    pub fn label(self) -> &'static str {
        match self {
            CgroupLayout::V2Systemd => "v2-systemd",
            CgroupLayout::V2 => "v2",
            CgroupLayout::V1 => "v1",
            CgroupLayout::None => "none",
        }
    }
}

/// The changes for one VM, in the order they are made.
#[derive(Debug, Clone, Serialize)]
pub struct PreparePlan {
    pub vm: String,
    pub cpus: CpuSet,
    pub housekeeping: CpuSet,
    /// The CPUs this VM takes from the host: every CPU that is neither housekeeping nor
    /// another prepared VM's. What the journal records as the VM's share.
    pub taken: CpuSet,
    pub layout: CgroupLayout,
    pub actions: Vec<HostAction>,
    /// What stays on the VM's CPUs and why (per-CPU kernel threads), for the user to know.
    pub left_alone: Vec<String>,
}

/// Why a prepare is refused; nothing has been written.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{count} hugepages of {size_kib} KiB are more than the {total_kib} KiB of memory {place}")]
    MoreThanMemory { count: u64, size_kib: u64, place: String, total_kib: u64 },
    #[error("no CPUs for VM `{0}`: give --cpus, or a domain whose <cputune> pins its vCPUs")]
    NoCpus(String),
    #[error("CPU(s) {cpus} are offline or do not exist (online: {online})")]
    OfflineCpu { cpus: CpuSet, online: CpuSet },
    #[error("housekeeping CPU(s) {overlap} are the VM's own (VM: {vm}, housekeeping: {housekeeping})")]
    HousekeepingOverlap { overlap: CpuSet, vm: CpuSet, housekeeping: CpuSet },
    #[error("no housekeeping CPU left: online {online}, the VMs take {taken}; the host needs at least one")]
    NoHousekeeping { online: CpuSet, taken: CpuSet },
    #[error("CPU(s) {cpus} are already taken by VM `{other}`; release it first or pick other CPUs")]
    TakenByVm { cpus: CpuSet, other: String },
    #[error("NUMA node {node} does not exist (nodes: {nodes})")]
    NoSuchNode { node: u32, nodes: CpuSet },
    #[error("hugepages of {size_kib} KiB are not offered {place} (no {path})")]
    NoSuchPageSize { size_kib: u64, place: String, path: String },
    #[error("CPU(s) {0} have no cpufreq policy, so --governor and --epp cannot apply")]
    NoCpufreq(CpuSet),
    #[error("{what} `{asked}` is not offered by cpufreq {policy} (offered: {offered})")]
    NotOffered { what: &'static str, asked: String, policy: String, offered: String },
    #[error("VM `{0}` already has changes applied; release it first (`kvmtune host release {0}`)")]
    AlreadyPrepared(String),
    #[error(
        "this host has no cpuset cgroup controller (neither {CGROUP_MOUNT}/cgroup.controllers listing cpuset nor {CPUSET_V1_MOUNT}); use --no-isolate"
    )]
    NoCpuset,
    #[error(
        "another VM's QEMU (pid {pid}{name}) runs in {cgroup}, under {unit}, which this prepare confines to the housekeeping CPUs: that VM would lose its own CPUs; run it under machine.slice (libvirt does; by hand `systemd-run --slice=machine.slice --scope qemu-system-...`), or prepare with --no-isolate"
    )]
    OtherVmConfined { pid: u32, name: String, cgroup: String, unit: String },
    #[error(
        "this VM's QEMU (pid {pid}) runs in {cgroup}, under {unit}, which this prepare confines to the housekeeping CPUs: the VM would be kept off its own CPUs; run it under machine.slice (libvirt does; by hand `systemd-run --slice=machine.slice --scope qemu-system-...`), or prepare with --no-isolate"
    )]
    OwnVmConfined { pid: u32, cgroup: String, unit: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn read_text(host: &Host, path: &str) -> Result<String, Refusal> {
    host.fs.read_trimmed(path).map_err(|source| Refusal::Read { path: path.to_string(), source })
}

fn read_cpus(host: &Host, path: &str) -> Result<CpuSet, Refusal> {
    let text = read_text(host, path)?;
    CpuSet::parse_list(&text)
        .map_err(|e| Refusal::Read { path: path.to_string(), source: std::io::Error::other(e) })
}

/// Which cgroup hierarchy the host has and who owns it.
pub fn cgroup_layout(host: &Host) -> CgroupLayout {
    let controllers = host.fs.read(&format!("{CGROUP_MOUNT}/cgroup.controllers"));
    match controllers {
        Ok(list) if String::from_utf8_lossy(&list).split_whitespace().any(|c| c == "cpuset") => {
            match host.fs.read_trimmed("/proc/1/comm").unwrap_or_default().as_str() {
                "systemd" => CgroupLayout::V2Systemd,
                _ => CgroupLayout::V2,
            }
        }
        _ if host.fs.read(&format!("{CPUSET_V1_MOUNT}/cpuset.cpus")).is_ok() => CgroupLayout::V1,
        _ => CgroupLayout::None,
    }
}

/// Works out every change for `request`, given the VMs already prepared (`prepared`, from the
/// journal), or the reason it is refused.
pub fn plan(request: &PrepareRequest, prepared: &[VmJournal], host: &Host) -> Result<PreparePlan, Refusal> {
    if prepared.iter().any(|j| j.kind == JournalKind::Host && j.vm == request.vm && !j.from_another_boot) {
        return Err(Refusal::AlreadyPrepared(request.vm.clone()));
    }
    // A VM takes its CPUs from the host only when its host tasks or IRQs move off them; one
    // that asks for hugepages alone takes none, and may share CPUs with a VM that does.
    let takes_cpus = request.needs.isolate || request.needs.irqs;
    let needs_cpus = takes_cpus || request.needs.governor.is_some() || request.needs.epp.is_some();
    if request.cpus().is_empty() && needs_cpus {
        return Err(Refusal::NoCpus(request.vm.clone()));
    }
    let online = read_cpus(host, "/sys/devices/system/cpu/online")?;
    let offline = request.cpus().difference(&online);
    if !offline.is_empty() {
        return Err(Refusal::OfflineCpu { cpus: offline, online });
    }
    let live: Vec<&VmJournal> = prepared.iter().filter(|j| !j.from_another_boot).collect();
    for other in live.iter().filter(|_| takes_cpus) {
        let shared = request.cpus().intersection(&other.cpus);
        if !shared.is_empty() {
            return Err(Refusal::TakenByVm { cpus: shared, other: other.vm.clone() });
        }
    }
    let others_taken: CpuSet = live.iter().fold(CpuSet::new(), |all, j| all.union(&j.cpus));
    let housekeeping = match &request.needs.housekeeping {
        Some(given) => {
            let offline = given.difference(&online);
            if !offline.is_empty() {
                return Err(Refusal::OfflineCpu { cpus: offline, online });
            }
            let overlap = given.intersection(&request.cpus());
            if !overlap.is_empty() {
                return Err(Refusal::HousekeepingOverlap {
                    overlap,
                    vm: request.cpus(),
                    housekeeping: given.clone(),
                });
            }
            for other in &live {
                let shared = given.intersection(&other.cpus);
                if !shared.is_empty() {
                    return Err(Refusal::TakenByVm { cpus: shared, other: other.vm.clone() });
                }
            }
            given.clone()
        }
        None => online.difference(&request.cpus()).difference(&others_taken),
    };
    if housekeeping.is_empty() && takes_cpus {
        return Err(Refusal::NoHousekeeping { online, taken: request.cpus().union(&others_taken) });
    }
    let taken = match takes_cpus {
        true => online.difference(&housekeeping).difference(&others_taken),
        false => CpuSet::new(),
    };
    let layout = cgroup_layout(host);
    if request.needs.isolate && layout == CgroupLayout::None {
        return Err(Refusal::NoCpuset);
    }

    let mut plan = PreparePlan {
        vm: request.vm.clone(),
        cpus: request.cpus(),
        housekeeping: housekeeping.clone(),
        taken: taken.clone(),
        layout,
        actions: Vec::new(),
        left_alone: Vec::new(),
    };
    let exclude = Recompute::ExcludeCpus { cpus: taken.clone(), all: online.clone(), mask: false };
    let exclude_mask = Recompute::ExcludeCpus { cpus: taken.clone(), all: online.clone(), mask: true };

    cpufreq_actions(request, host, &mut plan.actions)?;
    hugepage_actions(request, &live, host, &mut plan.actions)?;
    if request.needs.isolate {
        task_actions(request, layout, &exclude, host, &mut plan)?;
    }
    if request.needs.irqs {
        irq_actions(&taken, &exclude, &exclude_mask, host, &mut plan.actions, &mut plan.left_alone);
    }
    if request.needs.isolate {
        for mask in WORKQUEUE_MASKS {
            if let Ok(found) = host.fs.read(mask) {
                push_recomputed(
                    &mut plan.actions,
                    HostAction::write(mask, "", "unbound kernel work off the VM's CPUs"),
                    &exclude_mask,
                    &found,
                );
            }
        }
    }
    Ok(plan)
}

/// What [`apply`] made of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrepareApplied {
    pub vm: String,
    /// Changes made.
    pub made: usize,
    /// Changes the kernel refused, each `(path, reason)`: left as they were.
    pub refused: Vec<(String, String)>,
    pub taken: CpuSet,
    pub housekeeping: CpuSet,
    /// What stays on the VM's CPUs and why.
    pub left_alone: Vec<String>,
}

/// Makes a plan's changes through the journal.
pub fn apply(
    journal: &crate::hostchange::Journal,
    plan: &PreparePlan,
    host: &Host,
) -> Result<PrepareApplied, crate::hostchange::JournalError> {
    let applied = journal.apply(JournalKind::Host, &plan.vm, &plan.taken, &plan.actions, host)?;
    let refused: Vec<(String, String)> = applied
        .iter()
        .filter_map(|a| match &a.outcome {
            change::Outcome::Refused(reason) => Some((a.action.path.clone(), reason.clone())),
            change::Outcome::Made => None,
        })
        .collect();
    Ok(PrepareApplied {
        vm: plan.vm.clone(),
        made: applied.len() - refused.len(),
        refused,
        taken: plan.taken.clone(),
        housekeeping: plan.housekeeping.clone(),
        left_alone: plan.left_alone.clone(),
    })
}

/// Unbound workqueues and writeback's (kernel-per-CPU-kthreads.rst).
pub const WORKQUEUE_MASKS: [&str; 2] =
    ["/sys/devices/virtual/workqueue/cpumask", "/sys/bus/workqueue/devices/writeback/cpumask"];

/// Adds `action` with the value `recompute` gives on `found`, unless that changes nothing.
fn push_recomputed(
    actions: &mut Vec<HostAction>,
    mut action: HostAction,
    recompute: &Recompute,
    found: &[u8],
) {
    if let Some(new) = recompute.value(found, &action.new) {
        action.old = Some(String::from_utf8_lossy(found).trim().to_string());
        action.new = new;
        actions.push(action.with_recompute(recompute.clone()));
    }
}

fn cpufreq_actions(
    request: &PrepareRequest,
    host: &Host,
    actions: &mut Vec<HostAction>,
) -> Result<(), Refusal> {
    if request.needs.governor.is_none() && request.needs.epp.is_none() {
        return Ok(());
    }
    let base = "/sys/devices/system/cpu/cpufreq";
    let mut covered = CpuSet::new();
    let policies = host.fs.list(base).unwrap_or_default();
    for policy in policies.iter().filter(|p| p.starts_with("policy")) {
        let dir = format!("{base}/{policy}");
        let related = read_cpus(host, &format!("{dir}/related_cpus"))?;
        if related.intersection(&request.cpus()).is_empty() {
            continue;
        }
        covered = covered.union(&related);
        let settings = [
            (
                "EPP",
                &request.needs.epp,
                "energy_performance_preference",
                "energy_performance_available_preferences",
            ),
            ("governor", &request.needs.governor, "scaling_governor", "scaling_available_governors"),
        ];
        for (what, asked, file, offered_file) in settings {
            let Some(asked) = asked else { continue };
            let offered = read_text(host, &format!("{dir}/{offered_file}")).unwrap_or_default();
            if !offered.split_whitespace().any(|o| o == asked) {
                return Err(Refusal::NotOffered { what, asked: asked.clone(), policy: dir.clone(), offered });
            }
            let path = format!("{dir}/{file}");
            let mut action =
                HostAction::write(&path, asked.as_str(), format!("{what} {asked} for CPUs {related}"));
            action.old = Some(read_text(host, &path)?);
            if action.old.as_deref() != Some(asked.as_str()) {
                actions.push(action);
            }
        }
    }
    let uncovered = request.cpus().difference(&covered);
    if !uncovered.is_empty() {
        return Err(Refusal::NoCpufreq(uncovered));
    }
    Ok(())
}

fn hugepage_actions(
    request: &PrepareRequest,
    prepared: &[&VmJournal],
    host: &Host,
    actions: &mut Vec<HostAction>,
) -> Result<(), Refusal> {
    for need in request.needs.hugepage_needs() {
        if let Some(node) = need.node {
            let nodes = read_cpus(host, "/sys/devices/system/node/online")?;
            if !nodes.contains(node) {
                return Err(Refusal::NoSuchNode { node, nodes });
            }
        }
        let pool = change::hugepage_pool_path(need.size_kib, need.node);
        let free_path = pool.replace("nr_hugepages", "free_hugepages");
        let place = need.node.map_or("on this host".to_string(), |n| format!("on node {n}"));
        // More than the memory there is never fits; refused before any count is added up.
        let meminfo = match need.node {
            Some(node) => format!("/sys/devices/system/node/node{node}/meminfo"),
            None => "/proc/meminfo".to_string(),
        };
        let total_kib =
            host.read(&meminfo).ok().and_then(|text| crate::host::memory::meminfo_kib(&text, "MemTotal"));
        let asked_kib = need.count.checked_mul(need.size_kib);
        if let Some(total_kib) = total_kib
            && asked_kib.is_none_or(|asked| asked > total_kib)
        {
            return Err(Refusal::MoreThanMemory {
                count: need.count,
                size_kib: need.size_kib,
                place,
                total_kib,
            });
        }
        let count = |path: &str| -> Result<u64, Refusal> {
            let text = host.fs.read(path).map_err(|_| Refusal::NoSuchPageSize {
                size_kib: need.size_kib,
                place: place.clone(),
                path: path.to_string(),
            })?;
            let text = String::from_utf8_lossy(&text).trim().to_string();
            text.parse().map_err(|_| Refusal::Read {
                path: path.to_string(),
                source: std::io::Error::other(format!("`{text}` is not a count")),
            })
        };
        let (pool_now, free) = (count(&pool)?, count(&free_path)?);
        // Pages other prepared VMs added to this pool are theirs, whether their QEMU holds
        // them yet or not.
        let theirs: u64 = prepared
            .iter()
            .flat_map(|j| &j.changes)
            .filter(|c| c.path == pool && c.refused.is_none())
            .map(|c| match c.recompute {
                Recompute::AddCount { by } => by,
                _ => 0,
            })
            .fold(0u64, u64::saturating_add);
        let more = need.count.saturating_sub(free.saturating_sub(theirs));
        if more > 0 {
            let mut action = HostAction::reserve_hugepages(
                need.size_kib,
                pool_now.saturating_add(more),
                need.node,
                Some(pool_now),
            )
            .with_recompute(Recompute::AddCount { by: more });
            action.why = format!(
                "{} hugepages of {} KiB {place} for the VM ({free} free, {theirs} of them other VMs', {more} more)",
                need.count, need.size_kib
            );
            actions.push(action);
        }
    }
    Ok(())
}

/// A process's `/proc/<pid>/stat` flags, or `None` when it is gone.
fn task_flags(host: &Host, pid: u32) -> Option<u64> {
    let stat = host.fs.read(&format!("/proc/{pid}/stat")).ok()?;
    let stat = String::from_utf8_lossy(&stat);
    // The command name is in parentheses and may hold spaces: count fields after the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(6)?.parse().ok()
}

fn pids(host: &Host) -> Vec<u32> {
    let mut pids: Vec<u32> =
        host.fs.list("/proc").unwrap_or_default().iter().filter_map(|n| n.parse().ok()).collect();
    pids.sort_unstable();
    pids
}

/// Refuses when a QEMU runs in one of the systemd `units` this prepare confines: a VM started
/// by hand with `systemd-run --scope` (in `system.slice`, or in `user.slice` from a login) or
/// from a shell, rather than by libvirt in `machine.slice`. Confining the unit would keep that
/// VM off its own CPUs, whether it is another VM or this one.
fn refuse_vms_in_units(request: &PrepareRequest, units: &[&str], host: &Host) -> Result<(), Refusal> {
    for pid in pids(host) {
        let Ok(cmdline) = host.fs.read(&format!("/proc/{pid}/cmdline")) else { continue };
        let argv: Vec<String> =
            cmdline.split(|b| *b == 0).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
        if !argv.first().is_some_and(|argv0| crate::config::qemu::is_qemu_binary(argv0)) {
            continue;
        }
        let cgroups = host.fs.read(&format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let cgroups = String::from_utf8_lossy(&cgroups);
        let Some(cgroup) = cgroups.lines().find_map(|line| line.strip_prefix("0::")) else { continue };
        let top = cgroup.trim_start_matches('/').split('/').next().unwrap_or_default();
        let Some(unit) = units.iter().find(|u| **u == top) else { continue };
        let (cgroup, unit) = (cgroup.to_string(), unit.to_string());
        if request.vm_pids.contains(&pid) {
            return Err(Refusal::OwnVmConfined { pid, cgroup, unit });
        }
        // Another user's command line: control characters are escaped, not printed.
        let name = crate::config::qemu::guest_name(&argv)
            .map(|n| format!(", `{}`", n.escape_debug()))
            .unwrap_or_default();
        return Err(Refusal::OtherVmConfined { pid, name, cgroup, unit });
    }
    Ok(())
}

/// Where `property` is set to a value in a file of the unit's that outlives the boot (`listed`:
/// its own file and its drop-ins, as `FragmentPath` and `DropInPaths` show them; one of the
/// user's such as `/etc/systemd/system/user.slice.d/*.conf`): a runtime value from kvmtune
/// would hide it until the next boot, and its undo would then write the user's value back at
/// runtime, so such a unit is left alone. Runtime drop-ins (`set-property --runtime`, kvmtune's
/// own among them) and transient units do not count.
fn persistent_setting(host: &Host, listed: &[&str], property: &str) -> Option<String> {
    let runtime =
        |f: &&str| f.starts_with("/run/systemd/system.control/") || f.starts_with("/run/systemd/transient/");
    let assignment = format!("{property}=");
    listed.iter().flat_map(|files| files.split_whitespace()).filter(|f| !runtime(f)).find_map(|file| {
        let text = host.fs.read(file).unwrap_or_default();
        // The last assignment in the file wins; an empty one resets.
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|line| line.trim().strip_prefix(assignment.as_str()))
            .next_back()
            .is_some_and(|value| !value.trim().is_empty())
            .then(|| file.to_string())
    })
}

fn task_actions(
    request: &PrepareRequest,
    layout: CgroupLayout,
    exclude: &Recompute,
    host: &Host,
    plan: &mut PreparePlan,
) -> Result<(), Refusal> {
    let why_tasks = "host tasks on the housekeeping CPUs";
    match layout {
        CgroupLayout::V2Systemd => {
            let mut confined = Vec::new();
            let property = SYSTEMD_PROPERTY.to_string();
            // Every unit's files and value in one `systemctl show`: each call costs a process.
            let shown = host
                .systemd
                .properties(&SYSTEMD_HOST_UNITS, &["FragmentPath", "DropInPaths", SYSTEMD_PROPERTY])
                .map_err(|source| Refusal::Read {
                    path: format!("systemd units {}", SYSTEMD_HOST_UNITS.join(", ")),
                    source,
                })?;
            for (unit, shown) in SYSTEMD_HOST_UNITS.into_iter().zip(&shown) {
                let [fragment, drop_ins, found] = [0, 1, 2].map(|i| shown.get(i).map_or("", String::as_str));
                if let Some(place) = persistent_setting(host, &[fragment, drop_ins], &property) {
                    plan.left_alone.push(format!(
                        "{unit}: {property}= is set in {place}, a setting of yours that outlives \
                         boots; kvmtune leaves it as it is (its tasks stay where it puts them)"
                    ));
                    continue;
                }
                confined.push(unit);
                let action = HostAction::write(unit, "", why_tasks)
                    .with_kind(ChangeKind::SystemdProperty { property: property.clone() });
                push_recomputed(&mut plan.actions, action, exclude, found.trim().as_bytes());
            }
            refuse_vms_in_units(request, &confined, host)?;
        }
        CgroupLayout::V2 | CgroupLayout::V1 => {
            let mount = if layout == CgroupLayout::V2 { CGROUP_MOUNT } else { CPUSET_V1_MOUNT };
            let host_cgroup = format!("{mount}/{HOST_CGROUP}");
            let exists = host.fs.is_dir(&host_cgroup);
            if layout == CgroupLayout::V2 {
                // Always journaled, also when it is on: a later VM's release then knows this VM
                // needs it (undo switches it off only if it was off).
                let control = format!("{mount}/cgroup.subtree_control");
                let mut action =
                    HostAction::write(&control, "+cpuset", "cpuset controller for the top-level cgroups")
                        .with_kind(ChangeKind::EnableController);
                action.old = Some(read_text(host, &control)?);
                plan.actions.push(action);
            }
            if !exists {
                plan.actions.push(
                    HostAction::write(&host_cgroup, "", "a cgroup for the root cgroup's tasks")
                        .with_kind(ChangeKind::CreateDir),
                );
                if layout == CgroupLayout::V1 {
                    // A v1 cpuset takes no task until it has memory nodes.
                    let mems = read_text(host, &format!("{mount}/cpuset.mems"))?;
                    plan.actions.push(
                        HostAction::write(
                            format!("{host_cgroup}/cpuset.mems"),
                            mems,
                            "the host cpuset's memory nodes: all",
                        )
                        .with_kind(ChangeKind::CpusetList),
                    );
                }
            }
            let vm_cgroups: Vec<String> = request
                .vm_pids
                .iter()
                .filter_map(|pid| change::cgroup_procs_of(host, *pid, mount).ok())
                .collect();
            let mut tops: Vec<String> = host
                .fs
                .list(mount)
                .unwrap_or_default()
                .into_iter()
                .filter(|name| host.fs.is_dir(&format!("{mount}/{name}")))
                .filter(|name| !VM_CGROUPS.contains(&name.as_str()) && !name.starts_with("kvmtune.vm"))
                .filter(|name| !vm_cgroups.iter().any(|c| c.starts_with(&format!("{mount}/{name}/"))))
                .collect();
            if !exists {
                tops.push(HOST_CGROUP.to_string());
            }
            // v1 children must stay inside their parent's CPUs: only the host cpuset there.
            if layout == CgroupLayout::V1 {
                tops.retain(|name| name == HOST_CGROUP);
            }
            for name in tops {
                let path = format!("{mount}/{name}/cpuset.cpus");
                let found = if name == HOST_CGROUP && !exists {
                    Vec::new()
                } else {
                    host.fs.read(&path).unwrap_or_default()
                };
                let action = HostAction::write(&path, "", why_tasks).with_kind(ChangeKind::CpusetList);
                push_recomputed(&mut plan.actions, action, exclude, &found);
            }
            let root_procs = format!("{mount}/cgroup.procs");
            let procs = read_text(host, &root_procs)?;
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                if pid == request.self_pid || request.vm_pids.contains(&pid) {
                    continue;
                }
                match task_flags(host, pid) {
                    Some(flags) if flags & PF_KTHREAD == 0 => {}
                    _ => continue,
                }
                let comm = read_text(host, &format!("/proc/{pid}/comm")).unwrap_or_default();
                let mut action = HostAction::write(
                    format!("{host_cgroup}/cgroup.procs"),
                    pid.to_string(),
                    format!("{comm} ({pid}) to the host cgroup"),
                )
                .with_kind(ChangeKind::MoveProcess { pid });
                action.old = Some(root_procs.clone());
                plan.actions.push(action);
            }
        }
        CgroupLayout::None => {}
    }
    kthread_actions(exclude, host, plan);
    Ok(())
}

/// Kernel threads that may move (kthreadd, whose CPUs new kernel threads inherit, rcuo*, ...)
/// follow the host tasks; per-CPU ones cannot and are listed.
fn kthread_actions(exclude: &Recompute, host: &Host, plan: &mut PreparePlan) {
    let Recompute::ExcludeCpus { cpus: taken, .. } = exclude else { return };
    let mut stuck = Vec::new();
    for pid in pids(host) {
        let Some(flags) = task_flags(host, pid) else { continue };
        if flags & PF_KTHREAD == 0 {
            continue;
        }
        let Ok(cpus) = host.affinity.get(pid) else { continue };
        if cpus.intersection(taken).is_empty() {
            continue;
        }
        let comm = read_text(host, &format!("/proc/{pid}/comm")).unwrap_or_default();
        let left = cpus.difference(taken);
        if left.is_empty() {
            // Bound to one of the VM's CPUs (ksoftirqd/N, migration/N, kworker/N:M).
            stuck.push(comm);
            continue;
        }
        if flags & PF_NO_SETAFFINITY != 0 {
            // Unbound workqueue workers: the kernel places them by the workqueue mask.
            continue;
        }
        let mut action = HostAction::write(
            format!("/proc/{pid}"),
            left.to_string(),
            format!("kernel thread {comm} off the VM's CPUs"),
        )
        .with_kind(ChangeKind::Affinity { tid: pid })
        .with_recompute(exclude.clone());
        action.old = Some(cpus.to_string());
        plan.actions.push(action);
    }
    if !stuck.is_empty() {
        stuck.sort();
        stuck.dedup();
        plan.left_alone.push(format!(
            "{} per-CPU kernel thread(s) stay on the VM's CPUs (they cannot move; boot parameters such as nohz_full= and rcu_nocbs= take work off those CPUs): {}",
            stuck.len(),
            stuck.join(", ")
        ));
    }
}

fn irq_actions(
    taken: &CpuSet,
    exclude: &Recompute,
    exclude_mask: &Recompute,
    host: &Host,
    actions: &mut Vec<HostAction>,
    left_alone: &mut Vec<String>,
) {
    if let Some(pid) = pids(host).into_iter().find(|pid| {
        host.fs
            .read(&format!("/proc/{pid}/comm"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).trim() == "irqbalance")
    }) {
        let socket = format!("/run/irqbalance/irqbalance{pid}.sock");
        match host.irqbalance.request(&socket, b"setup") {
            Ok(setup) => {
                let banned = change::irqbalance_banned(&String::from_utf8_lossy(&setup));
                let action = HostAction::write(&socket, "", "irqbalance leaves the VM's CPUs alone")
                    .with_kind(ChangeKind::IrqbalanceBan);
                push_recomputed(actions, action, &Recompute::AddCpus { cpus: taken.clone() }, banned.to_string().as_bytes());
            }
            Err(error) => left_alone.push(format!(
                "irqbalance (pid {pid}) runs but its socket {socket} cannot be reached ({error}): it will move IRQs back onto the VM's CPUs within 10 s; stop it or start it with IRQBALANCE_BANNED_CPULIST={taken}"
            )),
        }
    }
    let default = "/proc/irq/default_smp_affinity";
    if let Ok(found) = host.fs.read(default) {
        push_recomputed(
            actions,
            HostAction::write(default, "", "new IRQs off the VM's CPUs"),
            exclude_mask,
            &found,
        );
    }
    let mut irqs: Vec<u32> =
        host.fs.list("/proc/irq").unwrap_or_default().iter().filter_map(|n| n.parse().ok()).collect();
    irqs.sort_unstable();
    for irq in irqs {
        let path = format!("/proc/irq/{irq}/smp_affinity_list");
        if let Ok(found) = host.fs.read(&path) {
            let action = HostAction::write(&path, "", format!("IRQ {irq} off the VM's CPUs"))
                .with_kind(ChangeKind::MayBeRefused);
            push_recomputed(actions, action, exclude, &found);
        }
    }
}
