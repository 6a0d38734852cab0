//! Tuning a VM that exists: its config says what the user chose (vCPU count, memory, devices,
//! Windows version, migration), the plan says what should change, and the change is a list of
//! [`ConfigEdit`]s, which the libvirt editor applies losslessly: only what differs is touched.

use crate::analysis::planner::{Decision, VmPlan, VmRequest};
use crate::config::edit::ConfigEdit;
use crate::config::model::HvFeature;
use crate::config::model::VmConfig;
use crate::host::HostFacts;
use crate::knowledge::hyperv::Hv;
use crate::values::PciAddress;

/// The VM request an existing config stands for; `vcpus` and `memory_mib` override it. Its
/// passed-through devices that this host does not list are left out of the placement, named
/// together in one decision (the config may come from another machine, or the host's PCI
/// facts are unreadable).
pub fn request_from_config(
    config: &VmConfig,
    host: &HostFacts,
    vcpus: Option<u32>,
    memory_mib: Option<u64>,
) -> (VmRequest, Option<Decision>) {
    let listed = |address: &PciAddress| {
        host.pci_devices.known().is_some_and(|devices| devices.iter().any(|d| d.address == *address))
    };
    let (devices, missing): (Vec<PciAddress>, Vec<PciAddress>) =
        config.devices.hostdevs.iter().filter_map(|h| h.pci_address).partition(listed);
    let missing: Vec<String> = missing.iter().map(PciAddress::to_string).collect();
    let note = (!missing.is_empty()).then(|| {
        let (which, verb) = match missing.as_slice() {
            [one] => (format!("device {one}"), "is"),
            many => (format!("{} devices ({})", many.len(), many.join(", ")), "are"),
        };
        Decision::new(
            "devices",
            "placement without a device",
            format!(
                "{which} {verb} not on this host's PCI list: the placement does not follow their NUMA node"
            ),
            "kvmtune probe (PCI devices)",
        )
    });
    let request = VmRequest {
        name: config.name.clone().unwrap_or_else(|| "vm".to_string()),
        vcpus: vcpus.or(config.vcpus.as_ref().map(|v| v.value)),
        memory_mib: memory_mib.or(config.memory.size_kib.as_ref().map(|m| m.value / 1024)).unwrap_or(8192),
        devices,
    };
    (request, note)
}

