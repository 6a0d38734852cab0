//! The `kvmtune` command. Glue only: parse arguments, call the library, render, pick the exit
//! code (0 clean, 1 findings, 2 error).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kvmtune::analysis::Severity;
use kvmtune::analysis::check::{CheckOptions, CheckReport};
use kvmtune::analysis::fix::Applicability;
use kvmtune::analysis::host_rules;
use kvmtune::analysis::vm_rules::{self, Workload};
use kvmtune::config::model::{SourceFormat, WindowsVersion};
use kvmtune::config::{SourceText, libvirt, libvirt_edit};
use kvmtune::host::{self, HostFacts, HostSource, LiveHost, SnapshotHost};
use kvmtune::output::diagnostics;

mod exits;
mod tune;

#[derive(Parser)]
#[command(name = "kvmtune", version, about = "Make Windows guests on KVM fast, and prove it")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report every host fact a Windows VM's tuning depends on. Reads only; never writes.
    Probe {
        /// Read a snapshot (a directory holding sys/ and proc/, or fsroot/ with them) instead
        /// of the live host.
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Lint a VM config: what costs the Windows guest speed, why, and the fix.
    /// Exit code 1 when there are warnings or errors.
    Check(CheckArgs),
    /// List every check rule.
    Rules,
    /// Explain one rule in full (by id or name).
    Explain { rule: String },
    /// Plan the fastest configuration of a Windows VM for this host, explain every choice, and
    /// emit it (libvirt XML by default). Never changes the host.
    Tune(tune::TuneArgs),
    /// VM-exit statistics: read them, name their causes, compare before and after.
    #[command(subcommand)]
    Exits(exits::ExitsCommand),
}

/// Where an existing VM's config comes from: a file, or libvirt.
#[derive(clap::Args)]
pub(crate) struct VmConfigArgs {
    /// A libvirt domain XML, a QEMU command line (argv file or launch script) or a Proxmox
    /// VM config; the format is recognised from the content.
    #[arg(conflicts_with = "domain")]
    pub(crate) file: Option<PathBuf>,
    /// Read the domain's inactive XML from libvirt (`virsh dumpxml --inactive`).
    #[arg(long)]
    pub(crate) domain: Option<String>,
    /// libvirt connection URI for --domain.
    #[arg(long, requires = "domain")]
    pub(crate) connect: Option<String>,
}

impl VmConfigArgs {
    pub(crate) fn given(&self) -> bool {
        self.file.is_some() || self.domain.is_some()
    }

    /// The config's name and text.
    pub(crate) fn read(&self) -> anyhow::Result<(String, String)> {
        read_config_text(self.file.as_deref(), self.domain.as_deref(), self.connect.as_deref())
    }
}

#[derive(clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    vm: VmConfigArgs,
    #[command(flatten)]
    host: HostArgs,
    /// The guest's Windows version (11, 10, 8, 7, xp, 2016, 2019, 2022, 2025); default: from
    /// the config's libosinfo id.
    #[arg(long)]
    windows: Option<String>,
    #[arg(long, value_enum, default_value_t = WorkloadArg::Gaming)]
    workload: WorkloadArg,
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    format: CheckFormat,
    /// Only these rules (ids or names, comma-separated).
    #[arg(long, value_delimiter = ',')]
    select: Vec<String>,
    /// Apply the safe fixes and write the file back (only what the fixes change is touched).
    #[arg(long, conflicts_with_all = ["diff", "domain"])]
    fix: bool,
    /// Print the safe fixes as a unified diff instead of writing them.
    #[arg(long)]
    diff: bool,
}

