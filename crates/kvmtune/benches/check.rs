//! `cargo bench -p kvmtune --bench check`: how long `check` takes on one typical domain, and
//! how many configs per second it reads and checks over the whole corpus (libvirt XML, QEMU
//! command lines and Proxmox configs), in process, without host facts.
//!
//! Not a test: it asserts nothing and prints its figures.

use std::time::Instant;

use kvmtune::analysis::check::{CheckOptions, check};
use kvmtune::values::SourceText;

fn check_once(name: &str, text: &str) -> usize {
    let Ok(config) = kvmtune::config::read(name, text) else { return 0 };
    let source = SourceText::new(name, text);
    let options = CheckOptions::default();
    check(&config, &source, &options).diagnostics.len()
}

fn main() {
    let corpus = std::env::var_os("KVMTUNE_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    let mut files = Vec::new();
    for dir in ["user-xml", "qemu-cmdlines", "proxmox", "libvirt", "libvirt/qemuxml2argvdata"] {
        let Ok(entries) = std::fs::read_dir(corpus.join(dir)) else {
            panic!("corpus missing at {}", corpus.display())
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.to_string_lossy().to_string();
            if path.is_file() && !name.ends_with(".args") && !name.ends_with(".cmd") {
                files.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let typical =
        files.iter().find(|(name, _)| name.ends_with("grishi__vfio__win11.xml")).expect("typical domain");

    let rounds = 2000;
    let start = Instant::now();
    let mut findings = 0;
    for _ in 0..rounds {
        findings += check_once(&typical.0, &typical.1);
    }
    let per_domain = start.elapsed() / rounds;
    println!(
        "one typical domain ({} bytes, {} findings): {:.1} us per read+check",
        typical.1.len(),
        findings / rounds as usize,
        per_domain.as_secs_f64() * 1e6
    );

    let passes = 200;
    let start = Instant::now();
    for _ in 0..passes {
        for (name, text) in &files {
            findings += check_once(name, text);
        }
    }
    let elapsed = start.elapsed();
    let configs = files.len() * passes;
    println!(
        "whole corpus: {} configs x {passes} passes in {:.2} s = {:.0} configs/s",
        files.len(),
        elapsed.as_secs_f64(),
        configs as f64 / elapsed.as_secs_f64()
    );
    std::hint::black_box(findings);
}
