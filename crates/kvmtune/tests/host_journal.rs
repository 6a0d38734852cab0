//! The host-change journal on a host laid out in a temp dir ([`Host::rooted`]): apply then
//! release gives every file back byte for byte; so does release after a failure midway, after
//! kill -9 at every journal step in turn (a failpoint) and after 50 real SIGKILLs at random
//! moments. The real kernel files (cgroups, IRQs, workqueues) are for the lab guest; what is
//! tested here is the journal's exactness, which does not depend on what the files are.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kvmtune::host::Host;
use kvmtune::hostchange::journal::BOOT_ID_PATH;
use kvmtune::hostchange::{HostAction, Journal, JournalError, JournalKind, Released};
use kvmtune::values::CpuSet;

const CHILD_ENV: &str = "KVMTUNE_JOURNAL_TEST_CHILD";

/// A host's files with what they hold: trailing newlines or none, masks, a list, a value.
fn host_files(irqs: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (BOOT_ID_PATH.to_string(), b"6f1c0bd2-33e4-4b0e-9d55-0a1b2c3d4e5f\n".to_vec()),
        ("/proc/irq/default_smp_affinity".to_string(), b"f\n".to_vec()),
        ("/sys/devices/virtual/workqueue/cpumask".to_string(), b"f\n".to_vec()),
        (
            "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages".to_string(),
            b"0\n".to_vec(),
        ),
        ("/sys/fs/cgroup/cgroup.subtree_control".to_string(), b"memory pids\n".to_vec()),
        ("/sys/fs/cgroup/host.slice/cpuset.cpus".to_string(), Vec::new()),
    ];
    for irq in 0..irqs {
        files
            .push((format!("/proc/irq/{irq}/smp_affinity"), format!("{:x}\n", 0xf - (irq % 3)).into_bytes()));
    }
    files
}

/// What prepare would write on CPUs 2-3 with housekeeping 0-1.
fn actions(files: &[(String, Vec<u8>)]) -> Vec<HostAction> {
    files
        .iter()
        .filter(|(path, _)| path != BOOT_ID_PATH)
        .map(|(path, _)| {
            let new = match path.as_str() {
                p if p.ends_with("nr_hugepages") => "4",
                p if p.ends_with("subtree_control") => "+cpuset",
                p if p.ends_with("cpuset.cpus") => "0-1",
                _ => "3",
            };
            HostAction::write(path.clone(), new.to_string(), "test")
        })
        .collect()
}

/// What prepare would write on the host laid out below `root`.
fn actions_on(root: &Path) -> Vec<HostAction> {
    let files: Vec<(String, Vec<u8>)> = snapshot(root)
        .into_iter()
        .map(|(p, b)| (format!("/{}", p.strip_prefix(root).unwrap().display()), b))
        .collect();
    actions(&files)
}

fn lay_out(root: &Path, files: &[(String, Vec<u8>)]) {
    for (path, bytes) in files {
        let file = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }
}

/// Every file below `root`, with its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, into);
            } else {
                into.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(root, &mut files);
    files
}

struct Lab {
    _dir: tempfile::TempDir,
    root: PathBuf,
    journals: PathBuf,
    before: BTreeMap<PathBuf, Vec<u8>>,
}

fn lab(irqs: usize) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    let journals = dir.path().join("run-kvmtune");
    lay_out(&root, &host_files(irqs));
    let before = snapshot(&root);
    Lab { _dir: dir, root, journals, before }
}

impl Lab {
    fn writer(&self) -> Host {
        Host::rooted(&self.root)
    }
    fn journal(&self) -> Journal {
        Journal::open(&self.journals, &self.writer()).unwrap()
    }
    fn actions(&self) -> Vec<HostAction> {
        actions_on(&self.root)
    }
    fn assert_restored(&self, context: &str) {
        assert_eq!(snapshot(&self.root), self.before, "{context}");
        assert!(self.journal().status().unwrap().is_empty(), "{context}: a journal is left");
    }
    /// Runs `apply` in a child process (this test binary, re-run on `child_applies`).
    fn spawn_child(&self, kill_at_step: Option<usize>) -> std::process::Child {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "child_applies", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env("LAB_ROOT", &self.root)
            .env("LAB_JOURNALS", &self.journals)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(step) = kill_at_step {
            command.env("LAB_KILL_AT", step.to_string());
        }
        command.spawn().unwrap()
    }
}

