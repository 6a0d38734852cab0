//! The journal of host changes: every write is recorded, with the file's exact original bytes,
//! and synced to disk *before* it is made, so that whatever happens to the process (an error,
//! kill -9, a power cut of the process) the changes it made can be undone exactly.
//!
//! One file per VM and kind of journal ([`JournalKind`]): `DIR/<vm>.host.journal` for what
//! `host prepare` changed, `DIR/<vm>.vfio.journal` for the devices `vfio bind` handed over (by
//! default under `/run/kvmtune/`, which is a tmpfs that goes with the boot, as the kernel state
//! it describes does). The kind is the last word before `.journal`, so no VM's name can make one
//! kind's file another's; the begin record names both again, and a file whose name says
//! otherwise is refused. JSON lines, never a format that runs code when read:
//!
//! ```text
//! {"record":"begin","version":3,"kind":"host","vm":"win10","boot_id":"…","pid":4242,"cpus":"2-3","order":1}
//! {"record":"before","step":0,"path":"/proc/irq/24/smp_affinity_list","original_hex":"302d330a","new":"0-1","why":"…","change":{"kind":"may_be_refused"},"recompute":{"rule":"exclude_cpus",…}}
//! {"record":"done","step":0}
//! {"record":"before","step":1,"path":"/proc/irq/0/smp_affinity_list",…}
//! {"record":"refused","step":1,"reason":"Input/output error (os error 5)"}
//! {"record":"complete"}
//! ```
//!
//! Several VMs: each has its own journal, numbered in the order they were prepared (`order`).
//! Releasing one while others stay keeps their isolation: a file a later VM changed too gets
//! the value that VM would have written on this VM's original (its [`Recompute`] rule), and
//! that VM's journal takes over this VM's original, so that the last release restores the
//! state before the first prepare. The host cgroup and the processes moved into it, which
//! every VM's isolation needs, are handed over to the oldest remaining journal.
//!
//! `before` is synced before the write and `done` after it. A `before` without its `done` is a
//! write that may or may not have happened; undo restores its original either way, which is
//! exact in both cases. A last line cut short (the process died inside the append) is a record
//! that was never synced, so the write it announces was never made: it is passed over. A journal
//! whose `boot_id` is not this boot's describes a kernel state that is gone: it is reported and
//! set aside, never replayed; except an experiment's ([`JournalKind::outlives_boot`]), whose
//! changes are libvirt's persistent definitions, which a reboot keeps.
//!
//! Invocations are serialized by an exclusive lock on `DIR/lock`, held for the life of a
//! [`Journal`]; readers share it. Neither waits without end: a lock held past
//! [`WRITER_WAIT`] or [`READER_WAIT`] is an error that names its holder. The directory, its lock
//! and its journals are private to the user kvmtune runs as, and refused when they are not
//! ([`crate::hostchange::private_files`]): a journal is root's instructions. One journal that
//! cannot be read fails only its VM; [`Journal::status`] passes it over and
//! [`Journal::unreadable`] names it.
//!
//! How each change is undone is its [`ChangeKind`]'s: the original bytes written back for
//! files that take back what they show (masks, counts, cpusets, governors), `-cpuset` for a
//! controller that was off, the old cgroup for a moved process.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::hostchange::change::{self, Applied, ChangeKind, HostAction, HostChangeError, Outcome, Recompute};
use crate::hostchange::private_files::{self, LockMode, PrivateFileError};
use crate::values::CpuSet;

/// Where the kernel says which boot this is (`proc(5)`: a random UUID per boot).
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Where journals live on a real host.
pub const DEFAULT_DIR: &str = "/run/kvmtune";

/// Where experiments journal a domain's definition: on disk, since a definition outlives a
/// reboot (and with it anything under /run).
pub const EXPERIMENT_DIR: &str = "/var/lib/kvmtune/experiment";

/// How long changing the journals waits for another kvmtune to finish: a VM start (the libvirt
/// hook) fails with the holder's name rather than hang inside libvirt.
pub const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long reading them (`status`, the exporter, `top`) waits.
pub const READER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The largest journal read: far beyond any host's changes.
const MAX_JOURNAL_BYTES: u64 = 16 << 20;

/// The journal format this kvmtune writes; it reads every version up to it. 3: the begin
/// record names its [`JournalKind`], and files are named by kind.
pub const JOURNAL_VERSION: u32 = 3;

