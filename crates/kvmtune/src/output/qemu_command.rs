//! A plan as a QEMU command line a user can run, as a shell script: QEMU itself, then the
//! pinning that QEMU cannot do on its own (`taskset` on its threads, found by name thanks to
//! `debug-threads=on`).
//!
//! The `-cpu`, `-smp`, `-rtc`, HPET and PIT arguments come from [`crate::output::qemu_args`]
//! applied to the plan's own libvirt rendering, the translation the tests hold to libvirt's
//! (`virsh domxml-to-native`), so the two emitters cannot drift apart.

use crate::analysis::planner::VmPlan;
use crate::config::model::{VmConfig, WindowsVersion};
use crate::output::libvirt_domain;
use crate::output::qemu_args;
use crate::values::escape;

/// Firmware files as Debian's ovmf package installs them.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// The plan's model as libvirt would see it: the libvirt rendering read back.
pub fn as_config(vm: &VmPlan, windows: WindowsVersion) -> VmConfig {
    let xml = libvirt_domain::render_domain(vm, windows);
    crate::config::libvirt::parse("plan.xml", &xml)
        .expect("the libvirt emitter writes XML its own reader reads")
}

/// The VM's own copy of the UEFI variable store, beside the script.
fn vars_file(vm: &str) -> String {
    format!("{vm}_VARS.fd")
}

/// QEMU's argv (without the program name).
pub fn argv(vm: &VmPlan, windows: WindowsVersion) -> Vec<String> {
    let config = as_config(vm, windows);
    let mut args: Vec<String> = Vec::new();
    let mut push = |parts: &[&str]| args.extend(parts.iter().map(|p| p.to_string()));
    push(&["-name", &format!("guest={},debug-threads=on", escape::qemu_option_value(&vm.name))]);
    let mut machine = "q35,accel=kvm,kernel_irqchip=on".to_string();
    if qemu_args::hpet(&config) == Some(false) {
        machine.push_str(",hpet=off");
    }
    let tpm = windows.needs_tpm();
    if tpm {
        machine.push_str(",smm=on");
    }
    // One backend for the whole RAM, or one per guest NUMA node (each bound to its host node).
    if vm.guest_numa.is_empty() {
        machine.push_str(",memory-backend=ram");
    }
    push(&["-machine", &machine]);
    let cpu = qemu_args::cpu(&config);
    let mut cpu_arg = cpu.model.clone();
    for property in &cpu.properties {
        cpu_arg.push(',');
        cpu_arg.push_str(property);
    }
    push(&["-cpu", &cpu_arg]);
    if let Some([vcpus, sockets, dies, clusters, cores, threads]) = qemu_args::smp(&config) {
        push(&[
            "-smp",
            &format!(
                "{vcpus},sockets={sockets},dies={dies},clusters={clusters},cores={cores},threads={threads}"
            ),
        ]);
    }
    let backend = |id: &str, size_mib: u64, node: Option<u32>| {
        let mut backend = match &vm.hugepages {
            Some(h) => format!(
                "memory-backend-memfd,id={id},size={size_mib}M,hugetlb=on,hugetlbsize={},prealloc=on",
                h.page_size_kib * 1024
            ),
            None => format!("memory-backend-ram,id={id},size={size_mib}M"),
        };
        if let Some(node) = node {
            backend.push_str(&format!(",host-nodes={node},policy=bind"));
        }
        backend
    };
    push(&["-m", &format!("{}M", vm.memory_mib)]);
    if vm.guest_numa.is_empty() {
        push(&["-object", &backend("ram", vm.memory_mib, vm.memory_node)]);
    }
    for cell in &vm.guest_numa {
        // As libvirt writes them (`virsh domxml-to-native`): ram-nodeN backing guest node N.
        let id = format!("ram-node{}", cell.id);
        push(&["-object", &backend(&id, cell.memory_mib, Some(cell.host_node))]);
        // QEMU takes one `cpus=` per range.
        let cpus: Vec<String> =
            cell.vcpus.to_string().split(',').map(|range| format!("cpus={range}")).collect();
        push(&["-numa", &format!("node,nodeid={},{},memdev={id}", cell.id, cpus.join(","))]);
    }
    push(&["-rtc", &qemu_args::rtc(&config).join(",")]);
    if let Some(policy) = qemu_args::pit_lost_tick_policy(&config) {
        push(&["-global", &format!("kvm-pit.lost_tick_policy={policy}")]);
    }
    if config.firmware.as_ref().is_some_and(|f| f.value == "efi") {
        push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")]);
        push(&[
            "-drive",
            &format!("if=pflash,format=raw,unit=1,file={}", escape::qemu_option_value(&vars_file(&vm.name))),
        ]);
    }
    for iothread in 1..=vm.iothreads {
        push(&["-object", &format!("iothread,id=iothread{iothread}")]);
    }
    push(&[
        "-drive",
        &format!(
            "file=/var/lib/libvirt/images/{}.qcow2,if=none,id=disk0,format=qcow2,cache=none,aio=native,discard=unmap",
            vm.name
        ),
        "-device",
        "virtio-blk-pci,drive=disk0,iothread=iothread1",
    ]);
    let queues = vm.vcpus.clamp(1, 8);
    push(&[
        "-netdev",
        &format!("tap,id=net0,vhost=on,queues={queues}"),
        "-device",
        &format!("virtio-net-pci,netdev=net0,mq=on,vectors={}", 2 * queues + 2),
    ]);
    for device in &vm.devices {
        push(&["-device", &format!("vfio-pci,host={}", device.address)]);
    }
    if tpm {
        push(&[
            "-chardev",
            &format!("socket,id=chrtpm,path=/run/kvmtune-{}-swtpm.sock", escape::qemu_option_value(&vm.name)),
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-crb,tpmdev=tpm0",
        ]);
    }
    if vm.devices.iter().any(|d| d.is_gpu) {
        push(&["-display", "none", "-vga", "none"]);
    } else {
        push(&["-device", "virtio-vga", "-device", "qemu-xhci", "-device", "usb-tablet"]);
    }
    if vm.memballoon {
        push(&["-device", "virtio-balloon-pci"]);
    }
    push(&[
        "-qmp",
        &format!("unix:/run/kvmtune-{}.qmp,server=on,wait=off", escape::qemu_option_value(&vm.name)),
    ]);
    args
}