/// Not a test of its own: the child process of the crash tests, which run it with `--ignored`.
#[test]
#[ignore = "the child process of the crash tests, run by them"]
fn child_applies() {
    assert!(std::env::var_os(CHILD_ENV).is_some(), "run by the crash tests only");
    let root = PathBuf::from(std::env::var("LAB_ROOT").unwrap());
    let journals = PathBuf::from(std::env::var("LAB_JOURNALS").unwrap());
    let writer = Host::rooted(&root);
    let mut journal = Journal::open(&journals, &writer).unwrap();
    if let Ok(step) = std::env::var("LAB_KILL_AT") {
        journal = journal.kill_at_step(step.parse().unwrap());
    }
    journal.apply(JournalKind::Host, "win10", &CpuSet::new(), &actions_on(&root), &writer).unwrap();
}

#[test]
fn apply_then_release_gives_every_byte_back() {
    let lab = lab(4);
    let actions = lab.actions();
    let journal = lab.journal();
    let applied = journal.apply(JournalKind::Host, "win10", &CpuSet::new(), &actions, &lab.writer()).unwrap();
    assert_eq!(applied.len(), actions.len());
    assert_ne!(snapshot(&lab.root), lab.before, "the changes were made");
    let status = journal.status().unwrap();
    assert_eq!(status.len(), 1);
    assert!(status[0].complete && !status[0].from_another_boot);
    assert!(status[0].changes.iter().all(|c| c.done));
    assert!(matches!(
        journal.apply(JournalKind::Host, "win10", &CpuSet::new(), &actions, &lab.writer()),
        Err(JournalError::AlreadyPrepared(_))
    ));

    assert_eq!(
        journal.release(JournalKind::Host, "win10", &lab.writer()).unwrap(),
        Released::Restored(actions.len())
    );
    drop(journal);
    lab.assert_restored("after release");
}

#[test]
fn a_failure_midway_rolls_back_what_was_done() {
    let lab = lab(2);
    let mut actions = lab.actions();
    // The fourth change is planned against a value the host no longer holds.
    actions[3].old = Some("something else".to_string());
    let error =
        lab.journal().apply(JournalKind::Host, "win10", &CpuSet::new(), &actions, &lab.writer()).unwrap_err();
    assert!(matches!(error, JournalError::RolledBack { undone: 3, .. }), "{error}");
    lab.assert_restored("after a stale plan");

    // A file that is not there: the error names it.
    actions[3].old = None;
    actions[5].path = "/proc/irq/99/smp_affinity".to_string();
    let error =
        lab.journal().apply(JournalKind::Host, "win10", &CpuSet::new(), &actions, &lab.writer()).unwrap_err();
    assert!(error.to_string().contains("/proc/irq/99/smp_affinity"), "{error}");
    lab.assert_restored("after a missing file");
}

#[test]
fn kill_at_every_journal_step_then_release_restores_exactly() {
    let lab = lab(3);
    let changes = lab.actions().len();
    // The file created, begin, then before + write + done per change, then complete.
    let steps = 2 + 3 * changes + 1;
    for step in 1..=steps {
        let status = lab.spawn_child(Some(step)).wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "step {step}: {status:?}");
        let journal = lab.journal();
        let left = journal.status().unwrap();
        assert_eq!(left.len(), 1, "step {step}");
        assert_eq!(left[0].complete, step == steps, "step {step}");
        journal.release(JournalKind::Host, "win10", &lab.writer()).unwrap();
        drop(journal);
        lab.assert_restored(&format!("kill -9 at step {step} of {steps}"));
    }
    // And without a kill, the child finishes.
    assert!(lab.spawn_child(None).wait().unwrap().success());
    lab.journal().release(JournalKind::Host, "win10", &lab.writer()).unwrap();
    lab.assert_restored("after a whole run");
}

