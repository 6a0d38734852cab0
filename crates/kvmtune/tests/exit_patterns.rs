//! The exit patterns (EXIT013-EXIT017, EXIT026, EXIT028): each fires on a table built to its description and
//! stays quiet on the near miss that differs in the one thing it reads, also with the config
//! and host facts that decide it; none reads an absence from a table cut to its top rows. The tables go through the same reader as real reports:
//! as perf prints them, as a mail reply quotes and wraps them, and as a forum post fences them
//! with tabs and CRLF.

use kvmtune::analysis::exit_diagnosis::{diagnose, diagnose_with};
use kvmtune::analysis::exit_patterns::ExitContext;
use kvmtune::analysis::exit_rules::{ExitFinding, Guest};
use kvmtune::config::model::VmConfig;
use kvmtune::exits;
use kvmtune::host::{Host, HostFacts};
use kvmtune::knowledge::hyperv::Hv;
use kvmtune_testkit::exit_tables::perf_table;
use kvmtune_testkit::synthetic::RuleFixtureHost;

/// A perf kvm stat table with `(name, count, mean_us)` rows.
fn table(rows: &[(&str, u64, f64)]) -> String {
    perf_table(rows, &[])
}

/// The same table as a mail reply: quoted, every line wrapped at 64 columns.
fn as_mail_reply(text: &str) -> String {
    let mut out = String::from("On Monday you wrote:\n");
    for line in text.lines() {
        let mut current = String::new();
        for word in line.split_whitespace() {
            if current.len() + word.len() + 1 > 64 {
                out.push_str(&format!("> {current}\n"));
                current.clear();
            }
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(word);
        }
        out.push_str(&format!("> {current}\n"));
    }
    out
}

/// The same table as a forum post: in a code fence, columns separated by tabs, CRLF line ends.
fn as_forum_post(text: &str) -> String {
    let mut out = String::from("my exits:\r\n```\r\n");
    for line in text.lines() {
        out.push_str(&line.split_whitespace().collect::<Vec<_>>().join("\t"));
        out.push_str("\r\n");
    }
    out.push_str("```\r\n");
    out
}

fn findings(text: &str, context: &ExitContext) -> Vec<ExitFinding> {
    let profile = exits::parse("table.txt", text).unwrap().remove(0);
    diagnose_with(&profile, context)
}

fn rules(text: &str, context: &ExitContext) -> Vec<&'static str> {
    findings(text, context).iter().map(|f| f.rule).collect()
}

/// Fires on `text` in each layout, with no config or host.
fn assert_fires(text: &str, rule: &str) {
    for layout in [text.to_string(), as_mail_reply(text), as_forum_post(text)] {
        let fired = rules(&layout, &ExitContext::default());
        assert!(fired.contains(&rule), "{rule} did not fire: {fired:?}\n{layout}");
    }
}

