//! Changes to an existing Proxmox VM config: the keys whose value must change and the keys to
//! delete, what `qm set` takes. The counterpart of [`crate::config::libvirt_edit`] for Proxmox;
//! it reads the config with the Proxmox reader's own line splitting.

use std::collections::BTreeMap;

use crate::config::ConfigError;
use crate::config::proxmox::{indexed_key, read_lines};
use crate::values::SourceText;

/// Keys a plan writes for a new VM that an existing VM keeps as they are: its name, its disks,
/// its NIC and its controller (disks get their iothreads below instead).
const KEPT: &[&str] = &["name", "efidisk0", "tpmstate0", "virtio0", "net0", "scsihw"];

/// What `qm set` must do to an existing config for a plan.
#[derive(Debug, Default, PartialEq)]
pub struct ConfigChanges {
    /// The planned keys whose value differs from the config's, then the disks' iothreads.
    pub set: Vec<(String, String)>,
    /// The config's guest NUMA nodes (`numaN`) that a plan setting its own `numaN` lines does not
    /// have, for `qm set --delete`. Left in place they would keep a guest node the plan dropped,
    /// and qemu-server refuses a start whose `numaN` memory does not add up to the VM's memory
    /// ("total memory for NUMA nodes must be equal to vm static memory", `Memory.pm`).
    pub delete: Vec<String>,
}

/// The changes that bring the config `text` to the `planned` keys.
pub fn changes(path: &str, text: &str, planned: &[(String, String)]) -> Result<ConfigChanges, ConfigError> {
    let lines = read_lines(&SourceText::new(path, text))?;
    let current: BTreeMap<&str, &str> =
        lines.iter().map(|line| (line.key.as_str(), line.value.as_str())).collect();
    let mut set: Vec<(String, String)> = planned
        .iter()
        .filter(|(key, _)| !KEPT.contains(&key.as_str()))
        .filter(|(key, value)| current.get(key.as_str()) != Some(&value.as_str()))
        .cloned()
        .collect();
    set.extend(disk_iothreads(&current));
    let is_numa_node = |key: &str| indexed_key(key).is_some_and(|(prefix, _)| prefix == "numa");
    let delete = if planned.iter().any(|(key, _)| is_numa_node(key)) {
        lines
            .iter()
            .map(|line| line.key.as_str())
            .filter(|key| is_numa_node(key) && !planned.iter().any(|(planned_key, _)| planned_key == key))
            .map(str::to_string)
            .collect()
    } else {
        Vec::new()
    };
    Ok(ConfigChanges { set, delete })
}

/// `iothread=1` for each virtio disk, and for SCSI disks when the controller is already
/// virtio-scsi (qemu-server gives SCSI disks an iothread only with `scsihw: virtio-scsi-single`,
/// the same guest driver as virtio-scsi-pci). An LSI or MegaRAID controller stays: Windows may
/// lack the virtio-scsi driver it would need to boot.
fn disk_iothreads(current: &BTreeMap<&str, &str>) -> Vec<(String, String)> {
    let scsihw = current.get("scsihw").copied().unwrap_or("lsi");
    let scsi_ok = scsihw.starts_with("virtio-scsi");
    let mut changes = Vec::new();
    for (key, value) in current {
        let is_disk = indexed_key(key).is_some_and(|(bus, _)| bus == "virtio" || (bus == "scsi" && scsi_ok));
        let options: Vec<&str> = value.split(',').collect();
        if !is_disk || options.contains(&"media=cdrom") || options.contains(&"iothread=1") {
            continue;
        }
        let kept: Vec<&str> = options.into_iter().filter(|o| !o.starts_with("iothread=")).collect();
        changes.push((key.to_string(), format!("{},iothread=1", kept.join(","))));
    }
    if changes.iter().any(|(k, _)| k.starts_with("scsi")) && scsihw != "virtio-scsi-single" {
        changes.push(("scsihw".to_string(), "virtio-scsi-single".to_string()));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_numa_nodes_the_plan_drops_are_stale_only_when_it_sets_its_own() {
        let text = "memory: 8192\nnuma: 1\nnuma0: cpus=0-3,hostnodes=0,memory=4096,policy=bind\n\
                    numa1: cpus=4-7,hostnodes=3,memory=4096,policy=bind\nnumademo: x\n[snap]\nnuma2: cpus=8\n";
        let plan = |keys: &[&str]| keys.iter().map(|k| (k.to_string(), String::new())).collect::<Vec<_>>();
        let delete = |keys: &[&str]| changes("100.conf", text, &plan(keys)).unwrap().delete;
        assert_eq!(delete(&["numa", "numa0"]), ["numa1"]);
        assert!(delete(&["numa0", "numa1"]).is_empty());
        // A plan without guest NUMA nodes of its own leaves the config's alone.
        assert!(delete(&["memory"]).is_empty());
    }

    #[test]
    fn only_changed_keys_and_disk_iothreads() {
        let text = "cores: 4\nmemory: 8192\nscsihw: virtio-scsi-pci\nscsi0: local:vm-100-disk-0,size=64G\n\
                    ide2: local:iso/virtio.iso,media=cdrom\nvirtio1: local:vm-100-disk-1,iothread=1\n\
                    [snap]\ncores: 2\n";
        let planned = vec![
            ("cores".to_string(), "4".to_string()),
            ("memory".to_string(), "16384".to_string()),
            ("name".to_string(), "win11".to_string()),
        ];
        let changes = changes("100.conf", text, &planned).unwrap().set;
        assert_eq!(
            changes,
            [
                ("memory".to_string(), "16384".to_string()),
                ("scsi0".to_string(), "local:vm-100-disk-0,size=64G,iothread=1".to_string()),
                ("scsihw".to_string(), "virtio-scsi-single".to_string()),
            ]
        );
    }

    #[test]
    fn a_line_without_a_colon_is_an_error_with_its_place() {
        let error = changes("100.conf", "cores: 4\nnonsense\n", &[]).unwrap_err();
        assert!(error.to_string().contains("100.conf:2:1"), "{error}");
    }
}
