//! `kvmtune host` for real, in the lab guest (`scripts/lab`): a Debian kernel with 2 NUMA
//! nodes, real cgroups, IRQs, workqueues and hugepages, never this machine's own. The
//! scenarios are shell functions in `tests/lab/host-scenarios.sh`, each comparing a snapshot of
//! every file and task affinity `host` may touch (`tests/lab/host-lib.sh`) before and after.

use std::path::Path;

use kvmtune_testkit::lab::{self, Cgroup};

/// The crash scenarios run prepare and release a few hundred times in a TCG guest (a debug
/// build, often beside another guest on 2 cores): more than the lab's default 600 s.
const LAB_TIMEOUT_SECONDS: u32 = 2400;

fn run_scenarios(cgroup: Cgroup, scenarios: &[&str]) -> String {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kvmtune")).parent().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let calls = scenarios.join(" && ");
    let script = format!(
        "cd {} && exec bash -c '. crates/kvmtune-cli/tests/lab/host-lib.sh; . crates/kvmtune-cli/tests/lab/host-scenarios.sh; {calls}'",
        repo.display()
    );
    let output = lab::run_within(cgroup, bin_dir, &script, Some(LAB_TIMEOUT_SECONDS));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    for scenario in scenarios {
        let name = scenario.split_whitespace().next().unwrap();
        assert!(text.lines().any(|l| l.starts_with(&format!("PASS {name}"))), "{name} did not pass:\n{text}");
    }
    text
}

/// Prepare and release a VM on CPUs 2-3 (node 1) with host CPUs 0-1; two VMs in both orders;
/// every refusal as root and not, and a hugepage allocation that fails midway; a running
/// irqbalance's ban.
#[test]
fn host_prepare_and_release_restore_a_cgroup_v2_host_exactly() {
    let text = run_scenarios(Cgroup::V2, &["basic", "two_vms", "refusals", "irqbalance_ban"]);
    // Managed IRQs are listed, not failed on (the guest's IRQs 0 and 2 refuse any mask).
    assert!(text.contains("refused by the kernel, left as they were"), "{text}");
    for line in text.lines().filter(|l| l.starts_with("PASS")) {
        println!("{line}");
    }
}

/// kill -9 `prepare` at every journal step in turn (the failpoint) and at 50 random moments (a
/// real SIGKILL from the shell); after each, `release` must restore the snapshot exactly.
#[test]
fn host_prepare_killed_at_any_moment_is_released_exactly_on_cgroup_v2() {
    let text = run_scenarios(Cgroup::V2, &["crash_every_step", "crash_random"]);
    for line in text.lines().filter(|l| l.starts_with("PASS")) {
        println!("{line}");
    }
}

#[test]
fn host_prepare_and_release_restore_a_cgroup_v1_host_exactly() {
    let text = run_scenarios(Cgroup::V1, &["basic", "two_vms", "refusals"]);
    for line in text.lines().filter(|l| l.starts_with("PASS")) {
        println!("{line}");
    }
}
