//! /proc/cmdline.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = kvmtune::host::kernel::parse_cmdline(text);
});
