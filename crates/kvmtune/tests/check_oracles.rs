//! The rules that say "libvirt does X" or "QEMU refuses Y", held against libvirt and QEMU
//! themselves: each rule's bad fixture goes through libvirt's own XML-to-argv translation
//! (a private libvirtd, `virsh domxml-to-native`) or QEMU's option parser, and what they do
//! is what the finding claims.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check")
}

/// The fixture without its first line (the test harness's header) and without what libvirt's
/// translation checks against this machine: the host devices (they must exist here) and the
/// hugepages (hugetlbfs must be mounted).
fn translatable(name: &str) -> String {
    translatable_file(&fixtures().join(name))
}

/// [`translatable`] for a fixture anywhere (the precision near misses).
fn translatable_file(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let body = text.split_once('\n').unwrap().1.to_string();
    let without = |body: String, open: &str, close: &str| match (body.find(open), body.find(close)) {
        (Some(start), Some(end)) => format!("{}{}", &body[..start], &body[end + close.len()..]),
        _ => body,
    };
    let body = without(body, "    <hostdev ", "</hostdev>\n");
    without(body, "  <memoryBacking>", "</memoryBacking>\n")
}

/// The value libvirt gives one QEMU option (`-smp`, `-cpu`) in a command line.
fn option_value(argv: &str, option: &str) -> String {
    let words: Vec<&str> = argv.split_whitespace().collect();
    let at = words.iter().position(|w| *w == option).unwrap_or_else(|| panic!("libvirt writes {option}"));
    words[at + 1].to_string()
}

/// CPU001 and CPU002: without a <topology> libvirt makes every vCPU a socket (and the fix makes
/// them cores of one); a <feature> list without a mode or model it refuses, with the message
/// the finding quotes.
#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu")),
    ignore = "needs libvirt and QEMU: cargo test --features libvirt,qemu"
)]
fn libvirt_does_what_the_cpu_rules_say() {
    let inputs = [
        translatable("CPU001.bad.xml"),
        translatable("CPU001.bad.fixed.xml"),
        translatable("CPU002.bad.xml"),
        translatable("CPU002.good.xml"),
    ];
    let natives = kvmtune_testkit::libvirtd::domxml_to_native(&inputs);
    let native =
        |index: usize| natives[index].clone().unwrap_or_else(|e| panic!("input {index} refused: {e}"));
    let part = |smp: &str, key: &str| -> String {
        smp.split(',').find_map(|p| p.strip_prefix(&format!("{key}="))).unwrap_or("").to_string()
    };
    let before = option_value(&native(0), "-smp");
    assert_eq!((part(&before, "sockets"), part(&before, "cores")), ("6".into(), "1".into()), "{before}");
    let after = option_value(&native(1), "-smp");
    assert_eq!((part(&after, "sockets"), part(&after, "cores")), ("1".into(), "6".into()), "{after}");
    let refused = natives[2].clone().expect_err("libvirt refuses features without a model");
    assert!(refused.contains("Non-empty feature list specified without CPU model"), "{refused}");
    native(3);
}

/// CPU003: QEMU drops a feature the host's vendor does not have, with the warning the finding
/// names (KVM here; the feature is the other vendor's).
#[test]
#[cfg_attr(
    not(all(feature = "root", feature = "qemu")),
    ignore = "needs /dev/kvm and QEMU: cargo test --features root,qemu"
)]
fn qemu_drops_the_other_vendors_feature() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let feature = if cpuinfo.contains("GenuineIntel") { "svm" } else { "vmx" };
    let output = qemu_kvm_qmp(&["-cpu", &format!("host,+{feature}")], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("host doesn't support requested feature"), "{stderr}");
    assert!(stderr.contains(feature), "{stderr}");
}

