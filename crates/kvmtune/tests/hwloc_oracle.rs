//! The probe against real machines: every sysfs/procfs snapshot in the corpus, checked against
//! the topology hwloc (`.console`, `.xml`) or lscpu computed from the same files.

use std::collections::BTreeSet;
use std::path::Path;

use kvmtune::host::topology::Topology;
use kvmtune::host::{self, Host};
use kvmtune::values::CpuSet;

/// What the oracle says, as partitions of PU numbers, so that numbering differences between
/// tools do not matter but any grouping difference does.
#[derive(Debug, Default)]
struct Expected {
    packages: BTreeSet<CpuSet>,
    numa_nodes_with_cpus: BTreeSet<CpuSet>,
    numa_node_count: usize,
    cores: BTreeSet<CpuSet>,
    /// Each L3's CPUs and size as (value, unit in KiB): lstopo's console rounds sizes to the
    /// unit it prints (27.5 MiB shows as `28MiB`), so ours is compared after the same rounding.
    l3_groups: BTreeSet<(CpuSet, Option<(u64, u64)>)>,
    pus: CpuSet,
    /// PUs hwloc says exist but did not place (offline).
    offline: Option<CpuSet>,
    /// (efficiency rank, CPUs), most efficient-ranked last.
    kinds: Vec<(u32, CpuSet)>,
}

fn size_with_unit(text: &str) -> Option<(u64, u64)> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let number: u64 = digits.parse().ok()?;
    match &text[digits.len()..] {
        "KiB" | "KB" => Some((number, 1)),
        "MiB" | "MB" => Some((number, 1024)),
        "GiB" | "GB" => Some((number, 1024 * 1024)),
        _ => None,
    }
}

/// Parses `lstopo -v` console output: an indented tree of `Type L#n (attrs)` lines, then
/// summary lines.
fn parse_console(text: &str) -> Expected {
    struct Object {
        kind: String,
        depth: usize,
        parent: Option<usize>,
        pu: Option<u32>,
        size: Option<(u64, u64)>,
    }
    let mut objects: Vec<Object> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut expected = Expected::default();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("CPU kind #") {
            // `CPU kind #1 efficiency 1 cpuset 0x00000fff`
            let words: Vec<&str> = rest.split_whitespace().collect();
            let efficiency = words[2].parse().unwrap();
            expected.kinds.push((efficiency, CpuSet::parse_mask(words[4]).unwrap()));
            continue;
        }
        if trimmed.contains("processors not represented in topology:") {
            let mask = trimmed.rsplit(' ').next().unwrap();
            expected.offline = Some(CpuSet::parse_mask(mask).unwrap());
            continue;
        }
        let Some((head, attrs)) = trimmed.split_once(" (") else { continue };
        let (kind, logical) = head.split_once(' ').unwrap_or((head, "L#0"));
        if !logical.starts_with("L#") || indent % 2 != 0 {
            continue;
        }
        let depth = indent / 2;
        while stack.last().is_some_and(|&top| objects[top].depth >= depth) {
            stack.pop();
        }
        let attrs = attrs.trim_end_matches(')');
        let attr =
            |name: &str| attrs.split_whitespace().find_map(|a| a.strip_prefix(name)).map(str::to_string);
        objects.push(Object {
            kind: kind.to_string(),
            depth,
            parent: stack.last().copied(),
            pu: if kind == "PU" { attr("P#").and_then(|p| p.parse().ok()) } else { None },
            size: attr("size=").and_then(|s| size_with_unit(&s)),
        });
        stack.push(objects.len() - 1);
    }
    let mut pus_of = vec![CpuSet::new(); objects.len()];
    for (index, object) in objects.iter().enumerate() {
        if let Some(pu) = object.pu {
            expected.pus.insert(pu);
            let mut cursor = Some(index);
            while let Some(at) = cursor {
                pus_of[at].insert(pu);
                cursor = objects[at].parent;
            }
        }
    }
    for (index, object) in objects.iter().enumerate() {
        match object.kind.as_str() {
            "Package" => {
                expected.packages.insert(pus_of[index].clone());
            }
            "Core" => {
                expected.cores.insert(pus_of[index].clone());
            }
            "L3Cache" => {
                expected.l3_groups.insert((pus_of[index].clone(), object.size));
            }
            "NUMANode" => {
                expected.numa_node_count += 1;
                // A NUMA node hangs off the object whose CPUs it serves (through memory-side
                // caches, which have no CPUs of their own).
                let mut parent = object.parent;
                while let Some(at) = parent {
                    if objects[at].kind != "MemCache" {
                        break;
                    }
                    parent = objects[at].parent;
                }
                let cpus = parent.map(|p| pus_of[p].clone()).unwrap_or_default();
                if !cpus.is_empty() {
                    expected.numa_nodes_with_cpus.insert(cpus);
                }
            }
            _ => {}
        }
    }
    expected
}

