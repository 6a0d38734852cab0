//! A plan as a KubeVirt `VirtualMachine` manifest (kubevirt.io/v1), field names as in KubeVirt's
//! API (../shared/knowledge.md 3; checked against its schema in the tests).
//!
//! KubeVirt leaves the choice of host CPUs to the kubelet's CPU manager, so the plan's exact
//! pinning becomes "dedicated CPUs, an isolated emulator thread, guest NUMA mapped to the host".
//! Whatever the manifest cannot say is listed in [`Manifest::not_expressible`].

use serde_json::{Map, Value, json};

use crate::analysis::planner::VmPlan;
use crate::config::model::WindowsVersion;
use crate::knowledge::hyperv::Hv;

pub struct Manifest {
    pub document: Value,
    pub not_expressible: Vec<String>,
}

/// KubeVirt's `features.hyperv` keys for QEMU's properties; `None` where it has none.
fn hyperv_key(hv: Hv) -> Option<&'static str> {
    Some(match hv {
        Hv::Relaxed => "relaxed",
        Hv::Vapic => "vapic",
        Hv::Vpindex => "vpindex",
        Hv::Runtime => "runtime",
        Hv::Synic => "synic",
        Hv::Stimer => "synictimer",
        Hv::Reset => "reset",
        Hv::Frequencies => "frequencies",
        Hv::Reenlightenment => "reenlightenment",
        Hv::Tlbflush => "tlbflush",
        Hv::Ipi => "ipi",
        Hv::Evmcs => "evmcs",
        Hv::Spinlocks => "spinlocks",
        Hv::VendorId => "vendorid",
        _ => return None,
    })
}

