//! What a host change does, as data ([`HostAction`]), and how each kind of change is made and
//! undone: one type per kind, in a file of its own, behind the [`Change`] trait. Producing an
//! action writes nothing; [`apply`] makes it through a [`Host`] and hands back the original state,
//! and [`undo`] puts that back exactly.
//!
//! A new kind of change is a file here with a type implementing [`Change`], a variant of
//! [`ChangeKind`] (the name the journal records) and one arm in [`ChangeKind::behaviour`]; the
//! journal and every command take it from there.
//!
//! [`Recompute`] says how the value written follows from the value found: another VM's release
//! needs it to work out what this change would write on a different starting point.

mod affinity;
pub mod allowed;
mod cpuset_list;
mod create_dir;
mod domain_definition;
mod domain_running;
mod enable_controller;
mod hugepage_pool;
mod irqbalance_ban;
mod may_be_refused;
mod move_process;
mod platform_driver;
mod service_state;
mod systemd_property;
mod vfio_bind;
mod write;

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::values::CpuSet;
use crate::values::escape::shell;

pub use irqbalance_ban::irqbalance_banned;
pub use move_process::{TaskPlace, cgroup_procs_of};
pub use vfio_bind::PCI_DRIVERS_PROBE;

/// One change to one host object: a file, a directory, a process's cgroup, a thread's CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostAction {
    /// The file on the host, absolute (`/sys/devices/system/node/node1/hugepages/...`); for a
    /// thread's affinity `/proc/<tid>`, for irqbalance its socket, for systemd the unit.
    pub path: String,
    /// What the object holds now, where the plan read it; `None` when it is read only when the
    /// action is applied.
    pub old: Option<String>,
    /// What is written.
    pub new: String,
    /// Why, in a few words.
    pub why: String,
    pub kind: ChangeKind,
    pub recompute: Recompute,
}

/// How one kind of change is made and undone: what its journal records say and what every
/// command prints of it.
pub trait Change {
    /// The object's state now, the original a journal keeps before the change; `None` when
    /// the object is gone (a process or thread that exited), so there is nothing to change.
    fn read_original(&self, path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        host.fs.read(path).map(Some).map_err(read_error(path, host))
    }
    /// Gives the object `value`: the action's new value when it is made, or what another
    /// VM's change would have written on this one's original when that VM is released.
    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError>;
    /// Gives the object its `original` back (`new` is what was made).
    fn restore(&self, path: &str, new: &str, original: &[u8], host: &Host) -> Result<(), HostChangeError> {
        let _ = new;
        self.set(path, original, host).map(drop)
    }
    /// `path: old -> new`, for plans and dry runs.
    fn describe(&self, action: &HostAction) -> String {
        format!("{}: {} -> {}", action.path, old_text(action), action.new)
    }
    /// The same change as a shell command a user can run by hand, every word quoted.
    fn shell(&self, action: &HostAction) -> String {
        format!("echo {} > {}", shell(&action.new), shell(&action.path))
    }
    /// What undoing it looks like, for `status` and messages.
    fn undo_text(&self) -> &'static str {
        "original value written back"
    }
    /// Whether the state found must be the planned old value (a process is moved from
    /// wherever it is).
    fn checks_planned_value(&self) -> bool {
        true
    }
    /// What identifies the object across VMs' journals: the path, or the process or thread.
    fn key(&self, path: &str) -> String {
        path.to_string()
    }
    /// Whether a change of this kind may act on `path`, writing `new` and giving back
    /// `original` ([`allowed`]); checked for every record of a journal before any of it is
    /// undone, and for every action before the first is made. A plain write: the kernel files
    /// kvmtune tunes.
    fn allowed(&self, path: &str, new: &str, original: &[u8]) -> Result<(), String> {
        let _ = (new, original);
        match allowed::WRITABLE_FILES.iter().any(|patterns| allowed::any_matches(patterns, path)) {
            true => Ok(()),
            false => Err("not a kernel file kvmtune tunes".to_string()),
        }
    }
}

/// `Ok` when `path` matches one of `patterns`, else why not.
fn allowed_in(patterns: &[&str], path: &str, what: &str) -> Result<(), String> {
    match allowed::any_matches(patterns, path) {
        true => Ok(()),
        false => Err(format!("not {what}")),
    }
}

/// `Ok` when `name` (a driver's, from the journal) is a plain name or none at all.
fn allowed_driver(name: &[u8]) -> Result<(), String> {
    let name = String::from_utf8_lossy(name);
    let name = name.trim();
    match name.is_empty() || allowed::plain_name(name) {
        true => Ok(()),
        false => Err(format!("`{}` is not a driver's name", name.escape_debug())),
    }
}