/// Parses hwloc XML: every object carries its own `cpuset`.
fn parse_hwloc_xml(text: &str) -> Expected {
    let document = roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
    )
    .unwrap();
    let mut expected = Expected::default();
    for node in document.descendants().filter(|n| n.has_tag_name("object")) {
        let cpuset = || CpuSet::parse_mask(node.attribute("cpuset").unwrap()).unwrap();
        match node.attribute("type").unwrap() {
            "Machine" => {
                let complete = CpuSet::parse_mask(node.attribute("complete_cpuset").unwrap()).unwrap();
                expected.offline = Some(complete.difference(&cpuset()));
            }
            "Package" => {
                expected.packages.insert(cpuset());
            }
            "Core" => {
                expected.cores.insert(cpuset());
            }
            "PU" => expected.pus = expected.pus.union(&cpuset()),
            "L3Cache" => {
                let size =
                    node.attribute("cache_size").and_then(|s| s.parse::<u64>().ok()).map(|b| (b / 1024, 1));
                expected.l3_groups.insert((cpuset(), size));
            }
            "NUMANode" => {
                expected.numa_node_count += 1;
                if !cpuset().is_empty() {
                    expected.numa_nodes_with_cpus.insert(cpuset());
                }
            }
            _ => {}
        }
    }
    for kind in document.descendants().filter(|n| n.has_tag_name("cpukind")) {
        let efficiency =
            kind.attribute("forced_efficiency").or(kind.attribute("efficiency")).and_then(|e| e.parse().ok());
        expected
            .kinds
            .push((efficiency.unwrap_or(0), CpuSet::parse_mask(kind.attribute("cpuset").unwrap()).unwrap()));
    }
    expected
}

fn probe_snapshot(root: &Path) -> host::HostFacts {
    host::probe(&Host::snapshot(root).expect("snapshot opens"))
}

fn ours_partition(sets: impl Iterator<Item = CpuSet>) -> BTreeSet<CpuSet> {
    sets.filter(|s| !s.is_empty()).collect()
}

