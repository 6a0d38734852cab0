//! Analysis: rules over host facts and VM configs, the planner, and the exit diagnosis.
//!
//! Every rule is one declaration in a registry, with a stable id, a severity, an explanation
//! and its source. A new host rule goes into [`host_rules`], a new VM-config rule into
//! [`vm_rules`]; [`check`] runs the VM rules and turns their findings into diagnostics. The
//! planner and the exit diagnosis get their own modules here as they land.

pub mod check;
pub mod exit_compare;
pub mod exit_rules;
pub mod fix;
pub mod host_rules;
pub mod hyperv_support;
pub mod planner;
pub mod vm_rules;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}
