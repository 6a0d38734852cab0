//! The user-space half of the stack a VM runs on: the QEMU and libvirt versions.
//!
//! Which Hyper-V enlightenments a VM can have depends on the kernel (KVM must emulate them),
//! QEMU (it must know the `-cpu` property) and libvirt (it must know the XML element). When
//! `/dev/kvm` cannot be asked, these versions are what the planner and `check` go by
//! (`knowledge::hyperv::AVAILABILITY`). A snapshot records no program versions; the CLI takes
//! them as `--qemu-version` and `--libvirt-version`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::host::fact::Fact;
use crate::host::source::HostSource;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Software {
    pub qemu: Fact<Version>,
    pub libvirt: Fact<Version>,
}

impl Default for Software {
    /// Host facts saved before these fields existed.
    fn default() -> Self {
        let missing = || Fact::Unknown("not recorded in these host facts".to_string());
        Software { qemu: missing(), libvirt: missing() }
    }
}

/// Programs to ask, in order: the x86 system emulator (RHEL ships it as qemu-kvm), and the
/// monolithic libvirt daemon or its modular QEMU driver.
const QEMU_PROGRAMS: &[&str] = &["qemu-system-x86_64", "/usr/libexec/qemu-kvm", "qemu-kvm"];
const LIBVIRT_PROGRAMS: &[&str] = &["libvirtd", "virtqemud"];

pub fn probe(host: &dyn HostSource) -> Software {
    Software { qemu: version_of(host, QEMU_PROGRAMS), libvirt: version_of(host, LIBVIRT_PROGRAMS) }
}

fn version_of(host: &dyn HostSource, programs: &[&str]) -> Fact<Version> {
    let mut tried = Vec::new();
    for program in programs {
        match host.program_output(program, &["--version"]) {
            None => {
                return Fact::Unknown("a snapshot records no program versions".to_string());
            }
            Some(Ok(output)) => match Version::find_in(&output) {
                Some(version) => return Fact::Known(version),
                None => tried.push(format!("{program} --version printed no version: `{}`", output.trim())),
            },
            Some(Err(error)) => tried.push(error.to_string()),
        }
    }
    Fact::Unknown(tried.join("; "))
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
