//! What this host itself uses a PCI function for, so that vfio never takes it away: the disks
//! under every mounted filesystem and swap area, the network interfaces under every default
//! route, a 9p share the host mounted. Where kvmtune cannot tell which device a filesystem
//! lives on, it says so, and the caller refuses every device rather than guess.
//!
//! Block devices are followed down the kernel's own links (Documentation/ABI/stable/sysfs-block:
//! `slaves/` of a device-mapper or md device, a partition's parent disk in its sysfs path), so a
//! root on LVM, LUKS or md RAID over an NVMe partition leads to the NVMe controller. A
//! natively multipathed NVMe namespace (`nvmeXnY` under `nvme-subsystem/nvme-subsysX`) leads to
//! every controller of its subsystem (drivers/nvme/host/core.c links each one there). Mounts are
//! matched by device number (`/proc/self/mountinfo`, proc(5)), which also names a root the
//! kernel shows as `/dev/root`; btrfs (device number 0) by its member devices in
//! `/sys/fs/btrfs/*/devices`, ZFS by `zpool list -vHP`. Network interfaces are followed up
//! through `upper_*` and `master` (bridge, bond, VLAN, macvlan: the kernel's adjacency links) to
//! the ones that carry an IPv4 or IPv6 default route (`/proc/net/route`, `/proc/net/ipv6_route`).

use std::collections::{BTreeMap, BTreeSet};

use crate::host::Host;
use crate::values::PciAddress;

/// The host's own uses of its PCI functions, read once for every device a plan checks.
#[derive(Debug, Default)]
pub struct HostUse {
    /// Each PCI function the host uses, with what for (the first use found).
    uses: BTreeMap<PciAddress, String>,
    /// Why some use could not be traced to a device: every device is refused with it.
    unsure: Option<String>,
}

impl HostUse {
    pub fn read(host: &Host) -> Self {
        let mut found = HostUse::default();
        let blocks = BlockDevices::read(host);
        match storage_in_use(host, &blocks) {
            Ok(devices) => {
                for (device, what) in devices {
                    for (address, path) in blocks.pci_functions_under(host, &device) {
                        found.add(address, format!("{path} holds {what}"));
                    }
                }
            }
            Err(why) => found.unsure = Some(why),
        }
        for (address, what) in network_in_use(host) {
            found.add(address, what);
        }
        for (address, what) in shares_in_use(host) {
            found.add(address, what);
        }
        found
    }

    fn add(&mut self, address: PciAddress, what: String) {
        self.uses.entry(address).or_insert(what);
    }

    /// What the host uses `address` for, or why kvmtune cannot rule it out; None: nothing.
    pub fn of(&self, address: PciAddress) -> Option<String> {
        if let Some(what) = self.uses.get(&address) {
            return Some(what.clone());
        }
        self.unsure.as_ref().map(|why| format!("kvmtune cannot tell which disks the host uses: {why}"))
    }
}

/// Every block device of the host by name, with its device number.
struct BlockDevices {
    by_number: BTreeMap<String, String>,
}

const CLASS_BLOCK: &str = "/sys/class/block";

