//! Release numbers as programs print them (`qemu-system-x86_64 --version`, `uname -r`).
#![no_main]
use kvmtune::values::Version;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Some(version) = Version::find_in(text) {
        // What is printed parses back to the same release.
        assert_eq!(version.to_string().parse::<Version>(), Ok(version));
    }
});