#[test]
fn fifty_real_sigkills_at_random_moments() {
    let lab = lab(40);
    // How long a whole run takes here, to spread the kills over it.
    let started = Instant::now();
    assert!(lab.spawn_child(None).wait().unwrap().success());
    let whole_run = started.elapsed();
    lab.journal().release(JournalKind::Host, "win10", &lab.writer()).unwrap();
    lab.assert_restored("after a whole run");

    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut outcomes = [0usize; 2];
    for kill in 0..50 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = whole_run.mul_f64((state % 1000) as f64 / 1000.0 * 1.1);
        let mut child = lab.spawn_child(None);
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        outcomes[usize::from(status.success())] += 1;
        let journal = lab.journal();
        for vm in journal.status().unwrap() {
            journal.release(vm.kind, &vm.vm, &lab.writer()).unwrap();
        }
        drop(journal);
        lab.assert_restored(&format!("kill {kill} after {delay:?} of {whole_run:?}"));
    }
    eprintln!("50 kills: {} mid-run, {} after the run ended", outcomes[0], outcomes[1]);
    assert!(outcomes[0] > 0, "no kill landed while the child ran");
}

#[test]
fn a_cut_short_last_line_is_a_write_never_made_and_a_bad_line_inside_is_an_error() {
    let lab = lab(1);
    let journal = lab.journal();
    journal.apply(JournalKind::Host, "win10", &CpuSet::new(), &lab.actions(), &lab.writer()).unwrap();
    let path = lab.journals.join("win10.host.journal");
    let text = std::fs::read_to_string(&path).unwrap();

    let cut = format!("{}{{\"record\":\"bef", text);
    std::fs::write(&path, &cut).unwrap();
    assert_eq!(journal.status().unwrap()[0].changes.len(), lab.actions().len());

    let broken = text.replacen("\"record\":\"done\"", "\"record\":\"dune\"", 1);
    std::fs::write(&path, broken).unwrap();
    assert!(journal.status().unwrap().is_empty(), "a corrupt journal is left out of the status");
    let error = journal.unreadable().unwrap().remove(0).1;
    assert!(matches!(error, JournalError::Corrupt { line: 3, .. }), "{error}");
    assert!(error.to_string().contains("win10.host.journal:3:"), "{error}");

    std::fs::write(&path, text).unwrap();
    journal.release(JournalKind::Host, "win10", &lab.writer()).unwrap();
    drop(journal);
    lab.assert_restored("after release");
}

#[test]
fn a_journal_from_another_boot_is_set_aside_not_replayed() {
    let lab = lab(1);
    lab.journal().apply(JournalKind::Host, "win10", &CpuSet::new(), &lab.actions(), &lab.writer()).unwrap();
    let changed = snapshot(&lab.root);
    // A reboot: new boot id; the kernel state the journal describes is gone.
    let boot_id = lab.root.join(BOOT_ID_PATH.trim_start_matches('/'));
    std::fs::write(&boot_id, "0b5e7a1c-0000-4000-8000-000000000001\n").unwrap();
    let journal = lab.journal();
    assert!(journal.status().unwrap()[0].from_another_boot);
    let Released::SetAside(aside) = journal.release(JournalKind::Host, "win10", &lab.writer()).unwrap()
    else {
        panic!("replayed a journal from another boot")
    };
    assert!(aside.to_string_lossy().ends_with("win10.host.journal.boot-6f1c0bd2"), "{}", aside.display());
    let mut after = snapshot(&lab.root);
    after.remove(&boot_id);
    let mut expected = changed;
    expected.remove(&boot_id);
    assert_eq!(after, expected, "nothing written");
    assert!(journal.status().unwrap().is_empty());
}

