//! Timers and the clock: the Hyper-V reference clock, RTC and PIT tick policies, the UTC
//! offset, the HPET only together with hv-stimer, and a PIT whose reinjection turns AVIC off.

use super::prelude::*;
use crate::knowledge::recommended;

fn timer_policy(ctx: &RuleContext, name: &str, policy: &str) -> Vec<Finding> {
    if !ctx.is_windows() {
        return Vec::new();
    }
    let timer = ctx.config.clock.timer(name);
    if timer.is_some_and(|t| t.present == Some(false) || t.tickpolicy.as_deref() == Some(policy)) {
        return Vec::new();
    }
    let found = match timer.and_then(|t| t.tickpolicy.as_deref()) {
        Some(other) => format!("tickpolicy='{other}'"),
        None => "no tickpolicy".to_string(),
    };
    vec![
        Finding::new(
            timer.map(|t| t.span).or(ctx.clock_anchor()),
            format!("{name} timer has {found}; Windows needs tickpolicy='{policy}'"),
        )
        .with_fix(Fix::safe(ConfigEdit::SetTimer {
            name: name.into(),
            attributes: vec![("tickpolicy".into(), policy.into())],
        })),
    ]
}

pub(super) const TIME001: VmRule = VmRule {
    check: hypervclock_missing,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "TIME001",
        name: "hypervclock-missing",
        category: Category::Timers,
        severity: Severity::Warning,
        title: "no Hyper-V reference clock (hv-time)",
        explanation: "hv-time gives Windows the reference TSC page: time reads that cost nanoseconds and never exit. Without it, QueryPerformanceCounter uses the HPET, the ACPI PM timer or the RTC, which QEMU emulates in userspace at microseconds per read. It is also a dependency of hv-stimer.",
        example: "<clock offset='localtime'> without <timer name='hypervclock' present='yes'/>",
        fix: "add <timer name='hypervclock' present='yes'/>",
        fix_safety: Applicability::Safe,
        source: "QEMU docs/system/i386/hyperv.rst hv-time; Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers); Microsoft, Acquiring high-resolution time stamps (learn.microsoft.com/windows/win32/sysinfo/acquiring-high-resolution-time-stamps)",
    },
};

fn hypervclock_missing(ctx: &RuleContext) -> Vec<Finding> {
    let host_lacks_it = ctx.host.is_some_and(|host| offer(host, Hv::Time).is_lacking());
    if !ctx.is_windows() || !ctx.enlightenments_visible() || ctx.on(Hv::Time) || host_lacks_it {
        return Vec::new();
    }
    vec![
        Finding::new(
            ctx.clock_anchor(),
            "no Hyper-V reference clock: every QueryPerformanceCounter falls back to an exiting clock source",
        )
        .with_fix(enable(&[Hv::Time], ctx.config)),
    ]
}

pub(super) const TIME002: VmRule = VmRule {
    check: rtc_without_catchup,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "TIME002",
        name: "rtc-without-catchup",
        category: Category::Timers,
        severity: Severity::Warning,
        title: "RTC tick policy is not catchup",
        explanation: "A Windows guest without synthetic timers keeps time by counting RTC ticks. When a vCPU was descheduled, catchup (QEMU's `-rtc driftfix=slew`) delivers the missed ticks faster until the guest is back in step; other policies let its clock drift. With hv-stimer and hv-time on, Windows times itself with the synthetic timers and the reference TSC page and hardly uses the RTC: the finding is then only information. A `-rtc` in <qemu:commandline> counts too: QEMU merges repeated `-rtc` options, later keys winning, so `-rtc driftfix=slew` there is catchup whatever the XML says.",
        example: "<timer name='rtc' tickpolicy='delay'/>",
        fix: "<timer name='rtc' tickpolicy='catchup'/>",
        fix_safety: Applicability::Safe,
        source: "libvirt docs/formatdomain.rst Time keeping; libvirt src/qemu/qemu_command.c (rtc catchup is -rtc driftfix=slew); QEMU system/vl.c qemu_rtc_opts (merge_lists: repeated -rtc options merge)",
    },
};

