//! Reads libvirt domain XML into [`VmConfig`].
//!
//! roxmltree gives every node and attribute its byte range in the original text, which become
//! the model's spans; nothing here rewrites the text, so a file with no fixes applied is written
//! back byte for byte. Elements kvmtune does not model are ignored, as libvirt itself would
//! keep them; inside the parts it does model (`<hyperv>`, `<kvm>`, `<clock>` timers), a name
//! libvirt would reject is an error here too.

use roxmltree::{Document, Node, ParsingOptions};

use crate::config::ConfigError;
use crate::config::cpuset;
use crate::config::host_needs;
use crate::config::model::*;
use crate::config::shell::Word;
use crate::knowledge::hyperv::Hv;
use crate::knowledge::libvirt::{HYPERV_ELEMENTS, HYPERV_SUB_ELEMENTS, KVM_ELEMENTS, TIMER_NAMES};
use crate::values::Span;
use crate::values::size::{self, SizeError, Units};
use crate::values::{PciAddress, SourceText};

const LIBOSINFO_NS: &str = "http://libosinfo.org/xmlns/libvirt/domain/1.0";
const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

pub fn parse(path: &str, text: &str) -> Result<VmConfig, ConfigError> {
    let options = ParsingOptions { allow_dtd: true, ..ParsingOptions::default() };
    let document = Document::parse_with_options(text, options).map_err(|error| {
        let position = error.pos();
        ConfigError::MalformedXml {
            path: path.to_string(),
            line: position.row,
            column: position.col,
            message: error.to_string(),
        }
    })?;
    let reader = Reader { path, document: &document };
    reader.domain(document.root_element())
}

/// What libvirt puts into `-cpu`: the enlightenments that are on and the CPU features it
/// enables.
fn generated_cpu(config: &VmConfig) -> Vec<String> {
    let enlightenments = config.hyperv.features.iter().filter(|f| f.on).map(|f| f.name.clone());
    let features = config.cpu.features.iter().filter(|f| f.enables()).map(|f| f.name.clone());
    enlightenments.chain(features).collect()
}

struct Reader<'a, 'input> {
    path: &'a str,
    document: &'a Document<'input>,
}

fn span(node: Node) -> Span {
    node.range().into()
}

fn children<'a, 'input>(
    node: Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    node.children().filter(move |child| child.is_element() && child.has_tag_name(name))
}

fn child<'a, 'input>(node: Node<'a, 'input>, name: &'a str) -> Option<Node<'a, 'input>> {
    children(node, name).next()
}

fn text_of(node: Node) -> String {
    node.text().unwrap_or("").trim().to_string()
}

impl Reader<'_, '_> {
    fn error_at(&self, offset: usize, message: String) -> ConfigError {
        let position = self.document.text_pos_at(offset);
        ConfigError::Invalid {
            path: self.path.to_string(),
            line: position.row,
            column: position.col,
            message,
        }
    }

    fn number<T: std::str::FromStr>(&self, node: Node, text: &str, what: &str) -> Result<T, ConfigError> {
        text.trim().parse().map_err(|_| {
            self.error_at(node.range().start, format!("{what} must be a number, found `{}`", text.trim()))
        })
    }

    fn attribute_number<T: std::str::FromStr>(
        &self,
        node: Node,
        name: &str,
    ) -> Result<Option<T>, ConfigError> {
        let Some(attribute) = node.attributes().find(|a| a.name() == name) else { return Ok(None) };
        attribute.value().trim().parse().map(Some).map_err(|_| {
            self.error_at(
                attribute.range().start,
                format!(
                    "<{}> attribute {name} must be a number, found `{}`",
                    node.tag_name().name(),
                    attribute.value()
                ),
            )
        })
    }

    fn on_off(&self, node: Node, attribute: &str) -> Result<Option<bool>, ConfigError> {
        match node.attribute(attribute) {
            None => Ok(None),
            Some("on" | "yes") => Ok(Some(true)),
            Some("off" | "no") => Ok(Some(false)),
            Some(other) => Err(self.error_at(
                node.range().start,
                format!("<{}> {attribute}='{other}' must be 'on' or 'off'", node.tag_name().name()),
            )),
        }
    }

