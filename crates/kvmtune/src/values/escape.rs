//! Escaping for the two places kvmtune writes text another program reads back: XML (and the
//! HTML of reports, which accepts the same five entities) and POSIX shell words.

/// Text for XML character data or an attribute value in either quote.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// One word for a POSIX shell, quoted only where it needs to be: single quotes, with each
/// single quote inside written as `'\''`.
pub fn shell(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || ",._+:@%/=-".contains(c);
    if !word.is_empty() && word.chars().all(plain) { word.to_string() } else { shell_quoted(word) }
}

/// One word in single quotes whatever it holds (values a user edits by hand look alike then).
pub fn shell_quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// A command line of words, each quoted as [`shell`] does.
pub fn shell_line<S: AsRef<str>>(words: &[S]) -> String {
    words.iter().map(|w| shell(w.as_ref())).collect::<Vec<_>>().join(" ")
}

/// A value inside a QEMU option (`-drive file=VALUE,...`, `-name guest=VALUE`): QEMU's option
/// parser ends a value at a comma and reads `,,` as one (docs/system/invocation: "a comma is
/// escaped by doubling it").
pub fn qemu_option_value(text: &str) -> String {
    text.replace(',', ",,")
}

/// Text from the host or a config (a VM's name, a process's `comm`) made safe to print to a
/// terminal: every control character, the escape that starts a terminal sequence among them,
/// is written as `\xNN` (or `\u{NNNN}`), so nothing but the text itself reaches the screen.
pub fn terminal(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if c.is_control() && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_in_qemu_option_values_are_doubled() {
        assert_eq!(qemu_option_value("win,11"), "win,,11");
        assert_eq!(
            format!("guest={},debug-threads=on", qemu_option_value("a,b")),
            "guest=a,,b,debug-threads=on"
        );
    }

    #[test]
    fn control_characters_never_reach_a_terminal() {
        assert_eq!(terminal("win11"), "win11");
        assert_eq!(terminal("evil\u{1b}[2J\u{7}name\n"), "evil\\x1b[2J\\x07name\\x0a");
        assert_eq!(terminal("a\u{9b}b"), "a\\x9bb");
    }

    #[test]
    fn xml_escapes_all_five() {
        assert_eq!(xml(r#"a<b>&'c'"d""#), "a&lt;b&gt;&amp;&apos;c&apos;&quot;d&quot;");
    }

    #[test]
    fn shell_words_round_trip_through_sh() {
        for word in ["plain-word_1.2", "", "two words", "it's", "$(touch /tmp/x)", "`id`", "a\nb", "*"] {
            let quoted = shell(word);
            let echoed = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {quoted}")])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&echoed.stdout), word, "{quoted}");
        }
        assert_eq!(shell("win11"), "win11");
        assert_eq!(shell_line(&["kvmtune", "host", "release", "a b"]), "kvmtune host release 'a b'");
    }
}
