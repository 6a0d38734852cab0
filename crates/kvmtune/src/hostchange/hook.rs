//! The libvirt hook: `kvmtune hook install` puts one executable into libvirt's `qemu.d`, which
//! libvirt runs for every domain and operation with the domain XML on stdin (libvirt
//! docs/hooks.rst; ../shared/host-changes.md section 7). It acts only on a domain whose
//! `<metadata>` holds `<kvmtune:host>` ([`crate::config::host_needs`]); [`run`] does what
//! libvirt's call asks and says what it did:
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

use crate::config::host_needs::NAMESPACE;
use crate::host::Host;
use crate::hostchange::journal::{Journal, JournalError, JournalKind, VmJournal};
use crate::hostchange::prepare::{self, PrepareRequest};
use crate::hostchange::vfio;

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
    /// libvirt would run the binary as root: whoever can replace it would be root.
    #[error(
        "the hook would run {binary} as root, but {why}; install kvmtune where only root can write (/usr/local/bin)"
    )]
    UnsafeBinary { binary: PathBuf, why: crate::hostchange::private_files::PrivateFileError },
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
    crate::hostchange::private_files::check_program(binary)
        .map_err(|why| InstallError::UnsafeBinary { binary: binary.to_path_buf(), why })?;
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
    // Made afresh, never through a link someone planted there.
    crate::hostchange::private_files::write_fresh(&temporary, script(binary).as_bytes(), 0o755)
        .map_err(io("write", &temporary))?;
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

/// What the hook did or saw in one call, for the command to print: libvirt logs what a hook
/// writes to stderr, and names its last line in the error that stops a VM.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HookReport {
    /// What may go wrong that kvmtune cannot prevent (a GPU that does not reset).
    pub warnings: Vec<String>,
    /// The journals released, made or set aside.
    pub done: Vec<String>,
}

/// Why the hook failed; libvirt then does not start the VM (at prepare), and says so.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Needs(#[from] crate::config::host_needs::NeedsError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Refused(#[from] prepare::Refusal),
    #[error(transparent)]
    Vfio(#[from] vfio::VfioRefusal),
    #[error(transparent)]
    Bind(#[from] vfio::BindError),
    #[error(
        "{0} was prepared by hand, not by the hook; `kvmtune host release {1}` (or `vfio release`) first"
    )]
    PreparedByHand(String, String),
    #[error("releasing {journal}: {source}")]
    Release {
        journal: String,
        #[source]
        source: JournalError,
    },
    #[error("{0} (the host side made for it was undone)")]
    BindUndone(Box<HookError>),
}

/// What libvirt's call asks, done: `prepare begin` makes the domain's host side and hands its
/// devices over, `release end` undoes both, `reconnect begin` undoes those of domains that no
/// longer run. Anything else, and a domain whose XML does not ask, is left alone.
pub fn run(
    domain: &str,
    event: HookEvent,
    xml: &str,
    journal_dir: &Path,
    host: &Host,
) -> Result<HookReport, HookError> {
    let mut report = HookReport::default();
    match event {
        // A domain that does not ask is left alone, also one whose XML kvmtune cannot read.
        HookEvent::Prepare if xml.contains(NAMESPACE) => {
            prepare_domain(domain, xml, journal_dir, host, &mut report)?
        }
        HookEvent::Release if journal_dir.is_dir() => {
            let journal = Journal::open(journal_dir, host)?;
            release_domain(&journal, domain, host, &mut report)?;
        }
        HookEvent::Reconnect if journal_dir.is_dir() => {
            let journal = Journal::open(journal_dir, host)?;
            reconcile(&journal, host, &mut report)?;
        }
        _ => {}
    }
    Ok(report)
}

/// The domain's own journals, in the order they are released: the devices', then the host's.
const RELEASE_ORDER: [JournalKind; 2] = [JournalKind::Devices, JournalKind::Host];

/// A journal the hook made, or the empty start of one that a kill cut short before it could
/// say who made it. Any other journal of a domain is a user's, made by hand, and left alone.
fn hooks_own(journal: &VmJournal) -> bool {
    journal.by.as_deref() == Some(HOOK_ORIGIN)
        || (journal.by.is_none() && !journal.complete && journal.changes.is_empty())
}

/// Undoes what the hook did for `domain`, the devices first.
fn release_domain(
    journal: &Journal,
    domain: &str,
    host: &Host,
    report: &mut HookReport,
) -> Result<(), HookError> {
    let present = journal.status()?;
    for kind in RELEASE_ORDER {
        if !present.iter().any(|j| j.kind == kind && j.vm == domain && hooks_own(j)) {
            continue;
        }
        let name = kind.label(domain);
        journal
            .release(kind, domain, host)
            .map_err(|source| HookError::Release { journal: name.clone(), source })?;
        report.done.push(format!("released {name}"));
    }
    Ok(())
}

