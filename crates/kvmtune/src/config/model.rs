//! The tuning-relevant part of a VM, independent of the format it was read from.
//!
//! Names follow QEMU where formats differ (`hv-time` rather than libvirt's hypervclock timer),
//! so that rules are written once. Every value that came from the file carries its [`Span`];
//! values a reader had to infer carry the span of the element they were inferred from.

use serde::Serialize;

use crate::config::host_needs::{HostNeeds, HugepageNeed, Hugepages, NeedsError, StatedNeeds};
use crate::knowledge::hyperv::Hv;
use crate::values::Span;
use crate::values::{CpuSet, PciAddress};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Located<T> {
    pub fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    Libvirt,
    QemuArgv,
    Proxmox,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmConfig {
    pub format: SourceFormat,
    pub name: Option<String>,
    /// libvirt `<domain type>`: `kvm`, `qemu` (TCG), ...
    pub domain_type: Option<Located<String>>,
    /// Machine type with version, e.g. `pc-q35-8.1`.
    pub machine: Option<Located<String>>,
    /// `efi` or `bios`.
    pub firmware: Option<Located<String>>,
    /// Guest architecture: `x86_64` or `i686` (32-bit guests need TPR patching on old hosts).
    pub arch: Option<Located<String>>,
    /// QEMU's kvm-vapic TPR patching for 32-bit Windows XP/2003, when the config switches it
    /// (`-global kvm-apic.vapic=off`, also through libvirt's `<qemu:commandline>`).
    pub tpr_patching: Option<Located<bool>>,
    /// libosinfo id, e.g. `http://microsoft.com/win/11`.
    pub os_id: Option<Located<String>>,
    pub vcpus: Option<Located<u32>>,
    /// The vCPUs online when the VM starts, where the config says (libvirt `<vcpu current>` or
    /// `<vcpus><vcpu enabled>`); the others are hot-pluggable and do not run.
    pub vcpus_enabled: Option<CpuSet>,
    pub cpu: CpuConfig,
    pub hyperv: HypervConfig,
    /// KVM paravirt switches: `hidden`, `hint-dedicated`, `poll-control`, `pv-ipi`.
    pub kvm: Vec<Toggle>,
    /// The interrupt controllers split between KVM (the local APICs) and QEMU (the I/O APIC, PIC
    /// and PIT): libvirt `<ioapic driver='qemu'/>`, QEMU `-machine kernel-irqchip=split`. KVM
    /// then has no in-kernel PIT.
    pub split_irqchip: Option<Located<bool>>,
    pub clock: ClockConfig,
    pub pinning: Pinning,
    pub iothreads: Option<Located<u32>>,
    pub memory: MemoryConfig,
    pub devices: Devices,
    /// Guest power management: whether S3 (suspend to RAM) and S4 (suspend to disk) are
    /// offered, where the config says (libvirt `<pm>`).
    pub power: PowerStates,
    /// Raw QEMU arguments passed around the config's own model (libvirt `<qemu:commandline>`),
    /// in order.
    pub passthrough_args: Vec<PassthroughArg>,
    /// What the VM asks of its host through kvmtune's libvirt hook (`<metadata><kvmtune:host>`).
    pub host_needs: Option<StatedNeeds>,
    /// Where the containers are, for diagnostics that point at a missing child.
    pub anchors: Anchors,
}

/// `<pm><suspend-to-mem enabled>` and `<suspend-to-disk enabled>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PowerStates {
    pub suspend_to_mem: Option<Located<bool>>,
    pub suspend_to_disk: Option<Located<bool>>,
}

