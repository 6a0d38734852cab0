//! What every rule declares about itself, the same for host, VM-config and exit rules: the
//! type each rule table's entries carry. The registry ([`crate::analysis::rule`]) collects the
//! tables; the tables need only this.

use serde::Serialize;

use crate::analysis::Severity;
use crate::analysis::fix::Applicability;

/// What a rule is about, as `kvmtune rules` groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Hyperv,
    Timers,
    Pinning,
    Cpu,
    Memory,
    Devices,
    OldGuests,
    /// Raw QEMU arguments passed around the config (`<qemu:commandline>`).
    QemuArgs,
    /// What the domain asks of its host through kvmtune's libvirt hook (`<kvmtune:host>`).
    HostRequest,
    /// The host's KVM, kernel and devices.
    Host,
    /// Exit causes read from VM-exit statistics.
    Exits,
}

impl Category {
    pub fn label(self) -> &'static str {
        match self {
            Category::Hyperv => "hyperv",
            Category::Timers => "timers",
            Category::Pinning => "pinning",
            Category::Cpu => "cpu",
            Category::Memory => "memory",
            Category::Devices => "devices",
            Category::OldGuests => "old-guests",
            Category::QemuArgs => "qemu-args",
            Category::HostRequest => "host-request",
            Category::Host => "host",
            Category::Exits => "exits",
        }
    }
}

/// Everything a person reads about a rule; the same for every kind of rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleMeta {
    /// Stable id; never reused for another rule.
    pub id: &'static str,
    /// A kebab-case name that `--select` and `explain` take as well as the id.
    pub name: &'static str,
    pub category: Category,
    /// The default severity; a finding may raise or lower it.
    pub severity: Severity,
    pub title: &'static str,
    /// What happens in the guest and why, with the measured impact where a source gives one.
    pub explanation: &'static str,
    /// A short example of what the rule finds.
    pub example: &'static str,
    /// The fix, in words (a finding carries the concrete action).
    pub fix: &'static str,
    /// Whether kvmtune may apply that fix itself (`--fix` applies only `Safe` ones).
    pub fix_safety: Applicability,
    /// Where the knowledge comes from.
    pub source: &'static str,
}
