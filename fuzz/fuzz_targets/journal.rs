//! Host-change journals as a kill or a power cut may leave them: reading one never panics, and
//! what reads back is in the order `Journal::apply` writes (every change but the last done, and
//! all of them once the run is complete).
#![no_main]
use std::path::Path;

use kvmtune::hostchange::journal::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(journal) = parse(Path::new("fuzz.journal"), text, "this-boot") {
        let settled = journal.changes.len().saturating_sub(usize::from(!journal.complete));
        assert!(journal.changes[..settled].iter().all(|c| c.done));
    }
});
