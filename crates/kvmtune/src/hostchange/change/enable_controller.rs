//! `cgroup.subtree_control`: `new` is `+controller`. The list a read shows is not a valid
//! write, so undo writes `-controller`, and only when the original did not list it
//! (admin-guide/cgroup-v2.rst, "Enabling and Disabling").

use super::{Change, HostChangeError, Outcome, write_file};
use crate::host::Host;

pub struct EnableController;

impl Change for EnableController {
    fn allowed(&self, path: &str, new: &str, _original: &[u8]) -> Result<(), String> {
        super::allowed_in(&["/sys/fs/cgroup/**/cgroup.subtree_control"], path, "a cgroup's subtree_control")?;
        match new.strip_prefix('+').is_some_and(super::allowed::plain_name) {
            true => Ok(()),
            false => Err(format!("`{}` is not a controller to enable", new.escape_debug())),
        }
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        write_file(path, value, host).map(|()| Outcome::Made)
    }

    fn restore(&self, path: &str, new: &str, original: &[u8], host: &Host) -> Result<(), HostChangeError> {
        let controller = new.trim().trim_start_matches('+');
        let had_it = String::from_utf8_lossy(original).split_whitespace().any(|c| c == controller);
        if !had_it {
            write_file(path, format!("-{controller}").as_bytes(), host)?;
        }
        Ok(())
    }

    fn undo_text(&self) -> &'static str {
        "switched off again if it was off"
    }
}
