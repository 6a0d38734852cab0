//! The lab guest (`scripts/lab`): a disposable QEMU guest on Debian's own kernel with 2 NUMA
//! nodes, an IOMMU and real cgroups, where tests may change kernel state that on this machine
//! belongs to the environment.

use std::path::Path;
use std::process::{Command, Output};

/// Which cgroup hierarchy the guest mounts at `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cgroup {
    /// Pure cgroup v2 (bookworm-backports' 6.12 kernel).
    V2,
    /// The v1 cpuset hierarchy at `/sys/fs/cgroup/cpuset` (bookworm's 6.1 kernel).
    V1,
}

/// Runs `script` with `sh -c` as root in a fresh lab guest, with the kvmtune in `bin_dir` on
/// PATH and this directory as the current one. The status is the script's.
pub fn run(cgroup: Cgroup, bin_dir: &Path, script: &str) -> Output {
    run_within(cgroup, bin_dir, script, None)
}

/// [`run`], with the guest stopped after `timeout_seconds` instead of the lab's default
/// (`KVMTUNE_LAB_TIMEOUT`, 600 s): for scenarios that boot once and run long.
pub fn run_within(cgroup: Cgroup, bin_dir: &Path, script: &str, timeout_seconds: Option<u32>) -> Output {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lab");
    let hierarchy = match cgroup {
        Cgroup::V2 => "v2",
        Cgroup::V1 => "v1",
    };
    let mut command = Command::new(lab);
    command.args(["--cgroup", hierarchy, "sh", "-c", script]).env("KVMTUNE_LAB_BIN", bin_dir);
    if let Some(seconds) = timeout_seconds {
        command.env("KVMTUNE_LAB_TIMEOUT", seconds.to_string());
    }
    command.output().expect("scripts/lab runs")
}
