//! A pasted text made ready for the table readers: what every format reads the same way.

/// Spaces that mail clients, word processors and web pages put where a space was: the
/// non-breaking space (U+00A0, what mail clients send), figure, narrow no-break, thin, en and
/// em spaces. They read as a plain space.
const SPACE_LIKE: &[char] = &['\u{00A0}', '\u{2007}', '\u{202F}', '\u{2009}', '\u{2002}', '\u{2003}'];
/// Characters that occupy no room at all (a zero-width space, a byte-order mark): dropped.
const INVISIBLE: &[char] = &['\u{200B}', '\u{FEFF}'];

/// One input line as the readers see it.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    /// 1-based, as the input numbers it.
    pub number: u32,
    /// The line as it was, for messages.
    pub raw: &'a str,
    /// Without its mail quoting, with every space-like character a space, without trailing
    /// whitespace (a CR of a CRLF line included).
    pub body: String,
    /// Characters the quoting took from the start of the line, so that a column in `body` is
    /// `prefix_chars + 1 + index` in the input.
    pub prefix_chars: usize,
    /// A Markdown code fence (```` ``` ````): it ends any table it follows.
    pub fence: bool,
    /// A shell prompt with the command typed (`$ perf kvm stat report`), never a row.
    pub prompt: bool,
}

impl Line<'_> {
    /// The words of the body.
    pub fn words(&self) -> Vec<&str> {
        self.body.split_whitespace().collect()
    }

    /// Nothing but whitespace (a quoted blank line included).
    pub fn is_blank(&self) -> bool {
        self.body.trim().is_empty()
    }

    /// Neither a fence, a prompt nor blank: a line that may be part of a table.
    pub fn has_content(&self) -> bool {
        !self.fence && !self.prompt && !self.is_blank()
    }
}

/// The whole input, line by line.
#[derive(Debug, Clone)]
pub struct Pasted<'a> {
    /// Names the input in messages.
    pub path: &'a str,
    pub text: &'a str,
    pub lines: Vec<Line<'a>>,
}

impl<'a> Pasted<'a> {
    pub fn new(path: &'a str, text: &'a str) -> Self {
        let lines = text
            .lines()
            .enumerate()
            .map(|(index, raw)| {
                let (rest, prefix_bytes) = unquoted(raw);
                let body: String = rest
                    .chars()
                    .filter(|c| !INVISIBLE.contains(c))
                    .map(|c| if SPACE_LIKE.contains(&c) { ' ' } else { c })
                    .collect::<String>()
                    .trim_end()
                    .to_string();
                let trimmed = body.trim_start();
                Line {
                    number: index as u32 + 1,
                    raw,
                    prefix_chars: raw[..prefix_bytes].chars().count(),
                    fence: trimmed.starts_with("```") || trimmed.starts_with("~~~"),
                    prompt: trimmed.starts_with("$ ") || trimmed == "$",
                    body,
                }
            })
            .collect();
        Pasted { path, text, lines }
    }

    /// Whether any line's words are exactly `words`.
    pub fn has_line(&self, words: &[&str]) -> bool {
        self.lines.iter().any(|l| l.words() == words)
    }

    /// Whether any line holds `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.body.contains(needle))
    }

    /// The input shows `perf kvm stat live` at work: its command line, or the time of day perf
    /// prints above each live screen (`19:24:22.553073`; tools/perf/builtin-kvm.c,
    /// `show_timeofday`, called from `print_result` in live mode only).
    pub fn shows_perf_live(&self) -> bool {
        self.lines.iter().any(|line| {
            let words = line.words();
            // Prose quotes the command: "`perf kvm stat live` shows ...".
            let bare: Vec<&str> =
                words.iter().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric())).collect();
            let command = ["perf", "kvm", "live"].iter().all(|w| bare.contains(w));
            command || matches!(words[..], [word] if is_time_of_day(word))
        })
    }

    /// A warning about a row left out, for the profile's notes.
    pub fn skipped_row(&self, line: &Line, why: &str) -> String {
        format!("warning: {}:{}: row left out ({why}): `{}`", self.path, line.number, line.body.trim())
    }
}

/// `HH:MM:SS.uuuuuu`.
fn is_time_of_day(word: &str) -> bool {
    let bytes = word.as_bytes();
    bytes.len() == 15
        && bytes.iter().enumerate().all(|(at, b)| match at {
            2 | 5 => *b == b':',
            8 => *b == b'.',
            _ => b.is_ascii_digit(),
        })
}

/// A line without its mail quoting (`> `, `> > `, `>>`), and the byte where the rest starts.
fn unquoted(line: &str) -> (&str, usize) {
    let mut offset = 0;
    loop {
        let rest = &line[offset..];
        let spaces = rest.len() - rest.trim_start().len();
        if rest.trim_start().starts_with('>') {
            offset += spaces + 1;
        } else {
            return (rest, offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_spaces_and_fences_are_read_the_same_way_everywhere() {
        let text = "> > HLT\u{00A0}\u{00A0}12  \r\n```\n$ kvm_stat -1\n>\n";
        let pasted = Pasted::new("p", text);
        assert_eq!(pasted.lines[0].body, " HLT  12");
        assert_eq!(pasted.lines[0].prefix_chars, 3);
        assert_eq!(pasted.lines[0].words(), ["HLT", "12"]);
        assert!(pasted.lines[1].fence && !pasted.lines[1].has_content());
        assert!(pasted.lines[2].prompt);
        assert!(pasted.lines[3].is_blank());
    }

    #[test]
    fn a_live_screen_is_known_by_its_command_or_its_time_of_day() {
        let live = |text: &str| Pasted::new("p", text).shows_perf_live();
        assert!(live("$ sudo perf kvm --host stat live\n"));
        assert!(live("`perf kvm stat live` shows unusual numbers of vmrun and msr\n"));
        assert!(live("> 19:24:22.553073\n\nAnalyze events for all VMs, all VCPUs:\n"));
        assert!(!live("$ sudo perf kvm stat report --event=vmexit\n"));
        assert!(!live("Total Samples:309, Total events handled time:42782518.51us.\n"));
        assert!(!live("19:24:22 HLT 12\n19:24:22.55307\n"));
    }
}
