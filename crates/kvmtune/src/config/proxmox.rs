//! Reads a Proxmox VE VM config (`/etc/pve/qemu-server/ID.conf`) into [`VmConfig`].
//!
//! Proxmox derives much of the QEMU command line from a few keys, and kvmtune must see what the
//! guest really gets: for Windows `ostype`s qemu-server adds Hyper-V enlightenments by Windows
//! version and machine version, sets the RTC to local time with drift fixing, turns the HPET
//! off (for every guest) and sets the PIT to discard, and adds a USB tablet and a virtio balloon unless told not
//! to. Those derivations follow qemu-server's `add_hyperv_enlightenments` and
//! `config_to_command` as summarised in ../shared/landscape.md and checked against its
//! cfg2cmd tests in ../shared/corpus/proxmox/; each derived value points at the key it comes
//! from. Raw `args:` are read as a QEMU command line and applied last, as QEMU does.
//!
//! Only the current config is read; `[snapshot]` sections after it are ignored.

use crate::config::ConfigError;
use crate::config::model::*;
use crate::knowledge::hyperv::Hv;
use crate::values::PciAddress;
use crate::values::{SourceText, Span};

/// One `key: value` line of the current config.
pub(crate) struct Line {
    pub(crate) key: String,
    pub(crate) value: String,
    /// The value's span (the whole line where the value is empty).
    pub(crate) span: Span,
}

pub fn parse(path: &str, text: &str) -> Result<VmConfig, ConfigError> {
    let source = SourceText::new(path, text);
    let lines = read_lines(&source)?;
    Reader { source: &source, lines }.read()
}

/// An indexed key (`virtio0`, `numa1`, `hostpci2`) as its prefix and index; other keys are None.
pub(crate) fn indexed_key(key: &str) -> Option<(&str, u32)> {
    let digits_at = key.find(|c: char| c.is_ascii_digit())?;
    let (prefix, index) = key.split_at(digits_at);
    Some((prefix, index.parse().ok()?))
}

/// The current config's `key: value` lines, up to the first `[snapshot]` section.
pub(crate) fn read_lines(source: &SourceText) -> Result<Vec<Line>, ConfigError> {
    let (path, text) = (source.path.as_str(), source.text.as_str());
    let mut lines = Vec::new();
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let line_start = offset;
        offset += raw.len();
        let content = raw.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim();
        if trimmed.starts_with('[') {
            break;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some(colon) = content.find(':') else {
            let (line, column) = source.line_column(line_start);
            return Err(ConfigError::Invalid {
                path: path.to_string(),
                line,
                column,
                message: format!("`{trimmed}` is not a `key: value` line"),
            });
        };
        let key = content[..colon].trim().to_string();
        let value_text = &content[colon + 1..];
        let leading = value_text.len() - value_text.trim_start().len();
        let value = value_text.trim().to_string();
        let start = line_start + colon + 1 + leading;
        let span = if value.is_empty() {
            Span::new(line_start, line_start + content.len())
        } else {
            Span::new(start, start + value.len())
        };
        lines.push(Line { key, value, span });
    }
    Ok(lines)
}

struct Reader<'a> {
    source: &'a SourceText,
    lines: Vec<Line>,
}

/// qemu-server's `windows_version`: the NT major version an `ostype` stands for.
fn windows_version(ostype: &str) -> Option<u32> {
    Some(match ostype {
        "w2k" | "wxp" | "w2k3" => 5,
        "w2k8" | "wvista" => 6,
        "win7" => 7,
        "win8" => 8,
        "win10" => 10,
        "win11" => 11,
        _ => return None,
    })
}

fn libosinfo_id(ostype: &str) -> Option<&'static str> {
    Some(match ostype {
        "wxp" | "w2k" | "w2k3" => "http://microsoft.com/win/xp",
        "wvista" => "http://microsoft.com/win/vista",
        "w2k8" => "http://microsoft.com/win/2k8",
        "win7" => "http://microsoft.com/win/7",
        "win8" => "http://microsoft.com/win/8",
        "win10" => "http://microsoft.com/win/10",
        "win11" => "http://microsoft.com/win/11",
        _ => return None,
    })
}

/// `pc-q35-8.1+pve0` -> (8, 1); an unversioned type means the newest machine.
fn machine_version(machine: Option<&str>) -> (u32, u32) {
    let newest = (u32::MAX, u32::MAX);
    let Some(machine) = machine else { return newest };
    let version = machine.rsplit('-').next().unwrap_or("").split('+').next().unwrap_or("");
    let mut numbers = version.split('.').map(|n| n.parse::<u32>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
        _ => newest,
    }
}

