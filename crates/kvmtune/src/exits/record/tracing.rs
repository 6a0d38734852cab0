//! Tracepoint sources for the recorder.
//!
//! - **Counters**: kernel-side `perf_event_open` counts of single tracepoints per vCPU thread
//!   (`kvm_pio`, `kvm_msr`, `kvm_userspace_exit` split by reason, ...). They cost the guest next
//!   to nothing and fire on every KVM, including PVM, where `kvm_exit` does not.
//! - **Exit pairs**: `kvm_exit` and `kvm_entry` read as text from a private tracefs instance, so
//!   that each exit's handling time is the gap to the next entry on the same thread (the method
//!   of `perf kvm stat`). Only where `kvm_exit` fires.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::exits::ExitRow;
use crate::knowledge::exit_targets::{ExitTarget, MSRS};
use crate::sys::TracepointCounter;

/// One counted tracepoint: the row it becomes, the event, and a filter on its fields.
pub struct CountedEvent {
    pub row: &'static str,
    pub event: &'static str,
    pub filter: Option<&'static str>,
}

/// One counter of `kvm_msr` for the MSRs of one [`MSRS`] range: a row of the recorder's MSR
/// table (`0x6e0:W`, `0x400000b0-0x400000b7:W`), as `perf kvm stat --event=msr` names rows.
pub struct MsrCounter {
    pub row: String,
    pub filter: String,
}

/// The MSR rows the recorder counts: every register [`MSRS`] names, in the direction that tells
/// its story (the Hyper-V reference counter is read as a clock; the others are written).
/// `kvm_msr`'s fields are `write`, `ecx`, `data` and `exception` (arch/x86/kvm/trace.h).
pub fn msr_counters() -> Vec<MsrCounter> {
    MSRS.iter()
        .map(|range| {
            let (letter, write) = match range.target {
                ExitTarget::HypervReferenceCounter => ('R', 0),
                _ => ('W', 1),
            };
            let msrs = if range.first == range.last {
                format!("{:#x}", range.first)
            } else {
                format!("{:#x}-{:#x}", range.first, range.last)
            };
            MsrCounter {
                row: format!("{msrs}:{letter}"),
                filter: format!("write == {write} && ecx >= {:#x} && ecx <= {:#x}", range.first, range.last),
            }
        })
        .collect()
}

/// `kvm_userspace_exit` reasons are `KVM_EXIT_*` from include/uapi/linux/kvm.h.
pub const COUNTED_EVENTS: &[CountedEvent] = &[
    CountedEvent { row: "kvm_exit", event: "kvm_exit", filter: None },
    CountedEvent { row: "kvm_pio", event: "kvm_pio", filter: None },
    CountedEvent { row: "kvm_msr", event: "kvm_msr", filter: None },
    CountedEvent { row: "kvm_cpuid", event: "kvm_cpuid", filter: None },
    CountedEvent { row: "kvm_page_fault", event: "kvm_page_fault", filter: None },
    CountedEvent { row: "kvm_apic", event: "kvm_apic", filter: None },
    CountedEvent { row: "kvm_hypercall", event: "kvm_hypercall", filter: None },
    CountedEvent { row: "kvm_hv_hypercall", event: "kvm_hv_hypercall", filter: None },
    CountedEvent { row: "kvm_userspace_exit", event: "kvm_userspace_exit", filter: None },
    CountedEvent { row: "KVM_EXIT_IO", event: "kvm_userspace_exit", filter: Some("reason == 2") },
    CountedEvent { row: "KVM_EXIT_MMIO", event: "kvm_userspace_exit", filter: Some("reason == 6") },
    // Timers that expired and halted vCPUs woken, as kvm_stat counts them: with kvm_msr, what
    // tells a guest woken by each timer it arms (EXIT030). The first fires only where KVM
    // waits for an advanced APIC timer on VM entry (lapic_timer_advance; arch/x86/kvm/lapic.c,
    // called from the VMX and SVM run loops): this project's PVM host counts none.
    CountedEvent { row: "kvm_wait_lapic_expire", event: "kvm_wait_lapic_expire", filter: None },
    CountedEvent { row: "kvm_vcpu_wakeup", event: "kvm_vcpu_wakeup", filter: None },
];

/// The tracefs mount, where the kernel's event ids are.
pub fn tracefs() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.join("events/kvm").is_dir())
}