    fn cpuset(&self, node: Node, attribute: &str) -> Result<Option<crate::values::CpuSet>, ConfigError> {
        let Some(value) = node.attribute(attribute) else { return Ok(None) };
        cpuset::parse(value).map(Some).map_err(|error| {
            self.error_at(
                node.range().start,
                format!("<{}> {attribute}='{value}': {error}", node.tag_name().name()),
            )
        })
    }

    fn domain(&self, root: Node) -> Result<VmConfig, ConfigError> {
        if !root.has_tag_name("domain") {
            let (line, column) =
                SourceText::new(self.path, self.document.input_text()).line_column(root.range().start);
            return Err(ConfigError::NotAConfig {
                path: self.path.to_string(),
                line,
                column,
                message: format!("the root element is <{}>, not a libvirt <domain>", root.tag_name().name()),
            });
        }
        let mut config = VmConfig::empty(SourceFormat::Libvirt);
        config.anchors.root = Some(span(root));
        config.domain_type =
            root.attribute_node("type").map(|a| Located::new(a.value().to_string(), a.range().into()));
        config.name = child(root, "name").map(text_of);
        if let Some(vcpu) = child(root, "vcpu") {
            config.vcpus = Some(Located::new(self.number(vcpu, &text_of(vcpu), "<vcpu>")?, span(vcpu)));
            if let Some(current) = self.attribute_number::<u32>(vcpu, "current")? {
                config.vcpus_enabled = Some((0..current).collect());
            }
            if let Some(cpus) = self.cpuset(vcpu, "cpuset")? {
                let attribute =
                    vcpu.attribute_node("cpuset").map_or_else(|| span(vcpu), |a| a.range().into());
                config.pinning.domain_cpuset = Some(Located::new(cpus, attribute));
            }
        }
        // <vcpus> says vCPU by vCPU which are online at start; it wins over `current`.
        if let Some(list) = child(root, "vcpus") {
            let mut enabled = crate::values::CpuSet::new();
            for entry in children(list, "vcpu") {
                if entry.attribute("enabled") != Some("no")
                    && let Some(id) = self.attribute_number::<u32>(entry, "id")?
                {
                    enabled = enabled.union(&[id].into_iter().collect());
                }
            }
            config.vcpus_enabled = Some(enabled);
        }
        if let Some(pm) = child(root, "pm") {
            let state = |name: &str| {
                child(pm, name).and_then(|node| {
                    node.attribute("enabled").map(|value| Located::new(value == "yes", span(node)))
                })
            };
            config.power.suspend_to_mem = state("suspend-to-mem");
            config.power.suspend_to_disk = state("suspend-to-disk");
        }
        if let Some(iothreads) = child(root, "iothreads") {
            config.iothreads = Some(Located::new(
                self.number(iothreads, &text_of(iothreads), "<iothreads>")?,
                span(iothreads),
            ));
        }
        self.os(root, &mut config);
        self.metadata(root, &mut config)?;
        self.memory(root, &mut config)?;
        if let Some(features) = child(root, "features") {
            config.anchors.features = Some(span(features));
            self.features(features, &mut config)?;
        }
        if let Some(cpu) = child(root, "cpu") {
            config.anchors.cpu = Some(span(cpu));
            self.cpu(cpu, &mut config)?;
        }
        if let Some(clock) = child(root, "clock") {
            config.anchors.clock = Some(span(clock));
            self.clock(clock, &mut config)?;
        }
        // Some hand-written files split <cputune> in several; libvirt keeps the first, but the
        // user meant all of them, and a rule about pinning must see every pin.
        for cputune in children(root, "cputune") {
            config.anchors.cputune.get_or_insert(span(cputune));
            self.cputune(cputune, &mut config)?;
        }
        if let Some(devices) = child(root, "devices") {
            config.anchors.devices = Some(span(devices));
            self.devices(devices, &mut config)?;
        }
        self.qemu_commandline(root, &mut config);
        Ok(config)
    }

