//! Devices: the balloon, disk and NIC models, iothreads, and input devices beside a passed-
//! through GPU.

use super::prelude::*;

pub(super) const DEV001: VmRule = VmRule {
    check: memballoon_with_vfio,
    needs_host: false,
    meta: RuleMeta {
        id: "DEV001",
        name: "memballoon-with-vfio",
        category: Category::Devices,
        severity: Severity::Warning,
        title: "memory balloon with VFIO passthrough",
        explanation: "VFIO pins all guest RAM for DMA, so a balloon can never give memory back; it is only one more device and driver.",
        example: "<hostdev mode='subsystem' type='pci'> beside <memballoon model='virtio'/>",
        fix: "<memballoon model='none'/>",
        fix_safety: Applicability::Safe,
        source: "libvirt memballoon; Linux Documentation/driver-api/vfio.rst",
    },
};

fn memballoon_with_vfio(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.config.devices.hostdevs.iter().any(|h| h.kind == "pci") {
        return Vec::new();
    }
    match &ctx.config.devices.memballoon {
        Some(balloon) if balloon.value == "none" => Vec::new(),
        balloon => vec![
            Finding::new(
                balloon.as_ref().map(|b| b.span).or(ctx.config.anchors.devices),
                "a memory balloon with VFIO passthrough: all guest RAM is pinned for DMA, so the balloon cannot reclaim anything and only adds a device",
            )
            .with_fix(Fix::safe(FixAction::SetMemballoonModel { model: "none".into() })),
        ],
    }
}

pub(super) const DEV002: VmRule = VmRule {
    check: virtio_disk_without_iothread,
    needs_host: false,
    meta: RuleMeta {
        id: "DEV002",
        name: "virtio-disk-without-iothread",
        category: Category::Devices,
        severity: Severity::Info,
        title: "virtio disk without an iothread",
        explanation: "A dedicated iothread takes the disk's I/O out of QEMU's main loop, which also serves the monitor and every emulated device.",
        example: "<disk> with <target dev='vda' bus='virtio'/> and a <driver> without iothread=",
        fix: "add an iothread and assign it",
        fix_safety: Applicability::Safe,
        source: "libvirt docs/formatdomain.rst iothreads",
    },
};

fn virtio_disk_without_iothread(ctx: &RuleContext) -> Vec<Finding> {
    let assigned = ctx.config.devices.iothreads_for_unattached_disks();
    ctx.config
        .devices
        .disks
        .iter()
        .filter(|d| d.wants_iothread() && d.iothread.is_none())
        .map(|disk| {
            let finding = Finding::new(Some(disk.span), format!("virtio disk {} has no iothread: its I/O runs in QEMU's main loop, next to everything else", disk.target.as_deref().unwrap_or("?")));
            match assigned.iter().find(|(target, _)| Some(target) == disk.target.as_ref()) {
                Some((target, id)) => finding.with_fix(Fix::safe(FixAction::AttachDiskIothread { target: target.clone(), iothread: *id })),
                None => finding.with_fix(Fix::manual("add <iothreads>N</iothreads> and iothread='N' to the disk's <driver>")),
            }
        })
        .collect()
}

pub(super) const DEV003: VmRule = VmRule {
    check: emulated_disk_bus,
    needs_host: false,
    meta: RuleMeta {
        id: "DEV003",
        name: "emulated-disk-bus",
        category: Category::Devices,
        severity: Severity::Warning,
        title: "disk on an emulated bus",
        explanation: "SATA (AHCI) and IDE are emulated register by register: several exits per request. virtio-blk and virtio-scsi use shared queues.",
        example: "<target dev='sda' bus='sata'/> on a disk",
        fix: "switch to virtio after installing its driver",
        fix_safety: Applicability::Manual,
        source: "../shared/knowledge.md 6b (MMIO and port-I/O exits)",
    },
};

fn emulated_disk_bus(ctx: &RuleContext) -> Vec<Finding> {
    ctx.config
        .devices
        .disks
        .iter()
        .filter(|d| d.device == "disk" && matches!(d.bus.as_deref(), Some("sata" | "ide" | "fdc" | "usb")))
        .map(|disk| {
            Finding::new(Some(disk.span), format!("disk {} uses the emulated {} bus; virtio-blk or virtio-scsi needs far fewer exits per I/O", disk.target.as_deref().unwrap_or("?"), disk.bus.as_deref().unwrap_or("?")))
                .with_fix(Fix::manual("install the virtio-win storage driver in the guest first, then switch the disk to bus='virtio'"))
        })
        .collect()
}

pub(super) const DEV004: VmRule = VmRule {
    check: emulated_nic_model,
    needs_host: false,
    meta: RuleMeta {
        id: "DEV004",
        name: "emulated-nic-model",
        category: Category::Devices,
        severity: Severity::Warning,
        title: "emulated network card",
        explanation: "e1000, e1000e and rtl8139 are emulated hardware: every packet costs MMIO exits. virtio-net batches through shared queues.",
        example: "<interface> with <model type='e1000e'/>",
        fix: "switch to virtio after installing its driver",
        fix_safety: Applicability::Manual,
        source: "../shared/knowledge.md 6b",
    },
};

fn emulated_nic_model(ctx: &RuleContext) -> Vec<Finding> {
    ctx.config
        .devices
        .nics
        .iter()
        .filter(|n| matches!(n.model.as_deref(), Some("e1000" | "e1000e" | "rtl8139")))
        .map(|nic| {
            Finding::new(
                Some(nic.span),
                format!(
                    "network card model {} is emulated register by register; virtio-net is paravirtual",
                    nic.model.as_deref().unwrap_or("?")
                ),
            )
            .with_fix(Fix::manual(
                "install the virtio-win network driver in the guest, then set <model type='virtio'/>",
            ))
        })
        .collect()
}

pub(super) const DEV005: VmRule = VmRule {
    check: usb_tablet_with_gpu,
    needs_host: false,
    meta: RuleMeta {
        id: "DEV005",
        name: "usb-tablet-with-gpu",
        category: Category::Devices,
        severity: Severity::Info,
        title: "USB tablet on a GPU-passthrough VM",
        explanation: "The tablet exists for absolute pointing in a SPICE/VNC window. With a passed-through GPU and real input devices nobody uses it, and the guest keeps polling the USB controller for it.",
        example: "<input type='tablet' bus='usb'/> beside a passed-through GPU",
        fix: "remove the tablet",
        fix_safety: Applicability::Manual,
        source: "common VFIO tuning guides; ../shared/landscape.md",
    },
};

fn usb_tablet_with_gpu(ctx: &RuleContext) -> Vec<Finding> {
    let passes_gpu = ctx.config.devices.hostdevs.iter().any(|h| {
        let Some(address) = &h.pci_address else { return false };
        match ctx.host.and_then(|host| host.pci_devices.known()) {
            Some(devices) => devices.iter().any(|d| &d.address == address && d.is_gpu),
            // Without host facts a PCI hostdev next to a tablet is almost always the GPU.
            None => h.kind == "pci",
        }
    });
    if !passes_gpu {
        return Vec::new();
    }
    ctx.config
        .devices
        .inputs
        .iter()
        .filter(|i| i.kind == "tablet")
        .map(|tablet| {
            Finding::new(Some(tablet.span), "USB tablet on a VM driven through a passed-through GPU: nobody uses the absolute pointer, but the guest polls the USB controller for it")
                .with_fix(Fix::manual("remove the tablet (keep it only if you use a SPICE/VNC console)"))
        })
        .collect()
}
