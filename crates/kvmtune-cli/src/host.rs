//! `kvmtune host prepare|release|status`: the host side of a VM (its CPUs, IRQs, governor,
//! hugepages), applied at start with `--apply` and undone exactly at stop. The plan, the
//! journal and every write are the library's (`kvmtune::hostchange`); this is glue.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kvmtune::config::host_needs::{HostNeeds, Hugepages, NeedsFlags};
use kvmtune::host::Host;
use kvmtune::hostchange::journal::DEFAULT_DIR;
use kvmtune::hostchange::prepare::{self, PrepareRequest};
use kvmtune::hostchange::{Journal, JournalError, JournalKind, Released};
use kvmtune::output::host_changes;
use kvmtune::values::text::plural;

use crate::args::Format;
use crate::{Outcome, print_out};

#[derive(Subcommand)]
pub(crate) enum HostCommand {
    /// Give a VM its CPUs: host tasks, kernel threads, IRQs and workqueues off them, their
    /// governor and EPP, hugepages on its node. Prints every write; changes the running host
    /// only with --apply, journaled so that `release` undoes it exactly.
    Prepare(Box<PrepareArgs>),
    /// Undo a VM's changes (or every VM's), also those of an interrupted prepare.
    Release(ReleaseArgs),
    /// Show what is applied, per VM, and anything left by an interrupted run.
    Status {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        place: JournalPlace,
    },
}

/// Where the journal and the host are; hidden, for tests on a host laid out in a directory.
#[derive(Args)]
pub(crate) struct JournalPlace {
    /// The journal directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR, hide = true)]
    journal_dir: PathBuf,
    /// A directory laid out like a host's root, changed instead of this host.
    #[arg(long, value_name = "DIR", hide = true)]
    root: Option<PathBuf>,
}

impl JournalPlace {
    pub(crate) fn journal_dir(&self) -> &std::path::Path {
        &self.journal_dir
    }

    /// The host the changes go to: this machine, or the directory `--root` names.
    pub(crate) fn host(&self) -> Host {
        match &self.root {
            Some(root) => Host::rooted(root),
            None => Host::live(),
        }
    }

