//! PCI addresses: `0000:01:00.0`, domain, bus, slot (device) and function, in hex, as lspci
//! `-D`, sysfs (`/sys/bus/pci/devices/DDDD:BB:SS.F`) and libvirt's `<address>` spell them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// The PCI segment; 16 bits on nearly every machine (Intel VMD adds 32-bit ones).
    pub domain: u32,
    pub bus: u8,
    /// 0-0x1f.
    pub slot: u8,
    /// 0-7.
    pub function: u8,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("`{0}` is not a PCI address (such as 0000:01:00.0)")]
pub struct PciAddressError(pub String);

impl PciAddress {
    /// The full form only, as sysfs and kvmtune's own metadata write it: `0000:01:00.0`.
    pub fn parse(text: &str) -> Result<Self, PciAddressError> {
        let error = || PciAddressError(text.to_string());
        let hex = |part: &str, len: std::ops::RangeInclusive<usize>| {
            (len.contains(&part.len()) && part.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(part, 16).ok())
                .flatten()
        };
        let (domain, rest) = text.split_once(':').ok_or_else(error)?;
        let (bus, rest) = rest.split_once(':').ok_or_else(error)?;
        let (slot, function) = rest.split_once('.').ok_or_else(error)?;
        let address = PciAddress {
            domain: hex(domain, 4..=8).ok_or_else(error)?,
            bus: hex(bus, 2..=2).ok_or_else(error)? as u8,
            slot: hex(slot, 2..=2).filter(|s| *s <= 0x1f).ok_or_else(error)? as u8,
            function: hex(function, 1..=1).filter(|f| *f <= 7).ok_or_else(error)? as u8,
        };
        Ok(address)
    }

    /// Also lspci's short form without the domain (`01:00.0`), which means domain 0.
    pub fn parse_lenient(text: &str) -> Result<Self, PciAddressError> {
        let text = text.trim();
        match text.matches(':').count() {
            1 => Self::parse(&format!("0000:{text}")).map_err(|_| PciAddressError(text.to_string())),
            _ => Self::parse(text),
        }
    }

    /// The device's directory in sysfs.
    pub fn sysfs_dir(&self) -> String {
        format!("/sys/bus/pci/devices/{self}")
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.slot, self.function)
    }
}

impl FromStr for PciAddress {
    type Err = PciAddressError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_lenient(text)
    }
}

impl Serialize for PciAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_addresses_are_hex_with_a_slot_and_function_in_range() {
        assert_eq!(PciAddress::parse("0000:0a:1f.7").unwrap().to_string(), "0000:0a:1f.7");
        assert_eq!(
            PciAddress::parse("0000:01:00.0").unwrap().sysfs_dir(),
            "/sys/bus/pci/devices/0000:01:00.0"
        );
        for bad in [
            "01:00.0",
            "0000:01:00.8",
            "0000:01:20.0",
            "0000:01:00",
            "0000:0g:00.0",
            "0000:01:00.0.1",
            "",
            "../../x",
        ] {
            assert!(PciAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_short_form_means_domain_zero() {
        assert_eq!(PciAddress::parse_lenient("01:00.1").unwrap().to_string(), "0000:01:00.1");
        assert_eq!("0000:01:00.1".parse::<PciAddress>().unwrap(), PciAddress::parse("0000:01:00.1").unwrap());
        assert!(PciAddress::parse_lenient("01:00").is_err());
    }
}
