//! `kvmtune verify` end to end: a saved report of this machine against a config that asks for
//! Hyper-V, the guest program run through a real QEMU guest agent (Debian's qemu-ga from the
//! lab cache, listening on a socket of its own here), an agent whose policy blocks guest-exec,
//! an agent channel nobody answers (a KVM boot-sector guest), and reports that are not one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kvmtune_testkit::guest_program::{self, Builds};

fn kvmtune(args: &[&str], guest_dir: Option<&Path>) -> Output {
    kvmtune_with_pid(args, guest_dir).0
}

/// The output, and kvmtune's pid (the name of the program it copies into a guest carries it).
fn kvmtune_with_pid(args: &[&str], guest_dir: Option<&Path>) -> (Output, u32) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvmtune"));
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(dir) = guest_dir {
        command.env("KVMTUNE_GUEST_DIR", dir);
    }
    let child = command.spawn().expect("kvmtune runs");
    let pid = child.id();
    (child.wait_with_output().expect("kvmtune ends"), pid)
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A libvirt domain that asks for ten enlightenments, 4 vCPUs as 2 cores of 2 threads.
const HYPERV_DOMAIN: &str = "<domain type='kvm'>
  <name>win11-verify</name>
  <memory unit='GiB'>8</memory>
  <vcpu placement='static'>VCPUS</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features>
    <acpi/><apic/>
    <hyperv mode='custom'>
      <relaxed state='on'/><vapic state='on'/><spinlocks state='on' retries='8191'/><vpindex state='on'/>
      <runtime state='on'/><synic state='on'/><stimer state='on'/><frequencies state='on'/>
      <tlbflush state='on'/><ipi state='on'/>
    </hyperv>
  </features>
  <cpu mode='host-passthrough' check='none'><topology sockets='1' dies='1' cores='CORES' threads='1'/></cpu>
  <clock offset='localtime'><timer name='hpet' present='no'/><timer name='hypervclock' present='yes'/></clock>
</domain>
";

fn this_machines_cpus() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

/// The domain above with as many vCPUs (all cores of one socket) as this machine has: only the
/// enlightenments can differ from what the guest program sees here.
fn domain_file(dir: &Path) -> PathBuf {
    let cpus = this_machines_cpus().to_string();
    let path = dir.join("win11.xml");
    std::fs::write(&path, HYPERV_DOMAIN.replace("VCPUS", &cpus).replace("CORES", &cpus)).unwrap();
    path
}

fn saved_report(dir: &Path) -> PathBuf {
    let build = guest_program::build_dir(Builds::Linux).join("kvmtune-guest");
    let output = Command::new(&build).args(["--format", "json"]).output().expect("kvmtune-guest runs");
    assert!(output.status.success(), "{}", text(&output));
    let path = dir.join("report.json");
    std::fs::write(&path, &output.stdout).unwrap();
    path
}

