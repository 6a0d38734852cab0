//! `kvmtune vfio bind|release` for real, in the lab guest (`scripts/lab`): group 2 is a VGA on
//! bochs-drm and an HDA function on snd_hda_intel, named by the VGA alone. The scenarios are in
//! `tests/lab/vfio-scenarios.sh`.

use std::path::Path;

use kvmtune_testkit::lab::{self, Cgroup};

/// probe reports the GPU's reset methods, DRM card and console as sysfs has them; the console on
/// the boot VGA refuses a plain bind; `--single-gpu` takes the console off and
/// gives it and the framebuffer back at release; the whole group goes to vfio-pci and back;
/// unknown devices are refused; kill -9 at every journal step of a single-GPU hand-over and at
/// 20 random moments, each followed by release, gives every device its driver and override and
/// the console its framebuffer back. The guest's root share (virtio-9p) and the NIC while it
/// carries the default route are refused; the e1000e NIC, alone in its group, goes and comes
/// back. With half of group 2 on vfio-pci, a QEMU in the guest refuses it ("group 2 is not
/// viable") and `check` reports DEV012; with all of it, QEMU opens the group and DEV012 is quiet.
#[test]
fn a_gpu_group_goes_to_vfio_pci_and_back_also_after_kill_9() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kvmtune")).parent().unwrap();
    let scenarios = [
        "probe_facts",
        "console_refusal",
        "single_gpu",
        "bind_release",
        "refusals",
        "root_share_refusal",
        "lone_nic",
        "group_viability",
        "crash_every_step",
    ];
    lab::run_scenarios(
        Cgroup::V2,
        &[],
        bin_dir,
        &["crates/kvmtune-cli/tests/lab/vfio-scenarios.sh"],
        &scenarios,
        1200,
    );
}

/// Booted without `intel_iommu=on`: no IOMMU groups, and a bind refused with the parameter named.
#[test]
fn without_an_iommu_a_bind_is_refused_naming_the_kernel_parameter() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kvmtune")).parent().unwrap();
    let scripts = ["crates/kvmtune-cli/tests/lab/vfio-scenarios.sh"];
    lab::run_scenarios(Cgroup::V2, &[("LAB_IOMMU", "off")], bin_dir, &scripts, &["no_iommu_refusal"], 600);
}
