//! `kvmtune experiment --qemu` on real KVM guests: variant scripts that exec QEMU with the
//! testkit's boot-sector guests (one doing port I/O in a loop, one halting until the BIOS timer
//! wakes it), recorded through QMP `query-stats` as `exits record` does. The halting variant must
//! win on exits per second with intervals apart; two scripts of the same guest must give no
//! measurable difference; a kvmtune killed with SIGKILL mid-round must leave no QEMU behind,
//! and one stopped with SIGTERM or SIGINT nothing at all; and variants that cannot run are
//! refused before any VM starts.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kvmtune_testkit::guest::{GuestKind, boot_sector};
use serde_json::Value;

/// One experiment at a time: on a 2-core machine, a spinning port-I/O guest or Chromium beside
/// a halting guest slows its BIOS past the warm-up, and a round then records the boot (seen in
/// CI: a twin at 241 and 767 exits/s against 21). Taken by every test that starts VMs; a test
/// that failed while holding it does not stop the others.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn kvmtune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmtune")).args(args).output().expect("kvmtune runs")
}

fn with_tracefs(args: &[&str]) -> Output {
    kvmtune_testkit::with_tracefs(env!("CARGO_BIN_EXE_kvmtune"), args)
        .output()
        .expect("unshare (util-linux) runs")
}

/// A variant script in `dir` that execs QEMU with `kind`'s boot sector, named `name` so that a
/// test can look for its process.
fn variant_script(dir: &Path, name: &str, kind: GuestKind) -> PathBuf {
    let image = dir.join(format!("{name}.img"));
    std::fs::write(&image, boot_sector(kind)).unwrap();
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec qemu-system-x86_64 -accel kvm -m 64 -display none -no-reboot \
             -name guest={name},debug-threads=on -drive file={},format=raw,if=ide,snapshot=on \"$@\"\n",
            image.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// A name no other test's guest has.
fn unique(what: &str) -> String {
    format!("kvmtune-exp-{what}-{}", std::process::id())
}

fn variant(name: &str, script: &Path) -> String {
    format!("{name}={}", script.display())
}

fn json(output: &Output) -> Value {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("experiment JSON")
}

/// The summary of all exits per second.
fn all_exits(result: &Value) -> &Value {
    result["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["measure"] == serde_json::json!({ "kind": "exits_per_second", "name": "exits" }))
        .unwrap_or_else(|| panic!("no all-exits summary in {result:#}"))
}

/// Processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|line| line.contains(needle))
        .collect()
}

#[test]
#[cfg_attr(
    not(all(feature = "qemu", feature = "root")),
    ignore = "needs QEMU and root (tracefs): cargo test --features qemu,root"
)]
fn the_halting_guest_wins_on_exits_with_intervals_apart() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (port_io, halt) = (unique("portio"), unique("halt"));
    let port_io_script = variant_script(dir.path(), &port_io, GuestKind::PortIo);
    let halt_script = variant_script(dir.path(), &halt, GuestKind::Halt);
    let kept = dir.path().join("kept");
    let report = dir.path().join("report.html");
    // With tracefs mounted (in a private mount namespace), as `exits record` is tested: this
    // nested host's KVM counts port I/O in `exits` but not in `io_exits`; `kvm_pio` sees it.
    let output = with_tracefs(&[
        "experiment",
        "--qemu",
        "--variant",
        &variant("portio", &port_io_script),
        "--variant",
        &variant("halt", &halt_script),
        "--warmup",
        "8s",
        "--duration",
        "2s",
        "--repeat",
        "3",
        "--seed",
        "7",
        "--output",
        kept.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--format",
        "json",
        "--quiet",
    ]);
    let result = json(&output);
    let summary = all_exits(&result);
    assert_eq!(summary["verdict"]["verdict"], "winner", "{summary:#}");
    assert_eq!(summary["verdict"]["variant"], "halt", "{summary:#}");
    // Each round ran both, in the order the seed gives, and its recording is kept and reads.
    let order = result["order"].as_array().unwrap();
    assert_eq!(order.len(), 3);
    assert!(order.iter().all(|round| {
        let mut names: Vec<&str> = round.as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        names.sort_unstable();
        names == ["halt", "portio"]
    }));
    for variant in result["variants"].as_array().unwrap() {
        assert_eq!(variant["rounds"].as_array().unwrap().len(), 3);
        let recording = variant["rounds"][0]["recording"].as_str().unwrap();
        let analyzed = kvmtune(&["exits", "analyze", recording, "--format", "json"]);
        assert!(
            matches!(analyzed.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&analyzed.stderr)
        );
    }
    let halt_rounds = &summary["estimates"][1];
    assert!(
        halt_rounds["interval"][1].as_f64().unwrap()
            < summary["estimates"][0]["interval"][0].as_f64().unwrap()
    );
    // Per kind: the port-I/O guest's exits are port I/O, the halting guest's are not.
    let io = result["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["measure"]["name"] == "kvm_pio")
        .unwrap_or_else(|| panic!("no kvm_pio summary in {result:#}"));
    assert!(io["estimates"][0]["median"].as_f64().unwrap() > 1000.0, "{io:#}");
    // The halting guest's few are the BIOS timer handler's (the PIC's end of interrupt).
    assert!(io["estimates"][1]["median"].as_f64().unwrap() < 1000.0, "{io:#}");
    assert!(processes_with(&port_io).is_empty() && processes_with(&halt).is_empty(), "a VM was left running");
    report_renders_in_chromium(&report, dir.path());
}

