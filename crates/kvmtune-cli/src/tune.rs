//! `kvmtune tune`: plan a Windows VM for this host and emit it.

use std::fmt::Write as _;

use anyhow::Context;
use clap::ValueEnum;
use kvmtune::analysis::planner::{self, Decision, Plan, PlanRequest, VmRequest};
use kvmtune::analysis::vm_rules::Workload;
use kvmtune::config::model::WindowsVersion;
use kvmtune::host::cpulist::CpuSet;
use kvmtune::host::{self, LiveHost};
use kvmtune::output::{kubevirt, libvirt_domain, openstack, proxmox, qemu_command};

use crate::{HostArgs, Outcome, WorkloadArg, load_host, print_out};

#[derive(clap::Args)]
pub(crate) struct TuneArgs {
    #[command(flatten)]
    host: HostArgs,
    /// The guest's Windows version: 11, 10, 8, 7, xp, 2016, 2019, 2022, 2025.
    #[arg(long, default_value = "11")]
    windows: String,
    #[arg(long, value_enum, default_value_t = WorkloadArg::Gaming)]
    workload: WorkloadArg,
    /// The VM's name.
    #[arg(long, default_value = "win11")]
    name: String,
    /// vCPUs; default: the largest set inside one L3 group that leaves the housekeeping CPUs.
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory: `16G`, `8192M`, or MiB.
    #[arg(long, default_value = "16G", value_parser = parse_memory)]
    memory: u64,
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
    #[arg(long = "vm", value_name = "NAME:VCPUS", conflicts_with_all = ["vcpus", "name"])]
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

fn request(args: &TuneArgs, windows: WindowsVersion) -> anyhow::Result<PlanRequest> {
    let vms = if args.vms.is_empty() {
        vec![VmRequest {
            name: args.name.clone(),
            vcpus: args.vcpus,
            memory_mib: args.memory,
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
                    memory_mib: args.memory,
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

pub(crate) fn run(args: TuneArgs) -> anyhow::Result<Outcome> {
    let windows = WindowsVersion::parse(&args.windows).with_context(|| {
        format!(
            "--windows {}: not a Windows version kvmtune knows (11, 10, 8, 7, xp, 2016, 2019, 2022, 2025)",
            args.windows
        )
    })?;
    let request = request(&args, windows)?;
    let (host, source) = match load_host(&args.host)? {
        Some(host) => {
            let source = host.source.clone();
            (host, source)
        }
        None => (host::probe(&LiveHost), "this host (live)".to_string()),
    };
    let plan = planner::plan(&host, &request)?;
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
