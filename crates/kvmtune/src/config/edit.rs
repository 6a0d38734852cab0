//! Edits of a VM config as data, independent of its format: what a rule's fix, `tune` on an
//! existing VM and an experiment's variant change. A format's editor (for libvirt XML,
//! [`crate::config::libvirt_edit`]) turns them into byte edits of the original file; formats
//! without an editor show an edit's description as a manual step.

use crate::knowledge::hyperv::Hv;
use crate::values::text::plural;
use serde::Serialize;

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
pub enum ConfigEdit {
    /// Ask what the VM needs of its host from kvmtune's libvirt hook: `<kvmtune:host>` in
    /// `<metadata>` ([`crate::config::host_needs`]), replacing one that is there.
    SetHostNeeds { needs: crate::config::host_needs::HostNeeds },
    /// Turn these Hyper-V enlightenments on (QEMU names; `hv-time` is the hypervclock timer).
    EnableHyperv { features: Vec<Hv> },
    /// Turn one enlightenment off.
    DisableHyperv { feature: Hv },
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
    /// `<feature policy='disable' name=...>` in `<cpu>`: the guest does not see it (the
    /// `hypervisor` bit hidden, say).
    DisableCpuFeature { name: String },
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
    /// `<numatune><memory mode='strict' nodeset=...>`, and each guest cell's `<memnode>` strict
    /// to the same nodes.
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

impl ConfigEdit {
    /// The action edits what libvirt turns into QEMU's `-cpu` (enlightenments, CPU features
    /// and mode, the Hyper-V clock): a `-cpu` passed through `<qemu:commandline>` overrides it.
    pub fn shapes_cpu_argument(&self) -> bool {
        match self {
            ConfigEdit::EnableHyperv { .. }
            | ConfigEdit::DisableHyperv { .. }
            | ConfigEdit::SetSpinlockRetries { .. }
            | ConfigEdit::RequireCpuFeature { .. }
            | ConfigEdit::DisableCpuFeature { .. }
            | ConfigEdit::RemoveCpuFeature { .. }
            | ConfigEdit::SetCpuCacheMode { .. }
            | ConfigEdit::SetCpuMode { .. } => true,
            ConfigEdit::SetTimer { name, .. } => name == "hypervclock",
            _ => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ConfigEdit::EnableHyperv { features } => {
                format!("enable {}", features.iter().map(|f| f.qemu()).collect::<Vec<_>>().join(", "))
            }
            ConfigEdit::DisableHyperv { feature } => format!("turn {feature} off"),
            ConfigEdit::SetSpinlockRetries { retries } => format!("set hv-spinlocks retries to {retries}"),
            ConfigEdit::SetTimer { name, attributes } => format!(
                "set timer {name}: {}",
                attributes.iter().map(|(k, v)| format!("{k}='{v}'")).collect::<Vec<_>>().join(" ")
            ),
            ConfigEdit::SetClockOffset { offset } => format!("set the clock offset to {offset}"),
            ConfigEdit::SetMemballoonModel { model } => format!("set the memballoon model to {model}"),
            ConfigEdit::SetHostNeeds { needs } => {
                let cpus = needs.cpus.as_ref().map_or("its pinned CPUs".to_string(), |c| format!("CPUs {c}"));
                format!("ask the libvirt hook (`kvmtune hook install`) to prepare {cpus} on the host")
            }
            ConfigEdit::RequireCpuFeature { name } => format!("require CPU feature {name}"),
            ConfigEdit::DisableCpuFeature { name } => format!("hide CPU feature {name} from the guest"),
            ConfigEdit::RemoveCpuFeature { name } => format!("remove the CPU feature policy for {name}"),
            ConfigEdit::SetCpuCacheMode { mode } => format!("set the CPU cache mode to {mode}"),
            ConfigEdit::SetCpuTopology { sockets, dies, cores, threads } => {
                let count = |n: &u32, noun| plural(*n as usize, noun);
                format!(
                    "set the guest topology to {}, {}, {}, {}",
                    count(sockets, "socket"),
                    count(dies, "die"),
                    count(cores, "core"),
                    count(threads, "thread")
                )
            }
            ConfigEdit::SetCpuMode { mode, migratable } => {
                format!("set the CPU mode to {mode}, migratable={}", if *migratable { "on" } else { "off" })
            }
            ConfigEdit::SetIothreads { count } => format!("give the VM {}", plural(*count as usize, "iothread")),
            ConfigEdit::AttachDiskIothread { target, iothread } => {
                format!("run disk {target}'s I/O in iothread {iothread}")
            }
            ConfigEdit::SetPins { vcpus, emulator, .. } => {
                format!("pin {} one to one, the emulator and iothreads to {emulator}", plural(vcpus.len(), "vCPU"))
            }
            ConfigEdit::SetNumatune { nodeset } => format!("bind memory strictly to NUMA node {nodeset}"),
            ConfigEdit::SetDiskDriver { target, attributes } => format!(
                "set disk {target}'s driver: {}",
                attributes.iter().map(|(k, v)| format!("{k}='{v}'")).collect::<Vec<_>>().join(" ")
            ),
            ConfigEdit::DisableSleepStates => {
                "turn the guest's sleep states off: <pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>".to_string()
            }
            ConfigEdit::SetGuestNuma { cells } => format!(
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
            ConfigEdit::Manual { steps } => steps.clone(),
        }
    }
}

/// The timers an edit may turn on or off by name, as libvirt's `<clock><timer name=...>` knows
/// them (formatdomain.html, "Time keeping").
const TIMERS: &[&str] = &["hpet", "pit", "rtc", "hypervclock", "kvmclock", "tsc"];

/// One edit as a user spells it on a command line (`kvmtune experiment --variant
/// NAME:EDIT,...`), in QEMU's and libvirt's own words:
///
/// | spelling | edit |
/// |---|---|
/// | `hv-NAME=on` | the enlightenment with everything it needs (`hv-stimer=on` brings hv-synic, hv-vpindex and hv-time) |
/// | `hv-NAME=off` | that enlightenment alone off |
/// | `hv-spinlocks=N` | the retry count (decimal or `0x`) |
/// | `hpet=off`, `hypervclock=on`, ... | the `<clock><timer>` of that name present or not |
/// | `hide-hypervisor`, `show-hypervisor` | the CPUID hypervisor bit disabled, or its policy removed |
/// | `clock=localtime`, `clock=utc` | `<clock offset>` |
/// | `memballoon=none` | `<memballoon model>` |
/// | `iothreads=N` | `<iothreads>` |
pub fn parse_spelled(text: &str) -> Result<ConfigEdit, String> {
    use crate::knowledge::hyperv::{Hv, closed_under_dependencies};
    let text = text.trim();
    let on_off = |value: &str| match value {
        "on" | "yes" => Ok(true),
        "off" | "no" => Ok(false),
        _ => Err(format!("`{text}`: `{value}` is not on or off")),
    };
    let number = |value: &str| {
        let parsed = match value.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => value.parse(),
        };
        parsed.map_err(|_| format!("`{text}`: `{value}` is not a number"))
    };
    match text {
        "hide-hypervisor" => return Ok(ConfigEdit::DisableCpuFeature { name: "hypervisor".into() }),
        "show-hypervisor" => return Ok(ConfigEdit::RemoveCpuFeature { name: "hypervisor".into() }),
        _ => {}
    }
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "`{text}` is not an edit: NAME=VALUE (hv-stimer=on, hpet=off, ...), hide-hypervisor or show-hypervisor"
        ));
    };
    if key == "hv-spinlocks" {
        return Ok(ConfigEdit::SetSpinlockRetries { retries: number(value)? });
    }
    if let Some(feature) = Hv::from_qemu(key) {
        return Ok(match on_off(value)? {
            true => ConfigEdit::EnableHyperv { features: closed_under_dependencies(&[feature]) },
            false => ConfigEdit::DisableHyperv { feature },
        });
    }
    if TIMERS.contains(&key) {
        let present = if on_off(value)? { "yes" } else { "no" };
        return Ok(ConfigEdit::SetTimer {
            name: key.into(),
            attributes: vec![("present".into(), present.into())],
        });
    }
    match (key, value) {
        ("clock", "localtime" | "utc") => Ok(ConfigEdit::SetClockOffset { offset: value.into() }),
        ("memballoon", "none" | "virtio" | "virtio-transitional" | "virtio-non-transitional") => {
            Ok(ConfigEdit::SetMemballoonModel { model: value.into() })
        }
        ("iothreads", _) => Ok(ConfigEdit::SetIothreads { count: number(value)? }),
        _ if key.starts_with("hv-") => Err(format!("`{text}`: {key} is not an enlightenment kvmtune knows")),
        _ => Err(format!(
            "`{text}`: unknown edit `{key}` (hv-*, hv-spinlocks, {}, clock, memballoon, iothreads, hide-hypervisor, show-hypervisor)",
            TIMERS.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::hyperv::Hv;

    #[test]
    fn spelled_edits_read_as_users_write_them() {
        assert_eq!(
            parse_spelled("hv-stimer=on"),
            Ok(ConfigEdit::EnableHyperv {
                features: crate::knowledge::hyperv::closed_under_dependencies(&[Hv::Stimer])
            })
        );
        let ConfigEdit::EnableHyperv { features } = parse_spelled("hv-stimer=on").unwrap() else { panic!() };
        assert!(features.contains(&Hv::Synic) && features.contains(&Hv::Time), "{features:?}");
        assert_eq!(
            parse_spelled("hv-avic=off"),
            Ok(ConfigEdit::DisableHyperv { feature: Hv::from_qemu("hv-avic").unwrap() })
        );
        assert_eq!(
            parse_spelled("hv-spinlocks=0x1fff"),
            Ok(ConfigEdit::SetSpinlockRetries { retries: 0x1fff })
        );
        assert_eq!(
            parse_spelled(" hpet=off"),
            Ok(ConfigEdit::SetTimer {
                name: "hpet".into(),
                attributes: vec![("present".into(), "no".into())]
            })
        );
        assert_eq!(
            parse_spelled("hide-hypervisor"),
            Ok(ConfigEdit::DisableCpuFeature { name: "hypervisor".into() })
        );
        assert_eq!(
            parse_spelled("clock=localtime"),
            Ok(ConfigEdit::SetClockOffset { offset: "localtime".into() })
        );
    }

    #[test]
    fn unknown_edits_say_what_is_known() {
        assert!(parse_spelled("hv-warp=on").unwrap_err().contains("not an enlightenment"));
        assert!(parse_spelled("hpet=maybe").unwrap_err().contains("not on or off"));
        assert!(parse_spelled("turbo=on").unwrap_err().contains("unknown edit `turbo`"));
        assert!(parse_spelled("hidehypervisor").unwrap_err().contains("is not an edit"));
        assert!(parse_spelled("iothreads=many").unwrap_err().contains("not a number"));
    }
}
