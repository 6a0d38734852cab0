//! A directory made: a cgroup, which the kernel fills with its interface files. Undone by
//! moving any process still in it (born there since) to the parent cgroup, then removing it.

use super::move_process::MoveProcess;
use super::{Change, HostAction, HostChangeError, Outcome, write_error};
use crate::host::Host;
use crate::values::escape::shell;

pub struct CreateDir;

impl Change for CreateDir {
    fn allowed(&self, path: &str, _new: &str, _original: &[u8]) -> Result<(), String> {
        super::allowed_in(super::allowed::CGROUP_FILES, path, "a cgroup")
    }

    fn read_original(&self, _path: &str, _host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        Ok(Some(Vec::new()))
    }

    fn set(&self, path: &str, _value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        host.fs.make_dir(path).map_err(write_error(path, host))?;
        Ok(Outcome::Made)
    }

    fn restore(&self, path: &str, _new: &str, _original: &[u8], host: &Host) -> Result<(), HostChangeError> {
        if !host.fs.is_dir(path) {
            return Ok(());
        }
        let parent =
            std::path::Path::new(path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let procs = format!("{path}/cgroup.procs");
        // A few rounds: a process may fork while its siblings are moved.
        for _ in 0..5 {
            let Ok(left) = host.fs.read(&procs) else { break };
            let left: Vec<u32> =
                String::from_utf8_lossy(&left).lines().filter_map(|l| l.trim().parse().ok()).collect();
            if left.is_empty() {
                break;
            }
            for pid in left {
                MoveProcess { pid }.set(
                    &format!("{parent}/cgroup.procs"),
                    pid.to_string().as_bytes(),
                    host,
                )?;
            }
        }
        match host.fs.remove_dir(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(write_error(path, host)(e)),
        }
    }

    fn describe(&self, action: &HostAction) -> String {
        format!("mkdir {}", action.path)
    }

    fn shell(&self, action: &HostAction) -> String {
        format!("mkdir {}", shell(&action.path))
    }

    fn undo_text(&self) -> &'static str {
        "removed"
    }
}
