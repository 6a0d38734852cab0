//! Where host facts come from: the live machine, or a snapshot of one.
//!
//! Every host read goes through [`HostSource`], so that the same probe code runs against `/`
//! and against a captured `sys/` + `proc/` tree (hwloc-gather-topology tarballs, lscpu dumps,
//! a user's bug report). Only the live source can talk to `/dev/kvm`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::host::kvm::KvmDeviceReport;

/// Files larger than this are not host facts but something odd (a device node, a huge log); a
/// snapshot made by hand can hold anything, and the probe must not read it into memory.
const MAX_FACT_FILE_BYTES: u64 = 4 << 20;

/// Why one host file could not be read. The message names the file, so an unknown fact always
/// says which file it needed.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The file or directory does not exist on this host or in this snapshot.
    #[error("{0} is missing")]
    Missing(String),
    /// The kernel refused access (not root, a lockdown, a debugfs file).
    #[error("{0}: permission denied")]
    PermissionDenied(String),
    /// The bytes are not text; sysfs and procfs facts are always text.
    #[error("{0} is not UTF-8 text")]
    NotText(String),
    /// Bigger than any fact file can be.
    #[error("{path} is {size} bytes, too large to be a host fact")]
    TooLarge { path: String, size: u64 },
    /// Anything else the OS said.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Read access to one host's `sys/`, `proc/` and `dev/`, by path relative to the host root
/// (`"sys/devices/system/cpu/online"`).
pub trait HostSource {
    /// The contents of a text file.
    fn read(&self, path: &str) -> Result<String, ReadError>;
    /// The names in a directory, sorted.
    fn list(&self, path: &str) -> Result<Vec<String>, ReadError>;
    /// The last path component a symlink points at (`driver` -> `vfio-pci`).
    fn link_name(&self, path: &str) -> Result<String, ReadError>;
    /// Whether anything exists at this path.
    fn exists(&self, path: &str) -> bool;
    /// What to call this source in reports: `live host` or `snapshot /path`.
    fn describe(&self) -> String;
    /// Opens `/dev/kvm` and asks it what it supports. `None` where that is impossible by
    /// construction (a snapshot): the probe then reports the device facts as unknown.
    fn query_kvm_device(&self) -> Option<KvmDeviceReport>;
    /// Runs a program with arguments and returns what it printed (stdout, else stderr). `None`
    /// where no program can run by construction (a snapshot).
    fn program_output(&self, program: &str, args: &[&str]) -> Option<Result<String, ReadError>>;

    /// Reads a file and trims it, the form nearly every sysfs fact takes.
    fn read_trimmed(&self, path: &str) -> Result<String, ReadError> {
        self.read(path).map(|text| text.trim().to_string())
    }
}

/// The machine kvmtune runs on.
#[derive(Debug, Default)]
pub struct LiveHost;

impl HostSource for LiveHost {
    fn read(&self, path: &str) -> Result<String, ReadError> {
        read_text(Path::new("/"), path)
    }
    fn list(&self, path: &str) -> Result<Vec<String>, ReadError> {
        list_dir(Path::new("/"), path)
    }
    fn link_name(&self, path: &str) -> Result<String, ReadError> {
        link_name(Path::new("/"), path)
    }
    fn exists(&self, path: &str) -> bool {
        Path::new("/").join(path).exists()
    }
    fn describe(&self) -> String {
        "live host".to_string()
    }
    fn query_kvm_device(&self) -> Option<KvmDeviceReport> {
        Some(crate::host::kvm::query_live_device(Path::new("/dev/kvm")))
    }
    fn program_output(&self, program: &str, args: &[&str]) -> Option<Result<String, ReadError>> {
        Some(run_program(program, args))
    }
}

/// Daemons live in sbin, which a user's PATH often lacks.
const EXTRA_PROGRAM_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin"];

fn run_program(program: &str, args: &[&str]) -> Result<String, ReadError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(EXTRA_PROGRAM_DIRS.iter().map(PathBuf::from));
    let resolved = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| p.is_file())
    } else {
        dirs.iter().map(|dir| dir.join(program)).find(|p| p.is_file())
    };
    let resolved = resolved.ok_or_else(|| ReadError::Missing(program.to_string()))?;
    let output = std::process::Command::new(&resolved)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| classify(program, e))?;
    let text = if output.stdout.is_empty() { output.stderr } else { output.stdout };
    String::from_utf8(text).map_err(|_| ReadError::NotText(format!("{program} {}", args.join(" "))))
}

/// A captured host tree: a directory holding `sys/` and `proc/`.
#[derive(Debug)]
pub struct SnapshotHost {
    root: PathBuf,
}

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("snapshot root {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("snapshot root {0} holds neither sys/ nor proc/ (nor fsroot/sys, fsroot/proc)")]
    NoHostTree(PathBuf),
}