#[test]
fn a_saved_report_of_this_machine_sees_none_of_the_enlightenments_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let report = saved_report(dir.path());
    let config = domain_file(dir.path());
    let output = kvmtune(
        &["verify", "--report", report.to_str().unwrap(), "--config", config.to_str().unwrap()],
        None,
    );
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("error[VER001] enlightenment-not-seen"), "{out}");
    // This machine's KVM has no Hyper-V: no Hv#1 interface, each asked-for enlightenment named.
    assert!(out.contains("no Hyper-V interface"), "{out}");
    for hv in [
        "hv-relaxed",
        "hv-vapic",
        "hv-vpindex",
        "hv-runtime",
        "hv-synic",
        "hv-stimer",
        "hv-frequencies",
        "hv-tlbflush",
        "hv-ipi",
        "hv-time",
    ] {
        assert!(out.contains(hv), "{hv} missing from:\n{out}");
    }
    // vCPUs and sockets match this machine: nothing said about them.
    for quiet in ["VER004", "VER005", "VER006"] {
        assert!(!out.contains(quiet), "{quiet} in:\n{out}");
    }

    let json = kvmtune(
        &[
            "verify",
            "--report",
            report.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(json.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let findings = value["findings"].as_array().unwrap();
    assert_eq!(findings[0]["rule"], "VER001");
    assert_eq!(findings[0]["seen"], "no Hyper-V leaves");
    assert_eq!(value["guest"]["program"]["name"], "kvmtune-guest");
}

#[test]
fn the_same_report_against_a_config_without_enlightenments_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let report = saved_report(dir.path());
    let cpus = this_machines_cpus();
    let config = dir.path().join("plain.xml");
    std::fs::write(
        &config,
        format!("<domain type='kvm'><name>plain</name><memory unit='GiB'>1</memory><vcpu>{cpus}</vcpu><os><type arch='x86_64'>hvm</type></os><cpu mode='host-passthrough'><topology sockets='1' dies='1' cores='{cpus}' threads='1'/></cpu></domain>"),
    )
    .unwrap();
    let output = kvmtune(
        &["verify", "--report", report.to_str().unwrap(), "--config", config.to_str().unwrap()],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("the guest sees what the configuration gives it"));
}

#[test]
fn what_is_not_a_report_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = domain_file(dir.path());
    let cases = [
        ("cut.json", "{\"schema_version\": 1, \"program\": {", "cut.json:1:"),
        ("table.json", "[1, 2, 3]", "not a kvmtune-guest report"),
        ("exits.txt", "Analyze events for all VMs, all VCPUs:\n", "cut"),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let output = kvmtune(
            &["verify", "--report", path.to_str().unwrap(), "--config", config.to_str().unwrap()],
            None,
        );
        let out = text(&output);
        assert_eq!(output.status.code(), Some(2), "{name}: {out}");
        let expected = if expected == "cut" { name } else { expected };
        assert!(out.contains(expected), "{name}: {out}");
        assert!(!out.contains("panicked"), "{out}");
    }
    let missing = kvmtune(&["verify", "--report", "/nonexistent/report.json"], None);
    assert_eq!(missing.status.code(), Some(2));
    let no_agent =
        kvmtune(&["verify", "--agent", "/nonexistent/qga.sock", "--config", config.to_str().unwrap()], None);
    assert_eq!(no_agent.status.code(), Some(2));
    assert!(
        text(&no_agent).contains("cannot reach the guest agent at /nonexistent/qga.sock"),
        "{}",
        text(&no_agent)
    );
    let neither = kvmtune(&["verify", "--config", config.to_str().unwrap()], None);
    assert_eq!(neither.status.code(), Some(2));
}

/// Debian's qemu-ga, unpacked from the lab cache into `dir`.
fn unpacked_agent(dir: &Path) -> PathBuf {
    let cache = std::env::var_os("KVMTUNE_LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/kvmtune-lab".into());
    let deb = std::fs::read_dir(&cache)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("qemu-guest-agent_")))
        })
        .unwrap_or_else(|| {
            panic!("no qemu-guest-agent package in {}; scripts/test.sh downloads it", cache.display())
        });
    let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir).status().unwrap();
    assert!(status.success());
    dir.join("usr/sbin/qemu-ga")
}

/// qemu-ga listening on a socket here, its state in `dir`; killed on drop.
struct RunningAgent {
    child: Child,
    socket: PathBuf,
}

