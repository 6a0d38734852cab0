//! Exit-statistics readers and the diagnosis over whatever they read.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(profiles) = kvmtune::exits::parse("fuzz.txt", text) {
        for profile in &profiles {
            let _ = kvmtune::analysis::exit_diagnosis::diagnose(profile);
            let _ = kvmtune::analysis::exit_compare::compare(profile, profile);
        }
    }
});
