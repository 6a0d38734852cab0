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

pub(super) const ARG002: VmRule = VmRule {
    check: commandline_qemu_refuses,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "ARG002",
        name: "qemu-commandline-broken",
        category: Category::QemuArgs,
        severity: Severity::Error,
        title: "<qemu:commandline> arguments QEMU refuses or misreads",
        explanation: "libvirt hands <qemu:commandline> to QEMU word by word, after its own arguments, and QEMU's parser reads them as it reads any command line: an option it does not know (often one removed years ago, such as -no-hpet) stops QEMU with \"invalid option\"; an option whose value is missing stops it with \"requires an argument\"; a word that is no option is taken as a disk image, which QEMU fails to open. In each case the VM does not start, and libvirt only shows QEMU's message. An option with a value also takes the next word whatever it is, so a missing value swallows the following option.",
        example: "<qemu:arg value='-no-hpet'/> or <qemu:arg value='host,kvm=off'/> without the -cpu before it",
        fix: "write each option with its value in two <qemu:arg> elements, in order; use the replacement of a removed option (or libvirt's own XML for it)",
        fix_safety: Applicability::Manual,
        source: "QEMU system/vl.c (lookup_opt: \"invalid option\", \"requires an argument\"; non-option words are disk images); qemu-system-x86_64 -help (QEMU 10.0, checked in tests); libvirt docs/drvqemu.rst (Pass-through of arbitrary qemu commands)",
    },
};

fn commandline_qemu_refuses(ctx: &RuleContext) -> Vec<Finding> {
    use crate::knowledge::qemu_options::{Arity, Known, lookup};
    let args = &ctx.config.passthrough_args;
    let mut findings = Vec::new();
    for arg in args {
        if arg.option.is_empty() {
            let word = arg.value.as_deref().unwrap_or("");
            findings.push(Finding::new(Some(arg.span), format!("`{word}` is no option: QEMU takes it as a disk image, fails to open it, and the VM does not start"))
                .with_fix(Fix::manual("put the option it belongs to before it, or remove it")));
            continue;
        }
        match lookup(&arg.option) {
            Known::Unknown => findings.push(
                Finding::new(
                    Some(arg.span),
                    format!(
                        "-{}: QEMU knows no such option (\"invalid option\"): the VM does not start",
                        arg.option
                    ),
                )
                .with_fix(Fix::manual(
                    "remove it, or spell the option as `qemu-system-x86_64 -help` lists it",
                )),
            ),
            Known::Refused(refused) => findings.push(
                Finding::new(
                    Some(arg.span),
                    format!(
                        "-{}: QEMU refuses it (\"{}\"): the VM does not start",
                        arg.option, refused.answer
                    ),
                )
                .with_fix(Fix::manual(format!("use {} instead", refused.instead))),
            ),
            Known::Accepted(Arity::Value) if arg.value.is_none() => findings.push(
                Finding::new(
                    Some(arg.span),
                    format!(
                        "-{} needs a value and is the last argument: QEMU stops (\"requires an argument\")",
                        arg.option
                    ),
                )
                .with_fix(Fix::manual("add its value as the next <qemu:arg>")),
            ),
            Known::Accepted(Arity::Value) => {
                // The word taken as the value is itself an option: QEMU swallows it.
                if let Some(value) = arg.value.as_deref().filter(|v| {
                    v.starts_with('-') && !matches!(lookup(v.trim_start_matches('-')), Known::Unknown)
                }) {
                    findings.push(Finding::new(Some(arg.span), format!("-{} takes `{value}` as its value: its own value is missing, and the option after it is swallowed", arg.option))
                        .with_fix(Fix::manual("add the missing value between them")));
                }
            }
            Known::Accepted(Arity::Flag) => {}
        }
    }
    findings
}

pub(super) const ARG003: VmRule = VmRule {
    check: commandline_bypasses_libvirt,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "ARG003",
        name: "qemu-commandline-bypasses-libvirt",
        category: Category::QemuArgs,
        severity: Severity::Warning,
        title: "<qemu:commandline> does what libvirt's XML should",
        explanation: "Two arguments often passed around libvirt do something other than their authors expect. `-device vfio-pci,host=...` hands a device to the guest behind libvirt's back: libvirt neither binds it to vfio-pci and back (managed='yes'), nor resets it, nor labels /dev/vfio for QEMU's sandbox, so the VM fails to start or leaves the device bound wrong; <hostdev> does all of that. A `-rtc` there does not replace the `-rtc` libvirt writes from <clock>: QEMU merges repeated -rtc options, the later keys winning, so only the keys given change (base= overriding <clock offset>, driftfix= the RTC tick policy).",
        example: "<qemu:arg value='-device'/><qemu:arg value='vfio-pci,host=01:00.0'/>",
        fix: "use <hostdev mode='subsystem' type='pci' managed='yes'> for the device; <clock> and its <timer name='rtc'> for the RTC",
        fix_safety: Applicability::Manual,
        source: "libvirt docs/formatdomain.rst Host device assignment (managed); libvirt docs/drvqemu.rst (Pass-through of arbitrary qemu commands); QEMU system/vl.c qemu_rtc_opts (merge_lists)",
    },
};

fn commandline_bypasses_libvirt(ctx: &RuleContext) -> Vec<Finding> {
    let mut findings = Vec::new();
    for arg in &ctx.config.passthrough_args {
        let value = arg.value.as_deref().unwrap_or("");
        match arg.option.as_str() {
            "device" if value.split(',').next().is_some_and(|driver| driver == "vfio-pci") => findings.push(
                Finding::new(Some(arg.span), format!("-device {value} passes a device behind libvirt's back: no managed binding to vfio-pci, no reset, no /dev/vfio label for QEMU"))
                    .with_fix(Fix::manual("describe the device as <hostdev mode='subsystem' type='pci' managed='yes'> and remove the -device")),
            ),
            "rtc" => findings.push(
                Finding::new(Some(arg.span), format!("-rtc {value} merges into the -rtc libvirt writes from <clock> (QEMU merges repeated -rtc options): only these keys change"))
                    .with_severity(Severity::Info)
                    .with_fix(Fix::manual("set the RTC in <clock> (offset, <timer name='rtc'>) and remove the -rtc")),
            ),
            _ => {}
        }
    }
    findings
}
