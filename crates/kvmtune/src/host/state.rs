//! Host state that decides how a VM can be isolated: the cgroup layout and cpusets, init,
//! irqbalance and the cpufreq governor.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::host::fact::Fact;
use crate::host::{Host, numbered_entries};
use crate::values::CpuSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub cgroups: Fact<Cgroups>,
    pub systemd: Fact<bool>,
    pub irqbalance_running: Fact<bool>,
    /// Governor name -> the CPUs it drives.
    pub cpufreq_governors: Fact<BTreeMap<String, CpuSet>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroups {
    /// `v1`, `v2` or `hybrid` (v1 controllers plus a cgroup2 mount, as on this CI machine).
    pub layout: String,
    /// Mount point of the cpuset controller, and which version drives it.
    pub cpuset_mount: Option<String>,
    pub cpuset_version: Option<String>,
    /// The cpuset controller is mounted and its root `cpuset.cpus` (v1) or
    /// `cpuset.cpus.effective` (v2) reads.
    pub cpuset_usable: bool,
}

pub fn probe(host: &Host) -> HostState {
    HostState {
        cgroups: probe_cgroups(host),
        systemd: probe_systemd(host),
        irqbalance_running: process_running(host, "irqbalance"),
        cpufreq_governors: probe_governors(host),
    }
}

fn probe_cgroups(host: &Host) -> Fact<Cgroups> {
    let mounts = match host.read("/proc/mounts").or_else(|_| host.read("/proc/self/mounts")) {
        Ok(mounts) => mounts,
        Err(error) => return Fact::Unknown(error.to_string()),
    };
    let mut v1_controllers: Vec<(String, Vec<String>)> = Vec::new();
    let mut v2_mount: Option<String> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, mount_point, fs_type, options, ..] = fields[..] else { continue };
        match fs_type {
            "cgroup" => v1_controllers
                .push((mount_point.to_string(), options.split(',').map(str::to_string).collect())),
            "cgroup2" => v2_mount = Some(mount_point.to_string()),
            _ => {}
        }
    }
    let layout = match (v1_controllers.is_empty(), &v2_mount) {
        (true, None) => return Fact::Unknown("/proc/mounts shows no cgroup filesystem".to_string()),
        (true, Some(_)) => "v2",
        (false, None) => "v1",
        (false, Some(_)) => "hybrid",
    };
    let v1_cpuset = v1_controllers.iter().find(|(_, options)| options.iter().any(|o| o == "cpuset"));
    let (cpuset_mount, cpuset_version, cpuset_usable) = if let Some((mount, _)) = v1_cpuset {
        let usable = host.read(&format!("{mount}/cpuset.cpus")).is_ok();
        (Some(mount.clone()), Some("v1".to_string()), usable)
    } else if let Some(mount) = &v2_mount {
        let controllers = host.read(&format!("{mount}/cgroup.controllers")).unwrap_or_default();
        let usable = controllers.split_whitespace().any(|c| c == "cpuset");
        (usable.then(|| mount.clone()), usable.then(|| "v2".to_string()), usable)
    } else {
        (None, None, false)
    };
    Fact::Known(Cgroups { layout: layout.to_string(), cpuset_mount, cpuset_version, cpuset_usable })
}

fn probe_systemd(host: &Host) -> Fact<bool> {
    // sd_booted(3): systemd is the init system exactly when this directory exists.
    if host.exists("/run/systemd/system") {
        return Fact::Known(true);
    }
    match host.read_trimmed("/proc/1/comm") {
        Ok(comm) => Fact::Known(comm == "systemd"),
        Err(error) => Fact::Unknown(error.to_string()),
    }
}

fn process_running(host: &Host, name: &str) -> Fact<bool> {
    let pids = match numbered_entries(host, "/proc", "") {
        Ok(pids) if !pids.is_empty() => pids,
        Ok(_) => return Fact::Unknown("/proc/ lists no processes (a snapshot without them)".to_string()),
        Err(error) => return Fact::Unknown(error.to_string()),
    };
    Fact::Known(
        pids.iter().any(|pid| host.read_trimmed(&format!("/proc/{pid}/comm")).is_ok_and(|comm| comm == name)),
    )
}

fn probe_governors(host: &Host) -> Fact<BTreeMap<String, CpuSet>> {
    let dir = "/sys/devices/system/cpu/cpufreq";
    let policies = match numbered_entries(host, dir, "policy") {
        Ok(policies) if !policies.is_empty() => policies,
        Ok(_) | Err(_) => return Fact::Unknown(format!("{dir} has no policies (no cpufreq driver)")),
    };
    let mut governors: BTreeMap<String, CpuSet> = BTreeMap::new();
    for policy in policies {
        let Ok(governor) = host.read_trimmed(&format!("{dir}/policy{policy}/scaling_governor")) else {
            continue;
        };
        let cpus = host
            .read(&format!("{dir}/policy{policy}/affected_cpus"))
            .ok()
            .and_then(|text| CpuSet::parse_list(&text.split_whitespace().collect::<Vec<_>>().join(",")).ok())
            .unwrap_or_else(|| [policy].into_iter().collect());
        let entry = governors.entry(governor).or_default();
        *entry = entry.union(&cpus);
    }
    if governors.is_empty() {
        return Fact::Unknown(format!("{dir}/policy*/scaling_governor could not be read"));
    }
    Fact::Known(governors)
}
