//! CPU sets in the two spellings the kernel uses: lists (`0-3,8-11`) and hex masks
//! (`ff,0000000f`, 32-bit words, most significant first).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An ordered set of logical CPU numbers. Serialises as the kernel's list syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<u32>);

/// Kernels cap CPU numbers well below this (NR_CPUS is at most 8192 in mainline); a larger
/// number in a cpulist is garbage, and refusing it keeps a hostile range from allocating memory.
pub const MAX_CPU: u32 = 1 << 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CpuListError {
    #[error("`{0}` is not a CPU number")]
    NotANumber(String),
    #[error("range `{0}` runs backwards")]
    Backwards(String),
    #[error("CPU {0} is beyond the largest CPU number any kernel supports")]
    TooLarge(u32),
    #[error("`{0}` is not a hexadecimal CPU mask")]
    BadMask(String),
}

impl CpuSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the list syntax: comma-separated numbers and ranges, with the optional
    /// `:stride` suffix that lscpu and the kernel's `bitmap_parselist` accept. Empty means empty.
    pub fn parse_list(text: &str) -> Result<Self, CpuListError> {
        let mut set = BTreeSet::new();
        for part in text.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (range, stride) = match part.split_once(':') {
                Some((range, stride)) => (range, parse_cpu(stride)?.max(1)),
                None => (part, 1),
            };
            let (first, last) = match range.split_once('-') {
                Some((first, last)) => (parse_cpu(first)?, parse_cpu(last)?),
                None => {
                    let cpu = parse_cpu(range)?;
                    (cpu, cpu)
                }
            };
            if last < first {
                return Err(CpuListError::Backwards(part.to_string()));
            }
            set.extend((first..=last).step_by(stride as usize));
        }
        Ok(Self(set))
    }

    /// Parses a hex mask such as `00000000,0000ffff` (sysfs `*_map`, `/proc/irq/*/smp_affinity`,
    /// hwloc's `0x000000ff,0x0000000f`).
    pub fn parse_mask(text: &str) -> Result<Self, CpuListError> {
        let bad = || CpuListError::BadMask(text.trim().to_string());
        let words: Vec<&str> = text.trim().split(',').collect();
        let mut set = BTreeSet::new();
        for (position_from_right, word) in words.iter().rev().enumerate() {
            let word = word.trim().trim_start_matches("0x");
            if word.is_empty() || word.len() > 8 {
                return Err(bad());
            }
            let bits = u32::from_str_radix(word, 16).map_err(|_| bad())?;
            let base = u32::try_from(position_from_right).ok().and_then(|p| p.checked_mul(32));
            for bit in 0..32 {
                if bits & (1 << bit) != 0 {
                    let cpu = base.and_then(|b| b.checked_add(bit)).ok_or_else(bad)?;
                    if cpu >= MAX_CPU {
                        return Err(CpuListError::TooLarge(cpu));
                    }
                    set.insert(cpu);
                }
            }
        }
        Ok(Self(set))
    }

    pub fn insert(&mut self, cpu: u32) {
        self.0.insert(cpu);
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn first(&self) -> Option<u32> {
        self.0.first().copied()
    }

    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.union(&other.0).copied().collect())
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    /// The kernel's hex mask spelling (`/proc/irq/default_smp_affinity`, workqueue
    /// `cpumask`): 32-bit words, most significant first, comma-separated; `0` when empty.
    pub fn to_mask(&self) -> String {
        let words = self.0.last().map_or(1, |&last| last / 32 + 1);
        let mut text = Vec::new();
        for word in (0..words).rev() {
            let bits = self.0.range(word * 32..word * 32 + 32).fold(0u32, |bits, cpu| bits | 1 << (cpu % 32));
            text.push(if word + 1 == words { format!("{bits:x}") } else { format!("{bits:08x}") });
        }
        text.join(",")
    }
}

fn parse_cpu(text: &str) -> Result<u32, CpuListError> {
    let cpu: u32 = text.trim().parse().map_err(|_| CpuListError::NotANumber(text.trim().to_string()))?;
    if cpu >= MAX_CPU {
        return Err(CpuListError::TooLarge(cpu));
    }
    Ok(cpu)
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Formats in the kernel's shortest list form: `0-3,8,10-11`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.0.iter().copied().peekable();
        let mut first_range = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end += 1;
                cpus.next();
            }
            if !first_range {
                f.write_str(",")?;
            }
            first_range = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CpuSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        CpuSet::parse_list(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_lists_with_ranges_and_strides() {
        assert_eq!(CpuSet::parse_list("0-3,8,10-11").unwrap().to_string(), "0-3,8,10-11");
        assert_eq!(CpuSet::parse_list("0-62:2").unwrap().len(), 32);
        assert_eq!(CpuSet::parse_list("1-61:4").unwrap().iter().take(3).collect::<Vec<_>>(), [1, 5, 9]);
        assert!(CpuSet::parse_list("\n").unwrap().is_empty());
    }

    #[test]
    fn masks_format_as_the_kernel_writes_them() {
        for list in ["", "0-1", "0-3", "2-3", "0-40", "33", "0,63-64"] {
            let set = CpuSet::parse_list(list).unwrap();
            assert_eq!(CpuSet::parse_mask(&set.to_mask()).unwrap(), set, "{list}: {}", set.to_mask());
        }
        assert_eq!(CpuSet::parse_list("0-1").unwrap().to_mask(), "3");
        assert_eq!(CpuSet::parse_list("32").unwrap().to_mask(), "1,00000000");
    }

    #[test]
    fn rejects_garbage_lists() {
        assert_eq!(CpuSet::parse_list("3-1"), Err(CpuListError::Backwards("3-1".into())));
        assert!(matches!(CpuSet::parse_list("a-b"), Err(CpuListError::NotANumber(_))));
        assert!(matches!(CpuSet::parse_list("0-4294967295"), Err(CpuListError::TooLarge(_))));
    }

    #[test]
    fn parses_masks_in_kernel_and_hwloc_spelling() {
        assert_eq!(CpuSet::parse_mask("00000000,0000ffff\n").unwrap().to_string(), "0-15");
        assert_eq!(CpuSet::parse_mask("0x000ff000").unwrap().to_string(), "12-19");
        assert_eq!(CpuSet::parse_mask("0x00000001,0x00000000").unwrap().to_string(), "32");
        assert!(CpuSet::parse_mask("zz").is_err());
        assert!(CpuSet::parse_mask("").is_err());
    }

    proptest! {
        #[test]
        fn list_round_trips(cpus in proptest::collection::btree_set(0u32..512, 0..64)) {
            let set: CpuSet = cpus.iter().copied().collect();
            prop_assert_eq!(CpuSet::parse_list(&set.to_string()).unwrap(), set);
        }

        #[test]
        fn never_panics_on_arbitrary_text(text in ".{0,40}") {
            let _ = CpuSet::parse_list(&text);
            let _ = CpuSet::parse_mask(&text);
        }
    }
}