/// CPU008: QEMU under KVM gives the guest CPU x2APIC, with the host's CPU as libvirt's
/// host-passthrough writes it and with QEMU's default model alike, and the rule's fix, as libvirt
/// translates it, takes it away. (Without the Hyper-V enlightenments, which this machine's KVM
/// does not emulate, and with `arch-capabilities=off`, because it refuses the MSR `-cpu host`
/// would copy.)
#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu", feature = "root")),
    ignore = "needs libvirt, QEMU and /dev/kvm: cargo test --features libvirt,qemu,root"
)]
fn x2apic_is_in_every_guest_cpu_until_cpu008s_fix() {
    let inputs = [translatable("CPU008.bad.xml"), translatable("CPU008.bad.fixed.xml")];
    let natives = kvmtune_testkit::libvirtd::domxml_to_native(&inputs);
    let cpu = |index: usize| {
        let native = natives[index].clone().unwrap_or_else(|e| panic!("input {index} refused: {e}"));
        option_value(&native, "-cpu")
    };
    let (bad, fixed) = (cpu(0), cpu(1));
    assert!(fixed.contains("x2apic=off"), "{fixed}");
    let guest_x2apic = |cpu: Option<&str>| -> String {
        // Without the enlightenments, and with arch-capabilities off, for this machine's KVM.
        let runnable = cpu.map(|cpu| {
            let parts: Vec<&str> =
                cpu.split(',').filter(|p| !p.starts_with("hv-") && !p.starts_with("hv_")).collect();
            format!("{},arch-capabilities=off", parts.join(","))
        });
        let cpu_args: Vec<&str> = runnable.iter().flat_map(|cpu| ["-cpu", cpu.as_str()]).collect();
        let output = qemu_kvm_qmp(
            &cpu_args,
            &[
                r#"{"execute":"qom-get","arguments":{"path":"/machine/unattached/device[0]","property":"x2apic"}}"#,
            ],
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        // The answers in order: QMP's greeting, qmp_capabilities' {}, then qom-get's.
        let answer = stdout.lines().filter(|l| l.starts_with("{\"return\"")).nth(1);
        answer
            .unwrap_or_else(|| {
                panic!("no qom-get answer: {stdout}{}", String::from_utf8_lossy(&output.stderr))
            })
            .to_string()
    };
    assert_eq!(guest_x2apic(Some(&bad)), r#"{"return": true}"#, "-cpu {bad}");
    assert_eq!(guest_x2apic(None), r#"{"return": true}"#, "QEMU's default CPU model");
    assert_eq!(guest_x2apic(Some(&fixed)), r#"{"return": false}"#, "-cpu {fixed}");
}

/// QEMU under KVM with a stopped machine (`-S`) and QMP on stdio, with these extra arguments
/// (`-cpu`, `-smp`; QEMU's defaults without them): `qmp_capabilities`, these commands, then
/// `quit`.
fn qemu_kvm_qmp(args: &[&str], commands: &[&str]) -> std::process::Output {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "kvm", "-machine", "pc", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio"]);
    qemu.args(args);
    let mut child =
        qemu.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("QEMU runs");
    let mut input = String::from("{\"execute\":\"qmp_capabilities\"}\n");
    for command in commands {
        input.push_str(command);
        input.push('\n');
    }
    input.push_str("{\"execute\":\"quit\"}\n");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// QEMU's stderr for these arguments after a machine that never starts (at most 5 s: an
/// accepted option leaves QEMU waiting, stopped, until the timeout ends it).
fn qemu_answer(args: &[&str]) -> String {
    let output = Command::new("timeout")
        .args(["5", "qemu-system-x86_64", "-machine", "none", "-display", "none", "-nodefaults", "-S"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("qemu-system-x86_64 runs");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// ARG002's option table is QEMU's: every option `-help` lists, with whether it takes a value;
/// the unlisted ones QEMU still accepts; the refused ones refused with the answer the finding
/// quotes. And the three ways a <qemu:commandline> breaks stop QEMU as the finding says.
#[test]
#[cfg_attr(not(feature = "qemu"), ignore = "needs QEMU: cargo test --features qemu")]
fn qemu_option_table_is_qemus() {
    use kvmtune::knowledge::qemu_options::{Arity, LISTED, REFUSED, UNLISTED};
    let help = Command::new("qemu-system-x86_64").arg("-help").output().expect("qemu-system-x86_64 runs");
    let help = String::from_utf8_lossy(&help.stdout);
    let mut listed = std::collections::BTreeMap::new();
    for line in help.lines().filter(|l| l.starts_with('-')) {
        let (head, rest) = line.split_at(line.find(' ').unwrap_or(line.len()));
        if head == "-h" {
            // "-h or -help     display this help and exit"
            listed.insert("h".to_string(), Arity::Flag);
            listed.insert("help".to_string(), Arity::Flag);
            continue;
        }
        // One space and a word: the option's argument; several spaces: its description
        // (except for -dtb, whose argument `file` is padded like a description).
        let arity =
            if rest.starts_with(' ') && !rest.starts_with("  ") || rest.trim_start().starts_with("file") {
                Arity::Value
            } else {
                Arity::Flag
            };
        for name in head.split('/') {
            listed.insert(name.trim_start_matches('-').to_string(), arity);
        }
    }
    let ours: std::collections::BTreeMap<String, Arity> =
        LISTED.iter().map(|(n, a)| (n.to_string(), *a)).collect();
    assert_eq!(ours, listed, "kvmtune's table (left) against qemu-system-x86_64 -help (right)");

    for (name, arity) in UNLISTED {
        let option = format!("-{name}");
        let mut args = vec![option.as_str()];
        if *arity == Arity::Value {
            args.push("x");
        }
        let answer = qemu_answer(&args);
        assert!(
            !answer.contains("invalid option") && !answer.contains("not supported"),
            "{option}: {answer}"
        );
    }
    for refused in REFUSED {
        let option = format!("-{}", refused.name);
        let answer = qemu_answer(&[&option, "x"]);
        assert!(answer.contains(refused.answer), "{option}: {answer}");
    }
    assert!(qemu_answer(&["host,kvm=off"]).contains("Could not open 'host,kvm=off'"));
    assert!(qemu_answer(&["-msg"]).contains("requires an argument"));
}

/// TIME007: libvirt writes the PIT reinjection the rule reads (`delay` for the bad fixture,
/// `discard` once fixed), and `<ioapic driver='qemu'/>`, where the rule stays quiet, is a
/// split irqchip, whose PIT is QEMU's and not KVM's.
#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu")),
    ignore = "needs libvirt and QEMU: cargo test --features libvirt,qemu"
)]
fn libvirt_writes_the_pit_and_irqchip_time007_reads() {
    let split = translatable_file(&fixtures().join("../precision/TIME007-split-irqchip.xml"));
    let inputs = [translatable("TIME007.bad.xml"), translatable("TIME007.bad.fixed.xml"), split];
    let natives = kvmtune_testkit::libvirtd::domxml_to_native(&inputs);
    let native =
        |index: usize| natives[index].clone().unwrap_or_else(|e| panic!("input {index} refused: {e}"));
    assert!(native(0).contains("kvm-pit.lost_tick_policy=delay"), "{}", native(0));
    assert!(!native(0).contains("kernel_irqchip=split"), "{}", native(0));
    assert!(native(1).contains("kvm-pit.lost_tick_policy=discard"), "{}", native(1));
    assert!(native(2).contains("kernel_irqchip=split"), "{}", native(2));
}

/// HV013: libvirt gives QEMU hv-vapic without hv-avic for the bad fixture (the pair for which
/// QEMU recommends the Hyper-V APIC MSRs), and its fix becomes hv-avic=on beside hv-vapic=on.
#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu")),
    ignore = "needs libvirt and QEMU: cargo test --features libvirt,qemu"
)]
fn libvirt_turns_hv013s_fix_into_hv_avic() {
    let inputs = [translatable("HV013.bad.xml"), translatable("HV013.bad.fixed.xml")];
    let natives = kvmtune_testkit::libvirtd::domxml_to_native(&inputs);
    let native =
        |index: usize| natives[index].clone().unwrap_or_else(|e| panic!("input {index} refused: {e}"));
    let bad = option_value(&native(0), "-cpu");
    assert!(bad.contains("hv-vapic=on") && !bad.contains("hv-avic"), "{bad}");
    let fixed = option_value(&native(1), "-cpu");
    assert!(fixed.contains("hv-vapic=on") && fixed.contains("hv-avic=on"), "{fixed}");
}

/// CPU009 against KVM and QEMU on this machine: QEMU warns that the SMP count exceeds KVM's
/// recommendation (KVM_CAP_NR_VCPUS, the online CPUs since Linux 5.16) exactly where the rule
/// fires on this host's probed facts, for the `-smp` libvirt writes. A VM whose extra vCPUs are
/// only hot-pluggable gets QEMU's "hotpluggable" warning, and, as the rule documents, no finding.
#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu", feature = "root")),
    ignore = "needs libvirt, QEMU and /dev/kvm: cargo test --features libvirt,qemu,root"
)]
fn qemu_warns_where_cpu009_fires() {
    let facts = kvmtune::host::probe(&kvmtune::host::Host::live());
    let online = facts.topology.online.known().expect("this machine's online CPUs").len();
    let bad = translatable("CPU009.bad.xml");
    let topology = "    <topology sockets='1' dies='1' cores='10' threads='2'/>\n";
    assert!(bad.contains(topology));
    let vcpus = [
        (format!("<vcpu placement='static'>{online}</vcpu>"), false, false),
        (format!("<vcpu placement='static'>{}</vcpu>", online + 1), true, true),
        (format!("<vcpu placement='static' current='{online}'>{}</vcpu>", online + 1), false, true),
    ];
    let inputs: Vec<String> = vcpus
        .iter()
        .map(|(vcpu, _, _)| bad.replace("<vcpu placement='static'>20</vcpu>", vcpu).replace(topology, ""))
        .collect();
    let natives = kvmtune_testkit::libvirtd::domxml_to_native(&inputs);
    for (index, (vcpu, smp_warning, hotplug_warning)) in vcpus.iter().enumerate() {
        let native = natives[index].clone().unwrap_or_else(|e| panic!("{vcpu} refused: {e}"));
        let smp = option_value(&native, "-smp");
        let output = qemu_kvm_qmp(&["-smp", &smp], &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "-smp {smp}: {stderr}");
        assert_eq!(stderr.contains("Number of SMP cpus requested"), *smp_warning, "-smp {smp}: {stderr}");
        assert_eq!(
            stderr.contains("Number of hotpluggable cpus requested"),
            *hotplug_warning,
            "-smp {smp}: {stderr}"
        );

        let fired = rule_fires("CPU009", &inputs[index], &facts);
        assert_eq!(fired, *smp_warning, "{vcpu} (-smp {smp}) on {online} online CPUs");
    }
}

/// What a real libvirtd did with one domain: whether it started, its answer to `virsh start`,
/// and, while it ran, `virsh emulatorpin` and `virsh iothreadinfo` (the CPUs of its threads).
struct DomainRun {
    started: bool,
    answer: String,
    emulatorpin: String,
    iothreadinfo: String,
}

/// The CPU of [`tuned_domain`]s: the host's with arch-capabilities off (as experiment_libvirt
/// explains for nested hosts).
const HOST_CPU_OPEN: &str =
    "<cpu mode='host-passthrough' check='none'><feature policy='disable' name='arch-capabilities'/>";

/// A one-vCPU KVM domain running the halting boot sector, with `tuning` (`<cputune>`,
/// `<numatune>`, `<iothreads>`, or a `<cpu>` of its own, starting with [`HOST_CPU_OPEN`], where
/// it needs guest NUMA cells) and `vcpu` as its `<vcpu>` element; `image` is the disk.
fn tuned_domain(index: usize, vcpu: &str, tuning: &str, image: &Path) -> String {
    let cpu = if tuning.contains("<cpu") { String::new() } else { format!("{HOST_CPU_OPEN}</cpu>") };
    format!(
        "<domain type='kvm'><name>tune{index}</name><memory unit='MiB'>32</memory>{vcpu}
{tuning}
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
{cpu}
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='hda' bus='ide'/></disk>
<memballoon model='none'/></devices></domain>
",
        image.display()
    )
}

/// Defines and starts each domain (from [`tuned_domain`]) in a private libvirtd, one after
/// the other, and reports what happened; the private libvirtd removes the domains' cgroups when
/// it stops.
fn start_domains(domains: &[(String, String)]) -> Vec<DomainRun> {
    use kvmtune_testkit::guest::{GuestKind, boot_sector};
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("halt.img");
    std::fs::write(&image, boot_sector(GuestKind::Halt)).unwrap();
    for (index, (vcpu, tuning)) in domains.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("tune{index}.xml")),
            tuned_domain(index, vcpu, tuning, &image),
        )
        .unwrap();
    }
    let body = format!(
        r#"V="virsh -q -c qemu:///system"
/usr/sbin/virtlogd & logd=$!
for _ in $(seq 100); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.1; done
for index in $(seq 0 {last}); do
  $V define "$OUT/tune$index.xml" >"$OUT/define$index.log" 2>&1
  $V start tune$index >"$OUT/start$index.log" 2>&1
  echo $? >"$OUT/start$index.rc"
  $V emulatorpin tune$index >"$OUT/emulatorpin$index.txt" 2>&1
  $V iothreadinfo tune$index >"$OUT/iothreadinfo$index.txt" 2>&1
  $V destroy tune$index >/dev/null 2>&1
  $V undefine tune$index >/dev/null 2>&1
done
kill $logd
true"#,
        last = domains.len() - 1
    );
    kvmtune_testkit::libvirtd::with_private_libvirtd(dir.path(), &body);
    let read = |name: String| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    (0..domains.len())
        .map(|index| DomainRun {
            started: read(format!("start{index}.rc")).trim() == "0",
            answer: read(format!("start{index}.log")) + &read(format!("define{index}.log")),
            emulatorpin: read(format!("emulatorpin{index}.txt")),
            iothreadinfo: read(format!("iothreadinfo{index}.txt")),
        })
        .collect()
}

