//! Every exit-statistics sample in the corpus parses, and its rows add up to the totals the
//! sample itself prints (`Total Samples`, `Total events handled time`, kvm_stat's `Total`).

use kvmtune::exits::{self, Isa};

/// The profiles a corpus sample parses to.
fn parsed(name: &str) -> Vec<kvmtune::exits::ExitProfile> {
    let (path, text) = sample(name);
    exits::parse(&path, &text).unwrap()
}

fn sample(name: &str) -> (String, String) {
    let path = kvmtune_testkit::corpus().join("exitstats").join(name);
    (path.display().to_string(), std::fs::read_to_string(&path).unwrap())
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn every_sample_parses_and_adds_up() {
    let mut parsed = 0;
    let mut totals_checked = 0;
    for path in kvmtune_testkit::corpus_files("exitstats") {
        let text = std::fs::read_to_string(&path).unwrap();
        let profiles = exits::parse(&path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(!profiles.is_empty());
        for profile in profiles {
            // A table perf printed empty says so, and adds up to its `Total Samples:0`.
            if profile.rows.is_empty() {
                assert_eq!(profile.declared_samples, Some(0), "{}: no rows", path.display());
                assert!(profile.notes.iter().any(|n| n.contains("no rows")), "{}", path.display());
                totals_checked += 1;
                continue;
            }
            if profile.truncated {
                continue;
            }
            let counted: u64 = profile.rows.iter().map(|r| r.count).sum();
            if let Some(samples) = profile.declared_samples
                && profile.format == "perf kvm stat"
            {
                assert_eq!(counted, samples, "{}: rows vs Total Samples", path.display());
                totals_checked += 1;
            }
            if let Some(declared) = profile.declared_time_us {
                // Rows print the mean with two decimals: allow that rounding per sample.
                let summed: f64 = profile.rows.iter().map(|r| r.time_us.unwrap()).sum();
                let tolerance = profile.rows.iter().map(|r| r.count as f64 * 0.005).sum::<f64>() + 0.01;
                assert!(
                    (summed - declared).abs() <= tolerance,
                    "{}: {summed} vs {declared} (±{tolerance})",
                    path.display()
                );
                totals_checked += 1;
            }
            if profile.format == "kvm_stat"
                && profile.rows.iter().all(|r| r.time_us.is_none())
                && text.contains("CurAvg/s")
            {
                // kvm_stat's `Total` adds up the top-level events; children are inside them.
                assert_eq!(
                    Some(profile.rows.iter().filter(|r| r.parent.is_none()).map(|r| r.count).sum()),
                    profile.declared_samples,
                    "{}",
                    path.display()
                );
                totals_checked += 1;
            }
        }
        parsed += 1;
    }
    assert_eq!(parsed, kvmtune_testkit::corpus_files("exitstats").len());
    assert!(totals_checked >= 14, "only {totals_checked} totals checked");
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn formats_and_vendors_are_recognised() {
    let profile = &parsed("intel_huataihuang_win10-guest_perf-kvm-host-stat-live_before-hpet-fix.txt")[0];
    assert_eq!(profile.isa, Isa::Vmx);
    assert_eq!(profile.row("IO_INSTRUCTION").unwrap().count, 55654);
    assert_eq!(profile.declared_samples, Some(70746));

    let profile = &parsed("intel_virt-pvm_perf-kvm-stat-live_unknown-exit-codes.txt")[0];
    assert_eq!(profile.row("UNKNOWN(131072)").unwrap().count, 3622);
    assert_eq!(profile.isa, Isa::Vmx);

    let profiles = parsed("intel_senozhatsky_pte-prefetch_perf-kvm-stat-truncated-rows.txt");
    assert_eq!(profiles.len(), 2);
    assert!(profiles.iter().all(|p| p.truncated));
    assert_eq!(profiles[1].declared_samples, Some(1251546));

    let profile = &parsed("riscv_shenlin-liang_perf-kvm-stat-report_new-format.txt")[0];
    assert_eq!(profile.isa, Isa::RiscV);
    assert_eq!(profile.row("LOAD_ACCESS").unwrap().time_us, Some(671556.2));

    assert_eq!(parsed("arm64_senozhatsky_perf-kvm-stat-report.txt")[0].isa, Isa::Arm64);

    let profile = &parsed("amd_redhat-rhel7-docs_kvm_stat_fragment-whitespace-flattened.txt")[0];
    assert_eq!(profile.isa, Isa::Svm);
    assert_eq!(profile.row("HLT").unwrap().count, 11);
    // The listing's `kvm_exit` counts every exit; kvm_stat's screens print no totals line.
    assert_eq!(kvmtune::analysis::exit_rules::exit_total(profile), 17724);
    assert_eq!(profile.declared_samples, None);

    let profile = &parsed("intel_lirongqing_perf-kvm-stat-report-event-msr.txt")[0];
    assert_eq!(profile.event, "MSR Access");
    assert_eq!(profile.row("0x6e0:W").unwrap().count, 67007);
}

#[test]
fn bad_input_gives_line_and_column() {
    let error = exits::parse("x.txt", "hello world\n").unwrap_err();
    assert_eq!(error.to_string().split(':').take(3).collect::<Vec<_>>(), ["x.txt", "1", "1"]);
    let garbled = "             VM-EXIT    Samples  Samples%     Time%    Min Time    Max Time         Avg time\n\n                 HLT       lots     4.15%    56.06%      1.71us  15227.79us    341.97us ( +-   8.91% )\n";
    // A row that cannot be read costs that row, with a warning that names its place.
    let profile = &exits::parse("y.txt", garbled).unwrap()[0];
    assert!(profile.rows.is_empty());
    assert!(
        profile.notes.iter().any(|n| n.starts_with(
            "warning: y.txt:3: row left out (sample count is not a number at column 28: `lots`)"
        )),
        "{:?}",
        profile.notes
    );
}

#[test]
fn mail_wrapped_rows_are_joined() {
    let wrapped = "VM-EXIT    Samples  Samples%     Time%    Min Time    Max Time         Avg time\n\
                   IO_INSTRUCTION\n      55654    78.67%    42.39%      3.54us     74.94us     13.63us ( +-   0.24% )\n\
                   Total Samples:55654, Total events handled time:758564.02us.\n";
    let profile = &exits::parse("w.txt", wrapped).unwrap()[0];
    assert_eq!(profile.row("IO_INSTRUCTION").unwrap().count, 55654);
}

#[test]
fn domstats_and_query_stats() {
    let domstats = "Domain: 'w'\n  vcpu.current=2\n  vcpu.0.exits.sum=7395\n  vcpu.1.exits.sum=5\n  vcpu.0.io_exits.sum=3\n";
    let profile = &exits::parse("d.txt", domstats).unwrap()[0];
    assert_eq!(profile.row("exits").unwrap().count, 7400);
    let qmp = r#"{"return":[{"provider":"kvm","qom-path":"/machine/unattached/device[0]","stats":[{"name":"exits","value":4261296},{"name":"halt_exits","value":64},{"name":"halt_wait_hist","value":[0,1]}]}]}"#;
    let profile = &exits::parse("q.json", qmp).unwrap()[0];
    assert_eq!(profile.row("exits").unwrap().count, 4261296);
    assert!(profile.row("halt_wait_hist").is_none());
}

#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn a_profile_saves_to_json_and_reads_back() {
    let (path, text) = sample("intel_huataihuang_win10-guest_perf-kvm-host-stat-live_before-hpet-fix.txt");
    let profiles = exits::parse(&path, &text).unwrap();
    let saved = serde_json::to_string(&profiles).unwrap();
    assert_eq!(exits::parse("saved.json", &saved).unwrap(), profiles);
    let one = serde_json::to_string(&profiles[0]).unwrap();
    assert_eq!(exits::parse("one.json", &one).unwrap(), profiles);
}

/// Each corpus file's tables: what they count, how many rows they have and how many exits the
/// shares are taken of. New samples are added here as they join the corpus; a file missing from
/// the list fails the test, so that none is read without its numbers checked.
#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn every_corpus_table_reads_with_its_numbers() {
    use kvmtune::analysis::exit_rules::exit_total;
    // (file, its tables: (what the table counts, its rows, its exits))
    type Tables = &'static [(&'static str, usize, u64)];
    let expected: &[(&str, Tables)] = &[
        ("amd_firecracker-issue-3043_perf-kvm-stat-pid_high-cpu-hlt.txt", &[("VM-EXIT", 4, 40960)]),
        (
            "amd_kernel-bugzilla-203477_windows-l1-hyperv-nested_perf-kvm-stat-live_wrapped-80col.txt",
            &[("VM-EXIT", 13, 151267)],
        ),
        ("amd_redhat-rhel7-docs_kvm_stat_fragment-formatted.txt", &[("kvm_stat events", 5, 17724)]),
        (
            "amd_redhat-rhel7-docs_kvm_stat_fragment-whitespace-flattened.txt",
            &[("kvm_stat events", 17, 17724)],
        ),
        (
            "arm64_leoyan-vcpu-id_perf-kvm-stat-report-vcpu_empty-before-fix.txt",
            &[("VM-EXIT", 0, 0), ("VM-EXIT", 3, 820)],
        ),
        ("arm64_senozhatsky_perf-kvm-stat-report.txt", &[("VM-EXIT", 6, 669155)]),
        ("intel_0xba1a_perf-kvm-stat-report_sysbench.txt", &[("VM-EXIT", 9, 25898)]),
        (
            "intel_arcangeli-retpoline_perf-kvm-stat_ebpf-hlt-and-pipe-loop.txt",
            &[("VM-EXIT", 11, 134241), ("VM-EXIT", 8, 619852)],
        ),
        (
            "intel_arcangeli-retpoline_perf-kvm-stat_hrtimer-rows-quoted-no-header.txt",
            &[("VM-EXIT", 7, 599258)],
        ),
        (
            "intel_bill-sherwood-kvm-list_windows-server-guest_perf-kvm-stat-live_headerless-gmail-wrapped.txt",
            &[("VM-EXIT", 10, 25823)],
        ),
        (
            "intel_evanzhang-rtc-coalesced_win7-guest_perf-kvm-stat-report_time-columns-cut.txt",
            &[("VM-EXIT", 6, 15458018), ("VM-EXIT", 6, 10231241)],
        ),
        (
            "intel_huataihuang_win10-guest_perf-kvm-host-stat-live_after-hpet-fix.txt",
            &[("VM-EXIT", 10, 1981)],
        ),
        (
            "intel_huataihuang_win10-guest_perf-kvm-host-stat-live_before-hpet-fix.txt",
            &[("VM-EXIT", 10, 70746)],
        ),
        (
            "intel_kernel-bugzilla-214423_windows-server-guest_perf-kvm-stat-live_headerless-wrapped.txt",
            &[("VM-EXIT", 10, 25823)],
        ),
        ("intel_lirongqing_perf-kvm-stat-report-event-msr.txt", &[("MSR Access", 3, 68259)]),
        ("intel_pengji-compute-go_openeuler-guest_kvm_stat-pid.txt", &[("kvm_stat events", 15, 1133)]),
        ("intel_pengji-compute-go_openeuler-guest_perf-kvm-stat-report.txt", &[("VM-EXIT", 5, 309)]),
        (
            "intel_senozhatsky_pte-prefetch_perf-kvm-stat-truncated-rows.txt",
            &[("VM-EXIT", 3, 1387305), ("VM-EXIT", 3, 1251546)],
        ),
        ("intel_virt-pvm_perf-kvm-stat-live_unknown-exit-codes.txt", &[("VM-EXIT", 7, 27549)]),
        (
            "intel_wanpengli-exitless-timer_perf-kvm-stat_gmail-wrapped.txt",
            &[("VM-EXIT", 1, 42916), ("VM-EXIT", 1, 6871)],
        ),
        (
            "intel_wanpengli-exitless-timer_perf-kvm-stat_quoted-5-deep.txt",
            &[("VM-EXIT", 1, 42916), ("VM-EXIT", 1, 6871)],
        ),
        ("riscv_shenlin-liang_perf-kvm-stat-report_new-format.txt", &[("VM-EXIT", 8, 49669)]),
        ("s390_raspl-kvm-stat-filter_kvm_stat-summary-regex-filter.txt", &[("kvm_stat events", 2, 276)]),
        (
            "unknown-vendor_penghao-coalesced-pio_win7-guest_perf-kvm-stat-event-ioport.txt",
            &[("IO Port Access", 2, 1205), ("IO Port Access", 2, 1171)],
        ),
        (
            "unknown-vendor_redhat-rhel6-docs_kvm_stat_legacy-debugfs_whitespace-flattened.txt",
            &[("kvm_stat events", 32, 4003074)],
        ),
    ];
    let mut seen = Vec::new();
    for path in kvmtune_testkit::corpus_files("exitstats") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let profiles = exits::parse(&name, &text).unwrap();
        let got: Vec<(String, usize, u64)> =
            profiles.iter().map(|p| (p.event.clone(), p.rows.len(), exit_total(p))).collect();
        seen.push((name, got));
    }
    for (name, got) in &seen {
        let Some((_, tables)) = expected.iter().find(|(n, _)| n == name) else {
            panic!("{name} is not in the expected list: {got:?}")
        };
        let tables: Vec<(String, usize, u64)> =
            tables.iter().map(|(e, r, t)| (e.to_string(), *r, *t)).collect();
        assert_eq!(&tables, got, "{name}");
    }
}
