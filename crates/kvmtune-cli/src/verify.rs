//! `kvmtune verify`: run the guest program in a running guest (or read its saved report) and
//! hold what the guest sees against the VM's configuration.

use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args};
use kvmtune::guest::GuestReport;
use kvmtune::guest::agent::{Agent, AgentChannel, build_dirs};
use kvmtune::host::libvirt::Libvirt;

use crate::Outcome;
use crate::args::{Format, HostArgs};

#[derive(Args)]
#[command(group(ArgGroup::new("guest").required(true).args(["domain", "agent", "report"])))]
pub(crate) struct VerifyArgs {
    /// A running libvirt domain: its guest agent runs the guest program, and its definition is
    /// the configuration (unless --config).
    #[arg(long, value_name = "NAME")]
    domain: Option<String>,
    /// libvirt connection URI (with --domain).
    #[arg(long, value_name = "URI", requires = "domain")]
    connect: Option<String>,
    /// A QEMU guest agent's socket on this host (plain QEMU: -chardev socket,path=SOCKET,...
    /// on a virtserialport named org.qemu.guest_agent.0).
    #[arg(long, value_name = "SOCKET")]
    agent: Option<PathBuf>,
    /// A saved `kvmtune-guest --format json` report, instead of running it.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The VM's configuration (libvirt XML, QEMU command line or Proxmox config).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The host whose SMT and L3 groups the pinning is held against (VER009, VER010): by
    /// default this machine when the VM runs here (--agent, or --domain on a local libvirt);
    /// none for --report unless given.
    #[command(flatten)]
    host: HostArgs,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Whether a libvirt URI names this machine: no host between `://` and the path
/// (`qemu:///system`), or none given at all.
fn is_local(connect: Option<&str>) -> bool {
    connect.is_none_or(|uri| uri.split_once("://").is_none_or(|(_, rest)| rest.starts_with('/')))
}

pub(crate) fn run(args: VerifyArgs) -> anyhow::Result<Outcome> {
    let (origin, text) = if let Some(path) = &args.report {
        let text = kvmtune::config::inputs::read_input(path).map_err(anyhow::Error::msg)?;
        (path.display().to_string(), text)
    } else {
        let channel = match (&args.domain, &args.agent) {
            (Some(domain), _) => AgentChannel::Domain {
                libvirt: Libvirt::new(args.connect.as_deref()),
                domain: domain.clone(),
            },
            (None, Some(socket)) => AgentChannel::Socket(socket.clone()),
            (None, None) => unreachable!("clap requires one of --domain, --agent, --report"),
        };
        let origin = match &channel {
            AgentChannel::Domain { domain, .. } => format!("domain {domain}, through its guest agent"),
            AgentChannel::Socket(path) => format!("guest agent {}", path.display()),
        };
        let mut agent = Agent::connect(channel)?;
        let ran = agent
            .run_guest_program(&build_dirs())
            .with_context(|| format!("running kvmtune-guest in the guest ({origin})"))?;
        (format!("{origin}, {} guest", ran.os.label()), ran.stdout)
    };
    let guest = GuestReport::from_json(&text, &origin)?;

    let config_text = match (&args.config, &args.domain) {
        (Some(path), _) => Some((
            path.display().to_string(),
            kvmtune::config::inputs::read_input(path).map_err(anyhow::Error::msg)?,
        )),
        (None, Some(domain)) => Some(crate::args::read_domain_xml(domain, args.connect.as_deref())?),
        (None, None) => None,
    };
    let config = match &config_text {
        Some((name, text)) => Some(kvmtune::config::read(name, text)?),
        None => None,
    };
    let runs_here = args.agent.is_some() || (args.domain.is_some() && is_local(args.connect.as_deref()));
    let host = match args.host.load()? {
        Some(host) => Some(host),
        None if runs_here && config.is_some() => Some(kvmtune::host::probe(&kvmtune::host::Host::live())),
        None => None,
    };
    let findings = match &config {
        Some(config) => kvmtune::analysis::verify_rules::verify(config, &guest, host.as_ref()),
        None => Vec::new(),
    };
    match args.format {
        Format::Json => {
            let raw: serde_json::Value = serde_json::from_str(&text).context("the report is JSON")?;
            let out = serde_json::json!({
                "guest_source": origin,
                "config": config_text.as_ref().map(|(name, _)| name),
                "guest": raw,
                "seen_as_configured": config.as_ref().map(|c| kvmtune::output::verify::seen_as_configured(c, &guest)
                    .iter().map(|hv| hv.qemu()).collect::<Vec<_>>()),
                "findings": findings,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Text => print!(
            "{}",
            kvmtune::output::verify::render_text(
                &origin,
                config_text.as_ref().map(|(name, _)| name.as_str()),
                config.as_ref(),
                &guest,
                &findings
            )
        ),
    }
    Ok(if findings.is_empty() { Outcome::Clean } else { Outcome::Findings })
}
