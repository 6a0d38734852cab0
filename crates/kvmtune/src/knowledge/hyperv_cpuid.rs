//! The Hyper-V CPUID leaves a guest reads, bit by bit: what each bit means (its name in the
//! Hyper-V TLFS, as Linux's `arch/x86/include/asm/hyperv-tlfs.h` and QEMU's
//! `target/i386/kvm/hyperv-proto.h` spell it) and which QEMU `hv-*` property makes QEMU set it
//! (QEMU `target/i386/kvm/kvm.c`, `kvm_hyperv_properties[]`).
//!
//! This file is read by two crates: the library (edition 2024) and the guest program
//! `crates/kvmtune-guest` (edition 2021, built with Debian's Rust 1.63 for Windows), which
//! includes it by path so that both decode the same table. It must stay plain data with no
//! crate paths and nothing newer than Rust 1.63.

/// Vendor signature (`Microsoft Hv`, a custom `hv-vendor-id`) and the highest leaf.
pub const LEAF_VENDOR: u32 = 0x4000_0000;
/// Interface signature: `Hv#1` for a Hyper-V compatible interface.
pub const LEAF_INTERFACE: u32 = 0x4000_0001;
/// Hypervisor version (QEMU's `hv-version-id-*`).
pub const LEAF_VERSION: u32 = 0x4000_0002;
/// Partition privileges and features.
pub const LEAF_FEATURES: u32 = 0x4000_0003;
/// Implementation recommendations; EBX is the spinlock retry count.
pub const LEAF_RECOMMENDATIONS: u32 = 0x4000_0004;
/// Implementation limits: EAX the most virtual processors, EBX the most logical processors.
pub const LEAF_LIMITS: u32 = 0x4000_0005;
/// Hardware features the hypervisor uses.
pub const LEAF_HARDWARE: u32 = 0x4000_0006;
/// Nested virtualization features.
pub const LEAF_NESTED: u32 = 0x4000_000A;
/// `Hv#1` as leaf 0x40000001 EAX holds it.
pub const INTERFACE_HV1: u32 = 0x3123_7648;
/// Where KVM puts its own leaves when the Hyper-V ones take 0x40000000 (QEMU docs/system/i386/hyperv.rst).
pub const KVM_LEAVES_WITH_HYPERV: u32 = 0x4000_0100;

/// The register of a CPUID leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

impl Register {
    pub const ALL: [Register; 4] = [Register::Eax, Register::Ebx, Register::Ecx, Register::Edx];

    pub fn name(self) -> &'static str {
        match self {
            Register::Eax => "eax",
            Register::Ebx => "ebx",
            Register::Ecx => "ecx",
            Register::Edx => "edx",
        }
    }

    /// This register's value among `[eax, ebx, ecx, edx]`.
    pub fn of(self, registers: [u32; 4]) -> u32 {
        match self {
            Register::Eax => registers[0],
            Register::Ebx => registers[1],
            Register::Ecx => registers[2],
            Register::Edx => registers[3],
        }
    }
}

/// One bit of one Hyper-V leaf.
#[derive(Debug, Clone, Copy)]
pub struct HvCpuidBit {
    pub leaf: u32,
    pub register: Register,
    pub bit: u8,
    /// The TLFS name.
    pub name: &'static str,
    /// The QEMU properties that each, when on, make QEMU set the bit (and that KVM must report
    /// before QEMU accepts them). Empty: QEMU sets it on its own terms, or never.
    pub qemu: &'static [&'static str],
}

const fn bit(
    leaf: u32,
    register: Register,
    bit: u8,
    name: &'static str,
    qemu: &'static [&'static str],
) -> HvCpuidBit {
    HvCpuidBit { leaf, register, bit, name, qemu }
}

use self::Register::{Eax, Ebx, Edx};

