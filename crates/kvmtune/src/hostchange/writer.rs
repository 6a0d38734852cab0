//! Write access to a host's files, by absolute path (`/sys/kernel/mm/...`): the counterpart of
//! [`crate::host::HostSource`], which only reads.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

/// Reads and writes one host's files. Writes go to files that already exist (sysfs, procfs
/// and cgroupfs files always do); a writer never creates one.
pub trait HostWriter {
    /// The bytes a file holds now: the original a journal keeps before a write.
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>>;
    /// Replaces what a file holds with `bytes`, in one `write` call as sysfs expects.
    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// What to call this host in messages.
    fn describe(&self) -> String;
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
}

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
