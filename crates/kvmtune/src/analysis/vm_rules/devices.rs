//! Devices: the balloon, disk and NIC models, iothreads, and input devices beside a passed-
//! through GPU.

use super::prelude::*;

pub(super) const DEV001: VmRule = VmRule {
    check: memballoon_with_vfio,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "DEV001",
        name: "memballoon-with-vfio",
        category: Category::Devices,
        severity: Severity::Info,
        title: "memory balloon with VFIO passthrough",
        explanation: "VFIO pins all guest RAM for DMA, so a balloon can never give memory back. The device is inert rather than harmful: it costs nothing while nobody inflates it, and it still reports the guest's memory statistics. Removing it is tidiness, not speed.",
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
                "a memory balloon with VFIO passthrough: all guest RAM is pinned for DMA, so the balloon cannot reclaim anything (inert, not harmful)",
            )
            .with_fix(Fix::safe(ConfigEdit::SetMemballoonModel { model: "none".into() })),
        ],
    }
}

pub(super) const DEV002: VmRule = VmRule {
    check: virtio_disk_without_iothread,
    needs_host: false,
    housekeeping_suffices: false,
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
                Some((target, id)) => finding.with_fix(Fix::safe(ConfigEdit::AttachDiskIothread { target: target.clone(), iothread: *id })),
                None => finding.with_fix(Fix::manual("add <iothreads>N</iothreads> and iothread='N' to the disk's <driver>")),
            }
        })
        .collect()
}

pub(super) const DEV003: VmRule = VmRule {
    check: emulated_disk_bus,
    needs_host: false,
    housekeeping_suffices: false,
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
        source: "Linux arch/x86/kvm/vmx/vmx.c (handle_ept_misconfig, handle_io: MMIO and port I/O to emulated devices exit to QEMU); virtio specification (docs.oasis-open.org/virtio)",
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
    housekeeping_suffices: false,
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
        source: "Linux arch/x86/kvm/vmx/vmx.c (handle_ept_misconfig, handle_io); virtio specification (docs.oasis-open.org/virtio)",
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
    housekeeping_suffices: false,
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
        source: "Linux Documentation/driver-api/vfio.rst; Arch Wiki, PCI passthrough via OVMF (wiki.archlinux.org/title/PCI_passthrough_via_OVMF)",
    },
};

/// The VM gets a passed-through display adapter (PCI class 0x03xx). With host facts that is
/// what the host says of the device; without them, a PCI hostdev in a VM that has no emulated
/// display the user could look at (no video model but `none`, no SPICE/VNC) is taken for one.
/// A passed-through USB controller beside a virtio-gpu/SPICE display is not.
fn passes_display(ctx: &RuleContext) -> bool {
    let mut pci = ctx.config.devices.hostdevs.iter().filter(|h| h.kind == "pci").peekable();
    match ctx.host.and_then(|host| host.pci_devices.known()) {
        Some(devices) => pci.any(|h| {
            h.pci_address
                .as_ref()
                .is_some_and(|address| devices.iter().any(|d| &d.address == address && d.is_gpu))
        }),
        None => pci.peek().is_some() && !ctx.config.devices.has_emulated_display(),
    }
}

fn usb_tablet_with_gpu(ctx: &RuleContext) -> Vec<Finding> {
    if !passes_display(ctx) {
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

pub(super) const DEV006: VmRule = VmRule {
    check: unused_iothreads,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "DEV006",
        name: "unused-iothreads",
        category: Category::Devices,
        severity: Severity::Info,
        title: "iothreads that no disk or controller uses",
        explanation: "An iothread runs the I/O of the disks and controllers attached to it (iothread='N'). One that nothing uses idles: it costs a thread and nothing more, and where it is pinned does not matter. Usually a disk was meant to use it.",
        example: "<iothreads>2</iothreads> with one disk on iothread 1",
        fix: "attach a virtio disk or virtio-scsi controller to it (<driver iothread='N'/>), or lower <iothreads>",
        fix_safety: Applicability::Manual,
        source: "libvirt formatdomain (iothreads, disk driver iothread, controller driver iothread)",
    },
};

fn unused_iothreads(ctx: &RuleContext) -> Vec<Finding> {
    // libvirt numbers iothreads 1..N and the QEMU reader numbers named ones in order met, so
    // both tell which are used. Proxmox's per-disk `iothread=1` starts one thread per disk, so
    // none is ever unused there.
    if ctx.config.format == SourceFormat::Proxmox {
        return Vec::new();
    }
    let Some(count) = &ctx.config.iothreads else { return Vec::new() };
    let used = ctx.config.devices.used_iothreads();
    let unused: CpuSet = (1..=count.value).filter(|id| !used.contains(id)).collect();
    if unused.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(Some(count.span), format!("iothread(s) {unused} run but no disk or controller uses them: they idle, and their pins cost nothing"))
            .with_fix(Fix::manual("attach a virtio disk or controller to them (<driver iothread='N'/>), or lower <iothreads>")),
    ]
}

