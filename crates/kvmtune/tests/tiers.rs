//! Not a test: says which test tiers this run left out, and how to run them. Plain `cargo test`
//! runs what a fresh clone can run alone; the suites that need the corpus, root, QEMU, libvirt,
//! the lab guest or other system tools are each behind a feature (Cargo.toml says which), and
//! `scripts/test.sh` runs them all.

fn main() {
    let tiers = [
        ("corpus", cfg!(feature = "corpus"), "the corpus in ../shared/corpus (or $KVMTUNE_CORPUS)"),
        ("root", cfg!(feature = "root"), "root (/dev/kvm, tracefs, a private libvirtd)"),
        ("qemu", cfg!(feature = "qemu"), "QEMU and its guest agent"),
        ("libvirt", cfg!(feature = "libvirt"), "libvirt"),
        ("lab", cfg!(feature = "lab"), "the lab guest (scripts/lab)"),
        ("tools", cfg!(feature = "tools"), "hwloc, Chromium, Prometheus, tmux, Node.js, cpuid, Wine"),
    ];
    let left: Vec<&(&str, bool, &str)> = tiers.iter().filter(|(_, on, _)| !on).collect();
    if left.is_empty() {
        println!("test tiers: all ran");
        return;
    }
    let features: Vec<&str> = left.iter().map(|(name, _, _)| *name).collect();
    let needs: Vec<&str> = left.iter().map(|(_, _, what)| *what).collect();
    println!(
        "test tiers: left out the tests that need {}; run them with `cargo test --workspace --all-features` (or `--features {}`), or all of them as CI does with scripts/test.sh",
        needs.join(", "),
        features.join(",")
    );
}
