//! One interface for every format a plan can be emitted in. Each format's module renders a VM
//! plan; [`emit`] wraps the result in the same shape for all of them: the text a person pastes,
//! the JSON a tool reads, and what the format cannot express. A new format is one module and
//! one arm in [`emit`].

use serde::Serialize;

use crate::analysis::planner::VmPlan;
use crate::config::model::WindowsVersion;
use crate::output::{kubevirt, libvirt_domain, openstack, proxmox, qemu_command};

/// The formats a plan can be emitted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmitFormat {
    Libvirt,
    Qemu,
    Proxmox,
    Kubevirt,
    Openstack,
}

impl EmitFormat {
    pub const ALL: [EmitFormat; 5] = [
        EmitFormat::Libvirt,
        EmitFormat::Qemu,
        EmitFormat::Proxmox,
        EmitFormat::Kubevirt,
        EmitFormat::Openstack,
    ];

    /// The member of `tune --format json` output that holds this format.
    pub fn key(self) -> &'static str {
        match self {
            EmitFormat::Libvirt => "libvirt",
            EmitFormat::Qemu => "qemu",
            EmitFormat::Proxmox => "proxmox",
            EmitFormat::Kubevirt => "kubevirt",
            EmitFormat::Openstack => "openstack",
        }
    }
}

/// One VM in one format.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub format: EmitFormat,
    /// For people: a heading comment and the config, script or manifest, ready to paste.
    pub text: String,
    /// For tools: the same content as data.
    pub json: serde_json::Value,
    /// What the plan wants that this format has no way to say; also in `text` as comments.
    pub not_expressible: Vec<String>,
}

pub fn emit(format: EmitFormat, vm: &VmPlan, windows: WindowsVersion) -> Emitted {
    match format {
        EmitFormat::Libvirt => {
            let xml = libvirt_domain::render_domain(vm, windows);
            Emitted {
                format,
                text: format!("\n# libvirt domain XML for {} (virsh define FILE)\n{xml}", vm.name),
                json: serde_json::Value::String(xml),
                not_expressible: Vec::new(),
            }
        }
        EmitFormat::Qemu => Emitted {
            format,
            text: format!("\n# QEMU launch script for {}\n{}", vm.name, qemu_command::script(vm, windows)),
            json: qemu_command::argv(vm, windows).into(),
            not_expressible: Vec::new(),
        },
        EmitFormat::Proxmox => {
            let output = proxmox::render(vm, windows);
            let mut text = format!("\n# Proxmox VE: /etc/pve/qemu-server/VMID.conf for {}\n", vm.name);
            for note in &output.not_expressible {
                text.push_str(&format!("# not expressible here: {note}\n"));
            }
            let config = proxmox::config_text(&output);
            let qm_set = proxmox::qm_set(output.config.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            text.push_str(&config);
            text.push_str(&format!(
                "\n# the same as qm set commands (they also allocate the disks)\n{qm_set}"
            ));
            text.push_str(&format!(
                "\n# hookscript: /var/lib/vz/snippets/{}\n{}",
                proxmox::hookscript_name(vm),
                output.hookscript
            ));
            Emitted {
                format,
                text,
                json: serde_json::json!({
                    "config": config,
                    "qm_set": qm_set,
                    "hookscript": output.hookscript,
                    "not_expressible": output.not_expressible,
                }),
                not_expressible: output.not_expressible,
            }
        }
        EmitFormat::Kubevirt => {
            let manifest = kubevirt::render(vm, windows);
            Emitted {
                format,
                text: format!("\n{}", kubevirt::to_yaml(&manifest)),
                json: serde_json::json!({
                    "manifest": manifest.document,
                    "not_expressible": manifest.not_expressible,
                }),
                not_expressible: manifest.not_expressible,
            }
        }
        EmitFormat::Openstack => {
            let output = openstack::render(vm, windows);
            let as_map = |pairs: &[(String, String)]| -> std::collections::BTreeMap<String, String> {
                pairs.iter().cloned().collect()
            };
            Emitted {
                format,
                text: format!(
                    "\n# OpenStack Nova for {}\n{}",
                    vm.name,
                    openstack::commands(&output, &vm.name)
                ),
                json: serde_json::json!({
                    "flavor_extra_specs": as_map(&output.flavor),
                    "image_properties": as_map(&output.image),
                    "not_expressible": output.not_expressible,
                }),
                not_expressible: output.not_expressible,
            }
        }
    }
}
