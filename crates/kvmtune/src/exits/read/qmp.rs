//! QMP `query-stats` replies (`{"return": [{"provider": "kvm", "qom-path": ..., "stats":
//! [{"name", "value"}]}]}`, QEMU 7.1 and later; qapi/stats.json): KVM's binary statistics per
//! vCPU. The cumulative counters are summed over vCPUs into one profile; histograms are left
//! out.

use std::collections::BTreeMap;

use crate::exits::model::{ExitProfile, ExitRow};
use crate::exits::read::text::Pasted;
use crate::exits::read::{ExitParseError, Format, settle_isa};

pub const FORMAT: Format = Format { name: "QMP query-stats", sniff, read };

/// JSON that is not one of kvmtune's own profiles (those are read by `saved`).
fn sniff(pasted: &Pasted) -> bool {
    let start = pasted.text.trim_start();
    (start.starts_with('{') || start.starts_with('[')) && !(super::saved::FORMAT.sniff)(pasted)
}

fn read(pasted: &Pasted) -> Result<Vec<ExitProfile>, ExitParseError> {
    let value: serde_json::Value = serde_json::from_str(pasted.text).map_err(|e| ExitParseError::BadRow {
        path: pasted.path.to_string(),
        line: e.line() as u32,
        column: e.column() as u32,
        message: format!("not JSON: {e}"),
    })?;
    let entries = value.get("return").unwrap_or(&value);
    let stats = vcpu_stats(entries, &[]);
    if stats.is_empty() {
        return Ok(Vec::new());
    }
    let mut profile = ExitProfile::new("QMP query-stats", "KVM vCPU stats");
    profile.line = 1;
    profile.rows = stats.into_iter().map(|(name, per_vcpu)| ExitRow::per_vcpu(name, per_vcpu)).collect();
    settle_isa(&mut profile);
    Ok(vec![profile])
}

/// The integer statistics of a `query-stats` reply (`[{"provider", "qom-path", "stats": [{"name",
/// "value"}]}]`), per vCPU: in the order of `qom_paths` where given, else in order of
/// appearance. Histograms and flags are left out.
pub fn vcpu_stats(entries: &serde_json::Value, qom_paths: &[&str]) -> BTreeMap<String, Vec<u64>> {
    let mut order: Vec<String> = qom_paths.iter().map(|p| p.to_string()).collect();
    let mut stats: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for entry in entries.as_array().into_iter().flatten() {
        let path = entry.get("qom-path").and_then(|p| p.as_str()).unwrap_or("").to_string();
        let index = match order.iter().position(|p| *p == path) {
            Some(index) => index,
            None => {
                order.push(path);
                order.len() - 1
            }
        };
        for stat in entry.get("stats").and_then(|s| s.as_array()).into_iter().flatten() {
            if let (Some(name), Some(value)) =
                (stat.get("name").and_then(|n| n.as_str()), stat.get("value").and_then(|v| v.as_u64()))
            {
                let per_vcpu = stats.entry(name.to_string()).or_default();
                if per_vcpu.len() <= index {
                    per_vcpu.resize(index + 1, 0);
                }
                per_vcpu[index] = per_vcpu[index].saturating_add(value);
            }
        }
    }
    for per_vcpu in stats.values_mut() {
        per_vcpu.resize(order.len(), 0);
    }
    stats
}
