//! `kvmtune check`, `rules` and `explain`.

use anyhow::Context;
use clap::ValueEnum;
use kvmtune::analysis::Severity;
use kvmtune::analysis::check::{self, CheckOptions, CheckReport};
use kvmtune::analysis::rule;
use kvmtune::analysis::vm_rules::VmRule;
use kvmtune::config::model::WindowsVersion;
use kvmtune::host::libvirt::{Domains, Libvirt};
use kvmtune::output::diagnostics;
use kvmtune::values::CpuSet;
use kvmtune::values::SourceText;
use kvmtune::values::text::{agree, plural};

use std::path::PathBuf;

use crate::args::{HostArgs, WorkloadArg, parse_config_rule, parse_cpu_list, parse_windows, read_domain_xml};
use kvmtune::output::existing_vm::unified_diff;

use crate::{Outcome, print_out};

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// Config files (libvirt domain XML, a QEMU command line or launch script, a Proxmox VM
    /// config; the format is recognised from the content), or directories: their `*.xml`,
    /// `*.conf`, QEMU scripts and argument files, recursively.
    #[arg(value_name = "PATH", conflicts_with_all = ["domain", "all_domains"])]
    paths: Vec<PathBuf>,
    /// Read the domain's inactive XML from libvirt (`virsh dumpxml --inactive`).
    #[arg(long, conflicts_with = "all_domains")]
    domain: Option<String>,
    /// Every domain defined on the connection (inactive XML, one `virsh dumpxml` each).
    #[arg(long)]
    all_domains: bool,
    /// libvirt connection URI for --domain and --all-domains.
    #[arg(long)]
    connect: Option<String>,
    #[command(flatten)]
    host: HostArgs,
    /// The guest's Windows version (11, 10, 8, 7, xp, 2016, 2019, 2022, 2025); default: from
    /// the config's libosinfo id.
    #[arg(long, value_parser = parse_windows)]
    windows: Option<WindowsVersion>,
    /// What the VM is for; default: gaming with a passed-through PCI device, desktop without one
    /// but with a SPICE or VNC display, else gaming.
    #[arg(long, value_enum)]
    workload: Option<WorkloadArg>,
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    format: CheckFormat,
    /// The host's housekeeping CPUs (a cpulist such as `0,16`), for PIN007 where the config
    /// pins no emulator or iothread and the kernel has no isolcpus=; PIN007 runs on it even
    /// without host facts.
    #[arg(long, value_name = "CPULIST", value_parser = parse_cpu_list)]
    housekeeping: Option<CpuSet>,
    /// Only these rules (ids or names, comma-separated); an unknown one is an error.
    #[arg(long, value_delimiter = ',', value_parser = parse_config_rule)]
    select: Vec<&'static VmRule>,
    /// Apply the safe fixes and write each libvirt file back (only what the fixes change is
    /// touched).
    #[arg(long, conflicts_with_all = ["domain", "all_domains"])]
    fix: bool,
    /// Show what --fix would write as a unified diff and write nothing (alone or with --fix).
    #[arg(long)]
    diff: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckFormat {
    Text,
    Json,
    Sarif,
}

/// A config to check: where it came from and its text, or why it could not be read.
struct Named {
    name: String,
    text: Result<String, String>,
    /// Named on the command line (or a libvirt domain), not found in a directory.
    named: bool,
}

/// The inputs the arguments name, and whether they are many (a directory, several paths,
/// every domain) rather than the one config of the single-file form.
fn gather(args: &CheckArgs) -> anyhow::Result<(Vec<Named>, bool)> {
    if let Some(domain) = &args.domain {
        let (name, text) = read_domain_xml(domain, args.connect.as_deref())?;
        return Ok((vec![Named { name, text: Ok(text), named: true }], false));
    }
    if args.all_domains {
        let names = list_domains(args.connect.as_deref())?;
        let inputs = names
            .into_iter()
            .map(|domain| match read_domain_xml(&domain, args.connect.as_deref()) {
                Ok((name, text)) => Named { name, text: Ok(text), named: true },
                Err(error) => {
                    Named { name: format!("domain:{domain}"), text: Err(format!("{error:#}")), named: true }
                }
            })
            .collect();
        return Ok((inputs, true));
    }
    if args.paths.is_empty() {
        anyhow::bail!("give a FILE or DIRECTORY, --domain NAME or --all-domains");
    }
    let found = kvmtune::config::inputs::discover(&args.paths);
    let many = args.paths.len() > 1 || args.paths.iter().any(|p| p.is_dir());
    let mut inputs: Vec<Named> = found
        .inputs
        .into_iter()
        .map(|input| Named {
            name: input.path.display().to_string(),
            text: kvmtune::config::inputs::read_input(&input.path),
            named: input.named,
        })
        .collect();
    inputs.extend(found.problems.into_iter().map(|problem| Named {
        name: problem.clone(),
        text: Err(problem),
        named: true,
    }));
    Ok((inputs, many))
}