/// How a change is made and undone, as the journal names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChangeKind {
    /// `new` written to the file; undo writes the original bytes back ([`write`]).
    #[default]
    Write,
    /// A write the kernel may refuse for good reasons ([`may_be_refused`]).
    MayBeRefused,
    /// A hugepage pool size, read back and compacted for ([`hugepage_pool`]).
    HugepagePool,
    /// `cgroup.subtree_control` ([`enable_controller`]).
    EnableController,
    /// A directory made, a cgroup ([`create_dir`]).
    CreateDir,
    /// A cgroup's `cpuset.cpus` or `cpuset.mems` ([`cpuset_list`]).
    CpusetList,
    /// Process `pid` written into `path`, a `cgroup.procs` ([`move_process`]).
    MoveProcess { pid: u32 },
    /// Thread `tid`'s CPUs ([`affinity`]).
    Affinity { tid: u32 },
    /// irqbalance's banned CPUs, through its control socket ([`irqbalance_ban`]).
    IrqbalanceBan,
    /// A PCI device handed to vfio-pci ([`vfio_bind`]).
    VfioBind,
    /// A property of a systemd unit, at runtime ([`systemd_property`]).
    SystemdProperty { property: String },
    /// Whether a systemd unit runs ([`service_state`]).
    ServiceState,
    /// The driver of a platform device ([`platform_driver`]).
    PlatformDriver,
    /// A libvirt domain's persistent definition ([`domain_definition`]).
    DomainDefinition,
    /// Whether a libvirt domain runs ([`domain_running`]).
    DomainRunning,
}

impl ChangeKind {
    /// The type that makes and undoes changes of this kind.
    pub fn behaviour(&self) -> Box<dyn Change> {
        match self {
            ChangeKind::Write => Box::new(write::Write),
            ChangeKind::MayBeRefused => Box::new(may_be_refused::MayBeRefused),
            ChangeKind::HugepagePool => Box::new(hugepage_pool::HugepagePool),
            ChangeKind::EnableController => Box::new(enable_controller::EnableController),
            ChangeKind::CreateDir => Box::new(create_dir::CreateDir),
            ChangeKind::CpusetList => Box::new(cpuset_list::CpusetList),
            ChangeKind::MoveProcess { pid } => Box::new(move_process::MoveProcess { pid: *pid }),
            ChangeKind::Affinity { tid } => Box::new(affinity::Affinity { tid: *tid }),
            ChangeKind::IrqbalanceBan => Box::new(irqbalance_ban::IrqbalanceBan),
            ChangeKind::VfioBind => Box::new(vfio_bind::VfioBind),
            ChangeKind::SystemdProperty { property } => {
                Box::new(systemd_property::SystemdProperty { property: property.clone() })
            }
            ChangeKind::ServiceState => Box::new(service_state::ServiceState),
            ChangeKind::PlatformDriver => Box::new(platform_driver::PlatformDriver),
            ChangeKind::DomainDefinition => Box::new(domain_definition::DomainDefinition),
            ChangeKind::DomainRunning => Box::new(domain_running::DomainRunning),
        }
    }
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
            Recompute::AddCount { by } => {
                found.parse::<u64>().ok().and_then(|n| n.checked_add(*by)).map(|n| n.to_string())
            }
            Recompute::AddCpus { cpus } => {
                let current = CpuSet::parse_list(found).ok()?;
                let more = current.union(cpus);
                (more != current).then(|| more.to_string())
            }
        }
    }
}

fn old_text(action: &HostAction) -> &str {
    action.old.as_deref().unwrap_or("(read at apply)")
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
        self.kind.behaviour().describe(self)
    }

    /// The same change as a shell command a user can run by hand.
    pub fn shell(&self) -> String {
        self.kind.behaviour().shell(self)
    }

    /// What undoing this change looks like, for `status` and messages.
    pub fn undo_text(&self) -> &'static str {
        self.kind.behaviour().undo_text()
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

    /// What identifies the object this change touches, across VMs' journals.
    pub fn key(kind: &ChangeKind, path: &str) -> String {
        kind.behaviour().key(path)
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

/// A process or thread that has exited (or a file that went with it).
fn is_gone(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::ESRCH) || error.kind() == std::io::ErrorKind::NotFound
}

fn read_error(path: &str, host: &Host) -> impl FnOnce(std::io::Error) -> HostChangeError {
    let (path, host) = (path.to_string(), host.describe());
    move |source| HostChangeError::Read { path, host, source }
}

fn write_error(path: &str, host: &Host) -> impl FnOnce(std::io::Error) -> HostChangeError {
    let (path, host) = (path.to_string(), host.describe());
    move |source| HostChangeError::Write { path, host, source }
}

/// A write to `path` that failed for a reason that is no `io::Error` of its own (a command's
/// refusal, a state not reached in time).
fn failed_write(path: &str, host: &Host, why: impl std::fmt::Display) -> HostChangeError {
    write_error(path, host)(std::io::Error::other(why.to_string()))
}

/// A plain write of `value` to `path`, as most kinds make it.
fn write_file(path: &str, value: &[u8], host: &Host) -> Result<(), HostChangeError> {
    host.fs.write(path, value).map_err(write_error(path, host))
}

