//! What a host change does, as data: [`HostAction`]. Producing one writes nothing; [`apply`]
//! makes it through a [`HostWriter`] and hands back the original state, and [`undo`] puts that
//! back exactly.
//!
//! Most changes are a file write undone by writing the original bytes back. Some are not: a
//! cgroup controller is switched off with `-cpuset`, not by writing back the list it showed; a
//! process moved into a cgroup goes back by writing its pid into the cgroup it came from; a
//! kernel thread's CPUs are set by `sched_setaffinity`. [`ChangeKind`] says which, and
//! [`Recompute`] how the value written follows from the value found (another VM's release
//! needs it to work out what this change would write on a different starting point).

use serde::{Deserialize, Serialize};

use crate::hostchange::writer::HostWriter;
use crate::values::CpuSet;

/// One change to one host object: a file, a directory, a process's cgroup, a thread's CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostAction {
    /// The file on the host, absolute (`/sys/devices/system/node/node1/hugepages/...`); for a
    /// thread's affinity `/proc/<tid>`, for irqbalance its socket, for systemd the unit.
    pub path: String,
    /// What the file holds now, where the host facts know it; `None` when it is read only when
    /// the action is applied.
    pub old: Option<String>,
    /// What is written.
    pub new: String,
    /// Why, in a few words.
    pub why: String,
    pub kind: ChangeKind,
    pub recompute: Recompute,
}

/// How a change is made and undone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeKind {
    /// `new` written to the file; undo writes the original bytes back.
    #[default]
    Write,
    /// A write the kernel may refuse for good reasons (a managed IRQ: EIO before Linux 6.12,
    /// EPERM since; EINVAL for an IRQ whose chip cannot move): the refusal is recorded and
    /// listed, not failed on (host-changes.md section 3).
    MayBeRefused,
    /// A hugepage pool size: written, read back; when short, memory is compacted and the write
    /// tried once more; still short is an error (the kernel's partial allocation is silent,
    /// host-changes.md section 5).
    HugepagePool,
    /// `cgroup.subtree_control`: `new` is `+controller`. Undo writes `-controller`, and only
    /// when the original did not list it: the list a read shows is not a valid write.
    EnableController,
    /// A directory made (a cgroup); undo moves any process still in it (born there since) to
    /// the parent cgroup, then removes it.
    CreateDir,
    /// A cgroup's `cpuset.cpus` or `cpuset.mems`. The kernel refuses to empty it while tasks are in the cgroup
    /// (ENOSPC, cpuset.c `validate_change`), so an empty original cannot be written back then;
    /// it is left to the undo that follows (the cgroup removed, or the controller switched off,
    /// which takes the file with it).
    CpusetList,
    /// Process `pid` written into `path` (a `cgroup.procs`). The original is where it was and
    /// each thread's CPUs; undo writes it back there and gives each thread its CPUs back.
    MoveProcess { pid: u32 },
    /// Thread `tid`'s CPUs (`sched_setaffinity`); `new` is a CPU list, and so is the original.
    Affinity { tid: u32 },
    /// irqbalance's banned CPUs, through its control socket (`path`): `settings cpus LIST`, and
    /// at undo the list it banned before, or `NULL` for none (irqbalance.c `sock_handle`).
    IrqbalanceBan,
    /// A PCI device handed to vfio-pci; `path` is its sysfs directory and the original is the
    /// name of the driver it had (empty for none). Made by `driver_override`, unbind and
    /// `drivers_probe`, then read back; undone by clearing the override, unbinding from vfio-pci
    /// and probing again, then checking the device is back on its driver
    /// (Documentation/ABI/testing/sysfs-bus-pci; host-changes.md section 4). Never `new_id`,
    /// which would grab every device with the same ids.
    VfioBind,
    /// A property of the systemd unit `path`, at runtime (`systemctl set-property --runtime`),
    /// as systemd owns the cgroups of its units (host-changes.md section 2).
    SystemdProperty { property: String },
    /// Whether the systemd unit `path` runs: `active` or `inactive` (its `ActiveState`), made by
    /// `systemctl start` or `stop`. The display manager, stopped for a single-GPU hand-over and
    /// started again at release.
    ServiceState,
    /// The driver of the platform device `path` (`/sys/bus/platform/devices/NAME`), by name;
    /// empty for none. Made by the driver's `unbind` and `bind` files (sysfs-bus-platform):
    /// the firmware framebuffer (efi-framebuffer, simple-framebuffer, vesa-framebuffer) that
    /// holds the boot GPU's memory until it lets go.
    PlatformDriver,
}