pub(super) const DEV007: VmRule = VmRule {
    check: disk_cache_and_io,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "DEV007",
        name: "disk-cache-writeback",
        category: Category::Devices,
        severity: Severity::Warning,
        title: "a disk cached in the host's page cache, with I/O in QEMU's thread pool",
        explanation: "With cache='writeback' (QEMU's default when unset) every guest write is copied into the host's page cache and every guest flush waits for the host to write it out: the data is cached twice, in the guest and in the host, and latency grows with host memory pressure. io='threads' (the default) hands each request to a pool thread. cache='none' opens the image with O_DIRECT (no host copy; guest flushes still reach the disk, so it is as safe as writeback for a guest that flushes) and allows io='native' (Linux AIO, submitted from the iothread) or io='io_uring'. For a raw block device or a raw file this is the usual setting. A qcow2 image allocates on first write; that metadata update is waited for whatever the mode, so preallocate it (preallocation=metadata or falloc) as well. The costs: O_DIRECT needs a host filesystem that supports it (not tmpfs), and the VM then no longer benefits from the host's spare memory as a read cache.",
        example: "<driver name='qemu' type='qcow2'/> (cache and io unset) or <driver cache='writeback' io='threads'/>",
        fix: "<driver ... cache='none' io='native'/>",
        fix_safety: Applicability::Unsafe,
        source: "libvirt formatdomain (disk driver cache, io); QEMU docs/system/qemu-block-drivers.rst and qemu(1) -drive cache=, aio= (native needs cache.direct=on); Red Hat Virtualization Tuning and Optimization Guide (disk I/O: cache none, io native)",
    },
};

fn disk_cache_and_io(ctx: &RuleContext) -> Vec<Finding> {
    // libvirt leaves unset cache and io to QEMU, whose defaults are writeback and the thread
    // pool. Proxmox defaults to cache none and io_uring, and a QEMU command line often sets
    // them on a separate `-drive if=none`: there only stated values count.
    let defaults_apply = ctx.config.format == SourceFormat::Libvirt;
    ctx.config
        .devices
        .disks
        .iter()
        .filter(|d| d.device == "disk")
        // Network disks (rbd, iscsi, nbd) and pool volumes cache by their own rules.
        .filter(|d| d.source_type.as_deref().is_none_or(|t| t == "file" || t == "block"))
        .filter(|d| {
            let writeback = match d.cache.as_deref() {
                Some(cache) => cache == "writeback",
                None => defaults_apply,
            };
            let threads = match d.io.as_deref() {
                Some(io) => io == "threads",
                None => defaults_apply,
            };
            writeback && threads
        })
        .map(|disk| {
            let target = disk.target.as_deref().unwrap_or("?");
            let kind = match (disk.source_type.as_deref(), disk.format.as_deref()) {
                (Some("block"), _) => "a raw block device",
                (_, Some("qcow2")) => "a qcow2 image",
                (_, Some("raw")) => "a raw file",
                _ => "an image",
            };
            let cache = disk.cache.as_ref().map_or("no cache mode (QEMU's writeback)".to_string(), |c| format!("cache='{c}'"));
            let io = disk.io.as_ref().map_or("no io mode (QEMU's thread pool)".to_string(), |io| format!("io='{io}'"));
            let qcow2 = if disk.format.as_deref() == Some("qcow2") { "; preallocate the image too, or first writes wait for allocation" } else { "" };
            let finding = Finding::new(Some(disk.span), format!("disk {target}, {kind}, has {cache} and {io}: guest data is cached twice and each request goes through QEMU's thread pool{qcow2}"));
            match &disk.target {
                Some(target) => finding.with_fix(Fix::unsafe_(ConfigEdit::SetDiskDriver {
                    target: target.clone(),
                    attributes: vec![("cache".into(), "none".into()), ("io".into(), "native".into())],
                })),
                None => finding.with_fix(Fix::manual("cache=none,aio=native on the drive")),
            }
        })
        .collect()
}

