//! Fixes as data, independent of the config format.
//!
//! A rule proposes [`FixAction`]s; a format's editor (for libvirt XML,
//! [`crate::config::libvirt_edit`]) turns them into byte edits of the original file. Formats
//! without an editor show the action's description as a manual step.

use serde::Serialize;

/// Whether `--fix` may apply a fix without asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applicability {
    /// Keeps the guest working and only removes a cost: applied by `--fix`.
    Safe,
    /// Right in general but changes guest-visible behaviour (clock offset, device model, CPU
    /// topology): shown, never applied automatically.
    Unsafe,
    /// Needs a decision only the user can make (which CPUs, which devices): described only.
    Manual,
}

/// One guest NUMA cell as a config states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestCell {
    pub id: u32,
    /// Guest vCPUs, as libvirt writes CPU lists (`0-7`).
    pub cpus: String,
    pub memory_kib: u64,
    pub host_node: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FixAction {
    /// Ask the host side of the plan from kvmtune's libvirt hook: `<kvmtune:host>` in
    /// `<metadata>` (config/host_request.rs), replacing one that is there.
    SetHostRequest { side: crate::analysis::planner::host_side::HostSide },
    /// Turn these Hyper-V enlightenments on (QEMU names; `hv-time` is the hypervclock timer).
    EnableHyperv { features: Vec<String> },
    /// Turn one enlightenment off.
    DisableHyperv { feature: String },
    /// Set `hv-spinlocks` retries.
    SetSpinlockRetries { retries: u32 },
    /// Make a `<clock><timer>` carry these attributes (adding the timer if it is missing).
    SetTimer { name: String, attributes: Vec<(String, String)> },
    /// `<clock offset=...>`.
    SetClockOffset { offset: String },
    /// `<memballoon model=...>`.
    SetMemballoonModel { model: String },
    /// Add `<feature policy='require' name=...>` to `<cpu>`.
    RequireCpuFeature { name: String },
    /// Remove a `<cpu><feature>` (for example the one that hides the hypervisor bit).
    RemoveCpuFeature { name: String },
    /// `<cpu><cache mode=...>`.
    SetCpuCacheMode { mode: String },
    /// `<cpu><topology>` (the guest's sockets, dies, cores, threads).
    SetCpuTopology { sockets: u32, dies: u32, cores: u32, threads: u32 },
    /// `<cpu mode=... migratable=...>`.
    SetCpuMode { mode: String, migratable: bool },
    /// `<iothreads>`.
    SetIothreads { count: u32 },
    /// `iothread=` on the `<driver>` of the disk with this target (`vda`), with `<iothreads>`
    /// raised to hold it.
    AttachDiskIothread { target: String, iothread: u32 },
    /// Replace every `<vcpupin>`, `<emulatorpin>` and `<iothreadpin>` in `<cputune>`; CPU lists as
    /// libvirt writes them (`2,18`).
    SetPins { vcpus: Vec<(u32, String)>, emulator: String, iothreads: Vec<(u32, String)> },
    /// `<numatune><memory mode='strict' nodeset=...>`.
    SetNumatune { nodeset: String },
    /// Attributes of the `<driver>` of the disk with this target (`cache`, `io`).
    SetDiskDriver { target: String, attributes: Vec<(String, String)> },
    /// `<pm>` with suspend to RAM and to disk off.
    DisableSleepStates,
    /// A guest NUMA topology: `<cpu><numa>` cells, and a strict `<memnode>` per cell binding its
    /// memory to its host node (with `<memory>` strict to all of them).
    SetGuestNuma { cells: Vec<GuestCell> },
    /// Something only the user can do; the text says what.
    Manual { steps: String },
}

impl FixAction {
    /// The action edits what libvirt turns into QEMU's `-cpu` (enlightenments, CPU features
    /// and mode, the Hyper-V clock): a `-cpu` passed through `<qemu:commandline>` overrides it.
    pub fn shapes_cpu_argument(&self) -> bool {
        match self {
            FixAction::EnableHyperv { .. }
            | FixAction::DisableHyperv { .. }
            | FixAction::SetSpinlockRetries { .. }
            | FixAction::RequireCpuFeature { .. }
            | FixAction::RemoveCpuFeature { .. }
            | FixAction::SetCpuCacheMode { .. }
            | FixAction::SetCpuMode { .. } => true,
            FixAction::SetTimer { name, .. } => name == "hypervclock",
            _ => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            FixAction::EnableHyperv { features } => format!("enable {}", features.join(", ")),
            FixAction::DisableHyperv { feature } => format!("turn {feature} off"),
            FixAction::SetSpinlockRetries { retries } => format!("set hv-spinlocks retries to {retries}"),
            FixAction::SetTimer { name, attributes } => format!(
                "set timer {name}: {}",
                attributes.iter().map(|(k, v)| format!("{k}='{v}'")).collect::<Vec<_>>().join(" ")
            ),
            FixAction::SetClockOffset { offset } => format!("set the clock offset to {offset}"),
            FixAction::SetMemballoonModel { model } => format!("set the memballoon model to {model}"),
            FixAction::SetHostRequest { side } => {
                format!("ask the libvirt hook (`kvmtune hook install`) to prepare CPUs {} on the host", side.cpus)
            }
            FixAction::RequireCpuFeature { name } => format!("require CPU feature {name}"),
            FixAction::RemoveCpuFeature { name } => format!("remove the CPU feature policy for {name}"),
            FixAction::SetCpuCacheMode { mode } => format!("set the CPU cache mode to {mode}"),
            FixAction::SetCpuTopology { sockets, dies, cores, threads } => {
                format!(
                    "set the guest topology to {sockets} socket(s), {dies} die(s), {cores} core(s), {threads} thread(s)"
                )
            }
            FixAction::SetCpuMode { mode, migratable } => {
                format!("set the CPU mode to {mode}, migratable={}", if *migratable { "on" } else { "off" })
            }
            FixAction::SetIothreads { count } => format!("give the VM {count} iothread(s)"),
            FixAction::AttachDiskIothread { target, iothread } => {
                format!("run disk {target}'s I/O in iothread {iothread}")
            }
            FixAction::SetPins { vcpus, emulator, .. } => {
                format!("pin {} vCPU(s) one to one, the emulator and iothreads to {emulator}", vcpus.len())
            }
            FixAction::SetNumatune { nodeset } => format!("bind memory strictly to NUMA node {nodeset}"),
            FixAction::SetDiskDriver { target, attributes } => format!(
                "set disk {target}'s driver: {}",
                attributes.iter().map(|(k, v)| format!("{k}='{v}'")).collect::<Vec<_>>().join(" ")
            ),
            FixAction::DisableSleepStates => {
                "turn the guest's sleep states off: <pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>".to_string()
            }
            FixAction::SetGuestNuma { cells } => format!(
                "give the guest {} NUMA nodes mirroring the host's ({}), each cell's memory bound to its host node",
                cells.len(),
                cells
                    .iter()
                    .map(|c| format!(
                        "vCPUs {} and {} MiB on node {}",
                        c.cpus,
                        c.memory_kib / 1024,
                        c.host_node
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            FixAction::Manual { steps } => steps.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    pub applicability: Applicability,
    pub action: FixAction,
}

impl Fix {
    pub fn safe(action: FixAction) -> Self {
        Self { applicability: Applicability::Safe, action }
    }
    pub fn unsafe_(action: FixAction) -> Self {
        Self { applicability: Applicability::Unsafe, action }
    }
    pub fn manual(steps: impl Into<String>) -> Self {
        Self { applicability: Applicability::Manual, action: FixAction::Manual { steps: steps.into() } }
    }
}
