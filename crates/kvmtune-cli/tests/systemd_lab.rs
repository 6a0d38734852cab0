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

/// The `host` scenarios' helpers, then the systemd ones.
const HOST_SCRIPTS: [&str; 3] = [
    "crates/kvmtune-cli/tests/lab/host-lib.sh",
    "crates/kvmtune-cli/tests/lab/host-scenarios.sh",
    "crates/kvmtune-cli/tests/lab/systemd-scenarios.sh",
];

/// The `vfio` scenarios' helpers (group 2 is a VGA on bochs-drm with the framebuffer console),
/// then the systemd ones.
const VFIO_SCRIPTS: [&str; 2] =
    ["crates/kvmtune-cli/tests/lab/vfio-scenarios.sh", "crates/kvmtune-cli/tests/lab/systemd-scenarios.sh"];

/// The libvirt hook's scenarios (they source host-lib.sh), then the systemd ones, which give
/// them libvirtd as systemd runs it.
const HOOK_SCRIPTS: [&str; 2] =
    ["crates/kvmtune-cli/tests/lab/hook-scenarios.sh", "crates/kvmtune-cli/tests/lab/systemd-scenarios.sh"];

fn run_scenarios(scripts: &[&str], scenarios: &[&str]) -> String {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kvmtune")).parent().unwrap();
    lab::run_scenarios(
        Cgroup::V2,
        &[("LAB_INIT", "systemd")],
        bin_dir,
        scripts,
        scenarios,
        LAB_TIMEOUT_SECONDS,
    )
}

/// `AllowedCPUs=` of system.slice, user.slice and init.scope before, during and after, with
/// services in system.slice and user.slice confined and given back and machine.slice left
/// alone; a unit with the user's own `AllowedCPUs=` in a drop-in left as it is, and said so;
/// a QEMU in a `systemd-run --scope` unit of system.slice refused (another VM's, and this
/// VM's own given with `--pid`) with nothing written, and the same QEMU in machine.slice left
/// on all its CPUs.
#[test]
fn host_prepare_and_release_restore_a_systemd_host_exactly() {
    run_scenarios(&HOST_SCRIPTS, &["systemd_slices", "dropin_left_alone", "scoped_vms"]);
}

/// First user.slice before any login (inactive, no cgroup): confined and given back, with the
/// one thing systemd keeps (the slice's cgroup, with no task in it). Then, with
/// a service in system.slice and one in user.slice, kill -9 at every journal step of prepare
/// (the hugepages, the three units each recorded and then set, the IRQs, threads and
/// workqueues) and at 30 random moments, each followed by `release`, which must restore every
/// unit property, cgroup file and task affinity. A guest of its own: each step costs
/// `systemctl` round trips to a PID 1 under TCG (111 steps took 330 s here with nothing else
/// running; CI, beside another guest, was six times slower).
#[test]
fn host_prepare_killed_at_every_step_under_systemd_is_undone_exactly() {
    run_scenarios(&HOST_SCRIPTS, &["inactive_user_slice", "crash_with_units 30"]);
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
    run_scenarios(&HOST_SCRIPTS, &[&format!("package_installed {deb}")]);
}

/// `vfio bind --single-gpu` where systemd runs a display manager (a unit of the lab's whose
/// process holds the boot GPU's DRM card and framebuffer, aliased `display-manager.service` as
/// gdm3 and sddm are): stopped before the group goes to vfio-pci, started again at release,
/// also when bind is killed at each journal step and at 10 random moments.
#[test]
fn vfio_single_gpu_stops_the_display_manager_and_starts_it_again() {
    run_scenarios(&VFIO_SCRIPTS, &["display_manager_single_gpu"]);
}

/// The libvirt hook with libvirtd as systemd runs it (Debian's units: socket-activated,
/// restarted on failure), its domains in machine.slice through systemd-machined: a domain with
/// `<kvmtune:host>` starts with its host side applied (system.slice and the other host units
/// confined by `AllowedCPUs=`, hugepages, its GPU's group on vfio-pci), `virsh destroy` undoes
/// all of it; a domain without the metadata gets nothing; a request the host cannot meet keeps
/// the domain from starting; and after libvirtd is killed and restarted by systemd, the changes
/// of a domain that died meanwhile are undone.
#[test]
fn the_libvirt_hook_applies_and_undoes_under_systemds_libvirtd() {
    let scenarios = [
        "libvirt_up_systemd",
        "plain_domain",
        "hook_start_stop",
        "failing_prepare",
        "reconnect",
        "hook_uninstall",
    ];
    run_scenarios(&HOOK_SCRIPTS, &scenarios);
}
