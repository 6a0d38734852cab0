//! The `kvmtune` command. Glue only: parse arguments, call the library, render, pick the exit
//! code (0 clean, 1 findings, 2 error).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kvmtune::analysis::host_rules;
use kvmtune::host::{self, HostSource, LiveHost, SnapshotHost};

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
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// What a command concluded, mapped onto the exit code.
enum Outcome {
    Clean,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Clean) => ExitCode::from(0),
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
