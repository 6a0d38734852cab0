//! `kvmtune top` and `kvmtune exporter`: every running VM of this host, with its diagnosis, for
//! a person (`top`) or for Prometheus (`exporter`). Glue: finding the VMs, reading and judging
//! their counters is `kvmtune::live`'s; the text and the metrics are `kvmtune::output`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use kvmtune::hostchange::journal::DEFAULT_DIR;
use kvmtune::hostchange::{Journal, VmJournal};
use kvmtune::live::{self, Tracepoints, VmReading, VmView};
use kvmtune::output::{metrics, top_text};

use crate::{Outcome, metrics_server, print_out};

/// `exporter`'s default address: the 9100-9999 range of Prometheus' port allocation list is
/// used up (github.com/prometheus/prometheus/wiki/Default-port-allocations), so kvmtune takes a
/// port above it that no well-known exporter uses.
const DEFAULT_LISTEN: &str = "127.0.0.1:10947";

/// How long the host facts that do not change while VMs run (the CPU, KVM and its modules'
/// parameters, the IOMMU) are reused before they are probed again; memory and hugepages are
/// read fresh every time. A full probe costs about 70 ms of CPU (bench/exporter-scrape.sh).
const HOST_FACTS_REUSED_FOR: Duration = Duration::from_secs(60);

/// This host's facts, probed in full at most every [`HOST_FACTS_REUSED_FOR`].
struct HostFactsCache {
    facts: kvmtune::host::HostFacts,
    probed_at: Instant,
}

impl HostFactsCache {
    fn new() -> Self {
        HostFactsCache {
            facts: kvmtune::host::probe(&kvmtune::host::Host::live()),
            probed_at: Instant::now(),
        }
    }

    fn now(&mut self) -> &kvmtune::host::HostFacts {
        if self.probed_at.elapsed() >= HOST_FACTS_REUSED_FOR {
            *self = HostFactsCache::new();
        } else {
            self.facts.memory = kvmtune::host::memory::probe(&kvmtune::host::Host::live());
        }
        &self.facts
    }
}

/// What `top` and `exporter` share: which VMs, and how long one may take to answer.
#[derive(Args)]
pub(crate) struct LiveArgs {
    /// libvirt connection URI for the domains found (default: virsh's).
    #[arg(long)]
    connect: Option<String>,
    /// How long one VM's monitor may take to answer, in seconds; a VM that takes longer is shown
    /// with the reason, and the others are not held up.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = positive_seconds)]
    timeout: f64,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Ok(seconds),
        _ => Err(format!("`{text}` is not a number of seconds above 0")),
    }
}

impl LiveArgs {
    /// Every VM's reading, and why libvirt could not be asked for its domains, if it could not.
    fn read(&self, tracepoints: &mut Tracepoints) -> (Vec<VmReading>, Option<String>) {
        let timeout = Duration::from_secs_f64(self.timeout);
        let (vms, libvirt_problem) =
            live::discover::discover_with_libvirt(Path::new("/proc"), self.connect.as_deref(), timeout);
        (live::read_all(&vms, timeout, tracepoints), libvirt_problem)
    }
}

/// The host line, with what went wrong asking libvirt.
fn host_line(host: &kvmtune::host::HostFacts, libvirt_problem: Option<String>) -> String {
    let line = top_text::host_line(host, &journals());
    match libvirt_problem {
        Some(problem) => format!("{line}; {problem}"),
        None => line,
    }
}

#[derive(Args)]
pub(crate) struct TopArgs {
    /// Print one plain-text snapshot and exit (for scripts), instead of the full-screen view.
    #[arg(long)]
    once: bool,
    /// Seconds between the two readings a rate is taken over.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = positive_seconds)]
    interval: f64,
    #[command(flatten)]
    live: LiveArgs,
}

