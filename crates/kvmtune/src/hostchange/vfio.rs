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
//! The single-GPU hand-over (`single_gpu`, for a host whose only GPU goes to the VM) takes the
//! host's display off the boot GPU first, each step journaled so that release gives it back in
//! reverse: the display manager stopped (where systemd runs one), every virtual console
//! unbound from the framebuffer console, the firmware framebuffer released from its platform
//! driver; then the GPU's own driver lets go as any device's does (host-changes.md section 4).
//!
//! Each member's reset is reported: a GPU the kernel cannot reset, or an AMD family with the
//! reset bug (knowledge/gpu_reset.rs), gets a warning; with the vendor-reset module loaded, such
//! a GPU's `reset_method` is set to `device_specific` for the VM's time.
//!
//! Not seen by the mounted-disk check: a root filesystem that is not on a block device (9p,
//! NFS).

use serde::Serialize;

use crate::host::Host;
use crate::host::device_use::HostUse;
use crate::hostchange::change::{ChangeKind, HostAction};
use crate::hostchange::journal::JournalKind;
use crate::values::PciAddress;

pub const PCI_DEVICES: &str = "/sys/bus/pci/devices";
pub const VFIO_PCI: &str = "vfio-pci";

/// One device of a group, as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    pub address: PciAddress,
    pub class: String,
    /// Its driver now; `None` when no driver has it.
    pub driver: Option<String>,
    pub group: u32,
    /// The firmware's boot display.
    pub boot_vga: bool,
    /// The kernel's reset methods for it (`reset_method`), best first; empty for none.
    pub reset_methods: Vec<String>,
}

impl GroupMember {
    /// The device at `address`, as sysfs has it now.
    fn read(address: PciAddress, group: u32, host: &Host) -> Self {
        let dir = address.sysfs_dir();
        GroupMember {
            class: text(host, &format!("{dir}/class")).unwrap_or_default(),
            driver: host.fs.link_name(&format!("{dir}/driver")).ok(),
            group,
            boot_vga: text(host, &format!("{dir}/boot_vga")).as_deref() == Some("1"),
            reset_methods: text(host, &format!("{dir}/reset_method"))
                .map(|m| m.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            address,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BindPlan {
    pub vm: String,
    pub members: Vec<GroupMember>,
    /// The groups whose `/dev/vfio/N` must exist afterwards.
    pub groups: Vec<u32>,
    pub actions: Vec<HostAction>,
    /// What may go wrong that kvmtune cannot prevent (a GPU that does not reset).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VfioRefusal {
    #[error("`{0}` is not a PCI address of this host (no {PCI_DEVICES}/{0}); see `lspci -D`")]
    NoSuchDevice(PciAddress),
    #[error(
        "{0} has no IOMMU group: the IOMMU is off. Enable VT-d / AMD-Vi in the firmware and, on Intel, boot with intel_iommu=on (AMD enables it by default)"
    )]
    NoIommu(PciAddress),
    #[error(
        "{address} (group {group}) is in use by this host: {what}; it cannot go to a VM while that holds"
    )]
    HostUses { address: PciAddress, group: u32, what: String },
    #[error("the vfio-pci driver is not loaded: run `modprobe vfio-pci` first")]
    NoVfioPci,
    #[error(
        "--single-gpu hands over the host's boot display, and none of {0} is it (no boot_vga); bind without --single-gpu"
    )]
    NotTheBootDisplay(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a hand-over did not hold; every device was given back.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Journal(#[from] crate::hostchange::JournalError),
    #[error("/dev/vfio has no node for group(s) {0:?} after the hand-over; every device was given back")]
    NoDeviceNode(Vec<u32>),
}

/// What [`apply_bind`] handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindApplied {
    pub vm: String,
    pub addresses: Vec<PciAddress>,
    pub groups: Vec<u32>,
}

