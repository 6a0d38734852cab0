//! Sizes as the formats spell them, read into KiB, and written back the short way.
//!
//! One table of units for every reader: the CLI (`--memory 16G`, `--hugepages 2M:64`), QEMU
//! (`-m 8G`, `size=4G`: qemu_strtosz in util/cutils.c, one binary suffix letter B/K/M/G/T/P/E in
//! either case), sysfs cache sizes (`32768K`), and libvirt's `unit` attribute, where `KB`,
//! `MB`, ... are powers of 1000 and `k`/`KiB`, `M`/`MiB`, ... powers of 1024 (libvirt
//! docs/formatdomain.rst, "Memory Allocation").

use thiserror::Error;

/// How suffixes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// Every suffix is a power of 1024, in either case, with or without `i` and `B` (`16G`,
    /// `16GiB`, `16gb`): what QEMU, sysfs and people at a command line mean.
    Binary,
    /// libvirt's `unit` attribute, exactly as libvirt reads it: `KB` is 1000 bytes.
    Libvirt,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("`{0}` is not a size (a number with an optional unit such as K, M, G)")]
    NotASize(String),
    #[error("unknown unit `{unit}` in `{text}`")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Bytes in one `unit`.
pub fn unit_bytes(unit: &str, units: Units) -> Option<u128> {
    const EXPONENT: [(char, u32); 7] = [('B', 0), ('K', 1), ('M', 2), ('G', 3), ('T', 4), ('P', 5), ('E', 6)];
    match units {
        Units::Libvirt => {
            let power = |letter: char| EXPONENT.iter().find(|(l, _)| *l == letter).map(|(_, e)| *e);
            match unit {
                "b" | "bytes" => Some(1),
                "k" => Some(1024),
                _ => {
                    let letter = unit.chars().next()?;
                    let exponent = power(letter).filter(|e| *e > 0)?;
                    match &unit[1..] {
                        "" | "iB" => Some(1024u128.pow(exponent)),
                        "B" => Some(1000u128.pow(exponent)),
                        _ => None,
                    }
                }
            }
        }
        Units::Binary => {
            let upper = unit.to_ascii_uppercase();
            if upper == "BYTES" {
                return Some(1);
            }
            let mut letters = upper.chars();
            let letter = letters.next()?;
            let exponent = EXPONENT.iter().find(|(l, _)| *l == letter).map(|(_, e)| *e)?;
            match letters.as_str() {
                "" => Some(1024u128.pow(exponent)),
                "B" | "IB" if exponent > 0 => Some(1024u128.pow(exponent)),
                _ => None,
            }
        }
    }
}

/// `amount` of `unit` in KiB, rounded down.
pub fn to_kib(amount: u64, unit: &str, units: Units) -> Result<u64, SizeError> {
    let text = format!("{amount} {unit}");
    let bytes = unit_bytes(unit, units)
        .ok_or_else(|| SizeError::UnknownUnit { text: text.clone(), unit: unit.to_string() })?;
    u64::try_from(u128::from(amount) * bytes / 1024).map_err(|_| SizeError::TooLarge(text))
}

/// A number with an optional unit (`16G`, `8192`, `2 MiB`) in KiB; a bare number is in
/// `bare_unit` (such as `"M"` for QEMU's `-m`, `"B"` for sysfs bytes).
pub fn parse_kib(text: &str, bare_unit: &str, units: Units) -> Result<u64, SizeError> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let amount: u64 = digits.parse().map_err(|_| SizeError::NotASize(text.to_string()))?;
    let unit = match unit.trim() {
        "" => bare_unit,
        unit => unit,
    };
    to_kib(amount, unit, units).map_err(|error| match error {
        SizeError::UnknownUnit { unit, .. } => SizeError::UnknownUnit { text: text.to_string(), unit },
        _ => SizeError::TooLarge(text.to_string()),
    })
}

/// The shortest exact spelling in binary units: `1G`, `2M`, `4K` (KiB below a MiB).
pub fn short_kib(kib: u64) -> String {
    match kib {
        0 => "0K".to_string(),
        kib if kib % (1 << 20) == 0 => format!("{}G", kib >> 20),
        kib if kib % (1 << 10) == 0 => format!("{}M", kib >> 10),
        kib => format!("{kib}K"),
    }
}

/// For people: `2 GiB`, `512 MiB`, `48 KiB`, the largest unit that is exact.
pub fn human_kib(kib: u64) -> String {
    match kib {
        kib if kib >= 1 << 20 && kib % (1 << 20) == 0 => format!("{} GiB", kib >> 20),
        kib if kib >= 1 << 10 && kib % (1 << 10) == 0 => format!("{} MiB", kib >> 10),
        kib => format!("{kib} KiB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units_in_any_spelling() {
        for text in ["16G", "16g", "16GiB", "16GB", "16 G"] {
            assert_eq!(parse_kib(text, "M", Units::Binary), Ok(16 << 20), "{text}");
        }
        assert_eq!(parse_kib("8192", "M", Units::Binary), Ok(8 << 20));
        assert_eq!(parse_kib("32768K", "B", Units::Binary), Ok(32768));
        assert_eq!(parse_kib("4096", "B", Units::Binary), Ok(4));
        assert!(matches!(parse_kib("16X", "M", Units::Binary), Err(SizeError::UnknownUnit { .. })));
        assert!(matches!(parse_kib("G", "M", Units::Binary), Err(SizeError::NotASize(_))));
        assert!(matches!(parse_kib("99999999999999999E", "M", Units::Binary), Err(SizeError::TooLarge(_))));
    }

    #[test]
    fn libvirt_units_as_libvirt_reads_them() {
        assert_eq!(to_kib(1, "KB", Units::Libvirt), Ok(0));
        assert_eq!(to_kib(2, "MB", Units::Libvirt), Ok(1953));
        assert_eq!(to_kib(2, "MiB", Units::Libvirt), Ok(2048));
        assert_eq!(to_kib(2, "M", Units::Libvirt), Ok(2048));
        assert_eq!(to_kib(3, "k", Units::Libvirt), Ok(3));
        assert_eq!(to_kib(2048, "bytes", Units::Libvirt), Ok(2));
        assert!(to_kib(1, "m", Units::Libvirt).is_err());
    }

    #[test]
    fn written_back_short() {
        assert_eq!(short_kib(1 << 20), "1G");
        assert_eq!(short_kib(2048), "2M");
        assert_eq!(short_kib(4), "4K");
        assert_eq!(human_kib(32768), "32 MiB");
        assert_eq!(human_kib(48), "48 KiB");
    }
}