#[test]
fn invocations_are_serialized_and_names_checked() {
    let lab = lab(1);
    let journal = lab.journal();
    let other = std::fs::File::open(lab.journals.join("lock")).unwrap();
    assert!(other.try_lock().is_err(), "a second invocation would run alongside");
    drop(journal);
    // A process another test thread forks shares the lock's open file until its exec closes it
    // (flock belongs to the open file, and O_CLOEXEC acts only at exec): the lock is free once
    // such a child has exec'd, so it is tried until then, not once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while other.try_lock().is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(other.try_lock().is_ok(), "the lock goes with the journal");
    drop(other);
    for bad in ["", "..", "a/b"] {
        let error = lab
            .journal()
            .apply(JournalKind::Host, bad, &CpuSet::new(), &lab.actions(), &lab.writer())
            .unwrap_err();
        assert!(matches!(error, JournalError::BadVmName(_)), "{bad:?}: {error}");
    }
    lab.assert_restored("nothing written for a bad name");
}

#[test]
fn waits_for_the_lock_rather_than_failing() {
    let lab = lab(1);
    let journal = lab.journal();
    let journals = lab.journals.clone();
    let root = lab.root.clone();
    let waiter = std::thread::spawn(move || {
        let writer = Host::rooted(&root);
        Journal::open(&journals, &writer).map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "opened while another held the lock");
    drop(journal);
    waiter.join().unwrap().unwrap();
}

// On real kernel files, in the lab guest: the same kill at every step, then release, on IRQ
// masks, the workqueue masks, node-1 hugepages and a cgroup v2 cpuset. The host test boots the
// guest and runs this test binary there (its path is the same there, over 9p); in the guest,
// `lab_orchestrates` kills and releases, and `lab_child_applies` is what it kills.

const IN_LAB: &str = "KVMTUNE_JOURNAL_IN_LAB";
const LAB_CGROUP: &str = "/sys/fs/cgroup/kvmtune-journal-test";

#[test]
#[cfg_attr(not(feature = "lab"), ignore = "needs the lab guest: cargo test --features lab")]
fn on_real_kernel_files_in_the_lab_guest() {
    let exe = std::env::current_exe().unwrap();
    let output = kvmtune_testkit::lab::run(
        kvmtune_testkit::lab::Cgroup::V2,
        exe.parent().unwrap(),
        &format!(
            "{IN_LAB}=orchestrate {} --exact lab_orchestrates --ignored --nocapture --test-threads=1",
            exe.display()
        ),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    // libtest prints `test lab_orchestrates ... ` before the test's own line.
    let summary = stdout.lines().find_map(|l| l.split_once("lab: restored exactly after every kill"));
    eprintln!("lab: restored exactly after every kill{}", summary.expect(&stdout).1);
}

/// The files a prepare would change in the guest, with their new values. IRQs whose mask the
/// kernel refuses to change (the timer, the cascade) are left out, as prepare lists them.
fn lab_actions() -> Vec<HostAction> {
    let mut targets = vec![
        ("/proc/irq/default_smp_affinity".to_string(), "3"),
        ("/sys/devices/virtual/workqueue/cpumask".to_string(), "3"),
        ("/sys/bus/workqueue/devices/writeback/cpumask".to_string(), "3"),
        ("/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages".to_string(), "4"),
        (format!("{LAB_CGROUP}/cpuset.cpus"), "0-1"),
    ];
    let mut irqs: Vec<String> = std::fs::read_dir("/proc/irq")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("smp_affinity"))
        .filter(|p| p.is_file())
        // Writable: the same value written back is accepted.
        .filter(|p| std::fs::read(p).is_ok_and(|v| std::fs::write(p, v).is_ok()))
        .map(|p| p.display().to_string())
        .collect();
    irqs.sort();
    targets.extend(irqs.into_iter().map(|p| (p, "3")));
    targets.into_iter().map(|(path, new)| HostAction::write(path, new.to_string(), "lab")).collect()
}

fn read_all(actions: &[HostAction]) -> Vec<(String, Vec<u8>)> {
    actions.iter().map(|a| (a.path.clone(), std::fs::read(&a.path).unwrap())).collect()
}

#[test]
#[ignore = "runs in the lab guest, started there by on_real_kernel_files_in_the_lab_guest"]
fn lab_orchestrates() {
    assert_eq!(std::env::var(IN_LAB).as_deref(), Ok("orchestrate"), "runs in the lab guest only");
    std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpuset").unwrap();
    std::fs::create_dir_all(LAB_CGROUP).unwrap();
    let actions = lab_actions();
    let before = read_all(&actions);
    let journals = PathBuf::from(std::env::var("TMPDIR").unwrap()).join("journal");
    let writer = kvmtune::host::Host::live();
    let release = || {
        let journal = Journal::open(&journals, &writer).unwrap();
        for vm in journal.status().unwrap() {
            journal.release(vm.kind, &vm.vm, &writer).unwrap();
        }
    };
    let child = |kill_at: Option<usize>| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "lab_child_applies", "--ignored", "--nocapture", "--test-threads=1"])
            .env(IN_LAB, "child");
        command.env("LAB_JOURNALS", &journals);
        if let Some(step) = kill_at {
            command.env("LAB_KILL_AT", step.to_string());
        }
        command.status().unwrap()
    };

    // A whole run changes what it says, and release gives it back.
    assert!(child(None).success());
    let changed = read_all(&actions);
    for ((path, now), action) in changed.iter().zip(&actions) {
        assert_eq!(String::from_utf8_lossy(now).trim(), action.new, "{path}");
    }
    release();
    assert_eq!(read_all(&actions), before, "after a whole run and release");

    let steps = 2 + 3 * actions.len() + 1;
    for step in 1..=steps {
        let status = child(Some(step));
        assert_eq!(status.signal(), Some(libc::SIGKILL), "step {step}");
        release();
        assert_eq!(read_all(&actions), before, "kill -9 at step {step} of {steps}");
    }
    println!("lab: restored exactly after every kill ({steps} steps, {} files)", actions.len());
}

