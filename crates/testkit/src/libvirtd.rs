//! libvirt's own XML-to-argv translation (`virsh domxml-to-native qemu-argv`) from a libvirtd
//! started by hand for the test, as ../shared/test-environment.md 3b describes. It runs in a
//! private mount namespace with its state directories on tmpfs, so it neither sees nor
//! disturbs a libvirtd of the host, and in a private network namespace: libvirt creates a tap
//! device (`vnet0`, ...) for a domain's `<interface>` even when it only translates the XML, and
//! those belong to the namespace, not to this machine, and cannot clash between two tests that
//! run at once. It is killed when the translations are done, after the cgroups libvirt made for
//! its domains on this machine are removed. Only its capability cache outlives it, in the
//! system temp directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Starts the private libvirtd, runs `$BODY` (a shell snippet, with `$OUT` a directory of the
/// caller's), and stops the daemon.
const SCRIPT: &str = r#"
set -u
# /run holds libvirtd's pid file and sockets; a tmpfs there keeps them from any other libvirtd.
for dir in /run /var/lib/libvirt /var/log/libvirt /etc/libvirt/qemu; do
  mkdir -p "$dir" && mount -t tmpfs tmpfs "$dir" || exit 90
done
# libvirtd probes QEMU's capabilities at its first start (about a minute on this nested host)
# and caches them; the cache is kept between test runs.
mkdir -p "$CACHE" /var/cache/libvirt && mount --bind "$CACHE" /var/cache/libvirt || exit 90
# /dev/kvm is root-only here (no udev to give it to the kvm group). When libvirt's QEMU user
# cannot open it, libvirt takes its cached capabilities for stale at every call and probes QEMU
# again (about a minute each). QEMU as root, in this namespace only, keeps the cache valid.
# No per-domain /dev namespace either: from inside this mount namespace it would not carry
# /dev/kvm over, and a domain of type kvm would find no KVM (bench/exits-record.sh).
{ cat /etc/libvirt/qemu.conf; echo 'user = "root"'; echo 'group = "root"'; echo 'namespaces = []'; } >/run/qemu.conf
mount --bind /run/qemu.conf /etc/libvirt/qemu.conf || exit 90
/usr/sbin/libvirtd >"$OUT/libvirtd.log" 2>&1 &
daemon=$!
ready=
for _ in $(seq 100); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { kill "$daemon"; exit 91; }
sh -c "$BODY"
# libvirt makes each domain a cgroup under machine/ in this machine's cgroup tree (in every v1
# hierarchy), and leaves it there when the daemon goes: domains still running are destroyed,
# then those cgroups removed, again while a QEMU just destroyed still holds its own. Another
# test's running domain keeps its cgroups, and that test removes them when it ends.
for domain in $(virsh -c qemu:///system list --name 2>/dev/null); do
  virsh -c qemu:///system destroy "$domain" >/dev/null 2>&1
done
for _ in $(seq 20); do
  find /sys/fs/cgroup/*/machine* /sys/fs/cgroup/machine* -depth -type d -exec rmdir {} \; 2>/dev/null
  ls -d /sys/fs/cgroup/*/machine* /sys/fs/cgroup/machine* >/dev/null 2>&1 || break
  sleep 0.5
done
kill "$daemon"; wait "$daemon" 2>/dev/null
exit 0
"#;

/// Runs `body` (shell) against a libvirtd of the test's own, in private mount and network
/// namespaces with its state on tmpfs (its domain definitions and tap devices vanish with it),
/// with `OUT` set to `dir`.
pub fn with_private_libvirtd(dir: &Path, body: &str) {
    let status = Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "sh", "-c", SCRIPT])
        .env("OUT", dir)
        .env("BODY", body)
        .env("CACHE", std::env::temp_dir().join("kvmtune-test-libvirt-cache"))
        .status()
        .expect("unshare (util-linux) runs");
    let log = std::fs::read_to_string(dir.join("libvirtd.log")).unwrap_or_default();
    assert!(status.success(), "the private libvirtd did not come up ({status}):\n{log}");
}

/// The QEMU command line libvirt makes of each domain XML, or its error.
pub fn domxml_to_native(xmls: &[String]) -> Vec<Result<String, String>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths: Vec<PathBuf> = xmls
        .iter()
        .enumerate()
        .map(|(index, xml)| {
            let path = dir.path().join(format!("{index:04}.xml"));
            std::fs::write(&path, xml).expect("write XML");
            path
        })
        .collect();
    with_private_libvirtd(
        dir.path(),
        r#"for xml in "$OUT"/*.xml; do
  virsh -c qemu:///system domxml-to-native qemu-argv --xml "$xml" >"$xml.argv" 2>"$xml.err"
done"#,
    );
    paths.iter().map(|path| read_result(path)).collect()
}

fn read_result(xml: &Path) -> Result<String, String> {
    let argv = std::fs::read_to_string(xml.with_extension("xml.argv")).unwrap_or_default();
    if argv.trim().is_empty() {
        Err(std::fs::read_to_string(xml.with_extension("xml.err")).unwrap_or_default())
    } else {
        Ok(argv)
    }
}
