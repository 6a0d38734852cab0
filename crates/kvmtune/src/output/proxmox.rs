//! A plan for Proxmox VE: config lines for `/etc/pve/qemu-server/VMID.conf`, the same as
//! `qm set` commands, and a hookscript that pins QEMU's threads at start, since Proxmox has no
//! per-vCPU pinning (only `affinity` for the whole process).
//!
//! qemu-server builds `-cpu` and `-smp` itself and allows only a few extra CPU flags, so the
//! plan's exact CPU (enlightenments beyond `ostype`'s, invtsc, guest SMT threads) goes into
//! `args:`, which QEMU reads after qemu-server's own options: the last `-cpu` and `-smp` win.
//! Our Proxmox reader applies `args:` the same way, which the tests use to read the result back.

use crate::analysis::planner::VmPlan;
use crate::config::model::WindowsVersion;
use crate::output::qemu_command;
use crate::values::escape;

pub struct ProxmoxOutput {
    /// `key: value` lines, in qemu-server's order.
    pub config: Vec<(String, String)>,
    pub hookscript: String,
    pub not_expressible: Vec<String>,
}

fn ostype(windows: WindowsVersion) -> &'static str {
    match windows {
        WindowsVersion::Xp => "wxp",
        WindowsVersion::Vista | WindowsVersion::Server2008 => "w2k8",
        WindowsVersion::Win7 => "win7",
        WindowsVersion::Win8 | WindowsVersion::Server2012 => "win8",
        WindowsVersion::Win10 | WindowsVersion::Server2016 | WindowsVersion::Server2019 => "win10",
        WindowsVersion::Win11 | WindowsVersion::Server2022 | WindowsVersion::Server2025 => "win11",
    }
}

pub fn hookscript_name(vm: &VmPlan) -> String {
    format!("kvmtune-{}.sh", vm.name)
}

pub fn render(vm: &VmPlan, windows: WindowsVersion) -> ProxmoxOutput {
    let mut config: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: String| config.push((key.to_string(), value));
    let efi = windows.boots_uefi();
    let tpm = windows.needs_tpm();
    let mut not_expressible = Vec::new();
    set("name", vm.name.clone());
    set("ostype", ostype(windows).into());
    set("machine", "q35".into());
    if efi {
        set("bios", "ovmf".into());
        set("efidisk0", format!("local-lvm:1,efitype=4m,pre-enrolled-keys={}", u8::from(tpm)));
    }
    if tpm {
        set("tpmstate0", "local-lvm:1,version=v2.0".into());
    }
    set("sockets", vm.topology.sockets.to_string());
    set("cores", (vm.vcpus / vm.topology.sockets.max(1)).to_string());
    set("memory", vm.memory_mib.to_string());
    set("balloon", if vm.memballoon { vm.memory_mib.to_string() } else { "0".into() });
    if let Some(hugepages) = &vm.hugepages {
        set("hugepages", if hugepages.page_size_kib == 1_048_576 { "1024".into() } else { "2".into() });
    }
    if let Some(node) = vm.memory_node {
        set("numa", "1".into());
        set(
            "numa0",
            format!(
                "cpus=0-{},hostnodes={node},memory={},policy=bind",
                vm.vcpus.saturating_sub(1),
                vm.memory_mib
            ),
        );
    }
    if !vm.guest_numa.is_empty() {
        // qemu-server's numaN: cpus are `;`-separated ranges.
        set("numa", "1".into());
        for cell in &vm.guest_numa {
            set(
                &format!("numa{}", cell.id),
                format!(
                    "cpus={},hostnodes={},memory={},policy=bind",
                    cell.vcpus.to_string().replace(',', ";"),
                    cell.host_node,
                    cell.memory_mib
                ),
            );
        }
    }
    // The whole process may run on the vCPU and housekeeping CPUs; the hookscript narrows each
    // thread down.
    set("affinity", vm.placement.cpus().union(&vm.emulator_cpus).to_string());
    set("scsihw", "virtio-scsi-single".into());
    set("virtio0", "local-lvm:64,iothread=1,aio=native,cache=none,discard=on".into());
    set("net0", format!("virtio,bridge=vmbr0,queues={}", vm.vcpus.clamp(1, 8)));
    for (index, device) in vm.devices.iter().enumerate() {
        let mut value = format!("{},pcie=1", device.address);
        if device.is_gpu {
            value.push_str(",x-vga=1");
        }
        set(&format!("hostpci{index}"), value);
    }
    if !vm.devices.iter().any(|d| d.is_gpu) {
        set("tablet", "1".into());
    } else {
        set("tablet", "0".into());
        set("vga", "none".into());
    }
    // The exact CPU: qemu-server's own -cpu (from ostype) is replaced by the plan's.
    let cpu = qemu_command::argv(vm, windows);
    let cpu_value = cpu.windows(2).find(|w| w[0] == "-cpu").map(|w| w[1].clone()).unwrap_or_default();
    let smp_value = cpu.windows(2).find(|w| w[0] == "-smp").map(|w| w[1].clone()).unwrap_or_default();
    set("cpu", "host".into());
    set(
        "args",
        format!(
            "-cpu {cpu_value} -smp {smp_value} -global kvm-pit.lost_tick_policy={}",
            vm.clock.pit_tickpolicy
        ),
    );
    set("hookscript", format!("local:snippets/{}", hookscript_name(vm)));
    if vm.clock.hpet {
        not_expressible.push("HPET on: qemu-server turns the HPET off for every guest (-machine hpet=off); with no hv-stimer on this host, Windows then falls back to the RTC".into());
    }
    not_expressible.push("per-vCPU pinning: Proxmox has only `affinity` for the whole process; the hookscript pins each thread at post-start".into());
    let mut hookscript = String::new();
    hookscript.push_str("#!/bin/sh\n");
    hookscript.push_str(&format!(
        "# kvmtune hookscript for {}: Proxmox calls it as `SCRIPT VMID PHASE`; at post-start it pins\n# QEMU's threads as planned. Install: copy to /var/lib/vz/snippets/{} and chmod +x.\n",
        vm.name,
        hookscript_name(vm)
    ));
    hookscript.push_str("vmid=\"$1\"; phase=\"$2\"\n[ \"$phase\" = post-start ] || exit 0\n");
    hookscript.push_str("pid=$(cat \"${KVMTUNE_PIDFILE:-/var/run/qemu-server/$vmid.pid}\") || exit 1\n");
    hookscript.push_str(&qemu_command::pin_threads(vm, "$pid"));
    hookscript.push_str("exit 0\n");
    ProxmoxOutput { config, hookscript, not_expressible }
}

/// The config file text.
pub fn config_text(output: &ProxmoxOutput) -> String {
    output.config.iter().map(|(key, value)| format!("{key}: {value}\n")).collect()
}

/// Settings as `qm set` commands for an existing VM.
pub fn qm_set<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("VMID=100  # your VM's id\n");
    for (key, value) in settings {
        out.push_str(&format!("qm set \"$VMID\" --{key} {}\n", escape::shell_quoted(value)));
    }
    out
}

/// `qm set --delete` for settings an existing VM has and the plan does not.
pub fn qm_delete(keys: &[String]) -> String {
    format!("qm set \"$VMID\" --delete {}\n", escape::shell_quoted(&keys.join(",")))
}
