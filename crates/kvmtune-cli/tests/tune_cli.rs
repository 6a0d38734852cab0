//! `kvmtune tune` end to end, with libvirt and QEMU as the oracles:
//! - every emitted domain XML passes libvirt's schema (virt-xml-validate) and `virsh define`;
//! - libvirt's own translation of it (`virsh domxml-to-native`, from a libvirtd started by
//!   hand) has the same `-cpu` properties and `-smp` as our QEMU emitter;
//! - QEMU accepts every `-cpu` property we emit (TCG, which checks names and types; KVM here
//!   has no Hyper-V, ../shared/test-environment.md 2d);
//! - impossible requests are errors with exit code 2.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kvmtune_testkit::synthetic::SyntheticHost;
use serde_json::Value;

fn kvmtune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvmtune")).args(args).output().expect("kvmtune runs")
}

/// `kvmtune tune --host-root DIR EXTRA...` on a synthetic host written to a fresh directory.
fn tune_on(host: SyntheticHost, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    host.write(dir.path());
    let mut args = vec!["tune", "--host-root", dir.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    kvmtune(&args)
}

struct Emitted {
    label: String,
    xml: String,
    argv: Vec<String>,
    document: Value,
}

fn tune(root: &Path, label: &str, extra: &[&str]) -> Emitted {
    let mut args = vec!["tune", "--host-root", root.to_str().unwrap(), "--format", "json", "--emit", "all"];
    args.extend_from_slice(extra);
    let output = kvmtune(&args);
    assert_eq!(output.status.code(), Some(0), "{label}: {}", String::from_utf8_lossy(&output.stderr));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    Emitted {
        label: format!("{label} {}", extra.join(" ")),
        xml: document["libvirt"][0].as_str().unwrap().to_string(),
        argv: document["qemu"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect(),
        document,
    }
}

/// Plans for the synthetic hosts and one corpus host, over Windows versions, workloads and
/// options that change the XML.
fn emitted() -> Vec<Emitted> {
    let variants: &[&[&str]] = &[
        &[],
        &["--windows", "10", "--workload", "desktop", "--vcpus", "4"],
        &["--windows", "7", "--workload", "ipi-heavy", "--vcpus", "3"],
        &["--windows", "2022", "--workload", "server", "--migratable"],
        &["--windows", "11", "--nested", "--memory", "8G"],
        &["--windows", "xp", "--vcpus", "2"],
    ];
    let mut all = Vec::new();
    for machine in SyntheticHost::all() {
        let dir = tempfile::tempdir().unwrap();
        machine.write(dir.path());
        for variant in variants {
            all.push(tune(dir.path(), machine.name, variant));
        }
        // On hosts with several nodes, a VM too big for one: it spans nodes, with guest NUMA
        // cells.
        if machine.packages * machine.nodes_per_package > 1 {
            let spanning = (machine.cpu_count() * 3 / 4 / 2 * 2).to_string();
            let planned = tune(dir.path(), machine.name, &["--vcpus", &spanning, "--memory", "8G"]);
            assert!(
                planned.xml.contains("<numa>"),
                "{}: no guest NUMA cells:\n{}",
                planned.label,
                planned.xml
            );
            all.push(planned);
        }
    }
    let (_guard, root) =
        kvmtune_testkit::unpack(&kvmtune_testkit::corpus().join("hwloc/64amd64-4s2n4ca2co.tar.bz2"));
    for variant in variants {
        all.push(tune(&root, "64amd64-4s2n4ca2co", variant));
    }
    all
}

fn option_value<'a>(argv: &'a [String], option: &str) -> Option<&'a str> {
    argv.windows(2).find(|w| w[0] == option).map(|w| w[1].as_str())
}

/// `-cpu MODEL,a=on,b=off` as its model and property set.
fn cpu_properties(value: &str) -> (String, BTreeSet<String>) {
    let mut parts = value.split(',');
    let model = parts.next().unwrap_or_default().to_string();
    (model, parts.map(str::to_string).collect())
}

/// The domain with every numatune host nodeset on node 0, the only node of this machine.
fn one_host_node(xml: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    while let Some(at) = rest.find("nodeset='") {
        let value_start = at + "nodeset='".len();
        out.push_str(&rest[..value_start]);
        out.push('0');
        let value_end = rest[value_start..].find('\'').map_or(rest.len(), |end| value_start + end);
        rest = &rest[value_end..];
    }
    out.push_str(rest);
    out
}