/// What a journal holds changes for: each kind is a namespace of its own, so that the devices
/// of domain `a` and the host isolation of a domain named `a.vfio` never share a journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalKind {
    /// `host prepare`: CPUs, IRQs, cgroups, governors, hugepages.
    #[default]
    Host,
    /// `vfio bind`: devices handed to vfio-pci.
    Devices,
    /// `experiment`: a libvirt domain's definition (and whether it ran) while its variants run.
    Experiment,
}

impl JournalKind {
    pub const ALL: [JournalKind; 3] = [JournalKind::Host, JournalKind::Devices, JournalKind::Experiment];

    /// The word before `.journal` in its files' names, and the command that releases it.
    pub fn word(self) -> &'static str {
        match self {
            JournalKind::Host => "host",
            JournalKind::Devices => "vfio",
            JournalKind::Experiment => "experiment",
        }
    }

    /// Whether what the journal changed survives a reboot, so that its undo still applies
    /// after one: an experiment's domain definition does; CPU masks, IRQs, cgroups and driver
    /// bindings do not (the journal of those is set aside after a reboot, never replayed).
    pub fn outlives_boot(self) -> bool {
        matches!(self, JournalKind::Experiment)
    }

    /// How messages name `vm`'s journal of this kind.
    pub fn label(self, vm: &str) -> String {
        match self {
            JournalKind::Host => vm.to_string(),
            JournalKind::Devices => format!("{vm} (devices)"),
            JournalKind::Experiment => format!("{vm} (experiment)"),
        }
    }

    fn file_name(self, vm: &str) -> String {
        format!("{vm}.{}.journal", self.word())
    }
}

/// The kind and VM a journal's file name gives; `None` for a name of neither kind (a version 2
/// host journal was `<vm>.journal`).
fn named_by(file_name: &str) -> Option<(JournalKind, &str)> {
    let (vm, word) = file_name.strip_suffix(".journal")?.rsplit_once('.')?;
    let kind = JournalKind::ALL.into_iter().find(|k| k.word() == word)?;
    Some((kind, vm))
}

fn first_version() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Record {
    Begin {
        /// The record format: 1 before records carried it (kvmtune 0.1.0 as first released),
        /// [`JOURNAL_VERSION`] now. A journal of a newer version is refused, never guessed at.
        #[serde(default = "first_version")]
        version: u32,
        /// Since version 3; before it, a device journal's VM was named `<vm>.vfio`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<JournalKind>,
        vm: String,
        boot_id: String,
        pid: u32,
        #[serde(default)]
        cpus: CpuSet,
        #[serde(default)]
        order: u64,
        /// Who made the changes when it was not a user at the command line: the libvirt hook
        /// ([`Journal::started_by`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    Before {
        step: usize,
        path: String,
        original_hex: String,
        new: String,
        why: String,
        #[serde(default)]
        change: ChangeKind,
        #[serde(default)]
        recompute: Recompute,
    },
    Done {
        step: usize,
    },
    /// The kernel refused the change (a managed IRQ): nothing was changed, nothing to undo.
    Refused {
        step: usize,
        reason: String,
    },
    Complete,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a journal record: {reason}")]
    Corrupt { path: PathBuf, line: usize, reason: String },
    #[error(
        "`{0}` cannot name a journal: a VM name must be non-empty, without `/` or NUL, and not `.` or `..`"
    )]
    BadVmName(String),
    #[error("VM `{0}` already has changes applied; release it first")]
    AlreadyPrepared(String),
    #[error("cannot read this host's boot id ({BOOT_ID_PATH}): {0}")]
    BootId(#[source] std::io::Error),
    /// A change failed and everything before it was undone; the journal is gone.
    #[error("{failed}; the {undone} change(s) made before it were undone")]
    RolledBack {
        #[source]
        failed: HostChangeError,
        undone: usize,
    },
    /// A change failed and undoing the ones before it failed too: the journal stays for
    /// `release` to finish.
    #[error(
        "{failed}; undoing the changes before it failed as well ({undo}); the journal is kept for `release`"
    )]
    RollbackFailed { failed: Box<HostChangeError>, undo: Box<HostChangeError> },
    #[error(transparent)]
    Change(#[from] HostChangeError),
    #[error(transparent)]
    Private(#[from] PrivateFileError),
    #[error("this host's boot id ({BOOT_ID_PATH}) is `{0}`, not a UUID")]
    BadBootId(String),
    /// A planned change outside what its kind may touch: a bug in a planner, refused before
    /// the first write.
    #[error("refusing to change {target}: {why}")]
    NotAllowed { target: String, why: String },
    /// A user other than root asked to read root's journals, which are root's alone.
    #[error("the journals in {0} are root's alone (mode 0700); run as root to see them")]
    RootOnly(PathBuf),
}

/// One VM's journal, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmJournal {
    pub kind: JournalKind,
    pub vm: String,
    pub path: PathBuf,
    pub pid: u32,
    /// The VM's CPUs: what the host share leaves out.
    pub cpus: CpuSet,
    /// Which prepare this was, counting up across the VMs prepared at the same time.
    pub order: u64,
    /// Who made the changes, when not a user at the command line (`libvirt-hook`).
    pub by: Option<String>,
    /// Every change recorded, in the order made.
    pub changes: Vec<JournaledChange>,
    /// The run that wrote it finished; otherwise it was interrupted.
    pub complete: bool,
    /// The boot it was written in ([`BOOT_ID_PATH`]).
    pub boot_id: String,
    /// Written during an earlier boot: its changes are gone with that boot.
    pub from_another_boot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournaledChange {
    pub path: String,
    #[serde(skip)]
    pub original: Vec<u8>,
    pub new: String,
    pub why: String,
    pub kind: ChangeKind,
    pub recompute: Recompute,
    /// The write is known to have happened (`done` was recorded), or was refused.
    pub done: bool,
    /// The kernel refused it, and why: nothing changed.
    pub refused: Option<String>,
}

impl JournaledChange {
    fn key(&self) -> String {
        HostAction::key(&self.kind, &self.path)
    }
}

/// What `release` did for one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Released {
    /// This many files were given back their original bytes.
    Restored(usize),
    /// The journal was from another boot: moved aside to this path, nothing written.
    SetAside(PathBuf),
}