/// How the value written follows from the value found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Recompute {
    /// `new`, whatever was there (a governor, `+cpuset`, a cgroup).
    #[default]
    Constant,
    /// The CPUs found, less `cpus`: a list, or a hex mask when `mask`. An empty value found
    /// means `all` (an empty `cpuset.cpus` inherits its parent's).
    ExcludeCpus { cpus: CpuSet, all: CpuSet, mask: bool },
    /// The count found, raised by `by` (hugepages: the pages this VM needs beyond the free ones).
    AddCount { by: u64 },
    /// The CPUs found, and `cpus` too (irqbalance's banned CPUs).
    AddCpus { cpus: CpuSet },
}

impl Recompute {
    /// What this change writes when it finds `found`; `None` when it would change nothing
    /// (the CPUs to take out are not there, or taking them out would leave none).
    pub fn value(&self, found: &[u8], constant: &str) -> Option<String> {
        let found = String::from_utf8_lossy(found);
        let found = found.trim();
        match self {
            Recompute::Constant => Some(constant.to_string()),
            Recompute::ExcludeCpus { cpus, all, mask } => {
                let parsed = if *mask { CpuSet::parse_mask(found) } else { CpuSet::parse_list(found) };
                let current = match parsed {
                    Ok(set) if set.is_empty() => all.clone(),
                    Ok(set) => set,
                    Err(_) => return None,
                };
                let left = current.difference(cpus);
                (left != current && !left.is_empty())
                    .then(|| if *mask { left.to_mask() } else { left.to_string() })
            }
            Recompute::AddCount { by } => found.parse::<u64>().ok().map(|n| (n + by).to_string()),
            Recompute::AddCpus { cpus } => {
                let current = CpuSet::parse_list(found).ok()?;
                let more = current.union(cpus);
                (more != current).then(|| more.to_string())
            }
        }
    }
}

/// Where a process was before it was moved: the `cgroup.procs` of its cgroup, and each
/// thread's CPUs. Kept as the original of a [`ChangeKind::MoveProcess`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlace {
    pub cgroup_procs: String,
    pub threads: Vec<(u32, CpuSet)>,
}

impl HostAction {
    /// A plain file write, undone by writing the original bytes back.
    pub fn write(path: impl Into<String>, new: impl Into<String>, why: impl Into<String>) -> Self {
        HostAction {
            path: path.into(),
            old: None,
            new: new.into(),
            why: why.into(),
            kind: ChangeKind::Write,
            recompute: Recompute::Constant,
        }
    }

