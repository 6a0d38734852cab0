//! Arguments shared by several commands, and the value parsers that turn raw flags into
//! validated, typed values at the edge: a bad value is clap's error (exit 2) naming the flag,
//! before any command runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use kvmtune::analysis::Workload;
use kvmtune::analysis::rule::select_vm_rules;
use kvmtune::analysis::vm_rules::VmRule;
use kvmtune::config::model::WindowsVersion;
use kvmtune::host::{self, Host, HostFacts};
use kvmtune::values::CpuSet;
use kvmtune::values::size::{self, Units};

/// Where an existing VM's config comes from: a file, or libvirt.
#[derive(clap::Args)]
pub(crate) struct VmConfigArgs {
    /// A libvirt domain XML, a QEMU command line (argv file or launch script) or a Proxmox
    /// VM config; the format is recognised from the content.
    #[arg(conflicts_with = "domain")]
    pub(crate) file: Option<PathBuf>,
    /// Read the domain's inactive XML from libvirt (`virsh dumpxml --inactive`).
    #[arg(long)]
    pub(crate) domain: Option<String>,
    /// libvirt connection URI for --domain.
    #[arg(long, requires = "domain")]
    pub(crate) connect: Option<String>,
}

impl VmConfigArgs {
    pub(crate) fn given(&self) -> bool {
        self.file.is_some() || self.domain.is_some()
    }

    /// The config's name and text, from the file or from libvirt.
    pub(crate) fn read(&self) -> anyhow::Result<(String, String)> {
        if let Some(domain) = &self.domain {
            return read_domain_xml(domain, self.connect.as_deref());
        }
        let path = self.file.as_ref().context("give a FILE or --domain")?;
        let text = kvmtune::config::inputs::read_input(path).map_err(anyhow::Error::msg)?;
        Ok((path.display().to_string(), text))
    }
}

/// A domain's inactive XML from libvirt, named `domain:NAME` in diagnostics.
pub(crate) fn read_domain_xml(domain: &str, connect: Option<&str>) -> anyhow::Result<(String, String)> {
    let xml = kvmtune::host::libvirt::Libvirt::new(connect).domain_xml(domain)?;
    Ok((format!("domain:{domain}"), xml))
}

/// `--host live`: the one value `--host` takes.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum HostLive {
    /// Probe this machine.
    Live,
}

/// Where host facts for host-aware rules come from.
#[derive(clap::Args, Default)]
pub(crate) struct HostArgs {
    /// `live` to probe this machine for host-aware rules.
    #[arg(long, value_enum, conflicts_with_all = ["host_root", "host_json"])]
    pub(crate) host: Option<HostLive>,
    /// A host snapshot directory (sys/ and proc/) for host-aware rules.
    #[arg(long, value_name = "DIR", conflicts_with = "host_json")]
    pub(crate) host_root: Option<PathBuf>,
    /// Host facts saved by `kvmtune probe --format json`.
    #[arg(long, value_name = "FILE")]
    pub(crate) host_json: Option<PathBuf>,
}

impl HostArgs {
    /// A snapshot directory, as `probe --root` gives it.
    pub(crate) fn snapshot(root: PathBuf) -> Self {
        HostArgs { host_root: Some(root), ..HostArgs::default() }
    }

