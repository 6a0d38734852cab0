//! `kvmtune experiment`: runs each variant of a VM in rounds, in a seeded random order, records
//! its exits with the recorder `exits record` uses, and hands the rounds to the statistics of
//! [`crate::analysis::experiment`].
//!
//! A round of one variant: start the VM, wait out the warm-up, record for the duration (with the
//! workload command running beside it when there is one), stop the VM. Every variant is checked
//! before the first round starts, so that a mistake costs nothing.

pub mod libvirt;
pub mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use thiserror::Error;

use crate::analysis::exit_diagnosis::diagnose_input;
use crate::analysis::exit_patterns::ExitContext;
use crate::analysis::exit_rules::{ExitFinding, Guest};
use crate::analysis::experiment::{Goal, MeasureSummary, RoundMeasure, summarize};
use crate::exits::model::ExitProfile;
use crate::exits::record::{RecordError, RecordOptions, Target, record};

#[derive(Debug, Error)]
pub enum ExperimentError {
    /// A variant that cannot run, found before anything started.
    #[error("variant {variant}: {why}")]
    Variant { variant: String, why: String },
    #[error("{0}")]
    Settings(String),
    /// Something failed while the rounds ran; whatever was started has been stopped.
    #[error("round {round}, variant {variant}, {phase}: {why}")]
    Round { round: u32, variant: String, phase: Phase, why: String },
    #[error("stopped when asked to, in round {round}; whatever was started has been stopped")]
    Interrupted { round: u32 },
    #[error("{path}: {why}")]
    Output { path: PathBuf, why: String },
    /// The journal of the domain's original definition.
    #[error("the experiment's journal: {0}")]
    Journal(String),
}

/// How one variant's VM is run.
#[derive(Debug, Clone)]
pub enum VariantRun {
    /// An executable that execs QEMU in the foreground with `"$@"` appended, where kvmtune
    /// puts its QMP monitor.
    QemuScript(PathBuf),
    /// A whole definition of the experiment's libvirt domain ([`Settings::domain`]).
    DomainXml(String),
}

#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub run: VariantRun,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub warmup: Duration,
    pub duration: Duration,
    pub repeat: u32,
    pub seed: u64,
    /// A shell command run for the measured period of each round (`sh -c`).
    pub workload: Option<String>,
    pub workload_goal: Goal,
    /// The guest the exits are of, for each variant's diagnosis.
    pub guest: Guest,
    /// Where each round's recording, VM log and workload output are kept.
    pub output: PathBuf,
    /// The libvirt domain whose definitions the variants are, and the journal directory its
    /// original definition is kept in while they run.
    pub domain: Option<(libvirt::Domain, PathBuf)>,
}

/// What a round of a variant is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Defining a libvirt domain's variant.
    Define,
    Start,
    Warmup,
    Record,
    Stop,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Define => "defining the variant",
            Phase::Start => "starting the VM",
            Phase::Warmup => "warming up",
            Phase::Record => "recording",
            Phase::Stop => "stopping the VM",
        })
    }
}

/// Progress, as the rounds go.
#[derive(Debug, Clone)]
pub struct Step<'a> {
    pub round: u32,
    pub rounds: u32,
    pub variant: &'a str,
    pub phase: Phase,
    /// Seconds the whole experiment still needs, as far as it can be told (VM start and stop
    /// times are guessed from the rounds so far).
    pub left_s: f64,
}

/// What the workload command did in one round.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRun {
    pub exit_code: Option<i32>,
    /// Its standard output, at most the last 64 KiB.
    pub output: String,
    /// The number on its last non-empty line, if it printed one.
    pub figure: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    pub round: u32,
    /// 1-based place of this variant in its round's order.
    pub position: u32,
    pub measure: RoundMeasure,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRun>,
    /// The round's recording, as `exits record --output` saves it; None once its directory is
    /// gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<PathBuf>,
    #[serde(skip)]
    pub profiles: Vec<ExitProfile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    pub name: String,
    pub rounds: Vec<RoundResult>,
    /// The diagnosis of its median round (by all exits per second).
    pub findings: Vec<ExitFinding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExperimentResult {
    pub seed: u64,
    pub repeat: u32,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Each round's order of variants, by name.
    pub order: Vec<Vec<String>>,
    pub variants: Vec<VariantResult>,
    pub summaries: Vec<MeasureSummary>,
    /// What the rounds cannot tell (too few rounds, a workload that printed no figure, ...).
    pub cautions: Vec<String>,
}