impl BlockDevices {
    fn read(host: &Host) -> Self {
        let by_number = host
            .list(CLASS_BLOCK)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|name| Some((host.read_trimmed(&format!("{CLASS_BLOCK}/{name}/dev")).ok()?, name)))
            .collect();
        BlockDevices { by_number }
    }

    fn exists(&self, name: &str) -> bool {
        self.by_number.values().any(|n| n == name)
    }

    /// The block device a `/dev` path names: through its symlink (udev's `/dev/mapper/*`,
    /// `/dev/disk/by-*`), by its own name, or a device-mapper name.
    fn resolve(&self, host: &Host, path: &str) -> Option<String> {
        let mut path = path.to_string();
        for _ in 0..8 {
            match host.fs.link_target(&path) {
                Ok(target) => path = join(&path, &target),
                Err(_) => break,
            }
        }
        let name = path.strip_prefix("/dev/")?;
        if self.exists(name) {
            return Some(name.to_string());
        }
        let mapped = name.strip_prefix("mapper/")?;
        self.by_number
            .values()
            .find(|dm| {
                host.read_trimmed(&format!("{CLASS_BLOCK}/{dm}/dm/name")).ok().as_deref() == Some(mapped)
            })
            .cloned()
    }

    /// The PCI functions a block device lives on, each with the chain of devices that leads
    /// there (`dm-0 on nvme0n1p3`).
    fn pci_functions_under(&self, host: &Host, device: &str) -> Vec<(PciAddress, String)> {
        let mut found = Vec::new();
        let mut pending = vec![(device.to_string(), device.to_string())];
        let mut seen = BTreeSet::new();
        while let Some((name, chain)) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let slaves = host.list(&format!("{CLASS_BLOCK}/{name}/slaves")).unwrap_or_default();
            for slave in slaves {
                pending.push((slave.clone(), format!("{chain} on {slave}")));
            }
            let Ok(target) = host.fs.link_target(&format!("{CLASS_BLOCK}/{name}")) else { continue };
            found.extend(pci_addresses_in(&target).into_iter().map(|a| (a, chain.clone())));
            // A multipath NVMe namespace sits under its subsystem, which links each controller.
            if let Some(subsystem) = nvme_subsystem_of(&target) {
                let dir = format!("/sys/class/nvme-subsystem/{subsystem}");
                for controller in host.list(&dir).unwrap_or_default() {
                    let is_controller = controller
                        .strip_prefix("nvme")
                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
                    if !is_controller {
                        continue;
                    }
                    if let Ok(link) = host.fs.link_target(&format!("{dir}/{controller}")) {
                        let via = format!("{chain} through {controller}");
                        found.extend(pci_addresses_in(&link).into_iter().map(|a| (a, via.clone())));
                    }
                }
            }
        }
        found
    }
}

/// `a/b/link` + `../c` = `a/c`: a symlink's target against the link's directory.
fn join(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return target.to_string();
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.len() > 1 {
                    parts.pop();
                }
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// The PCI functions named along a sysfs path (`.../0000:00:1d.0/0000:3d:00.0/nvme/...`).
fn pci_addresses_in(path: &str) -> Vec<PciAddress> {
    path.split('/').filter_map(|part| PciAddress::parse(part).ok()).collect()
}

fn nvme_subsystem_of(path: &str) -> Option<&str> {
    let rest = &path[path.find("/nvme-subsystem/")? + "/nvme-subsystem/".len()..];
    rest.split('/').next().filter(|s| !s.is_empty())
}

/// The block devices under every mounted filesystem and swap area, with what each holds; an
/// error says which mount could not be traced.
fn storage_in_use(host: &Host, blocks: &BlockDevices) -> Result<Vec<(String, String)>, String> {
    let mountinfo =
        host.read("/proc/self/mountinfo").map_err(|e| format!("the mount table is unreadable ({e})"))?;
    let mut in_use = Vec::new();
    let mut zfs_mounted = None;
    for line in mountinfo.lines() {
        let Some(mount) = Mount::parse(line) else { continue };
        let what = format!("the filesystem mounted at {}", mount.point);
        if mount.major != "0" {
            // A device number sysfs does not list is not a block device of this host (a
            // network or FUSE filesystem with a fixed major).
            if let Some(name) = blocks.by_number.get(&format!("{}:{}", mount.major, mount.minor)) {
                in_use.push((name.clone(), what));
            }
            continue;
        }
        match mount.fstype.as_str() {
            "btrfs" => {
                let members = btrfs_members(host);
                if members.is_empty() {
                    return Err(format!(
                        "btrfs is mounted at {} but /sys/fs/btrfs lists no device",
                        mount.point
                    ));
                }
                in_use.extend(members.into_iter().map(|m| (m, what.clone())));
            }
            "zfs" => zfs_mounted = Some(mount.point.clone()),
            _ if mount.source.starts_with("/dev/") => match blocks.resolve(host, &mount.source) {
                Some(name) => in_use.push((name, what)),
                None => {
                    return Err(format!(
                        "{} is mounted at {} and is no block device sysfs lists",
                        mount.source, mount.point
                    ));
                }
            },
            _ => {}
        }
    }
    if let Some(point) = zfs_mounted {
        in_use.extend(zfs_members(host, blocks, &point)?);
    }
    if let Ok(swaps) = host.read("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let (Some(file), Some(kind)) = (fields.next(), fields.next()) else { continue };
            let file = unescape_octal(file);
            // A swap file lives on a filesystem, and that one is mounted.
            if kind != "partition" {
                continue;
            }
            match blocks.resolve(host, &file) {
                Some(name) => in_use.push((name, "swap".to_string())),
                None => return Err(format!("swap on {file} is no block device sysfs lists")),
            }
        }
    }
    Ok(in_use)
}