/// Makes a bind plan's changes through the journal, then checks that each group's device node
/// exists (every member on vfio-pci); gives everything back when one does not.
pub fn apply_bind(
    journal: &crate::hostchange::Journal,
    plan: &BindPlan,
    host: &Host,
) -> Result<BindApplied, BindError> {
    journal.apply(JournalKind::Devices, &plan.vm, &crate::values::CpuSet::new(), &plan.actions, host)?;
    // The group is usable only when every member is on vfio-pci: its device node says so.
    let nodes = host.fs.list("/dev/vfio").unwrap_or_default();
    let missing: Vec<u32> = plan.groups.iter().copied().filter(|g| !nodes.contains(&g.to_string())).collect();
    if !missing.is_empty() {
        journal.release(JournalKind::Devices, &plan.vm, host)?;
        return Err(BindError::NoDeviceNode(missing));
    }
    Ok(BindApplied {
        vm: plan.vm.clone(),
        addresses: plan.members.iter().map(|m| m.address).collect(),
        groups: plan.groups.clone(),
    })
}

fn text(host: &Host, path: &str) -> Option<String> {
    host.fs.read_trimmed(path).ok()
}

/// Works out the hand-over of `devices` (and their groups) for `vm`.
pub fn plan_bind(
    vm: &str,
    devices: &[PciAddress],
    single_gpu: bool,
    host: &Host,
) -> Result<BindPlan, VfioRefusal> {
    let mut members: Vec<GroupMember> = Vec::new();
    let mut groups = Vec::new();
    for &address in devices {
        let dir = address.sysfs_dir();
        if !host.fs.is_dir(&dir) {
            return Err(VfioRefusal::NoSuchDevice(address));
        }
        let group: u32 = host
            .fs
            .link_name(&format!("{dir}/iommu_group"))
            .ok()
            .and_then(|g| g.parse().ok())
            .ok_or(VfioRefusal::NoIommu(address))?;
        if groups.contains(&group) {
            continue;
        }
        groups.push(group);
        let group_dir = format!("/sys/kernel/iommu_groups/{group}/devices");
        let names = host
            .fs
            .list(&group_dir)
            .map_err(|source| VfioRefusal::Read { path: group_dir.clone(), source })?;
        let mut in_group = names
            .iter()
            .map(|name| {
                PciAddress::parse(name).map_err(|e| VfioRefusal::Read {
                    path: group_dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
            .collect::<Result<Vec<PciAddress>, VfioRefusal>>()?;
        // The named device first: released last.
        in_group.sort_by_key(|d| *d != address);
        // PCI-to-PCI bridges (class 0x0604xx) stay with the host, as the kernel has it.
        members.extend(
            in_group
                .into_iter()
                .map(|m| GroupMember::read(m, group, host))
                .filter(|m| !m.class.starts_with("0x0604")),
        );
    }
    if single_gpu && !members.iter().any(|m| m.boot_vga) {
        let named: Vec<String> = devices.iter().map(PciAddress::to_string).collect();
        return Err(VfioRefusal::NotTheBootDisplay(named.join(", ")));
    }
    let in_use = HostUse::read(host);
    for member in members.iter().filter(|m| !(single_gpu && m.boot_vga)) {
        if let Some(what) = host_use(member, &in_use, host) {
            return Err(VfioRefusal::HostUses { address: member.address, group: member.group, what });
        }
    }
    if !host.fs.is_dir(&format!("/sys/bus/pci/drivers/{VFIO_PCI}")) {
        return Err(VfioRefusal::NoVfioPci);
    }
    let mut actions = if single_gpu { display_hand_over(vm, host) } else { Vec::new() };
    let (warnings, reset_actions) = reset_plan(vm, &members, host);
    actions.extend(reset_actions);
    actions.extend(members.iter().filter(|m| m.driver.as_deref() != Some(VFIO_PCI)).map(|m| {
        let mut action = HostAction::write(
            format!("{PCI_DEVICES}/{}", m.address),
            VFIO_PCI,
            format!("{} (class {}, group {}) to vfio-pci for VM {vm}", m.address, m.class, m.group),
        )
        .with_kind(ChangeKind::VfioBind);
        action.old = Some(m.driver.clone().unwrap_or_else(|| "(none)".to_string()));
        action
    }));
    Ok(BindPlan { vm: vm.to_string(), members, groups, actions, warnings })
}

pub use crate::hostchange::change::allowed::{DISPLAY_MANAGER, FIRMWARE_FRAMEBUFFERS};

/// The host's display off the boot GPU, in the order the community's single-GPU scripts use
/// (host-changes.md section 4): the display manager, the virtual consoles, the firmware
/// framebuffer.
fn display_hand_over(vm: &str, host: &Host) -> Vec<HostAction> {
    let mut actions = Vec::new();
    // A display manager only where systemd runs (it is PID 1 when /run/systemd/system exists,
    // sd_booted(3)) and one is enabled.
    if host.fs.is_dir("/run/systemd/system")
        && host.fs.link_target(&format!("/etc/systemd/system/{DISPLAY_MANAGER}")).is_ok()
    {
        actions.push(
            HostAction::write(
                DISPLAY_MANAGER,
                "inactive",
                format!("the display manager lets go of the GPU for VM {vm}; started again at release"),
            )
            .with_kind(ChangeKind::ServiceState),
        );
    }
    for console in host.fs.list("/sys/class/vtconsole").unwrap_or_default() {
        let dir = format!("/sys/class/vtconsole/{console}");
        let name = text(host, &format!("{dir}/name")).unwrap_or_default();
        if text(host, &format!("{dir}/bind")).as_deref() == Some("1") && name.contains("frame buffer") {
            let mut action = HostAction::write(
                format!("{dir}/bind"),
                "0",
                format!("{console} ({name}) off the framebuffer for VM {vm}; bound again at release"),
            );
            action.old = Some("1".to_string());
            actions.push(action);
        }
    }
    for framebuffer in FIRMWARE_FRAMEBUFFERS {
        let path = format!("/sys/bus/platform/devices/{framebuffer}");
        if let Ok(driver) = host.fs.link_name(&format!("{path}/driver")) {
            let mut action = HostAction::write(
                path,
                "",
                format!("the firmware framebuffer lets go of the GPU's memory for VM {vm}"),
            )
            .with_kind(ChangeKind::PlatformDriver);
            action.old = Some(driver);
            actions.push(action);
        }
    }
    actions
}

/// The reset warnings for devices handed over earlier (at release), read as they are now.
pub fn reset_warnings(addresses: &[PciAddress], host: &Host) -> Vec<String> {
    let members: Vec<GroupMember> =
        addresses.iter().map(|&address| GroupMember::read(address, 0, host)).collect();
    reset_plan("", &members, host).0
}

/// The warnings about members that may not reset, and with vendor-reset loaded, the
/// `reset_method` writes that hand those GPUs' reset to it.
pub fn reset_plan(vm: &str, members: &[GroupMember], host: &Host) -> (Vec<String>, Vec<HostAction>) {
    use crate::knowledge::gpu_reset::{DEVICE_SPECIFIC, VENDOR_RESET_MODULE, reset_bug_family};
    let vendor_reset = host.fs.is_dir(&format!("/sys/module/{VENDOR_RESET_MODULE}"));
    let mut warnings = Vec::new();
    let mut actions = Vec::new();
    for member in members.iter().filter(|m| m.class.starts_with("0x03")) {
        let dir = format!("{PCI_DEVICES}/{}", member.address);
        let family = match (text(host, &format!("{dir}/vendor")), text(host, &format!("{dir}/device"))) {
            (Some(vendor), Some(device)) => reset_bug_family(&vendor, &device),
            _ => None,
        };
        let methods = member.reset_methods.join(" ");
        match family {
            // Already first: vendor-reset's reset is the one the kernel uses.
            Some(_) if vendor_reset && member.reset_methods.first().map(String::as_str) == Some(DEVICE_SPECIFIC) => {}
            Some(family) if vendor_reset && !member.reset_methods.is_empty() => {
                let mut action = HostAction::write(
                    format!("{dir}/reset_method"),
                    DEVICE_SPECIFIC,
                    format!("AMD {family} resets through vendor-reset while VM {vm} has it"),
                );
                action.old = Some(methods);
                actions.push(action);
            }
            Some(family) => warnings.push(format!(
                "{} is an AMD {family} GPU, known not to reset (the AMD reset bug): after the VM stops it may not work for the host or the next start until a reboot. Load vendor-reset (gnif/vendor-reset) before binding; kvmtune then selects its device_specific reset",
                member.address
            )),
            None if member.reset_methods.is_empty() => warnings.push(format!(
                "{} is a GPU the kernel has no reset method for (empty reset_method): it may keep the VM's state across starts or fail to come back to the host",
                member.address
            )),
            None => {}
        }
    }
    (warnings, actions)
}

/// What the host uses a device for: its disks, routes and shares ([`HostUse`]), and the boot
/// display while the framebuffer console is on it.
fn host_use(member: &GroupMember, in_use: &HostUse, host: &Host) -> Option<String> {
    if let Some(what) = in_use.of(member.address) {
        return Some(what);
    }
    if member.boot_vga {
        for console in host.fs.list("/sys/class/vtconsole").unwrap_or_default() {
            let dir = format!("/sys/class/vtconsole/{console}");
            let bound = text(host, &format!("{dir}/bind")).as_deref() == Some("1");
            let name = text(host, &format!("{dir}/name")).unwrap_or_default();
            if bound && name.contains("frame buffer") {
                return Some(format!(
                    "it is the boot display and the console ({console}: {name}) is on it; for the host's only GPU, bind with --single-gpu"
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;

    /// One AMD Polaris GPU, the boot display, alone in group 1 on amdgpu, with fbcon on vtcon1
    /// and efifb on the firmware framebuffer.
    fn single_gpu_host(vendor_reset: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let put = |path: &str, text: &str| {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        };
        let link = |path: &str, target: &str| {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, file).unwrap();
        };
        let gpu = "sys/bus/pci/devices/0000:01:00.0";
        for (file, value) in
            [("class", "0x030000"), ("vendor", "0x1002"), ("device", "0x67df"), ("boot_vga", "1")]
        {
            put(&format!("{gpu}/{file}"), &format!("{value}\n"));
        }
        put(&format!("{gpu}/reset_method"), "bus\n");
        link(&format!("{gpu}/iommu_group"), "../../../kernel/iommu_groups/1");
        link(&format!("{gpu}/driver"), "../../../bus/pci/drivers/amdgpu");
        std::fs::create_dir_all(root.join("sys/kernel/iommu_groups/1/devices/0000:01:00.0")).unwrap();
        std::fs::create_dir_all(root.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
        // The root filesystem on a disk that is not among the devices.
        put("proc/self/mountinfo", "1 0 254:0 / / rw - ext4 /dev/vda rw\n");
        put("sys/class/vtconsole/vtcon0/bind", "0\n");
        put("sys/class/vtconsole/vtcon0/name", "(S) dummy device\n");
        put("sys/class/vtconsole/vtcon1/bind", "1\n");
        put("sys/class/vtconsole/vtcon1/name", "(M) frame buffer device\n");
        link(
            "sys/bus/platform/devices/efi-framebuffer.0/driver",
            "../../../bus/platform/drivers/efi-framebuffer",
        );
        if vendor_reset {
            std::fs::create_dir_all(root.join("sys/module/vendor_reset")).unwrap();
        }
        dir
    }

    #[test]
    fn the_single_gpu_hand_over_takes_the_console_and_framebuffer_first() {
        let dir = single_gpu_host(true);
        let host = Host::rooted(dir.path());
        let devices = [PciAddress::parse_lenient("01:00.0").unwrap()];
        let refused = plan_bind("win", &devices, false, &host).unwrap_err();
        assert!(refused.to_string().contains("--single-gpu"), "{refused}");

        let plan = plan_bind("win", &devices, true, &host).unwrap();
        let steps: Vec<String> = plan.actions.iter().map(HostAction::shell).collect();
        assert_eq!(
            steps,
            [
                "echo 0 > /sys/class/vtconsole/vtcon1/bind",
                "echo efi-framebuffer.0 > /sys/bus/platform/devices/efi-framebuffer.0/driver/unbind",
                "echo device_specific > /sys/bus/pci/devices/0000:01:00.0/reset_method",
                "echo vfio-pci > /sys/bus/pci/devices/0000:01:00.0/driver_override; echo 0000:01:00.0 > /sys/bus/pci/devices/0000:01:00.0/driver/unbind; echo 0000:01:00.0 > /sys/bus/pci/drivers_probe",
            ]
        );
        // vendor-reset takes the reset: nothing to warn about.
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    }

    #[test]
    fn a_reset_bug_gpu_without_vendor_reset_is_warned_about() {
        let dir = single_gpu_host(false);
        let host = Host::rooted(dir.path());
        let gpu = PciAddress::parse("0000:01:00.0").unwrap();
        let plan = plan_bind("win", &[gpu], true, &host).unwrap();
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("Polaris 10") && plan.warnings[0].contains("vendor-reset"));
        assert!(!plan.actions.iter().any(|a| a.path.ends_with("reset_method")));
        assert_eq!(reset_warnings(&[gpu], &host), plan.warnings);
    }
}
