//! KVM capabilities the probe asks `/dev/kvm` about, with why each matters.

/// One `KVM_CAP_*` number (include/uapi/linux/kvm.h, L-KVMH).
#[derive(Debug, Clone, Copy)]
pub struct Capability {
    pub name: &'static str,
    pub number: u32,
    pub why: &'static str,
}

pub const KVM_CAP_GET_MSR_FEATURES: u32 = 153;
pub const KVM_CAP_HYPERV_CPUID: u32 = 167;
pub const KVM_CAP_SYS_HYPERV_CPUID: u32 = 191;

pub const CAPABILITIES: &[Capability] = &[
    Capability { name: "KVM_CAP_NR_VCPUS", number: 9, why: "recommended maximum vCPUs per VM" },
    Capability { name: "KVM_CAP_MAX_VCPUS", number: 66, why: "hard maximum vCPUs per VM" },
    Capability {
        name: "KVM_CAP_HYPERV",
        number: 44,
        why: "basic Hyper-V emulation (hypercall page, relaxed timing)",
    },
    Capability { name: "KVM_CAP_HYPERV_VAPIC", number: 45, why: "hv-vapic: paravirtual EOI" },
    Capability { name: "KVM_CAP_HYPERV_SPIN", number: 46, why: "hv-spinlocks" },
    Capability { name: "KVM_CAP_HYPERV_TIME", number: 96, why: "hv-time: reference counter and TSC page" },
    Capability {
        name: "KVM_CAP_HYPERV_SYNIC2",
        number: 148,
        why: "hv-synic (the fixed SynIC version QEMU uses)",
    },
    Capability { name: "KVM_CAP_HYPERV_VP_INDEX", number: 149, why: "hv-vpindex" },
    Capability {
        name: "KVM_CAP_GET_MSR_FEATURES",
        number: KVM_CAP_GET_MSR_FEATURES,
        why: "feature MSRs (IA32_ARCH_CAPABILITIES) that `-cpu host` copies into each vCPU",
    },
    Capability {
        name: "KVM_CAP_HYPERV_TLBFLUSH",
        number: 155,
        why: "hv-tlbflush: paravirtual remote TLB flush",
    },
    Capability { name: "KVM_CAP_HYPERV_SEND_IPI", number: 161, why: "hv-ipi: paravirtual IPIs" },
    Capability { name: "KVM_CAP_HYPERV_ENLIGHTENED_VMCS", number: 163, why: "hv-evmcs (Intel, nested)" },
    Capability {
        name: "KVM_CAP_HYPERV_CPUID",
        number: KVM_CAP_HYPERV_CPUID,
        why: "KVM_GET_SUPPORTED_HV_CPUID on a vCPU fd",
    },
    Capability {
        name: "KVM_CAP_SYS_HYPERV_CPUID",
        number: KVM_CAP_SYS_HYPERV_CPUID,
        why: "KVM_GET_SUPPORTED_HV_CPUID on /dev/kvm",
    },
    Capability { name: "KVM_CAP_HYPERV_ENFORCE_CPUID", number: 199, why: "hv-enforce-cpuid" },
    Capability {
        name: "KVM_CAP_X86_DISABLE_EXITS",
        number: 143,
        why: "HLT/PAUSE/MWAIT exits can be turned off for dedicated vCPUs (a bit mask)",
    },
    Capability { name: "KVM_CAP_HALT_POLL", number: 182, why: "per-VM halt polling control" },
    Capability { name: "KVM_CAP_SPLIT_IRQCHIP", number: 121, why: "split irqchip (userspace IOAPIC)" },
    Capability { name: "KVM_CAP_X2APIC_API", number: 129, why: "x2APIC API for >255 vCPUs" },
    Capability {
        name: "KVM_CAP_TSC_CONTROL",
        number: 60,
        why: "TSC scaling: migration between hosts with different TSC rates",
    },
    Capability { name: "KVM_CAP_GET_TSC_KHZ", number: 61, why: "the TSC frequency a guest sees" },
    Capability {
        name: "KVM_CAP_NESTED_STATE",
        number: 157,
        why: "nested virtualization state (live migration of nested guests)",
    },
    Capability {
        name: "KVM_CAP_BINARY_STATS_FD",
        number: 203,
        why: "binary statistics: per-vCPU exit counters kvmtune reads",
    },
];

/// One `struct kvm_cpuid_entry2` as KVM returns it (include/uapi/linux/kvm.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}