/// One line of `/proc/self/mountinfo`: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3
/// /dev/root rw,errors=continue` (proc(5)); the optional fields end at ` - `.
struct Mount {
    major: String,
    minor: String,
    point: String,
    fstype: String,
    source: String,
}

impl Mount {
    fn parse(line: &str) -> Option<Mount> {
        let (before, after) = line.split_once(" - ")?;
        let fields: Vec<&str> = before.split(' ').collect();
        let (major, minor) = fields.get(2)?.split_once(':')?;
        let point = unescape_octal(fields.get(4)?);
        let mut after = after.split(' ');
        let fstype = after.next()?.to_string();
        let source = unescape_octal(after.next().unwrap_or(""));
        Some(Mount { major: major.to_string(), minor: minor.to_string(), point, fstype, source })
    }
}

/// The kernel writes a space in a path as `\040` (and tab, newline, backslash likewise).
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(digits) => {
                out.push(digits.iter().fold(0u8, |v, d| v.wrapping_mul(8).wrapping_add(d - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The devices of every mounted btrfs (fs/btrfs/sysfs.c: `devices/` links each member).
fn btrfs_members(host: &Host) -> Vec<String> {
    host.list("/sys/fs/btrfs")
        .unwrap_or_default()
        .into_iter()
        .flat_map(|fs| host.list(&format!("/sys/fs/btrfs/{fs}/devices")).unwrap_or_default())
        .collect()
}

/// The devices of every imported ZFS pool, by `zpool list -vHP` (full paths of the vdevs).
fn zfs_members(host: &Host, blocks: &BlockDevices, point: &str) -> Result<Vec<(String, String)>, String> {
    let unsure = |why: String| format!("ZFS is mounted at {point} and {why}");
    let listing = match host.programs.output("zpool", &["list", "-vHP"]) {
        Some(Ok(listing)) => listing,
        Some(Err(e)) => return Err(unsure(format!("`zpool list` did not answer ({e})"))),
        None => return Err(unsure("no `zpool` can be asked here".into())),
    };
    let mut members = Vec::new();
    for path in listing.lines().filter_map(|l| l.split('\t').map(str::trim).find(|f| f.starts_with("/dev/")))
    {
        match blocks.resolve(host, path) {
            Some(name) => members.push((name, format!("the ZFS pool mounted at {point}"))),
            None => return Err(unsure(format!("its vdev {path} is no block device sysfs lists"))),
        }
    }
    Ok(members)
}

/// The PCI functions under the host's default routes, with the route each carries.
fn network_in_use(host: &Host) -> Vec<(PciAddress, String)> {
    let mut routed: BTreeMap<String, &'static str> = BTreeMap::new();
    // /proc/net/route: Iface Destination Gateway Flags ... Mask, hexadecimal.
    for line in host.read("/proc/net/route").unwrap_or_default().lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 7 && fields[1] == "00000000" && fields[7] == "00000000" {
            routed.insert(fields[0].to_string(), "the IPv4 default route");
        }
    }
    // /proc/net/ipv6_route: dest, prefix length, source, its length, next hop, metric, refcnt,
    // use, flags, device. RTF_REJECT (0x200) marks the unreachable default of `lo`.
    for line in host.read("/proc/net/ipv6_route").unwrap_or_default().lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[0].chars().any(|c| c != '0') || fields[1] != "00" {
            continue;
        }
        let rejecting = u32::from_str_radix(fields[8], 16).is_ok_and(|flags| flags & 0x200 != 0);
        if !rejecting && fields[9] != "lo" {
            routed.entry(fields[9].to_string()).or_insert("the IPv6 default route");
        }
    }
    let mut found = Vec::new();
    for iface in host.list("/sys/class/net").unwrap_or_default() {
        let Ok(device) = host.link_name(&format!("/sys/class/net/{iface}/device")) else { continue };
        let Ok(address) = PciAddress::parse(&device) else { continue };
        for (upper, chain) in uppers(host, &iface) {
            if let Some(route) = routed.get(&upper) {
                found.push((address, format!("network interface {chain} carries {route}")));
            }
        }
    }
    found
}

/// `iface` and every interface stacked on it (bridge, bond, VLAN), each with the chain that
/// leads there (`enp5s0 under br0`).
fn uppers(host: &Host, iface: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![(iface.to_string(), iface.to_string())];
    while let Some((name, chain)) = pending.pop() {
        if found.iter().any(|(n, _): &(String, String)| *n == name) || found.len() > 64 {
            continue;
        }
        let dir = format!("/sys/class/net/{name}");
        let mut above: Vec<String> = host
            .list(&dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| entry.strip_prefix("upper_").map(str::to_string))
            .collect();
        above.extend(host.link_name(&format!("{dir}/master")).ok());
        for upper in above {
            pending.push((upper.clone(), format!("{chain} under {upper}")));
        }
        found.push((name, chain));
    }
    found
}

/// A virtio-9p share mounted by its tag (a VM's root from its host, as in kvmtune's lab): the
/// tag is the virtio device's `mount_tag` (net/9p/trans_virtio.c), shown with its NUL.
fn shares_in_use(host: &Host) -> Vec<(PciAddress, String)> {
    let mountinfo = host.read("/proc/self/mountinfo").unwrap_or_default();
    let mut found = Vec::new();
    for virtio in host.list("/sys/bus/virtio/devices").unwrap_or_default() {
        let dir = format!("/sys/bus/virtio/devices/{virtio}");
        let Ok(target) = host.fs.link_target(&dir) else { continue };
        let Ok(tag) = host.read(&format!("{dir}/mount_tag")) else { continue };
        let tag = tag.trim_end_matches(['\0', '\n']).to_string();
        let mounted =
            mountinfo.lines().filter_map(Mount::parse).find(|m| m.fstype == "9p" && m.source == tag);
        if let Some(mount) = mounted {
            for address in pci_addresses_in(&target) {
                found.push((address, format!("it serves the 9p share `{tag}` mounted at {}", mount.point)));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_read_with_their_escapes() {
        let mount =
            Mount::parse("36 35 259:3 / /mnt/my\\040disk rw,noatime shared:1 - ext4 /dev/nvme0n1p3 rw")
                .unwrap();
        assert_eq!((mount.major.as_str(), mount.minor.as_str()), ("259", "3"));
        assert_eq!(mount.point, "/mnt/my disk");
        assert_eq!((mount.fstype.as_str(), mount.source.as_str()), ("ext4", "/dev/nvme0n1p3"));
        assert!(Mount::parse("garbage").is_none());
    }

    #[test]
    fn links_join_against_their_directory() {
        assert_eq!(join("/dev/mapper/vg-root", "../dm-0"), "/dev/dm-0");
        assert_eq!(join("/dev/disk/by-id/x", "../../nvme0n1p3"), "/dev/nvme0n1p3");
        assert_eq!(join("/dev/x", "/dev/sda"), "/dev/sda");
    }

    #[test]
    fn addresses_and_subsystems_come_from_the_path() {
        let path = "../../devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1";
        assert_eq!(
            pci_addresses_in(path),
            [PciAddress::parse("0000:00:1d.0").unwrap(), PciAddress::parse("0000:3d:00.0").unwrap()]
        );
        assert_eq!(
            nvme_subsystem_of("../../devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"),
            Some("nvme-subsys0")
        );
    }
}
