//! A plain file write: `new` written to the file, undone by writing the original bytes back.

use super::{Change, HostChangeError, Outcome, write_file};
use crate::host::Host;

pub struct Write;

impl Change for Write {
    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        write_file(path, value, host).map(|()| Outcome::Made)
    }
}
