//! One way to reach a host: its files through [`HostFs`] (read, list, write, make and remove a
//! directory, by absolute path such as `/sys/kernel/mm/...`), with the live and the rooted
//! implementation, and beside it the typed capabilities that are not files: systemd, irqbalance's
//! control socket, a thread's CPUs and programs to ask for their version. The KVM device is the
//! fifth ([`crate::host::kvm::KvmDevice`]). [`crate::host::Host`] bundles one of each; the probe
//! reads facts through it and `hostchange` makes its changes through it.
//!
//! Each capability has its live implementation here and a fake for tests in
//! [`crate::host::fakes`], so that a test states what systemd holds rather than matching the
//! command lines kvmtune would run.

use std::io::{ErrorKind, Read as _, Write as _};
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use crate::values::CpuSet;

/// Files larger than this are not host facts but something odd (a device node, a huge log); a
/// snapshot or a rooted host made by hand can hold anything, and nothing may read it into memory.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Why one host file could not be read as a fact. The message names the file, so an unknown
/// fact always says which file it needed.
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

impl ReadError {
    /// The error of reading `path`, by what the OS said.
    pub fn of(path: &str, error: std::io::Error) -> Self {
        match error.kind() {
            ErrorKind::NotFound => ReadError::Missing(path.to_string()),
            ErrorKind::PermissionDenied => ReadError::PermissionDenied(path.to_string()),
            ErrorKind::FileTooLarge => {
                ReadError::TooLarge { path: path.to_string(), size: MAX_FILE_BYTES + 1 }
            }
            _ => ReadError::Io { path: path.to_string(), source: error },
        }
    }
}

/// One host's files, by absolute path. Writes go to files that already exist (sysfs, procfs
/// and cgroupfs files always do): a write never creates a file. Directories are made only where
/// a change asks for one (a cgroup).
pub trait HostFs: Send + Sync {
    /// The bytes a file holds now (at most [`MAX_FILE_BYTES`]; more is an error of kind
    /// `FileTooLarge`): the original a journal keeps before a write.
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>>;
    /// The names in a directory, in natural order (`cpu2` before `cpu10`).
    fn list(&self, path: &str) -> std::io::Result<Vec<String>>;
    /// A symlink's target as written (`../../devices/pci0000:00/0000:00:1f.2/ata1/...`).
    fn link_target(&self, path: &str) -> std::io::Result<String>;
    /// Whether `path` names a directory (following symlinks, as sysfs paths are walked).
    fn is_dir(&self, path: &str) -> bool;
    /// Whether anything, even a dangling symlink, is at `path`.
    fn exists(&self, path: &str) -> bool;
    /// Replaces what a file holds with `bytes`, in one `write` call as sysfs expects.
    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes one directory (a cgroup: the kernel fills it with its interface files).
    fn make_dir(&self, path: &str) -> std::io::Result<()>;
    /// Removes an empty directory (a cgroup without tasks or children).
    fn remove_dir(&self, path: &str) -> std::io::Result<()>;
    /// What to call this host in messages.
    fn describe(&self) -> String;
    /// Where facts come from, as the probe's JSON names it (`live host`, `snapshot DIR`).
    fn source(&self) -> String {
        self.describe()
    }

    /// A file's text without the surrounding whitespace (sysfs values end in a newline).
    fn read_trimmed(&self, path: &str) -> std::io::Result<String> {
        Ok(String::from_utf8_lossy(&self.read(path)?).trim().to_string())
    }

