//! QEMU command-line reader.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = kvmtune::config::qemu::parse("fuzz.sh", text);
});
