//! `kvmtune hook install|uninstall`, and `hook run`, which libvirt calls through the installed
//! script. Glue: what the hook does is `kvmtune::hostchange::hook`'s; the changes are made as
//! `host prepare --apply` and `vfio bind --apply` make them.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use kvmtune::host::Host;
use kvmtune::hostchange::hook::{self, HOOK_ORIGIN, HookEvent, Installed};
use kvmtune::hostchange::{Journal, Released, VmJournal, prepare, vfio};

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
            // libvirt logs the hook's output and names it in the error that stops the VM: one
            // line, with every cause in it.
            run_hook(&domain, HookEvent::of(&operation, &sub_operation), &place)
                .map_err(|error| anyhow::anyhow!("{}", one_line(&error)))
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

fn run_hook(domain: &str, event: HookEvent, place: &JournalPlace) -> anyhow::Result<Outcome> {
    // libvirt writes the domain XML into a pipe for every call: read it whole, so that libvirt
    // never meets a closed pipe.
    let mut xml = String::new();
    std::io::stdin().read_to_string(&mut xml).context("cannot read the domain XML from stdin")?;
    let host = place.host();
    match event {
        HookEvent::Prepare => {
            // A domain that does not ask is left alone, also one whose XML kvmtune cannot read.
            if !xml.contains(kvmtune::config::host_request::NAMESPACE) {
                return Ok(Outcome::Clean);
            }
            prepare_domain(domain, &xml, place, &host)
        }
        HookEvent::Release => {
            if place.journal_dir().is_dir() {
                let journal = Journal::open(place.journal_dir(), &host)?;
                release_domain(&journal, domain, &host)?;
            }
            Ok(Outcome::Clean)
        }
        HookEvent::Reconnect => {
            if place.journal_dir().is_dir() {
                let journal = Journal::open(place.journal_dir(), &host)?;
                reconcile(&journal, &host)?;
            }
            Ok(Outcome::Clean)
        }
        HookEvent::Other => Ok(Outcome::Clean),
    }
}

/// The domain's own journals: the devices' and the host's.
fn journal_names(domain: &str) -> [String; 2] {
    [crate::vfio::journal_name(domain), domain.to_string()]
}

/// A journal the hook made, or the empty start of one that a kill cut short before it could
/// say who made it. Any other journal of a domain is a user's, made by hand, and left alone.
fn hooks_own(journal: &VmJournal) -> bool {
    journal.by.as_deref() == Some(HOOK_ORIGIN)
        || (journal.by.is_none() && !journal.complete && journal.changes.is_empty())
}

/// Undoes what the hook did for `domain`, the devices first.
fn release_domain(journal: &Journal, domain: &str, host: &Host) -> anyhow::Result<()> {
    let present = journal.status()?;
    for name in journal_names(domain) {
        if !present.iter().any(|j| j.vm == name && hooks_own(j)) {
            continue;
        }
        match journal.release(&name, host) {
            Ok(Released::Restored(_) | Released::SetAside(_)) => {}
            Err(error) => return Err(anyhow::Error::new(error).context(format!("releasing {name}"))),
        }
    }
    Ok(())
}

/// After a daemon restart: the hook's journals whose domain no longer runs are undone.
fn reconcile(journal: &Journal, host: &Host) -> anyhow::Result<()> {
    let mut gone: Vec<(u64, String)> = journal
        .status()?
        .into_iter()
        .filter(|j| j.by.as_deref() == Some(HOOK_ORIGIN))
        .filter(|j| {
            let domain = j.vm.strip_suffix(crate::vfio::VFIO_JOURNALS.suffix).unwrap_or(&j.vm);
            !hook::domain_runs(domain, host)
        })
        .map(|j| (j.order, j.vm))
        .collect();
    gone.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
    for (_, name) in gone {
        journal.release(&name, host).with_context(|| format!("releasing {name}, whose domain is gone"))?;
    }
    Ok(())
}

fn prepare_domain(domain: &str, xml: &str, place: &JournalPlace, host: &Host) -> anyhow::Result<Outcome> {
    let config = kvmtune::config::libvirt::parse(&format!("<domain {domain}>"), xml)?;
    let Some(request) = &config.host_request else { return Ok(Outcome::Clean) };
    let journal = Journal::open(place.journal_dir(), host)?.started_by(HOOK_ORIGIN);
    // A start after a stop the hook did not see (libvirtd killed, the host's power cut in
    // this boot): the hook's own leftovers of this domain go first.
    for stale in journal.status()?.iter().filter(|j| journal_names(domain).contains(&j.vm)) {
        if !hooks_own(stale) {
            anyhow::bail!(
                "{} was prepared by hand, not by the hook; `kvmtune host release {domain}` (or `vfio release`) first",
                stale.vm
            );
        }
    }
    release_domain(&journal, domain, host)?;

    // Both plans first: every refusal comes before the first write.
    let host_plan = match hook::prepare_request(domain, &config, request, host)? {
        Some(prepare_request) => Some(prepare::plan(&prepare_request, &journal.status()?, host)?),
        None => None,
    };
    let devices: Vec<kvmtune::values::PciAddress> = request.devices.iter().map(|d| d.value).collect();
    let bind_plan = match devices.is_empty() {
        true => None,
        false => Some(vfio::plan_bind(domain, &devices, request.single_gpu, host)?),
    };
    // libvirt logs what a hook writes to stderr: the reset warnings belong there.
    for warning in bind_plan.iter().flat_map(|plan| &plan.warnings) {
        eprintln!("kvmtune: warning: {warning}");
    }
    if let Some(plan) = &host_plan {
        crate::host::apply_prepare(&journal, plan, host)?;
    }
    if let Some(plan) = &bind_plan
        && let Err(error) = crate::vfio::apply_bind(&journal, plan, host)
    {
        release_domain(&journal, domain, host)?;
        anyhow::bail!("{} (the host side made for it was undone)", one_line(&error));
    }
    Ok(Outcome::Clean)
}
