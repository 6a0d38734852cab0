//! `kvmtune vfio bind|release` for real, in the lab guest (`scripts/lab`): group 2 is a VGA on
//! bochs-drm and an HDA function on snd_hda_intel, named by the VGA alone. The scenarios are in
//! `tests/lab/vfio-scenarios.sh`.

use std::path::Path;

use kvmtune_testkit::lab::{self, Cgroup};

/// The console on the boot VGA refuses a plain bind; the whole group goes to vfio-pci and
/// back; unknown devices are refused; kill -9 at every journal step and at 20 random moments,
/// each followed by release, gives every device its driver and override back.
#[test]
fn a_gpu_group_goes_to_vfio_pci_and_back_also_after_kill_9() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kvmtune")).parent().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let scenarios = ["console_refusal", "bind_release", "refusals", "crash_every_step"];
    let script = format!(
        "cd {} && exec bash -c '. crates/kvmtune-cli/tests/lab/vfio-scenarios.sh; {}'",
        repo.display(),
        scenarios.join(" && ")
    );
    let output = lab::run_within(Cgroup::V2, bin_dir, &script, Some(1200));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    for scenario in scenarios {
        let line = text.lines().find(|l| l.starts_with(&format!("PASS {scenario}")));
        println!("{}", line.unwrap_or_else(|| panic!("{scenario} did not pass:\n{text}")));
    }
}
