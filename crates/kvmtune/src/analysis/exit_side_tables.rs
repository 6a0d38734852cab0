//! The side tables of a VM's exits: `perf kvm stat report --event=ioport` and `--event=msr`,
//! which a post often adds after its `VM-EXIT` table. Their rows are ports and MSRs, not exit
//! reasons, so they have rules of their own: which device or register
//! ([`crate::knowledge::exit_targets`]) takes a large share of the table's exits or of their
//! handling time, and what that says about the guest. One declaration per rule in
//! [`SIDE_TABLE_RULES`], in the same registry as the other exit rules.
//!
//! Shares are of the table as printed: perf's `Samples%` and `Time%` where the poster kept
//! them (a table cut to a few rows still carries the whole table's shares), else of the rows
//! shown.

use crate::analysis::Severity;
use crate::analysis::exit_rules::{ExitFinding, ReasonShare, rate_per_vcpu};
use crate::analysis::fix::Applicability;
use crate::analysis::meta::{Category, RuleMeta};
use crate::exits::{ExitProfile, ExitRow};
use crate::knowledge::exit_targets::{ExitTarget, MSRS, PORTS, TargetRange, target_of};

/// Which side table a profile is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideTable {
    /// `--event=ioport`: `IO Port Access`, rows `0x70:POUT`.
    Ports,
    /// `--event=msr`: `MSR Access`, rows `0x6e0:W`.
    Msrs,
}

impl SideTable {
    /// The side table `profile` is, if it is one.
    pub fn of(profile: &ExitProfile) -> Option<SideTable> {
        let event = profile.event.to_ascii_lowercase();
        if event.contains("io port") || event.contains("ioport") {
            Some(SideTable::Ports)
        } else if event.contains("msr") {
            Some(SideTable::Msrs)
        } else {
            None
        }
    }

    fn ranges(self) -> &'static [TargetRange] {
        match self {
            SideTable::Ports => PORTS,
            SideTable::Msrs => MSRS,
        }
    }

    /// `port` or `MSR`.
    pub fn noun(self) -> &'static str {
        match self {
            SideTable::Ports => "port",
            SideTable::Msrs => "MSR",
        }
    }
}

#[derive(Debug)]
pub struct SideTableRule {
    pub meta: RuleMeta,
    pub table: SideTable,
    /// The devices or registers whose rows show the cause.
    pub targets: &'static [ExitTarget],
    /// Fires when their rows make at least this share of the table's exits or of its time.
    pub min_share: f64,
    /// And, where set, only at this many exits per second and vCPU or more: a table that
    /// gives no rate (perf's counts since the recording began) never fires the rule.
    pub min_rate_per_vcpu: Option<f64>,
    /// Check rules that find the cause in a VM config.
    pub check_rules: &'static [&'static str],
}

