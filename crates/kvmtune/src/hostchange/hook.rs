//! The libvirt hook: `kvmtune hook install` puts one executable into libvirt's `qemu.d`, which
//! libvirt runs for every domain and operation with the domain XML on stdin (libvirt
//! docs/hooks.rst; ../shared/host-changes.md section 7). It acts only on a domain whose
//! `<metadata>` holds `<kvmtune:host>` ([`crate::config::host_request`]):
//!
//! - `prepare begin` (before libvirt sets anything up): `host prepare`, then `vfio bind`, each
//!   journaled as by hand, marked as the hook's ([`HOOK_ORIGIN`]). A failure undoes both and
//!   exits non-zero, so libvirt does not start the VM and names the reason.
//! - `release end` (after every resource is freed): both undone, the devices first.
//! - `reconnect begin` (the daemon restarted while VMs ran): the hook's journals of domains that
//!   no longer run are undone.
//!
//! It never calls back into libvirt, where a deadlock is likely (hooks.rst): the domain comes on
//! stdin, and whether another domain still runs is read from libvirt's pid files.

use std::path::{Path, PathBuf};

use crate::config::model::{HostRequest, VmConfig};
use crate::host::Host;
use crate::hostchange::prepare::{self, ConfigNeeds, PrepareRequest};

/// Where libvirt looks for per-driver hook executables (since 6.5), under the root.
pub const HOOK_DIR: &str = "etc/libvirt/hooks/qemu.d";
/// The hook's file name in [`HOOK_DIR`].
pub const HOOK_NAME: &str = "kvmtune";
/// The line that marks the file as kvmtune's: install and uninstall touch no other file.
pub const MARKER: &str = "# kvmtune libvirt hook: written by `kvmtune hook install`";
/// How the hook's journals are marked ([`crate::hostchange::Journal::started_by`]).
pub const HOOK_ORIGIN: &str = "libvirt-hook";
/// libvirt's QEMU driver state: `<domain>.pid` for each running domain.
pub const LIBVIRT_QEMU_STATE: &str = "/run/libvirt/qemu";

/// What libvirt asked the hook to do: `qemu.d/kvmtune DOMAIN OPERATION SUBOPERATION EXTRA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// `prepare begin`: the domain is about to start.
    Prepare,
    /// `release end`: the domain has stopped and libvirt freed its resources.
    Release,
    /// `reconnect begin`: the daemon restarted and found this domain running.
    Reconnect,
    /// Anything else (`start`, `started`, `stopped`, `migrate`, `restore`, `attach`): nothing
    /// to do.
    Other,
}

impl HookEvent {
    pub fn of(operation: &str, sub_operation: &str) -> Self {
        match (operation, sub_operation) {
            ("prepare", "begin") => HookEvent::Prepare,
            ("release", "end") => HookEvent::Release,
            ("reconnect", "begin") => HookEvent::Reconnect,
            _ => HookEvent::Other,
        }
    }
}

/// Why the hook is not installed or removed; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "{0} exists and was not written by kvmtune (no `{MARKER}` line); move it away first, kvmtune does not overwrite it"
    )]
    Foreign(PathBuf),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// There was no hook: libvirtd sees it only after a restart.
    Created,
    /// kvmtune's hook was there; it now runs this binary.
    Updated,
}

/// The executable libvirt runs: a shell script that hands over to `binary`.
pub fn script(binary: &Path) -> String {
    let quoted = crate::values::escape::shell_quoted(&binary.to_string_lossy());
    format!(
        "#!/bin/sh\n{MARKER}; `kvmtune hook uninstall` removes it.\n\
         # libvirt runs it for every domain and operation with the domain XML on stdin; kvmtune acts\n\
         # only on domains whose <metadata> holds <kvmtune:host>, and never calls back into libvirt.\n\
         exec {quoted} hook run \"$@\"\n"
    )
}

pub fn hook_path(root: &Path) -> PathBuf {
    root.join(HOOK_DIR).join(HOOK_NAME)
}

fn ours(path: &Path) -> Result<Option<bool>, InstallError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).lines().any(|l| l.starts_with(MARKER)))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::Io { what: "read", path: path.to_path_buf(), source }),
    }
}

/// Writes the hook under `root` (atomically, mode 0755), unless a file not ours is there.
pub fn install(root: &Path, binary: &Path) -> Result<Installed, InstallError> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = hook_path(root);
    let installed = match ours(&path)? {
        Some(false) => return Err(InstallError::Foreign(path)),
        Some(true) => Installed::Updated,
        None => Installed::Created,
    };
    let dir = path.parent().expect("the hook path has a directory");
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { what, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    // Written beside qemu.d, not in it: libvirt runs whatever is executable in qemu.d, and a
    // half-made file must never be run.
    let temporary = dir.parent().unwrap_or(dir).join(format!(".{HOOK_NAME}-hook.new"));
    std::fs::write(&temporary, script(binary)).map_err(io("write", &temporary))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o755))
        .map_err(io("make executable", &temporary))?;
    std::fs::rename(&temporary, &path).map_err(io("write", &path))?;
    Ok(installed)
}