#[test]
#[ignore = "the child process of lab_orchestrates, in the lab guest"]
fn lab_child_applies() {
    assert_eq!(std::env::var(IN_LAB).as_deref(), Ok("child"), "runs in the lab guest only");
    let journals = PathBuf::from(std::env::var("LAB_JOURNALS").unwrap());
    let writer = kvmtune::host::Host::live();
    let mut journal = Journal::open(&journals, &writer).unwrap();
    if let Ok(step) = std::env::var("LAB_KILL_AT") {
        journal = journal.kill_at_step(step.parse().unwrap());
    }
    journal.apply(JournalKind::Host, "win10", &CpuSet::new(), &lab_actions(), &writer).unwrap();
}

/// Journals as the first released kvmtune wrote them (before records carried a version), made
/// by its `host prepare` on a host laid out in a directory (`tests/fixtures/journal-v1/`):
/// `gaming` complete (hugepages on node 1, the default IRQ mask, three IRQs), `second` killed
/// by its test failpoint just after its first write. Both still release, newest first, to the
/// state before either prepare.
#[test]
fn journals_of_the_first_released_format_still_release() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    let pool = "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages";
    let mut now = vec![
        (BOOT_ID_PATH.to_string(), b"5b3c7e1a-0000-4000-8000-00000000cafe\n".to_vec()),
        (pool.to_string(), b"32".to_vec()),
        ("/proc/irq/default_smp_affinity".to_string(), b"1".to_vec()),
    ];
    for irq in [0, 9, 24] {
        now.push((format!("/proc/irq/{irq}/smp_affinity_list"), b"0-1".to_vec()));
    }
    lay_out(&root, &now);
    let journals = dir.path().join("run-kvmtune");
    std::fs::create_dir_all(&journals).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1");
    for name in ["gaming.journal", "second.journal"] {
        std::fs::copy(fixtures.join(name), journals.join(name)).unwrap();
    }
    let host = Host::rooted(&root);
    let journal = Journal::open(&journals, &host).unwrap();
    let status = journal.status().unwrap();
    assert_eq!(
        status.iter().map(|j| (j.vm.as_str(), j.complete)).collect::<Vec<_>>(),
        [("gaming", true), ("second", false)]
    );
    assert_eq!(journal.release(JournalKind::Host, "second", &host).unwrap(), Released::Restored(1));
    assert_eq!(journal.release(JournalKind::Host, "gaming", &host).unwrap(), Released::Restored(5));
    let read = |path: &str| std::fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap();
    assert_eq!(read(pool), "0\n");
    assert_eq!(read("/proc/irq/default_smp_affinity"), "f\n");
    for irq in [0, 9, 24] {
        assert_eq!(read(&format!("/proc/irq/{irq}/smp_affinity_list")), "0-3\n");
    }
    assert!(journal.status().unwrap().is_empty());
}

