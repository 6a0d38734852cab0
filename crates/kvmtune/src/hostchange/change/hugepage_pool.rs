//! A hugepage pool size (`nr_hugepages`): written, read back; when short, memory is compacted
//! and the write tried once more; still short is an error, since the kernel's partial
//! allocation is silent (admin-guide/mm/hugetlbpage.rst; ../shared/host-changes.md section 5).
//! Undone by writing the original count back.

use super::{Change, HostChangeError, Outcome, read_error, write_file};
use crate::host::Host;

/// Where the kernel compacts memory on request (admin-guide/sysctl/vm.rst).
pub const COMPACT_MEMORY: &str = "/proc/sys/vm/compact_memory";

pub struct HugepagePool;

impl Change for HugepagePool {
    fn allowed(&self, path: &str, _new: &str, _original: &[u8]) -> Result<(), String> {
        super::allowed_in(super::allowed::HUGEPAGE_POOLS, path, "a hugepage pool")
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        let asked = String::from_utf8_lossy(value).trim().to_string();
        let read_back = || host.fs.read_trimmed(path).map_err(read_error(path, host));
        write_file(path, value, host)?;
        if read_back()? != asked {
            // Free memory is there but in pieces: compact, then ask again (vm.rst).
            write_file(COMPACT_MEMORY, b"1", host)?;
            write_file(path, value, host)?;
            let got = read_back()?;
            if got != asked {
                return Err(HostChangeError::ShortAllocation { path: path.to_string(), asked, got });
            }
        }
        Ok(Outcome::Made)
    }

    /// The original count written back as it was, without the read-back: giving pages back
    /// never falls short.
    fn restore(&self, path: &str, _new: &str, original: &[u8], host: &Host) -> Result<(), HostChangeError> {
        write_file(path, original, host)
    }
}
