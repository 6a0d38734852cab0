//! kvmtune on a host whose PID 1 is systemd: the lab guest booted with this machine's own
//! systemd (`scripts/lab --init systemd`), with systemd-machined and a libvirtd started by it.
//! The scenarios are shell functions in `tests/lab/systemd-scenarios.sh` (and the crash
//! scenarios of `tests/lab/host-scenarios.sh`, which run there unchanged), each comparing a
//! snapshot of every file, unit property and task affinity `host` may touch before and after.

use std::path::Path;
use std::process::Command;

use kvmtune_testkit::lab::{self, Cgroup};

/// A systemd boot in TCG takes about a minute, more beside another guest.
const LAB_TIMEOUT_SECONDS: u32 = 2400;

fn run_scenarios(scenarios: &[&str]) -> String {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kvmtune")).parent().unwrap();
    let scripts = [
        "crates/kvmtune-cli/tests/lab/host-lib.sh",
        "crates/kvmtune-cli/tests/lab/host-scenarios.sh",
        "crates/kvmtune-cli/tests/lab/systemd-scenarios.sh",
    ];
    lab::run_scenarios(
        Cgroup::V2,
        &[("LAB_INIT", "systemd")],
        bin_dir,
        &scripts,
        scenarios,
        LAB_TIMEOUT_SECONDS,
    )
}

/// `AllowedCPUs=` of system.slice, user.slice and init.scope before, during and after, with
/// services in system.slice and user.slice confined and given back and machine.slice left
/// alone; a unit with the user's own `AllowedCPUs=` in a drop-in left as it is, and said so;
/// then kill -9 at each of the first 14 journal steps (the hugepages and the three units, each
/// recorded and then set; the 97 steps after them are IRQs, threads and workqueues, which
/// host_lab kills at under the busybox init) and at 10 random moments, each followed by
/// `release`, which must restore every unit property, cgroup file and task affinity. Every
/// step here costs a `systemctl` round trip to a TCG PID 1: all 111 steps and 50 random kills
/// ran past 15 minutes, too much for CI's 90.
#[test]
fn host_prepare_and_release_restore_a_systemd_host_exactly() {
    run_scenarios(&["systemd_slices", "dropin_left_alone", "crash_every_step 14", "crash_random 10"]);
}

/// The Debian package installed with dpkg into the guest: systemd starts the exporter's unit,
/// which serves the host facts on /metrics (no KVM under TCG), `systemd-analyze security`
/// measures its sandbox, `man` and the bash completion work, and `dpkg -r` removes it all.
#[test]
fn the_debian_package_installs_runs_and_removes_under_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let built = Command::new(repo.join("scripts/package-deb.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_kvmtune"), "--out"])
        .arg(dir.path())
        .output()
        .expect("scripts/package-deb.sh runs");
    let deb = String::from_utf8_lossy(&built.stdout).trim().to_string();
    assert!(
        built.status.success() && Path::new(&deb).is_file(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    run_scenarios(&[&format!("package_installed {deb}")]);
}