#[derive(Args)]
pub(crate) struct ExporterArgs {
    /// Where to serve /metrics.
    #[arg(long, value_name = "ADDRESS:PORT", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// A host name under which Prometheus reaches this exporter (repeatable). A request whose
    /// Host header names anything but an address, `localhost`, this host's name or one of these
    /// is refused, so that a web page cannot read the metrics through a name it points here.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_host: Vec<String>,
    /// Also trace each VM's exits (kvm_exit and kvm_entry) for the handling time per exit
    /// reason (`kvmtune_vcpu_exit_handling_seconds_total`). Costs the guests more than the
    /// counters; only where the host's KVM emits kvm_exit.
    #[arg(long)]
    exit_times: bool,
    #[command(flatten)]
    live: LiveArgs,
}

/// The journals of VMs `kvmtune host` prepared; none when nothing was ever prepared.
fn journals() -> Vec<VmJournal> {
    if !Path::new(DEFAULT_DIR).is_dir() {
        return Vec::new();
    }
    Journal::open_to_read(DEFAULT_DIR, &kvmtune::host::Host::live())
        .and_then(|j| j.status())
        .unwrap_or_default()
}

/// Each reading of `now` against the same VM (same name and pid) in `before`.
fn views(before: &[VmReading], now: &[VmReading]) -> Vec<Option<VmView>> {
    let earlier: HashMap<(&str, i32), &VmReading> =
        before.iter().map(|r| ((r.vm.name.as_str(), r.vm.pid), r)).collect();
    now.iter()
        .map(|reading| {
            earlier
                .get(&(reading.vm.name.as_str(), reading.vm.pid))
                .map(|first| live::view::view(first, reading))
        })
        .collect()
}

/// With `--exit-times`, says once on stderr that a VM exits but none of its exits is traced (a
/// host whose KVM does not emit kvm_exit, as under PVM, or no tracefs), so that the missing
/// handling-time metrics are not a mystery. Whether it said so.
fn say_if_no_exit_is_traced(readings: &[VmReading], views: &[Option<VmView>]) -> bool {
    let untraced = readings.iter().zip(views).find(|(reading, view)| {
        reading.exit_times.is_empty() && view.as_ref().is_some_and(|v| v.exits_per_s > 0.0)
    });
    if let Some((reading, _)) = untraced {
        eprintln!(
            "kvmtune exporter: --exit-times: VM {} exits but no kvm_exit of it was traced: the host's KVM may not emit kvm_exit (PVM does not), or tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)",
            reading.vm.name
        );
    }
    untraced.is_some()
}

/// What `top` shows of every VM in `now`; one that appeared since `before` has no rate yet and
/// is listed with what it is missing.
fn shown_views(before: &[VmReading], now: &[VmReading]) -> Vec<VmView> {
    views(before, now)
        .into_iter()
        .zip(now)
        .map(|(view, reading)| view.unwrap_or_else(|| live::view::view(reading, reading)))
        .collect()
}

pub(crate) fn top(args: TopArgs) -> anyhow::Result<Outcome> {
    if !args.once {
        return full_screen(args);
    }
    let host = kvmtune::host::probe(&kvmtune::host::Host::live());
    let mut tracepoints = Tracepoints::default();
    let (first, _) = args.live.read(&mut tracepoints);
    std::thread::sleep(Duration::from_secs_f64(args.interval));
    let (last, libvirt_problem) = args.live.read(&mut tracepoints);
    let shown = shown_views(&first, &last);
    print_out(&top_text::render(&shown, &host_line(&host, libvirt_problem), args.interval))?;
    Ok(Outcome::Clean)
}

/// What one scrape carries over to the next.
struct ScrapeState {
    /// Only the previous scrape's readings are kept: findings are judged between two scrapes,
    /// and nothing is read between them (the exit trace, when asked for, drains on its own).
    previous: Vec<VmReading>,
    tracepoints: Tracepoints,
    said_no_exit_times: bool,
    host_facts: HostFactsCache,
}

