//! `kvmtune vfio bind|release`: a device's whole IOMMU group to vfio-pci for a VM, and every
//! device back to its driver. Journaled with `kvmtune host`'s journal (as `<name>.vfio`), so
//! that release is exact also after kill -9. Glue: the plan and the writes are
//! `kvmtune::hostchange::vfio`'s and the journal's.

use anyhow::bail;
use clap::Subcommand;
use kvmtune::host::CpuSet;
use kvmtune::hostchange::Journal;
use kvmtune::hostchange::vfio::{self, BindPlan};

use crate::host::{JournalFamily, JournalPlace, ReleaseArgs, release_journals};
use crate::{Outcome, print_out};

/// A VM's device hand-over is journaled as `<vm>.vfio`, beside its `host prepare` journal.
const VFIO_JOURNALS: JournalFamily = JournalFamily { command: "vfio release", suffix: ".vfio" };

fn journal_name(vm: &str) -> String {
    format!("{vm}{}", VFIO_JOURNALS.suffix)
}

#[derive(Subcommand)]
pub(crate) enum VfioCommand {
    /// Hand PCI devices, each with its whole IOMMU group (bridges excluded), to vfio-pci.
    /// Prints the group, each device's driver and every write; changes the host only with
    /// --apply.
    Bind {
        /// PCI addresses (`0000:01:00.0` or `01:00.0`).
        #[arg(required = true)]
        devices: Vec<String>,
        /// The VM the devices are for: the name `release` takes (default: the first address).
        #[arg(long)]
        name: Option<String>,
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
        VfioCommand::Bind { devices, name, apply, place, test_kill_at_step } => {
            bind(&devices, name, apply, &place, test_kill_at_step)
        }
        VfioCommand::Release(args) => release_journals(&args, &VFIO_JOURNALS),
    }
}

fn plan_text(plan: &BindPlan) -> String {
    let mut text = format!("devices for VM {}: IOMMU group(s) {:?}\n", plan.vm, plan.groups);
    for member in &plan.members {
        text += &format!(
            "  {} class {} on {} -> vfio-pci\n",
            member.address,
            member.class,
            member.driver.as_deref().unwrap_or("(no driver)")
        );
    }
    text += "Would write (nothing is written without --apply):\n";
    for action in &plan.actions {
        text += &format!("  {}\n", action.shell());
    }
    text
}

fn bind(
    devices: &[String],
    name: Option<String>,
    apply: bool,
    place: &JournalPlace,
    kill_at_step: Option<usize>,
) -> anyhow::Result<Outcome> {
    if apply {
        place.require_root("vfio bind --apply")?;
    }
    let writer = place.writer();
    let vm = name.unwrap_or_else(|| vfio::full_address(&devices[0]));
    let plan = vfio::plan_bind(&vm, devices, writer.as_ref())?;
    if !apply {
        print_out(&plan_text(&plan))?;
        return Ok(Outcome::Clean);
    }
    let mut journal = Journal::open(place.journal_dir(), writer.as_ref())?;
    if let Some(step) = kill_at_step {
        journal = journal.kill_at_step(step);
    }
    let journal_name = journal_name(&vm);
    journal.apply(&journal_name, &CpuSet::new(), &plan.actions, writer.as_ref())?;
    // The group is usable only when every member is on vfio-pci: its device node says so.
    let nodes = writer.list_dir("/dev/vfio").unwrap_or_default();
    let missing: Vec<u32> = plan.groups.iter().copied().filter(|g| !nodes.contains(&g.to_string())).collect();
    if !missing.is_empty() {
        journal.release(&journal_name, writer.as_ref())?;
        bail!(
            "/dev/vfio has no node for group(s) {missing:?} after the hand-over; every device was given back"
        );
    }
    let mut text = format!("bound for VM {vm}: ");
    let addresses: Vec<&str> = plan.members.iter().map(|m| m.address.as_str()).collect();
    text += &format!(
        "{} on vfio-pci, group(s) {:?}; undo with `kvmtune vfio release {vm}`\n",
        addresses.join(", "),
        plan.groups
    );
    print_out(&text)?;
    Ok(Outcome::Clean)
}