pub(super) const DEV008: VmRule = VmRule {
    check: second_emulated_display,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "DEV008",
        name: "emulated-display-beside-gpu",
        category: Category::Devices,
        severity: Severity::Info,
        title: "an emulated display adapter beside a passed-through GPU",
        explanation: "With a passed-through GPU and an emulated video device (QXL, VGA, virtio, Bochs) plus a SPICE or VNC output, Windows sees two display adapters and usually makes the emulated one primary: games may start on it, and its framebuffer is updated over SPICE/VNC for nothing. If the GPU drives the monitor, <video><model type='none'/></video> leaves Windows one adapter. Looking Glass users keep no emulated display either (it needs only the IVSHMEM device); keep one only for a console you actually use, such as during installation.",
        example: "<hostdev> of a GPU beside <video><model type='qxl'/></video> and <graphics type='spice'/>",
        fix: "set <video><model type='none'/></video> and remove <graphics> once the GPU drives a display",
        fix_safety: Applicability::Manual,
        source: "libvirt formatdomain (video model none, graphics); QEMU VFIO display documentation; Looking Glass install documentation (video none)",
    },
};

fn second_emulated_display(ctx: &RuleContext) -> Vec<Finding> {
    let devices = &ctx.config.devices;
    if !passes_display(ctx) || !devices.has_emulated_display() {
        return Vec::new();
    }
    let Some(video) = devices.videos.iter().find(|v| v.value != "none") else { return Vec::new() };
    if devices.graphics.is_empty() {
        return Vec::new();
    }
    vec![
        Finding::new(Some(video.span), format!("emulated '{}' display with {} output beside a passed-through GPU: Windows gets two adapters and may make this one primary", video.value, devices.graphics.iter().map(|g| g.value.as_str()).collect::<Vec<_>>().join("/")))
            .with_fix(Fix::manual("set <video><model type='none'/></video> and remove <graphics> once the GPU drives a display")),
    ]
}

pub(super) const DEV009: VmRule = VmRule {
    check: sleep_with_passthrough,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "DEV009",
        name: "sleep-with-passthrough",
        category: Category::Devices,
        severity: Severity::Warning,
        title: "guest sleep states with passed-through devices",
        explanation: "Suspend to RAM (S3) and to disk (S4) ask every device to save and restore its state. Passed-through PCI devices and mediated devices (mdev) rarely survive that: the GPU comes back black or the guest hangs on resume. Windows offers Sleep in its power menu whenever the firmware does. QEMU's q35 offers both unless told not to (ICH9-LPC disable_s3=0 and disable_s4=0 in QEMU 10, read with qom-get), so a config without <pm> has them too, which is reported at info.",
        example: "<pm><suspend-to-mem enabled='yes'/></pm> beside a <hostdev mode='subsystem' type='pci'>",
        fix: "<pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>",
        fix_safety: Applicability::Unsafe,
        source: "libvirt formatdomain (pm); QEMU hw/isa/lpc_ich9.c (disable_s3, disable_s4; defaults read from QEMU 10.0 with qom-get); Linux Documentation/driver-api/vfio.rst",
    },
};

