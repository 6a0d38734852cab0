//! The guest program's report read back on the host: the Hyper-V leaves decoded on real dumps
//! from public sources (the fixture's `_provenance`), every enlightenment against the bits
//! QEMU sets for it, and reports that are not one.

use std::collections::BTreeSet;

use kvmtune::guest::GuestReport;
use kvmtune::knowledge::hyperv::{ENLIGHTENMENTS, Hv};
use kvmtune::knowledge::hyperv_cpuid::{HV_CPUID_BITS, LEAF_FEATURES, LEAF_RECOMMENDATIONS, Register};
use serde_json::{Value, json};

mod common;

fn hex(value: &Value) -> u32 {
    u32::from_str_radix(value.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// A report of a guest that sees a Hyper-V interface with these leaves, its leaf 0x40000000
/// announcing `max_leaf` as the highest.
fn report_announcing(max_leaf: u32, leaves: Vec<Value>) -> GuestReport {
    common::guest_report_seeing(json!({
        "max_leaf": max_leaf, "signature": "Microsoft Hv", "hyperv_interface": true, "leaves": leaves
    }))
}

/// A report of a guest that sees a Hyper-V interface with these leaves, up to 0x4000000A.
fn report_with(leaves: Vec<Value>) -> GuestReport {
    report_announcing(0x4000_000a, leaves)
}

/// The dumps of the fixture, each with its `source`.
fn fixture_dumps() -> Vec<Value> {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/guest-cpuid-dumps.json")).unwrap();
    fixture["dumps"].as_array().unwrap().clone()
}

/// The fixture dump whose source names `who`.
fn dump_from(who: &str) -> Value {
    fixture_dumps().into_iter().find(|d| d["source"].as_str().unwrap().contains(who)).unwrap()
}

/// The report of a guest that read one fixture dump. A dump that lists leaf 0x40000000 announces
/// its own highest leaf; the others list a few leaves and are read as announcing 0x4000000A.
fn report_of_dump(dump: &Value) -> GuestReport {
    let leaves: Vec<Value> = dump["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| json!({"leaf": hex(&l["leaf"]), "eax": hex(&l["eax"]), "ebx": hex(&l["ebx"]), "ecx": hex(&l["ecx"]), "edx": hex(&l["edx"])}))
        .collect();
    let max_leaf = leaves
        .iter()
        .find(|l| l["leaf"] == 0x4000_0000)
        .map_or(0x4000_000a, |l| u32::try_from(l["eax"].as_u64().unwrap()).unwrap());
    report_announcing(max_leaf, leaves)
}

/// The rules that need no host facts (all but VER009 and VER010).
fn verify_without_host(
    config: &kvmtune::config::model::VmConfig,
    guest: &GuestReport,
) -> Vec<kvmtune::analysis::verify_rules::VerifyFinding> {
    kvmtune::analysis::verify_rules::verify(config, guest, None)
}

fn names(list: &Value) -> Vec<Hv> {
    list.as_array().unwrap().iter().map(|n| Hv::from_qemu(n.as_str().unwrap()).unwrap()).collect()
}

#[test]
fn real_dumps_decode_as_their_guests_report() {
    let dumps = fixture_dumps();
    // Three guests on KVM with QEMU's enlightenments, two on Microsoft's Hyper-V.
    assert_eq!(dumps.iter().filter(|d| d["host"] == "kvm").count(), 3);
    assert_eq!(dumps.len(), 5);
    for dump in &dumps {
        let report = report_of_dump(dump);
        let source = dump["source"].as_str().unwrap();
        for hv in names(&dump["sees"]) {
            assert_eq!(report.sees(hv), Some(true), "{hv} in {source}");
        }
        for hv in names(&dump["not_seen"]) {
            assert_eq!(report.sees(hv), Some(false), "{hv} in {source}");
            assert!(!report.missing_bits(hv).is_empty(), "{hv} names its missing bits");
        }
        for hv in names(&dump["unknown"]) {
            assert_eq!(report.sees(hv), None, "{hv} in {source}: its leaf is not in the dump");
        }
        // Every enlightenment is in exactly one of the three lists.
        let listed =
            names(&dump["sees"]).len() + names(&dump["not_seen"]).len() + names(&dump["unknown"]).len();
        assert_eq!(listed, ENLIGHTENMENTS.len(), "{source}");
    }
}

/// For each enlightenment, a guest that sees exactly the bits QEMU sets for it
/// (`kvm_hyperv_properties[]`, the shared table) sees it, and with any one of them cleared does not.
#[test]
fn each_enlightenment_needs_every_bit_qemu_sets_for_it() {
    const LEAVES: [u32; 3] = [0x4000_0003, 0x4000_0004, 0x4000_000A];
    for enlightenment in ENLIGHTENMENTS {
        let bits: Vec<_> = enlightenment.bits().collect();
        assert!(!bits.is_empty(), "{} has no bits", enlightenment.hv);
        let leaves_with = |skip: Option<usize>| -> Vec<Value> {
            LEAVES
                .iter()
                .map(|&leaf| {
                    let mut registers = [0u32; 4];
                    for (index, bit) in bits.iter().enumerate() {
                        if bit.leaf == leaf && Some(index) != skip {
                            registers[bit.register as usize] |= 1 << bit.bit;
                        }
                    }
                    json!({"leaf": leaf, "eax": registers[0], "ebx": registers[1], "ecx": registers[2], "edx": registers[3]})
                })
                .collect()
        };
        assert_eq!(report_with(leaves_with(None)).sees(enlightenment.hv), Some(true), "{}", enlightenment.hv);
        for (index, bit) in bits.iter().enumerate() {
            assert_eq!(
                report_with(leaves_with(Some(index))).sees(enlightenment.hv),
                Some(false),
                "{} without {}",
                enlightenment.hv,
                bit.name
            );
        }
    }
}

#[test]
fn a_report_that_is_not_one_names_where() {
    let error =
        GuestReport::from_json("{\n  \"schema_version\": 1,\n  \"program\": 5\n}", "saved.json").unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("saved.json:3:"), "{text}");
    assert!(text.contains("not a kvmtune-guest report"), "{text}");

    let truncated = GuestReport::from_json("{\"schema_version\": 1,", "cut.json").unwrap_err().to_string();
    assert!(truncated.starts_with("cut.json:1:"), "{truncated}");

    let other = json!({"schema_version": 1, "program": {"name": "coreinfo"}, "os": {"family": "windows"},
        "cpuid": {"vendor": "x", "hypervisor_bit": false}, "topology": {"logical_processors": 1, "cores": 1, "sockets": 1, "numa_nodes": 1},
        "time": {"counter": "QueryPerformanceCounter"}});
    let error = GuestReport::from_json(&other.to_string(), "other.json").unwrap_err().to_string();
    assert!(error.contains("written by coreinfo"), "{error}");

    let mut newer = other.clone();
    newer["program"]["name"] = json!("kvmtune-guest");
    newer["schema_version"] = json!(2);
    let error = GuestReport::from_json(&newer.to_string(), "newer.json").unwrap_err().to_string();
    assert!(error.contains("schema version 2"), "{error}");
}

fn kvm_guest_of_the_kvm_list() -> GuestReport {
    let dump = dump_from("Sean Christopherson");
    assert_eq!(dump["host"], "kvm");
    report_of_dump(&dump)
}

fn config(hyperv: &str) -> kvmtune::config::model::VmConfig {
    let xml = format!(
        "<domain type='kvm'><name>t</name><memory unit='GiB'>4</memory><vcpu>4</vcpu><os><type arch='x86_64'>hvm</type></os>\
         <features><hyperv mode='custom'>{hyperv}</hyperv></features>\
         <cpu mode='host-passthrough'><topology sockets='1' dies='1' cores='4' threads='1'/></cpu>\
         <clock offset='localtime'><timer name='hypervclock' present='yes'/><timer name='hpet' present='no'/></clock></domain>"
    );
    kvmtune::config::read("t.xml", &xml).unwrap()
}

/// The `-cpu` option Martins3's guest was started with (the notes beside its dump).
const MARTINS3_CPU: &str = "host,hv_relaxed,hv_vpindex,hv_time";

/// The `<hyperv>` element virt-install writes for a Windows guest (virtinst: relaxed, vapic,
/// spinlocks with 8191 retries); `config` adds the hypervclock timer.
const VIRT_INSTALL_WINDOWS_HYPERV: &str =
    "<relaxed state='on'/><vapic state='on'/><spinlocks state='on' retries='8191'/>";

/// A QEMU command line whose `-cpu` option is `cpu`.
fn qemu_with_cpu(cpu: &str) -> kvmtune::config::model::VmConfig {
    kvmtune::config::read(
        "vm.sh",
        &format!("qemu-system-x86_64 -enable-kvm -machine q35 -m 4G -smp 4 -cpu {cpu}"),
    )
    .unwrap()
}

/// The KVM guest of the kvm list against configs: what it sees is not reported, what it lacks
/// is, with the bit that is clear.
#[test]
fn verify_on_the_real_kvm_dump_names_only_what_the_guest_lacks() {
    let guest = kvm_guest_of_the_kvm_list();
    let seen_config = config(
        "<relaxed state='on'/><vapic state='on'/><vpindex state='on'/><synic state='on'/><stimer state='on'/><tlbflush state='on'/><ipi state='on'/>",
    );
    let findings = verify_without_host(&seen_config, &guest);
    assert!(findings.iter().all(|f| f.rule != "VER001"), "{findings:#?}");

    let lacking = config(
        "<vpindex state='on'/><tlbflush state='on'><direct state='on'/><extended state='on'/></tlbflush>",
    );
    let findings = verify_without_host(&lacking, &guest);
    let ver001: Vec<_> = findings.iter().filter(|f| f.rule == "VER001").collect();
    assert_eq!(ver001.len(), 2, "{findings:#?}");
    assert!(ver001.iter().any(|f| f.configured == "hv-tlbflush-ext on"
        && f.seen.contains("ExtendedGvaRangesForFlushVirtualAddressListAvailable")));
    assert!(
        ver001
            .iter()
            .any(|f| f.configured == "hv-tlbflush-direct on" && f.seen.contains("DirectVirtualFlush"))
    );
    assert!(ver001[0].why.contains("Hyper-V leaves without this bit"), "{}", ver001[0].why);
}

/// The guest of Martins3's notes was started with a known QEMU option. Held against that command
/// line, nothing is reported. Against one that asks for more, each addition is reported with its
/// clear bits, also one whose leaf lies above the highest one the guest's 0x40000000 announces
/// (0x40000005: QEMU announces 0x4000000A only when a feature of that leaf is on).
#[test]
fn verify_on_a_real_dump_holds_against_the_qemu_option_it_was_taken_under() {
    let guest = report_of_dump(&dump_from("Martins3"));
    assert_eq!(guest.max_hyperv_leaf(), Some(0x4000_0005));
    let findings = verify_without_host(&qemu_with_cpu(MARTINS3_CPU), &guest);
    assert!(findings.iter().all(|f| f.rule != "VER001"), "{findings:#?}");

    let findings = verify_without_host(
        &qemu_with_cpu(
            "host,hv_relaxed,hv_vpindex,hv_time,hv_synic,hv_stimer,hv-vapic,hv-tlbflush,hv-tlbflush-direct",
        ),
        &guest,
    );
    let ver001: Vec<(&str, &str)> = findings
        .iter()
        .filter(|f| f.rule == "VER001")
        .map(|f| (f.configured.as_str(), f.seen.as_str()))
        .collect();
    assert_eq!(
        ver001,
        [
            ("hv-synic on", "clear in the guest: AccessSynicRegs"),
            ("hv-stimer on", "clear in the guest: AccessSyntheticTimerRegs"),
            ("hv-vapic on", "clear in the guest: AccessIntrCtrlRegs"),
            (
                "hv-tlbflush on",
                "clear in the guest: UseHypercallForRemoteFlushAndLocalFlushEntire, UseExProcessorMasks"
            ),
            (
                "hv-tlbflush-direct on",
                "clear in the guest: DirectVirtualFlush (leaf 0x4000000A is above the guest's highest Hyper-V leaf, 0x40000005)"
            ),
        ],
        "{findings:#?}"
    );
}

/// hvinfo printed the bits of the Windows guest by name. The registers the fixture rebuilds from
/// them hold exactly those bits, by their TLFS names in the library's table, and the spinlock
/// retries it printed; with virt-install's Windows defaults for a config, verify has nothing to
/// say about them.
#[test]
fn a_windows_guests_named_bits_are_the_registers_the_fixture_rebuilds() {
    let dump = dump_from("hvinfo");
    let printed: BTreeSet<&str> =
        dump["printed"].as_object().unwrap().values().map(|name| name.as_str().unwrap()).collect();
    let registers = |leaf: u32| -> [u32; 4] {
        let listed = dump["leaves"].as_array().unwrap().iter().find(|l| hex(&l["leaf"]) == leaf).unwrap();
        ["eax", "ebx", "ecx", "edx"].map(|r| hex(&listed[r]))
    };
    let set: BTreeSet<&str> = HV_CPUID_BITS
        .iter()
        .filter(|b| [LEAF_FEATURES, LEAF_RECOMMENDATIONS].contains(&b.leaf))
        .filter(|b| b.register.of(registers(b.leaf)) & (1 << b.bit) != 0)
        .map(|b| b.name)
        .collect();
    assert_eq!(set, printed);
    assert_eq!(Register::Ebx.of(registers(LEAF_RECOMMENDATIONS)), 8191, "SpinlockRetries");

    let guest = report_of_dump(&dump);
    let virt_install = config(VIRT_INSTALL_WINDOWS_HYPERV);
    let findings = verify_without_host(&virt_install, &guest);
    assert!(findings.iter().all(|f| f.rule != "VER001"), "{findings:#?}");
}

/// hv-spinlocks reaches the guest as a count in 0x40000004 EBX. Martins3's guest, started
/// without it, reads QEMU's 0xFFFFFFFF ("never notify"); the Windows guest reads virt-install's
/// 8191. Each is held against a config that asks for a count.
#[test]
fn spinlock_retries_are_held_against_the_count_the_guest_reads() {
    let ver013 = |config: &kvmtune::config::model::VmConfig, guest: &GuestReport| {
        verify_without_host(config, guest)
            .into_iter()
            .filter(|f| f.rule == "VER013")
            .map(|f| (f.configured, f.seen))
            .collect::<Vec<_>>()
    };
    let linux = report_of_dump(&dump_from("Martins3"));
    assert_eq!(linux.spinlock_retries(), Some(u32::MAX));
    let with_spinlocks = qemu_with_cpu(&format!("{MARTINS3_CPU},hv_spinlocks=0x1fff"));
    assert_eq!(
        ver013(&with_spinlocks, &linux),
        [(
            "hv-spinlocks=8191".to_string(),
            "0x40000004 EBX 0xFFFFFFFF, never notify: QEMU's value without hv-spinlocks".to_string()
        )]
    );
    assert!(ver013(&qemu_with_cpu(MARTINS3_CPU), &linux).is_empty());

    let windows = report_of_dump(&dump_from("hvinfo"));
    assert!(ver013(&config("<spinlocks state='on' retries='8191'/>"), &windows).is_empty());
    assert_eq!(
        ver013(&config("<spinlocks state='on' retries='4095'/>"), &windows),
        [("hv-spinlocks=4095".to_string(), "0x40000004 EBX 8191".to_string())]
    );
}

/// A report cut short, its 0x40000004 leaf gone though 0x40000000 announces it: what the guest
/// sees there is unknown, and VER001 says the report lacks the leaf rather than naming no bits.
#[test]
fn an_enlightenment_whose_leaf_the_report_lacks_is_named_as_such() {
    let mut dump = dump_from("Martins3");
    dump["leaves"].as_array_mut().unwrap().retain(|l| l["leaf"] != "0x40000004");
    let guest = report_of_dump(&dump);
    assert_eq!(guest.sees(Hv::from_qemu("hv-relaxed").unwrap()), None);
    let config = qemu_with_cpu("host,hv_relaxed,hv_time");
    let ver001: Vec<_> =
        verify_without_host(&config, &guest).into_iter().filter(|f| f.rule == "VER001").collect();
    assert_eq!(ver001.len(), 1, "{ver001:#?}");
    assert_eq!(ver001[0].configured, "hv-relaxed on");
    assert_eq!(ver001[0].seen, "the leaves of its bits are not in the report");
}

/// A Windows report as the guest program writes it, with the given topology and clock.
fn windows_report(edition: &str, logical: u32, sockets: u32, qpf: u64, read_ns: f64) -> GuestReport {
    let text = json!({
        "schema_version": 1,
        "program": {"name": "kvmtune-guest", "version": "0.1.0"},
        "os": {"family": "windows", "name": "Windows 10 Pro", "build": 19045, "edition": edition, "installation_type": "Client"},
        "cpuid": {"vendor": "GenuineIntel", "hypervisor_bit": true, "invariant_tsc": true,
                  "hypervisor": {"max_leaf": 0x4000_000a_u32, "signature": "Microsoft Hv", "hyperv_interface": true, "leaves": []}},
        "topology": {"logical_processors": logical, "cores": logical, "sockets": sockets, "numa_nodes": 1},
        "time": {"counter": "QueryPerformanceCounter", "frequency_hz": qpf, "call_cost": {"samples": 100, "median_ns": read_ns}}
    });
    GuestReport::from_json(&text.to_string(), "windows.json").unwrap()
}

#[test]
fn vcpus_windows_leaves_idle_are_blamed_on_the_sockets_of_its_edition() {
    let xml = "<domain type='kvm'><name>t</name><memory unit='GiB'>4</memory><vcpu>8</vcpu><os><type arch='x86_64'>hvm</type></os></domain>";
    let eight_sockets = kvmtune::config::read("t.xml", xml).unwrap();
    // Pro counts two of the eight single-core sockets.
    let findings =
        verify_without_host(&eight_sockets, &windows_report("Professional", 2, 2, 10_000_000, 40.0));
    let ver004 = findings.iter().find(|f| f.rule == "VER004").expect("VER004");
    assert!(ver004.why.contains("8 sockets") && ver004.why.contains("at most 2"), "{}", ver004.why);
    assert!(ver004.fix.contains("cores of one socket"), "{}", ver004.fix);
    // Home counts one.
    let home = verify_without_host(&eight_sockets, &windows_report("Core", 1, 1, 10_000_000, 40.0));
    assert!(home.iter().any(|f| f.rule == "VER004" && f.why.contains("at most 1")));
    // Every vCPU counted: nothing.
    let all = verify_without_host(&eight_sockets, &windows_report("ServerStandard", 8, 8, 10_000_000, 40.0));
    assert!(all.iter().all(|f| f.rule != "VER004" && f.rule != "VER006"), "{all:#?}");
}

#[test]
fn an_hpet_clock_is_named_with_the_causes_the_config_has() {
    let no_hv_time = kvmtune::config::read(
        "t.xml",
        "<domain type='kvm'><name>t</name><memory unit='GiB'>4</memory><vcpu>2</vcpu><os><type arch='x86_64'>hvm</type></os></domain>",
    )
    .unwrap();
    let findings =
        verify_without_host(&no_hv_time, &windows_report("Professional", 2, 2, 14_318_180, 3100.0));
    let ver008 = findings.iter().find(|f| f.rule == "VER008").expect("VER008");
    assert!(
        ver008.seen.contains("14318180 Hz: the HPET") && ver008.seen.contains("3.1 us"),
        "{}",
        ver008.seen
    );
    assert!(ver008.why.contains("hv-time is off") && ver008.why.contains("the HPET is on"), "{}", ver008.why);
    // The reference TSC page at 10 MHz, a read in tens of nanoseconds: nothing.
    let fast = verify_without_host(&no_hv_time, &windows_report("Professional", 2, 2, 10_000_000, 35.0));
    assert!(fast.iter().all(|f| f.rule != "VER008"), "{fast:#?}");
}

/// A Linux guest's report of 8 processors under one L3, in `pairs` SMT pairs.
fn eight_processors(pairs: Vec<Vec<u32>>) -> GuestReport {
    let cores = 8 - pairs.len();
    let text = json!({
        "schema_version": 1,
        "program": {"name": "kvmtune-guest", "version": "0.1.0"},
        "os": {"family": "linux", "name": "Debian GNU/Linux 12"},
        "cpuid": {"vendor": "AuthenticAMD", "hypervisor_bit": true, "invariant_tsc": true},
        "topology": {"logical_processors": 8, "cores": cores, "sockets": 1, "numa_nodes": 1,
                     "smt_groups": pairs, "l3_groups": [[0, 1, 2, 3, 4, 5, 6, 7]]},
        "time": {"counter": "clock_gettime(CLOCK_MONOTONIC)"}
    });
    GuestReport::from_json(&text.to_string(), "linux.json").unwrap()
}

/// A domain of 8 vCPUs, vCPU i pinned to host CPU `pins[i]`, `threads` per core.
fn pinned_domain(pins: [u32; 8], threads: u32) -> kvmtune::config::model::VmConfig {
    let cputune: String = pins
        .iter()
        .enumerate()
        .map(|(vcpu, cpu)| format!("<vcpupin vcpu='{vcpu}' cpuset='{cpu}'/>"))
        .collect();
    let cores = 8 / threads;
    kvmtune::config::read(
        "t.xml",
        &format!(
            "<domain type='kvm'><name>t</name><memory unit='GiB'>8</memory><vcpu placement='static'>8</vcpu>\
             <cputune>{cputune}</cputune><os><type arch='x86_64'>hvm</type></os>\
             <cpu mode='host-passthrough'><topology sockets='1' dies='1' cores='{cores}' threads='{threads}'/></cpu></domain>"
        ),
    )
    .unwrap()
}

/// The guest's SMT pairs and L3 group against the host siblings and L3 groups of the CPUs its
/// vCPUs are pinned to, on a Ryzen 9 7950X3D laid out as Linux shows it (16 cores in two CCDs of
/// 8, each its own L3; core n's threads are CPUs n and n+16).
#[test]
fn the_guests_pairs_and_l3_group_are_held_against_the_hosts() {
    let dir = tempfile::tempdir().unwrap();
    kvmtune_testkit::synthetic::SyntheticHost::ryzen_7950x3d().write(dir.path());
    let host = kvmtune::host::probe(&kvmtune::host::Host::snapshot(dir.path()).unwrap());
    let pairs = vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]];
    let rules = |config: &kvmtune::config::model::VmConfig, guest: &GuestReport| -> Vec<(&str, String)> {
        kvmtune::analysis::verify_rules::verify(config, guest, Some(&host))
            .into_iter()
            .filter(|f| ["VER009", "VER010", "VER011"].contains(&f.rule))
            .map(|f| (f.rule, f.seen))
            .collect()
    };

    // Each guest pair on one host core's two threads, all on the first CCD: nothing.
    let matched = pinned_domain([2, 18, 3, 19, 4, 20, 5, 21], 2);
    assert_eq!(rules(&matched, &eight_processors(pairs.clone())), vec![]);

    // Consecutive host CPUs: each pair is two host cores, and CPUs 8 and 9 are the second CCD.
    let consecutive = pinned_domain([2, 3, 4, 5, 6, 7, 8, 9], 2);
    let found = rules(&consecutive, &eight_processors(pairs.clone()));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "VER009");
    assert!(found[0].1.contains("guest processors 0-1 on host CPUs 2-3"), "{}", found[0].1);
    assert_eq!(found[1].0, "VER010");
    assert!(found[1].1.contains("host CPUs 2-9 (2 host L3 groups)"), "{}", found[1].1);

    // The guest sees no pairs (threads='1') while its vCPUs hold both threads of host cores.
    let siblings_as_cores = pinned_domain([2, 18, 3, 19, 4, 20, 5, 21], 1);
    let found = rules(&siblings_as_cores, &eight_processors(vec![]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].1.contains("separate cores to the guest: guest processors 0-1 on host CPUs 2,18"),
        "{}",
        found[0].1
    );

    // Groups of one or none, which only a report that is not the program's has, are no pairs
    // (the processors in them are then separate cores to the guest).
    let odd = rules(&matched, &eight_processors(vec![vec![], vec![3]]));
    assert!(odd.iter().all(|(_, seen)| !seen.contains("as one core")), "{odd:?}");
    assert!(odd.iter().any(|(_, seen)| seen.starts_with("separate cores to the guest")), "{odd:?}");

    // The other direction: all eight on the first CCD, the guest seeing two L3 caches (two
    // sockets, say); and the same split matching the host's two CCDs, which is right.
    let two_caches = |mut report: GuestReport| {
        report.topology.l3_groups = vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]];
        report
    };
    let found = rules(&matched, &two_caches(eight_processors(pairs.clone())));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "VER011");
    assert!(
        found[0].1.contains("guest processors 0-7 on host CPUs 2-5,18-21 (2 guest L3 groups)"),
        "{}",
        found[0].1
    );
    let one_ccd_each = pinned_domain([2, 18, 3, 19, 8, 24, 9, 25], 2);
    assert_eq!(rules(&one_ccd_each, &two_caches(eight_processors(pairs.clone()))), vec![]);

    // Without the host's facts there is nothing to hold them against.
    assert!(
        kvmtune::analysis::verify_rules::verify(&consecutive, &eight_processors(pairs), None)
            .iter()
            .all(|f| !["VER009", "VER010", "VER011"].contains(&f.rule))
    );
}

