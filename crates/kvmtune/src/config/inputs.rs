//! Which files `check` reads when it is given paths: each file as named, and in each directory,
//! recursively, the files that look like VM configs by their name (libvirt `*.xml`, Proxmox
//! `*.conf`, QEMU launch scripts and argument files). Their format is then told by content, as
//! for a single file.

use std::path::{Path, PathBuf};

/// A file to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    /// Named on the command line (a failure to read it is a bad input), rather than found in a
    /// directory (where a file that is no VM config is passed over).
    pub named: bool,
}

/// What the paths held, and what could not be looked at.
#[derive(Debug, Default)]
pub struct Discovered {
    /// In the order given; inside a directory, sorted by path.
    pub inputs: Vec<Input>,
    /// Paths that do not exist or directories that cannot be listed, with the reason.
    pub problems: Vec<String>,
}

/// File names a directory walk takes as VM configs.
pub fn looks_like_config(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    [".xml", ".conf", ".sh", ".args", ".profile", ".cmdline", ".cmdline.txt"]
        .iter()
        .any(|end| name.ends_with(end))
}

pub fn discover(paths: &[PathBuf]) -> Discovered {
    let mut found = Discovered::default();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut found);
        } else if path.exists() {
            found.inputs.push(Input { path: path.clone(), named: true });
        } else {
            found.problems.push(format!("{}: no such file or directory", path.display()));
        }
    }
    found
}

fn walk(dir: &Path, found: &mut Discovered) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            found.problems.push(format!("{}: {error}", dir.display()));
            return;
        }
    };
    let mut entries: Vec<(PathBuf, std::fs::FileType)> =
        entries.filter_map(|e| e.ok()).filter_map(|e| Some((e.path(), e.file_type().ok()?))).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, kind) in entries {
        // The entry itself, not what a link points to: a link to a directory is not walked
        // (`a -> .` would never end), a link to a regular file is read as that file.
        if kind.is_dir() {
            walk(&path, found);
        } else if looks_like_config(&path) && (kind.is_file() || (kind.is_symlink() && path.is_file())) {
            found.inputs.push(Input { path, named: false });
        }
    }
}

/// The most kvmtune reads of one input file: far beyond any VM config or exit table.
pub const MAX_INPUT_BYTES: u64 = 16 << 20;

/// An input file's text (a VM config, an exit table, host facts as JSON). Opened without blocking (a FIFO named `vm.xml` would wait for a
/// writer), refused unless it is a regular file, and read up to [`MAX_INPUT_BYTES`].
pub fn read_input(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(format!("{shown} is {} bytes; an input is at most {MAX_INPUT_BYTES}", meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!("{shown} is larger than {MAX_INPUT_BYTES} bytes, the most an input is"));
    }
    String::from_utf8(bytes).map_err(|e| format!("cannot read {shown}: not UTF-8 text ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_walked_for_config_names_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        for name in ["a.xml", "b.conf", "notes.md", "sub/run.sh", "sub/vm.cmdline.txt", "sub/x.cmd"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let found = discover(&[dir.path().to_path_buf(), dir.path().join("missing.xml")]);
        let names: Vec<String> = found
            .inputs
            .iter()
            .map(|i| i.path.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.xml", "b.conf", "sub/run.sh", "sub/vm.cmdline.txt"]);
        assert!(found.inputs.iter().all(|i| !i.named));
        assert_eq!(found.problems.len(), 1);
    }

    #[test]
    fn links_to_directories_fifos_and_huge_files_are_not_followed_or_read() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("real.xml"), "<domain/>").unwrap();
        std::os::unix::fs::symlink("real.xml", dir.path().join("linked.xml")).unwrap();
        let fifo = dir.path().join("pipe.xml");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let found = discover(&[dir.path().to_path_buf()]);
        let names: Vec<String> =
            found.inputs.iter().map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["linked.xml", "real.xml"]);
        // Named on the command line: refused, without waiting for a writer.
        assert_eq!(read_input(&fifo).unwrap_err(), format!("{} is not a regular file", fifo.display()));
        let huge = dir.path().join("huge.xml");
        std::fs::File::create(&huge).unwrap().set_len(MAX_INPUT_BYTES + 1).unwrap();
        assert!(read_input(&huge).unwrap_err().contains("an input is at most"));
        assert_eq!(read_input(&dir.path().join("real.xml")).unwrap(), "<domain/>");
    }
}
