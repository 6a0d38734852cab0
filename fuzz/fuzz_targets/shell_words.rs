//! Shell word splitting: every word's span must lie inside the text on character boundaries.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(words) = kvmtune::config::shell::split(text) {
        for word in words {
            assert!(word.span.start <= word.span.end && word.span.end <= text.len());
            assert!(text.is_char_boundary(word.span.start) && text.is_char_boundary(word.span.end));
        }
    }
});
