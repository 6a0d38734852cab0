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
fn every_sample_parses_and_adds_up() {
    let mut parsed = 0;
    let mut totals_checked = 0;
    for path in kvmtune_testkit::corpus_files("exitstats") {
        let text = std::fs::read_to_string(&path).unwrap();
        let profiles = exits::parse(&path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(!profiles.is_empty());
        for profile in profiles {
            assert!(!profile.rows.is_empty(), "{}: no rows", path.display());
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
                assert_eq!(
                    Some(profile.rows.iter().map(|r| r.count).sum()),
                    profile.declared_samples,
                    "{}",
                    path.display()
                );
                totals_checked += 1;
            }
        }
        parsed += 1;
    }
    assert_eq!(parsed, 13);
    assert!(totals_checked >= 14, "only {totals_checked} totals checked");
}

#[test]
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
    assert_eq!(profile.declared_samples, Some(17724));

    let profile = &parsed("intel_lirongqing_perf-kvm-stat-report-event-msr.txt")[0];
    assert_eq!(profile.event, "MSR Access");
    assert_eq!(profile.row("0x6e0:W").unwrap().count, 67007);
}

#[test]
fn bad_input_gives_line_and_column() {
    let error = exits::parse("x.txt", "hello world\n").unwrap_err();
    assert_eq!(error.to_string().split(':').take(3).collect::<Vec<_>>(), ["x.txt", "1", "1"]);
    let garbled = "             VM-EXIT    Samples  Samples%     Time%    Min Time    Max Time         Avg time\n\n                 HLT       lots     4.15%    56.06%      1.71us  15227.79us    341.97us ( +-   8.91% )\n";
    let error = exits::parse("y.txt", garbled).unwrap_err();
    assert!(error.to_string().starts_with("y.txt:3:28: sample count is not a number: `lots`"), "{error}");
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
fn a_profile_saves_to_json_and_reads_back() {
    let (path, text) = sample("intel_huataihuang_win10-guest_perf-kvm-host-stat-live_before-hpet-fix.txt");
    let profiles = exits::parse(&path, &text).unwrap();
    let saved = serde_json::to_string(&profiles).unwrap();
    assert_eq!(exits::parse("saved.json", &saved).unwrap(), profiles);
    let one = serde_json::to_string(&profiles[0]).unwrap();
    assert_eq!(exits::parse("one.json", &one).unwrap(), profiles);
}