fn event_id(tracefs: &Path, event: &str) -> Result<u64, String> {
    let path = tracefs.join("events/kvm").join(event).join("id");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.trim().parse().map_err(|_| format!("{}: not a number: {:?}", path.display(), text.trim()))
}

/// Counters of [`COUNTED_EVENTS`] and [`msr_counters`] for each vCPU thread; events this
/// kernel lacks are left out and listed in `notes`.
pub struct Counters {
    /// `(row, per-vCPU counters)`.
    counters: Vec<(String, Vec<TracepointCounter>)>,
}

impl Counters {
    pub fn open(tracefs: &Path, vcpu_threads: &[i32], notes: &mut Vec<String>) -> Self {
        if let Err(e) = crate::sys::raise_open_file_limit() {
            notes.push(format!("cannot raise the open-file limit for the counters: {e}"));
        }
        let msrs = msr_counters();
        let wanted = COUNTED_EVENTS
            .iter()
            .map(|e| (e.row.to_string(), e.event, e.filter))
            .chain(msrs.iter().map(|m| (m.row.clone(), "kvm_msr", Some(m.filter.as_str()))));
        let mut counters = Vec::new();
        'events: for (row, event, filter) in wanted {
            let id = match event_id(tracefs, event) {
                Ok(id) => id,
                Err(why) => {
                    let note = format!("tracepoint kvm:{event} is not available: {why}");
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                    continue;
                }
            };
            let mut per_vcpu = Vec::new();
            for &thread in vcpu_threads {
                match TracepointCounter::open(id, thread, filter) {
                    Ok(counter) => per_vcpu.push(counter),
                    Err(e) => {
                        notes.push(format!("cannot count kvm:{event} ({row}) on thread {thread}: {e}"));
                        continue 'events;
                    }
                }
            }
            counters.push((row, per_vcpu));
        }
        Self { counters }
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// Current totals per row and vCPU; a counter that cannot be read counts as 0.
    pub fn read(&self) -> Vec<(String, Vec<u64>)> {
        self.counters
            .iter()
            .map(|(row, per_vcpu)| (row.clone(), per_vcpu.iter().map(|c| c.read().unwrap_or(0)).collect()))
            .collect()
    }
}

/// Handling time per exit reason.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Timing {
    pub count: u64,
    pub total_us: f64,
    pub min_us: f64,
    pub max_us: f64,
}

impl Timing {
    fn add(&mut self, us: f64) {
        if self.count == 0 || us < self.min_us {
            self.min_us = us;
        }
        self.max_us = self.max_us.max(us);
        self.count += 1;
        self.total_us += us;
    }
}

#[derive(Debug, PartialEq)]
enum TraceEvent<'a> {
    Exit { thread: i32, seconds: f64, reason: &'a str },
    Entry { thread: i32, seconds: f64 },
}

/// One line of tracefs text output:
/// `CPU 0/KVM-7088 [001] d..1. 657.232177: kvm_exit: vcpu 0 reason IO_INSTRUCTION rip 0x...`.
/// The command name can hold spaces and dashes, so the thread id is what follows the last `-`
/// before the `[cpu]` column; SVM reasons can hold spaces (`PF excp`), so the reason runs up to
/// ` rip `.
fn parse_trace_line(line: &str) -> Option<TraceEvent<'_>> {
    let (head, event, rest) = if let Some(at) = line.find(": kvm_exit: ") {
        (&line[..at], "exit", &line[at + ": kvm_exit: ".len()..])
    } else if let Some(at) = line.find(": kvm_entry: ") {
        (&line[..at], "entry", &line[at + ": kvm_entry: ".len()..])
    } else {
        return None;
    };
    let seconds: f64 = head.rsplit(char::is_whitespace).next()?.parse().ok()?;
    let task = &head[..head.find(" [")?];
    let thread: i32 = task.trim().rsplit_once('-')?.1.parse().ok()?;
    if event == "entry" {
        return Some(TraceEvent::Entry { thread, seconds });
    }
    let after = &rest[rest.find("reason ")? + "reason ".len()..];
    let reason = after.split(" rip ").next()?.trim();
    Some(TraceEvent::Exit { thread, seconds, reason })
}

/// Pairs each `kvm_exit` with the next `kvm_entry` of the same thread.
#[derive(Debug, Default)]
pub struct ExitPairs {
    open: HashMap<i32, (f64, String)>,
    pub reasons: BTreeMap<String, Timing>,
    /// The same by thread and reason.
    pub by_thread: BTreeMap<(i32, String), Timing>,
    /// Exits seen, paired or not.
    pub exits: u64,
}

