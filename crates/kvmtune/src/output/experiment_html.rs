//! `kvmtune experiment --report FILE`: one self-contained HTML page (inline CSS and SVG, no
//! scripts, nothing fetched), as `exits compare --report` writes: per measure, each variant's
//! rounds, median and interval drawn on one axis, with the verdict; then every measure's medians
//! side by side and each variant's diagnosis.

use std::fmt::Write;

use crate::analysis::experiment::{Estimate, MeasureSummary, Verdict};
use crate::experiment::ExperimentResult;
use crate::output::exits_html::page_head;
use crate::output::experiment_text::{number, shown_measures, trim, verdict};
use crate::values::escape;

/// One colour per variant, in order (repeating past the last).
const COLOURS: &[&str] = &["#2e6fb0", "#b0413e", "#2e7d4f", "#8a5a00", "#6b3fa0", "#00838f"];
/// A measure whose values span more than this factor is drawn on a logarithmic axis.
const LOG_SPAN: f64 = 50.0;

/// Where a value lands on the axis, from 0 to `width`.
struct Axis {
    low: f64,
    high: f64,
    log: bool,
    width: f64,
}

impl Axis {
    fn of(estimates: &[&Estimate], width: f64) -> Axis {
        let values: Vec<f64> = estimates
            .iter()
            .flat_map(|e| e.values.iter().copied().chain(e.interval.into_iter().flat_map(|(l, h)| [l, h])))
            .collect();
        let high = values.iter().copied().fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE);
        let smallest = values.iter().copied().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
        let log = values.iter().all(|v| *v > 0.0) && high / smallest > LOG_SPAN;
        let low = if log { smallest } else { 0.0 };
        Axis { low, high, log, width }
    }

    fn x(&self, value: f64) -> f64 {
        let share = if self.log {
            (value.max(self.low).ln() - self.low.ln())
                / (self.high.ln() - self.low.ln()).max(f64::MIN_POSITIVE)
        } else {
            (value - self.low) / (self.high - self.low).max(f64::MIN_POSITIVE)
        };
        share.clamp(0.0, 1.0) * self.width
    }
}

/// One row per variant: its interval as a band, its median as a tick, each round as a dot.
fn chart(names: &[String], summary: &MeasureSummary) -> String {
    let present: Vec<&Estimate> = summary.estimates.iter().flatten().collect();
    let (label_width, plot_width, row_height) = (160.0, 560.0, 30.0);
    let axis = Axis::of(&present, plot_width);
    let height = 46.0 + row_height * names.len() as f64;
    let width = label_width + plot_width + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{label} per variant">"#,
        label = escape::xml(&summary.label)
    );
    for (index, (name, estimate)) in names.iter().zip(&summary.estimates).enumerate() {
        let y = 10.0 + row_height * index as f64;
        let colour = COLOURS[index % COLOURS.len()];
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{ty}" class="label" text-anchor="end">{name}</text>"#,
            x = label_width - 8.0,
            ty = y + 14.0,
            name = escape::xml(name)
        );
        let Some(estimate) = estimate else { continue };
        if let Some((low, high)) = estimate.interval {
            let (from, to) = (label_width + axis.x(low), label_width + axis.x(high));
            let _ = writeln!(
                svg,
                r#"<rect class="interval" x="{from:.1}" y="{y}" width="{w:.1}" height="20" fill="{colour}" fill-opacity="0.2"><title>{name}: 95% interval {} to {}</title></rect>"#,
                number(low),
                number(high),
                w = (to - from).max(1.0),
                name = escape::xml(name)
            );
        }
        let median = label_width + axis.x(estimate.median);
        let _ = writeln!(
            svg,
            r#"<line class="median" x1="{median:.1}" x2="{median:.1}" y1="{y}" y2="{y2}" stroke="{colour}" stroke-width="3"><title>{name}: median {}</title></line>"#,
            number(estimate.median),
            y2 = y + 20.0,
            name = escape::xml(name)
        );
        for (round, value) in estimate.values.iter().enumerate() {
            let _ = writeln!(
                svg,
                r#"<circle class="round" cx="{cx:.1}" cy="{cy}" r="3.5" fill="{colour}"><title>{name}, round {}: {}</title></circle>"#,
                round + 1,
                number(*value),
                cx = label_width + axis.x(*value),
                cy = y + 10.0,
                name = escape::xml(name)
            );
        }
    }
    let axis_y = height - 26.0;
    let _ = writeln!(
        svg,
        r#"<line x1="{label_width}" x2="{end}" y1="{axis_y}" y2="{axis_y}" stroke="grey"/>"#,
        end = label_width + plot_width
    );
    let scale = if axis.log { ", logarithmic" } else { "" };
    for (value, anchor) in [(axis.low, "start"), (axis.high, "end")] {
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{ty}" class="axis" text-anchor="{anchor}">{}</text>"#,
            number(value),
            x = label_width + axis.x(value),
            ty = axis_y + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{x}" y="{ty}" class="axis" text-anchor="middle">{label}{scale}</text>"#,
        x = label_width + plot_width / 2.0,
        ty = axis_y + 16.0,
        label = escape::xml(&summary.label)
    );
    svg.push_str("</svg>\n");
    svg
}

