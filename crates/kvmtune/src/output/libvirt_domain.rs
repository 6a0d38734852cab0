//! A plan as a complete libvirt domain XML for a new VM.
//!
//! Element order and spelling follow libvirt's formatdomain documentation; the result is
//! checked by libvirt itself in the tests (virt-xml-validate, `virsh define`,
//! `virsh domxml-to-native`).

use std::fmt::Write;

use crate::analysis::planner::VmPlan;
use crate::config::model::WindowsVersion;
use crate::knowledge::hyperv::Hv;
use crate::knowledge::libvirt::{HYPERV_SUB_ELEMENTS, hyperv_element};
use crate::values::escape;
use crate::values::{CpuSet, PciAddress};

/// libosinfo's id for each Windows version (osinfo-db `win-*.xml`).
pub fn libosinfo_id(windows: WindowsVersion) -> &'static str {
    match windows {
        WindowsVersion::Xp => "http://microsoft.com/win/xp",
        WindowsVersion::Vista => "http://microsoft.com/win/vista",
        WindowsVersion::Win7 => "http://microsoft.com/win/7",
        WindowsVersion::Win8 => "http://microsoft.com/win/8.1",
        WindowsVersion::Win10 => "http://microsoft.com/win/10",
        WindowsVersion::Win11 => "http://microsoft.com/win/11",
        WindowsVersion::Server2008 => "http://microsoft.com/win/2k8r2",
        WindowsVersion::Server2012 => "http://microsoft.com/win/2k12r2",
        WindowsVersion::Server2016 => "http://microsoft.com/win/2k16",
        WindowsVersion::Server2019 => "http://microsoft.com/win/2k19",
        WindowsVersion::Server2022 => "http://microsoft.com/win/2k22",
        WindowsVersion::Server2025 => "http://microsoft.com/win/2k25",
    }
}

fn hyperv_block(vm: &VmPlan, out: &mut String) {
    let on = |hv: Hv| vm.enlightenments.iter().any(|e| e.name == hv);
    let mut children = String::new();
    for choice in &vm.enlightenments {
        let Some(element) = hyperv_element(choice.name) else { continue };
        let nested: Vec<&str> = HYPERV_SUB_ELEMENTS
            .iter()
            .filter(|(parent, _, hv)| *parent == element && on(*hv))
            .map(|(_, child, _)| *child)
            .collect();
        let value = match (choice.name, &choice.value) {
            (Hv::Spinlocks, Some(retries)) => format!(" retries='{retries}'"),
            (Hv::VendorId, Some(value)) => format!(" value='{value}'"),
            _ => String::new(),
        };
        if nested.is_empty() {
            let _ = writeln!(children, "      <{element} state='on'{value}/>");
        } else {
            let _ = writeln!(children, "      <{element} state='on'{value}>");
            for child in nested {
                let _ = writeln!(children, "        <{child} state='on'/>");
            }
            let _ = writeln!(children, "      </{element}>");
        }
    }
    if !children.is_empty() {
        let _ = write!(out, "    <hyperv mode='custom'>\n{children}    </hyperv>\n");
    }
}

/// libvirt's `<address>` of a host PCI device (formatdomain.rst, "Host device assignment").
fn pci_address(address: &PciAddress) -> String {
    format!(
        "<address domain='0x{:04x}' bus='0x{:02x}' slot='0x{:02x}' function='0x{:x}'/>",
        address.domain, address.bus, address.slot, address.function
    )
}

