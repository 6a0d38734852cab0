//! A PCI device handed to vfio-pci; `path` is its sysfs directory and the original is the name
//! of the driver it had (empty for none). Made by `driver_override`, unbind and `drivers_probe`,
//! then read back; undone by clearing the override, unbinding from vfio-pci and probing again,
//! then checking the device is back on its driver (Documentation/ABI/testing/sysfs-bus-pci;
//! ../shared/host-changes.md section 4). Never `new_id`, which would grab every device with the
//! same ids.

use super::{
    Change, HostAction, HostChangeError, Outcome, device_name, driver_of, original_driver, write_error,
    write_file,
};
use crate::host::Host;
use crate::values::escape::shell;

/// Where a PCI device is offered to the drivers again (sysfs-bus-pci).
pub const PCI_DRIVERS_PROBE: &str = "/sys/bus/pci/drivers_probe";

pub struct VfioBind;

impl Change for VfioBind {
    fn allowed(&self, path: &str, new: &str, original: &[u8]) -> Result<(), String> {
        super::allowed_in(&["/sys/bus/pci/devices/*"], path, "a PCI device")?;
        let address = path.rsplit('/').next().unwrap_or(path);
        if crate::values::PciAddress::parse(address).is_err() {
            return Err(format!("`{}` is not a PCI address", address.escape_debug()));
        }
        if new != "vfio-pci" {
            return Err(format!("a device is handed to vfio-pci, not to `{}`", new.escape_debug()));
        }
        super::allowed_driver(original)
    }

    fn read_original(&self, path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        original_driver(path, host)
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        let driver = String::from_utf8_lossy(value).trim().to_string();
        let address = device_name(path);
        write_file(&format!("{path}/driver_override"), value, host)?;
        if driver_of(path, host).as_deref() != Some(driver.as_str()) {
            if driver_of(path, host).is_some() {
                write_file(&format!("{path}/driver/unbind"), address.as_bytes(), host)?;
            }
            write_file(PCI_DRIVERS_PROBE, address.as_bytes(), host)?;
        }
        let now = driver_of(path, host).unwrap_or_default();
        if now != driver {
            return Err(write_error(path, host)(std::io::Error::other(format!(
                "{address} is on `{now}` after the hand-over, not {driver}"
            ))));
        }
        Ok(Outcome::Made)
    }

    fn restore(&self, path: &str, _new: &str, original: &[u8], host: &Host) -> Result<(), HostChangeError> {
        let address = device_name(path);
        // A newline clears the override (sysfs-bus-pci).
        write_file(&format!("{path}/driver_override"), b"\n", host)?;
        let original = String::from_utf8_lossy(original).trim().to_string();
        if driver_of(path, host).is_some_and(|d| d != original) {
            write_file(&format!("{path}/driver/unbind"), address.as_bytes(), host)?;
        }
        if !original.is_empty() && driver_of(path, host).is_none() {
            write_file(PCI_DRIVERS_PROBE, address.as_bytes(), host)?;
        }
        let now = driver_of(path, host).unwrap_or_default();
        if now != original {
            return Err(write_error(path, host)(std::io::Error::other(format!(
                "{address} did not return to `{original}` (it is on `{now}`)"
            ))));
        }
        Ok(())
    }

    fn shell(&self, action: &HostAction) -> String {
        let (path, address) = (shell(&action.path), shell(device_name(&action.path)));
        format!(
            "echo {new} > {path}/driver_override; echo {address} > {path}/driver/unbind; echo {address} > {PCI_DRIVERS_PROBE}",
            new = shell(&action.new),
        )
    }

    fn undo_text(&self) -> &'static str {
        "override cleared, unbound from vfio-pci, probed back to its driver"
    }
}