    pub fn with_kind(mut self, kind: ChangeKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn with_recompute(mut self, recompute: Recompute) -> Self {
        self.recompute = recompute;
        self
    }

    /// `path: old -> new`, for plans and dry runs.
    pub fn describe(&self) -> String {
        let old = self.old.as_deref().unwrap_or("(read at apply)");
        match &self.kind {
            ChangeKind::CreateDir => format!("mkdir {}", self.path),
            ChangeKind::MoveProcess { pid } => format!("{}: + pid {pid} (from {old})", self.path),
            ChangeKind::Affinity { tid } => format!("thread {tid} CPUs: {old} -> {}", self.new),
            ChangeKind::IrqbalanceBan => {
                format!("irqbalance ({}) banned CPUs: {old} -> {}", self.path, self.new)
            }
            ChangeKind::SystemdProperty { property } => {
                format!("systemd {} {property}: {old} -> {}", self.path, self.new)
            }
            ChangeKind::ServiceState => format!("systemd unit {}: {old} -> {}", self.path, self.new),
            ChangeKind::PlatformDriver => {
                let new = if self.new.is_empty() { "(no driver)" } else { &self.new };
                format!("{} driver: {old} -> {new}", self.path)
            }
            _ => format!("{}: {old} -> {}", self.path, self.new),
        }
    }

    /// The same change as a shell command a user can run by hand.
    pub fn shell(&self) -> String {
        match &self.kind {
            ChangeKind::CreateDir => format!("mkdir {}", self.path),
            ChangeKind::MoveProcess { pid } => format!("echo {pid} > {}", self.path),
            ChangeKind::VfioBind => format!(
                "echo {new} > {path}/driver_override; echo {addr} > {path}/driver/unbind; echo {addr} > {PCI_DRIVERS_PROBE}",
                new = self.new,
                path = self.path,
                addr = device_address(&self.path)
            ),
            ChangeKind::Affinity { tid } => format!("taskset -pc {} {tid}", self.new),
            ChangeKind::IrqbalanceBan => {
                format!("echo 'settings cpus {}' | socat - UNIX-CONNECT:{}", self.new, self.path)
            }
            ChangeKind::SystemdProperty { property } => {
                format!("systemctl set-property --runtime {} {property}={}", self.path, self.new)
            }
            ChangeKind::ServiceState => {
                let verb = if self.new == "active" { "start" } else { "stop" };
                format!("systemctl {verb} {}", self.path)
            }
            ChangeKind::PlatformDriver => {
                let name = device_address(&self.path);
                match self.new.as_str() {
                    "" => format!("echo {name} > {}/driver/unbind", self.path),
                    driver => format!("echo {name} > /sys/bus/platform/drivers/{driver}/bind"),
                }
            }
            _ => format!("echo {} > {}", self.new, self.path),
        }
    }

    /// What undoing this change looks like, for `status` and messages.
    pub fn undo_text(&self) -> &'static str {
        match self.kind {
            ChangeKind::CreateDir => "removed",
            ChangeKind::MoveProcess { .. } => "moved back, each thread's CPUs restored",
            ChangeKind::EnableController => "switched off again if it was off",
            ChangeKind::VfioBind => "override cleared, unbound from vfio-pci, probed back to its driver",
            ChangeKind::ServiceState => "started or stopped again as it was",
            ChangeKind::PlatformDriver => "bound to its driver again",
            _ => "original value written back",
        }
    }

    /// Reserve `pages` hugepages of `page_size_kib` KiB, on one NUMA node or host-wide
    /// (kernel Documentation/admin-guide/mm/hugetlbpage.rst: `nr_hugepages` per size and node).
    pub fn reserve_hugepages(page_size_kib: u64, pages: u64, node: Option<u32>, old: Option<u64>) -> Self {
        let where_ = node.map_or(String::new(), |n| format!(" on node {n}"));
        let mut action = HostAction::write(
            hugepage_pool_path(page_size_kib, node),
            pages.to_string(),
            format!("reserve {pages} hugepages of {page_size_kib} KiB{where_} for the VM's memory"),
        )
        .with_kind(ChangeKind::HugepagePool);
        action.old = old.map(|n| n.to_string());
        action
    }

    /// Switch one CPU's cpufreq governor (kernel Documentation/admin-guide/pm/cpufreq.rst:
    /// `scaling_governor` in each CPU's `cpufreq` directory, shared by its policy).
    pub fn set_governor(cpu: u32, old: Option<&str>, governor: &str) -> Self {
        let mut action = HostAction::write(
            format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
            governor,
            format!("CPU {cpu} runs the {governor} governor"),
        );
        action.old = old.map(str::to_string);
        action
    }

    /// What identifies the object this change touches, across VMs' journals: the path, or the
    /// process or thread.
    pub fn key(kind: &ChangeKind, path: &str) -> String {
        match kind {
            ChangeKind::MoveProcess { pid } => format!("pid:{pid}"),
            ChangeKind::Affinity { tid } => format!("tid:{tid}"),
            _ => path.to_string(),
        }
    }
}

