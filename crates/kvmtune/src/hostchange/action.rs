//! What a host change does, as data: [`HostAction`]. Producing one writes nothing; [`apply`]
//! writes it through a [`HostWriter`] and hands back the original bytes, and [`undo`] puts
//! those back exactly.

use serde::Serialize;

use crate::hostchange::writer::HostWriter;

/// One write to one host file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostAction {
    /// The file on the host, absolute (`/sys/devices/system/node/node1/hugepages/...`).
    pub path: String,
    /// What the file holds now, where the host facts know it; `None` when it is read only when
    /// the action is applied.
    pub old: Option<String>,
    /// What is written.
    pub new: String,
    /// Why, in a few words.
    pub why: String,
}

impl HostAction {
    /// `path: old -> new`, for plans and dry runs.
    pub fn describe(&self) -> String {
        format!("{}: {} -> {}", self.path, self.old.as_deref().unwrap_or("(read at apply)"), self.new)
    }

    /// The same change as a shell command a user can run by hand.
    pub fn shell(&self) -> String {
        format!("echo {} > {}", self.new, self.path)
    }

    /// Reserve `pages` hugepages of `page_size_kib` KiB, on one NUMA node or host-wide
    /// (kernel Documentation/admin-guide/mm/hugetlbpage.rst: `nr_hugepages` per size and node).
    pub fn reserve_hugepages(page_size_kib: u64, pages: u64, node: Option<u32>, old: Option<u64>) -> Self {
        let path = match node {
            Some(node) => {
                format!(
                    "/sys/devices/system/node/node{node}/hugepages/hugepages-{page_size_kib}kB/nr_hugepages"
                )
            }
            None => format!("/sys/kernel/mm/hugepages/hugepages-{page_size_kib}kB/nr_hugepages"),
        };
        let where_ = node.map_or(String::new(), |n| format!(" on node {n}"));
        HostAction {
            path,
            old: old.map(|n| n.to_string()),
            new: pages.to_string(),
            why: format!("reserve {pages} hugepages of {page_size_kib} KiB{where_} for the VM's memory"),
        }
    }

    /// Switch one CPU's cpufreq governor (kernel Documentation/admin-guide/pm/cpufreq.rst:
    /// `scaling_governor` in each CPU's `cpufreq` directory, shared by its policy).
    pub fn set_governor(cpu: u32, old: Option<&str>, governor: &str) -> Self {
        HostAction {
            path: format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
            old: old.map(str::to_string),
            new: governor.to_string(),
            why: format!("CPU {cpu} runs the {governor} governor"),
        }
    }
}

/// An action that was written, with what the file held before: enough to undo it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub action: HostAction,
    pub original: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostChangeError {
    #[error("cannot read {path} on {host}: {source}")]
    Read {
        path: String,
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path} on {host}: {source}")]
    Write {
        path: String,
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// The host changed since the action was planned: writing would undo someone else's change.
    #[error("{path} holds `{found}`, not `{expected}` as planned; nothing was written")]
    Stale { path: String, expected: String, found: String },
    /// The journal could not record a change, so it was not made.
    #[error("not written, the journal failed: {0}")]
    Journal(String),
}

/// Reads the file's original bytes, checks them against the planned old value, then writes the
/// new value. The original comes back so that a journal can keep it.
pub fn apply(action: &HostAction, writer: &dyn HostWriter) -> Result<Applied, HostChangeError> {
    let original = read_original(action, writer)?;
    write_new(action, original, writer)
}

/// The file's bytes now, checked against the planned old value: the first half of [`apply`],
/// after which a journal records the original before anything is written.
pub fn read_original(action: &HostAction, writer: &dyn HostWriter) -> Result<Vec<u8>, HostChangeError> {
    let original = writer.read(&action.path).map_err(|source| HostChangeError::Read {
        path: action.path.clone(),
        host: writer.describe(),
        source,
    })?;
    if let Some(expected) = &action.old {
        let found = String::from_utf8_lossy(&original).trim().to_string();
        if &found != expected {
            return Err(HostChangeError::Stale {
                path: action.path.clone(),
                expected: expected.clone(),
                found,
            });
        }
    }
    Ok(original)
}

/// Writes the new value, once `original` (from [`read_original`]) is safe: the second half of
/// [`apply`].
pub fn write_new(
    action: &HostAction,
    original: Vec<u8>,
    writer: &dyn HostWriter,
) -> Result<Applied, HostChangeError> {
    writer.write(&action.path, action.new.as_bytes()).map_err(|source| HostChangeError::Write {
        path: action.path.clone(),
        host: writer.describe(),
        source,
    })?;
    Ok(Applied { action: action.clone(), original })
}

/// Writes the original bytes back.
pub fn undo(applied: &Applied, writer: &dyn HostWriter) -> Result<(), HostChangeError> {
    restore(&applied.action.path, &applied.original, writer)
}

/// Gives `path` back the bytes it held.
pub fn restore(path: &str, original: &[u8], writer: &dyn HostWriter) -> Result<(), HostChangeError> {
    writer.write(path, original).map_err(|source| HostChangeError::Write {
        path: path.to_string(),
        host: writer.describe(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostchange::writer::RootedHostWriter;

    fn host_with(path: &str, content: &str) -> (tempfile::TempDir, RootedHostWriter) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        let writer = RootedHostWriter::new(dir.path());
        (dir, writer)
    }

    #[test]
    fn apply_then_undo_restores_the_bytes() {
        let action = HostAction::reserve_hugepages(2048, 8192, Some(1), Some(0));
        assert_eq!(action.path, "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages");
        let (_dir, writer) = host_with(&action.path, "0\n");
        let applied = apply(&action, &writer).unwrap();
        assert_eq!(writer.read(&action.path).unwrap(), b"8192");
        undo(&applied, &writer).unwrap();
        assert_eq!(writer.read(&action.path).unwrap(), b"0\n");
    }

    #[test]
    fn a_stale_plan_writes_nothing() {
        let action = HostAction::set_governor(3, Some("powersave"), "performance");
        let (_dir, writer) = host_with(&action.path, "schedutil\n");
        let error = apply(&action, &writer).unwrap_err();
        assert!(matches!(error, HostChangeError::Stale { .. }), "{error}");
        assert_eq!(writer.read(&action.path).unwrap(), b"schedutil\n");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let (_dir, writer) = host_with("/sys/other", "x");
        let error = apply(&HostAction::set_governor(0, None, "performance"), &writer).unwrap_err();
        assert!(
            error.to_string().contains("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "{error}"
        );
    }
}
