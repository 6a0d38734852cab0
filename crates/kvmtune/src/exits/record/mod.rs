//! `kvmtune exits record`: samples a running VM and turns the differences into exit profiles.
//!
//! Sources, each optional but the first:
//! 1. KVM's per-vCPU statistics through QMP `query-stats` (QEMU 7.1 and later): `exits`,
//!    `halt_exits`, `io_exits`, `mmio_exits`, ... counted by KVM itself.
//! 2. Tracepoint counters per vCPU thread ([`tracing::Counters`]).
//! 3. `kvm_exit`/`kvm_entry` pairs for per-reason counts and handling times
//!    ([`tracing::ExitTrace`]), on hosts where `kvm_exit` fires.
//!
//! A source that cannot be had is written into the profile's notes and the rest goes on; a VM
//! that stops mid-recording ends the recording with what was sampled until then.

pub mod domstats;
pub mod monitor;
pub mod tracing;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thiserror::Error;

use crate::exits::model::{ExitProfile, ExitRow, Isa, saturating_sum};
use crate::exits::read::guess_isa;
use crate::exits::read::qmp::vcpu_stats;
use crate::host::libvirt::Libvirt;
use monitor::{Monitor, MonitorAddress, monitor_from_argv};

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("{target}: {why}")]
    Monitor { target: String, why: String },
    #[error("process {pid}: {why}")]
    Process { pid: i32, why: String },
    #[error("{0}")]
    Unusable(String),
}

/// Which VM to record.
#[derive(Debug, Clone)]
pub enum Target {
    Qmp(PathBuf),
    Domain { name: String, connect: Option<String> },
    Pid(i32),
}

#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub duration: Duration,
    pub interval: Duration,
    /// Set (by a signal handler, say) to end the recording early, with what was sampled.
    pub stop: Arc<AtomicBool>,
}