/// `nr_hugepages` of one page size, on one node or host-wide.
pub fn hugepage_pool_path(page_size_kib: u64, node: Option<u32>) -> String {
    match node {
        Some(node) => {
            format!("/sys/devices/system/node/node{node}/hugepages/hugepages-{page_size_kib}kB/nr_hugepages")
        }
        None => format!("/sys/kernel/mm/hugepages/hugepages-{page_size_kib}kB/nr_hugepages"),
    }
}

/// An action that was made, with what the object held before: enough to undo it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub action: HostAction,
    pub original: Vec<u8>,
    pub outcome: Outcome,
}

/// What became of a change that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Made,
    /// The kernel refused it for a reason that is listed, not failed on (a managed IRQ, a
    /// kernel thread bound to its CPU); nothing changed.
    Refused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HostChangeError {
    #[error("cannot read {path} on {host}: {source}")]
    Read {
        path: String,
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path} on {host}: {source}")]
    Write {
        path: String,
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The host changed since the action was planned: writing would undo someone else's change.
    #[error("{path} holds `{found}`, not `{expected}` as planned; nothing was written")]
    Stale { path: String, expected: String, found: String },
    /// The kernel gave fewer hugepages than asked, even after compaction.
    #[error(
        "{path}: asked for {asked} hugepages, the kernel gave {got} (memory is too fragmented or too small on that node)"
    )]
    ShortAllocation { path: String, asked: String, got: String },
    /// The journal could not record a change, so it was not made.
    #[error("not written, the journal failed: {0}")]
    Journal(String),
}

fn is_gone(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::ESRCH) || error.kind() == std::io::ErrorKind::NotFound
}

/// A thread's CPUs, from `/proc/<tid>/status`.
pub fn affinity_of(writer: &dyn HostWriter, tid: u32) -> std::io::Result<CpuSet> {
    let status = writer.read(&format!("/proc/{tid}/status"))?;
    let status = String::from_utf8_lossy(&status);
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .ok_or_else(|| std::io::Error::other(format!("/proc/{tid}/status has no Cpus_allowed_list")))?;
    CpuSet::parse_list(list).map_err(std::io::Error::other)
}

/// The cgroup a process is in, as the `cgroup.procs` of the hierarchy mounted at `mount`
/// (`/sys/fs/cgroup` for v2, `/sys/fs/cgroup/cpuset` for the v1 cpuset hierarchy).
pub fn cgroup_procs_of(writer: &dyn HostWriter, pid: u32, mount: &str) -> std::io::Result<String> {
    let text = writer.read(&format!("/proc/{pid}/cgroup"))?;
    let text = String::from_utf8_lossy(&text);
    let v1 = mount.ends_with("/cpuset");
    let relative = text
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let wanted =
                if v1 { controllers.split(',').any(|c| c == "cpuset") } else { controllers.is_empty() };
            wanted.then(|| path.to_string())
        })
        .ok_or_else(|| std::io::Error::other(format!("/proc/{pid}/cgroup names no cgroup under {mount}")))?;
    Ok(format!("{mount}{}/cgroup.procs", relative.trim_end_matches('/')))
}

fn read_error(path: &str, writer: &dyn HostWriter) -> impl FnOnce(std::io::Error) -> HostChangeError {
    let (path, host) = (path.to_string(), writer.describe());
    move |source| HostChangeError::Read { path, host, source }
}

fn write_error(path: &str, writer: &dyn HostWriter) -> impl FnOnce(std::io::Error) -> HostChangeError {
    let (path, host) = (path.to_string(), writer.describe());
    move |source| HostChangeError::Write { path, host, source }
}