/// The experiment's HTML report, as a real browser makes it: self-contained, each variant's
/// three rounds drawn per measure, the all-exits verdict naming the halting guest, and a
/// screenshot that is not blank. Without the `tools` tier only the page itself is checked.
fn report_renders_in_chromium(report: &Path, dir: &Path) {
    let html = std::fs::read_to_string(report).expect("report written");
    // The only URL is the SVG namespace, which is a name, not a fetch.
    assert_eq!(html.matches("http").count(), html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count());
    assert!(!html.contains("<script") && !html.contains("<link"), "self-contained, nothing fetched");
    if !cfg!(feature = "tools") {
        return;
    }
    let chromium = |profile: &str, args: &[String]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
            ])
            .args(["--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", dir.join(profile).display()))
            .args(args)
            .output()
            .expect("chromium (scripts/test.sh installs it)")
    };
    let url = format!("file://{}", report.display());
    let dom = chromium("profile-dom", &["--dump-dom".to_string(), url.clone()]);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    let all_exits = dom
        .split("<section>")
        .find(|s| s.contains("<h2>all exits/s</h2>"))
        .unwrap_or_else(|| panic!("{dom}"));
    assert_eq!(all_exits.matches("class=\"round\"").count(), 6, "two variants, three rounds: {all_exits}");
    assert_eq!(all_exits.matches("class=\"interval\"").count(), 2);
    assert!(all_exits.contains("class=\"verdict winner\">halt is better"), "{all_exits}");
    assert!(all_exits.contains("logarithmic"), "20 against 100 000 exits/s needs a log axis: {all_exits}");
    assert!(dom.contains("<table class=\"breakdown\">"));
    let png = dir.join("report.png");
    let shot = chromium(
        "profile-shot",
        &["--window-size=1000,1200".to_string(), format!("--screenshot={}", png.display()), url],
    );
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1000);
    // A blank page compresses to a few kilobytes; text, charts and the table do not.
    assert!(bytes.len() > 30_000, "screenshot is {} bytes: blank?", bytes.len());
}