    /// The last component of a symlink's target (a device's `driver` or `iommu_group` link).
    fn link_name(&self, path: &str) -> std::io::Result<String> {
        let target = self.link_target(path)?;
        Ok(target.rsplit('/').next().unwrap_or_default().to_string())
    }
}

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    // A FIFO or a device node would block the open or never end: no fact file is one.
    let kind = std::fs::metadata(path)?.file_type();
    if !(kind.is_file() || kind.is_dir()) {
        return Err(std::io::Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    if metadata.is_dir() {
        return Err(std::io::Error::new(ErrorKind::IsADirectory, "is a directory"));
    }
    // sysfs and procfs report a size of 4096 or 0 whatever the content, so the size is checked
    // up front only for regular files; the read itself is capped either way.
    let too_large =
        || std::io::Error::new(ErrorKind::FileTooLarge, format!("more than {MAX_FILE_BYTES} bytes"));
    if metadata.is_file() && metadata.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // No create: a missing sysfs file is an error, never a new file. Truncation keeps a regular
    // file (a rooted test host) exact; sysfs ignores it.
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(bytes)
}

fn list_dir(path: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(path)? {
        if let Some(name) = entry?.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort_by(|a, b| natural_order(a, b));
    Ok(names)
}

/// The machine kvmtune runs on.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveFs;

impl HostFs for LiveFs {
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        read_capped(Path::new(path))
    }
    fn list(&self, path: &str) -> std::io::Result<Vec<String>> {
        list_dir(Path::new(path))
    }
    fn link_target(&self, path: &str) -> std::io::Result<String> {
        Ok(std::fs::read_link(path)?.to_string_lossy().into_owned())
    }
    fn is_dir(&self, path: &str) -> bool {
        Path::new(path).is_dir()
    }
    fn exists(&self, path: &str) -> bool {
        Path::new(path).symlink_metadata().is_ok()
    }
    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        write_file(Path::new(path), bytes)
    }
    fn make_dir(&self, path: &str) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }
    fn remove_dir(&self, path: &str) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn describe(&self) -> String {
        "this host".to_string()
    }
    fn source(&self) -> String {
        "live host".to_string()
    }
}

/// A directory laid out like a host's root: `/sys/x` is `DIR/sys/x`. A snapshot (an
/// hwloc-gather-topology tarball unpacked, a user's bug report) is one that refuses writes; a
/// test host or a dry run's copy takes them.
#[derive(Debug, Clone)]
pub struct RootedFs {
    root: PathBuf,
    writable: bool,
}

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("snapshot root {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("snapshot root {0} holds neither sys/ nor proc/ (nor fsroot/sys, fsroot/proc)")]
    NoHostTree(PathBuf),
}

impl RootedFs {
    /// A host laid out under `root`, which takes writes.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), writable: true }
    }

    /// A captured host tree, read only. Accepts the tree itself or a directory whose `fsroot/`
    /// holds it (the layout of hwloc's x86+linux test tarballs).
    pub fn snapshot(root: impl Into<PathBuf>) -> Result<Self, SnapshotError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(SnapshotError::NotADirectory(root));
        }
        let has_tree = |dir: &Path| dir.join("sys").is_dir() || dir.join("proc").is_dir();
        if has_tree(&root) {
            return Ok(Self { root, writable: false });
        }
        let nested = root.join("fsroot");
        if has_tree(&nested) {
            return Ok(Self { root: nested, writable: false });
        }
        Err(SnapshotError::NoHostTree(root))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file below the root that stands for a host path; `..` cannot climb out of it.
    pub fn resolve(&self, path: &str) -> std::io::Result<PathBuf> {
        let mut resolved = self.root.clone();
        for component in Path::new(path).components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(part) => resolved.push(part),
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidInput,
                        format!("{path}: a host path has no `..`"),
                    ));
                }
            }
        }
        Ok(resolved)
    }

    fn writable(&self, path: &str) -> std::io::Result<PathBuf> {
        if !self.writable {
            return Err(std::io::Error::new(
                ErrorKind::ReadOnlyFilesystem,
                format!("{path}: {} is a snapshot, which is never changed", self.root.display()),
            ));
        }
        let resolved = self.resolve(path)?;
        // `..` is refused above, but a link inside the root may still point out of it (an
        // absolute link in a copied sysfs points at this machine's own): what a write reaches,
        // links followed, must lie below the root.
        let root = self.root.canonicalize()?;
        let parent = resolved.parent().unwrap_or(&resolved).canonicalize()?;
        let reached = match resolved.file_name() {
            Some(name) if resolved.symlink_metadata().is_ok() => parent.join(name).canonicalize()?,
            _ => parent,
        };
        if !reached.starts_with(&root) {
            return Err(std::io::Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{path}: leads out of {} through a link (to {})",
                    self.root.display(),
                    reached.display()
                ),
            ));
        }
        Ok(resolved)
    }
}

