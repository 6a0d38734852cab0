//! The JSON `kvmtune-guest --format json` prints (docs/guest-schema.md), read back on the host.
//! Members kvmtune does not know are ignored; a member it needs that is missing or of the wrong
//! type is an error with its line and column.

use serde::Deserialize;

use crate::knowledge::hyperv::{ENLIGHTENMENTS, Hv};
use crate::knowledge::hyperv_cpuid::{LEAF_RECOMMENDATIONS, Register};

/// The schema version this kvmtune reads (the guest program's `SCHEMA_VERSION`).
pub const SCHEMA_VERSION: u32 = 1;

/// A report that is not one kvmtune can read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{origin}:{line}:{column}: not a kvmtune-guest report: {message}")]
    Json { origin: String, line: usize, column: usize, message: String },
    #[error("{origin}: written by {program}, not by kvmtune-guest")]
    NotOurs { origin: String, program: String },
    #[error(
        "{origin}: schema version {found}; this kvmtune reads version {SCHEMA_VERSION} (use the kvmtune-guest of the same release)"
    )]
    Version { origin: String, found: u32 },
}

#[derive(Debug, Clone, Deserialize)]
pub struct GuestReport {
    pub schema_version: u32,
    pub program: Program,
    pub os: Os,
    pub cpuid: Cpuid,
    pub topology: Topology,
    pub time: Time,
    #[serde(default)]
    pub pci: Vec<PciDevice>,
    #[serde(default)]
    pub page_file: Option<PageFile>,
    #[serde(default)]
    pub collected_in_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Program {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Os {
    /// `windows` or `linux`.
    pub family: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub build: Option<u32>,
    /// Windows' EditionID: `Core` (Home), `Professional`, `ServerStandard`, ...
    #[serde(default)]
    pub edition: Option<String>,
    /// Windows' InstallationType: `Client` or `Server`.
    #[serde(default)]
    pub installation_type: Option<String>,
    #[serde(default)]
    pub kernel: Option<String>,
}

impl Os {
    pub fn is_windows(&self) -> bool {
        self.family == "windows"
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Cpuid {
    pub vendor: String,
    #[serde(default)]
    pub brand: Option<String>,
    pub hypervisor_bit: bool,
    #[serde(default)]
    pub x2apic: Option<bool>,
    #[serde(default)]
    pub invariant_tsc: Option<bool>,
    #[serde(default)]
    pub hypervisor: Option<Hypervisor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hypervisor {
    pub max_leaf: u32,
    pub signature: String,
    pub hyperv_interface: bool,
    #[serde(default)]
    pub kvm_leaves_at: Option<u32>,
    #[serde(default)]
    pub leaves: Vec<Leaf>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Leaf {
    pub leaf: u32,
    #[serde(default)]
    pub subleaf: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

impl Leaf {
    fn registers(&self) -> [u32; 4] {
        [self.eax, self.ebx, self.ecx, self.edx]
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Topology {
    pub logical_processors: u32,
    pub cores: u32,
    pub sockets: u32,
    pub numa_nodes: u32,
    #[serde(default)]
    pub smt_groups: Vec<Vec<u32>>,
    #[serde(default)]
    pub l3_groups: Vec<Vec<u32>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Time {
    /// `QueryPerformanceCounter` or `clock_gettime(CLOCK_MONOTONIC)`.
    pub counter: String,
    #[serde(default)]
    pub frequency_hz: Option<u64>,
    #[serde(default)]
    pub clocksource: Option<String>,
    #[serde(default)]
    pub call_cost: Option<Spread>,
}

/// A spread of samples; `*_ns` for call costs.
#[derive(Debug, Clone, Deserialize)]
pub struct Spread {
    pub samples: u32,
    #[serde(default)]
    pub median_ns: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PciDevice {
    pub address: String,
    #[serde(default)]
    pub class: Option<u32>,
    #[serde(default)]
    pub interrupt_mode: Option<String>,
    #[serde(default)]
    pub bars: Vec<Bar>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Bar {
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PageFile {
    #[serde(default)]
    pub system_managed: Option<bool>,
}

impl GuestReport {
    /// Reads a report; `origin` names it in errors (a file name, `the guest agent`).
    pub fn from_json(text: &str, origin: &str) -> Result<GuestReport, ReportError> {
        let report: GuestReport = serde_json::from_str(text).map_err(|e| ReportError::Json {
            origin: origin.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        })?;
        if report.program.name != "kvmtune-guest" {
            return Err(ReportError::NotOurs { origin: origin.to_string(), program: report.program.name });
        }
        if report.schema_version != SCHEMA_VERSION {
            return Err(ReportError::Version { origin: origin.to_string(), found: report.schema_version });
        }
        Ok(report)
    }

    /// The hypervisor leaves, when the guest sees a Hyper-V interface (`Hv#1`).
    fn hyperv(&self) -> Option<&Hypervisor> {
        self.cpuid.hypervisor.as_ref().filter(|h| h.hyperv_interface)
    }

    /// Whether the guest sees bit `bit` of `register` in `leaf`. A leaf above the highest one
    /// that leaf 0x40000000 announces is not there, so its bits are clear, whatever a report
    /// lists for it (TLFS, Feature discovery: EAX of 0x40000000 is the maximum hypervisor leaf;
    /// QEMU announces 0x40000005 unless a feature of 0x4000000A is on). `None` when a leaf up to
    /// that one is not in the report, or the guest has no Hyper-V interface.
    pub fn hyperv_bit(&self, leaf: u32, register: Register, bit: u8) -> Option<bool> {
        let hypervisor = self.hyperv()?;
        if leaf > hypervisor.max_leaf {
            return Some(false);
        }
        let found = hypervisor.leaves.iter().find(|l| l.leaf == leaf && l.subleaf == 0)?;
        Some(register.of(found.registers()) & (1 << bit) != 0)
    }

    /// How often the guest is told to spin on a lock before it notifies the hypervisor: leaf
    /// 0x40000004 EBX, where the guest has that leaf (QEMU puts hv-spinlocks there, 0xFFFFFFFF
    /// "never notify" without it).
    pub fn spinlock_retries(&self) -> Option<u32> {
        let hypervisor = self.hyperv()?;
        if LEAF_RECOMMENDATIONS > hypervisor.max_leaf {
            return None;
        }
        let found = hypervisor.leaves.iter().find(|l| l.leaf == LEAF_RECOMMENDATIONS && l.subleaf == 0)?;
        Some(found.ebx)
    }

    /// The highest Hyper-V leaf the guest's leaf 0x40000000 announces.
    pub fn max_hyperv_leaf(&self) -> Option<u32> {
        self.hyperv().map(|h| h.max_leaf)
    }

    /// Whether the guest sees the bits of enlightenment `hv`: `None` for properties that are no
    /// bits (hv-vendor-id, hv-spinlocks, hv-passthrough) or when the guest has no Hyper-V leaves.
    pub fn sees(&self, hv: Hv) -> Option<bool> {
        let enlightenment = ENLIGHTENMENTS.iter().find(|e| e.hv == hv)?;
        let mut seen = true;
        for bit in enlightenment.bits() {
            seen &= self.hyperv_bit(bit.leaf, bit.register, bit.bit)?;
        }
        Some(seen)
    }

    /// The TLFS names of the bits `hv` needs that the guest does not see.
    pub fn missing_bits(&self, hv: Hv) -> Vec<&'static str> {
        ENLIGHTENMENTS
            .iter()
            .filter(|e| e.hv == hv)
            .flat_map(|e| e.bits())
            .filter(|b| self.hyperv_bit(b.leaf, b.register, b.bit) == Some(false))
            .map(|b| b.name)
            .collect()
    }

    pub fn signature(&self) -> Option<&str> {
        self.cpuid.hypervisor.as_ref().map(|h| h.signature.as_str())
    }

    pub fn has_hyperv_interface(&self) -> bool {
        self.hyperv().is_some()
    }
}