/// The order of the variants in each round: a shuffle per round from `seed`.
pub fn round_orders(variants: usize, repeat: u32, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..repeat)
        .map(|_| {
            let mut order: Vec<usize> = (0..variants).collect();
            order.shuffle(&mut rng);
            order
        })
        .collect()
}

/// Refuses what cannot run, before anything starts: too few or duplicate variants, names that
/// are not file-name safe, scripts that are not executable files, settings out of range.
pub fn check(variants: &[Variant], settings: &Settings) -> Result<(), ExperimentError> {
    if variants.len() < 2 {
        return Err(ExperimentError::Settings("an experiment needs at least two variants".into()));
    }
    for (i, variant) in variants.iter().enumerate() {
        let refuse = |why: String| ExperimentError::Variant { variant: variant.name.clone(), why };
        if variant.name.is_empty()
            || !variant.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || variant.name.starts_with('.')
        {
            return Err(refuse("a name is letters, digits, '-', '_' and '.', not starting with '.'".into()));
        }
        if variants[..i].iter().any(|v| v.name == variant.name) {
            return Err(refuse("named twice".into()));
        }
        match &variant.run {
            VariantRun::QemuScript(script) => qemu::check_script(script).map_err(refuse)?,
            VariantRun::DomainXml(xml) => match &settings.domain {
                Some((domain, _)) => domain.check_variant(xml).map_err(refuse)?,
                None => return Err(refuse("a domain's definition, but no --domain".into())),
            },
        }
    }
    if settings.repeat == 0 {
        return Err(ExperimentError::Settings("--repeat must be at least 1".into()));
    }
    if settings.duration < Duration::from_secs(1) {
        return Err(ExperimentError::Settings("--duration must be at least 1s".into()));
    }
    Ok(())
}

/// A started VM of one variant, stopped on drop whatever happened.
trait RunningVm {
    fn target(&self) -> Target;
    /// Environment for the workload command.
    fn environment(&self) -> Vec<(String, String)>;
    fn stop(&mut self) -> Result<(), String>;
}

fn start(
    variant: &Variant,
    settings: &Settings,
    log: &Path,
    runtime: &Path,
) -> Result<Box<dyn RunningVm>, String> {
    match &variant.run {
        VariantRun::DomainXml(_) => {
            let (domain, _) = settings.domain.as_ref().ok_or("no domain")?;
            Ok(Box::new(domain.start()?) as Box<dyn RunningVm>)
        }
        VariantRun::QemuScript(script) => {
            let qmp = runtime.join(format!("{}.qmp", variant.name));
            Ok(Box::new(qemu::ScriptVm::start(script, log, &qmp)?) as Box<dyn RunningVm>)
        }
    }
}

/// A new directory under the system's temporary one that only this user can enter (0700),
/// removed with all it holds when dropped: the VMs' monitor sockets (short paths: a socket's is
/// at most 107 bytes), a variant's file and, without `--output`, a run's files.
pub fn private_temp_dir(prefix: &str) -> Result<tempfile::TempDir, ExperimentError> {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .map_err(|e| ExperimentError::Output { path: std::env::temp_dir(), why: e.to_string() })
}

