//! The guest program `kvmtune-guest` (crates/kvmtune-guest), built by `scripts/build-guest.sh`
//! into `target/guest`, and run here: natively (the Linux build) or under Wine (the Windows
//! build).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Whether the Windows build is wanted too (it needs Debian's Rust and MinGW, which
/// scripts/test.sh installs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builds {
    Linux,
    LinuxAndWindows,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/guest`, with the builds asked for made (once per test process).
pub fn build_dir(builds: Builds) -> PathBuf {
    static BUILT: OnceLock<i32> = OnceLock::new();
    let status = *BUILT.get_or_init(|| {
        let output = Command::new(repo().join("scripts/build-guest.sh"))
            .output()
            .expect("scripts/build-guest.sh runs");
        if !matches!(output.status.code(), Some(0 | 3)) {
            panic!("scripts/build-guest.sh failed:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        output.status.code().unwrap_or(1)
    });
    if builds == Builds::LinuxAndWindows && status != 0 {
        panic!(
            "no Windows build of kvmtune-guest: scripts/build-guest.sh found no Windows toolchain (scripts/test.sh installs it)"
        );
    }
    repo().join("target/guest")
}

/// Runs the Windows build under Wine, in a Wine prefix of its own under `prefix`.
pub fn run_under_wine(exe: &Path, prefix: &Path, args: &[&str]) -> Output {
    Command::new("/usr/lib/wine/wine64")
        .arg(exe)
        .args(args)
        .env("WINEPREFIX", prefix)
        // Wine keeps its server's directory in TMPDIR and leaves it there; inside the prefix it
        // goes when the caller removes the prefix.
        .env("TMPDIR", prefix)
        .env("WINEDEBUG", "-all")
        .output()
        .expect("wine64 (scripts/test.sh installs it)")
}
