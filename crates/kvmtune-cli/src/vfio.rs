//! `kvmtune vfio bind|release`: a device's whole IOMMU group to vfio-pci for a VM, and every
//! device back to its driver. Journaled with `kvmtune host`'s journal (as `<name>.vfio`), so
//! that release is exact also after kill -9. Glue: the plan and the writes are
//! `kvmtune::hostchange::vfio`'s and the journal's.

use clap::Subcommand;
use kvmtune::hostchange::vfio;
use kvmtune::hostchange::{ChangeKind, Journal, JournalKind};
use kvmtune::output::host_changes;
use kvmtune::values::PciAddress;

use crate::host::{JournalFamily, JournalPlace, ReleaseArgs, release_journals};
use crate::{Outcome, print_out};

/// A VM's device hand-over is journaled as `<vm>.vfio`, beside its `host prepare` journal.
pub(crate) const VFIO_JOURNALS: JournalFamily =
    JournalFamily { command: "vfio release", named: JournalKind::Devices, all: &[JournalKind::Devices] };

#[derive(Subcommand)]
pub(crate) enum VfioCommand {
    /// Hand PCI devices, each with its whole IOMMU group (bridges excluded), to vfio-pci.
    /// Prints the group, each device's driver and every write; changes the host only with
    /// --apply.
    Bind {
        /// PCI addresses (`0000:01:00.0` or `01:00.0`).
        #[arg(required = true, value_parser = PciAddress::parse_lenient)]
        devices: Vec<PciAddress>,
        /// The VM the devices are for: the name `release` takes (default: the first address).
        #[arg(long)]
        name: Option<String>,
        /// The host's only GPU: stop the display manager, unbind the virtual consoles from the
        /// framebuffer and release the firmware framebuffer first (each undone at release).
        #[arg(long)]
        single_gpu: bool,
        /// Make the changes.
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        place: JournalPlace,
        /// Test-only failpoint: die by SIGKILL after this many journal steps.
        #[arg(long, hide = true)]
        test_kill_at_step: Option<usize>,
    },
    /// Give every device of a VM's groups back to the driver it had, functions before the GPU.
    Release(ReleaseArgs),
}

pub(crate) fn run(command: VfioCommand) -> anyhow::Result<Outcome> {
    match command {
        VfioCommand::Bind { devices, name, single_gpu, apply, place, test_kill_at_step } => {
            bind(&devices, name, single_gpu, apply, &place, test_kill_at_step)
        }
        VfioCommand::Release(args) => {
            let (steps, devices) = to_release(&args)?;
            // Listed first: when a step fails, the error names it and the list says what came
            // before it.
            if !steps.is_empty() {
                print_out(&format!("undoing, in this order:\n{}\n", steps.join("\n")))?;
            }
            let outcome = release_journals(&args, &VFIO_JOURNALS)?;
            print_warnings(&vfio::reset_warnings(&devices, &args.place.host()));
            Ok(outcome)
        }
    }
}

fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("kvmtune: warning: {}", kvmtune::values::escape::terminal(warning));
    }
}

/// What the journals `release` is about to undo: each step, in the order it is undone (so that
/// a black screen on return says which step it came after), and the devices handed over, for
/// the reset warnings that follow.
fn to_release(args: &ReleaseArgs) -> anyhow::Result<(Vec<String>, Vec<PciAddress>)> {
    let place = &args.place;
    if !place.journal_dir().is_dir() {
        return Ok((Vec::new(), Vec::new()));
    }

    let journals = Journal::open_to_read(place.journal_dir(), &place.host())?.status()?;
    let mut steps = Vec::new();
    let mut devices = Vec::new();
    for journal in journals
        .iter()
        .filter(|j| j.kind == JournalKind::Devices && args.name.as_ref().is_none_or(|w| *w == j.vm))
    {
        for change in journal.changes.iter().rev().filter(|c| c.refused.is_none()) {
            let original = String::from_utf8_lossy(&change.original).trim().to_string();
            let original = if original.is_empty() { "(none)".to_string() } else { original };
            steps.push(format!("  {}: back to {original}", change.path));
            if change.kind == ChangeKind::VfioBind
                && let Ok(address) = PciAddress::parse(change.path.rsplit('/').next().unwrap_or(&change.path))
            {
                devices.push(address);
            }
        }
    }
    Ok((steps, devices))
}

fn bind(
    devices: &[PciAddress],
    name: Option<String>,
    single_gpu: bool,
    apply: bool,
    place: &JournalPlace,
    kill_at_step: Option<usize>,
) -> anyhow::Result<Outcome> {
    if apply {
        place.require_root("vfio bind --apply")?;
    }
    let host = place.host();
    let vm = name.unwrap_or_else(|| devices[0].to_string());
    let plan = vfio::plan_bind(&vm, devices, single_gpu, &host)?;
    print_warnings(&plan.warnings);
    if !apply {
        print_out(&host_changes::bind_plan(&plan))?;
        return Ok(Outcome::Clean);
    }
    let mut journal = Journal::open(place.journal_dir(), &host)?;
    if let Some(step) = kill_at_step {
        journal = journal.kill_at_step(step);
    }
    print_out(&host_changes::bind_applied(&vfio::apply_bind(&journal, &plan, &host)?))?;
    Ok(Outcome::Clean)
}