#[test]
#[cfg_attr(not(feature = "qemu"), ignore = "needs QEMU and /dev/kvm: cargo test --features qemu")]
fn two_runs_of_the_same_guest_make_no_measurable_difference() {
    let _one = one_at_a_time();
    // Five rounds: with n rounds the bootstrap interval of a median is the rounds' range
    // (for n = 3 and 5 alike), so two equal variants come out "apart" when every round of one
    // lies below every round of the other: 1 time in 10 with 3 rounds, 1 in 126 with 5 (seen
    // in CI with 3: 19.99-21.16 against 21.16-21.82 exits/s, 3.1% apart).
    let dir = tempfile::tempdir().unwrap();
    let twin = unique("twin");
    let script = variant_script(dir.path(), &twin, GuestKind::Halt);
    let output = kvmtune(&[
        "experiment",
        "--qemu",
        "--variant",
        &variant("first", &script),
        "--variant",
        &variant("second", &script),
        "--warmup",
        "12s",
        "--duration",
        "6s",
        "--repeat",
        "5",
        "--quiet",
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    let all =
        text.split("\n\n").find(|block| block.starts_with("all exits/s")).unwrap_or_else(|| panic!("{text}"));
    assert!(all.contains("=> no measurable difference"), "{text}");
    // A seed was chosen and printed, so the run can be replayed.
    assert!(text.lines().next().unwrap().contains("--seed "), "{text}");
    // The halts are shown and not ranked.
    assert!(text.contains("halt_exits/s\n") && text.contains("not ranked"), "{text}");
    assert!(processes_with(&twin).is_empty(), "a VM was left running");
}

#[test]
#[cfg_attr(not(feature = "qemu"), ignore = "needs QEMU and /dev/kvm: cargo test --features qemu")]
fn one_round_says_what_it_cannot_tell() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let once = unique("once");
    let script = variant_script(dir.path(), &once, GuestKind::Halt);
    let output = kvmtune(&[
        "experiment",
        "--qemu",
        "--variant",
        &variant("a", &script),
        "--variant",
        &variant("b", &script),
        "--warmup",
        "1s",
        "--duration",
        "1s",
        "--repeat",
        "1",
        "--quiet",
        "--workload",
        "echo warming; echo \"score: 4$KVMTUNE_ROUND\"",
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("not told: fewer than 3 rounds give no interval"), "{text}");
    assert!(text.contains("note: 1 round cannot tell how much a variant's numbers scatter"), "{text}");
    // The workload's last number is a measure, higher is better by default.
    let workload =
        text.split("\n\n").find(|b| b.starts_with("workload figure")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        workload.contains("(higher is better)")
            && workload.contains("  41                            -  41\n"),
        "{workload}"
    );
}

/// Starts `kvmtune experiment` on two variant scripts, two rounds each, with its temporary
/// directories in `tmpdir`, and reads its progress until it reports `phase`. Returns the child
/// and the rest of its stderr.
fn experiment_until(
    first: &Path,
    second: &Path,
    tmpdir: &Path,
    phase: &str,
) -> (Child, BufReader<ChildStderr>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvmtune"))
        .args([
            "experiment",
            "--qemu",
            "--variant",
            &variant("p", first),
            "--variant",
            &variant("h", second),
            "--warmup",
            "3s",
            "--duration",
            "3s",
            "--repeat",
            "2",
        ])
        .env("TMPDIR", tmpdir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        seen.push(std::mem::take(&mut line));
        if seen.last().unwrap().contains(phase) {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.contains(phase)), "never reached {phase}: {seen:?}");
    (child, stderr)
}

#[test]
#[cfg_attr(not(feature = "qemu"), ignore = "needs QEMU and /dev/kvm: cargo test --features qemu")]
fn a_kvmtune_killed_mid_round_leaves_no_vm() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (port_io, halt) = (unique("killed-portio"), unique("killed-halt"));
    let first = variant_script(dir.path(), &port_io, GuestKind::PortIo);
    let second = variant_script(dir.path(), &halt, GuestKind::Halt);
    for phase in ["warming up", "recording"] {
        // What a kvmtune killed so cannot remove (its temporary directories) goes with `dir`.
        let (mut child, _stderr) = experiment_until(&first, &second, dir.path(), phase);
        assert!(
            !(processes_with(&port_io).is_empty() && processes_with(&halt).is_empty()),
            "no VM ran while {phase}"
        );
        Command::new("kill").args(["-9", &child.id().to_string()]).status().unwrap();
        child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && !(processes_with(&port_io).is_empty() && processes_with(&halt).is_empty())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(processes_with(&port_io).is_empty(), "{:?}", processes_with(&port_io));
        assert!(processes_with(&halt).is_empty(), "{:?}", processes_with(&halt));
    }
}

/// SIGTERM and SIGINT, unlike SIGKILL, reach kvmtune: it stops the round's VM, removes its
/// temporary directories, says why it stopped and exits 2.
#[test]
#[cfg_attr(not(feature = "qemu"), ignore = "needs QEMU and /dev/kvm: cargo test --features qemu")]
fn a_kvmtune_stopped_mid_round_says_so_and_leaves_nothing() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (port_io, halt) = (unique("stopped-portio"), unique("stopped-halt"));
    let first = variant_script(dir.path(), &port_io, GuestKind::PortIo);
    let second = variant_script(dir.path(), &halt, GuestKind::Halt);
    let scratch = tempfile::tempdir().unwrap();
    for (signal, phase) in [("-TERM", "warming up"), ("-INT", "recording")] {
        let (mut child, mut stderr) = experiment_until(&first, &second, scratch.path(), phase);
        let asked = Instant::now();
        Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(2), "{signal} while {phase}: {rest}");
        assert!(rest.contains("stopped when asked to"), "{signal} while {phase}: {rest}");
        // It stops within the polling interval of its loops, not at the end of the round.
        assert!(asked.elapsed() < Duration::from_secs(3), "{signal} while {phase}: {:?}", asked.elapsed());
        assert!(processes_with(&port_io).is_empty(), "{:?}", processes_with(&port_io));
        assert!(processes_with(&halt).is_empty(), "{:?}", processes_with(&halt));
        let left: Vec<_> =
            std::fs::read_dir(scratch.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{signal} while {phase} left {left:?}");
    }
}

