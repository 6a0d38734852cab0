//! `kvmtune host` as a command, on a host laid out in a temp dir (the hidden `--root` and
//! `--journal-dir`): the domain read from stdin as the libvirt hook passes it, flags over the
//! domain, the dry run's output and exit codes (`tune`'s matching prepare line is in
//! `tune_cli.rs`). What the
//! changes do to a real kernel is `host_lab.rs`'s.

use std::path::Path;
use std::process::Output;

use kvmtune_testkit::put;

fn kvmtune(args: &[&str], stdin: &str) -> Output {
    kvmtune_testkit::run_with_stdin(Path::new(env!("CARGO_BIN_EXE_kvmtune")), args, stdin)
}

/// Four CPUs on two nodes, three IRQs, no cgroups (so `--no-isolate`), hugepages on node 1.
fn host() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    kvmtune_testkit::put_small_host(root);
    for irq in [0, 9, 24] {
        put(root, &format!("/proc/irq/{irq}/smp_affinity_list"), "0-3\n");
    }
    put(root, "/proc/irq/default_smp_affinity", "f\n");
    let pool = "/sys/devices/system/node/node1/hugepages/hugepages-2048kB";
    put(root, &format!("{pool}/nr_hugepages"), "0\n");
    put(root, &format!("{pool}/free_hugepages"), "0\n");
    dir
}

const DOMAIN: &str = r#"<domain type='kvm'><name>gaming</name><memory unit='KiB'>65536</memory><vcpu>2</vcpu>
  <memoryBacking><hugepages/></memoryBacking>
  <cputune><vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='3'/></cputune>
  <numatune><memory mode='strict' nodeset='1'/></numatune><os><type>hvm</type></os></domain>"#;

fn place(host: &Path) -> Vec<String> {
    let root = host.to_str().unwrap().to_string();
    vec!["--root".into(), root.clone(), "--journal-dir".into(), format!("{root}/run/kvmtune")]
}

fn args<'a>(first: &[&'a str], place: &'a [String]) -> Vec<&'a str> {
    first.iter().copied().chain(place.iter().map(String::as_str)).collect()
}

#[test]
fn a_domain_on_stdin_is_planned_and_nothing_is_written_without_apply() {
    let host = host();
    let place = place(host.path());
    let output = kvmtune(&args(&["host", "prepare", "--xml", "-", "--no-isolate"], &place), DOMAIN);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.starts_with("VM gaming: CPUs 2-3, host keeps 0-1"), "{text}");
    // 64 MiB of 2 MiB pages on node 1, from <memory>, <memoryBacking> and <numatune>.
    assert!(text.contains("node1/hugepages/hugepages-2048kB/nr_hugepages: 0 → 32"), "{text}");
    assert!(text.contains("/proc/irq/24/smp_affinity_list: 0-3 → 0-1"), "{text}");
    assert!(text.contains("/proc/irq/default_smp_affinity: f → 3"), "{text}");
    assert!(!host.path().join("run/kvmtune").exists(), "a dry run made the journal directory");
    assert_eq!(std::fs::read_to_string(host.path().join("proc/irq/24/smp_affinity_list")).unwrap(), "0-3\n");
}

#[test]
fn flags_override_the_domain_and_apply_release_status_round_trip() {
    let host = host();
    let place = place(host.path());
    let prepare = args(
        &[
            "host",
            "prepare",
            "--xml",
            "-",
            "--no-isolate",
            "--name",
            "other",
            "--cpus",
            "3",
            "--hugepages",
            "2M:4@1",
            "--apply",
        ],
        &place,
    );
    let output = kvmtune(&prepare, DOMAIN);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let read = |path: &str| std::fs::read_to_string(host.path().join(path)).unwrap();
    assert_eq!(read("proc/irq/9/smp_affinity_list"), "0-2");
    assert_eq!(read("sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"), "4");

    let status = kvmtune(&args(&["host", "status", "--format", "json"], &place), "");
    let journals: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(journals[0]["vm"], "other");
    assert_eq!(journals[0]["cpus"], "3");
    assert_eq!(journals[0]["complete"], true);

    let again = kvmtune(&prepare, DOMAIN);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has changes applied"));

    let release = kvmtune(&args(&["host", "release", "other"], &place), "");
    assert_eq!(release.status.code(), Some(0), "{}", String::from_utf8_lossy(&release.stderr));
    assert_eq!(read("proc/irq/9/smp_affinity_list"), "0-3\n");
    assert_eq!(read("sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"), "0\n");
    let status = kvmtune(&args(&["host", "status"], &place), "");
    assert_eq!(String::from_utf8_lossy(&status.stdout), "nothing is prepared\n");
}

#[test]
fn bad_requests_exit_2_with_a_reason() {
    let host = host();
    let place = place(host.path());
    for (request, reason) in [
        (vec!["host", "prepare", "--cpus", "2-3", "--no-isolate"], "name the VM"),
        (vec!["host", "prepare", "--name", "x", "--cpus", "2-9", "--no-isolate"], "offline or do not exist"),
        (
            vec!["host", "prepare", "--name", "x", "--cpus", "2", "--housekeeping", "2", "--no-isolate"],
            "are the VM's own",
        ),
        (
            vec!["host", "prepare", "--name", "x", "--cpus", "2", "--hugepages", "2M", "--no-isolate"],
            "SIZE:COUNT",
        ),
        (vec!["host", "prepare", "--name", "x", "--cpus", "2"], "no cpuset cgroup controller"),
        (vec!["host", "release", "nobody"], "has nothing to release"),
    ] {
        let output = kvmtune(&args(&request, &place), "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{request:?}: {stderr}");
        assert!(stderr.contains(reason), "{request:?}: {stderr}");
    }
    let output = kvmtune(&["host", "prepare", "--xml", "-", "--no-isolate"], "<domain");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("<stdin>"), "the error names its input");
}

/// `--domain` reads the domain from real libvirt (its test driver): the name comes from there,
/// and without pins the CPUs must be given.
#[test]
#[cfg_attr(not(feature = "libvirt"), ignore = "needs libvirt: cargo test --features libvirt")]
fn a_domain_from_libvirt_names_the_vm() {
    let host = host();
    let place = place(host.path());
    let from_libvirt =
        ["host", "prepare", "--domain", "test", "--connect", "test:///default", "--no-isolate"];
    let unpinned = kvmtune(&args(&from_libvirt, &place), "");
    assert_eq!(unpinned.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unpinned.stderr).contains("no CPUs for VM `test`"));
    let pinned = kvmtune(&args(&[&from_libvirt[..], &["--cpus", "3"]].concat(), &place), "");
    let text = String::from_utf8_lossy(&pinned.stdout);
    assert_eq!(pinned.status.code(), Some(0), "{}", String::from_utf8_lossy(&pinned.stderr));
    assert!(text.starts_with("VM test: CPUs 3, host keeps 0-2"), "{text}");
}
