//! Splits shell text (a QEMU command line in a script or a libvirt `.args` file) into words,
//! each with the byte span it came from.
//!
//! Handles what real launch scripts use: single and double quotes, backslash escapes,
//! backslash-newline continuations, `#` comments and `VAR=value` prefixes (kept as words; the
//! caller skips them). Variable expansion and command substitution are not performed: `$VAR`
//! stays literal, which is what a reader of a config wants to see.

use crate::values::Span;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unterminated {quote} quote starting at byte {start}")]
pub struct UnterminatedQuote {
    pub quote: char,
    pub start: usize,
}

pub fn split(text: &str) -> Result<Vec<Word>, UnterminatedQuote> {
    let mut words = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut current: Option<(String, usize)> = None;
    let mut end = 0;
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '\n')) => {}
                Some((next_index, escaped)) => {
                    current.get_or_insert_with(|| (String::new(), index)).0.push(escaped);
                    end = next_index + escaped.len_utf8();
                }
                None => {}
            },
            '\'' | '"' => {
                let word = current.get_or_insert_with(|| (String::new(), index));
                let mut closed = false;
                while let Some((inner_index, inner)) = chars.next() {
                    if inner == c {
                        closed = true;
                        end = inner_index + 1;
                        break;
                    }
                    if c == '"'
                        && inner == '\\'
                        && let Some((_, escaped)) =
                            chars.next_if(|(_, e)| matches!(e, '"' | '\\' | '$' | '`' | '\n'))
                    {
                        if escaped != '\n' {
                            word.0.push(escaped);
                        }
                        continue;
                    }
                    word.0.push(inner);
                }
                if !closed {
                    return Err(UnterminatedQuote { quote: c, start: index });
                }
            }
            '#' if current.is_none() => while chars.next_if(|(_, c)| *c != '\n').is_some() {},
            c if c.is_whitespace() => {
                if let Some((word, start)) = current.take() {
                    words.push(Word { text: word, span: Span::new(start, end) });
                }
            }
            c => {
                current.get_or_insert_with(|| (String::new(), index)).0.push(c);
                end = index + c.len_utf8();
            }
        }
    }
    if let Some((word, start)) = current.take() {
        words.push(Word { text: word, span: Span::new(start, end) });
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<String> {
        split(text).unwrap().into_iter().map(|w| w.text).collect()
    }

    #[test]
    fn quotes_continuations_and_comments() {
        assert_eq!(
            texts("qemu -cpu 'host,hv-vendor-id=KVM Hv' \\\n  -name \"win \\\"10\\\"\" # comment\n-m 4G"),
            ["qemu", "-cpu", "host,hv-vendor-id=KVM Hv", "-name", "win \"10\"", "-m", "4G"]
        );
    }

    #[test]
    fn spans_cover_the_source_word() {
        let text = "a 'b c' d";
        let words = split(text).unwrap();
        assert_eq!(&text[words[1].span.start..words[1].span.end], "'b c'");
        assert_eq!(&text[words[2].span.start..words[2].span.end], "d");
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(split("a 'b"), Err(UnterminatedQuote { quote: '\'', start: 2 }));
    }
}
