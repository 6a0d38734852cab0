//! The VMs of this host, found by their QEMU processes: plain QEMU, Proxmox (`qm` runs QEMU
//! with `-qmp unix:/var/run/qemu-server/ID.qmp`) and libvirt (whose monitor belongs to
//! libvirtd, so it is read through `virsh qemu-monitor-command`) alike.

use std::path::Path;
use std::time::Duration;

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

/// Whether `argv0` runs a QEMU system emulator (`qemu-system-x86_64`, Debian's `kvm` wrapper,
/// RHEL's `qemu-kvm`).
fn is_qemu(argv0: &str) -> bool {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    name.starts_with("qemu-system-") || name == "qemu-kvm" || name == "kvm"
}

/// `-name guest=NAME,...` or `-name NAME`.
fn name_of(argv: &[String]) -> Option<String> {
    let value = argv.windows(2).find(|pair| pair[0] == "-name" || pair[0] == "--name")?[1].as_str();
    let name = value.split(',').find_map(|part| part.strip_prefix("guest=")).or_else(|| {
        let first = value.split(',').next()?;
        (!first.contains('=')).then_some(first)
    })?;
    (!name.is_empty()).then(|| name.to_string())
}

/// The VM a process with command line `argv` runs, if it is a QEMU system emulator.
pub fn identify(pid: i32, argv: &[String], connect: Option<&str>) -> Option<LiveVm> {
    if !is_qemu(argv.first()?) {
        return None;
    }
    let name = name_of(argv).unwrap_or_else(|| format!("pid {pid}"));
    let monitor = match monitor_from_argv(argv) {
        Some(MonitorAddress::Socket(path)) => Ok(Target::Qmp(path)),
        Some(MonitorAddress::LibvirtDomain(domain)) => {
            Ok(Target::Domain { name: domain, connect: connect.map(str::to_string) })
        }
        None => Err("no QMP monitor on its command line (-qmp unix:PATH, or -mon mode=control)".to_string()),
    };
    Some(LiveVm { name, pid, monitor })
}

/// The VMs running now, by pid. `proc` is `/proc`, or a directory laid out like it. `connect`
/// is the libvirt URI for the domains found (None: virsh's default).
pub fn discover(proc: &Path, connect: Option<&str>) -> Vec<LiveVm> {
    let Ok(entries) = std::fs::read_dir(proc) else { return Vec::new() };
    let mut vms: Vec<LiveVm> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            // A process that exits meanwhile is simply not there.
            let raw = std::fs::read(proc.join(pid.to_string()).join("cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            identify(pid, &argv, connect)
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
    let mut vms = discover(proc, connect);
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
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cmdline"), argv.join("\0") + "\0").unwrap();
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
        put(root, 13, &["/usr/sbin/libvirtd", "--daemon"]);
        std::fs::create_dir_all(root.join("self")).unwrap();
        let vms = discover(root, Some("qemu:///system"));
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
