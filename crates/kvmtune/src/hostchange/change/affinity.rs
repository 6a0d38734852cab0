//! Thread `tid`'s CPUs (`sched_setaffinity`): a kernel thread that can move, off the VM's CPUs.
//! `new` is a CPU list, and so is the original. EINVAL (a thread bound to its CPU) is a refusal
//! that is listed; a thread that has exited needs nothing.

use super::{Change, HostAction, HostChangeError, Outcome, is_gone, old_text, read_error, write_error};
use crate::host::Host;
use crate::values::CpuSet;

pub struct Affinity {
    pub tid: u32,
}

impl Change for Affinity {
    fn allowed(&self, path: &str, _new: &str, _original: &[u8]) -> Result<(), String> {
        match path == format!("/proc/{}", self.tid) {
            true => Ok(()),
            false => Err(format!("not /proc/{}, the thread it names", self.tid)),
        }
    }

    fn read_original(&self, path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        match host.affinity.get(self.tid) {
            Ok(cpus) => Ok(Some(cpus.to_string().into_bytes())),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(read_error(path, host)(e)),
        }
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        let text = String::from_utf8_lossy(value);
        let cpus =
            CpuSet::parse_list(text.trim()).map_err(|e| write_error(path, host)(std::io::Error::other(e)))?;
        match host.affinity.set(self.tid, &cpus) {
            Ok(()) => Ok(Outcome::Made),
            Err(e) if is_gone(&e) => Ok(Outcome::Made),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Outcome::Refused(e.to_string())),
            Err(e) => Err(write_error(path, host)(e)),
        }
    }

    fn describe(&self, action: &HostAction) -> String {
        format!("thread {} CPUs: {} -> {}", self.tid, old_text(action), action.new)
    }

    fn shell(&self, action: &HostAction) -> String {
        format!("taskset -pc {} {}", crate::values::escape::shell(&action.new), self.tid)
    }

    fn key(&self, _path: &str) -> String {
        format!("tid:{}", self.tid)
    }
}