/// The journals in one directory, locked for the life of this value.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    boot_id: String,
    _lock: Option<File>,
    /// Test-only: die by SIGKILL when this many journal steps (appends and writes) are done.
    kill_at_step: Option<usize>,
    /// Recorded in the journals begun through this handle ([`Journal::started_by`]).
    by: Option<String>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_path_buf(), source }
}

/// This boot's id, which marks every journal begun in it.
fn boot_id(host: &Host) -> Result<String, JournalError> {
    let id = host.fs.read(BOOT_ID_PATH).map_err(JournalError::BootId)?;
    let id = String::from_utf8_lossy(&id).trim().to_string();
    if !is_uuid(&id) {
        return Err(JournalError::BadBootId(crate::values::escape::terminal(&id).into_owned()));
    }
    Ok(id)
}

/// `8-4-4-4-12` hexadecimal digits, as the kernel writes a boot id: nothing else may reach a
/// file name (a set-aside journal is named after it).
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn check_vm_name(vm: &str) -> Result<(), JournalError> {
    if vm.is_empty() || vm == "." || vm == ".." || vm.contains('/') || vm.contains('\0') {
        return Err(JournalError::BadVmName(vm.to_string()));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

impl Journal {
    /// Opens (creating) the journal directory and waits for its lock. `host` is the host
    /// the changes go to; its boot id marks every journal begun now.
    pub fn open(dir: impl Into<PathBuf>, host: &Host) -> Result<Self, JournalError> {
        let dir = dir.into();
        private_files::private_dir(&dir)?;
        let lock = private_files::lock(&dir.join("lock"), LockMode::Exclusive, true, WRITER_WAIT)?;
        let boot_id = boot_id(host)?;
        Ok(Self { dir, boot_id, _lock: lock, kill_at_step: None, by: None })
    }

    /// Opens the journal directory to read it (`status`, a dry run), sharing the lock with
    /// other readers and waiting for a host to finish; needs no write access, so any user
    /// may look. Apply and release need [`Journal::open`].
    pub fn open_to_read(dir: impl Into<PathBuf>, host: &Host) -> Result<Self, JournalError> {
        let dir = dir.into();
        // Never written: nothing to check or wait for.
        let lock = if dir.exists() {
            private_files::checked_dir(&dir)?;
            if let Err(e) = std::fs::read_dir(&dir)
                && e.kind() == std::io::ErrorKind::PermissionDenied
            {
                return Err(JournalError::RootOnly(dir));
            }
            private_files::lock(&dir.join("lock"), LockMode::Shared, false, READER_WAIT)?
        } else {
            None
        };
        let boot_id = boot_id(host)?;
        Ok(Self { dir, boot_id, _lock: lock, kill_at_step: None, by: None })
    }

    /// Test-only failpoint: the process kills itself with SIGKILL once `step` journal steps
    /// (creating the file, each append and each host write count one) are done, as kill -9
    /// from outside would.
    #[doc(hidden)]
    pub fn kill_at_step(mut self, step: usize) -> Self {
        self.kill_at_step = Some(step);
        self
    }

    /// Marks the journals this handle begins as made by `by` (the libvirt hook), so that the
    /// hook can tell its own VMs from those a user prepared by hand.
    pub fn started_by(mut self, by: &str) -> Self {
        self.by = Some(by.to_string());
        self
    }

    fn path_for(&self, kind: JournalKind, vm: &str) -> PathBuf {
        self.dir.join(kind.file_name(vm))
    }

    /// Makes `actions` on `host` for `vm` (which runs on `cpus`), each journaled before it
    /// is made. On failure the changes already made are undone, newest first, and the journal
    /// removed.
    pub fn apply(
        &self,
        kind: JournalKind,
        vm: &str,
        cpus: &CpuSet,
        actions: &[HostAction],
        host: &Host,
    ) -> Result<Vec<Applied>, JournalError> {
        check_vm_name(vm)?;
        for action in actions {
            action
                .kind
                .behaviour()
                .allowed(&action.path, &action.new, b"")
                .map_err(|why| JournalError::NotAllowed { target: action.path.clone(), why })?;
        }
        let order = self.status()?.iter().map(|j| j.order).max().unwrap_or(0) + 1;
        let path = self.path_for(kind, vm);
        let mut file = private_files::create_new(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                JournalError::AlreadyPrepared(vm.to_string())
            } else {
                JournalError::Io { path: path.clone(), source }
            }
        })?;
        // The new file's name must survive too, not only its contents.
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_error(&self.dir))?;
        let mut steps = 0usize;
        self.step_done(&mut steps);
        let append = |file: &mut File, record: &Record, steps: &mut usize| -> Result<(), JournalError> {
            let mut line = serde_json::to_string(record).expect("records serialize");
            line.push('\n');
            // One write call per record: a kill leaves a record whole or a last line cut short.
            file.write_all(line.as_bytes()).and_then(|()| file.sync_data()).map_err(io_error(&path))?;
            self.step_done(steps);
            Ok(())
        };
        append(
            &mut file,
            &Record::Begin {
                version: JOURNAL_VERSION,
                kind: Some(kind),
                vm: vm.to_string(),
                boot_id: self.boot_id.clone(),
                pid: std::process::id(),
                cpus: cpus.clone(),
                order,
                by: self.by.clone(),
            },
            &mut steps,
        )?;

        let mut applied: Vec<Applied> = Vec::new();
        for action in actions {
            let step = applied.len();
            let outcome = change::read_original(action, host).and_then(|original| {
                let Some(original) = original else { return Ok(None) };
                append(
                    &mut file,
                    &Record::Before {
                        step,
                        path: action.path.clone(),
                        original_hex: hex(&original),
                        new: action.new.clone(),
                        why: action.why.clone(),
                        change: action.kind.clone(),
                        recompute: action.recompute.clone(),
                    },
                    &mut steps,
                )
                .map_err(|e| HostChangeError::Journal(e.to_string()))?;
                let made = change::make(action, original, host);
                self.step_done(&mut steps);
                made.map(Some)
            });
            match outcome {
                // The process or thread exited before it could be changed.
                Ok(None) => {}
                Ok(Some(done)) => {
                    let record = match &done.outcome {
                        Outcome::Made => Record::Done { step },
                        Outcome::Refused(reason) => Record::Refused { step, reason: reason.clone() },
                    };
                    applied.push(done);
                    append(&mut file, &record, &mut steps)?;
                }
                Err(failed) => {
                    drop(file);
                    return Err(self.roll_back(kind, vm, failed, host));
                }
            }
        }
        append(&mut file, &Record::Complete, &mut steps)?;
        Ok(applied)
    }

    fn step_done(&self, steps: &mut usize) {
        *steps += 1;
        if self.kill_at_step == Some(*steps) {
            crate::sys::die_by_sigkill();
        }
    }

    fn roll_back(&self, kind: JournalKind, vm: &str, failed: HostChangeError, host: &Host) -> JournalError {
        match self.release(kind, vm, host) {
            Ok(Released::Restored(undone)) => JournalError::RolledBack { failed, undone },
            Ok(Released::SetAside(_)) => JournalError::RolledBack { failed, undone: 0 },
            Err(error) => {
                let undo = match error {
                    JournalError::Change(undo) => undo,
                    other => HostChangeError::Journal(other.to_string()),
                };
                JournalError::RollbackFailed { failed: Box::new(failed), undo: Box::new(undo) }
            }
        }
    }

    /// Gives every object `vm`'s journal names its original state back, newest change first,
    /// then removes the journal. With other VMs still prepared, what they share is handed
    /// over to them instead (see the module docs). A journal from another boot is set aside.
    pub fn release(&self, kind: JournalKind, vm: &str, host: &Host) -> Result<Released, JournalError> {
        check_vm_name(vm)?;
        let mut path = self.path_for(kind, vm);
        // A version 2 host journal, written before this kvmtune was installed.
        let legacy = self.dir.join(format!("{vm}.journal"));
        if kind == JournalKind::Host
            && !path.exists()
            && named_by(&format!("{vm}.journal")).is_none()
            && legacy.exists()
        {
            path = legacy;
        }
        let journal = self.read(&path)?;
        if journal.from_another_boot && !kind.outlives_boot() {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let aside =
                self.dir.join(format!("{name}.boot-{}", journal.boot_id.get(..8).unwrap_or("unknown")));
            std::fs::rename(&journal.path, &aside).map_err(io_error(&journal.path))?;
            return Ok(Released::SetAside(aside));
        }
        // Every other VM still prepared: a later one may have changed a file this one did.
        let mut others: Vec<VmJournal> =
            self.status()?.into_iter().filter(|j| j.path != journal.path && !j.from_another_boot).collect();
        others.sort_by_key(|j| j.order);
        let (undo_steps, changed) = hand_over(&journal, &mut others);
        // The others' journals first: once they hold this VM's originals, a release killed
        // halfway can be run again and reaches the same state.
        for index in changed {
            rewrite(&others[index])?;
        }
        let mut restored = 0;
        for step in undo_steps {
            match step {
                UndoStep::Restore(change) => {
                    change::restore(&change.kind, &change.path, &change.new, &change.original, host)?
                }
                UndoStep::Set { kind, path, value } => {
                    change::set(&kind, &path, &value, host)?;
                }
            }
            restored += 1;
        }
        std::fs::remove_file(&journal.path).map_err(io_error(&journal.path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_error(&self.dir))?;
        Ok(Released::Restored(restored))
    }

    /// Every VM's journal in the directory that reads, by name; the others are
    /// [`Journal::unreadable`].
    pub fn status(&self) -> Result<Vec<VmJournal>, JournalError> {
        Ok(self.scan()?.into_iter().filter_map(Result::ok).collect())
    }

    /// The journals in the directory that cannot be read (another version, a corrupt or
    /// untrusted file), each with why: nothing is done with them, and releasing their VM fails.
    pub fn unreadable(&self) -> Result<Vec<(PathBuf, JournalError)>, JournalError> {
        let paths = self.paths()?;
        Ok(paths.into_iter().zip(self.scan()?).filter_map(|(path, read)| Some((path, read.err()?))).collect())
    }

    fn paths(&self) -> Result<Vec<PathBuf>, JournalError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.dir)(e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "journal"))
            .collect();
        paths.sort();
        Ok(paths)
    }

    fn scan(&self) -> Result<Vec<Result<VmJournal, JournalError>>, JournalError> {
        Ok(self.paths()?.iter().map(|p| self.read(p)).collect())
    }

    fn read(&self, path: &Path) -> Result<VmJournal, JournalError> {
        use std::io::Read as _;
        let file = private_files::open(path)?;
        let mut text = String::new();
        file.take(MAX_JOURNAL_BYTES).read_to_string(&mut text).map_err(io_error(path))?;
        let journal = parse(path, &text, &self.boot_id)?;
        // Replayed as root: every record must stay within what its kind may touch.
        for (step, change) in journal.changes.iter().enumerate() {
            change.kind.behaviour().allowed(&change.path, &change.new, &change.original).map_err(|why| {
                JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: step + 2,
                    reason: format!("step {step} may not change {}: {why}", change.path.escape_debug()),
                }
            })?;
        }
        // A journal is released by its file's name: its records must be about that VM and kind.
        if path_kind(path) != (journal.kind, journal.vm.clone()) {
            return Err(JournalError::Corrupt {
                path: path.to_path_buf(),
                line: 1,
                reason: format!(
                    "the begin record is for the {} journal of `{}`, which is not what the file's name says",
                    journal.kind.word(),
                    journal.vm
                ),
            });
        }
        Ok(journal)
    }
}

