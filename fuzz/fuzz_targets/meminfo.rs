//! meminfo lines, sysfs choice files and cache sizes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = kvmtune::host::memory::meminfo_kib(text, "MemTotal");
    let _ = kvmtune::host::memory::selected_choice(text);
    let _ = kvmtune::host::topology::parse_size_kib(text);
});
