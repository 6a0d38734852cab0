//! A property of the systemd unit `path`, at runtime (`systemctl set-property --runtime`, gone
//! with the boot), as systemd owns the cgroups of its units (../shared/host-changes.md
//! section 2): `AllowedCPUs=` of the slices host tasks run in.

use super::{Change, HostAction, HostChangeError, Outcome, old_text, read_error, write_error};
use crate::host::Host;
use crate::values::escape::shell;

pub struct SystemdProperty {
    pub property: String,
}

impl Change for SystemdProperty {
    fn allowed(&self, path: &str, _new: &str, _original: &[u8]) -> Result<(), String> {
        if !super::allowed::SYSTEMD_HOST_UNITS.contains(&path) {
            return Err("not a unit that runs the host's tasks".to_string());
        }
        match self.property == super::allowed::SYSTEMD_PROPERTY {
            true => Ok(()),
            false => Err(format!("`{}` is not the property kvmtune changes", self.property.escape_debug())),
        }
    }

    fn read_original(&self, path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        let value = host.systemd.property(path, &self.property).map_err(read_error(path, host))?;
        Ok(Some(value.trim().as_bytes().to_vec()))
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        let value = String::from_utf8_lossy(value).trim().to_string();
        if value.is_empty() {
            // An empty AllowedCPUs= on the last unit that had one makes systemd turn the cpuset
            // controller off below the root, and the kernel then leaves every task's affinity
            // at the confined CPUs (seen in the systemd lab: a release after a prepare killed
            // midway left system.slice's tasks on 0-1 of 0-3). Every online CPU first widens
            // the tasks back; the empty value then leaves them there.
            let online = host.fs.read("/sys/devices/system/cpu/online").map_err(read_error(path, host))?;
            let online = String::from_utf8_lossy(&online).trim().to_string();
            host.systemd
                .set_runtime_property(path, &self.property, &online)
                .map_err(write_error(path, host))?;
        }
        host.systemd.set_runtime_property(path, &self.property, &value).map_err(write_error(path, host))?;
        Ok(Outcome::Made)
    }

    fn describe(&self, action: &HostAction) -> String {
        format!("systemd {} {}: {} -> {}", action.path, self.property, old_text(action), action.new)
    }

    fn shell(&self, action: &HostAction) -> String {
        format!(
            "systemctl set-property --runtime {} {}",
            shell(&action.path),
            shell(&format!("{}={}", self.property, action.new))
        )
    }
}
