//! `kvmtune exporter`'s answer to a scrape: every VM's KVM counters, its active findings and the
//! host facts that decide tuning, in the OpenMetrics text format (prometheus-client), which
//! Prometheus scrapes. Units are in the names, counters end in `_total`, as Prometheus'
//! naming conventions ask; every metric has its HELP.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::host::HostFacts;
use crate::host::kvm::HypervSupport;
use crate::hostchange::{JournalKind, VmJournal};
use crate::live::{VmReading, VmView};

type Labels = Vec<(&'static str, String)>;

/// KVM's cumulative vCPU counters that become metrics of their own, with the unit they are
/// counted in: (KVM name, metric name, help, divisor to the metric's unit).
const VCPU_COUNTERS: &[(&str, &str, &str, f64)] = &[
    ("exits", "kvmtune_vcpu_exits", "VM exits of the vCPU, all kinds (KVM's `exits`).", 1.0),
    (
        "halt_attempted_poll",
        "kvmtune_vcpu_halt_poll_attempts",
        "Halts KVM polled for a wake-up before sleeping.",
        1.0,
    ),
    (
        "halt_successful_poll",
        "kvmtune_vcpu_halt_poll_successes",
        "Polled halts that a wake-up ended within the poll window.",
        1.0,
    ),
    (
        "halt_poll_success_ns",
        "kvmtune_vcpu_halt_poll_success_seconds",
        "Time spent polling in halts that a wake-up ended.",
        1e9,
    ),
    (
        "halt_poll_fail_ns",
        "kvmtune_vcpu_halt_poll_fail_seconds",
        "Time spent polling in halts that ended in sleep anyway.",
        1e9,
    ),
    ("halt_wait_ns", "kvmtune_vcpu_halt_wait_seconds", "Time the vCPU slept in halt.", 1e9),
];

/// One scrape's input: each VM's reading, with the view against the previous scrape where
/// there was one (findings need a rate), the host, and the prepared VMs' journals.
pub struct Scrape<'a> {
    pub readings: &'a [VmReading],
    pub views: &'a [Option<VmView>],
    pub host: &'a HostFacts,
    pub journals: &'a [VmJournal],
    pub duration_s: f64,
}

/// The registry, and the name of every sample family registered (`_total` for counters),
/// which a scrape may leave out when it has no sample of it.
#[derive(Default)]
struct Registered {
    registry: Registry,
    names: Vec<String>,
}

