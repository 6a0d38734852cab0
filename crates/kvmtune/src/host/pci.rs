//! IOMMU state, IOMMU groups, and PCI devices with what passthrough needs to know about them.
//!
//! Source: Documentation/ABI/testing/sysfs-bus-pci (`class`, `vendor`, `device`, `numa_node`,
//! `boot_vga`, the `driver` and `iommu_group` links) and sysfs-kernel-iommu_groups.

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::host::fact::Fact;
use crate::values::PciAddress;

const PCI_DIR: &str = "/sys/bus/pci/devices";
const GROUP_DIR: &str = "/sys/kernel/iommu_groups";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iommu {
    /// True when the kernel created IOMMU groups (the IOMMU is on and a driver claimed it).
    pub enabled: Fact<bool>,
    pub groups: Vec<IommuGroup>,
    #[serde(default = "unknown_vfio_pci")]
    pub vfio_pci: Fact<VfioPci>,
}

fn unknown_vfio_pci() -> Fact<VfioPci> {
    Fact::Unknown("not recorded".to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommuGroup {
    pub group: u32,
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    pub address: PciAddress,
    /// The 24-bit class code, e.g. `0x030000` for a VGA controller.
    pub class: Fact<String>,
    /// `vendor:device` in lspci's spelling, e.g. `10de:2684`.
    pub id: Fact<String>,
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
    pub numa_node: Option<u32>,
    /// The firmware's boot display: passing it through needs extra care (no host console).
    pub boot_vga: bool,
    pub is_gpu: bool,
    /// Other devices in the same IOMMU group; they must be passed through (or unbound) together.
    pub group_mates: Vec<String>,
    /// How the kernel can reset the device (`reset_method`, kernel 5.15+: `flr`, `pm`, `bus`,
    /// `device_specific`, ...), best first. Empty: none, or a kernel too old to list them (the
    /// file is hidden when a device has no method). A VM's device is reset at every start.
    #[serde(default)]
    pub reset_methods: Vec<String>,
    /// An AMD family known for the reset bug (knowledge/gpu_reset.rs), which needs vendor-reset.
    #[serde(default)]
    pub reset_bug: Option<String>,
    /// The DRM card a display driver made of it (`drm/cardN`): a compositor or console may
    /// have it open.
    #[serde(default)]
    pub drm_card: Option<String>,
    /// The framebuffer console is on it: it is the boot display and a virtual console is bound
    /// to a framebuffer (`/sys/class/vtconsole/*/bind`).
    #[serde(default)]
    pub console: bool,
    /// The processes (by `comm`) that hold its DRM nodes open: a compositor or display server
    /// that must let go before the device can leave its driver. Empty in snapshots.
    #[serde(default)]
    pub drm_clients: Vec<String>,
}

pub fn probe_iommu(host: &Host) -> Iommu {
    let groups = match host.list(GROUP_DIR) {
        Ok(names) => names
            .iter()
            .filter_map(|name| name.parse::<u32>().ok())
            .map(|group| IommuGroup {
                group,
                devices: host.list(&format!("{GROUP_DIR}/{group}/devices")).unwrap_or_default(),
            })
            .collect::<Vec<_>>(),
        Err(error) => {
            return Iommu {
                enabled: Fact::Unknown(error.to_string()),
                groups: Vec::new(),
                vfio_pci: vfio_pci_state(host),
            };
        }
    };
    Iommu { enabled: Fact::Known(!groups.is_empty()), groups, vfio_pci: vfio_pci_state(host) }
}

/// Whether vfio-pci can take devices: loaded (or built in), a module to load, or missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VfioPci {
    Loaded,
    /// Not loaded; `modprobe vfio-pci` loads it.
    Module,
    Missing,
}

fn vfio_pci_state(host: &Host) -> Fact<VfioPci> {
    if host.exists("/sys/bus/pci/drivers/vfio-pci") {
        return Fact::Known(VfioPci::Loaded);
    }
    let release = match host.read_trimmed("/proc/sys/kernel/osrelease") {
        Ok(release) => release,
        Err(error) => return Fact::Unknown(error.to_string()),
    };
    match host.read_trimmed(&format!("/lib/modules/{release}/modules.dep")) {
        Ok(dep) if dep.lines().any(|l| l.split(':').next().is_some_and(|m| m.contains("/vfio-pci.ko"))) => {
            Fact::Known(VfioPci::Module)
        }
        Ok(_) => Fact::Known(VfioPci::Missing),
        Err(error) => Fact::Unknown(error.to_string()),
    }
}

/// Which processes hold each DRM node (`card0`, `renderD128`) open, by the node's name: the
/// `/proc/PID/fd/*` links named so (the device's `drm/` directory names its nodes the same).
fn drm_holders(host: &Host) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut holders: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for pid in host.list("/proc").unwrap_or_default().iter().filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        let fds = host.list(&format!("/proc/{pid}/fd")).unwrap_or_default();
        let nodes: Vec<String> = fds
            .iter()
            .filter_map(|fd| host.link_name(&format!("/proc/{pid}/fd/{fd}")).ok())
            .filter(|name| name.starts_with("card") || name.starts_with("renderD"))
            .collect();
        if nodes.is_empty() {
            continue;
        }
        let comm = host.read_trimmed(&format!("/proc/{pid}/comm")).unwrap_or_else(|_| pid.clone());
        for node in nodes {
            let list = holders.entry(node).or_default();
            if !list.contains(&comm) {
                list.push(comm.clone());
            }
        }
    }
    holders
}

