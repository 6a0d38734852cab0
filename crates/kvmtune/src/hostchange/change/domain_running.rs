//! Whether a libvirt domain runs: `running` or `shut off`. An experiment with `--restart-ok`
//! shuts down the domain it found running (`virsh shutdown`, the guest asked through ACPI, and
//! waited for) before its first variant, and starts it again at the end. `path` is
//! `libvirt:URI#DOMAIN`, as for [`super::domain_definition`].

use std::time::{Duration, Instant};

use super::{Change, HostAction, HostChangeError, Outcome, failed_write as failed};
use crate::host::Host;
use crate::host::libvirt::Libvirt;
use crate::values::escape::shell;

/// How long a guest may take to shut down when asked before kvmtune gives up (and changes
/// nothing more): a Windows guest installing updates can take minutes.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(300);

pub struct DomainRunning;

impl Change for DomainRunning {
    fn allowed(&self, path: &str, new: &str, _original: &[u8]) -> Result<(), String> {
        super::allowed::domain_target(path)?;
        match new {
            "running" | "shut off" => Ok(()),
            other => Err(format!("`{}` is not a domain state", other.escape_debug())),
        }
    }

    fn read_original(&self, path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        let (uri, domain) = super::allowed::domain_target(path).map_err(|why| failed(path, host, why))?;
        let active = Libvirt::new(uri).is_active(domain).map_err(|e| HostChangeError::Read {
            path: path.to_string(),
            host: host.describe(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Some(if active { b"running".to_vec() } else { b"shut off".to_vec() }))
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        let (uri, domain) = super::allowed::domain_target(path).map_err(|why| failed(path, host, why))?;
        let libvirt = Libvirt::new(uri);
        let active = libvirt.is_active(domain).map_err(|e| failed(path, host, e))?;
        match (String::from_utf8_lossy(value).trim(), active) {
            ("running", false) => libvirt.start(domain).map_err(|e| failed(path, host, e))?,
            ("shut off", true) => {
                libvirt.shutdown(domain).map_err(|e| failed(path, host, e))?;
                let deadline = Instant::now() + SHUTDOWN_WAIT;
                while libvirt.is_active(domain).map_err(|e| failed(path, host, e))? {
                    if Instant::now() >= deadline {
                        return Err(failed(
                            path,
                            host,
                            format!(
                                "the guest did not shut down within {} s when asked",
                                SHUTDOWN_WAIT.as_secs()
                            ),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            _ => {}
        }
        Ok(Outcome::Made)
    }

    fn describe(&self, action: &HostAction) -> String {
        format!(
            "{}: {} for the experiment",
            action.path,
            if action.new == "running" { "started" } else { "shut down" }
        )
    }

    fn shell(&self, action: &HostAction) -> String {
        let (uri, domain) = super::allowed::domain_target(&action.path).unwrap_or((None, ""));
        let connect = uri.map(|u| format!(" -c {}", shell(u))).unwrap_or_default();
        let verb = if action.new == "running" { "start" } else { "shutdown" };
        format!("virsh{connect} {verb} {}", shell(domain))
    }

    fn undo_text(&self) -> &'static str {
        "started again, as it was running before"
    }
}