impl RunningAgent {
    fn start(dir: &Path, extra: &[&str]) -> RunningAgent {
        let program = unpacked_agent(&dir.join("agent"));
        let socket = dir.join("qga.sock");
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let child = Command::new(program)
            .args(["-m", "unix-listen", "-p"])
            .arg(&socket)
            .arg("-t")
            .arg(&state)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-ga starts");
        // The socket file appears at bind(), before qemu-ga listens on it: a connection made in
        // between is refused. Ready is when one is accepted (qemu-ga takes the next after it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            std::os::unix::net::UnixStream::connect(&socket).is_ok(),
            "qemu-ga does not listen on its socket"
        );
        RunningAgent { child, socket }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the kvmtune of `pid` left in the temporary directories the agent writes to.
fn left_behind(pid: u32) -> Vec<PathBuf> {
    ["/tmp", "/var/tmp", "/run"]
        .iter()
        .map(|dir| Path::new(dir).join(format!("kvmtune-guest-{pid}")))
        .filter(|path| path.exists())
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "qemu"),
    ignore = "needs the QEMU guest agent in the lab cache: cargo test --features qemu"
)]
fn a_real_guest_agent_runs_the_program_and_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let guest_dir = guest_program::build_dir(Builds::Linux);
    let agent = RunningAgent::start(dir.path(), &[]);
    let config = domain_file(dir.path());
    let (output, pid) = kvmtune_with_pid(
        &[
            "verify",
            "--agent",
            agent.socket.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--format",
            "json",
        ],
        Some(&guest_dir),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(value["guest_source"].as_str().unwrap().contains("Linux guest"), "{value}");
    assert_eq!(value["guest"]["topology"]["logical_processors"].as_u64(), Some(this_machines_cpus() as u64));
    assert_eq!(value["findings"][0]["rule"], "VER001");
    assert_eq!(value["findings"].as_array().unwrap().len(), 1, "{value}");
    assert!(left_behind(pid).is_empty(), "the program was left in the guest: {:?}", left_behind(pid));

    // No build for the guest's OS where kvmtune looks: a clear error, nothing copied.
    let empty = dir.path().join("no-builds");
    std::fs::create_dir_all(&empty).unwrap();
    let (output, pid) = kvmtune_with_pid(
        &["verify", "--agent", agent.socket.to_str().unwrap(), "--config", config.to_str().unwrap()],
        Some(&empty),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("no kvmtune-guest build for a Linux guest"), "{}", text(&output));
    assert!(text(&output).contains("scripts/build-guest.sh"), "{}", text(&output));
    assert!(left_behind(pid).is_empty());
}

#[test]
#[cfg_attr(
    not(feature = "qemu"),
    ignore = "needs the QEMU guest agent in the lab cache: cargo test --features qemu"
)]
fn an_agent_whose_policy_blocks_guest_exec_is_refused_before_anything_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let guest_dir = guest_program::build_dir(Builds::Linux);
    let agent = RunningAgent::start(dir.path(), &["-b", "guest-exec"]);
    let config = domain_file(dir.path());
    let (output, pid) = kvmtune_with_pid(
        &["verify", "--agent", agent.socket.to_str().unwrap(), "--config", config.to_str().unwrap()],
        Some(&guest_dir),
    );
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(out.contains("policy disables guest-exec"), "{out}");
    assert!(left_behind(pid).is_empty());
}