fn rtc_without_catchup(ctx: &RuleContext) -> Vec<Finding> {
    // QEMU merges every -rtc into one option set, later keys winning: a driftfix in
    // <qemu:commandline> (placed after libvirt's own -rtc) decides.
    let passed_driftfix = ctx
        .config
        .passthrough_args
        .iter()
        .filter(|arg| arg.option == "rtc")
        .filter_map(|arg| {
            let value = arg.value.as_deref()?;
            let driftfix = value.split(',').filter_map(|kv| kv.strip_prefix("driftfix=")).next_back()?;
            Some((driftfix.to_string(), arg.span))
        })
        .next_back();
    let mut findings = match passed_driftfix {
        Some((driftfix, _)) if driftfix == "slew" => return Vec::new(),
        Some((driftfix, span)) if ctx.is_windows() => vec![Finding::new(
            Some(span),
            format!("-rtc driftfix={driftfix} in <qemu:commandline> overrides the XML's RTC tick policy; Windows needs driftfix=slew (catchup)"),
        )
        .with_fix(Fix::manual("use -rtc driftfix=slew, or remove the -rtc and set <timer name='rtc' tickpolicy='catchup'/>"))],
        Some(_) => Vec::new(),
        None => timer_policy(ctx, "rtc", recommended::RTC_TICKPOLICY),
    };
    // With synthetic timers and the reference TSC page Windows does not count RTC ticks.
    if ctx.enlightenments_visible() && ctx.on(Hv::Stimer) && ctx.on(Hv::Time) {
        for finding in &mut findings {
            finding.severity = Some(Severity::Info);
            finding.message.push_str(" (hv-stimer and hv-time are on, so Windows hardly uses the RTC: a matter of its clock after long pauses, not of speed)");
        }
    }
    findings
}

pub(super) const TIME003: VmRule = VmRule {
    check: pit_policy_refused,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "TIME003",
        name: "pit-tickpolicy-refused",
        category: Category::Timers,
        severity: Severity::Error,
        title: "a PIT tick policy the in-kernel PIT does not have",
        explanation: "KVM's in-kernel PIT knows two policies: reinjecting missed ticks (QEMU's `delay`, its default) and dropping them (`discard`). libvirt writes `-global kvm-pit.lost_tick_policy=delay` for delay, `=discard` for discard, and nothing for catchup, which therefore behaves exactly like delay. merge it refuses (\"unsupported pit tickpolicy\"), so the VM does not start. Windows does not keep time with the PIT once booted, so delay and discard are both fine; earlier kvmtune releases flagged catchup, which was wrong.",
        example: "<timer name='pit' tickpolicy='merge'/>",
        fix: "<timer name='pit' tickpolicy='delay'/> (discard on AMD hosts with AVIC on, TIME007)",
        fix_safety: Applicability::Safe,
        source: "QEMU hw/i386/kvm/i8254.c (lost_tick_policy: delay = reinjection, the default; discard turns reinjection off; others refused); libvirt src/qemu/qemu_command.c and qemu_validate.c; checked with virsh domxml-to-native (libvirt 11.3): delay, catchup (no argument), discard, merge (refused)",
    },
};

fn pit_policy_refused(ctx: &RuleContext) -> Vec<Finding> {
    let Some(pit) = ctx.config.clock.timer("pit") else { return Vec::new() };
    let Some(policy) = pit.tickpolicy.as_deref().filter(|p| !matches!(*p, "delay" | "catchup" | "discard"))
    else {
        return Vec::new();
    };
    vec![
        Finding::new(Some(pit.span), format!("pit timer has tickpolicy='{policy}', which libvirt refuses for the in-kernel PIT: the VM does not start"))
            .with_fix(Fix::safe(ConfigEdit::SetTimer { name: "pit".into(), attributes: vec![("tickpolicy".into(), crate::analysis::avic_inhibitions::pit_tickpolicy(ctx.host, ctx.windows).into())] })),
    ]
}

pub(super) const TIME004: VmRule = VmRule {
    check: utc_clock_offset,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "TIME004",
        name: "utc-clock-offset",
        category: Category::Timers,
        severity: Severity::Warning,
        title: "the clock offset is UTC for a Windows guest",
        explanation: "Windows stores local time in the RTC. With offset='utc' its clock is wrong by the time-zone offset until it syncs, and again after every boot. A guest on a whole physical disk or partition is often a dual-boot installation, where UTC is deliberate (Windows told to keep UTC with the RealTimeIsUniversal registry value, so that Linux and Windows agree); there the finding is only information.",
        example: "<clock offset='utc'/> for a Windows guest",
        fix: "<clock offset='localtime'>",
        fix_safety: Applicability::Unsafe,
        source: "libvirt docs/formatdomain.rst clock offset; ArchWiki System time, UTC in Microsoft Windows (wiki.archlinux.org/title/System_time#UTC_in_Microsoft_Windows)",
    },
};

