//! `kvmtune exits`: analyze, record and compare VM-exit profiles.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use kvmtune::analysis::Severity;
use kvmtune::analysis::check::CheckOptions;
use kvmtune::analysis::exit_diagnosis::diagnose_input;
use kvmtune::analysis::exit_patterns::ExitContext;
use kvmtune::analysis::exit_rules::Guest;
use kvmtune::config::model::VmConfig;
use kvmtune::exits::ExitProfile;
use kvmtune::exits::record::{Progress, RecordOptions, Target};
use kvmtune::host::HostFacts;
use kvmtune::output::exits_text;
use kvmtune::values::SourceText;

use crate::args::{Format, HostArgs, WorkloadArg, parse_duration};
use crate::{Outcome, print_out};

#[derive(Subcommand)]
pub(crate) enum ExitsCommand {
    /// Read exit statistics (perf kvm stat report/live, kvm_stat, virsh domstats --vcpu, QMP
    /// query-stats, bcc's kvmexit), show them like perf, and name their causes. Exit code 1 when
    /// a warning stands out.
    Analyze {
        file: PathBuf,
        /// The VM's config (libvirt XML, QEMU command line or Proxmox conf): findings then point
        /// at its lines.
        #[arg(long, value_name = "VM")]
        config: Option<PathBuf>,
        #[command(flatten)]
        host: HostArgs,
        /// What the VM is for, as `check --workload` takes it (and by default infers it from
        /// the config): some findings in the config depend on it.
        #[arg(long, value_enum)]
        workload: Option<WorkloadArg>,
        /// The guest the exits are of: findings name its causes and cures. Default: what
        /// --config tells (a libosinfo id, or Hyper-V enlightenments for Windows), else both.
        #[arg(long, value_enum)]
        guest: Option<Guest>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Record a running VM's exit statistics: KVM's per-vCPU stats over QMP, plus tracepoint
    /// counts and (where `kvm_exit` fires) per-reason handling times; then analyze them.
    #[command(group(clap::ArgGroup::new("vm").required(true).args(["domain", "pid", "qmp"])))]
    Record {
        /// A libvirt domain (QMP through `virsh qemu-monitor-command`).
        #[arg(long)]
        domain: Option<String>,
        /// libvirt connection URI for --domain.
        #[arg(long, requires = "domain")]
        connect: Option<String>,
        /// A QEMU process; its QMP socket is taken from its command line.
        #[arg(long)]
        pid: Option<i32>,
        /// A QMP unix socket (`-qmp unix:PATH,server=on,wait=off`).
        #[arg(long, value_name = "SOCKET")]
        qmp: Option<PathBuf>,
        /// How long to record: `30`, `30s`, `500ms`, `2m`.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// How often to sample and show progress.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Save the profiles as JSON (read back by `analyze` and `compare`).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// No progress lines on stderr.
        #[arg(long)]
        quiet: bool,
        /// The guest the exits are of: findings name its causes and cures. Default: what
        /// --config tells (a libosinfo id, or Hyper-V enlightenments for Windows), else both.
        #[arg(long, value_enum)]
        guest: Option<Guest>,
    },
    /// Compare two profiles of the same VM: per-reason deltas, ratios and a verdict.
    Compare {
        before: PathBuf,
        after: PathBuf,
        /// Also write a self-contained HTML report with a chart to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// The guest the exits are of (default: both readings).
        #[arg(long, value_enum, default_value_t = Guest::Unknown)]
        guest: Guest,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

fn read_profiles(path: &Path) -> anyhow::Result<Vec<kvmtune::exits::ExitProfile>> {
    let text = kvmtune::config::inputs::read_input(path).map_err(anyhow::Error::msg)?;
    Ok(kvmtune::exits::parse(&path.display().to_string(), &text)?)
}

/// What `exits analyze` reads besides the profiles: the VM's config (`--config`, checked with
/// these host facts and workload) and the host's facts (`--host`), for the exit patterns.
struct AnalysisInputs<'a> {
    config: Option<&'a Path>,
    host: &'a HostArgs,
    workload: Option<WorkloadArg>,
}

/// The config's own diagnostics, and the config and host facts the exit patterns read.
fn config_context(
    inputs: Option<&AnalysisInputs>,
) -> anyhow::Result<(Vec<kvmtune::analysis::check::Diagnostic>, Option<VmConfig>, Option<HostFacts>)> {
    let Some(AnalysisInputs { config, host, workload }) = inputs else {
        return Ok((Vec::new(), None, None));
    };
    let host = host.load()?;
    let Some(config_path) = config else { return Ok((Vec::new(), None, host)) };
    let text = kvmtune::config::inputs::read_input(config_path).map_err(anyhow::Error::msg)?;
    let name = config_path.display().to_string();
    let vm = kvmtune::config::read(&name, &text)?;
    let source = SourceText::new(name, text);
    let options =
        CheckOptions { host: host.as_ref(), workload: workload.map(Into::into), ..CheckOptions::default() };
    let diagnostics = kvmtune::analysis::check::check(&vm, &source, &options).diagnostics;
    Ok((diagnostics, Some(vm), host))
}

/// The table and diagnosis of each profile; exit code 1 when a warning stands out.
fn report_profiles(
    label: &str,
    profiles: &[ExitProfile],
    inputs: Option<&AnalysisInputs>,
    guest: Option<Guest>,
    format: Format,
) -> anyhow::Result<Outcome> {
    let (config_diagnostics, vm, host) = config_context(inputs)?;
    let guest = guest.or(vm.as_ref().map(Guest::of_config)).unwrap_or_default();
    let context = ExitContext { config: vm.as_ref(), host: host.as_ref(), guest };
    let config_label = inputs.and_then(|i| i.config).map(|c| c.display().to_string());
    let mut any_warning = false;
    let mut documents = Vec::new();
    let mut text = String::new();
    for (profile, findings) in profiles.iter().zip(diagnose_input(profiles, &context)) {
        any_warning |= findings.iter().any(|f| f.severity >= Severity::Warning);
        text.push_str(&exits_text::render_profile(label, profile));
        text.push('\n');
        text.push_str(&exits_text::render_findings(&findings, &config_diagnostics, config_label.as_deref()));
        documents.push(serde_json::json!({ "profile": profile, "findings": findings }));
    }
    match format {
        Format::Text => print_out(&text)?,
        Format::Json => print_out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({
                "profiles": documents,
                "config_diagnostics": config_diagnostics,
            }))?
        ))?,
    }
    Ok(if any_warning { Outcome::Findings } else { Outcome::Clean })
}