impl ExitPairs {
    pub fn feed(&mut self, text: &str) {
        for line in text.lines() {
            match parse_trace_line(line) {
                Some(TraceEvent::Exit { thread, seconds, reason }) => {
                    self.exits += 1;
                    self.open.insert(thread, (seconds, reason.to_string()));
                }
                Some(TraceEvent::Entry { thread, seconds }) => {
                    if let Some((start, reason)) = self.open.remove(&thread) {
                        let us = ((seconds - start) * 1e6).max(0.0);
                        self.by_thread.entry((thread, reason.clone())).or_default().add(us);
                        self.reasons.entry(reason).or_default().add(us);
                    }
                }
                None => {}
            }
        }
    }

    pub fn rows(&self) -> Vec<ExitRow> {
        self.reasons
            .iter()
            .map(|(name, timing)| ExitRow {
                time_us: Some(timing.total_us),
                min_us: Some(timing.min_us),
                max_us: Some(timing.max_us),
                mean_us: Some(timing.total_us / timing.count.max(1) as f64),
                ..ExitRow::count_only(name.clone(), timing.count, 0)
            })
            .collect()
    }
}

/// A tracefs instance of our own (`kvmtune-<pid>-<n>`) with `kvm_exit` and `kvm_entry` on,
/// limited to the vCPU threads. An instance has its own buffer and switches, so the global
/// trace and other users are untouched; it is removed on drop.
pub struct ExitTrace {
    instance: PathBuf,
    /// The vCPU threads traced, in vCPU order.
    threads: Vec<i32>,
    /// Closed before the instance is removed: the kernel refuses to remove an instance whose
    /// `trace_pipe` is open (EBUSY), and the instance would be left behind, still tracing.
    pipe: Option<fs::File>,
    partial: String,
    pub pairs: ExitPairs,
}

impl ExitTrace {
    pub fn start(tracefs: &Path, vcpu_threads: &[i32]) -> Result<Self, String> {
        // An empty `set_event_pid` filters nothing: every VM's exits would be traced.
        if vcpu_threads.is_empty() {
            return Err("no vCPU threads to trace".to_string());
        }
        remove_orphans(tracefs);
        // One instance per trace: the exporter traces every VM in one process.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let name = format!("kvmtune-{}-{}", std::process::id(), STARTED.fetch_add(1, Ordering::Relaxed));
        let instance = tracefs.join("instances").join(name);
        fs::create_dir(&instance).map_err(|e| format!("{}: {e}", instance.display()))?;
        let setup = || -> std::io::Result<fs::File> {
            // The pipe first: while it is open, another recorder's `remove_orphans` cannot
            // remove the instance (see there).
            let pipe = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(instance.join("trace_pipe"))?;
            let pids: Vec<String> = vcpu_threads.iter().map(i32::to_string).collect();
            fs::write(instance.join("set_event_pid"), pids.join(" "))?;
            fs::write(instance.join("events/kvm/kvm_exit/enable"), "1")?;
            fs::write(instance.join("events/kvm/kvm_entry/enable"), "1")?;
            Ok(pipe)
        };
        match setup() {
            Ok(pipe) => Ok(Self {
                instance,
                threads: vcpu_threads.to_vec(),
                pipe: Some(pipe),
                partial: String::new(),
                pairs: ExitPairs::default(),
            }),
            Err(e) => {
                let _ = fs::remove_dir(&instance);
                Err(format!("{}: {e}", instance.display()))
            }
        }
    }

