//! irqbalance's banned CPUs, through its control socket (`path`): `settings cpus LIST`, and at
//! undo the list it banned before, or `NULL` for none (irqbalance.c `sock_handle`), so that it
//! does not move IRQs back onto a VM's CPUs.

use super::{Change, HostAction, HostChangeError, Outcome, old_text, read_error, write_error};
use crate::host::Host;
use crate::values::CpuSet;
use crate::values::escape::shell;

pub struct IrqbalanceBan;

/// The banned CPUs in irqbalance's `setup` answer (`... BANNED <hex mask>`); none when absent.
pub fn irqbalance_banned(setup: &str) -> CpuSet {
    let mut words = setup.split_whitespace();
    while let Some(word) = words.next() {
        if word == "BANNED" {
            return words.next().and_then(|mask| CpuSet::parse_mask(mask).ok()).unwrap_or_default();
        }
    }
    CpuSet::new()
}

impl Change for IrqbalanceBan {
    fn allowed(&self, path: &str, _new: &str, _original: &[u8]) -> Result<(), String> {
        super::allowed_in(super::allowed::IRQBALANCE_SOCKETS, path, "irqbalance's control socket")
    }

    fn read_original(&self, path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        let setup = host.irqbalance.request(path, b"setup").map_err(read_error(path, host))?;
        Ok(Some(irqbalance_banned(&String::from_utf8_lossy(&setup)).to_string().into_bytes()))
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        let text = String::from_utf8_lossy(value).trim().to_string();
        let list = if text.is_empty() { "NULL".to_string() } else { text };
        host.irqbalance
            .request(path, format!("settings cpus {list}").as_bytes())
            .map_err(write_error(path, host))?;
        Ok(Outcome::Made)
    }

    fn describe(&self, action: &HostAction) -> String {
        format!("irqbalance ({}) banned CPUs: {} -> {}", action.path, old_text(action), action.new)
    }

    fn shell(&self, action: &HostAction) -> String {
        format!(
            "echo {} | socat - {}",
            shell(&format!("settings cpus {}", action.new)),
            shell(&format!("UNIX-CONNECT:{}", action.path))
        )
    }
}
