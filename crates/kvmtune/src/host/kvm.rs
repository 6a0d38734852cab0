//! KVM on this host: the modules and their parameters (readable from any snapshot), and what
//! `/dev/kvm` itself reports (live only): capabilities and Hyper-V support.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::host::fact::Fact;
use crate::knowledge::hyperv;
use crate::knowledge::kvm_api::{CAPABILITIES, KVM_CAP_HYPERV_CPUID, KVM_CAP_SYS_HYPERV_CPUID};
use crate::sys;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kvm {
    pub modules: Fact<KvmModules>,
    /// Whether APICv (Intel) or AVIC (AMD) is switched on in the vendor module.
    pub apic_virtualization: Fact<ApicVirtualization>,
    pub device: Fact<KvmDeviceReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmModules {
    /// `kvm_intel`, `kvm_amd`, or another vendor module (`kvm_pvm` on some nested clouds).
    pub vendor_module: Option<String>,
    /// Module name -> parameter name -> value as sysfs prints it.
    pub parameters: BTreeMap<String, BTreeMap<String, String>>,
    /// Parameters that exist but could not be read, with the reason.
    pub unreadable: Vec<String>,
}

impl KvmModules {
    pub fn parameter(&self, module: &str, name: &str) -> Option<&str> {
        self.parameters.get(module)?.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApicVirtualization {
    /// `apicv` or `avic`.
    pub kind: String,
    pub enabled: bool,
    /// The parameter the verdict comes from, as `module/parameter=value`.
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmDeviceReport {
    pub present: bool,
    /// Opened read-write and answered `KVM_GET_API_VERSION`.
    pub usable: Fact<bool>,
    pub api_version: Fact<i32>,
    pub capabilities: Vec<CapabilityValue>,
    pub hyperv: HypervSupport,
    /// Whether KVM offers guests AMD's topology extensions (`KVM_GET_SUPPORTED_CPUID`, leaf
    /// 0x80000001 ECX bit 22): what `-cpu host` passes for topoext.
    #[serde(default = "topoext_not_recorded")]
    pub topoext: Fact<bool>,
}

fn topoext_not_recorded() -> Fact<bool> {
    Fact::Unknown("not in this host JSON (written by an older kvmtune)".into())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityValue {
    pub name: String,
    pub number: u32,
    /// 0 = absent; otherwise the capability's value.
    pub value: Fact<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HypervSupport {
    /// KVM answered `KVM_GET_SUPPORTED_HV_CPUID`.
    Supported {
        /// `system fd` or `vcpu fd`.
        queried_on: String,
        signature: Option<String>,
        /// QEMU property names, in a stable order.
        enlightenments: Vec<String>,
        leaves: Vec<RawLeaf>,
    },
    /// The kernel has no KVM Hyper-V emulation (built without CONFIG_KVM_HYPERV): a fact about
    /// the host, not a probe failure.
    NotSupported { evidence: String },
    /// The question could not be asked (no /dev/kvm, no permission).
    Unknown { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawLeaf {
    pub function: String,
    pub eax: String,
    pub ebx: String,
    pub ecx: String,
    pub edx: String,
}

pub fn probe(host: &Host) -> Kvm {
    let modules = read_modules(host);
    let apic_virtualization = match &modules {
        Fact::Known(modules) => apic_virtualization(modules),
        Fact::Unknown(reason) => Fact::Unknown(reason.clone()),
    };
    let device = match host.kvm.query() {
        Some(report) => Fact::Known(report),
        None => {
            Fact::Unknown("not asked: KVM ioctls run on the live host only, never on a snapshot".to_string())
        }
    };
    Kvm { modules, apic_virtualization, device }
}

fn read_modules(host: &Host) -> Fact<KvmModules> {
    let loaded = match host.list("/sys/module") {
        Ok(names) => names,
        Err(error) => return Fact::Unknown(error.to_string()),
    };
    let kvm_modules: Vec<&String> = loaded.iter().filter(|m| *m == "kvm" || m.starts_with("kvm_")).collect();
    if kvm_modules.is_empty() {
        return Fact::Unknown(
            "/sys/module lists no kvm module (KVM not loaded, or not captured)".to_string(),
        );
    }
    let vendor_module = ["kvm_intel", "kvm_amd"]
        .iter()
        .find(|m| loaded.iter().any(|l| l == *m))
        .map(|m| m.to_string())
        .or_else(|| {
            kvm_modules
                .iter()
                .find(|m| **m != "kvm" && host.exists(&format!("/sys/module/{m}/parameters")))
                .map(|m| m.to_string())
        });
    let mut parameters = BTreeMap::new();
    let mut unreadable = Vec::new();
    for module in kvm_modules {
        let dir = format!("/sys/module/{module}/parameters");
        let Ok(names) = host.list(&dir) else { continue };
        let mut values = BTreeMap::new();
        for name in names {
            match host.read_trimmed(&format!("{dir}/{name}")) {
                Ok(value) => {
                    values.insert(name, value);
                }
                Err(error) => unreadable.push(error.to_string()),
            }
        }
        parameters.insert(module.clone(), values);
    }
    Fact::Known(KvmModules { vendor_module, parameters, unreadable })
}

/// kvm_intel/enable_apicv and kvm_amd/avic are booleans in sysfs (`Y`/`N`; since Linux 6.18
/// kvm_amd's avic is tri-state internally and may read `1`/`0`/`-1`, per knowledge.md 4c).
fn apic_virtualization(modules: &KvmModules) -> Fact<ApicVirtualization> {
    let truthy = |v: &str| matches!(v, "Y" | "y" | "1");
    let (kind, module, parameter) = match modules.vendor_module.as_deref() {
        Some("kvm_intel") => ("apicv", "kvm_intel", "enable_apicv"),
        Some("kvm_amd") => ("avic", "kvm_amd", "avic"),
        Some(other) => {
            return Fact::Unknown(format!("vendor module {other} has no APICv/AVIC switch kvmtune knows"));
        }
        None => return Fact::Unknown("no KVM vendor module loaded".to_string()),
    };
    match modules.parameter(module, parameter) {
        Some(value) => Fact::Known(ApicVirtualization {
            kind: kind.to_string(),
            enabled: truthy(value),
            evidence: format!("{module}/{parameter}={value}"),
        }),
        None => {
            Fact::Unknown(format!("/sys/module/{module}/parameters/{parameter} is missing or unreadable"))
        }
    }
}

/// The KVM device of a host: asked what it supports, where it can be.
pub trait KvmDevice: Send + Sync {
    /// `None` where that is impossible by construction (a snapshot): the probe then reports the
    /// device facts as unknown.
    fn query(&self) -> Option<KvmDeviceReport>;
}

/// `/dev/kvm` of the machine kvmtune runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveKvm;

impl KvmDevice for LiveKvm {
    fn query(&self) -> Option<KvmDeviceReport> {
        Some(query_live_device(Path::new("/dev/kvm")))
    }
}

/// Opens the KVM device and asks it. Runs only for the live host.
pub fn query_live_device(path: &Path) -> KvmDeviceReport {
    if !path.exists() {
        let reason = format!("{} does not exist", path.display());
        return KvmDeviceReport {
            present: false,
            usable: Fact::Known(false),
            api_version: Fact::Unknown(reason.clone()),
            capabilities: Vec::new(),
            hyperv: HypervSupport::Unknown { reason: reason.clone() },
            topoext: Fact::Unknown(reason),
        };
    }
    let kvm = match sys::KvmSystem::open(path) {
        Ok(file) => file,
        Err(error) => {
            let reason = format!("opening {}: {error}", path.display());
            return KvmDeviceReport {
                present: true,
                usable: Fact::Unknown(reason.clone()),
                api_version: Fact::Unknown(reason.clone()),
                capabilities: Vec::new(),
                hyperv: HypervSupport::Unknown { reason: reason.clone() },
                topoext: Fact::Unknown(reason),
            };
        }
    };
    let api_version: Fact<i32> = kvm.api_version().map_err(|e| format!("KVM_GET_API_VERSION: {e}")).into();
    let capabilities: Vec<CapabilityValue> = CAPABILITIES
        .iter()
        .map(|cap| CapabilityValue {
            name: cap.name.to_string(),
            number: cap.number,
            value: kvm.check_extension(cap.number).map_err(|e| format!("KVM_CHECK_EXTENSION: {e}")).into(),
        })
        .collect();
    let cap = |number: u32| {
        capabilities.iter().find(|c| c.number == number).and_then(|c| c.value.known().copied()).unwrap_or(0)
    };
    let hyperv = query_hyperv(&kvm, cap(KVM_CAP_SYS_HYPERV_CPUID), cap(KVM_CAP_HYPERV_CPUID));
    // CPUID Fn8000_0001 ECX bit 22: TOPOEXT (AMD64 APM vol. 3, appendix E).
    let topoext = kvm
        .supported_cpuid()
        .map(|entries| entries.iter().any(|e| e.function == 0x8000_0001 && e.ecx & (1 << 22) != 0))
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))
        .into();
    KvmDeviceReport {
        present: true,
        // KVM's API version has been 12 since Linux 2.6.22; anything else is not a KVM we know.
        usable: Fact::Known(api_version.known() == Some(&12)),
        api_version,
        capabilities,
        hyperv,
        topoext,
    }
}

fn query_hyperv(kvm: &sys::KvmSystem, sys_cap: i32, vcpu_cap: i32) -> HypervSupport {
    let caps = format!("KVM_CAP_SYS_HYPERV_CPUID={sys_cap}, KVM_CAP_HYPERV_CPUID={vcpu_cap}");
    let (result, queried_on) = if sys_cap == 0 && vcpu_cap > 0 {
        // Kernels 5.0-5.10 answer only on a vCPU fd; a throwaway VM with one vCPU is enough.
        let result =
            kvm.create_vm().and_then(|vm| vm.create_vcpu(0)).and_then(|vcpu| vcpu.supported_hv_cpuid());
        (result, "vcpu fd")
    } else {
        // With neither capability the ioctl is still asked once on /dev/kvm, so that the
        // report carries the kernel's own answer (EINVAL without CONFIG_KVM_HYPERV).
        (kvm.supported_hv_cpuid(), "system fd")
    };
    match result {
        Ok(entries) => HypervSupport::Supported {
            queried_on: queried_on.to_string(),
            signature: hyperv::signature(&entries),
            enlightenments: hyperv::supported(&entries).iter().map(|e| e.hv.qemu().to_string()).collect(),
            leaves: entries
                .iter()
                .map(|e| RawLeaf {
                    function: format!("{:#010x}", e.function),
                    eax: format!("{:#010x}", e.eax),
                    ebx: format!("{:#010x}", e.ebx),
                    ecx: format!("{:#010x}", e.ecx),
                    edx: format!("{:#010x}", e.edx),
                })
                .collect(),
        },
        Err(error) if matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ENOTTY)) => {
            HypervSupport::NotSupported {
                evidence: format!("KVM_GET_SUPPORTED_HV_CPUID on the {queried_on}: {error}; {caps}"),
            }
        }
        Err(error) => HypervSupport::Unknown {
            reason: format!("KVM_GET_SUPPORTED_HV_CPUID on the {queried_on}: {error}; {caps}"),
        },
    }
}
