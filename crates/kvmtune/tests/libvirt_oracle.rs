//! libvirt is the oracle for how its XML becomes QEMU arguments: for every test case in
//! `../shared/corpus/libvirt/` that has libvirt's expected `.args`, the model read from the
//! XML renders the same `-cpu` properties, `-smp`, `-rtc`, HPET and PIT settings.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kvmtune::config::{libvirt, shell};
use kvmtune::output::qemu_args;

struct Expected {
    cpu_model: String,
    cpu_properties: BTreeSet<String>,
    smp: [u64; 6],
    rtc: BTreeSet<String>,
    hpet_off: bool,
    pit_policy: Option<String>,
}

/// A property without a value is a switch that is on (`hv-time` == `hv-time=on`).
fn normalize(property: &str) -> String {
    if property.contains('=') { property.to_string() } else { format!("{property}=on") }
}

fn parse_args(text: &str) -> Expected {
    let words: Vec<String> = shell::split(text).unwrap().into_iter().map(|w| w.text).collect();
    let value_of = |flag: &str| words.iter().position(|w| w == flag).map(|i| words[i + 1].clone());
    let cpu = value_of("-cpu").expect("-cpu");
    let mut cpu_parts = cpu.split(',');
    let cpu_model = cpu_parts.next().unwrap().to_string();
    let smp = value_of("-smp").expect("-smp");
    let mut smp_values = [0, 1, 1, 1, 1, 1];
    for (index, part) in smp.split(',').enumerate() {
        let (key, value) = part.split_once('=').unwrap_or(("cpus", part));
        let slot = match key {
            "cpus" if index == 0 => 0,
            "sockets" => 1,
            "dies" => 2,
            "clusters" => 3,
            "cores" => 4,
            "threads" => 5,
            other => panic!("unexpected -smp key {other}"),
        };
        smp_values[slot] = value.parse().unwrap();
    }
    let machine = value_of("-machine").unwrap_or_default();
    let pit_policy =
        words.iter().filter_map(|w| w.strip_prefix("kvm-pit.lost_tick_policy=")).next().map(str::to_string);
    Expected {
        cpu_model,
        cpu_properties: cpu_parts.map(normalize).collect(),
        smp: smp_values,
        rtc: value_of("-rtc").map(|r| r.split(',').map(str::to_string).collect()).unwrap_or_default(),
        hpet_off: machine.split(',').any(|p| p == "hpet=off") || words.iter().any(|w| w == "-no-hpet"),
        pit_policy,
    }
}

/// The XML inputs with their expected arguments. Where the corpus pairs an input with args from
/// another libvirt revision, SOURCES.md says so; the pairs below are the ones it lists.
fn pairs(corpus: &Path) -> Vec<(PathBuf, PathBuf)> {
    let dir = corpus.join("libvirt");
    let old = dir.join("qemuxml2argvdata");
    // A current test case: NAME.xml with NAME.x86_64-latest.args beside it.
    let latest =
        |name: &str| (dir.join(format!("{name}.xml")), dir.join(format!("{name}.x86_64-latest.args")));
    [
        latest("hyperv"),
        (dir.join("hyperv.x86_64-latest.xml"), dir.join("hyperv.x86_64-latest.args")),
        latest("hyperv-off"),
        latest("hyperv-stimer-direct"),
        latest("clock-hpet-off"),
        latest("cputune"),
        latest("hugepages-numa-default-2M"),
        latest("cpu-tsc-frequency"),
        (old.join("hyperv-panic.xml"), dir.join("hyperv-panic.x86_64-latest.args")),
        (old.join("hyperv-passthrough.xml"), old.join("hyperv-passthrough.x86_64-latest.args")),
        (old.join("hyperv-passthrough.xml"), dir.join("hyperv-passthrough.x86_64-latest.args")),
        (old.join("clock-timer-hyperv-rtc.xml"), old.join("clock-timer-hyperv-rtc.args")),
    ]
    .into_iter()
    .collect()
}

