//! The libvirt hook with a real libvirtd, in the lab guest (`scripts/lab`): libvirt runs
//! `kvmtune hook` at each domain's start and stop. A domain whose metadata asks gets its CPUs
//! isolated, hugepages on its node and its GPU group on vfio-pci while it runs, and every change
//! is gone after it stops; a domain without the metadata gets nothing done; a request the host
//! cannot meet keeps the domain from starting with kvmtune's reason in libvirt's error; after a
//! libvirtd restart, the changes of a domain that died meanwhile are undone. The scenarios are
//! in `tests/lab/hook-scenarios.sh`.

use std::path::Path;

use kvmtune_testkit::lab::{self, Cgroup};

#[test]
fn libvirt_runs_the_hook_at_start_and_stop_and_every_change_is_undone() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kvmtune")).parent().unwrap();
    let scenarios =
        ["libvirt_up", "plain_domain", "hook_start_stop", "failing_prepare", "reconnect", "hook_uninstall"];
    lab::run_scenarios(
        Cgroup::V2,
        &[],
        bin_dir,
        &["crates/kvmtune-cli/tests/lab/hook-scenarios.sh"],
        &scenarios,
        1200,
    );
}
