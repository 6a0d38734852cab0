//! Writes a test guest's boot sector to stdout, for scripts (bench/exits-record.sh):
//! `cargo run -q -p kvmtune-testkit --example boot_sector -- port-io > boot.img`.

use std::io::Write;

use kvmtune_testkit::guest::{GuestKind, boot_sector};

fn main() {
    let kind = match std::env::args().nth(1).as_deref() {
        Some("port-io") => GuestKind::PortIo,
        Some("halt") => GuestKind::Halt,
        Some("mmio") => GuestKind::Mmio,
        other => {
            eprintln!("usage: boot_sector port-io|halt|mmio (got {other:?})");
            std::process::exit(2);
        }
    };
    std::io::stdout().write_all(&boot_sector(kind)).expect("stdout");
}