/// prometheus-client ends every HELP with a full stop of its own.
fn without_full_stop(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

fn counter_family(
    registered: &mut Registered,
    name: &str,
    help: &str,
) -> Family<Labels, Counter<f64, AtomicU64>> {
    let family = Family::<Labels, Counter<f64, AtomicU64>>::default();
    registered.registry.register(name, without_full_stop(help), family.clone());
    registered.names.push(format!("{name}_total"));
    family
}

fn gauge_family(
    registered: &mut Registered,
    name: &str,
    help: &str,
) -> Family<Labels, Gauge<f64, AtomicU64>> {
    let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registered.registry.register(name, without_full_stop(help), family.clone());
    registered.names.push(name.to_string());
    family
}

fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

pub fn render(scrape: &Scrape) -> String {
    let registered = fill(scrape);
    let mut text = String::new();
    encode(&mut text, &registered.registry).expect("writing to a String does not fail");
    text
}

/// Every metric name a scrape can carry (counters with their `_total`): what alerting rules
/// and dashboards may use.
pub fn metric_names(host: &HostFacts) -> Vec<String> {
    fill(&Scrape { readings: &[], views: &[], host, journals: &[], duration_s: 0.0 }).names
}

fn fill(scrape: &Scrape) -> Registered {
    let mut registry = Registered::default();
    let up = gauge_family(
        &mut registry,
        "kvmtune_vm_up",
        "1 when the VM's KVM counters could be read in this scrape, 0 when not (its monitor failed or timed out).",
    );
    let vcpus = gauge_family(&mut registry, "kvmtune_vm_vcpus", "vCPUs of the VM.");
    let by_kind = counter_family(
        &mut registry,
        "kvmtune_vcpu_exits_by_kind",
        "VM exits of the vCPU by kind, from KVM's `<kind>_exits` counters (io, halt, mmio, irq, ...); the kinds do not cover every exit.",
    );
    let counters: Vec<_> = VCPU_COUNTERS
        .iter()
        .map(|(kvm, name, help, divisor)| (*kvm, counter_family(&mut registry, name, help), *divisor))
        .collect();
    let traced = counter_family(
        &mut registry,
        "kvmtune_vcpu_tracepoint_events",
        "KVM tracepoint events of the vCPU thread (kvm_pio, kvm_msr, KVM_EXIT_MMIO, ...) since the exporter began counting them; they see what a host's KVM statistics may not (PVM counts port I/O in `exits` but not in `io_exits`). Absent without tracefs or the right to count.",
    );
    let by_reason = counter_family(
        &mut registry,
        "kvmtune_vcpu_exits_by_reason",
        "VM exits of the vCPU by the hardware's exit reason (kvm_exit), since the exporter began tracing them. Only with `--exit-times`, where the host's KVM emits kvm_exit.",
    );
    let handling = counter_family(
        &mut registry,
        "kvmtune_vcpu_exit_handling_seconds",
        "Time from each VM exit to the vCPU's next entry (kvm_exit to kvm_entry on the vCPU thread, as `perf kvm stat` measures it), by exit reason, since the exporter began tracing them; divided by kvmtune_vcpu_exits_by_reason_total, the mean handling time. Only with `--exit-times`, where the host's KVM emits kvm_exit.",
    );
    let findings = gauge_family(
        &mut registry,
        "kvmtune_finding",
        "1 for each EXIT rule that fires on the VM's exits since the previous scrape (the rules of `kvmtune exits analyze`, with its rate gate); `kvmtune explain RULE` says why and what to do.",
    );
    for (reading, view) in scrape.readings.iter().zip(scrape.views) {
        let vm = reading.vm.name.clone();
        let vm_labels = vec![("vm", vm.clone())];
        up.get_or_create(&vm_labels).set(flag(reading.counters.is_ok()));
        let Ok(sample) = &reading.counters else { continue };
        vcpus.get_or_create(&vm_labels).set(reading.vcpus() as f64);
        for (counter, per_vcpu) in sample {
            for (vcpu, value) in per_vcpu.iter().enumerate() {
                let labels = |extra: Option<(&'static str, String)>| -> Labels {
                    let mut labels = vec![("vm", vm.clone()), ("vcpu", vcpu.to_string())];
                    labels.extend(extra);
                    labels
                };
                if let Some(kind) = counter.strip_suffix("_exits") {
                    by_kind.get_or_create(&labels(Some(("kind", kind.to_string())))).inc_by(*value as f64);
                }
                if let Some((_, family, divisor)) = counters.iter().find(|(kvm, _, _)| kvm == counter) {
                    family.get_or_create(&labels(None)).inc_by(*value as f64 / divisor);
                }
            }
        }
        for (event, per_vcpu) in &reading.traced {
            for (vcpu, value) in per_vcpu.iter().enumerate() {
                let labels = vec![("vm", vm.clone()), ("vcpu", vcpu.to_string()), ("event", event.clone())];
                traced.get_or_create(&labels).inc_by(*value as f64);
            }
        }
        for ((vcpu, reason), timing) in &reading.exit_times {
            let labels = vec![("vm", vm.clone()), ("vcpu", vcpu.to_string()), ("reason", reason.clone())];
            by_reason.get_or_create(&labels).inc_by(timing.count as f64);
            handling.get_or_create(&labels).inc_by(timing.total_us / 1e6);
        }
        for finding in view.iter().flat_map(|v| &v.findings) {
            let labels = vec![
                ("vm", vm.clone()),
                ("rule", finding.rule.to_string()),
                ("severity", finding.severity.label().to_string()),
            ];
            findings.get_or_create(&labels).set(1.0);
        }
    }

    let host = scrape.host;
    let hyperv = gauge_family(
        &mut registry,
        "kvmtune_host_hyperv_supported",
        "1 when the host's KVM offers Hyper-V enlightenments (KVM_GET_SUPPORTED_HV_CPUID), 0 when not; absent when it could not be asked.",
    );
    if let crate::host::Fact::Known(device) = &host.kvm.device {
        match &device.hyperv {
            HypervSupport::Supported { .. } => hyperv.get_or_create(&Vec::new()).set(1.0),
            HypervSupport::NotSupported { .. } => hyperv.get_or_create(&Vec::new()).set(0.0),
            HypervSupport::Unknown { .. } => 0.0,
        };
    }
    let apicv = gauge_family(
        &mut registry,
        "kvmtune_host_apic_virtualization_enabled",
        "1 when APICv (Intel) or AVIC (AMD) is on in KVM, 0 when off; absent when unknown. Off, every interrupt and EOI of a Windows guest exits.",
    );
    if let Some(apic) = host.kvm.apic_virtualization.known() {
        apicv.get_or_create(&vec![("kind", apic.kind.clone())]).set(flag(apic.enabled));
    }
    let isolation = gauge_family(
        &mut registry,
        "kvmtune_host_isolation_applied",
        "1 for each VM whose host side `kvmtune host prepare` (or the libvirt hook) has applied and not released; 0 while a prepare is interrupted.",
    );
    // Isolation is what `host prepare` does; a device hand-over is not.
    for journal in scrape.journals.iter().filter(|j| j.kind == JournalKind::Host && !j.from_another_boot) {
        isolation.get_or_create(&vec![("vm", journal.vm.clone())]).set(flag(journal.complete));
    }
    let hugepages = gauge_family(
        &mut registry,
        "kvmtune_host_hugepages_free",
        "Free hugepages per NUMA node and page size.",
    );
    if let Some(nodes) = host.memory.nodes.known() {
        for node in nodes {
            for pool in &node.hugepages {
                if let Some(free) = pool.free.known() {
                    let labels = vec![
                        ("node", node.node.to_string()),
                        ("page_size_bytes", (pool.page_size_kib * 1024).to_string()),
                    ];
                    hugepages.get_or_create(&labels).set(*free as f64);
                }
            }
        }
    }
    let duration = gauge_family(
        &mut registry,
        "kvmtune_scrape_duration_seconds",
        "How long this scrape took to read every VM and the host.",
    );
    duration.get_or_create(&Vec::new()).set(scrape.duration_s);

    registry
}

/// The same metrics in Prometheus' classic text format (0.0.4), for clients that do not ask for
/// OpenMetrics (curl, `promtool check metrics`): a counter's HELP and TYPE name the `_total`
/// samples, and OpenMetrics' `# UNIT` and `# EOF` lines go.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::exits::record::tracing::recorded_windows_timings;
    use crate::live::LiveVm;

    /// The sample of `name` with exactly `labels`, from OpenMetrics text.
    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let head = format!("{name}{{{labels}}} ");
        text.lines().find_map(|line| line.strip_prefix(&head)?.parse().ok())
    }

    /// The exposition of a scrape that read one VM.
    fn one_vm_scrape(
        vm: LiveVm,
        counters: Result<crate::exits::model::Sample, String>,
        exit_times: crate::exits::record::tracing::VcpuTimings,
        host: &crate::host::HostFacts,
    ) -> String {
        let reading = VmReading { vm, counters, traced: Default::default(), exit_times, at: Instant::now() };
        render(&Scrape {
            readings: std::slice::from_ref(&reading),
            views: &[None],
            host,
            journals: &[],
            duration_s: 0.1,
        })
    }

    /// A VM name is whatever a domain or `-name` says: quotes, backslashes and line breaks in
    /// it are escaped in both exposition formats, and no line of the output is broken by one.
    #[test]
    fn label_values_are_escaped_in_both_formats() {
        let name = "evil\"} 1\nkvmtune_forged 1\\";
        let vm = LiveVm { name: name.into(), pid: 1, monitor: Err("none".into()) };
        let counters = [("exits".to_string(), vec![7u64])].into_iter().collect();
        let empty = tempfile::tempdir().unwrap();
        let host = crate::host::probe(&crate::host::Host::rooted(empty.path()));
        let text = one_vm_scrape(vm, Ok(counters), Default::default(), &host);
        let escaped = r#"vm="evil\"} 1\nkvmtune_forged 1\\""#;
        for exposition in [text.clone(), classic_text(&text)] {
            assert!(exposition.contains(escaped), "{exposition}");
            assert!(!exposition.lines().any(|l| l.starts_with("kvmtune_forged")), "{exposition}");
        }
    }

    /// Handling times as the exit trace gathers them, here the per-reason counts and times of
    /// the corpus's recorded `perf kvm stat live` of a Windows 10 guest (kvm_exit does not fire
    /// on this project's test host).
    #[test]
    #[cfg_attr(not(feature = "corpus"), ignore = "needs the corpus: cargo test --features corpus")]
    fn traced_handling_times_become_counters_per_vm_and_reason() {
        let (report, exit_times) = recorded_windows_timings();
        let vm = LiveVm { name: "win10".into(), pid: 1, monitor: Err("none".into()) };
        let host = crate::host::probe(&crate::host::Host::live());
        let text = one_vm_scrape(vm, Ok(Default::default()), exit_times, &host);
        assert_eq!(report.rows.len(), 10);
        assert!(!text.contains("..\n"), "a HELP ends in two full stops:\n{text}");
        for row in &report.rows {
            let labels = format!("vm=\"win10\",vcpu=\"0\",reason=\"{}\"", row.name);
            let count = sample(&text, "kvmtune_vcpu_exits_by_reason_total", &labels);
            assert_eq!(count, Some(row.count as f64), "{labels}\n{text}");
            let seconds = sample(&text, "kvmtune_vcpu_exit_handling_seconds_total", &labels).unwrap();
            assert!((seconds - row.time_us.unwrap() / 1e6).abs() < 1e-9, "{labels}: {seconds}");
        }
        // IO_INSTRUCTION: 55,654 exits at 13.63 us on average in the report.
        let io = "vm=\"win10\",vcpu=\"0\",reason=\"IO_INSTRUCTION\"";
        let mean_us = sample(&text, "kvmtune_vcpu_exit_handling_seconds_total", io).unwrap() * 1e6
            / sample(&text, "kvmtune_vcpu_exits_by_reason_total", io).unwrap();
        assert!((mean_us - 13.63).abs() < 0.01, "{mean_us}");
    }
}
