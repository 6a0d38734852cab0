//! Helpers for kvmtune's tests: where the shared corpus is, how to unpack its snapshots, and
//! tiny real KVM guests ([`guest`]), the guest program's builds ([`guest_program`]), and the lab
//! guest for host changes ([`lab`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod exit_tables;
pub mod guest;
pub mod guest_program;
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

/// `PROGRAM ARGS` in a private mount namespace where tracefs is mounted, so that tracepoints can
/// be counted without touching this host's mounts.
pub fn with_tracefs(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; exec "$0" "$@""#)
        .arg(program)
        .args(args);
    command
}

/// The tracefs instances that exist now, through tracefs mounted in a throwaway mount
/// namespace (this host's own mounts are left alone). `exits record` makes one, and `exporter
/// --exit-times` one per VM, `kvmtune-<pid>-<n>`, that must be gone when they end.
pub fn tracefs_instances() -> Vec<String> {
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tracefs nodev /sys/kernel/tracing && ls /sys/kernel/tracing/instances")
        .output()
        .expect("unshare (util-linux) runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).split_whitespace().map(str::to_string).collect()
}

/// The process an instance `kvmtune-<pid>-<n>` belongs to.
pub fn tracefs_instance_owner(instance: &str) -> Option<u32> {
    instance.strip_prefix("kvmtune-")?.split('-').next()?.parse().ok()
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

/// Runs `program` with `args` and `stdin` written to it (as libvirt hands a hook the domain
/// XML), its output captured.
pub fn run_with_stdin(program: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    child.stdin.take().expect("stdin is piped").write_all(stdin.as_bytes()).expect("stdin takes the text");
    child.wait_with_output().expect("the output")
}

/// Writes `text` to `path` (absolute, as on a host) under `root`, with its directories: a host
/// laid out in a directory, file by file.
pub fn put(root: &Path, path: &str, text: &str) {
    let file = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().expect("a file in a directory")).expect("the directories");
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
}

/// The smallest host a host change needs, laid out under `root`: a boot id, CPUs 0-3 online on
/// NUMA nodes 0-1, 16 MiB of memory with 2 MiB default hugepages. Tests add the files their
/// change touches.
pub fn put_small_host(root: &Path) {
    put(root, "/proc/sys/kernel/random/boot_id", "5b3c7e1a-0000-4000-8000-00000000cafe\n");
    put(root, "/sys/devices/system/cpu/online", "0-3\n");
    put(root, "/sys/devices/system/node/online", "0-1\n");
    put(root, "/proc/meminfo", "MemTotal: 16384 kB\nHugepagesize:       2048 kB\n");
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

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits up to 30 s for `what` to listen on loopback `port`.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} does not listen on {port}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
