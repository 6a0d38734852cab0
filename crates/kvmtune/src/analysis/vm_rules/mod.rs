//! VM-config rules: every trap kvmtune knows in a Windows guest's configuration, one
//! declaration each, beside its check, in its family's file: `hyperv.rs`, `timers.rs`,
//! `pinning.rs`, `cpu_model.rs`, `memory.rs`, `devices.rs`, `passthrough.rs` (`<qemu:commandline>`), `legacy.rs` and
//! `host_request.rs` (`<kvmtune:host>`, what the libvirt hook does at the VM's start).
//! [`VM_RULES`] lists them in order.
//!
//! A rule reads the typed model (and, when `needs_host`, the host facts) and returns findings
//! with the span they point at and, where one exists, a fix. Ids are stable and never reused;
//! the registry in [`crate::analysis::rule`] answers `kvmtune rules`, `explain` and `--select`.
//!
//! To add a rule: write its declaration and `check` function in its family's file, add it to
//! `VM_RULES`, and add `tests/fixtures/check/<ID>.bad.xml` and `<ID>.good.xml` (the fixture
//! test fails until both exist and behave).

mod cpu_model;
mod devices;
mod host_request;
mod hyperv;
mod legacy;
mod memory;
mod passthrough;
mod pinning;
mod timers;

use crate::analysis::fix::Fix;
use crate::analysis::meta::RuleMeta;
use crate::analysis::{Severity, Workload};
use crate::config::edit::ConfigEdit;
use crate::config::model::{VmConfig, WindowsVersion};
use crate::host::HostFacts;
use crate::knowledge::hyperv::{Hv, closed_under_dependencies};
use crate::values::CpuSet;
use crate::values::Span;

/// What every family file uses.
mod prelude {
    pub(super) use super::{Finding, RuleContext, VmRule, enable};
    pub(super) use crate::analysis::fix::{Applicability, Fix};
    pub(super) use crate::analysis::hyperv_support::{Layer, Offer, offer};
    pub(super) use crate::analysis::meta::{Category, RuleMeta};
    pub(super) use crate::analysis::{Severity, Workload};
    pub(super) use crate::config::edit::ConfigEdit;
    pub(super) use crate::config::model::{Located, SourceFormat, VmConfig, WindowsVersion};
    pub(super) use crate::host::Fact;
    pub(super) use crate::host::kvm::HypervSupport;
    pub(super) use crate::knowledge::hyperv::{DEPENDENCIES, Hv};
    pub(super) use crate::values::Span;
    pub(super) use crate::values::{CpuSet, PciAddress};
}

pub struct RuleContext<'a> {
    pub config: &'a VmConfig,
    pub host: Option<&'a HostFacts>,
    /// From `--windows`, else from the config's libosinfo id.
    pub windows: Option<WindowsVersion>,
    pub workload: Workload,
    /// The host's housekeeping CPUs as the user states them (`--housekeeping`).
    pub housekeeping: Option<&'a CpuSet>,
}

impl RuleContext<'_> {
    /// kvmtune is for Windows guests: a config that names no OS is taken as Windows; one that
    /// names another OS is not.
    pub fn is_windows(&self) -> bool {
        self.windows.is_some()
            || self.config.os_id.as_ref().is_none_or(|id| id.value.contains("microsoft.com/win"))
    }

    /// Enlightenments reach the guest at all: the hypervisor CPUID bit is visible, and the
    /// guest is not Windows XP/2003, which predate Hyper-V and use none.
    fn enlightenments_visible(&self) -> bool {
        self.config.hypervisor_bit_disabled().is_none() && self.windows != Some(WindowsVersion::Xp)
    }

    /// The config lists enlightenments one by one (not passthrough/host-model, which take
    /// whatever the host offers).
    fn custom_hyperv(&self) -> bool {
        !self.config.hyperv.passthrough() && !self.config.hyperv.host_model()
    }

    fn on(&self, feature: Hv) -> bool {
        self.config.hyperv.is_on(feature) || !self.custom_hyperv()
    }

    fn apic_virtualization(&self) -> Option<bool> {
        self.host?.kvm.apic_virtualization.known().map(|a| a.enabled)
    }

    /// What the host's APIC virtualization is called in a message: "APICv" or "AVIC" where the
    /// host says which, else both.
    fn apic_virtualization_name(&self) -> &str {
        self.host.and_then(|h| h.kvm.apic_virtualization.known()).map_or("APICv/AVIC", |a| a.kind.as_str())
    }

    fn host_vendor(&self) -> Option<crate::host::cpu::CpuVendor> {
        self.host?.cpu.vendor.known().copied()
    }

    /// Where a diagnostic about something missing from `<hyperv>` points.
    fn hyperv_anchor(&self) -> Option<Span> {
        let anchors = &self.config.anchors;
        anchors.hyperv.or(anchors.features).or(anchors.root)
    }

    fn clock_anchor(&self) -> Option<Span> {
        self.config.anchors.clock.or(self.config.anchors.root)
    }

    fn vcpu_cpus(&self) -> CpuSet {
        self.config.pinning.vcpu_cpus()
    }
}