/// Runs the experiment. `stop` ends it early (Ctrl-C): the VM of the round is stopped and an
/// error returned. Every VM started is stopped before this returns, also on error.
pub fn run(
    variants: &[Variant],
    settings: &Settings,
    stop: &Arc<AtomicBool>,
    on_step: &mut dyn FnMut(&Step),
) -> Result<ExperimentResult, ExperimentError> {
    check(variants, settings)?;
    let Some((domain, journal_dir)) = &settings.domain else {
        return run_rounds(variants, settings, stop, on_step);
    };
    let host = crate::host::Host::live();
    let journal_error = |e: crate::hostchange::journal::JournalError| ExperimentError::Journal(e.to_string());
    let journal = crate::hostchange::journal::Journal::open(journal_dir, &host).map_err(journal_error)?;
    domain.begin(&journal, &host).map_err(|e| match e {
        crate::hostchange::journal::JournalError::AlreadyPrepared(name) => ExperimentError::Journal(format!(
            "domain {name} has the journal of an earlier experiment that did not end (killed?): `kvmtune experiment --recover --domain {name}` gives it its definition back first"
        )),
        other => journal_error(other),
    })?;
    let result = run_rounds(variants, settings, stop, on_step);
    // Whatever happened: the definition as found, the domain running only if it was.
    let restored = libvirt::restore(&journal, &domain.name, &host).map_err(journal_error);
    let result = result?;
    restored?;
    Ok(result)
}

fn run_rounds(
    variants: &[Variant],
    settings: &Settings,
    stop: &Arc<AtomicBool>,
    on_step: &mut dyn FnMut(&Step),
) -> Result<ExperimentResult, ExperimentError> {
    std::fs::create_dir_all(&settings.output)
        .map_err(|e| ExperimentError::Output { path: settings.output.clone(), why: e.to_string() })?;
    let runtime = private_temp_dir("kvmtune-experiment-run")?;
    let orders = round_orders(variants.len(), settings.repeat, settings.seed);
    let mut results: Vec<Vec<RoundResult>> = vec![Vec::new(); variants.len()];
    let total_runs = variants.len() as u32 * settings.repeat;
    let mut overhead_s = 10.0; // VM start and stop, until a round has shown it
    let mut runs_done = 0u32;
    let measured = settings.warmup.as_secs_f64() + settings.duration.as_secs_f64();
    for (round_index, order) in orders.iter().enumerate() {
        let round = round_index as u32 + 1;
        for (position, &index) in order.iter().enumerate() {
            let variant = &variants[index];
            let left = |within: f64| (total_runs - runs_done) as f64 * (measured + overhead_s) - within;
            let started = Instant::now();
            let mut step = |phase: Phase, within: f64| {
                on_step(&Step {
                    round,
                    rounds: settings.repeat,
                    variant: &variant.name,
                    phase,
                    left_s: left(within).max(0.0),
                })
            };
            let result =
                run_one(variant, settings, runtime.path(), (round, position as u32 + 1), stop, &mut step)?;
            results[index].push(result);
            runs_done += 1;
            overhead_s = (started.elapsed().as_secs_f64() - measured).max(0.0);
        }
    }
    let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
    let measures: Vec<Vec<RoundMeasure>> =
        results.iter().map(|rounds| rounds.iter().map(|r| r.measure.clone()).collect()).collect();
    let summaries = summarize(&names, &measures, settings.workload_goal, settings.seed);
    let context = ExitContext { guest: settings.guest, ..ExitContext::default() };
    let variants_out: Vec<VariantResult> = names
        .iter()
        .zip(results)
        .map(|(name, rounds)| VariantResult {
            name: name.clone(),
            findings: median_findings(&rounds, &context),
            rounds,
        })
        .collect();
    let mut cautions = Vec::new();
    if settings.repeat < crate::analysis::experiment::MIN_ROUNDS as u32 {
        cautions.push(format!(
            "{} round{} cannot tell how much a variant's numbers scatter: no confidence interval and no winner (use --repeat {} or more)",
            settings.repeat,
            if settings.repeat == 1 { "" } else { "s" },
            crate::analysis::experiment::MIN_ROUNDS
        ));
    }
    if settings.workload.is_some() {
        let without: usize =
            variants_out.iter().flat_map(|v| &v.rounds).filter(|r| r.measure.workload.is_none()).count();
        if without > 0 {
            cautions.push(format!(
                "the workload printed no number on its last line in {without} run{}: its figure is left out there",
                if without == 1 { "" } else { "s" }
            ));
        }
    }
    Ok(ExperimentResult {
        seed: settings.seed,
        repeat: settings.repeat,
        warmup_s: settings.warmup.as_secs_f64(),
        duration_s: settings.duration.as_secs_f64(),
        order: orders.iter().map(|o| o.iter().map(|&i| names[i].clone()).collect()).collect(),
        variants: variants_out,
        summaries,
        cautions,
    })
}