fn utc_clock_offset(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.is_windows() {
        return Vec::new();
    }
    match &ctx.config.clock.offset {
        Some(offset) if offset.value == recommended::CLOCK_OFFSET || offset.value == "timezone" => Vec::new(),
        offset => {
            let found = offset.as_ref().map_or("utc (the default)", |o| o.value.as_str());
            // A Windows installed on a whole disk or partition is often booted on the bare
            // machine too; there, UTC in the RTC is deliberate (with RealTimeIsUniversal set in
            // Windows) so that both systems agree on one clock.
            let physical = ctx.config.devices.disks.iter().find(|d| d.is_physical_disk());
            let message = match physical {
                Some(disk) => format!(
                    "clock offset is {found} and the guest boots from the host's physical disk {}: if this Windows is dual-booted with RealTimeIsUniversal set, UTC is right; otherwise Windows keeps the RTC in local time",
                    disk.source_dev.as_deref().unwrap_or("?")
                ),
                None => format!("clock offset is {found}; Windows keeps the RTC in local time"),
            };
            let finding = Finding::new(offset.as_ref().map(|o| o.span).or(ctx.clock_anchor()), message)
                .with_fix(Fix::unsafe_(ConfigEdit::SetClockOffset {
                    offset: recommended::CLOCK_OFFSET.into(),
                }));
            vec![if physical.is_some() { finding.with_severity(Severity::Info) } else { finding }]
        }
    }
}

pub(super) const TIME005: VmRule = VmRule {
    check: hpet_off_without_stimer,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "TIME005",
        name: "hpet-off-without-stimer",
        category: Category::Timers,
        severity: Severity::Warning,
        title: "HPET off without hv-stimer",
        explanation: "Turning the HPET off is right only together with hv-stimer. Without synthetic timers Windows falls back from the HPET to the RTC, which costs more: a published Windows 10 guest (see the source) spent most of its exit time on RTC port I/O with HPET off, and less once HPET was back. The best fix is neither: it is hv-stimer, after which the HPET is not used at all.",
        example: "<timer name='hpet' present='no'/> without <stimer state='on'/>",
        fix: "enable hv-stimer (with hv-synic, hv-vpindex, hv-time)",
        fix_safety: Applicability::Safe,
        source: "github.com/huataihuang/cloud-atlas-draft virtual/kvm/debug/kvm_win10_high_sys_debug.md (a Windows 10 guest before and after its HPET was turned back on); virt-manager issue #205; QEMU docs/system/i386/hyperv.rst hv-stimer",
    },
};

fn hpet_off_without_stimer(ctx: &RuleContext) -> Vec<Finding> {
    let Some(hpet) = ctx.config.clock.timer("hpet").filter(|t| t.present == Some(false)) else {
        return Vec::new();
    };
    // XP/2003 keep time with the ACPI PM timer and never use the HPET or hv-stimer.
    if !ctx.is_windows()
        || ctx.windows == Some(WindowsVersion::Xp)
        || (ctx.on(Hv::Stimer) && ctx.enlightenments_visible())
    {
        return Vec::new();
    }
    // With the hypervisor bit hidden Windows sees no enlightenment and times itself as on bare
    // metal (TSC, local APIC timer); HV010 says what hiding costs. No second consequence here.
    if ctx.config.hypervisor_bit_disabled().is_some() {
        return Vec::new();
    }
    vec![
        Finding::new(Some(hpet.span), "HPET is off but hv-stimer is not on: Windows falls back to the RTC for its timer, which costs more exits than the HPET did")
            .with_fix(enable(&[Hv::Stimer], ctx.config)),
    ]
}

pub(super) const TIME006: VmRule = VmRule {
    check: hpet_with_stimer,
    needs_host: false,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "TIME006",
        name: "hpet-with-stimer",
        category: Category::Timers,
        severity: Severity::Info,
        title: "HPET present although hv-stimer is on",
        explanation: "With synthetic timers Windows does not need the HPET; left present, it is an emulated MMIO device that some drivers still probe.",
        example: "<stimer state='on'/> with no <timer name='hpet' present='no'/>",
        fix: "<timer name='hpet' present='no'/>",
        fix_safety: Applicability::Safe,
        source: "QEMU docs/system/i386/hyperv.rst hv-stimer; Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers)",
    },
};

