//! `tune` on an existing VM: after the plan, the change in the VM's own format. For libvirt the
//! domain XML with only the changed elements edited (or a unified diff of it), for Proxmox the
//! `qm set` commands for the keys that change and the hookscript, for QEMU a new launch script.

use std::fmt::Write as _;

use crate::analysis::planner::{VmPlan, existing};
use crate::config::model::{SourceFormat, VmConfig, WindowsVersion};
use crate::output::{proxmox, qemu_command};
use crate::values::text::plural;

/// An existing VM's config: where it came from, its text, and what it says.
pub struct ExistingVm<'a> {
    pub path: &'a str,
    pub text: &'a str,
    pub config: &'a VmConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ExistingError {
    #[error("cannot edit {path}: {source}")]
    Libvirt {
        path: String,
        #[source]
        source: crate::config::libvirt_edit::EditError,
    },
    #[error(transparent)]
    Proxmox(#[from] crate::config::ConfigError),
}

/// The change that brings an existing VM to a plan, in the VM's own format: what `tune` prints
/// after the plan, as text ([`VmChange::text`]) or JSON (its serde form, `"format"` naming the
/// variant).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum VmChange {
    /// The domain XML with only the changed elements edited.
    Libvirt {
        path: String,
        /// Each edit, in words.
        changes: Vec<String>,
        /// The whole edited domain XML.
        edited: String,
        /// `edited` against the original as a unified diff.
        diff: String,
    },
    /// `qm set` settings for the keys whose value changes, keys to delete, and the hookscript.
    Proxmox {
        path: String,
        set: Vec<ProxmoxSetting>,
        /// Guest NUMA nodes (`numaN`) the plan does not have ([`crate::config::proxmox_edit::ConfigChanges::delete`]).
        delete: Vec<String>,
        /// Where Proxmox looks for the hookscript (`hookscript: local:snippets/NAME`).
        hookscript_path: String,
        hookscript: String,
        not_expressible: Vec<String>,
    },
    /// A launch script replacing the QEMU command line.
    Qemu { path: String, script: String },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProxmoxSetting {
    pub key: String,
    pub value: String,
}

/// The change that brings `vm` to the plan `planned`.
pub fn change(vm: &ExistingVm, planned: &VmPlan, windows: WindowsVersion) -> Result<VmChange, ExistingError> {
    let ExistingVm { path, text, config } = *vm;
    let path = path.to_string();
    Ok(match config.format {
        SourceFormat::Libvirt => {
            let actions = existing::actions(config, planned);
            let edited = crate::config::libvirt_edit::apply_actions(text, &actions)
                .map_err(|source| ExistingError::Libvirt { path: path.clone(), source })?;
            let diff = unified_diff(&path, text, &edited, "tuned");
            VmChange::Libvirt { changes: actions.iter().map(|a| a.describe()).collect(), edited, diff, path }
        }
        SourceFormat::Proxmox => {
            // Only the keys whose value changes.
            let output = proxmox::render(planned, windows);
            let changes = crate::config::proxmox_edit::changes(&path, text, &output.config)?;
            VmChange::Proxmox {
                set: changes.set.into_iter().map(|(key, value)| ProxmoxSetting { key, value }).collect(),
                delete: changes.delete,
                hookscript_path: format!("/var/lib/vz/snippets/{}", proxmox::hookscript_name(planned)),
                hookscript: output.hookscript,
                not_expressible: output.not_expressible,
                path,
            }
        }
        SourceFormat::QemuArgv => VmChange::Qemu { script: qemu_command::script(planned, windows), path },
    })
}

impl VmChange {
    /// The change as `tune` prints it after the plan; with `diff`, a libvirt domain's change as a
    /// unified diff instead of the whole edited XML.
    pub fn text(&self, diff: bool) -> String {
        let mut out = String::new();
        match self {
            VmChange::Libvirt { path, changes, edited, diff: unified } => {
                let _ = writeln!(out, "\n# {} to {path}:", plural(changes.len(), "change"));
                for change in changes {
                    let _ = writeln!(out, "#   {change}");
                }
                out.push_str(if diff { unified } else { edited });
            }
            VmChange::Proxmox { path, set, delete, hookscript_path, hookscript, not_expressible } => {
                let settings = set.iter().map(|s| (s.key.as_str(), s.value.as_str()));
                let _ =
                    write!(out, "\n# changes to {path} as qm set commands\n{}", proxmox::qm_set(settings));
                if !delete.is_empty() {
                    let _ = write!(
                        out,
                        "# guest NUMA nodes the plan does not have (their memory would no longer add up to the VM's)\n{}",
                        proxmox::qm_delete(delete)
                    );
                }
                for note in not_expressible {
                    let _ = writeln!(out, "# not expressible here: {note}");
                }
                let _ = write!(out, "\n# hookscript: {hookscript_path}\n{hookscript}");
            }
            VmChange::Qemu { path, script } => {
                let _ = write!(out, "\n# QEMU launch script replacing {path}\n{script}");
            }
        }
        out
    }
}

/// `before` against `after` as a unified diff, `after` labelled `path (label)`.
pub fn unified_diff(path: &str, before: &str, after: &str, label: &str) -> String {
    let diff = similar::TextDiff::from_lines(before, after);
    diff.unified_diff().header(path, &format!("{path} ({label})")).to_string()
}
