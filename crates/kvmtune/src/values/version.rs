//! Release numbers of the kernel, QEMU and libvirt, compared numerically.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A `major.minor.micro` release number, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, micro: u32) -> Self {
        Self { major, minor, micro }
    }

    /// The first `N.N[.N]` in a text: `6.1.0-13-amd64`, `QEMU emulator version 10.0.2 (Debian
    /// 1:10.0.2+ds-1)`, `libvirtd (libvirt) 11.3.0`. A lone number is not a version.
    pub fn find_in(text: &str) -> Option<Version> {
        text.split(|c: char| !(c.is_ascii_digit() || c == '.')).find_map(|token| {
            let mut parts = token.split('.').filter(|p| !p.is_empty());
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            let micro = parts.next().map_or(Some(0), |p| p.parse().ok())?;
            Some(Version { major, minor, micro })
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Version::find_in(text).ok_or_else(|| format!("`{text}` is not a version (expected N.N or N.N.N)"))
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_found_in_what_programs_print() {
        assert_eq!(Version::find_in("6.1.0-13-amd64"), Some(Version::new(6, 1, 0)));
        assert_eq!(
            Version::find_in("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)"),
            Some(Version::new(10, 0, 2))
        );
        assert_eq!(Version::find_in("libvirtd (libvirt) 11.3.0"), Some(Version::new(11, 3, 0)));
        assert_eq!(Version::find_in("5.15"), Some(Version::new(5, 15, 0)));
        assert_eq!(Version::find_in("version 7"), None);
        assert_eq!(Version::find_in(""), None);
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(Version::new(4, 20, 0) > Version::new(4, 5, 0));
        assert!(Version::new(10, 0, 0) > Version::new(9, 2, 3));
    }

    #[test]
    fn versions_round_trip_as_strings() {
        let json = serde_json::to_string(&Version::new(11, 3, 0)).unwrap();
        assert_eq!(json, "\"11.3.0\"");
        assert_eq!(serde_json::from_str::<Version>(&json).unwrap(), Version::new(11, 3, 0));
        assert!(serde_json::from_str::<Version>("\"eleven\"").is_err());
    }
}