impl RecordOptions {
    pub fn new(duration: Duration, interval: Duration) -> Self {
        RecordOptions { duration, interval, stop: Arc::default() }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps for `period`, or less when asked to stop meanwhile.
    fn wait(&self, period: Duration) {
        let until = Instant::now() + period;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// What the recorder shows while it runs: rates over the last interval.
#[derive(Debug, Clone)]
pub struct Progress {
    pub elapsed_s: f64,
    pub duration_s: f64,
    /// `(counter, per second)`, busiest first.
    pub rates: Vec<(String, f64)>,
}

pub struct Recording {
    /// The KVM statistics profile first, then the tracepoint profiles that had data.
    pub profiles: Vec<ExitProfile>,
    pub source: String,
}

struct Vcpu {
    thread_id: i32,
    qom_path: String,
}

/// One sample: `counter -> per-vCPU totals`.
pub use crate::exits::model::Sample;

/// One VM's KVM vCPU counters, read whenever asked: what `top` and the exporter sample.
pub struct StatsReader {
    monitor: Monitor,
    vcpus: Vec<Vcpu>,
    cumulative: Option<Vec<String>>,
    /// The monitor it reads, for messages.
    pub source: String,
}

impl StatsReader {
    /// Connects to the VM's monitor and learns its vCPUs and which statistics are counters.
    pub fn open(target: &Target) -> Result<Self, RecordError> {
        Self::open_until(target, None)
    }

    /// As [`StatsReader::open`], with every exchange of this reader done by `deadline`:
    /// a monitor that is slow, or not QEMU's, is given up and its socket shut.
    pub fn open_until(target: &Target, deadline: Option<Instant>) -> Result<Self, RecordError> {
        let mut monitor = connect(target, deadline)?;
        let vcpus = vcpus(&mut monitor)?;
        let cumulative = cumulative_stats(&mut monitor);
        Ok(StatsReader { source: monitor.describe(), monitor, vcpus, cumulative })
    }

    /// The vCPUs' host threads, in vCPU order.
    pub fn thread_ids(&self) -> Vec<i32> {
        self.vcpus.iter().map(|v| v.thread_id).collect()
    }

    /// The cumulative counters now, per vCPU.
    pub fn read(&mut self) -> Result<Sample, RecordError> {
        let sample = sample_stats(&mut self.monitor, &self.vcpus, self.cumulative.as_deref())?;
        if sample.is_empty() {
            return Err(RecordError::Unusable(format!(
                "{}: query-stats returned no KVM vCPU statistics (is the VM running under -accel kvm, QEMU 7.1 or later?)",
                self.source
            )));
        }
        Ok(sample)
    }
}

/// A QEMU process's vCPU threads in vCPU order, by the names QEMU gives them with
/// `-name debug-threads=on` (`CPU 0/KVM`, ...), which libvirt always sets: no monitor needed.
/// Empty when the threads are not named so.
pub fn vcpu_threads_by_name(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut threads: Vec<(u32, i32)> = tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let thread: i32 = task.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let index = comm.trim_end().strip_prefix("CPU ")?.strip_suffix("/KVM")?.parse().ok()?;
            Some((index, thread))
        })
        .collect();
    threads.sort_unstable();
    threads.into_iter().map(|(_, thread)| thread).collect()
}

/// The exit profiles of what happened between two samples `seconds` apart, as `exits record`
/// makes them: KVM's statistics, and the tracepoint counts where there are any (with KVM's
/// `exits` for the shares). What the EXIT rules read.
pub fn profiles_between(
    first: (&Sample, &Sample),
    last: (&Sample, &Sample),
    seconds: f64,
) -> Vec<ExitProfile> {
    let stats = difference(first.0, last.0);
    let mut profiles =
        vec![profile("KVM vCPU stats (QMP query-stats)", host_isa(), rows(&stats), seconds, Vec::new())];
    let mut traced = difference(first.1, last.1);
    let msrs = msr_table(&mut traced, host_isa(), seconds, Vec::new());
    if traced.values().flatten().any(|&n| n > 0) {
        if let Some(exits) = stats.get("exits") {
            traced.insert("exits".to_string(), exits.clone());
        }
        profiles.push(profile("KVM tracepoints", host_isa(), rows(&traced), seconds, Vec::new()));
    }
    profiles.extend(msrs);
    profiles
}

/// The event of the recorder's MSR table: a side table (`SideTable::Msrs`), as
/// `perf kvm stat report --event=msr` prints one.
pub const MSR_TABLE_EVENT: &str = "MSR Access (kvm_msr counters)";

/// Takes the MSR rows ([`tracing::msr_counters`]) out of `traced` and makes them the MSR side
/// table, its shares of all MSR exits (the `kvm_msr` counter); None where no MSR row was
/// counted or none of them moved.
fn msr_table(traced: &mut Sample, isa: Isa, seconds: f64, notes: Vec<String>) -> Option<ExitProfile> {
    let msr_rows: Vec<String> = traced.keys().filter(|name| name.starts_with("0x")).cloned().collect();
    let taken: Sample =
        msr_rows.iter().filter_map(|name| Some((name.clone(), traced.remove(name)?))).collect();
    if !taken.values().flatten().any(|&n| n > 0) {
        return None;
    }
    let mut table = profile(MSR_TABLE_EVENT, isa, rows(&taken), seconds, notes);
    table.rows.retain(|row| row.count > 0);
    // The counters are read one after another while the guest runs on, so a row read after
    // `kvm_msr` can count a few exits more than it did.
    let shown = saturating_sum(table.rows.iter().map(|row| row.count));
    table.declared_samples = traced.get("kvm_msr").map(|all| saturating_sum(all.iter().copied()).max(shown));
    Some(table)
}

/// The exit-reason profile of what was traced between two readings of the handling times
/// (cumulative per vCPU and reason, [`tracing::DrainedExitTrace::timings`]), as `exits record`
/// makes it from `kvm_exit`/`kvm_entry`, with each reason's count per vCPU: the profile the EXIT
/// rules read handling time from. None when no exit was traced between them.
pub fn exit_time_profile(
    first: &tracing::VcpuTimings,
    last: &tracing::VcpuTimings,
    seconds: f64,
) -> Option<ExitProfile> {
    let mut by_reason: BTreeMap<&str, ExitRow> = BTreeMap::new();
    for ((vcpu, reason), now) in last {
        let before = first.get(&(*vcpu, reason.clone()));
        let count = now.count.saturating_sub(before.map_or(0, |b| b.count));
        let time_us = (now.total_us - before.map_or(0.0, |b| b.total_us)).max(0.0);
        if count == 0 {
            continue;
        }
        let row = by_reason
            .entry(reason)
            .or_insert_with(|| ExitRow { time_us: Some(0.0), ..ExitRow::count_only(reason.clone(), 0, 0) });
        row.count += count;
        row.time_us = Some(row.time_us.unwrap_or(0.0) + time_us);
        if row.per_vcpu.len() <= *vcpu {
            row.per_vcpu.resize(vcpu + 1, 0);
        }
        row.per_vcpu[*vcpu] += count;
    }
    let rows: Vec<ExitRow> = by_reason
        .into_values()
        .map(|row| ExitRow { mean_us: row.time_us.map(|t| t / row.count as f64), ..row })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let isa = guess_isa(&names);
    Some(profile(EXIT_PAIRS_EVENT, isa, rows, seconds, Vec::new()))
}

/// The event of the profile made of `kvm_exit`/`kvm_entry` pairs.
const EXIT_PAIRS_EVENT: &str = "VM-EXIT (kvm_exit/kvm_entry)";

fn connect(target: &Target, deadline: Option<Instant>) -> Result<Monitor, RecordError> {
    let libvirt = |connect: Option<&str>| match deadline {
        Some(deadline) => Libvirt::new(connect).within(deadline.saturating_duration_since(Instant::now())),
        None => Libvirt::new(connect),
    };
    match target {
        Target::Qmp(path) => Monitor::socket_until(path, deadline),
        Target::Domain { name, connect } => Ok(Monitor::libvirt(libvirt(connect.as_deref()), name.clone())),
        Target::Pid(pid) => {
            let fail = |why: String| RecordError::Process { pid: *pid, why };
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| fail(e.to_string()))?;
            let argv: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            match monitor_from_argv(&argv) {
                Some(MonitorAddress::Socket(path)) => Monitor::socket_until(&path, deadline),
                Some(MonitorAddress::LibvirtDomain(name)) => Ok(Monitor::libvirt(libvirt(None), name)),
                None => Err(fail(
                    "no QMP monitor on its command line (-qmp unix:PATH or -mon mode=control); record it with --qmp or --domain".into(),
                )),
            }
        }
    }
}

