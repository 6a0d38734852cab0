//! The user-space half of the stack a VM runs on: the QEMU and libvirt versions.
//!
//! Which Hyper-V enlightenments a VM can have depends on the kernel (KVM must emulate them),
//! QEMU (it must know the `-cpu` property) and libvirt (it must know the XML element). When
//! `/dev/kvm` cannot be asked, these versions are what the planner and `check` go by
//! (`knowledge::hyperv::AVAILABILITY`). A snapshot records no program versions; the CLI takes
//! them as `--qemu-version` and `--libvirt-version`.

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::host::fact::Fact;
use crate::values::Version;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Software {
    pub qemu: Fact<Version>,
    pub libvirt: Fact<Version>,
}

impl Default for Software {
    /// Host facts saved before these fields existed.
    fn default() -> Self {
        let missing = || Fact::Unknown("not recorded in these host facts".to_string());
        Software { qemu: missing(), libvirt: missing() }
    }
}

/// Programs to ask, in order: the x86 system emulator (RHEL ships it as qemu-kvm), and the
/// monolithic libvirt daemon or its modular QEMU driver.
const QEMU_PROGRAMS: &[&str] = &["qemu-system-x86_64", "/usr/libexec/qemu-kvm", "qemu-kvm"];
const LIBVIRT_PROGRAMS: &[&str] = &["libvirtd", "virtqemud"];

pub fn probe(host: &Host) -> Software {
    Software { qemu: version_of(host, QEMU_PROGRAMS), libvirt: version_of(host, LIBVIRT_PROGRAMS) }
}

fn version_of(host: &Host, programs: &[&str]) -> Fact<Version> {
    let mut tried = Vec::new();
    for program in programs {
        match host.programs.output(program, &["--version"]) {
            None => {
                return Fact::Unknown("a snapshot records no program versions".to_string());
            }
            Some(Ok(output)) => match Version::find_in(&output) {
                Some(version) => return Fact::Known(version),
                None => tried.push(format!("{program} --version printed no version: `{}`", output.trim())),
            },
            Some(Err(error)) => tried.push(error.to_string()),
        }
    }
    Fact::Unknown(tried.join("; "))
}
