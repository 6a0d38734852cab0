//! The `kvmtune` command. Glue only: parse arguments into typed values ([`args`]), call the
//! library, render, pick the exit code (0 clean, 1 findings, 2 error). One module per command
//! family: [`check`] (`check`, `rules`, `explain`), [`tune`], [`exits`], [`host`], [`vfio`],
//! [`hook`], [`live`] (`top`, `exporter`), [`verify`], [`experiment`], [`generate`] (man pages
//! and completions); `probe` is here.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kvmtune::analysis::host_rules;

mod args;
mod check;
mod exits;
mod experiment;
mod generate;
mod hook;
mod host;
mod live;
mod metrics_server;
mod top_screen;
mod tune;
mod verify;
mod vfio;

use args::{Format, HostArgs};

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
    Check(check::CheckArgs),
    /// List every rule: host, VM-config and exit rules.
    Rules,
    /// Explain one rule of any kind in full (by id or name).
    Explain { rule: String },
    /// Plan the fastest configuration of a Windows VM for this host, explain every choice, and
    /// emit it (libvirt XML by default). Never changes the host.
    Tune(tune::TuneArgs),
    /// VM-exit statistics: read them, name their causes, compare before and after.
    #[command(subcommand)]
    Exits(exits::ExitsCommand),
    /// Give a VM its CPUs, IRQs, governor and hugepages on this host, and undo it exactly.
    /// Changes the running host only with `prepare --apply` (and `release`).
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Hand a device's whole IOMMU group to vfio-pci for a VM, and give every device its
    /// driver back. Changes the running host only with `bind --apply` (and `release`).
    #[command(subcommand)]
    Vfio(vfio::VfioCommand),
    /// The libvirt hook: `host prepare` and `vfio bind` at a VM's start, undone at its stop,
    /// for domains whose <metadata> asks (`kvmtune tune` writes it).
    #[command(subcommand)]
    Hook(hook::HookCommand),
    /// Every running QEMU/KVM VM of this host: exits per second by kind, halt polling, the
    /// busiest kind and the diagnosis. Reads only.
    Top(live::TopArgs),
    /// Prove from inside a running guest that its configuration took effect: run the guest
    /// program through the QEMU guest agent (or read its saved report) and hold what the guest
    /// sees against the configuration. Exit code 1 when they differ.
    Verify(verify::VerifyArgs),
    /// Measure which configuration of a VM is faster: run each variant in rounds, in a random
    /// order, record its exits, and name a winner only where the difference is measurable.
    Experiment(experiment::ExperimentArgs),
    /// Serve every VM's KVM counters, findings and the host's tuning facts to Prometheus
    /// (http://ADDRESS/metrics). Reads only, at each scrape.
    Exporter(live::ExporterArgs),
    /// Write the man pages or the shell completions (for packagers).
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCommand),
}

/// What a command concluded, mapped onto the exit code.
pub(crate) enum Outcome {
    Clean,
    Findings,
    /// Some inputs could not be read; the rest were reported (exit code 2).
    BadInput,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Clean) => ExitCode::from(0),
        Ok(Outcome::Findings) => ExitCode::from(1),
        Ok(Outcome::BadInput) => ExitCode::from(2),
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
        Command::Check(args) => check::run(args),
        Command::Rules => check::rules(),
        Command::Explain { rule } => check::explain(&rule),
        Command::Exits(command) => exits::run(command),
        Command::Tune(args) => tune::run(args),
        Command::Host(command) => host::run(command),
        Command::Vfio(command) => vfio::run(command),
        Command::Hook(command) => hook::run(command),
        Command::Top(args) => live::top(args),
        Command::Exporter(args) => live::exporter(args),
        Command::Verify(args) => verify::run(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Generate(command) => generate::run(command, <Cli as clap::CommandFactory>::command()),
    }
}

pub(crate) fn print_out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn probe(root: Option<PathBuf>, format: Format) -> anyhow::Result<Outcome> {
    let facts = match root {
        Some(root) => HostArgs::snapshot(root).load()?.context("a snapshot directory always names a host")?,
        None => kvmtune::host::probe(&kvmtune::host::Host::live()),
    };
    let findings = host_rules::evaluate(&facts);
    let rendered = match format {
        Format::Text => kvmtune::output::probe_text::render(&facts, &findings),
        Format::Json => {
            let document = serde_json::json!({ "host": facts, "findings": findings });
            format!("{}\n", serde_json::to_string_pretty(&document)?)
        }
    };
    // Rendered first so that a closed pipe surfaces as the io::Error it is.
    print_out(&rendered)?;
    // Host findings describe the machine, not a config under review: they do not make the
    // probe fail. Exit code 1 is for `check`.
    Ok(Outcome::Clean)
}