fn compare(name: &str, topology: &Topology, expected: &Expected) {
    let online = topology.online.known().cloned().unwrap_or_default();
    assert_eq!(online, expected.pus, "{name}: online PUs");
    assert_eq!(
        ours_partition(topology.packages.iter().map(|p| p.cpus.clone())),
        expected.packages,
        "{name}: packages"
    );
    assert_eq!(ours_partition(topology.smt_sibling_sets.iter().cloned()), expected.cores, "{name}: cores");
    let unit_of: std::collections::BTreeMap<&CpuSet, u64> =
        expected.l3_groups.iter().map(|(cpus, size)| (cpus, size.map_or(1, |(_, unit)| unit))).collect();
    let ours_l3: BTreeSet<(CpuSet, Option<(u64, u64)>)> = topology
        .l3_groups
        .iter()
        .map(|g| {
            let unit = unit_of.get(&g.cpus).copied().unwrap_or(1);
            (g.cpus.clone(), g.size_kib.map(|kib| ((kib + unit / 2) / unit, unit)))
        })
        .collect();
    assert_eq!(ours_l3, expected.l3_groups, "{name}: L3 groups with sizes");
    assert_eq!(
        ours_partition(topology.numa_nodes.iter().map(|n| n.cpus.clone())),
        expected.numa_nodes_with_cpus,
        "{name}: NUMA nodes with CPUs"
    );
    assert_eq!(topology.numa_nodes.len(), expected.numa_node_count, "{name}: NUMA node count");
    if let Some(offline) = &expected.offline {
        assert_eq!(topology.offline.known(), Some(offline), "{name}: offline CPUs");
    }
    match expected.kinds.len() {
        0 | 1 => assert_eq!(topology.core_types.known(), Some(&None), "{name}: not hybrid"),
        _ => {
            let types = topology
                .core_types
                .known()
                .cloned()
                .flatten()
                .unwrap_or_else(|| panic!("{name}: hybrid not detected"));
            let mut kinds = expected.kinds.clone();
            kinds.sort_by_key(|(efficiency, _)| *efficiency);
            assert_eq!(types.performance, kinds.last().unwrap().1, "{name}: P-cores");
            let efficient =
                kinds[..kinds.len() - 1].iter().fold(CpuSet::new(), |all, (_, set)| all.union(set));
            assert_eq!(types.efficiency, efficient, "{name}: E-cores");
        }
    }
    for cpu in topology.cpus.iter().filter(|c| c.online) {
        assert!(cpu.smt_siblings.is_some(), "{name}: cpu{} has SMT siblings", cpu.cpu);
        let in_expected_node = expected.numa_nodes_with_cpus.iter().any(|n| n.contains(cpu.cpu));
        assert_eq!(cpu.numa_node.is_some(), in_expected_node, "{name}: cpu{} NUMA node", cpu.cpu);
    }
}

#[test]
fn every_hwloc_snapshot_matches_hwloc() {
    let dir = kvmtune_testkit::corpus().join("hwloc");
    let mut checked = Vec::new();
    for tarball in kvmtune_testkit::corpus_files("hwloc") {
        let Some(name) =
            tarball.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".tar.bz2"))
        else {
            continue;
        };
        let console = dir.join(format!("{name}.console"));
        let xml = dir.join(format!("{name}.xml"));
        let expected = if console.is_file() {
            parse_console(&std::fs::read_to_string(&console).unwrap())
        } else if xml.is_file() {
            parse_hwloc_xml(&std::fs::read_to_string(&xml).unwrap())
        } else {
            panic!("{name}: no expected output beside the tarball");
        };
        let (_guard, root) = kvmtune_testkit::unpack(&tarball);
        let facts = probe_snapshot(&root);
        compare(name, &facts.topology, &expected);
        checked.push(name.to_string());
    }
    checked.sort();
    assert_eq!(checked.len(), 10, "snapshots checked: {checked:?}");
}

