//! The shipped alerting rules and Grafana dashboard (`monitoring/`), checked with Prometheus'
//! own tool and against the metrics the exporter really serves: `promtool check rules` on the
//! alerts and on every dashboard query (as recording rules, Grafana's `$instance` filled in),
//! and every `kvmtune_*` name they use must be one the exporter registers. That the exporter
//! serves these names to a real Prometheus is `live_cli.rs`'s.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../monitoring")
}

fn promtool_check_rules(file: &Path) {
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(file)
        .output()
        .expect("promtool (Debian's prometheus package, installed by scripts/test.sh)");
    assert!(
        output.status.success(),
        "promtool check rules {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every metric name the exporter registers (counters with `_total`), as it would serve them
/// on this host.
fn served_names() -> BTreeSet<String> {
    let host = kvmtune::host::probe(&kvmtune::host::LiveHost);
    kvmtune::output::metrics::metric_names(&host).into_iter().collect()
}

fn used_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("kvmtune_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_alerting_rules_pass_promtool_and_use_only_served_metrics() {
    let rules = monitoring().join("kvmtune-alerts.yml");
    promtool_check_rules(&rules);
    let served = served_names();
    let text = std::fs::read_to_string(&rules).unwrap();
    let exprs: String = text.lines().filter(|l| l.trim_start().starts_with("expr:")).collect();
    let unknown: Vec<String> = used_names(&exprs).difference(&served).cloned().collect();
    assert!(
        unknown.is_empty(),
        "the alerts use metrics the exporter does not serve: {unknown:?} (served: {served:?})"
    );
}

#[test]
fn every_dashboard_query_is_valid_promql_over_served_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring().join("kvmtune-dashboard.json")).unwrap())
            .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().unwrap().replace("$instance", ".*"))
        .collect();
    assert!(exprs.len() >= 6, "{exprs:?}");
    let served = served_names();
    let unknown: Vec<String> = used_names(&exprs.join(" ")).difference(&served).cloned().collect();
    assert!(unknown.is_empty(), "the dashboard uses metrics the exporter does not serve: {unknown:?}");
    // Each query as a recording rule: promtool parses it as Prometheus would.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, expr) in exprs.iter().enumerate() {
        rules += &format!(
            "      - record: dashboard:query{index}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        );
    }
    std::fs::File::create(&file).unwrap().write_all(rules.as_bytes()).unwrap();
    promtool_check_rules(&file);
}