/// A journal of a newer format than this kvmtune knows is refused with what it is, never
/// guessed at.
#[test]
fn a_journal_of_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    lay_out(&root, &[(BOOT_ID_PATH.to_string(), b"5b3c7e1a-0000-4000-8000-00000000cafe\n".to_vec())]);
    let journals = dir.path().join("run-kvmtune");
    std::fs::create_dir_all(&journals).unwrap();
    std::fs::write(
        journals.join("future.journal"),
        "{\"record\":\"begin\",\"version\":99,\"vm\":\"future\",\"boot_id\":\"5b3c7e1a-0000-4000-8000-00000000cafe\",\"pid\":1}\n",
    )
    .unwrap();
    let host = Host::rooted(&root);
    let journal = Journal::open(&journals, &host).unwrap();
    // Left out of the status, named as unreadable, and its VM's release fails.
    assert!(journal.status().unwrap().is_empty());
    let unreadable = journal.unreadable().unwrap();
    assert_eq!(unreadable.len(), 1);
    assert!(unreadable[0].1.to_string().contains("journal version 99, written by a newer kvmtune"));
    let error = journal.release(JournalKind::Host, "future", &host).unwrap_err();
    assert!(error.to_string().contains("journal version 99, written by a newer kvmtune"), "{error}");
}

/// `PATH: why` for each journal that cannot be read.
fn unreadable_lines(journal: &Journal) -> Vec<String> {
    journal.unreadable().unwrap().iter().map(|(path, why)| format!("{}: {why}", path.display())).collect()
}

/// A host laid out in a temp dir with `irqs` IRQs, and its journal directory opened.
struct RootedHost {
    dir: tempfile::TempDir,
    root: PathBuf,
    files: Vec<(String, Vec<u8>)>,
    journals: PathBuf,
    host: Host,
    journal: Journal,
}

fn rooted_host(irqs: usize) -> RootedHost {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    let files = host_files(irqs);
    lay_out(&root, &files);
    let journals = dir.path().join("run-kvmtune");
    let host = Host::rooted(&root);
    let journal = Journal::open(&journals, &host).unwrap();
    RootedHost { dir, root, files, journals, host, journal }
}