/// What releasing one VM writes, newest change first.
enum UndoStep {
    /// Back to the original.
    Restore(JournaledChange),
    /// A later VM changed the same object: what that VM would have written on this original.
    Set { kind: ChangeKind, path: String, value: Vec<u8> },
}

/// Works out how to release `journal` while `others` (oldest first) stay prepared: the steps
/// to take, and which of `others` now hold more (this VM's originals, or the shared changes
/// handed over to the oldest).
fn hand_over(
    journal: &VmJournal,
    others: &mut [VmJournal],
) -> (Vec<UndoStep>, std::collections::BTreeSet<usize>) {
    let mut changed = std::collections::BTreeSet::new();
    let mut steps = Vec::new();
    let mut handed = Vec::new();
    // The VM that inherits the host cgroup: the first that takes CPUs from the host. A device
    // hand-over or a hugepage-only prepare takes none and inherits nothing.
    let heir = others.iter().position(|o| !o.cpus.is_empty());
    for change in journal.changes.iter().rev().filter(|c| c.refused.is_none()) {
        if others.is_empty() {
            steps.push(UndoStep::Restore(change.clone()));
            continue;
        }
        // The host cgroup and the processes in it serve every VM's isolation.
        if heir.is_some() && matches!(change.kind, ChangeKind::CreateDir | ChangeKind::MoveProcess { .. }) {
            handed.push(change.clone());
            continue;
        }
        let key = change.key();
        let mut value = change.original.clone();
        let mut later_touched = false;
        for (index, other) in others.iter_mut().enumerate().filter(|(_, o)| o.order > journal.order) {
            if let Some(theirs) = other.changes.iter_mut().find(|c| c.refused.is_none() && c.key() == key) {
                theirs.original = value.clone();
                value = theirs.recompute.value(&value, &theirs.new).map_or(value, String::into_bytes);
                later_touched = true;
                changed.insert(index);
            }
        }
        steps.push(match later_touched {
            true => UndoStep::Set { kind: change.kind.clone(), path: change.path.clone(), value },
            false => UndoStep::Restore(change.clone()),
        });
    }
    if let (false, Some(heir)) = (handed.is_empty(), heir) {
        handed.reverse();
        let index = heir;
        let heir = &mut others[index];
        let held: std::collections::BTreeSet<String> =
            heir.changes.iter().map(JournaledChange::key).collect();
        handed.retain(|c| !held.contains(&c.key()));
        // Ahead of the heir's own changes, so they are undone after them (the heir's writes
        // into the host cgroup go before the cgroup does).
        handed.append(&mut heir.changes);
        heir.changes = handed;
        changed.insert(index);
    }
    (steps, changed)
}