fn vcpus(monitor: &mut Monitor) -> Result<Vec<Vcpu>, RecordError> {
    let reply = monitor.execute("query-cpus-fast", None)?;
    let mut vcpus: Vec<(i64, Vcpu)> = reply
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|cpu| {
            Some((
                cpu.get("cpu-index")?.as_i64()?,
                Vcpu {
                    thread_id: i32::try_from(cpu.get("thread-id")?.as_i64()?).ok()?,
                    qom_path: cpu.get("qom-path")?.as_str()?.to_string(),
                },
            ))
        })
        .collect();
    vcpus.sort_by_key(|(index, _)| *index);
    if vcpus.is_empty() {
        return Err(RecordError::Unusable(format!("{}: query-cpus-fast lists no vCPUs", monitor.describe())));
    }
    Ok(vcpus.into_iter().map(|(_, vcpu)| vcpu).collect())
}

/// Names of the cumulative KVM vCPU statistics; instants, peaks and histograms do not subtract.
fn cumulative_stats(monitor: &mut Monitor) -> Option<Vec<String>> {
    let schemas = monitor.execute("query-stats-schemas", Some(json!({ "provider": "kvm" }))).ok()?;
    let names: Vec<String> = schemas
        .as_array()?
        .iter()
        .filter(|schema| schema.get("target").and_then(Value::as_str) == Some("vcpu"))
        .flat_map(|schema| schema.get("stats").and_then(Value::as_array).into_iter().flatten())
        .filter(|stat| stat.get("type").and_then(Value::as_str) == Some("cumulative"))
        .filter_map(|stat| Some(stat.get("name")?.as_str()?.to_string()))
        .collect();
    (!names.is_empty()).then_some(names)
}