impl SnapshotHost {
    /// Opens a snapshot. Accepts the tree itself or a directory whose `fsroot/` holds it (the
    /// layout of hwloc's x86+linux test tarballs).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, SnapshotError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(SnapshotError::NotADirectory(root));
        }
        let has_tree = |dir: &Path| dir.join("sys").is_dir() || dir.join("proc").is_dir();
        if has_tree(&root) {
            return Ok(Self { root });
        }
        let nested = root.join("fsroot");
        if has_tree(&nested) {
            return Ok(Self { root: nested });
        }
        Err(SnapshotError::NoHostTree(root))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl HostSource for SnapshotHost {
    fn read(&self, path: &str) -> Result<String, ReadError> {
        read_text(&self.root, path)
    }
    fn list(&self, path: &str) -> Result<Vec<String>, ReadError> {
        list_dir(&self.root, path)
    }
    fn link_name(&self, path: &str) -> Result<String, ReadError> {
        link_name(&self.root, path)
    }
    fn exists(&self, path: &str) -> bool {
        self.root.join(path).symlink_metadata().is_ok()
    }
    fn describe(&self) -> String {
        format!("snapshot {}", self.root.display())
    }
    fn query_kvm_device(&self) -> Option<KvmDeviceReport> {
        None
    }
    fn program_output(&self, _program: &str, _args: &[&str]) -> Option<Result<String, ReadError>> {
        None
    }
}

fn classify(path: &str, error: std::io::Error) -> ReadError {
    match error.kind() {
        ErrorKind::NotFound => ReadError::Missing(path.to_string()),
        ErrorKind::PermissionDenied => ReadError::PermissionDenied(path.to_string()),
        _ => ReadError::Io { path: path.to_string(), source: error },
    }
}

fn read_text(root: &Path, path: &str) -> Result<String, ReadError> {
    use std::io::Read;
    let full = root.join(path);
    let file = std::fs::File::open(&full).map_err(|e| classify(path, e))?;
    let metadata = file.metadata().map_err(|e| classify(path, e))?;
    if metadata.is_dir() {
        return Err(ReadError::Io {
            path: path.to_string(),
            source: std::io::Error::other("is a directory"),
        });
    }
    // sysfs and procfs report a size of 4096 or 0 whatever the content, so the size check is
    // only meaningful for regular files in snapshots; the read itself is capped either way.
    if metadata.len() > MAX_FACT_FILE_BYTES {
        return Err(ReadError::TooLarge { path: path.to_string(), size: metadata.len() });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FACT_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| classify(path, e))?;
    if bytes.len() as u64 > MAX_FACT_FILE_BYTES {
        return Err(ReadError::TooLarge { path: path.to_string(), size: bytes.len() as u64 });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText(path.to_string()))
}

fn list_dir(root: &Path, path: &str) -> Result<Vec<String>, ReadError> {
    let entries = std::fs::read_dir(root.join(path)).map_err(|e| classify(path, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| classify(path, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort_by(|a, b| natural_order(a, b));
    Ok(names)
}

fn link_name(root: &Path, path: &str) -> Result<String, ReadError> {
    let target = std::fs::read_link(root.join(path)).map_err(|e| classify(path, e))?;
    target
        .file_name()
        .and_then(|name| name.to_str())
        .map(str::to_string)
        .ok_or_else(|| ReadError::NotText(path.to_string()))
}

/// Orders `cpu2` before `cpu10`, as people expect.
pub fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| {
        let digits_at = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
        let (prefix, rest) = s.split_at(digits_at);
        (prefix.to_string(), rest.parse::<u64>().ok(), s.to_string())
    };
    split(a).cmp(&split(b))
}

/// Lists the `<prefix><number>` entries of a directory (`cpu0`, `node1`, `policy3`), by number.
pub fn numbered_entries(host: &dyn HostSource, dir: &str, prefix: &str) -> Result<Vec<u32>, ReadError> {
    let mut numbers: Vec<u32> =
        host.list(dir)?.iter().filter_map(|name| name.strip_prefix(prefix)?.parse().ok()).collect();
    numbers.sort_unstable();
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_finds_tree_under_fsroot() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("fsroot/sys")).unwrap();
        let host = SnapshotHost::open(dir.path()).unwrap();
        assert!(host.root().ends_with("fsroot"));
    }

    #[test]
    fn snapshot_without_tree_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(SnapshotHost::open(dir.path()), Err(SnapshotError::NoHostTree(_))));
        assert!(matches!(SnapshotHost::open(dir.path().join("nope")), Err(SnapshotError::NotADirectory(_))));
    }

    #[test]
    fn read_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys")).unwrap();
        std::fs::write(dir.path().join("sys/binary"), [0xff, 0xfe]).unwrap();
        let host = SnapshotHost::open(dir.path()).unwrap();
        assert_eq!(host.read("sys/absent").unwrap_err().to_string(), "sys/absent is missing");
        assert_eq!(host.read("sys/binary").unwrap_err().to_string(), "sys/binary is not UTF-8 text");
        assert!(host.read("sys").is_err());
    }

    #[test]
    fn natural_order_sorts_numbers_numerically() {
        let mut names = vec!["cpu10", "cpu2", "cpufreq", "cpu1"];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(names, ["cpu1", "cpu2", "cpu10", "cpufreq"]);
    }
}
