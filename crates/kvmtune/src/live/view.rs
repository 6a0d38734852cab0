//! Reading every VM's counters at once, each bounded by a timeout so that one stuck monitor
//! never holds up the others, and what two readings mean.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::analysis::exit_diagnosis::diagnose;
use crate::analysis::exit_rules::ExitFinding;
use crate::exits::reasons::ExitCause;
use crate::exits::record::domstats::read_domstats;
use crate::exits::record::tracing::{Counters, DrainedExitTrace, ExitTrace, VcpuTimings, tracefs};
use crate::exits::record::{
    Sample, StatsReader, Target, exit_time_profile, profiles_between, vcpu_threads_by_name,
};
use crate::host::libvirt::Libvirt;
use crate::live::discover::LiveVm;

/// One VM's cumulative counters at one moment, or why they could not be read.
#[derive(Debug, Clone)]
pub struct VmReading {
    pub vm: LiveVm,
    /// KVM's statistics (`query-stats`).
    pub counters: Result<Sample, String>,
    /// Tracepoint counts per vCPU thread (`kvm_pio`, `KVM_EXIT_MMIO`, ...), since the VM was
    /// first read; empty without tracefs or the right to count. They see what a host's KVM
    /// statistics may not: PVM, for one, counts port I/O in `exits` but not in `io_exits`.
    pub traced: Sample,
    /// Handling time per vCPU and exit reason since the VM was first read, where exits are
    /// traced ([`Tracepoints::with_exit_times`]) and the host's KVM emits `kvm_exit`; else empty.
    pub exit_times: VcpuTimings,
    pub at: Instant,
}

/// What is traced of each VM process, kept open between readings: the tracepoint counters
/// (the kernel counts while nothing reads, so a reading costs one `read` per counter) and, when
/// asked for, its exits' handling times.
#[derive(Default)]
pub struct Tracepoints {
    open: HashMap<i32, Traced>,
    exit_times: bool,
}

impl Tracepoints {
    /// Also traces each VM's `kvm_exit` and `kvm_entry` for the handling time per exit reason
    /// (the method of `perf kvm stat`). It costs the guest more than the counters do (two
    /// events per exit, and text to parse), hence asked for; only where the host's KVM emits
    /// `kvm_exit`.
    pub fn with_exit_times() -> Self {
        Tracepoints { open: HashMap::new(), exit_times: true }
    }
}

/// One VM process's open tracing.
struct Traced {
    counters: Counters,
    exits: Option<DrainedExitTrace>,
}

impl Traced {
    fn open(tracefs: &Path, vcpu_threads: &[i32], exit_times: bool) -> Self {
        let counters = Counters::open(tracefs, vcpu_threads, &mut Vec::new());
        let exits = exit_times
            .then(|| ExitTrace::start(tracefs, vcpu_threads).ok())
            .flatten()
            .map(ExitTrace::drained);
        Traced { counters, exits }
    }
}

impl VmReading {
    pub fn vcpus(&self) -> usize {
        self.counters.as_ref().map_or(0, |c| c.values().map(Vec::len).max().unwrap_or(0))
    }
}

/// One VM's answer: its statistics (or why not), its tracepoint counts, its exits' handling
/// times, and when.
type Answer = (Result<Sample, String>, Sample, VcpuTimings, Instant);

/// The statistics of every running domain of one libvirt connection, read once per
/// [`read_all`] by whichever of its domains' threads asks first.
type DomainBatch = Arc<OnceLock<Result<BTreeMap<String, Sample>, String>>>;

