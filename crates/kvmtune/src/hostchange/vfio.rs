//! What `kvmtune vfio bind` changes: each named PCI device brings its whole IOMMU group
//! (bridges excluded: vfio-pci does not bind them and the kernel exempts them from a group's
//! viability, drivers/vfio/vfio.c; host-changes.md section 4), each member handed to vfio-pci
//! as one journaled [`ChangeKind::VfioBind`]. The named devices go first, so that release,
//! which runs backwards, gives the other functions (audio, USB) back before the GPU.
//!
//! Refused before the first write: a device that does not exist or is not PCI, no IOMMU, a
//! group holding something the host visibly uses (a disk with a mounted filesystem, the NIC of
//! the default route, the boot VGA while a console is bound to it), vfio-pci not loaded.
//!
//! Not built yet (issue 15): the single-GPU hand-over (`--single-gpu`: display manager, virtual
//! consoles, framebuffer), `reset_method` warnings, and the libvirt hook; a root filesystem that
//! is not on a block device (9p, NFS) is not seen by the mounted-disk check.

use serde::Serialize;

use crate::hostchange::action::{ChangeKind, HostAction};
use crate::hostchange::writer::HostWriter;

pub const PCI_DEVICES: &str = "/sys/bus/pci/devices";
pub const VFIO_PCI: &str = "vfio-pci";

/// One device of a group, as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    pub address: String,
    pub class: String,
    /// Its driver now; `None` when no driver has it.
    pub driver: Option<String>,
    pub group: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct BindPlan {
    pub vm: String,
    pub members: Vec<GroupMember>,
    /// The groups whose `/dev/vfio/N` must exist afterwards.
    pub groups: Vec<u32>,
    pub actions: Vec<HostAction>,
}

#[derive(Debug, thiserror::Error)]
pub enum VfioRefusal {
    #[error("`{0}` is not a PCI address of this host (no {PCI_DEVICES}/{0}); see `lspci -D`")]
    NoSuchDevice(String),
    #[error(
        "{0} has no IOMMU group: the IOMMU is off. Enable VT-d / AMD-Vi in the firmware and, on Intel, boot with intel_iommu=on (AMD enables it by default)"
    )]
    NoIommu(String),
    #[error(
        "{address} (group {group}) is in use by this host: {what}; it cannot go to a VM while that holds"
    )]
    HostUses { address: String, group: u32, what: String },
    #[error("the vfio-pci driver is not loaded: run `modprobe vfio-pci` first")]
    NoVfioPci,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `00:10.0` → `0000:00:10.0`.
pub fn full_address(address: &str) -> String {
    if address.matches(':').count() == 1 { format!("0000:{address}") } else { address.to_string() }
}

fn text(writer: &dyn HostWriter, path: &str) -> Option<String> {
    writer.read_trimmed(path).ok()
}