/// Whether `rule` fires on domain `index` of [`start_domains`] with this host's facts.
fn fires_on_domain(
    rule: &str,
    index: usize,
    vcpu: &str,
    tuning: &str,
    facts: &kvmtune::host::HostFacts,
) -> bool {
    rule_fires(rule, &tuned_domain(index, vcpu, tuning, Path::new("/halt.img")), facts)
}

/// Whether `rule` alone fires on the domain XML `xml` with these host facts.
fn rule_fires(rule: &str, xml: &str, facts: &kvmtune::host::HostFacts) -> bool {
    use kvmtune::analysis::check::{CheckOptions, check};
    use kvmtune::values::SourceText;
    let name = format!("{rule}.xml");
    let config = kvmtune::config::libvirt::parse(&name, xml).unwrap();
    let source = SourceText::new(name, xml);
    let options = CheckOptions {
        host: Some(facts),
        select: kvmtune::analysis::rule::select_vm_rules(&[rule]).unwrap(),
        ..CheckOptions::default()
    };
    !check(&config, &source, &options).diagnostics.is_empty()
}

const ONE_VCPU: &str = "<vcpu placement='static'>1</vcpu>";

/// PIN012 and MEM007 against a real libvirtd starting real domains on this machine: a pin that
/// names a CPU past this host's online ones (alone or beside one that exists, for a vCPU or the
/// emulator), and a numatune naming a NUMA node past this host's (for all memory, or for one
/// guest cell's `<memnode>`), each stop the domain from starting with the refusal the rule's
/// explanation quotes, and the rule fires on this host's probed facts; the same domain pinned
/// and bound to what this host has starts, and both rules are quiet.
#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu", feature = "root")),
    ignore = "needs libvirt, QEMU and /dev/kvm: cargo test --features libvirt,qemu,root"
)]
fn libvirt_refuses_to_start_where_pin012_and_mem007_fire() {
    let facts = kvmtune::host::probe(&kvmtune::host::Host::live());
    let online = facts.topology.online.known().expect("this machine's online CPUs").clone();
    let (first, absent) = (online.first().unwrap(), online.iter().last().unwrap() + 1);
    let last_node =
        facts.topology.numa_nodes.iter().map(|n| n.node).max().expect("this machine's NUMA nodes");
    let pins = |pins: String| format!("<cputune>{pins}</cputune>");
    let numatune =
        |nodeset: String| format!("<numatune><memory mode='strict' nodeset='{nodeset}'/></numatune>");
    // One guest NUMA cell holding the vCPU and all memory, its memory bound by a <memnode>.
    let one_cell = |nodeset: String| {
        format!(
            "{HOST_CPU_OPEN}<numa><cell id='0' cpus='0' memory='32' unit='MiB'/></numa></cpu>
<numatune><memnode cellid='0' mode='strict' nodeset='{nodeset}'/></numatune>"
        )
    };
    let fitting = pins(format!("<vcpupin vcpu='0' cpuset='{first}'/><emulatorpin cpuset='{online}'/>"))
        + &numatune(format!("0-{last_node}"));
    // (the rule, the domain's tuning, whether libvirt refuses it and with what)
    let cases = [
        (
            "PIN012",
            pins(format!("<vcpupin vcpu='0' cpuset='{absent}'/>")),
            Some("Numerical result out of range"),
        ),
        (
            "PIN012",
            pins(format!("<vcpupin vcpu='0' cpuset='{first},{absent}'/>")),
            Some("Numerical result out of range"),
        ),
        (
            "PIN012",
            pins(format!("<vcpupin vcpu='0' cpuset='{first}'/><emulatorpin cpuset='{absent}'/>")),
            Some("Invalid argument"),
        ),
        ("MEM007", numatune(format!("{}", last_node + 1)), Some("is unavailable")),
        ("MEM007", numatune(format!("0-{}", last_node + 1)), Some("is unavailable")),
        ("MEM007", one_cell(format!("{}", last_node + 1)), Some("is unavailable")),
        ("MEM007", one_cell(format!("{last_node}")), None),
        ("PIN012", fitting.clone(), None),
        ("MEM007", fitting, None),
    ];
    let domains: Vec<(String, String)> =
        cases.iter().map(|(_, tuning, _)| (ONE_VCPU.to_string(), tuning.clone())).collect();
    let runs = start_domains(&domains);
    for (index, ((rule, tuning, refusal), run)) in cases.iter().zip(&runs).enumerate() {
        let context = format!("{tuning} on CPUs {online}, nodes 0-{last_node}");
        assert_eq!(!run.started, refusal.is_some(), "{context}: {}", run.answer);
        if let Some(refusal) = refusal {
            assert!(
                run.answer.contains(refusal),
                "{context}: libvirt's refusal is the one {rule} quotes: {}",
                run.answer
            );
        }
        assert_eq!(
            fires_on_domain(rule, index, ONE_VCPU, tuning, &facts),
            refusal.is_some(),
            "{rule} on {context}"
        );
    }
}

