//! Small pieces of English that messages share.

/// `1 row`, `2 rows`, `0 rules`: a count with its noun, as English has it.
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_and_many() {
        assert_eq!(super::plural(1, "rule"), "1 rule");
        assert_eq!(super::plural(0, "rule"), "0 rules");
        assert_eq!(super::plural(3, "row"), "3 rows");
    }
}
