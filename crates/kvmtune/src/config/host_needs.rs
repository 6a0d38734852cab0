//! What a VM needs from its host while it runs, as one type ([`HostNeeds`]), wherever it is said:
//! the host side of a `tune` plan, a domain's `<metadata><kvmtune:host>` (read and written
//! here), the `kvmtune host prepare` command line (written here) and its flags (parsed here,
//! with the `cli` feature), and the request the libvirt hook and `host prepare` act on once it
//! is resolved against the domain
//! ([`VmConfig::resolve_needs`](crate::config::model::VmConfig::resolve_needs)).
//!
//! ```xml
//! <metadata>
//!   <kvmtune:host xmlns:kvmtune="https://kvmtune.dev/xmlns/libvirt/host/1">
//!     <kvmtune:isolate housekeeping="0-1" irqs="yes"/>  <!-- host tasks, IRQs off the VM's pins -->
//!     <kvmtune:cpufreq governor="performance"/>          <!-- and/or epp="..." -->
//!     <kvmtune:hugepages/>                               <!-- as <memoryBacking> and <memory> need -->
//!     <kvmtune:vfio single-gpu="no">                     <!-- each device with its IOMMU group -->
//!       <kvmtune:device address="0000:01:00.0"/>
//!     </kvmtune:vfio>
//!   </kvmtune:host>
//! </metadata>
//! ```
//!
//! libvirt keeps a `<metadata>` child verbatim as long as it has a namespace of its own
//! (libvirt docs/formatdomain.rst, "General metadata").

use roxmltree::Node;
use serde::Serialize;

use crate::config::ConfigError;
use crate::config::cpuset;
use crate::values::escape::shell_line;
use crate::values::size::{self, Units};
use crate::values::{CpuSet, PciAddress, Span};

/// The namespace of `<kvmtune:host>`; the version is its last segment.
pub const NAMESPACE: &str = "https://kvmtune.dev/xmlns/libvirt/host/1";
/// The prefix kvmtune writes (a domain may use any prefix for the namespace).
pub const PREFIX: &str = "kvmtune";
/// The parts `<kvmtune:host>` may hold.
pub const PARTS: [&str; 4] = ["isolate", "cpufreq", "hugepages", "vfio"];

/// Hugepages a VM needs on one node (`None`: from the host-wide pool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HugepageNeed {
    pub size_kib: u64,
    pub count: u64,
    pub node: Option<u32>,
}

impl std::fmt::Display for HugepageNeed {
    /// `SIZE:COUNT[@NODE]`, as `--hugepages` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", size::short_kib(self.size_kib), self.count)?;
        match self.node {
            Some(node) => write!(f, "@{node}"),
            None => Ok(()),
        }
    }
}

/// `SIZE:COUNT[@NODE]`, as `--hugepages` takes it: `2M:4096@1`, `1G:16`, `2048:512` (KiB).
pub fn parse_hugepage_need(text: &str) -> Result<HugepageNeed, String> {
    let (spec, node) = match text.split_once('@') {
        Some((spec, node)) => (
            spec,
            Some(node.parse::<u32>().map_err(|_| format!("`{text}`: `{node}` is not a NUMA node number"))?),
        ),
        None => (text, None),
    };
    let (size, count) = spec
        .split_once(':')
        .ok_or_else(|| format!("`{text}`: expected SIZE:COUNT[@NODE], such as 2M:4096@1"))?;
    let size_kib = size::parse_kib(size, "K", Units::Binary)
        .ok()
        .filter(|&k| k > 0)
        .ok_or_else(|| format!("`{text}`: `{size}` is not a page size (2M, 1G, or KiB)"))?;
    let count = count.parse::<u64>().map_err(|_| format!("`{text}`: `{count}` is not a page count"))?;
    Ok(HugepageNeed { size_kib, count, node })
}

