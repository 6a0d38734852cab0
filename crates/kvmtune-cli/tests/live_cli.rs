//! `kvmtune top --once` and `kvmtune exporter` on real boot-sector guests under KVM (testkit's
//! port-I/O and halting guests): each guest is listed with the exit kind it is known to do, a
//! guest that dies disappears, the exporter's counters grow between scrapes, its output passes
//! `promtool check metrics`, and a real Prometheus scrapes it.
//!
//! This host's KVM (PVM) counts port I/O in `exits` but not in `io_exits`; the `kvm_pio`
//! tracepoint sees it. So `top` and the exporter run in a private mount namespace with tracefs
//! mounted there (as `exits_record.rs` does), leaving the host's mounts as they were.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kvmtune_testkit::guest::{Guest, GuestKind};
use kvmtune_testkit::{free_port, wait_listening};

/// `kvmtune ARGS` in a private mount namespace where tracefs is mounted.
fn with_tracefs(args: &[&str]) -> Command {
    kvmtune_testkit::with_tracefs(env!("CARGO_BIN_EXE_kvmtune"), args)
}

fn kvmtune(args: &[&str]) -> Output {
    with_tracefs(args).output().expect("unshare (util-linux) runs")
}

/// The `top --once` row of the VM named `name`.
fn row<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find(|line| line.split_whitespace().next() == Some(name))
}

