//! The VMs of this host, found by their QEMU processes: plain QEMU, Proxmox (`qm` runs QEMU
//! with `-qmp unix:/var/run/qemu-server/ID.qmp`) and libvirt (whose monitor belongs to
//! libvirtd, so it is read through `virsh qemu-monitor-command`) alike.

use std::path::Path;
use std::time::Duration;

use crate::config::qemu::{guest_name, is_qemu_binary};
use crate::exits::record::Target;
use crate::exits::record::monitor::{MonitorAddress, monitor_from_argv};
use crate::host::libvirt::{Domains, Libvirt};

/// A running VM.
#[derive(Debug, Clone)]
pub struct LiveVm {
    /// As its users know it: the libvirt domain's name, else QEMU's `-name guest=`, else
    /// `pid N`.
    pub name: String,
    /// Its QEMU process on this host; 0 for a domain of a libvirt connection whose process is
    /// not here (a remote URI).
    pub pid: i32,
    /// How its counters are read; `Err` says why they cannot be.
    pub monitor: Result<Target, String>,
}

/// The VM a process with command line `argv` runs, if it is a QEMU system emulator.
pub fn identify(pid: i32, argv: &[String], connect: Option<&str>) -> Option<LiveVm> {
    if !is_qemu_binary(argv.first()?) {
        return None;
    }
    let name = guest_name(argv).unwrap_or_else(|| format!("pid {pid}"));
    let monitor = match monitor_from_argv(argv) {
        Some(MonitorAddress::Socket(path)) => Ok(Target::Qmp(path)),
        Some(MonitorAddress::LibvirtDomain(domain)) => {
            Ok(Target::Domain { name: domain, connect: connect.map(str::to_string) })
        }
        None => Err("no QMP monitor on its command line (-qmp unix:PATH, or -mon mode=control)".to_string()),
    };
    Some(LiveVm { name, pid, monitor })
}

/// The users whose QEMU processes kvmtune reads: root, libvirt's QEMU user (`libvirt-qemu` on
/// Debian, `qemu` on Fedora and RHEL; libvirt's qemu.conf `user`) and the user kvmtune runs as.
/// A process of anyone else may pose as a VM: its monitor could answer anything.
#[derive(Debug, Clone)]
pub struct TrustedOwners(Vec<u32>);

impl TrustedOwners {
    /// This host's, from `passwd` (`/etc/passwd`).
    pub fn of_this_host(passwd: &Path) -> Self {
        let mut uids = vec![0, crate::sys::effective_uid()];
        let text = std::fs::read_to_string(passwd).unwrap_or_default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [name, _, uid, ..] = fields.as_slice()
                && (*name == "libvirt-qemu" || *name == "qemu")
                && let Ok(uid) = uid.parse()
            {
                uids.push(uid);
            }
        }
        TrustedOwners(uids)
    }

    fn trusts(&self, uid: u32) -> bool {
        self.0.contains(&uid)
    }
}

/// The program a process runs (`/proc/PID/exe`), as a path; an upgraded binary reads
/// `PATH (deleted)`.
fn program_of(process: &Path) -> Option<String> {
    let exe = std::fs::read_link(process.join("exe")).ok()?;
    let exe = exe.to_string_lossy();
    Some(exe.strip_suffix(" (deleted)").unwrap_or(&exe).to_string())
}

/// Why the monitor of a VM that `owner` runs may not be read, if it may not: a QMP socket
/// that is not a socket, or that neither root nor the VM's user made. One that is missing is
/// left for the connection to report.
fn untrusted_socket(path: &Path, owner: u32) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_socket() {
        return Some(format!("{} is not a socket; not read", path.display()));
    }
    (meta.uid() != owner && meta.uid() != 0).then(|| {
        format!(
            "its QMP socket {} belongs to uid {}, not to the VM's uid {owner}; not read",
            path.display(),
            meta.uid()
        )
    })
}

/// The VMs running now, by pid: processes whose program (`/proc/PID/exe`, not the command line
/// they may set at will) is a QEMU system emulator. `proc` is `/proc`, or a directory laid out
/// like it. `connect` is the libvirt URI for the domains found (None: virsh's default). A VM
/// run by a user `trusted` does not name is listed with why it is not read.
pub fn discover(proc: &Path, connect: Option<&str>, trusted: &TrustedOwners) -> Vec<LiveVm> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(proc) else { return Vec::new() };
    let mut vms: Vec<LiveVm> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let process = proc.join(pid.to_string());
            // A process that exits meanwhile is simply not there; one whose program cannot be
            // read (another user's, to a user) cannot be told from a poser.
            if !is_qemu_binary(&program_of(&process)?) {
                return None;
            }
            let owner = std::fs::metadata(&process).ok()?.uid();
            let raw = std::fs::read(process.join("cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let mut vm = identify(pid, &argv, connect)?;
            if !trusted.trusts(owner) {
                vm.monitor = Err(format!(
                    "run by uid {owner}, neither root, libvirt's QEMU user nor this user; not read"
                ));
            } else if let Ok(Target::Qmp(path)) = &vm.monitor
                && let Some(why) = untrusted_socket(path, owner)
            {
                vm.monitor = Err(why);
            }
            Some(vm)
        })
        .collect();
    vms.sort_by(|a, b| a.name.cmp(&b.name).then(a.pid.cmp(&b.pid)));
    vms
}

