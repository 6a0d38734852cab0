//! `kvmtune hook install|uninstall`, and `hook run`, which libvirt calls through the installed
//! script. Glue: what the hook does is `kvmtune::hostchange::hook::run`'s.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use kvmtune::hostchange::hook::{self, HookEvent, Installed};

use crate::host::JournalPlace;
use crate::{Outcome, print_out};

#[derive(Subcommand)]
pub(crate) enum HookCommand {
    /// Install the libvirt hook: DIR/etc/libvirt/hooks/qemu.d/kvmtune. It acts on domains whose
    /// <metadata> holds <kvmtune:host> (`kvmtune tune` writes it) and leaves all others alone.
    Install {
        /// The root the hook goes under.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// Remove the libvirt hook kvmtune installed.
    Uninstall {
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
    /// What libvirt runs: DOMAIN OPERATION SUB-OPERATION EXTRA, the domain XML on stdin.
    #[command(hide = true)]
    Run {
        domain: String,
        operation: String,
        sub_operation: String,
        extra: Option<String>,
        #[command(flatten)]
        place: JournalPlace,
    },
}

pub(crate) fn run(command: HookCommand) -> anyhow::Result<Outcome> {
    match command {
        HookCommand::Install { root } => install(&root),
        HookCommand::Uninstall { root } => {
            let text = match hook::uninstall(&root)? {
                true => format!("removed {}\n", hook::hook_path(&root).display()),
                false => {
                    format!("no kvmtune hook at {}: nothing to remove\n", hook::hook_path(&root).display())
                }
            };
            print_out(&text)?;
            Ok(Outcome::Clean)
        }
        HookCommand::Run { domain, operation, sub_operation, extra: _, place } => {
            // libvirt writes the domain XML into a pipe for every call: read it whole, so that
            // libvirt never meets a closed pipe.
            let mut xml = String::new();
            std::io::stdin().read_to_string(&mut xml).context("cannot read the domain XML from stdin")?;
            let event = HookEvent::of(&operation, &sub_operation);
            // libvirt logs the hook's output and names it in the error that stops the VM: one
            // line, with every cause in it.
            let report = hook::run(&domain, event, &xml, place.journal_dir(), &place.host())
                .map_err(|error| anyhow::anyhow!("{}", one_line(&anyhow::Error::new(error))))?;
            for warning in &report.warnings {
                eprintln!("kvmtune: warning: {}", kvmtune::values::escape::terminal(warning));
            }
            Ok(Outcome::Clean)
        }
    }
}

fn one_line(error: &anyhow::Error) -> String {
    error.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ").replace('\n', "; ")
}

fn install(root: &std::path::Path) -> anyhow::Result<Outcome> {
    let binary = std::env::current_exe().context("cannot tell where this kvmtune binary is")?;
    let path = hook::hook_path(root);
    let text = match hook::install(root, &binary)? {
        Installed::Created => format!(
            "installed {} (runs {})\nlibvirtd reads its hooks when it starts: restart it (or virtqemud) before the next VM start\n",
            path.display(),
            binary.display()
        ),
        Installed::Updated => format!("updated {}: it now runs {}\n", path.display(), binary.display()),
    };
    print_out(&text)?;
    Ok(Outcome::Clean)
}
