//! KVM on this host: the modules and their parameters (readable from any snapshot), and what
//! `/dev/kvm` itself reports (live only): capabilities and Hyper-V support.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::host::fact::Fact;
use crate::knowledge::hyperv;
use crate::knowledge::kvm_api::{
    CAPABILITIES, KVM_CAP_GET_MSR_FEATURES, KVM_CAP_HYPERV_CPUID, KVM_CAP_SYS_HYPERV_CPUID,
};
use crate::sys;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kvm {
    pub modules: Fact<KvmModules>,
    /// Whether APICv (Intel) or AVIC (AMD) is switched on in the vendor module.
    pub apic_virtualization: Fact<ApicVirtualization>,
    pub device: Fact<KvmDeviceReport>,
}

/// Hardware virtualization as KVM hands it to a guest whose CPU is the host's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedVirtualization {
    /// `vmx` (Intel) or `svm` (AMD): the CPU feature such a guest sees.
    pub feature: &'static str,
    pub offered: bool,
    /// The parameter the answer comes from, as `module/parameter=value`.
    pub evidence: String,
}

impl Kvm {
    /// Whether KVM offers its guests VMX or SVM, from the vendor module's `nested` parameter:
    /// KVM lists the feature among what it supports (KVM_GET_SUPPORTED_CPUID) exactly when
    /// that parameter is on (Linux arch/x86/kvm/vmx/vmx.c vmx_set_cpu_caps, svm/svm.c
    /// svm_set_cpu_caps), and QEMU's `-cpu host` (libvirt's host-passthrough) passes on what
    /// KVM supports. `None` where the module or its parameter was not read.
    pub fn nested_virtualization(&self) -> Option<NestedVirtualization> {
        let modules = self.modules.known()?;
        let (module, feature) = match modules.vendor_module.as_deref()? {
            "kvm_intel" => ("kvm_intel", "vmx"),
            "kvm_amd" => ("kvm_amd", "svm"),
            _ => return None,
        };
        // kvm_intel's `nested` is a bool (`Y`/`N`), kvm_amd's an int (`1`/`0`).
        let value = modules.parameter(module, "nested")?;
        Some(NestedVirtualization {
            feature,
            offered: matches!(value, "Y" | "y" | "1"),
            evidence: format!("{module}/nested={value}"),
        })
    }
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
    /// Whether a vCPU takes the IA32_ARCH_CAPABILITIES value KVM offers, as QEMU sets it for
    /// `-cpu host`: where it does not, host-passthrough aborts at start.
    #[serde(default = "arch_capabilities_not_recorded")]
    pub arch_capabilities: Fact<ArchCapabilities>,
}

fn topoext_not_recorded() -> Fact<bool> {
    Fact::Unknown("not in this host JSON (written by an older kvmtune)".into())
}

fn arch_capabilities_not_recorded() -> Fact<ArchCapabilities> {
    Fact::Unknown("not in this host JSON (written by an older kvmtune)".into())
}

/// IA32_ARCH_CAPABILITIES (MSR 0x10a) as `-cpu host` meets it. QEMU reads the value KVM offers
/// (`KVM_GET_MSRS` on /dev/kvm) and sets it on every vCPU whose CPUID has the feature (CPUID
/// 7.EDX bit 29); if KVM refuses, QEMU aborts with `failed to set MSR 0x10a`. Some nested
/// hosts' KVM offers a value it then refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchCapabilities {
    /// The value KVM offers, in hex; none where it offers no such MSR (nothing is then set).
    pub offered: Option<String>,
    /// Whether a scratch vCPU, given the feature in its CPUID, took that value.
    pub accepted: bool,
}

