//! Raw QEMU arguments passed around libvirt's model (`<qemu:commandline>`): what they override.

use super::prelude::*;

pub(super) const ARG001: VmRule = VmRule {
    check: commandline_overrides,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "ARG001",
        name: "qemu-commandline-override",
        category: Category::QemuArgs,
        severity: Severity::Warning,
        title: "<qemu:commandline> overrides what libvirt generated",
        explanation: "libvirt appends <qemu:commandline> arguments after its own, and QEMU keeps the last of an option: a -cpu there replaces libvirt's whole -cpu, every enlightenment from <hyperv> and every <cpu> feature with it (a `-cpu host,kvm=off` copied from an old guide leaves Windows with none); a -smp replaces the vCPU count and topology libvirt's pins are written for. `-overcommit cpu-pm=on` stops intercepting HLT and MWAIT, so a vCPU never leaves its host CPU: anything else scheduled there, the host's housekeeping, the emulator, another vCPU, waits until the guest is preempted. -machine and -global merge their properties over libvirt's. kvmtune reads these arguments into the model the way QEMU applies them, so the other rules see what the guest really gets; this rule says where it comes from.",
        example: "<qemu:arg value='-cpu'/><qemu:arg value='host,kvm=off'/> beside a <hyperv> block",
        fix: "move the settings into libvirt's own XML (<hyperv>, <cpu>, <vcpu>, <features><kvm><hidden/>) and drop the override",
        fix_safety: Applicability::Manual,
        source: "QEMU qemu-options (later -cpu/-smp replace earlier ones; -overcommit cpu-pm); libvirt formatdomain and kbase/qemu-passthrough-security (qemu:commandline is appended)",
    },
};

fn commandline_overrides(ctx: &RuleContext) -> Vec<Finding> {
    let config = ctx.config;
    let mut findings = Vec::new();
    for arg in &config.passthrough_args {
        let value = arg.value.as_deref().unwrap_or("");
        let finding = match arg.option.as_str() {
            "cpu" if !arg.dropped.is_empty() => Finding::new(Some(arg.span), format!("-cpu {value} replaces libvirt's -cpu: {} from the XML are dropped ({})", arg.dropped.len(), arg.dropped.join(", ")))
                .with_fix(Fix::manual("express the CPU in <cpu> and <hyperv> and remove the -cpu argument")),
            "cpu" => Finding::new(Some(arg.span), format!("-cpu {value} replaces libvirt's -cpu; the XML had nothing there to lose"))
                .with_severity(Severity::Info),
            "smp" => Finding::new(Some(arg.span), format!("-smp {value} replaces libvirt's vCPU count and topology: <vcpu>, <topology> and the pins no longer describe the guest"))
                .with_fix(Fix::manual("set <vcpu> and <cpu><topology> instead and remove the -smp argument")),
            "overcommit" if value.split(',').any(|p| p == "cpu-pm=on") => {
                let (severity, why) = cpu_pm_risk(ctx);
                Finding::new(Some(arg.span), format!("-overcommit cpu-pm=on: vCPUs never leave their host CPUs; {why}"))
                    .with_severity(severity)
                    .with_fix(Fix::manual("use cpu-pm=on only with every vCPU pinned to a host CPU of its own, away from the emulator, iothreads and the host's housekeeping CPUs"))
            }
            "machine" => Finding::new(Some(arg.span), format!("-machine {value} merges its properties over libvirt's machine type"))
                .with_severity(Severity::Info),
            "global" if !value.starts_with("kvm-apic.vapic") => Finding::new(Some(arg.span), format!("-global {value} sets a device default behind libvirt's back"))
                .with_severity(Severity::Info),
            _ => continue,
        };
        findings.push(finding);
    }
    findings
}

/// How bad cpu-pm=on is for this config: an error where vCPUs share host CPUs with anything,
/// information where each has a CPU of its own.
fn cpu_pm_risk(ctx: &RuleContext) -> (Severity, String) {
    let pinning = &ctx.config.pinning;
    let running = ctx.config.running_vcpus();
    if running.iter().any(|v| !pinning.vcpupin.iter().any(|p| p.id == v)) {
        return (
            Severity::Error,
            "some vCPUs are not pinned, so they sit on CPUs the host and each other need".to_string(),
        );
    }
    let vcpu_cpus = ctx.vcpu_cpus();
    let pinned_total: usize = pinning.vcpupin.iter().map(|p| p.cpus.len()).sum();
    if pinned_total > vcpu_cpus.len() {
        return (Severity::Error, "vCPUs share host CPUs with each other".to_string());
    }
    let others = pinning
        .iothreadpin
        .iter()
        .map(|p| p.cpus.clone())
        .chain(pinning.emulatorpin.as_ref().map(|e| e.value.clone()))
        .fold(CpuSet::new(), |all, cpus| all.union(&cpus));
    let shared = others.intersection(&vcpu_cpus);
    if !shared.is_empty() {
        return (
            Severity::Error,
            format!(
                "the emulator or iothreads share host CPUs {shared} with them and wait until the guest is preempted"
            ),
        );
    }
    (Severity::Info, "each vCPU has host CPUs of its own here, the one setup where this pays".to_string())
}
