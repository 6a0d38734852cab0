//! `kvmtune verify`'s report for people: what the guest sees in one paragraph, then each
//! difference from the configuration with both sides of the evidence.

use std::fmt::Write;

use crate::analysis::verify_rules::VerifyFinding;
use crate::config::model::VmConfig;
use crate::guest::GuestReport;
use crate::knowledge::hyperv::{ENLIGHTENMENTS, Hv};
use crate::values::escape::terminal;
use crate::values::text::plural;

/// One paragraph: the OS, the processors, the hypervisor leaves and the clock as the guest sees them.
pub fn guest_summary(guest: &GuestReport) -> String {
    let os = &guest.os;
    let mut name = os.name.clone().unwrap_or_else(|| os.family.clone());
    if let Some(build) = os.build {
        let _ = write!(name, " (build {build})");
    }
    let topology = &guest.topology;
    let hypervisor = match &guest.cpuid.hypervisor {
        None => "no hypervisor bit".to_string(),
        Some(h) if h.hyperv_interface => {
            format!("hypervisor '{}' with the Hyper-V interface (Hv#1)", h.signature)
        }
        Some(h) => format!("hypervisor '{}', no Hyper-V interface", h.signature),
    };
    let mut clock = guest.time.counter.clone();
    if let Some(hz) = guest.time.frequency_hz {
        let _ = write!(clock, " at {} MHz", hz as f64 / 1e6);
    }
    if let Some(source) = &guest.time.clocksource {
        let _ = write!(clock, " (clocksource {source})");
    }
    if let Some(ns) = guest.time.call_cost.as_ref().and_then(|c| c.median_ns) {
        let _ = write!(clock, ", one read {ns:.0} ns");
    }
    format!(
        "{name}: {}, {}, {}, {} SMT {}, {}; {hypervisor}; {clock}",
        plural(topology.logical_processors as usize, "logical processor"),
        plural(topology.cores as usize, "core"),
        plural(topology.sockets as usize, "socket"),
        topology.smt_groups.len(),
        crate::values::text::agree(topology.smt_groups.len(), "pair", "pairs"),
        plural(topology.numa_nodes as usize, "NUMA node"),
    )
}

/// The enlightenments the configuration turns on that the guest sees.
pub fn seen_as_configured(config: &VmConfig, guest: &GuestReport) -> Vec<Hv> {
    config
        .hyperv
        .features
        .iter()
        .filter(|f| f.on)
        .filter_map(|f| f.hv())
        .filter(|hv| ENLIGHTENMENTS.iter().any(|e| e.hv == *hv) && guest.sees(*hv) == Some(true))
        .collect()
}

pub fn render_text(
    origin: &str,
    config_name: Option<&str>,
    config: Option<&VmConfig>,
    guest: &GuestReport,
    findings: &[VerifyFinding],
) -> String {
    let mut out = String::new();
    // The guest writes the names and signatures shown here: control characters are escaped
    // before they reach the terminal.
    let _ = writeln!(out, "guest ({}): {}", terminal(origin), terminal(&guest_summary(guest)));
    let (Some(config), Some(config_name)) = (config, config_name) else {
        let _ = writeln!(
            out,
            "\nno configuration given (--config FILE or --domain): nothing to hold the guest against"
        );
        return out;
    };
    let _ = writeln!(out, "configuration: {}", terminal(config_name));
    for finding in findings {
        let _ = writeln!(
            out,
            "\n{}[{}] {}: {}",
            finding.severity.label(),
            finding.rule,
            finding.name,
            finding.title
        );
        let _ = writeln!(out, "  configured: {}", terminal(&finding.configured));
        let _ = writeln!(out, "  seen:       {}", terminal(&finding.seen));
        let _ = writeln!(out, "  why:        {}", terminal(&finding.why));
        let _ = writeln!(out, "  fix:        {}", finding.fix);
        let _ = writeln!(out, "  (kvmtune explain {})", finding.rule);
    }
    let seen = seen_as_configured(config, guest);
    let _ = writeln!(out);
    if !seen.is_empty() {
        let names: Vec<&str> = seen.iter().map(|hv| hv.qemu()).collect();
        let _ = writeln!(out, "seen as configured: {}", names.join(", "));
    }
    if findings.is_empty() {
        let _ = writeln!(out, "the guest sees what the configuration gives it");
    } else {
        let _ = writeln!(out, "{}", plural(findings.len(), "difference"));
    }
    out
}
