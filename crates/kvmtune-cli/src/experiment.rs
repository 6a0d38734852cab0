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
use kvmtune::config::edit::{ConfigEdit, parse_spelled};
use kvmtune::experiment::libvirt::Domain;
use kvmtune::experiment::{Settings, Step, Variant, VariantRun};

use crate::args::{Format, parse_duration};
use crate::{Outcome, print_out};

#[derive(Args)]
#[command(group(ArgGroup::new("vm").required(true).args(["qemu", "domain", "recover"])))]
pub(crate) struct ExperimentArgs {
    /// Plain QEMU: each --variant is NAME=SCRIPT, an executable that execs QEMU in the
    /// foreground with "$@" appended (kvmtune puts its QMP monitor there).
    #[arg(long, conflicts_with_all = ["domain", "recover"])]
    qemu: bool,
    /// A libvirt domain: its current definition is the variant `baseline`, each --variant is
    /// another (NAME=FILE, NAME=tune or NAME:EDIT,...). Its definition is journaled first and
    /// is the original again at the end.
    #[arg(long, value_name = "NAME")]
    domain: Option<String>,
    /// libvirt connection URI (with --domain).
    #[arg(long, value_name = "URI", requires = "domain")]
    connect: Option<String>,
    /// Shut down a --domain that runs (asking its guest) before the first round and start it
    /// again at the end; without it, a running domain is refused.
    #[arg(long, requires = "domain")]
    restart_ok: bool,
    /// After an experiment was killed: give every domain it left (or the --domain named) its
    /// original definition back, and stop a variant still running.
    #[arg(long, conflicts_with_all = ["variants", "qemu"])]
    recover: bool,
    /// A variant (one or more with --domain, two or more with --qemu): NAME=SCRIPT for --qemu;
    /// for --domain NAME=FILE (a whole domain XML), NAME=tune (the change `tune` would make)
    /// or NAME:EDIT[,EDIT...] (hv-avic=on, hpet=off, hide-hypervisor, hv-stimer=off, ...).
    #[arg(long = "variant", value_name = "SPEC", required_unless_present = "recover")]
    variants: Vec<String>,
    /// The journal directory.
    #[arg(long, value_name = "DIR", default_value = kvmtune::hostchange::journal::EXPERIMENT_DIR, hide = true)]
    journal_dir: PathBuf,
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

fn parse_script_variant(text: &str) -> anyhow::Result<Variant> {
    let (name, script) =
        text.split_once('=').ok_or_else(|| anyhow::anyhow!("`{text}` is not NAME=SCRIPT"))?;
    if script.is_empty() {
        anyhow::bail!("`{text}` names no script");
    }
    Ok(Variant { name: name.to_string(), run: VariantRun::QemuScript(PathBuf::from(script)) })
}

/// A variant of a domain: NAME=FILE, NAME=tune or NAME:EDIT,...
fn parse_domain_variant(text: &str, domain: &Domain) -> anyhow::Result<Variant> {
    let colon = text.find(':');
    let equals = text.find('=');
    if let Some(colon) = colon.filter(|c| equals.is_none_or(|e| *c < e)) {
        let name = &text[..colon];
        let edits: Vec<ConfigEdit> = text[colon + 1..]
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(parse_spelled)
            .collect::<Result<_, _>>()
            .map_err(|why| anyhow::anyhow!("variant {name}: {why}"))?;
        if edits.is_empty() {
            anyhow::bail!("variant {name}: no edits after the colon");
        }
        let xml = domain.edited(&edits).map_err(|why| anyhow::anyhow!("variant {name}: {why}"))?;
        return Ok(Variant { name: name.to_string(), run: VariantRun::DomainXml(xml) });
    }
    let Some(equals) = equals else {
        anyhow::bail!("`{text}` is not NAME=FILE, NAME=tune or NAME:EDIT,...");
    };
    let (name, value) = (&text[..equals], &text[equals + 1..]);
    let xml = if value == "tune" {
        tune_variant(domain).with_context(|| format!("variant {name}: the change tune would make"))?
    } else {
        read_variant_file(value).with_context(|| format!("variant {name}: reading {value}"))?
    };
    Ok(Variant { name: name.to_string(), run: VariantRun::DomainXml(xml) })
}

/// A variant's domain XML, read as root from a path anyone may have named: a regular file
/// (not a FIFO that never ends) of at most 16 MiB, far above any domain definition.
fn read_variant_file(path: &str) -> anyhow::Result<String> {
    const MOST: u64 = 16 << 20;
    let meta = std::fs::metadata(path)?;
    anyhow::ensure!(meta.is_file(), "not a regular file");
    anyhow::ensure!(
        meta.len() <= MOST,
        "{} bytes, more than any domain definition ({MOST} at most)",
        meta.len()
    );
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(MOST + 1).read_to_string(&mut text)?;
    anyhow::ensure!(text.len() as u64 <= MOST, "it grew past {MOST} bytes while read");
    Ok(text)
}

/// The definition `tune` would make of the domain's: its plan for this host with tune's
/// defaults, as edits of the current definition.
fn tune_variant(domain: &Domain) -> anyhow::Result<String> {
    use kvmtune::analysis::planner::{self, PlanRequest, existing};
    let config = kvmtune::config::read(&format!("domain {}", domain.name), &domain.original)?;
    let host = kvmtune::host::probe(&kvmtune::host::Host::live());
    let (vm, _) = existing::request_from_config(&config, &host, None, None);
    let request = PlanRequest {
        windows: config.windows_version().unwrap_or(kvmtune::config::model::WindowsVersion::Win11),
        workload: kvmtune::analysis::Workload::from(crate::args::WorkloadArg::Gaming),
        migratable: config.cpu_migratable(),
        nested: false,
        housekeeping: None,
        vms: vec![vm],
    };
    let plan = planner::plan(&host, &request)?;
    // The domain's side of the plan: the host side (`<kvmtune:host>`, which an installed hook
    // would apply at each start) and manual steps are not part of a variant.
    let actions: Vec<ConfigEdit> = existing::actions(&config, &plan.vms[0])
        .into_iter()
        .filter(|a| !matches!(a, ConfigEdit::SetHostNeeds { .. } | ConfigEdit::Manual { .. }))
        .collect();
    domain.edited(&actions).map_err(anyhow::Error::msg)
}

pub(crate) fn run(args: ExperimentArgs) -> anyhow::Result<Outcome> {
    if args.recover {
        return recover(&args);
    }
    let domain = match &args.domain {
        Some(name) => {
            Some(Domain::find(args.connect.as_deref(), name, args.restart_ok).map_err(anyhow::Error::msg)?)
        }
        None => None,
    };
    let variants: Vec<Variant> = match &domain {
        None => args.variants.iter().map(|v| parse_script_variant(v)).collect::<anyhow::Result<_>>()?,
        Some(domain) => {
            let mut variants = vec![Variant {
                name: "baseline".into(),
                run: VariantRun::DomainXml(domain.original.clone()),
            }];
            for spec in &args.variants {
                let variant = parse_domain_variant(spec, domain)?;
                if variant.name == "baseline" {
                    anyhow::bail!(
                        "variant baseline: the name is the domain's current definition's; choose another"
                    );
                }
                variants.push(variant);
            }
            variants
        }
    };
    let seed = args.seed.unwrap_or_else(random_seed);
    let temporary = match &args.output {
        Some(_) => None,
        None => Some(kvmtune::experiment::private_temp_dir("kvmtune-experiment-out")?),
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
        domain: domain.map(|d| (d, args.journal_dir.clone())),
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

/// `--recover`: every experiment journal (or the named domain's) released.
fn recover(args: &ExperimentArgs) -> anyhow::Result<Outcome> {
    let host = kvmtune::host::Host::live();
    if !args.journal_dir.is_dir() {
        print_out("no experiment to recover\n")?;
        return Ok(Outcome::Clean);
    }
    let journal = kvmtune::hostchange::journal::Journal::open(&args.journal_dir, &host)?;
    let recovered = kvmtune::experiment::libvirt::recover(&journal, args.domain.as_deref(), &host)?;
    if recovered.is_empty() {
        print_out("no experiment to recover\n")?;
    }
    for (domain, released) in recovered {
        let line = match released {
            kvmtune::hostchange::journal::Released::Restored(_) => {
                format!(
                    "domain {}: its original definition is back, no variant runs\n",
                    kvmtune::values::escape::terminal(&domain)
                )
            }
            kvmtune::hostchange::journal::Released::SetAside(path) => format!(
                "domain {}: the journal is from another boot, set aside as {} (nothing changed)\n",
                kvmtune::values::escape::terminal(&domain),
                path.display()
            ),
        };
        print_out(&line)?;
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
