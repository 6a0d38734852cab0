//! Exit-statistics fixtures written in perf's own layout, so that they go through the same reader
//! as real reports.

/// A classic `perf kvm stat report` table with `(name, count, mean_us)` rows, its shares
/// computed from them, and its totals line. `lines_before_unknown` are written before each
/// `UNKNOWN...` row (perf's "unknown kvm exit code" warnings).
pub fn perf_table(rows: &[(&str, u64, f64)], lines_before_unknown: &[&str]) -> String {
    let mut text = String::from(
        "Analyze events for all VMs, all VCPUs:\n\n             VM-EXIT    Samples  Samples%     Time%    Min Time    Max Time         Avg time\n\n",
    );
    let total: u64 = rows.iter().map(|r| r.1).sum();
    let total_time: f64 = rows.iter().map(|r| r.1 as f64 * r.2).sum();
    for (name, count, mean) in rows {
        for line in lines_before_unknown.iter().filter(|_| name.starts_with("UNKNOWN")) {
            text.push_str(line);
            text.push('\n');
        }
        let share = *count as f64 / total as f64 * 100.0;
        let time_share = *count as f64 * mean / total_time * 100.0;
        text.push_str(&format!(
            "{name:>20} {count:>10} {share:>8.2}% {time_share:>8.2}% {:>9.2}us {:>9.2}us {mean:>9.2}us ( +-   1.00% )\n",
            mean / 2.0,
            mean * 2.0
        ));
    }
    text.push_str(&format!("\nTotal Samples:{total}, Total events handled time:{total_time:.2}us.\n"));
    text
}
