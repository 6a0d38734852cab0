//! Reads a QEMU command line (an argv file, a launch script, or an options profile) into
//! [`VmConfig`].
//!
//! The text is split into shell words with their spans ([`shell`]); reading starts after the
//! first word that names a QEMU binary, or at the first option where there is none (option
//! profiles). Both `hv-relaxed` and the old `hv_relaxed` spellings are read, as QEMU accepts
//! both. Values built from shell variables (`${MEM}G`) cannot be known and are skipped; any
//! other value of the wrong type is an error with its line and column.

use crate::config::ConfigError;
use crate::config::model::*;
use crate::config::shell::{self, Word};
use crate::knowledge::qemu_options;
use crate::values::PciAddress;
use crate::values::size::{self, Units};
use crate::values::{SourceText, Span};

/// Words that end one shell command; a QEMU invocation stops there.
const SHELL_OPERATORS: &[&str] = &["&", "&&", "||", ";", "|", ")"];

pub fn parse(path: &str, text: &str) -> Result<VmConfig, ConfigError> {
    let source = SourceText::new(path, text);
    let words = shell::split(text).map_err(|error| {
        let (line, column) = source.line_column(error.start);
        ConfigError::Invalid { path: path.to_string(), line, column, message: error.to_string() }
    })?;
    read_words(&source, &words)
}

/// Reads QEMU's options from words already split, whose spans point into `source`: a command
/// line's, or the values of libvirt's `<qemu:arg>` elements.
pub(crate) fn read_words(source: &SourceText, words: &[Word]) -> Result<VmConfig, ConfigError> {
    let path = source.path.as_str();
    let binary_at = words.iter().position(|w| is_qemu_binary(&w.text));
    let start = match binary_at {
        Some(binary) => binary,
        None => match words.iter().position(|w| w.text.starts_with('-')) {
            Some(first_option) => first_option,
            None => {
                return Err(ConfigError::NotAConfig {
                    path: path.to_string(),
                    line: 1,
                    column: 1,
                    message: "no QEMU binary and no QEMU options found".to_string(),
                });
            }
        },
    };
    let mut reader = Reader {
        source,
        config: VmConfig::empty(SourceFormat::QemuArgv),
        saw_balloon: false,
        backend_kib: Default::default(),
        iothread_names: Vec::new(),
        dimm_kib: 0,
    };
    reader.config.anchors.root = Some(words[start].span);
    if let Some(binary) = binary_at.map(|i| &words[i]) {
        let arch = if binary.text.ends_with("i386") { "i686" } else { "x86_64" };
        reader.config.arch = Some(Located::new(arch.to_string(), binary.span));
    }
    let first = if words[start].text.starts_with('-') { start } else { start + 1 };
    for argument in arguments(&words[first..]) {
        match (argument.option, argument.value) {
            (None, _) if SHELL_OPERATORS.contains(&argument.word.text.as_str()) => break,
            (None, _) => {}
            (Some(name), _) if !qemu_options::takes_value(name) => reader.flag(name, argument.word),
            (Some(name), Some(value)) => reader.option(name, value)?,
            // An option that takes a value, at the end: nothing more to read.
            (Some(_), None) => break,
        }
    }
    Ok(reader.finish())
}

/// One argument as QEMU's parser reads a command line: an option (`-name` or `--name`) with
/// the next word as its value when it takes one (whatever that word looks like), or a word
/// that is no option (a positional argument, a disk image).
pub(crate) struct Argument<'w> {
    pub option: Option<&'w str>,
    pub word: &'w Word,
    pub value: Option<&'w Word>,
}

/// `words` as QEMU's parser pairs them; shared by the command-line reader and libvirt's
/// `<qemu:commandline>`.
pub(crate) fn arguments(words: &[Word]) -> Vec<Argument<'_>> {
    let mut out = Vec::new();
    let mut index = 0;
    while index < words.len() {
        let word = &words[index];
        let option = word.text.strip_prefix("--").or_else(|| word.text.strip_prefix('-'));
        let value = option.filter(|name| qemu_options::takes_value(name)).and_then(|_| words.get(index + 1));
        out.push(Argument { option, word, value });
        index += if value.is_some() { 2 } else { 1 };
    }
    out
}