impl HostFs for RootedFs {
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        read_capped(&self.resolve(path)?)
    }
    fn list(&self, path: &str) -> std::io::Result<Vec<String>> {
        list_dir(&self.resolve(path)?)
    }
    fn link_target(&self, path: &str) -> std::io::Result<String> {
        Ok(std::fs::read_link(self.resolve(path)?)?.to_string_lossy().into_owned())
    }
    fn is_dir(&self, path: &str) -> bool {
        self.resolve(path).is_ok_and(|p| p.is_dir())
    }
    fn exists(&self, path: &str) -> bool {
        self.resolve(path).is_ok_and(|p| p.symlink_metadata().is_ok())
    }
    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        write_file(&self.writable(path)?, bytes)
    }
    fn make_dir(&self, path: &str) -> std::io::Result<()> {
        std::fs::create_dir(self.writable(path)?)
    }
    fn remove_dir(&self, path: &str) -> std::io::Result<()> {
        std::fs::remove_dir(self.writable(path)?)
    }
    fn describe(&self) -> String {
        match self.writable {
            true => format!("the host rooted at {}", self.root.display()),
            false => format!("snapshot {}", self.root.display()),
        }
    }
}

/// systemd, which owns the cgroups of its units and runs the display manager: properties read
/// and set at runtime, units started and stopped.
pub trait Systemd: Send + Sync {
    /// A unit's property as `systemctl show --value -p` prints it (empty for none set).
    fn property(&self, unit: &str, property: &str) -> std::io::Result<String>;
    /// Several properties of several units at once: `values[u][p]` is `properties[p]` of
    /// `units[u]`, as [`Self::property`] reads it. One round trip where systemd is a process
    /// away: each `systemctl` costs its start-up, and the libvirt hook runs while libvirtd waits.
    fn properties(&self, units: &[&str], properties: &[&str]) -> std::io::Result<Vec<Vec<String>>> {
        units.iter().map(|unit| properties.iter().map(|p| self.property(unit, p)).collect()).collect()
    }
    /// `systemctl set-property --runtime UNIT PROPERTY=VALUE`: gone with the next boot.
    fn set_runtime_property(&self, unit: &str, property: &str, value: &str) -> std::io::Result<()>;
    fn start(&self, unit: &str) -> std::io::Result<()>;
    fn stop(&self, unit: &str) -> std::io::Result<()>;
}

/// systemd reached through `systemctl`, which waits for each job to finish.
///
/// Why `systemctl` and not systemd's D-Bus API (zbus): the calls are few and short (a property
/// read, `set-property --runtime`, a start or stop), `systemctl` already waits for a job's end
/// and prints systemd's own reason when it fails (over D-Bus kvmtune would have to follow the
/// job's signals itself), and a root binary that also runs as libvirt's hook carries no bus
/// library. Every call has a deadline ([`Self::TIMEOUT`]): the hook runs while libvirtd waits for
/// it, so a job that waited on libvirtd in turn must fail the hook, not hang both. This is the
/// only way in (tests/layers.rs refuses a `systemctl`, `busctl` or D-Bus crate elsewhere).
#[derive(Debug, Default, Clone, Copy)]
pub struct Systemctl;

impl Systemctl {
    /// systemd's own default for a job to start or stop (DefaultTimeoutStartSec=90s,
    /// systemd-system.conf(5)), and then some: a stuck job is reported, not waited on.
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(100);

