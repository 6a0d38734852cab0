//! The kernel version and the boot parameters that shape VM tuning.
//!
//! Source for the parameter meanings: Documentation/admin-guide/kernel-parameters.txt.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::host::fact::Fact;
use crate::values::CpuSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// `uname -r`, e.g. `6.1.0-13-amd64`.
    pub release: Fact<String>,
    pub cmdline: Fact<Cmdline>,
    /// `/proc/sys/kernel/sched_rt_runtime_us`: how much of each period real-time tasks may
    /// take (950000 of 1000000 by default); -1 lets them take all of it.
    #[serde(default = "rt_runtime_not_recorded")]
    pub sched_rt_runtime_us: Fact<i64>,
}

/// A fact that host JSON written before kvmtune read it does not hold.
fn rt_runtime_not_recorded() -> Fact<i64> {
    Fact::Unknown("not in this host JSON (written by an older kvmtune)".into())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmdline {
    pub raw: String,
    /// `intel_iommu=`, `amd_iommu=`, `iommu=`, `iommu.passthrough=`, `iommu.strict=`.
    pub iommu: BTreeMap<String, String>,
    pub isolcpus: Option<IsolCpus>,
    pub nohz_full: Option<CpuSet>,
    pub rcu_nocbs: Option<CpuSet>,
    pub irqaffinity: Option<CpuSet>,
    pub default_hugepage_size: Option<String>,
    /// `hugepagesz=1G hugepages=16` pairs in order; a count without a size applies to the default size.
    pub hugepages: Vec<HugepageReservation>,
    /// `kvm.*`, `kvm_intel.*`, `kvm_amd.*`: module options set at boot.
    pub kvm_module_options: BTreeMap<String, String>,
    /// `vfio-pci.ids=` and friends: devices claimed for passthrough at boot.
    pub vfio_options: BTreeMap<String, String>,
    /// Other parameters that change guest behaviour (`mitigations`, `nosmt`, `tsc`,
    /// `clocksource`, `transparent_hugepage`, `pcie_acs_override`, ...).
    pub other: BTreeMap<String, String>,
    /// Parameters that should be CPU lists but are not.
    pub malformed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolCpus {
    /// `domain`, `nohz`, `managed_irq` (an empty list means the default, `domain`).
    pub flags: Vec<String>,
    pub cpus: CpuSet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepageReservation {
    /// `2M`, `1G`, or absent for the default size.
    pub size: Option<String>,
    /// A count, or a per-node list such as `0:4,1:4`, as written.
    pub count: String,
}

const OTHER_RELEVANT: &[&str] = &[
    "mitigations",
    "nosmt",
    "tsc",
    "clocksource",
    "transparent_hugepage",
    "pcie_acs_override",
    "processor.max_cstate",
    "intel_idle.max_cstate",
    "idle",
    "intel_pstate",
    "amd_pstate",
    "skew_tick",
    "nowatchdog",
    "nmi_watchdog",
    "isolcpus",
];

pub fn probe(host: &Host) -> Kernel {
    let release = host
        .read_trimmed("/proc/sys/kernel/osrelease")
        .map_err(|e| e.to_string())
        .or_else(|first| {
            // Snapshots carry /proc/version more often than /proc/sys.
            let version = host.read("/proc/version").map_err(|e| format!("{first}; {e}"))?;
            version
                .split_whitespace()
                .nth(2)
                .map(str::to_string)
                .ok_or_else(|| format!("/proc/version: no release in `{}`", version.trim()))
        })
        .into();
    let cmdline = host.read("/proc/cmdline").map(|text| parse_cmdline(&text)).into();
    let sched_rt_runtime_us = host
        .read_trimmed("/proc/sys/kernel/sched_rt_runtime_us")
        .map_err(|e| e.to_string())
        .and_then(|text| {
            text.parse::<i64>().map_err(|_| format!("sched_rt_runtime_us: `{text}` is no number"))
        })
        .into();
    Kernel { release, cmdline, sched_rt_runtime_us }
}

/// Splits the command line the way the kernel does (double quotes group, no escapes) and keeps
/// the parameters kvmtune reads.
pub fn parse_cmdline(text: &str) -> Cmdline {
    let mut cmdline = Cmdline { raw: text.trim().to_string(), ..Cmdline::default() };
    let mut pending_size: Option<String> = None;
    for token in split_params(text) {
        // Everything after `--` belongs to init.
        if token == "--" {
            break;
        }
        let (key, value) = match token.split_once('=') {
            Some((key, value)) => (key.to_string(), value.trim_matches('"').to_string()),
            None => (token.clone(), String::new()),
        };
        // The kernel treats `-` and `_` in parameter names alike.
        let normalized = key.replace('-', "_");
        let mut cpu_list = |slot: &mut Option<CpuSet>| match CpuSet::parse_list(&value) {
            Ok(set) => *slot = Some(set),
            Err(error) => cmdline.malformed.push(format!("{key}={value}: {error}")),
        };
        match normalized.as_str() {
            "intel_iommu" | "amd_iommu" | "iommu" | "iommu.passthrough" | "iommu.strict" => {
                cmdline.iommu.insert(key, value);
            }
            "nohz_full" => cpu_list(&mut cmdline.nohz_full),
            "rcu_nocbs" => cpu_list(&mut cmdline.rcu_nocbs),
            "irqaffinity" => cpu_list(&mut cmdline.irqaffinity),
            "isolcpus" => match parse_isolcpus(&value) {
                Ok(isol) => cmdline.isolcpus = Some(isol),
                Err(error) => cmdline.malformed.push(format!("{key}={value}: {error}")),
            },
            "default_hugepagesz" => cmdline.default_hugepage_size = Some(value),
            "hugepagesz" => pending_size = Some(value),
            "hugepages" => {
                cmdline.hugepages.push(HugepageReservation { size: pending_size.take(), count: value })
            }
            _ if normalized.starts_with("kvm.")
                || normalized.starts_with("kvm_intel.")
                || normalized.starts_with("kvm_amd.") =>
            {
                cmdline.kvm_module_options.insert(key, value);
            }
            _ if normalized.starts_with("vfio_pci.") || normalized.starts_with("vfio.") => {
                cmdline.vfio_options.insert(key, value);
            }
            _ if OTHER_RELEVANT.contains(&normalized.as_str()) => {
                cmdline.other.insert(key, value);
            }
            _ => {}
        }
    }
    cmdline
}

fn split_params(text: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    params.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        params.push(current);
    }
    params
}

/// `isolcpus=[flag,...,]<cpu-list>`: the flags are `domain`, `nohz` and `managed_irq`
/// (kernel-parameters.txt); everything after them is the list.
fn parse_isolcpus(value: &str) -> Result<IsolCpus, crate::values::cpuset::CpuListError> {
    const FLAGS: &[&str] = &["domain", "nohz", "managed_irq"];
    let parts: Vec<&str> = value.split(',').collect();
    let flag_count = parts.iter().take_while(|part| FLAGS.contains(part)).count();
    let flags = parts[..flag_count].iter().map(|f| f.to_string()).collect();
    let cpus = CpuSet::parse_list(&parts[flag_count..].join(","))?;
    Ok(IsolCpus { flags, cpus })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tuning_parameters() {
        let cmdline = parse_cmdline(
            "BOOT_IMAGE=/vmlinuz root=UUID=x ro quiet amd_iommu=on iommu=pt isolcpus=managed_irq,domain,2-7,10-15 \
             nohz_full=2-7,10-15 rcu_nocbs=2-7 irqaffinity=0-1,8-9 default_hugepagesz=1G hugepagesz=1G hugepages=16 \
             hugepagesz=2M hugepages=0:512,1:512 kvm_amd.avic=1 kvm.halt_poll_ns=0 vfio-pci.ids=10de:2684,10de:22ba \
             mitigations=off -- single",
        );
        assert_eq!(cmdline.iommu.get("amd_iommu").map(String::as_str), Some("on"));
        let isol = cmdline.isolcpus.unwrap();
        assert_eq!(isol.flags, ["managed_irq", "domain"]);
        assert_eq!(isol.cpus.to_string(), "2-7,10-15");
        assert_eq!(cmdline.nohz_full.unwrap().to_string(), "2-7,10-15");
        assert_eq!(cmdline.irqaffinity.unwrap().to_string(), "0-1,8-9");
        assert_eq!(cmdline.hugepages.len(), 2);
        assert_eq!(cmdline.hugepages[1].size.as_deref(), Some("2M"));
        assert_eq!(cmdline.hugepages[1].count, "0:512,1:512");
        assert_eq!(cmdline.kvm_module_options.get("kvm_amd.avic").map(String::as_str), Some("1"));
        assert!(cmdline.vfio_options.contains_key("vfio-pci.ids"));
        assert_eq!(cmdline.other.get("mitigations").map(String::as_str), Some("off"));
        assert!(!cmdline.other.contains_key("single"));
    }

    #[test]
    fn malformed_lists_are_reported() {
        let cmdline = parse_cmdline("nohz_full=3-1 isolcpus=nohz,x-y");
        assert_eq!(cmdline.malformed.len(), 2);
        assert!(cmdline.nohz_full.is_none());
    }

    #[test]
    fn quotes_group_words() {
        let cmdline = parse_cmdline("dyndbg=\"file a.c +p\" nosmt");
        assert_eq!(cmdline.other.get("nosmt").map(String::as_str), Some(""));
    }
}