/// The findings of the round whose all-exits rate is the median of the variant's.
fn median_findings(rounds: &[RoundResult], context: &ExitContext) -> Vec<ExitFinding> {
    let mut by_rate: Vec<&RoundResult> = rounds.iter().collect();
    by_rate.sort_by(|a, b| {
        let rate = |r: &RoundResult| r.measure.exits_per_s.get("exits").copied().unwrap_or(0.0);
        rate(a).total_cmp(&rate(b))
    });
    let Some(middle) = by_rate.get(by_rate.len() / 2) else { return Vec::new() };
    diagnose_input(&middle.profiles, context).into_iter().flatten().collect()
}

fn run_one(
    variant: &Variant,
    settings: &Settings,
    runtime: &Path,
    (round, position): (u32, u32),
    stop: &Arc<AtomicBool>,
    step: &mut dyn FnMut(Phase, f64),
) -> Result<RoundResult, ExperimentError> {
    let fail = |phase: Phase, why: String| ExperimentError::Round {
        round,
        variant: variant.name.clone(),
        phase,
        why,
    };
    let stem = format!("round{round}-{}", variant.name);
    let log = settings.output.join(format!("{stem}.vm.log"));
    if let (VariantRun::DomainXml(xml), Some((domain, _))) = (&variant.run, &settings.domain) {
        step(Phase::Define, 0.0);
        domain.define(xml).map_err(|why| fail(Phase::Define, why))?;
    }
    step(Phase::Start, 0.0);
    let mut vm = start(variant, settings, &log, runtime).map_err(|why| fail(Phase::Start, why))?;
    let outcome = measure(vm.as_mut(), settings, round, stop, &stem, step);
    step(Phase::Stop, settings.warmup.as_secs_f64() + settings.duration.as_secs_f64());
    let stopped = vm.stop();
    let (profiles, workload) = match outcome {
        Ok(done) => done,
        Err(MeasureError::Interrupted) => return Err(ExperimentError::Interrupted { round }),
        Err(MeasureError::Failed(phase, why)) => return Err(fail(phase, why)),
    };
    stopped.map_err(|why| fail(Phase::Stop, why))?;
    let recording = settings.output.join(format!("{stem}.json"));
    let saved = serde_json::to_string_pretty(&profiles).expect("profiles serialize");
    std::fs::write(&recording, saved + "\n")
        .map_err(|e| ExperimentError::Output { path: recording.clone(), why: e.to_string() })?;
    let measure = RoundMeasure::of_recording(round, &profiles, workload.as_ref().and_then(|w| w.figure));
    Ok(RoundResult { round, position, measure, workload, recording: Some(recording), profiles })
}

enum MeasureError {
    Interrupted,
    Failed(Phase, String),
}

