//! The journal of host changes: every write is recorded, with the file's exact original bytes,
//! and synced to disk *before* it is made, so that whatever happens to the process (an error,
//! kill -9, a power cut of the process) the changes it made can be undone exactly.
//!
//! One file per VM, `DIR/<vm>.journal` (by default under `/run/kvmtune/`, which is a tmpfs that
//! goes with the boot, as the kernel state it describes does). JSON lines, never a format that
//! runs code when read:
//!
//! ```text
//! {"record":"begin","vm":"win10","boot_id":"…","pid":4242}
//! {"record":"before","step":0,"path":"/proc/irq/24/smp_affinity","original_hex":"660a","new":"3","why":"…"}
//! {"record":"done","step":0}
//! {"record":"complete"}
//! ```
//!
//! `before` is synced before the write and `done` after it. A `before` without its `done` is a
//! write that may or may not have happened; undo restores its original either way, which is
//! exact in both cases. A last line cut short (the process died inside the append) is a record
//! that was never synced, so the write it announces was never made: it is passed over. A journal
//! whose `boot_id` is not this boot's describes a kernel state that is gone: it is reported and
//! set aside, never replayed.
//!
//! Invocations are serialized by an exclusive lock on `DIR/lock`, held for the life of a
//! [`Journal`].
//!
//! Undo writes the original bytes back, which is exact for files that take back what they
//! show (masks, counts, cpusets, governors). Not yet for `cgroup.subtree_control`, whose
//! read-back is not a valid write (undo there needs `-cpuset`); the `kvmtune host` command that
//! will need it, and the sharing of files between VMs, are not built yet (issue 14).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hostchange::action::{self, Applied, HostAction, HostChangeError};
use crate::hostchange::writer::HostWriter;

/// Where the kernel says which boot this is (`proc(5)`: a random UUID per boot).
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Where journals live on a real host.
pub const DEFAULT_DIR: &str = "/run/kvmtune";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Record {
    Begin { vm: String, boot_id: String, pid: u32 },
    Before { step: usize, path: String, original_hex: String, new: String, why: String },
    Done { step: usize },
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
}