/// A virtual console is bound to the framebuffer console (fbcon).
fn framebuffer_console(host: &Host) -> bool {
    host.list("/sys/class/vtconsole").unwrap_or_default().iter().any(|console| {
        let dir = format!("/sys/class/vtconsole/{console}");
        host.read_trimmed(&format!("{dir}/bind")).is_ok_and(|b| b == "1")
            && host.read_trimmed(&format!("{dir}/name")).is_ok_and(|n| n.contains("frame buffer"))
    })
}

pub fn probe_devices(host: &Host, iommu: &Iommu) -> Fact<Vec<PciDevice>> {
    let addresses = match host.list(PCI_DIR) {
        Ok(addresses) => addresses,
        Err(error) => return Fact::Unknown(error.to_string()),
    };
    let console = framebuffer_console(host);
    let drm_holders = drm_holders(host);
    // Every entry is a device named by its address; anything else in a snapshot is passed over.
    let devices = addresses
        .into_iter()
        .filter_map(|name| PciAddress::parse(&name).ok().map(|address| (name, address)))
        .map(|(name, address)| {
            let dir = format!("{PCI_DIR}/{name}");
            let class: Fact<String> = host.read_trimmed(&format!("{dir}/class")).into();
            let ids =
                (host.read_trimmed(&format!("{dir}/vendor")), host.read_trimmed(&format!("{dir}/device")));
            let id = match &ids {
                (Ok(vendor), Ok(device)) => Fact::Known(format!(
                    "{}:{}",
                    vendor.trim_start_matches("0x"),
                    device.trim_start_matches("0x")
                )),
                (Err(error), _) | (_, Err(error)) => Fact::Unknown(error.to_string()),
            };
            let iommu_group = host.link_name(&format!("{dir}/iommu_group")).ok().and_then(|g| g.parse().ok());
            // numa_node is -1 when the platform does not say.
            let numa_node = host
                .read_trimmed(&format!("{dir}/numa_node"))
                .ok()
                .and_then(|n| n.parse::<i64>().ok())
                .and_then(|n| u32::try_from(n).ok());
            let is_gpu = class.known().is_some_and(|c| c.trim_start_matches("0x").starts_with("03"));
            let group_mates = iommu_group
                .and_then(|g| iommu.groups.iter().find(|group| group.group == g))
                .map(|group| group.devices.iter().filter(|d| **d != name).cloned().collect())
                .unwrap_or_default();
            let boot_vga = host.read_trimmed(&format!("{dir}/boot_vga")).is_ok_and(|v| v == "1");
            let reset_bug = match &ids {
                (Ok(vendor), Ok(device)) if is_gpu => {
                    crate::knowledge::gpu_reset::reset_bug_family(vendor, device).map(str::to_string)
                }
                _ => None,
            };
            PciDevice {
                driver: host.link_name(&format!("{dir}/driver")).ok(),
                boot_vga,
                reset_methods: host
                    .read_trimmed(&format!("{dir}/reset_method"))
                    .map(|m| m.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default(),
                reset_bug,
                drm_card: host
                    .list(&format!("{dir}/drm"))
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.starts_with("card")),
                drm_clients: {
                    let mut clients: Vec<String> = host
                        .list(&format!("{dir}/drm"))
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|node| drm_holders.get(node))
                        .flatten()
                        .cloned()
                        .collect();
                    clients.sort();
                    clients.dedup();
                    clients
                },
                console: boot_vga && console,
                address,
                class,
                id,
                iommu_group,
                numa_node,
                is_gpu,
                group_mates,
            }
        })
        .collect();
    Fact::Known(devices)
}
