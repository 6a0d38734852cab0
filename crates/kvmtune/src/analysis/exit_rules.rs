//! Exit diagnosis: what an exit profile says about the VM, one declaration per cause in
//! [`EXIT_RULES`], in the same style as the check rules (id, explanation, source, fix) and
//! pointing at the check rules that find the cause in a config.
//!
//! Shares are taken of all exits and of *busy* handling time: HLT time is the vCPU idling, so
//! it is left out of the time base, or every profile would be "mostly HLT".

use serde::Serialize;

use crate::analysis::Severity;
use crate::analysis::fix::Applicability;
use crate::analysis::meta::{Category, RuleMeta};
use crate::exits::model::saturating_sum;
use crate::exits::reasons::{ExitCause, is_idle};
use crate::exits::{ExitProfile, ExitRow, RowKind};
use crate::knowledge::hyperv::Hv;

/// The guest whose exits a profile counts: the same exit has different causes and cures in
/// Windows and in Linux (an MSR_WRITE storm is Hyper-V's timers in one, x2APIC IPIs and
/// TSC-deadline writes in the other).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Guest {
    Windows,
    Linux,
    /// Neither said nor told by a config: findings give both readings.
    #[default]
    Unknown,
}

impl Guest {
    /// What a VM config says of its guest: a libosinfo id, or Hyper-V enlightenments, which
    /// only Windows uses; unknown otherwise.
    pub fn of_config(config: &crate::config::model::VmConfig) -> Guest {
        const LINUX_OS_IDS: &[&str] = &[
            "ubuntu.com",
            "fedoraproject.org",
            "debian.org",
            "redhat.com",
            "centos.org",
            "almalinux.org",
            "rockylinux.org",
            "archlinux.org",
            "opensuse.org",
            "suse.com",
            "alpinelinux.org",
            "gentoo.org",
            "nixos.org",
            "linuxmint.com",
            "oracle.com/ol",
        ];
        if let Some(id) = &config.os_id {
            if id.value.contains("microsoft.com/win") {
                return Guest::Windows;
            }
            if LINUX_OS_IDS.iter().any(|d| id.value.contains(d)) {
                return Guest::Linux;
            }
        }
        if Hv::ALL.iter().any(|&hv| config.hyperv.is_on(hv)) {
            return Guest::Windows;
        }
        Guest::Unknown
    }
}

/// A rule's explanation and fix for a Linux guest, where they differ from its own (Windows').
#[derive(Debug, Clone, Copy)]
pub struct LinuxText {
    pub explanation: &'static str,
    pub fix: &'static str,
}

/// A fix that is Hyper-V enlightenments: what a config that already has them is told instead.
#[derive(Debug, Clone, Copy)]
pub struct HypervFix {
    /// The enlightenments the fix asks for.
    pub needs: &'static [Hv],
    /// What explains the exits left once they are on.
    pub residue: &'static str,
}

#[derive(Debug)]
pub struct ExitRule {
    pub meta: RuleMeta,
    /// For a Linux guest, where the cause and cure differ from the meta's, which are Windows'.
    pub linux: Option<LinuxText>,
    /// Where the (Windows) fix is enlightenments: a config that has them all hears what else
    /// explains the exits; without a config the fix is a condition on them.
    pub hyperv_fix: Option<HypervFix>,
    /// The causes whose exits show it (each cause names its reasons in every vocabulary).
    pub causes: &'static [ExitCause],
    /// Fires when the reasons make at least this share of all exits...
    pub min_exit_share: f64,
    /// ...or at least this share of busy handling time.
    pub min_time_share: f64,
    /// Check rules that find the cause in a VM config.
    pub check_rules: &'static [&'static str],
}

