//! Fixes as rules propose them: an edit of the config ([`ConfigEdit`], the vocabulary of
//! [`crate::config::edit`]) and whether `--fix` may make it unasked.

use serde::Serialize;

use crate::config::edit::ConfigEdit;

/// Whether `--fix` may apply a fix without asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applicability {
    /// Keeps the guest working and only removes a cost: applied by `--fix`.
    Safe,
    /// Right in general but changes guest-visible behaviour (clock offset, device model, CPU
    /// topology): shown, never applied automatically.
    Unsafe,
    /// Needs a decision only the user can make (which CPUs, which devices): described only.
    Manual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    pub applicability: Applicability,
    pub action: ConfigEdit,
}

impl Fix {
    pub fn safe(action: ConfigEdit) -> Self {
        Self { applicability: Applicability::Safe, action }
    }
    pub fn unsafe_(action: ConfigEdit) -> Self {
        Self { applicability: Applicability::Unsafe, action }
    }
    pub fn manual(steps: impl Into<String>) -> Self {
        Self { applicability: Applicability::Manual, action: ConfigEdit::Manual { steps: steps.into() } }
    }
}