/// Whether `word` (a path or a name) is a QEMU system emulator: `qemu-system-x86_64`, Debian's
/// `kvm` wrapper, RHEL's `qemu-kvm`.
pub fn is_qemu_binary(word: &str) -> bool {
    let name = word.rsplit('/').next().unwrap_or(word);
    name.starts_with("qemu-system") || name == "qemu-kvm" || name == "kvm"
}

/// The guest's name on a QEMU command line: `-name guest=NAME,...` or `-name NAME`.
pub fn guest_name(argv: &[String]) -> Option<String> {
    let value = argv.windows(2).find(|pair| pair[0] == "-name" || pair[0] == "--name")?[1].as_str();
    let name = value.split(',').find_map(|part| part.strip_prefix("guest=")).or_else(|| {
        let first = value.split(',').next()?;
        (!first.contains('=')).then_some(first)
    })?;
    (!name.is_empty()).then(|| name.to_string())
}

struct Reader<'a> {
    source: &'a SourceText,
    config: VmConfig,
    saw_balloon: bool,
    /// memory-backend objects by id, with their size: hotplugged DIMMs add theirs to `-m`.
    backend_kib: std::collections::BTreeMap<String, u64>,
    dimm_kib: u64,
    /// iothread object ids in the order met; a device's `iothread=NAME` is the 1-based position
    /// of NAME here, as libvirt numbers `<iothread id>` (a name met on a device before its
    /// `-object` takes its place then: QEMU creates objects before devices, whatever the order).
    iothread_names: Vec<String>,
}

/// `key=value` parts of a comma-separated option value, each with the span of the part when
/// the word was written without quotes or escapes (so the span can be that precise).
fn parts(word: &Word, source: &SourceText) -> Vec<(String, Span)> {
    let raw = source.text.get(word.span.start..word.span.end).unwrap_or("");
    let exact = raw == word.text;
    let mut offset = 0;
    word.text
        .split(',')
        .map(|part| {
            let span = if exact {
                Span::new(word.span.start + offset, word.span.start + offset + part.len())
            } else {
                word.span
            };
            offset += part.len() + 1;
            (part.to_string(), span)
        })
        .collect()
}