pub const EXIT_RULES: &[ExitRule] = &[
    ExitRule {
        meta: RuleMeta {
            id: "EXIT001",
            name: "userspace-mmio",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "MMIO to emulated devices",
            explanation: "EPT_MISCONFIG is KVM's marker for MMIO to a device QEMU emulates: each one goes out to userspace. For Windows guests the usual culprit is the HPET (0xFED00000) read as a clock or timer; emulated NICs, disks and VGA add more. A passed-through device can add its own: the VMM traps the page that holds the device's MSI-X table, so registers that share that page exit on every access, unless the host kernel lets the VMM map the page (Linux 4.16 and later report it, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) and the VMM does.",
            example: "EPT_MISCONFIG 60% of exits (Windows reading the HPET)",
            fix: "give Windows hv-time and hv-stimer, then turn the HPET off (<timer name='hpet' present='no'/>); use virtio devices; for a passed-through device, a host kernel of 4.16 or later and a VMM that maps the page of its MSI-X table",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/vmx/vmx.c (handle_ept_misconfig: MMIO to emulated devices); QEMU docs/system/i386/hyperv.rst (hv-time, hv-stimer); Linux commit a32295c612c5 'vfio-pci: Allow mapping MSIX BAR' (4.16); github.com/cloud-hypervisor/cloud-hypervisor/issues/3237 (an SR-IOV VF whose MSI-X page the VMM trapped: EPT_MISCONFIG 96.5% of exits)",
        },
        linux: Some(LinuxText {
            explanation: "MMIO exits in a Linux guest are emulated devices it drives: a legacy or emulated NIC or disk (e1000, IDE, SATA), VGA or Bochs display memory, or virtio over legacy I/O, and the registers of a passed-through device that share a page with its MSI-X table where the VMM traps that page. Linux reads kvm-clock or the TSC as its clock, not the HPET.",
            fix: "use virtio devices (virtio-net, virtio-blk or virtio-scsi, virtio-gpu) and keep the guest on the kvm-clock or tsc clocksource; for a passed-through device, a host kernel of 4.16 or later and a VMM that maps the page of its MSI-X table",
        }),
        hyperv_fix: Some(HypervFix {
            needs: &[Hv::Time, Hv::Stimer],
            residue: "with hv-time and hv-stimer on, Windows no longer needs the HPET: the MMIO left is emulated devices (an e1000 or IDE, VGA) or an HPET that is still present and read by some driver; virtio devices and the HPET off remove them",
        }),
        causes: &[ExitCause::Mmio],
        min_exit_share: 0.05,
        min_time_share: 0.20,
        check_rules: &["TIME001", "TIME006", "DEV003", "DEV004"],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT002",
            name: "port-io-timers",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "port I/O: RTC, PIT and ACPI PM timer reads",
            explanation: "Port I/O exits to QEMU in userspace. In a Windows guest they are mostly time: the RTC (ports 0x70/0x71), the PIT (0x40-0x43) and the ACPI PM timer (0x608 on q35, 0xb008 on i440fx). Windows ends up there when it has no better clock or timer: without hv-stimer and with the HPET off it drives its timer from the RTC, which costs more than the HPET did. A published case (see the source) shows it: turning the HPET back on cut IO_INSTRUCTION from 78.7% of exits to 2.5%, but the better cure is hv-stimer (with hv-time), after which Windows uses neither.",
            example: "IO_INSTRUCTION 78.7% of exits, 96.5% of busy time",
            fix: "enable hv-time and hv-stimer (with hv-synic, hv-vpindex); only then turn the HPET off",
            fix_safety: Applicability::Manual,
            source: "github.com/huataihuang/cloud-atlas-draft virtual/kvm/debug/kvm_win10_high_sys_debug.md (a Windows 10 guest before and after its HPET was turned back on); github.com/MicrosoftDocs/Virtualization-Documentation/issues/1885 (RTC and ACPI PM timer reads with stimer on); Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers)",
        },
        linux: Some(LinuxText {
            explanation: "Port I/O exits in a Linux guest are devices behind I/O ports: legacy virtio notification, an emulated serial console or IDE, the PCI configuration ports while devices are probed; timers (the PIT, the ACPI PM timer) only when Linux was forced to use them as clocksource or clock event device.",
            fix: "modern virtio devices (their notifications are MMIO, not emulated port I/O); the kvm-clock or tsc clocksource; the port table (`perf kvm stat report --event=ioport`) names the device",
        }),
        hyperv_fix: Some(HypervFix {
            needs: &[Hv::Time, Hv::Stimer],
            residue: "with hv-time and hv-stimer on, Windows does not time itself through ports: the port I/O left is devices (PCI configuration ports, a serial console, legacy virtio) or the ACPI PM timer read where the TSC is not trusted; the port table (`perf kvm stat report --event=ioport`) names the port",
        }),
        causes: &[ExitCause::PortIo],
        min_exit_share: 0.10,
        min_time_share: 0.25,
        check_rules: &["TIME001", "TIME005", "HV001", "HV002"],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT003",
            name: "timer-and-eoi-msrs",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "MSR traffic: timers, EOIs and the Hyper-V reference counter",
            explanation: "MSR exits in a Windows guest are mostly the LAPIC timer and EOIs (x2APIC, TSC-deadline), Hyper-V SynIC/stimer MSRs, and reads of the reference counter (0x40000020) when the TSC page is not used. SynIC's AutoEOI makes KVM switch APICv/AVIC off, and then every EOI and timer write is an MSR exit.",
            example: "MSR_WRITE 45% of exits with SynIC on and APICv inhibited",
            fix: "enable hv-time (the TSC page ends the reference-counter reads); with SynIC on an APICv/AVIC host, add hv-avic",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/include/asm/msr-index.h, arch/x86/include/asm/hyperv-tlfs.h (the MSRs behind the exits); QEMU docs/system/i386/hyperv.rst hv-avic, hv-time",
        },
        linux: Some(LinuxText {
            explanation: "MSR exits in a Linux guest are mostly the x2APIC ICR (0x830, every IPI) and the TSC deadline (0x6e0, every timer it arms); without APIC virtualization, EOIs (0x80b) as well. KVM handles ICR and TSC-deadline writes in its fast path.",
            fix: "APICv/AVIC on the host (and IPI virtualization where the CPU has it); in the guest, KVM's PV send-IPI and PV EOI (on by default under KVM); the MSR table (`perf kvm stat report --event=msr`) says which register",
        }),
        hyperv_fix: Some(HypervFix {
            needs: &[Hv::Time, Hv::Avic],
            residue: "with hv-time and hv-avic on, the MSR exits left are EOIs and timer writes with APIC virtualization off on the host (kvm_intel enable_apicv, kvm_amd avic), or IPIs through the ICR; the MSR table (`perf kvm stat report --event=msr`) names the register",
        }),
        causes: &[ExitCause::MsrWrite, ExitCause::MsrRead, ExitCause::Msr],
        min_exit_share: 0.20,
        min_time_share: 0.40,
        check_rules: &["TIME001", "HV008"],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT004",
            name: "apic-traffic",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "APIC accesses: IPIs, EOIs, TPR",
            explanation: "APIC_WRITE (IPIs and timer writes with APICv), EOI_INDUCED (EOIs of level-triggered or AutoEOI vectors), APIC_ACCESS (xAPIC MMIO without APICv) and TPR_BELOW_THRESHOLD (Windows lowering its task priority) are the interrupt controller working through KVM. hv-ipi sends many IPIs in one hypercall, hv-avic keeps APICv on with SynIC, and APICv/AVIC themselves remove most of them. On 32-bit Windows XP/2003 without FlexPriority, TPR patching does.",
            example: "APIC_WRITE 30% of exits (x2APIC ICR writes for IPIs)",
            fix: "hv-ipi and hv-avic; APICv/AVIC on the host; TPR patching for 32-bit XP/2003",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/vmx/vmx.c (APIC-access and APIC-write exits, enable_ipiv); QEMU docs/system/i386/hyperv.rst hv-ipi, hv-avic",
        },
        linux: Some(LinuxText {
            explanation: "APIC exits in a Linux guest are IPIs (APIC_WRITE), EOIs of level-triggered interrupts (EOI_INDUCED) and, without APICv, xAPIC MMIO (APIC_ACCESS). Linux under KVM sends IPIs with a PV hypercall and acknowledges with PV EOI when KVM offers them; TPR patching is for 32-bit Windows only.",
            fix: "APICv/AVIC on the host, and IPI virtualization where the CPU has it; keep KVM's PV features visible to the guest (do not hide the hypervisor)",
        }),
        hyperv_fix: Some(HypervFix {
            needs: &[Hv::Ipi, Hv::Avic],
            residue: "with hv-ipi and hv-avic on, the APIC exits left come from APIC virtualization being off or inhibited on the host, or from level-triggered interrupts' EOIs (emulated devices)",
        }),
        causes: &[ExitCause::ApicWrite, ExitCause::ApicOther],
        min_exit_share: 0.10,
        min_time_share: 0.25,
        check_rules: &["HV002", "HV008", "HV009", "LEG001"],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT005",
            name: "host-interrupts",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "host interrupts land on vCPU cores",
            explanation: "Every host interrupt (device IRQs, timer ticks, IPIs) that arrives while a vCPU runs forces an exit. A vCPU on a core that also serves host devices and housekeeping gets interrupted constantly; isolating the vCPU cores and steering IRQs to housekeeping CPUs removes it.",
            example: "EXTERNAL_INTERRUPT 25% of exits",
            fix: "pin vCPUs off the housekeeping CPUs, steer IRQ affinity there, stop irqbalance from moving IRQs onto vCPU cores",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/core-api/irq/irq-affinity.rst; Documentation/admin-guide/kernel-per-CPU-kthreads.rst",
        },
        linux: None,
        hyperv_fix: None,
        causes: &[ExitCause::ExternalInterrupt],
        min_exit_share: 0.15,
        min_time_share: 0.25,
        check_rules: &["PIN001", "PIN007"],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT006",
            name: "idle-halts",
            category: Category::Exits,
            severity: Severity::Info,
            title: "the guest is mostly idle (HLT)",
            explanation: "HLT is an idle vCPU. That is normal; what costs is the wake-up latency. With dedicated, pinned CPUs, halt polling (kvm.halt_poll_ns) or letting the guest idle natively trades host CPU for latency.",
            example: "HLT 90% of exits, nearly all handling time",
            fix: "nothing, unless wake-up latency matters: then halt polling or dedicated CPUs",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/virt/kvm/halt-polling.rst",
        },
        linux: None,
        hyperv_fix: None,
        causes: &[ExitCause::Halt],
        min_exit_share: 0.30,
        min_time_share: 2.0,
        check_rules: &[],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT007",
            name: "pause-spinning",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "PAUSE loop exits: spinlocks waiting on a preempted vCPU",
            explanation: "Pause-loop exiting fires when a vCPU spins too long, usually waiting for a lock whose holder's vCPU is not running. Overcommit and shared CPUs cause it; hv-spinlocks makes Windows yield to the hypervisor instead.",
            example: "PAUSE_INSTRUCTION 15% of exits",
            fix: "one host CPU per vCPU, no overcommit, hv-spinlocks retries around 8191",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/vmx/vmx.c (ple_gap, ple_window: pause-loop exiting); QEMU docs/system/i386/hyperv.rst hv-spinlocks",
        },
        linux: Some(LinuxText {
            explanation: "Pause-loop exiting fires when a vCPU spins too long, usually waiting for a lock whose holder's vCPU is not running. Overcommit and shared CPUs cause it; Linux under KVM uses paravirtual spinlocks (kvm-pv-unhalt) to sleep instead of spinning.",
            fix: "one host CPU per vCPU, no overcommit; keep KVM's PV features (pv-unhalt) visible to the guest",
        }),
        hyperv_fix: Some(HypervFix {
            needs: &[Hv::Spinlocks],
            residue: "with hv-spinlocks on, the pause loops left are vCPUs waiting for a preempted vCPU: host CPUs shared with other vCPUs or host work (pin each vCPU to a CPU of its own)",
        }),
        causes: &[ExitCause::Pause],
        min_exit_share: 0.05,
        min_time_share: 0.20,
        check_rules: &["PIN002", "CPU009", "HV006", "HV002"],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT008",
            name: "memory-faults",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "nested page faults: guest memory being mapped or write-tracked",
            explanation: "EPT violations (npf on AMD, which also covers MMIO) are KVM mapping guest memory: on first touch; again after the host took a mapping away (swapping, ballooning, KSM, and on a host with more than one NUMA node its automatic NUMA balancing, which by default keeps unmapping slices of every process's memory, the guest's included, to learn where it is used); or after write-protecting it to log dirty pages. Two cases look alike in the table. Early on, in a guest that keeps touching new memory, or on a host that keeps taking mappings away, it is memory not mapped: hugepages (hugetlbfs, which NUMA balancing skips), locked and preallocated memory, and no balloon keep it mapped. In a guest busy on an emulated display (VGA, QXL, Cirrus, bochs: video, games, a redrawn desktop), it is QEMU tracking which framebuffer pages changed: every first write to a page after a screen refresh faults, whatever backs the memory; a passed-through GPU ends it. On Intel CPUs with PML, KVM logs most of those writes without a fault and the tracking costs PML_FULL exits instead, so there a table with many EPT_VIOLATION and no PML_FULL points to the first case.",
            example: "EPT_VIOLATION 20% of exits shortly after boot; 60% while a Windows guest plays video on a QXL display",
            fix: "memory faults: hugepages (reserved on the VM's node), <locked/>, memballoon off; on a multi-node host without hugepages, also the host's automatic NUMA balancing (kernel.numa_balancing); framebuffer tracking: a passed-through GPU (or no busy emulated display)",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/virt/kvm/x86/mmu.rst (write protection for dirty logging); Linux arch/x86/kvm/vmx/vmx.c (enable_pml, handle_pml_full); QEMU hw/display/vga.c (dirty logging of video memory); Documentation/admin-guide/mm/hugetlbpage.rst; Linux Documentation/admin-guide/sysctl/kernel.rst numa_balancing, mm/mempolicy.c check_numabalancing_enable (on by default only with more than one node) and kernel/sched/fair.c task_numa_work (hugetlb mappings skipped); Yan Zhao, 'Reduce NUMA balance caused TLB-shootdowns in a VM', kvm list, 2023-08 (lore.kernel.org/all/20230808071329.19995-1-yan.y.zhao@intel.com: NUMA balancing zaps KVM's mappings of guest memory, which is then faulted back)",
        },
        linux: None,
        hyperv_fix: None,
        causes: &[ExitCause::PageFault, ExitCause::NestedPageFault],
        min_exit_share: 0.10,
        min_time_share: 0.25,
        check_rules: &["MEM001", "DEV001"],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT009",
            name: "cpuid-storm",
            category: Category::Exits,
            severity: Severity::Info,
            title: "many CPUID exits",
            explanation: "CPUID always exits. A high share means some guest software queries it in a loop (some anti-cheat and DRM does); no configuration removes it.",
            example: "CPUID 12% of exits",
            fix: "find the guest software that loops on CPUID",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/vmx/vmx.c (CPUID always exits under VMX, handled by kvm_emulate_cpuid)",
        },
        linux: None,
        hyperv_fix: None,
        causes: &[ExitCause::Cpuid],
        min_exit_share: 0.10,
        min_time_share: 0.25,
        check_rules: &[],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT010",
            name: "hypercalls",
            category: Category::Exits,
            severity: Severity::Info,
            title: "hypercalls: enlightenments at work",
            explanation: "VMCALL/VMMCALL exits are Hyper-V hypercalls: TLB flushes, IPIs, long-spin notifications. They replace costlier exits, so seeing them is a good sign; only a flood of long-spin notifications suggests raising hv-spinlocks retries.",
            example: "HYPERCALL 10% of exits",
            fix: "nothing",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/hyperv.c (kvm_hv_hypercall); Microsoft Hyper-V TLFS, Hypercall interface (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/hypercall-interface)",
        },
        linux: Some(LinuxText {
            explanation: "VMCALL/VMMCALL exits in a Linux guest are KVM hypercalls: waking a halted vCPU (kick), sending IPIs (PV send-IPI), yielding to a preempted lock holder. They replace costlier exits.",
            fix: "nothing",
        }),
        hyperv_fix: None,
        causes: &[ExitCause::Hypercall],
        min_exit_share: 0.01,
        min_time_share: 2.0,
        check_rules: &[],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT011",
            name: "interrupt-window",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "interrupt-window exits: KVM waiting to inject",
            explanation: "Without posted interrupts KVM must wait for the guest to enable interrupts before it can inject one, and takes an exit to find out. APICv/AVIC deliver interrupts without that round trip.",
            example: "PENDING_INTERRUPT 10% of exits",
            fix: "APICv/AVIC on the host (and hv-avic if SynIC is on)",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/vmx/vmx.c (handle_interrupt_window)",
        },
        linux: None,
        hyperv_fix: None,
        causes: &[ExitCause::InterruptWindow],
        min_exit_share: 0.10,
        min_time_share: 0.25,
        check_rules: &["HV008"],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT012",
            name: "unnamed-exit-codes",
            category: Category::Exits,
            severity: Severity::Info,
            title: "exit codes perf could not name",
            explanation: "perf names exits from its own copy of the kernel's exit-reason table. `unknown kvm exit code` means the kernel (often a PVM or vendor kernel) reports codes that perf's table lacks; their cause cannot be read from the profile.",
            example: "unknown kvm exit code 0x4c among the rows",
            fix: "use a perf built for the running kernel",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/include/uapi/asm/vmx.h, svm.h (exit reason codes); github.com/virt-pvm/linux/issues/8 (unknown exit codes under PVM)",
        },
        linux: None,
        hyperv_fix: None,
        causes: &[ExitCause::Unnamed],
        min_exit_share: 0.0,
        min_time_share: 2.0,
        check_rules: &[],
    },
    ExitRule {
        meta: RuleMeta {
            id: "EXIT029",
            name: "nested-hypervisor",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "the guest runs a hypervisor of its own",
            explanation: "VMRESUME and VMLAUNCH (Intel) or vmrun (AMD) exits are a hypervisor inside the guest entering its own guest; VMREAD, VMWRITE, VMPTRLD, vmload, vmsave, stgi, clgi and invlpga are its upkeep. KVM emulates each of them. In Windows that hypervisor is Microsoft's, and it runs beneath Windows itself once Virtualization-Based Security, Memory integrity (HVCI), Credential Guard, WSL 2, Windows Sandbox or the Hyper-V role is on: Windows is then its guest, so each exit Windows makes is taken here, handed to the hypervisor in the guest, and resumed through another exit. Microsoft's hypervisor uses synthetic timers on KVM only where they are delivered in direct mode (hv-stimer-direct). Older host kernels had nested SVM bugs that made such guests crawl on AMD.",
            example: "vmrun 47% and msr 47% of exits: Windows with Hyper-V on, as a guest of an AMD host",
            fix: "turn on hv-stimer-direct, and on Intel hosts hv-evmcs (`kvmtune tune --nested` plans both); run a current host kernel; where the guest does not need its hypervisor, turn off Memory integrity, VBS and the Hyper-V features inside Windows instead (or hide vmx/svm from the guest CPU)",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/virt/kvm/x86/nested-vmx.rst and running-nested-guests.rst (KVM emulates a guest hypervisor's VMX and SVM instructions); Linux commit 8644f771e07c (Hyper-V on KVM uses synthetic timers only in direct mode); QEMU docs/system/i386/hyperv.rst (hv-stimer-direct, hv-evmcs); Microsoft Hyper-V TLFS, Nested virtualization (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/nested-virtualization); Microsoft, Virtualization-based security (learn.microsoft.com/windows/security/hardware-security/virtualization-based-security); bugzilla.kernel.org/show_bug.cgi?id=203477 (Windows with Hyper-V on, on an AMD host: vmrun and msr exits at 47% each, gone for its users with newer host kernels)",
        },
        linux: Some(LinuxText {
            explanation: "VMX or SVM instruction exits in a Linux guest are a hypervisor inside it at work: KVM running nested guests (a CI runner, Kata or Firecracker sandboxes, an Android emulator). Each exit of those nested guests is taken here first, passed to the guest's KVM, and resumed through another exit, so each costs several.",
            fix: "where nested guests are not meant to run there, hide vmx/svm from the guest CPU; where they are, a current host kernel, and on Intel a CPU with VMCS shadowing (kvm_intel enable_shadow_vmcs) so VMREAD and VMWRITE do not exit",
        }),
        hyperv_fix: Some(HypervFix {
            needs: &[Hv::StimerDirect],
            residue: "with direct synthetic timers the hypervisor in the guest has what it needs; what is left is nesting itself, every exit of Windows under it costing this host two or more. On Intel hosts hv-evmcs cuts the cost of each; where Windows does not need its hypervisor, turning off Memory integrity, VBS and the Hyper-V features inside Windows removes them",
        }),
        causes: &[ExitCause::NestedVirtualization],
        min_exit_share: 0.05,
        min_time_share: 0.20,
        check_rules: &["HV003"],
    },
];