    /// The host facts these arguments name, or `None` when they name no host.
    pub(crate) fn load(&self) -> anyhow::Result<Option<HostFacts>> {
        if self.host.is_some() {
            return Ok(Some(host::probe(&Host::live())));
        }
        if let Some(root) = &self.host_root {
            let snapshot = Host::snapshot(root)
                .with_context(|| format!("cannot read the snapshot at {}", root.display()))?;
            return Ok(Some(host::probe(&snapshot)));
        }
        if let Some(path) = &self.host_json {
            let text = kvmtune::config::inputs::read_input(path).map_err(anyhow::Error::msg)?;
            let mut value: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
            // Accept both `kvmtune probe --format json` output and the bare host object.
            if let Some(host) = value.get_mut("host") {
                value = host.take();
            }
            let facts: HostFacts = serde_json::from_value(value).with_context(|| {
                format!("{} is not kvmtune host facts (docs/probe-schema.md)", path.display())
            })?;
            return Ok(Some(facts));
        }
        Ok(None)
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum WorkloadArg {
    Gaming,
    Desktop,
    Server,
    IpiHeavy,
}

impl From<WorkloadArg> for Workload {
    fn from(arg: WorkloadArg) -> Self {
        match arg {
            WorkloadArg::Gaming => Workload::Gaming,
            WorkloadArg::Desktop => Workload::Desktop,
            WorkloadArg::Server => Workload::Server,
            WorkloadArg::IpiHeavy => Workload::IpiHeavy,
        }
    }
}

pub(crate) fn parse_windows(text: &str) -> Result<WindowsVersion, String> {
    WindowsVersion::parse(text).ok_or_else(|| {
        format!("`{text}` is not a Windows version kvmtune knows (11, 10, 8, 7, xp, 2016, 2019, 2022, 2025)")
    })
}

pub(crate) fn parse_cpu_list(text: &str) -> Result<CpuSet, String> {
    CpuSet::parse_list(text).map_err(|error| format!("`{text}` is not a CPU list (such as 0,8): {error}"))
}

/// A rule `check` runs, by id or name; unknown ones are refused with the closest ids.
pub(crate) fn parse_config_rule(text: &str) -> Result<&'static VmRule, String> {
    select_vm_rules(&[text.trim()]).map(|rules| rules[0]).map_err(|error| error.to_string())
}

/// `--vm NAME:VCPUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VmSpec {
    pub(crate) name: String,
    pub(crate) vcpus: u32,
}

pub(crate) fn parse_vm_spec(text: &str) -> Result<VmSpec, String> {
    let (name, vcpus) = text.split_once(':').ok_or_else(|| format!("`{text}`: expected NAME:VCPUS"))?;
    if name.is_empty() {
        return Err(format!("`{text}`: the VM has no name"));
    }
    let vcpus = vcpus.parse().map_err(|_| format!("`{text}`: `{vcpus}` is not a vCPU count"))?;
    Ok(VmSpec { name: name.to_string(), vcpus })
}

/// Memory: `16G`, `8192M`, or MiB; at least 256 MiB.
pub(crate) fn parse_memory(text: &str) -> Result<u64, String> {
    let kib = size::parse_kib(text, "M", Units::Binary)
        .map_err(|_| format!("`{text}` is not a memory size (16G, 8192M)"))?;
    match kib / 1024 {
        mib if mib >= 256 => Ok(mib),
        _ => Err(format!("`{text}`: a Windows VM needs at least 256 MiB")),
    }
}

/// A duration as users write it: `30`, `30s`, `500ms`, `2m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 =
        number.trim().parse().map_err(|_| format!("`{text}` is not a duration (30, 30s, 500ms, 2m)"))?;
    if !value.is_finite() || value <= 0.0 || value * scale > 86_400.0 {
        return Err(format!("`{text}` is not a duration between 1 ms and a day"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_at_the_edge() {
        assert_eq!(parse_windows("10"), Ok(WindowsVersion::Win10));
        assert!(parse_windows("95").unwrap_err().contains("not a Windows version"));
        assert_eq!(parse_cpu_list("0,8").unwrap().to_string(), "0,8");
        assert!(parse_cpu_list("0-x").is_err());
        assert_eq!(parse_vm_spec("a:8"), Ok(VmSpec { name: "a".into(), vcpus: 8 }));
        assert!(
            parse_vm_spec("a8").is_err() && parse_vm_spec(":8").is_err() && parse_vm_spec("a:x").is_err()
        );
        assert_eq!(parse_config_rule("time005").unwrap().meta.id, "TIME005");
        assert!(parse_config_rule("TIEM005").unwrap_err().contains("did you mean TIME005"));
        assert!(parse_config_rule("HOST004").unwrap_err().contains("host rule"));
        assert_eq!(parse_memory("16G"), Ok(16384));
        assert!(parse_memory("100M").is_err());
    }
}
