//! Exit patterns: causes an expert reads from several reasons at once, and, where they are
//! given, from the VM's config and the host's facts. One declaration per pattern in
//! [`PATTERN_RULES`], with its id, explanation and source, in the same registry as the
//! single-reason causes of [`crate::analysis::exit_rules`]. A pattern that fires replaces the
//! single-reason findings it explains better (`supersedes`): the same table then no longer gets
//! a cure for a symptom.
//!
//! Patterns judge shares, including the absence of a reason, so they run only on tables that
//! list every exit reason the VM had (perf `VM-EXIT`, kvm_stat, the recorder's `kvm_exit`
//! profile), never on partial counters, and only where all the rows are there: a poster who
//! kept the top rows of a table left out the small reasons whose absence a pattern reads. A
//! pattern that reads one cause against a total and KVM's events beside it ([`Reads`]) runs on
//! any table with a total, the recorder's tracepoint counts too.

use crate::analysis::Severity;
use crate::analysis::exit_rules::{ExitFinding, Guest, ReasonShare, exit_rate, exit_total, rate_per_vcpu};
use crate::analysis::fix::Applicability;
use crate::analysis::meta::{Category, RuleMeta};
use crate::config::model::VmConfig;
use crate::exits::model::saturating_sum;
use crate::exits::reasons::ExitCause;
use crate::exits::{ExitProfile, ExitRow, RowKind};
use crate::host::HostFacts;
use crate::knowledge::hyperv::Hv;

/// What a pattern may read besides the profile.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExitContext<'a> {
    pub config: Option<&'a VmConfig>,
    pub host: Option<&'a HostFacts>,
    /// The guest, as `--guest` says or the config tells.
    pub guest: Guest,
}

#[derive(Debug)]
pub struct PatternRule {
    pub meta: RuleMeta,
    /// Single-reason causes this pattern explains better: left out when it fires.
    pub supersedes: &'static [&'static str],
    /// Check rules that find the cause in a VM config.
    pub check_rules: &'static [&'static str],
    /// Read only in a guest that may be Windows: the pattern is about Hyper-V enlightenments
    /// or Windows' timers.
    pub windows_only: bool,
    /// What the pattern judges: the absence of reasons (only a table of every reason can
    /// show one), or one cause's share of the exits the guest makes (any table that counts
    /// each exit once, KVM's own statistics too).
    pub reads: Reads,
    /// The reasons the pattern involves and what it saw, or `None`.
    pub check: fn(&Table, &ExitContext) -> Option<Match>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Which reasons are there and which are not ([`ExitProfile::shows_every_reason`]).
    EveryReason,
    /// One cause against all the exits the guest makes ([`ExitProfile::counts_each_exit_once`]).
    GuestExits,
    /// One cause's share of a total KVM counted, beside KVM's event counts: any table with
    /// a total row, also one whose other rows overlap (the recorder's tracepoint counts, where
    /// `KVM_EXIT_IO` is part of `kvm_pio`), since no other row is read.
    CauseAndEvents,
}

/// What a pattern saw.
pub struct Match {
    pub reasons: Vec<String>,
    pub evidence: String,
}

/// One profile's reasons as shares of all its exits, by cause (VMX, SVM, kvm_stat and
/// tracepoint names alike, [`ExitCause`]).
pub struct Table<'a> {
    profile: &'a ExitProfile,
    total: f64,
}

impl<'a> Table<'a> {
    pub fn new(profile: &'a ExitProfile) -> Self {
        Self { profile, total: exit_total(profile).max(1) as f64 }
    }

