//! vfio never hands over what the host itself runs on: its disks however they are stacked
//! (LVM, LUKS, md, btrfs, NVMe multipath, a root shown as /dev/root, swap) and the NIC under its
//! default routes however it is stacked (bridge, bond, VLAN, IPv6 only). Each case is a host laid
//! out in a temp dir as the kernel lays out sysfs and procfs, with one NVMe controller
//! (0000:3d:00.0) and one NIC (0000:05:00.0), each alone in its IOMMU group.

use std::path::Path;

use kvmtune::host::Host;
use kvmtune::hostchange::vfio::{VfioRefusal, plan_bind};
use kvmtune::values::PciAddress;

const NVME: &str = "0000:3d:00.0";
const NIC: &str = "0000:05:00.0";
const NVME_PATH: &str = "devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0";

struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    /// Both devices on their drivers, vfio-pci loaded, the root filesystem on a virtio disk
    /// (vda, not one of them), no swap and no route.
    fn new() -> Self {
        let layout = Layout { dir: tempfile::tempdir().unwrap() };
        for (address, group, class, driver) in [(NVME, 5, "0x010802", "nvme"), (NIC, 6, "0x020000", "igb")] {
            let dir = format!("sys/bus/pci/devices/{address}");
            layout.put(&format!("{dir}/class"), class);
            layout.link(&format!("{dir}/iommu_group"), &format!("../../../kernel/iommu_groups/{group}"));
            layout.link(&format!("{dir}/driver"), &format!("../../../bus/pci/drivers/{driver}"));
            layout.mkdir(&format!("sys/kernel/iommu_groups/{group}/devices/{address}"));
        }
        layout.mkdir("sys/bus/pci/drivers/vfio-pci");
        layout.block("vda", "devices/pci0000:00/0000:00:04.0/virtio1/block/vda", "254:0");
        layout.block("nvme0n1", &format!("{NVME_PATH}/nvme0n1"), "259:0");
        layout.block("nvme0n1p2", &format!("{NVME_PATH}/nvme0n1/nvme0n1p2"), "259:2");
        layout.block("nvme0n1p3", &format!("{NVME_PATH}/nvme0n1/nvme0n1p3"), "259:3");
        layout.mounts(&["1 0 254:0 / / rw,relatime - ext4 /dev/vda rw", "2 1 0:5 / /proc rw - proc proc rw"]);
        layout.put("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n");
        layout.put(
            "proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
        );
        layout.put("proc/net/ipv6_route", "");
        layout.link("sys/class/net/enp5s0/device", &format!("../../../{NIC}"));
        layout
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn put(&self, path: &str, text: &str) {
        let file = self.root().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, format!("{text}\n")).unwrap();
    }

    fn link(&self, path: &str, target: &str) {
        let file = self.root().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&file);
        std::os::unix::fs::symlink(target, file).unwrap();
    }

    fn mkdir(&self, path: &str) {
        std::fs::create_dir_all(self.root().join(path)).unwrap();
    }

    /// A block device: its directory under `sys/<device_path>` with `dev`, and its
    /// `/sys/class/block` link.
    fn block(&self, name: &str, device_path: &str, number: &str) {
        self.put(&format!("sys/{device_path}/dev"), number);
        self.link(&format!("sys/class/block/{name}"), &format!("../../{device_path}"));
    }

    /// A device-mapper or md device stacked on `slaves`.
    fn stacked(&self, name: &str, number: &str, dm_name: Option<&str>, slaves: &[&str]) {
        let path = format!("devices/virtual/block/{name}");
        self.block(name, &path, number);
        if let Some(dm_name) = dm_name {
            self.put(&format!("sys/{path}/dm/name"), dm_name);
            self.link(&format!("dev/mapper/{dm_name}"), &format!("../{name}"));
        }
        for slave in slaves {
            self.link(&format!("sys/{path}/slaves/{slave}"), &format!("../../../../{slave}"));
        }
    }

    fn mounts(&self, lines: &[&str]) {
        self.put("proc/self/mountinfo", &lines.join("\n"));
    }

    fn route(&self, iface: &str) {
        self.put(
            "proc/net/route",
            &format!("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n{iface}\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0"),
        );
    }

    /// What binding `address` gives: Ok, or the refusal's text.
    fn bind(&self, address: &str) -> Result<(), String> {
        let host = Host::rooted(self.root());
        match plan_bind("win", &[PciAddress::parse(address).unwrap()], false, &host) {
            Ok(_) => Ok(()),
            Err(refusal @ VfioRefusal::HostUses { .. }) => Err(refusal.to_string()),
            Err(other) => panic!("refused for another reason: {other}"),
        }
    }
}

fn refused(result: Result<(), String>, expected: &[&str]) {
    let why = result.expect_err("the device was handed over");
    for part in expected {
        assert!(why.contains(part), "`{part}` not in: {why}");
    }
}

#[test]
fn devices_the_host_does_not_use_are_handed_over() {
    let layout = Layout::new();
    assert_eq!(layout.bind(NVME), Ok(()));
    assert_eq!(layout.bind(NIC), Ok(()));
}