#[test]
fn top_once_lists_each_guest_with_its_exit_kind_and_drops_one_that_dies() {
    let port_io = Guest::start(GuestKind::PortIo);
    let mut halting = Guest::start(GuestKind::Halt);
    let output = kvmtune(&["top", "--once", "--interval", "1"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&output.stderr));
    println!("{text}");
    let io_row = row(&text, &port_io.name).unwrap_or_else(|| panic!("{} not listed:\n{text}", port_io.name));
    assert!(io_row.contains(" io "), "the port-I/O guest's busiest kind: {io_row}");
    assert!(io_row.contains("EXIT002"), "the port-I/O guest's diagnosis: {io_row}");
    let halt_row =
        row(&text, &halting.name).unwrap_or_else(|| panic!("{} not listed:\n{text}", halting.name));
    // Halting between timer ticks: each tick is a halt exit and an APIC access (the EOI), about
    // 18 a second each, so either may lead; the diagnosis is the idle guest's.
    assert!(
        halt_row.contains(" halt ") || halt_row.contains(" apic "),
        "the halting guest's busiest kind: {halt_row}"
    );
    assert!(halt_row.contains("EXIT006"), "the halting guest's diagnosis: {halt_row}");

    halting.stop();
    let output = kvmtune(&["top", "--once", "--interval", "0.5"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(row(&text, &halting.name).is_none(), "a stopped guest is still listed:\n{text}");
    assert!(row(&text, &port_io.name).is_some(), "{text}");
}

/// A running exporter, killed on drop.
struct Exporter(Child, u16);

impl Exporter {
    fn start() -> Exporter {
        let port = free_port();
        let child = with_tracefs(&["exporter", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_listening(port, "the exporter");
        Exporter(child, port)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` over plain HTTP/1.0: (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// The value of the sample `name{labels...}` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[test]
fn the_exporter_serves_growing_counters_and_findings_that_promtool_accepts() {
    let mut port_io = Guest::start(GuestKind::PortIo);
    let exporter = Exporter::start();
    let vm = format!("vm=\"{}\"", port_io.name);
    let (status, first) = get(exporter.1, "/metrics");
    assert!(status.contains("200"), "{status}");
    std::thread::sleep(Duration::from_secs(1));
    let (_, second) = get(exporter.1, "/metrics");
    let exits = |text: &str| sample(text, "kvmtune_vcpu_exits_total", &[&vm, "vcpu=\"0\""]);
    let (before, after) = (exits(&first).expect("exits of the guest"), exits(&second).expect("exits again"));
    assert!(after > before, "exits did not grow: {before} -> {after}");
    assert_eq!(sample(&second, "kvmtune_vm_up", &[&vm]), Some(1.0));
    // Findings need a rate: from the second scrape on.
    assert_eq!(
        sample(&second, "kvmtune_finding", &[&vm, "rule=\"EXIT002\""]),
        Some(1.0),
        "no port-I/O finding in\n{second}"
    );
    assert!(second.contains("# HELP kvmtune_vcpu_exits_by_kind"), "{second}");
    let (status, _) = get(exporter.1, "/nothing");
    assert!(status.contains("404"), "{status}");

    // Prometheus' own checker, on what it would scrape.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, installed by scripts/test.sh)");
    promtool.stdin.take().unwrap().write_all(second.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A VM that dies: the next scrape answers without it.
    port_io.stop();
    let (status, third) = get(exporter.1, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(sample(&third, "kvmtune_vm_up", &[&vm]), None, "{third}");
    assert!(third.contains("kvmtune_scrape_duration_seconds"), "{third}");
}

/// A process that gets SIGTERM and is waited for when dropped, as when a test fails midway: an
/// exporter killed with SIGKILL would leave its tracefs instances behind.
struct TerminatedOnDrop(Option<Child>);

impl Drop for TerminatedOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

/// The threads of QEMU process `pid` named as vCPU threads (`CPU N/KVM`).
fn vcpu_threads_of(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            comm.starts_with("CPU ") && comm.trim_end().ends_with("/KVM")
        })
        .map(|task| task.file_name().to_string_lossy().into_owned())
        .collect()
}

/// `--exit-times` traces kvm_exit/kvm_entry of each VM's vCPU threads in a tracefs instance of
/// its own (each of two guests' vCPU threads traced, no thread in two instances), and SIGTERM ends the exporter through its normal exit, which removes the instance
/// (else it would go on tracing after the exporter). This host's KVM never fires kvm_exit, so
/// the handling-time metrics themselves are checked on recorded data (`output::metrics` and
/// `live::view` unit tests).
#[test]
fn exit_times_trace_the_vcpu_threads_and_sigterm_removes_the_trace() {
    let port_io = Guest::start(GuestKind::PortIo);
    let halting = Guest::start(GuestKind::Halt);
    let port = free_port();
    let mut exporter = TerminatedOnDrop(Some(
        with_tracefs(&["exporter", "--exit-times", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let pid = exporter.0.as_ref().unwrap().id();
    wait_listening(port, "the exporter");
    let (status, body) = get(port, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("kvmtune_vcpu_exits_total{"), "{body}");
    // Two more scrapes: rates, and with them the note that no exit was traced.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(300));
        let _ = get(port, "/metrics");
    }
    // The exporter's own view of tracefs, through its mount namespace: an instance per VM (the
    // exporter traces every VM of the host, other tests' guests too), each tracing the vCPU
    // threads of one VM, and no thread in two of them.
    let instances = format!("/proc/{pid}/root/sys/kernel/tracing/instances");
    let mine: Vec<String> = kvmtune_testkit::tracefs_instances()
        .into_iter()
        .filter(|i| kvmtune_testkit::tracefs_instance_owner(i) == Some(pid))
        .collect();
    let mut traced_threads = Vec::new();
    for instance in &mine {
        let read = |file: &str| {
            std::fs::read_to_string(format!("{instances}/{instance}/{file}")).unwrap_or_default()
        };
        assert_eq!(read("events/kvm/kvm_exit/enable").trim(), "1", "{instance}");
        assert_eq!(read("events/kvm/kvm_entry/enable").trim(), "1", "{instance}");
        let threads: Vec<String> = read("set_event_pid").split_whitespace().map(str::to_string).collect();
        assert!(!threads.is_empty(), "{instance} traces no thread");
        traced_threads.extend(threads);
    }
    let all = traced_threads.len();
    traced_threads.sort();
    traced_threads.dedup();
    assert_eq!(traced_threads.len(), all, "two instances trace the same thread");
    for guest in [&port_io, &halting] {
        let vcpu_threads = vcpu_threads_of(guest.pid());
        assert!(!vcpu_threads.is_empty(), "{} has no vCPU thread", guest.name);
        for thread in vcpu_threads {
            assert!(traced_threads.contains(&thread), "{}'s vCPU thread {thread} is not traced", guest.name);
        }
    }

    // SIGTERM, as an init system stops it.
    let killed = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    let mut child = exporter.0.take().unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("kvmtune exporter: stopped"), "{stderr}");
    // This host's KVM never fires kvm_exit: the exporter says so once, naming the VM.
    let said = stderr.matches("no kvm_exit of it was traced").count();
    assert_eq!(said, 1, "{stderr}");
    let left = kvmtune_testkit::tracefs_instances();
    let owned = left.iter().any(|i| kvmtune_testkit::tracefs_instance_owner(i) == Some(pid));
    assert!(!owned, "the trace outlived the exporter: {left:?}");
}

#[test]
fn a_port_in_use_is_refused_with_exit_2() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = kvmtune(&["exporter", "--listen", &address]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot listen on {address}")), "{stderr}");
}

/// Prometheus from Debian's package, on a loopback port, scraping the exporter every second.
#[test]
fn a_real_prometheus_scrapes_every_guests_counters_and_findings() {
    let port_io = Guest::start(GuestKind::PortIo);
    let halting = Guest::start(GuestKind::Halt);
    let exporter = Exporter::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: kvmtune\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            exporter.1
        ),
    )
    .unwrap();
    let web = free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's package, installed by scripts/test.sh)");
    let query = |promql: &str| -> serde_json::Value {
        let path = format!(
            "/api/v1/query?query={}",
            promql
                .replace('"', "%22")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace(',', "%2C")
                .replace('=', "%3D")
        );
        match TcpStream::connect(("127.0.0.1", web)) {
            Ok(_) => serde_json::from_str(&get(web, &path).1).unwrap_or(serde_json::Value::Null),
            Err(_) => serde_json::Value::Null,
        }
    };
    let exits_of = |name: &str| -> Option<f64> {
        let answer = query(&format!("kvmtune_vcpu_exits_total{{vm=\"{name}\"}}"));
        answer["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let (Some(io), Some(halt)) = (exits_of(&port_io.name), exits_of(&halting.name)) {
            seen.push((io, halt));
            let finding = query(&format!("kvmtune_finding{{vm=\"{}\",rule=\"EXIT002\"}}", port_io.name));
            if seen.len() >= 3 && finding["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(seen.len() >= 3, "Prometheus never had both guests' exits: {seen:?}");
    let (first, last) = (seen[0], seen[seen.len() - 1]);
    assert!(last.0 > first.0 && last.1 > first.1, "the counters did not grow in Prometheus: {seen:?}");
    println!("Prometheus saw (port-I/O exits, halting exits): {seen:?}");
}

/// `tmux -S SOCKET ARGS`, which must succeed; its stdout. The test's own server, on a socket in
/// its temp dir: tmux's default one is the user's, and its socket directory (`/tmp/tmux-UID`,
/// from TMUX_TMPDIR, not TMPDIR) would outlive the test.
fn tmux(socket: &Path, args: &[&str]) -> String {
    let output =
        Command::new("tmux").arg("-S").arg(socket).args(args).output().expect("tmux (Debian's package)");
    assert!(output.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits up to `seconds` for the pane's text to satisfy `ready`; the text.
fn screen_until(
    socket: &Path,
    session: &str,
    seconds: u64,
    what: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let screen = tmux(socket, &["capture-pane", "-p", "-t", session]);
        if ready(&screen) {
            return screen;
        }
        assert!(Instant::now() < deadline, "{what} within {seconds} s; the screen:\n{screen}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The full-screen view in a real terminal (tmux): each guest listed with its exit kind, Enter
/// shows the busiest VM's vCPUs and diagnosis, a guest that dies leaves the screen, and `q`
/// quits with status 0.
#[test]
fn the_full_screen_view_lists_drills_in_drops_and_quits_in_tmux() {
    let port_io = Guest::start(GuestKind::PortIo);
    let mut halting = Guest::start(GuestKind::Halt);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("top.sh");
    // top's exit status is written by the script's shell: tmux 3.3a can mark a pane dead before
    // it has reaped the process, and then never report `#{pane_dead_status}` (seen here).
    let status_file = dir.path().join("status");
    let socket = dir.path().join("tmux.sock");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nunshare --mount --propagation private sh -c 'mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; exec \"$0\" \"$@\"' {} top --interval 0.5\necho $? >{}\n",
            env!("CARGO_BIN_EXE_kvmtune"),
            status_file.display()
        ),
    )
    .unwrap();
    let session = format!("kvmtune-top-{}", std::process::id());
    tmux(
        &socket,
        &["new-session", "-d", "-s", &session, "-x", "200", "-y", "40", &format!("sh {}", script.display())],
    );
    tmux(&socket, &["set-option", "-t", &session, "remain-on-exit", "on"]);
    let kill = |session: &str| {
        let _ = Command::new("tmux").arg("-S").arg(&socket).args(["kill-session", "-t", session]).output();
    };
    let listed = |screen: &str, name: &str| screen.lines().any(|l| l.contains(name));
    let screen = screen_until(&socket, &session, 60, "both guests listed", |s| {
        listed(s, &port_io.name)
            && listed(s, &halting.name)
            && s.lines().any(|l| l.contains(&port_io.name) && l.contains(" io "))
    });
    println!("{screen}");
    // The busiest VM is the first row, selected: the port-I/O guest.
    tmux(&socket, &["send-keys", "-t", &session, "Enter"]);
    let detail = screen_until(&socket, &session, 20, "the port-I/O guest's details", |s| {
        s.contains("vCPU 0: io") && s.contains("EXIT002")
    });
    println!("{detail}");
    tmux(&socket, &["send-keys", "-t", &session, "Escape"]);
    screen_until(&socket, &session, 20, "the list again", |s| listed(s, &halting.name));
    halting.stop();
    screen_until(&socket, &session, 30, "the stopped guest gone", |s| {
        !listed(s, &halting.name) && listed(s, &port_io.name)
    });
    tmux(&socket, &["send-keys", "-t", &session, "q"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && status.ends_with('\n')
        {
            break status;
        }
        if Instant::now() > deadline {
            let screen = tmux(&socket, &["capture-pane", "-p", "-t", &session]);
            kill(&session);
            panic!("q did not quit:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    kill(&session);
    assert_eq!(status.trim(), "0", "top's exit status");
}

/// libvirt domains (of a private libvirtd) are named as libvirt knows them and read through
/// libvirt, since libvirtd owns their QMP sockets: all of a connection's domains by one
/// `virsh domstats` per reading (a logging `virsh` ahead on PATH counts the calls), never by a
/// monitor command each. The port-I/O domain's `io` is what only the tracepoint counters of its
/// vCPU threads see on this host (its KVM leaves port I/O out of `io_exits`), so it also shows
/// that the threads were found by their names.
#[test]
fn libvirt_domains_are_listed_by_name_and_read_by_one_domstats_per_reading() {
    let dir = tempfile::tempdir().unwrap();
    for (image, kind) in [("halt.img", GuestKind::Halt), ("pio.img", GuestKind::PortIo)] {
        std::fs::write(dir.path().join(image), kvmtune_testkit::guest::boot_sector(kind)).unwrap();
    }
    let body = format!(
        r#"domain() {{ cat <<XML
<domain type='kvm'><name>$1</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$OUT/$2'/><target dev='hda' bus='ide'/></disk>
<serial type='file'><source path='$OUT/$1.serial'/></serial><memballoon model='none'/></devices></domain>
XML
}}
mkdir -p "$OUT/bin"
printf '#!/bin/sh\necho "$*" >>"%s/virsh.log"\nexec /usr/bin/virsh "$@"\n' "$OUT" >"$OUT/bin/virsh"
chmod +x "$OUT/bin/virsh"
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
/usr/sbin/virtlogd & logd=$!
# A domain started before virtlogd listens fails ("Failed to connect socket to
# '/run/libvirt/virtlogd-sock'").
for _ in $(seq 100); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.1; done
domain libvhalt halt.img >"$OUT/halt.xml"
domain libvpio pio.img >"$OUT/pio.xml"
virsh -q -c qemu:///system create "$OUT/halt.xml" >"$OUT/create.log" 2>&1
virsh -q -c qemu:///system create "$OUT/pio.xml" >>"$OUT/create.log" 2>&1
for d in libvhalt libvpio; do
  for _ in $(seq 600); do grep -q K "$OUT/$d.serial" 2>/dev/null && break; sleep 0.2; done
done
PATH="$OUT/bin:$PATH" {} top --once --interval 1 --connect qemu:///system >"$OUT/top.txt" 2>&1
echo $? >"$OUT/top.rc"
for d in libvhalt libvpio; do virsh -q -c qemu:///system destroy $d >/dev/null 2>&1; done
kill $logd
# libvirt's cgroup directories for the domains, which it leaves (the cgroup filesystems are the
# host's, not this namespace's).
find /sys/fs/cgroup/*/machine* -depth -type d -exec rmdir {{}} \; 2>/dev/null
true"#,
        env!("CARGO_BIN_EXE_kvmtune")
    );
    kvmtune_testkit::libvirtd::with_private_libvirtd(dir.path(), &body);
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let text = read("top.txt");
    assert_eq!(read("top.rc").trim(), "0", "{text}{}", read("create.log"));
    let line = |name: &str| {
        row(&text, name).unwrap_or_else(|| panic!("{name} is not listed:\n{text}{}", read("create.log")))
    };
    for name in ["libvhalt", "libvpio"] {
        assert!(!line(name).contains("cannot read"), "{}", line(name));
    }
    let halt = line("libvhalt");
    assert!(halt.contains(" halt ") || halt.contains(" apic "), "the halting domain's busiest kind: {halt}");
    assert!(line("libvpio").contains(" io "), "the port-I/O domain's busiest kind: {}", line("libvpio"));
    let calls = read("virsh.log");
    let domstats = calls.lines().filter(|call| call.contains("domstats")).count();
    assert_eq!(domstats, 2, "one domstats for both domains at each of the two readings:\n{calls}");
    assert!(!calls.contains("qemu-monitor-command"), "no monitor command per domain:\n{calls}");
}

/// A libvirt connection that does not answer is named on the host line; the VMs found by their
/// processes are still listed.
#[test]
fn an_unreachable_libvirt_is_reported_and_the_rest_still_shown() {
    let port_io = Guest::start(GuestKind::PortIo);
    let uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock";
    let output = kvmtune(&["top", "--once", "--interval", "0.5", "--connect", uri, "--timeout", "3"]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&output.stderr));
    let host_line = text.lines().next().unwrap_or_default();
    assert!(host_line.contains(&format!("libvirt ({uri}):")), "{host_line}");
    assert!(row(&text, &port_io.name).is_some(), "{text}");
}