/// The names of every domain defined on the connection, running or not.
fn list_domains(connect: Option<&str>) -> anyhow::Result<Vec<String>> {
    Ok(Libvirt::new(connect).domains(Domains::All)?)
}

pub(crate) fn run(args: CheckArgs) -> anyhow::Result<Outcome> {
    let (mut inputs, many) = gather(&args)?;
    let host = args.host.load()?;
    let options = CheckOptions {
        host: host.as_ref(),
        windows: args.windows,
        workload: args.workload.map(Into::into),
        select: args.select.clone(),
        housekeeping: args.housekeeping.clone(),
    };
    if !many
        && inputs.len() == 1
        && let Some(only) = inputs.pop()
    {
        let text = only.text.map_err(anyhow::Error::msg)?;
        return run_one(&args, only.name, text, &options);
    }
    run_many(&args, inputs, &options)
}

/// The single-config form: rustc-style diagnostics, `--fix` and `--diff` on one file.
fn run_one(args: &CheckArgs, path: String, text: String, options: &CheckOptions) -> anyhow::Result<Outcome> {
    let config = kvmtune::config::read(&path, &text)?;
    let source = SourceText::new(path, text);
    if args.fix || args.diff {
        let file = args.paths.first().cloned();
        return apply_fixes(args, file, &config, &source, options);
    }
    let report = check::check(&config, &source, options);
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

/// Many configs at once: each checked (in parallel, reported in order), grouped per VM, and
/// one summary. A bad input is reported and the rest still checked; it makes the exit code 2.
fn run_many(args: &CheckArgs, inputs: Vec<Named>, options: &CheckOptions) -> anyhow::Result<Outcome> {
    // (input, why) for inputs that could not be read, and for files passed over.
    let mut bad: Vec<(String, String)> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut readable: Vec<(String, String)> = Vec::new();
    let mut named_flags: Vec<bool> = Vec::new();
    for input in inputs {
        match input.text {
            Ok(text) => {
                named_flags.push(input.named);
                readable.push((input.name, text));
            }
            Err(error) => bad.push((input.name, error)),
        }
    }
    let checked = check::check_many(readable, options);
    let mut reports: Vec<(&CheckReport, &SourceText)> = Vec::new();
    for (item, named) in checked.iter().zip(named_flags) {
        match &item.result {
            Ok(report) => reports.push((report, &item.source)),
            Err(kvmtune::config::ConfigError::NotAConfig { message, .. }) if !named => {
                skipped.push((item.source.path.clone(), message.clone()));
            }
            Err(error) => bad.push((item.source.path.clone(), error.to_string())),
        }
    }
    if args.fix || args.diff {
        return fix_many(args, &checked, options, &bad);
    }
    let summary = check::summarize(&reports.iter().map(|(r, _)| *r).collect::<Vec<_>>(), bad.len());
    match args.format {
        CheckFormat::Text => {
            let mut out = String::new();
            for (report, source) in &reports {
                out.push_str(&diagnostics::render_text(report, source));
                out.push('\n');
            }
            for (_, error) in &bad {
                out.push_str(&format!("error: {error}\n"));
            }
            for (input, why) in &skipped {
                out.push_str(&format!("skipped (not a VM config): {input}: {why}\n"));
            }
            if !bad.is_empty() || !skipped.is_empty() {
                out.push('\n');
            }
            out.push_str(&diagnostics::render_summary(&summary));
            print_out(&out)?;
        }
        CheckFormat::Json => {
            let document = serde_json::json!({
                "reports": reports.iter().map(|(r, _)| diagnostics::render_json(r)).collect::<Vec<_>>(),
                "bad_inputs": bad.iter().map(|(input, error)| serde_json::json!({ "input": input, "error": error })).collect::<Vec<_>>(),
                "skipped": skipped.iter().map(|(input, why)| serde_json::json!({ "input": input, "why": why })).collect::<Vec<_>>(),
                "summary": summary,
            });
            print_out(&format!("{}\n", serde_json::to_string_pretty(&document)?))?;
        }
        CheckFormat::Sarif => {
            let all: Vec<CheckReport> = reports.iter().map(|(r, _)| (*r).clone()).collect();
            print_out(&format!("{}\n", serde_json::to_string_pretty(&diagnostics::render_sarif(&all))?))?;
        }
    }
    if !bad.is_empty() {
        return Ok(Outcome::BadInput);
    }
    Ok(if summary.errors + summary.warnings > 0 { Outcome::Findings } else { Outcome::Clean })
}

/// `--fix` and `--diff` over many files: each libvirt file on its own, as in the single form;
/// other formats get their fixes as steps in the report, not edits.
fn fix_many(
    args: &CheckArgs,
    checked: &[check::Checked],
    options: &CheckOptions,
    bad: &[(String, String)],
) -> anyhow::Result<Outcome> {
    let mut findings = false;
    let mut failed: Vec<String> = bad.iter().map(|(_, error)| error.clone()).collect();
    for item in checked {
        let Ok(report) = &item.result else { continue };
        if report.format != kvmtune::config::model::SourceFormat::Libvirt {
            continue;
        }
        let config = kvmtune::config::read(&item.source.path, &item.source.text)?;
        let file = Some(PathBuf::from(&item.source.path));
        match apply_fixes(args, file, &config, &item.source, options) {
            Ok(Outcome::Findings) => findings = true,
            Ok(_) => {}
            Err(error) => failed.push(format!("{}: {error:#}", item.source.path)),
        }
    }
    for error in &failed {
        eprintln!("kvmtune: error: {error}");
    }
    Ok(if !failed.is_empty() {
        Outcome::BadInput
    } else if findings {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

/// `--fix` and `--diff`: the safe fixes, spliced into the original text.
fn apply_fixes(
    args: &CheckArgs,
    file: Option<PathBuf>,
    config: &kvmtune::config::model::VmConfig,
    source: &SourceText,
    options: &CheckOptions,
) -> anyhow::Result<Outcome> {
    let fixed = check::fix_until_stable(config, source, options)?;
    if args.diff {
        print_out(&unified_diff(&source.path, &source.text, &fixed.text, "fixed"))?;
    } else if fixed.text != source.text {
        let path = file.as_ref().context("--fix needs a FILE")?;
        std::fs::write(path, &fixed.text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "{} {}; {} {}",
        plural(fixed.applied, "fix"),
        if args.diff { "shown" } else { "applied" },
        plural(fixed.report.diagnostics.len(), "finding"),
        agree(fixed.report.diagnostics.len(), "remains", "remain")
    );
    if !fixed.converged {
        eprintln!(
            "kvmtune: warning: the safe fixes did not settle after {} passes; safe fixes are still proposed (please report this config)",
            check::FIX_PASSES
        );
        return Ok(Outcome::Findings);
    }
    Ok(outcome(&fixed.report))
}

fn outcome(report: &CheckReport) -> Outcome {
    if report.count(Severity::Error) + report.count(Severity::Warning) > 0 {
        Outcome::Findings
    } else {
        Outcome::Clean
    }
}

/// `kvmtune explain RULE`: a rule of any kind.
pub(crate) fn explain(query: &str) -> anyhow::Result<Outcome> {
    let rule = rule::lookup(query)?;
    print_out(&diagnostics::explain(rule))?;
    Ok(Outcome::Clean)
}

/// `kvmtune rules`.
pub(crate) fn rules() -> anyhow::Result<Outcome> {
    print_out(&diagnostics::rules_table())?;
    Ok(Outcome::Clean)
}
