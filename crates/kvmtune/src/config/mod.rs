//! The VM configuration model and its readers.
//!
//! Every reader turns one format into the same typed model, [`model::VmConfig`], whose values
//! carry [`span::Span`]s back into the original text. Rules read the model; diagnostics and
//! fixes use the spans. A new format gets a reader module here that produces a `VmConfig`.
//!
//! - [`libvirt`]: libvirt domain XML (roxmltree keeps byte ranges; edits splice the original).
//! - [`qemu`]: a QEMU command line, in an argv file, a launch script or an options profile.
//! - [`proxmox`]: a Proxmox VE VM config, with qemu-server's derived settings.
//! - [`host_needs`]: what a VM needs from its host while it runs, one type for the plan, the
//!   domain's `<metadata><kvmtune:host>` (which the libvirt hook acts on), `host prepare`'s
//!   command line and flags.
//! - [`libvirt_edit`] and [`proxmox_edit`]: the minimal change to an existing config in its own
//!   format (spliced XML edits; the keys `qm set` must change).
//!
//! [`read`] tells the formats apart.

pub mod cpuset;
pub mod edit;
pub mod host_needs;
pub mod inputs;
pub mod libvirt;
pub mod libvirt_edit;
pub mod model;
pub mod proxmox;
pub mod proxmox_edit;
pub mod qemu;
pub mod shell;

use thiserror::Error;

pub use model::VmConfig;

/// Why a VM config could not be read. Every variant carries the place in the file.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Not well-formed XML.
    #[error("{path}:{line}:{column}: malformed XML: {message}")]
    MalformedXml { path: String, line: u32, column: u32, message: String },
    /// Well-formed, but a value has the wrong type or an element is one libvirt would reject.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: String, line: u32, column: u32, message: String },
    /// Readable, but not a VM config at all (another libvirt object, a text with no QEMU
    /// options): in a directory of configs such a file is passed over, not a bad input.
    #[error("{path}:{line}:{column}: {message}")]
    NotAConfig { path: String, line: u32, column: u32, message: String },
}

/// Reads a config in whichever format the text is in: XML is libvirt; `key: value` lines with
/// Proxmox keys are Proxmox; anything with a QEMU binary or QEMU options is a command line.
pub fn read(path: &str, text: &str) -> Result<VmConfig, ConfigError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('<') {
        return libvirt::parse(path, text);
    }
    if looks_like_proxmox(text) {
        return proxmox::parse(path, text);
    }
    qemu::parse(path, text)
}

fn looks_like_proxmox(text: &str) -> bool {
    const KEYS: &[&str] = &[
        "ostype",
        "cores",
        "sockets",
        "memory",
        "cpu",
        "machine",
        "bios",
        "numa",
        "hugepages",
        "affinity",
        "args",
        "vga",
        "balloon",
        "boot",
        "bootdisk",
        "smbios1",
        "vmgenid",
        "scsihw",
        "name",
        "tablet",
        "vcpus",
        "kvm",
    ];
    let mut proxmox_lines = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.starts_with('[') {
            break;
        }
        let Some((key, _)) = line.split_once(':') else { return false };
        let key = key.trim();
        let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
        if KEYS.contains(&key)
            || [
                "hostpci",
                "net",
                "scsi",
                "virtio",
                "sata",
                "ide",
                "usb",
                "efidisk",
                "tpmstate",
                "unused",
                "serial",
                "numa",
                "parallel",
                "hookscript",
            ]
            .contains(&base)
        {
            proxmox_lines += 1;
        } else if !key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
            return false;
        }
    }
    proxmox_lines > 0
}

/// QEMU arguments appended after a config's own (Proxmox `args:`, libvirt
/// `<qemu:commandline>`), read as a command line of their own, applied over the config as QEMU
/// applies them: what they set wins.
pub(crate) fn apply_passthrough(config: &mut VmConfig, extra: VmConfig) {
    // QEMU keeps only the last `-cpu`: one passed through replaces the whole CPU (every
    // enlightenment with it); without one, single properties still win.
    if extra.cpu.mode.is_some() || extra.cpu.model.is_some() {
        config.hyperv = extra.hyperv;
        config.kvm = extra.kvm;
        config.cpu.features = extra.cpu.features;
        config.cpu.mode = extra.cpu.mode;
        config.cpu.model = extra.cpu.model;
        config.cpu.migratable = extra.cpu.migratable;
        config.cpu.cache_mode = extra.cpu.cache_mode;
    } else {
        for feature in extra.hyperv.features {
            config.hyperv.features.retain(|f| f.name != feature.name);
            config.hyperv.features.push(feature);
        }
        if extra.hyperv.mode.is_some() {
            config.hyperv.mode = extra.hyperv.mode;
        }
        config.kvm.extend(extra.kvm);
        config.cpu.features.extend(extra.cpu.features);
    }
    // Likewise the last `-smp`.
    if extra.vcpus.is_some() {
        config.vcpus = extra.vcpus;
        config.cpu.topology = extra.cpu.topology;
    }
    for timer in &extra.clock.timers {
        config.clock.timers.retain(|t| t.name != timer.name);
    }
    config.clock.timers.extend(extra.clock.timers);
    if extra.clock.offset.is_some() {
        config.clock.offset = extra.clock.offset;
    }
    if extra.tpr_patching.is_some() {
        config.tpr_patching = extra.tpr_patching;
    }
    config.devices.hostdevs.extend(extra.devices.hostdevs);
    config.devices.inputs.extend(extra.devices.inputs);
}