/// Works out the hand-over of `devices` (and their groups) for `vm`.
pub fn plan_bind(vm: &str, devices: &[String], writer: &dyn HostWriter) -> Result<BindPlan, VfioRefusal> {
    let mut members: Vec<GroupMember> = Vec::new();
    let mut groups = Vec::new();
    for device in devices {
        let address = full_address(device);
        let dir = format!("{PCI_DEVICES}/{address}");
        if !writer.is_dir(&dir) {
            return Err(VfioRefusal::NoSuchDevice(address));
        }
        let group: u32 = writer
            .link_name(&format!("{dir}/iommu_group"))
            .ok()
            .and_then(|g| g.parse().ok())
            .ok_or_else(|| VfioRefusal::NoIommu(address.clone()))?;
        if groups.contains(&group) {
            continue;
        }
        groups.push(group);
        let group_dir = format!("/sys/kernel/iommu_groups/{group}/devices");
        let mut in_group = writer
            .list_dir(&group_dir)
            .map_err(|source| VfioRefusal::Read { path: group_dir.clone(), source })?;
        // The named device first: released last.
        in_group.sort_by_key(|d| *d != address);
        for member in in_group {
            let dir = format!("{PCI_DEVICES}/{member}");
            let class = text(writer, &format!("{dir}/class")).unwrap_or_default();
            // PCI-to-PCI bridges (class 0x0604xx) stay with the host, as the kernel has it.
            if class.starts_with("0x0604") {
                continue;
            }
            let driver = writer.link_name(&format!("{dir}/driver")).ok();
            members.push(GroupMember { address: member, class, driver, group });
        }
    }
    let in_use = HostUse::read(writer);
    for member in &members {
        if let Some(what) = in_use.of(member, writer) {
            return Err(VfioRefusal::HostUses { address: member.address.clone(), group: member.group, what });
        }
    }
    if !writer.is_dir(&format!("/sys/bus/pci/drivers/{VFIO_PCI}")) {
        return Err(VfioRefusal::NoVfioPci);
    }
    let actions = members
        .iter()
        .filter(|m| m.driver.as_deref() != Some(VFIO_PCI))
        .map(|m| {
            let mut action = HostAction::write(
                format!("{PCI_DEVICES}/{}", m.address),
                VFIO_PCI,
                format!("{} (class {}, group {}) to vfio-pci for VM {vm}", m.address, m.class, m.group),
            )
            .with_kind(ChangeKind::VfioBind);
            action.old = Some(m.driver.clone().unwrap_or_else(|| "(none)".to_string()));
            action
        })
        .collect();
    Ok(BindPlan { vm: vm.to_string(), members, groups, actions })
}

/// What the host has mounted and routes through, read once for every device checked.
struct HostUse {
    mounts: String,
    routes: String,
}

impl HostUse {
    fn read(writer: &dyn HostWriter) -> Self {
        HostUse {
            mounts: text(writer, "/proc/mounts").unwrap_or_default(),
            routes: text(writer, "/proc/net/route").unwrap_or_default(),
        }
    }

    /// What the host visibly uses this device for, if anything.
    fn of(&self, member: &GroupMember, writer: &dyn HostWriter) -> Option<String> {
        host_use(member, &self.mounts, &self.routes, writer)
    }
}

fn host_use(member: &GroupMember, mounts: &str, routes: &str, writer: &dyn HostWriter) -> Option<String> {
    // Block devices whose sysfs path runs through this PCI function.
    for disk in writer.list_dir("/sys/block").unwrap_or_default() {
        let Ok(target) = writer.link_target(&format!("/sys/block/{disk}")) else { continue };
        if !target.contains(&format!("/{}/", member.address)) {
            continue;
        }
        if let Some(line) = mounts.lines().find(|l| {
            l.split_whitespace().next().is_some_and(|source| source.starts_with(&format!("/dev/{disk}")))
        }) {
            let point = line.split_whitespace().nth(1).unwrap_or("?");
            return Some(format!("disk {disk} holds the filesystem mounted at {point}"));
        }
    }
    // The NIC of the default route (/proc/net/route: destination 00000000).
    for iface in writer.list_dir("/sys/class/net").unwrap_or_default() {
        let device = writer.link_name(&format!("/sys/class/net/{iface}/device")).unwrap_or_default();
        if device == member.address
            && routes.lines().any(|l| {
                let mut fields = l.split_whitespace();
                fields.next() == Some(iface.as_str()) && fields.next() == Some("00000000")
            })
        {
            return Some(format!("network interface {iface} carries the default route"));
        }
    }
    // The boot display while the framebuffer console is bound to it.
    let boot_vga =
        text(writer, &format!("{PCI_DEVICES}/{}/boot_vga", member.address)).as_deref() == Some("1");
    if boot_vga {
        for console in writer.list_dir("/sys/class/vtconsole").unwrap_or_default() {
            let dir = format!("/sys/class/vtconsole/{console}");
            let bound = text(writer, &format!("{dir}/bind")).as_deref() == Some("1");
            let name = text(writer, &format!("{dir}/name")).unwrap_or_default();
            if bound && name.contains("frame buffer") {
                return Some(format!(
                    "it is the boot display and the console ({console}: {name}) is on it; the single-GPU hand-over (--single-gpu) is not built yet"
                ));
            }
        }
    }
    None
}
