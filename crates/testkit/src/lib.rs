//! Helpers for kvmtune's tests: where the shared corpus is, how to unpack its snapshots, and
//! tiny real KVM guests ([`guest`]), and the lab guest for host changes ([`lab`]).

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod exit_tables;
pub mod guest;
pub mod lab;
pub mod libvirtd;
pub mod synthetic;

/// `../shared/corpus` from the repository root, or `$KVMTUNE_CORPUS`. A missing corpus is a
/// test failure, never a skip.
pub fn corpus() -> PathBuf {
    let path = std::env::var_os("KVMTUNE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    assert!(
        path.join("SOURCES.md").is_file(),
        "the test corpus is missing at {} (set KVMTUNE_CORPUS to its location)",
        path.display()
    );
    path
}

/// The files in one corpus directory (`user-xml`, `hwloc`, ...), sorted, without descending
/// into subdirectories.
pub fn corpus_files(dir: &str) -> Vec<PathBuf> {
    let dir = corpus().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// A temporary directory on tmpfs where there is one: thousands of tiny sysfs files unpack
/// fifty times faster there than on this machine's disk.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("temp dir")
}

/// Unpacks a snapshot tarball (bzip2 or gzip) into a fresh temporary directory and returns it
/// with the directory that holds the snapshot's `sys/` and `proc/` (or `fsroot/`).
pub fn unpack(tarball: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = fast_tempdir();
    let status =
        Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(dir.path()).status().expect("tar runs");
    assert!(status.success(), "tar failed on {}", tarball.display());
    let root = find_tree(dir.path()).unwrap_or_else(|| panic!("no sys/ or fsroot/ in {}", tarball.display()));
    (dir, root)
}

/// Unpacks `corpus/hwloc/<name>.tar.bz2`.
pub fn unpack_hwloc(name: &str) -> (tempfile::TempDir, PathBuf) {
    unpack(&corpus().join("hwloc").join(format!("{name}.tar.bz2")))
}

fn find_tree(dir: &Path) -> Option<PathBuf> {
    if dir.join("sys").is_dir() || dir.join("fsroot").is_dir() {
        return Some(dir.to_path_buf());
    }
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir()
            && let Some(found) = find_tree(&path)
        {
            return Some(found);
        }
    }
    None
}