#[test]
#[cfg_attr(not(feature = "qemu"), ignore = "needs QEMU and /dev/kvm: cargo test --features qemu")]
fn an_agent_channel_nobody_answers_times_out_with_its_reason() {
    // A KVM guest with the agent's virtio-serial port and no agent behind it (a boot sector).
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("boot.img");
    std::fs::write(&image, kvmtune_testkit::guest::boot_sector(kvmtune_testkit::guest::GuestKind::Halt))
        .unwrap();
    let socket = dir.path().join("qga.sock");
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-m", "64", "-display", "none", "-no-reboot", "-device", "virtio-serial-pci"])
        .arg("-chardev")
        .arg(format!("socket,id=qga0,path={},server=on,wait=off", socket.display()))
        .args(["-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0", "-drive"])
        .arg(format!("file={},format=raw,if=ide", image.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    // Listening, not only bound (see RunningAgent::start); QEMU takes the next client after it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let output = kvmtune(
        &[
            "verify",
            "--agent",
            socket.to_str().unwrap(),
            "--config",
            domain_file(dir.path()).to_str().unwrap(),
        ],
        None,
    );
    let _ = qemu.kill();
    let _ = qemu.wait();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(out.contains("did not answer `guest-sync`"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(60), "bounded by the agent timeout");
}

/// The lab guest (scripts/lab --agent) with Debian's qemu-ga on a virtio-serial port: kvmtune
/// on this machine copies the Linux build in, runs it and reads it back. The guest has 4 CPUs
/// in 2 sockets on 2 NUMA nodes under TCG (no Hyper-V, the HPET as its clock).
#[test]
#[cfg_attr(not(feature = "lab"), ignore = "needs the lab guest: cargo test --features lab")]
fn verify_in_the_lab_guest_through_its_agent() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let guest_dir = guest_program::build_dir(Builds::Linux);
    let socket = dir.path().join("qga.sock");
    let done = dir.path().join("done");
    // CMD keeps the guest up until the host is done, then fails if a program was left behind.
    let script = format!(
        "while [ ! -e {done} ]; do sleep 1; done; if ls /run/kvmtune-guest-* /tmp/kvmtune-guest-* 2>/dev/null; then exit 3; fi",
        done = done.display()
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kvmtune")).parent().unwrap();
    let mut lab = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lab"))
        .arg("--agent")
        .arg(&socket)
        .args(["sh", "-c", &script])
        .env("KVMTUNE_LAB_BIN", bin_dir)
        .env("KVMTUNE_LAB_TIMEOUT", "600")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/lab runs");
    let mut console = std::io::BufReader::new(lab.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while console.read_line(&mut line).unwrap_or(0) > 0 {
        seen.push_str(&line);
        if line.starts_with("lab-agent-ready") {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("lab-agent-ready"), "the agent did not start in the lab guest:\n{seen}");

    let run = |config: &str| {
        let path = dir.path().join("config.xml");
        std::fs::write(&path, config).unwrap();
        let (output, _) = kvmtune_with_pid(
            &[
                "verify",
                "--agent",
                socket.to_str().unwrap(),
                "--config",
                path.to_str().unwrap(),
                "--format",
                "json",
            ],
            Some(&guest_dir),
        );
        let value: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)));
        let rules: Vec<String> = value["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule"].as_str().unwrap().to_string())
            .collect();
        (output.status.code(), value, rules)
    };
    // Deliberate mismatches: one socket where the guest has two, and hv-relaxed under TCG.
    let (status, value, rules) = run(
        "<domain type='kvm'><name>lab</name><memory unit='GiB'>1</memory><vcpu>4</vcpu><os><type arch='x86_64'>hvm</type></os>\
         <features><hyperv mode='custom'><relaxed state='on'/></hyperv></features>\
         <cpu mode='host-passthrough'><topology sockets='1' dies='1' cores='4' threads='1'/></cpu></domain>",
    );
    assert_eq!(status, Some(1), "{value}");
    assert_eq!(value["guest"]["topology"]["logical_processors"], 4);
    assert_eq!(value["guest"]["topology"]["sockets"], 2);
    assert_eq!(value["guest"]["topology"]["numa_nodes"], 2);
    assert!(rules.contains(&"VER001".to_string()) && rules.contains(&"VER006".to_string()), "{rules:?}");
    // The TCG guest's clock is the HPET, each read an exit: VER008 says so, truly.
    assert_eq!(value["guest"]["time"]["clocksource"], "hpet");
    assert!(rules.contains(&"VER008".to_string()), "{rules:?}");
    // What matches is not reported: 4 vCPUs counted, no SMT asked for or seen, the hypervisor bit.
    for quiet in ["VER002", "VER003", "VER004", "VER005", "VER007"] {
        assert!(!rules.contains(&quiet.to_string()), "{quiet} in {rules:?}");
    }
    // The same guest against a configuration that gives what it sees: only the clock remains.
    let (status, value, rules) = run(
        "<domain type='kvm'><name>lab</name><memory unit='GiB'>1</memory><vcpu>4</vcpu><os><type arch='x86_64'>hvm</type></os>\
         <cpu mode='host-passthrough'><topology sockets='2' dies='1' cores='2' threads='1'/></cpu></domain>",
    );
    assert_eq!(rules, ["VER008"], "{value}");
    assert_eq!(status, Some(1));

    std::fs::write(&done, "").unwrap();
    let status = lab.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut lab.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        status.success(),
        "the lab guest ended with {status} (3: the program was left in the guest):\n{stderr}"
    );
}