pub const SIDE_TABLE_RULES: &[SideTableRule] = &[
    SideTableRule {
        meta: RuleMeta {
            id: "EXIT018",
            name: "rtc-port-io",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "the guest drives the RTC through port I/O",
            explanation: "Ports 0x70 and 0x71 are the RTC (the CMOS clock): a write to 0x70 selects a register and 0x71 reads or writes it, each an exit to QEMU's emulated MC146818. A Windows guest without Hyper-V synthetic timers takes its clock tick from the RTC's periodic interrupt and must read the RTC's status register after every tick, so these exits follow the tick rate; in the source thread a Windows 7 guest spent three quarters of its port-exit time on port 0x70. A Linux guest touches the RTC only to read or set the wall clock.",
            example: "0x70:POUT 31% of port exits, 75% of their time",
            fix: "for Windows, offer hv-synic and hv-stimer (with hv-time, hv-vpindex and hv-runtime): it then ticks from a synthetic timer and leaves the RTC alone",
            fix_safety: Applicability::Manual,
            source: "QEMU hw/rtc/mc146818rtc.c; lore.kernel.org/r/1535040889-52782-1-git-send-email-peng.hao2@zte.com.cn (Windows 7 guest, RTC port writes); QEMU docs/system/i386/hyperv.rst (hv-stimer); Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers)",
        },
        table: SideTable::Ports,
        targets: &[ExitTarget::Rtc],
        min_share: 0.25,
        min_rate_per_vcpu: None,
        check_rules: &["TIME005", "TIME006", "HV001"],
    },
    SideTableRule {
        meta: RuleMeta {
            id: "EXIT019",
            name: "acpi-pm-timer-reads",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "the guest reads the ACPI PM timer as its clock",
            explanation: "The ACPI power-management timer (port 0x608 on q35 with OVMF, 0xb008 where the firmware put the PM block at 0xb000, as on i440fx) is a free-running counter read as a clock, and every read exits to QEMU. Windows reads it for QueryPerformanceCounter when it trusts neither the TSC nor a Hyper-V reference TSC page; a Linux guest reads it when its clocksource is acpi_pm.",
            example: "0x608:PIN 60% of port exits",
            fix: "for Windows, hv-time (the reference TSC page), and an invariant TSC (<feature policy='require' name='invtsc'/>) on a host whose TSC is stable; for Linux, the kvm-clock or tsc clocksource",
            fix_safety: Applicability::Manual,
            source: "Microsoft, Acquiring high-resolution time stamps (learn.microsoft.com/windows/win32/sysinfo/acquiring-high-resolution-time-stamps); github.com/MicrosoftDocs/Virtualization-Documentation/issues/1885 (reads of port 0x608); edk2 OvmfPkg (ICH9_PMBASE_VALUE 0x600, PIIX4_PMBA_VALUE 0xB000); QEMU docs/system/i386/hyperv.rst (hv-time)",
        },
        table: SideTable::Ports,
        targets: &[ExitTarget::AcpiPmTimer],
        min_share: 0.25,
        min_rate_per_vcpu: None,
        check_rules: &["TIME001"],
    },
    SideTableRule {
        meta: RuleMeta {
            id: "EXIT020",
            name: "pit-port-io",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "the guest programs the PIT as its timer",
            explanation: "Ports 0x40-0x43 are the i8254 programmable interval timer; each access exits to QEMU. A guest that keeps programming it uses it as its timer: Windows with neither the HPET nor Hyper-V synthetic timers, a Linux guest only while it boots or when forced to (clocksource=pit, or no local APIC timer).",
            example: "0x40:POUT 45% of port exits",
            fix: "for Windows, offer hv-synic and hv-stimer (with hv-time, hv-vpindex and hv-runtime); for Linux, leave the local APIC timer on (the default)",
            fix_safety: Applicability::Manual,
            source: "QEMU hw/timer/i8254.c; QEMU docs/system/i386/hyperv.rst (hv-stimer); Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers)",
        },
        table: SideTable::Ports,
        targets: &[ExitTarget::Pit],
        min_share: 0.25,
        min_rate_per_vcpu: None,
        check_rules: &["TIME006"],
    },
    SideTableRule {
        meta: RuleMeta {
            id: "EXIT021",
            name: "pci-config-port-io",
            category: Category::Exits,
            severity: Severity::Info,
            title: "PCI configuration space through ports 0xcf8/0xcfc",
            explanation: "Port 0xcf8 takes a PCI configuration address and 0xcfc-0xcff its data: each access exits to QEMU, and most take two. Bursts are normal while the guest boots or probes its devices; a steady rate is a driver that polls a device's configuration space.",
            example: "0xcf8:POUT 40% of port exits",
            fix: "find the driver that polls (its device in the guest, the rate over time); the VM's configuration does not remove these exits",
            fix_safety: Applicability::Manual,
            source: "QEMU hw/pci/pci_host.c (the config address and data ports); lore.kernel.org/r/1535040889-52782-1-git-send-email-peng.hao2@zte.com.cn (Windows 7 guest, port 0xcf8)",
        },
        table: SideTable::Ports,
        targets: &[ExitTarget::PciConfig],
        min_share: 0.25,
        min_rate_per_vcpu: None,
        check_rules: &[],
    },
    SideTableRule {
        meta: RuleMeta {
            id: "EXIT022",
            name: "tsc-deadline-writes",
            category: Category::Exits,
            severity: Severity::Info,
            title: "the guest arms its APIC timer through the TSC-deadline MSR",
            explanation: "MSR 0x6e0 (IA32_TSC_DEADLINE) arms the local APIC timer in TSC-deadline mode: one write per timer the guest programs, so a guest with many short timers (a Linux guest's high-resolution timers and scheduler tick) writes it tens of thousands of times a second. KVM handles the write in its fast path when it can use the VMX preemption timer, which keeps each exit to about a microsecond (as in the source thread).",
            example: "0x6e0:W 98% of MSR exits, 0.90us each",
            fix: "keep kvm_intel's preemption_timer on (the default), which lets KVM take the fast path; fewer short timers in the guest (a tickless kernel, timer slack) mean fewer writes",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/x86.c (handle_fastpath_set_tscdeadline); Linux arch/x86/include/asm/msr-index.h (MSR_IA32_TSC_DEADLINE); lore.kernel.org/r/1616641029-20644-1-git-send-email-lirongqing@baidu.com (an MSR table dominated by 0x6e0)",
        },
        table: SideTable::Msrs,
        targets: &[ExitTarget::TscDeadline],
        min_share: 0.25,
        min_rate_per_vcpu: None,
        check_rules: &[],
    },
    SideTableRule {
        meta: RuleMeta {
            id: "EXIT023",
            name: "x2apic-ipi-writes",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "IPIs through the x2APIC interrupt command register",
            explanation: "MSR 0x830 is the x2APIC interrupt command register: each write sends an inter-processor interrupt and exits, one per destination unless the guest batches them. Many come from the guest's scheduler waking other vCPUs and from TLB shootdowns.",
            example: "0x830:W 40% of MSR exits",
            fix: "on the host, IPI virtualization removes the exit (kvm_intel enable_ipiv on Sapphire Rapids and later, AVIC on AMD); in the guest, hv-ipi lets Windows send many IPIs in one hypercall, as KVM's PV send-IPI (on by default) does for Linux",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/x86.c (handle_fastpath_set_x2apic_icr_irqoff); Linux arch/x86/kvm/vmx/vmx.c (enable_ipiv); QEMU docs/system/i386/hyperv.rst (hv-ipi); Linux Documentation/virt/kvm/x86/cpuid.rst (KVM_FEATURE_PV_SEND_IPI)",
        },
        table: SideTable::Msrs,
        targets: &[ExitTarget::X2apicIcr],
        min_share: 0.25,
        min_rate_per_vcpu: None,
        check_rules: &["HV008"],
    },
    SideTableRule {
        meta: RuleMeta {
            id: "EXIT024",
            name: "eoi-msr-writes",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "end-of-interrupt writes exit",
            explanation: "MSR 0x80b (the x2APIC EOI register) and 0x40000070 (Hyper-V's EOI MSR, with its ICR and TPR neighbours) are written at the end of every interrupt. The two exit for different reasons. With APIC virtualization (APICv, AVIC) the processor takes writes to 0x80b; when they exit, it is off on the host or inhibited for this VM, on Windows by SynIC's AutoEOI unless hv-avic is offered. 0x40000070 exits always, APIC virtualization or not: KVM emulates it. The guest writes it because hv-vapic without hv-avic makes QEMU recommend the Hyper-V APIC MSRs; with hv-avic the guest ends its interrupts through the APIC instead.",
            example: "0x40000070:W 50% of MSR exits",
            fix: "turn APIC virtualization on on the host (kvm_intel enable_apicv=1, kvm_amd avic=1) and offer hv-avic to Windows (it keeps SynIC from inhibiting APIC virtualization and moves EOIs off 0x40000070)",
            fix_safety: Applicability::Manual,
            source: "QEMU docs/system/i386/hyperv.rst (hv-avic); QEMU commit e1f9a8e8c90a (hv-avic withdraws HV_APIC_ACCESS_RECOMMENDED, which hv-vapic sets); Linux arch/x86/kvm/hyperv.c (APICV_INHIBIT_REASON_HYPERV while SynIC AutoEOI is in use; HV_X64_MSR_EOI emulated by kvm_hv_vapic_msr_write); Linux arch/x86/include/asm/hyperv-tlfs.h (HV_X64_MSR_EOI)",
        },
        table: SideTable::Msrs,
        targets: &[ExitTarget::X2apicEoi, ExitTarget::HypervApic],
        min_share: 0.25,
        min_rate_per_vcpu: None,
        check_rules: &["HV008", "HV013"],
    },
    SideTableRule {
        meta: RuleMeta {
            id: "EXIT025",
            name: "hyperv-reference-counter-reads",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "Windows reads the Hyper-V reference counter through its MSR",
            explanation: "MSR 0x40000020 is Hyper-V's partition reference counter: Windows reads it as its clock when it is offered (hv-time) but the reference TSC page is not usable, and each read exits. With a working TSC page the same clock is read in the guest without an exit.",
            example: "0x40000020:R 70% of MSR exits",
            fix: "offer hv-time on a host whose TSC is stable (an invariant TSC, the host clocksource on tsc), so that Windows uses the reference TSC page",
            fix_safety: Applicability::Manual,
            source: "Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers); QEMU docs/system/i386/hyperv.rst (hv-time); Linux arch/x86/kvm/hyperv.c (HV_X64_MSR_TIME_REF_COUNT)",
        },
        table: SideTable::Msrs,
        targets: &[ExitTarget::HypervReferenceCounter],
        min_share: 0.25,
        min_rate_per_vcpu: None,
        check_rules: &["TIME001"],
    },
    SideTableRule {
        meta: RuleMeta {
            id: "EXIT027",
            name: "timer-rearm-storm",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "a timer rearmed tens of thousands of times a second",
            explanation: "The guest writes its timer registers (the TSC deadline, the x2APIC timer's initial count, Hyper-V's synthetic timers) more than 10,000 times a second on each vCPU: a new timer every 100 microseconds or sooner, where the finest Windows timer seen is 2 kHz (the periodic-timer commit cited) and a Linux tick runs at 1000 Hz at most (CONFIG_HZ). A deadline already in the past fires at once, the guest handles it and sets the next, and the vCPU does little else: a guest whose idea of time lags the hypervisor's (a Windows Server 2025 guest resuming from hibernation set its synthetic timers in the past and bugchecked with 0x9f or 0xa0 in the case cited), or a periodic timer whose period is shorter than its interrupt handler takes (Windows sets 2 kHz timers; under load the ticks pile up and the guest livelocks). A guest workload that asks for very short timers (high-resolution sleeps in a loop) makes the same traffic on purpose.",
            example: "0x6e0:W at 824000/s per vCPU",
            fix: "see which register it is and whether the guest hangs: for Hyper-V synthetic timers set in the past (Windows resuming from hibernation), the KVM change proposed for them (see the source), which delays such a timer by 10 microseconds; for a periodic timer that livelocks, a host kernel that no longer retries the timer's message delivery, and vCPUs that do not share host CPUs; for a guest program's short sleeps, its timer resolution (timeBeginPeriod on Windows, timer slack on Linux)",
            fix_safety: Applicability::Manual,
            source: "Microsoft Hyper-V TLFS, Timers (a one-shot timer set in the past expires at once; learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers); Intel SDM Vol. 3A, TSC-Deadline Mode (a deadline already passed interrupts at once); Linux arch/x86/kvm/hyperv.c (stimer_start) and arch/x86/kvm/lapic.c; lore.kernel.org/r/20260115141520.24176-1-graf@amazon.com (Windows Server 2025 hibernation, synthetic timers in the past, interrupt storms); Linux commit 7deec5e0df74 'x86: kvm: hyperv: don't retry message delivery for periodic timers' (Windows guests with 2 kHz periodic timers livelocked)",
        },
        table: SideTable::Msrs,
        targets: &[ExitTarget::TscDeadline, ExitTarget::X2apicTimer, ExitTarget::HypervSyntheticTimers],
        min_share: 0.0,
        min_rate_per_vcpu: Some(TIMER_STORM_RATE_PER_VCPU),
        check_rules: &[],
    },
];