#[derive(Debug, Clone, Serialize)]
pub struct ReasonShare {
    pub name: String,
    pub count: u64,
    /// Of all exits.
    pub exit_share: f64,
    /// Of busy (non-idle) handling time, where the profile has times; none for idle reasons,
    /// whose time is not busy time.
    pub time_share: Option<f64>,
}

impl ReasonShare {
    /// One row's shares, of `total` exits and of `busy` handling time ([`busy_time`]). Of a
    /// table a poster cut to its top rows ([`ExitProfile::rows_cut`]), the share is perf's own
    /// `Samples%`, which is of the whole table: the rows kept would make it larger.
    pub fn of_row(profile: &ExitProfile, row: &ExitRow, total: f64, busy: Option<f64>) -> Self {
        let time_share = match (handling_time(profile, row), busy) {
            (Some(time), Some(busy)) if busy > 0.0 && !is_idle(&row.name) => Some(time / busy),
            _ => None,
        };
        let exit_share = match row.sample_percent {
            Some(percent) if profile.rows_cut() => percent / 100.0,
            _ => row.count as f64 / total,
        };
        Self { name: row.name.clone(), count: row.count, exit_share, time_share }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExitFinding {
    pub rule: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub reasons: Vec<ReasonShare>,
    pub explanation: String,
    pub fix: String,
    pub source: &'static str,
    pub check_rules: &'static [&'static str],
    /// What a pattern saw across reasons, config and host (pattern rules only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

impl ExitFinding {
    /// A finding of the rule described by `meta`, from what it saw.
    pub fn of_rule(
        meta: &'static RuleMeta,
        check_rules: &'static [&'static str],
        reasons: Vec<ReasonShare>,
        evidence: Option<String>,
    ) -> Self {
        ExitFinding {
            rule: meta.id,
            name: meta.name,
            severity: meta.severity,
            title: meta.title,
            reasons,
            explanation: meta.explanation.to_string(),
            fix: meta.fix.to_string(),
            source: meta.source,
            check_rules,
            evidence,
        }
    }
}

/// The number of exits the shares are taken of: perf's `Total Samples`, the row that counts
/// every exit (`kvm_exit`, `exits`), or the exit rows added up. Events never count.
pub fn exit_total(profile: &ExitProfile) -> u64 {
    if let Some(declared) = profile.declared_samples.filter(|_| profile.format.starts_with("perf")) {
        return declared;
    }
    if let Some(row) = profile.rows.iter().find(|r| r.kind == RowKind::Total) {
        return row.count;
    }
    saturating_sum(profile.rows.iter().filter(|r| r.is_exit()).map(|r| r.count))
}

/// A row's handling time in the unit its profile measures time in: microseconds, or, where the
/// poster cut perf's time columns off, the `Time%` column that is left.
pub fn handling_time(profile: &ExitProfile, row: &ExitRow) -> Option<f64> {
    if profile.rows.iter().any(|r| r.time_us.is_some()) { row.time_us } else { row.time_percent }
}

/// Handling time outside HLT, in the unit of [`handling_time`].
pub fn busy_time(profile: &ExitProfile) -> Option<f64> {
    if let Some(busy) = busy_time_us(profile) {
        return Some(busy);
    }
    let exits: Vec<&ExitRow> = profile.rows.iter().filter(|r| r.is_exit()).collect();
    let percents: Option<Vec<f64>> = exits.iter().map(|r| r.time_percent).collect();
    let idle: f64 = exits.iter().filter(|r| is_idle(&r.name)).filter_map(|r| r.time_percent).sum();
    percents.filter(|p| !p.is_empty()).map(|p| (p.iter().sum::<f64>() - idle).max(0.0))
}

/// Handling time outside HLT, in microseconds.
pub fn busy_time_us(profile: &ExitProfile) -> Option<f64> {
    let total = profile.total_time_us()?;
    let idle: f64 = profile.rows.iter().filter(|r| is_idle(&r.name)).filter_map(|r| r.time_us).sum();
    Some((total - idle).max(0.0))
}

/// Below this many exits per second and vCPU a cause is not worth a warning, whatever its
/// share: even at 10 µs an exit (the slow, userspace kind) it costs under 0.1% of a vCPU. An
/// idle guest's few exits otherwise look like 90% port I/O (its timer tick's EOI).
pub const MIN_WARNING_RATE_PER_VCPU: f64 = 100.0;

/// Under that rate, a cause whose exits the table times still warns when handling them takes
/// this share of a vCPU's time or more: the same 0.1%, for exits slower than 10 µs.
pub const MIN_WARNING_TIME_PER_VCPU: f64 = 0.001;

/// Exits per second of `rows`: the rates the source printed (kvm_stat's second column), or
/// the counts over the profile's duration where it knows one; `None` where it says neither (a
/// perf report counts since the recording began).
pub(crate) fn exit_rate(profile: &ExitProfile, rows: &[&ExitRow]) -> Option<f64> {
    let printed: Option<f64> = rows.iter().map(|r| r.rate_per_s).sum();
    if let Some(rate) = printed.filter(|_| !rows.is_empty()) {
        return Some(rate);
    }
    let seconds = profile.duration_s.filter(|s| *s > 0.0)?;
    Some(saturating_sum(rows.iter().map(|r| r.count)) as f64 / seconds)
}

/// The vCPUs a table counts separately, or 1 where it adds them up.
fn vcpus_of(profile: &ExitProfile) -> f64 {
    profile.rows.iter().map(|r| r.per_vcpu.len()).max().unwrap_or(0).max(1) as f64
}

/// [`exit_rate`] per vCPU.
pub(crate) fn rate_per_vcpu(profile: &ExitProfile, rows: &[&ExitRow]) -> Option<f64> {
    Some(exit_rate(profile, rows)? / vcpus_of(profile))
}

/// What a cause costs each vCPU at most, as far as its table tells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CostPerVcpu {
    pub exits_per_s: f64,
    /// The share of the vCPU's time spent handling them, where the table times its exits.
    pub time_share: Option<f64>,
}