    fn run(&self, args: &[&str]) -> std::io::Result<String> {
        let ran =
            crate::host::command::run("systemctl", args, Self::TIMEOUT).map_err(std::io::Error::other)?;
        if !ran.status.success() {
            return Err(std::io::Error::other(format!(
                "systemctl {}: {}",
                args.join(" "),
                ran.stderr_line()
            )));
        }
        Ok(String::from_utf8_lossy(&ran.stdout).into_owned())
    }
}

impl Systemd for Systemctl {
    fn property(&self, unit: &str, property: &str) -> std::io::Result<String> {
        Ok(self.run(&["show", "--value", "-p", property, unit])?.trim().to_string())
    }
    fn properties(&self, units: &[&str], properties: &[&str]) -> std::io::Result<Vec<Vec<String>>> {
        let mut args = vec!["show"];
        for property in properties {
            args.extend(["-p", property]);
        }
        args.push("--");
        args.extend(units);
        let shown = self.run(&args)?;
        show_blocks(&shown, units.len(), properties)
            .map_err(|why| std::io::Error::other(format!("systemctl {}: {why}", args.join(" "))))
    }
    fn set_runtime_property(&self, unit: &str, property: &str, value: &str) -> std::io::Result<()> {
        self.run(&["set-property", "--runtime", unit, &format!("{property}={value}")]).map(drop)
    }
    fn start(&self, unit: &str) -> std::io::Result<()> {
        self.await_jobs_in_flight(unit)?;
        // kvmtune starts a unit only to give back one it stopped (the display manager), and
        // its own stops and starts count toward the unit's start rate limit (5 in 10 s by
        // default): a unit that hit it refuses even this start. `reset-failed` flushes the
        // counter (systemd.unit(5), StartLimitIntervalSec=).
        self.run(&["reset-failed", unit])?;
        self.run(&["start", unit]).map(drop)
    }
    fn stop(&self, unit: &str) -> std::io::Result<()> {
        self.await_jobs_in_flight(unit)?;
        self.run(&["stop", unit]).map(drop)
    }
}