    /// The exit rows whose cause `which` accepts.
    fn rows(&self, which: impl Fn(ExitCause) -> bool) -> impl Iterator<Item = &'a ExitRow> {
        self.profile.rows.iter().filter(move |r| r.is_exit() && which(ExitCause::of(&r.name)))
    }

    /// The share of all exits that the rows `which` accepts make.
    pub fn share(&self, which: impl Fn(ExitCause) -> bool) -> f64 {
        saturating_sum(self.rows(which).map(|r| r.count)) as f64 / self.total
    }

    fn present(&self, which: impl Fn(ExitCause) -> bool) -> bool {
        self.rows(which).any(|r| r.count > 0)
    }

    /// The names of the rows `which` accepts.
    fn seen(&self, which: impl Fn(ExitCause) -> bool) -> Vec<String> {
        self.rows(which).map(|r| r.name.clone()).collect()
    }

    /// Exits per second of the rows `which` accepts ([`exit_rate`]).
    fn rate(&self, which: impl Fn(ExitCause) -> bool) -> Option<f64> {
        exit_rate(self.profile, &self.rows(which).collect::<Vec<_>>())
    }

    /// Exits per second of the rows `which` accepts and their share of the exits per second
    /// the guest makes: all exits but external interrupts, which are the host's (its timer,
    /// its devices, other tasks' IPIs) and go on whatever the guest does. KVM's own counters
    /// have rows for a few kinds only (no MSR, APIC or EPT exits), so there the guest's exits
    /// are their `exits` less `irq_exits`.
    fn rate_and_guest_share(&self, which: impl Fn(ExitCause) -> bool) -> Option<(f64, f64)> {
        let rate = self.rate(which)?;
        let guest = if self.profile.shows_every_reason() {
            self.rate(|c| c != ExitCause::ExternalInterrupt)?
        } else {
            let total = self.profile.rows.iter().find(|r| r.kind == RowKind::Total)?;
            exit_rate(self.profile, &[total])? - self.rate(is(ExitCause::ExternalInterrupt)).unwrap_or(0.0)
        };
        (guest > 0.0).then_some((rate, rate / guest))
    }

    /// A loop of `cause`: its rate (per vCPU where `per_vcpu`) at `floor` or more and
    /// [`LOOP_SHARE`] of the guest's exits; the rate and the share where it is one.
    fn looping(&self, cause: ExitCause, floor: f64, per_vcpu: bool) -> Option<(f64, f64)> {
        let (rate, share) = self.rate_and_guest_share(is(cause))?;
        let rate = if per_vcpu {
            rate_per_vcpu(self.profile, &self.rows(is(cause)).collect::<Vec<_>>())?
        } else {
            rate
        };
        (rate >= floor && share >= LOOP_SHARE).then_some((rate, share))
    }

    /// The rate of the event row named `name` (`kvm_page_fault`), where there is one: as
    /// printed (kvm_stat), or its count over the profile's seconds (the recorder).
    fn event_rate(&self, name: &str) -> Option<f64> {
        let row = self.profile.rows.iter().find(|r| !r.is_exit() && r.name == name)?;
        exit_rate(self.profile, &[row])
    }
}

/// A loop, not a load: the exits per second of one cause above which a table whose every other
/// reason has all but stopped (see [`LOOP_SHARE`]) shows a vCPU repeating one instruction. A
/// working guest that faults this often also switches tasks, takes interrupts and does I/O.
const LOOP_RATE_PER_S: f64 = 10_000.0;

/// The share of the guest's exit rate one cause must take for the table to show nothing but
/// it. The 2% left are room for a stray exit, not for an OS at work, which halts when idle and
/// arms its timer and ends its interrupts at its tick rate (64 to 1000 a second per vCPU, each
/// a timer MSR write or an APIC exit unless the hardware virtualizes it).
const LOOP_SHARE: f64 = 0.98;

/// MMIO exits per second and vCPU above which a vCPU that makes almost no other exit (see
/// [`LOOP_SHARE`]) is busy with nothing but one emulated device. Each of them is a round trip
/// to the VMM in userspace, several microseconds even on bare metal, so a vCPU spinning on a
/// device register makes far fewer of them than of exceptions KVM handles itself.
const MMIO_LOOP_RATE_PER_VCPU: f64 = 1_000.0;

/// Timer interrupts a second across the VM above which idle vCPUs woken by their own timers
/// (EXIT030) are worth a warning when the number of vCPUs is unknown: two vCPUs ticking at
/// 1000 Hz. A guest whose idle CPUs stop their tick wakes far less often: two published
/// kvm_stat tables of openEuler guests show 21 and 139 wakeups a second in all.
const TIMER_WAKEUPS_PER_S: f64 = 2_000.0;