#[test]
fn a_root_on_a_partition_or_shown_as_dev_root_is_refused() {
    let layout = Layout::new();
    layout.mounts(&["1 0 259:3 / / rw - ext4 /dev/root rw"]);
    refused(layout.bind(NVME), &["nvme0n1p3 holds the filesystem mounted at /"]);
}

#[test]
fn a_root_on_lvm_over_luks_over_the_nvme_is_refused() {
    let layout = Layout::new();
    layout.stacked("dm-0", "253:0", Some("luks-1234"), &["nvme0n1p3"]);
    layout.stacked("dm-1", "253:1", Some("vg-root"), &["dm-0"]);
    layout.mounts(&["1 0 253:1 / / rw - ext4 /dev/mapper/vg-root rw"]);
    refused(layout.bind(NVME), &["dm-1 on dm-0 on nvme0n1p3 holds the filesystem mounted at /"]);
}

#[test]
fn a_filesystem_on_md_raid_over_the_nvme_is_refused() {
    let layout = Layout::new();
    layout.stacked("md0", "9:0", None, &["nvme0n1p2", "vda"]);
    layout.mounts(&["1 0 254:0 / / rw - ext4 /dev/vda rw", "2 1 9:0 / /srv rw - xfs /dev/md0 rw"]);
    refused(layout.bind(NVME), &["md0 on nvme0n1p2 holds the filesystem mounted at /srv"]);
}

#[test]
fn btrfs_is_traced_by_its_member_devices() {
    let layout = Layout::new();
    // btrfs reports an anonymous device number; its members are in /sys/fs/btrfs.
    layout.mounts(&["1 0 0:27 /@ / rw - btrfs /dev/nvme0n1p3 rw"]);
    layout
        .link("sys/fs/btrfs/0b4e1c3a-5c1a-4f0e-9d53-1d2f6f3a8c11/devices/nvme0n1p3", "../../../../devices/x");
    refused(layout.bind(NVME), &["nvme0n1p3 holds the filesystem mounted at /"]);
}

#[test]
fn a_multipath_namespace_leads_to_every_controller_of_its_subsystem() {
    let layout = Layout::new();
    layout.block("nvme0n1", "devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1", "259:0");
    layout.link("sys/class/nvme-subsystem/nvme-subsys0/nvme0", &format!("../../../{NVME_PATH}"));
    layout.mounts(&["1 0 259:0 / / rw - xfs /dev/nvme0n1 rw"]);
    refused(layout.bind(NVME), &["nvme0n1 through nvme0 holds the filesystem mounted at /"]);
}

#[test]
fn swap_on_the_nvme_is_refused() {
    let layout = Layout::new();
    layout.stacked("dm-2", "253:2", Some("vg-swap"), &["nvme0n1p2"]);
    layout.put("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/dev/dm-2  partition\t8388604\t0\t-2");
    refused(layout.bind(NVME), &["dm-2 on nvme0n1p2 holds swap"]);
}

#[test]
fn a_filesystem_kvmtune_cannot_trace_refuses_every_device() {
    let layout = Layout::new();
    // ZFS: its pools' disks are only told by `zpool`, which a host in a directory cannot run.
    layout.mounts(&["1 0 254:0 / / rw - ext4 /dev/vda rw", "2 1 0:30 / /tank rw - zfs tank rw"]);
    refused(layout.bind(NVME), &["cannot tell which disks", "ZFS is mounted at /tank"]);
    // A mount table that cannot be read is no proof that nothing is mounted.
    std::fs::remove_file(layout.root().join("proc/self/mountinfo")).unwrap();
    refused(layout.bind(NIC), &["the mount table is unreadable"]);
}

#[test]
fn the_nic_under_a_bridge_with_the_default_route_is_refused() {
    let layout = Layout::new();
    layout.mkdir("sys/class/net/enp5s0/upper_br0");
    layout.route("br0");
    refused(layout.bind(NIC), &["network interface enp5s0 under br0 carries the IPv4 default route"]);
}

#[test]
fn the_nic_under_a_bond_and_a_vlan_with_the_default_route_is_refused() {
    let layout = Layout::new();
    layout.link("sys/class/net/enp5s0/master", "../bond0");
    layout.mkdir("sys/class/net/bond0/upper_bond0.100");
    layout.route("bond0.100");
    refused(layout.bind(NIC), &["enp5s0 under bond0 under bond0.100 carries the IPv4 default route"]);
}

#[test]
fn an_ipv6_only_default_route_counts_and_the_unreachable_one_of_lo_does_not() {
    let layout = Layout::new();
    let unreachable_lo = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo";
    layout.put("proc/net/ipv6_route", unreachable_lo);
    assert_eq!(layout.bind(NIC), Ok(()));
    let via_enp5s0 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003   enp5s0";
    layout.put("proc/net/ipv6_route", &format!("{unreachable_lo}\n{via_enp5s0}"));
    refused(layout.bind(NIC), &["network interface enp5s0 carries the IPv6 default route"]);
}
