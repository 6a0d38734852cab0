//! Memory per NUMA node, hugepage pools per size and node, and transparent hugepages.
//!
//! Source: Documentation/admin-guide/mm/hugetlbpage.rst (the `hugepages-<size>kB` directories,
//! global and per node) and transhuge.rst (`transparent_hugepage/enabled`).

use serde::{Deserialize, Serialize};

use crate::host::fact::Fact;
use crate::host::{Host, numbered_entries};
use crate::knowledge::recommended;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// From /proc/meminfo.
    pub total_kib: Fact<u64>,
    pub available_kib: Fact<u64>,
    pub nodes: Fact<Vec<NodeMemory>>,
    /// The system-wide pools, one per supported page size.
    pub hugepages: Fact<Vec<HugepagePool>>,
    /// `always`, `madvise` or `never`.
    pub transparent_hugepages: Fact<String>,
    /// Transparent hugepages for shmem and memfd (`transparent_hugepage/shmem_enabled`):
    /// `always`, `within_size`, `advise`, `never`, `deny` or `force`.
    #[serde(default = "not_recorded")]
    pub transparent_hugepages_shmem: Fact<String>,
}

/// A fact that host JSON written before kvmtune read it does not hold.
fn not_recorded() -> Fact<String> {
    Fact::Unknown("not in this host JSON (written by an older kvmtune)".into())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMemory {
    pub node: u32,
    pub total_kib: Fact<u64>,
    pub free_kib: Fact<u64>,
    pub hugepages: Vec<HugepagePool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepagePool {
    pub page_size_kib: u64,
    pub total: Fact<u64>,
    pub free: Fact<u64>,
}

pub fn probe(host: &Host) -> Memory {
    let meminfo = host.read("/proc/meminfo");
    let meminfo_field = |name: &str| -> Fact<u64> {
        match &meminfo {
            Ok(text) => meminfo_kib(text, name)
                .map(Fact::Known)
                .unwrap_or_else(|| Fact::Unknown(format!("/proc/meminfo has no readable `{name}`"))),
            Err(error) => Fact::Unknown(error.to_string()),
        }
    };
    let nodes = numbered_entries(host, "/sys/devices/system/node", "node").map(|numbers| {
        numbers
            .into_iter()
            .map(|node| {
                let dir = format!("/sys/devices/system/node/node{node}");
                let meminfo = host.read(&format!("{dir}/meminfo"));
                let field = |name: &str| match &meminfo {
                    Ok(text) => meminfo_kib(text, name)
                        .map(Fact::Known)
                        .unwrap_or_else(|| Fact::Unknown(format!("{dir}/meminfo has no readable `{name}`"))),
                    Err(error) => Fact::Unknown(error.to_string()),
                };
                NodeMemory {
                    node,
                    total_kib: field("MemTotal"),
                    free_kib: field("MemFree"),
                    hugepages: hugepage_pools(host, &format!("{dir}/hugepages")).unwrap_or_default(),
                }
            })
            .collect()
    });
    Memory {
        total_kib: meminfo_field("MemTotal"),
        available_kib: meminfo_field("MemAvailable"),
        nodes: nodes.into(),
        hugepages: hugepage_pools(host, "/sys/kernel/mm/hugepages").into(),
        transparent_hugepages: host
            .read("/sys/kernel/mm/transparent_hugepage/enabled")
            .map_err(|e| e.to_string())
            .and_then(|text| {
                selected_choice(&text)
                    .ok_or_else(|| format!("transparent_hugepage/enabled: no [choice] in `{}`", text.trim()))
            })
            .into(),
        transparent_hugepages_shmem: host
            .read("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
            .map_err(|e| e.to_string())
            .and_then(|text| {
                selected_choice(&text).ok_or_else(|| {
                    format!("transparent_hugepage/shmem_enabled: no [choice] in `{}`", text.trim())
                })
            })
            .into(),
    }
}

/// The host's default hugepage size in KiB (`Hugepagesize:` in `/proc/meminfo`): what libvirt
/// uses for `<hugepages/>` without a size. [`recommended::DEFAULT_HUGEPAGE_KIB`] when it cannot
/// be read.
pub fn default_hugepage_kib(host: &Host) -> u64 {
    host.read("/proc/meminfo")
        .ok()
        .and_then(|text| meminfo_kib(&text, "Hugepagesize"))
        .unwrap_or(recommended::DEFAULT_HUGEPAGE_KIB)
}

/// Reads `MemTotal:  123 kB` from /proc/meminfo, or `Node 0 MemTotal:  123 kB` from a node's.
pub fn meminfo_kib(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key.split_whitespace().last()? != name {
            return None;
        }
        let mut parts = value.split_whitespace();
        let number: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") | None => Some(number),
            Some(_) => None,
        }
    })
}

/// The bracketed word in sysfs choice files: `always [madvise] never` -> `madvise`.
pub fn selected_choice(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = start + text[start..].find(']')?;
    Some(text[start + 1..end].to_string())
}

fn hugepage_pools(host: &Host, dir: &str) -> Result<Vec<HugepagePool>, String> {
    let names = host.list(dir).map_err(|e| e.to_string())?;
    let mut pools: Vec<HugepagePool> = names
        .iter()
        .filter_map(|name| {
            let size = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            let count = |file: &str| -> Fact<u64> {
                let path = format!("{dir}/{name}/{file}");
                match host.read_trimmed(&path) {
                    Ok(text) => text.parse().map_err(|_| format!("{path}: `{text}` is not a count")).into(),
                    Err(error) => Fact::Unknown(error.to_string()),
                }
            };
            Some(HugepagePool {
                page_size_kib: size,
                total: count("nr_hugepages"),
                free: count("free_hugepages"),
            })
        })
        .collect();
    pools.sort_by_key(|pool| pool.page_size_kib);
    Ok(pools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_global_and_per_node() {
        assert_eq!(meminfo_kib("MemTotal:       24000000 kB\nMemFree: 5 kB\n", "MemTotal"), Some(24_000_000));
        assert_eq!(meminfo_kib("Node 1 MemFree:  777 kB\n", "MemFree"), Some(777));
        assert_eq!(meminfo_kib("MemTotal: lots kB\n", "MemTotal"), None);
        assert_eq!(meminfo_kib("HugePages_Total: 3\n", "HugePages_Total"), Some(3));
    }

    #[test]
    fn choice_files() {
        assert_eq!(selected_choice("always [madvise] never\n").as_deref(), Some("madvise"));
        assert_eq!(selected_choice("always madvise never"), None);
        assert_eq!(selected_choice("]["), None);
    }
}