/// What to change in `config` so that it becomes `plan`, nothing more.
pub fn actions(config: &VmConfig, plan: &VmPlan) -> Vec<ConfigEdit> {
    let mut actions = Vec::new();
    // Enlightenments: missing ones on, ones the plan leaves out off (vendor_id is the user's).
    if !config.hyperv.passthrough() {
        let missing: Vec<Hv> =
            plan.enlightenments.iter().map(|e| e.name).filter(|hv| !config.hyperv.is_on(*hv)).collect();
        if !missing.is_empty() {
            actions.push(ConfigEdit::EnableHyperv { features: missing });
        }
        // Properties kvmtune does not know are the user's too.
        for feature in config.hyperv.features.iter().filter(|f| f.on).filter_map(HvFeature::hv) {
            if feature != Hv::VendorId && !plan.enlightenments.iter().any(|e| e.name == feature) {
                actions.push(ConfigEdit::DisableHyperv { feature });
            }
        }
        if let Some(planned) = plan.enlightenments.iter().find(|e| e.name == Hv::Spinlocks)
            && let Some(retries) = planned.value.as_deref().and_then(|v| v.parse::<u32>().ok())
            && config.hyperv.get(Hv::Spinlocks).and_then(|f| f.value.as_deref()) != planned.value.as_deref()
        {
            actions.push(ConfigEdit::SetSpinlockRetries { retries });
        }
    }
    // Clock.
    if config.clock.offset.as_ref().map(|o| o.value.as_str()) != Some(plan.clock.offset) {
        actions.push(ConfigEdit::SetClockOffset { offset: plan.clock.offset.to_string() });
    }
    let timer_attribute = |name: &str, key: &str, value: &str| -> Option<ConfigEdit> {
        let timer = config.clock.timer(name);
        let current = match key {
            "tickpolicy" => timer.and_then(|t| t.tickpolicy.clone()),
            _ => timer.and_then(|t| t.present).map(|p| if p { "yes" } else { "no" }.to_string()),
        };
        (current.as_deref() != Some(value))
            .then(|| ConfigEdit::SetTimer { name: name.into(), attributes: vec![(key.into(), value.into())] })
    };
    actions.extend(timer_attribute("rtc", "tickpolicy", plan.clock.rtc_tickpolicy));
    actions.extend(timer_attribute("pit", "tickpolicy", plan.clock.pit_tickpolicy));
    actions.extend(timer_attribute("hpet", "present", if plan.clock.hpet { "yes" } else { "no" }));
    // CPU.
    let mode_differs = config.cpu.mode.as_ref().map(|m| m.value.as_str()) != Some(plan.cpu.mode);
    if mode_differs || config.cpu_migratable() != plan.cpu.migratable {
        actions.push(ConfigEdit::SetCpuMode { mode: plan.cpu.mode.into(), migratable: plan.cpu.migratable });
    }
    let topology =
        config.cpu.topology.as_ref().map(|t| (t.value.sockets, t.value.dies, t.value.cores, t.value.threads));
    let wanted = (plan.topology.sockets, plan.topology.dies, plan.topology.cores, plan.topology.threads);
    if topology != Some(wanted) {
        actions.push(ConfigEdit::SetCpuTopology {
            sockets: wanted.0,
            dies: wanted.1,
            cores: wanted.2,
            threads: wanted.3,
        });
    }
    if plan.cpu.cache_passthrough
        && config.cpu.cache_mode.as_ref().map(|c| c.value.as_str()) != Some("passthrough")
    {
        actions.push(ConfigEdit::SetCpuCacheMode { mode: "passthrough".into() });
    }
    for feature in &plan.cpu.features {
        let enable = feature.policy != "disable";
        if !config.cpu.features.iter().any(|f| f.name == feature.name && f.enables() == enable) {
            let name = feature.name.into();
            actions.push(if enable {
                ConfigEdit::RequireCpuFeature { name }
            } else {
                ConfigEdit::DisableCpuFeature { name }
            });
        }
    }
    if config.hypervisor_bit_disabled().is_some() {
        actions.push(ConfigEdit::RemoveCpuFeature { name: "hypervisor".into() });
    }
    // Threads and pins. Each virtio disk gets an iothread of its own (one no disk uses does
    // nothing), and every iothread is pinned to the housekeeping CPUs.
    let attach = config.devices.iothreads_for_unattached_disks();
    let in_use =
        config.devices.disks.iter().filter_map(|d| d.iothread).chain(attach.iter().map(|(_, id)| *id));
    let declared = config.iothreads.as_ref().map_or(0, |n| n.value);
    let iothread_count = in_use.max().unwrap_or(0).max(plan.iothreads).max(declared);
    if declared < iothread_count {
        actions.push(ConfigEdit::SetIothreads { count: iothread_count });
    }
    for (target, iothread) in attach {
        actions.push(ConfigEdit::AttachDiskIothread { target, iothread });
    }
    let pins: Vec<(u32, String)> =
        plan.placement.vcpu_cpus.iter().enumerate().map(|(v, cpu)| (v as u32, cpu.to_string())).collect();
    let current: Vec<(u32, String)> =
        config.pinning.vcpupin.iter().map(|p| (p.id, p.cpus.to_string())).collect();
    let emulator_now = config.pinning.emulatorpin.as_ref().map(|e| e.value.to_string());
    let iothreads: Vec<(u32, String)> =
        (1..=iothread_count).map(|i| (i, plan.iothread_cpus.to_string())).collect();
    let iothreads_now: Vec<(u32, String)> =
        config.pinning.iothreadpin.iter().map(|p| (p.id, p.cpus.to_string())).collect();
    if current != pins || emulator_now != Some(plan.emulator_cpus.to_string()) || iothreads_now != iothreads {
        actions.push(ConfigEdit::SetPins {
            vcpus: pins,
            emulator: plan.emulator_cpus.to_string(),
            iothreads,
        });
    }
    if !plan.guest_numa.is_empty() {
        let cells: Vec<_> = plan.guest_numa.iter().map(|cell| cell.as_fix()).collect();
        let mirrored = config.cpu.numa_cells.len() == cells.len()
            && config.cpu.numa_cells.iter().zip(&cells).all(|(have, want)| {
                have.cpus.to_string() == want.cpus && have.memory_kib == Some(want.memory_kib)
            })
            && config.memory.numatune.as_ref().is_some_and(|n| n.value.mode.as_deref() == Some("strict"))
            && config.memory.memnodes.len() == cells.len()
            && cells.iter().all(|want| {
                config.memory.memnodes.iter().any(|have| {
                    have.value.cellid == Some(want.id)
                        && have.value.nodeset.as_ref().map(|s| s.to_string())
                            == Some(want.host_node.to_string())
                })
            });
        if !mirrored {
            actions.push(ConfigEdit::SetGuestNuma { cells });
        }
    }
    if let Some(node) = plan.memory_node {
        let on_node = |nodeset: &Option<crate::values::CpuSet>| {
            nodeset.as_ref().map(|s| s.to_string()) == Some(node.to_string())
        };
        // Each guest cell's <memnode> overrides <memory> for its cell: all must name the node.
        let bound = config
            .memory
            .numatune
            .as_ref()
            .is_some_and(|n| n.value.mode.as_deref() == Some("strict") && on_node(&n.value.nodeset))
            && config.memory.memnodes.iter().all(|m| on_node(&m.value.nodeset));
        if !bound {
            actions.push(ConfigEdit::SetNumatune { nodeset: node.to_string() });
        }
    }
    if !plan.memballoon && config.devices.memballoon.as_ref().is_some_and(|m| m.value != "none") {
        actions.push(ConfigEdit::SetMemballoonModel { model: "none".into() });
    }
    // The host side for the libvirt hook; a request the user wrote is theirs to keep.
    if config.format == crate::config::model::SourceFormat::Libvirt && config.host_needs.is_none() {
        actions.push(ConfigEdit::SetHostNeeds { needs: plan.host_side.clone() });
    }
    actions
}