    /// Only root may change this host; checked before the journal is even opened.
    pub(crate) fn require_root(&self, what: &str) -> anyhow::Result<()> {
        if self.root.is_none() {
            // /proc/self belongs to the effective user.
            let uid = std::fs::metadata("/proc/self").context("cannot read /proc/self")?.uid();
            if uid != 0 {
                bail!(
                    "{what} changes the running host and needs root (running as uid {uid}); nothing was written"
                );
            }
        }
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct PrepareArgs {
    /// The VM's libvirt domain XML (`-` reads it from stdin, as the libvirt hook passes it).
    #[arg(long, value_name = "FILE", conflicts_with = "domain")]
    xml: Option<PathBuf>,
    /// Read the domain's XML from libvirt.
    #[arg(long, value_name = "NAME")]
    domain: Option<String>,
    /// libvirt connection URI for --domain.
    #[arg(long, requires = "domain")]
    connect: Option<String>,
    /// The name the changes are journaled under (default: the domain's name).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    needs: NeedsFlags,
    /// A process of the VM (QEMU) that keeps the VM's CPUs (repeatable).
    #[arg(long, value_name = "PID")]
    pid: Vec<u32>,
    /// Make the changes. Without it, nothing is written.
    #[arg(long)]
    apply: bool,
    /// How the plan is printed without --apply.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    place: JournalPlace,
    /// Test-only failpoint: die by SIGKILL after this many journal steps.
    #[arg(long, hide = true)]
    test_kill_at_step: Option<usize>,
}

pub(crate) fn run(command: HostCommand) -> anyhow::Result<Outcome> {
    match command {
        HostCommand::Prepare(args) => prepare(*args),
        HostCommand::Release(args) => release_journals(&args, &HOST_JOURNALS),
        HostCommand::Status { format, place } => status(format, &place),
    }
}

fn read_xml(args: &PrepareArgs) -> anyhow::Result<Option<(String, String)>> {
    if let Some(domain) = &args.domain {
        return crate::args::read_domain_xml(domain, args.connect.as_deref()).map(Some);
    }
    let Some(path) = &args.xml else { return Ok(None) };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the domain XML from stdin")?;
        return Ok(Some(("<stdin>".to_string(), text)));
    }
    let text = kvmtune::config::inputs::read_input(path).map_err(anyhow::Error::msg)?;
    Ok(Some((path.display().to_string(), text)))
}

/// The flags over the domain (where one is given): its name, pins and hugepages fill in what
/// the flags leave out.
fn request(args: &PrepareArgs, host: &Host) -> anyhow::Result<PrepareRequest> {
    let asked = args.needs.needs();
    let (name, needs) = match read_xml(args)? {
        Some((origin, text)) => {
            let config =
                kvmtune::config::libvirt::parse(&origin, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
            let needs = config.resolve_needs(&asked, kvmtune::host::memory::default_hugepage_kib(host))?;
            (config.name.clone(), needs)
        }
        // Without a domain there are no pins or memory to take anything from.
        None => {
            let hugepages = match asked.hugepages {
                Hugepages::FromDomain => Hugepages::None,
                other => other,
            };
            (None, HostNeeds { cpus: Some(asked.cpus.clone().unwrap_or_default()), hugepages, ..asked })
        }
    };
    let vm = args.name.clone().or(name).context("name the VM: --name, or a domain XML with <name>")?;
    Ok(PrepareRequest { vm, needs, vm_pids: args.pid.clone(), self_pid: std::process::id() })
}

fn prepare(args: PrepareArgs) -> anyhow::Result<Outcome> {
    if args.apply {
        args.place.require_root("host prepare --apply")?;
    }
    let host = args.place.host();
    let request = request(&args, &host)?;
    // Without --apply nothing is written, not even the journal directory.
    let journal = match (args.apply, args.place.journal_dir.is_dir()) {
        (true, _) => Some(Journal::open(&args.place.journal_dir, &host)?),
        (false, true) => match Journal::open_to_read(&args.place.journal_dir, &host) {
            // A user's dry run still shows the plan, short of what root's journals would add.
            Err(JournalError::RootOnly(dir)) => {
                eprintln!(
                    "kvmtune: warning: the journals in {} are root's; this plan leaves out the VMs already prepared there",
                    kvmtune::values::escape::terminal(&dir.display().to_string())
                );
                None
            }
            opened => Some(opened?),
        },
        (false, false) => None,
    };
    let prepared = match &journal {
        Some(journal) => journal.status()?,
        None => Vec::new(),
    };
    let plan = prepare::plan(&request, &prepared, &host)?;

    if !args.apply {
        let text = match args.format {
            Format::Json => serde_json::to_string_pretty(&plan)? + "\n",
            Format::Text => host_changes::prepare_plan(&plan),
        };
        print_out(&text)?;
        return Ok(Outcome::Clean);
    }
    let mut journal = journal.expect("opened for --apply");
    if let Some(step) = args.test_kill_at_step {
        journal = journal.kill_at_step(step);
    }
    print_out(&host_changes::prepare_applied(&prepare::apply(&journal, &plan, &host)?))?;
    Ok(Outcome::Clean)
}

/// `release (NAME | --all)`, as `host` and `vfio` take it.
#[derive(Args)]
pub(crate) struct ReleaseArgs {
    /// The VM's name, as given when its changes were made.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub(crate) name: Option<String>,
    /// Release every VM, newest first.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    pub(crate) place: JournalPlace,
}

/// Which journals a release command undoes: `host release NAME` the VM's host journal (with
/// `--all`, every journal there is), `vfio release NAME` its devices' (with `--all`, every VM's).
pub(crate) struct JournalFamily {
    pub(crate) command: &'static str,
    /// The journal of a VM named on the command line.
    pub(crate) named: JournalKind,
    /// The journals `--all` releases.
    pub(crate) all: &'static [JournalKind],
}

pub(crate) const HOST_JOURNALS: JournalFamily = JournalFamily {
    command: "host release",
    named: JournalKind::Host,
    all: &[JournalKind::Host, JournalKind::Devices],
};

/// Undoes the named VM's journal, or every journal of `family` (newest first, so that each
/// release restores exactly what the one before it found).
pub(crate) fn release_journals(args: &ReleaseArgs, family: &JournalFamily) -> anyhow::Result<Outcome> {
    let place = &args.place;
    place.require_root(family.command)?;
    let host = place.host();
    let not_there = |vm: &str| {
        anyhow::anyhow!("VM `{vm}` has nothing to release (no journal in {})", place.journal_dir.display())
    };
    if !place.journal_dir.is_dir() {
        return match &args.name {
            Some(vm) => Err(not_there(vm)),
            None => print_out("nothing to release\n").map(|()| Outcome::Clean),
        };
    }
    let journal = Journal::open(&place.journal_dir, &host)?;
    let mut names: Vec<(u64, JournalKind, String)> = match &args.name {
        Some(vm) => vec![(0, family.named, vm.clone())],
        None => journal
            .status()?
            .into_iter()
            .filter(|j| family.all.contains(&j.kind))
            .map(|j| (j.order, j.kind, j.vm))
            .collect(),
    };
    names.sort_by_key(|(order, ..)| std::cmp::Reverse(*order));
    let mut text = String::new();
    for (_, kind, vm) in names {
        let label = kind.label(&vm);
        let name = kvmtune::values::escape::terminal(&label);
        match journal.release(kind, &vm, &host) {
            Ok(Released::Restored(count)) => {
                text += &format!("released {name}: {} undone\n", plural(count, "change"))
            }
            Ok(Released::SetAside(path)) => {
                text += &format!(
                    "{name}: journal from an earlier boot, whose changes went with it; set aside as {}\n",
                    path.display()
                )
            }
            Err(JournalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_there(&vm));
            }
            Err(error) => return Err(error.into()),
        }
    }
    if text.is_empty() {
        text = "nothing to release\n".to_string();
    }
    print_out(&text)?;
    Ok(Outcome::Clean)
}

fn status(format: Format, place: &JournalPlace) -> anyhow::Result<Outcome> {
    let (journals, unreadable) = match place.journal_dir.is_dir() {
        true => {
            let journal = Journal::open_to_read(&place.journal_dir, &place.host())?;
            (journal.status()?, journal.unreadable()?)
        }
        false => (Vec::new(), Vec::new()),
    };
    // Each on its own line on stderr: the others' status stands.
    for (path, why) in &unreadable {
        eprintln!(
            "kvmtune: warning: {} cannot be read and is left alone: {}",
            kvmtune::values::escape::terminal(&path.display().to_string()),
            kvmtune::values::escape::terminal(&why.to_string())
        );
    }
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&journals)? + "\n",
        Format::Text => host_changes::status(&journals),
    };
    print_out(&text)?;
    Ok(Outcome::Clean)
}
