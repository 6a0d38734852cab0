//! Host facts: everything about a machine that a Windows guest's tuning depends on.
//!
//! A new fact goes into the submodule for its area (or a new one), reads the host only through
//! [`Host`] (its files, its KVM device, its programs), and returns [`Fact::Unknown`] with a reason
//! instead of failing. [`probe`] assembles them into [`HostFacts`], whose JSON form is the
//! documented schema in `docs/probe-schema.md`. A new kind of host access (something that is not
//! a file) is a capability in [`access`], with its fake in [`fakes`], and a field of [`Host`].

pub mod access;
pub mod command;
pub mod cpu;
pub mod device_use;
pub mod fact;
pub mod fakes;
pub mod kernel;
pub mod kvm;
pub mod libvirt;
pub mod memory;
pub mod pci;
pub mod software;
pub mod state;
pub mod time;
pub mod topology;

use serde::{Deserialize, Serialize};

pub use access::{HostFs, LiveFs, ReadError, RootedFs, SnapshotError};
pub use fact::Fact;

use access::{
    Irqbalance, IrqbalanceSocket, PathPrograms, Programs, SchedAffinity, Systemctl, Systemd, ThreadAffinity,
};
use fakes::{StatusFileAffinity, Unavailable};
use kvm::{KvmDevice, LiveKvm};

/// One host, as every part of kvmtune reaches it: its files and its capabilities. The probe reads
/// facts through its methods (text, with errors that name the file); host changes go through
/// `fs` and the capabilities.
pub struct Host {
    pub fs: Box<dyn HostFs>,
    pub systemd: Box<dyn Systemd>,
    pub irqbalance: Box<dyn Irqbalance>,
    pub affinity: Box<dyn ThreadAffinity>,
    pub kvm: Box<dyn KvmDevice>,
    pub programs: Box<dyn Programs>,
}

impl Host {
    /// The machine kvmtune runs on.
    pub fn live() -> Self {
        Host {
            fs: Box::new(LiveFs),
            systemd: Box::new(Systemctl),
            irqbalance: Box::new(IrqbalanceSocket),
            affinity: Box::new(SchedAffinity),
            kvm: Box::new(LiveKvm),
            programs: Box::new(PathPrograms),
        }
    }

    /// A host laid out in a directory (tests, dry runs): files only. A thread's CPUs are its
    /// `proc/<tid>/status` line; there is no systemd, irqbalance, KVM device or program to ask.
    pub fn rooted(root: impl Into<std::path::PathBuf>) -> Self {
        let fs = RootedFs::new(root);
        let root = fs.root().to_path_buf();
        Self::files(Box::new(fs), Box::new(StatusFileAffinity { root }))
    }

    /// A captured host tree (`sys/`, `proc/`), read only; see [`RootedFs::snapshot`].
    pub fn snapshot(root: impl Into<std::path::PathBuf>) -> Result<Self, SnapshotError> {
        let fs = RootedFs::snapshot(root)?;
        let root = fs.root().to_path_buf();
        Ok(Self::files(Box::new(fs), Box::new(StatusFileAffinity { root })))
    }

    fn files(fs: Box<dyn HostFs>, affinity: Box<dyn ThreadAffinity>) -> Self {
        let unavailable = Unavailable { host: fs.describe() };
        Host {
            systemd: Box::new(unavailable.clone()),
            irqbalance: Box::new(unavailable.clone()),
            kvm: Box::new(unavailable.clone()),
            programs: Box::new(unavailable),
            affinity,
            fs,
        }
    }

    /// What to call this host in reports: `this host`, `snapshot /path`.
    pub fn describe(&self) -> String {
        self.fs.describe()
    }

    /// A fact file's text (UTF-8, at most [`access::MAX_FILE_BYTES`]).
    pub fn read(&self, path: &str) -> Result<String, ReadError> {
        let bytes = self.fs.read(path).map_err(|e| ReadError::of(path, e))?;
        String::from_utf8(bytes).map_err(|_| ReadError::NotText(path.to_string()))
    }

    /// A fact file's text without the surrounding whitespace, the form nearly every sysfs fact
    /// takes.
    pub fn read_trimmed(&self, path: &str) -> Result<String, ReadError> {
        self.read(path).map(|text| text.trim().to_string())
    }

    /// The names in a directory, in natural order.
    pub fn list(&self, path: &str) -> Result<Vec<String>, ReadError> {
        self.fs.list(path).map_err(|e| ReadError::of(path, e))
    }

    /// The last path component a symlink points at (`driver` -> `vfio-pci`).
    pub fn link_name(&self, path: &str) -> Result<String, ReadError> {
        self.fs.link_name(path).map_err(|e| ReadError::of(path, e))
    }

    /// Whether anything exists at this path.
    pub fn exists(&self, path: &str) -> bool {
        self.fs.exists(path)
    }
}

/// The `<prefix><number>` entries of a directory (`cpu0`, `node1`, `policy3`), by number.
pub fn numbered_entries(host: &Host, dir: &str, prefix: &str) -> Result<Vec<u32>, ReadError> {
    let mut numbers: Vec<u32> =
        host.list(dir)?.iter().filter_map(|name| name.strip_prefix(prefix)?.parse().ok()).collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Bumped when a field changes meaning or disappears; adding a field does not bump it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    pub schema_version: u32,
    /// `live host` or `snapshot <path>`.
    pub source: String,
    pub cpu: cpu::CpuInfo,
    pub topology: topology::Topology,
    pub memory: memory::Memory,
    pub time: time::Time,
    pub kernel: kernel::Kernel,
    pub kvm: kvm::Kvm,
    pub iommu: pci::Iommu,
    pub pci_devices: Fact<Vec<pci::PciDevice>>,
    pub host_state: state::HostState,
    /// QEMU and libvirt versions (absent from facts saved before they were probed).
    #[serde(default)]
    pub software: software::Software,
}

impl HostFacts {
    pub fn gpus(&self) -> Vec<&pci::PciDevice> {
        self.pci_devices
            .known()
            .map(|devices| devices.iter().filter(|d| d.is_gpu).collect())
            .unwrap_or_default()
    }
}

/// Reads every fact. Never fails as a whole: what cannot be read is `Unknown` with the reason.
/// Writes nothing; the only side effects are on the live host, where `/dev/kvm` is opened (on
/// kernels 5.0-5.10 a throwaway VM is created to ask about Hyper-V) and QEMU and libvirt are run
/// with `--version`.
pub fn probe(host: &Host) -> HostFacts {
    let cpu = cpu::probe(host);
    let topology = topology::probe(host, &cpu);
    let time = time::probe(host, &cpu);
    let iommu = pci::probe_iommu(host);
    let pci_devices = pci::probe_devices(host, &iommu);
    HostFacts {
        schema_version: SCHEMA_VERSION,
        source: host.fs.source(),
        memory: memory::probe(host),
        kernel: kernel::probe(host),
        kvm: kvm::probe(host),
        host_state: state::probe(host),
        software: software::probe(host),
        cpu,
        topology,
        time,
        iommu,
        pci_devices,
    }
}