/// VER012 on the real KVM guest of the kvm list (an Intel host), whose recommendations
/// (0x4e2c) have UseApicMsrs set, against hosts with APIC virtualization on and off; the Azure
/// guest's (0x360e24) have it clear.
#[test]
fn apic_msrs_recommended_where_the_host_virtualizes_the_apic() {
    let host = |intel: bool, apicv: bool| {
        let dir = tempfile::tempdir().unwrap();
        kvmtune_testkit::synthetic::RuleFixtureHost { intel, apicv, hugepages: true, one_l3: false }
            .write(dir.path());
        kvmtune::host::probe(&kvmtune::host::Host::snapshot(dir.path()).unwrap())
    };
    let ver012 = |config: &kvmtune::config::model::VmConfig, guest: &GuestReport, host| {
        kvmtune::analysis::verify_rules::verify(config, guest, Some(host))
            .into_iter()
            .filter(|f| f.rule == "VER012")
            .collect::<Vec<_>>()
    };
    let (avic_on, avic_off) = (host(true, true), host(true, false));
    let guest = kvm_guest_of_the_kvm_list();
    let vapic = config("<vapic state='on'/>");

    let found = ver012(&vapic, &guest, &avic_on);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].configured, "hv-vapic on, hv-avic off; apicv on in this host's KVM");
    assert!(found[0].seen.contains("0x40000004 EAX[3] UseApicMsrs set"), "{}", found[0].seen);
    assert!(found[0].why.contains("unless hv-avic is on"), "{}", found[0].why);
    assert!(ver012(&vapic, &guest, &avic_off).is_empty());
    // AVIC without x2AVIC, and a guest that may use x2APIC: KVM emulates its APIC either way.
    let avic_without_x2avic = host(false, true);
    assert!(ver012(&vapic, &guest, &avic_without_x2avic).is_empty());

    // A config with hv-avic that the guest contradicts: the VM runs on something else.
    let with_avic = config("<vapic state='on'/><avic state='on'/>");
    let found = ver012(&with_avic, &guest, &avic_on);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].why.contains("started from another definition"), "{}", found[0].why);

    // The Azure TDX guest: Microsoft's hypervisor does not recommend the MSRs there.
    let azure = report_of_dump(&dump_from("Florian Weimer"));
    assert!(ver012(&vapic, &azure, &avic_on).is_empty());

    // The Windows guest of hvinfo's README, with virt-install's defaults (vapic, no avic): QEMU
    // recommends the MSRs there too, so on an APICv host each of its EOIs exits.
    let windows = report_of_dump(&dump_from("hvinfo"));
    let virt_install = config(VIRT_INSTALL_WINDOWS_HYPERV);
    assert_eq!(ver012(&virt_install, &windows, &avic_on).len(), 1);
    assert!(ver012(&virt_install, &windows, &avic_off).is_empty());
}
