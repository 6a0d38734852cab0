//! The files that hold root's instructions (the journals and their lock), made so that nobody
//! else can write them and refused when somebody else could have.
//!
//! A journal is replayed as root: whoever can write one can make kvmtune write any file, stop
//! any unit or move any process. So the directory is made 0700 and each file 0600, new files
//! with `O_EXCL` and every open with `O_NOFOLLOW`, and on every open the directory and the file
//! must be what kvmtune made: not a symbolic link, owned by the user kvmtune runs as (root on a
//! real host) or by root (whom no user can distrust: root could write anything anyway, as
//! ssh trusts a root-owned directory above a user's keys), writable by nobody else (open(2), `O_NOFOLLOW` and `O_EXCL`; inode(7), the mode
//! bits).

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error(
        "{0} is a symbolic link; kvmtune keeps its journals in a directory of its own and follows no link there"
    )]
    Link(PathBuf),
    #[error(
        "{path} belongs to uid {owner}, neither root nor uid {expected} that kvmtune runs as; another user could have written it"
    )]
    Owner { path: PathBuf, owner: u32, expected: u32 },
    #[error("{path} is writable by {who} (mode {mode:03o}); another user could have written it")]
    Writable { path: PathBuf, who: &'static str, mode: u32 },
    #[error("{path} is not a {expected}")]
    NotKind { path: PathBuf, expected: &'static str },
}

/// Refuses what another user could have made or changed.
fn check(path: &Path, meta: &Metadata, directory: bool) -> Result<(), Untrusted> {
    if meta.file_type().is_symlink() {
        return Err(Untrusted::Link(path.to_path_buf()));
    }
    if meta.is_dir() != directory || !(directory || meta.is_file()) {
        let expected = if directory { "directory" } else { "regular file" };
        return Err(Untrusted::NotKind { path: path.to_path_buf(), expected });
    }
    let expected = crate::sys::effective_uid();
    if meta.uid() != expected && meta.uid() != 0 {
        return Err(Untrusted::Owner { path: path.to_path_buf(), owner: meta.uid(), expected });
    }
    let mode = meta.mode() & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "its group and all users",
        (true, false) => "its group",
        (false, true) => "all users",
        (false, false) => return Ok(()),
    };
    Err(Untrusted::Writable { path: path.to_path_buf(), who, mode })
}

/// Refuses a program root will run (the libvirt hook's binary) that a user could replace: the
/// file, and every directory above it, must be owned by root or the user kvmtune runs as and
/// writable by nobody else. A directory with the sticky bit that root owns (`/tmp`) passes: no
/// other user can rename or remove what is in it (inode(7), `S_ISVTX`).
pub fn check_program(path: &Path) -> Result<(), PrivateFileError> {
    let program = path.canonicalize().map_err(io(path))?;
    let meta = std::fs::metadata(&program).map_err(io(&program))?;
    check(&program, &meta, false)?;
    for dir in program.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).map_err(io(dir))?;
        let shared_but_sticky = meta.mode() & 0o1000 != 0 && meta.uid() == 0;
        if !shared_but_sticky {
            check(dir, &meta, true)?;
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error(transparent)]
    Untrusted(#[from] Untrusted),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is locked by {holder}; gave up after {:.0} s", waited.as_secs_f64())]
    Busy { path: PathBuf, holder: String, waited: Duration },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateFileError + '_ {
    move |source| PrivateFileError::Io { path: path.to_path_buf(), source }
}

/// Makes `dir` (0700) if it is missing, then checks it.
pub fn private_dir(dir: &Path) -> Result<(), PrivateFileError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(dir)(e)),
    }
    checked_dir(dir)
}

/// Checks an existing `dir` (a reader's: nothing is made).
pub fn checked_dir(dir: &Path) -> Result<(), PrivateFileError> {
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    Ok(check(dir, &meta, true)?)
}

/// Opens an existing file of the directory to read it, refusing a link or a stranger's file.
pub fn open(path: &Path) -> Result<File, PrivateFileError> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|e| {
        // O_NOFOLLOW on a link fails with ELOOP.
        if e.raw_os_error() == Some(libc::ELOOP) {
            PrivateFileError::from(Untrusted::Link(path.to_path_buf()))
        } else {
            io(path)(e)
        }
    })?;
    let meta = file.metadata().map_err(io(path))?;
    check(path, &meta, false)?;
    Ok(file)
}

/// Creates a new file (0600) for appending; fails if anything, even a dangling link, is there.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create_new(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Writes `bytes` to a file made afresh at `path` with `mode`, synced: whatever a crash (or
/// someone else) left there goes first (unlink does not follow a link), and the new file is
/// created with `O_EXCL` and `O_NOFOLLOW`, never opened through a link. The staging step of
/// every write-then-rename here and in the libvirt hook's install.
pub fn write_fresh(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)?;
    // The umask may have taken bits off the mode given at creation.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.sync_all()
}

