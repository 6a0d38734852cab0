//! The shipped alerting rules and Grafana dashboard (`monitoring/`), checked with Prometheus'
//! own tool and against the metrics the exporter really serves: `promtool check rules` on the
//! alerts and on every dashboard query (as recording rules, Grafana's `$instance` filled in),
//! and every `kvmtune_*` name they use must be one the exporter registers; the dashboard
//! against Grafana's own schema of dashboards (`@grafana/schema`, the TypeScript types Grafana
//! generates from its CUE kinds), with the TypeScript compiler as the checker. Grafana's server
//! does not run here; its schema does. That the exporter serves these names to a real
//! Prometheus is `live_cli.rs`'s.

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
    let host = kvmtune::host::probe(&kvmtune::host::Host::live());
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

/// `monitoring/schema-check`, with `@grafana/schema` and `tsc` installed by `npm ci`
/// (scripts/test.sh does it).
fn schema_check() -> PathBuf {
    let dir = monitoring().join("schema-check");
    assert!(
        dir.join("node_modules/@grafana/schema/package.json").is_file()
            && dir.join("node_modules/.bin/tsc").is_file(),
        "{}/node_modules is missing: run `npm ci --prefix {}` (scripts/test.sh does)",
        dir.display(),
        dir.display()
    );
    dir
}

/// The module of `@grafana/schema` that types the options of panel plugin `panel_type`, from the
/// package's export map (`./dist/esm/raw/composable/<type>/panelcfg/x/<Name>PanelCfg_types.gen`).
fn panel_options_module(exports: &serde_json::Value, panel_type: &str) -> Option<String> {
    let prefix = format!("./dist/esm/raw/composable/{panel_type}/panelcfg/x/");
    exports
        .as_object()?
        .keys()
        .find(|key| key.starts_with(&prefix))
        .map(|key| format!("@grafana/schema{}", &key[1..]))
}

/// Compiles `source` with the schema check's TypeScript; Err is the compiler's report.
fn typecheck(source: &str) -> Result<(), String> {
    let packages = schema_check();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(packages.join("node_modules"), dir.path().join("node_modules")).unwrap();
    std::fs::write(dir.path().join("check.ts"), source).unwrap();
    std::fs::write(
        dir.path().join("tsconfig.json"),
        r#"{"compilerOptions": {"strict": true, "noEmit": true, "module": "nodenext",
            "moduleResolution": "nodenext", "target": "es2022", "skipLibCheck": true},
            "files": ["check.ts"]}"#,
    )
    .unwrap();
    let output = Command::new(packages.join("node_modules/.bin/tsc"))
        .args(["-p", "."])
        .current_dir(dir.path())
        .output()
        .expect("tsc runs (Node.js is on this machine)");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
    }
}

/// A schema type as JSON spells it: Grafana's string enums (`SortOrder.Descending`) are nominal in
/// TypeScript, but a JSON file holds their values (`"desc"`); `${E}` is the union of those
/// values. Numbers, numeric enums and booleans stay as they are; objects and arrays map through,
/// keeping which fields are optional and which exist at all.
const JSON_OF: &str = "type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T \
    : T extends Array<infer U> ? Array<Json<U>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T;\n";

/// The dashboard as a TypeScript module: the whole JSON as an object literal typed as
/// Grafana's `Dashboard` (through [`JSON_OF`]) (an object literal gets excess-property checks, so a misspelt or
/// unknown field is an error, as is a value outside an enum), and each panel's `options` as its
/// panel plugin's `Options`. A panel type for which Grafana ships no options schema is an
/// error too.
fn dashboard_module(dashboard_json: &str) -> Result<String, String> {
    let dashboard: serde_json::Value = serde_json::from_str(dashboard_json).map_err(|e| e.to_string())?;
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(schema_check().join("node_modules/@grafana/schema/package.json")).unwrap(),
    )
    .unwrap();
    let mut module = String::from(
        "import type { Dashboard } from '@grafana/schema/dist/esm/raw/dashboard/x/Dashboard_types.gen';\n",
    );
    module += JSON_OF;
    module += &format!("export const dashboard: Json<Dashboard> = {dashboard_json};\n");
    for (index, panel) in dashboard["panels"].as_array().into_iter().flatten().enumerate() {
        let panel_type = panel["type"].as_str().unwrap_or_default();
        if panel_type == "row" {
            continue;
        }
        let options = panel_options_module(&manifest["exports"], panel_type).ok_or_else(|| {
            format!("panel {index}: Grafana ships no options schema for panel type {panel_type:?}")
        })?;
        let value = panel.get("options").map_or_else(|| "{}".to_string(), ToString::to_string);
        module += &format!("export const options{index}: Json<import('{options}').Options> = {value};\n");
    }
    Ok(module)
}

#[test]
fn the_dashboard_passes_grafanas_own_dashboard_schema() {
    let text = std::fs::read_to_string(monitoring().join("kvmtune-dashboard.json")).unwrap();
    let module = dashboard_module(&text).unwrap_or_else(|why| panic!("kvmtune-dashboard.json: {why}"));
    if let Err(report) = typecheck(&module) {
        panic!("kvmtune-dashboard.json does not match Grafana's dashboard schema:\n{report}");
    }
    // The check can fail: the same dashboard with a misspelt panel field, an unknown variable
    // refresh mode, an unknown tooltip sort order and an unknown panel type is rejected for each.
    let broken = [
        text.replacen("\"gridPos\"", "\"gridpos\"", 1),
        text.replacen("\"refresh\": 2", "\"refresh\": 7", 1),
        text.replacen("\"sort\": \"desc\"", "\"sort\": \"down\"", 1),
    ];
    for (index, broken) in broken.iter().enumerate() {
        assert_ne!(broken, &text, "broken variant {index} changes nothing");
        let report =
            typecheck(&dashboard_module(broken).unwrap()).expect_err(&format!("variant {index} passes"));
        assert!(report.contains("error TS"), "{report}");
    }
    let unknown_panel = text.replacen("\"type\": \"stat\"", "\"type\": \"stats\"", 1);
    assert!(dashboard_module(&unknown_panel).unwrap_err().contains("\"stats\""));
}