pub struct Finding {
    pub span: Option<Span>,
    pub message: String,
    pub fix: Option<Fix>,
    /// Overrides the rule's default severity for this finding.
    pub severity: Option<Severity>,
}

impl Finding {
    fn new(span: Option<Span>, message: impl Into<String>) -> Self {
        Self { span, message: message.into(), fix: None, severity: None }
    }
    fn with_fix(mut self, fix: Fix) -> Self {
        self.fix = Some(fix);
        self
    }
    fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = Some(severity);
        self
    }
}

#[derive(Debug)]
pub struct VmRule {
    pub meta: RuleMeta,
    /// Runs only when host facts are given (`--host`).
    pub needs_host: bool,
    /// ... or, for a rule about the host's own CPUs, when `--housekeeping` names them.
    pub housekeeping_suffices: bool,
    pub check: fn(&RuleContext) -> Vec<Finding>,
}

/// A fix that turns these enlightenments on, with whatever they depend on that is not on yet.
fn enable(features: &[Hv], config: &VmConfig) -> Fix {
    let missing: Vec<Hv> =
        closed_under_dependencies(features).into_iter().filter(|f| !config.hyperv.is_on(*f)).collect();
    Fix::safe(ConfigEdit::EnableHyperv { features: missing })
}

pub const VM_RULES: &[VmRule] = &[
    hyperv::HV001,
    hyperv::HV002,
    hyperv::HV003,
    hyperv::HV004,
    hyperv::HV005,
    hyperv::HV006,
    hyperv::HV007,
    hyperv::HV008,
    hyperv::HV009,
    hyperv::HV010,
    hyperv::HV011,
    hyperv::HV012,
    hyperv::HV013,
    timers::TIME001,
    timers::TIME002,
    timers::TIME003,
    timers::TIME004,
    timers::TIME005,
    timers::TIME006,
    timers::TIME007,
    pinning::PIN001,
    pinning::PIN002,
    pinning::PIN003,
    pinning::PIN004,
    pinning::PIN005,
    pinning::PIN006,
    pinning::PIN007,
    pinning::PIN008,
    pinning::PIN009,
    pinning::PIN010,
    pinning::PIN011,
    pinning::PIN012,
    pinning::PIN013,
    cpu_model::CPU001,
    cpu_model::CPU002,
    cpu_model::CPU003,
    cpu_model::CPU004,
    cpu_model::CPU005,
    cpu_model::CPU006,
    cpu_model::CPU007,
    cpu_model::CPU008,
    cpu_model::CPU009,
    memory::MEM001,
    memory::MEM002,
    memory::MEM003,
    memory::MEM004,
    memory::MEM005,
    memory::MEM006,
    memory::MEM007,
    devices::DEV001,
    devices::DEV002,
    devices::DEV003,
    devices::DEV004,
    devices::DEV005,
    devices::DEV006,
    devices::DEV007,
    devices::DEV008,
    devices::DEV009,
    devices::DEV010,
    devices::DEV011,
    devices::DEV012,
    legacy::LEG001,
    passthrough::ARG001,
    passthrough::ARG002,
    passthrough::ARG003,
    host_request::HOOK001,
    host_request::HOOK002,
    host_request::HOOK003,
    host_request::HOOK004,
];