/// A journal is root's instructions. One that another user could have written (a link, a
/// file writable by others, a boot id that is no UUID) is never replayed, and it does not stop
/// the other VMs: they are prepared and released as before.
#[test]
fn journals_anyone_else_could_have_written_are_refused_and_the_rest_still_work() {
    let RootedHost { dir, root, files, journals, host, journal } = rooted_host(2);
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    assert_eq!(std::fs::metadata(&journals).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(journals.join("lock")).unwrap().mode() & 0o777, 0o600);

    let victim = root.join("etc-shadow");
    std::fs::write(&victim, "root:x\n").unwrap();
    let planted = |name: &str, boot_id: &str| {
        format!(
            "{{\"record\":\"begin\",\"version\":2,\"vm\":\"{name}\",\"boot_id\":\"{boot_id}\",\"pid\":1,\"cpus\":\"2-3\",\"order\":1}}\n\
             {{\"record\":\"before\",\"step\":0,\"path\":\"{}\",\"original_hex\":\"6f776e6564\",\"new\":\"x\",\"why\":\"planted\",\"change\":{{\"kind\":\"write\"}}}}\n\
             {{\"record\":\"done\",\"step\":0}}\n",
            "/etc-shadow"
        )
    };
    let this_boot = "6f1c0bd2-33e4-4b0e-9d55-0a1b2c3d4e5f";
    std::fs::write(journals.join("writable.journal"), planted("writable", this_boot)).unwrap();
    std::fs::set_permissions(journals.join("writable.journal"), std::fs::Permissions::from_mode(0o666))
        .unwrap();
    std::fs::write(dir.path().join("elsewhere"), planted("linked", this_boot)).unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), journals.join("linked.journal")).unwrap();
    std::fs::write(journals.join("escape.journal"), planted("escape", "/../../a")).unwrap();

    // The others still prepare and release.
    journal
        .apply(JournalKind::Host, "win", &CpuSet::parse_list("2-3").unwrap(), &actions(&files), &host)
        .unwrap();
    assert_eq!(journal.status().unwrap().iter().map(|j| j.vm.as_str()).collect::<Vec<_>>(), ["win"]);
    let unreadable = unreadable_lines(&journal);
    assert_eq!(unreadable.len(), 3, "{unreadable:#?}");
    assert!(unreadable.iter().any(|u| u.contains("escape.journal") && u.contains("boot_id is not a UUID")));
    assert!(unreadable.iter().any(|u| u.contains("linked.journal") && u.contains("symbolic link")));
    assert!(
        unreadable
            .iter()
            .any(|u| u.contains("writable.journal") && u.contains("writable by its group and all users"))
    );
    for vm in ["writable", "linked", "escape"] {
        assert!(journal.release(JournalKind::Host, vm, &host).is_err(), "{vm} was released");
    }
    journal.release(JournalKind::Host, "win", &host).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"root:x\n");
    assert!(journals.join("escape.journal").exists(), "the planted journal was moved");
}

/// Another user's journal directory or journal is refused: only the user kvmtune runs as may
/// have written it.
#[test]
#[cfg_attr(not(feature = "root"), ignore = "needs root: cargo test --features root")]
fn a_journal_owned_by_another_user_is_refused() {
    let RootedHost { dir: _dir, root: _, files: _, journals, host, journal } = rooted_host(0);
    let file = journals.join("other.journal");
    std::fs::write(&file, "{}\n").unwrap();
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
    let unreadable = journal.unreadable().unwrap();
    assert!(unreadable[0].1.to_string().contains("belongs to uid 65534"), "{}", unreadable[0].1);
    drop(journal);
    std::os::unix::fs::chown(&journals, Some(65534), Some(65534)).unwrap();
    let error = Journal::open(&journals, &host).unwrap_err();
    assert!(error.to_string().contains("belongs to uid 65534"), "{error}");
}

/// Each kind of journal is a namespace of its own: domain `a`'s devices and the host isolation
/// of a domain named `a.vfio` (the name the devices' journal had before) are two journals, and
/// releasing one leaves the other. A file whose name says another VM or kind than its begin
/// record is refused.
#[test]
fn a_vms_device_journal_and_a_vm_named_like_it_never_share_a_journal() {
    let RootedHost { dir: _dir, root: _, files, journals, host, journal } = rooted_host(2);
    let all = actions(&files);
    journal.apply(JournalKind::Devices, "a", &CpuSet::new(), &all[..1], &host).unwrap();
    journal.apply(JournalKind::Host, "a.vfio", &CpuSet::new(), &all[1..2], &host).unwrap();
    let mut kinds: Vec<(JournalKind, String)> =
        journal.status().unwrap().into_iter().map(|j| (j.kind, j.vm)).collect();
    kinds.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(kinds, [(JournalKind::Devices, "a".to_string()), (JournalKind::Host, "a.vfio".to_string())]);
    // Stopping `a` releases its devices, and nothing of `a.vfio`.
    assert!(journal.release(JournalKind::Host, "a", &host).is_err(), "a has no host journal");
    assert_eq!(journal.release(JournalKind::Devices, "a", &host).unwrap(), Released::Restored(1));
    let left: Vec<String> = journal.status().unwrap().into_iter().map(|j| j.kind.label(&j.vm)).collect();
    assert_eq!(left, ["a.vfio"]);

    // The same records under another VM's file name.
    std::fs::copy(journals.join("a.vfio.host.journal"), journals.join("b.host.journal")).unwrap();
    let unreadable = journal.unreadable().unwrap();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert!(unreadable[0].1.to_string().contains("not what the file's name says"), "{}", unreadable[0].1);
    assert!(journal.release(JournalKind::Host, "b", &host).is_err());
    std::fs::remove_file(journals.join("b.host.journal")).unwrap();
    assert_eq!(journal.release(JournalKind::Host, "a.vfio", &host).unwrap(), Released::Restored(1));
}

