//! Process `pid` written into a `cgroup.procs` (a host task confined to the housekeeping
//! CPUs). The original is where it was and each thread's CPUs ([`TaskPlace`]); undo writes it
//! back there and gives each thread its CPUs back. A process that has exited needs nothing.

use serde::{Deserialize, Serialize};

use super::affinity::Affinity;
use super::{Change, HostAction, HostChangeError, Outcome, is_gone, old_text, read_error, write_error};
use crate::host::Host;
use crate::values::CpuSet;
use crate::values::escape::shell;

/// Where a process was before it was moved: the `cgroup.procs` of its cgroup, and each
/// thread's CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlace {
    pub cgroup_procs: String,
    pub threads: Vec<(u32, CpuSet)>,
}

pub struct MoveProcess {
    pub pid: u32,
}

/// `/sys/fs/cgroup/x/cgroup.procs` → `/sys/fs/cgroup`: the host cgroups kvmtune makes are
/// top-level, so the hierarchy's mount is two levels up.
fn cgroup_mount_of_procs(procs: &str) -> String {
    let path = std::path::Path::new(procs);
    path.parent().and_then(|p| p.parent()).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The cgroup a process is in, as the `cgroup.procs` of the hierarchy mounted at `mount`
/// (`/sys/fs/cgroup` for v2, `/sys/fs/cgroup/cpuset` for the v1 cpuset hierarchy).
pub fn cgroup_procs_of(host: &Host, pid: u32, mount: &str) -> std::io::Result<String> {
    let text = host.fs.read(&format!("/proc/{pid}/cgroup"))?;
    let text = String::from_utf8_lossy(&text);
    let v1 = mount.ends_with("/cpuset");
    let relative = text
        .lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let wanted =
                if v1 { controllers.split(',').any(|c| c == "cpuset") } else { controllers.is_empty() };
            wanted.then(|| path.to_string())
        })
        .ok_or_else(|| std::io::Error::other(format!("/proc/{pid}/cgroup names no cgroup under {mount}")))?;
    Ok(format!("{mount}{}/cgroup.procs", relative.trim_end_matches('/')))
}

impl MoveProcess {
    fn place(&self, mount: &str, host: &Host) -> std::io::Result<Option<TaskPlace>> {
        let gone_or = |e: std::io::Error| if is_gone(&e) { Ok(None) } else { Err(e) };
        let cgroup_procs = match cgroup_procs_of(host, self.pid, mount) {
            Ok(procs) => procs,
            Err(e) => return gone_or(e),
        };
        let tids = match host.fs.list(&format!("/proc/{}/task", self.pid)) {
            Ok(tids) => tids,
            Err(e) => return gone_or(e),
        };
        let mut threads = Vec::new();
        for tid in tids.iter().filter_map(|t| t.parse::<u32>().ok()) {
            match host.affinity.get(tid) {
                Ok(cpus) => threads.push((tid, cpus)),
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(TaskPlace { cgroup_procs, threads }))
    }
}

impl Change for MoveProcess {
    fn allowed(&self, path: &str, _new: &str, _original: &[u8]) -> Result<(), String> {
        super::allowed_in(
            &["/sys/fs/cgroup/**/cgroup.procs", "/sys/fs/cgroup/**/tasks"],
            path,
            "a cgroup's cgroup.procs or tasks",
        )
    }

    fn read_original(&self, path: &str, host: &Host) -> Result<Option<Vec<u8>>, HostChangeError> {
        let place = self
            .place(&cgroup_mount_of_procs(path), host)
            .map_err(read_error(&format!("/proc/{}", self.pid), host))?;
        Ok(place.map(|place| serde_json::to_vec(&place).expect("a task place serializes")))
    }

    fn set(&self, path: &str, value: &[u8], host: &Host) -> Result<Outcome, HostChangeError> {
        match host.fs.write(path, value) {
            Ok(()) => Ok(Outcome::Made),
            Err(e) if is_gone(&e) => Ok(Outcome::Made),
            Err(e) => Err(write_error(path, host)(e)),
        }
    }

    fn restore(&self, path: &str, _new: &str, original: &[u8], host: &Host) -> Result<(), HostChangeError> {
        let pid = self.pid;
        let place: TaskPlace = serde_json::from_slice(original).map_err(|e| {
            write_error(path, host)(std::io::Error::other(format!("journaled place of pid {pid}: {e}")))
        })?;
        self.set(&place.cgroup_procs, pid.to_string().as_bytes(), host)?;
        for (tid, cpus) in &place.threads {
            // Moving back gives the cgroup's CPUs; a thread that had its own gets them back.
            match host.affinity.get(*tid) {
                Ok(now) if &now != cpus => {
                    Affinity { tid: *tid }.set(path, cpus.to_string().as_bytes(), host)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn describe(&self, action: &HostAction) -> String {
        format!("{}: + pid {} (from {})", action.path, self.pid, old_text(action))
    }

    fn shell(&self, action: &HostAction) -> String {
        format!("echo {} > {}", self.pid, shell(&action.path))
    }

    fn undo_text(&self) -> &'static str {
        "moved back, each thread's CPUs restored"
    }

    fn checks_planned_value(&self) -> bool {
        false
    }

    fn key(&self, _path: &str) -> String {
        format!("pid:{}", self.pid)
    }
}