fn sample_stats(
    monitor: &mut Monitor,
    vcpus: &[Vcpu],
    cumulative: Option<&[String]>,
) -> Result<Sample, RecordError> {
    let reply = monitor
        .execute("query-stats", Some(json!({ "target": "vcpu", "providers": [{ "provider": "kvm" }] })))?;
    let order: Vec<&str> = vcpus.iter().map(|v| v.qom_path.as_str()).collect();
    let mut stats = vcpu_stats(&reply, &order);
    if let Some(cumulative) = cumulative {
        stats.retain(|name, _| cumulative.iter().any(|c| c == name));
    }
    Ok(stats)
}

fn difference(first: &Sample, last: &Sample) -> Sample {
    last.iter()
        .map(|(name, now)| {
            let before = first.get(name);
            let per_vcpu = now
                .iter()
                .enumerate()
                .map(|(i, value)| value.saturating_sub(before.and_then(|b| b.get(i).copied()).unwrap_or(0)))
                .collect();
            (name.clone(), per_vcpu)
        })
        .collect()
}

fn rows(sample: &Sample) -> Vec<ExitRow> {
    sample
        .iter()
        .map(|(name, per_vcpu)| ExitRow {
            per_vcpu: per_vcpu.clone(),
            ..ExitRow::count_only(name.clone(), saturating_sum(per_vcpu.iter().copied()), 0)
        })
        .collect()
}

fn profile(event: &str, isa: Isa, rows: Vec<ExitRow>, duration_s: f64, notes: Vec<String>) -> ExitProfile {
    ExitProfile {
        isa,
        rows,
        duration_s: Some(duration_s),
        notes,
        ..ExitProfile::new("kvmtune record", event)
    }
}

fn host_isa() -> Isa {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if cpuinfo.contains("AuthenticAMD") || cpuinfo.contains("HygonGenuine") {
        Isa::Svm
    } else if cpuinfo.contains("GenuineIntel") {
        Isa::Vmx
    } else {
        Isa::Unknown
    }
}

fn rates(previous: &Sample, current: &Sample, seconds: f64) -> Vec<(String, f64)> {
    let mut rates: Vec<(String, f64)> = difference(previous, current)
        .into_iter()
        .map(|(name, per_vcpu)| (name, saturating_sum(per_vcpu.into_iter()) as f64 / seconds.max(1e-9)))
        .filter(|(name, rate)| *rate > 0.0 && !crate::exits::reasons::is_event(name))
        .collect();
    rates.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    rates
}