fn scrape(args: &ExporterArgs, state: &mut ScrapeState, openmetrics: bool) -> metrics_server::Response {
    let started = Instant::now();
    let host = state.host_facts.now();
    let (readings, libvirt_problem) = args.live.read(&mut state.tracepoints);
    if let Some(problem) = libvirt_problem {
        eprintln!("kvmtune exporter: {problem}; the other VMs are served");
    }
    let views = views(&state.previous, &readings);
    if args.exit_times && !state.said_no_exit_times {
        state.said_no_exit_times = say_if_no_exit_is_traced(&readings, &views);
    }
    let journals = journals();
    let text = metrics::render(&metrics::Scrape {
        readings: &readings,
        views: &views,
        host,
        journals: &journals,
        duration_s: started.elapsed().as_secs_f64(),
    });
    state.previous = readings;
    // Prometheus asks for OpenMetrics; other clients get the classic text format.
    let (body, content_type) = match openmetrics {
        true => (text, "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        false => (metrics::classic_text(&text), "text/plain; version=0.0.4; charset=utf-8"),
    };
    metrics_server::Response { status: 200, content_type, body }
}

/// This host's name (kernel.hostname), which a Host header may give.
fn own_host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}

pub(crate) fn exporter(args: ExporterArgs) -> anyhow::Result<Outcome> {
    let server = metrics_server::Server::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // A signal ends the loop below rather than the process, so that what it traces is closed
    // (a tracefs instance would otherwise outlive it, still tracing).
    let stopper = server.stopper().context("cannot read the listening address")?;
    ctrlc::set_handler(move || stopper.stop()).context("cannot handle SIGINT and SIGTERM")?;
    eprintln!("kvmtune exporter: serving http://{}/metrics", args.listen);
    let allowed =
        metrics_server::AllowedHosts::new(own_host_name().into_iter().chain(args.allow_host.clone()));
    let state = std::sync::Arc::new(std::sync::Mutex::new(ScrapeState {
        previous: Vec::new(),
        tracepoints: if args.exit_times { Tracepoints::with_exit_times() } else { Tracepoints::default() },
        said_no_exit_times: false,
        host_facts: HostFactsCache::new(),
    }));
    let shared = state.clone();
    let args = std::sync::Arc::new(args);
    server.serve(metrics_server::Limits::default(), allowed, move |request| match request.path.as_str() {
        "/metrics" => {
            // One scrape at a time: two at once would read the same counters twice.
            let mut state = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            scrape(&args, &mut state, request.accepts_openmetrics)
        }
        "/" => metrics_server::Response::text(200, "kvmtune exporter: the metrics are at /metrics\n"),
        _ => metrics_server::Response::text(404, "not found; the metrics are at /metrics\n"),
    });
    // A connection still being answered holds the state; the trace is closed here regardless.
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).tracepoints = Tracepoints::default();
    eprintln!("kvmtune exporter: stopped");
    Ok(Outcome::Clean)
}

/// The full-screen view: readings every interval in a thread of their own, the screen in this
/// one.
fn full_screen(args: TopArgs) -> anyhow::Result<Outcome> {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        bail!("the full-screen view needs a terminal; `kvmtune top --once` prints a snapshot");
    }
    let (sender, receiver) = std::sync::mpsc::channel();
    let interval = Duration::from_secs_f64(args.interval);
    let interval_s = args.interval;
    std::thread::spawn(move || {
        let mut tracepoints = Tracepoints::default();
        let (mut previous, _) = args.live.read(&mut tracepoints);
        let mut host_facts = HostFactsCache::new();
        loop {
            std::thread::sleep(interval);
            let host = host_facts.now();
            let (now, libvirt_problem) = args.live.read(&mut tracepoints);
            let shown = shown_views(&previous, &now);
            let snapshot =
                crate::top_screen::Snapshot { views: shown, host_line: host_line(host, libvirt_problem) };
            // The screen has quit.
            if sender.send(snapshot).is_err() {
                return;
            }
            previous = now;
        }
    });
    crate::top_screen::run(receiver, interval_s)?;
    Ok(Outcome::Clean)
}
