//! The one vocabulary of exit-table row names: what each name counts, in every table kvmtune
//! reads (perf's VMX and SVM names, kvm_stat's tracepoints and debugfs counters, KVM's binary
//! statistics). Readers mark each row with its [`RowKind`] from here, and the diagnosis takes
//! shares of exits only over rows that are exits.
//!
//! Sources:
//! - KVM's statistics: Linux `arch/x86/kvm/x86.c` (`kvm_vcpu_stats_desc`, `kvm_vm_stats_desc`)
//!   and `include/linux/kvm_host.h` (`KVM_GENERIC_VCPU_STATS`); which of them count exits is
//!   where each is incremented (`++vcpu->stat.io_exits` in the PIO exit handlers, and so on).
//! - Tracepoints: Linux `arch/x86/kvm/trace.h`; `kvm_pio`, `kvm_msr`, `kvm_cpuid` and
//!   `kvm_hypercall` are emitted once in the handler of each exit of their kind
//!   (`arch/x86/kvm/x86.c`, `cpuid.c`), so they count those exits. `kvm_entry` counts entries,
//!   `kvm_page_fault` page faults KVM handles (with shadow paging also guest #PF intercepts),
//!   `kvm_apic` every emulated APIC register access (x2APIC ones are also `kvm_msr`): events.
//! - kvm_stat: `tools/kvm/kvm_stat/kvm_stat`, whose `kvm_exit(NAME)` children split `kvm_exit`
//!   by reason, and whose `Total` line adds up every event it shows, exits or not.

use serde::{Deserialize, Serialize};

/// What one row of an exit table counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// Exits for one reason (or one kind of reason): a share of all exits.
    #[default]
    Exit,
    /// Every exit, whatever the reason (`kvm_exit`, KVM's `exits` counter).
    Total,
    /// Something that is not an exit (an entry, an injected interrupt, a page fault handled,
    /// a gauge such as `largepages`): shown as a count, never as a share of exits.
    Event,
}

/// Rows that count every exit.
const TOTALS: &[&str] = &["kvm_exit", "exits"];

/// Tracepoints emitted once per exit of their kind.
const EXIT_TRACEPOINTS: &[&str] =
    &["kvm_pio", "kvm_msr", "kvm_cpuid", "kvm_hypercall", "kvm_hv_hypercall", "kvm_mmio", "kvm_fast_mmio"];

/// KVM statistics (binary stats and the debugfs files before them) that count exits of one kind.
/// The debugfs names of older kernels are here too (`irq_window`, `nmi_window`, `request_irq`).
const EXIT_COUNTERS: &[&str] = &[
    "io_exits",
    "mmio_exits",
    "halt_exits",
    "irq_exits",
    "irq_window_exits",
    "nmi_window_exits",
    "request_irq_exits",
    "signal_exits",
    "notify_window_exits",
    "hypercalls",
    "irq_window",
    "nmi_window",
    "request_irq",
    // Nested VM entries: one per VMLAUNCH, VMRESUME or VMRUN exit of a hypervisor in the guest
    // that got past KVM's checks (`++vcpu->stat.nested_run` in `vmx_vcpu_run`/`svm_vcpu_run`).
    "nested_run",
];

/// KVM statistics that count something other than exits: work done inside or around them,
/// memory-management events, and gauges.
const EVENT_COUNTERS: &[&str] = &[
    "insn_emulation",
    "insn_emulation_fail",
    "fpu_reload",
    "host_state_reload",
    "efer_reload",
    "req_event",
    "irq_injections",
    "nmi_injections",
    "tlb_flush",
    "remote_tlb_flush",
    "remote_tlb_flush_requests",
    "invlpg",
    "l1d_flush",
    "directed_yield_attempted",
    "directed_yield_successful",
    "preemption_reported",
    "preemption_other",
    "blocking",
    "guest_mode",
    "largepages",
    "lpages",
    "nx_lpage_splits",
    "pages_4k",
    "pages_2m",
    "pages_1g",
    "max_mmu_rmap_size",
    "max_mmu_page_hash_collisions",
];