/// Timer register writes per second and vCPU above which a guest rearms its timer every
/// 100 microseconds or sooner: five times the 2 kHz periodic timer Windows was seen to set
/// (commit 7deec5e0df74), ten times a 1000 Hz Linux tick (CONFIG_HZ).
pub const TIMER_STORM_RATE_PER_VCPU: f64 = 10_000.0;

/// A table's exits and handling time, as declared, else of the rows shown: what a row's share
/// is taken of where perf did not print it.
struct Totals {
    exits: f64,
    time_us: f64,
}

impl Totals {
    fn of(profile: &ExitProfile) -> Self {
        let shown: u64 = profile.rows.iter().map(|r| r.count).fold(0, u64::saturating_add);
        let shown_time: f64 = profile.rows.iter().filter_map(|r| r.time_us).sum();
        Totals {
            exits: profile.declared_samples.unwrap_or(shown).max(1) as f64,
            time_us: profile.declared_time_us.unwrap_or(shown_time),
        }
    }

    /// A row's share of the table's exits and of its handling time: as printed where the
    /// table kept `Samples%` and `Time%`.
    fn shares(&self, row: &ExitRow) -> (f64, Option<f64>) {
        let exits = row.sample_percent.map_or(row.count as f64 / self.exits, |p| p / 100.0);
        let time = row
            .time_percent
            .map(|p| p / 100.0)
            .or_else(|| Some(row.time_us? / self.time_us).filter(|_| self.time_us > 0.0));
        (exits, time)
    }
}

