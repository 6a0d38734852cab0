//! `kvmtune hook run` as libvirt calls it, on a host laid out in a temp dir (the hidden
//! `--root` and `--journal-dir`): which domains it acts on, release, the reconcile after a
//! daemon restart, and its one-line refusals. The hook with a real libvirtd and a real kernel
//! is `hook_lab.rs`'s.

use std::path::Path;
use std::process::Output;

use kvmtune_testkit::put;

fn kvmtune(args: &[&str], stdin: &str) -> Output {
    kvmtune_testkit::run_with_stdin(Path::new(env!("CARGO_BIN_EXE_kvmtune")), args, stdin)
}

const POOL: &str = "sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages";

/// Four CPUs on two nodes, 2 MiB hugepages on node 1, none allocated.
fn host() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    kvmtune_testkit::put_small_host(root);
    put(root, POOL, "0\n");
    put(root, "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/free_hugepages", "0\n");
    dir
}

fn domain(name: &str, host_request: &str) -> String {
    format!(
        r#"<domain type='kvm'><name>{name}</name>
  <metadata>{host_request}</metadata>
  <memory unit='KiB'>65536</memory><vcpu>2</vcpu>
  <memoryBacking><hugepages/></memoryBacking>
  <cputune><vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='3'/></cputune>
  <numatune><memory mode='strict' nodeset='1'/></numatune><os><type>hvm</type></os></domain>"#
    )
}

const HUGEPAGES: &str = "<kvmtune:host xmlns:kvmtune='https://kvmtune.dev/xmlns/libvirt/host/1'><kvmtune:hugepages/></kvmtune:host>";

/// `hook run DOMAIN OPERATION SUB -` on the host in `root`, the XML on stdin.
fn hook(root: &Path, domain: &str, operation: &str, sub: &str, xml: &str) -> Output {
    let root = root.to_str().unwrap();
    let journal_dir = format!("{root}/run/kvmtune");
    kvmtune(&["hook", "run", domain, operation, sub, "-", "--root", root, "--journal-dir", &journal_dir], xml)
}

fn journals(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("run/kvmtune"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".journal"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path)).unwrap()
}

#[test]
fn a_domain_without_the_metadata_gets_nothing_done_at_any_operation() {
    let host = host();
    // Not even XML kvmtune could read: libvirt's domain is its own business.
    for xml in [domain("plain", ""), "<domain><hyperv><bogus/></hyperv>".to_string()] {
        for (operation, sub) in
            [("prepare", "begin"), ("start", "begin"), ("release", "end"), ("reconnect", "begin")]
        {
            let output = hook(host.path(), "plain", operation, sub, &xml);
            assert_eq!(
                output.status.code(),
                Some(0),
                "{operation}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    assert!(journals(host.path()).is_empty());
    assert_eq!(read(host.path(), POOL), "0\n");
}

#[test]
fn prepare_and_release_make_and_undo_the_request_marked_as_the_hooks() {
    let host = host();
    let xml = domain("gaming", HUGEPAGES);
    let output = hook(host.path(), "gaming", "prepare", "begin", &xml);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(read(host.path(), POOL), "32");
    assert_eq!(journals(host.path()), ["gaming.host.journal"]);
    assert!(read(host.path(), "run/kvmtune/gaming.host.journal").contains(r#""by":"libvirt-hook""#));
    // A second start after a stop the hook never saw (libvirtd killed): the leftover goes first.
    let output = hook(host.path(), "gaming", "prepare", "begin", &xml);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(read(host.path(), POOL), "32");
    let output = hook(host.path(), "gaming", "release", "end", &xml);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(read(host.path(), POOL), "0\n");
    assert!(journals(host.path()).is_empty());
}

#[test]
fn reconnect_undoes_the_hooks_changes_of_domains_that_no_longer_run() {
    let host = host();
    let root = host.path();
    for name in ["gone", "runs"] {
        let output = hook(root, name, "prepare", "begin", &domain(name, HUGEPAGES));
        assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert_eq!(read(root, POOL), "64");
    // libvirt's pid file of a running domain, and its QEMU; `gone` left a pid file of a
    // process that is now something else.
    put(root, "/run/libvirt/qemu/runs.pid", "4242");
    put(root, "/proc/4242/cmdline", "/usr/bin/qemu-system-x86_64\0-name\0guest=runs,debug-threads=on\0");
    put(root, "/run/libvirt/qemu/gone.pid", "4343");
    put(root, "/proc/4343/cmdline", "/usr/bin/bash\0");
    let output = hook(root, "runs", "reconnect", "begin", &domain("runs", HUGEPAGES));
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(journals(root), ["runs.host.journal"]);
    assert_eq!(read(root, POOL), "32");
}

#[test]
fn a_request_the_host_cannot_meet_fails_in_one_line_and_a_hand_made_prepare_is_left_alone() {
    let host = host();
    let root = host.path();
    let bad_device = HUGEPAGES.replace(
        "<kvmtune:hugepages/>",
        "<kvmtune:hugepages/><kvmtune:vfio><kvmtune:device address='0000:0a:00.0'/></kvmtune:vfio>",
    );
    let bad_part = HUGEPAGES.replace("<kvmtune:hugepages/>", "<kvmtune:hugepage/>");
    for (xml, reason) in [
        (domain("gaming", &bad_device), "0000:0a:00.0"),
        (domain("gaming", &bad_part), "has no part <hugepage>"),
    ] {
        let output = hook(root, "gaming", "prepare", "begin", &xml);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("kvmtune: error: ") && stderr.contains(reason), "{stderr}");
        assert_eq!(read(root, POOL), "0\n");
        assert!(journals(root).is_empty());
    }
    // A VM prepared by hand is the user's: the hook does not take it over.
    let by_hand = kvmtune(
        &[
            "host",
            "prepare",
            "--name",
            "gaming",
            "--no-isolate",
            "--no-irqs",
            "--hugepages",
            "2M:2@1",
            "--apply",
            "--root",
            root.to_str().unwrap(),
            "--journal-dir",
            &format!("{}/run/kvmtune", root.display()),
        ],
        "",
    );
    assert_eq!(by_hand.status.code(), Some(0), "{}", String::from_utf8_lossy(&by_hand.stderr));
    let output = hook(root, "gaming", "prepare", "begin", &domain("gaming", HUGEPAGES));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("prepared by hand"));
    assert_eq!(read(root, POOL), "2");
    // Nor does it undo it when the domain stops.
    let output = hook(root, "gaming", "release", "end", &domain("gaming", HUGEPAGES));
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(journals(root), ["gaming.host.journal"]);
    assert_eq!(read(root, POOL), "2");
}