impl CostPerVcpu {
    /// Too little to warn about: see [`MIN_WARNING_RATE_PER_VCPU`].
    pub fn negligible(&self) -> bool {
        self.exits_per_s < MIN_WARNING_RATE_PER_VCPU
            && self.time_share.is_none_or(|share| share < MIN_WARNING_TIME_PER_VCPU)
    }
}

/// [`CostPerVcpu`] of `rows`: from their rate ([`rate_per_vcpu`]) where the table gives one,
/// with their handling time over vCPUs × the profile's duration where it knows both.
///
/// A perf report gives neither rate nor duration, but a bound. A vCPU's exits follow one
/// another, so where the handling times stay within the span the table covers
/// ([`ExitProfile::times_within_span`]), all vCPUs' times add up to at most vCPUs × span:
/// the rows' count and time over that total are at least their rate and time share per vCPU.
/// An idle guest's halts fill nearly all of vCPUs × span, so the bound is close; a busy guest's
/// exits take little of its time, and the bound is loose (and warns as before).
pub(crate) fn cost_per_vcpu(profile: &ExitProfile, rows: &[&ExitRow]) -> Option<CostPerVcpu> {
    let rows_time_s: Option<f64> = rows.iter().map(|r| r.time_us).sum::<Option<f64>>().map(|t| t / 1e6);
    if let Some(exits_per_s) = rate_per_vcpu(profile, rows) {
        let span_s = profile.duration_s.filter(|s| *s > 0.0).map(|s| s * vcpus_of(profile));
        let time_share = rows_time_s.zip(span_s).map(|(time, span)| time / span);
        return Some(CostPerVcpu { exits_per_s, time_share });
    }
    if !profile.times_within_span {
        return None;
    }
    let total_s = profile.total_time_us().filter(|t| *t > 0.0)? / 1e6;
    let count = saturating_sum(rows.iter().map(|r| r.count)) as f64;
    Some(CostPerVcpu { exits_per_s: count / total_s, time_share: rows_time_s.map(|t| t / total_s) })
}