fn option_value<'v>(value: &'v str, name: &str) -> Option<&'v str> {
    value.split(',').find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.key == key)
    }

    fn number(&self, key: &str) -> Result<Option<(u64, Span)>, ConfigError> {
        let Some(line) = self.get(key) else { return Ok(None) };
        line.value.parse().map(|n| Some((n, line.span))).map_err(|_| {
            let (l, column) = self.source.line_column(line.span.start);
            ConfigError::Invalid {
                path: self.source.path.clone(),
                line: l,
                column,
                message: format!("{key}: `{}` is not a number", line.value),
            }
        })
    }

    fn read(&self) -> Result<VmConfig, ConfigError> {
        let mut config = VmConfig::empty(SourceFormat::Proxmox);
        config.anchors.root = Some(Span::new(0, 0));
        config.name = self.get("name").map(|l| l.value.clone());
        config.domain_type = Some(Located::new(
            if self.get("kvm").is_some_and(|l| l.value == "0") { "qemu" } else { "kvm" }.into(),
            Span::new(0, 0),
        ));
        let machine = self.get("machine").map(|l| {
            // `machine: q35,viommu=...` carries options after the type.
            let machine_type = l.value.split(',').next().unwrap_or("").to_string();
            Located::new(machine_type, l.span)
        });
        let version = machine_version(machine.as_ref().map(|m| m.value.as_str()));
        config.machine = machine;
        if let Some(bios) = self.get("bios") {
            config.firmware =
                Some(Located::new(if bios.value == "ovmf" { "efi" } else { "bios" }.into(), bios.span));
        }
        let ostype = self.get("ostype");
        let windows = ostype.and_then(|o| windows_version(&o.value));
        // Enlightenments come from `ostype`: that is where a finding about them points.
        config.anchors.hyperv = ostype.map(|o| o.span);
        if let Some(ostype) = ostype
            && let Some(id) = libosinfo_id(&ostype.value)
        {
            config.os_id = Some(Located::new(id.to_string(), ostype.span));
        }

        // CPU and topology.
        let cores = self.number("cores")?.map_or(1, |(n, _)| n);
        let sockets = self.number("sockets")?.map_or(1, |(n, _)| n);
        let topology_span = self.get("cores").or(self.get("sockets")).map_or(Span::new(0, 0), |l| l.span);
        let total = u32::try_from(cores.saturating_mul(sockets)).unwrap_or(u32::MAX);
        let vcpus = match self.number("vcpus")? {
            Some((n, span)) => Located::new(u32::try_from(n).unwrap_or(u32::MAX), span),
            None => Located::new(total, topology_span),
        };
        config.vcpus = Some(vcpus);
        config.cpu.topology = Some(Located::new(
            CpuTopology {
                sockets: u32::try_from(sockets).unwrap_or(u32::MAX),
                dies: 1,
                clusters: 1,
                cores: u32::try_from(cores).unwrap_or(u32::MAX),
                threads: 1,
            },
            topology_span,
        ));
        let cpu_line = self.get("cpu");
        let cpu_value = cpu_line.map(|l| l.value.as_str()).unwrap_or("");
        let cputype = option_value(cpu_value, "cputype")
            .or_else(|| cpu_value.split(',').next().filter(|t| !t.contains('=') && !t.is_empty()))
            .unwrap_or("kvm64");
        let cpu_span = cpu_line.map_or(Span::new(0, 0), |l| l.span);
        config.anchors.cpu = cpu_line.map(|l| l.span);
        if cputype == "host" {
            config.cpu.mode = Some(Located::new("host-passthrough".into(), cpu_span));
        } else {
            config.cpu.mode = Some(Located::new("custom".into(), cpu_span));
            config.cpu.model = Some(Located::new(cputype.to_string(), cpu_span));
        }
        if option_value(cpu_value, "hidden") == Some("1") {
            config.kvm.push(Toggle { name: "hidden".into(), on: true, span: cpu_span });
        }

        // Hyper-V, as qemu-server's add_hyperv_enlightenments derives it.
        let gpu_passthrough = self
            .lines
            .iter()
            .any(|l| l.key.starts_with("hostpci") && option_value(&l.value, "x-vga") == Some("1"));
        let vendor_id = option_value(cpu_value, Hv::VendorId.qemu());
        let ovmf = self.get("bios").is_some_and(|b| b.value == "ovmf");
        if let (Some(winversion), Some(ostype)) = (windows, ostype)
            && config.domain_type.as_ref().is_some_and(|t| t.value == "kvm")
            && winversion >= 6
            && !(ovmf && winversion < 8)
        {
            let at_least = |major: u32, minor: u32| version >= (major, minor);
            let span = ostype.span;
            let mut add = |hv: Hv, value: Option<String>| {
                config.hyperv.features.push(HvFeature { name: hv.qemu().to_string(), on: true, value, span });
            };
            if gpu_passthrough || vendor_id.is_some() {
                add(Hv::VendorId, Some(vendor_id.unwrap_or("proxmox").to_string()));
            }
            if at_least(2, 3) {
                add(Hv::Spinlocks, Some("8191".into()));
                add(Hv::Vapic, None);
                add(Hv::Time, None);
            } else {
                add(Hv::Spinlocks, Some("65535".into()));
            }
            if at_least(2, 6) {
                add(Hv::Reset, None);
                add(Hv::Vpindex, None);
                add(Hv::Runtime, None);
            }
            if winversion >= 7 {
                add(Hv::Relaxed, None);
                if at_least(2, 12) {
                    add(Hv::Synic, None);
                    add(Hv::Stimer, None);
                }
                if at_least(3, 1) {
                    add(Hv::Ipi, None);
                }
            }
        }
        // `flags=+a;-b` in `cpu:` may switch enlightenments and CPU features either way.
        if let Some(flags) = option_value(cpu_value, "flags") {
            for flag in flags.split(';').filter(|f| !f.is_empty()) {
                let (on, name) = match (flag.strip_prefix('+'), flag.strip_prefix('-')) {
                    (Some(name), _) => (true, name),
                    (_, Some(name)) => (false, name),
                    _ => (true, flag),
                };
                let normalized = name.replace('_', "-");
                if normalized.starts_with("hv-") {
                    config.hyperv.features.retain(|f| f.name != normalized);
                    config.hyperv.features.push(HvFeature {
                        name: normalized,
                        on,
                        value: None,
                        span: cpu_span,
                    });
                } else {
                    config.cpu.features.push(CpuFeature {
                        name: name.to_string(),
                        policy: if on { "require" } else { "disable" }.into(),
                        span: cpu_span,
                    });
                }
            }
        }

        // Clock: Windows gets local time, drift fixing unless `tdf: 0`, HPET off and PIT discard.
        let windows_span = ostype.map_or(Span::new(0, 0), |o| o.span);
        let localtime = match self.get("localtime") {
            Some(line) => Some((line.value == "1", line.span)),
            None => windows.map(|_| (true, windows_span)),
        };
        if let Some(start) = self.get("startdate").filter(|l| l.value != "now") {
            config.clock.offset = Some(Located::new("variable".into(), start.span));
        } else if let Some((local, span)) = localtime {
            config.clock.offset = Some(Located::new(if local { "localtime" } else { "utc" }.into(), span));
        }
        config.anchors.clock = Some(windows_span);
        let tdf = match self.get("tdf") {
            Some(line) => (line.value == "1", line.span),
            None => (windows.is_some(), windows_span),
        };
        let timer = Timer::new;
        if tdf.0 && config.clock.offset.as_ref().is_none_or(|o| o.value != "variable") {
            config.clock.timers.push(Timer { tickpolicy: Some("catchup".into()), ..timer("rtc", tdf.1) });
        }
        // qemu-server turns the HPET off for every guest (`-machine hpet=off` in all its cfg2cmd
        // expectations, Linux guests included) and the PIT to discard for Windows.
        let machine_span = self.get("machine").map_or(Span::new(0, 0), |m| m.span);
        config.clock.timers.push(Timer { present: Some(false), ..timer("hpet", machine_span) });
        if windows.is_some_and(|w| w >= 6) {
            config
                .clock
                .timers
                .push(Timer { tickpolicy: Some("discard".into()), ..timer("pit", windows_span) });
        }

        // Memory.
        let memory = self.get("memory").and_then(|m| {
            m.value.split(',').next().and_then(|v| v.parse::<u64>().ok()).map(|mib| (mib, m.span))
        });
        let (mib, span) = memory.unwrap_or((512, Span::new(0, 0)));
        config.memory.size_kib = Some(Located::new(mib.saturating_mul(1024), span));
        if let Some(hugepages) = self.get("hugepages") {
            let size_kib = match hugepages.value.as_str() {
                "2" => Some(2048),
                "1024" => Some(1 << 20),
                _ => None,
            };
            config.memory.hugepages =
                Some(Located::new(vec![HugepageRequest { size_kib, nodeset: None }], hugepages.span));
        }
        if let Some(affinity) = self.get("affinity")
            && let Ok(cpus) = crate::config::cpuset::parse(&affinity.value)
        {
            config.pinning.process_affinity = Some(Located::new(cpus, affinity.span));
        }

        // Devices.
        for line in &self.lines {
            let key = line.key.as_str();
            let Some((prefix, index)) = indexed_key(key) else { continue };
            match prefix {
                "hostpci" => {
                    let host = option_value(&line.value, "host")
                        .unwrap_or_else(|| line.value.split(',').next().unwrap_or(""));
                    // `01:00` passes every function of the device; kvmtune names function 0.
                    let function = if host.contains('.') { "" } else { ".0" };
                    config.devices.hostdevs.push(Hostdev {
                        kind: "pci".into(),
                        pci_address: PciAddress::parse_lenient(&format!("{host}{function}")).ok(),
                        guest_address: None,
                        span: line.span,
                    });
                }
                "net" => {
                    let model = line
                        .value
                        .split(',')
                        .next()
                        .and_then(|m| m.split('=').next())
                        .unwrap_or("")
                        .to_string();
                    let queues = option_value(&line.value, "queues").and_then(|q| q.parse().ok());
                    config.devices.nics.push(Nic { model: Some(model), queues, span: line.span });
                }
                // qemu-server reads `numaN` only with `numa: 1`; its lists separate ranges by `;`.
                "numa" if self.get("numa").is_some_and(|numa| numa.value == "1") => {
                    let hostnodes = option_value(&line.value, "hostnodes")
                        .and_then(|nodes| crate::config::cpuset::parse(&nodes.replace(';', ",")).ok());
                    let memnode = MemNode {
                        cellid: Some(index),
                        mode: option_value(&line.value, "policy").map(str::to_string),
                        nodeset: hostnodes,
                    };
                    config.memory.memnodes.push(Located::new(memnode, line.span));
                }
                "scsi" | "virtio" | "sata" | "ide" => {
                    let media_cdrom = option_value(&line.value, "media") == Some("cdrom");
                    let bus = if prefix == "scsi" { "scsi" } else { prefix };
                    config.devices.disks.push(Disk {
                        device: if media_cdrom { "cdrom" } else { "disk" }.into(),
                        bus: Some(bus.to_string()),
                        target: Some(key.to_string()),
                        cache: option_value(&line.value, "cache").map(str::to_string),
                        io: option_value(&line.value, "aio").map(str::to_string),
                        format: option_value(&line.value, "format").map(str::to_string),
                        source_type: None,
                        source_dev: line
                            .value
                            .split(',')
                            .next()
                            .filter(|volume| volume.starts_with("/dev/"))
                            .map(str::to_string),
                        discard: option_value(&line.value, "discard").map(str::to_string),
                        iothread: option_value(&line.value, "iothread").filter(|v| *v == "1").map(|_| 1),
                        span: line.span,
                    });
                }
                _ => {}
            }
        }
        if let Some(vga) = self.get("vga") {
            config
                .devices
                .videos
                .push(Located::new(vga.value.split(',').next().unwrap_or("").to_string(), vga.span));
        }
        if let Some(tpm) = self.get("tpmstate0") {
            config.devices.tpms.push(Located::new("tpm-crb".into(), tpm.span));
        }
        // qemu-server adds the tablet and the balloon unless they are switched off; with a
        // SPICE display (vga: qxl*) the tablet defaults to off.
        let spice = self.get("vga").is_some_and(|v| v.value.starts_with("qxl"));
        match self.get("tablet") {
            Some(line) if line.value == "0" => {}
            None if spice => {}
            line => config.devices.inputs.push(Input {
                kind: "tablet".into(),
                bus: Some("usb".into()),
                span: line.map_or(Span::new(0, 0), |l| l.span),
            }),
        }
        let balloon = match self.get("balloon") {
            Some(line) if line.value == "0" => Located::new("none".into(), line.span),
            line => Located::new("virtio".into(), line.map_or(Span::new(0, 0), |l| l.span)),
        };
        config.devices.memballoon = Some(balloon);

        if let Some(args) = self.get("args") {
            self.apply_args(&mut config, args)?;
        }
        Ok(config)
    }

    /// `args:` is appended to the QEMU command line; what it sets wins.
    fn apply_args(&self, config: &mut VmConfig, args: &Line) -> Result<(), ConfigError> {
        let extra = crate::config::qemu::parse(
            &self.source.path,
            &format!("{}{}", " ".repeat(args.span.start), args.value),
        )?;
        crate::config::apply_passthrough(config, extra);
        Ok(())
    }
}