/// One VM's journal, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmJournal {
    pub vm: String,
    pub path: PathBuf,
    pub pid: u32,
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
    /// The write is known to have happened (`done` was recorded).
    pub done: bool,
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
    _lock: File,
    /// Test-only: die by SIGKILL when this many journal steps (appends and writes) are done.
    kill_at_step: Option<usize>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_path_buf(), source }
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
    /// Opens (creating) the journal directory and waits for its lock. `writer` is the host
    /// the changes go to; its boot id marks every journal begun now.
    pub fn open(dir: impl Into<PathBuf>, writer: &dyn HostWriter) -> Result<Self, JournalError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        lock.lock().map_err(io_error(&lock_path))?;
        let boot_id = writer.read(BOOT_ID_PATH).map_err(JournalError::BootId)?;
        let boot_id = String::from_utf8_lossy(&boot_id).trim().to_string();
        Ok(Self { dir, boot_id, _lock: lock, kill_at_step: None })
    }

    /// Test-only failpoint: the process kills itself with SIGKILL once `step` journal steps
    /// (creating the file, each append and each host write count one) are done, as kill -9
    /// from outside would.
    #[doc(hidden)]
    pub fn kill_at_step(mut self, step: usize) -> Self {
        self.kill_at_step = Some(step);
        self
    }

    fn path_for(&self, vm: &str) -> PathBuf {
        self.dir.join(format!("{vm}.journal"))
    }

    /// Makes `actions` on `writer` for `vm`, each journaled before it is made. On failure the
    /// changes already made are undone, newest first, and the journal removed.
    pub fn apply(
        &self,
        vm: &str,
        actions: &[HostAction],
        writer: &dyn HostWriter,
    ) -> Result<Vec<Applied>, JournalError> {
        check_vm_name(vm)?;
        let path = self.path_for(vm);
        let mut file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(|source| {
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
            &Record::Begin { vm: vm.to_string(), boot_id: self.boot_id.clone(), pid: std::process::id() },
            &mut steps,
        )?;

        let mut applied: Vec<Applied> = Vec::new();
        for (step, action) in actions.iter().enumerate() {
            let outcome = action::read_original(action, writer).and_then(|original| {
                append(
                    &mut file,
                    &Record::Before {
                        step,
                        path: action.path.clone(),
                        original_hex: hex(&original),
                        new: action.new.clone(),
                        why: action.why.clone(),
                    },
                    &mut steps,
                )
                .map_err(|e| HostChangeError::Journal(e.to_string()))?;
                let made = action::write_new(action, original, writer);
                self.step_done(&mut steps);
                made
            });
            match outcome {
                Ok(done) => {
                    applied.push(done);
                    append(&mut file, &Record::Done { step }, &mut steps)?;
                }
                Err(failed) => {
                    drop(file);
                    return Err(self.roll_back(vm, failed, writer));
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

    fn roll_back(&self, vm: &str, failed: HostChangeError, writer: &dyn HostWriter) -> JournalError {
        match self.release(vm, writer) {
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

    /// Gives every file `vm`'s journal names its original bytes back, newest change first,
    /// then removes the journal. A journal from another boot is set aside instead.
    pub fn release(&self, vm: &str, writer: &dyn HostWriter) -> Result<Released, JournalError> {
        check_vm_name(vm)?;
        let journal = self.read(&self.path_for(vm))?;
        if journal.from_another_boot {
            let aside =
                self.dir.join(format!("{vm}.journal.boot-{}", journal.boot_id.get(..8).unwrap_or("unknown")));
            std::fs::rename(&journal.path, &aside).map_err(io_error(&journal.path))?;
            return Ok(Released::SetAside(aside));
        }
        for change in journal.changes.iter().rev() {
            action::restore(&change.path, &change.original, writer)?;
        }
        std::fs::remove_file(&journal.path).map_err(io_error(&journal.path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_error(&self.dir))?;
        Ok(Released::Restored(journal.changes.len()))
    }

    /// Every VM's journal in the directory, by name.
    pub fn status(&self) -> Result<Vec<VmJournal>, JournalError> {
        let entries = std::fs::read_dir(&self.dir).map_err(io_error(&self.dir))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "journal"))
            .collect();
        paths.sort();
        paths.iter().map(|p| self.read(p)).collect()
    }

    fn read(&self, path: &Path) -> Result<VmJournal, JournalError> {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        parse(path, &text, &self.boot_id)
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
            (Record::Begin { vm, boot_id, pid }, None) => {
                journal = Some(VmJournal {
                    vm,
                    path: path.to_path_buf(),
                    pid,
                    changes: Vec::new(),
                    complete: false,
                    from_another_boot: boot_id != this_boot,
                    boot_id,
                });
            }
            // A change is announced only after the one before it is done, and nothing follows
            // `complete`: the order `Journal::apply` writes.
            (Record::Before { step, path: target, original_hex, new, why }, Some(j))
                if step == j.changes.len() && j.changes.last().is_none_or(|c| c.done) && !j.complete =>
            {
                let original = unhex(&original_hex)
                    .ok_or_else(|| corrupt(index + 1, "original_hex is not hex".to_string()))?;
                j.changes.push(JournaledChange { path: target, original, new, why, done: false });
            }
            (Record::Done { step }, Some(j)) if step + 1 == j.changes.len() && !j.changes[step].done => {
                j.changes[step].done = true
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
            vm: path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            path: path.to_path_buf(),
            pid: 0,
            changes: Vec::new(),
            complete: false,
            boot_id: this_boot.to_string(),
            from_another_boot: false,
        }),
        None => Err(corrupt(1, "no begin record".to_string())),
    }
}
