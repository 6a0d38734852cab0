//! Small pieces of English that messages share.

/// `1 row`, `2 rows`, `0 rules`: a count with its noun, as English has it.
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else if ["s", "x", "sh", "ch"].iter().any(|end| noun.ends_with(end)) {
        format!("{count} {noun}es")
    } else {
        format!("{count} {noun}s")
    }
}

/// The verb that agrees with a count: `agree(1, "needs", "need")`.
pub fn agree<'a>(count: usize, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_and_many() {
        assert_eq!(super::plural(1, "rule"), "1 rule");
        assert_eq!(super::plural(0, "rule"), "0 rules");
        assert_eq!(super::plural(3, "row"), "3 rows");
        assert_eq!(super::plural(2, "fix"), "2 fixes");
        assert_eq!(super::plural(1, "fix"), "1 fix");
        assert_eq!(super::agree(1, "needs", "need"), "needs");
        assert_eq!(super::agree(2, "needs", "need"), "need");
    }
}
