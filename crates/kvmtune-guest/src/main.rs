//! `kvmtune-guest`: reads what this guest sees of its virtual machine and prints it, as text or
//! as the JSON `kvmtune verify` reads (docs/guest-schema.md). It changes nothing in the guest.

#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_arch = "x86_64"))]
compile_error!("kvmtune-guest reads x86 CPUID leaves: build it for x86_64");

mod cpuid;
mod json;
#[cfg(target_os = "linux")]
mod linux;
mod pci;
mod text;
mod timing;
#[cfg(windows)]
mod windows;

#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(windows)]
use windows as platform;

use json::Json;

/// Bumped only when a member changes meaning or disappears; new members may appear.
const SCHEMA_VERSION: u32 = 1;

const USAGE: &str = "usage: kvmtune-guest [--format text|json]

Reads what this guest sees of its virtual machine: CPUID (the hypervisor and Hyper-V leaves,
bit by bit), the processors, caches and NUMA nodes as the OS counts them, the clock and what
one read of it costs, each PCI device's interrupt mode and BARs, and the page file. Changes
nothing. `kvmtune verify` on the host runs it through the QEMU guest agent, or reads its JSON
(--format json) saved to a file.";

fn report() -> Json {
    let start = std::time::Instant::now();
    let mut out = Json::object()
        .with("schema_version", SCHEMA_VERSION)
        .with(
            "program",
            Json::object().with("name", "kvmtune-guest").with("version", env!("CARGO_PKG_VERSION")),
        )
        .with("os", platform::os())
        .with("cpuid", cpuid::read())
        .with("topology", platform::topology())
        .with("time", platform::time())
        .with("pci", platform::pci())
        .with("page_file", platform::page_file());
    out = out.with("collected_in_ms", start.elapsed().as_millis() as u64);
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut format = "text";
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            "-V" | "--version" => {
                println!("kvmtune-guest {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            "--format" if i + 1 < args.len() => {
                format = match args[i + 1].as_str() {
                    "text" => "text",
                    "json" => "json",
                    other => usage_error(&format!("--format takes text or json, not '{other}'")),
                };
                i += 1;
            }
            "--format=json" => format = "json",
            "--format=text" => format = "text",
            other => usage_error(&format!("unknown argument '{other}'")),
        }
        i += 1;
    }
    let report = report();
    let mut out = String::new();
    if format == "json" {
        report.render(0, &mut out);
        out.push('\n');
    } else {
        text::render(&report, &mut out);
    }
    print!("{out}");
}

fn usage_error(message: &str) -> ! {
    eprintln!("kvmtune-guest: {message}\n\n{USAGE}");
    std::process::exit(2);
}
