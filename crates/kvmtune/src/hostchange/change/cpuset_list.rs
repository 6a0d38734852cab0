//! A cgroup's `cpuset.cpus` or `cpuset.mems`. The kernel refuses to empty it while tasks are in
//! the cgroup (ENOSPC, kernel/cgroup/cpuset.c `validate_change`), so an empty original cannot
//! be written back then; it is left to the undo that follows (the cgroup removed, or the
//! controller switched off, which takes the file with it).

use super::{Change, HostChangeError, Outcome, write_error, write_file};
use crate::host::Host;

pub struct CpusetList;

impl Change for CpusetList {
    fn allowed(&self, path: &str, _new: &str, _original: &[u8]) -> Result<(), String> {
        super::allowed_in(
            &["/sys/fs/cgroup/**/cpuset.cpus", "/sys/fs/cgroup/**/cpuset.mems"],
            path,
            "a cgroup's cpuset.cpus or cpuset.mems",
        )
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        write_file(path, value, host).map(|()| Outcome::Made)
    }

    fn restore(&self, path: &str, _new: &str, original: &[u8], host: &Host) -> Result<(), HostChangeError> {
        match host.fs.write(path, original) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && original.trim_ascii().is_empty() => Ok(()),
            Err(e) => Err(write_error(path, host)(e)),
        }
    }
}
