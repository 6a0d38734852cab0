//! Write access to a host's files, by absolute path (`/sys/kernel/mm/...`): the counterpart of
//! [`crate::host::HostSource`], which only reads.

use std::io::{Read as _, Write as _};
use std::path::{Component, Path, PathBuf};

use crate::values::CpuSet;

/// Reads and writes one host's files. Writes go to files that already exist (sysfs, procfs
/// and cgroupfs files always do); a writer never creates one. Directories are made only where
/// a change asks for one (a cgroup).
pub trait HostWriter {
    /// The bytes a file holds now: the original a journal keeps before a write.
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>>;
    /// A file's text without the surrounding whitespace (sysfs values end in a newline).
    fn read_trimmed(&self, path: &str) -> std::io::Result<String> {
        Ok(String::from_utf8_lossy(&self.read(path)?).trim().to_string())
    }
    /// Replaces what a file holds with `bytes`, in one `write` call as sysfs expects.
    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// What to call this host in messages.
    fn describe(&self) -> String;
    /// The names in a directory (`/proc`, `/proc/irq`, a cgroup), sorted.
    fn list_dir(&self, path: &str) -> std::io::Result<Vec<String>>;
    /// Whether `path` names a directory.
    fn is_dir(&self, path: &str) -> bool;
    /// A symlink's target as written (`../../devices/pci0000:00/0000:00:1f.2/ata1/...`).
    fn link_target(&self, path: &str) -> std::io::Result<String>;
    /// The last component of a symlink's target (a device's `driver` or `iommu_group` link).
    fn link_name(&self, path: &str) -> std::io::Result<String> {
        let target = self.link_target(path)?;
        Ok(target.rsplit('/').next().unwrap_or_default().to_string())
    }
    /// Makes one directory (a cgroup: the kernel fills it with its interface files).
    fn make_dir(&self, path: &str) -> std::io::Result<()>;
    /// Removes an empty directory (a cgroup without tasks or children).
    fn remove_dir(&self, path: &str) -> std::io::Result<()>;
    /// Sets the CPUs a thread may run on.
    fn set_affinity(&self, tid: u32, cpus: &CpuSet) -> std::io::Result<()>;
    /// Sends one message over a Unix stream socket and reads the answer until the peer closes
    /// (irqbalance's control socket).
    fn request(&self, socket: &str, message: &[u8]) -> std::io::Result<Vec<u8>>;
    /// Runs `systemctl` with `args` and returns its standard output.
    fn systemctl(&self, args: &[&str]) -> std::io::Result<String>;
}

/// The machine kvmtune runs on.
#[derive(Debug, Default)]
pub struct LiveHostWriter;

/// A directory laid out like a host's root: `/sys/x` is `DIR/sys/x`.
#[derive(Debug)]
pub struct RootedHostWriter {
    root: PathBuf,
}

impl RootedHostWriter {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The file below the root that stands for a host path; `..` cannot climb out of it.
    fn resolve(&self, path: &str) -> std::io::Result<PathBuf> {
        let mut resolved = self.root.clone();
        for component in Path::new(path).components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(part) => resolved.push(part),
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{path}: a host path has no `..`"),
                    ));
                }
            }
        }
        Ok(resolved)
    }
}

fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // No create: a missing sysfs file is an error, never a new file. Truncation keeps a
    // regular file (a rooted test host) exact; sysfs ignores it.
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(bytes)
}

fn list_dir(path: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(path)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn link_target(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_link(path)?.to_string_lossy().into_owned())
}

fn unsupported(what: &str, host: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Unsupported, format!("{what} is not available on {host}"))
}

impl HostWriter for LiveHostWriter {
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        read_file(Path::new(path))
    }
    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        write_file(Path::new(path), bytes)
    }
    fn describe(&self) -> String {
        "this host".to_string()
    }
    fn list_dir(&self, path: &str) -> std::io::Result<Vec<String>> {
        list_dir(Path::new(path))
    }
    fn is_dir(&self, path: &str) -> bool {
        Path::new(path).is_dir()
    }
    fn link_target(&self, path: &str) -> std::io::Result<String> {
        link_target(Path::new(path))
    }
    fn make_dir(&self, path: &str) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }
    fn remove_dir(&self, path: &str) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn set_affinity(&self, tid: u32, cpus: &CpuSet) -> std::io::Result<()> {
        crate::sys::set_thread_affinity(tid, cpus)
    }
    fn request(&self, socket: &str, message: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        stream.write_all(message)?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    }
    fn systemctl(&self, args: &[&str]) -> std::io::Result<String> {
        let output = std::process::Command::new("systemctl").args(args).output()?;
        if !output.status.success() {
            return Err(std::io::Error::other(format!(
                "systemctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A rooted host has files, not a kernel: a thread's affinity is the `Cpus_allowed_list` line
/// of its `proc/<tid>/status`, and there is no irqbalance or systemd to talk to.
impl HostWriter for RootedHostWriter {
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        read_file(&self.resolve(path)?)
    }
    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        write_file(&self.resolve(path)?, bytes)
    }
    fn describe(&self) -> String {
        format!("the host rooted at {}", self.root.display())
    }
    fn list_dir(&self, path: &str) -> std::io::Result<Vec<String>> {
        list_dir(&self.resolve(path)?)
    }
    fn is_dir(&self, path: &str) -> bool {
        self.resolve(path).is_ok_and(|p| p.is_dir())
    }
    fn link_target(&self, path: &str) -> std::io::Result<String> {
        link_target(&self.resolve(path)?)
    }
    fn make_dir(&self, path: &str) -> std::io::Result<()> {
        std::fs::create_dir(self.resolve(path)?)
    }
    fn remove_dir(&self, path: &str) -> std::io::Result<()> {
        std::fs::remove_dir(self.resolve(path)?)
    }
    fn set_affinity(&self, tid: u32, cpus: &CpuSet) -> std::io::Result<()> {
        let status = self.resolve(&format!("/proc/{tid}/status"))?;
        let text = std::fs::read_to_string(&status)?;
        let text: String = text
            .lines()
            .map(|line| match line.starts_with("Cpus_allowed_list:") {
                true => format!("Cpus_allowed_list:\t{cpus}\n"),
                false => format!("{line}\n"),
            })
            .collect();
        std::fs::write(status, text)
    }
    fn request(&self, socket: &str, _message: &[u8]) -> std::io::Result<Vec<u8>> {
        Err(unsupported(socket, self.describe()))
    }
    fn systemctl(&self, _args: &[&str]) -> std::io::Result<String> {
        Err(unsupported("systemctl", self.describe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooted_writer_stays_below_its_root_and_never_creates() {
        let dir = tempfile::tempdir().unwrap();
        let writer = RootedHostWriter::new(dir.path());
        std::fs::create_dir_all(dir.path().join("sys/kernel")).unwrap();
        std::fs::write(dir.path().join("sys/kernel/value"), "old\n").unwrap();
        writer.write("/sys/kernel/value", b"new").unwrap();
        assert_eq!(writer.read("/sys/kernel/value").unwrap(), b"new");
        assert!(writer.write("/sys/kernel/missing", b"x").is_err());
        assert!(!dir.path().join("sys/kernel/missing").exists());
        assert!(writer.read("/sys/../../etc/passwd").is_err());
    }
}
