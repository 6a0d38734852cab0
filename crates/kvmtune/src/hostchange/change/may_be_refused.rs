//! A write the kernel may refuse for good reasons: a managed IRQ (EIO before Linux 6.12, EPERM
//! since), an IRQ whose chip cannot move (EINVAL). The refusal is recorded and listed, not
//! failed on (../shared/host-changes.md section 3; kernel/irq/proc.c `write_irq_affinity`).

use super::{Change, HostChangeError, Outcome, read_error, write_error};
use crate::host::Host;

pub struct MayBeRefused;

impl Change for MayBeRefused {
    fn allowed(&self, path: &str, _new: &str, _original: &[u8]) -> Result<(), String> {
        super::allowed_in(super::allowed::IRQ_MASKS, path, "an IRQ's mask")
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        match host.fs.write(path, value) {
            Ok(()) => Ok(Outcome::Made),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EPERM | libc::EINVAL)) => {
                Ok(Outcome::Refused(e.to_string()))
            }
            Err(e) => Err(write_error(path, host)(e)),
        }
    }

    /// A write the kernel refused changed nothing; when the journal could not record the
    /// refusal (killed just after it), the file still holds its original.
    fn restore(&self, path: &str, _new: &str, original: &[u8], host: &Host) -> Result<(), HostChangeError> {
        if let Outcome::Refused(reason) = self.set(path, original, host)? {
            let now = host.fs.read(path).map_err(read_error(path, host))?;
            if now.trim_ascii() != original.trim_ascii() {
                return Err(write_error(path, host)(std::io::Error::other(format!(
                    "the kernel refused the original value: {reason}"
                ))));
            }
        }
        Ok(())
    }
}
