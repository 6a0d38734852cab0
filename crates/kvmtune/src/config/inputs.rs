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
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, found);
        } else if looks_like_config(&path) {
            found.inputs.push(Input { path, named: false });
        }
    }
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
}
