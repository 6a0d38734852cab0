//! Analysis: rules over host facts and VM configs, the planner, and the exit diagnosis.
//!
//! Every rule is one declaration with a stable id, a severity, an explanation and its source,
//! described by one metadata type and found through one registry ([`rule`]). A new host rule
//! goes into [`host_rules`], a new VM-config rule into its family's file under [`vm_rules`], a
//! new exit cause into [`exit_rules`]; [`check`] runs the VM rules and turns their findings
//! into diagnostics. The planner is [`planner`].

pub mod avic_inhibitions;
pub mod check;
pub mod exit_compare;
pub mod exit_diagnosis;
pub mod exit_patterns;
pub mod exit_rules;
pub mod exit_side_tables;
pub mod experiment;
pub mod fix;
pub mod host_rules;
pub mod hyperv_support;
pub mod meta;
pub mod placement;
pub mod planner;
pub mod rule;
pub mod verify_rules;
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

/// What the VM is for; some trade-offs flip with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// What `--workload` defaults to.
    #[default]
    Gaming,
    Desktop,
    Server,
    /// Cloud gaming and similar: many vCPUs exchanging IPIs.
    IpiHeavy,
}

impl Workload {
    /// What the config says the VM is for, where `--workload` does not: a passed-through PCI
    /// device (a GPU, most often) makes it a gaming VM; none, with a SPICE or VNC display to
    /// look at, a desktop; anything else keeps the default.
    pub fn of_config(config: &crate::config::model::VmConfig) -> Workload {
        let passthrough = config.devices.hostdevs.iter().any(|h| h.kind == "pci");
        if !passthrough && !config.devices.graphics.is_empty() {
            Workload::Desktop
        } else {
            Workload::default()
        }
    }

    pub const ALL: [Workload; 4] =
        [Workload::Gaming, Workload::Desktop, Workload::Server, Workload::IpiHeavy];

    /// The name the `--workload` flag takes and every output prints.
    pub fn label(self) -> &'static str {
        match self {
            Workload::Gaming => "gaming",
            Workload::Desktop => "desktop",
            Workload::Server => "server",
            Workload::IpiHeavy => "ipi-heavy",
        }
    }
}
