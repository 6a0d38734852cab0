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
    let scripts =
        ["crates/kvmtune-cli/tests/lab/host-lib.sh", "crates/kvmtune-cli/tests/lab/host-scenarios.sh"];
    lab::run_scenarios(cgroup, &[], bin_dir, &scripts, scenarios, LAB_TIMEOUT_SECONDS)
}

/// Prepare and release a VM on CPUs 2-3 (node 1) with host CPUs 0-1; two VMs in both orders;
/// every refusal as root and not, and a hugepage allocation that fails midway; a running
/// irqbalance's ban.
#[test]
fn host_prepare_and_release_restore_a_cgroup_v2_host_exactly() {
    let text = run_scenarios(Cgroup::V2, &["basic", "two_vms", "refusals", "irqbalance_ban"]);
    // Managed IRQs are listed, not failed on (the guest's IRQs 0 and 2 refuse any mask).
    assert!(text.contains("refused by the kernel, left as they were"), "{text}");
}

/// kill -9 `prepare` at every journal step in turn (the failpoint); after each, `release` must
/// restore the snapshot exactly. A guest of its own, beside the random kills': each is a shell
/// loop on one CPU, and together they take both of CI's cores.
#[test]
fn host_prepare_killed_at_every_journal_step_is_released_exactly_on_cgroup_v2() {
    run_scenarios(Cgroup::V2, &["crash_every_step"]);
}

/// kill -9 `prepare` at 50 random moments (a real SIGKILL from the shell); after each,
/// `release` must restore the snapshot exactly.
#[test]
fn host_prepare_killed_at_random_moments_is_released_exactly_on_cgroup_v2() {
    run_scenarios(Cgroup::V2, &["crash_random"]);
}

#[test]
fn host_prepare_and_release_restore_a_cgroup_v1_host_exactly() {
    run_scenarios(Cgroup::V1, &["basic", "two_vms", "refusals"]);
}
