//! meminfo lines, sysfs choice files, sizes in every unit style, PCI addresses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = kvmtune::host::memory::meminfo_kib(text, "MemTotal");
    let _ = kvmtune::host::memory::selected_choice(text);
    for units in [kvmtune::values::size::Units::Binary, kvmtune::values::size::Units::Libvirt] {
        let _ = kvmtune::values::size::parse_kib(text, "B", units);
    }
    let _ = kvmtune::values::PciAddress::parse_lenient(text);
});