/// The VMs of this host ([`discover`]), with the domains of the libvirt connection that are not
/// among them (a remote URI's) when libvirt is asked: `connect` given, or a local libvirtd's
/// socket present. The second value says why libvirt could not be asked, if it could not.
pub fn discover_with_libvirt(
    proc: &Path,
    connect: Option<&str>,
    timeout: Duration,
) -> (Vec<LiveVm>, Option<String>) {
    let mut vms = discover(proc, connect, &TrustedOwners::of_this_host(Path::new("/etc/passwd")));
    let local_libvirt =
        ["/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock"].iter().any(|s| Path::new(s).exists());
    if connect.is_none() && !local_libvirt {
        return (vms, None);
    }
    match Libvirt::new(connect).within(timeout).domains(Domains::Running) {
        Ok(domains) => {
            for domain in domains {
                if !vms.iter().any(|vm| vm.name == domain) {
                    let monitor =
                        Ok(Target::Domain { name: domain.clone(), connect: connect.map(str::to_string) });
                    vms.push(LiveVm { name: domain, pid: 0, monitor });
                }
            }
            vms.sort_by(|a, b| a.name.cmp(&b.name).then(a.pid.cmp(&b.pid)));
            (vms, None)
        }
        Err(why) => (vms, Some(format!("libvirt ({}): {why}", connect.unwrap_or("default")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, pid: i32, argv: &[&str]) {
        put_running(root, pid, "/usr/bin/qemu-system-x86_64", argv);
    }

    /// A process running `program` (its `exe` link) with command line `argv`.
    fn put_running(root: &Path, pid: i32, program: &str, argv: &[&str]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cmdline"), argv.join("\0") + "\0").unwrap();
        std::os::unix::fs::symlink(program, dir.join("exe")).unwrap();
    }

    fn trusted() -> TrustedOwners {
        TrustedOwners::of_this_host(Path::new("/etc/passwd"))
    }

    #[test]
    fn a_process_that_only_calls_itself_qemu_is_not_a_vm() {
        let proc = tempfile::tempdir().unwrap();
        let argv = ["qemu-system-x86_64", "-name", "fake", "-qmp", "unix:/tmp/fake.qmp,server=on"];
        put_running(proc.path(), 20, "/usr/bin/python3.11", &argv);
        put_running(
            proc.path(),
            21,
            "/usr/bin/qemu-system-x86_64 (deleted)",
            &["qemu-system-x86_64", "-name", "upgraded"],
        );
        let names: Vec<String> =
            discover(proc.path(), None, &trusted()).into_iter().map(|vm| vm.name).collect();
        assert_eq!(names, ["upgraded"]);
    }

    #[test]
    fn a_qmp_socket_that_is_no_socket_is_not_read() {
        let proc = tempfile::tempdir().unwrap();
        let planted = proc.path().join("planted.qmp");
        std::fs::write(&planted, "{}").unwrap();
        let qmp = format!("unix:{},server=on", planted.display());
        put(proc.path(), 30, &["qemu-system-x86_64", "-name", "vm", "-qmp", &qmp]);
        let vms = discover(proc.path(), None, &trusted());
        let why = vms[0].monitor.as_ref().expect_err("refused");
        assert!(why.contains("is not a socket"), "{why}");
    }

    /// A QEMU run by a user that is not trusted (here: a process directory owned by nobody).
    #[cfg(feature = "root")]
    #[test]
    fn another_users_qemu_is_listed_but_not_read() {
        let proc = tempfile::tempdir().unwrap();
        put(proc.path(), 40, &["qemu-system-x86_64", "-name", "theirs", "-qmp", "unix:/tmp/theirs.qmp"]);
        std::os::unix::fs::chown(proc.path().join("40"), Some(65534), Some(65534)).unwrap();
        let vms = discover(proc.path(), None, &trusted());
        let why = vms[0].monitor.as_ref().expect_err("refused");
        assert!(why.contains("run by uid 65534"), "{why}");
    }

    #[test]
    fn qemu_processes_are_found_and_named_as_their_users_know_them() {
        let proc = tempfile::tempdir().unwrap();
        let root = proc.path();
        put(
            root,
            10,
            &[
                "/usr/bin/qemu-system-x86_64",
                "-name",
                "guest=win11,debug-threads=on",
                "-chardev",
                "socket,id=charmonitor,fd=31,server=on,wait=off",
                "-mon",
                "chardev=charmonitor,id=monitor,mode=control",
            ],
        );
        put(
            root,
            11,
            &[
                "/usr/bin/kvm",
                "-id",
                "100",
                "-name",
                "gaming,debug-threads=on",
                "-qmp",
                "unix:/var/run/qemu-server/100.qmp,server=on,wait=off",
            ],
        );
        put(root, 12, &["qemu-system-x86_64", "-accel", "kvm", "-monitor", "stdio"]);
        put_running(root, 13, "/usr/sbin/libvirtd", &["/usr/sbin/libvirtd", "--daemon"]);
        std::fs::create_dir_all(root.join("self")).unwrap();
        let vms = discover(root, Some("qemu:///system"), &trusted());
        let summary: Vec<(&str, i32, String)> = vms
            .iter()
            .map(|vm| (vm.name.as_str(), vm.pid, format!("{:?}", vm.monitor.as_ref().map_err(|_| "none"))))
            .collect();
        assert_eq!(
            summary,
            [
                ("gaming", 11, r#"Ok(Qmp("/var/run/qemu-server/100.qmp"))"#.to_string()),
                ("pid 12", 12, r#"Err("none")"#.to_string()),
                ("win11", 10, r#"Ok(Domain { name: "win11", connect: Some("qemu:///system") })"#.to_string()),
            ]
        );
    }
}