    /// `<qemu:commandline>` passes raw QEMU arguments after libvirt's own. kvmtune keeps them
    /// as they are (`passthrough_args`, for the rules about what they override) and applies
    /// what it models, as QEMU would: a `-cpu` there replaces libvirt's whole CPU.
    fn qemu_commandline(&self, root: Node, config: &mut VmConfig) {
        let Some(commandline) =
            root.children().find(|c| c.is_element() && c.has_tag_name((QEMU_NS, "commandline")))
        else {
            return;
        };
        let words: Vec<Word> = commandline
            .children()
            .filter(|c| c.is_element() && c.has_tag_name((QEMU_NS, "arg")))
            .filter_map(|arg| {
                let value = arg.attribute_node("value")?;
                Some(Word { text: value.value().to_string(), span: value.range().into() })
            })
            .collect();
        for argument in crate::config::qemu::arguments(&words) {
            let (option, value) = match argument.option {
                Some(option) => (option.to_string(), argument.value),
                None => (String::new(), Some(argument.word)),
            };
            config.passthrough_args.push(PassthroughArg {
                option,
                value: value.map(|v| v.text.clone()),
                span: argument
                    .value
                    .map_or(argument.word.span, |v| Span::new(argument.word.span.start, v.span.end)),
                dropped: Vec::new(),
            });
        }
        // What QEMU would make of them. A value kvmtune cannot read is QEMU's to refuse; the
        // arguments are still listed above.
        let source = SourceText::new(self.path, self.document.input_text());
        if let Ok(extra) = crate::config::qemu::read_words(&source, &words) {
            let before = generated_cpu(config);
            crate::config::apply_passthrough(config, extra);
            let after = generated_cpu(config);
            if let Some(cpu) = config.passthrough_args.iter_mut().rfind(|arg| arg.option == "cpu") {
                cpu.dropped = before.into_iter().filter(|item| !after.contains(item)).collect();
            }
        }
    }

    fn os(&self, root: Node, config: &mut VmConfig) {
        let Some(os) = child(root, "os") else { return };
        config.anchors.os = Some(span(os));
        if let Some(type_node) = child(os, "type") {
            if let Some(machine) = type_node.attribute_node("machine") {
                config.machine = Some(Located::new(machine.value().to_string(), machine.range().into()));
            }
            if let Some(arch) = type_node.attribute_node("arch") {
                config.arch = Some(Located::new(arch.value().to_string(), arch.range().into()));
            }
        }
        config.firmware = match os.attribute_node("firmware") {
            Some(firmware) => Some(Located::new(firmware.value().to_string(), firmware.range().into())),
            None => child(os, "loader").map(|loader| {
                let efi = loader.attribute("type") == Some("pflash")
                    || text_of(loader).to_ascii_uppercase().contains("OVMF");
                Located::new(if efi { "efi" } else { "bios" }.to_string(), span(loader))
            }),
        };
    }

    fn metadata(&self, root: Node, config: &mut VmConfig) -> Result<(), ConfigError> {
        let Some(metadata) = child(root, "metadata") else { return Ok(()) };
        config.anchors.metadata = Some(span(metadata));
        let os = metadata.descendants().find(|n| n.is_element() && n.has_tag_name((LIBOSINFO_NS, "os")));
        if let Some(id) = os.and_then(|os| os.attribute_node("id")) {
            config.os_id = Some(Located::new(id.value().to_string(), id.range().into()));
        }
        let host =
            metadata.children().find(|n| n.is_element() && n.has_tag_name((host_needs::NAMESPACE, "host")));
        if let Some(host) = host {
            config.host_needs =
                Some(host_needs::read_metadata(host, &|offset, message| self.error_at(offset, message))?);
        }
        Ok(())
    }

