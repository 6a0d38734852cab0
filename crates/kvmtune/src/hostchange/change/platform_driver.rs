//! The driver of the platform device `path` (`/sys/bus/platform/devices/NAME`), by name; empty
//! for none. Made by the driver's `unbind` and `bind` files (sysfs-bus-platform): the firmware
//! framebuffer (efi-framebuffer, simple-framebuffer, vesa-framebuffer) that holds the boot GPU's
//! memory until it lets go.

use super::{
    Change, HostAction, HostChangeError, Outcome, device_name, driver_of, old_text, original_driver,
    write_file,
};
use crate::host::Host;
use crate::values::escape::shell;

pub struct PlatformDriver;

impl Change for PlatformDriver {
    fn allowed(&self, path: &str, _new: &str, original: &[u8]) -> Result<(), String> {
        let devices: Vec<String> = super::allowed::FIRMWARE_FRAMEBUFFERS
            .iter()
            .map(|device| format!("/sys/bus/platform/devices/{device}"))
            .collect();
        if !devices.iter().any(|device| device == path) {
            return Err("not a firmware framebuffer".to_string());
        }
        super::allowed_driver(original)
    }

    fn read_original(&self, path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        original_driver(path, host)
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        let driver = String::from_utf8_lossy(value).trim().to_string();
        let name = device_name(path);
        let current = driver_of(path, host);
        if current.as_deref() == Some(driver.as_str()) {
            return Ok(Outcome::Made);
        }
        if current.is_some() {
            write_file(&format!("{path}/driver/unbind"), name.as_bytes(), host)?;
        }
        if !driver.is_empty() {
            write_file(&format!("/sys/bus/platform/drivers/{driver}/bind"), name.as_bytes(), host)?;
        }
        Ok(Outcome::Made)
    }

    fn describe(&self, action: &HostAction) -> String {
        let new = if action.new.is_empty() { "(no driver)" } else { &action.new };
        format!("{} driver: {} -> {new}", action.path, old_text(action))
    }

    fn shell(&self, action: &HostAction) -> String {
        let name = shell(device_name(&action.path));
        match action.new.as_str() {
            "" => format!("echo {name} > {}/driver/unbind", shell(&action.path)),
            driver => format!("echo {name} > {}", shell(&format!("/sys/bus/platform/drivers/{driver}/bind"))),
        }
    }

    fn undo_text(&self) -> &'static str {
        "bound to its driver again"
    }
}