/// After a daemon restart: the hook's journals whose domain no longer runs are undone, newest
/// first.
fn reconcile(journal: &Journal, host: &Host, report: &mut HookReport) -> Result<(), HookError> {
    let mut gone: Vec<(u64, JournalKind, String)> = journal
        .status()?
        .into_iter()
        .filter(|j| j.by.as_deref() == Some(HOOK_ORIGIN))
        .filter(|j| !domain_runs(&j.vm, host))
        .map(|j| (j.order, j.kind, j.vm))
        .collect();
    gone.sort_by_key(|(order, ..)| std::cmp::Reverse(*order));
    for (_, kind, vm) in gone {
        let name = kind.label(&vm);
        journal
            .release(kind, &vm, host)
            .map_err(|source| HookError::Release { journal: name.clone(), source })?;
        report.done.push(format!("released {name}, whose domain is gone"));
    }
    Ok(())
}

fn prepare_domain(
    domain: &str,
    xml: &str,
    journal_dir: &Path,
    host: &Host,
    report: &mut HookReport,
) -> Result<(), HookError> {
    let config = crate::config::libvirt::parse(&format!("<domain {domain}>"), xml)?;
    let Some(stated) = &config.host_needs else { return Ok(()) };
    let journal = Journal::open(journal_dir, host)?.started_by(HOOK_ORIGIN);
    // A start after a stop the hook did not see (libvirtd killed, the host's power cut in this
    // boot): the hook's own leftovers of this domain go first.
    for stale in journal.status()?.iter().filter(|j| j.vm == domain) {
        if !hooks_own(stale) {
            return Err(HookError::PreparedByHand(stale.kind.label(&stale.vm), domain.to_string()));
        }
    }
    release_domain(&journal, domain, host, report)?;

    // Both plans first: every refusal comes before the first write.
    let host_plan = match stated.needs.only_devices() {
        true => None,
        false => {
            let request = PrepareRequest {
                vm: domain.to_string(),
                needs: config
                    .resolve_needs(&stated.needs, crate::host::memory::default_hugepage_kib(host))?,
                vm_pids: Vec::new(),
                self_pid: std::process::id(),
            };
            Some(prepare::plan(&request, &journal.status()?, host)?)
        }
    };
    let bind_plan = match stated.needs.devices.is_empty() {
        true => None,
        false => Some(vfio::plan_bind(domain, &stated.needs.devices, stated.needs.single_gpu, host)?),
    };
    report.warnings.extend(bind_plan.iter().flat_map(|plan| plan.warnings.iter().cloned()));
    if let Some(plan) = &host_plan {
        prepare::apply(&journal, plan, host)?;
        report.done.push(format!("prepared {domain}"));
    }
    if let Some(plan) = &bind_plan {
        if let Err(error) = vfio::apply_bind(&journal, plan, host) {
            release_domain(&journal, domain, host, report)?;
            return Err(HookError::BindUndone(Box::new(error.into())));
        }
        report.done.push(format!("handed {}'s devices to vfio-pci", domain));
    }
    Ok(())
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

    /// A program in a private directory of its own (0700, this user's), at `name` below it.
    fn program(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        (dir, path)
    }

    #[test]
    fn install_refuses_a_file_it_did_not_write_and_updates_its_own() {
        let root = tempfile::tempdir().unwrap();
        let (_first, kvmtune) = program("kvmtune");
        let (_second, quoted) = program("it's/kvmtune");
        assert_eq!(install(root.path(), &kvmtune).unwrap(), Installed::Created);
        assert_eq!(install(root.path(), &quoted).unwrap(), Installed::Updated);
        let text = std::fs::read_to_string(hook_path(root.path())).unwrap();
        assert!(text.contains(r"/it'\''s/kvmtune' hook run"), "{text}");
        assert!(uninstall(root.path()).unwrap());
        assert!(!uninstall(root.path()).unwrap());
        std::fs::write(hook_path(root.path()), "#!/bin/sh\necho mine\n").unwrap();
        assert!(matches!(install(root.path(), &kvmtune), Err(InstallError::Foreign(_))));
        assert!(matches!(uninstall(root.path()), Err(InstallError::Foreign(_))));
        assert_eq!(std::fs::read_to_string(hook_path(root.path())).unwrap(), "#!/bin/sh\necho mine\n");
    }

    #[test]
    fn install_writes_no_file_through_a_planted_link() {
        let root = tempfile::tempdir().unwrap();
        let (_dir, kvmtune) = program("kvmtune");
        let victim = root.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let temporary =
            hook_path(root.path()).parent().unwrap().parent().unwrap().join(format!(".{HOOK_NAME}-hook.new"));
        std::fs::create_dir_all(temporary.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&victim, &temporary).unwrap();
        install(root.path(), &kvmtune).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(std::fs::read_to_string(hook_path(root.path())).unwrap().contains("hook run"));
    }

    #[test]
    fn install_refuses_a_binary_that_another_user_could_replace() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let (dir, kvmtune) = program("shared/kvmtune");
        let shared = dir.path().join("shared");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = install(root.path(), &kvmtune).unwrap_err();
        assert!(matches!(error, InstallError::UnsafeBinary { .. }), "{error}");
        assert!(error.to_string().contains("writable by"), "{error}");
        assert!(!hook_path(root.path()).exists());
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&kvmtune, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(install(root.path(), &kvmtune), Err(InstallError::UnsafeBinary { .. })));
    }

    /// A domain asking for the performance governor and its hugepages, on a rooted host with
    /// one cpufreq policy per CPU and a 2 MiB pool on node 0.
    fn governor_host() -> (tempfile::TempDir, Host, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("host");
        let put = |path: &str, text: &str| {
            let file = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        };
        put(crate::hostchange::journal::BOOT_ID_PATH, "3f1c0bd2-33e4-4b0e-9d55-0a1b2c3d4e5f\n");
        put("/sys/devices/system/cpu/online", "0-3\n");
        put("/sys/devices/system/node/online", "0\n");
        put("/proc/meminfo", "Hugepagesize:       2048 kB\n");
        for cpu in 0..4 {
            let policy = format!("/sys/devices/system/cpu/cpufreq/policy{cpu}");
            put(&format!("{policy}/related_cpus"), &format!("{cpu}\n"));
            put(&format!("{policy}/scaling_governor"), "powersave\n");
            put(&format!("{policy}/scaling_available_governors"), "performance powersave\n");
        }
        let pool = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB";
        put(&format!("{pool}/nr_hugepages"), "0\n");
        put(&format!("{pool}/free_hugepages"), "0\n");
        let host = Host::rooted(&root);
        (dir, host, root)
    }

    const DOMAIN: &str = "<domain type='kvm'><name>win</name><memory unit='KiB'>8192</memory><vcpu>2</vcpu>\
        <metadata><kvmtune:host xmlns:kvmtune='https://kvmtune.dev/xmlns/libvirt/host/1'>\
        <kvmtune:cpufreq governor='performance'/><kvmtune:hugepages/></kvmtune:host></metadata>\
        <memoryBacking><hugepages/></memoryBacking>\
        <cputune><vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='3'/></cputune>\
        <numatune><memory mode='strict' nodeset='0'/></numatune><os><type>hvm</type></os></domain>";

    #[test]
    fn prepare_and_release_give_the_domain_its_host_side_and_take_it_back() {
        let (dir, host, root) = governor_host();
        let journals = dir.path().join("journals");
        let read = |path: &str| std::fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap();
        let governor = "/sys/devices/system/cpu/cpufreq/policy2/scaling_governor";
        let pool = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages";

        let report = run("win", HookEvent::Prepare, DOMAIN, &journals, &host).unwrap();
        assert_eq!(report.done, ["prepared win"]);
        assert_eq!(read(governor), "performance");
        assert_eq!(read(pool), "4");
        let journal = Journal::open(&journals, &host).unwrap();
        assert_eq!(journal.status().unwrap()[0].by.as_deref(), Some(HOOK_ORIGIN));
        drop(journal);

        // A domain that does not ask is left alone at every event.
        let plain =
            DOMAIN.replace("kvmtune:host", "other").replace("https://kvmtune.dev", "https://example.invalid");
        assert_eq!(
            run("plain", HookEvent::Prepare, &plain, &journals, &host).unwrap(),
            HookReport::default()
        );

        let report = run("win", HookEvent::Release, DOMAIN, &journals, &host).unwrap();
        assert_eq!(report.done, ["released win"]);
        assert_eq!(read(governor), "powersave\n");
        assert_eq!(read(pool), "0\n");
    }

    #[test]
    fn a_domain_prepared_by_hand_is_not_taken_over() {
        let (dir, host, _root) = governor_host();
        let journals = dir.path().join("journals");
        let journal = Journal::open(&journals, &host).unwrap();
        journal.apply(JournalKind::Host, "win", &crate::values::CpuSet::new(), &[], &host).unwrap();
        drop(journal);
        let error = run("win", HookEvent::Prepare, DOMAIN, &journals, &host).unwrap_err();
        assert!(matches!(error, HookError::PreparedByHand(..)), "{error}");
        // Its release leaves the user's journal alone too.
        run("win", HookEvent::Release, DOMAIN, &journals, &host).unwrap();
        assert_eq!(Journal::open(&journals, &host).unwrap().status().unwrap().len(), 1);
    }

    #[test]
    fn reconnect_releases_what_the_hook_did_for_domains_that_no_longer_run() {
        let (dir, host, root) = governor_host();
        let journals = dir.path().join("journals");
        run("win", HookEvent::Prepare, DOMAIN, &journals, &host).unwrap();
        // libvirt's pid file names no live QEMU of the domain: it is gone.
        let report = run("other", HookEvent::Reconnect, "", &journals, &host).unwrap();
        assert_eq!(report.done, ["released win, whose domain is gone"]);
        let governor = root.join("sys/devices/system/cpu/cpufreq/policy2/scaling_governor");
        assert_eq!(std::fs::read_to_string(governor).unwrap(), "powersave\n");
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