    fn memory(&self, root: Node, config: &mut VmConfig) -> Result<(), ConfigError> {
        if let Some(memory) = child(root, "memory") {
            let amount: u64 = self.number(memory, &text_of(memory), "<memory>")?;
            let kib = self.to_kib(memory, amount)?;
            config.memory.size_kib = Some(Located::new(kib, span(memory)));
        }
        if let Some(backing) = child(root, "memoryBacking") {
            config.anchors.memory_backing = Some(span(backing));
            if let Some(hugepages) = child(backing, "hugepages") {
                let mut pages = Vec::new();
                for page in children(hugepages, "page") {
                    let size_kib = match self.attribute_number::<u64>(page, "size")? {
                        Some(size) => Some(self.to_kib(page, size)?),
                        None => None,
                    };
                    pages.push(HugepageRequest {
                        size_kib,
                        nodeset: page.attribute("nodeset").map(str::to_string),
                    });
                }
                config.memory.hugepages = Some(Located::new(pages, span(hugepages)));
            }
            config.memory.locked = child(backing, "locked").map(span);
            config.memory.backing_source = child(backing, "source").and_then(|source| {
                source.attribute("type").map(|t| Located::new(t.to_string(), span(source)))
            });
            config.memory.shared_access = child(backing, "access")
                .filter(|access| access.attribute("mode") == Some("shared"))
                .map(span)
                .or(config.memory.shared_access);
        }
        if let Some(numatune) = child(root, "numatune") {
            if let Some(memory) = child(numatune, "memory") {
                let tune = Numatune {
                    mode: memory.attribute("mode").map(str::to_string),
                    nodeset: self.cpuset(memory, "nodeset")?,
                    placement: memory.attribute("placement").map(str::to_string),
                };
                config.memory.numatune = Some(Located::new(tune, span(memory)));
            }
            for memnode in children(numatune, "memnode") {
                let memnode_binding = MemNode {
                    cellid: self.attribute_number(memnode, "cellid")?,
                    mode: memnode.attribute("mode").map(str::to_string),
                    nodeset: self.cpuset(memnode, "nodeset")?,
                };
                config.memory.memnodes.push(Located::new(memnode_binding, span(memnode)));
            }
        }
        Ok(())
    }

    /// libvirt's `unit` attribute: b/bytes, KB (10^3), k/KiB (2^10, the default), MB, M/MiB, ...
    fn to_kib(&self, node: Node, amount: u64) -> Result<u64, ConfigError> {
        let unit = node.attribute("unit").unwrap_or("KiB");
        size::to_kib(amount, unit, Units::Libvirt).map_err(|error| {
            let message = match error {
                SizeError::UnknownUnit { unit, .. } => format!("unknown memory unit `{unit}`"),
                _ => format!("{amount} {unit} is too large"),
            };
            self.error_at(node.range().start, message)
        })
    }

    fn features(&self, features: Node, config: &mut VmConfig) -> Result<(), ConfigError> {
        if let Some(hyperv) = child(features, "hyperv") {
            config.anchors.hyperv = Some(span(hyperv));
            config.hyperv.mode =
                hyperv.attribute_node("mode").map(|m| Located::new(m.value().to_string(), m.range().into()));
            for element in hyperv.children().filter(Node::is_element) {
                let name = element.tag_name().name();
                let Some((_, qemu)) = HYPERV_ELEMENTS.iter().find(|(e, _)| *e == name) else {
                    return Err(self.error_at(
                        element.range().start,
                        format!("<hyperv> has no feature <{name}> (libvirt rejects it: unsupported HyperV Enlightenment feature)"),
                    ));
                };
                let on = self.on_off(element, "state")?.unwrap_or(true);
                let value = match name {
                    "spinlocks" => element.attribute("retries").map(str::to_string),
                    "vendor_id" => element.attribute("value").map(str::to_string),
                    _ => None,
                };
                config.hyperv.features.push(HvFeature {
                    name: qemu.to_string(),
                    on,
                    value,
                    span: span(element),
                });
                for sub in element.children().filter(Node::is_element) {
                    let sub_name = sub.tag_name().name();
                    let Some((_, _, sub_qemu)) =
                        HYPERV_SUB_ELEMENTS.iter().find(|(p, c, _)| *p == name && *c == sub_name)
                    else {
                        return Err(
                            self.error_at(sub.range().start, format!("<{name}> has no child <{sub_name}>"))
                        );
                    };
                    let sub_on = self.on_off(sub, "state")?.unwrap_or(true);
                    config.hyperv.features.push(HvFeature {
                        name: sub_qemu.to_string(),
                        on: on && sub_on,
                        value: None,
                        span: span(sub),
                    });
                }
            }
        }
        if let Some(ioapic) = child(features, "ioapic") {
            let driver = ioapic.attribute("driver");
            config.split_irqchip = driver.map(|d| Located::new(d == "qemu", span(ioapic)));
        }
        if let Some(kvm) = child(features, "kvm") {
            for element in kvm.children().filter(Node::is_element) {
                let name = element.tag_name().name();
                if !KVM_ELEMENTS.contains(&name) {
                    return Err(
                        self.error_at(element.range().start, format!("<kvm> has no feature <{name}>"))
                    );
                }
                let on = self.on_off(element, "state")?.unwrap_or(true);
                config.kvm.push(Toggle { name: name.to_string(), on, span: span(element) });
            }
        }
        Ok(())
    }

