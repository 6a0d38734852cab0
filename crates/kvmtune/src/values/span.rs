//! Byte ranges into a config's original text, and their line/column for people.

use serde::{Deserialize, Serialize};

/// A byte range `[start, end)` in the original file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }
}

impl From<std::ops::Range<usize>> for Span {
    fn from(range: std::ops::Range<usize>) -> Self {
        Self { start: range.start, end: range.end }
    }
}

/// A config file's text with a line index, to turn spans into `line:column` (1-based, column
/// counted in characters as editors do).
#[derive(Debug, Clone)]
pub struct SourceText {
    pub path: String,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceText {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts =
            std::iter::once(0).chain(text.match_indices('\n').map(|(index, _)| index + 1)).collect();
        Self { path: path.into(), text, line_starts }
    }

    /// 1-based line and column of a byte offset (clamped to the text).
    pub fn line_column(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let line_start = self.line_starts[line];
        let column = self.text.get(line_start..offset).map_or(offset - line_start, |s| s.chars().count()) + 1;
        (line as u32 + 1, column as u32)
    }

    /// The full text of the 1-based line, without its newline.
    pub fn line_text(&self, line: u32) -> &str {
        let index = (line as usize).saturating_sub(1);
        let Some(&start) = self.line_starts.get(index) else { return "" };
        let end = self.line_starts.get(index + 1).map_or(self.text.len(), |next| next - 1);
        self.text.get(start..end).unwrap_or("").trim_end_matches('\r')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let source = SourceText::new("x", "ab\ncdé\n\nf");
        assert_eq!(source.line_column(0), (1, 1));
        assert_eq!(source.line_column(3), (2, 1));
        assert_eq!(source.line_column(5), (2, 3));
        assert_eq!(source.line_column(7), (2, 4));
        assert_eq!(source.line_column(8), (3, 1));
        assert_eq!(source.line_column(9), (4, 1));
        assert_eq!(source.line_column(99), (4, 2));
        assert_eq!(source.line_text(2), "cdé");
        assert_eq!(source.line_text(9), "");
    }
}