#[test]
fn model_renders_what_libvirt_renders() {
    let corpus = kvmtune_testkit::corpus();
    let mut checked = 0;
    for (xml_path, args_path) in pairs(&corpus) {
        let name = xml_path.file_name().unwrap().to_string_lossy().to_string();
        let xml = std::fs::read_to_string(&xml_path).unwrap();
        let config = libvirt::parse(&name, &xml).unwrap_or_else(|e| panic!("{e}"));
        let expected = parse_args(&std::fs::read_to_string(&args_path).unwrap());

        let cpu = qemu_args::cpu(&config);
        let ours: BTreeSet<String> = cpu.properties.iter().map(|p| normalize(p)).collect();
        if cpu.model == "host-model" {
            // libvirt expands host-model from its test host's CPU; what the XML itself asks for
            // must be among the expansion.
            assert!(
                ours.is_subset(&expected.cpu_properties),
                "{name}: {ours:?} not in {:?}",
                expected.cpu_properties
            );
        } else {
            assert_eq!(ours, expected.cpu_properties, "{name}: -cpu properties");
            // libvirt picks qemu32 for i686 guests; the model name otherwise matches.
            if expected.cpu_model != "qemu32" {
                assert_eq!(cpu.model, expected.cpu_model, "{name}: -cpu model");
            }
        }
        assert_eq!(qemu_args::smp(&config), Some(expected.smp), "{name}: -smp");
        let rtc: BTreeSet<String> = qemu_args::rtc(&config).into_iter().collect();
        assert_eq!(rtc, expected.rtc, "{name}: -rtc");
        assert_eq!(qemu_args::hpet(&config) == Some(false), expected.hpet_off, "{name}: hpet");
        assert_eq!(
            qemu_args::pit_lost_tick_policy(&config).map(str::to_string),
            expected.pit_policy,
            "{name}: pit"
        );
        checked += 1;
    }
    assert_eq!(checked, 12);
}

/// The `*.xml` files of these corpus directories.
fn corpus_xmls(dirs: &[&str]) -> Vec<std::path::PathBuf> {
    dirs.iter()
        .flat_map(|dir| kvmtune_testkit::corpus_files(dir))
        .filter(|path| path.extension().is_some_and(|e| e == "xml"))
        .collect()
}

#[test]
fn every_corpus_libvirt_xml_reads() {
    let mut read = 0;
    for path in corpus_xmls(&["libvirt", "libvirt/qemuxml2argvdata"]) {
        let text = std::fs::read_to_string(&path).unwrap();
        libvirt::parse(&path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
        read += 1;
    }
    assert_eq!(read, 13);
}

/// Lossless editing: every libvirt XML in the corpus reads and, with nothing to change, writes
/// back byte for byte; with its safe fixes applied, every original line that no fix touched is
/// still there, unchanged and in order.
#[test]
fn editing_is_lossless_on_every_corpus_xml() {
    use kvmtune::analysis::check::{CheckOptions, check};
    use kvmtune::analysis::fix::Applicability;
    use kvmtune::config::libvirt_edit;
    use kvmtune::values::SourceText;

    let mut checked = 0;
    for path in corpus_xmls(&["libvirt", "libvirt/qemuxml2argvdata", "user-xml"]) {
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(config) = libvirt::parse("x", &text) else { continue };
        assert_eq!(libvirt_edit::apply_actions(&text, &[]).unwrap(), text, "{}", path.display());
        let source = SourceText::new("x", text.clone());
        let options = CheckOptions::default();
        let actions: Vec<_> = check(&config, &source, &options)
            .diagnostics
            .into_iter()
            .filter_map(|d| d.fix)
            .filter(|f| f.applicability == Applicability::Safe)
            .map(|f| f.action)
            .collect();
        let fixed = libvirt_edit::apply_actions(&text, &actions).unwrap();
        // Every original line survives unless a fix rewrote it: at most one line per
        // action changes in place (an attribute), except a replaced <memballoon> block.
        let original_lines: Vec<&str> = text.lines().collect();
        let mut fixed_lines = fixed.lines();
        let mut lost = 0;
        for line in &original_lines {
            if !fixed_lines.by_ref().any(|candidate| candidate == *line) {
                lost += 1;
                fixed_lines = fixed.lines();
            }
        }
        let balloon_block = text
            .lines()
            .skip_while(|l| !l.contains("<memballoon"))
            .take_while(|l| !l.contains("</memballoon>"))
            .count()
            + 1;
        let changes: usize = actions
            .iter()
            .map(|a| match a {
                kvmtune::config::edit::ConfigEdit::EnableHyperv { features } => features.len(),
                _ => 1,
            })
            .sum();
        assert!(
            lost <= changes + balloon_block,
            "{}: {lost} original lines changed for {changes} changes",
            path.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 40);
}