    fn cpu(&self, cpu: Node, config: &mut VmConfig) -> Result<(), ConfigError> {
        config.cpu.mode =
            cpu.attribute_node("mode").map(|a| Located::new(a.value().to_string(), a.range().into()));
        config.cpu.check = cpu.attribute("check").map(str::to_string);
        if let Some(migratable) = cpu.attribute_node("migratable") {
            config.cpu.migratable = Some(Located::new(
                self.on_off(cpu, "migratable")?.unwrap_or(true),
                migratable.range().into(),
            ));
        }
        if let Some(model) = child(cpu, "model").filter(|m| !text_of(*m).is_empty()) {
            config.cpu.model = Some(Located::new(text_of(model), span(model)));
        }
        if let Some(topology) = child(cpu, "topology") {
            let count = |name: &str| -> Result<u32, ConfigError> {
                Ok(self.attribute_number::<u32>(topology, name)?.unwrap_or(1))
            };
            let value = CpuTopology {
                sockets: count("sockets")?,
                dies: count("dies")?,
                clusters: count("clusters")?,
                cores: count("cores")?,
                threads: count("threads")?,
            };
            config.cpu.topology = Some(Located::new(value, span(topology)));
        }
        for feature in children(cpu, "feature") {
            config.cpu.features.push(CpuFeature {
                name: feature.attribute("name").unwrap_or("").to_string(),
                policy: feature.attribute("policy").unwrap_or("require").to_string(),
                span: span(feature),
            });
        }
        if let Some(cache) = child(cpu, "cache") {
            config.cpu.cache_mode = cache.attribute("mode").map(|m| Located::new(m.to_string(), span(cache)));
        }
        if let Some(numa) = child(cpu, "numa") {
            for cell in children(numa, "cell") {
                let memory_kib = match self.attribute_number::<u64>(cell, "memory")? {
                    Some(amount) => Some(self.to_kib(cell, amount)?),
                    None => None,
                };
                if cell.attribute("memAccess") == Some("shared") && config.memory.shared_access.is_none() {
                    config.memory.shared_access = Some(span(cell));
                }
                config.cpu.numa_cells.push(NumaCell {
                    id: self.attribute_number(cell, "id")?,
                    cpus: self.cpuset(cell, "cpus")?.unwrap_or_default(),
                    memory_kib,
                    span: span(cell),
                });
            }
        }
        Ok(())
    }

    fn clock(&self, clock: Node, config: &mut VmConfig) -> Result<(), ConfigError> {
        config.clock.offset =
            clock.attribute_node("offset").map(|o| Located::new(o.value().to_string(), o.range().into()));
        for timer in children(clock, "timer") {
            let name = timer.attribute("name").unwrap_or("");
            if !TIMER_NAMES.contains(&name) {
                return Err(self.error_at(timer.range().start, format!("unknown timer name '{name}'")));
            }
            let present = self.on_off(timer, "present")?;
            if name == "hypervclock" {
                // hv-time is a timer in libvirt; the model calls it by its QEMU name.
                config.hyperv.features.push(HvFeature {
                    name: Hv::Time.qemu().to_string(),
                    on: present.unwrap_or(true),
                    value: None,
                    span: span(timer),
                });
            }
            config.clock.timers.push(Timer {
                name: name.to_string(),
                present,
                tickpolicy: timer.attribute("tickpolicy").map(str::to_string),
                track: timer.attribute("track").map(str::to_string),
                frequency: timer.attribute("frequency").map(str::to_string),
                mode: timer.attribute("mode").map(str::to_string),
                span: span(timer),
            });
        }
        Ok(())
    }

