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
    "nested_run",
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

/// Whether a row of an exit profile is a KVM statistic that is not an exit count.
pub fn is_event(name: &str) -> bool {
    kind_of(name) == RowKind::Event
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
    }
}
