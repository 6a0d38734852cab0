//! Proxmox VM config reader.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = kvmtune::config::proxmox::parse("fuzz.conf", text);
});
