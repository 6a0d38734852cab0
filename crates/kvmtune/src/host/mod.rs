//! Host facts: everything about a machine that a Windows guest's tuning depends on.
//!
//! A new fact goes into the submodule for its area (or a new one), reads the host only through
//! [`HostSource`], and returns [`Fact::Unknown`] with a reason instead of failing. [`probe`]
//! assembles them into [`HostFacts`], whose JSON form is the documented schema in
//! `docs/probe-schema.md`.

pub mod cpu;
pub mod fact;
pub mod kernel;
pub mod kvm;
pub mod memory;
pub mod pci;
pub mod software;
pub mod source;
pub mod state;
pub mod time;
pub mod topology;

use serde::{Deserialize, Serialize};

pub use fact::Fact;
pub use source::{HostSource, LiveHost, ReadError, SnapshotError, SnapshotHost};

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
pub fn probe(host: &dyn HostSource) -> HostFacts {
    let cpu = cpu::probe(host);
    let topology = topology::probe(host, &cpu);
    let time = time::probe(host, &cpu);
    let iommu = pci::probe_iommu(host);
    let pci_devices = pci::probe_devices(host, &iommu);
    HostFacts {
        schema_version: SCHEMA_VERSION,
        source: host.describe(),
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