/// What the row named `name` counts. Exit-reason names of every vocabulary (VMX, SVM, arm64,
/// `UNKNOWN(...)`) are exits; so is any name this vocabulary does not know, since the tables
/// kvmtune reads list exit reasons unless they say otherwise.
pub fn kind_of(name: &str) -> RowKind {
    if TOTALS.contains(&name) {
        return RowKind::Total;
    }
    // kvm_stat's children of `kvm_exit`, one per reason, as `-1` prints them.
    if EXIT_TRACEPOINTS.contains(&name) || EXIT_COUNTERS.contains(&name) || name.starts_with("kvm_exit(") {
        return RowKind::Exit;
    }
    let kvm_counter_family = ["pf_", "mmu_", "halt_"].iter().any(|p| name.starts_with(p));
    if EVENT_COUNTERS.contains(&name) || kvm_counter_family || name.starts_with("kvm_") {
        return RowKind::Event;
    }
    RowKind::Exit
}

/// Whether the row named `name` is one of KVM's statistics that count exits of one kind.
pub fn is_exit_counter(name: &str) -> bool {
    EXIT_COUNTERS.contains(&name)
}

/// Whether a row of an exit profile is a KVM statistic that is not an exit count.
pub fn is_event(name: &str) -> bool {
    kind_of(name) == RowKind::Event
}

/// What caused an exit, whatever vocabulary names it. One name belongs to one cause; a rule
/// or pattern that reads a cause reads every name of it.
///
/// Sources for the names: Linux `arch/x86/include/uapi/asm/vmx.h` (`VMX_EXIT_REASONS`) and
/// `svm.h` (`SVM_EXIT_REASONS`, the lower-case names perf prints), kvm_stat's own SVM table
/// (upper case: `NPF`, `IOIO`), `arch/arm64/include/asm/kvm_arm.h` (`WFx`), KVM's statistics and
/// tracepoints as above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitCause {
    /// An access to memory that a device QEMU emulates (Intel marks it with an EPT
    /// misconfiguration; the counters and tracepoints name it).
    Mmio,
    /// AMD's nested page fault: KVM handles MMIO to emulated devices (reserved bits in the
    /// nested page tables) and faults on guest memory it has not mapped through the same exit
    /// (`npf_interception` in `arch/x86/kvm/svm/svm.c`), and the name does not say which.
    NestedPageFault,
    /// Guest memory the host has not mapped (yet): Intel's EPT violation, KVM's page faults.
    PageFault,
    PortIo,
    MsrWrite,
    MsrRead,
    /// An MSR access whose table does not say read or write (SVM's one `msr` exit).
    Msr,
    /// A write to the local APIC, the ICR (IPIs) included.
    ApicWrite,
    /// Any other access to the emulated local APIC: EOIs, TPR, unaccelerated AVIC accesses.
    ApicOther,
    ExternalInterrupt,
    /// The vCPU idles: HLT (arm64: WFI/WFE).
    Halt,
    Pause,
    Cpuid,
    Hypercall,
    /// The guest opened a window for an interrupt that waited to be injected.
    InterruptWindow,
    /// An exception or NMI KVM intercepted (VMX's `EXCEPTION_NMI`). With EPT there are few;
    /// with shadow paging (no EPT, or real mode on a CPU without unrestricted guest) every
    /// guest page fault is one.
    Exception,
    /// A virtualization instruction the guest executed: a hypervisor inside the guest entering
    /// its own guest (VMRESUME, VMLAUNCH, SVM's `vmrun`) or keeping its state (VMREAD,
    /// VMWRITE, VMPTRLD, `vmload`, `vmsave`, `stgi`, `clgi`, `invlpga`). KVM emulates every one
    /// (`arch/x86/kvm/vmx/nested.c`, `arch/x86/kvm/svm/nested.c`).
    NestedVirtualization,
    /// A code the tool that printed the table could not name (`UNKNOWN(...)`).
    Unnamed,
    Other,
}

