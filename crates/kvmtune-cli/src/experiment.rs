//! `kvmtune experiment`: run variants of a VM in rounds and say which is measurably faster.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args};
use kvmtune::analysis::exit_rules::Guest;
use kvmtune::analysis::experiment::Goal;
use kvmtune::experiment::{PrivateTempDir, Settings, Step, Variant, VariantRun};

use crate::args::{Format, parse_duration};
use crate::{Outcome, print_out};

#[derive(Args)]
#[command(group(ArgGroup::new("vm").required(true).args(["qemu"])))]
pub(crate) struct ExperimentArgs {
    /// Plain QEMU: each --variant is NAME=SCRIPT, an executable that execs QEMU in the
    /// foreground with "$@" appended (kvmtune puts its QMP monitor there).
    #[arg(long)]
    qemu: bool,
    /// A variant, NAME=SCRIPT (two or more).
    #[arg(long = "variant", value_name = "NAME=SCRIPT", value_parser = parse_variant, required = true)]
    variants: Vec<(String, PathBuf)>,
    /// How long each VM runs before it is recorded.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    warmup: Duration,
    /// How long each VM is recorded.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Rounds; each runs every variant once, in a random order. Fewer than 3 give no interval.
    #[arg(long, default_value_t = 5)]
    repeat: u32,
    /// A shell command run for the measured period of each round (a benchmark started in the
    /// guest through its agent or ssh): its exit status and output are kept, and the number on
    /// its last line is a measure too. It sees KVMTUNE_QMP, KVMTUNE_VM_PID and KVMTUNE_ROUND.
    #[arg(long, value_name = "CMD")]
    workload: Option<String>,
    /// Whether the workload's number is better higher (a score, frames per second) or lower
    /// (a time).
    #[arg(long, value_enum, default_value_t = Goal::Higher)]
    workload_goal: Goal,
    /// The random order's seed, to replay an experiment (printed with every result).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep each round's recording (readable by `exits analyze`/`compare`), VM log and
    /// workload output in DIR; by default they go to a temporary directory that is removed.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Also write the result as one self-contained HTML page (each variant's rounds and
    /// interval per measure, drawn; the per-kind breakdown; the diagnoses).
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// The guest the exits are of, for each variant's diagnosis.
    #[arg(long, value_enum, default_value_t = Guest::Unknown)]
    guest: Guest,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn parse_variant(text: &str) -> Result<(String, PathBuf), String> {
    let (name, script) = text.split_once('=').ok_or_else(|| format!("`{text}` is not NAME=SCRIPT"))?;
    if script.is_empty() {
        return Err(format!("`{text}` names no script"));
    }
    Ok((name.to_string(), PathBuf::from(script)))
}

pub(crate) fn run(args: ExperimentArgs) -> anyhow::Result<Outcome> {
    let variants: Vec<Variant> = args
        .variants
        .iter()
        .map(|(name, script)| Variant { name: name.clone(), run: VariantRun::QemuScript(script.clone()) })
        .collect();
    let seed = args.seed.unwrap_or_else(random_seed);
    let temporary = match &args.output {
        Some(_) => None,
        None => Some(PrivateTempDir::create("kvmtune-experiment-out")?),
    };
    let output = match (&args.output, &temporary) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temporary)) => temporary.path().to_path_buf(),
        (None, None) => unreachable!("a temporary directory is made without --output"),
    };
    let settings = Settings {
        warmup: args.warmup,
        duration: args.duration,
        repeat: args.repeat,
        seed,
        workload: args.workload.clone(),
        workload_goal: args.workload_goal,
        guest: args.guest,
        output,
    };
    kvmtune::experiment::check(&variants, &settings)?;
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = Arc::clone(&stop);
    ctrlc::set_handler(move || on_signal.store(true, Ordering::Relaxed))
        .context("cannot handle SIGINT and SIGTERM")?;
    let to_terminal = std::io::stderr().is_terminal();
    let mut result = kvmtune::experiment::run(&variants, &settings, &stop, &mut |step| {
        if !args.quiet {
            show_step(step, to_terminal);
        }
    })?;
    if !args.quiet && to_terminal {
        eprintln!();
    }
    if temporary.is_some() {
        for round in result.variants.iter_mut().flat_map(|v| v.rounds.iter_mut()) {
            round.recording = None;
        }
    }
    if let Some(path) = &args.report {
        std::fs::write(path, kvmtune::output::experiment_html::render_report(&result))
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    match args.format {
        Format::Text => print_out(&kvmtune::output::experiment_text::render(&result))?,
        Format::Json => print_out(&(serde_json::to_string_pretty(&result)? + "\n"))?,
    }
    Ok(Outcome::Clean)
}

fn show_step(step: &Step, to_terminal: bool) {
    let left = step.left_s.round() as u64;
    let line = format!(
        "round {}/{} · {} · {} · about {}m{:02}s left",
        step.round,
        step.rounds,
        kvmtune::values::escape::terminal(step.variant),
        step.phase,
        left / 60,
        left % 60
    );
    let mut stderr = std::io::stderr().lock();
    let _ = if to_terminal { write!(stderr, "\r\x1b[K{line}") } else { writeln!(stderr, "{line}") };
    let _ = stderr.flush();
}

/// A seed nobody chose: the clock's nanoseconds mixed with the process id.
fn random_seed() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}