    fn cputune(&self, cputune: Node, config: &mut VmConfig) -> Result<(), ConfigError> {
        for element in cputune.children().filter(Node::is_element) {
            match element.tag_name().name() {
                "vcpupin" | "iothreadpin" => {
                    let id_name = if element.has_tag_name("vcpupin") { "vcpu" } else { "iothread" };
                    let Some(id) = self.attribute_number::<u32>(element, id_name)? else {
                        return Err(self.error_at(
                            element.range().start,
                            format!("<{}> needs {id_name}=", element.tag_name().name()),
                        ));
                    };
                    let pin = Pin {
                        id,
                        cpus: self.cpuset(element, "cpuset")?.unwrap_or_default(),
                        span: span(element),
                    };
                    if id_name == "vcpu" {
                        config.pinning.vcpupin.push(pin)
                    } else {
                        config.pinning.iothreadpin.push(pin)
                    }
                }
                "emulatorpin" => {
                    let cpus = self.cpuset(element, "cpuset")?.unwrap_or_default();
                    config.pinning.emulatorpin = Some(Located::new(cpus, span(element)));
                }
                "vcpusched" => {
                    config.pinning.vcpusched.push(VcpuSched {
                        scheduler: element.attribute("scheduler").unwrap_or("").to_string(),
                        vcpus: self.cpuset(element, "vcpus")?,
                        span: span(element),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn devices(&self, devices: Node, config: &mut VmConfig) -> Result<(), ConfigError> {
        for device in devices.children().filter(Node::is_element) {
            match device.tag_name().name() {
                "disk" => {
                    if device.attribute("type") == Some("vhostuser") {
                        config
                            .devices
                            .shared_memory_users
                            .push(Located::new("a vhost-user disk".into(), span(device)));
                    }
                    let target = child(device, "target");
                    let driver = child(device, "driver");
                    let driver_attr = |name: &str| driver.and_then(|d| d.attribute(name)).map(str::to_string);
                    config.devices.disks.push(Disk {
                        device: device.attribute("device").unwrap_or("disk").to_string(),
                        bus: target.and_then(|t| t.attribute("bus")).map(str::to_string),
                        target: target.and_then(|t| t.attribute("dev")).map(str::to_string),
                        cache: driver_attr("cache"),
                        io: driver_attr("io"),
                        format: driver_attr("type"),
                        source_type: device.attribute("type").map(str::to_string),
                        source_dev: child(device, "source")
                            .and_then(|s| s.attribute("dev"))
                            .map(str::to_string),
                        discard: driver_attr("discard"),
                        iothread: match driver {
                            Some(driver) => self.attribute_number(driver, "iothread")?,
                            None => None,
                        },
                        span: span(device),
                    });
                }
                "filesystem"
                    if child(device, "driver").and_then(|d| d.attribute("type")) == Some("virtiofs") =>
                {
                    config.devices.shared_memory_users.push(Located::new("virtiofs".into(), span(device)));
                }
                "interface" => {
                    if device.attribute("type") == Some("vhostuser") {
                        config
                            .devices
                            .shared_memory_users
                            .push(Located::new("a vhost-user interface".into(), span(device)));
                    }
                    let queues = match child(device, "driver") {
                        Some(driver) => self.attribute_number(driver, "queues")?,
                        None => None,
                    };
                    config.devices.nics.push(Nic {
                        model: child(device, "model").and_then(|m| m.attribute("type")).map(str::to_string),
                        queues,
                        span: span(device),
                    });
                }
                "hostdev" => {
                    let kind = device.attribute("type").unwrap_or("").to_string();
                    let address = child(device, "source").and_then(|s| child(s, "address"));
                    // libvirt writes each part as a number (`0x01`, or decimal); a part it
                    // would reject reads as 0 here, and the address is then no device's.
                    let read_address = |a: Node| {
                        let field = |name: &str| {
                            let raw = a.attribute(name).unwrap_or("0");
                            match raw.strip_prefix("0x") {
                                Some(hex) => u32::from_str_radix(hex, 16).unwrap_or(0),
                                None => raw.parse().unwrap_or(0),
                            }
                        };
                        PciAddress {
                            domain: field("domain"),
                            bus: field("bus") as u8,
                            slot: field("slot") as u8,
                            function: field("function") as u8,
                        }
                    };
                    let pci_address = address.filter(|_| kind == "pci").map(read_address);
                    let guest_address = child(device, "address")
                        .filter(|a| kind == "pci" && a.attribute("type") == Some("pci"))
                        .map(|a| Located::new(read_address(a), span(a)));
                    config.devices.hostdevs.push(Hostdev {
                        kind,
                        pci_address,
                        guest_address,
                        span: span(device),
                    });
                }
                "memballoon" => {
                    config.devices.memballoon =
                        Some(Located::new(device.attribute("model").unwrap_or("").to_string(), span(device)));
                }
                "input" => config.devices.inputs.push(Input {
                    kind: device.attribute("type").unwrap_or("").to_string(),
                    bus: device.attribute("bus").map(str::to_string),
                    span: span(device),
                }),
                "tpm" => config
                    .devices
                    .tpms
                    .push(Located::new(device.attribute("model").unwrap_or("").to_string(), span(device))),
                "graphics" => config
                    .devices
                    .graphics
                    .push(Located::new(device.attribute("type").unwrap_or("").to_string(), span(device))),
                "redirdev" if device.attribute("bus").is_none_or(|bus| bus == "usb") => {
                    config.devices.usb_redirections.push(span(device));
                }
                "controller" => {
                    if device.attribute("type") == Some("usb") {
                        let model = device.attribute("model").unwrap_or("").to_string();
                        config.devices.usb_controllers.push(Located::new(model, span(device)));
                    }
                    if let Some(driver) = child(device, "driver")
                        && let Some(iothread) = self.attribute_number::<u32>(driver, "iothread")?
                    {
                        config.devices.controller_iothreads.push(iothread);
                    }
                }
                "video" => {
                    let model =
                        child(device, "model").and_then(|m| m.attribute("type")).unwrap_or("").to_string();
                    config.devices.videos.push(Located::new(model, span(device)));
                }
                "panic" => {
                    let model = device.attribute("model").unwrap_or("").to_string();
                    if model == "hyperv" {
                        config.hyperv.features.push(HvFeature {
                            name: Hv::Crash.qemu().to_string(),
                            on: true,
                            value: None,
                            span: span(device),
                        });
                    }
                    config.devices.panics.push(Located::new(model, span(device)));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(unit: &str, amount: &str) -> Result<Option<u64>, ConfigError> {
        let xml =
            format!("<domain type='kvm'><name>u</name><memory unit='{unit}'>{amount}</memory></domain>");
        parse("u.xml", &xml).map(|config| config.memory.size_kib.map(|size| size.value))
    }

    /// Every unit libvirt's own parser takes (checked with `virsh -c test:///default define`:
    /// it takes P, PB, PiB, E, EB and EiB, and refuses ZiB as an unknown suffix).
    #[test]
    fn peta_and_exa_units_read_and_an_absurd_size_is_about_the_size() {
        assert_eq!(memory("PiB", "1").unwrap(), Some(1 << 40));
        assert_eq!(memory("P", "1").unwrap(), Some(1 << 40));
        assert_eq!(memory("PB", "1").unwrap(), Some(1_000_000_000_000_000 / 1024));
        assert_eq!(memory("EiB", "1").unwrap(), Some(1 << 50));
        assert_eq!(memory("EB", "2").unwrap(), Some(2_000_000_000_000_000_000 / 1024));
        let too_large = memory("EiB", "100000").unwrap_err().to_string();
        assert!(too_large.contains("100000 EiB is too large"), "{too_large}");
        assert!(memory("ZiB", "1").unwrap_err().to_string().contains("unknown memory unit `ZiB`"));
    }
}