/// Reads the object's original state, checks it against the planned old value, then makes
/// the change. The original comes back so that a journal can keep it. `Ok(None)`: the object
/// is gone (a process that exited), so there is nothing to change.
pub fn apply(action: &HostAction, writer: &dyn HostWriter) -> Result<Option<Applied>, HostChangeError> {
    match read_original(action, writer)? {
        Some(original) => make(action, original, writer).map(Some),
        None => Ok(None),
    }
}

/// The object's state now, checked against the planned old value: the first half of
/// [`apply`], after which a journal records the original before anything is written. `None`:
/// the process or thread the change is about has exited.
pub fn read_original(
    action: &HostAction,
    writer: &dyn HostWriter,
) -> Result<Option<Vec<u8>>, HostChangeError> {
    let original = match &action.kind {
        ChangeKind::CreateDir => Vec::new(),
        ChangeKind::MoveProcess { pid } => {
            let mount = cgroup_mount_of_procs(&action.path);
            let gone_or = |e: std::io::Error| if is_gone(&e) { Ok(None) } else { Err(e) };
            let place = (|| -> std::io::Result<Option<TaskPlace>> {
                let cgroup_procs = match cgroup_procs_of(writer, *pid, &mount) {
                    Ok(procs) => procs,
                    Err(e) => return gone_or(e),
                };
                let mut threads = Vec::new();
                let tids = match writer.list_dir(&format!("/proc/{pid}/task")) {
                    Ok(tids) => tids,
                    Err(e) => return gone_or(e),
                };
                for tid in tids.iter().filter_map(|t| t.parse::<u32>().ok()) {
                    match affinity_of(writer, tid) {
                        Ok(cpus) => threads.push((tid, cpus)),
                        Err(e) if is_gone(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Some(TaskPlace { cgroup_procs, threads }))
            })()
            .map_err(read_error(&format!("/proc/{pid}"), writer))?;
            match place {
                Some(place) => serde_json::to_vec(&place).expect("a task place serializes"),
                None => return Ok(None),
            }
        }
        ChangeKind::Affinity { tid } => match affinity_of(writer, *tid) {
            Ok(cpus) => cpus.to_string().into_bytes(),
            Err(e) if is_gone(&e) => return Ok(None),
            Err(e) => return Err(read_error(&action.path, writer)(e)),
        },
        ChangeKind::VfioBind => match writer.link_name(&format!("{}/driver", action.path)) {
            Ok(driver) => driver.into_bytes(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(read_error(&action.path, writer)(e)),
        },
        ChangeKind::IrqbalanceBan => {
            let setup = writer.request(&action.path, b"setup").map_err(read_error(&action.path, writer))?;
            irqbalance_banned(&String::from_utf8_lossy(&setup)).to_string().into_bytes()
        }
        ChangeKind::SystemdProperty { property } => writer
            .systemctl(&["show", "--value", "-p", property, &action.path])
            .map_err(read_error(&action.path, writer))?
            .trim()
            .as_bytes()
            .to_vec(),
        ChangeKind::ServiceState => writer
            .systemctl(&["show", "--value", "-p", "ActiveState", &action.path])
            .map_err(read_error(&action.path, writer))?
            .trim()
            .as_bytes()
            .to_vec(),
        ChangeKind::PlatformDriver => match writer.link_name(&format!("{}/driver", action.path)) {
            Ok(driver) => driver.into_bytes(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(read_error(&action.path, writer)(e)),
        },
        ChangeKind::Write
        | ChangeKind::MayBeRefused
        | ChangeKind::HugepagePool
        | ChangeKind::EnableController
        | ChangeKind::CpusetList => writer.read(&action.path).map_err(read_error(&action.path, writer))?,
    };
    if let Some(expected) = &action.old {
        let found = String::from_utf8_lossy(&original).trim().to_string();
        if !matches!(action.kind, ChangeKind::MoveProcess { .. }) && &found != expected {
            return Err(HostChangeError::Stale {
                path: action.path.clone(),
                expected: expected.clone(),
                found,
            });
        }
    }
    Ok(Some(original))
}

/// The banned CPUs in irqbalance's `setup` answer (`... BANNED <hex mask>`); none when absent.
pub fn irqbalance_banned(setup: &str) -> CpuSet {
    let mut words = setup.split_whitespace();
    while let Some(word) = words.next() {
        if word == "BANNED" {
            return words.next().and_then(|mask| CpuSet::parse_mask(mask).ok()).unwrap_or_default();
        }
    }
    CpuSet::new()
}

/// `/sys/fs/cgroup/x/cgroup.procs` → `/sys/fs/cgroup`: the host cgroups kvmtune makes are
/// top-level, so the hierarchy's mount is two levels up.
fn cgroup_mount_of_procs(procs: &str) -> String {
    let path = std::path::Path::new(procs);
    path.parent().and_then(|p| p.parent()).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Makes the change, once `original` (from [`read_original`]) is safe: the second half of
/// [`apply`].
pub fn make(
    action: &HostAction,
    original: Vec<u8>,
    writer: &dyn HostWriter,
) -> Result<Applied, HostChangeError> {
    let outcome = set(&action.kind, &action.path, action.new.as_bytes(), writer)?;
    Ok(Applied { action: action.clone(), original, outcome })
}

/// Gives the object `value`, the way its kind is changed (a write, a move, an affinity).
/// Also how another VM's release writes a recomputed value.
pub fn set(
    kind: &ChangeKind,
    path: &str,
    value: &[u8],
    writer: &dyn HostWriter,
) -> Result<Outcome, HostChangeError> {
    let text = String::from_utf8_lossy(value).trim().to_string();
    match kind {
        ChangeKind::Write | ChangeKind::EnableController | ChangeKind::CpusetList => {
            writer.write(path, value).map_err(write_error(path, writer))?;
        }
        ChangeKind::MayBeRefused => match writer.write(path, value) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EPERM | libc::EINVAL)) => {
                return Ok(Outcome::Refused(e.to_string()));
            }
            Err(e) => return Err(write_error(path, writer)(e)),
        },
        ChangeKind::HugepagePool => {
            let read_back = || writer.read_trimmed(path).map_err(read_error(path, writer));
            writer.write(path, value).map_err(write_error(path, writer))?;
            if read_back()? != text {
                // Free memory is there but in pieces: compact, then ask again (vm.rst).
                writer.write(COMPACT_MEMORY, b"1").map_err(write_error(COMPACT_MEMORY, writer))?;
                writer.write(path, value).map_err(write_error(path, writer))?;
                let got = read_back()?;
                if got != text {
                    return Err(HostChangeError::ShortAllocation {
                        path: path.to_string(),
                        asked: text,
                        got,
                    });
                }
            }
        }
        ChangeKind::CreateDir => writer.make_dir(path).map_err(write_error(path, writer))?,
        ChangeKind::MoveProcess { .. } => match writer.write(path, value) {
            Ok(()) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(write_error(path, writer)(e)),
        },
        ChangeKind::Affinity { tid } => {
            let cpus =
                CpuSet::parse_list(&text).map_err(|e| write_error(path, writer)(std::io::Error::other(e)))?;
            match writer.set_affinity(*tid, &cpus) {
                Ok(()) => {}
                Err(e) if is_gone(&e) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Ok(Outcome::Refused(e.to_string()));
                }
                Err(e) => return Err(write_error(path, writer)(e)),
            }
        }
        ChangeKind::VfioBind => {
            let address = device_address(path);
            let driver = || writer.link_name(&format!("{path}/driver")).ok();
            let write =
                |file: &str, bytes: &[u8]| writer.write(file, bytes).map_err(write_error(file, writer));
            write(&format!("{path}/driver_override"), value)?;
            if driver().as_deref() != Some(text.as_str()) {
                if driver().is_some() {
                    write(&format!("{path}/driver/unbind"), address.as_bytes())?;
                }
                write(PCI_DRIVERS_PROBE, address.as_bytes())?;
            }
            let now = driver().unwrap_or_default();
            if now != text {
                return Err(write_error(path, writer)(std::io::Error::other(format!(
                    "{address} is on `{now}` after the hand-over, not {text}"
                ))));
            }
        }
        ChangeKind::IrqbalanceBan => {
            let list = if text.is_empty() { "NULL".to_string() } else { text };
            writer
                .request(path, format!("settings cpus {list}").as_bytes())
                .map_err(write_error(path, writer))?;
        }
        ChangeKind::SystemdProperty { property } => {
            writer
                .systemctl(&["set-property", "--runtime", path, &format!("{property}={text}")])
                .map_err(write_error(path, writer))?;
        }
        ChangeKind::ServiceState => {
            // Anything but active (inactive, failed, deactivating) is stopped.
            let verb = if text == "active" { "start" } else { "stop" };
            writer.systemctl(&[verb, path]).map_err(write_error(path, writer))?;
        }
        ChangeKind::PlatformDriver => {
            let name = device_address(path);
            let current = writer.link_name(&format!("{path}/driver")).ok();
            if current.as_deref() == Some(text.as_str()) {
                return Ok(Outcome::Made);
            }
            if current.is_some() {
                writer
                    .write(&format!("{path}/driver/unbind"), name.as_bytes())
                    .map_err(write_error(path, writer))?;
            }
            if !text.is_empty() {
                let bind = format!("/sys/bus/platform/drivers/{text}/bind");
                writer.write(&bind, name.as_bytes()).map_err(write_error(&bind, writer))?;
            }
        }
    }
    Ok(Outcome::Made)
}

/// Where a PCI device is offered to the drivers again (sysfs-bus-pci).
pub const PCI_DRIVERS_PROBE: &str = "/sys/bus/pci/drivers_probe";

/// `0000:00:10.0` from `/sys/bus/pci/devices/0000:00:10.0`.
fn device_address(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Where the kernel compacts memory on request (admin-guide/sysctl/vm.rst).
pub const COMPACT_MEMORY: &str = "/proc/sys/vm/compact_memory";

/// Puts back what `applied` changed.
pub fn undo(applied: &Applied, writer: &dyn HostWriter) -> Result<(), HostChangeError> {
    restore(&applied.action.kind, &applied.action.path, &applied.action.new, &applied.original, writer)
}

/// Gives the object at `path` back its `original` state, the way its kind is undone. A process
/// or thread that has exited and a directory already gone need nothing.
pub fn restore(
    kind: &ChangeKind,
    path: &str,
    new: &str,
    original: &[u8],
    writer: &dyn HostWriter,
) -> Result<(), HostChangeError> {
    match kind {
        ChangeKind::EnableController => {
            let controller = new.trim().trim_start_matches('+');
            let had_it = String::from_utf8_lossy(original).split_whitespace().any(|c| c == controller);
            if !had_it {
                writer.write(path, format!("-{controller}").as_bytes()).map_err(write_error(path, writer))?;
            }
        }
        ChangeKind::CreateDir => {
            if !writer.is_dir(path) {
                return Ok(());
            }
            let parent = std::path::Path::new(path)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let procs = format!("{path}/cgroup.procs");
            // A few rounds: a process may fork while its siblings are moved.
            for _ in 0..5 {
                let Ok(left) = writer.read(&procs) else { break };
                let left: Vec<u32> =
                    String::from_utf8_lossy(&left).lines().filter_map(|l| l.trim().parse().ok()).collect();
                if left.is_empty() {
                    break;
                }
                for pid in left {
                    set(
                        &ChangeKind::MoveProcess { pid },
                        &format!("{parent}/cgroup.procs"),
                        pid.to_string().as_bytes(),
                        writer,
                    )?;
                }
            }
            match writer.remove_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(write_error(path, writer)(e)),
            }
        }
        ChangeKind::VfioBind => {
            let address = device_address(path);
            let write =
                |file: &str, bytes: &[u8]| writer.write(file, bytes).map_err(write_error(file, writer));
            let driver = || writer.link_name(&format!("{path}/driver")).ok();
            // A newline clears the override (sysfs-bus-pci).
            write(&format!("{path}/driver_override"), b"\n")?;
            let original = String::from_utf8_lossy(original).trim().to_string();
            if driver().is_some_and(|d| d != original) {
                write(&format!("{path}/driver/unbind"), address.as_bytes())?;
            }
            if !original.is_empty() && driver().is_none() {
                write(PCI_DRIVERS_PROBE, address.as_bytes())?;
            }
            let now = driver().unwrap_or_default();
            if now != original {
                return Err(write_error(path, writer)(std::io::Error::other(format!(
                    "{address} did not return to `{original}` (it is on `{now}`)"
                ))));
            }
        }
        ChangeKind::CpusetList => match writer.write(path, original) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && original.trim_ascii().is_empty() => {}
            Err(e) => return Err(write_error(path, writer)(e)),
        },
        ChangeKind::MoveProcess { pid } => {
            let place: TaskPlace = serde_json::from_slice(original).map_err(|e| {
                write_error(path, writer)(std::io::Error::other(format!("journaled place of pid {pid}: {e}")))
            })?;
            set(kind, &place.cgroup_procs, pid.to_string().as_bytes(), writer)?;
            for (tid, cpus) in &place.threads {
                // Moving back gives the cgroup's CPUs; a thread that had its own gets them back.
                match affinity_of(writer, *tid) {
                    Ok(now) if &now != cpus => {
                        set(&ChangeKind::Affinity { tid: *tid }, path, cpus.to_string().as_bytes(), writer)?;
                    }
                    _ => {}
                }
            }
        }
        ChangeKind::MayBeRefused => {
            // A write the kernel refused changed nothing; when the journal could not record the
            // refusal (killed just after it), the file still holds its original.
            if let Outcome::Refused(reason) = set(kind, path, original, writer)? {
                let now = writer.read(path).map_err(read_error(path, writer))?;
                if now.trim_ascii() != original.trim_ascii() {
                    return Err(write_error(path, writer)(std::io::Error::other(format!(
                        "the kernel refused the original value: {reason}"
                    ))));
                }
            }
        }
        ChangeKind::Write
        | ChangeKind::HugepagePool
        | ChangeKind::Affinity { .. }
        | ChangeKind::IrqbalanceBan
        | ChangeKind::SystemdProperty { .. }
        | ChangeKind::ServiceState
        | ChangeKind::PlatformDriver => {
            let kind = if matches!(kind, ChangeKind::HugepagePool) { &ChangeKind::Write } else { kind };
            set(kind, path, original, writer)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostchange::writer::RootedHostWriter;

    fn host_with(path: &str, content: &str) -> (tempfile::TempDir, RootedHostWriter) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        let writer = RootedHostWriter::new(dir.path());
        (dir, writer)
    }

    #[test]
    fn apply_then_undo_restores_the_bytes() {
        let action = HostAction::reserve_hugepages(2048, 8192, Some(1), Some(0));
        assert_eq!(action.path, "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages");
        let (_dir, writer) = host_with(&action.path, "0\n");
        let applied = apply(&action, &writer).unwrap().unwrap();
        assert_eq!(writer.read(&action.path).unwrap(), b"8192");
        undo(&applied, &writer).unwrap();
        assert_eq!(writer.read(&action.path).unwrap(), b"0\n");
    }

    #[test]
    fn a_stale_plan_writes_nothing() {
        let action = HostAction::set_governor(3, Some("powersave"), "performance");
        let (_dir, writer) = host_with(&action.path, "schedutil\n");
        let error = apply(&action, &writer).unwrap_err();
        assert!(matches!(error, HostChangeError::Stale { .. }), "{error}");
        assert_eq!(writer.read(&action.path).unwrap(), b"schedutil\n");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let (_dir, writer) = host_with("/sys/other", "x");
        let error = apply(&HostAction::set_governor(0, None, "performance"), &writer).unwrap_err();
        assert!(
            error.to_string().contains("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "{error}"
        );
    }
}