/// The hugepages a VM asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "from", content = "pages", rename_all = "kebab-case")]
pub enum Hugepages {
    #[default]
    None,
    /// As many as the domain's `<memoryBacking><hugepages>` and `<memory>` need, on its
    /// `<numatune>` node: what `<kvmtune:hugepages/>` asks, resolved at the VM's start.
    FromDomain,
    /// These.
    Exactly(Vec<HugepageNeed>),
}

/// What a VM needs from its host while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostNeeds {
    /// Every CPU the VM runs on: vCPUs, and its emulator and iothreads where they are not on the
    /// host's CPUs. `None`: the domain's `<cputune>` pins say, once resolved.
    pub cpus: Option<CpuSet>,
    /// The host's CPUs; by default every online CPU no prepared VM takes.
    pub housekeeping: Option<CpuSet>,
    /// Host tasks, kernel threads and workqueues off the VM's CPUs.
    pub isolate: bool,
    /// IRQs off the VM's CPUs (and banned in irqbalance).
    pub irqs: bool,
    /// The cpufreq governor of the VM's CPUs.
    pub governor: Option<String>,
    /// Their energy-performance preference.
    pub epp: Option<String>,
    pub hugepages: Hugepages,
    /// PCI devices handed to vfio-pci, each with its whole IOMMU group.
    pub devices: Vec<PciAddress>,
    /// The devices are the host's only GPU: the display manager, consoles and firmware
    /// framebuffer come off it first.
    pub single_gpu: bool,
}

/// Where each part of `<kvmtune:host>` stands in the domain, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NeedsSpans {
    pub host: Span,
    pub isolate: Option<Span>,
    pub housekeeping: Option<Span>,
    pub cpufreq: Option<Span>,
    pub hugepages: Option<Span>,
    /// One per device, in order.
    pub devices: Vec<Span>,
}

/// [`HostNeeds`] as a domain's metadata states them, with where each part is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatedNeeds {
    pub needs: HostNeeds,
    pub at: NeedsSpans,
}

/// Why a domain's needs cannot be resolved; nothing has been written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeedsError {
    #[error("housekeeping CPU(s) {overlap} are the VM's own (VM: {vm}, housekeeping: {housekeeping})")]
    HousekeepingOverlap { overlap: CpuSet, vm: CpuSet, housekeeping: CpuSet },
}

impl HostNeeds {
    /// Asks for something of the host's CPUs: isolation, a governor or an EPP.
    pub fn asks_for_cpus(&self) -> bool {
        self.isolate || self.governor.is_some() || self.epp.is_some()
    }

    /// Asks for nothing `host prepare` does (only devices, or nothing at all).
    pub fn only_devices(&self) -> bool {
        !self.asks_for_cpus() && self.hugepages == Hugepages::None
    }

    /// The hugepages asked for, once resolved (none while they are left to the domain).
    pub fn hugepage_needs(&self) -> &[HugepageNeed] {
        match &self.hugepages {
            Hugepages::Exactly(needs) => needs,
            Hugepages::None | Hugepages::FromDomain => &[],
        }
    }

    /// The `kvmtune host prepare` command that gives the VM `vm` these needs, every word quoted
    /// for a shell.
    pub fn prepare_command(&self, vm: &str) -> String {
        let mut words: Vec<String> =
            ["kvmtune", "host", "prepare", "--name", vm].map(str::to_string).to_vec();
        let mut flag = |name: &str, value: String| {
            words.push(name.to_string());
            words.push(value);
        };
        if let Some(cpus) = &self.cpus {
            flag("--cpus", cpus.to_string());
        }
        if let Some(housekeeping) = &self.housekeeping {
            flag("--housekeeping", housekeeping.to_string());
        }
        for need in self.hugepage_needs() {
            flag("--hugepages", need.to_string());
        }
        if let Some(governor) = &self.governor {
            flag("--governor", governor.clone());
        }
        if let Some(epp) = &self.epp {
            flag("--epp", epp.clone());
        }
        if !self.isolate {
            words.push("--no-isolate".to_string());
        }
        if !self.irqs {
            words.push("--no-irqs".to_string());
        }
        words.push("--apply".to_string());
        shell_line(&words)
    }