fn show_progress(progress: &Progress, to_terminal: bool) {
    let rates: Vec<String> = progress
        .rates
        .iter()
        .take(5)
        .map(|(name, rate)| format!("{name} {}", exits_text::human_rate(*rate)))
        .collect();
    let line = format!("[{:5.1}/{:.0} s] {}", progress.elapsed_s, progress.duration_s, rates.join(", "));
    let mut stderr = std::io::stderr().lock();
    let _ = if to_terminal { write!(stderr, "\r\x1b[K{line}") } else { writeln!(stderr, "{line}") };
    let _ = stderr.flush();
}

pub(crate) fn run(command: ExitsCommand) -> anyhow::Result<Outcome> {
    match command {
        ExitsCommand::Analyze { file, config, host, workload, guest, format } => {
            let profiles = read_profiles(&file)?;
            let inputs = AnalysisInputs { config: config.as_deref(), host: &host, workload };
            report_profiles(&file.display().to_string(), &profiles, Some(&inputs), guest, format)
        }
        ExitsCommand::Record {
            domain,
            connect,
            pid,
            qmp,
            duration,
            interval,
            output,
            format,
            quiet,
            guest,
        } => {
            let target = match (domain, pid, qmp) {
                (Some(name), _, _) => Target::Domain { name, connect },
                (_, Some(pid), _) => Target::Pid(pid),
                (_, _, Some(socket)) => Target::Qmp(socket),
                _ => unreachable!("clap requires one of --domain, --pid, --qmp"),
            };
            let to_terminal = std::io::stderr().is_terminal();
            let options = RecordOptions::new(duration, interval);
            // A signal ends the recording early, with its report, and closes its tracefs
            // instance, which would otherwise outlive the process, still tracing.
            let stop = options.stop.clone();
            ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::Relaxed))
                .context("cannot handle SIGINT and SIGTERM")?;
            let recording = kvmtune::exits::record::record(&target, &options, &mut |progress| {
                if !quiet {
                    show_progress(progress, to_terminal);
                }
            })?;
            if !quiet && to_terminal {
                eprintln!();
            }
            if let Some(path) = &output {
                let json = serde_json::to_string_pretty(&recording.profiles)?;
                std::fs::write(path, json + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            report_profiles(&recording.source, &recording.profiles, None, guest, format)
        }
        ExitsCommand::Compare { before, after, report, guest, format } => {
            let before_profiles = read_profiles(&before)?;
            let after_profiles = read_profiles(&after)?;
            let comparisons =
                kvmtune::analysis::exit_compare::compare_all(&before_profiles, &after_profiles, guest);
            if comparisons.is_empty() {
                anyhow::bail!("no profile to compare");
            }
            if let Some(path) = &report {
                let html = kvmtune::output::exits_html::render_report(
                    &before.display().to_string(),
                    &after.display().to_string(),
                    &comparisons,
                );
                std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))?;
            }
            match format {
                Format::Text => print_out(
                    &comparisons.iter().map(exits_text::render_comparison).collect::<Vec<_>>().join("\n"),
                )?,
                Format::Json if comparisons.len() == 1 => {
                    print_out(&format!("{}\n", serde_json::to_string_pretty(&comparisons[0])?))?
                }
                Format::Json => print_out(&format!("{}\n", serde_json::to_string_pretty(&comparisons)?))?,
            }
            Ok(Outcome::Clean)
        }
    }
}
