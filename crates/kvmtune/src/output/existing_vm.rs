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

/// The change that brings `vm` to the plan `planned`, in its own format; with `diff`, a libvirt
/// domain's change as a unified diff instead of the whole edited XML.
pub fn render_change(
    vm: &ExistingVm,
    planned: &VmPlan,
    windows: WindowsVersion,
    diff: bool,
) -> Result<String, ExistingError> {
    let ExistingVm { path, text, config } = *vm;
    let mut out = String::new();
    match config.format {
        SourceFormat::Libvirt => {
            let actions = existing::actions(config, planned);
            let edited = crate::config::libvirt_edit::apply_actions(text, &actions)
                .map_err(|source| ExistingError::Libvirt { path: path.to_string(), source })?;
            let _ = writeln!(out, "\n# {} to {path}:", plural(actions.len(), "change"));
            for action in &actions {
                let _ = writeln!(out, "#   {}", action.describe());
            }
            if diff {
                out.push_str(&unified_diff(path, text, &edited, "tuned"));
            } else {
                out.push_str(&edited);
            }
        }
        SourceFormat::Proxmox => {
            // Only the keys whose value changes, as qm set commands.
            let output = proxmox::render(planned, windows);
            let changed = crate::config::proxmox_edit::changed_keys(path, text, &output.config)?;
            let stale = crate::config::proxmox_edit::stale_numa_nodes(path, text, &output.config)?;
            let changes = proxmox::ProxmoxOutput { config: changed, ..output };
            let _ = write!(out, "\n# changes to {path} as qm set commands\n{}", proxmox::qm_set(&changes));
            if !stale.is_empty() {
                let _ = write!(
                    out,
                    "# guest NUMA nodes the plan does not have (their memory would no longer add up to the VM's)\n{}",
                    proxmox::qm_delete(&stale)
                );
            }
            for note in &changes.not_expressible {
                let _ = writeln!(out, "# not expressible here: {note}");
            }
            let _ = write!(
                out,
                "\n# hookscript: /var/lib/vz/snippets/{}\n{}",
                proxmox::hookscript_name(planned),
                changes.hookscript
            );
        }
        SourceFormat::QemuArgv => {
            let _ = write!(
                out,
                "\n# QEMU launch script replacing {path}\n{}",
                qemu_command::script(planned, windows)
            );
        }
    }
    Ok(out)
}

/// `before` against `after` as a unified diff, `after` labelled `path (label)`.
pub fn unified_diff(path: &str, before: &str, after: &str, label: &str) -> String {
    let diff = similar::TextDiff::from_lines(before, after);
    diff.unified_diff().header(path, &format!("{path} ({label})")).to_string()
}