fn sleep_with_passthrough(ctx: &RuleContext) -> Vec<Finding> {
    let passed: Vec<&str> = ctx
        .config
        .devices
        .hostdevs
        .iter()
        .filter(|h| h.kind == "pci" || h.kind == "mdev")
        .map(|h| h.kind.as_str())
        .collect();
    if passed.is_empty() {
        return Vec::new();
    }
    let power = &ctx.config.power;
    let enabled: Vec<&Located<bool>> =
        [&power.suspend_to_mem, &power.suspend_to_disk].into_iter().flatten().filter(|s| s.value).collect();
    let unset = power.suspend_to_mem.is_none() || power.suspend_to_disk.is_none();
    let fix = Fix::unsafe_(ConfigEdit::DisableSleepStates);
    if let Some(first) = enabled.first() {
        return vec![
            Finding::new(Some(first.span), "sleep states are on beside passed-through devices: the devices rarely come back from suspend, and Windows offers Sleep in its power menu")
                .with_fix(fix),
        ];
    }
    if unset && ctx.config.format == SourceFormat::Libvirt {
        return vec![
            Finding::new(ctx.config.anchors.devices.or(ctx.config.anchors.root), "the config leaves S3/S4 to QEMU, whose q35 offers them: with passed-through devices, say <pm> with both off")
                .with_fix(fix)
                .with_severity(Severity::Info),
        ];
    }
    Vec::new()
}

pub(super) const DEV010: VmRule = VmRule {
    check: passthrough_on_root_bus,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "DEV010",
        name: "passthrough-on-root-bus",
        category: Category::Devices,
        severity: Severity::Warning,
        title: "a passed-through GPU on the q35 root bus instead of behind a root port",
        explanation: "On a q35 machine, a device at bus 0 sits on pcie.0, the root complex itself, where QEMU makes it an integrated endpoint: it has no PCIe link and no upstream port. A GPU's drivers read the link (speed and width, from the device and the port above it): on the root bus tools show the card as PCI or at x0, and the drivers' link handling falls back to what they assume without one. QEMU's PCIe guidelines say to put PCIe endpoints behind a pcie-root-port; libvirt does so whenever it assigns the address itself. An explicit `bus='0x00'` copied from an old guide (or from an i440fx config) is what puts the GPU there.",
        example: "<hostdev mode='subsystem' type='pci'> with <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/> on a q35 machine",
        fix: "remove the hostdev's own <address> (libvirt then puts it behind a pcie-root-port), keeping the GPU and its audio function together on one port with multifunction='on'",
        fix_safety: Applicability::Manual,
        source: "QEMU docs/pcie.txt (PCI Express guidelines: PCIe endpoints behind root ports, pcie.0 devices are integrated endpoints); QEMU commit series 'pcie: Enhanced link speed and width support' (QEMU 4.0, root ports report the physical link; the cover letter names the NVIDIA driver's use of it); libvirt docs/pci-addresses.rst",
    },
};

fn passthrough_on_root_bus(ctx: &RuleContext) -> Vec<Finding> {
    let q35 = ctx.config.machine.as_ref().is_some_and(|m| m.value.contains("q35"));
    if !q35 {
        return Vec::new();
    }
    let host_devices = ctx.host.and_then(|host| host.pci_devices.known());
    let on_root: Vec<(&crate::config::model::Hostdev, &Located<PciAddress>)> = ctx
        .config
        .devices
        .hostdevs
        .iter()
        .filter_map(|h| h.guest_address.as_ref().filter(|a| a.value.bus == 0).map(|a| (h, a)))
        .collect();
    on_root
        .iter()
        .filter_map(|(hostdev, guest)| {
            let host_device = hostdev
                .pci_address
                .as_ref()
                .and_then(|address| host_devices.and_then(|devices| devices.iter().find(|d| &d.address == address)));
            let host_at = hostdev.pci_address.as_ref().map_or(String::new(), |a| format!(" {a}"));
            let what = match (host_devices, host_device) {
                // With host facts, only GPUs: an NVMe or USB controller on pcie.0 works as well.
                (Some(_), Some(device)) if device.is_gpu => format!("the GPU{host_at}"),
                (Some(_), _) => return None,
                (None, _) => format!("the passed-through device{host_at} (if it is a GPU)"),
            };
            let finding = Finding::new(
                Some(guest.span),
                format!(
                    "{what} is placed at guest address 00:{:02x}.{}, on q35's root bus (pcie.0): an integrated endpoint without a PCIe link or root port",
                    guest.value.slot, guest.value.function
                ),
            )
            .with_fix(Fix::manual("remove the hostdev's <address> so that libvirt puts it behind a pcie-root-port (GPU and audio together, multifunction='on')"));
            Some(if host_devices.is_none() { finding.with_severity(Severity::Info) } else { finding })
        })
        .collect()
}

