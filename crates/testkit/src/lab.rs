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
    run_booted(cgroup, &[], bin_dir, script, timeout_seconds)
}

/// [`run_within`] with `boot` passed to `scripts/lab` as environment variables: `LAB_IOMMU=off`
/// boots the guest without `intel_iommu=on`.
pub fn run_booted(
    cgroup: Cgroup,
    boot: &[(&str, &str)],
    bin_dir: &Path,
    script: &str,
    timeout_seconds: Option<u32>,
) -> Output {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lab");
    let hierarchy = match cgroup {
        Cgroup::V2 => "v2",
        Cgroup::V1 => "v1",
    };
    let mut command = Command::new(lab);
    command
        .args(["--cgroup", hierarchy, "sh", "-c", script])
        .env("KVMTUNE_LAB_BIN", bin_dir)
        .envs(boot.iter().copied());
    if let Some(seconds) = timeout_seconds {
        command.env("KVMTUNE_LAB_TIMEOUT", seconds.to_string());
    }
    command.output().expect("scripts/lab runs")
}

/// Runs shell scenarios in one lab guest, booted with `boot` ([`run_booted`]): `scripts` (paths from the repository's root) are
/// sourced in order, then each of `scenarios` (a function and its arguments) runs, stopping at
/// the first that fails. Each must print `PASS <function> ...`; the test fails with the whole
/// output otherwise. Prints the PASS lines (they carry the measurements) and returns the output.
pub fn run_scenarios(
    cgroup: Cgroup,
    boot: &[(&str, &str)],
    bin_dir: &Path,
    scripts: &[&str],
    scenarios: &[&str],
    timeout_seconds: u32,
) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository");
    let sources: String = scripts.iter().map(|s| format!(". {s}; ")).collect();
    let script = format!("cd {} && exec bash -c '{sources}{}'", repo.display(), scenarios.join(" && "));
    let output = run_booted(cgroup, boot, bin_dir, &script, Some(timeout_seconds));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    // Scenarios that mark their steps (`lab-step ...`) leave their timing in the test's output.
    for step in text.lines().filter(|l| l.starts_with("lab-step ")) {
        println!("{step}");
    }
    for scenario in scenarios {
        let name = scenario.split_whitespace().next().unwrap_or(scenario);
        let line = text.lines().find(|l| l.starts_with(&format!("PASS {name}")));
        println!("{}", line.unwrap_or_else(|| panic!("{name} did not pass:\n{text}")));
    }
    text
}