/// Every name of each cause, in every vocabulary kvmtune reads.
const CAUSES: &[(ExitCause, &[&str])] = &[
    (ExitCause::Mmio, &["EPT_MISCONFIG", "mmio_exits", "kvm_mmio", "kvm_fast_mmio", "KVM_EXIT_MMIO"]),
    (ExitCause::NestedPageFault, &["npf", "NPF"]),
    (ExitCause::PageFault, &["EPT_VIOLATION", "kvm_page_fault"]),
    (ExitCause::Exception, &["EXCEPTION_NMI"]),
    (ExitCause::PortIo, &["IO_INSTRUCTION", "io", "IOIO", "io_exits", "kvm_pio"]),
    (ExitCause::MsrWrite, &["MSR_WRITE"]),
    (ExitCause::MsrRead, &["MSR_READ"]),
    (ExitCause::Msr, &["msr", "MSR", "kvm_msr"]),
    (ExitCause::ApicWrite, &["APIC_WRITE", "avic_incomplete_ipi"]),
    (
        ExitCause::ApicOther,
        &["EOI_INDUCED", "APIC_ACCESS", "TPR_BELOW_THRESHOLD", "avic_unaccelerated_access", "kvm_apic"],
    ),
    (ExitCause::ExternalInterrupt, &["EXTERNAL_INTERRUPT", "interrupt", "INTR", "irq_exits"]),
    (ExitCause::Halt, &["HLT", "hlt", "halt_exits", "WFx"]),
    (ExitCause::Pause, &["PAUSE_INSTRUCTION", "pause", "PAUSE"]),
    (ExitCause::Cpuid, &["CPUID", "cpuid", "kvm_cpuid"]),
    (
        ExitCause::Hypercall,
        &["VMCALL", "hypercall", "VMMCALL", "hypercalls", "kvm_hypercall", "kvm_hv_hypercall"],
    ),
    (
        ExitCause::InterruptWindow,
        &["PENDING_INTERRUPT", "INTERRUPT_WINDOW", "vintr", "VINTR", "irq_window_exits", "irq_window"],
    ),
    (
        ExitCause::NestedVirtualization,
        &[
            "VMRESUME",
            "VMLAUNCH",
            "VMREAD",
            "VMWRITE",
            "VMPTRLD",
            "VMPTRST",
            "VMCLEAR",
            "VMON",
            "VMOFF",
            "INVEPT",
            "INVVPID",
            "vmrun",
            "vmload",
            "vmsave",
            "stgi",
            "clgi",
            "invlpga",
            "VMRUN",
            "VMLOAD",
            "VMSAVE",
            "STGI",
            "CLGI",
            "INVLPGA",
            "nested_run",
        ],
    ),
];

impl ExitCause {
    /// The cause of the row named `name`; kvm_stat's `kvm_exit(NAME)` children by their NAME.
    pub fn of(name: &str) -> ExitCause {
        let name = name.strip_prefix("kvm_exit(").and_then(|n| n.strip_suffix(')')).unwrap_or(name);
        if name.starts_with("UNKNOWN(") {
            return ExitCause::Unnamed;
        }
        CAUSES.iter().find(|(_, names)| names.contains(&name)).map_or(ExitCause::Other, |(cause, _)| *cause)
    }