fn config(xml: &str) -> VmConfig {
    kvmtune::config::read("vm.xml", xml).unwrap()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/check/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn host(name: &str) -> (HostFacts, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    RuleFixtureHost::named(name).unwrap().write(dir.path());
    (kvmtune::host::probe(&Host::snapshot(dir.path()).unwrap()), dir)
}

#[test]
fn apicv_inhibited_by_synic() {
    let inhibited = table(&[
        ("MSR_WRITE", 4000, 2.0),
        ("EXTERNAL_INTERRUPT", 2000, 2.0),
        ("VMCALL", 300, 3.0),
        ("HLT", 3000, 300.0),
        ("EPT_VIOLATION", 700, 5.0),
    ]);
    assert_fires(&inhibited, "EXIT013");
    // It replaces "isolate host interrupts", which cures nothing here.
    let plain = rules(&inhibited, &ExitContext::default());
    assert!(!plain.contains(&"EXIT005") && !plain.contains(&"EXIT003"), "{plain:?}");
    // No hypercalls: no enlightenments, so no SynIC to blame.
    let bare = table(&[
        ("MSR_WRITE", 4000, 2.0),
        ("EXTERNAL_INTERRUPT", 2000, 2.0),
        ("HLT", 3300, 300.0),
        ("EPT_VIOLATION", 700, 5.0),
    ]);
    assert!(!rules(&bare, &ExitContext::default()).contains(&"EXIT013"));
    // A config with hv-avic already, or a host without APICv/AVIC, is not this.
    let with_avic = config(&fixture("HV008.good.xml"));
    assert!(with_avic.hyperv.is_on(Hv::Avic));
    assert!(
        !rules(&inhibited, &ExitContext { config: Some(&with_avic), host: None, ..ExitContext::default() })
            .contains(&"EXIT013")
    );
    let (apicv_off, _guard) = host("amd-apicv-off");
    assert!(
        !rules(&inhibited, &ExitContext { config: None, host: Some(&apicv_off), ..ExitContext::default() })
            .contains(&"EXIT013")
    );
    let synic_only = config(&fixture("HV008.bad.xml"));
    assert!(
        rules(&inhibited, &ExitContext { config: Some(&synic_only), host: None, ..ExitContext::default() })
            .contains(&"EXIT013")
    );
}

#[test]
fn hpet_in_use() {
    let hpet = table(&[
        ("EPT_MISCONFIG", 6000, 8.0),
        ("HLT", 3000, 300.0),
        ("IO_INSTRUCTION", 100, 10.0),
        ("MSR_READ", 900, 2.0),
    ]);
    assert_fires(&hpet, "EXIT014");
    assert!(!rules(&hpet, &ExitContext::default()).contains(&"EXIT001"), "EXIT014 replaces EXIT001");
    // A Windows reading: with the guest unknown it also says what the table is in a Linux
    // guest (what EXIT001 says there), and what tells the two apart; for Windows it does not.
    let unknown = findings(&hpet, &ExitContext::default());
    let hpet_finding = unknown.iter().find(|f| f.rule == "EXIT014").unwrap();
    assert!(
        hpet_finding.explanation.contains("If the guest is Linux: MMIO exits in a Linux guest"),
        "{}",
        hpet_finding.explanation
    );
    assert!(hpet_finding.explanation.contains("--guest"));
    assert!(
        hpet_finding.fix.starts_with("Windows: enable hv-time")
            && hpet_finding.fix.contains(". Linux: use virtio")
    );
    let windows = ExitContext { guest: Guest::Windows, ..ExitContext::default() };
    let said = findings(&hpet, &windows);
    let for_windows = said.iter().find(|f| f.rule == "EXIT014").unwrap();
    assert!(!for_windows.explanation.contains("Linux"), "{}", for_windows.explanation);
    // Hypercalls mean enlightenments: the MMIO is something else.
    let enlightened = table(&[
        ("EPT_MISCONFIG", 6000, 8.0),
        ("HLT", 3000, 300.0),
        ("VMCALL", 200, 3.0),
        ("MSR_READ", 800, 2.0),
    ]);
    assert!(!rules(&enlightened, &ExitContext::default()).contains(&"EXIT014"));
    // A config whose HPET is already off is not on the HPET.
    let hpet_off = config(&fixture("TIME005.bad.xml"));
    assert!(
        !rules(&hpet, &ExitContext { config: Some(&hpet_off), host: None, ..ExitContext::default() })
            .contains(&"EXIT014")
    );
}

/// A table a poster cut to its top rows: the reasons left out may be the hypercalls whose
/// absence EXIT014 reads, so no pattern reads an absence there, and the reason shown keeps its
/// own rule, with its share of the whole table as perf printed it. The row is the one posted in
/// github.com/cloud-hypervisor/cloud-hypervisor/issues/3237: the passed-through SR-IOV VF of a
/// guest running redis, whose BAR holding the MSI-X table that VMM trapped, so the device's
/// register accesses went out to userspace. Cloud Hypervisor has no HPET; kvmtune read the
/// row as Windows keeping time with one.
#[test]
fn a_table_cut_to_its_top_rows_reads_no_absence() {
    let posted = "**Perf kvm stat live**\nEPT_MISCONFIG       1585    96.53%    99.98%      3.80us   7501.77us    176.44us ( +-  13.77% )\n";
    let profile = exits::parse("posted.txt", posted).unwrap().remove(0);
    assert!(profile.rows_cut() && !profile.shows_every_reason());
    assert!(profile.notes.iter().any(|n| n.contains("hold 96.53% of the samples")), "{:?}", profile.notes);
    let found = diagnose(&profile);
    assert_eq!(found.iter().map(|f| f.rule).collect::<Vec<_>>(), ["EXIT001"]);
    let share = found[0].reasons[0].exit_share;
    assert!((share - 0.9653).abs() < 0.0005, "{share}");
    assert!(found[0].explanation.contains("MSI-X table"), "{}", found[0].explanation);

    // The near miss: the same row with the rest of its table, and no hypercall in it.
    let whole = table(&[("EPT_MISCONFIG", 1585, 176.44), ("HLT", 57, 10.0)]);
    assert_fires(&whole, "EXIT014");
    // Rounding is no cut: three rows of 33.33% are the whole table.
    let thirds = table(&[("EPT_MISCONFIG", 1000, 8.0), ("HLT", 1000, 300.0), ("MSR_READ", 1000, 2.0)]);
    assert!(thirds.contains("33.33%"));
    let profile = exits::parse("thirds.txt", &thirds).unwrap().remove(0);
    assert!(!profile.rows_cut() && profile.shows_every_reason());
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn rtc_fallback_on_the_corpus_pair_and_its_near_misses() {
    let read = |name: &str| {
        let path = kvmtune_testkit::corpus().join("exitstats").join(name);
        std::fs::read_to_string(path).unwrap()
    };
    let before = read("intel_huataihuang_win10-guest_perf-kvm-host-stat-live_before-hpet-fix.txt");
    let after = read("intel_huataihuang_win10-guest_perf-kvm-host-stat-live_after-hpet-fix.txt");
    assert_fires(&before, "EXIT015");
    assert!(!rules(&after, &ExitContext::default()).contains(&"EXIT015"));
    // With the config at hand it takes the HPET off without hv-stimer (TIME005's case).
    let hpet_off = config(&fixture("TIME005.bad.xml"));
    let fired =
        findings(&before, &ExitContext { config: Some(&hpet_off), host: None, ..ExitContext::default() });
    let rtc = fired.iter().find(|f| f.rule == "EXIT015").expect("fires with the config");
    assert!(rtc.evidence.as_deref().is_some_and(|e| e.contains("without hv-stimer")));
    let hpet_on = config(&fixture("TIME006.bad.xml"));
    assert!(
        !rules(&before, &ExitContext { config: Some(&hpet_on), host: None, ..ExitContext::default() })
            .contains(&"EXIT015")
    );
}

#[test]
fn ipis_by_icr_writes() {
    let icr = table(&[("APIC_WRITE", 3500, 2.0), ("HLT", 4000, 300.0), ("MSR_WRITE", 2500, 2.0)]);
    assert_fires(&icr, "EXIT016");
    assert!(!rules(&icr, &ExitContext::default()).contains(&"EXIT004"), "EXIT016 replaces EXIT004");
    let paravirtual = table(&[("APIC_WRITE", 3500, 2.0), ("HLT", 4000, 300.0), ("VMCALL", 2500, 2.0)]);
    assert!(!rules(&paravirtual, &ExitContext::default()).contains(&"EXIT016"));
    // A config with hv-ipi and the hypervisor bit visible sends IPIs by hypercall.
    let with_ipi = config(&fixture("HV008.good.xml"));
    assert!(with_ipi.hyperv.is_on(Hv::Ipi));
    assert!(
        !rules(&icr, &ExitContext { config: Some(&with_ipi), host: None, ..ExitContext::default() })
            .contains(&"EXIT016")
    );
    let hidden = config(&fixture("HV010.bad.xml"));
    let fired = findings(&icr, &ExitContext { config: Some(&hidden), host: None, ..ExitContext::default() });
    assert!(
        fired
            .iter()
            .any(|f| f.rule == "EXIT016"
                && f.evidence.as_deref().unwrap().contains("hides the hypervisor bit"))
    );
}

#[test]
fn idle_host_cpu_burn_needs_polling_and_shared_cpus() {
    let idle = table(&[("HLT", 9000, 400.0), ("MSR_WRITE", 600, 2.0), ("VMCALL", 400, 3.0)]);
    let (polling, _guard) = host("amd");
    let unpinned_xml: String = fixture("HV008.good.xml")
        .lines()
        .filter(|l| !l.contains("<vcpupin"))
        .map(|l| format!("{l}\n"))
        .collect();
    let unpinned = config(&unpinned_xml);
    let context = ExitContext { config: Some(&unpinned), host: Some(&polling), ..ExitContext::default() };
    assert!(rules(&idle, &context).contains(&"EXIT017"));
    assert!(rules(&as_mail_reply(&idle), &context).contains(&"EXIT017"));
    assert!(!rules(&idle, &context).contains(&"EXIT006"), "EXIT017 replaces the idle note");
    // Without both facts there is nothing to go on; pinned vCPUs or no polling are fine.
    assert!(!rules(&idle, &ExitContext::default()).contains(&"EXIT017"));
    let pinned = config(&fixture("HV008.good.xml"));
    assert!(
        !rules(&idle, &ExitContext { config: Some(&pinned), host: Some(&polling), ..ExitContext::default() })
            .contains(&"EXIT017")
    );
    let mut no_polling = polling.clone();
    if let kvmtune::host::Fact::Known(modules) = &mut no_polling.kvm.modules {
        modules.parameters.get_mut("kvm").unwrap().insert("halt_poll_ns".into(), "0".into());
    }
    assert!(
        !rules(
            &idle,
            &ExitContext { config: Some(&unpinned), host: Some(&no_polling), ..ExitContext::default() }
        )
        .contains(&"EXIT017")
    );
}

/// kvm_stat while a guest hung, as a reply on the kvm and linux-mm lists quoted it (thread
/// "qemu-kvm loops after kernel udpate", September 2012,
/// lore.kernel.org/all/20120918124646.02aaee4f.akpm@linux-foundation.org): Avi Kivity's answer
/// was "Strange, it's unable to fault in the very first page", and the cause a host mm patch.
const HUNG_ON_A_PAGE: &str = "\
> >> kvm statistics
> >>
> >>   kvm_exit                                  13798699  330708
> >>   kvm_entry                                 13799110  330708
> >>   kvm_page_fault                            13793650  330604
> >>   kvm_exit(EXCEPTION_NMI)                    6188458  330604
> >>   kvm_exit(EXTERNAL_INTERRUPT)                  2169     105
> >>   kvm_exit(TPR_BELOW_THRESHOLD)                   82       0
> >>   kvm_exit(IO_INSTRUCTION)                         6       0
> >
> > Strange, it's unable to fault in the very first page.
";

/// A kvm_stat table with `(name, total, per second)` rows.
fn kvm_stat(rows: &[(&str, u64, u64)]) -> String {
    let mut out = String::from("kvm statistics\n\n");
    for (name, total, rate) in rows {
        out.push_str(&format!("  {name:<40} {total:>10} {rate:>7}\n"));
    }
    out
}

#[test]
fn a_vcpu_faulting_on_one_page_is_a_loop_not_a_load() {
    let fired = findings(HUNG_ON_A_PAGE, &ExitContext::default());
    let exit026 = fired.iter().find(|f| f.rule == "EXIT026").expect("EXIT026 on the hung guest's kvm_stat");
    let evidence = exit026.evidence.as_deref().unwrap();
    assert!(evidence.contains("330604/s") && evidence.contains("kvm_page_fault"), "{evidence}");
    // The counts since kvm_stat began say 44.8%: the rates, what the poster watched, say all.
    assert!(evidence.contains("100.0%"), "{evidence}");
    assert_eq!(exit026.severity, kvmtune::analysis::Severity::Error);
    assert!(rules(&as_forum_post(HUNG_ON_A_PAGE), &ExitContext::default()).contains(&"EXIT026"));

    // Near misses. The same exceptions at a rate a working guest has (a few thousand a second).
    let few = kvm_stat(&[
        ("kvm_exit", 3105, 3105),
        ("kvm_exit(EXCEPTION_NMI)", 3000, 3000),
        ("kvm_exit(EXTERNAL_INTERRUPT)", 105, 105),
    ]);
    assert!(!rules(&few, &ExitContext::default()).contains(&"EXIT026"));
    // A busy guest under shadow paging: many page-fault intercepts, and beside them task
    // switches, halts and I/O. It is slow, not stuck.
    let shadow = kvm_stat(&[
        ("kvm_exit", 405000, 405000),
        ("kvm_exit(EXCEPTION_NMI)", 330000, 330000),
        ("kvm_exit(CR_ACCESS)", 40000, 40000),
        ("kvm_exit(INVLPG)", 20000, 20000),
        ("kvm_exit(HLT)", 10000, 10000),
        ("kvm_exit(IO_INSTRUCTION)", 5000, 5000),
    ]);
    assert!(!rules(&shadow, &ExitContext::default()).contains(&"EXIT026"));
    // A perf report counts since the recording began and gives no rate: no loop can be told.
    let counted = table(&[("EXCEPTION_NMI", 6_188_458, 1.0), ("EXTERNAL_INTERRUPT", 2169, 1.0)]);
    assert!(!rules(&counted, &ExitContext::default()).contains(&"EXIT026"));
}

/// Patterns read the absence of reasons, so partial counters (KVM stats, an MSR table) never
/// trigger them; an MSR table has rules of its own.
#[test]
fn patterns_need_a_table_of_every_reason() {
    let msr_table = "MSR Access Samples  Samples% Time%  Min Time Max Time  Avg time\n\n  0x830:W   67007  98.17%   98.31%  0.59us   10.69us  0.90us ( +-  0.10% )\n  0x6e0:W    1252   1.83%    1.69%  0.53us  108.34us  0.82us ( +- 11.02% )\n\nTotal Samples:68259, Total events handled time:61150.95us.\n";
    let profile = exits::parse("msr.txt", msr_table).unwrap().remove(0);
    assert!(!profile.lists_every_reason());
    // Only the side table's own rule (IPIs through the x2APIC ICR), never a pattern.
    let fired: Vec<&str> = diagnose(&profile).iter().map(|f| f.rule).collect();
    assert_eq!(fired, ["EXIT023"]);
}

/// `compare` calls a cause new after only where its exits rose; one that stands out only
/// because everything else fell is said to stand out more.
#[test]
fn compare_does_not_call_a_cause_new_when_only_its_share_rose() {
    use kvmtune::analysis::exit_compare::compare;
    let before = exits::parse(
        "b",
        &table(&[("IO_INSTRUCTION", 9000, 10.0), ("MSR_READ", 900, 2.0), ("HLT", 100, 300.0)]),
    )
    .unwrap()
    .remove(0);
    let after = exits::parse(
        "a",
        &table(&[("IO_INSTRUCTION", 100, 10.0), ("MSR_READ", 900, 2.0), ("HLT", 100, 300.0)]),
    )
    .unwrap()
    .remove(0);
    let comparison = compare(&before, &after);
    assert!(comparison.more_visible.contains(&"EXIT003"), "{comparison:?}");
    assert!(!comparison.appeared.contains(&"EXIT003"));
    // The same cause with its exits doubled is new.
    let worse = exits::parse(
        "w",
        &table(&[("IO_INSTRUCTION", 100, 10.0), ("MSR_READ", 1800, 2.0), ("HLT", 100, 300.0)]),
    )
    .unwrap()
    .remove(0);
    assert!(compare(&before, &worse).appeared.contains(&"EXIT003"));
}

/// A vCPU that makes MMIO exits and nothing else the guest causes is spinning on a device
/// (EXIT028); the host's own interrupts beside it do not hide that. Near misses: a guest that
/// also arms its timer and halts (an OS at work), too few exits to matter, a perf report's
/// counts without a rate, and tracepoint counts that count one exit twice.
#[test]
fn a_vcpu_doing_nothing_but_mmio_is_thrash_not_load() {
    let thrash = kvm_stat(&[
        ("kvm_exit", 5300, 5300),
        ("kvm_exit(EPT_MISCONFIG)", 5000, 5000),
        ("kvm_exit(EXTERNAL_INTERRUPT)", 300, 300),
    ]);
    let fired = findings(&thrash, &ExitContext::default());
    let exit028 = fired.iter().find(|f| f.rule == "EXIT028").expect("EXIT028 on the thrash");
    let evidence = exit028.evidence.as_deref().unwrap();
    assert!(evidence.contains("5000/s per vCPU") && evidence.contains("100.0%"), "{evidence}");
    assert!(rules(&as_forum_post(&thrash), &ExitContext::default()).contains(&"EXIT028"));

    let at_work = kvm_stat(&[
        ("kvm_exit", 5600, 5600),
        ("kvm_exit(EPT_MISCONFIG)", 5000, 5000),
        ("kvm_exit(MSR_WRITE)", 250, 250),
        ("kvm_exit(HLT)", 50, 50),
        ("kvm_exit(EXTERNAL_INTERRUPT)", 300, 300),
    ]);
    assert!(!rules(&at_work, &ExitContext::default()).contains(&"EXIT028"));
    let few = kvm_stat(&[("kvm_exit", 500, 500), ("kvm_exit(EPT_MISCONFIG)", 500, 500)]);
    assert!(!rules(&few, &ExitContext::default()).contains(&"EXIT028"));
    let counted = table(&[("EPT_MISCONFIG", 9_000_000, 5.0), ("EXTERNAL_INTERRUPT", 1000, 1.0)]);
    assert!(!rules(&counted, &ExitContext::default()).contains(&"EXIT028"));

    // KVM's own counters over a recording: `exits` less `irq_exits` is what the guest made.
    // Where MMIO is all of it, thrash; where a sixth of it has no counter of its own (MSR,
    // APIC or EPT exits, which KVM's statistics do not break out), an OS at work.
    let stats = |exits: u64, mmio: u64, irq: u64| {
        let mut profile = exits::ExitProfile::new("kvmtune record", "KVM vCPU stats (QMP query-stats)");
        profile.duration_s = Some(1.0);
        for (name, count) in [("exits", exits), ("mmio_exits", mmio), ("irq_exits", irq), ("halt_exits", 0)] {
            profile.rows.push(exits::ExitRow::per_vcpu(name.to_string(), vec![count]));
        }
        diagnose(&profile).iter().map(|f| f.rule).collect::<Vec<_>>()
    };
    assert!(stats(5300, 5000, 300).contains(&"EXIT028"));
    assert!(!stats(6300, 5000, 300).contains(&"EXIT028"));

    // The same exits as tracepoint counts over a recording: KVM_EXIT_MMIO and kvm_mmio would
    // count each one twice, so no share is taken of them.
    let mut traced = exits::ExitProfile::new("kvmtune record", "KVM tracepoints");
    traced.duration_s = Some(1.0);
    for (name, count) in [("exits", 5000), ("KVM_EXIT_MMIO", 5000), ("kvm_mmio", 5000)] {
        traced.rows.push(exits::ExitRow::count_only(name.to_string(), count, 0));
    }
    assert!(!diagnose(&traced).iter().any(|f| f.rule == "EXIT028"));
}

/// kvm_stat of an idle Linux guest whose kernel command line had `nohz=off`, and of the same
/// guest on an openEuler kernel, as published (github.com/Martins3/Martins3.github.io,
/// docs/kvm/fun/host-freq.md at 5187fd7ac17e): the first kept the host's CPUs at their top
/// frequency though they did little; `perf top -e kvm:msr` named the TSC deadline, the guest
/// showed 32,000 hrtimer expiries a second from its idle loop, and removing `nohz=off` cured
/// it. The second table's stray `G` is the post's.
const NOHZ_OFF: &str = "\
kvm statistics - summary

 Event                                         Total %Total CurAvg/s
 kvm_exit                                      13988   16.4    66300
 kvm_entry                                     13985   16.4    66300
 kvm_hv_timer_state                            13938   16.4    66120
 kvm_msr                                        6985    8.2    33160
 kvm_pv_tlb_flush                               6969    8.2    33045
 kvm_apicv_accept_irq                           6961    8.2    33035
 kvm_apic_accept_irq                            6960    8.2    33035
 kvm_vcpu_wakeup                                6962    8.2    33030
 kvm_wait_lapic_expire                          6952    8.2    32990
 kvm_ioapic_set_irq                              440    0.5     2049
 kvm_set_irq                                     440    0.5     2049
 kvm_pic_set_irq                                 440    0.5     2049
 kvm_halt_poll_ns                                 12    0.0       60
 kvm_msi_set_irq                                   6    0.0       30
 kvm_fast_mmio                                     6    0.0       30
 kvm_apic_ipi                                      3    0.0       15
 kvm_apic                                          3    0.0       15
 kvm_unmap_hva_range                               1    0.0        5
 Total                                         85051          403315
";

const OPENEULER_KERNEL: &str = "\
kvm statistics - summary

 Event                                         Total %Total CurAvg/s
 kvm_ioapic_set_irq                             9044   20.6     2004
 kvm_set_irq                                    9044   20.6     2004
 kvm_pic_set_irq                                9044   20.6     2004
 kvm_exit                                       3343    7.6      645
 kvm_entry                                      3343    7.6      645
 kvm_hv_timer_state                             2959    6.8      570
 kvm_msr                                G        2369    5.4      452
 kvm_apicv_accept_irq                            787    1.8      152
 kvm_apic_accept_irq                             787    1.8      152
 kvm_vcpu_wakeup                                 715    1.6      139
 kvm_pv_tlb_flush                                605    1.4      122
 kvm_apic_ipi                                    488    1.1      100
 kvm_apic                                        488    1.1      100
 kvm_halt_poll_ns                                338    0.8       72
 kvm_wait_lapic_expire                           279    0.6       46
 kvm_page_fault                                  168    0.4       37
 kvm_msi_set_irq                                  20    0.0        7
 kvm_ple_window_update                             4    0.0        0
 kvm_unmap_hva_range                               2    0.0        0
 Total                                         43827            9250
";

/// `config` with `vcpus` vCPUs and no pinning.
fn with_vcpus(vcpus: u32) -> VmConfig {
    let xml: String = fixture("HV008.good.xml")
        .lines()
        .filter(|l| !l.contains("<vcpupin"))
        .map(|l| {
            if l.contains("<vcpu ") {
                format!("  <vcpu placement='static'>{vcpus}</vcpu>\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    config(&xml)
}

/// Each MSR exit a timer that expires and wakes a halted vCPU (EXIT030): the published idle
/// guest with `nohz=off` fires it, in its place of EXIT003's generic MSR reading, in every
/// layout and for either guest; the same guest's tickless kernel stays quiet. With the vCPUs
/// counted, the rate per vCPU tells a tick from a timer storm, and a large VM's modest
/// per-vCPU rate is no finding. Near misses: timers that are armed but rarely expire (rearmed
/// before their deadline, as a busy guest does), and timers that expire on vCPUs already
/// running (no halt to end).
#[test]
fn idle_vcpus_woken_by_their_own_timers() {
    for layout in [NOHZ_OFF.to_string(), as_mail_reply(NOHZ_OFF), as_forum_post(NOHZ_OFF)] {
        for guest in [Guest::Unknown, Guest::Linux, Guest::Windows] {
            let fired = rules(&layout, &ExitContext { guest, ..ExitContext::default() });
            assert!(
                fired.contains(&"EXIT030") && !fired.contains(&"EXIT003"),
                "{guest:?}: {fired:?}\n{layout}"
            );
        }
    }
    let fired = findings(NOHZ_OFF, &ExitContext::default());
    let exit030 = fired.iter().find(|f| f.rule == "EXIT030").unwrap();
    let evidence = exit030.evidence.as_deref().unwrap();
    for expected in ["33160/s", "32990/s", "33030/s", "a 1000 Hz tick on 33 vCPUs"] {
        assert!(evidence.contains(expected), "{expected}: {evidence}");
    }
    assert!(exit030.fix.contains("nohz=off"), "{}", exit030.fix);
    assert!(!rules(OPENEULER_KERNEL, &ExitContext::default()).contains(&"EXIT030"));

    let per_vcpu = |vcpus: u32| {
        let config = with_vcpus(vcpus);
        let fired = findings(NOHZ_OFF, &ExitContext { config: Some(&config), ..ExitContext::default() });
        fired.iter().find(|f| f.rule == "EXIT030").map(|f| f.evidence.clone().unwrap())
    };
    let ticking = per_vcpu(32).expect("32 vCPUs at about 1000/s each");
    assert!(ticking.contains("1031/s each, the rate of a periodic tick"), "{ticking}");
    let storm = per_vcpu(4).expect("4 vCPUs at 8248/s each");
    assert!(storm.contains("8248/s each, more than any periodic tick"), "{storm}");
    assert_eq!(per_vcpu(160), None, "206/s on each of 160 vCPUs is below a 250 Hz tick");

    let rearmed = NOHZ_OFF.replace(
        " kvm_wait_lapic_expire                          6952    8.2    32990",
        " kvm_wait_lapic_expire                           700    0.8     3300",
    );
    let fired = rules(&rearmed, &ExitContext::default());
    assert!(!fired.contains(&"EXIT030") && fired.contains(&"EXIT003"), "{fired:?}");
    let running = NOHZ_OFF.replace(
        " kvm_vcpu_wakeup                                6962    8.2    33030",
        " kvm_vcpu_wakeup                                 300    0.3     1500",
    );
    assert!(!rules(&running, &ExitContext::default()).contains(&"EXIT030"));
}

/// The recorder counts the tracepoints kvm_stat reads (kvm_msr, kvm_wait_lapic_expire,
/// kvm_vcpu_wakeup) beside KVM's own `exits` statistic, so one second of the two published
/// screens, counted as `exits record` counts them, reads as the screens do: EXIT030 on the
/// nohz=off guest and not on its tickless kernel. The recorder's tracepoint table has rows that
/// overlap (`KVM_EXIT_IO` is part of `kvm_pio`), which keep the patterns that read every reason
/// off it; EXIT030 reads only the MSR exits against the total, and the events.
#[test]
fn the_recorders_tracepoint_counts_of_the_published_screens_read_as_the_screens() {
    use kvmtune::exits::record::{Sample, profiles_between};
    let recorded = |exits: u64, msr: u64, expired: u64, woken: u64| {
        let counted = |values: [u64; 6]| -> Sample {
            ["kvm_exit", "kvm_msr", "kvm_wait_lapic_expire", "kvm_vcpu_wakeup", "kvm_pio", "KVM_EXIT_IO"]
                .iter()
                .zip(values)
                .map(|(name, n)| (name.to_string(), vec![n]))
                .collect()
        };
        let stats = |n: u64| -> Sample { [("exits".to_string(), vec![n])].into() };
        let profiles = profiles_between(
            (&stats(0), &counted([0; 6])),
            (&stats(exits), &counted([exits, msr, expired, woken, 0, 0])),
            1.0,
        );
        let tracepoints = profiles.into_iter().find(|p| p.event == "KVM tracepoints").unwrap();
        assert!(!tracepoints.counts_each_exit_once(), "the overlapping rows are there");
        tracepoints
    };
    // CurAvg/s of the two screens: kvm_exit, kvm_msr, kvm_wait_lapic_expire, kvm_vcpu_wakeup.
    let nohz_off = recorded(66300, 33160, 32990, 33030);
    let fired = diagnose(&nohz_off);
    let exit030 = fired.iter().find(|f| f.rule == "EXIT030").expect("EXIT030 on the nohz=off counts");
    let evidence = exit030.evidence.as_deref().unwrap();
    for expected in ["33160/s", "32990/s", "33030/s"] {
        assert!(evidence.contains(expected), "{expected}: {evidence}");
    }
    assert!(!fired.iter().any(|f| f.rule == "EXIT003"), "superseded: {fired:?}");
    let tickless = recorded(645, 452, 46, 139);
    assert!(!diagnose(&tickless).iter().any(|f| f.rule == "EXIT030"));
    // A KVM that does not trace timer expiries (PVM) leaves EXIT030 nothing to read.
    let untraced = recorded(66300, 33160, 0, 33030);
    assert!(!diagnose(&untraced).iter().any(|f| f.rule == "EXIT030"));
}

/// An openEuler guest's `kvm_stat -p` in the corpus: 58 MSR exits, 10 timer expiries and 21
/// wakeups a second, a tickless guest at rest, which EXIT030 leaves alone.
#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn a_tickless_guest_at_rest_is_no_timer_wakeup_finding() {
    let path =
        kvmtune_testkit::corpus().join("exitstats/intel_pengji-compute-go_openeuler-guest_kvm_stat-pid.txt");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains("kvm_wait_lapic_expire") && text.contains("kvm_vcpu_wakeup"));
    assert!(!rules(&text, &ExitContext::default()).contains(&"EXIT030"));
}

/// `compare` of the two published kvm_stat tables: kvm_stat's events (interrupts injected,
/// vCPUs woken, timers expiring) are counts, never shares of the exits (the openEuler table
/// has 9044 `kvm_ioapic_set_irq` to 3343 exits, which as a share would be 270%), and
/// `kvm_exit` is the total; only the MSR exits have shares. EXIT030 is gone after.
#[test]
fn compare_shows_kvm_stat_events_as_counts() {
    use kvmtune::analysis::exit_compare::compare;
    let before = exits::parse("before.txt", NOHZ_OFF).unwrap().remove(0);
    let after = exits::parse("after.txt", OPENEULER_KERNEL).unwrap().remove(0);
    let comparison = compare(&before, &after);
    let delta = |name: &str| comparison.reasons.iter().find(|d| d.name == name).unwrap();
    let injected = delta("kvm_ioapic_set_irq");
    assert_eq!(
        (injected.not_a_share, injected.before_share, injected.after_share),
        (Some("event"), None, None)
    );
    assert_eq!(delta("kvm_exit").not_a_share, Some("total"));
    let msr = delta("kvm_msr");
    assert_eq!(msr.not_a_share, None);
    assert!(msr.before_share.is_some_and(|s| (s - 6985.0 / 13988.0).abs() < 1e-9), "{:?}", msr.before_share);
    assert!(comparison.resolved.contains(&"EXIT030"), "{:?}", comparison.resolved);

    let text = kvmtune::output::exits_text::render_comparison(&comparison);
    assert!(!text.contains("270.5%") && !text.contains("100.0%"), "{text}");
    let row = text.lines().find(|l| l.trim_start().starts_with("kvm_ioapic_set_irq")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["kvm_ioapic_set_irq", "440", "event", "9044", "event"]
    );
}
