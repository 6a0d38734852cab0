//! The host clocksource and whether its TSC can be trusted.
//!
//! Why it matters: KVM keeps kvmclock and the Hyper-V reference TSC page stable across vCPUs only
//! when the host itself runs on a stable TSC (the "master clock" in arch/x86/kvm/x86.c is used
//! only with a TSC-based host clocksource), and Windows uses the TSC page for
//! QueryPerformanceCounter only when the TSC is invariant (../shared/knowledge.md section 5,
//! MS-TLFS timers). A host that fell back to hpet or acpi_pm makes every guest clock read slow.

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::host::cpu::CpuInfo;
use crate::host::fact::Fact;

const CLOCKSOURCE_DIR: &str = "/sys/devices/system/clocksource/clocksource0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Time {
    pub current_clocksource: Fact<String>,
    pub available_clocksources: Fact<Vec<String>>,
    pub tsc: Fact<TscVerdict>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TscVerdict {
    pub trustworthy: bool,
    /// Every reason behind the verdict, for people.
    pub reasons: Vec<String>,
}

pub fn probe(host: &Host, cpu: &CpuInfo) -> Time {
    let current: Fact<String> = host.read_trimmed(&format!("{CLOCKSOURCE_DIR}/current_clocksource")).into();
    let available: Fact<Vec<String>> = host
        .read(&format!("{CLOCKSOURCE_DIR}/available_clocksource"))
        .map(|text| text.split_whitespace().map(str::to_string).collect())
        .into();
    let tsc = judge_tsc(&current, &available, cpu);
    Time { current_clocksource: current, available_clocksources: available, tsc }
}

fn judge_tsc(current: &Fact<String>, available: &Fact<Vec<String>>, cpu: &CpuInfo) -> Fact<TscVerdict> {
    let (Fact::Known(current), Fact::Known(available)) = (current, available) else {
        return Fact::Unknown("the clocksource files could not be read".to_string());
    };
    let mut reasons = Vec::new();
    let mut trustworthy = true;
    if current == "tsc" {
        reasons.push("the kernel runs on the TSC clocksource".to_string());
    } else if available.iter().any(|c| c == "tsc") {
        trustworthy = false;
        reasons.push(format!("the kernel runs on `{current}` although `tsc` is available"));
    } else {
        trustworthy = false;
        reasons.push(format!(
            "`tsc` is not an available clocksource (the kernel marked it unstable or never trusted it); running on `{current}`"
        ));
    }
    if cpu.flags.is_known() {
        for flag in ["constant_tsc", "nonstop_tsc"] {
            if !cpu.has_flag(flag) {
                trustworthy = false;
                reasons.push(format!("the CPU lacks `{flag}`, so the TSC is not invariant"));
            }
        }
        if cpu.has_flag("constant_tsc") && cpu.has_flag("nonstop_tsc") {
            reasons.push("the CPU has an invariant TSC (constant_tsc + nonstop_tsc)".to_string());
        }
    } else {
        reasons.push("CPU flags unknown: invariance not checked".to_string());
    }
    Fact::Known(TscVerdict { trustworthy, reasons })
}