/// The same lab guest as a libvirt domain of a private libvirtd (TCG, booted from the lab's
/// kernel and initramfs, the host's root over 9p, a guest-agent channel libvirt owns):
/// `verify --domain` goes through libvirt's agent channel and takes the domain's definition as
/// the configuration.
#[test]
#[cfg_attr(
    not(all(feature = "lab", feature = "libvirt")),
    ignore = "needs the lab guest and libvirtd: cargo test --features lab,libvirt"
)]
fn verify_a_libvirt_domain_through_libvirts_agent_channel() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let guest_dir = guest_program::build_dir(Builds::Linux);
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kvmtune")).parent().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let boot = Command::new(repo.join("scripts/lab"))
        .arg("--boot-files")
        .env("KVMTUNE_LAB_BIN", bin_dir)
        .output()
        .unwrap();
    assert!(boot.status.success(), "{}", text(&boot));
    let boot = String::from_utf8(boot.stdout).unwrap();
    let (kernel, initrd) = boot.trim().split_once(' ').unwrap();
    let cache = std::env::var("KVMTUNE_LAB_CACHE").unwrap_or_else(|_| "/var/cache/kvmtune-lab".into());
    let done = out.join("done");
    // The guest's init runs this (through the 9p root), as scripts/lab's command.
    let command = out.join("command");
    std::fs::write(
        &command,
        format!(
            "export PATH=/usr/sbin:/usr/bin:/sbin:/bin TMPDIR=/run/tmp\n'{}/scripts/lab-guest-agent.sh' '{cache}' || exit 125\nwhile [ ! -e '{}' ]; do sleep 1; done\nif ls /run/kvmtune-guest-* 2>/dev/null; then exit 3; fi\n",
            repo.display(),
            done.display()
        ),
    )
    .unwrap();
    let domain = format!(
        "<domain type='qemu'><name>kvmtune-verify-lab</name><memory unit='MiB'>1024</memory><vcpu>4</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><kernel>{kernel}</kernel><initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet loglevel=3 lab.cgroup=v2 lab.command={command}</cmdline></os>
  <cpu><topology sockets='2' dies='1' cores='2' threads='1'/></cpu>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <filesystem type='mount' accessmode='passthrough'><source dir='/'/><target dir='hostroot'/><readonly/></filesystem>
    <channel type='unix'><source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <serial type='file'><source path='{console}'/></serial>
  </devices>
</domain>",
        command = command.display(),
        console = out.join("console.log").display(),
    );
    std::fs::write(out.join("domain.xml"), domain).unwrap();
    let mismatch = out.join("mismatch.xml");
    std::fs::write(
        &mismatch,
        "<domain type='kvm'><name>lab</name><memory unit='GiB'>1</memory><vcpu>4</vcpu><os><type arch='x86_64'>hvm</type></os>\
         <features><hyperv mode='custom'><relaxed state='on'/></hyperv></features>\
         <cpu><topology sockets='1' dies='1' cores='4' threads='1'/></cpu></domain>",
    )
    .unwrap();
    let kvmtune = env!("CARGO_BIN_EXE_kvmtune");
    let body = format!(
        r#"/usr/sbin/virtlogd & logd=$!
# A domain started before virtlogd listens fails to start.
for _ in $(seq 100); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.1; done
virsh -c qemu:///system define "$OUT/domain.xml" >"$OUT/define.log" 2>&1 || exit 1
virsh -c qemu:///system start kvmtune-verify-lab >"$OUT/start.log" 2>&1 || exit 1
for _ in $(seq 300); do grep -q lab-agent-ready "$OUT/console.log" 2>/dev/null && break; sleep 1; done
export KVMTUNE_GUEST_DIR='{guest}'
'{kvmtune}' verify --domain kvmtune-verify-lab --connect qemu:///system --format json >"$OUT/definition.json" 2>"$OUT/definition.err"
echo $? >"$OUT/definition.status"
'{kvmtune}' verify --domain kvmtune-verify-lab --connect qemu:///system --config "$OUT/mismatch.xml" --format json >"$OUT/mismatch.json" 2>"$OUT/mismatch.err"
echo $? >"$OUT/mismatch.status"
touch '{done}'
for _ in $(seq 60); do virsh -c qemu:///system domstate kvmtune-verify-lab 2>/dev/null | grep -q 'shut off' && break; sleep 1; done
virsh -c qemu:///system domstate kvmtune-verify-lab >"$OUT/final-state" 2>&1
virsh -c qemu:///system destroy kvmtune-verify-lab >/dev/null 2>&1
kill "$logd"; wait "$logd" 2>/dev/null
true"#,
        guest = guest_dir.display(),
        done = done.display(),
    );
    kvmtune_testkit::libvirtd::with_private_libvirtd(out, &body);
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let console = read("console.log");
    assert!(
        console.contains("lab-agent-ready"),
        "the agent did not start:\n{console}\n{}",
        read("start.log")
    );
    let rules = |name: &str| -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(&read(name)).unwrap_or_else(|e| {
            panic!(
                "{name}: {e}: {}{}\nlibvirtd: {}",
                read(name),
                read(&name.replace(".json", ".err")),
                read("libvirtd.log")
            )
        });
        assert_eq!(value["guest"]["topology"]["logical_processors"], 4, "{value}");
        value["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule"].as_str().unwrap().to_string())
            .collect()
    };
    // Against its own definition: 4 vCPUs in 2 sockets as configured; only the TCG clock.
    assert_eq!(rules("definition.json"), ["VER008"]);
    assert_eq!(read("definition.status").trim(), "1");
    let mismatch = rules("mismatch.json");
    assert!(
        mismatch.contains(&"VER001".to_string()) && mismatch.contains(&"VER006".to_string()),
        "{mismatch:?}"
    );
    // The guest ran to its end (status 0: nothing left in /run) and powered off.
    assert!(console.contains("lab-exit-status: 0"), "{console}");
    assert!(read("final-state").contains("shut off"), "{}", read("final-state"));
}