impl Systemctl {
    /// Waits until no `systemctl start|stop UNIT` runs on this host, so that its job cannot
    /// reach systemd after the start that gives the unit back. The `systemctl` kvmtune runs
    /// dies with it ([`crate::host::command::run`]), and kvmtune waits for each program it
    /// runs, so any such program is another's: a user's, another tool's, or one a kvmtune
    /// older than that left running when it was killed.
    fn await_jobs_in_flight(&self, unit: &str) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + Self::TIMEOUT;
        loop {
            let Some(pid) = systemctl_job_running(unit) else { return Ok(()) };
            if std::time::Instant::now() >= deadline {
                return Err(std::io::Error::other(format!(
                    "`systemctl` (pid {pid}) still starts or stops {unit} after {} s",
                    Self::TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The pid of a `systemctl start UNIT` or `systemctl stop UNIT` running now, as kvmtune runs
/// them, as the user kvmtune acts as: anyone can start a process with that command line, and
/// another user's must not hold back the start that gives the display manager back. A
/// process that ends while it is read is no match.
fn systemctl_job_running(unit: &str) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let me = crate::sys::effective_uid();
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        // /proc/PID belongs to the process's effective user.
        if entry.metadata().ok()?.uid() != me {
            return None;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        is_systemctl_job(&cmdline, unit).then_some(pid)
    })
}

/// Whether a /proc/PID/cmdline (NUL-separated) is `systemctl start|stop UNIT`.
fn is_systemctl_job(cmdline: &[u8], unit: &str) -> bool {
    let argv: Vec<&[u8]> = cmdline.strip_suffix(b"\0").unwrap_or(cmdline).split(|&b| b == 0).collect();
    matches!(
        argv.as_slice(),
        [program, verb, target]
            if program.rsplit(|&b| b == b'/').next() == Some(b"systemctl".as_slice())
                && (*verb == b"start" || *verb == b"stop")
                && *target == unit.as_bytes()
    )
}

/// What `systemctl show -p P1 -p P2 U1 U2` prints, one `Key=Value` block per unit in the order
/// given, blank lines between: each unit's `properties`, empty where a block leaves one out.
fn show_blocks(shown: &str, units: usize, properties: &[&str]) -> Result<Vec<Vec<String>>, String> {
    let blocks: Vec<&str> = shown.split("\n\n").filter(|block| !block.trim().is_empty()).collect();
    if blocks.len() != units {
        return Err(format!("{} blocks of properties for {units} units", blocks.len()));
    }
    Ok(blocks
        .iter()
        .map(|block| {
            properties
                .iter()
                .map(|property| {
                    block
                        .lines()
                        .find_map(|line| line.strip_prefix(*property)?.strip_prefix('='))
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .collect()
        })
        .collect())
}

/// irqbalance's control socket (irqbalance.c `sock_handle`): `setup` answers with the banned
/// CPUs among other things, `settings cpus LIST` (or `NULL`) sets them.
pub trait Irqbalance: Send + Sync {
    /// Sends one message to the socket at `socket` and reads the answer until the peer closes.
    fn request(&self, socket: &str, message: &[u8]) -> std::io::Result<Vec<u8>>;
}

/// The live irqbalance, over its Unix stream socket.
#[derive(Debug, Default, Clone, Copy)]
pub struct IrqbalanceSocket;

impl Irqbalance for IrqbalanceSocket {
    fn request(&self, socket: &str, message: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        stream.write_all(message)?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    }
}

/// The CPUs a thread may run on.
pub trait ThreadAffinity: Send + Sync {
    fn get(&self, tid: u32) -> std::io::Result<CpuSet>;
    fn set(&self, tid: u32, cpus: &CpuSet) -> std::io::Result<()>;
}

/// `sched_setaffinity`, and `Cpus_allowed_list` of `/proc/<tid>/status` to read them back.
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedAffinity;

impl ThreadAffinity for SchedAffinity {
    fn get(&self, tid: u32) -> std::io::Result<CpuSet> {
        allowed_cpus(&String::from_utf8_lossy(&LiveFs.read(&format!("/proc/{tid}/status"))?))
    }
    fn set(&self, tid: u32, cpus: &CpuSet) -> std::io::Result<()> {
        crate::sys::set_thread_affinity(tid, cpus)
    }
}

/// `Cpus_allowed_list:` of a `/proc/<tid>/status` text.
pub fn allowed_cpus(status: &str) -> std::io::Result<CpuSet> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .ok_or_else(|| std::io::Error::other("no Cpus_allowed_list in the thread's status"))
        .and_then(|list| CpuSet::parse_list(list.trim()).map_err(std::io::Error::other))
}

/// Programs to ask for their version (`qemu-system-x86_64 --version`).
pub trait Programs: Send + Sync {
    /// What `program args` printed (stdout, else stderr); `None` where no program can run by
    /// construction (a snapshot).
    fn output(&self, program: &str, args: &[&str]) -> Option<Result<String, ReadError>>;
}

/// Programs found on `PATH`, and in the sbin directories a user's `PATH` often lacks.
#[derive(Debug, Default, Clone, Copy)]
pub struct PathPrograms;

/// A program asked for its version answers at once; one that does not is not waited on.
const PROGRAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Daemons live in sbin, which a user's PATH often lacks.
const EXTRA_PROGRAM_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin"];

impl Programs for PathPrograms {
    fn output(&self, program: &str, args: &[&str]) -> Option<Result<String, ReadError>> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        dirs.extend(EXTRA_PROGRAM_DIRS.iter().map(PathBuf::from));
        let resolved = if program.contains('/') {
            Some(PathBuf::from(program)).filter(|p| p.is_file())
        } else {
            dirs.iter().map(|dir| dir.join(program)).find(|p| p.is_file())
        };
        let Some(resolved) = resolved else { return Some(Err(ReadError::Missing(program.to_string()))) };
        let resolved = resolved.to_string_lossy();
        let output = match crate::host::command::run(&resolved, args, PROGRAM_TIMEOUT) {
            Ok(output) => output,
            Err(error) => {
                return Some(Err(ReadError::Io {
                    path: program.to_string(),
                    source: std::io::Error::other(error),
                }));
            }
        };
        let text = if output.stdout.is_empty() { output.stderr } else { output.stdout };
        Some(String::from_utf8(text).map_err(|_| ReadError::NotText(format!("{program} {}", args.join(" ")))))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A `systemctl stop UNIT` still running (here a stand-in with that command line, which
    /// sleeps instead) holds back kvmtune's own job for that unit until it ends.
    #[test]
    fn a_job_in_flight_for_the_unit_is_waited_for() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        // sh runs the script named by its first argument: `stop`, which sleeps.
        std::fs::write(dir.path().join("stop"), "sleep 1.5\n").unwrap();
        let unit = format!("kvmtune-test-{}.service", std::process::id());
        let mut job = std::process::Command::new("/bin/sh")
            .arg0("systemctl")
            .args(["stop", &unit])
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(systemctl_job_running(&unit).is_some(), "the stand-in is not seen");
        assert!(systemctl_job_running("another.service").is_none());
        Systemctl.await_jobs_in_flight(&unit).unwrap();
        assert!(job.try_wait().unwrap().is_some(), "returned while the job still ran");

        // The same stand-in run by another user (nobody) holds nothing back. Only root can
        // start it as another user.
        if crate::sys::effective_uid() == 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let mut other = std::process::Command::new("/bin/sh")
                .arg0("systemctl")
                .args(["stop", &unit])
                .current_dir(dir.path())
                .uid(65534)
                .gid(65534)
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(other.try_wait().unwrap().is_none(), "the other user's stand-in did not run");
            assert!(systemctl_job_running(&unit).is_none(), "another user's job was counted");
            Systemctl.await_jobs_in_flight(&unit).unwrap();
            assert!(other.try_wait().unwrap().is_none(), "waited for another user's job");
            other.kill().unwrap();
            other.wait().unwrap();
        }
    }

    #[test]
    fn a_systemctl_job_is_told_by_its_whole_command_line() {
        let unit = "display-manager.service";
        assert!(is_systemctl_job(b"systemctl\0stop\0display-manager.service\0", unit));
        assert!(is_systemctl_job(b"/usr/bin/systemctl\0start\0display-manager.service\0", unit));
        assert!(!is_systemctl_job(b"systemctl\0show\0display-manager.service\0", unit));
        assert!(!is_systemctl_job(b"systemctl\0stop\0gdm3.service\0", unit));
        assert!(!is_systemctl_job(b"notsystemctl\0stop\0display-manager.service\0", unit));
        assert!(!is_systemctl_job(b"systemctl\0stop\0display-manager.service\0--now\0", unit));
        assert!(!is_systemctl_job(b"", unit));
    }

    #[test]
    fn snapshot_finds_tree_under_fsroot_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("fsroot/sys")).unwrap();
        std::fs::write(dir.path().join("fsroot/sys/value"), "1\n").unwrap();
        let fs = RootedFs::snapshot(dir.path()).unwrap();
        assert!(fs.root().ends_with("fsroot"));
        assert_eq!(fs.read_trimmed("/sys/value").unwrap(), "1");
        assert_eq!(fs.write("/sys/value", b"2").unwrap_err().kind(), ErrorKind::ReadOnlyFilesystem);
    }

    #[test]
    fn snapshot_without_tree_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(RootedFs::snapshot(dir.path()), Err(SnapshotError::NoHostTree(_))));
        assert!(matches!(RootedFs::snapshot(dir.path().join("nope")), Err(SnapshotError::NotADirectory(_))));
    }