pub(super) const DEV011: VmRule = VmRule {
    check: legacy_usb_controller,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "DEV011",
        name: "legacy-usb-controller",
        category: Category::Devices,
        severity: Severity::Warning,
        title: "USB on an emulated UHCI, OHCI or EHCI controller instead of XHCI",
        explanation: "The USB 1.1 and 2.0 host controllers (UHCI, OHCI, EHCI) were designed for hardware that the host controller driver polls: the controller walks its frame lists every millisecond, and QEMU emulates that walk with a frame timer of up to 1000 Hz for as long as the guest keeps the controller running. QEMU's own documentation says XHCI's design is much more virtualization-friendly and its emulation uses fewer resources, especially CPU, and recommends it for every guest that supports it (any operating system from around 2010 on; Windows has an in-box XHCI driver since Windows 8). A USB device on the controller (a tablet, a passed-through keyboard or mouse, a SPICE redirection) keeps it running. Virt-manager's older q35 default, an EHCI with three UHCI companions, is the usual source.",
        example: "<controller type='usb' model='ich9-ehci1'/> with its ich9-uhci companions and a passed-through USB mouse",
        fix: "one <controller type='usb' model='qemu-xhci' ports='15'/> in place of the UHCI/OHCI/EHCI controllers (Windows 8 or later)",
        fix_safety: Applicability::Manual,
        source: "QEMU docs/system/devices/usb.rst (XHCI controller support: 'much more virtualization-friendly when compared to EHCI and UHCI ... uses less resources (especially CPU) ... we recommend using it'); QEMU hw/usb/hcd-uhci.c and hcd-ehci.c (FRAME_TIMER_FREQ 1000); Microsoft Learn, USB host-side drivers in Windows (the xHCI driver stack, usbxhci.sys, new in Windows 8); libvirt docs/formatdomain.rst Controllers (USB models)",
    },
};

/// A USB controller model of the USB 1.1/2.0 families, in libvirt's or QEMU's spelling
/// (`ich9-ehci1`, `piix3-uhci`, `pci-ohci`, `ich9-usb-uhci2`, `usb-ehci`, ...).
fn is_legacy_usb(model: &str) -> bool {
    ["uhci", "ohci", "ehci"].iter().any(|kind| model.contains(kind))
}

fn legacy_usb_controller(ctx: &RuleContext) -> Vec<Finding> {
    let controllers = &ctx.config.devices.usb_controllers;
    let Some(first) = controllers.iter().find(|c| is_legacy_usb(&c.value)) else { return Vec::new() };
    // An XHCI beside them takes the devices that name it; which bus each device is on the
    // config may not say, so only a USB setup without any XHCI is flagged.
    if controllers.iter().any(|c| c.value.contains("xhci")) {
        return Vec::new();
    }
    // Windows before 8 has no in-box XHCI driver: the legacy controllers are its choice.
    if ctx.config.windows_version().is_some_and(|v| !v.has_inbox_xhci_driver()) {
        return Vec::new();
    }
    let devices = &ctx.config.devices;
    let attached = devices.inputs.iter().filter(|i| i.bus.as_deref() == Some("usb")).count()
        + devices.hostdevs.iter().filter(|h| h.kind == "usb").count();
    let redirections = devices.usb_redirections.len();
    let models = controllers.iter().map(|c| c.value.as_str()).collect::<Vec<_>>().join(", ");
    let polling = "QEMU emulates the controllers' frame-list walk with a timer for as long as the guest keeps them running";
    let message = match (attached, redirections) {
        (0, 0) => format!(
            "USB runs on {models}: no USB device is on it now, but one that is (a tablet, a passed-through device) keeps QEMU walking the frame lists on a timer"
        ),
        (0, channels) => format!(
            "USB runs on {models}, with {channels} SPICE USB redirection channel(s): while a client redirects a device, {polling}"
        ),
        (devices, _) => format!("USB runs on {models}, with {devices} USB device(s) on it: {polling}"),
    };
    let finding = Finding::new(Some(first.span), message).with_fix(Fix::manual(
        "replace the UHCI/OHCI/EHCI controllers with one <controller type='usb' model='qemu-xhci' ports='15'/>",
    ));
    if attached == 0 {
        return vec![finding.with_severity(Severity::Info)];
    }
    vec![finding]
}