    /// Reads what the kernel has buffered so far without waiting.
    pub fn drain(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else { return };
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    self.partial.push_str(&String::from_utf8_lossy(&buffer[..n]));
                    if let Some(end) = self.partial.rfind('\n') {
                        let complete: String = self.partial.drain(..=end).collect();
                        self.pairs.feed(&complete);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
}

/// Removes the instances of kvmtune processes that ended without removing theirs (killed with
/// SIGKILL while recording: no destructor runs), which go on tracing into a buffer nobody reads
/// (1408 KiB per CPU). An instance whose pid (in its name) this process can see is left alone:
/// its owner may be between creating it and opening its pipe. One whose pid it cannot see is
/// either left behind or a live recorder's in another PID namespace sharing this tracefs (a
/// container's), whose pid means nothing here. Only `rmdir` tells them apart without harm: the
/// kernel refuses it (EBUSY) while an owner holds the instance's `trace_pipe` open, and when it
/// succeeds it turns the instance's events off itself (`__remove_instance` in
/// kernel/trace/trace.c). Turning the events off first, as the destructor does for its own
/// instance, would stop a live recorder's trace without removing anything. What is left is the
/// moment between another namespace's recorder creating its instance and opening its pipe
/// (`ExitTrace::start` opens the pipe first); an instance removed then fails that recorder's
/// start, which it reports, rather than losing its trace in silence.
fn remove_orphans(tracefs: &Path) {
    let Ok(entries) = fs::read_dir(tracefs.join("instances")) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("kvmtune-").and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        // EBUSY: a recorder in another PID namespace is reading it; it stays, still tracing.
        let _ = fs::remove_dir(entry.path());
    }
}

impl Drop for ExitTrace {
    fn drop(&mut self) {
        drop(self.pipe.take());
        let _ = fs::write(self.instance.join("events/kvm/kvm_exit/enable"), "0");
        let _ = fs::write(self.instance.join("events/kvm/kvm_entry/enable"), "0");
        let _ = fs::remove_dir(&self.instance);
    }
}

/// Handling times by vCPU (its place in the thread list the trace began with) and exit reason.
pub type VcpuTimings = BTreeMap<(usize, String), Timing>;

/// An [`ExitTrace`] emptied by a thread of its own as the kernel fills it, for a reader that
/// comes by seldom (the exporter, once a scrape): the instance's buffer (1408 KiB per CPU by
/// default, the kernel's `TRACE_BUF_SIZE_DEFAULT`) holds some ten thousand exit and entry
/// pairs, a tenth of a second of a vCPU exiting 100,000 times a second, so waiting for the next
/// scrape would lose most of them. [`DrainedExitTrace::timings`] is the handling time per vCPU
/// and exit reason since the start. Dropping it stops the thread and removes the instance.
pub struct DrainedExitTrace {
    timings: Arc<Mutex<VcpuTimings>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ExitTrace {
    /// How often the draining thread empties the buffer: well inside the time a busy vCPU
    /// takes to fill it.
    const DRAIN_EVERY: Duration = Duration::from_millis(100);

    pub fn drained(mut self) -> DrainedExitTrace {
        let timings = Arc::new(Mutex::new(VcpuTimings::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (timings.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Self::DRAIN_EVERY);
                self.drain();
                let by_vcpu: VcpuTimings = self
                    .pairs
                    .by_thread
                    .iter()
                    .filter_map(|((thread, reason), timing)| {
                        let vcpu = self.threads.iter().position(|t| t == thread)?;
                        Some(((vcpu, reason.clone()), timing.clone()))
                    })
                    .collect();
                if let Ok(mut timings) = shared.lock() {
                    *timings = by_vcpu;
                }
            }
        });
        DrainedExitTrace { timings, stop, thread: Some(thread) }
    }
}

impl DrainedExitTrace {
    pub fn timings(&self) -> VcpuTimings {
        self.timings.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl Drop for DrainedExitTrace {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The corpus's recorded `perf kvm stat live` of a Windows 10 guest, and its counts and times
/// as an exit trace would have gathered them (all on vCPU 0: the report is of all vCPUs
/// together). kvm_exit never fires on this project's test host, so what reads handling times is
/// checked on this recorded data.
#[cfg(test)]
pub(crate) fn recorded_windows_timings() -> (crate::exits::ExitProfile, VcpuTimings) {
    let path = kvmtune_testkit::corpus()
        .join("exitstats/intel_huataihuang_win10-guest_perf-kvm-host-stat-live_before-hpet-fix.txt");
    let text = fs::read_to_string(&path).unwrap();
    let report = crate::exits::parse(&path.display().to_string(), &text).unwrap().remove(0);
    let timings = report
        .rows
        .iter()
        .map(|row| {
            let total_us = row.time_us.expect("perf kvm stat reports times");
            ((0, row.name.clone()), Timing { count: row.count, total_us, min_us: 0.0, max_us: 0.0 })
        })
        .collect();
    (report, timings)
}

/// No host here emits `kvm_exit` (PVM), so these lines are written by hand in the format the
/// kernel prints (`events/kvm/kvm_exit/format`, `kvm_entry/format` on 6.18), not recorded.
#[cfg(test)]
mod tests {
    use super::*;

    /// Each MSR row names its registers as the side-table rules read them back, and its
    /// filter takes exactly that range in that direction.
    #[test]
    fn msr_rows_read_back_as_their_registers() {
        let counters = msr_counters();
        assert_eq!(counters.len(), MSRS.len());
        for (counter, range) in counters.iter().zip(MSRS) {
            let read_back = crate::knowledge::exit_targets::target_of(MSRS, &counter.row).map(|r| r.target);
            assert_eq!(read_back, Some(range.target), "{}", counter.row);
            assert!(
                counter.filter.contains(&format!("ecx >= {:#x} && ecx <= {:#x}", range.first, range.last))
            );
        }
        let deadline = counters.iter().find(|c| c.row == "0x6e0:W").unwrap();
        assert_eq!(deadline.filter, "write == 1 && ecx >= 0x6e0 && ecx <= 0x6e0");
        let reference = counters.iter().find(|c| c.row == "0x40000020:R").unwrap();
        assert!(reference.filter.starts_with("write == 0 "));
        assert!(counters.iter().any(|c| c.row == "0x400000b0-0x400000b7:W"));
    }

    #[test]
    fn reads_trace_lines_with_spaces_in_names_and_reasons() {
        assert_eq!(
            parse_trace_line(
                " CPU 0/KVM-7088 [001] d..1. 657.232177: kvm_exit: vcpu 0 reason IO_INSTRUCTION rip 0x7c06 info1 0x0000000000800040 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000 requests 0x0000000000000000"
            ),
            Some(TraceEvent::Exit { thread: 7088, seconds: 657.232177, reason: "IO_INSTRUCTION" })
        );
        assert_eq!(
            parse_trace_line(
                "qemu-kvm-3105 [002] .... 12.5: kvm_exit: reason PF excp rip 0xffffffff81000000 info 0 0"
            ),
            Some(TraceEvent::Exit { thread: 3105, seconds: 12.5, reason: "PF excp" })
        );
        assert_eq!(
            parse_trace_line(" CPU 1/KVM-7090 [000] d..1. 657.232180: kvm_entry: vcpu 1, rip 0x7c06"),
            Some(TraceEvent::Entry { thread: 7090, seconds: 657.23218 })
        );
        assert_eq!(parse_trace_line(" CPU 0/KVM-7088 [001] ..... 657.2: kvm_pio: pio_write at 0x80"), None);
        assert_eq!(parse_trace_line("garbage: kvm_exit: reason"), None);
    }

    #[test]
    fn pairs_exits_with_the_next_entry_of_the_same_thread() {
        let mut pairs = ExitPairs::default();
        pairs.feed(
            " CPU 0/KVM-10 [001] d..1. 1.000000: kvm_exit: vcpu 0 reason HLT rip 0x1\n\
             CPU 1/KVM-11 [000] d..1. 1.000001: kvm_exit: vcpu 1 reason EPT_MISCONFIG rip 0x2\n\
             CPU 1/KVM-11 [000] d..1. 1.000011: kvm_entry: vcpu 1, rip 0x2\n\
             CPU 0/KVM-10 [001] d..1. 1.001000: kvm_entry: vcpu 0, rip 0x1\n\
             CPU 1/KVM-11 [000] d..1. 1.000020: kvm_exit: vcpu 1 reason EPT_MISCONFIG rip 0x2\n\
             CPU 1/KVM-11 [000] d..1. 1.000050: kvm_entry: vcpu 1, rip 0x2\n",
        );
        assert_eq!(pairs.exits, 3);
        let ept = &pairs.reasons["EPT_MISCONFIG"];
        assert_eq!(ept.count, 2);
        assert!((ept.total_us - 40.0).abs() < 1e-3, "{ept:?}");
        assert!((ept.min_us - 10.0).abs() < 1e-3 && (ept.max_us - 30.0).abs() < 1e-3);
        assert!((pairs.reasons["HLT"].total_us - 1000.0).abs() < 1e-3);
        assert_eq!(pairs.by_thread[&(11, "EPT_MISCONFIG".to_string())].count, 2);
        assert_eq!(pairs.by_thread[&(10, "HLT".to_string())].count, 1);
        assert_eq!(pairs.by_thread.len(), 2);
    }
}
