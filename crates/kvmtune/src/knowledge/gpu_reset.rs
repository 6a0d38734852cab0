//! GPUs that do not come back from a VM: AMD families whose function-level reset leaves the
//! card unusable for the next VM start or for the host driver (the "AMD reset bug"), and the
//! out-of-tree vendor-reset module that resets them properly once a device's `reset_method` is
//! `device_specific` (../shared/host-changes.md section 4).
//!
//! The device ids are those vendor-reset handles (gnif/vendor-reset `src/device-db.h`, the
//! reference the users of this table follow), vendor 0x1002 (AMD/ATI). A card not listed is not
//! known to be fine: the table only adds a warning.

/// PCI vendor id of AMD/ATI graphics.
pub const AMD_GPU_VENDOR: &str = "0x1002";
/// The module whose presence (`/sys/module/vendor_reset`) makes `device_specific` work.
pub const VENDOR_RESET_MODULE: &str = "vendor_reset";
/// The `reset_method` value that hands the reset to vendor-reset (kernel 5.15+, sysfs-bus-pci
/// `reset_method`).
pub const DEVICE_SPECIFIC: &str = "device_specific";

/// (family, device ids), lower-case hex as sysfs writes them.
pub const AMD_RESET_BUG: &[(&str, &[&str])] = &[
    (
        "Polaris 10",
        &[
            "0x67c0", "0x67c1", "0x67c2", "0x67c4", "0x67c7", "0x67d0", "0x67df", "0x67c8", "0x67c9",
            "0x67ca", "0x67cc", "0x67cf", "0x6fdf",
        ],
    ),
    (
        "Polaris 11",
        &["0x67e0", "0x67e3", "0x67e8", "0x67eb", "0x67ef", "0x67ff", "0x67e1", "0x67e7", "0x67e9"],
    ),
    ("Polaris 12", &["0x6980", "0x6981", "0x6985", "0x6986", "0x6987", "0x6995", "0x6997", "0x699f"]),
    (
        "Vega 10",
        &[
            "0x6860", "0x6861", "0x6862", "0x6863", "0x6864", "0x6867", "0x6868", "0x6869", "0x686a",
            "0x686b", "0x686c", "0x686d", "0x686e", "0x686f", "0x687f",
        ],
    ),
    ("Vega 20", &["0x66a0", "0x66a1", "0x66a2", "0x66a3", "0x66a4", "0x66a7", "0x66af", "0x738c"]),
    (
        "Navi 10",
        &[
            "0x7310", "0x7312", "0x7318", "0x7319", "0x731a", "0x731b", "0x731e", "0x731f", "0x15bf",
            "0x15dd", "0x15de", "0x15e7", "0x1636", "0x1638", "0x164c",
        ],
    ),
    ("Navi 14", &["0x7340", "0x7341", "0x7347", "0x734f"]),
    ("Navi 12", &["0x7360", "0x7362"]),
    ("Navi 23", &["0x73ff"]),
];

/// The family of an AMD GPU known for the reset bug.
pub fn reset_bug_family(vendor: &str, device: &str) -> Option<&'static str> {
    if !vendor.eq_ignore_ascii_case(AMD_GPU_VENDOR) {
        return None;
    }
    let device = device.to_ascii_lowercase();
    AMD_RESET_BUG.iter().find(|(_, ids)| ids.contains(&device.as_str())).map(|(family, _)| *family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_families_by_vendor_and_device() {
        assert_eq!(reset_bug_family("0x1002", "0x67DF"), Some("Polaris 10"));
        assert_eq!(reset_bug_family("0x1002", "0x73ff"), Some("Navi 23"));
        // Navi 21 (RX 6800/6900) resets through its own driver's BACO: not in the table.
        assert_eq!(reset_bug_family("0x1002", "0x73bf"), None);
        assert_eq!(reset_bug_family("0x10de", "0x67df"), None);
    }
}