pub fn render_domain(vm: &VmPlan, windows: WindowsVersion) -> String {
    let mut out = String::new();
    let efi = windows.boots_uefi();
    let _ = writeln!(out, "<domain type='kvm'>");
    let _ = writeln!(out, "  <name>{}</name>", escape::xml(&vm.name));
    let _ = writeln!(out, "  <metadata>");
    let _ = writeln!(
        out,
        "    <libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'>\n      <libosinfo:os id='{}'/>\n    </libosinfo:libosinfo>",
        libosinfo_id(windows)
    );
    for (depth, line) in vm.host_side.metadata_lines('\'') {
        let _ = writeln!(out, "    {}{line}", "  ".repeat(depth));
    }
    let _ = writeln!(out, "  </metadata>");
    let _ = writeln!(out, "  <memory unit='MiB'>{}</memory>", vm.memory_mib);
    let _ = writeln!(out, "  <currentMemory unit='MiB'>{}</currentMemory>", vm.memory_mib);
    if let Some(hugepages) = &vm.hugepages {
        let _ = writeln!(
            out,
            "  <memoryBacking>\n    <hugepages>\n      <page size='{}' unit='KiB'/>\n    </hugepages>\n  </memoryBacking>",
            hugepages.page_size_kib
        );
    }
    let _ = writeln!(out, "  <vcpu placement='static'>{}</vcpu>", vm.vcpus);
    let _ = writeln!(out, "  <iothreads>{}</iothreads>", vm.iothreads);
    let _ = writeln!(out, "  <cputune>");
    for (vcpu, cpu) in vm.placement.vcpu_cpus.iter().enumerate() {
        let _ = writeln!(out, "    <vcpupin vcpu='{vcpu}' cpuset='{cpu}'/>");
    }
    let _ = writeln!(out, "    <emulatorpin cpuset='{}'/>", vm.emulator_cpus);
    for iothread in 1..=vm.iothreads {
        let _ = writeln!(out, "    <iothreadpin iothread='{iothread}' cpuset='{}'/>", vm.iothread_cpus);
    }
    let _ = writeln!(out, "  </cputune>");
    if let Some(node) = vm.memory_node {
        let _ = writeln!(out, "  <numatune>\n    <memory mode='strict' nodeset='{node}'/>\n  </numatune>");
    }
    if !vm.guest_numa.is_empty() {
        let nodes: CpuSet = vm.guest_numa.iter().map(|c| c.host_node).collect();
        let _ = writeln!(out, "  <numatune>\n    <memory mode='strict' nodeset='{nodes}'/>");
        for cell in &vm.guest_numa {
            let _ = writeln!(
                out,
                "    <memnode cellid='{}' mode='strict' nodeset='{}'/>",
                cell.id, cell.host_node
            );
        }
        let _ = writeln!(out, "  </numatune>");
    }
    if efi {
        let secure = windows.needs_tpm();
        let _ = writeln!(out, "  <os firmware='efi'>");
        let _ = writeln!(out, "    <type arch='x86_64' machine='q35'>hvm</type>");
        let _ = writeln!(
            out,
            "    <firmware>\n      <feature enabled='{yes}' name='secure-boot'/>\n      <feature enabled='{yes}' name='enrolled-keys'/>\n    </firmware>",
            yes = if secure { "yes" } else { "no" }
        );
    } else {
        let _ = writeln!(out, "  <os>");
        let _ = writeln!(out, "    <type arch='x86_64' machine='q35'>hvm</type>");
    }
    let _ = writeln!(out, "    <boot dev='hd'/>");
    let _ = writeln!(out, "  </os>");
    let _ = writeln!(out, "  <features>");
    let _ = writeln!(out, "    <acpi/>");
    let _ = writeln!(out, "    <apic/>");
    hyperv_block(vm, &mut out);
    if efi && windows.needs_tpm() {
        let _ = writeln!(out, "    <smm state='on'/>");
    }
    let _ = writeln!(out, "  </features>");
    let _ = writeln!(
        out,
        "  <cpu mode='{}' check='none' migratable='{}'>",
        vm.cpu.mode,
        if vm.cpu.migratable { "on" } else { "off" }
    );
    let _ = writeln!(
        out,
        "    <topology sockets='{}' dies='{}' cores='{}' threads='{}'/>",
        vm.topology.sockets, vm.topology.dies, vm.topology.cores, vm.topology.threads
    );
    if vm.cpu.cache_passthrough {
        let _ = writeln!(out, "    <cache mode='passthrough'/>");
    }
    for feature in &vm.cpu.features {
        let _ = writeln!(out, "    <feature policy='{}' name='{}'/>", feature.policy, feature.name);
    }
    if !vm.guest_numa.is_empty() {
        let _ = writeln!(out, "    <numa>");
        for cell in &vm.guest_numa {
            let _ = writeln!(
                out,
                "      <cell id='{}' cpus='{}' memory='{}' unit='MiB'/>",
                cell.id, cell.vcpus, cell.memory_mib
            );
        }
        let _ = writeln!(out, "    </numa>");
    }
    let _ = writeln!(out, "  </cpu>");
    let _ = writeln!(out, "  <clock offset='{}'>", vm.clock.offset);
    let _ = writeln!(out, "    <timer name='rtc' tickpolicy='{}'/>", vm.clock.rtc_tickpolicy);
    let _ = writeln!(out, "    <timer name='pit' tickpolicy='{}'/>", vm.clock.pit_tickpolicy);
    let _ = writeln!(out, "    <timer name='hpet' present='{}'/>", if vm.clock.hpet { "yes" } else { "no" });
    if vm.clock.hypervclock {
        let _ = writeln!(out, "    <timer name='hypervclock' present='yes'/>");
    }
    let _ = writeln!(out, "  </clock>");
    let _ = writeln!(
        out,
        "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>"
    );
    let _ = writeln!(
        out,
        "  <pm>\n    <suspend-to-mem enabled='no'/>\n    <suspend-to-disk enabled='no'/>\n  </pm>"
    );
    let _ = writeln!(out, "  <devices>");
    let _ = writeln!(out, "    <emulator>/usr/bin/qemu-system-x86_64</emulator>");
    let _ = writeln!(
        out,
        "    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap' iothread='1'/>\n      <source file='/var/lib/libvirt/images/{}.qcow2'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>",
        escape::xml(&vm.name)
    );
    let queues = vm.vcpus.clamp(1, 8);
    let _ = writeln!(
        out,
        "    <interface type='network'>\n      <source network='default'/>\n      <model type='virtio'/>\n      <driver name='vhost' queues='{queues}'/>\n    </interface>"
    );
    for device in &vm.devices {
        let _ = writeln!(
            out,
            "    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <source>\n        {}\n      </source>\n    </hostdev>",
            pci_address(&device.address)
        );
    }
    if !vm.devices.iter().any(|d| d.is_gpu) {
        let _ = writeln!(out, "    <input type='tablet' bus='usb'/>");
        let _ = writeln!(out, "    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>");
        let _ = writeln!(out, "    <video>\n      <model type='virtio'/>\n    </video>");
    }
    if windows.needs_tpm() {
        let _ = writeln!(
            out,
            "    <tpm model='tpm-crb'>\n      <backend type='emulator' version='2.0'/>\n    </tpm>"
        );
    }
    let _ = writeln!(out, "    <memballoon model='{}'/>", if vm.memballoon { "virtio" } else { "none" });
    let _ = writeln!(out, "  </devices>");
    let _ = writeln!(out, "</domain>");
    out
}