/// Reads every VM's counters in parallel; a VM that does not answer within `timeout` is
/// reported as such (its reader is left to give up on its own). `tracepoints` keeps each VM's
/// tracepoint counters from one call to the next; those of VMs gone are closed. The domains of
/// a libvirt connection are read together, by one `virsh domstats`.
pub fn read_all(vms: &[LiveVm], timeout: Duration, tracepoints: &mut Tracepoints) -> Vec<VmReading> {
    let (sender, receiver) = mpsc::channel();
    let tracefs = tracefs();
    // Each VM's reader gives up by then too, so that none outlives the call.
    let deadline = Instant::now() + timeout;
    let mut batches: HashMap<Option<String>, DomainBatch> = HashMap::new();
    for (index, vm) in vms.iter().enumerate() {
        let sender = sender.clone();
        let monitor = vm.monitor.clone();
        let batch = match &vm.monitor {
            Ok(Target::Domain { connect, .. }) => Some(batches.entry(connect.clone()).or_default().clone()),
            _ => None,
        };
        let mut traced = tracepoints.open.remove(&vm.pid);
        let exit_times = tracepoints.exit_times;
        let tracefs = tracefs.clone();
        let pid = vm.pid;
        std::thread::spawn(move || {
            // Opens the VM's tracing once its vCPU threads are known (`threads`, asked only then).
            let mut open_tracing = |threads: &dyn Fn() -> Vec<i32>| {
                // Only a VM whose vCPU threads are this host's has tracepoints to count here.
                if traced.is_none()
                    && pid > 0
                    && let Some(tracefs) = &tracefs
                {
                    let threads = threads();
                    if !threads.is_empty() {
                        traced = Some(Traced::open(tracefs, &threads, exit_times));
                    }
                }
            };
            let read = monitor.and_then(|target| {
                if let (Target::Domain { name, connect }, Some(batch)) = (&target, &batch) {
                    match batch.get_or_init(|| {
                        let left = deadline.saturating_duration_since(Instant::now());
                        read_domstats(&Libvirt::new(connect.as_deref()).within(left))
                    }) {
                        Err(why) => return Err(why.clone()),
                        Ok(domains) => match domains.get(name) {
                            None => {
                                return Err(format!("libvirt lists no running domain {name} (it stopped?)"));
                            }
                            Some(sample) if !sample.is_empty() => {
                                // By their names; without `debug-threads=on`, from the monitor.
                                open_tracing(&|| {
                                    let named = vcpu_threads_by_name(pid);
                                    if !named.is_empty() {
                                        return named;
                                    }
                                    StatsReader::open_until(&target, Some(deadline))
                                        .map(|r| r.thread_ids())
                                        .unwrap_or_default()
                                });
                                return Ok(sample.clone());
                            }
                            // A libvirt whose domstats lacks KVM's statistics: through the monitor.
                            Some(_) => {}
                        },
                    }
                }
                let mut reader =
                    StatsReader::open_until(&target, Some(deadline)).map_err(|e| e.to_string())?;
                open_tracing(&|| reader.thread_ids());
                reader.read().map_err(|e| e.to_string())
            });
            let counts: Sample = traced
                .as_ref()
                .map(|t| {
                    t.counters.read().into_iter().map(|(row, values)| (row.to_string(), values)).collect()
                })
                .unwrap_or_default();
            let exit_times = traced
                .as_ref()
                .and_then(|t| t.exits.as_ref())
                .map(DrainedExitTrace::timings)
                .unwrap_or_default();
            // The receiver is gone when this VM was given up on.
            let _ = sender.send((index, read, counts, exit_times, traced, Instant::now()));
        });
    }
    drop(sender);
    let mut answers: Vec<Option<Answer>> = vec![None; vms.len()];
    while answers.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok((index, read, counts, exit_times, traced, at)) => {
                if let Some(traced) = traced {
                    tracepoints.open.insert(vms[index].pid, traced);
                }
                answers[index] = Some((read, counts, exit_times, at));
            }
            Err(_) => break,
        }
    }
    tracepoints.open.retain(|pid, _| vms.iter().any(|vm| vm.pid == *pid));
    vms.iter()
        .zip(answers)
        .map(|(vm, answer)| {
            let (counters, traced, exit_times, at) = answer.unwrap_or_else(|| {
                let why = format!("its monitor did not answer within {:.1} s", timeout.as_secs_f64());
                (Err(why), Sample::new(), VcpuTimings::new(), Instant::now())
            });
            VmReading { vm: vm.clone(), counters, traced, exit_times, at }
        })
        .collect()
}

/// What one VM did between two readings.
#[derive(Debug, Clone, Serialize)]
pub struct VmView {
    pub name: String,
    pub pid: i32,
    pub vcpus: usize,
    /// All exits per second.
    pub exits_per_s: f64,
    /// Exits per second by kind (`io`, `halt`, `mmio`, ... from KVM's `*_exits` counters),
    /// busiest first; kinds without exits left out.
    pub kinds: Vec<(String, f64)>,
    /// The same per vCPU.
    pub per_vcpu: Vec<Vec<(String, f64)>>,
    /// Of the halts KVM polled for, the share that a wake-up ended in the poll window
    /// (`halt_successful_poll` / `halt_attempted_poll`).
    pub halt_poll_success: Option<f64>,
    /// The EXIT rules' findings, most severe first, with the same rate gate as `exits analyze`.
    pub findings: Vec<ExitFinding>,
    /// Why the VM's counters could not be read.
    pub error: Option<String>,
}

impl VmView {
    pub fn busiest(&self) -> Option<&(String, f64)> {
        self.kinds.first()
    }
}

/// The exit kind a counter counts, by its cause (`kvm_pio` and `io_exits` are both `io`), or
/// KVM's `<kind>_exits` for the kinds without one (`signal`, `nmi_window`). Page faults KVM
/// handled are not exits of their own (the exit was an EPT violation or an npf).
fn kind_of(counter: &str) -> Option<&str> {
    match ExitCause::of(counter) {
        ExitCause::PageFault => None,
        cause => cause.short_name().or_else(|| counter.strip_suffix("_exits")),
    }
}