/// Replaces `path` with `bytes`, through a new file beside it (synced, then renamed over).
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    write_fresh(&temporary, bytes, 0o600).map_err(io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(io(path))
}

/// How a lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Changes the journals: alone.
    Exclusive,
    /// Reads them: beside other readers.
    Shared,
}

/// Opens the directory's lock (0600, made if missing and `create`) and takes it within `wait`;
/// `Ok(None)` when it does not exist and `create` is false. A lock that stays taken is an
/// error that names who holds it, not a hang.
pub fn lock(
    path: &Path,
    mode: LockMode,
    create: bool,
    wait: Duration,
) -> Result<Option<File>, PrivateFileError> {
    let file = OpenOptions::new()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Untrusted::Link(path.to_path_buf()).into());
        }
        Err(e) => return Err(io(path)(e)),
    };
    let meta = file.metadata().map_err(io(path))?;
    check(path, &meta, false)?;
    // A lock others can open, they can hold: earlier releases made it 0644.
    if meta.mode() & 0o077 != 0 && create {
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    loop {
        let taken = match mode {
            LockMode::Exclusive => file.try_lock(),
            LockMode::Shared => file.try_lock_shared(),
        };
        match taken {
            Ok(()) => return Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(PrivateFileError::Busy {
                    path: path.to_path_buf(),
                    holder: holder(&meta),
                    waited: wait,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(path)(e)),
        }
    }
}

/// Who holds a lock on the file `meta` describes, from `/proc/locks` (`1: FLOCK ADVISORY WRITE
/// 2345 00:1a:12345 0 EOF`: pid, then the device in hexadecimal and the inode; fs/locks.c
/// `lock_get_status`).
fn holder(meta: &Metadata) -> String {
    let dev = meta.dev();
    // Linux's encoding of a device number (new_decode_dev and MAJOR/MINOR of sysmacros).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let pids: Vec<String> = locks
        .lines()
        // `->` lines are waiters, not holders.
        .filter(|l| !l.contains("->") && l.split_whitespace().any(|f| f == wanted))
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect();
    match pids.first() {
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let comm = crate::values::escape::terminal(comm.trim());
            format!("process {pid} ({comm})")
        }
        None => "another process".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_and_its_files_are_private() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("journals");
        private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let lock_file = lock(&dir.join("lock"), LockMode::Exclusive, true, Duration::ZERO).unwrap();
        assert!(lock_file.is_some());
        assert_eq!(std::fs::metadata(dir.join("lock")).unwrap().mode() & 0o777, 0o600);
        create_new(&dir.join("a.journal")).unwrap();
        assert_eq!(std::fs::metadata(dir.join("a.journal")).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn links_and_writable_files_are_refused() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("journals");
        private_dir(&dir).unwrap();
        let outside = temp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("b.journal")).unwrap();
        assert!(matches!(open(&dir.join("b.journal")), Err(PrivateFileError::Untrusted(Untrusted::Link(_)))));
        // A planted link where the rewrite's temporary goes is removed, not written through.
        std::fs::write(dir.join("c.journal"), "old").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("c.journal.new")).unwrap();
        replace(&dir.join("c.journal"), b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "x");
        assert_eq!(std::fs::read_to_string(dir.join("c.journal")).unwrap(), "new");
        // Writable by others.
        std::fs::write(dir.join("d.journal"), "x").unwrap();
        std::fs::set_permissions(dir.join("d.journal"), std::fs::Permissions::from_mode(0o666)).unwrap();
        let refused = open(&dir.join("d.journal")).unwrap_err().to_string();
        assert!(refused.contains("writable by its group and all users"), "{refused}");
        // The directory itself.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(checked_dir(&dir), Err(PrivateFileError::Untrusted(Untrusted::Writable { .. }))));
        let linked = temp.path().join("linked");
        std::os::unix::fs::symlink(&dir, &linked).unwrap();
        assert!(matches!(checked_dir(&linked), Err(PrivateFileError::Untrusted(Untrusted::Link(_)))));
    }

    #[test]
    fn a_held_lock_is_waited_for_a_bounded_time_and_its_holder_named() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("lock");
        let _held = lock(&path, LockMode::Exclusive, true, Duration::ZERO).unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too.
        let busy = lock(&path, LockMode::Shared, false, Duration::from_millis(50)).unwrap_err();
        let message = busy.to_string();
        assert!(matches!(busy, PrivateFileError::Busy { .. }), "{message}");
        assert!(message.contains(&format!("process {}", std::process::id())), "{message}");
    }
}
