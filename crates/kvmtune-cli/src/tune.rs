//! `kvmtune tune`: plan a Windows VM for this host and emit it.

use std::fmt::Write as _;

use anyhow::Context;
use clap::ValueEnum;
use kvmtune::analysis::planner::{self, Decision, Plan, PlanRequest, VmRequest, existing};
use kvmtune::analysis::vm_rules::Workload;
use kvmtune::config::model::WindowsVersion;
use kvmtune::host::cpulist::CpuSet;
use kvmtune::host::software::Version;
use kvmtune::host::{self, Fact, HostFacts, LiveHost};
use kvmtune::output::{kubevirt, libvirt_domain, openstack, proxmox, qemu_command};

use crate::{HostArgs, Outcome, WorkloadArg, load_host, print_out};

#[derive(clap::Args)]
pub(crate) struct TuneArgs {
    /// An existing VM to tune: libvirt XML (edited in place of its changed lines only), a QEMU
    /// command line or a Proxmox conf. Its vCPU count, memory and devices are kept.
    #[command(flatten)]
    existing: crate::VmConfigArgs,
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
    #[arg(long)]
    windows: Option<String>,
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
    #[arg(long = "device", value_name = "ADDRESS")]
    devices: Vec<String>,
    /// The VM live-migrates between hosts (no invtsc, no host-only features).
    #[arg(long)]
    migratable: bool,
    /// The guest runs a hypervisor itself: WSL2, VBS/HVCI or the Hyper-V role.
    #[arg(long)]
    nested: bool,
    /// Host CPUs for the host's own work (a cpulist such as `0,8`).
    #[arg(long, value_name = "CPULIST")]
    housekeeping: Option<String>,
    /// Several VMs packed on this host without sharing a CPU: `--vm NAME:VCPUS`, repeated.
    #[arg(long = "vm", value_name = "NAME:VCPUS", conflicts_with_all = ["vcpus", "name", "file", "domain"])]
    vms: Vec<String>,
    /// What to print after the plan.
    #[arg(long, value_enum, default_value_t = Emit::Libvirt)]
    emit: Emit,
    /// The plan itself as text or JSON.
    #[arg(long, value_enum, default_value_t = crate::Format::Text)]
    format: crate::Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Emit {
    Libvirt,
    Qemu,
    Proxmox,
    Kubevirt,
    Openstack,
    All,
    None,
}

impl Emit {
    fn wants(self, format: Emit) -> bool {
        self == format || self == Emit::All
    }
}

const DEFAULT_MEMORY_MIB: u64 = 16 * 1024;

fn parse_memory(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        Some((at, 'G' | 'g')) => (&text[..at], 1024),
        Some((at, 'M' | 'm')) => (&text[..at], 1),
        _ => (text, 1),
    };
    let value: u64 = number
        .trim_end_matches(['i', 'B'])
        .parse()
        .map_err(|_| format!("`{text}` is not a memory size (16G, 8192M)"))?;
    match value.checked_mul(scale) {
        Some(mib) if mib >= 256 => Ok(mib),
        _ => Err(format!("`{text}`: a Windows VM needs at least 256 MiB")),
    }
}