/// Writes `journal` again as records, whole, in place of its file (write, sync, rename).
fn rewrite(journal: &VmJournal) -> Result<(), JournalError> {
    let mut text = String::new();
    let mut push = |record: Record| {
        text.push_str(&serde_json::to_string(&record).expect("records serialize"));
        text.push('\n');
    };
    push(Record::Begin {
        version: JOURNAL_VERSION,
        kind: Some(journal.kind),
        vm: journal.vm.clone(),
        boot_id: journal.boot_id.clone(),
        pid: journal.pid,
        cpus: journal.cpus.clone(),
        order: journal.order,
        by: journal.by.clone(),
    });
    for (step, change) in journal.changes.iter().enumerate() {
        push(Record::Before {
            step,
            path: change.path.clone(),
            original_hex: hex(&change.original),
            new: change.new.clone(),
            why: change.why.clone(),
            change: change.kind.clone(),
            recompute: change.recompute.clone(),
        });
        match (&change.refused, change.done) {
            (Some(reason), _) => push(Record::Refused { step, reason: reason.clone() }),
            (None, true) => push(Record::Done { step }),
            (None, false) => {}
        }
    }
    if journal.complete {
        push(Record::Complete);
    }
    private_files::replace(&journal.path, text.as_bytes())?;
    if let Some(dir) = journal.path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
    }
    Ok(())
}

