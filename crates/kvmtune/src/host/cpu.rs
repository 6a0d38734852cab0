//! The CPU model and the feature flags that decide how a Windows guest can be tuned, from
//! `/proc/cpuinfo`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::host::fact::Fact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuVendor {
    Intel,
    Amd,
    Other,
}

/// Flags whose presence changes a recommendation, each with why it matters. Reported as present
/// or absent so that "absent" is visible, not silently missing.
pub const FLAGS_THAT_MATTER: &[(&str, &str)] = &[
    ("vmx", "Intel VT-x: hardware virtualization, and nested virtualization for WSL2/VBS guests"),
    ("svm", "AMD-V: hardware virtualization, and nested virtualization for WSL2/VBS guests"),
    ("hypervisor", "this host is itself a VM: nested KVM, with its own limits"),
    ("constant_tsc", "TSC ticks at a fixed rate across P-states (half of an invariant TSC)"),
    ("nonstop_tsc", "TSC keeps ticking in deep C-states (the other half of an invariant TSC)"),
    ("tsc_known_freq", "the TSC frequency comes from CPUID, not a calibration"),
    ("tsc_reliable", "the kernel skips TSC watchdog checks (set by a hypervisor or the platform)"),
    ("tsc_deadline_timer", "the LAPIC TSC-deadline timer mode KVM can offer the guest"),
    ("x2apic", "x2APIC: MSR-based APIC, needed for APICv/AVIC's fast paths with many vCPUs"),
    ("topoext", "AMD topology extensions: the guest sees SMT siblings and L3 groups (CCX)"),
    ("avic", "AMD AVIC: virtual interrupt delivery without exits"),
    ("x2avic", "AMD x2AVIC: AVIC for x2APIC guests (Zen 4 and later)"),
    ("npt", "AMD nested page tables"),
    ("ept", "Intel extended page tables"),
    ("vpid", "Intel VPID: no TLB flush on every VM exit"),
    ("flexpriority", "Intel FlexPriority: TPR accesses without exits (old 32-bit Windows)"),
    ("tpr_shadow", "Intel TPR shadow"),
    ("pdpe1gb", "1 GiB pages: 1G hugepages for guest RAM"),
    ("arch_capabilities", "IA32_ARCH_CAPABILITIES MSR (its absence breaks `-cpu host` on some nested hosts)"),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    pub vendor: Fact<CpuVendor>,
    /// The raw vendor string (`GenuineIntel`, `AuthenticAMD`).
    pub vendor_id: Fact<String>,
    pub model_name: Fact<String>,
    pub family: Fact<u32>,
    pub model: Fact<u32>,
    pub stepping: Fact<u32>,
    /// Each flag in [`FLAGS_THAT_MATTER`], present or not (from the `flags` line, plus the
    /// `vmx flags` line that kernels since 5.8 print separately).
    pub flags: Fact<BTreeMap<String, bool>>,
}

impl CpuInfo {
    /// True when the flag is known to be present.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.known().and_then(|flags| flags.get(flag)).copied().unwrap_or(false)
    }
}

pub fn probe(host: &Host) -> CpuInfo {
    match host.read("/proc/cpuinfo") {
        Ok(text) => parse_cpuinfo(&text),
        Err(error) => {
            let reason = error.to_string();
            CpuInfo {
                vendor: Fact::Unknown(reason.clone()),
                vendor_id: Fact::Unknown(reason.clone()),
                model_name: Fact::Unknown(reason.clone()),
                family: Fact::Unknown(reason.clone()),
                model: Fact::Unknown(reason.clone()),
                stepping: Fact::Unknown(reason.clone()),
                flags: Fact::Unknown(reason),
            }
        }
    }
}

/// Reads the first processor's block; the fields that matter are the same for every logical
/// CPU on the hybrid and multi-socket machines kvmtune targets (flags on hybrid Intel parts are
/// the intersection the kernel exposes on every CPU).
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !fields.is_empty() {
                break;
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            fields.entry(key.trim()).or_insert(value.trim());
        }
    }
    let field = |name: &str| -> Fact<String> {
        match fields.get(name) {
            Some(value) => Fact::Known(value.to_string()),
            None => Fact::Unknown(format!("/proc/cpuinfo has no `{name}` field")),
        }
    };
    let number = |name: &str| -> Fact<u32> {
        field(name).and_then(|value| match value.parse() {
            Ok(number) => Fact::Known(number),
            Err(_) => Fact::Unknown(format!("/proc/cpuinfo `{name}` is `{value}`, not a number")),
        })
    };
    let vendor_id = field("vendor_id");
    let vendor = vendor_id.clone().map(|id| match id.as_str() {
        "GenuineIntel" => CpuVendor::Intel,
        "AuthenticAMD" | "HygonGenuine" => CpuVendor::Amd,
        _ => CpuVendor::Other,
    });
    let flags = match fields.get("flags") {
        Some(flags) => {
            let vmx_flags = fields.get("vmx flags").copied().unwrap_or("");
            let present: std::collections::BTreeSet<&str> =
                flags.split_whitespace().chain(vmx_flags.split_whitespace()).collect();
            Fact::Known(
                FLAGS_THAT_MATTER
                    .iter()
                    .map(|(flag, _)| (flag.to_string(), present.contains(flag)))
                    .collect(),
            )
        }
        None => Fact::Unknown("/proc/cpuinfo has no `flags` field (not an x86 host?)".to_string()),
    };
    CpuInfo {
        vendor,
        vendor_id,
        model_name: field("model name"),
        family: number("cpu family"),
        model: number("model"),
        stepping: number("stepping"),
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_first_processor_block() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n\
                    model name\t: AMD EPYC 7B13\nstepping\t: 0\nflags\t\t: fpu svm constant_tsc topoext\n\n\
                    processor\t: 1\nvendor_id\t: GenuineIntel\n";
        let info = parse_cpuinfo(text);
        assert_eq!(info.vendor, Fact::Known(CpuVendor::Amd));
        assert_eq!(info.family, Fact::Known(25));
        assert_eq!(info.model_name, Fact::Known("AMD EPYC 7B13".into()));
        assert!(info.has_flag("svm") && info.has_flag("topoext"));
        assert!(!info.has_flag("vmx") && !info.has_flag("nonstop_tsc"));
    }

    #[test]
    fn garbage_gives_unknowns_not_panics() {
        let info = parse_cpuinfo("model : lots\n\u{0}\n:::\n");
        assert!(matches!(info.model, Fact::Unknown(ref r) if r.contains("not a number")));
        assert!(!info.vendor.is_known());
        assert!(!info.flags.is_known());
    }

    #[test]
    fn vmx_flags_line_counts() {
        let info =
            parse_cpuinfo("vendor_id : GenuineIntel\nflags : vmx\nvmx flags : ept vpid flexpriority\n");
        assert!(info.has_flag("ept") && info.has_flag("flexpriority"));
    }
}