/// One finding per single-reason cause whose reasons stand out.
pub fn diagnose_reasons(profile: &ExitProfile) -> Vec<ExitFinding> {
    let total = exit_total(profile).max(1) as f64;
    let busy = busy_time(profile);
    let mut findings = Vec::new();
    for rule in EXIT_RULES {
        let matches: Vec<_> = profile
            .rows
            .iter()
            .filter(|row| row.is_exit())
            .filter(|row| rule.causes.contains(&ExitCause::of(&row.name)))
            .collect();
        if matches.is_empty() {
            continue;
        }
        let count = saturating_sum(matches.iter().map(|r| r.count));
        let exit_share = count as f64 / total;
        // The time a warning may rest on is what the rows' spread vouches for: a share that
        // one or two long exits make (perf's `+-` near 50%) is no cause.
        let sure_time: Option<f64> =
            matches.iter().map(|r| Some(handling_time(profile, r)? * r.surely_spent_fraction())).sum();
        let sure_time_share = match (sure_time, busy) {
            (Some(time), Some(busy)) if busy > 0.0 => Some(time / busy),
            _ => None,
        };
        let fires =
            exit_share >= rule.min_exit_share || sure_time_share.is_some_and(|t| t >= rule.min_time_share);
        if !fires || count == 0 {
            continue;
        }
        if rule.meta.severity >= Severity::Warning
            && cost_per_vcpu(profile, &matches).is_some_and(|cost| cost.negligible())
        {
            continue;
        }
        let reasons = matches.iter().map(|row| ReasonShare::of_row(profile, row, total, busy)).collect();
        findings.push(ExitFinding::of_rule(&rule.meta, rule.check_rules, reasons, None));
    }
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.rule.cmp(b.rule)));
    findings
}