impl ArchCapabilities {
    /// KVM offers a value and refuses it: QEMU's `-cpu host` cannot start here.
    pub fn refused(&self) -> bool {
        self.offered.is_some() && !self.accepted
    }
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
            topoext: Fact::Unknown(reason.clone()),
            arch_capabilities: Fact::Unknown(reason),
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
                topoext: Fact::Unknown(reason.clone()),
                arch_capabilities: Fact::Unknown(reason),
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
    let supported_cpuid = kvm.supported_cpuid().map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"));
    // CPUID Fn8000_0001 ECX bit 22: TOPOEXT (AMD64 APM vol. 3, appendix E).
    let topoext = supported_cpuid
        .as_ref()
        .map(|entries| entries.iter().any(|e| e.function == 0x8000_0001 && e.ecx & (1 << 22) != 0))
        .map_err(Clone::clone)
        .into();
    let arch_capabilities = match &supported_cpuid {
        Ok(entries) => query_arch_capabilities(&kvm, cap(KVM_CAP_GET_MSR_FEATURES), entries),
        Err(reason) => Fact::Unknown(reason.clone()),
    };
    KvmDeviceReport {
        present: true,
        // KVM's API version has been 12 since Linux 2.6.22; anything else is not a KVM we know.
        usable: Fact::Known(api_version.known() == Some(&12)),
        api_version,
        capabilities,
        hyperv,
        topoext,
        arch_capabilities,
    }
}

/// IA32_ARCH_CAPABILITIES: its index, and its CPUID bit (leaf 7 subleaf 0, EDX bit 29), per the
/// Intel SDM vol. 4 (MSR 10AH) and vol. 2A (CPUID).
const MSR_IA32_ARCH_CAPABILITIES: u32 = 0x10a;
const CPUID_7_EDX_ARCH_CAPABILITIES: u32 = 1 << 29;

/// Does what QEMU does for `-cpu host` with this MSR, on a scratch VM: reads the value KVM
/// offers, gives one vCPU the CPUID leaf that announces the MSR (from KVM's supported CPUID,
/// as `-cpu host` has it) and sets the value (QEMU target/i386/kvm/kvm.c, kvm_put_msrs and
/// kvm_arch_get_supported_msr_feature).
fn query_arch_capabilities(
    kvm: &sys::KvmSystem,
    msr_features: i32,
    supported: &[crate::knowledge::kvm_api::CpuidEntry],
) -> Fact<ArchCapabilities> {
    let leaf7 = supported.iter().find(|e| e.function == 7 && e.index == 0);
    let announced = leaf7.is_some_and(|e| e.edx & CPUID_7_EDX_ARCH_CAPABILITIES != 0);
    if msr_features == 0 || !announced {
        // No feature MSRs to read, or no CPUID bit: QEMU sets nothing, so nothing is refused.
        return Fact::Known(ArchCapabilities { offered: None, accepted: true });
    }
    let offered = match kvm.feature_msr(MSR_IA32_ARCH_CAPABILITIES) {
        Ok(Some(value)) => value,
        Ok(None) => return Fact::Known(ArchCapabilities { offered: None, accepted: true }),
        Err(error) => return Fact::Unknown(format!("KVM_GET_MSRS on /dev/kvm: {error}")),
    };
    let max_leaf = supported.iter().find(|e| e.function == 0).map_or(7, |e| e.eax);
    // Only leaves 0 and 7: KVM checks the MSR against leaf 7's bit, and a whole table would
    // need the per-entry flags that KVM_GET_SUPPORTED_CPUID's reader here leaves out.
    let leaves: Vec<_> = supported.iter().filter(|e| e.function == 0).chain(leaf7).copied().collect();
    let accepted = kvm
        .create_vm()
        .and_then(|vm| vm.create_vcpu(0))
        .and_then(|vcpu| {
            vcpu.set_cpuid(&leaves)?;
            vcpu.set_msr(MSR_IA32_ARCH_CAPABILITIES, offered)
        })
        .map_err(|e| {
            format!("setting IA32_ARCH_CAPABILITIES on a scratch vCPU (CPUID max leaf {max_leaf:#x}): {e}")
        });
    match accepted {
        Ok(accepted) => Fact::Known(ArchCapabilities { offered: Some(format!("{offered:#x}")), accepted }),
        Err(reason) => Fact::Unknown(reason),
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