/// One QEMU option passed through: `-cpu host,kvm=off` is option `cpu`, value `host,kvm=off`.
/// A word that is no option (QEMU takes it as a disk image) has an empty `option` and the word
/// as its `value`; an option whose value is missing has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassthroughArg {
    pub option: String,
    pub value: Option<String>,
    pub span: Span,
    /// What the config's own model had that this argument discarded (for a `-cpu`: the
    /// enlightenments and CPU features libvirt would have generated).
    pub dropped: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Anchors {
    pub root: Option<Span>,
    pub os: Option<Span>,
    pub features: Option<Span>,
    pub hyperv: Option<Span>,
    pub cpu: Option<Span>,
    pub clock: Option<Span>,
    pub cputune: Option<Span>,
    pub memory_backing: Option<Span>,
    pub devices: Option<Span>,
    pub metadata: Option<Span>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuConfig {
    /// `host-passthrough`, `host-model`, `custom`, `maximum`.
    pub mode: Option<Located<String>>,
    pub model: Option<Located<String>>,
    pub migratable: Option<Located<bool>>,
    /// `<cpu check>`: `none`, `partial` or `full` (libvirt's comparison with the host CPU).
    pub check: Option<String>,
    pub topology: Option<Located<CpuTopology>>,
    pub features: Vec<CpuFeature>,
    /// `<cache mode>`: `passthrough`, `emulate`, `disable`.
    pub cache_mode: Option<Located<String>>,
    pub numa_cells: Vec<NumaCell>,
}

impl CpuConfig {
    /// The `<cpu mode>` where the guest CPU is the host's own (`host-passthrough`, `maximum`):
    /// QEMU's `-cpu host`/`max`, which pass on whatever KVM offers.
    pub fn host_cpu_mode(&self) -> Option<&Located<String>> {
        self.mode.as_ref().filter(|m| matches!(m.value.as_str(), "host-passthrough" | "maximum"))
    }

    /// What names the guest CPU: a mode other than `custom` (host-passthrough, host-model,
    /// maximum), else the `<model>`. libvirt takes `<feature>` elements only beside one of them
    /// ("Non-empty feature list specified without CPU model", CPU002).
    pub fn named_cpu(&self) -> Option<&Located<String>> {
        self.mode.as_ref().filter(|m| m.value != "custom").or(self.model.as_ref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CpuTopology {
    pub sockets: u32,
    pub dies: u32,
    pub clusters: u32,
    pub cores: u32,
    pub threads: u32,
}

impl CpuTopology {
    pub fn vcpus(&self) -> u64 {
        [self.sockets, self.dies, self.clusters, self.cores, self.threads]
            .iter()
            .map(|&n| u64::from(n))
            .product()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuFeature {
    pub name: String,
    /// `require`, `force`, `optional`, `disable`, `forbid`.
    pub policy: String,
    pub span: Span,
}

impl CpuFeature {
    pub fn enables(&self) -> bool {
        matches!(self.policy.as_str(), "require" | "force" | "optional")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NumaCell {
    pub id: Option<u32>,
    pub cpus: CpuSet,
    pub memory_kib: Option<u64>,
    pub span: Span,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HypervConfig {
    /// `custom` (default), `passthrough`, `host-model`.
    pub mode: Option<Located<String>>,
    /// Each enlightenment the config names, by QEMU property (`hv-relaxed`), on or off.
    pub features: Vec<HvFeature>,
}

impl HypervConfig {
    pub fn get(&self, hv: Hv) -> Option<&HvFeature> {
        self.features.iter().find(|f| f.name == hv.qemu())
    }

    /// On in the config (not counting passthrough/host-model, which the caller must treat
    /// separately).
    pub fn is_on(&self, hv: Hv) -> bool {
        self.get(hv).is_some_and(|f| f.on)
    }

    pub fn passthrough(&self) -> bool {
        self.mode.as_ref().is_some_and(|m| m.value == "passthrough")
    }

    pub fn host_model(&self) -> bool {
        self.mode.as_ref().is_some_and(|m| m.value == "host-model")
    }
}

impl HvFeature {
    /// The property, where kvmtune knows it (a config may name any).
    pub fn hv(&self) -> Option<Hv> {
        Hv::from_qemu(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HvFeature {
    /// QEMU property name: `hv-relaxed`, `hv-spinlocks`, `hv-time`, `hv-stimer-direct`, ...
    pub name: String,
    pub on: bool,
    /// `hv-spinlocks` retries, `hv-vendor-id` string.
    pub value: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Toggle {
    pub name: String,
    pub on: bool,
    pub span: Span,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClockConfig {
    /// `utc`, `localtime`, `timezone`, `variable`.
    pub offset: Option<Located<String>>,
    pub timers: Vec<Timer>,
}

impl Timer {
    /// A timer the config names with no attributes set yet.
    pub fn new(name: &str, span: Span) -> Self {
        Self {
            name: name.to_string(),
            present: None,
            tickpolicy: None,
            track: None,
            frequency: None,
            mode: None,
            span,
        }
    }
}

impl ClockConfig {
    pub fn timer(&self, name: &str) -> Option<&Timer> {
        self.timers.iter().find(|t| t.name == name)
    }

    /// The config turns the HPET off (`<timer name='hpet' present='no'/>`, `-machine hpet=off`).
    pub fn hpet_off(&self) -> bool {
        self.timer("hpet").is_some_and(|t| t.present == Some(false))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timer {
    /// `rtc`, `pit`, `hpet`, `hypervclock`, `tsc`, `kvmclock`, `platform`, `armvtimer`.
    pub name: String,
    pub present: Option<bool>,
    pub tickpolicy: Option<String>,
    pub track: Option<String>,
    pub frequency: Option<String>,
    pub mode: Option<String>,
    pub span: Span,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pinning {
    pub vcpupin: Vec<Pin>,
    /// One CPU set for the whole QEMU process (Proxmox `affinity`, `taskset`): vCPUs float
    /// inside it.
    pub process_affinity: Option<Located<CpuSet>>,
    pub emulatorpin: Option<Located<CpuSet>>,
    pub iothreadpin: Vec<Pin>,
    /// libvirt's `<vcpu cpuset>`: where vCPUs without a `<vcpupin>`, and the emulator and
    /// iothreads without a pin of their own, run.
    pub domain_cpuset: Option<Located<CpuSet>>,
    pub vcpusched: Vec<VcpuSched>,
}

impl Pinning {
    /// Every host CPU a vCPU is pinned to.
    pub fn vcpu_cpus(&self) -> CpuSet {
        self.vcpupin.iter().fold(CpuSet::new(), |all, pin| all.union(&pin.cpus))
    }

    /// The one host CPU `vcpu` is pinned to, with the span of its pin; none where it floats
    /// over several or is not pinned.
    pub fn only_cpu(&self, vcpu: u32) -> Option<(u32, Span)> {
        let pin = self.vcpupin.iter().find(|p| p.id == vcpu)?;
        if pin.cpus.len() == 1 { Some((pin.cpus.first()?, pin.span)) } else { None }
    }
}

/// `<vcpusched vcpus scheduler priority>`: the host scheduling class of some vCPU threads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VcpuSched {
    /// `batch`, `idle`, `fifo` or `rr`.
    pub scheduler: String,
    /// Which vCPUs; `None`: all of them.
    pub vcpus: Option<CpuSet>,
    pub span: Span,
}

impl VcpuSched {
    /// A real-time class: the thread runs until it blocks, ahead of every normal task.
    pub fn is_realtime(&self) -> bool {
        matches!(self.scheduler.as_str(), "fifo" | "rr")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    /// vCPU or iothread id.
    pub id: u32,
    pub cpus: CpuSet,
    pub span: Span,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryConfig {
    pub size_kib: Option<Located<u64>>,
    /// Present when `<hugepages>` is; each page size asked for (none listed = the default size).
    pub hugepages: Option<Located<Vec<HugepageRequest>>>,
    pub locked: Option<Span>,
    pub numatune: Option<Located<Numatune>>,
    /// `<numatune><memnode>`: the host nodes each guest NUMA cell's memory is bound to.
    pub memnodes: Vec<Located<MemNode>>,
    /// `<memoryBacking><source type>`: `anonymous`, `file` or `memfd`.
    pub backing_source: Option<Located<String>>,
    /// Where guest RAM is mapped shared: `<memoryBacking><access mode='shared'/>` or a NUMA
    /// cell's `memAccess='shared'`.
    pub shared_access: Option<Span>,
}

impl MemoryConfig {
    /// Guest RAM that lands on the host's shmem: mapped shared and backed by memfd or
    /// anonymous memory (QEMU's memory-backend-memfd, or memory-backend-ram with share=on),
    /// not by hugetlbfs.
    pub fn on_shmem(&self) -> Option<Span> {
        let source = self.backing_source.as_ref().map_or("anonymous", |s| s.value.as_str());
        self.shared_access.filter(|_| self.hugepages.is_none() && matches!(source, "memfd" | "anonymous"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HugepageRequest {
    pub size_kib: Option<u64>,
    pub nodeset: Option<String>,
}

/// `<numatune><memnode cellid mode nodeset>`: one guest NUMA cell's host binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemNode {
    /// The guest cell; libvirt's schema requires it, so a config without it is read as written.
    pub cellid: Option<u32>,
    pub mode: Option<String>,
    pub nodeset: Option<CpuSet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Numatune {
    pub mode: Option<String>,
    pub nodeset: Option<CpuSet>,
    pub placement: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Devices {
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub hostdevs: Vec<Hostdev>,
    /// memballoon model (`virtio`, `none`, ...).
    pub memballoon: Option<Located<String>>,
    pub inputs: Vec<Input>,
    pub tpms: Vec<Located<String>>,
    pub videos: Vec<Located<String>>,
    /// `<graphics type>`: `spice`, `vnc`, `sdl`, `egl-headless`, `dbus`.
    pub graphics: Vec<Located<String>>,
    /// Devices that need guest RAM shared with another process: `virtiofs` filesystems,
    /// `vhost-user` interfaces and disks.
    pub shared_memory_users: Vec<Located<String>>,
    /// iothreads that controllers use (`<controller><driver iothread>`, virtio-scsi).
    pub controller_iothreads: Vec<u32>,
    /// Each USB controller's model (libvirt `<controller type='usb' model>`; empty when the
    /// config leaves it to libvirt's default).
    pub usb_controllers: Vec<Located<String>>,
    /// USB redirection channels (`<redirdev bus='usb'>`, SPICE's USB redirection).
    pub usb_redirections: Vec<Span>,
    /// `<panic model>`; `hyperv` is hv-crash.
    pub panics: Vec<Located<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// `disk`, `cdrom`, `floppy`, `lun`.
    pub device: String,
    pub bus: Option<String>,
    pub target: Option<String>,
    pub cache: Option<String>,
    pub io: Option<String>,
    /// `<driver type>`: `raw`, `qcow2`, ...
    pub format: Option<String>,
    /// `<disk type>`: `file`, `block`, `network`, `volume`.
    pub source_type: Option<String>,
    /// The host block device behind a `type='block'` disk (`<source dev>`, a Proxmox
    /// `/dev/...` volume, QEMU's `file=/dev/...`).
    pub source_dev: Option<String>,
    pub discard: Option<String>,
    pub iothread: Option<u32>,
    pub span: Span,
}

impl Disk {
    /// A whole physical disk or one of its partitions (not an LVM volume, a device-mapper
    /// target or a zvol): what a dual-boot Windows installation is given.
    pub fn is_physical_disk(&self) -> bool {
        let Some(dev) = self.source_dev.as_deref().filter(|_| self.device == "disk") else { return false };
        let physical_names = ["sd", "nvme", "hd", "vd", "xvd", "mmcblk"];
        if let Some(name) = dev.strip_prefix("/dev/disk/by-id/") {
            // by-id names of whole disks and partitions; dm-/lvm-/md- names are volumes.
            return ["ata-", "nvme-", "scsi-", "usb-", "wwn-"].iter().any(|p| name.starts_with(p));
        }
        if dev.starts_with("/dev/disk/by-path/") {
            return true;
        }
        dev.strip_prefix("/dev/")
            .is_some_and(|name| physical_names.iter().any(|p| name.starts_with(p)) && !name.contains('/'))
    }

    /// A virtio disk (not a CD-ROM): its requests can run in an iothread of their own.
    pub fn wants_iothread(&self) -> bool {
        self.device == "disk" && self.bus.as_deref() == Some("virtio")
    }
}

impl Devices {
    /// The iothread ids that disks and controllers use.
    pub fn used_iothreads(&self) -> Vec<u32> {
        let mut used: Vec<u32> = self.disks.iter().filter_map(|d| d.iothread).collect();
        used.extend(&self.controller_iothreads);
        used.sort_unstable();
        used.dedup();
        used
    }

    /// An emulated display the user could look at: a video model other than `none`, or a
    /// SPICE/VNC (or other) graphics output.
    pub fn has_emulated_display(&self) -> bool {
        self.videos.iter().any(|v| v.value != "none") || !self.graphics.is_empty()
    }

    /// An iothread for each virtio disk that has none: `(target, id)`, with ids counted from 1
    /// past those other disks already use, so that no two disks share one.
    pub fn iothreads_for_unattached_disks(&self) -> Vec<(String, u32)> {
        let mut used: Vec<u32> = self.disks.iter().filter_map(|d| d.iothread).collect();
        let mut assigned = Vec::new();
        for disk in self.disks.iter().filter(|d| d.wants_iothread() && d.iothread.is_none()) {
            let Some(target) = &disk.target else { continue };
            let id = (1..).find(|id| !used.contains(id)).expect("an unused id");
            used.push(id);
            assigned.push((target.clone(), id));
        }
        assigned
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    pub model: Option<String>,
    pub queues: Option<u32>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hostdev {
    /// `pci`, `usb`, ...
    pub kind: String,
    /// For PCI devices.
    pub pci_address: Option<PciAddress>,
    /// Where the guest sees it: the PCI address libvirt assigned (`<address type='pci'>` of the
    /// `<hostdev>` itself), when the config states one.
    pub guest_address: Option<Located<PciAddress>>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    /// `tablet`, `mouse`, `keyboard`, `passthrough`, `evdev`.
    pub kind: String,
    pub bus: Option<String>,
    pub span: Span,
}

/// Windows releases kvmtune distinguishes (they differ in timers and enlightenments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowsVersion {
    Xp,
    Vista,
    Win7,
    Win8,
    Win10,
    Win11,
    Server2008,
    Server2012,
    Server2016,
    Server2019,
    Server2022,
    Server2025,
}

impl WindowsVersion {
    /// A client edition (XP to 11), which uses only a few CPU sockets; the servers use many.
    pub fn is_client(self) -> bool {
        matches!(self, Self::Xp | Self::Vista | Self::Win7 | Self::Win8 | Self::Win10 | Self::Win11)
    }

    /// Windows 11 and Server 2025 require UEFI with Secure Boot and a TPM 2.0.
    pub fn needs_tpm(self) -> bool {
        matches!(self, Self::Win11 | Self::Server2025)
    }

    /// Versions that boot from UEFI (Windows 8 and Server 2012 on); older ones from a BIOS.
    pub fn boots_uefi(self) -> bool {
        !matches!(self, Self::Xp | Self::Vista | Self::Win7 | Self::Server2008)
    }

    /// Versions with Microsoft's own XHCI (USB 3) driver stack, usbxhci.sys: Windows 8 and
    /// Server 2012 on.
    pub fn has_inbox_xhci_driver(self) -> bool {
        !matches!(self, Self::Xp | Self::Vista | Self::Win7 | Self::Server2008)
    }

    /// From a libosinfo id (`http://microsoft.com/win/10`, `.../win/2k19`) or a short name
    /// given on the command line (`11`, `10`, `7`, `xp`, `2019`).
    pub fn parse(text: &str) -> Option<Self> {
        let key = text.trim().trim_end_matches('/').rsplit('/').next()?.to_ascii_lowercase();
        Some(match key.as_str() {
            "xp" | "2k3" | "2k3r2" => Self::Xp,
            "vista" => Self::Vista,
            "7" | "win7" => Self::Win7,
            "8" | "8.1" | "win8" => Self::Win8,
            "10" | "win10" => Self::Win10,
            "11" | "win11" => Self::Win11,
            "2k8" | "2k8r2" | "2008" => Self::Server2008,
            "2k12" | "2k12r2" | "2012" => Self::Server2012,
            "2k16" | "2016" => Self::Server2016,
            "2k19" | "2019" => Self::Server2019,
            "2k22" | "2022" => Self::Server2022,
            "2k25" | "2025" => Self::Server2025,
            _ => return None,
        })
    }
}

impl VmConfig {
    pub fn empty(format: SourceFormat) -> Self {
        Self {
            format,
            name: None,
            domain_type: None,
            machine: None,
            firmware: None,
            arch: None,
            tpr_patching: None,
            os_id: None,
            vcpus: None,
            vcpus_enabled: None,
            cpu: CpuConfig::default(),
            hyperv: HypervConfig::default(),
            kvm: Vec::new(),
            split_irqchip: None,
            clock: ClockConfig::default(),
            pinning: Pinning::default(),
            iothreads: None,
            memory: MemoryConfig::default(),
            devices: Devices::default(),
            power: PowerStates::default(),
            passthrough_args: Vec::new(),
            host_needs: None,
            anchors: Anchors::default(),
        }
    }

    /// The vCPUs that run: those enabled at start, else all of them.
    pub fn running_vcpus(&self) -> CpuSet {
        match &self.vcpus_enabled {
            Some(enabled) => enabled.clone(),
            None => (0..self.vcpus.as_ref().map_or(0, |v| v.value)).collect(),
        }
    }

    pub fn windows_version(&self) -> Option<WindowsVersion> {
        self.os_id.as_ref().and_then(|id| {
            id.value.contains("microsoft.com/win").then(|| WindowsVersion::parse(&id.value)).flatten()
        })
    }

    pub fn kvm_toggle(&self, name: &str) -> Option<&Toggle> {
        self.kvm.iter().find(|t| t.name == name)
    }

    /// The `hypervisor` CPUID bit is switched off by a disable/forbid feature policy.
    /// Whether the CPU is migratable, as libvirt decides it: host-passthrough and maximum are
    /// not unless marked so, named models are.
    pub fn cpu_migratable(&self) -> bool {
        match (&self.cpu.migratable, self.cpu.mode.as_ref().map(|m| m.value.as_str())) {
            (Some(migratable), _) => migratable.value,
            (None, Some("host-passthrough" | "maximum")) => false,
            (None, _) => true,
        }
    }

    /// Every CPU the config pins the VM to: vCPUs, emulator, iothreads, or the whole process.
    pub fn pinned_cpus(&self) -> CpuSet {
        let pinning = &self.pinning;
        let mut cpus = CpuSet::new();
        for pin in pinning.vcpupin.iter().chain(&pinning.iothreadpin) {
            cpus = cpus.union(&pin.cpus);
        }
        for set in pinning.emulatorpin.iter().chain(&pinning.process_affinity) {
            cpus = cpus.union(&set.value);
        }
        cpus
    }

    /// The node the config binds its memory to, where it names exactly one.
    pub fn memory_node(&self) -> Option<u32> {
        self.memory
            .numatune
            .as_ref()
            .and_then(|n| n.value.nodeset.as_ref())
            .filter(|nodes| nodes.len() == 1)
            .and_then(CpuSet::first)
    }

    /// What `needs` leave to the domain, worked out from its pins and memory: the CPUs (the
    /// emulator and iothreads may share the host's CPUs, vCPUs may not) and the hugepages
    /// `<memoryBacking><hugepages>` and `<memory>` need on the `<numatune>` node.
    /// `default_page_kib` is the host's default hugepage size, for `<hugepages/>` without one.
    pub fn resolve_needs(&self, needs: &HostNeeds, default_page_kib: u64) -> Result<HostNeeds, NeedsError> {
        let mut resolved = needs.clone();
        if resolved.cpus.is_none() {
            let pinned = self.pinned_cpus();
            resolved.cpus = Some(match &needs.housekeeping {
                Some(housekeeping) => {
                    let vcpus = self.pinning.vcpu_cpus();
                    let overlap = vcpus.intersection(housekeeping);
                    if !overlap.is_empty() {
                        return Err(NeedsError::HousekeepingOverlap {
                            overlap,
                            vm: vcpus,
                            housekeeping: housekeeping.clone(),
                        });
                    }
                    pinned.difference(housekeeping)
                }
                None => pinned,
            });
        }
        if resolved.hugepages == Hugepages::FromDomain {
            let pages = match (&self.memory.hugepages, &self.memory.size_kib) {
                (Some(requests), Some(size)) => {
                    let page_kib =
                        requests.value.iter().find_map(|r| r.size_kib).unwrap_or(default_page_kib).max(1);
                    vec![HugepageNeed {
                        size_kib: page_kib,
                        count: size.value.div_ceil(page_kib),
                        node: self.memory_node(),
                    }]
                }
                _ => Vec::new(),
            };
            resolved.hugepages = Hugepages::Exactly(pages);
        }
        Ok(resolved)
    }

    pub fn hypervisor_bit_disabled(&self) -> Option<&CpuFeature> {
        self.cpu.features.iter().find(|f| f.name == "hypervisor" && !f.enables())
    }
}