/// Splits `virsh domxml-to-native` output, which single-quotes words with spaces.
fn split_shell(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            '\\' if !quoted => {}
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

#[test]
#[cfg_attr(
    not(all(feature = "libvirt", feature = "qemu")),
    ignore = "needs libvirt and QEMU: cargo test --features libvirt,qemu"
)]
fn libvirt_and_qemu_accept_what_tune_emits() {
    let emitted = emitted();
    assert!(emitted.len() >= 30);
    let dir = tempfile::tempdir().unwrap();

    // 1. libvirt's schema and its test driver.
    for (index, plan) in emitted.iter().enumerate() {
        let path = dir.path().join(format!("{index}.xml"));
        std::fs::write(&path, &plan.xml).unwrap();
        let validate = Command::new("virt-xml-validate").arg(&path).arg("domain").output().unwrap();
        assert!(
            validate.status.success(),
            "{}: {}\n{}",
            plan.label,
            String::from_utf8_lossy(&validate.stderr),
            plan.xml
        );
        let define = Command::new("virsh")
            .args(["-q", "-c", "test:///default", "define"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(define.status.success(), "{}: {}", plan.label, String::from_utf8_lossy(&define.stderr));
    }

    // 2. libvirt's XML -> argv, against our QEMU emitter. The TPM is left out for libvirt:
    // it refuses a TPM without swtpm, which this machine does not have.
    let without_tpm: Vec<String> = emitted
        .iter()
        .map(|plan| match (plan.xml.find("    <tpm "), plan.xml.find("</tpm>\n")) {
            (Some(start), Some(end)) => {
                format!("{}{}", &plan.xml[..start], &plan.xml[end + "</tpm>\n".len()..])
            }
            _ => plan.xml.clone(),
        })
        .collect();
    // libvirt checks numatune's host nodes against this machine, which has one node: for the
    // translation, every host nodeset becomes node 0. The guest cells, what the guest sees,
    // are translated as planned; the host binding is held to the plan by the -object below.
    let without_tpm: Vec<String> = without_tpm.iter().map(|xml| one_host_node(xml)).collect();
    let natives = kvmtune_testkit::libvirtd::domxml_to_native(&without_tpm);
    for (plan, native) in emitted.iter().zip(natives) {
        let native = native.unwrap_or_else(|e| panic!("{}: libvirt refused the XML: {e}", plan.label));
        let native = split_shell(&native.replace("\\\n", " "));
        let (our_model, ours) = cpu_properties(option_value(&plan.argv, "-cpu").unwrap());
        let (their_model, theirs) =
            cpu_properties(option_value(&native, "-cpu").expect("libvirt emits -cpu"));
        assert_eq!(our_model, their_model, "{}: -cpu model", plan.label);
        assert_eq!(ours, theirs, "{}: -cpu properties (ours vs libvirt's)", plan.label);
        assert_eq!(option_value(&plan.argv, "-smp"), option_value(&native, "-smp"), "{}: -smp", plan.label);
        // Guest NUMA nodes: the same -numa options, each backed by a node-bound memory object.
        let numa = |argv: &[String]| -> Vec<String> {
            argv.windows(2).filter(|w| w[0] == "-numa").map(|w| w[1].clone()).collect()
        };
        assert_eq!(numa(&plan.argv), numa(&native), "{}: -numa", plan.label);
        for cell in plan.document["plan"]["vms"][0]["guest_numa"].as_array().into_iter().flatten() {
            let id = cell["id"].as_u64().unwrap();
            let node = cell["host_node"].as_u64().unwrap();
            let backend = format!("id=ram-node{id},");
            let ours = plan.argv.iter().find(|a| a.contains(&backend)).expect("a backend per cell");
            assert!(ours.ends_with(&format!("host-nodes={node},policy=bind")), "{}: {ours}", plan.label);
            assert!(
                native
                    .iter()
                    .any(|a| a.contains(&format!("\"id\":\"ram-node{id}\""))
                        && a.contains("\"policy\":\"bind\"")),
                "{}: libvirt binds cell {id} too",
                plan.label
            );
        }
    }

    // 3. QEMU itself checks every property name and value: TCG, with `max` for `host` (which
    // needs KVM; `max` is the same CPU class with the same host-only properties).
    for plan in &emitted {
        let (model, properties) = cpu_properties(option_value(&plan.argv, "-cpu").unwrap());
        assert_eq!(model, "host");
        let all: Vec<&str> = properties.iter().map(String::as_str).collect();
        let cpu = format!("max,{}", all.join(","));
        let (accepted, stderr) = qemu_takes_cpu("tcg", &cpu);
        assert!(accepted, "{}: QEMU refused -cpu {cpu}: {stderr}", plan.label);
    }
}

#[test]
fn the_plan_explains_itself_and_the_xml_follows() {
    let output = tune_on(SyntheticHost::ryzen_7950x3d(), &[]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        // The V-Cache CCD whole: the host's core is on the other CCD (issue 11).
        "vCPUs 0-15 on host CPUs 0-7,16-23",
        "the V-Cache CCD",
        "why: ",
        "source: ",
        "hv-avic",
        "HPET off",
        "<vcpupin vcpu='0' cpuset='0'/>",
        "<vcpupin vcpu='1' cpuset='16'/>",
        "<emulatorpin cpuset='8,24'/>",
        "<topology sockets='1' dies='1' cores='8' threads='2'/>",
        "<feature policy='require' name='topoext'/>",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// Each VM's plan ends with the `kvmtune host prepare` line for its host side: its vCPUs (and
/// any emulator or iothread CPUs outside the host's share) and the plan's housekeeping CPUs.
#[test]
fn each_vm_gets_the_host_prepare_line_of_its_plan() {
    let vms = ["--vm", "a:8", "--vm", "b:8", "--emit", "none"];
    let text = tune_on(SyntheticHost::threadripper_2950x(), &vms);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let json = tune_on(SyntheticHost::threadripper_2950x(), &[&vms[..], &["--format", "json"]].concat());
    let document: Value = serde_json::from_slice(&json.stdout).unwrap();
    let housekeeping = document["plan"]["housekeeping"].as_str().unwrap();
    for vm in document["plan"]["vms"].as_array().unwrap() {
        let name = vm["name"].as_str().unwrap();
        let line = text
            .lines()
            .find(|l| l.contains(&format!("kvmtune host prepare --name {name} ")))
            .unwrap_or_else(|| panic!("no prepare line for {name}:\n{text}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1];
        let cpus = kvmtune::values::CpuSet::parse_list(after("--cpus")).unwrap();
        for cpu in vm["placement"]["vcpu_cpus"].as_array().unwrap() {
            assert!(cpus.contains(cpu.as_u64().unwrap() as u32), "{line}");
        }
        assert_eq!(after("--housekeeping"), housekeeping, "{line}");
        assert!(line.ends_with("--apply"), "{line}");
    }
}

#[test]
fn several_vms_are_packed_without_overlap() {
    let output = tune_on(
        SyntheticHost::threadripper_2950x(),
        &["--vm", "a:8", "--vm", "b:8", "--vm", "c:6", "--format", "json", "--emit", "none"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut seen = BTreeSet::new();
    for vm in document["plan"]["vms"].as_array().unwrap() {
        for cpu in vm["placement"]["vcpu_cpus"].as_array().unwrap() {
            assert!(seen.insert(cpu.as_u64().unwrap()), "CPU {cpu} used twice");
        }
        // 8 vCPUs are one whole CCX of 4 cores.
        if vm["vcpus"] == 8 {
            assert_eq!(vm["placement"]["l3_groups"].as_array().unwrap().len(), 1);
        }
    }
}

#[test]
fn impossible_requests_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    SyntheticHost::ryzen_7950x3d().write(dir.path());
    let root = dir.path().to_str().unwrap();
    for (args, message) in [
        (vec!["--vcpus", "64"], "too small"),
        (vec!["--device", "0000:99:00.0"], "unknown device"),
        (vec!["--memory", "4096G"], "too small"),
        (vec!["--vm", "a:4", "--vm", "a:4"], "same name"),
        (vec!["--vm", "a"], "NAME:VCPUS"),
        (vec!["--windows", "95"], "not a Windows version"),
        (vec!["--housekeeping", "0,200"], "not all online"),
        (vec!["--vcpus", "0"], "at least one vCPU"),
        // An existing VM's change is in its own format: another format is refused, not ignored.
        (vec!["--emit", "proxmox", "--domain", "win11"], "'--emit <EMIT>'"),
        (vec!["--emit", "qemu", "vm.xml"], "'--emit <EMIT>'"),
    ] {
        let mut all = vec!["tune", "--host-root", root];
        all.extend(args.iter());
        let output = kvmtune(&all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// On a host with AVIC on the plan asks for hv-avic, which neither KubeVirt nor Nova can carry;
/// both outputs say so, and what its absence costs beside the SynIC and hv-vapic they keep.
#[test]
fn outputs_without_hv_avic_say_what_its_absence_costs() {
    let avic_host = tempfile::tempdir().unwrap();
    kvmtune_testkit::synthetic::RuleFixtureHost::named("amd").unwrap().write(avic_host.path());
    let plan = tune(avic_host.path(), "AVIC on", &[]);
    assert!(plan.xml.contains("<avic state='on'/>"), "{}", plan.xml);
    for output in ["kubevirt", "openstack"] {
        let notes = plan.document[output][0]["not_expressible"].to_string();
        assert!(notes.contains("hv-avic"), "{output}: {notes}");
        assert!(notes.contains("HV008") && notes.contains("HV013"), "{output}: {notes}");
    }
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn kubevirt_manifests_follow_kubevirts_schema_and_say_what_they_cannot_express() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            kvmtune_testkit::corpus().join("kubevirt/virtualmachine.schema.draft4.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft4::new(&schema).expect("KubeVirt's schema compiles");
    // The synthetic hosts leave APICv/AVIC unread (no hv-avic in their plans); the rule fixture
    // host has AVIC on, so its plan asks for hv-avic, which KubeVirt cannot carry.
    let avic_host = tempfile::tempdir().unwrap();
    kvmtune_testkit::synthetic::RuleFixtureHost::named("amd").unwrap().write(avic_host.path());
    let mut plans = emitted();
    plans.push(tune(avic_host.path(), "AVIC on", &[]));
    assert!(plans.iter().any(|plan| plan.xml.contains("<avic state='on'/>")), "no plan asks for hv-avic");
    for plan in plans {
        let entry = &plan.document["kubevirt"][0];
        let manifest = &entry["manifest"];
        let errors: Vec<String> =
            validator.iter_errors(manifest).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", plan.label);
        // Unknown keys would pass a schema without additionalProperties=false: check the ones
        // we rely on by name.
        let domain = &manifest["spec"]["template"]["spec"]["domain"];
        assert_eq!(domain["cpu"]["dedicatedCpuPlacement"], true);
        assert_eq!(domain["cpu"]["isolateEmulatorThread"], true);
        let notes = entry["not_expressible"].to_string();
        if plan.xml.contains("<avic state='on'/>") {
            assert!(
                notes.contains("hv-avic"),
                "{}: hv-avic must be reported, not dropped: {notes}",
                plan.label
            );
            assert!(domain["features"]["hyperv"].get("avic").is_none());
        }
        assert!(notes.contains("exact host CPUs"));
    }
    // The YAML form reads back as the same document.
    let output = tune_on(SyntheticHost::ryzen_7950x3d(), &["--emit", "kubevirt"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let yaml = &text[text.find("# kvmtune tune: KubeVirt").unwrap()..];
    let read_back: Value = serde_saphyr::from_str(yaml).unwrap();
    let json = tune_on(SyntheticHost::ryzen_7950x3d(), &["--emit", "kubevirt", "--format", "json"]);
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(read_back, json["kubevirt"][0]["manifest"]);
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn proxmox_config_reads_back_as_the_plan() {
    for plan in emitted() {
        let config_text = plan.document["proxmox"][0]["config"].as_str().unwrap();
        let ours =
            kvmtune::config::read("100.conf", config_text).unwrap_or_else(|e| panic!("{}: {e}", plan.label));
        let libvirt = kvmtune::config::read("plan.xml", &plan.xml).unwrap();
        assert_eq!(ours.format, kvmtune::config::model::SourceFormat::Proxmox);
        // args: -cpu/-smp override qemu-server's, so the guest gets the plan's CPU exactly.
        let on = |config: &kvmtune::config::model::VmConfig| -> BTreeSet<String> {
            config.hyperv.features.iter().filter(|f| f.on).map(|f| f.name.clone()).collect()
        };
        assert_eq!(on(&ours), on(&libvirt), "{}: enlightenments", plan.label);
        assert_eq!(
            ours.cpu.topology.as_ref().map(|t| (t.value.cores, t.value.threads)),
            libvirt.cpu.topology.as_ref().map(|t| (t.value.cores, t.value.threads)),
            "{}: topology",
            plan.label
        );
        assert_eq!(ours.vcpus.as_ref().map(|v| v.value), libvirt.vcpus.as_ref().map(|v| v.value));
        let hookscript = plan.document["proxmox"][0]["hookscript"].as_str().unwrap();
        let syntax = Command::new("sh").args(["-n", "-c", hookscript]).output().unwrap();
        assert!(syntax.status.success(), "{}: {}", plan.label, String::from_utf8_lossy(&syntax.stderr));
        let openstack = &plan.document["openstack"][0];
        assert_eq!(openstack["flavor_extra_specs"]["hw:cpu_policy"], "dedicated");
        if plan.xml.contains("<stimer state='on'") {
            // Nova never sets hv-stimer: HPET must stay on there, and the output says why.
            assert_eq!(openstack["image_properties"]["hw_time_hpet"], "true", "{}", plan.label);
            assert!(openstack["not_expressible"].to_string().contains("hv-stimer"));
        }
    }
}

#[test]
#[cfg_attr(
    not(all(feature = "qemu", feature = "root")),
    ignore = "needs QEMU and root: cargo test --features qemu,root"
)]
fn the_proxmox_hookscript_pins_a_real_qemu() {
    use kvmtune_testkit::guest::{Guest, GuestKind};
    // This host: plan one vCPU with live facts; the guest is a real QEMU/KVM boot sector.
    let output = kvmtune(&[
        "tune", "--host", "live", "--vcpus", "1", "--memory", "256M", "--emit", "proxmox", "--format", "json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    let vm = &document["plan"]["vms"][0];
    let vcpu_cpu = vm["placement"]["vcpu_cpus"][0].as_u64().unwrap().to_string();
    let housekeeping =
        vm["emulator_cpus"].as_str().map(str::to_string).unwrap_or_else(|| vm["emulator_cpus"].to_string());
    let guest = Guest::start(GuestKind::Halt);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("100.pid");
    std::fs::write(&pidfile, guest.pid().to_string()).unwrap();
    let script = dir.path().join("hook.sh");
    std::fs::write(&script, document["proxmox"][0]["hookscript"].as_str().unwrap()).unwrap();
    let run = Command::new("sh")
        .arg(&script)
        .args(["100", "post-start"])
        .env("KVMTUNE_PIDFILE", &pidfile)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let allowed = |task: &str| -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/task/{task}/status", guest.pid())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string()
    };
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", guest.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let vcpu_thread = tasks
        .iter()
        .find(|t| {
            std::fs::read_to_string(format!("/proc/{}/task/{t}/comm", guest.pid())).unwrap().trim()
                == "CPU 0/KVM"
        })
        .expect("QEMU names its vCPU thread");
    assert_eq!(allowed(vcpu_thread), vcpu_cpu, "the vCPU thread is on its planned CPU");
    assert_eq!(
        allowed(&guest.pid().to_string()),
        housekeeping.trim_matches('"'),
        "the main thread is on the housekeeping CPUs"
    );
    // Other phases do nothing.
    let pre = Command::new("sh").arg(&script).args(["100", "pre-start"]).output().unwrap();
    assert!(pre.status.success());
}

/// The edited XML from `tune FILE` text output: everything after the list of changes.
fn edited_xml(stdout: &str) -> String {
    let start = stdout.find("<domain").expect("the edited domain follows the plan");
    stdout[start..].to_string()
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn existing_libvirt_vms_get_the_minimal_change() {
    let corpus = kvmtune_testkit::corpus().join("user-xml");
    let dir = tempfile::tempdir().unwrap();
    let mut tuned = 0;
    for (file, machine) in SyntheticHost::for_user_xml() {
        let host = dir.path().join(machine.name);
        machine.write(&host);
        let original_path = corpus.join(file);
        let output =
            kvmtune(&["tune", original_path.to_str().unwrap(), "--host-root", host.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() == Some(2) && stderr.contains("too small") {
            // The VM asks for more vCPUs than the host has outside housekeeping.
            continue;
        }
        assert_eq!(output.status.code(), Some(0), "{file}: {stderr}");
        let xml = edited_xml(&String::from_utf8_lossy(&output.stdout));
        tuned += 1;
        // The host side for the libvirt hook comes with it.
        assert!(xml.contains("<kvmtune:host xmlns:kvmtune="), "{file}: no host request:\n{xml}");

        // libvirt still takes it.
        let path = dir.path().join(file);
        std::fs::write(&path, &xml).unwrap();
        let validate = Command::new("virt-xml-validate").arg(&path).arg("domain").output().unwrap();
        assert!(validate.status.success(), "{file}: {}", String::from_utf8_lossy(&validate.stderr));
        let define = Command::new("virsh")
            .args(["-q", "-c", "test:///default", "define"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(define.status.success(), "{file}: {}", String::from_utf8_lossy(&define.stderr));

        // What tune decides, check no longer finds wanting.
        let check = kvmtune(&[
            "check",
            path.to_str().unwrap(),
            "--host-root",
            host.to_str().unwrap(),
            "--format",
            "json",
        ]);
        let report: Value = serde_json::from_slice(&check.stdout).unwrap();
        let left: Vec<String> = report["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["severity"] == "warning" || d["severity"] == "error" || d["rule"] == "DEV002")
            .map(|d| d["rule"].as_str().unwrap().to_string())
            .filter(|rule| {
                ["HV", "TIME", "PIN", "MEM002", "DEV002", "HOOK"]
                    .iter()
                    .any(|family| rule.starts_with(family))
            })
            .collect();
        assert!(left.is_empty(), "{file}: {left:?} left after tune:\n{xml}");

        // Minimal: tuning the result again changes nothing, and lines tune does not own are
        // byte for byte the original's.
        let again = kvmtune(&["tune", path.to_str().unwrap(), "--host-root", host.to_str().unwrap()]);
        let again_text = String::from_utf8_lossy(&again.stdout);
        assert!(again_text.contains("# 0 changes"), "{file}: not a fixed point:\n{again_text}");
        let diff = kvmtune(&[
            "tune",
            original_path.to_str().unwrap(),
            "--host-root",
            host.to_str().unwrap(),
            "--diff",
        ]);
        let diff = String::from_utf8_lossy(&diff.stdout);
        assert!(diff.contains("(tuned)"), "{file}: a unified diff");
        let removed: Vec<&str> =
            diff.lines().filter(|l| l.starts_with('-') && !l.starts_with("---")).collect();
        for line in removed {
            let content = line[1..].trim();
            let owned = [
                "vcpupin",
                "emulatorpin",
                "iothreadpin",
                "topology",
                "timer",
                "clock",
                "cpu",
                "feature",
                "memballoon",
                "iothreads",
                "numatune",
                "memory mode",
                "cache",
                "hyperv",
                "relaxed",
                "vapic",
                "spinlocks",
                "vpindex",
                "runtime",
                "synic",
                "stimer",
                "reset",
                "frequencies",
                "reenlightenment",
                "tlbflush",
                "ipi",
                "evmcs",
                "avic",
                "vendor_id",
                "cputune",
                "direct",
            ];
            // A disk's <driver> is tune's only to gain iothread='N'; everything else on it stays.
            let driver_gains_iothread = content.starts_with("<driver")
                && diff.lines().any(|added| {
                    let added = added.strip_prefix('+').unwrap_or("").trim();
                    let without = added.split_once(" iothread='").and_then(|(before, rest)| {
                        let (id, after) = rest.split_once('\'')?;
                        id.parse::<u32>().ok().map(|_| format!("{before}{after}"))
                    });
                    without.as_deref() == Some(content)
                });
            assert!(
                content.is_empty() || owned.iter().any(|o| content.contains(o)) || driver_gains_iothread,
                "{file}: tune changed a line it does not own: {line}"
            );
        }
    }
    eprintln!("tuned {tuned} user configs");
    assert!(tuned >= 5, "only {tuned} user configs fit their hosts");
}

/// An existing VM whose guest cell's `<memnode>` names a host node the host lacks (MEM007: libvirt
/// would not start it): tune binds the cell where it binds all memory, the result starts as far
/// as check can tell, and tuning it again changes nothing.
#[test]
fn existing_memnodes_follow_the_memory_binding() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    SyntheticHost::threadripper_2950x().write(&host);
    let xml = "<domain type='kvm'>
  <name>cells</name>
  <memory unit='GiB'>4</memory>
  <vcpu placement='static'>4</vcpu>
  <numatune>
    <memnode cellid='0' mode='strict' nodeset='5'/>
  </numatune>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <cpu mode='host-passthrough' check='none'>
    <numa><cell id='0' cpus='0-3' memory='4' unit='GiB'/></numa>
  </cpu>
</domain>
";
    let path = dir.path().join("cells.xml");
    std::fs::write(&path, xml).unwrap();
    let (path, host) = (path.to_str().unwrap(), host.to_str().unwrap());
    let check = |file: &str| kvmtune(&["check", file, "--host-root", host, "--select", "MEM007,MEM003"]);
    assert_eq!(check(path).status.code(), Some(1), "MEM007 fires before");

    let output = kvmtune(&["tune", path, "--host-root", host]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let tuned = edited_xml(&String::from_utf8_lossy(&output.stdout));
    let memory = tuned.lines().find(|l| l.contains("<memory mode='strict'")).expect("memory bound");
    let node = memory.split("nodeset='").nth(1).and_then(|rest| rest.split('\'').next()).unwrap();
    assert!(tuned.contains(&format!("<memnode cellid='0' mode='strict' nodeset='{node}'/>")), "{tuned}");
    let tuned_path = dir.path().join("tuned.xml");
    std::fs::write(&tuned_path, &tuned).unwrap();
    let tuned_path = tuned_path.to_str().unwrap();
    let after = check(tuned_path);
    assert_eq!(after.status.code(), Some(0), "{}", String::from_utf8_lossy(&after.stdout));
    let again = kvmtune(&["tune", tuned_path, "--host-root", host]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("# 0 changes"), "not a fixed point");

    // In JSON, the same change beside the plan: its edits in words, the edited XML and its diff.
    let json = kvmtune(&["tune", path, "--host-root", host, "--format", "json"]);
    assert_eq!(json.status.code(), Some(0), "{}", String::from_utf8_lossy(&json.stderr));
    let document: Value = serde_json::from_slice(&json.stdout).unwrap();
    let change = &document["change"];
    assert_eq!(change["format"], "libvirt");
    assert_eq!(change["edited"].as_str(), Some(tuned.as_str()));
    assert!(
        change["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("bind memory strictly to NUMA node")),
        "{change}"
    );
    assert!(change["diff"].as_str().unwrap().contains("+    <memnode cellid='0' mode='strict'"), "{change}");
    assert!(document["plan"]["vms"].is_array());
}

/// The `qm set` lines `tune` prints for the Proxmox config `text` (written as DIR/100.conf) on the
/// host snapshot `host`; `tune` must succeed.
fn qm_set_commands(dir: &std::path::Path, host: &str, text: &str) -> Vec<String> {
    let path = dir.join("100.conf");
    std::fs::write(&path, text).unwrap();
    let output = kvmtune(&["tune", path.to_str().unwrap(), "--host-root", host]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with("qm set"))
        .map(str::to_string)
        .collect()
}

/// `conf` as `qm set` leaves it after `commands`: `--KEY 'VALUE'` replaces that key's line,
/// `--delete 'A,B'` removes those keys' lines.
fn apply_qm_set(conf: &str, commands: &[String]) -> String {
    let mut applied = conf.to_string();
    for command in commands {
        let (key, value) = command.split_once(" --").unwrap().1.split_once(' ').unwrap();
        let value = value.trim_matches('\'');
        let removed: Vec<&str> = if key == "delete" { value.split(',').collect() } else { vec![key] };
        let kept: Vec<&str> =
            applied.lines().filter(|l| !removed.iter().any(|k| l.starts_with(&format!("{k}:")))).collect();
        applied = kept.join("\n") + "\n";
        if key != "delete" {
            applied.push_str(&format!("{key}: {value}\n"));
        }
    }
    applied
}

/// An existing Proxmox VM with two guest NUMA nodes, one bound to a host node this host lacks:
/// `tune` binds the VM to one node as numa0 and deletes numa1, which would otherwise keep its
/// bad binding and make the numaN memory add up to more than the VM's (qemu-server refuses
/// both). Applied, MEM007 and MEM003 are quiet and a second `tune` deletes nothing.
#[test]
fn existing_proxmox_guest_numa_nodes_the_plan_drops_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    SyntheticHost::threadripper_2950x().write(&host);
    let host = host.to_str().unwrap();
    let conf = "ostype: win11\ncores: 8\nmemory: 8192\nnuma: 1\n\
                numa0: cpus=0-3,hostnodes=0,memory=4096,policy=bind\n\
                numa1: cpus=4-7,hostnodes=3,memory=4096,policy=bind\n";
    let tune = |text: &str| qm_set_commands(dir.path(), host, text);
    let commands = tune(conf);
    assert!(commands.contains(&"qm set \"$VMID\" --delete 'numa1'".to_string()), "{commands:#?}");
    let numa0 = commands.iter().find(|c| c.contains("--numa0 ")).expect("numa0 rebound");
    assert!(numa0.contains("cpus=0-7,") && numa0.contains("memory=8192,"), "{numa0}");

    let applied = apply_qm_set(conf, &commands);
    assert!(!applied.contains("numa1:"), "{applied}");
    let path = dir.path().join("applied.conf");
    std::fs::write(&path, &applied).unwrap();
    let check = kvmtune(&["check", path.to_str().unwrap(), "--host-root", host, "--select", "MEM007,MEM003"]);
    assert_eq!(check.status.code(), Some(0), "{applied}\n{}", String::from_utf8_lossy(&check.stdout));
    assert!(!tune(&applied).iter().any(|c| c.contains("--delete") || c.contains("--numa")), "{applied}");

    // In JSON, the same settings and deletion beside the plan.
    let path = dir.path().join("100.conf");
    std::fs::write(&path, conf).unwrap();
    let json = kvmtune(&["tune", path.to_str().unwrap(), "--host-root", host, "--format", "json"]);
    let change = &serde_json::from_slice::<Value>(&json.stdout).unwrap()["change"];
    assert_eq!(change["format"], "proxmox");
    assert_eq!(change["delete"], serde_json::json!(["numa1"]));
    let numa0 = change["set"].as_array().unwrap().iter().find(|s| s["key"] == "numa0").expect("numa0 set");
    assert!(numa0["value"].as_str().unwrap().starts_with("cpus=0-7,"), "{numa0}");
    assert!(change["hookscript"].as_str().unwrap().starts_with("#!/bin/sh"));
}

/// An existing Proxmox VM: virtio disks, and SCSI disks behind virtio-scsi, each gain
/// iothread=1 (virtio-scsi-single where needed); a CD-ROM and an LSI controller's disks stay.
#[test]
fn existing_proxmox_disks_gain_iothreads() {
    let dir = tempfile::tempdir().unwrap();
    SyntheticHost::ryzen_7950x3d().write(&dir.path().join("host"));
    let host = dir.path().join("host");
    let conf = |scsihw: &str| {
        format!(
            "ostype: win11\ncores: 4\nmemory: 8192\nscsihw: {scsihw}\nvirtio0: local-lvm:vm-100-disk-0,cache=none,size=64G\nscsi1: local-lvm:vm-100-disk-1,size=200G\nide2: local:iso/virtio-win.iso,media=cdrom\n"
        )
    };
    let qm_set_for = |text: String| qm_set_commands(dir.path(), host.to_str().unwrap(), &text);
    let virtio_scsi = qm_set_for(conf("virtio-scsi-pci"));
    for expected in [
        "--virtio0 'local-lvm:vm-100-disk-0,cache=none,size=64G,iothread=1'",
        "--scsi1 'local-lvm:vm-100-disk-1,size=200G,iothread=1'",
        "--scsihw 'virtio-scsi-single'",
    ] {
        assert!(virtio_scsi.iter().any(|l| l.ends_with(expected)), "{expected} in {virtio_scsi:#?}");
    }
    assert!(!virtio_scsi.iter().any(|l| l.contains("--ide2")));

    // Applied, the conf reads back with no virtio disk lacking an iothread (DEV002).
    let applied = apply_qm_set(&conf("virtio-scsi-pci"), &virtio_scsi);
    let path = dir.path().join("applied.conf");
    std::fs::write(&path, &applied).unwrap();
    let check = kvmtune(&["check", path.to_str().unwrap(), "--select", "DEV002"]);
    assert!(!String::from_utf8_lossy(&check.stdout).contains("DEV002]"), "{applied}");

    // Behind an LSI controller the SCSI disk keeps its line: no driver change for the guest.
    let lsi = qm_set_for(conf("lsi"));
    assert!(lsi.iter().any(|l| l.contains("--virtio0")));
    assert!(!lsi.iter().any(|l| l.contains("--scsi1") || l.contains("--scsihw")), "{lsi:#?}");
}

/// The plan names the workload as the flag spells it, in text and JSON.
#[test]
fn workload_is_printed_as_the_flag_spells_it() {
    let text = tune_on(SyntheticHost::ryzen_7950x3d(), &["--workload", "ipi-heavy", "--emit", "none"]);
    let first = String::from_utf8_lossy(&text.stdout).lines().next().unwrap_or_default().to_string();
    assert!(first.starts_with("kvmtune tune: Win11 ipi-heavy on "), "{first}");
    let json = tune_on(SyntheticHost::ryzen_7950x3d(), &["--workload", "ipi-heavy", "--format", "json"]);
    let document: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["plan"]["workload"], "ipi-heavy");
}

/// The domain `tune` writes asks the libvirt hook for the same host side as the prepare line:
/// isolation with the plan's housekeeping CPUs, read back by kvmtune's own reader.
#[test]
fn each_domain_carries_its_host_request_for_the_hook() {
    let json = tune_on(
        SyntheticHost::threadripper_2950x(),
        &["--vm", "a:8", "--vm", "b:8", "--emit", "libvirt", "--format", "json"],
    );
    assert_eq!(json.status.code(), Some(0), "{}", String::from_utf8_lossy(&json.stderr));
    let document: Value = serde_json::from_slice(&json.stdout).unwrap();
    let housekeeping = document["plan"]["housekeeping"].as_str().unwrap();
    for xml in document["libvirt"].as_array().unwrap() {
        let config = kvmtune::config::libvirt::parse("tuned.xml", xml.as_str().unwrap()).unwrap();
        let request = config.host_needs.unwrap_or_else(|| panic!("no <kvmtune:host> in\n{xml}")).needs;
        assert!(request.isolate, "isolation asked");
        assert_eq!(request.housekeeping.unwrap().to_string(), housekeeping);
        assert!(request.irqs);
    }
}

/// `-cpu VALUE` with accelerator `accel`, stopped before the guest runs (`-S`): whether QEMU
/// got as far as its monitor, and what it printed. QEMU checks every property name and value,
/// and under KVM sets every vCPU's MSRs, before `-S` holds it, so a value KVM refuses aborts.
fn qemu_takes_cpu(accel: &str, cpu: &str) -> (bool, String) {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", accel, "-nodefaults", "-display", "none", "-S", "-monitor", "stdio", "-cpu", cpu])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    qemu.stdin.take().unwrap().write_all(b"quit\n").unwrap();
    let output = qemu.wait_with_output().unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The plan for this very machine starts under its KVM, and the probe's verdict on
/// IA32_ARCH_CAPABILITIES is QEMU's: where the probe says KVM refuses the value it offers,
/// plain `-cpu host` aborts (`failed to set MSR 0x10a`), the plan turns the MSR off, and with
/// that QEMU starts; where the probe says KVM takes it, `-cpu host` starts and the plan keeps
/// the MSR. On this nested AMD host (and GitHub's runners) it is the first case.
#[test]
#[cfg_attr(not(feature = "qemu"), ignore = "needs QEMU and /dev/kvm: cargo test --features qemu")]
fn the_plan_for_this_machine_starts_under_its_kvm() {
    let probe = kvmtune(&["probe", "--format", "json"]);
    let facts: Value = serde_json::from_slice(&probe.stdout).unwrap();
    let arch = &facts["host"]["kvm"]["device"]["known"]["arch_capabilities"]["known"];
    let refused = arch["offered"].is_string() && arch["accepted"] == false;

    let output = kvmtune(&["tune", "--format", "json", "--emit", "all"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    let argv: Vec<String> =
        document["qemu"][0].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    let cpu = option_value(&argv, "-cpu").unwrap();
    assert_eq!(cpu.contains("arch-capabilities=off"), refused, "{cpu} with the probe saying {arch}");
    assert_eq!(
        document["libvirt"][0]
            .as_str()
            .unwrap()
            .contains("<feature policy='disable' name='arch-capabilities'/>"),
        refused
    );

    let (started, stderr) = qemu_takes_cpu("kvm", cpu);
    assert!(started, "QEMU refused the plan's -cpu {cpu}: {stderr}");

    // An existing VM's minimal change turns the MSR off where it must, and leaves a VM that
    // already has it off as it is (it once became `require`, which aborts).
    let dir = tempfile::tempdir().unwrap();
    let domain = |features: &str| {
        format!(
            "<domain type='kvm'><name>exp</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os>\
             <cpu mode='host-passthrough' check='none'>{features}</cpu></domain>\n"
        )
    };
    let off = "<feature policy='disable' name='arch-capabilities'/>";
    for (name, features) in [("plain.xml", ""), ("off.xml", off)] {
        let path = dir.path().join(name);
        std::fs::write(&path, domain(features)).unwrap();
        let output = kvmtune(&["tune", path.to_str().unwrap(), "--diff"]);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(!text.contains("require CPU feature arch-capabilities"), "{name}: {text}");
        assert_eq!(
            text.contains("hide CPU feature arch-capabilities from the guest"),
            refused && features.is_empty(),
            "{name}: {text}"
        );
    }
    let (plain_started, plain_stderr) = qemu_takes_cpu("kvm", "host,migratable=off");
    assert_eq!(plain_started, !refused, "the probe said refused={refused}; QEMU: {plain_stderr}");
    if refused {
        assert!(plain_stderr.contains("failed to set MSR 0x10a"), "{plain_stderr}");
    }
}