/// `iothread=1` for each virtio disk of an existing Proxmox VM, and for SCSI disks when the
/// controller is already virtio-scsi (qemu-server gives SCSI disks an iothread only with
/// `scsihw: virtio-scsi-single`, the same guest driver as virtio-scsi-pci). An LSI or MegaRAID
/// controller stays: Windows may lack the virtio-scsi driver it would need to boot.
fn proxmox_disk_iothreads(current: &std::collections::BTreeMap<&str, &str>) -> Vec<(String, String)> {
    let scsihw = current.get("scsihw").copied().unwrap_or("lsi");
    let scsi_ok = scsihw.starts_with("virtio-scsi");
    let mut changes = Vec::new();
    for (key, value) in current {
        let bus = key.trim_end_matches(|c: char| c.is_ascii_digit());
        let is_disk = bus != *key && (bus == "virtio" || (bus == "scsi" && scsi_ok));
        let options: Vec<&str> = value.split(',').collect();
        if !is_disk || options.contains(&"media=cdrom") || options.contains(&"iothread=1") {
            continue;
        }
        let kept: Vec<&str> = options.into_iter().filter(|o| !o.starts_with("iothread=")).collect();
        changes.push((key.to_string(), format!("{},iothread=1", kept.join(","))));
    }
    if changes.iter().any(|(k, _)| k.starts_with("scsi")) && scsihw != "virtio-scsi-single" {
        changes.push(("scsihw".to_string(), "virtio-scsi-single".to_string()));
    }
    changes
}

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
            .map(|spec| {
                let (name, vcpus) =
                    spec.split_once(':').with_context(|| format!("`--vm {spec}`: expected NAME:VCPUS"))?;
                let vcpus: u32 =
                    vcpus.parse().with_context(|| format!("`--vm {spec}`: `{vcpus}` is not a vCPU count"))?;
                Ok(VmRequest {
                    name: name.to_string(),
                    vcpus: Some(vcpus),
                    memory_mib: args.memory.unwrap_or(DEFAULT_MEMORY_MIB),
                    devices: Vec::new(),
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let housekeeping = args
        .housekeeping
        .as_deref()
        .map(|list| {
            CpuSet::parse_list(list).with_context(|| format!("--housekeeping {list}: not a CPU list"))
        })
        .transpose()?;
    Ok(PlanRequest {
        windows,
        workload: Workload::from(args.workload),
        migratable: args.migratable,
        nested: args.nested,
        housekeeping,
        vms,
    })
}

fn render_decision(out: &mut String, decision: &Decision) {
    let _ = writeln!(out, "  {:<14} {}", decision.topic, decision.choice);
    let _ = writeln!(out, "  {:<14}   why: {}", "", decision.reason);
    let _ = writeln!(out, "  {:<14}   source: {}", "", decision.source);
}

fn render_plan(plan: &Plan, host_source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kvmtune tune: {} {} on {host_source}", plan.windows, plan.workload.to_lowercase());
    let _ = writeln!(out);
    let _ = writeln!(out, "host");
    for decision in &plan.decisions {
        render_decision(&mut out, decision);
    }
    for vm in &plan.vms {
        let _ = writeln!(out);
        let _ = writeln!(out, "VM {}: {} vCPUs, {} MiB", vm.name, vm.vcpus, vm.memory_mib);
        for decision in &vm.decisions {
            render_decision(&mut out, decision);
        }
    }
    out
}

fn parse_windows(text: &str) -> anyhow::Result<WindowsVersion> {
    WindowsVersion::parse(text).with_context(|| {
        format!(
            "--windows {text}: not a Windows version kvmtune knows (11, 10, 8, 7, xp, 2016, 2019, 2022, 2025)"
        )
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
    let windows = match (&args.windows, &existing) {
        (Some(text), _) => parse_windows(text)?,
        (None, Some((_, _, config))) => config.windows_version().unwrap_or(WindowsVersion::Win11),
        (None, None) => WindowsVersion::Win11,
    };
    let mut request = request(&args, windows)?;
    let (host, source) = match load_host(&args.host)? {
        Some(host) => {
            let source = host.source.clone();
            (host, source)
        }
        None => (host::probe(&LiveHost), "this host (live)".to_string()),
    };
    let host = with_stack_versions(host, &args);
    let mut notes = Vec::new();
    if let Some((_, _, config)) = &existing {
        let (vm, device_notes) = existing::request_from_config(config, &host, args.vcpus, args.memory);
        request.vms = vec![vm];
        request.migratable = args.migratable || config.cpu_migratable();
        notes = device_notes;
    }
    let mut plan = planner::plan(&host, &request)?;
    for note in notes {
        plan.decisions.push(Decision::new(
            "devices",
            "placement without a device",
            note,
            "kvmtune probe (PCI devices)",
        ));
    }
    if let Some((path, text, config)) = &existing {
        return tune_existing(&args, &plan, windows, path, text, config, &source);
    }
    let mut out = String::new();
    match args.format {
        crate::Format::Json => {
            let mut document = serde_json::json!({ "plan": plan });
            if args.emit.wants(Emit::Libvirt) {
                document["libvirt"] =
                    plan.vms.iter().map(|vm| libvirt_domain::render_domain(vm, windows)).collect();
            }
            if args.emit.wants(Emit::Qemu) {
                document["qemu"] = plan.vms.iter().map(|vm| qemu_command::argv(vm, windows)).collect();
            }
            if args.emit.wants(Emit::Proxmox) {
                document["proxmox"] = plan
                    .vms
                    .iter()
                    .map(|vm| {
                        let output = proxmox::render(vm, windows);
                        serde_json::json!({
                            "config": proxmox::config_text(&output),
                            "qm_set": proxmox::qm_set(&output),
                            "hookscript": output.hookscript,
                            "not_expressible": output.not_expressible,
                        })
                    })
                    .collect();
            }
            if args.emit.wants(Emit::Kubevirt) {
                document["kubevirt"] = plan
                    .vms
                    .iter()
                    .map(|vm| {
                        let manifest = kubevirt::render(vm, windows);
                        serde_json::json!({ "manifest": manifest.document, "not_expressible": manifest.not_expressible })
                    })
                    .collect();
            }
            if args.emit.wants(Emit::Openstack) {
                document["openstack"] = plan
                    .vms
                    .iter()
                    .map(|vm| {
                        let output = openstack::render(vm, windows);
                        serde_json::json!({
                            "flavor_extra_specs": output.flavor.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                            "image_properties": output.image.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                            "not_expressible": output.not_expressible,
                        })
                    })
                    .collect();
            }
            out = format!("{}\n", serde_json::to_string_pretty(&document)?);
        }
        crate::Format::Text => {
            out.push_str(&render_plan(&plan, &source));
            for vm in &plan.vms {
                if args.emit.wants(Emit::Libvirt) {
                    let _ = write!(
                        out,
                        "\n# libvirt domain XML for {} (virsh define FILE)\n{}",
                        vm.name,
                        libvirt_domain::render_domain(vm, windows)
                    );
                }
                if args.emit.wants(Emit::Qemu) {
                    let _ = write!(
                        out,
                        "\n# QEMU launch script for {}\n{}",
                        vm.name,
                        qemu_command::script(vm, windows)
                    );
                }
                if args.emit.wants(Emit::Proxmox) {
                    let output = proxmox::render(vm, windows);
                    let _ = write!(out, "\n# Proxmox VE: /etc/pve/qemu-server/VMID.conf for {}\n", vm.name);
                    for note in &output.not_expressible {
                        let _ = writeln!(out, "# not expressible here: {note}");
                    }
                    out.push_str(&proxmox::config_text(&output));
                    let _ = write!(
                        out,
                        "\n# the same as qm set commands (they also allocate the disks)\n{}",
                        proxmox::qm_set(&output)
                    );
                    let _ = write!(
                        out,
                        "\n# hookscript: /var/lib/vz/snippets/{}\n{}",
                        proxmox::hookscript_name(vm),
                        output.hookscript
                    );
                }
                if args.emit.wants(Emit::Kubevirt) {
                    let _ = write!(out, "\n{}", kubevirt::to_yaml(&kubevirt::render(vm, windows)));
                }
                if args.emit.wants(Emit::Openstack) {
                    let _ = write!(
                        out,
                        "\n# OpenStack Nova for {}\n{}",
                        vm.name,
                        openstack::commands(&openstack::render(vm, windows), &vm.name)
                    );
                }
            }
        }
    }
    print_out(&out)?;
    Ok(Outcome::Clean)
}

/// An existing VM: the plan, then the change in the VM's own format.
fn tune_existing(
    args: &TuneArgs,
    plan: &Plan,
    windows: WindowsVersion,
    path: &str,
    text: &str,
    config: &kvmtune::config::model::VmConfig,
    source: &str,
) -> anyhow::Result<Outcome> {
    use kvmtune::config::model::SourceFormat;
    let vm = &plan.vms[0];
    let mut out = render_plan(plan, source);
    let actions = existing::actions(config, vm);
    match config.format {
        SourceFormat::Libvirt => {
            let edited = kvmtune::config::libvirt_edit::apply_actions(text, &actions)
                .with_context(|| format!("cannot edit {path}"))?;
            let _ = writeln!(out, "\n# {} change(s) to {path}:", actions.len());
            for action in &actions {
                let _ = writeln!(out, "#   {}", action.describe());
            }
            if args.diff {
                out.push_str(&crate::unified_diff(path, text, &edited, "tuned"));
            } else {
                out.push_str(&edited);
            }
        }
        SourceFormat::Proxmox => {
            // Only the keys whose value changes, as qm set commands.
            let output = proxmox::render(vm, windows);
            let current: std::collections::BTreeMap<&str, &str> = text
                .lines()
                .take_while(|l| !l.trim_start().starts_with('['))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect();
            let mut changed: Vec<(String, String)> = output
                .config
                .iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "name" | "efidisk0" | "tpmstate0" | "virtio0" | "net0" | "scsihw")
                })
                .filter(|(k, v)| current.get(k.as_str()) != Some(&v.as_str()))
                .cloned()
                .collect();
            changed.extend(proxmox_disk_iothreads(&current));
            let changes = proxmox::ProxmoxOutput { config: changed, ..output };
            let _ = write!(out, "\n# changes to {path} as qm set commands\n{}", proxmox::qm_set(&changes));
            for note in &changes.not_expressible {
                let _ = writeln!(out, "# not expressible here: {note}");
            }
            let _ = write!(
                out,
                "\n# hookscript: /var/lib/vz/snippets/{}\n{}",
                proxmox::hookscript_name(vm),
                changes.hookscript
            );
        }
        _ => {
            let _ =
                write!(out, "\n# QEMU launch script replacing {path}\n{}", qemu_command::script(vm, windows));
        }
    }
    print_out(&out)?;
    Ok(Outcome::Clean)
}