/// The guest writes the report: what it names reaches the terminal with control characters
/// escaped.
#[test]
fn what_a_guest_writes_reaches_the_terminal_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let report = saved_report(dir.path());
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    value["os"]["name"] = serde_json::json!("evil\u{1b}]0;owned\u{7}\u{1b}[2J");
    std::fs::write(&report, value.to_string()).unwrap();
    let output = kvmtune(
        &[
            "verify",
            "--report",
            report.to_str().unwrap(),
            "--config",
            domain_file(dir.path()).to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains('\u{1b}') && !stdout.contains('\u{7}'), "{stdout:?}");
    assert!(stdout.contains("evil\\x1b]0;owned\\x07\\x1b[2J"), "{stdout}");
}

/// `--host-root`: a saved report of this machine, its topology set to two processors under one
/// L3, against a domain pinning them to host CPUs 0 and 8 of a Ryzen 9 7950X3D laid out as
/// Linux shows it (two CCDs, 0-7 and 8-15, each its own L3): VER010, exit 1; pinned to 0 and 1
/// of one CCD, clean. The VM does not run here, so without a host option nothing is compared.
#[test]
fn pinning_is_held_against_the_host_given() {
    let dir = tempfile::tempdir().unwrap();
    let mut report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved_report(dir.path())).unwrap()).unwrap();
    report["topology"] = serde_json::json!({
        "logical_processors": 2, "cores": 2, "sockets": 1, "numa_nodes": 1,
        "smt_groups": [], "l3_groups": [[0, 1]]
    });
    let report_path = dir.path().join("two.json");
    std::fs::write(&report_path, report.to_string()).unwrap();
    let host = dir.path().join("host");
    kvmtune_testkit::synthetic::SyntheticHost::ryzen_7950x3d().write(&host);
    let domain = |second: u32| {
        let path = dir.path().join(format!("pinned-{second}.xml"));
        std::fs::write(
            &path,
            format!(
                "<domain type='kvm'><name>pinned</name><memory unit='GiB'>1</memory><vcpu>2</vcpu>\
                 <cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='{second}'/></cputune>\
                 <os><type arch='x86_64'>hvm</type></os>\
                 <cpu mode='host-passthrough'><topology sockets='1' dies='1' cores='2' threads='1'/></cpu></domain>"
            ),
        )
        .unwrap();
        path
    };
    let verify = |config: &Path, host_args: &[&str]| {
        let mut args =
            vec!["verify", "--report", report_path.to_str().unwrap(), "--config", config.to_str().unwrap()];
        args.extend_from_slice(host_args);
        kvmtune(&args, None)
    };
    let across = domain(8);
    let output = verify(&across, &["--host-root", host.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("VER010"), "{}", text(&output));
    assert!(
        text(&output).contains("guest processors 0-1 on host CPUs 0,8 (2 host L3 groups)"),
        "{}",
        text(&output)
    );
    let output = verify(&domain(1), &["--host-root", host.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let output = verify(&across, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}