/// Where host facts for host-aware rules come from.
#[derive(clap::Args)]
pub(crate) struct HostArgs {
    /// `live` to probe this machine for host-aware rules.
    #[arg(long, value_parser = ["live"], conflicts_with_all = ["host_root", "host_json"])]
    pub(crate) host: Option<String>,
    /// A host snapshot directory (sys/ and proc/) for host-aware rules.
    #[arg(long, value_name = "DIR", conflicts_with = "host_json")]
    pub(crate) host_root: Option<PathBuf>,
    /// Host facts saved by `kvmtune probe --format json`.
    #[arg(long, value_name = "FILE")]
    pub(crate) host_json: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckFormat {
    Text,
    Json,
    Sarif,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum WorkloadArg {
    Gaming,
    Desktop,
    Server,
    IpiHeavy,
}

impl From<WorkloadArg> for Workload {
    fn from(arg: WorkloadArg) -> Self {
        match arg {
            WorkloadArg::Gaming => Workload::Gaming,
            WorkloadArg::Desktop => Workload::Desktop,
            WorkloadArg::Server => Workload::Server,
            WorkloadArg::IpiHeavy => Workload::IpiHeavy,
        }
    }
}

/// What a command concluded, mapped onto the exit code.
pub(crate) enum Outcome {
    Clean,
    Findings,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Clean) => ExitCode::from(0),
        Ok(Outcome::Findings) => ExitCode::from(1),
        Err(error) => {
            // A closed pipe (`kvmtune probe | head`) is not a failure.
            if error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::from(0);
            }
            eprintln!("kvmtune: error: {error}");
            for (depth, cause) in error.chain().skip(1).enumerate() {
                eprintln!("  {}: {cause}", depth + 1);
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Probe { root, format } => probe(root, format),
        Command::Check(args) => check(args),
        Command::Rules => {
            print_out(&diagnostics::rules_table())?;
            Ok(Outcome::Clean)
        }
        Command::Explain { rule } => {
            if let Some(exit_rule) = kvmtune::analysis::exit_rules::find(&rule) {
                print_out(&format!(
                    "{} {} ({})\n\n{}\n\n{}\n\nFix: {}\nSource: {}\n",
                    exit_rule.id,
                    exit_rule.name,
                    exit_rule.severity.label(),
                    exit_rule.title,
                    exit_rule.explanation,
                    exit_rule.fix,
                    exit_rule.source
                ))?;
                return Ok(Outcome::Clean);
            }
            let rule = vm_rules::find(&rule)
                .with_context(|| format!("no rule `{rule}`; `kvmtune rules` lists them"))?;
            print_out(&diagnostics::explain(rule))?;
            Ok(Outcome::Clean)
        }
        Command::Exits(command) => exits::run(command),
        Command::Tune(args) => tune::run(args),
    }
}

pub(crate) fn print_out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

pub(crate) fn load_host(args: &HostArgs) -> anyhow::Result<Option<HostFacts>> {
    if args.host.is_some() {
        return Ok(Some(host::probe(&LiveHost)));
    }
    if let Some(root) = &args.host_root {
        let snapshot = SnapshotHost::open(root)
            .with_context(|| format!("cannot read the host snapshot at {}", root.display()))?;
        return Ok(Some(host::probe(&snapshot)));
    }
    if let Some(path) = &args.host_json {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        // Accept both `kvmtune probe --format json` output and the bare host object.
        if let Some(host) = value.get_mut("host") {
            value = host.take();
        }
        let facts: HostFacts = serde_json::from_value(value).with_context(|| {
            format!("{} is not kvmtune host facts (docs/probe-schema.md)", path.display())
        })?;
        return Ok(Some(facts));
    }
    Ok(None)
}

pub(crate) fn unified_diff(path: &str, before: &str, after: &str, label: &str) -> String {
    let diff = similar::TextDiff::from_lines(before, after);
    diff.unified_diff().header(path, &format!("{path} ({label})")).to_string()
}

/// A config's name and text, from a file or from libvirt (`virsh dumpxml --inactive`).
fn read_config_text(
    file: Option<&std::path::Path>,
    domain: Option<&str>,
    connect: Option<&str>,
) -> anyhow::Result<(String, String)> {
    if let Some(domain) = domain {
        let mut command = std::process::Command::new("virsh");
        if let Some(uri) = connect {
            command.args(["-c", uri]);
        }
        let output = command
            .args(["dumpxml", "--inactive", domain])
            .output()
            .context("cannot run virsh (is libvirt-clients installed?)")?;
        if !output.status.success() {
            anyhow::bail!(
                "virsh dumpxml {domain} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        return Ok((
            format!("domain:{domain}"),
            String::from_utf8(output.stdout).context("virsh printed non-UTF-8")?,
        ));
    }
    let path = file.context("give a FILE or --domain")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

fn check(args: CheckArgs) -> anyhow::Result<Outcome> {
    let (path, text) = args.vm.read()?;
    let config = kvmtune::config::read(&path, &text)?;
    if (args.fix || args.diff) && config.format != SourceFormat::Libvirt {
        anyhow::bail!("--fix and --diff edit libvirt XML only; for this file the fixes are listed as steps");
    }
    let source = SourceText::new(path, text);
    let host = load_host(&args.host)?;
    let windows = match &args.windows {
        Some(version) => Some(
            WindowsVersion::parse(version).with_context(|| format!("unknown Windows version `{version}`"))?,
        ),
        None => None,
    };
    let options = CheckOptions {
        host: host.as_ref(),
        windows,
        workload: args.workload.into(),
        select: args.select.clone(),
    };
    let report = kvmtune::analysis::check::check(&config, &source, &options);
    if args.fix || args.diff {
        return apply_fixes(&args, &report, &source, &options);
    }
    match args.format {
        CheckFormat::Text => print_out(&diagnostics::render_text(&report, &source))?,
        CheckFormat::Json => {
            print_out(&format!("{}\n", serde_json::to_string_pretty(&diagnostics::render_json(&report))?))?
        }
        CheckFormat::Sarif => print_out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&diagnostics::render_sarif(std::slice::from_ref(&report)))?
        ))?,
    }
    Ok(outcome(&report))
}