/// The kind and VM a journal file's name gives; a version 2 name `<vm>.journal` is a host
/// journal's.
fn path_kind(path: &Path) -> (JournalKind, String) {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match named_by(&name) {
        Some((kind, vm)) => (kind, vm.to_string()),
        None => (JournalKind::Host, name.strip_suffix(".journal").unwrap_or(&name).to_string()),
    }
}

/// Reads one VM's journal (`path` names it in errors and, for a journal killed before its first
/// record, gives the VM's name); `this_boot` tells a journal from another boot.
pub fn parse(path: &Path, text: &str, this_boot: &str) -> Result<VmJournal, JournalError> {
    let lines: Vec<&str> = text.lines().collect();
    let corrupt =
        |line: usize, reason: String| JournalError::Corrupt { path: path.to_path_buf(), line, reason };
    let mut journal: Option<VmJournal> = None;
    for (index, line) in lines.iter().enumerate() {
        let record: Record = match serde_json::from_str(line) {
            Ok(record) => record,
            // Cut short by a kill inside the append: never synced, so its write never happened.
            Err(_) if index + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(error) => return Err(corrupt(index + 1, error.to_string())),
        };
        match (record, journal.as_mut()) {
            (Record::Begin { version, .. }, None) if version > JOURNAL_VERSION => {
                return Err(corrupt(
                    index + 1,
                    format!(
                        "journal version {version}, written by a newer kvmtune (this one reads up to {JOURNAL_VERSION})"
                    ),
                ));
            }
            (Record::Begin { boot_id, .. }, None) if !is_uuid(&boot_id) => {
                return Err(corrupt(index + 1, "boot_id is not a UUID".to_string()));
            }
            (Record::Begin { kind, vm, boot_id, pid, cpus, order, by, .. }, None) => {
                // Before version 3, a device journal's VM was `<vm>.vfio`.
                let (kind, vm) = match (kind, vm.strip_suffix(".vfio")) {
                    (Some(kind), _) => (kind, vm),
                    (None, Some(domain)) => (JournalKind::Devices, domain.to_string()),
                    (None, None) => (JournalKind::Host, vm),
                };
                journal = Some(VmJournal {
                    kind,
                    vm,
                    path: path.to_path_buf(),
                    pid,
                    cpus,
                    order,
                    by,
                    changes: Vec::new(),
                    complete: false,
                    from_another_boot: boot_id != this_boot,
                    boot_id,
                });
            }
            // A change is announced only after the one before it is done, and nothing follows
            // `complete`: the order `Journal::apply` writes.
            (Record::Before { step, path: target, original_hex, new, why, change, recompute }, Some(j))
                if step == j.changes.len() && j.changes.last().is_none_or(|c| c.done) && !j.complete =>
            {
                let original = unhex(&original_hex)
                    .ok_or_else(|| corrupt(index + 1, "original_hex is not hex".to_string()))?;
                j.changes.push(JournaledChange {
                    path: target,
                    original,
                    new,
                    why,
                    kind: change,
                    recompute,
                    done: false,
                    refused: None,
                });
            }
            (Record::Done { step }, Some(j)) if step + 1 == j.changes.len() && !j.changes[step].done => {
                j.changes[step].done = true
            }
            (Record::Refused { step, reason }, Some(j))
                if step + 1 == j.changes.len() && !j.changes[step].done =>
            {
                j.changes[step].done = true;
                j.changes[step].refused = Some(reason);
            }
            (Record::Complete, Some(j)) if j.changes.iter().all(|c| c.done) && !j.complete => {
                j.complete = true
            }
            (record, _) => return Err(corrupt(index + 1, format!("{record:?} out of order"))),
        }
    }
    match journal {
        Some(journal) => Ok(journal),
        // Killed between creating the file and syncing its first record: nothing was written.
        None if lines.len() <= 1 && !text.ends_with('\n') => Ok(VmJournal {
            kind: path_kind(path).0,
            vm: path_kind(path).1,
            path: path.to_path_buf(),
            pid: 0,
            cpus: CpuSet::new(),
            order: 0,
            by: None,
            changes: Vec::new(),
            complete: false,
            boot_id: this_boot.to_string(),
            from_another_boot: false,
        }),
        None => Err(corrupt(1, "no begin record".to_string())),
    }
}