#[test]
fn variants_that_cannot_run_are_refused_before_any_vm_starts() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("ran");
    let good = dir.path().join("good.sh");
    std::fs::write(&good, format!("#!/bin/sh\ntouch {}\nexit 1\n", runs.display())).unwrap();
    std::fs::set_permissions(&good, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let not_executable = dir.path().join("plain.sh");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let good_variant = variant("good", &good);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![good_variant.clone(), variant("plain", &not_executable)], "variant plain: "),
        (vec![good_variant.clone(), "gone=/nonexistent/script".into()], "variant gone: /nonexistent/script"),
        (vec![good_variant.clone()], "at least two variants"),
        (vec![good_variant.clone(), good_variant.clone()], "named twice"),
        (vec![good_variant.clone(), variant("../x", &good)], "a name is letters"),
        (vec![good_variant.clone(), "no-equals-sign".into()], "is not NAME=SCRIPT"),
    ];
    for (variants, message) in cases {
        let mut args = vec!["experiment".to_string(), "--qemu".into()];
        for v in &variants {
            args.extend(["--variant".to_string(), v.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = kvmtune(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variants:?}: {stderr}");
        assert!(stderr.contains(message), "{variants:?}: {stderr}");
        assert!(!runs.exists(), "{variants:?}: a variant ran");
    }
    let zero = kvmtune(&[
        "experiment",
        "--qemu",
        "--variant",
        &good_variant,
        "--variant",
        &good_variant.replace("good=", "other="),
        "--repeat",
        "0",
    ]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--repeat must be at least 1"));
    assert!(!runs.exists());
}