/// PIN013's premise, from a real libvirtd running real domains on this machine: with the vCPU
/// pinned and no <emulatorpin>/<iothreadpin>, the emulator and the iothread may run on every
/// online CPU, the vCPU's included, and PIN013 fires; <vcpu cpuset> off the vCPU's CPU, or
/// explicit pins, keep them off it, and PIN013 is quiet.
#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu", feature = "root")),
    ignore = "needs libvirt, QEMU and /dev/kvm: cargo test --features libvirt,qemu,root"
)]
fn libvirt_lets_unpinned_emulator_threads_run_where_pin013_says() {
    let facts = kvmtune::host::probe(&kvmtune::host::Host::live());
    let online = facts.topology.online.known().expect("this machine's online CPUs").clone();
    assert!(online.len() >= 2, "this oracle needs two CPUs, one for the vCPU and one for the rest");
    let (vcpu_cpu, other) = (online.first().unwrap(), online.iter().last().unwrap());
    // The iothread is used by nothing in this small domain, so PIN013 weighs only the emulator;
    // iothreadinfo still shows where libvirt lets the iothread run.
    let pinned =
        format!("<iothreads>1</iothreads><cputune><vcpupin vcpu='0' cpuset='{vcpu_cpu}'/></cputune>");
    let all_pinned = format!(
        "<iothreads>1</iothreads><cputune><vcpupin vcpu='0' cpuset='{vcpu_cpu}'/><emulatorpin cpuset='{other}'/><iothreadpin iothread='1' cpuset='{other}'/></cputune>"
    );
    let domain_cpuset = format!("<vcpu placement='static' cpuset='{other}'>1</vcpu>");
    // (the <vcpu> element, the tuning, where the emulator and the iothread may run, whether PIN013 fires)
    let cases = [
        (ONE_VCPU.to_string(), pinned.clone(), online.to_string(), true),
        (domain_cpuset, pinned, other.to_string(), false),
        (ONE_VCPU.to_string(), all_pinned, other.to_string(), false),
    ];
    let domains: Vec<(String, String)> =
        cases.iter().map(|(vcpu, tuning, _, _)| (vcpu.clone(), tuning.clone())).collect();
    let runs = start_domains(&domains);
    let cpus_of = |text: &str| text.split_whitespace().last().unwrap_or_default().to_string();
    for (index, ((vcpu, tuning, threads_on, fires), run)) in cases.iter().zip(&runs).enumerate() {
        assert!(run.started, "{vcpu} {tuning}: {}", run.answer);
        assert_eq!(
            &cpus_of(&run.emulatorpin),
            threads_on,
            "emulator of {vcpu} {tuning}: {}",
            run.emulatorpin
        );
        assert_eq!(
            &cpus_of(&run.iothreadinfo),
            threads_on,
            "iothread of {vcpu} {tuning}: {}",
            run.iothreadinfo
        );
        assert_eq!(
            fires_on_domain("PIN013", index, vcpu, tuning, &facts),
            *fires,
            "PIN013 on {vcpu} {tuning}"
        );
    }
}
