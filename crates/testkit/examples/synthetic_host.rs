//! Writes a synthetic host's sysfs tree, for trying kvmtune by hand:
//! `cargo run -q -p kvmtune-testkit --example synthetic_host -- ryzen-7950x3d /tmp/host`, then
//! `kvmtune tune --host-root /tmp/host`.

use kvmtune_testkit::synthetic::SyntheticHost;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(dir)) = (args.get(1), args.get(2)) else {
        let names: Vec<&str> = SyntheticHost::all().iter().map(|h| h.name).collect();
        eprintln!("usage: synthetic_host NAME DIR   (NAME: {})", names.join(", "));
        std::process::exit(2);
    };
    let Some(host) = SyntheticHost::all().into_iter().find(|h| h.name == name) else {
        eprintln!("no synthetic host {name}");
        std::process::exit(2);
    };
    host.write(std::path::Path::new(dir));
}
