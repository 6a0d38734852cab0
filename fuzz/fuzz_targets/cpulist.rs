//! CPU lists and masks: parse, and what parses must print back to the same set.
#![no_main]
use kvmtune::values::CpuSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(set) = CpuSet::parse_list(text) {
        assert_eq!(CpuSet::parse_list(&set.to_string()).unwrap(), set);
    }
    let _ = CpuSet::parse_mask(text);
});