/// The findings of a side table; empty for a profile that is none.
pub fn diagnose_side_table(profile: &ExitProfile) -> Vec<ExitFinding> {
    let Some(table) = SideTable::of(profile) else { return Vec::new() };
    let totals = Totals::of(profile);
    let mut findings = Vec::new();
    for rule in SIDE_TABLE_RULES.iter().filter(|r| r.table == table) {
        let rows: Vec<&ExitRow> = profile
            .rows
            .iter()
            .filter(|row| {
                target_of(table.ranges(), &row.name).is_some_and(|t| rule.targets.contains(&t.target))
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let reasons: Vec<ReasonShare> = rows
            .iter()
            .map(|row| {
                let (exit_share, time_share) = totals.shares(row);
                ReasonShare { name: row.name.clone(), count: row.count, exit_share, time_share }
            })
            .collect();
        let exit_share: f64 = reasons.iter().map(|r| r.exit_share).sum();
        let time_share: Option<f64> = reasons.iter().map(|r| r.time_share).sum();
        // As for exit reasons: only the time the rows' spread vouches for makes a finding.
        let sure_time_share: Option<f64> =
            rows.iter().zip(&reasons).map(|(row, r)| Some(r.time_share? * row.surely_spent_fraction())).sum();
        if exit_share < rule.min_share && sure_time_share.is_none_or(|t| t < rule.min_share) {
            continue;
        }
        let rate = match rule.min_rate_per_vcpu {
            None => None,
            Some(floor) => match rate_per_vcpu(profile, &rows) {
                Some(rate) if rate >= floor => Some(rate),
                _ => continue,
            },
        };
        // The devices or registers of the rule that the table has rows for, in the rule's order.
        let seen: Vec<ExitTarget> =
            rows.iter().filter_map(|row| target_of(table.ranges(), &row.name)).map(|t| t.target).collect();
        let what: Vec<&str> =
            rule.targets.iter().filter(|t| seen.contains(t)).map(|t| t.describe()).collect();
        let time =
            time_share.map_or(String::new(), |t| format!(", {:.0}% of their handling time", t * 100.0));
        let rate = rate.map_or(String::new(), |r| format!(", {r:.0} a second per vCPU"));
        let evidence = format!(
            "{} takes {:.0}% of this table's {} exits{time}{rate}",
            what.join(" and "),
            exit_share * 100.0,
            table.noun()
        );
        findings.push(ExitFinding::of_rule(&rule.meta, rule.check_rules, reasons, Some(evidence)));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(event: &str, rows: &[(&str, u64, Option<f64>, Option<f64>)]) -> ExitProfile {
        let mut profile = ExitProfile::new("perf kvm stat", event);
        for (name, count, samples, time) in rows {
            let mut row = ExitRow::count_only(name.to_string(), *count, 1);
            row.sample_percent = *samples;
            row.time_percent = *time;
            profile.rows.push(row);
        }
        profile
    }

    fn fired(profile: &ExitProfile) -> Vec<&'static str> {
        diagnose_side_table(profile).iter().map(|f| f.rule).collect()
    }

    #[test]
    fn the_printed_shares_of_a_cut_table_decide() {
        // As posted: two rows of a longer table; 0x70 is 31% of its exits and 75% of the time.
        let ports = table(
            "IO Port Access",
            &[("0x70:POUT", 86, Some(30.99), Some(74.59)), ("0xcf8:POUT", 1119, Some(2.60), Some(2.12))],
        );
        assert_eq!(fired(&ports), ["EXIT018"]);
    }

    #[test]
    fn a_small_share_stays_quiet() {
        let ports = table(
            "IO Port Access",
            &[("0x70:POUT", 5, Some(5.0), Some(8.0)), ("0x1f0:PIN", 95, Some(95.0), Some(92.0))],
        );
        assert!(fired(&ports).is_empty());
        let vmexit = table("VM-EXIT", &[("0x70:POUT", 100, None, None)]);
        assert!(fired(&vmexit).is_empty(), "a VM-EXIT table is no side table");
    }

    /// An MSR table over `seconds` with one vCPU's counts, as the recorder makes it.
    fn recorded_msrs(rows: &[(&str, u64)], seconds: f64) -> ExitProfile {
        let mut profile = ExitProfile::new("kvmtune record", "MSR Access (kvm_msr counters)");
        profile.duration_s = Some(seconds);
        for (name, count) in rows {
            profile.rows.push(ExitRow::per_vcpu(name.to_string(), vec![*count]));
        }
        profile
    }

    #[test]
    fn a_timer_rearmed_every_few_microseconds_is_a_storm_and_a_tick_is_not() {
        let storm = recorded_msrs(&[("0x6e0:W", 2_400_000), ("0x830:W", 300)], 3.0);
        assert_eq!(fired(&storm), ["EXIT022", "EXIT027"]);
        let evidence = diagnose_side_table(&storm).pop().unwrap().evidence.unwrap();
        assert!(evidence.contains("800000 a second per vCPU"), "{evidence}");
        let stimers = recorded_msrs(&[("0x400000b0-0x400000b7:W", 90_000)], 3.0);
        assert_eq!(fired(&stimers), ["EXIT027"]);
        // A 1000 Hz tick, and the same storm in a perf report, which gives no rate.
        let tick = recorded_msrs(&[("0x6e0:W", 3000)], 3.0);
        assert_eq!(fired(&tick), ["EXIT022"]);
        let counted = table("MSR Access", &[("0x6e0:W", 2_400_000, None, None)]);
        assert_eq!(fired(&counted), ["EXIT022"]);
    }

    #[test]
    fn msr_tables_name_their_registers() {
        let msrs = table("MSR Access", &[("0x830:W", 600, None, None), ("0x40000070:W", 400, None, None)]);
        assert_eq!(fired(&msrs), ["EXIT023", "EXIT024"]);
    }
}
