//! Analysis: rules over host facts and VM configs, the planner, and the exit diagnosis.
//!
//! Every rule is one declaration in a registry, with a stable id, a severity, an explanation
//! and its source. A new host rule goes into [`host_rules`]; VM-config rules, the planner and
//! the exit diagnosis get their own modules here as they land.

pub mod host_rules;