    /// The names this cause goes by (Intel's first), none for [`ExitCause::Unnamed`] and
    /// [`ExitCause::Other`].
    pub fn names(self) -> &'static [&'static str] {
        CAUSES.iter().find(|(cause, _)| *cause == self).map_or(&[], |(_, names)| names)
    }

    /// Whether exits of this cause may be MMIO to emulated devices.
    pub fn may_be_mmio(self) -> bool {
        matches!(self, ExitCause::Mmio | ExitCause::NestedPageFault)
    }

    /// Whether exits of this cause may be faults on guest memory.
    pub fn may_be_page_fault(self) -> bool {
        matches!(self, ExitCause::PageFault | ExitCause::NestedPageFault)
    }

    /// Whether exits of this cause may be MSR writes.
    pub fn may_be_msr_write(self) -> bool {
        matches!(self, ExitCause::MsrWrite | ExitCause::Msr)
    }

    /// The short word `top` and the exporter group rates by (`io`, `mmio`, `msr`, ...); None
    /// for causes they do not show.
    pub fn short_name(self) -> Option<&'static str> {
        Some(match self {
            ExitCause::Mmio => "mmio",
            ExitCause::NestedPageFault => "npf",
            ExitCause::PageFault => "page_fault",
            ExitCause::PortIo => "io",
            ExitCause::MsrWrite | ExitCause::MsrRead | ExitCause::Msr => "msr",
            ExitCause::ApicWrite | ExitCause::ApicOther => "apic",
            ExitCause::ExternalInterrupt => "irq",
            ExitCause::Halt => "halt",
            ExitCause::Pause => "pause",
            ExitCause::Cpuid => "cpuid",
            ExitCause::Hypercall => "hypercall",
            ExitCause::InterruptWindow => "irq_window",
            ExitCause::NestedVirtualization => "nested",
            ExitCause::Exception | ExitCause::Unnamed | ExitCause::Other => return None,
        })
    }
}

/// Whether the row named `name` is the vCPU idling, whose handling time is not busy time.
pub fn is_idle(name: &str) -> bool {
    ExitCause::of(name) == ExitCause::Halt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_totals_and_events_are_told_apart() {
        for exit in
            ["HLT", "npf", "kvm_exit(HLT)", "io_exits", "kvm_pio", "kvm_msr", "UNKNOWN(131072)", "WFx"]
        {
            assert_eq!(kind_of(exit), RowKind::Exit, "{exit}");
        }
        for total in ["kvm_exit", "exits"] {
            assert_eq!(kind_of(total), RowKind::Total, "{total}");
        }
        for event in [
            "kvm_entry",
            "kvm_ioapic_set_irq",
            "kvm_apic_accept_irq",
            "kvm_page_fault",
            "largepages",
            "pf_fixed",
            "halt_wakeup",
            "halt_poll_success_ns",
            "mmu_cache_miss",
            "insn_emulation",
        ] {
            assert_eq!(kind_of(event), RowKind::Event, "{event}");
        }
        assert_eq!(kind_of("halt_exits"), RowKind::Exit);
        // KVM counts the nested entries of a hypervisor in the guest: each one an exit.
        assert_eq!(kind_of("nested_run"), RowKind::Exit);
    }

    #[test]
    fn each_name_has_one_cause() {
        let mut seen = std::collections::HashSet::new();
        for (_, names) in CAUSES {
            for name in *names {
                assert!(seen.insert(*name), "{name} is named by two causes");
            }
        }
        assert_eq!(ExitCause::of("kvm_exit(EPT_MISCONFIG)"), ExitCause::Mmio);
        assert_eq!(ExitCause::of("UNKNOWN(131072)"), ExitCause::Unnamed);
        assert_eq!(ExitCause::of("XSETBV"), ExitCause::Other);
        assert_eq!(ExitCause::of("kvm_exit(EXCEPTION_NMI)"), ExitCause::Exception);
        for nested in ["VMRESUME", "vmrun", "kvm_exit(VMRUN)", "nested_run"] {
            assert_eq!(ExitCause::of(nested), ExitCause::NestedVirtualization, "{nested}");
        }
        // VMCALL is a hypercall, not a hypervisor's instruction.
        assert_eq!(ExitCause::of("VMCALL"), ExitCause::Hypercall);
        // npf is MMIO or a page fault, never told apart by its name; both rules say so.
        let npf = ExitCause::of("npf");
        assert!(npf.may_be_mmio() && npf.may_be_page_fault());
        assert!(!ExitCause::of("EPT_MISCONFIG").may_be_page_fault());
        assert!(!ExitCause::of("EPT_VIOLATION").may_be_mmio());
    }
}