    #[test]
    fn rooted_fs_stays_below_its_root_and_never_creates() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RootedFs::new(dir.path());
        std::fs::create_dir_all(dir.path().join("sys/kernel")).unwrap();
        std::fs::write(dir.path().join("sys/kernel/value"), "old\n").unwrap();
        fs.write("/sys/kernel/value", b"new").unwrap();
        assert_eq!(fs.read("/sys/kernel/value").unwrap(), b"new");
        assert!(fs.write("/sys/kernel/missing", b"x").is_err());
        assert!(!dir.path().join("sys/kernel/missing").exists());
        assert!(fs.read("/sys/../../etc/passwd").is_err());
    }

    #[test]
    fn a_link_inside_the_root_does_not_carry_a_write_out_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("value"), "outside\n").unwrap();
        std::fs::create_dir_all(dir.path().join("sys/devices/real")).unwrap();
        std::fs::write(dir.path().join("sys/devices/real/value"), "inside\n").unwrap();
        // A directory link and a file link out of the root, and a relative one that stays in.
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sys/escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("value"), dir.path().join("sys/value")).unwrap();
        std::os::unix::fs::symlink("devices/real", dir.path().join("sys/inside")).unwrap();
        let fs = RootedFs::new(dir.path());
        for path in ["/sys/escape/value", "/sys/value"] {
            let error = fs.write(path, b"x").unwrap_err();
            assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{path}: {error}");
        }
        assert_eq!(std::fs::read_to_string(outside.path().join("value")).unwrap(), "outside\n");
        fs.write("/sys/inside/value", b"changed").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("sys/devices/real/value")).unwrap(), "changed");
    }

    #[test]
    fn a_fifo_or_device_node_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        let fifo = dir.path().join("proc/cpuinfo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("proc/meminfo")).unwrap();
        let fs = RootedFs::new(dir.path());
        // Opening the FIFO would block until a writer came; reading /dev/zero would never end.
        for path in ["/proc/cpuinfo", "/proc/meminfo"] {
            assert_eq!(fs.read(path).unwrap_err().kind(), ErrorKind::InvalidInput, "{path}");
        }
    }

    #[test]
    fn oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys")).unwrap();
        std::fs::write(dir.path().join("sys/huge"), vec![b'x'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let error = RootedFs::new(dir.path()).read("/sys/huge").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::FileTooLarge);
        assert!(matches!(ReadError::of("/sys/huge", error), ReadError::TooLarge { .. }));
    }

    /// As systemd 252 prints them (the lab guest): the properties in its own order, not the
    /// order asked for, and every one asked for even when empty.
    #[test]
    fn systemctl_show_blocks_are_read_per_unit_and_property() {
        let shown = "AllowedCPUs=0-1\nFragmentPath=\nDropInPaths=/run/systemd/system.control/system.slice.d/50-AllowedCPUs.conf\n\n\
                     AllowedCPUs=\nFragmentPath=/lib/systemd/system/user.slice\nDropInPaths=/etc/a.conf /etc/b.conf\n\n\
                     AllowedCPUs=\nFragmentPath=\nDropInPaths=\n";
        let values = show_blocks(shown, 3, &["FragmentPath", "DropInPaths", "AllowedCPUs"]).unwrap();
        assert_eq!(values[0], ["", "/run/systemd/system.control/system.slice.d/50-AllowedCPUs.conf", "0-1"]);
        assert_eq!(values[1], ["/lib/systemd/system/user.slice", "/etc/a.conf /etc/b.conf", ""]);
        assert_eq!(values[2], ["", "", ""]);
        // A property whose name starts another's is not taken for it.
        assert_eq!(show_blocks("AllowedCPUsX=7\n", 1, &["AllowedCPUs"]).unwrap(), [[""]]);
        // Blocks that do not match the units asked for are an error, not a guess.
        assert!(
            show_blocks(shown, 2, &["AllowedCPUs"])
                .unwrap_err()
                .contains("3 blocks of properties for 2 units")
        );
    }

    #[test]
    fn natural_order_sorts_numbers_numerically() {
        let mut names = vec!["cpu10", "cpu2", "cpufreq", "cpu1"];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(names, ["cpu1", "cpu2", "cpu10", "cpufreq"]);
    }
}