/// Removes kvmtune's hook under `root`: `Ok(false)` when none was there.
pub fn uninstall(root: &Path) -> Result<bool, InstallError> {
    let path = hook_path(root);
    match ours(&path)? {
        None => Ok(false),
        Some(false) => Err(InstallError::Foreign(path)),
        Some(true) => {
            std::fs::remove_file(&path).map_err(|source| InstallError::Io {
                what: "remove",
                path,
                source,
            })?;
            Ok(true)
        }
    }
}

/// The `host prepare` a domain's request asks for, or `None` when it asks for nothing of the
/// host's CPUs, governor or hugepages (devices only, or nothing).
pub fn prepare_request(
    vm: &str,
    config: &VmConfig,
    request: &HostRequest,
    host: &Host,
) -> Result<Option<PrepareRequest>, prepare::Refusal> {
    let asks_cpus = request.isolate.is_some() || request.governor.is_some() || request.epp.is_some();
    if !asks_cpus && request.hugepages.is_none() {
        return Ok(None);
    }
    let needs = ConfigNeeds::of(config, prepare::default_hugepage_kib(host));
    let housekeeping =
        request.isolate.as_ref().and_then(|i| i.housekeeping.as_ref()).map(|h| h.value.clone());
    let vcpus = config.pinning.vcpu_cpus();
    // The emulator and iothreads may share the host's CPUs; vCPUs may not (check's HOOK002).
    let cpus = match &housekeeping {
        Some(housekeeping) => {
            let overlap = vcpus.intersection(housekeeping);
            if !overlap.is_empty() {
                return Err(prepare::Refusal::HousekeepingOverlap {
                    overlap,
                    vm: vcpus,
                    housekeeping: housekeeping.clone(),
                });
            }
            needs.cpus.difference(housekeeping)
        }
        None => needs.cpus,
    };
    Ok(Some(PrepareRequest {
        vm: vm.to_string(),
        cpus,
        housekeeping,
        governor: request.governor.as_ref().map(|g| g.value.clone()),
        epp: request.epp.as_ref().map(|e| e.value.clone()),
        hugepages: if request.hugepages.is_some() { needs.hugepages } else { Vec::new() },
        isolate: request.isolate.is_some(),
        irqs: request.isolate.as_ref().is_some_and(|i| i.irqs),
        vm_pids: Vec::new(),
        self_pid: std::process::id(),
    }))
}

/// Whether libvirt runs `domain` now: its pid file names a live process whose command line
/// carries the domain's name (QEMU's `-name guest=NAME`).
pub fn domain_runs(domain: &str, host: &Host) -> bool {
    let Ok(pid) = host.fs.read_trimmed(&format!("{LIBVIRT_QEMU_STATE}/{domain}.pid")) else { return false };
    let Ok(command_line) = host.fs.read(&format!("/proc/{pid}/cmdline")) else { return false };
    String::from_utf8_lossy(&command_line)
        .split('\0')
        .any(|arg| arg.strip_prefix("guest=").is_some_and(|rest| rest.split(',').next() == Some(domain)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_refuses_a_file_it_did_not_write_and_updates_its_own() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(install(root.path(), Path::new("/usr/bin/kvmtune")).unwrap(), Installed::Created);
        assert_eq!(install(root.path(), Path::new("/opt/it's/kvmtune")).unwrap(), Installed::Updated);
        let text = std::fs::read_to_string(hook_path(root.path())).unwrap();
        assert!(text.contains(r"exec '/opt/it'\''s/kvmtune' hook run"), "{text}");
        assert!(uninstall(root.path()).unwrap());
        assert!(!uninstall(root.path()).unwrap());
        std::fs::write(hook_path(root.path()), "#!/bin/sh\necho mine\n").unwrap();
        assert!(matches!(install(root.path(), Path::new("/k")), Err(InstallError::Foreign(_))));
        assert!(matches!(uninstall(root.path()), Err(InstallError::Foreign(_))));
        assert_eq!(std::fs::read_to_string(hook_path(root.path())).unwrap(), "#!/bin/sh\necho mine\n");
    }

    #[test]
    fn only_prepare_release_and_reconnect_act() {
        assert_eq!(HookEvent::of("prepare", "begin"), HookEvent::Prepare);
        assert_eq!(HookEvent::of("release", "end"), HookEvent::Release);
        assert_eq!(HookEvent::of("reconnect", "begin"), HookEvent::Reconnect);
        for (operation, sub) in
            [("start", "begin"), ("started", "begin"), ("stopped", "end"), ("migrate", "begin")]
        {
            assert_eq!(HookEvent::of(operation, sub), HookEvent::Other);
        }
    }
}
