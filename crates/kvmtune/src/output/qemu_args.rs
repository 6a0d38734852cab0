//! The QEMU arguments a VM config means for CPU, topology and clocks: `-cpu`, `-smp`, `-rtc`,
//! the machine's `hpet` property and the PIT tick policy.
//!
//! This follows libvirt's translation (src/qemu/qemu_command.c, summarised in
//! ../shared/knowledge.md 2a/2b) and is tested against libvirt's own expected arguments; the
//! `tune` emitter builds on it.

use crate::config::model::VmConfig;
use crate::knowledge::hyperv::Hv;

/// `-cpu` as its model and property list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuArg {
    pub model: String,
    pub properties: Vec<String>,
}

pub fn cpu(config: &VmConfig) -> CpuArg {
    let mode = config.cpu.mode.as_ref().map(|m| m.value.as_str());
    let model = match mode {
        Some("host-passthrough") => "host".to_string(),
        Some("maximum") => "max".to_string(),
        // host-model is expanded by libvirt from the host's CPU; the model name here stands for
        // that expansion.
        Some("host-model") => "host-model".to_string(),
        _ => config.cpu.model.as_ref().map_or_else(|| "qemu64".to_string(), |m| m.value.clone()),
    };
    let mut properties = Vec::new();
    if matches!(mode, Some("host-passthrough" | "maximum"))
        && let Some(migratable) = &config.cpu.migratable
    {
        properties.push(format!("migratable={}", if migratable.value { "on" } else { "off" }));
    }
    for feature in &config.cpu.features {
        properties.push(format!("{}={}", feature.name, if feature.enables() { "on" } else { "off" }));
    }
    for toggle in &config.kvm {
        match (toggle.name.as_str(), toggle.on) {
            ("hidden", true) => properties.push("kvm=off".to_string()),
            ("hint-dedicated", on) => properties.push(format!("kvm-hint-dedicated={}", on_off(on))),
            ("poll-control", on) => properties.push(format!("kvm-poll-control={}", on_off(on))),
            // libvirt only ever emits the off switch (knowledge.md 2b).
            ("pv-ipi", false) => properties.push("kvm-pv-ipi=off".to_string()),
            _ => {}
        }
    }
    if config.hyperv.passthrough() {
        properties.push(format!("{}=on", Hv::Passthrough));
    }
    for feature in config.hyperv.features.iter().filter(|f| f.on) {
        if config.hyperv.passthrough() && !matches!(feature.hv(), Some(Hv::Time | Hv::Crash)) {
            continue;
        }
        let name = &feature.name;
        properties.push(match (feature.hv(), &feature.value) {
            (Some(Hv::Spinlocks), Some(retries)) => match retries.parse::<u64>() {
                Ok(retries) => format!("{name}={retries:#x}"),
                Err(_) => format!("{name}={retries}"),
            },
            (Some(Hv::VendorId), Some(value)) => format!("{name}={value}"),
            _ => format!("{name}=on"),
        });
    }
    if let Some(tsc) = config.clock.timer("tsc")
        && let Some(frequency) = &tsc.frequency
    {
        properties.push(format!("tsc-frequency={frequency}"));
    }
    if let Some(kvmclock) = config.clock.timer("kvmclock")
        && let Some(present) = kvmclock.present
    {
        properties.push(format!("kvmclock={}", on_off(present)));
    }
    match config.cpu.cache_mode.as_ref().map(|c| c.value.as_str()) {
        Some("passthrough") => {
            properties.extend(["host-cache-info=on".to_string(), "l3-cache=off".to_string()])
        }
        Some("emulate") => properties.push("l3-cache=on".to_string()),
        Some("disable") => properties.push("l3-cache=off".to_string()),
        _ => {}
    }
    CpuArg { model, properties }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// `-smp`: (vCPUs, sockets, dies, clusters, cores, threads). Without a topology libvirt gives
/// every vCPU its own socket.
pub fn smp(config: &VmConfig) -> Option<[u64; 6]> {
    let vcpus = u64::from(config.vcpus.as_ref()?.value);
    Some(match &config.cpu.topology {
        Some(topology) => {
            let t = topology.value;
            [vcpus, t.sockets.into(), t.dies.into(), t.clusters.into(), t.cores.into(), t.threads.into()]
        }
        None => [vcpus, vcpus, 1, 1, 1, 1],
    })
}

/// `-rtc` as key=value pairs.
pub fn rtc(config: &VmConfig) -> Vec<String> {
    let mut parts = Vec::new();
    let base = config.clock.offset.as_ref().map_or("utc", |o| o.value.as_str());
    parts.push(format!("base={}", if base == "localtime" { "localtime" } else { "utc" }));
    if let Some(rtc) = config.clock.timer("rtc") {
        match rtc.track.as_deref() {
            Some("guest") => parts.push("clock=vm".to_string()),
            Some("wall") => parts.push("clock=host".to_string()),
            Some("realtime") => parts.push("clock=rt".to_string()),
            _ => {}
        }
        if rtc.tickpolicy.as_deref() == Some("catchup") {
            parts.push("driftfix=slew".to_string());
        }
    }
    parts
}

/// `Some(false)` when the config turns the HPET off (`-machine hpet=off`).
pub fn hpet(config: &VmConfig) -> Option<bool> {
    config.clock.timer("hpet").and_then(|t| t.present)
}

/// `-global kvm-pit.lost_tick_policy=<value>`.
pub fn pit_lost_tick_policy(config: &VmConfig) -> Option<&'static str> {
    match config.clock.timer("pit")?.tickpolicy.as_deref()? {
        "delay" | "none" => Some("delay"),
        "discard" => Some("discard"),
        _ => None,
    }
}