/// Every named bit of leaves 0x40000003, 0x40000004, 0x40000006 and 0x4000000A. Leaf
/// 0x40000006's names are those of Windows' own `HV_HYPERVISOR_HARDWARE_FEATURES`.
pub const HV_CPUID_BITS: &[HvCpuidBit] = &[
    bit(LEAF_FEATURES, Eax, 0, "AccessVpRunTimeReg", &["hv-runtime"]),
    bit(LEAF_FEATURES, Eax, 1, "AccessPartitionReferenceCounter", &["hv-time"]),
    bit(LEAF_FEATURES, Eax, 2, "AccessSynicRegs", &["hv-synic"]),
    bit(LEAF_FEATURES, Eax, 3, "AccessSyntheticTimerRegs", &["hv-stimer"]),
    bit(LEAF_FEATURES, Eax, 4, "AccessIntrCtrlRegs", &["hv-vapic"]),
    bit(LEAF_FEATURES, Eax, 5, "AccessHypercallMsrs", &[]),
    bit(LEAF_FEATURES, Eax, 6, "AccessVpIndex", &["hv-vpindex"]),
    bit(LEAF_FEATURES, Eax, 7, "AccessResetReg", &["hv-reset"]),
    bit(LEAF_FEATURES, Eax, 8, "AccessStatsReg", &[]),
    bit(LEAF_FEATURES, Eax, 9, "AccessPartitionReferenceTsc", &["hv-time"]),
    bit(LEAF_FEATURES, Eax, 10, "AccessGuestIdleReg", &[]),
    bit(LEAF_FEATURES, Eax, 11, "AccessFrequencyRegs", &["hv-frequencies"]),
    bit(LEAF_FEATURES, Eax, 12, "AccessDebugRegs", &[]),
    bit(LEAF_FEATURES, Eax, 13, "AccessReenlightenmentControls", &["hv-reenlightenment"]),
    bit(LEAF_FEATURES, Ebx, 0, "CreatePartitions", &[]),
    bit(LEAF_FEATURES, Ebx, 1, "AccessPartitionId", &[]),
    bit(LEAF_FEATURES, Ebx, 2, "AccessMemoryPool", &[]),
    bit(LEAF_FEATURES, Ebx, 4, "PostMessages", &[]),
    bit(LEAF_FEATURES, Ebx, 5, "SignalEvents", &[]),
    bit(LEAF_FEATURES, Ebx, 6, "CreatePort", &[]),
    bit(LEAF_FEATURES, Ebx, 7, "ConnectPort", &[]),
    bit(LEAF_FEATURES, Ebx, 8, "AccessStats", &[]),
    bit(LEAF_FEATURES, Ebx, 11, "Debugging", &[]),
    bit(LEAF_FEATURES, Ebx, 12, "CpuManagement", &[]),
    bit(LEAF_FEATURES, Edx, 0, "MwaitAvailable", &[]),
    bit(LEAF_FEATURES, Edx, 1, "GuestDebuggingAvailable", &[]),
    bit(LEAF_FEATURES, Edx, 2, "PerformanceMonitorsAvailable", &[]),
    bit(LEAF_FEATURES, Edx, 3, "CpuDynamicPartitioningAvailable", &[]),
    bit(LEAF_FEATURES, Edx, 4, "XmmRegistersForFastHypercallAvailable", &["hv-xmm-input"]),
    bit(LEAF_FEATURES, Edx, 5, "GuestIdleAvailable", &[]),
    bit(LEAF_FEATURES, Edx, 8, "FrequencyRegsAvailable", &["hv-frequencies"]),
    bit(LEAF_FEATURES, Edx, 10, "GuestCrashRegsAvailable", &["hv-crash"]),
    bit(LEAF_FEATURES, Edx, 11, "DebugRegsAvailable", &["hv-syndbg"]),
    bit(LEAF_FEATURES, Edx, 14, "ExtendedGvaRangesForFlushVirtualAddressListAvailable", &["hv-tlbflush-ext"]),
    bit(LEAF_FEATURES, Edx, 19, "DirectSyntheticTimers", &["hv-stimer-direct"]),
    bit(LEAF_RECOMMENDATIONS, Eax, 0, "UseHypercallForAddressSpaceSwitch", &[]),
    bit(LEAF_RECOMMENDATIONS, Eax, 1, "UseHypercallForLocalFlush", &[]),
    bit(LEAF_RECOMMENDATIONS, Eax, 2, "UseHypercallForRemoteFlushAndLocalFlushEntire", &["hv-tlbflush"]),
    // QEMU's hyperv_fill_cpuids() sets it for hv-vapic unless hv-avic is on as well: no one
    // property decides it.
    bit(LEAF_RECOMMENDATIONS, Eax, 3, "UseApicMsrs", &[]),
    bit(LEAF_RECOMMENDATIONS, Eax, 4, "UseHvRegisterForReset", &[]),
    bit(LEAF_RECOMMENDATIONS, Eax, 5, "UseRelaxedTiming", &["hv-relaxed"]),
    bit(LEAF_RECOMMENDATIONS, Eax, 6, "UseDmaRemapping", &[]),
    bit(LEAF_RECOMMENDATIONS, Eax, 7, "UseInterruptRemapping", &[]),
    bit(LEAF_RECOMMENDATIONS, Eax, 8, "UseX2ApicMsrs", &[]),
    bit(LEAF_RECOMMENDATIONS, Eax, 9, "DeprecateAutoEoi", &["hv-avic"]),
    bit(LEAF_RECOMMENDATIONS, Eax, 10, "UseSyntheticClusterIpi", &["hv-ipi"]),
    bit(LEAF_RECOMMENDATIONS, Eax, 11, "UseExProcessorMasks", &["hv-tlbflush", "hv-ipi"]),
    bit(LEAF_RECOMMENDATIONS, Eax, 12, "Nested", &[]),
    bit(LEAF_RECOMMENDATIONS, Eax, 13, "UseIntForMbecSystemCalls", &[]),
    bit(LEAF_RECOMMENDATIONS, Eax, 14, "UseVmcsEnlightenments", &["hv-evmcs"]),
    bit(LEAF_RECOMMENDATIONS, Eax, 18, "NoNonArchitecturalCoreSharing", &["hv-no-nonarch-coresharing"]),
    bit(LEAF_HARDWARE, Eax, 0, "ApicOverlayAssistInUse", &[]),
    bit(LEAF_HARDWARE, Eax, 1, "MsrBitmapsInUse", &[]),
    bit(LEAF_HARDWARE, Eax, 2, "ArchitecturalPerformanceCountersInUse", &[]),
    bit(LEAF_HARDWARE, Eax, 3, "SecondLevelAddressTranslationInUse", &[]),
    bit(LEAF_HARDWARE, Eax, 4, "DmaRemappingInUse", &[]),
    bit(LEAF_HARDWARE, Eax, 5, "InterruptRemappingInUse", &[]),
    bit(LEAF_HARDWARE, Eax, 6, "MemoryPatrolScrubberPresent", &[]),
    bit(LEAF_NESTED, Eax, 17, "DirectVirtualFlush", &["hv-tlbflush-direct"]),
    bit(LEAF_NESTED, Eax, 18, "FlushGuestPhysicalHypercall", &[]),
    bit(LEAF_NESTED, Eax, 19, "EnlightenedMsrBitmap", &["hv-emsr-bitmap"]),
];

/// The 12 bytes of a vendor signature in EBX, ECX, EDX, without trailing NULs.
pub fn signature_of(registers: [u32; 4]) -> String {
    let mut bytes = Vec::with_capacity(12);
    for value in [registers[1], registers[2], registers[3]] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