pub(super) const DEV012: VmRule = VmRule {
    check: iommu_group_not_viable,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "DEV012",
        name: "iommu-group-not-viable",
        category: Category::Devices,
        severity: Severity::Error,
        title: "a passed-through device shares its IOMMU group with a device the host keeps",
        explanation: "The IOMMU isolates groups, not devices, so the kernel lets a VM have a device only when every other device in its IOMMU group is also away from the host's drivers: given to the VM too, bound to vfio-pci or pci-stub, unbound, or a PCI bridge. libvirt's managed='yes' detaches only the <hostdev> devices themselves, so a GPU whose HDMI audio function (or a USB controller, or a sibling on the same chipset bus) stays with snd_hda_intel, xhci_hcd or any other host driver makes QEMU stop at start with \"group N is not viable: Please ensure all devices within the iommu_group are bound to their vfio bus driver\". A <kvmtune:vfio> host request hands the whole group over at start and is taken into account.",
        example: "a <hostdev> for the GPU at 0000:01:00.0, while 0000:01:00.1 in the same group is on snd_hda_intel",
        fix: "pass the group's other devices to the VM as well (the GPU's audio function belongs there anyway), or bind them to vfio-pci before the VM starts (`kvmtune vfio bind`, or <kvmtune:vfio> in the domain)",
        fix_safety: Applicability::Manual,
        source: "Linux Documentation/driver-api/vfio.rst (groups, and the viability of a group); QEMU hw/vfio (VFIO_GROUP_FLAGS_VIABLE: 'group %d is not viable', 'Please ensure all devices within the iommu_group are bound to their vfio bus driver'); libvirt docs/formatdomain.rst hostdev (managed)",
    },
};

/// A driver that leaves a device's DMA to its IOMMU group's owner: any vfio driver, pci-stub
/// and the PCIe port driver of bridges (the kernel's driver_managed_dma drivers).
fn lets_the_group_go(driver: &str) -> bool {
    driver.contains("vfio") || matches!(driver, "pci-stub" | "pcieport")
}

fn iommu_group_not_viable(ctx: &RuleContext) -> Vec<Finding> {
    let Some(devices) = ctx.host.and_then(|host| host.pci_devices.known()) else { return Vec::new() };
    let group_of =
        |address: &PciAddress| devices.iter().find(|d| d.address == *address).and_then(|d| d.iommu_group);
    let passed: Vec<PciAddress> = ctx.config.devices.hostdevs.iter().filter_map(|h| h.pci_address).collect();
    // Groups the kvmtune hook hands to vfio-pci whole at the VM's start.
    let handed: Vec<u32> = ctx
        .config
        .host_needs
        .iter()
        .flat_map(|stated| stated.needs.devices.iter())
        .filter_map(&group_of)
        .collect();
    let mut reported: Vec<u32> = Vec::new();
    let mut findings = Vec::new();
    for hostdev in ctx.config.devices.hostdevs.iter().filter(|h| h.kind == "pci") {
        let Some(address) = &hostdev.pci_address else { continue };
        let Some(group) = group_of(address) else { continue };
        if handed.contains(&group) || reported.contains(&group) {
            continue;
        }
        let kept: Vec<String> = devices
            .iter()
            .filter(|d| d.iommu_group == Some(group) && !passed.contains(&d.address))
            .filter(|d| !d.class.known().is_some_and(|class| class.starts_with("0x0604")))
            .filter_map(|d| {
                d.driver
                    .as_deref()
                    .filter(|driver| !lets_the_group_go(driver))
                    .map(|driver| format!("{} ({driver})", d.address))
            })
            .collect();
        if kept.is_empty() {
            continue;
        }
        reported.push(group);
        findings.push(
            Finding::new(
                Some(hostdev.span),
                format!(
                    "{address} is in IOMMU group {group} with {}, which the host keeps and this VM does not get: QEMU stops at start (group {group} is not viable)",
                    kept.join(", ")
                ),
            )
            .with_fix(Fix::manual(format!(
                "pass the rest of group {group} to the VM too, or bind it to vfio-pci before the VM starts (`kvmtune vfio bind {address}`, which takes the whole group)"
            ))),
        );
    }
    findings
}