fn verdict_class(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Winner { .. } | Verdict::Leaders { .. } => "winner",
        Verdict::NoMeasurableDifference => "same",
        Verdict::NotRanked | Verdict::TooFewRounds => "untold",
    }
}

/// Every shown measure's median and interval per variant.
fn breakdown(names: &[String], measures: &[&MeasureSummary]) -> String {
    let mut out = String::from("<table class=\"breakdown\">\n<thead><tr><th>measure</th>");
    for name in names {
        let _ = write!(out, "<th>{}</th>", escape::xml(name));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for summary in measures {
        let _ = write!(out, "<tr><td>{}</td>", escape::xml(&summary.label));
        for estimate in &summary.estimates {
            match estimate {
                Some(e) => {
                    let interval = e
                        .interval
                        .map(|(low, high)| format!(" <small>({} - {})</small>", number(low), number(high)))
                        .unwrap_or_default();
                    let _ = write!(out, "<td>{}{interval}</td>", number(e.median));
                }
                None => out.push_str("<td>-</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

pub fn render_report(result: &ExperimentResult) -> String {
    let names: Vec<String> = result.variants.iter().map(|v| v.name.clone()).collect();
    let measures = shown_measures(result);
    let mut body = String::new();
    for summary in &measures {
        let _ = writeln!(
            body,
            "<section>\n<h2>{}</h2>\n<p class=\"verdict {}\">{}</p>",
            escape::xml(&summary.label),
            verdict_class(&summary.verdict),
            escape::xml(&verdict(&summary.verdict))
        );
        body.push_str(&chart(&names, summary));
        body.push_str("</section>\n");
    }
    body.push_str("<section>\n<h2>Every measure, median (95% interval)</h2>\n");
    body.push_str(&breakdown(&names, &measures));
    body.push_str("</section>\n<section>\n<h2>Each variant's diagnosis (its median round)</h2>\n");
    for variant in &result.variants {
        let _ = writeln!(body, "<h3>{}</h3>", escape::xml(&variant.name));
        if variant.findings.is_empty() {
            body.push_str("<p>No cause stands out.</p>\n");
            continue;
        }
        body.push_str("<ul>\n");
        for finding in &variant.findings {
            let _ = writeln!(
                body,
                "<li>{} <code>{}</code> {}</li>",
                finding.severity.label(),
                finding.rule,
                escape::xml(finding.title)
            );
        }
        body.push_str("</ul>\n");
    }
    body.push_str("</section>\n");
    for caution in &result.cautions {
        let _ = writeln!(body, "<p class=\"caution\">{}</p>", escape::xml(caution));
    }
    let legend: String = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!("<span style=\"background:{}\"></span>{}", COLOURS[i % COLOURS.len()], escape::xml(name))
        })
        .collect();
    format!(
        r#"{head}<h1>Which variant is faster</h1>
<p>{count} variants, {repeat} round{plural} each in random order (seed {seed}), warm-up {warmup} s, {duration} s recorded per round. Each dot is a round; the band is the 95% interval of the median (percentile bootstrap), the stroke the median.</p>
<p class="legend">{legend}</p>
{body}</body>
</html>
"#,
        head = page_head(
            &format!("kvmtune experiment: {}", names.join(" vs ")),
            ".verdict.winner { background: #dcefe2; } .verdict.untold { background: #f3ecd8; } .caution { color: #8a5a00; }"
        ),
        count = names.len(),
        repeat = result.repeat,
        plural = if result.repeat == 1 { "" } else { "s" },
        seed = result.seed,
        warmup = trim(result.warmup_s),
        duration = trim(result.duration_s),
    )
}