fn on_off(value: &str) -> Option<bool> {
    match value {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// `kvm-apic.vapic=off` (or `apic.vapic=false`): QEMU's TPR patching switch.
pub fn tpr_patching_setting(global: &str) -> Option<bool> {
    let value = global.strip_prefix("kvm-apic.vapic=").or_else(|| global.strip_prefix("apic.vapic="))?;
    match value {
        "on" | "true" => Some(true),
        "off" | "false" => Some(false),
        _ => None,
    }
}

/// QEMU sizes: a number with an optional binary suffix (qemu_strtosz, util/cutils.c); `-m`
/// takes MiB without one, objects bytes.
fn size_kib(value: &str, bare_unit: &str) -> Option<u64> {
    size::parse_kib(value, bare_unit, Units::Binary).ok()
}

impl Reader<'_> {
    fn error(&self, span: Span, message: String) -> ConfigError {
        let (line, column) = self.source.line_column(span.start);
        ConfigError::Invalid { path: self.source.path.clone(), line, column, message }
    }

    fn flag(&mut self, name: &str, word: &Word) {
        match name {
            "enable-kvm" => self.config.domain_type = Some(Located::new("kvm".into(), word.span)),
            "no-hpet" => self.set_timer("hpet", word.span, |t| t.present = Some(false)),
            "mem-prealloc" => {}
            _ => {}
        }
    }

    fn set_timer(&mut self, name: &str, span: Span, change: impl FnOnce(&mut Timer)) {
        let timers = &mut self.config.clock.timers;
        let index = match timers.iter().position(|t| t.name == name) {
            Some(index) => index,
            None => {
                timers.push(Timer::new(name, span));
                timers.len() - 1
            }
        };
        timers[index].span = span;
        change(&mut timers[index]);
    }

    fn set_hv(&mut self, name: String, on: bool, value: Option<String>, span: Span) {
        self.config.hyperv.features.retain(|f| f.name != name);
        self.config.hyperv.features.push(HvFeature { name, on, value, span });
    }

    fn option(&mut self, name: &str, value: &Word) -> Result<(), ConfigError> {
        let variable = value.text.contains('$');
        match name {
            "cpu" => self.cpu(value),
            "smp" if !variable => self.smp(value)?,
            "machine" | "M" => self.machine(value),
            "rtc" => self.rtc(value),
            "global" => self.global(value),
            "m" => {
                let size = value.text.strip_prefix("size=").unwrap_or(&value.text);
                let size = size.split(',').next().unwrap_or("");
                match size_kib(size, "M") {
                    Some(kib) => self.config.memory.size_kib = Some(Located::new(kib, value.span)),
                    None if variable => {}
                    None => {
                        return Err(
                            self.error(value.span, format!("-m `{}` is not a memory size", value.text))
                        );
                    }
                }
            }
            "mem-path" => self.hugepages(value.span),
            "overcommit" if value.text.split(',').any(|p| p == "mem-lock=on") => {
                self.config.memory.locked = Some(value.span);
            }
            "object" => self.object(value),
            "device" => self.device(value),
            "drive" => self.drive(value),
            "balloon" => {
                self.saw_balloon = true;
                let model = if value.text == "none" { "none" } else { "virtio" };
                self.config.devices.memballoon = Some(Located::new(model.to_string(), value.span));
            }
            "usbdevice" if value.text == "tablet" => self.config.devices.inputs.push(Input {
                kind: "tablet".into(),
                bus: Some("usb".into()),
                span: value.span,
            }),
            "vga" => self.config.devices.videos.push(Located::new(value.text.clone(), value.span)),
            // UEFI code comes as `-bios OVMF.fd`, `-drive if=pflash,...` or (QEMU 9 and later,
            // as Proxmox writes it) a `-blockdev` whose file is the OVMF image.
            "bios" | "blockdev"
                if value.text.to_ascii_uppercase().contains("OVMF_CODE")
                    || (name == "bios" && value.text.to_ascii_uppercase().contains("OVMF")) =>
            {
                self.config.firmware = Some(Located::new("efi".into(), value.span))
            }
            "name" => {
                let guest = value.text.split(',').next().unwrap_or("");
                self.config.name = Some(guest.strip_prefix("guest=").unwrap_or(guest).to_string());
            }
            "accel" if value.text.starts_with("kvm") => {
                self.config.domain_type = Some(Located::new("kvm".into(), value.span))
            }
            "nic" => {
                let model = value.text.split(',').find_map(|p| p.strip_prefix("model=")).map(str::to_string);
                self.config.devices.nics.push(Nic {
                    model: model.or(Some("e1000".into())),
                    queues: None,
                    span: value.span,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn cpu(&mut self, value: &Word) {
        let mut items = parts(value, self.source).into_iter();
        let Some((model, model_span)) = items.next() else { return };
        match model.as_str() {
            "host" => self.config.cpu.mode = Some(Located::new("host-passthrough".into(), model_span)),
            "max" => self.config.cpu.mode = Some(Located::new("maximum".into(), model_span)),
            _ => {
                self.config.cpu.mode = Some(Located::new("custom".into(), model_span));
                self.config.cpu.model = Some(Located::new(model, model_span));
            }
        }
        self.config.anchors.cpu = Some(value.span);
        self.config.anchors.hyperv = Some(value.span);
        for (part, span) in items {
            let (key, setting) = match part.split_once('=') {
                Some((key, setting)) => (key.to_string(), Some(setting.to_string())),
                None => (part.clone(), None),
            };
            // `+feat` / `-feat` is the old spelling of `feat=on` / `feat=off`.
            let (key, on) = match (key.strip_prefix('+'), key.strip_prefix('-')) {
                (Some(feature), _) => (feature.to_string(), Some(true)),
                (_, Some(feature)) => (feature.to_string(), Some(false)),
                _ => (key, None),
            };
            let normalized = key.replace('_', "-");
            if let Some(hv) = normalized.strip_prefix("hv-") {
                match hv {
                    "passthrough" => {
                        if setting.as_deref().and_then(on_off).unwrap_or(true) && on != Some(false) {
                            self.config.hyperv.mode = Some(Located::new("passthrough".into(), span));
                        }
                    }
                    "spinlocks" => {
                        let retries = setting.as_deref().and_then(|s| match s.strip_prefix("0x") {
                            Some(hex) => u64::from_str_radix(hex, 16).ok(),
                            None => s.parse().ok(),
                        });
                        self.set_hv(
                            normalized.clone(),
                            on != Some(false),
                            retries.map(|r| r.to_string()),
                            span,
                        );
                    }
                    "vendor-id" => self.set_hv(normalized.clone(), true, setting.clone(), span),
                    _ => {
                        let state = on.unwrap_or_else(|| setting.as_deref().and_then(on_off).unwrap_or(true));
                        self.set_hv(normalized.clone(), state, None, span);
                    }
                }
                continue;
            }
            match (normalized.as_str(), setting.as_deref()) {
                ("kvm", Some(v)) => {
                    if let Some(enabled) = on_off(v) {
                        self.config.kvm.push(Toggle { name: "hidden".into(), on: !enabled, span });
                    }
                }
                ("kvm-hint-dedicated" | "kvm-poll-control" | "kvm-pv-ipi", Some(v)) => {
                    if let Some(state) = on_off(v) {
                        let name = normalized.trim_start_matches("kvm-").to_string();
                        self.config.kvm.push(Toggle { name, on: state, span });
                    }
                }
                ("migratable", Some(v)) => {
                    if let Some(state) = on_off(v) {
                        self.config.cpu.migratable = Some(Located::new(state, span));
                    }
                }
                ("host-cache-info", Some(v)) if on_off(v) == Some(true) => {
                    self.config.cpu.cache_mode = Some(Located::new("passthrough".into(), span));
                }
                ("l3-cache", Some(v)) if self.config.cpu.cache_mode.is_none() => {
                    let mode = if on_off(v) == Some(true) { "emulate" } else { "disable" };
                    self.config.cpu.cache_mode = Some(Located::new(mode.into(), span));
                }
                (_, setting) => {
                    let state = on.or_else(|| setting.and_then(on_off));
                    if let Some(state) = state {
                        self.config.cpu.features.retain(|f| f.name != key);
                        self.config.cpu.features.push(CpuFeature {
                            name: key.clone(),
                            policy: if state { "require" } else { "disable" }.to_string(),
                            span,
                        });
                    }
                }
            }
        }
    }

    fn smp(&mut self, value: &Word) -> Result<(), ConfigError> {
        let mut cpus = None;
        let mut topology = CpuTopology { sockets: 1, dies: 1, clusters: 1, cores: 1, threads: 1 };
        let mut explicit = false;
        for (index, part) in value.text.split(',').enumerate() {
            let (key, number) = match part.split_once('=') {
                Some((key, number)) => (key, number),
                None if index == 0 => ("cpus", part),
                None => return Err(self.error(value.span, format!("-smp part `{part}` is not key=value"))),
            };
            let number: u32 = number
                .parse()
                .map_err(|_| self.error(value.span, format!("-smp {key}=`{number}` is not a number")))?;
            match key {
                "cpus" => cpus = Some(number),
                "sockets" => (topology.sockets, explicit) = (number, true),
                "dies" => (topology.dies, explicit) = (number, true),
                "clusters" => (topology.clusters, explicit) = (number, true),
                "cores" => (topology.cores, explicit) = (number, true),
                "threads" => (topology.threads, explicit) = (number, true),
                _ => {}
            }
        }
        let product = u32::try_from(topology.vcpus()).unwrap_or(u32::MAX);
        self.config.vcpus = Some(Located::new(cpus.unwrap_or(product), value.span));
        if explicit {
            self.config.cpu.topology = Some(Located::new(topology, value.span));
        }
        Ok(())
    }

    fn machine(&mut self, value: &Word) {
        for (index, (part, span)) in parts(value, self.source).into_iter().enumerate() {
            match part.split_once('=') {
                None if index == 0 => self.config.machine = Some(Located::new(part, span)),
                Some(("type", machine)) => {
                    self.config.machine = Some(Located::new(machine.to_string(), span))
                }
                Some(("hpet", setting)) => {
                    let present = on_off(setting);
                    self.set_timer("hpet", span, |t| t.present = present);
                }
                Some(("kernel-irqchip" | "kernel_irqchip", irqchip)) => {
                    self.config.split_irqchip = Some(Located::new(irqchip == "split", span));
                }
                Some(("accel", accel)) if accel.starts_with("kvm") => {
                    self.config.domain_type = Some(Located::new("kvm".into(), span));
                }
                Some(("memory-backend", _)) => {}
                _ => {}
            }
        }
    }

    fn rtc(&mut self, value: &Word) {
        self.config.anchors.clock = Some(value.span);
        for (part, span) in parts(value, self.source) {
            match part.split_once('=') {
                Some(("base", base)) => {
                    let offset = match base {
                        "localtime" => "localtime",
                        "utc" => "utc",
                        _ => "variable",
                    };
                    self.config.clock.offset = Some(Located::new(offset.to_string(), span));
                }
                Some(("driftfix", "slew")) => {
                    self.set_timer("rtc", span, |t| t.tickpolicy = Some("catchup".into()))
                }
                Some(("clock", clock)) => {
                    let track = match clock {
                        "vm" => "guest",
                        "host" => "wall",
                        "rt" => "realtime",
                        other => other,
                    }
                    .to_string();
                    self.set_timer("rtc", span, |t| t.track = Some(track));
                }
                _ => {}
            }
        }
    }

    fn global(&mut self, value: &Word) {
        if let Some(enabled) = tpr_patching_setting(&value.text) {
            self.config.tpr_patching = Some(Located::new(enabled, value.span));
        }
        if let Some(policy) = value.text.strip_prefix("kvm-pit.lost_tick_policy=") {
            let policy = policy.to_string();
            self.set_timer("pit", value.span, |t| t.tickpolicy = Some(policy));
        }
    }

    fn hugepages(&mut self, span: Span) {
        self.config.memory.hugepages = Some(Located::new(Vec::new(), span));
    }

    fn object(&mut self, value: &Word) {
        let mut items = value.text.split(',');
        let kind = items.next().unwrap_or("");
        if kind.starts_with("memory-backend")
            && let (Some(id), Some(size)) = (
                value.text.split(',').find_map(|p| p.strip_prefix("id=")),
                value.text.split(',').find_map(|p| p.strip_prefix("size=")).and_then(|s| size_kib(s, "B")),
            )
        {
            self.backend_kib.insert(id.to_string(), size);
        }
        match Some(kind) {
            Some("iothread") => {
                let count = self.config.iothreads.as_ref().map_or(0, |i| i.value).saturating_add(1);
                self.config.iothreads = Some(Located::new(count, value.span));
                if let Some(id) = value.text.split(',').find_map(|p| p.strip_prefix("id=")) {
                    self.iothread_number(id);
                }
            }
            Some("memory-backend-file" | "memory-backend-memfd") => {
                let hugetlbfs =
                    value.text.split(',').any(|p| p.starts_with("mem-path=") && p.contains("hugepages"));
                if hugetlbfs || value.text.contains("hugetlb=on") {
                    self.hugepages(value.span);
                }
            }
            _ => {}
        }
    }

    fn device(&mut self, value: &Word) {
        let mut items = value.text.split(',');
        let driver = items.next().unwrap_or("");
        let property =
            |name: &str| value.text.split(',').find_map(|p| p.strip_prefix(name)).map(str::to_string);
        let span = value.span;
        match driver {
            "vfio-pci" => {
                let address = property("host=").and_then(|host| PciAddress::parse_lenient(&host).ok());
                self.config.devices.hostdevs.push(Hostdev {
                    kind: "pci".into(),
                    pci_address: address,
                    guest_address: None,
                    span,
                });
            }
            "pc-dimm" | "nvdimm" | "virtio-mem-pci" => {
                if let Some(kib) = property("memdev=").and_then(|id| self.backend_kib.get(&id).copied()) {
                    self.dimm_kib = self.dimm_kib.saturating_add(kib);
                }
            }
            "virtio-blk-pci" | "virtio-blk" => {
                let iothread = property("iothread=").map(|name| self.iothread_number(&name));
                self.disk("virtio", iothread, span)
            }
            "virtio-scsi-pci" | "virtio-scsi" => {
                if let Some(name) = property("iothread=") {
                    let number = self.iothread_number(&name);
                    self.config.devices.controller_iothreads.push(number);
                }
            }
            "ide-hd" | "ide-drive" => self.disk("sata", None, span),
            "scsi-hd" | "scsi-block" => self.disk("scsi", None, span),
            "virtio-net-pci" | "virtio-net" => self.nic("virtio", property("queues="), span),
            "e1000" | "e1000e" | "rtl8139" | "vmxnet3" => self.nic(driver, None, span),
            "usb-host" => self.config.devices.hostdevs.push(Hostdev {
                kind: "usb".into(),
                pci_address: None,
                guest_address: None,
                span,
            }),
            _ if ["uhci", "ehci", "ohci", "xhci"].iter().any(|kind| driver.contains(kind)) => {
                self.config.devices.usb_controllers.push(Located::new(driver.to_string(), span))
            }
            "usb-tablet" => self.config.devices.inputs.push(Input {
                kind: "tablet".into(),
                bus: Some("usb".into()),
                span,
            }),
            "virtio-balloon-pci" | "virtio-balloon" => {
                self.saw_balloon = true;
                self.config.devices.memballoon = Some(Located::new("virtio".into(), span));
            }
            "tpm-tis" | "tpm-crb" => self.config.devices.tpms.push(Located::new(driver.to_string(), span)),
            "pvpanic" | "pvpanic-pci" => {
                self.config.devices.panics.push(Located::new("pvpanic".into(), span))
            }
            "VGA" | "qxl-vga" | "virtio-vga" | "virtio-gpu-pci" | "bochs-display" | "ramfb" => {
                self.config.devices.videos.push(Located::new(driver.to_string(), span))
            }
            _ => {}
        }
    }

    /// The 1-based number of the iothread called `name`.
    fn iothread_number(&mut self, name: &str) -> u32 {
        let index = match self.iothread_names.iter().position(|known| known == name) {
            Some(index) => index,
            None => {
                self.iothread_names.push(name.to_string());
                self.iothread_names.len() - 1
            }
        };
        u32::try_from(index + 1).unwrap_or(u32::MAX)
    }

    fn disk(&mut self, bus: &str, iothread: Option<u32>, span: Span) {
        self.config.devices.disks.push(Disk {
            device: "disk".into(),
            bus: Some(bus.to_string()),
            target: None,
            cache: None,
            io: None,
            format: None,
            source_type: None,
            source_dev: None,
            discard: None,
            iothread,
            span,
        });
    }

    fn nic(&mut self, model: &str, queues: Option<String>, span: Span) {
        let queues = queues.and_then(|q| q.parse().ok());
        self.config.devices.nics.push(Nic { model: Some(model.to_string()), queues, span });
    }

    fn drive(&mut self, value: &Word) {
        let property =
            |name: &str| value.text.split(',').find_map(|p| p.strip_prefix(name)).map(str::to_string);
        let interface = property("if=").unwrap_or_else(|| "ide".into());
        if interface == "pflash" {
            if value.text.to_ascii_uppercase().contains("OVMF") || self.config.firmware.is_none() {
                self.config.firmware = Some(Located::new("efi".into(), value.span));
            }
            return;
        }
        if interface == "none" {
            return;
        }
        let device = if property("media=").as_deref() == Some("cdrom") { "cdrom" } else { "disk" };
        self.config.devices.disks.push(Disk {
            device: device.into(),
            bus: Some(interface),
            target: None,
            cache: property("cache="),
            io: property("aio="),
            format: property("format="),
            source_type: None,
            source_dev: property("file=").filter(|file| file.starts_with("/dev/")),
            discard: property("discard="),
            iothread: None,
            span: value.span,
        });
    }

    fn finish(mut self) -> VmConfig {
        if let Some(memory) = &mut self.config.memory.size_kib {
            memory.value = memory.value.saturating_add(self.dimm_kib);
        }
        // QEMU adds no balloon unless asked: say so, so that rules reading the model do not
        // assume libvirt's default (a virtio balloon).
        if !self.saw_balloon
            && let Some(root) = self.config.anchors.root
        {
            self.config.devices.memballoon = Some(Located::new("none".into(), root));
        }
        self.config
    }
}
