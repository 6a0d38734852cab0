//! The findings on every real-world config in the corpus, as golden files: a change in what
//! kvmtune says about a real VM shows up in review. Set `KVMTUNE_UPDATE_SNAPSHOTS=1` to rewrite
//! them after an intended change. Checked without host facts, so host-aware rules are skipped.

use std::path::Path;

use kvmtune::analysis::check::{CheckOptions, check};
use kvmtune::values::SourceText;

fn findings_of_directory(dir: &str, golden: &str) {
    let paths: Vec<_> = kvmtune_testkit::corpus_files(dir)
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".cmd") && !p.to_string_lossy().ends_with(".md"))
        .collect();
    let mut out = String::new();
    for path in paths {
        let name = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(&path).unwrap();
        match kvmtune::config::read(&name, &text) {
            Err(error) => out.push_str(&format!("{name}: error: {error}\n")),
            Ok(config) => {
                let source = SourceText::new(name.clone(), text);
                let options = CheckOptions::default();
                let report = check(&config, &source, &options);
                if report.diagnostics.is_empty() {
                    out.push_str(&format!("{name}: clean\n"));
                }
                for d in &report.diagnostics {
                    out.push_str(&format!("{}\n", kvmtune::output::diagnostics::one_line(d, &name)));
                }
            }
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(golden);
    if std::env::var_os("KVMTUNE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &out).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == out,
        "findings changed for {dir}; review and rerun with KVMTUNE_UPDATE_SNAPSHOTS=1:\n{out}"
    );
}

#[test]
fn user_xml_findings() {
    findings_of_directory("user-xml", "user-xml.findings");
}

#[test]
fn qemu_command_line_findings() {
    findings_of_directory("qemu-cmdlines", "qemu-cmdlines.findings");
}

#[test]
fn proxmox_findings() {
    findings_of_directory("proxmox", "proxmox.findings");
}
