//! `kvmtune exits compare --report FILE`: one self-contained HTML page (inline CSS and SVG, no
//! scripts, nothing fetched) that can be mailed or attached to a bug report: the verdict, a bar
//! chart of the busiest reasons before and after, and the full table.

use std::fmt::Write;

use crate::analysis::exit_compare::{Comparison, ReasonDelta};
use crate::exits::model::saturating_sum;
use crate::output::exits_text::{human_number, share_cell};
use crate::values::escape;

/// Reasons drawn in the chart; the table lists all.
const CHART_REASONS: usize = 12;
const BEFORE_COLOUR: &str = "#b0413e";
const AFTER_COLOUR: &str = "#2e7d4f";

/// Per second when both durations are known, else per profile.
fn rate(count: u64, duration: Option<f64>, per_second: bool) -> f64 {
    match duration.filter(|d| *d > 0.0 && per_second) {
        Some(seconds) => count as f64 / seconds,
        None => count as f64,
    }
}

/// Horizontal bars, two per reason (before above after), scaled to the largest value.
fn chart(comparison: &Comparison) -> String {
    let per_second = comparison.rates_per_second;
    let value = |delta: &ReasonDelta| {
        (
            rate(delta.before, comparison.before_duration_s, per_second),
            rate(delta.after, comparison.after_duration_s, per_second),
        )
    };
    // Rows that are totals or not exits would dwarf the reasons.
    let shown: Vec<&ReasonDelta> = comparison
        .reasons
        .iter()
        .filter(|d| crate::exits::reasons::kind_of(&d.name) == crate::exits::RowKind::Exit)
        .filter(|d| d.before.max(d.after) > 0)
        .take(CHART_REASONS)
        .collect();
    let largest = shown.iter().map(|d| value(d).0.max(value(d).1)).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let (label_width, bar_width, row_height) = (230.0, 520.0, 34.0);
    let height = 40.0 + row_height * shown.len() as f64;
    let unit = if per_second { "exits per second" } else { "exits per profile" };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w}" height="{height}" viewBox="0 0 {w} {height}" role="img" aria-label="{unit} before and after, by reason">"#,
        w = label_width + bar_width + 90.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{label_width}" y="14" class="axis">{unit}, before (top) and after (bottom)</text>"#
    );
    for (index, delta) in shown.iter().enumerate() {
        let y = 28.0 + row_height * index as f64;
        let (before, after) = value(delta);
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{ty}" class="label" text-anchor="end">{name}</text>"#,
            x = label_width - 8.0,
            ty = y + 19.0,
            name = escape::xml(&delta.name)
        );
        for (offset, amount, colour, which) in
            [(0.0, before, BEFORE_COLOUR, "before"), (14.0, after, AFTER_COLOUR, "after")]
        {
            let width = (amount / largest * bar_width).max(if amount > 0.0 { 1.0 } else { 0.0 });
            let _ = writeln!(
                svg,
                r#"<rect class="bar {which}" x="{label_width}" y="{by}" width="{width:.1}" height="12" fill="{colour}"><title>{name} {which}: {amount}</title></rect>"#,
                by = y + offset,
                name = escape::xml(&delta.name),
                amount = human_number(amount)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{tx:.1}" y="{ty}" class="value">{amount}</text>"#,
                tx = label_width + width + 4.0,
                ty = y + offset + 10.0,
                amount = human_number(amount)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn rule_list(heading: &str, rules: &[&'static str]) -> String {
    if rules.is_empty() {
        return String::new();
    }
    let mut out = format!("<h3>{}</h3>\n<ul>\n", escape::xml(heading));
    for id in rules {
        let title = crate::analysis::rule::find(id).map_or("", |rule| rule.meta().title);
        let _ = writeln!(out, "<li><code>{id}</code> {}</li>", escape::xml(title));
    }
    out.push_str("</ul>\n");
    out
}

fn table(comparison: &Comparison) -> String {
    let mut out = String::from(
        "<table>\n<thead><tr><th>reason</th><th>before</th><th>share</th><th>after</th><th>share</th><th>change</th></tr></thead>\n<tbody>\n",
    );
    for delta in comparison.reasons.iter().filter(|d| d.before.max(d.after) > 0) {
        let change = if delta.before == 0 {
            "new".to_string()
        } else {
            format!("x{:.2}", delta.after as f64 / delta.before as f64)
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape::xml(&delta.name),
            delta.before,
            share_cell(delta, delta.before_share),
            delta.after,
            share_cell(delta, delta.after_share),
            change
        );
    }
    let _ = writeln!(
        out,
        "</tbody>\n<tfoot><tr><td>exits</td><td>{}</td><td></td><td>{}</td><td></td><td>x{:.2}{}</td></tr></tfoot>\n</table>",
        comparison.before_exits,
        comparison.after_exits,
        comparison.exit_ratio,
        if comparison.rates_per_second { " /s" } else { "" }
    );
    out
}

/// The start of a report page up to its `<body>`: one look for every report kvmtune writes,
/// with `extra_style` (the page's own verdict colours) after the shared rules.
pub fn page_head(title: &str, extra_style: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="kvmtune {version}">
<title>{title}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; color: #1d1d1f; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.15rem; margin-top: 2rem; }} h3 {{ font-size: 1rem; }}
.verdict {{ font-weight: 600; padding: .4rem .7rem; border-radius: 4px; background: #eee; }}
.chart text {{ font: 12px system-ui, sans-serif; fill: #1d1d1f; }} .chart .axis {{ fill: #555; }}
table {{ border-collapse: collapse; margin-top: 1rem; }} td, th {{ padding: .2rem .7rem; border-bottom: 1px solid #ddd; }}
td:not(:first-child), th:not(:first-child) {{ text-align: right; font-variant-numeric: tabular-nums; }}
.legend span {{ display: inline-block; width: .9em; height: .9em; margin: 0 .3em 0 1em; vertical-align: -.1em; }}
{extra_style}
</style>
</head>
<body>
"#,
        version = env!("CARGO_PKG_VERSION"),
        title = escape::xml(title),
    )
}

/// The whole page: one section per compared pair of profiles.
pub fn render_report(before_label: &str, after_label: &str, comparisons: &[Comparison]) -> String {
    let mut body = String::new();
    for comparison in comparisons {
        let _ = writeln!(
            body,
            "<section>\n<h2>{}</h2>\n<p class=\"verdict {}\">{}</p>",
            escape::xml(&comparison.event),
            comparison.verdict.replace(' ', "-"),
            escape::xml(&comparison.summary)
        );
        if let (Some(before), Some(after)) = (comparison.before_busy_us, comparison.after_busy_us) {
            let _ = writeln!(
                body,
                "<p>Busy handling time (all but HLT): {before:.0} µs before, {after:.0} µs after.</p>"
            );
        }
        body.push_str(&chart(comparison));
        body.push_str(&rule_list("Causes gone after the change", &comparison.resolved));
        body.push_str(&rule_list("Causes new after the change", &comparison.appeared));
        body.push_str(&rule_list(
            "Causes that only stand out more after (their exits did not rise)",
            &comparison.more_visible,
        ));
        body.push_str(&table(comparison));
        body.push_str("</section>\n");
    }
    let total_before = saturating_sum(comparisons.iter().map(|c| c.before_exits));
    format!(
        r#"{head}<h1>VM exits: before and after</h1>
<p>Before: <code>{before}</code> ({total_before} exits in all compared profiles). After: <code>{after}</code>.</p>
<p class="legend"><span style="background:{BEFORE_COLOUR}"></span>before<span style="background:{AFTER_COLOUR}"></span>after</p>
{body}</body>
</html>
"#,
        head = page_head(
            &format!("kvmtune: {before_label} vs {after_label}"),
            ".verdict.better { background: #dcefe2; } .verdict.worse { background: #f6dcdb; }"
        ),
        before = escape::xml(before_label),
        after = escape::xml(after_label),
    )
}