/// The lscpu dumps: the parsable section assigns each CPU a core, socket, node and L3 id.
#[test]
fn every_lscpu_dump_matches_lscpu() {
    let dir = kvmtune_testkit::corpus().join("lscpu-dumps");
    let mut checked = 0;
    for tarball in kvmtune_testkit::corpus_files("lscpu-dumps") {
        let Some(name) = tarball.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".tar.gz"))
        else {
            continue;
        };
        let expected_text = std::fs::read_to_string(dir.join(format!("lscpu-{name}"))).unwrap();
        let mut by_column: [std::collections::BTreeMap<String, CpuSet>; 4] = Default::default();
        let mut all = CpuSet::new();
        // The first parsable section uses logical ids; a second one (lscpu --physical) repeats
        // the table with per-socket core ids, which would merge cores of different sockets.
        let first_section = expected_text
            .lines()
            .skip_while(|l| !l.starts_with("# CPU,Core,Socket,Node"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty());
        for line in first_section {
            let fields: Vec<&str> = line.split(',').collect();
            let cpu: u32 = fields[0].parse().unwrap();
            all.insert(cpu);
            // CPU,Core,Socket,Node,,L1d,L1i,L2,L3
            for (slot, column) in [1, 2, 3, 8].into_iter().enumerate() {
                by_column[slot].entry(fields[column].to_string()).or_default().insert(cpu);
            }
        }
        let partition = |slot: usize| -> BTreeSet<CpuSet> { by_column[slot].values().cloned().collect() };
        let node_count: usize = expected_text
            .lines()
            .find_map(|l| l.strip_prefix("NUMA node(s):"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap();

        let (_guard, root) = kvmtune_testkit::unpack(&tarball);
        let topology = probe_snapshot(&root).topology;
        assert_eq!(topology.online.known(), Some(&all), "{name}: online");
        assert_eq!(ours_partition(topology.smt_sibling_sets.iter().cloned()), partition(0), "{name}: cores");
        assert_eq!(
            ours_partition(topology.packages.iter().map(|p| p.cpus.clone())),
            partition(1),
            "{name}: sockets"
        );
        assert_eq!(
            ours_partition(topology.numa_nodes.iter().map(|n| n.cpus.clone())),
            partition(2),
            "{name}: nodes"
        );
        assert_eq!(
            ours_partition(topology.l3_groups.iter().map(|g| g.cpus.clone())),
            partition(3),
            "{name}: L3"
        );
        assert_eq!(
            topology.numa_nodes.iter().filter(|n| !n.cpus.is_empty()).count(),
            node_count,
            "{name}: node count"
        );
        checked += 1;
    }
    assert_eq!(checked, 2);
}

/// PCI devices against hwloc's `--whole-io` export of the same snapshot: every device hwloc
/// lists (as `PCIDev` or `Bridge`) is found at the same address with the same class and ids,
/// and the VGA device is the one GPU.
#[test]
fn pci_devices_match_hwloc_whole_io_export() {
    let name = "32em64t-2n8c+dax+nvme+mic+dimms";
    let dir = kvmtune_testkit::corpus().join("hwloc");
    let xml = std::fs::read_to_string(dir.join(format!("{name}.xml"))).unwrap();
    let document = roxmltree::Document::parse_with_options(
        &xml,
        roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
    )
    .unwrap();
    let (_guard, root) = kvmtune_testkit::unpack(&dir.join(format!("{name}.tar.bz2")));
    let facts = probe_snapshot(&root);
    let devices = facts.pci_devices.known().expect("PCI devices readable");
    let mut compared = 0;
    for object in document.descendants().filter(|n| matches!(n.attribute("type"), Some("PCIDev" | "Bridge")))
    {
        let Some(address) = object.attribute("pci_busid") else { continue };
        // pci_type = "CCSS [vvvv:dddd] [svvv:sddd] rev ..." (class and subclass, then ids).
        let pci_type = object.attribute("pci_type").unwrap();
        let class = &pci_type[..4];
        let ids = pci_type[6..15].to_string();
        let ours = devices
            .iter()
            .find(|d| d.address.to_string() == address)
            .unwrap_or_else(|| panic!("{address} missing"));
        let our_class = ours.class.known().unwrap().trim_start_matches("0x");
        assert_eq!(&our_class[..4], class, "{address} class");
        assert_eq!(ours.id.known(), Some(&ids), "{address} ids");
        compared += 1;
    }
    // 128 PCIDev + 12 Bridge objects, less the 4 host bridges that have no bus address.
    assert_eq!(compared, 136);
    let gpus = facts.gpus();
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0].address.to_string(), "0000:05:00.0");
    assert!(gpus[0].boot_vga);
}
