//! `kvmtune tune`: plan a Windows VM for this host and emit it.

use clap::ValueEnum;
use kvmtune::analysis::Workload;
use kvmtune::analysis::planner::{self, Plan, PlanRequest, VmRequest, existing};
use kvmtune::config::model::WindowsVersion;
use kvmtune::host::{self, Fact, Host, HostFacts};
use kvmtune::output::emit::{EmitFormat, emit};
use kvmtune::output::existing_vm::{self, ExistingVm};
use kvmtune::output::plan_text;
use kvmtune::values::Version;
use kvmtune::values::{CpuSet, PciAddress};

use crate::args::{
    Format, HostArgs, VmConfigArgs, VmSpec, WorkloadArg, parse_cpu_list, parse_memory, parse_vm_spec,
    parse_windows,
};
use crate::{Outcome, print_out};

#[derive(clap::Args)]
pub(crate) struct TuneArgs {
    /// An existing VM to tune: libvirt XML (edited in place of its changed lines only), a QEMU
    /// command line or a Proxmox conf. Its vCPU count, memory and devices are kept.
    #[command(flatten)]
    existing: VmConfigArgs,
    /// With an existing libvirt VM: print the change as a unified diff instead of the new XML.
    #[arg(long)]
    diff: bool,
    #[command(flatten)]
    host: HostArgs,
    /// The kernel release the VM will run on, where the host facts lack it or it will change
    /// (`6.1`). Used for enlightenments only where /dev/kvm could not be asked.
    #[arg(long, value_name = "VERSION")]
    kernel_version: Option<Version>,
    /// The QEMU release the VM will run on (default: the probed one).
    #[arg(long, value_name = "VERSION")]
    qemu_version: Option<Version>,
    /// The libvirt release the VM will be defined in (default: the probed one).
    #[arg(long, value_name = "VERSION")]
    libvirt_version: Option<Version>,
    /// The guest's Windows version: 11, 10, 8, 7, xp, 2016, 2019, 2022, 2025 (default: the
    /// existing VM's, else 11).
    #[arg(long, value_parser = parse_windows)]
    windows: Option<WindowsVersion>,
    #[arg(long, value_enum, default_value_t = WorkloadArg::Gaming)]
    workload: WorkloadArg,
    /// The VM's name.
    #[arg(long, default_value = "win11")]
    name: String,
    /// vCPUs; default: the largest set inside one L3 group that leaves the housekeeping CPUs.
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory: `16G`, `8192M`, or MiB (default: the existing VM's, else 16G).
    #[arg(long, value_parser = parse_memory)]
    memory: Option<u64>,
    /// A PCI device to pass through (`0000:01:00.0` or `01:00.0`); repeat for more.
    #[arg(long = "device", value_name = "ADDRESS", value_parser = PciAddress::parse_lenient)]
    devices: Vec<PciAddress>,
    /// The VM live-migrates between hosts (no invtsc, no host-only features).
    #[arg(long)]
    migratable: bool,
    /// The guest runs a hypervisor itself: WSL2, VBS/HVCI or the Hyper-V role.
    #[arg(long)]
    nested: bool,
    /// Host CPUs for the host's own work (a cpulist such as `0,8`).
    #[arg(long, value_name = "CPULIST", value_parser = parse_cpu_list)]
    housekeeping: Option<CpuSet>,
    /// Several VMs packed on this host without sharing a CPU: `--vm NAME:VCPUS`, repeated.
    #[arg(long = "vm", value_name = "NAME:VCPUS", value_parser = parse_vm_spec,
          conflicts_with_all = ["vcpus", "name", "file", "domain"])]
    vms: Vec<VmSpec>,
    /// What to print after the plan of a new VM (an existing VM's change is in its own format).
    #[arg(long, value_enum, default_value_t = Emit::LIBVIRT, conflicts_with_all = ["file", "domain"])]
    emit: Emit,
    /// The plan (and for an existing VM the change) as text or JSON.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// `--emit`: one of the library's formats (their names are [`EmitFormat::key`]), all, or none.
/// A format added to the library is a choice here without a line in this file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Emit {
    One(EmitFormat),
    All,
    None,
}

impl Emit {
    const LIBVIRT: Emit = Emit::One(EmitFormat::Libvirt);

    /// The formats this choice prints, in the order they are printed.
    fn formats(self) -> Vec<EmitFormat> {
        match self {
            Emit::One(format) => vec![format],
            Emit::All => EmitFormat::ALL.to_vec(),
            Emit::None => Vec::new(),
        }
    }
}

impl ValueEnum for Emit {
    fn value_variants<'a>() -> &'a [Self] {
        static CHOICES: std::sync::LazyLock<Vec<Emit>> = std::sync::LazyLock::new(|| {
            EmitFormat::ALL.iter().map(|f| Emit::One(*f)).chain([Emit::All, Emit::None]).collect()
        });
        &CHOICES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Emit::One(format) => format.key(),
            Emit::All => "all",
            Emit::None => "none",
        }))
    }
}