/// A runnable script: QEMU in the background, then the pinning, then wait.
pub fn script(vm: &VmPlan, windows: WindowsVersion) -> String {
    let mut out = String::new();
    out.push_str("#!/bin/sh\n");
    out.push_str(&format!(
        "# {}: written by kvmtune tune. QEMU cannot pin its own threads; the lines\n",
        vm.name
    ));
    out.push_str("# after it do, by thread name (debug-threads=on). Needs root for vfio and hugepages.\n");
    out.push_str("set -e\n");
    let efi = windows.boots_uefi();
    if efi {
        out.push_str(&format!(
            "[ -f {vars} ] || cp {OVMF_VARS} {vars}\n",
            vars = escape::shell(&vars_file(&vm.name))
        ));
    }
    out.push_str("qemu-system-x86_64");
    for arg in argv(vm, windows) {
        let quoted = escape::shell(&arg);
        if arg.starts_with('-') {
            out.push_str(" \\\n  ");
        } else {
            out.push(' ');
        }
        out.push_str(&quoted);
    }
    out.push_str(" &\nqemu=$!\n");
    out.push_str(&pin_threads(vm, "$qemu"));
    out.push_str("wait \"$qemu\"\n");
    out
}

/// Shell lines that pin a running QEMU (`pid` is a shell expression for its process id) as the
/// plan says: every thread to the housekeeping CPUs first (emulator, I/O), then each vCPU thread,
/// found by its name `CPU n/KVM` (QEMU's `debug-threads=on`), to its own host CPU. Shared by the
/// QEMU script and the Proxmox hookscript.
pub fn pin_threads(vm: &VmPlan, pid: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# Wait until QEMU has created its vCPU threads.\nfor _ in $(seq 100); do grep -qs '^CPU 0/KVM$' /proc/{pid}/task/*/comm && break; sleep 0.1; done\n"
    ));
    out.push_str(&format!("taskset -apc {} {pid} >/dev/null\n", vm.emulator_cpus));
    out.push_str("pin() { tid=$(grep -ls \"^CPU $1/KVM\\$\" /proc/");
    out.push_str(pid);
    out.push_str(
        "/task/*/comm | cut -d/ -f5); [ -n \"$tid\" ] && taskset -pc \"$2\" \"$tid\" >/dev/null; }\n",
    );
    for (vcpu, cpu) in vm.placement.vcpu_cpus.iter().enumerate() {
        out.push_str(&format!("pin {vcpu} {cpu}\n"));
    }
    out
}
