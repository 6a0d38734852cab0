//! Exit tables as users paste them: every classic `perf kvm stat` sample in the corpus,
//! transformed mechanically the way slides, forums and mail clients transform them, must read
//! into the same profile as the original layout. The transformations: tabs, collapsed spaces,
//! deviations glued together and to the mean, µs, no blank lines, code fences, a shell prompt,
//! nested mail quoting, CRLF line ends, the header split over two lines, every line wrapped at
//! 60-80 columns, wrapped deviations that lost their closing parenthesis, and non-breaking
//! spaces for spaces. A proptest picks
//! random combinations.

use kvmtune::exits::{self, ExitProfile};
use proptest::prelude::*;

/// The classic perf samples: (name, text).
fn classic_samples() -> Vec<(String, String)> {
    kvmtune_testkit::corpus_files("exitstats")
        .into_iter()
        .map(|path| (path.display().to_string(), std::fs::read_to_string(&path).unwrap()))
        .filter(|(name, text)| {
            exits::parse(name, text)
                .is_ok_and(|profiles| profiles.iter().all(|p| p.format == "perf kvm stat"))
        })
        .collect()
}

/// What must not change: rows (without their line numbers), totals, event, vendor, truncation.
fn essence(profiles: &[ExitProfile]) -> Vec<String> {
    profiles
        .iter()
        .map(|p| {
            let rows: Vec<String> = p
                .rows
                .iter()
                .map(|r| format!("{} {} {:?} {:?} {:?}", r.name, r.count, r.min_us, r.max_us, r.mean_us))
                .collect();
            format!(
                "{} | {} | {:?} | {:?} | {:?} | {} | {}",
                p.format,
                p.event,
                p.isa,
                p.declared_samples,
                p.declared_time_us,
                p.truncated,
                rows.join("; ")
            )
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Spacing {
    AsIs,
    Tabs,
    Collapsed,
}

#[derive(Debug, Clone)]
struct Paste {
    spacing: Spacing,
    glued: bool,
    micro_sign: bool,
    no_blank_lines: bool,
    two_line_header: bool,
    /// Wrap at this many columns.
    wrap: Option<usize>,
    lose_parens: bool,
    quoting: u8,
    fence: bool,
    prompt: bool,
    crlf: bool,
    /// Every space a non-breaking one (U+00A0), as mail clients send them.
    nbsp: bool,
}

fn is_header(line: &str) -> bool {
    line.contains("Samples") && line.contains("Avg time")
}

fn apply(text: &str, paste: &Paste) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        let mut line = line.to_string();
        if paste.glued {
            // `( +-   0.24% )` -> `(+-0.24%)`, glued to the mean.
            line = line.replace("( +-", "(+-").replace("us (+-", "us(+-");
            while line.contains("+- ") {
                line = line.replace("+- ", "+-");
            }
            line = line.replace("% )", "%)");
        }
        if paste.micro_sign {
            line = line.replace("us ", "µs ").replace("us(", "µs(");
            if line.ends_with("us") && !line.contains("time:") {
                line = format!("{}µs", &line[..line.len() - 2]);
            }
        }
        if paste.two_line_header && is_header(&line) {
            let at = line.find("Samples").unwrap();
            let event = line[..at].trim().to_string();
            lines.push(line[at..].to_string());
            if !event.is_empty() {
                lines.push(event);
            }
            continue;
        }
        lines.push(line);
    }
    if paste.no_blank_lines {
        lines.retain(|l| !l.trim().is_empty());
    }
    lines = lines
        .into_iter()
        .map(|line| match paste.spacing {
            Spacing::AsIs => line,
            Spacing::Tabs => line.split_whitespace().collect::<Vec<_>>().join("\t"),
            Spacing::Collapsed => line.split_whitespace().collect::<Vec<_>>().join(" "),
        })
        .collect();
    if let Some(width) = paste.wrap {
        lines = lines.into_iter().flat_map(|line| wrap(&line, width, paste.lose_parens)).collect();
    }
    if paste.prompt {
        lines.insert(0, "$ perf kvm stat report".into());
    }
    if paste.fence {
        lines.insert(0, "```".into());
        lines.push("```".into());
    }
    if paste.nbsp {
        lines = lines.into_iter().map(|line| line.replace(' ', "\u{00A0}")).collect();
    }
    let quote = "> ".repeat(paste.quoting as usize);
    let eol = if paste.crlf { "\r\n" } else { "\n" };
    lines.iter().map(|l| format!("{quote}{l}{eol}")).collect()
}

/// A mail client's wrap: break before the word that would pass `width`; a deviation whose
/// parenthesis lands alone on the next line may lose it.
fn wrap(line: &str, width: usize, lose_parens: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for word in line.split_inclusive([' ', '\t']) {
        if !current.is_empty() && current.chars().count() + word.trim_end().chars().count() > width {
            out.push(current.trim_end().to_string());
            current = String::new();
        }
        current.push_str(word);
    }
    if !current.trim().is_empty() {
        out.push(current.trim_end().to_string());
    }
    if lose_parens {
        out.retain(|l| l.trim() != ")");
    }
    out
}

prop_compose! {
    fn paste_strategy()(
        spacing in prop_oneof![Just(Spacing::AsIs), Just(Spacing::Tabs), Just(Spacing::Collapsed)],
        glued: bool,
        micro_sign: bool,
        no_blank_lines: bool,
        two_line_header: bool,
        wrap in prop::option::of(60usize..=80),
        lose_parens: bool,
        quoting in 0u8..=3,
        fence: bool,
        prompt: bool,
        crlf: bool,
        nbsp: bool,
    ) -> Paste {
        Paste { spacing, glued, micro_sign, no_blank_lines, two_line_header, wrap, lose_parens, quoting, fence, prompt, crlf, nbsp }
    }
}

/// Each transformation alone, on every sample.
#[test]
#[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
fn each_transformation_alone_keeps_every_profile() {
    let samples = classic_samples();
    assert!(samples.len() >= 6, "only {} classic samples", samples.len());
    let plain = Paste {
        spacing: Spacing::AsIs,
        glued: false,
        micro_sign: false,
        no_blank_lines: false,
        two_line_header: false,
        wrap: None,
        lose_parens: false,
        quoting: 0,
        fence: false,
        prompt: false,
        crlf: false,
        nbsp: false,
    };
    let variants: Vec<(&str, Paste)> = vec![
        ("tabs", Paste { spacing: Spacing::Tabs, ..plain.clone() }),
        ("collapsed", Paste { spacing: Spacing::Collapsed, ..plain.clone() }),
        ("glued", Paste { glued: true, ..plain.clone() }),
        ("µs", Paste { micro_sign: true, ..plain.clone() }),
        ("no blank lines", Paste { no_blank_lines: true, ..plain.clone() }),
        ("two-line header", Paste { two_line_header: true, ..plain.clone() }),
        ("wrapped at 60", Paste { wrap: Some(60), ..plain.clone() }),
        ("wrapped at 72, parens lost", Paste { wrap: Some(72), lose_parens: true, ..plain.clone() }),
        ("quoted > > ", Paste { quoting: 2, ..plain.clone() }),
        ("fenced", Paste { fence: true, prompt: true, ..plain.clone() }),
        ("CRLF", Paste { crlf: true, ..plain.clone() }),
        ("non-breaking spaces", Paste { nbsp: true, ..plain.clone() }),
    ];
    for (name, text) in &samples {
        let original = essence(&exits::parse(name, text).unwrap());
        for (label, paste) in &variants {
            let pasted = apply(text, paste);
            let profiles = exits::parse(name, &pasted).unwrap_or_else(|e| panic!("{label}: {e}\n{pasted}"));
            assert_eq!(essence(&profiles), original, "{label} changed {name}:\n{pasted}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// Random combinations of them, on every sample.
    #[test]
    #[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
    fn any_combination_keeps_every_profile(paste in paste_strategy()) {
        for (name, text) in classic_samples() {
            let original = essence(&exits::parse(&name, &text).unwrap());
            let pasted = apply(&text, &paste);
            let profiles = exits::parse(&name, &pasted).map_err(|e| TestCaseError::fail(format!("{e}\n{pasted}")))?;
            prop_assert_eq!(essence(&profiles), original, "{:?} changed {}:\n{}", paste, name, pasted);
        }
    }
}

/// The table from the issue, copied out of a slide deck: tabs, a glued deviation, a header
/// cut short. It used to fail at its first row.
#[test]
fn a_table_copied_from_a_slide_reads() {
    let text = "Analyze events for all VMs, all VCPUs:\n\n\tVM-EXIT\tSamples\tSamples%\tTime%\tMin Time\tMax Time\t# ti...\nEPT_MISCONFIG\t91000\t70.20%\t85.10%\t4.10us\t600.20us\t6.40us\t(+- 0.04%)\nHLT\t5000\t29.80%\t14.90%\t1.00us\t30000.00us\t100.00us\t(+- 2.00%)\n";
    let profiles = exits::parse("t1.txt", text).unwrap();
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0].rows[0].name, "EPT_MISCONFIG");
    assert_eq!(profiles[0].rows[0].count, 91000);
    assert!(
        profiles[0].notes.iter().any(|n| n.contains("no totals line: 2 rows")),
        "{:?}",
        profiles[0].notes
    );
}

/// Rows that do not add up to the totals line are a warning with the difference.
#[test]
fn rows_that_miss_the_totals_are_reported() {
    let text = "VM-EXIT Samples Samples% Time% Min Time Max Time Avg time\nHLT 10 50.00% 50.00% 1.00us 2.00us 1.50us ( +- 1.00% )\nTotal Samples:25, Total events handled time:15.00us.\n";
    let profile = &exits::parse("t.txt", text).unwrap()[0];
    assert!(
        profile.notes.iter().any(|n| n
            .starts_with("warning: the rows add up to 10 samples, the totals line says 25 (difference 15)")),
        "{:?}",
        profile.notes
    );
}

/// Text that is no table still fails with a place; a garbled row costs that row, with a
/// warning that names its line and the word that broke it.
#[test]
fn unknown_text_fails_and_a_garbled_row_is_a_warning_with_its_place() {
    let error = exits::parse("x.txt", "> hello\n> world\n").unwrap_err();
    assert!(error.to_string().starts_with("x.txt:1:1: not exit statistics"), "{error}");
    let garbled = "> > VM-EXIT Samples Samples% Time% Min Time Max Time Avg time\n> > HLT 12 50.00% oops 1.00us 2.00us 1.50us\n> > PAUSE_INSTRUCTION 12 50.00% 1.00% 1.00us 2.00us 1.50us\n";
    let profile = &exits::parse("y.txt", garbled).unwrap()[0];
    assert_eq!(profile.rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["PAUSE_INSTRUCTION"]);
    let warning =
        profile.notes.iter().find(|n| n.starts_with("warning: y.txt:2:")).expect("a warning for line 2");
    assert!(warning.contains("`oops`"), "{warning}");
}