/// `0000:00:10.0` from `/sys/bus/pci/devices/0000:00:10.0`: a device's name from its directory.
fn device_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The driver a device's `driver` link names now; `None` for none.
fn driver_of(path: &str, host: &Host) -> Option<String> {
    host.fs.link_name(&format!("{path}/driver")).ok()
}

/// A device's driver as a change kind's original: its name, or nothing for none.
fn original_driver(path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
    match host.fs.link_name(&format!("{path}/driver")) {
        Ok(driver) => Ok(Some(driver.into_bytes())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(Vec::new())),
        Err(e) => Err(read_error(path, host)(e)),
    }
}

/// Reads the object's original state, checks it against the planned old value, then makes
/// the change. The original comes back so that a journal can keep it. `Ok(None)`: the object
/// is gone (a process that exited), so there is nothing to change.
pub fn apply(action: &HostAction, host: &Host) -> Result<Option<Applied>, HostChangeError> {
    match read_original(action, host)? {
        Some(original) => make(action, original, host).map(Some),
        None => Ok(None),
    }
}

/// The object's state now, checked against the planned old value: the first half of
/// [`apply`], after which a journal records the original before anything is written. `None`:
/// the process or thread the change is about has exited.
pub fn read_original(action: &HostAction, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
    let behaviour = action.kind.behaviour();
    let Some(original) = behaviour.read_original(&action.path, host)? else { return Ok(None) };
    if let Some(expected) = &action.old {
        let found = String::from_utf8_lossy(&original).trim().to_string();
        if behaviour.checks_planned_value() && &found != expected {
            return Err(HostChangeError::Stale {
                path: action.path.clone(),
                expected: expected.clone(),
                found,
            });
        }
    }
    Ok(Some(original))
}

/// Makes the change, once `original` (from [`read_original`]) is safe: the second half of
/// [`apply`].
pub fn make(action: &HostAction, original: Vec<u8>, host: &Host) -> Result<Applied, HostChangeError> {
    let outcome = set(&action.kind, &action.path, action.new.as_bytes(), host)?;
    Ok(Applied { action: action.clone(), original, outcome })
}

/// Gives the object `value`, the way its kind is changed (a write, a move, an affinity).
/// Also how another VM's release writes a recomputed value.
pub fn set(kind: &ChangeKind, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
    kind.behaviour().set(path, value, host)
}

/// Puts back what `applied` changed.
pub fn undo(applied: &Applied, host: &Host) -> Result<(), HostChangeError> {
    restore(&applied.action.kind, &applied.action.path, &applied.action.new, &applied.original, host)
}

/// Gives the object at `path` back its `original` state, the way its kind is undone. A process
/// or thread that has exited and a directory already gone need nothing.
pub fn restore(
    kind: &ChangeKind,
    path: &str,
    new: &str,
    original: &[u8],
    host: &Host,
) -> Result<(), HostChangeError> {
    kind.behaviour().restore(path, new, original, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with(path: &str, content: &str) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        let host = Host::rooted(dir.path());
        (dir, host)
    }

    #[test]
    fn apply_then_undo_restores_the_bytes() {
        let action = HostAction::reserve_hugepages(2048, 8192, Some(1), Some(0));
        assert_eq!(action.path, "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages");
        let (_dir, host) = host_with(&action.path, "0\n");
        let applied = apply(&action, &host).unwrap().unwrap();
        assert_eq!(host.fs.read(&action.path).unwrap(), b"8192");
        undo(&applied, &host).unwrap();
        assert_eq!(host.fs.read(&action.path).unwrap(), b"0\n");
    }

    #[test]
    fn a_stale_plan_writes_nothing() {
        let action = HostAction::set_governor(3, Some("powersave"), "performance");
        let (_dir, host) = host_with(&action.path, "schedutil\n");
        let error = apply(&action, &host).unwrap_err();
        assert!(matches!(error, HostChangeError::Stale { .. }), "{error}");
        assert_eq!(host.fs.read(&action.path).unwrap(), b"schedutil\n");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let (_dir, host) = host_with("/sys/other", "x");
        let error = apply(&HostAction::set_governor(0, None, "performance"), &host).unwrap_err();
        assert!(
            error.to_string().contains("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "{error}"
        );
    }

    #[test]
    fn an_overflowing_count_changes_nothing() {
        let recompute = Recompute::AddCount { by: u64::MAX };
        assert_eq!(recompute.value(b"2\n", ""), None);
        assert_eq!(Recompute::AddCount { by: 3 }.value(b"2\n", ""), Some("5".to_string()));
    }

    #[test]
    fn shell_commands_quote_what_they_print() {
        let action = HostAction::write("/sys/x y/value", "$(reboot)", "test");
        assert_eq!(action.shell(), "echo '$(reboot)' > '/sys/x y/value'");
    }
}
