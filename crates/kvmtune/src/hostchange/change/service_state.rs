//! Whether the systemd unit `path` runs: `active` or `inactive` (its `ActiveState`), made by
//! `systemctl start` or `stop`. The display manager, stopped for a single-GPU hand-over and
//! started again at release. Anything but `active` (inactive, failed, deactivating) is stopped.

use super::{Change, HostAction, HostChangeError, Outcome, old_text, read_error, write_error};
use crate::host::Host;
use crate::values::escape::shell;

pub struct ServiceState;

impl Change for ServiceState {
    fn allowed(&self, path: &str, new: &str, _original: &[u8]) -> Result<(), String> {
        if path != super::allowed::DISPLAY_MANAGER {
            return Err("not the display manager".to_string());
        }
        match new {
            "inactive" | "active" => Ok(()),
            other => Err(format!("`{}` is not a unit state", other.escape_debug())),
        }
    }

    fn read_original(&self, path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        let state = host.systemd.property(path, "ActiveState").map_err(read_error(path, host))?;
        Ok(Some(state.trim().as_bytes().to_vec()))
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        let result = match String::from_utf8_lossy(value).trim() {
            "active" => host.systemd.start(path),
            _ => host.systemd.stop(path),
        };
        result.map_err(write_error(path, host))?;
        Ok(Outcome::Made)
    }

    fn describe(&self, action: &HostAction) -> String {
        format!("systemd unit {}: {} -> {}", action.path, old_text(action), action.new)
    }

    fn shell(&self, action: &HostAction) -> String {
        let verb = if action.new == "active" { "start" } else { "stop" };
        format!("systemctl {verb} {}", shell(&action.path))
    }

    fn undo_text(&self) -> &'static str {
        "started or stopped again as it was"
    }
}