/// Rates by kind; where KVM's statistics and a tracepoint count the same kind, the higher rate
/// (the counter the host's KVM keeps).
fn kinds(rates: impl Iterator<Item = (String, f64)>) -> Vec<(String, f64)> {
    let mut by_kind: HashMap<String, f64> = HashMap::new();
    for (counter, rate) in rates {
        if let Some(kind) = kind_of(&counter) {
            let entry = by_kind.entry(kind.to_string()).or_default();
            *entry = entry.max(rate);
        }
    }
    let mut kinds: Vec<(String, f64)> = by_kind.into_iter().filter(|(_, rate)| *rate > 0.0).collect();
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    kinds
}

/// The view of `last` against `first`, the same VM read earlier.
pub fn view(first: &VmReading, last: &VmReading) -> VmView {
    let mut view = VmView {
        name: last.vm.name.clone(),
        pid: last.vm.pid,
        vcpus: last.vcpus(),
        exits_per_s: 0.0,
        kinds: Vec::new(),
        per_vcpu: Vec::new(),
        halt_poll_success: None,
        findings: Vec::new(),
        error: None,
    };
    let (before, now) = match (&first.counters, &last.counters) {
        (Ok(before), Ok(now)) => (before, now),
        (Err(e), _) | (_, Err(e)) => {
            view.error = Some(e.clone());
            return view;
        }
    };
    let seconds = last.at.duration_since(first.at).as_secs_f64().max(1e-3);
    let delta = |counter: &str, vcpu: Option<usize>| -> f64 {
        let values = |sample: &Sample, traced: &Sample| -> u64 {
            sample.get(counter).or_else(|| traced.get(counter)).map_or(0, |per_vcpu| match vcpu {
                Some(index) => per_vcpu.get(index).copied().unwrap_or(0),
                None => per_vcpu.iter().sum(),
            })
        };
        values(now, &last.traced).saturating_sub(values(before, &first.traced)) as f64
    };
    let counters: Vec<&String> = now.keys().chain(last.traced.keys()).collect();
    view.exits_per_s = delta("exits", None) / seconds;
    view.kinds = kinds(counters.iter().map(|counter| ((*counter).clone(), delta(counter, None) / seconds)));
    view.per_vcpu = (0..view.vcpus)
        .map(|vcpu| {
            kinds(counters.iter().map(|counter| ((*counter).clone(), delta(counter, Some(vcpu)) / seconds)))
        })
        .collect();
    let attempted = delta("halt_attempted_poll", None);
    if attempted > 0.0 {
        view.halt_poll_success = Some(delta("halt_successful_poll", None) / attempted);
    }
    let mut findings: Vec<ExitFinding> = Vec::new();
    let mut profiles = profiles_between((before, &first.traced), (now, &last.traced), seconds);
    profiles.extend(exit_time_profile(&first.exit_times, &last.exit_times, seconds));
    for profile in profiles {
        for finding in diagnose(&profile) {
            if !findings.iter().any(|f| f.rule == finding.rule) {
                findings.push(finding);
            }
        }
    }
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.rule.cmp(b.rule)));
    view.findings = findings;
    view
}

/// kvm_exit never fires on this project's test host (PVM), so the handling-time path is checked
/// on recorded real data: the corpus's `perf kvm stat live` of a Windows 10 guest, its
/// per-reason counts and times taken as what the exit trace had gathered between two readings.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::exits::record::tracing::recorded_windows_timings;

    fn reading(exit_times: VcpuTimings, at: Instant) -> VmReading {
        let vm = LiveVm { name: "win10".into(), pid: 1, monitor: Err("none".into()) };
        VmReading { vm, counters: Ok(Sample::new()), traced: Sample::new(), exit_times, at }
    }

    #[test]
    #[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
    fn traced_handling_times_give_the_findings_exits_analyze_gives_on_the_same_exits() {
        let (report, traced) = recorded_windows_timings();
        let start = Instant::now();
        // One second apart: the report's 70,746 exits are well above every rate gate.
        let view =
            view(&reading(VcpuTimings::new(), start), &reading(traced, start + Duration::from_secs(1)));
        let mut analyzed: Vec<&str> = diagnose(&report).iter().map(|f| f.rule).collect();
        let mut viewed: Vec<&str> = view.findings.iter().map(|f| f.rule).collect();
        analyzed.sort_unstable();
        viewed.sort_unstable();
        assert!(!analyzed.is_empty(), "the report has findings of its own");
        assert_eq!(viewed, analyzed);
    }
}
