//! libvirt's cpuset syntax: the kernel's list syntax plus `^N` exclusions (`0-7,^3`).
//!
//! Source: libvirt docs/formatdomain.rst ("cpuset ... a comma-separated list of physical CPU
//! numbers or ranges, `^` excludes").

use crate::values::{CpuListError, CpuSet};

pub fn parse(text: &str) -> Result<CpuSet, CpuListError> {
    let mut include = Vec::new();
    let mut exclude = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.strip_prefix('^') {
            Some(excluded) => exclude.push(excluded),
            None => include.push(part),
        }
    }
    let included = CpuSet::parse_list(&include.join(","))?;
    let excluded = CpuSet::parse_list(&exclude.join(","))?;
    Ok(included.difference(&excluded))
}

#[cfg(test)]
mod tests {
    #[test]
    fn exclusions() {
        assert_eq!(super::parse("1-2,5-7,^6").unwrap().to_string(), "1-2,5,7");
        assert_eq!(super::parse("1-3,^2").unwrap().to_string(), "1,3");
        assert!(super::parse("1,^x").is_err());
    }
}
