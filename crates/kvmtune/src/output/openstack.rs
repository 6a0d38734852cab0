//! A plan as OpenStack Nova flavor extra specs and Glance image properties (names as in Nova's
//! flavor and image metadata documentation). Nova's libvirt driver turns `os_type=windows`
//! into Hyper-V enlightenments, localtime, RTC catchup, PIT delay and the hypervclock itself; it picks dedicated host CPUs on its
//! own, so the plan's exact CPUs and the enlightenments Nova does not set are listed as not
//! expressible.

use crate::analysis::planner::VmPlan;
use crate::config::model::WindowsVersion;
use crate::knowledge::hyperv::Hv;

pub struct OpenStackOutput {
    pub flavor: Vec<(String, String)>,
    pub image: Vec<(String, String)>,
    pub not_expressible: Vec<String>,
}

/// What Nova's libvirt driver enables for `os_type=windows` (nova/virt/libvirt/driver.py
/// `_set_features`, and hypervclock in `_set_kvm_timers`; ../shared/landscape.md, Nova at
/// 00a0304). No hv-stimer, and hv-evmcs and hv-reenlightenment were removed after regressions:
/// the rest of a plan's set is not expressible.
const NOVA_WINDOWS_ENLIGHTENMENTS: &[Hv] = &[
    Hv::Relaxed,
    Hv::Vapic,
    Hv::Spinlocks,
    Hv::Vpindex,
    Hv::Runtime,
    Hv::Synic,
    Hv::Reset,
    Hv::Frequencies,
    Hv::Tlbflush,
    Hv::Ipi,
    Hv::Time,
];

pub fn render(vm: &VmPlan, windows: WindowsVersion) -> OpenStackOutput {
    let pair = |k: &str, v: String| (k.to_string(), v);
    let mut flavor = vec![
        pair("hw:cpu_policy", "dedicated".into()),
        pair("hw:cpu_thread_policy", if vm.topology.threads > 1 { "require" } else { "isolate" }.into()),
        pair("hw:cpu_sockets", vm.topology.sockets.to_string()),
        pair("hw:cpu_cores", vm.topology.cores.to_string()),
        pair("hw:cpu_threads", vm.topology.threads.to_string()),
        pair("hw:emulator_threads_policy", "share".into()),
        pair("hw:numa_nodes", vm.guest_numa.len().max(1).to_string()),
    ];
    // A VM that spans host nodes: Nova's guest NUMA nodes, with their vCPUs and memory.
    for cell in &vm.guest_numa {
        flavor.push(pair(&format!("hw:numa_cpus.{}", cell.id), cell.vcpus.to_string()));
        flavor.push(pair(&format!("hw:numa_mem.{}", cell.id), cell.memory_mib.to_string()));
    }
    if let Some(hugepages) = &vm.hugepages {
        flavor.push(pair(
            "hw:mem_page_size",
            if hugepages.page_size_kib == 1_048_576 { "1GB" } else { "2MB" }.into(),
        ));
    } else {
        flavor.push(pair("hw:mem_page_size", "large".into()));
    }
    let efi = windows.boots_uefi();
    let tpm = windows.needs_tpm();
    let mut image = vec![
        pair("os_type", "windows".into()),
        pair("hw_machine_type", "q35".into()),
        pair("hw_disk_bus", "virtio".into()),
        pair("hw_vif_model", "virtio".into()),
        pair("hw_vif_multiqueue_enabled", "true".into()),
        pair("hw_time_hpet", if vm.clock.hpet { "true" } else { "false" }.into()),
    ];
    if efi {
        image.push(pair("hw_firmware_type", "uefi".into()));
    }
    if tpm {
        image.push(pair("hw_tpm_version", "2.0".into()));
        image.push(pair("hw_tpm_model", "tpm-crb".into()));
        image.push(pair("os_secure_boot", "required".into()));
    }
    let mut not_expressible = vec![
        format!("exact host CPUs (vCPUs on {}): Nova's scheduler picks dedicated CPUs from [compute] cpu_dedicated_set; leave {} out of it", vm.placement.cpus(), vm.emulator_cpus),
        "emulator thread on housekeeping CPUs: `share` puts it on [compute] cpu_shared_set, which should be those CPUs".into(),
    ];
    let missing: Vec<Hv> = vm
        .enlightenments
        .iter()
        .map(|e| e.name)
        .filter(|n| !NOVA_WINDOWS_ENLIGHTENMENTS.contains(n))
        .collect();
    if !missing.is_empty() {
        let mut note = format!(
            "{}: Nova sets its own Hyper-V list for os_type=windows and has no property for these",
            missing.iter().map(|hv| hv.qemu()).collect::<Vec<_>>().join(", ")
        );
        if missing.contains(&Hv::Avic) {
            note.push_str(&format!("; {}", super::WITHOUT_HV_AVIC));
        }
        not_expressible.push(note);
    }
    if vm.cpu.features.iter().any(|f| f.name == "invtsc") {
        not_expressible.push(
            "invtsc: no flavor property; set [libvirt] cpu_model_extra_flags = invtsc on the compute node"
                .into(),
        );
    }
    for feature in vm.cpu.features.iter().filter(|f| f.policy == "disable") {
        let why = match feature.name {
            "arch-capabilities" => "this host's KVM refuses the value host-passthrough copies",
            "svm" => "with it, this host's kernel switches AVIC off for the whole VM (CPU007)",
            "x2apic" => "with it, this host's kernel switches AVIC off for the whole VM (CPU008)",
            _ => "the plan turns it off",
        };
        not_expressible.push(format!(
            "{} off ({why}): no flavor or image property turns a CPU feature off; the compute node's CPU configuration has to (docs.openstack.org/nova/latest/admin/cpu-models.html)",
            feature.name
        ));
    }
    if vm.clock.pit_tickpolicy != "delay" {
        not_expressible.push(format!(
            "PIT {}: Nova's libvirt driver writes tickpolicy='delay' for Windows guests, and on this host the reinjection that asks for switches AVIC off for the whole VM (TIME007)",
            vm.clock.pit_tickpolicy
        ));
    }
    if missing.contains(&Hv::Stimer) && !vm.clock.hpet {
        not_expressible.push("HPET off needs hv-stimer, which Nova never sets: keep hw_time_hpet=true under Nova, or Windows falls back to the RTC".into());
        if let Some(entry) = image.iter_mut().find(|(k, _)| k == "hw_time_hpet") {
            entry.1 = "true".into();
        }
    }
    OpenStackOutput { flavor, image, not_expressible }
}

pub fn commands(output: &OpenStackOutput, name: &str) -> String {
    let mut out = String::new();
    for note in &output.not_expressible {
        out.push_str(&format!("# not expressible here: {note}\n"));
    }
    out.push_str(&format!("openstack flavor set {name}"));
    for (key, value) in &output.flavor {
        out.push_str(&format!(" \\\n  --property {key}={value}"));
    }
    out.push_str(&format!("\nopenstack image set {name}-image"));
    for (key, value) in &output.image {
        out.push_str(&format!(" \\\n  --property {key}={value}"));
    }
    out.push('\n');
    out
}