pub fn render(vm: &VmPlan, windows: WindowsVersion) -> Manifest {
    let mut not_expressible = vec![format!(
        "exact host CPUs (vCPUs on {}): KubeVirt's CPU manager picks dedicated CPUs itself; give the node a static CPU manager policy with reserved CPUs {} so the pick avoids them",
        vm.placement.cpus(),
        vm.emulator_cpus
    )];
    let on = |hv: Hv| vm.enlightenments.iter().any(|e| e.name == hv);
    let mut hyperv = Map::new();
    for choice in &vm.enlightenments {
        match (choice.name, hyperv_key(choice.name)) {
            (Hv::Time | Hv::StimerDirect | Hv::TlbflushDirect, _) => {}
            (Hv::Spinlocks, Some(key)) => {
                let retries: u64 = choice
                    .value
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(crate::knowledge::recommended::SPINLOCK_RETRIES.into());
                hyperv.insert(key.into(), json!({ "spinlocks": retries }));
            }
            (Hv::Stimer, Some(key)) => {
                let mut timer = json!({});
                if on(Hv::StimerDirect) {
                    timer["direct"] = json!({});
                }
                hyperv.insert(key.into(), timer);
            }
            (Hv::Tlbflush, Some(key)) => {
                let mut flush = json!({});
                if on(Hv::TlbflushDirect) {
                    flush["direct"] = json!({});
                }
                hyperv.insert(key.into(), flush);
            }
            (_, Some(key)) => {
                hyperv.insert(key.into(), json!({}));
            }
            (Hv::Avic, None) => not_expressible.push(format!(
                "{}: KubeVirt's features.hyperv has no field for it; {}",
                Hv::Avic,
                super::WITHOUT_HV_AVIC
            )),
            (name, None) => {
                not_expressible.push(format!("{name}: KubeVirt's features.hyperv has no field for it"))
            }
        }
    }
    let mut cpu = json!({
        "sockets": vm.topology.sockets,
        "cores": vm.topology.cores,
        "threads": vm.topology.threads,
        "model": vm.cpu.mode,
        "dedicatedCpuPlacement": true,
        "isolateEmulatorThread": true,
    });
    if !vm.cpu.features.is_empty() {
        cpu["features"] =
            vm.cpu.features.iter().map(|f| json!({ "name": f.name, "policy": f.policy })).collect();
    }
    let mut memory = json!({ "guest": format!("{}Mi", vm.memory_mib) });
    match &vm.hugepages {
        Some(hugepages) => {
            memory["hugepages"] = json!({ "pageSize": if hugepages.page_size_kib == 1_048_576 { "1Gi" } else { "2Mi" } });
            // guestMappingPassthrough needs hugepages.
            cpu["numa"] = json!({ "guestMappingPassthrough": {} });
        }
        None if !vm.guest_numa.is_empty() => not_expressible.push(format!("guest NUMA nodes ({} mirroring the host's): KubeVirt's guestMappingPassthrough needs hugepages, which the host has not reserved; without them the guest sees one node", vm.guest_numa.len())),
        None => not_expressible.push("guest NUMA mapping: KubeVirt's guestMappingPassthrough needs hugepages, which the host has not reserved".into()),
    }
    if vm.cpu.cache_passthrough {
        not_expressible
            .push("cache passthrough (<cache mode='passthrough'/>): not in KubeVirt's CPU API".into());
    }
    if vm.memory_node.is_some() {
        not_expressible.push("numatune strict to one node: KubeVirt leaves memory placement to the kubelet's memory manager (policy Static)".into());
    }
    let mut timer = json!({
        "rtc": { "tickPolicy": vm.clock.rtc_tickpolicy },
        "pit": { "tickPolicy": vm.clock.pit_tickpolicy },
        "hpet": { "present": vm.clock.hpet },
    });
    if vm.clock.hypervclock {
        timer["hyperv"] = json!({});
    }
    not_expressible.push(
        "clock offset localtime: KubeVirt offers UTC or a named timezone; set spec.domain.clock.timezone to the guest's zone, or keep UTC and set RealTimeIsUniversal in Windows".into(),
    );
    let tpm = windows.needs_tpm();
    let mut features = json!({ "acpi": {}, "apic": {} });
    if !hyperv.is_empty() {
        features["hyperv"] = Value::Object(hyperv);
    }
    if tpm {
        features["smm"] = json!({});
    }
    let mut devices = json!({
        "disks": [{ "name": "rootdisk", "disk": { "bus": "virtio" }, "dedicatedIOThread": true }],
        "interfaces": [{ "name": "default", "masquerade": {}, "model": "virtio" }],
        "networkInterfaceMultiqueue": true,
        "autoattachMemBalloon": vm.memballoon,
    });
    if tpm {
        devices["tpm"] = json!({ "persistent": true });
    }
    if !vm.devices.is_empty() {
        devices["hostDevices"] = vm
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| json!({ "name": format!("hostdev{i}"), "deviceName": format!("REPLACE-with-permittedHostDevices-name-of-{}", d.address) }))
            .collect();
        not_expressible.push("PCI addresses: KubeVirt passes devices by the resource name the cluster's permittedHostDevices gives them; replace deviceName".into());
    }
    let mut domain = json!({
        "cpu": cpu,
        "memory": memory,
        "clock": { "utc": {}, "timer": timer },
        "features": features,
        "devices": devices,
        "ioThreadsPolicy": "shared",
        "machine": { "type": "q35" },
    });
    if windows.boots_uefi() {
        domain["firmware"] = json!({ "bootloader": { "efi": { "secureBoot": tpm, "persistent": true } } });
    }
    let name = vm.name.to_lowercase();
    let document = json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": { "name": name },
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": { "labels": { "kubevirt.io/domain": name } },
                "spec": {
                    "domain": domain,
                    "networks": [{ "name": "default", "pod": {} }],
                    "volumes": [{ "name": "rootdisk", "persistentVolumeClaim": { "claimName": format!("{name}-root") } }],
                },
            },
        },
    });
    Manifest { document, not_expressible }
}

/// YAML with the limits as comments on top.
pub fn to_yaml(manifest: &Manifest) -> String {
    let mut out = String::from("# kvmtune tune: KubeVirt VirtualMachine\n");
    for note in &manifest.not_expressible {
        out.push_str(&format!("# not expressible here: {note}\n"));
    }
    out.push_str(
        &serde_saphyr::to_string(&manifest.document).unwrap_or_else(|e| format!("# YAML error: {e}\n")),
    );
    out
}