/// The same per vCPU, where the config says how many there are: a 250 Hz tick or faster.
const TIMER_WAKEUPS_PER_VCPU: f64 = 250.0;

/// The finest periodic tick a guest runs (Linux's CONFIG_HZ_1000, Windows' timer at its 1 ms
/// resolution): timers set faster on each vCPU are not a tick.
const FASTEST_TICK_HZ: f64 = 1_000.0;

/// How close two of KVM's event rates must be for one to follow from the other (each timer
/// armed expires; each expiry wakes a halted vCPU).
const SAME_RATE: f64 = 0.9;

/// Causes by one name, for [`Table`]'s methods.
fn is(cause: ExitCause) -> impl Fn(ExitCause) -> bool {
    move |c| c == cause
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// SynIC on and hv-avic off in the config, where one is given.
fn synic_without_avic(config: &VmConfig) -> bool {
    config.hyperv.is_on(Hv::Synic) && !config.hyperv.is_on(Hv::Avic)
}

pub const PATTERN_RULES: &[PatternRule] = &[
    PatternRule {
        meta: RuleMeta {
            id: "EXIT013",
            name: "apicv-inhibited-by-synic",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "APICv/AVIC switched off by SynIC's AutoEOI",
            explanation: "The table shows enlightenments at work (hypercalls) and, beside them, many MSR writes (EOIs and timer writes through the x2APIC MSRs) and many external-interrupt exits (the host kicking vCPUs with real IPIs). That is APIC virtualization switched off: with hv-synic, Windows uses AutoEOI, which APICv/AVIC cannot emulate, so KVM inhibits it for the whole VM, and every EOI, timer write and IPI exits. Isolating host interrupts does not help here; the cure is hv-avic, which tells Windows not to use AutoEOI (Linux 5.15 and QEMU 6.2 or later), or, on an older stack and for IPI-heavy loads, the trade-off of hiding the hypervisor bit (see HV010): no enlightenments, but APICv/AVIC stays on.",
            example: "MSR_WRITE 40% and EXTERNAL_INTERRUPT 20% of exits beside VMCALL 3%",
            fix: "add hv-avic (<avic state='on'/>) on a kernel and QEMU that have it; otherwise weigh hiding the hypervisor bit for IPI-heavy loads",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/hyperv.c (APICV_INHIBIT_REASON_HYPERV on SynIC AutoEOI); QEMU docs/system/i386/hyperv.rst (hv-avic)",
        },
        supersedes: &["EXIT003", "EXIT005"],
        check_rules: &["HV008", "HV010"],
        windows_only: true,
        reads: Reads::EveryReason,
        check: |table, context| {
            let msr = table.share(ExitCause::may_be_msr_write);
            let external = table.share(is(ExitCause::ExternalInterrupt));
            if !table.present(is(ExitCause::Hypercall)) || msr < 0.15 || external < 0.05 {
                return None;
            }
            // Where the config or host say otherwise, it is not this.
            if context.config.is_some_and(|c| !synic_without_avic(c)) {
                return None;
            }
            if context.host.and_then(|h| h.kvm.apic_virtualization.known()).is_some_and(|a| !a.enabled) {
                return None;
            }
            let mut reasons = table.seen(is(ExitCause::Hypercall));
            reasons.extend(table.seen(ExitCause::may_be_msr_write));
            reasons.extend(table.seen(is(ExitCause::ExternalInterrupt)));
            Some(Match {
                reasons,
                evidence: format!(
                    "MSR writes {} and external interrupts {} of exits, with hypercalls present{}",
                    percent(msr),
                    percent(external),
                    if context.config.is_some() { "; the config has SynIC without hv-avic" } else { "" }
                ),
            })
        },
    },
    PatternRule {
        meta: RuleMeta {
            id: "EXIT014",
            name: "hpet-in-use",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "Windows keeps time with the emulated HPET",
            explanation: "MMIO to emulated devices (EPT_MISCONFIG; npf on AMD) dominates, port I/O is small, and there are no hypercalls: Windows runs without enlightenments and reads the HPET, emulated in QEMU, for its clock and timer. Each read is an exit to userspace. With hv-time (the reference TSC page) and hv-stimer Windows uses neither; only then should the HPET go (without hv-stimer, turning it off sends Windows to the RTC, which is worse).",
            example: "EPT_MISCONFIG 60% of exits, IO_INSTRUCTION 1%, no VMCALL",
            fix: "enable hv-time and hv-stimer (with hv-synic and hv-vpindex), then turn the HPET off",
            fix_safety: Applicability::Manual,
            source: "Microsoft, Acquiring high-resolution time stamps (learn.microsoft.com/windows/win32/sysinfo/acquiring-high-resolution-time-stamps); Linux arch/x86/kvm/vmx/vmx.c (handle_ept_misconfig); QEMU docs/system/i386/hyperv.rst (hv-time, hv-stimer)",
        },
        supersedes: &["EXIT001"],
        check_rules: &["TIME001", "TIME006", "HV002"],
        windows_only: true,
        reads: Reads::EveryReason,
        check: |table, context| {
            let mmio = table.share(ExitCause::may_be_mmio);
            let port_io = table.share(is(ExitCause::PortIo));
            if mmio < 0.30 || port_io >= 0.05 || table.present(is(ExitCause::Hypercall)) {
                return None;
            }
            // With the config at hand: only where the HPET is on and hv-stimer is not.
            if context.config.is_some_and(|c| c.clock.hpet_off() || c.hyperv.is_on(Hv::Stimer)) {
                return None;
            }
            let reasons = table.seen(ExitCause::may_be_mmio);
            Some(Match {
                reasons,
                evidence: format!(
                    "MMIO {} of exits, port I/O {}, no hypercalls",
                    percent(mmio),
                    percent(port_io)
                ),
            })
        },
    },
    PatternRule {
        meta: RuleMeta {
            id: "EXIT015",
            name: "rtc-fallback",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "Windows times itself with the RTC after the HPET was removed",
            explanation: "Port I/O dominates while MMIO to the HPET is all but gone and there are no hypercalls: Windows has neither the HPET nor hv-stimer, and drives its timer from the RTC (ports 0x70/0x71) and reads the ACPI PM timer, each an exit to QEMU. This is what turning the HPET off without hv-stimer does; a published case (see the source) shows it: turning the HPET back on cut IO_INSTRUCTION from 78.7% of exits to 2.5%. The better cure is hv-time with hv-stimer, after which Windows uses neither the HPET nor the RTC.",
            example: "IO_INSTRUCTION 78.7% of exits, EPT_MISCONFIG 0.01%, no VMCALL",
            fix: "enable hv-time and hv-stimer (with hv-synic and hv-vpindex); keep the HPET off only with them",
            fix_safety: Applicability::Manual,
            source: "github.com/huataihuang/cloud-atlas-draft virtual/kvm/debug/kvm_win10_high_sys_debug.md (a Windows 10 guest before and after its HPET was turned back on); github.com/MicrosoftDocs/Virtualization-Documentation/issues/1885; Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers)",
        },
        supersedes: &["EXIT002"],
        check_rules: &["TIME005", "TIME001"],
        windows_only: true,
        reads: Reads::EveryReason,
        check: |table, context| {
            let port_io = table.share(is(ExitCause::PortIo));
            let mmio = table.share(ExitCause::may_be_mmio);
            if port_io < 0.50 || mmio >= 0.01 || table.present(is(ExitCause::Hypercall)) {
                return None;
            }
            if context.config.is_some_and(|c| !c.clock.hpet_off() || c.hyperv.is_on(Hv::Stimer)) {
                return None;
            }
            Some(Match {
                reasons: table.seen(is(ExitCause::PortIo)),
                evidence: format!(
                    "port I/O {} of exits, MMIO {}, no hypercalls{}",
                    percent(port_io),
                    percent(mmio),
                    if context.config.is_some() {
                        "; the config turns the HPET off without hv-stimer"
                    } else {
                        ""
                    }
                ),
            })
        },
    },
    PatternRule {
        meta: RuleMeta {
            id: "EXIT016",
            name: "ipis-by-icr-writes",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "IPIs sent one ICR write at a time",
            explanation: "APIC writes dominate and there are no hypercalls: Windows sends its inter-processor interrupts by writing the APIC's interrupt command register, one exit per IPI and destination. The paravirtual path (hv-ipi, one hypercall for a whole set of vCPUs) is not in use: the hypervisor bit is hidden or hv-ipi is off. hv-ipi with hv-vpindex removes most of them; Intel IPI virtualization (kvm_intel enable_ipiv, Sapphire Rapids and later) or AMD AVIC removes the exits in hardware.",
            example: "APIC_WRITE 35% of exits, no VMCALL",
            fix: "enable hv-ipi (with hv-vpindex) and keep the hypervisor bit visible; on hardware with IPI virtualization or AVIC, turn it on",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/vmx/vmx.c (enable_ipiv, APIC-write exits); QEMU docs/system/i386/hyperv.rst (hv-ipi)",
        },
        supersedes: &["EXIT004"],
        check_rules: &["HV002", "HV010"],
        windows_only: true,
        reads: Reads::EveryReason,
        check: |table, context| {
            let apic_write = table.share(is(ExitCause::ApicWrite));
            if apic_write < 0.20 || table.present(is(ExitCause::Hypercall)) {
                return None;
            }
            let why = match context.config {
                Some(config) if config.hypervisor_bit_disabled().is_some() => {
                    "; the config hides the hypervisor bit"
                }
                Some(config) if !config.hyperv.is_on(Hv::Ipi) => "; the config has no hv-ipi",
                Some(_) => return None,
                None => "",
            };
            let reasons = table.seen(is(ExitCause::ApicWrite));
            Some(Match {
                reasons,
                evidence: format!("APIC writes {} of exits, no hypercalls{why}", percent(apic_write)),
            })
        },
    },
    PatternRule {
        meta: RuleMeta {
            id: "EXIT017",
            name: "idle-host-cpu-burn",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "halt polling burns host CPU for an idle, overcommitted guest",
            explanation: "The guest is mostly halted, yet KVM polls before each halt (kvm.halt_poll_ns is above 0) on a host whose CPUs the VM shares: every idle vCPU spins up to the poll window on a CPU another thread needs, and the host shows the idle guest as busy. Halt polling pays only for vCPUs with CPUs of their own. Lower or disable it (the kvm.halt_poll_ns module parameter, or per VM through KVM_CAP_HALT_POLL), or pin the vCPUs to CPUs nothing else uses.",
            example: "HLT 85% of exits, kvm.halt_poll_ns=200000, vCPUs not pinned",
            fix: "set kvm.halt_poll_ns=0 (or lower), or give the vCPUs host CPUs of their own",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/virt/kvm/halt-polling.rst; Linux virt/kvm/kvm_main.c (halt_poll_ns)",
        },
        supersedes: &["EXIT006"],
        check_rules: &["PIN001", "PIN002", "PIN007"],
        windows_only: false,
        reads: Reads::EveryReason,
        check: |table, context| {
            let (Some(host), Some(config)) = (context.host, context.config) else { return None };
            let halts = table.share(is(ExitCause::Halt));
            let polling: u64 = host
                .kvm
                .modules
                .known()
                .and_then(|m| m.parameter("kvm", "halt_poll_ns"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let running = config.running_vcpus();
            let pins = &config.pinning.vcpupin;
            let unpinned = running.iter().any(|v| !pins.iter().any(|p| p.id == v));
            let pinned_cpus: usize = pins.iter().map(|p| p.cpus.len()).sum();
            let distinct = pins.iter().fold(crate::values::CpuSet::new(), |all, p| all.union(&p.cpus)).len();
            let shared = unpinned || pinned_cpus > distinct || pins.iter().any(|p| p.cpus.len() > 1);
            if halts < 0.50 || polling == 0 || !shared {
                return None;
            }
            Some(Match {
                reasons: table.seen(is(ExitCause::Halt)),
                evidence: format!(
                    "halts {} of exits, kvm.halt_poll_ns={polling}, vCPUs {}",
                    percent(halts),
                    if unpinned { "not all pinned" } else { "sharing host CPUs" }
                ),
            })
        },
    },
    PatternRule {
        meta: RuleMeta {
            id: "EXIT026",
            name: "exception-loop",
            category: Category::Exits,
            severity: Severity::Error,
            title: "a vCPU stuck on one faulting instruction",
            explanation: "Tens of thousands of intercepted exceptions a second (EXCEPTION_NMI) and almost no other exit: no halts, no I/O, barely a timer interrupt. With EPT, KVM intercepts few exceptions; without it (shadow paging) it intercepts every guest page fault, and while it runs a guest's real-mode code in vm86 mode (CPUs without unrestricted guest) every exception. A rate like this with nothing else beside it means the vCPU faults on one instruction, KVM handles the fault and re-enters, and the guest faults again: the guest is hung, not slow. Where KVM's kvm_page_fault events run at the same rate, it is a page KVM never manages to map; in the case cited, a host kernel change to the memory-management notifiers left KVM unable to map the guest's very first page. No VM setting tunes this away.",
            example: "kvm_exit(EXCEPTION_NMI) 330604/s and kvm_page_fault 330604/s, EXTERNAL_INTERRUPT 105/s, nothing else",
            fix: "find the instruction and address that repeat (`perf record -e kvm:kvm_exit -e kvm:kvm_page_fault` gives the guest RIP and the faulting address), then try another host kernel; where KVM runs without EPT (kvm_intel ept=0), turning EPT on ends the page-fault intercepts",
            fix_safety: Applicability::Manual,
            source: "Linux arch/x86/kvm/vmx/vmx.c (vmx_update_exception_bitmap: #PF intercepted without EPT, every exception while real mode runs in vm86; handle_exception_nmi); thread 'qemu-kvm loops after kernel udpate', kvm and linux-mm lists, September 2012 (lore.kernel.org/all/20120918124646.02aaee4f.akpm@linux-foundation.org): kvm_stat showed EXCEPTION_NMI and kvm_page_fault at 330604/s while the guest hung, bisected to a host mm change",
        },
        supersedes: &[],
        check_rules: &[],
        windows_only: false,
        reads: Reads::GuestExits,
        check: |table, _| {
            let (exceptions, share) = table.looping(ExitCause::Exception, LOOP_RATE_PER_S, false)?;
            let faults = table
                .event_rate("kvm_page_fault")
                .filter(|faults| (faults - exceptions).abs() <= 0.05 * exceptions)
                .map(|faults| {
                    format!(", with kvm_page_fault at {faults:.0}/s: the same fault again and again")
                })
                .unwrap_or_default();
            Some(Match {
                reasons: table.seen(is(ExitCause::Exception)),
                evidence: format!(
                    "exceptions at {exceptions:.0}/s, {} of the guest's exits per second{faults}",
                    percent(share)
                ),
            })
        },
    },
    PatternRule {
        meta: RuleMeta {
            id: "EXIT028",
            name: "mmio-thrash",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "a vCPU busy with nothing but MMIO to an emulated device",
            explanation: "Over a thousand MMIO exits a second on each vCPU, and almost no other exit the guest makes: no halts, no timer writes, no port I/O. Each MMIO exit stops the vCPU, goes out to the VMM in userspace, which emulates the access, and comes back; a vCPU that makes nothing else is spinning on one device register (a driver polling a status bit that an emulated device sets late or never, firmware waiting on a device, a clock such as the HPET read in a loop) or writing an emulated framebuffer or device memory a word at a time. An OS that runs normally also arms its timer and takes interrupts, which show beside the MMIO. Where the guest hangs, it is the device or its driver; where it works, it is a device that should be paravirtual.",
            example: "mmio_exits 3770/s per vCPU, 100% of the guest's exits",
            fix: "find the device: `perf kvm stat report --event=mmio` or the kvm:kvm_mmio tracepoint gives the guest-physical address, which `info mtree` in the QEMU monitor maps to a device; replace an emulated device with its virtio counterpart (virtio-net, virtio-blk or virtio-scsi, virtio-gpu or a passed-through GPU), and where the guest hangs on it, update or change the guest's driver or firmware for that device",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/virt/kvm/api.rst (KVM_EXIT_MMIO: the access is completed by userspace before the vCPU runs on); Linux arch/x86/kvm/vmx/vmx.c (handle_ept_misconfig) and arch/x86/kvm/svm/svm.c (npf_interception); QEMU hmp-commands-info.hx (info mtree, in the monitor chapter of the QEMU manual)",
        },
        supersedes: &[],
        check_rules: &[],
        windows_only: false,
        reads: Reads::GuestExits,
        check: |table, _| {
            let (rate, share) = table.looping(ExitCause::Mmio, MMIO_LOOP_RATE_PER_VCPU, true)?;
            Some(Match {
                reasons: table.seen(is(ExitCause::Mmio)),
                evidence: format!(
                    "MMIO at {rate:.0}/s per vCPU, {} of the guest's exits per second",
                    percent(share)
                ),
            })
        },
    },
    PatternRule {
        meta: RuleMeta {
            id: "EXIT030",
            name: "timer-wakes-idle-vcpus",
            category: Category::Exits,
            severity: Severity::Warning,
            title: "idle vCPUs woken again and again by the timers they arm",
            explanation: "KVM's tracepoints (kvm_stat, or `exits record`) count as many APIC timers expiring (kvm_wait_lapic_expire, one for each TSC-deadline timer KVM delivers) and as many halted vCPUs woken (kvm_vcpu_wakeup) as MSR exits: the guest arms its local APIC timer through an MSR (the TSC deadline, or the x2APIC timer's initial count), halts, and is woken by that very timer, over and over. The vCPUs have nothing to do, yet each wakes for its timer, and every wakeup costs the host a timer interrupt, a switch to the vCPU thread and a VM entry: an idle VM keeps host CPUs out of their deep idle states and at a high clock. At the guest's tick rate on each vCPU (100 to 1000 a second) it is a periodic tick that does not stop when the CPU idles: a Linux guest booted with nohz=off, or built with CONFIG_HZ_PERIODIC, ticks on every vCPU all the time, where the default (CONFIG_NO_HZ_IDLE) stops the tick of an idle CPU; in Windows, a program that asked for a 1 ms timer resolution (timeBeginPeriod) keeps the timer interrupt that fast. In the case cited, an idle Linux guest with nohz=off on its command line woke 33,000 times a second and held the host's CPUs at their top frequency; with an openEuler kernel instead it woke 139 times. Far more than 1000 timers a second on one vCPU is no tick but a timer set again and again (see EXIT027).",
            example: "kvm_msr 33160/s, kvm_wait_lapic_expire 32990/s, kvm_vcpu_wakeup 33030/s",
            fix: "let idle vCPUs stop their tick: in a Linux guest, remove nohz=off from the kernel command line and run a kernel with CONFIG_NO_HZ_IDLE or CONFIG_NO_HZ_FULL (distribution kernels have one; `grep HZ /boot/config-$(uname -r)` tells); in Windows, find the program that raised the timer resolution (Microsoft's PwrTest timer scenario logs each request with its program); where one vCPU's rate is far above 1000 a second, find the timer in the guest (perf or bpftrace on the timer:hrtimer_start tracepoint inside a Linux guest)",
            fix_safety: Applicability::Manual,
            source: "Linux Documentation/timers/no_hz.rst (CONFIG_HZ_PERIODIC never omits the tick; CONFIG_NO_HZ_IDLE omits it on idle CPUs and should be the default) and Documentation/admin-guide/kernel-parameters.txt (nohz=off); Linux arch/x86/kvm/lapic.c (__kvm_wait_lapic_expire traces kvm_wait_lapic_expire for each expired TSC-deadline timer whose interrupt KVM injects, with timer advancement, on by default) and virt/kvm/kvm_main.c (kvm_vcpu_halt traces kvm_vcpu_wakeup when a halted vCPU wakes); Microsoft, timeBeginPeriod (learn.microsoft.com/windows/win32/api/timeapi/nf-timeapi-timebeginperiod: a finer timer resolution can keep the CPU out of its power-saving states) and PwrTest timer scenario (learn.microsoft.com/windows-hardware/drivers/devtest/pwrtest-timer-scenario); github.com/Martins3/Martins3.github.io docs/kvm/fun/host-freq.md (kvm_stat of an idle Linux guest booted with nohz=off, its host's CPUs at top frequency, against the guest on an openEuler kernel)",
        },
        supersedes: &["EXIT003", "EXIT006"],
        check_rules: &[],
        windows_only: false,
        reads: Reads::CauseAndEvents,
        check: |table, context| {
            let msr = table.rate(ExitCause::may_be_msr_write)?;
            let expired = table.event_rate("kvm_wait_lapic_expire")?;
            let woken = table.event_rate("kvm_vcpu_wakeup")?;
            // Each MSR exit a timer that expired, each expiry a halted vCPU woken, and the MSR
            // exits a share of the guest's exits that matters (EXIT003's own threshold).
            if msr <= 0.0
                || expired < SAME_RATE * msr
                || woken < SAME_RATE * expired
                || table.share(ExitCause::may_be_msr_write) < 0.20
            {
                return None;
            }
            let vcpus = context.config.map(|c| c.running_vcpus().len()).filter(|n| *n > 0);
            let per_vcpu = match vcpus {
                Some(n) => {
                    let each = expired / n as f64;
                    if each < TIMER_WAKEUPS_PER_VCPU {
                        return None;
                    }
                    let kind = if each > FASTEST_TICK_HZ * 1.1 {
                        "more than any periodic tick: a timer set again and again"
                    } else {
                        "the rate of a periodic tick"
                    };
                    format!("; over the config's {n} vCPUs that is {each:.0}/s each, {kind}")
                }
                None if expired < TIMER_WAKEUPS_PER_S => return None,
                None => format!(
                    "; that is a 1000 Hz tick on {:.0} vCPUs, or faster timers on fewer (--config gives the rate per vCPU)",
                    (expired / FASTEST_TICK_HZ).round().max(1.0)
                ),
            };
            Some(Match {
                reasons: table.seen(ExitCause::may_be_msr_write),
                evidence: format!(
                    "MSR exits {msr:.0}/s, APIC timers expiring {expired:.0}/s (kvm_wait_lapic_expire), halted vCPUs woken {woken:.0}/s (kvm_vcpu_wakeup){per_vcpu}"
                ),
            })
        },
    },
];

/// The patterns that fire on this profile, as findings: each pattern on the tables it can
/// judge ([`Reads`]).
pub fn diagnose_patterns(
    profile: &ExitProfile,
    context: &ExitContext,
) -> Vec<(ExitFinding, &'static [&'static str])> {
    let each_exit_once = profile.counts_each_exit_once();
    let has_total = profile.rows.iter().any(|r| r.kind == RowKind::Total);
    let table = Table::new(profile);
    let busy = crate::analysis::exit_rules::busy_time(profile);
    PATTERN_RULES
        .iter()
        .filter(|rule| !(rule.windows_only && context.guest == Guest::Linux))
        .filter(|rule| match rule.reads {
            Reads::EveryReason => each_exit_once && profile.shows_every_reason(),
            Reads::GuestExits => each_exit_once,
            Reads::CauseAndEvents => each_exit_once || has_total,
        })
        .filter_map(|rule| {
            let found = (rule.check)(&table, context)?;
            let reasons = found
                .reasons
                .iter()
                .filter_map(|name| profile.row(name))
                .map(|row| ReasonShare::of_row(profile, row, table.total, busy))
                .collect();
            Some((
                ExitFinding::of_rule(&rule.meta, rule.check_rules, reasons, Some(found.evidence)),
                rule.supersedes,
            ))
        })
        .collect()
}