pub fn record(
    target: &Target,
    options: &RecordOptions,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Recording, RecordError> {
    if options.interval.is_zero() || options.duration < options.interval {
        return Err(RecordError::Unusable(
            "the interval must be more than 0 and at most the duration".into(),
        ));
    }
    let mut monitor = connect(target, None)?;
    let source = monitor.describe();
    let vcpus = vcpus(&mut monitor)?;
    let threads: Vec<i32> = vcpus.iter().map(|v| v.thread_id).collect();
    let cumulative = cumulative_stats(&mut monitor);
    let mut notes = Vec::new();
    let mut trace_notes = Vec::new();

    let tracefs = tracing::tracefs();
    let (counters, mut exit_trace) = match &tracefs {
        None => {
            trace_notes.push("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing), so there are no tracepoint counts".to_string());
            (None, None)
        }
        Some(tracefs) => {
            let counters = tracing::Counters::open(tracefs, &threads, &mut trace_notes);
            let trace = match tracing::ExitTrace::start(tracefs, &threads) {
                Ok(trace) => Some(trace),
                Err(why) => {
                    trace_notes.push(format!("cannot trace kvm_exit/kvm_entry: {why}"));
                    None
                }
            };
            ((!counters.is_empty()).then_some(counters), trace)
        }
    };
    let sample_all = |monitor: &mut Monitor| -> Result<(Sample, Sample), RecordError> {
        let stats = sample_stats(monitor, &vcpus, cumulative.as_deref())?;
        let traced = counters.as_ref().map(|c| c.read().into_iter().collect()).unwrap_or_default();
        Ok((stats, traced))
    };

    let start = Instant::now();
    let first = sample_all(&mut monitor)?;
    if first.0.is_empty() {
        return Err(RecordError::Unusable(format!(
            "{source}: query-stats returned no KVM vCPU statistics (is the VM running under -accel kvm, QEMU 7.1 or later?)"
        )));
    }
    let mut last = first.clone();
    let mut last_at = Instant::now();
    let mut elapsed = 0.0;
    while start.elapsed() < options.duration && !options.stopped() {
        let remaining = options.duration.saturating_sub(start.elapsed());
        options.wait(options.interval.min(remaining));
        if let Some(trace) = exit_trace.as_mut() {
            trace.drain();
        }
        match sample_all(&mut monitor) {
            Ok(now) => {
                let seconds = last_at.elapsed().as_secs_f64();
                let mut shown = rates(&last.0, &now.0, seconds);
                shown.extend(rates(&last.1, &now.1, seconds));
                last = now;
                last_at = Instant::now();
                elapsed = (last_at - start).as_secs_f64();
                on_progress(&Progress {
                    elapsed_s: elapsed,
                    duration_s: options.duration.as_secs_f64(),
                    rates: shown,
                });
            }
            Err(e) => {
                notes.push(format!("recording stopped after {elapsed:.1} s: {e}"));
                break;
            }
        }
    }
    if options.stopped() && elapsed > 0.0 {
        notes.push(format!("recording ended early, after {elapsed:.1} s, when asked to stop"));
    }
    if elapsed == 0.0 && options.stopped() {
        return Err(RecordError::Unusable(format!("{source}: asked to stop before a second sample")));
    }
    if elapsed == 0.0 {
        return Err(RecordError::Unusable(format!(
            "{source}: the VM stopped before a second sample: {}",
            notes.join("; ")
        )));
    }

    let isa = host_isa();
    let stats = difference(&first.0, &last.0);
    let total_exits = stats.get("exits").cloned();
    let mut profiles =
        vec![profile("KVM vCPU stats (QMP query-stats)", isa, rows(&stats), elapsed, notes.clone())];

    let mut traced = difference(&first.1, &last.1);
    let msrs = msr_table(&mut traced, isa, elapsed, notes.clone());
    let kvm_exit_fired = traced.get("kvm_exit").is_some_and(|v| v.iter().any(|&n| n > 0));
    if counters.is_some() && !kvm_exit_fired {
        trace_notes.push(
            "the kvm_exit tracepoint never fired on this host (its KVM, e.g. PVM, does not emit it): no per-reason exit counts or handling times; the tracepoint counters and KVM stats stand in".to_string(),
        );
    }
    if !traced.is_empty() {
        // Shares are of all exits, which only KVM's own counter knows.
        if let Some(exits) = total_exits {
            traced.insert("exits".to_string(), exits);
        }
        let mut tracepoint_rows = rows(&traced);
        tracepoint_rows.sort_by_key(|row| row.name != "exits");
        let mut tracepoint_notes = notes.clone();
        tracepoint_notes.extend(trace_notes.iter().cloned());
        profiles.push(profile("KVM tracepoints", isa, tracepoint_rows, elapsed, tracepoint_notes));
    } else {
        profiles[0].notes.extend(trace_notes);
    }
    if let Some(mut trace) = exit_trace.take() {
        trace.drain();
        let reason_rows = trace.pairs.rows();
        if !reason_rows.is_empty() {
            let names: Vec<&str> = reason_rows.iter().map(|r| r.name.as_str()).collect();
            let isa = guess_isa(&names);
            profiles.push(profile(EXIT_PAIRS_EVENT, isa, reason_rows, elapsed, notes));
        }
    }
    profiles.extend(msrs);
    Ok(Recording { profiles, source })
}
