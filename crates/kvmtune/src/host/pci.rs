//! IOMMU state, IOMMU groups, and PCI devices with what passthrough needs to know about them.
//!
//! Source: Documentation/ABI/testing/sysfs-bus-pci (`class`, `vendor`, `device`, `numa_node`,
//! `boot_vga`, the `driver` and `iommu_group` links) and sysfs-kernel-iommu_groups.

use serde::{Deserialize, Serialize};

use crate::host::fact::Fact;
use crate::host::source::HostSource;

const PCI_DIR: &str = "sys/bus/pci/devices";
const GROUP_DIR: &str = "sys/kernel/iommu_groups";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iommu {
    /// True when the kernel created IOMMU groups (the IOMMU is on and a driver claimed it).
    pub enabled: Fact<bool>,
    pub groups: Vec<IommuGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommuGroup {
    pub group: u32,
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    pub address: String,
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
}

pub fn probe_iommu(host: &dyn HostSource) -> Iommu {
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
            return Iommu { enabled: Fact::Unknown(error.to_string()), groups: Vec::new() };
        }
    };
    Iommu { enabled: Fact::Known(!groups.is_empty()), groups }
}

pub fn probe_devices(host: &dyn HostSource, iommu: &Iommu) -> Fact<Vec<PciDevice>> {
    let addresses = match host.list(PCI_DIR) {
        Ok(addresses) => addresses,
        Err(error) => return Fact::Unknown(error.to_string()),
    };
    let devices = addresses
        .into_iter()
        .map(|address| {
            let dir = format!("{PCI_DIR}/{address}");
            let class: Fact<String> = host.read_trimmed(&format!("{dir}/class")).into();
            let id = match (
                host.read_trimmed(&format!("{dir}/vendor")),
                host.read_trimmed(&format!("{dir}/device")),
            ) {
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
                .map(|group| group.devices.iter().filter(|d| **d != address).cloned().collect())
                .unwrap_or_default();
            PciDevice {
                driver: host.link_name(&format!("{dir}/driver")).ok(),
                boot_vga: host.read_trimmed(&format!("{dir}/boot_vga")).is_ok_and(|v| v == "1"),
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
