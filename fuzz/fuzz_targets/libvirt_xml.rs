//! libvirt domain XML reader, then every rule over whatever it reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = kvmtune::config::libvirt::parse("fuzz.xml", text) {
        let source = kvmtune::values::SourceText::new("fuzz.xml", text);
        let options = kvmtune::analysis::check::CheckOptions::default();
        let report = kvmtune::analysis::check::check(&config, &source, &options);
        let _ = kvmtune::output::diagnostics::render_text(&report, &source);
    }
});
