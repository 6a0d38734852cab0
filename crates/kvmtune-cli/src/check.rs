//! `kvmtune check`, `rules` and `explain`.

use anyhow::Context;
use clap::ValueEnum;
use kvmtune::analysis::Severity;
use kvmtune::analysis::check::{self, CheckOptions, CheckReport};
use kvmtune::analysis::rule;
use kvmtune::analysis::vm_rules::VmRule;
use kvmtune::config::SourceText;
use kvmtune::config::model::WindowsVersion;
use kvmtune::host::CpuSet;
use kvmtune::output::diagnostics;

use crate::args::{HostArgs, VmConfigArgs, WorkloadArg, parse_config_rule, parse_cpu_list, parse_windows};
use crate::{Outcome, print_out, unified_diff};

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    vm: VmConfigArgs,
    #[command(flatten)]
    host: HostArgs,
    /// The guest's Windows version (11, 10, 8, 7, xp, 2016, 2019, 2022, 2025); default: from
    /// the config's libosinfo id.
    #[arg(long, value_parser = parse_windows)]
    windows: Option<WindowsVersion>,
    #[arg(long, value_enum, default_value_t = WorkloadArg::Gaming)]
    workload: WorkloadArg,
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    format: CheckFormat,
    /// The host's housekeeping CPUs (a cpulist such as `0,16`), for PIN007 where the config
    /// pins no emulator or iothread and the kernel has no isolcpus=.
    #[arg(long, value_name = "CPULIST", value_parser = parse_cpu_list)]
    housekeeping: Option<CpuSet>,
    /// Only these rules (ids or names, comma-separated); an unknown one is an error.
    #[arg(long, value_delimiter = ',', value_parser = parse_config_rule)]
    select: Vec<&'static VmRule>,
    /// Apply the safe fixes and write the file back (only what the fixes change is touched).
    #[arg(long, conflicts_with_all = ["diff", "domain"])]
    fix: bool,
    /// Print the safe fixes as a unified diff instead of writing them.
    #[arg(long)]
    diff: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckFormat {
    Text,
    Json,
    Sarif,
}

pub(crate) fn run(args: CheckArgs) -> anyhow::Result<Outcome> {
    let (path, text) = args.vm.read()?;
    let config = kvmtune::config::read(&path, &text)?;
    let source = SourceText::new(path, text);
    let host = args.host.load()?;
    let options = CheckOptions {
        host: host.as_ref(),
        windows: args.windows,
        workload: args.workload.into(),
        select: args.select.clone(),
        housekeeping: args.housekeeping.clone(),
    };
    if args.fix || args.diff {
        return apply_fixes(&args, &config, &source, &options);
    }
    let report = check::check(&config, &source, &options);
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

/// `--fix` and `--diff`: the safe fixes, spliced into the original text.
fn apply_fixes(
    args: &CheckArgs,
    config: &kvmtune::config::model::VmConfig,
    source: &SourceText,
    options: &CheckOptions,
) -> anyhow::Result<Outcome> {
    let fixed = check::fix_until_stable(config, source, options)?;
    if args.diff {
        print_out(&unified_diff(&source.path, &source.text, &fixed.text, "fixed"))?;
    } else if fixed.text != source.text {
        let path = args.vm.file.as_ref().context("--fix needs a FILE")?;
        std::fs::write(path, &fixed.text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "{} fix(es) {}; {} finding(s) remain",
        fixed.applied,
        if args.diff { "shown" } else { "applied" },
        fixed.report.diagnostics.len()
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