    /// `<kvmtune:host>`, one line per element (the caller indents: the first and last lines are
    /// the element's own, the others one level deeper, the devices two), with attribute values
    /// in `quote`. CPUs and hugepage counts are the domain's to say, so only what is asked of
    /// them goes in.
    pub fn metadata_lines(&self, quote: char) -> Vec<(usize, String)> {
        let q = quote;
        let attribute =
            |name: &str, value: &str| format!(" {name}={q}{}{q}", crate::values::escape::xml(value));
        let mut lines = vec![(0, format!("<{PREFIX}:host xmlns:{PREFIX}={q}{NAMESPACE}{q}>"))];
        if self.isolate || self.irqs {
            let housekeeping = self
                .housekeeping
                .as_ref()
                .map_or(String::new(), |h| attribute("housekeeping", &h.to_string()));
            let irqs = attribute("irqs", if self.irqs { "yes" } else { "no" });
            lines.push((1, format!("<{PREFIX}:isolate{housekeeping}{irqs}/>")));
        }
        if self.governor.is_some() || self.epp.is_some() {
            let governor = self.governor.as_deref().map_or(String::new(), |g| attribute("governor", g));
            let epp = self.epp.as_deref().map_or(String::new(), |e| attribute("epp", e));
            lines.push((1, format!("<{PREFIX}:cpufreq{governor}{epp}/>")));
        }
        if self.hugepages != Hugepages::None {
            lines.push((1, format!("<{PREFIX}:hugepages/>")));
        }
        if !self.devices.is_empty() {
            let single_gpu = attribute("single-gpu", if self.single_gpu { "yes" } else { "no" });
            lines.push((1, format!("<{PREFIX}:vfio{single_gpu}>")));
            for device in &self.devices {
                lines.push((2, format!("<{PREFIX}:device{}/>", attribute("address", &device.to_string()))));
            }
            lines.push((1, format!("</{PREFIX}:vfio>")));
        }
        lines.push((0, format!("</{PREFIX}:host>")));
        lines
    }
}

/// Reads `<kvmtune:host>`, strictly, since a misspelt part would silently leave the host as it
/// is. `error_at` makes an error at a byte offset of the domain.
/// A cpufreq governor or energy-performance preference as the kernel names them
/// (`performance`, `schedutil`, `balance_power`, or an EPP number): lowercase letters, digits
/// and `_`, which is all `scaling_available_governors` and
/// `energy_performance_available_preferences` list (Documentation/admin-guide/pm/cpufreq.rst,
/// intel_pstate.rst). Anything else is no governor on any host, and is refused where it is read.
pub fn parse_cpufreq_word(text: &str) -> Result<String, String> {
    let plain = !text.is_empty()
        && text.len() <= 32
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    match plain {
        true => Ok(text.to_string()),
        false => Err(format!(
            "`{}` is not a cpufreq governor or preference (lowercase letters, digits and _, such as performance)",
            text.escape_debug()
        )),
    }
}