/// A journal is replayed as root: each record must stay within what its kind may touch, or
/// the whole journal is refused before anything of it is undone. Planted with the right owner
/// and mode (as root could have been tricked into writing it), each names one thing no kvmtune
/// change touches.
#[test]
fn a_record_outside_its_kinds_allow_list_refuses_its_journal() {
    use std::os::unix::fs::OpenOptionsExt as _;
    let RootedHost { dir: _dir, root, files, journals, host, journal } = rooted_host(1);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let victim = root.join("etc/shadow");
    std::fs::write(&victim, "root:x\n").unwrap();
    let boot = "6f1c0bd2-33e4-4b0e-9d55-0a1b2c3d4e5f";
    let planted = [
        (
            "shadow",
            r#""path":"/etc/shadow","new":"x","change":{"kind":"write"}"#,
            "not a kernel file kvmtune tunes",
        ),
        (
            "climb",
            r#""path":"/proc/irq/../../etc/shadow","new":"x","change":{"kind":"may_be_refused"}"#,
            "an IRQ's mask",
        ),
        (
            "driver",
            r#""path":"/sys/bus/pci/devices/0000:01:00.0","new":"vfio-pci","change":{"kind":"vfio_bind"}"#,
            "not a driver's name",
        ),
        (
            "unit",
            r#""path":"sshd.service","new":"","change":{"kind":"systemd_property","property":"AllowedCPUs"}"#,
            "runs the host's tasks",
        ),
        (
            "socket",
            r#""path":"/run/docker.sock","new":"","change":{"kind":"irqbalance_ban"}"#,
            "irqbalance's control socket",
        ),
        ("thread", r#""path":"/proc/1","new":"0","change":{"kind":"affinity","tid":4242}"#, "not /proc/4242"),
    ];
    for (vm, record, _) in planted {
        // The driver record's original is a path, `../../x`; the others' is `owned`.
        let original = if vm == "driver" { "2e2e2f2e2e2f78" } else { "6f776e6564" };
        let text = format!(
            "{{\"record\":\"begin\",\"version\":3,\"kind\":\"host\",\"vm\":\"{vm}\",\"boot_id\":\"{boot}\",\"pid\":1,\"cpus\":\"\",\"order\":1}}\n\
             {{\"record\":\"before\",\"step\":0,{record},\"original_hex\":\"{original}\",\"why\":\"planted\"}}\n\
             {{\"record\":\"done\",\"step\":0}}\n"
        );
        let path = journals.join(format!("{vm}.host.journal"));
        let mut file =
            std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path).unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    }
    let unreadable = unreadable_lines(&journal);
    assert_eq!(unreadable.len(), planted.len(), "{unreadable:#?}");
    for (vm, _, why) in planted {
        let found = unreadable.iter().find(|u| u.contains(&format!("/{vm}.host.journal:2:")));
        assert!(
            found.is_some_and(|u| u.contains("may not change") && u.contains(why)),
            "{vm}: {unreadable:#?}"
        );
        assert!(journal.release(JournalKind::Host, vm, &host).is_err(), "{vm} was released");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"root:x\n");

    // A planner's action outside the list is refused before the first write.
    let mut actions = actions(&files);
    actions.push(HostAction::write("/etc/shadow", "x", "a planner's bug"));
    let error = journal.apply(JournalKind::Host, "win", &CpuSet::new(), &actions, &host).unwrap_err();
    assert!(matches!(error, JournalError::NotAllowed { .. }), "{error}");
    for (path, original) in &files {
        assert_eq!(
            &std::fs::read(root.join(path.trim_start_matches('/'))).unwrap(),
            original,
            "{path} changed"
        );
    }
}
