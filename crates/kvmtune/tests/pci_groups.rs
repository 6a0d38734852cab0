//! IOMMU groups, drivers and GPU group mates. No corpus snapshot and not this machine has an
//! IOMMU, so this builds the sysfs layout by hand, links included, as the kernel lays it out
//! (Documentation/ABI/testing/sysfs-kernel-iommu_groups): a GPU with its HDMI audio function in
//! group 14, and an NVMe drive alone in group 15.

use std::os::unix::fs::symlink;
use std::path::Path;

use kvmtune::host::{self, Fact, Host};

/// `ids` is (class, vendor, device) as sysfs prints them.
fn device(root: &Path, address: &str, ids: (&str, &str, &str), driver: &str, group: u32, node: &str) {
    let (class, vendor, id) = ids;
    let dir = root.join("sys/bus/pci/devices").join(address);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("class"), format!("{class}\n")).unwrap();
    std::fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
    std::fs::write(dir.join("device"), format!("{id}\n")).unwrap();
    std::fs::write(dir.join("numa_node"), format!("{node}\n")).unwrap();
    symlink(format!("../../../bus/pci/drivers/{driver}"), dir.join("driver")).unwrap();
    symlink(format!("../../../kernel/iommu_groups/{group}"), dir.join("iommu_group")).unwrap();
    let members = root.join(format!("sys/kernel/iommu_groups/{group}/devices"));
    std::fs::create_dir_all(&members).unwrap();
    symlink(format!("../../../../bus/pci/devices/{address}"), members.join(address)).unwrap();
}

#[test]
fn gpu_group_mates_driver_and_node() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    device(root, "0000:01:00.0", ("0x030000", "0x10de", "0x2684"), "vfio-pci", 14, "1");
    device(root, "0000:01:00.1", ("0x040300", "0x10de", "0x22ba"), "snd_hda_intel", 14, "1");
    device(root, "0000:02:00.0", ("0x010802", "0x144d", "0xa80a"), "nvme", 15, "-1");
    std::fs::write(root.join("sys/bus/pci/devices/0000:01:00.0/boot_vga"), "0\n").unwrap();
    let facts = host::probe(&Host::snapshot(root).unwrap());

    assert_eq!(facts.iommu.enabled, Fact::Known(true));
    assert_eq!(facts.iommu.groups.len(), 2);
    let gpus = facts.gpus();
    assert_eq!(gpus.len(), 1);
    let gpu = gpus[0];
    assert_eq!(gpu.id, Fact::Known("10de:2684".into()));
    assert_eq!(gpu.driver.as_deref(), Some("vfio-pci"));
    assert_eq!(gpu.iommu_group, Some(14));
    assert_eq!(gpu.numa_node, Some(1));
    assert!(!gpu.boot_vga);
    assert_eq!(gpu.group_mates, ["0000:01:00.1"]);
    let nvme =
        facts.pci_devices.known().unwrap().iter().find(|d| d.address.to_string() == "0000:02:00.0").unwrap();
    assert_eq!(nvme.numa_node, None, "numa_node -1 means the platform does not say");
    assert!(nvme.group_mates.is_empty());

    let text = kvmtune::output::probe_text::render(&facts, &kvmtune::analysis::host_rules::evaluate(&facts));
    assert!(
        text.contains("GPU 0000:01:00.0 10de:2684 driver vfio-pci group 14 node 1 with 0000:01:00.1"),
        "{text}"
    );
}

#[test]
fn no_iommu_groups_means_iommu_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sys/kernel/iommu_groups")).unwrap();
    let facts = host::probe(&Host::snapshot(dir.path()).unwrap());
    assert_eq!(facts.iommu.enabled, Fact::Known(false));
}