pub fn read_metadata(
    host: Node,
    error_at: &dyn Fn(usize, String) -> ConfigError,
) -> Result<StatedNeeds, ConfigError> {
    let span = |node: Node| Span::from(node.range());
    let on_off = |node: Node, attribute: &str| -> Result<Option<bool>, ConfigError> {
        match node.attribute(attribute) {
            None => Ok(None),
            Some("on" | "yes") => Ok(Some(true)),
            Some("off" | "no") => Ok(Some(false)),
            Some(other) => Err(error_at(
                node.range().start,
                format!("<{}> {attribute}='{other}' must be 'on' or 'off'", node.tag_name().name()),
            )),
        }
    };
    let mut needs = HostNeeds::default();
    let mut at = NeedsSpans {
        host: span(host),
        isolate: None,
        housekeeping: None,
        cpufreq: None,
        hugepages: None,
        devices: Vec::new(),
    };
    for part in host.children().filter(Node::is_element) {
        let name = part.tag_name().name();
        if part.tag_name().namespace() != Some(NAMESPACE) || !PARTS.contains(&name) {
            return Err(error_at(
                part.range().start,
                format!(
                    "<kvmtune:host> has no part <{name}> (it takes {}, in the namespace {NAMESPACE})",
                    PARTS.map(|p| format!("<kvmtune:{p}>")).join(", ")
                ),
            ));
        }
        match name {
            "isolate" => {
                needs.isolate = true;
                needs.irqs = on_off(part, "irqs")?.unwrap_or(true);
                at.isolate = Some(span(part));
                if let Some(value) = part.attribute_node("housekeeping") {
                    let cpus = cpuset::parse(value.value()).map_err(|error| {
                        error_at(
                            part.range().start,
                            format!("<isolate> housekeeping='{}': {error}", value.value()),
                        )
                    })?;
                    needs.housekeeping = Some(cpus);
                    at.housekeeping = Some(value.range().into());
                }
            }
            "cpufreq" => {
                let word = |attribute: &str| -> Result<Option<String>, ConfigError> {
                    let Some(value) = part.attribute_node(attribute) else { return Ok(None) };
                    parse_cpufreq_word(value.value())
                        .map(Some)
                        .map_err(|why| error_at(value.range().start, format!("<cpufreq> {attribute}: {why}")))
                };
                needs.governor = word("governor")?;
                needs.epp = word("epp")?;
                at.cpufreq = Some(span(part));
            }
            "hugepages" => {
                needs.hugepages = Hugepages::FromDomain;
                at.hugepages = Some(span(part));
            }
            _ => {
                needs.single_gpu = on_off(part, "single-gpu")?.unwrap_or(false);
                for device in part.children().filter(Node::is_element) {
                    let address = device
                        .attribute_node("address")
                        .filter(|_| device.has_tag_name((NAMESPACE, "device")));
                    let Some(address) = address else {
                        return Err(error_at(
                            device.range().start,
                            "<kvmtune:vfio> holds only <kvmtune:device address='0000:01:00.0'/>".to_string(),
                        ));
                    };
                    let parsed = PciAddress::parse(address.value())
                        .map_err(|e| error_at(address.range().start, e.to_string()))?;
                    needs.devices.push(parsed);
                    at.devices.push(address.range().into());
                }
            }
        }
    }
    Ok(StatedNeeds { needs, at })
}

/// `kvmtune host prepare`'s flags: what the VM needs, where the domain does not say.
#[cfg(feature = "cli")]
#[derive(Debug, Clone, clap::Args)]
pub struct NeedsFlags {
    /// The VM's CPUs (vCPUs, emulator, iothreads), instead of the domain's <cputune>.
    #[arg(long, value_name = "LIST", value_parser = |text: &str| CpuSet::parse_list(text).map_err(|e| e.to_string()))]
    pub cpus: Option<CpuSet>,
    /// The host's CPUs (default: every online CPU no prepared VM takes).
    #[arg(long, value_name = "LIST", value_parser = |text: &str| CpuSet::parse_list(text).map_err(|e| e.to_string()))]
    pub housekeeping: Option<CpuSet>,
    /// cpufreq governor for the VM's CPUs (such as performance).
    #[arg(long, value_name = "GOV", value_parser = parse_cpufreq_word)]
    pub governor: Option<String>,
    /// Energy-performance preference for the VM's CPUs (such as performance).
    #[arg(long, value_name = "PREF", value_parser = parse_cpufreq_word)]
    pub epp: Option<String>,
    /// Hugepages the VM needs: SIZE:COUNT[@NODE], such as 2M:4096@1 (repeatable; default:
    /// from the domain's <memoryBacking> and <memory>).
    #[arg(long, value_name = "SIZE:COUNT[@NODE]", value_parser = parse_hugepage_need)]
    pub hugepages: Vec<HugepageNeed>,
    /// Leave host tasks, kernel threads and workqueues where they are.
    #[arg(long)]
    pub no_isolate: bool,
    /// Leave IRQs where they are.
    #[arg(long)]
    pub no_irqs: bool,
}

