//! The CPU model, Hyper-V enlightenments, clock and memory of a plan, each choice recorded as a
//! [`Decision`] with its source.

use serde::Serialize;

use crate::analysis::Workload;
use crate::analysis::avic_inhibitions::{svm_inhibits_avic, x2apic_inhibits_avic};
use crate::analysis::hyperv_support::{Offer, is_backporting_distribution, kernel_version, offer, short};
use crate::analysis::placement::Placement;
use crate::analysis::planner::{Decision, HugepagePlan, PlanRequest};
use crate::config::model::WindowsVersion;
use crate::host::HostFacts;
use crate::host::cpu::CpuVendor;
use crate::host::fact::Fact;
use crate::host::kvm::HypervSupport;
use crate::hostchange::HostAction;
use crate::knowledge::hyperv::{
    Availability, DEPENDENCIES, Hv, RECOMMENDED_FOR_WINDOWS, availability, closed_under_dependencies,
};
use crate::knowledge::recommended;
use crate::values::Version;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuFeatureChoice {
    pub name: &'static str,
    /// `require` or `disable`.
    pub policy: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuPlan {
    pub mode: &'static str,
    pub migratable: bool,
    pub cache_passthrough: bool,
    pub features: Vec<CpuFeatureChoice>,
    pub vendor: Option<String>,
}

impl CpuPlan {
    /// The plan turns this CPU feature off (`svm`, `x2apic`, `arch-capabilities`).
    pub fn disables(&self, name: &str) -> bool {
        self.features.iter().any(|f| f.name == name && f.policy == "disable")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnlightenmentChoice {
    /// The enlightenment (serialised as QEMU's name, `hv-relaxed`).
    pub name: Hv,
    /// `hv-spinlocks` retries.
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClockPlan {
    pub offset: &'static str,
    pub hypervclock: bool,
    pub rtc_tickpolicy: &'static str,
    pub pit_tickpolicy: &'static str,
    pub hpet: bool,
}

pub fn cpu(
    host: &HostFacts,
    request: &PlanRequest,
    placement: &Placement,
    decisions: &mut Vec<Decision>,
) -> CpuPlan {
    let vendor = host.cpu.vendor.known().copied();
    let mut features = Vec::new();
    decisions.push(Decision::new(
        "cpu",
        format!("host-passthrough, migratable={}", if request.migratable { "on" } else { "off" }),
        "the guest sees the host's CPU as it is: every instruction-set extension, and the real cache and TSC properties",
        "libvirt formatdomain cpu mode",
    ));
    decisions.push(Decision::checked_by(
        "cpu",
        format!(
            "topology 1 socket, 1 die, {} core(s), {} thread(s), cache passthrough",
            placement.cores, placement.threads
        ),
        &["PIN004", "PIN005", "PIN009"],
    ));
    let arch_capabilities = host.kvm.device.known().and_then(|device| device.arch_capabilities.known());
    if let Some(refused) = arch_capabilities.filter(|a| a.refused()) {
        features.push(CpuFeatureChoice { name: "arch-capabilities", policy: "disable" });
        decisions.push(Decision::new(
            "cpu",
            "arch-capabilities off",
            format!(
                "this host's KVM offers IA32_ARCH_CAPABILITIES ({}) and then refuses it on a vCPU, as some nested hosts do: host-passthrough copies it into every vCPU and QEMU aborts at start with `failed to set MSR 0x10a`; without the MSR the guest starts, and takes its CPU to need the speculative-execution mitigations the MSR would have declared unneeded",
                refused.offered.as_deref().unwrap_or("a value")
            ),
            "QEMU target/i386/kvm/kvm.c (kvm_put_msrs sets MSR_IA32_ARCH_CAPABILITIES; kvm_buf_set_msrs aborts when KVM sets fewer MSRs); Linux arch/x86/kvm/x86.c (kvm_set_msr_common, MSR_IA32_ARCH_CAPABILITIES); github.com/asterinas/asterinas/issues/2980 (the same abort on a nested host)",
        ));
    }
    if vendor == Some(CpuVendor::Amd) && placement.threads > 1 {
        features.push(CpuFeatureChoice { name: "topoext", policy: "require" });
        decisions.push(Decision::checked_by("cpu", "topoext on", &["PIN008"]));
    }
    let tsc_stable = host.time.tsc.known().is_some_and(|t| t.trustworthy);
    if !request.migratable && tsc_stable {
        features.push(CpuFeatureChoice { name: "invtsc", policy: "require" });
        decisions.push(Decision::new(
            "timers",
            "invtsc on",
            "the host's TSC is invariant and trusted, and the VM does not migrate: Windows may use the TSC directly, and QEMU offers the Hyper-V TSC page only with it",
            "Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers) (reference TSC page); QEMU docs/system/i386/hyperv.rst hv-time",
        ));
    } else if !request.migratable {
        decisions.push(Decision::new(
            "timers",
            "invtsc off",
            "the host's TSC is not trusted as stable (see `kvmtune probe`)",
            "Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers); QEMU docs/system/i386/hyperv.rst",
        ));
    }
    let svm_inhibition = svm_inhibits_avic(host);
    if request.nested {
        let flag = if vendor == Some(CpuVendor::Amd) { "svm" } else { "vmx" };
        features.push(CpuFeatureChoice { name: flag, policy: "require" });
        decisions.push(Decision::new(
            "cpu",
            format!("{flag} on"),
            "WSL2, VBS/HVCI and the Hyper-V role run Windows on Microsoft's hypervisor, nested in KVM",
            "Microsoft Hyper-V TLFS, Nested virtualization (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/nested-virtualization)",
        ));
        if let Some(inhibition) = &svm_inhibition {
            decisions.push(Decision::new(
                "cpu",
                "svm on: AVIC off for this VM",
                format!(
                    "on this host (Linux {}, {}) KVM switches AVIC off for a whole VM whose guest CPU has svm; Linux 5.19 and later switch it off only while a vCPU runs nested",
                    inhibition.release, inhibition.evidence
                ),
                "kvmtune explain CPU007 (each rule names its sources)",
            ));
        }
    } else if svm_inhibition.is_some() {
        features.push(CpuFeatureChoice { name: "svm", policy: "disable" });
        decisions.push(Decision::checked_by("cpu", "svm off (the VM runs no hypervisor)", &["CPU007"]));
    }
    // Windows needs x2APIC only past 255 vCPUs, and AVIC of these kernels runs no such VM.
    if x2apic_inhibits_avic(host).is_some() && placement.vcpu_cpus.len() <= 255 {
        features.push(CpuFeatureChoice { name: "x2apic", policy: "disable" });
        decisions.push(Decision::checked_by("cpu", "x2apic off (AVIC stays on)", &["CPU008"]));
    }
    CpuPlan {
        mode: "host-passthrough",
        migratable: request.migratable,
        cache_passthrough: true,
        features,
        vendor: vendor.map(|v| format!("{v:?}")),
    }
}

pub fn enlightenments(
    host: &HostFacts,
    request: &PlanRequest,
    cpu: &CpuPlan,
    decisions: &mut Vec<Decision>,
) -> Vec<EnlightenmentChoice> {
    if request.windows == WindowsVersion::Xp {
        decisions.push(Decision::new(
            "enlightenments",
            "none",
            "Windows XP/2003 predate Hyper-V and use no enlightenment",
            "Microsoft Hyper-V TLFS, Timers (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/timers); QEMU docs/system/i386/hyperv.rst",
        ));
        return Vec::new();
    }
    if let Some(HypervSupport::NotSupported { evidence }) = host.kvm.device.known().map(|d| &d.hyperv) {
        decisions.push(Decision::new(
            "enlightenments",
            "none",
            format!("this host's KVM has no Hyper-V emulation ({evidence}); QEMU would refuse hv-* properties. On a host with it, kvmtune would choose: {}, hv-time", RECOMMENDED_FOR_WINDOWS.iter().map(|hv| hv.qemu()).collect::<Vec<_>>().join(", ")),
            "Linux Documentation/virt/kvm/api.rst (KVM_GET_SUPPORTED_HV_CPUID)",
        ));
        return Vec::new();
    }
    let mut wanted: Vec<Hv> = RECOMMENDED_FOR_WINDOWS.to_vec();
    wanted.push(Hv::Time);
    let apicv = host.kvm.apic_virtualization.known().map(|a| (a.kind.clone(), a.enabled));
    match &apicv {
        Some((kind, true)) => {
            wanted.push(Hv::Avic);
            decisions.push(Decision::new(
                "enlightenments",
                "hv-avic",
                format!("SynIC makes Windows use AutoEOI, which turns {kind} off, and hv-vapic makes QEMU recommend the Hyper-V APIC MSRs, whose every write exits; hv-avic tells Windows to do neither, so its interrupts go through {kind} (IPI-heavy loads lose most without it)"),
                "QEMU docs/system/i386/hyperv.rst hv-avic; QEMU commit e1f9a8e8c90a (hv-avic withdraws HV_APIC_ACCESS_RECOMMENDED)",
            ));
        }
        Some((kind, false)) => decisions.push(Decision::new(
            "enlightenments",
            "no hv-avic",
            format!("{kind} is off on this host; hv-avic only helps with it on"),
            "QEMU docs/system/i386/hyperv.rst hv-avic",
        )),
        None => decisions.push(Decision::new(
            "enlightenments",
            "hv-avic left out: APICv/AVIC state unknown",
            "hv-avic pays off only with APICv/AVIC on (SynIC would switch it off without hv-avic) and hurts without it (Windows gives up AutoEOI for nothing), so it is not guessed. `kvmtune probe` on the host says which (its `APIC virtualization` line); plan with those facts (`kvmtune probe --format json > host.json`, then `tune --host-json host.json`) and hv-avic follows",
            "QEMU docs/system/i386/hyperv.rst (hv-avic: should not be enabled without APICv/AVIC)",
        )),
    }
    let intel = host.cpu.vendor.known() == Some(&CpuVendor::Intel);
    if request.nested {
        wanted.push(Hv::StimerDirect);
        if !request.migratable {
            wanted.push(Hv::Reenlightenment);
        }
        if intel {
            wanted.extend([Hv::Evmcs, Hv::TlbflushDirect, Hv::EmsrBitmap]);
        }
        decisions.push(Decision::new(
            "enlightenments",
            format!(
                "nested: hv-stimer-direct{}{}",
                if request.migratable { "" } else { ", hv-reenlightenment" },
                if intel { ", hv-evmcs, hv-tlbflush-direct, hv-emsr-bitmap" } else { "" }
            ),
            "Microsoft's hypervisor inside the guest needs direct synthetic timers; enlightened VMCS, direct TLB flushes and the MSR bitmap cut the cost of its guests' exits (Intel only)",
            "Microsoft Hyper-V TLFS, Nested virtualization (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/nested-virtualization); QEMU docs/system/i386/hyperv.rst",
        ));
    } else if let Some(nested) =
        host.kvm.nested_virtualization().filter(|n| n.offered && !cpu.disables(n.feature))
    {
        // The plan's CPU is host-passthrough, which hands the guest whatever KVM offers and the
        // plan does not turn off (svm, for AVIC's sake: CPU007).
        // `check` stays quiet here (HV012 wants the feature asked for by name): nothing says
        // the guest runs a hypervisor. The plan takes direct mode anyway, as it costs nothing.
        wanted.push(Hv::StimerDirect);
        decisions.push(Decision::new(
            "enlightenments",
            format!("hv-stimer-direct: host-passthrough passes on {} ({})", nested.feature, nested.evidence),
            "a Windows that starts a hypervisor of its own with it (VBS and Memory integrity, on by default on clean installs of Windows 11 where the hardware allows; WSL 2) uses the synthetic timers only in direct mode; Windows without one keeps to the classic mode, so direct mode costs it nothing",
            "Linux arch/x86/kvm/vmx/vmx.c vmx_set_cpu_caps, svm/svm.c svm_set_cpu_caps (KVM offers guests VMX or SVM exactly when the module's nested parameter is on); Linux commit 8644f771e07c (direct mode for synthetic timers); QEMU docs/system/i386/hyperv.rst hv-stimer-direct",
        ));
    }
    let mut chosen = closed_under_dependencies(&wanted);
    let offers: Vec<(Hv, Offer)> = chosen.iter().map(|&feature| (feature, offer(host, feature))).collect();
    let lacking: Vec<(Hv, String)> = offers
        .iter()
        .filter_map(|(feature, offered)| match offered {
            Offer::Lacking { why, .. } => Some((*feature, why.clone())),
            _ => None,
        })
        .collect();
    if !lacking.is_empty() {
        chosen.retain(|feature| !lacking.iter().any(|(l, _)| l == feature));
        let orphans = drop_orphans(&mut chosen);
        let mut reason =
            lacking.iter().map(|(feature, why)| format!("{feature}: {why}")).collect::<Vec<_>>().join("; ");
        if !orphans.is_empty() {
            reason.push_str(&format!(
                "; {} need(s) what is left out (QEMU refuses the rest)",
                orphans.iter().map(|hv| hv.qemu()).collect::<Vec<_>>().join(", ")
            ));
        }
        decisions.push(Decision::new(
            "enlightenments",
            format!(
                "left out: {}",
                lacking
                    .iter()
                    .map(|(f, _)| *f)
                    .chain(orphans.iter().copied())
                    .map(Hv::qemu)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            reason,
            "QEMU docs/system/i386/hyperv.rst; QEMU target/i386/kvm/kvm.c (hv_feature_check_deps); libvirt docs/formatdomain.rst hyperv; the QEMU and libvirt versions in kvmtune docs/knowledge.md",
        ));
        if lacking.iter().any(|(f, _)| *f == Hv::Avic) && chosen.contains(&Hv::Synic) {
            decisions.push(Decision::new(
                "enlightenments",
                "SynIC kept without hv-avic",
                "KVM keeps APICv/AVIC off for the VM while SynIC is in use (before Linux 5.15 for any SynIC, later while Windows uses AutoEOI, which hv-avic would stop); the synthetic timers still save more than that costs on most loads, but on IPI-heavy ones compare with `kvmtune exits` (`kvmtune check` reports it as information: HV008)",
                "QEMU docs/system/i386/hyperv.rst hv-avic; Linux arch/x86/kvm/hyperv.c (APICV_INHIBIT_REASON_HYPERV); Linux commit 0f250a646382 (5.15: only while AutoEOI is in use)",
            ));
        }
    }
    let kept: Vec<Offer> = offers
        .into_iter()
        .filter(|(feature, _)| chosen.contains(feature))
        .map(|(_, offered)| offered)
        .collect();
    if let Some(decision) = release_basis(host, &chosen, &kept) {
        decisions.push(decision);
    }
    decisions.push(Decision::new(
        "enlightenments",
        chosen.iter().map(|hv| hv.qemu()).collect::<Vec<_>>().join(", "),
        "paravirtual interfaces Windows uses instead of emulated hardware: relaxed watchdogs, exit-less EOI where APIC virtualization is off (vapic), a per-vCPU reference clock page (time), synthetic timers instead of HPET/RTC (synic, stimer), TLB flushes and IPIs by hypercall; closed under their dependencies",
        "QEMU docs/system/i386/hyperv.rst; QEMU target/i386/kvm/kvm.c (hv_feature_check_deps)",
    ));
    hiding_note(host, request, decisions);
    chosen
        .into_iter()
        .map(|name| EnlightenmentChoice {
            name,
            value: (name == Hv::Spinlocks).then(|| recommended::SPINLOCK_RETRIES.to_string()),
        })
        .collect()
}

/// Removes features whose dependencies were removed, until none is left dangling; returns them.
fn drop_orphans(chosen: &mut Vec<Hv>) -> Vec<Hv> {
    let mut dropped = Vec::new();
    loop {
        let snapshot = chosen.clone();
        chosen.retain(|feature| {
            let whole = DEPENDENCIES
                .iter()
                .filter(|(f, _)| f == feature)
                .all(|(_, requires)| requires.iter().all(|r| snapshot.contains(r)));
            if !whole {
                dropped.push(*feature);
            }
            whole
        });
        if chosen.len() == snapshot.len() {
            return dropped;
        }
    }
}

/// When KVM was not asked, what the chosen set was judged by: the kernel release, or nothing;
/// with the releases each layer needs for the whole set, so a reader can compare.
/// `offers` are the chosen features' verdicts, in the same order.
fn release_basis(host: &HostFacts, chosen: &[Hv], offers: &[Offer]) -> Option<Decision> {
    if offers.iter().all(|o| *o == Offer::ByKvm) || chosen.is_empty() {
        return None;
    }
    let entries: Vec<&Availability> = chosen.iter().filter_map(|f| availability(*f)).collect();
    let newest =
        |release: fn(&Availability) -> Option<Version>| entries.iter().filter_map(|a| release(a)).max();
    let mut needs = Vec::new();
    if let Some(linux) = newest(|a| Some(a.linux)) {
        needs.push(format!("Linux {}", short(linux)));
    }
    if let Some(qemu) = newest(|a| Some(a.qemu)) {
        needs.push(format!("QEMU {}", short(qemu)));
    }
    if let Some(libvirt) = newest(|a| a.libvirt) {
        needs.push(format!("libvirt {libvirt}"));
    }
    let backported = host.kernel.release.known().filter(|r| is_backporting_distribution(r));
    let stack = [
        kernel_version(host).map(|v| format!("Linux {v}")),
        backported.map(|r| {
            format!("Linux {r}, a RHEL-family kernel whose number says nothing of its backported KVM")
        }),
        host.software.qemu.known().map(|v| format!("QEMU {v}")),
        host.software.libvirt.known().map(|v| format!("libvirt {v}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    let stack = if stack.is_empty() { "no release is known".to_string() } else { stack.join(", ") };
    let (choice, why) = if offers.contains(&Offer::Assumed) {
        (
            "assumed available",
            format!(
                "this host's KVM was not asked (no /dev/kvm answer) and its kernel release is unknown ({stack}); the set needs {}",
                needs.join(", ")
            ),
        )
    } else {
        (
            "available by release",
            format!(
                "this host's KVM was not asked (no /dev/kvm answer); by release ({stack}) every one exists; the set needs {}",
                needs.join(", ")
            ),
        )
    };
    Some(Decision::new(
        "enlightenments",
        choice,
        why,
        "QEMU docs/system/i386/hyperv.rst; libvirt docs/formatdomain.rst hyperv; the QEMU and libvirt versions in kvmtune docs/knowledge.md",
    ))
}

/// Hiding the hypervisor CPUID bit turns every enlightenment off; say when that would still win.
fn hiding_note(host: &HostFacts, request: &PlanRequest, decisions: &mut Vec<Decision>) {
    let tsc_stable = host.time.tsc.known().is_some_and(|t| t.trustworthy);
    let case = if request.windows == WindowsVersion::Win7 && tsc_stable {
        Some(
            "Windows 7 predates the TSC page and reads the Hyper-V clock by MSR, one exit each; with the bit hidden and a stable invariant TSC it reads the TSC directly",
        )
    } else if request.workload == Workload::IpiHeavy {
        Some(
            "for IPI-heavy loads, measured cases ran faster with no enlightenments than with SynIC inhibiting APICv/AVIC; with hv-avic that trap is gone, so measure before hiding",
        )
    } else {
        None
    };
    if let Some(why) = case {
        decisions.push(Decision::new(
            "enlightenments",
            "hypervisor bit kept visible (hiding it could win here)",
            format!("{why}. Hiding costs every enlightenment: watchdog relaxation, paravirt EOI, synthetic timers, hypercall TLB flushes and IPIs; `kvmtune exits` before and after tells"),
            "Microsoft Hyper-V TLFS, Feature discovery (learn.microsoft.com/virtualization/hyper-v-on-windows/tlfs/feature-discovery)",
        ));
    }
}

pub fn clock(
    host: &HostFacts,
    request: &PlanRequest,
    enlightenments: &[EnlightenmentChoice],
    decisions: &mut Vec<Decision>,
) -> ClockPlan {
    let on = |hv: Hv| enlightenments.iter().any(|e| e.name == hv);
    let stimer = on(Hv::Stimer);
    let pit_tickpolicy = crate::analysis::avic_inhibitions::pit_tickpolicy(Some(host), Some(request.windows));
    // TIME007 is what the PIT policy avoids only where it was chosen for AVIC's sake.
    let avoids: &[&str] = if pit_tickpolicy == recommended::PIT_TICKPOLICY_WITH_AVIC {
        &["TIME004", "TIME002", "TIME003", "TIME007"]
    } else {
        &["TIME004", "TIME002", "TIME003"]
    };
    decisions.push(Decision::checked_by(
        "timers",
        format!(
            "clock offset {}, RTC {}, PIT {pit_tickpolicy}",
            recommended::CLOCK_OFFSET,
            recommended::RTC_TICKPOLICY
        ),
        avoids,
    ));
    if stimer {
        decisions.push(Decision::checked_by("timers", "HPET off", &["TIME006"]));
    } else {
        decisions.push(Decision::checked_by("timers", "HPET kept on", &["TIME005"]));
    }
    ClockPlan {
        offset: recommended::CLOCK_OFFSET,
        hypervclock: on(Hv::Time),
        rtc_tickpolicy: recommended::RTC_TICKPOLICY,
        pit_tickpolicy,
        hpet: !stimer,
    }
}

pub fn hugepages(
    host: &HostFacts,
    memory_mib: u64,
    node: Option<u32>,
    decisions: &mut Vec<Decision>,
) -> Option<HugepagePlan> {
    let gigabyte_pages = host.cpu.flags.known().is_some_and(|f| f.get("pdpe1gb").copied().unwrap_or(false));
    let page_size_kib = if gigabyte_pages && memory_mib.is_multiple_of(1024) {
        recommended::GIGANTIC_HUGEPAGE_KIB
    } else {
        recommended::DEFAULT_HUGEPAGE_KIB
    };
    let pages = (memory_mib * 1024).div_ceil(page_size_kib);
    let pool_total = match &host.memory.hugepages {
        Fact::Known(pools) => pools
            .iter()
            .find(|p| p.page_size_kib == page_size_kib)
            .and_then(|p| p.total.known().copied())
            .unwrap_or(0),
        Fact::Unknown(_) => 0,
    };
    let node_free = node.and_then(|node| {
        host.memory.nodes.known()?.iter().find(|n| n.node == node).map(|n| {
            n.hugepages
                .iter()
                .find(|p| p.page_size_kib == page_size_kib)
                .and_then(|p| p.free.known().copied())
                .unwrap_or(0)
        })
    });
    let reserved = pool_total >= pages && node_free.is_none_or(|free| free >= pages);
    let size = if page_size_kib == recommended::GIGANTIC_HUGEPAGE_KIB { "1 GiB" } else { "2 MiB" };
    let where_ = node.map_or(String::new(), |n| format!(" on NUMA node {n}"));
    if reserved {
        decisions.push(Decision::new(
            "memory",
            format!("{pages} hugepages of {size}{where_}"),
            "guest memory in huge pages: fewer TLB misses and shorter nested page walks; the host has them reserved",
            "libvirt formatdomain memoryBacking; kernel admin-guide/mm/hugetlbpage",
        ));
    } else {
        let reservation = HostAction::reserve_hugepages(page_size_kib, pages, node, None);
        decisions.push(
            Decision::new(
                "memory",
                format!("reserve {pages} hugepages of {size}{where_}, then add <hugepages/>"),
                format!(
                    "huge pages cut TLB misses and nested page walks, but the host has not reserved them and a VM asking for missing pages does not start; reserve them ({}, or hugepagesz={} hugepages={pages} at boot) and run tune again",
                    reservation.shell(),
                    if page_size_kib == recommended::GIGANTIC_HUGEPAGE_KIB { "1G" } else { "2M" }
                ),
                "kernel admin-guide/mm/hugetlbpage",
            )
            .with_host_actions(vec![reservation]),
        );
    }
    reserved.then_some(HugepagePlan { page_size_kib, pages, node, reserved })
}