/// How often `--fix` re-checks and fixes again: a fix can make another rule applicable (turning
/// hv-stimer on makes the HPET pointless), and a few passes settle every chain the rules have.
const FIX_PASSES: usize = 4;

/// `--fix` and `--diff`: the safe fixes, spliced into the original text.
fn apply_fixes(
    args: &CheckArgs,
    report: &CheckReport,
    source: &SourceText,
    options: &CheckOptions,
) -> anyhow::Result<Outcome> {
    let mut text = source.text.clone();
    let mut applied = 0;
    let mut current = report.clone();
    for _ in 0..FIX_PASSES {
        let mut actions = Vec::new();
        for diagnostic in &current.diagnostics {
            if let Some(fix) = diagnostic.fix.as_ref().filter(|f| f.applicability == Applicability::Safe)
                && !actions.contains(&fix.action)
            {
                actions.push(fix.action.clone());
            }
        }
        if actions.is_empty() {
            break;
        }
        text = libvirt_edit::apply_actions(&text, &actions).context("applying the fixes")?;
        applied += actions.len();
        // A fix that broke the file would be worse than none.
        let config = libvirt::parse(&source.path, &text)
            .context("the fixed XML no longer reads; nothing was written")?;
        current = kvmtune::analysis::check::check(
            &config,
            &SourceText::new(source.path.clone(), text.clone()),
            options,
        );
    }
    if args.diff {
        print_out(&unified_diff(&source.path, &source.text, &text, "fixed"))?;
    } else if text != source.text {
        let path = args.vm.file.as_ref().context("--fix needs a FILE")?;
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "{applied} fix(es) {}; {} finding(s) remain",
        if args.diff { "shown" } else { "applied" },
        current.diagnostics.len()
    );
    Ok(outcome(&current))
}

fn outcome(report: &CheckReport) -> Outcome {
    if report.count(Severity::Error) + report.count(Severity::Warning) > 0 {
        Outcome::Findings
    } else {
        Outcome::Clean
    }
}

fn probe(root: Option<PathBuf>, format: Format) -> anyhow::Result<Outcome> {
    let source: Box<dyn HostSource> = match root {
        Some(root) => Box::new(
            SnapshotHost::open(&root)
                .with_context(|| format!("cannot read the snapshot at {}", root.display()))?,
        ),
        None => Box::new(LiveHost),
    };
    let facts = host::probe(source.as_ref());
    let findings = host_rules::evaluate(&facts);
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Text => {
            stdout.write_all(kvmtune::output::probe_text::render(&facts, &findings).as_bytes())?
        }
        Format::Json => {
            let document = serde_json::json!({ "host": facts, "findings": findings });
            // Rendered first so that a closed pipe surfaces as the io::Error it is.
            let mut rendered = serde_json::to_string_pretty(&document)?;
            rendered.push('\n');
            stdout.write_all(rendered.as_bytes())?;
        }
    }
    stdout.flush()?;
    // Host findings describe the machine, not a config under review: they do not make the
    // probe fail. Exit code 1 is for `check`.
    Ok(Outcome::Clean)
}