#[cfg(feature = "cli")]
impl NeedsFlags {
    /// The needs these flags state; what they leave out comes from the domain when one is given
    /// (its pins and hugepages).
    pub fn needs(&self) -> HostNeeds {
        HostNeeds {
            cpus: self.cpus.clone(),
            housekeeping: self.housekeeping.clone(),
            isolate: !self.no_isolate,
            irqs: !self.no_irqs,
            governor: self.governor.clone(),
            epp: self.epp.clone(),
            hugepages: match self.hugepages.is_empty() {
                true => Hugepages::FromDomain,
                false => Hugepages::Exactly(self.hugepages.clone()),
            },
            devices: Vec::new(),
            single_gpu: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_reads_back_as_the_same_needs() {
        let need = HugepageNeed { size_kib: 1024 * 1024, count: 16, node: Some(1) };
        let needs = HostNeeds {
            cpus: Some(CpuSet::parse_list("2-7").unwrap()),
            housekeeping: Some(CpuSet::parse_list("0-1").unwrap()),
            isolate: true,
            irqs: true,
            governor: Some("performance".to_string()),
            hugepages: Hugepages::Exactly(vec![need.clone()]),
            ..HostNeeds::default()
        };
        let line = needs.prepare_command("win");
        assert_eq!(
            line,
            "kvmtune host prepare --name win --cpus 2-7 --housekeeping 0-1 --hugepages 1G:16@1 --governor performance --apply"
        );
        let spec = line.split_whitespace().skip_while(|w| *w != "--hugepages").nth(1).unwrap();
        assert_eq!(parse_hugepage_need(spec), Ok(need));
        assert!(needs.prepare_command("$(reboot)").contains("--name '$(reboot)'"));
    }

    #[test]
    fn hugepage_needs_parse_with_and_without_a_node() {
        assert_eq!(
            parse_hugepage_need("2M:64@1"),
            Ok(HugepageNeed { size_kib: 2048, count: 64, node: Some(1) })
        );
        assert_eq!(parse_hugepage_need("1G:16").unwrap().size_kib, 1024 * 1024);
        assert_eq!(parse_hugepage_need("2048:8").unwrap().size_kib, 2048);
        for bad in ["2M", "xM:4", "2M:many", "2M:4@one", "0:4"] {
            assert!(parse_hugepage_need(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pinned_domain_resolves_to_its_cpus_node_and_hugepages() {
        let xml = r#"<domain type='kvm'><name>win11</name><memory unit='KiB'>4194304</memory><vcpu>2</vcpu>
            <memoryBacking><hugepages/></memoryBacking>
            <cputune><vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='3'/><emulatorpin cpuset='1'/></cputune>
            <numatune><memory mode='strict' nodeset='1'/></numatune><os><type>hvm</type></os></domain>"#;
        let config = crate::config::libvirt::parse("win11.xml", xml).unwrap();
        let asked = HostNeeds { hugepages: Hugepages::FromDomain, ..HostNeeds::default() };
        let needs = config.resolve_needs(&asked, 2048).unwrap();
        assert_eq!(needs.cpus.unwrap().to_string(), "1-3");
        assert_eq!(
            needs.hugepages,
            Hugepages::Exactly(vec![HugepageNeed { size_kib: 2048, count: 2048, node: Some(1) }])
        );
        let keeps_a_vcpu =
            HostNeeds { housekeeping: Some(CpuSet::parse_list("0-2").unwrap()), ..HostNeeds::default() };
        assert!(matches!(
            config.resolve_needs(&keeps_a_vcpu, 2048),
            Err(NeedsError::HousekeepingOverlap { .. })
        ));
    }
}