const DEFAULT_MEMORY_MIB: u64 = 16 * 1024;

/// The releases given on the command line replace the probed ones.
fn with_stack_versions(mut host: HostFacts, args: &TuneArgs) -> HostFacts {
    if let Some(kernel) = args.kernel_version {
        host.kernel.release = Fact::Known(format!("{kernel} (--kernel-version)"));
    }
    if let Some(qemu) = args.qemu_version {
        host.software.qemu = Fact::Known(qemu);
    }
    if let Some(libvirt) = args.libvirt_version {
        host.software.libvirt = Fact::Known(libvirt);
    }
    host
}

fn request(args: &TuneArgs, windows: WindowsVersion) -> anyhow::Result<PlanRequest> {
    let vms = if args.vms.is_empty() {
        vec![VmRequest {
            name: args.name.clone(),
            vcpus: args.vcpus,
            memory_mib: args.memory.unwrap_or(DEFAULT_MEMORY_MIB),
            devices: args.devices.clone(),
        }]
    } else {
        if !args.devices.is_empty() {
            anyhow::bail!(
                "contradicting options: --device applies to one VM; with --vm, plan the VMs one device at a time"
            );
        }
        args.vms
            .iter()
            .map(|spec| VmRequest {
                name: spec.name.clone(),
                vcpus: Some(spec.vcpus),
                memory_mib: args.memory.unwrap_or(DEFAULT_MEMORY_MIB),
                devices: Vec::new(),
            })
            .collect()
    };
    Ok(PlanRequest {
        windows,
        workload: Workload::from(args.workload),
        migratable: args.migratable,
        nested: args.nested,
        housekeeping: args.housekeeping.clone(),
        vms,
    })
}

pub(crate) fn run(args: TuneArgs) -> anyhow::Result<Outcome> {
    let existing = if args.existing.given() {
        let (path, text) = args.existing.read()?;
        let config = kvmtune::config::read(&path, &text)?;
        Some((path, text, config))
    } else {
        if args.diff {
            anyhow::bail!("contradicting options: --diff needs an existing VM (FILE or --domain)");
        }
        None
    };
    let windows = match (args.windows, &existing) {
        (Some(windows), _) => windows,
        (None, Some((_, _, config))) => config.windows_version().unwrap_or(WindowsVersion::Win11),
        (None, None) => WindowsVersion::Win11,
    };
    let mut request = request(&args, windows)?;
    let (host, source) = match args.host.load()? {
        Some(host) => {
            let source = host.source.clone();
            (host, source)
        }
        None => (host::probe(&Host::live()), "this host (live)".to_string()),
    };
    let host = with_stack_versions(host, &args);
    let mut device_note = None;
    if let Some((_, _, config)) = &existing {
        let (vm, note) = existing::request_from_config(config, &host, args.vcpus, args.memory);
        request.vms = vec![vm];
        request.migratable = args.migratable || config.cpu_migratable();
        device_note = note;
    }
    let mut plan = planner::plan(&host, &request)?;
    plan.decisions.extend(device_note);
    if let Some((path, text, config)) = &existing {
        let vm = ExistingVm { path, text, config };
        return tune_existing(&args, &plan, &host, windows, &vm, &source);
    }
    let formats = args.emit.formats();
    let out = match args.format {
        Format::Json => {
            let mut document = serde_json::json!({ "plan": plan });
            for format in formats {
                document[format.key()] = plan.vms.iter().map(|vm| emit(format, vm, windows).json).collect();
            }
            format!("{}\n", serde_json::to_string_pretty(&document)?)
        }
        Format::Text => {
            let mut out = plan_text::render(&plan, &host, &source);
            for vm in &plan.vms {
                for format in &formats {
                    out.push_str(&emit(*format, vm, windows).text);
                }
            }
            out
        }
    };
    print_out(&out)?;
    Ok(Outcome::Clean)
}

/// An existing VM: the plan, then the change in the VM's own format (in JSON, both as values).
fn tune_existing(
    args: &TuneArgs,
    plan: &Plan,
    host: &HostFacts,
    windows: WindowsVersion,
    vm: &ExistingVm,
    source: &str,
) -> anyhow::Result<Outcome> {
    let change = existing_vm::change(vm, &plan.vms[0], windows)?;
    let out = match args.format {
        Format::Json => {
            let document = serde_json::json!({ "plan": plan, "change": change });
            format!("{}\n", serde_json::to_string_pretty(&document)?)
        }
        Format::Text => plan_text::render(plan, host, source) + &change.text(args.diff),
    };
    print_out(&out)?;
    Ok(Outcome::Clean)
}
