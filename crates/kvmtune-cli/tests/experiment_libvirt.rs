//! `kvmtune experiment --domain` against a libvirtd of the test's own (private mount namespace,
//! state on tmpfs): a persistent KVM domain running the testkit's port-I/O boot sector is the
//! baseline; a whole definition running the halting boot sector (`NAME=FILE`) and an edit of
//! the baseline (`NAME:hpet=off`) are the variants. The halting variant must win on exits per
//! second, and afterwards the domain's definition must be the original byte for byte with no
//! variant running. A kvmtune killed with SIGKILL mid-experiment, then `--recover`, must leave
//! the same.

use kvmtune_testkit::guest::{GuestKind, boot_sector};

/// The shell that defines domain `exp` (port I/O), writes the halting variant's definition to
/// `$OUT/halted.xml`, and saves the definition as found to `$OUT/before.xml`; then `$STEPS`.
fn scenario(steps: &str) -> String {
    scenario_on("pio.img", steps)
}

/// [`scenario`] with `image` as the domain's disk. The domain's CPU is the host's with
/// IA32_ARCH_CAPABILITIES (MSR 0x10a) off, as users on nested hosts write it: some nested KVMs
/// (this machine's, an AMD EPYC L1 under another hypervisor) advertise a value of that MSR which
/// they then refuse, and QEMU aborts at start with "failed to set MSR 0x10a" for any
/// `host-passthrough` CPU (the same seen on GitHub's runners:
/// github.com/asterinas/asterinas/issues/2980). `tune`'s variant keeps the user's feature.
fn scenario_on(image: &str, steps: &str) -> String {
    format!(
        r#"domain() {{ cat <<XML
<domain type='kvm'><name>exp</name><uuid>6f1c54e4-3c1b-4c55-9a8e-3b0d2f9a7c11</uuid><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><features><acpi/></features>
<cpu mode='host-passthrough' check='none'><feature policy='disable' name='arch-capabilities'/></cpu>
<clock offset='utc'><timer name='hpet' present='yes'/></clock>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$OUT/$1'/><target dev='hda' bus='ide'/></disk>
<serial type='file'><source path='$OUT/serial.txt'/></serial><memballoon model='none'/></devices></domain>
XML
}}
V="virsh -q -c qemu:///system"
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
/usr/sbin/virtlogd & logd=$!
for _ in $(seq 100); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.1; done
domain {image} >"$OUT/baseline.xml"
$V define "$OUT/baseline.xml" >"$OUT/define.log" 2>&1
$V dumpxml --inactive exp >"$OUT/before.xml"
sed 's/{image}/halt.img/' "$OUT/before.xml" >"$OUT/halted.xml"
{steps}
$V dumpxml --inactive exp >"$OUT/after.xml"
$V domstate exp >"$OUT/state.txt" 2>&1
$V list --all --name >"$OUT/domains.txt" 2>&1
$V destroy exp >/dev/null 2>&1
kill $logd
find /sys/fs/cgroup/*/machine* -depth -type d -exec rmdir {{}} \; 2>/dev/null
true"#
    )
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (image, kind) in [
        ("halt.img", GuestKind::Halt),
        ("pio.img", GuestKind::PortIo),
        ("button.img", GuestKind::PowerButton),
    ] {
        std::fs::write(dir.path().join(image), boot_sector(kind)).unwrap();
    }
    dir
}

fn read(dir: &tempfile::TempDir, name: &str) -> String {
    std::fs::read_to_string(dir.path().join(name)).unwrap_or_default()
}

fn assert_restored(dir: &tempfile::TempDir) {
    let before = read(dir, "before.xml");
    assert!(before.contains("<name>exp</name>"), "{}", read(dir, "define.log"));
    assert_eq!(read(dir, "after.xml"), before, "the definition byte for byte as found");
    assert_eq!(read(dir, "state.txt").trim(), "shut off", "no variant left running");
    assert_eq!(read(dir, "domains.txt").trim(), "exp", "no other domain defined");
}

#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu", feature = "root")),
    ignore = "needs libvirtd, QEMU and root: cargo test --features libvirt,qemu,root"
)]
fn the_halting_variant_wins_and_the_definition_is_the_original_afterwards() {
    let dir = setup();
    let steps = format!(
        r#"{kvmtune} experiment --domain exp --connect qemu:///system --journal-dir "$OUT/journal" \
  --variant "halted=$OUT/halted.xml" --variant nohpet:hpet=off \
  --warmup 8s --duration 2s --repeat 3 --seed 11 --format json --quiet >"$OUT/result.json" 2>"$OUT/stderr.txt"
echo $? >"$OUT/rc.txt""#,
        kvmtune = env!("CARGO_BIN_EXE_kvmtune")
    );
    kvmtune_testkit::libvirtd::with_private_libvirtd(dir.path(), &scenario(&steps));
    assert_eq!(read(&dir, "rc.txt").trim(), "0", "{}", read(&dir, "stderr.txt"));
    let result: serde_json::Value = serde_json::from_str(&read(&dir, "result.json")).unwrap();
    let names: Vec<&str> =
        result["variants"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["baseline", "halted", "nohpet"]);
    let all = result["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["measure"]["name"] == "exits")
        .unwrap_or_else(|| panic!("{result:#}"));
    assert_eq!(all["verdict"]["verdict"], "winner", "{all:#}");
    assert_eq!(all["verdict"]["variant"], "halted", "{all:#}");
    assert_restored(&dir);
    assert!(!dir.path().join("journal/exp.experiment.journal").exists(), "the journal is released");
}

#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu", feature = "root")),
    ignore = "needs libvirtd, QEMU and root: cargo test --features libvirt,qemu,root"
)]
fn a_killed_experiment_is_recovered_at_each_moment() {
    // A seed whose first round runs the halting variant first (baseline is variant 0), so that
    // a kill in its recording leaves a variant defined and running for --recover to undo.
    let seed = (0..100u64).find(|seed| kvmtune::experiment::round_orders(2, 2, *seed)[0][0] == 1).unwrap();
    for moment in ["defining the variant", "starting the VM", "recording", "stopping the VM", "round 2/"] {
        let dir = setup();
        let steps = format!(
            // TMPDIR: what a kvmtune killed so cannot remove (its temporary directories) goes
            // with the test's directory.
            r#"TMPDIR="$OUT" {kvmtune} experiment --domain exp --connect qemu:///system --journal-dir "$OUT/journal" \
  --variant "halted=$OUT/halted.xml" --warmup 2s --duration 2s --repeat 2 --seed {seed} 2>"$OUT/progress.txt" >/dev/null &
pid=$!
for _ in $(seq 1200); do grep -q "{moment}" "$OUT/progress.txt" 2>/dev/null && break; sleep 0.05; done
kill -9 $pid; wait $pid 2>/dev/null
cp "$OUT/progress.txt" "$OUT/progress-at-kill.txt"
$V dumpxml --inactive exp >"$OUT/at-kill.xml"
$V domstate exp >"$OUT/state-at-kill.txt" 2>&1
{reboot}
{kvmtune} experiment --recover --journal-dir "$OUT/journal" >"$OUT/recover.txt" 2>&1
echo $? >"$OUT/rc.txt""#,
            kvmtune = env!("CARGO_BIN_EXE_kvmtune"),
            // After the kill in the recording, the journal is made one of an earlier boot (as
            // a host that rebooted would leave it): a definition outlives a reboot, so
            // --recover must still give it back.
            reboot = if moment == "recording" {
                r#"sed -i 's/"boot_id":"[^"]*"/"boot_id":"0b5e7a1c-0000-4000-8000-000000000001"/' "$OUT/journal/exp.experiment.journal"
grep -c 0b5e7a1c-0000 "$OUT/journal/exp.experiment.journal" >"$OUT/rebooted.txt""#
            } else {
                ""
            },
        );
        kvmtune_testkit::libvirtd::with_private_libvirtd(dir.path(), &scenario(&steps));
        let progress = read(&dir, "progress-at-kill.txt");
        assert!(progress.contains(moment), "never reached `{moment}`: {progress}");
        if moment == "recording" {
            // What there was to recover: the halting variant, defined and running.
            assert!(read(&dir, "at-kill.xml").contains("halt.img"), "{}", read(&dir, "at-kill.xml"));
            assert_eq!(read(&dir, "state-at-kill.txt").trim(), "running");
            assert_eq!(read(&dir, "rebooted.txt").trim(), "1", "the journal made one of an earlier boot");
        }
        assert_eq!(read(&dir, "rc.txt").trim(), "0", "{}", read(&dir, "recover.txt"));
        assert!(
            read(&dir, "recover.txt").contains("domain exp: its original definition is back"),
            "{}",
            read(&dir, "recover.txt")
        );
        assert_restored(&dir);
    }
}

#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu", feature = "root")),
    ignore = "needs libvirtd, QEMU and root: cargo test --features libvirt,qemu,root"
)]
fn refusals_exit_2_and_change_nothing() {
    let dir = setup();
    let steps = format!(
        r#"K="{kvmtune} experiment --connect qemu:///system --journal-dir $OUT/journal --warmup 1s --duration 1s --repeat 1"
sed 's|>1</vcpu>|>many</vcpu>|' "$OUT/before.xml" >"$OUT/invalid.xml"
$K --domain nosuch --variant "a=$OUT/halted.xml" >/dev/null 2>"$OUT/nosuch.txt"; echo $? >>"$OUT/nosuch.txt"
$K --domain exp --variant x:turbo=on >/dev/null 2>"$OUT/edit.txt"; echo $? >>"$OUT/edit.txt"
$K --domain exp --variant "bad=$OUT/invalid.xml" >/dev/null 2>"$OUT/schema.txt"; echo $? >>"$OUT/schema.txt"
$V start exp >/dev/null 2>&1
$K --domain exp --variant "a=$OUT/halted.xml" >/dev/null 2>"$OUT/running.txt"; echo $? >>"$OUT/running.txt"
$V domstate exp >"$OUT/state-running.txt" 2>&1
$V destroy exp >/dev/null 2>&1
ls "$OUT/journal" >"$OUT/journal-files.txt" 2>&1"#,
        kvmtune = env!("CARGO_BIN_EXE_kvmtune")
    );
    kvmtune_testkit::libvirtd::with_private_libvirtd(dir.path(), &scenario(&steps));
    for (file, message) in [
        ("nosuch.txt", "domain nosuch"),
        ("edit.txt", "unknown edit `turbo`"),
        ("schema.txt", "variant bad"),
        ("running.txt", "domain exp is running"),
    ] {
        let text = read(&dir, file);
        assert!(text.trim_end().ends_with('2'), "{file}: exit code 2: {text}");
        assert!(text.contains(message), "{file}: {text}");
    }
    assert_eq!(read(&dir, "state-running.txt").trim(), "running", "the running domain was left running");
    assert!(
        !read(&dir, "journal-files.txt").contains(".journal"),
        "no journal: {}",
        read(&dir, "journal-files.txt")
    );
    assert_restored(&dir);
}

#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu", feature = "root")),
    ignore = "needs libvirtd, QEMU and root: cargo test --features libvirt,qemu,root"
)]
fn a_running_domain_stopped_by_ctrl_c_runs_again_as_it_was() {
    // The baseline answers the ACPI power button, as `--restart-ok` asks it to shut down.
    let dir = setup();
    let steps = format!(
        r#"$V start exp >"$OUT/start.log" 2>&1
# The power button is seen once the boot sector runs (it writes K to its serial port).
for _ in $(seq 600); do grep -q K "$OUT/serial.txt" 2>/dev/null && break; sleep 0.1; done
{kvmtune} experiment --domain exp --connect qemu:///system --journal-dir "$OUT/journal" --restart-ok \
  --variant tuned=tune --variant "halted=$OUT/halted.xml" --variant nohpet:hpet=off \
  --warmup 2s --duration 2s --repeat 2 --seed 5 2>"$OUT/progress.txt" >/dev/null &
pid=$!
for _ in $(seq 1200); do grep -q "round 2/2 .* recording" "$OUT/progress.txt" 2>/dev/null && break; sleep 0.05; done
kill -INT $pid; wait $pid; echo $? >"$OUT/rc.txt"
ls "$OUT/journal" >"$OUT/journal-files.txt" 2>&1"#,
        kvmtune = env!("CARGO_BIN_EXE_kvmtune")
    );
    kvmtune_testkit::libvirtd::with_private_libvirtd(dir.path(), &scenario_on("button.img", &steps));
    let progress = read(&dir, "progress.txt");
    assert!(progress.contains("round 2/2"), "{}{progress}", read(&dir, "start.log"));
    for variant in ["baseline", "tuned", "halted", "nohpet"] {
        assert!(progress.contains(&format!("· {variant} · recording")), "{variant} never ran: {progress}");
    }
    assert_ne!(read(&dir, "rc.txt").trim(), "0", "{progress}");
    assert!(progress.contains("stopped when asked to"), "{progress}");
    assert_eq!(read(&dir, "after.xml"), read(&dir, "before.xml"), "the definition byte for byte as found");
    assert_eq!(read(&dir, "state.txt").trim(), "running", "running again, as it was found");
    assert_eq!(read(&dir, "domains.txt").trim(), "exp", "no other domain defined");
    assert!(!read(&dir, "journal-files.txt").contains(".journal"), "{}", read(&dir, "journal-files.txt"));
}