fn hpet_with_stimer(ctx: &RuleContext) -> Vec<Finding> {
    if !ctx.is_windows() || !ctx.enlightenments_visible() || !ctx.on(Hv::Stimer) {
        return Vec::new();
    }
    if ctx.config.clock.hpet_off() {
        return Vec::new();
    }
    let hpet = ctx.config.clock.timer("hpet");
    vec![
        Finding::new(hpet.map(|t| t.span).or(ctx.clock_anchor()), "HPET is present although hv-stimer drives Windows' timers: an emulated MMIO device left for nothing to use")
            .with_fix(Fix::safe(ConfigEdit::SetTimer { name: "hpet".into(), attributes: vec![("present".into(), "no".into())] })),
    ]
}

pub(super) const TIME007: VmRule = VmRule {
    check: pit_reinjection_inhibits_avic,
    needs_host: true,
    housekeeping_suffices: false,
    meta: RuleMeta {
        id: "TIME007",
        name: "pit-reinjection-inhibits-avic",
        category: Category::Timers,
        severity: Severity::Warning,
        title: "the in-kernel PIT reinjects missed ticks, which turns AVIC off",
        explanation: "KVM's in-kernel PIT reinjects missed ticks unless told not to: that is QEMU's `delay`, its default, which libvirt writes for tickpolicy='delay' and leaves in place for 'catchup' or no <timer name='pit'> at all. Reinjection waits for the guest to acknowledge each tick, and AVIC takes those acknowledgements without KVM seeing them, so on AMD KVM switches AVIC off for the whole VM while the PIT reinjects (APICV_INHIBIT_REASON_PIT_REINJ; Intel's APICv still traps them and keeps running). Every interrupt, IPI and EOI then exits again, which is what turning AVIC on was meant to end. 'discard' turns reinjection off; Windows does not keep time with the PIT once booted, so it does not notice. A split irqchip (<ioapic driver='qemu'/>) has no in-kernel PIT and is not affected.",
        example: "<timer name='pit' tickpolicy='delay'/> on an AMD host with kvm_amd avic=1",
        fix: "<timer name='pit' tickpolicy='discard'/>",
        fix_safety: Applicability::Safe,
        source: "Linux arch/x86/kvm/i8254.c kvm_pit_set_reinject (APICV_INHIBIT_REASON_PIT_REINJ, since 'kvm: i8254: Deactivate APICv when using in-kernel PIT re-injection mode', Linux 5.6, and unchanged in Linux 7.2) and svm/svm.h AVIC_REQUIRED_APICV_INHIBITS; QEMU hw/i386/kvm/i8254.c (lost_tick_policy delay keeps KVM's reinjection, discard turns it off with KVM_REINJECT_CONTROL); github.com/libkrun/libkrun/issues/498 (AVIC inhibited by a PIT in reinject mode)",
    },
};

fn pit_reinjection_inhibits_avic(ctx: &RuleContext) -> Vec<Finding> {
    // Windows XP and 2003 count ticks as time; for them reinjection is the lesser evil.
    if crate::analysis::avic_inhibitions::guest_counts_ticks(ctx.windows)
        || ctx.config.split_irqchip.as_ref().is_some_and(|s| s.value)
    {
        return Vec::new();
    }
    let Some(avic) = ctx.host.and_then(crate::analysis::avic_inhibitions::pit_reinjection_inhibits_avic)
    else {
        return Vec::new();
    };
    let pit = ctx.config.clock.timer("pit");
    if pit.is_some_and(|t| t.present == Some(false)) {
        return Vec::new();
    }
    let found = match pit.and_then(|t| t.tickpolicy.as_deref()) {
        None => "no tickpolicy (QEMU's default, delay)".to_string(),
        Some(policy @ ("delay" | "catchup")) => format!("tickpolicy='{policy}'"),
        // discard is the fix; anything else libvirt refuses (TIME003).
        Some(_) => return Vec::new(),
    };
    vec![
        Finding::new(
            pit.map(|t| t.span).or(ctx.clock_anchor()),
            format!("the PIT timer has {found}, so KVM's in-kernel PIT reinjects missed ticks, and on this host ({avic}) KVM then switches AVIC off for the whole VM"),
        )
        .with_fix(Fix::safe(ConfigEdit::SetTimer {
            name: "pit".into(),
            attributes: vec![("tickpolicy".into(), recommended::PIT_TICKPOLICY_WITH_AVIC.into())],
        })),
    ]
}