fn measure(
    vm: &mut dyn RunningVm,
    settings: &Settings,
    round: u32,
    stop: &Arc<AtomicBool>,
    stem: &str,
    step: &mut dyn FnMut(Phase, f64),
) -> Result<(Vec<ExitProfile>, Option<WorkloadRun>), MeasureError> {
    step(Phase::Warmup, 0.0);
    let until = Instant::now() + settings.warmup;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return Err(MeasureError::Interrupted);
        }
        std::thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(100)));
    }
    step(Phase::Record, settings.warmup.as_secs_f64());
    let workload = match &settings.workload {
        Some(command) => {
            let mut environment = vm.environment();
            environment.push(("KVMTUNE_ROUND".into(), round.to_string()));
            let output = settings.output.join(format!("{stem}.workload.txt"));
            Some(
                Workload::start(command, &environment, &output)
                    .map_err(|why| MeasureError::Failed(Phase::Record, why))?,
            )
        }
        None => None,
    };
    let options = RecordOptions {
        stop: Arc::clone(stop),
        ..RecordOptions::new(settings.duration, Duration::from_secs(1))
    };
    let recorded = record(&vm.target(), &options, &mut |_| {});
    let workload_run = workload.map(|w| w.finish(settings.duration));
    if stop.load(Ordering::Relaxed) {
        return Err(MeasureError::Interrupted);
    }
    let recording = recorded.map_err(|e: RecordError| MeasureError::Failed(Phase::Record, e.to_string()))?;
    Ok((recording.profiles, workload_run))
}

/// The workload command of one round, its output going to a file.
struct Workload {
    child: Child,
    output: PathBuf,
    started: Instant,
}

impl Workload {
    fn start(command: &str, environment: &[(String, String)], output: &Path) -> Result<Self, String> {
        let file = std::fs::File::create(output).map_err(|e| format!("{}: {e}", output.display()))?;
        let mut shell = Command::new("sh");
        shell.arg("-c").arg(command).stdin(Stdio::null()).stdout(file).stderr(Stdio::null());
        shell.envs(environment.iter().map(|(k, v)| (k, v)));
        std::os::unix::process::CommandExt::process_group(&mut shell, 0);
        crate::sys::die_with_parent(&mut shell);
        let child = shell.spawn().map_err(|e| format!("cannot run the workload with sh: {e}"))?;
        Ok(Workload { child, output: output.to_path_buf(), started: Instant::now() })
    }

    /// Waits for the command: it may run past the recording by a minute, then it is killed.
    fn finish(mut self, duration: Duration) -> WorkloadRun {
        let limit = self.started + duration + WORKLOAD_GRACE;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < limit => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = crate::sys::kill_process_group(&self.child);
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        let text = std::fs::read(&self.output).unwrap_or_default();
        let tail = &text[text.len().saturating_sub(64 * 1024)..];
        let output = String::from_utf8_lossy(tail).into_owned();
        WorkloadRun { exit_code: status.and_then(|s| s.code()), figure: last_figure(&output), output }
    }
}

/// How long a workload may run past the recording before it is killed.
const WORKLOAD_GRACE: Duration = Duration::from_secs(60);

/// The number on the last non-empty line: its last word that reads as a number once units and
/// punctuation around it are cut (`fps: 143.2`, `143.2 fps` and `mean 143.2ms` all give 143.2).
pub fn last_figure(output: &str) -> Option<f64> {
    let line = output.lines().rev().find(|l| !l.trim().is_empty())?;
    let number = |word: &str| {
        word.trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != '-').parse::<f64>().ok()
    };
    line.split_whitespace().rev().find_map(number).filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_gives_the_figure() {
        assert_eq!(last_figure("warming\nfps: 143.2\n\n"), Some(143.2));
        assert_eq!(last_figure("143.2 fps"), Some(143.2));
        assert_eq!(last_figure("12 runs, mean 3.5 ms"), Some(3.5));
        assert_eq!(last_figure("done\n"), None);
        assert_eq!(last_figure(""), None);
    }

    #[test]
    fn a_seed_replays_the_order_and_each_round_holds_every_variant() {
        let orders = round_orders(3, 5, 11);
        assert_eq!(orders, round_orders(3, 5, 11));
        assert!(orders.iter().all(|o| {
            let mut sorted = o.clone();
            sorted.sort_unstable();
            sorted == vec![0, 1, 2]
        }));
        assert_ne!(round_orders(3, 5, 11), round_orders(3, 5, 12));
    }
}
