//! Applies [`ConfigEdit`]s to libvirt domain XML by splicing the original text.
//!
//! Only the bytes a fix must change are touched: attributes are rewritten in place, new
//! elements are inserted with the indentation and quote style the file already uses, and
//! everything else (comments, attribute order, quoting, blank lines, CRLF) stays as it was. Each
//! action is applied to the result of the previous one, re-parsed in between, so actions never
//! fight over offsets.

use roxmltree::{Document, Node, ParsingOptions};

use crate::config::ConfigError;
use crate::config::edit::ConfigEdit;
use crate::config::host_needs;
use crate::knowledge::hyperv::Hv;
use crate::knowledge::libvirt::{HYPERV_SUB_ELEMENTS, hyperv_element};
use crate::values::Span;
use crate::values::escape;

/// Replace `span` of the text with `replacement` (an empty span inserts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub span: Span,
    pub replacement: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("edits overlap at byte {0}")]
    Overlap(usize),
    #[error("edit at {0}..{1} is outside the text or not on a character boundary")]
    OutOfRange(usize, usize),
    #[error("the fix cannot be applied to this XML: {0}")]
    NotApplicable(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Applies non-overlapping edits; insertions at the same offset keep their order.
pub fn apply_edits(text: &str, edits: &[Edit]) -> Result<String, EditError> {
    let mut ordered: Vec<&Edit> = edits.iter().collect();
    ordered.sort_by_key(|e| (e.span.start, e.span.end));
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    for edit in ordered {
        let Span { start, end } = edit.span;
        if start < cursor {
            return Err(EditError::Overlap(start));
        }
        if end > text.len() || start > end || !text.is_char_boundary(start) || !text.is_char_boundary(end) {
            return Err(EditError::OutOfRange(start, end));
        }
        out.push_str(&text[cursor..start]);
        out.push_str(&edit.replacement);
        cursor = end;
    }
    out.push_str(&text[cursor..]);
    Ok(out)
}

/// Applies every action in order and returns the new text.
pub fn apply_actions(text: &str, actions: &[ConfigEdit]) -> Result<String, EditError> {
    let mut current = text.to_string();
    for action in actions {
        for step in steps(action) {
            let edits = {
                let document = parse(&current)?;
                let editor = Editor::new(&current, &document);
                editor.edits(&step)?
            };
            current = apply_edits(&current, &edits)?;
        }
    }
    Ok(current)
}

/// Splits multi-feature actions so that each step sees the result of the one before.
fn steps(action: &ConfigEdit) -> Vec<ConfigEdit> {
    match action {
        ConfigEdit::EnableHyperv { features } => {
            features.iter().map(|f| ConfigEdit::EnableHyperv { features: vec![*f] }).collect()
        }
        // Old pins go first; then each new pin is one insertion into the re-read file.
        ConfigEdit::SetPins { vcpus, emulator, iothreads } => {
            let mut steps = vec![ConfigEdit::SetPins {
                vcpus: Vec::new(),
                emulator: String::new(),
                iothreads: Vec::new(),
            }];
            for pin in vcpus {
                steps.push(ConfigEdit::SetPins {
                    vcpus: vec![pin.clone()],
                    emulator: String::new(),
                    iothreads: Vec::new(),
                });
            }
            steps.push(ConfigEdit::SetPins {
                vcpus: Vec::new(),
                emulator: emulator.clone(),
                iothreads: Vec::new(),
            });
            for pin in iothreads {
                steps.push(ConfigEdit::SetPins {
                    vcpus: Vec::new(),
                    emulator: String::new(),
                    iothreads: vec![pin.clone()],
                });
            }
            steps
        }
        // `<memory>` strict to every cell's node first; the cells and memnodes then go in
        // against the re-read file.
        ConfigEdit::SetGuestNuma { cells } => {
            let mut nodes: Vec<u32> = cells.iter().map(|c| c.host_node).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let nodeset: crate::values::CpuSet = nodes.into_iter().collect();
            vec![ConfigEdit::SetNumatune { nodeset: nodeset.to_string() }, action.clone()]
        }
        other => vec![other.clone()],
    }
}

fn parse(text: &str) -> Result<Document<'_>, EditError> {
    Document::parse_with_options(text, ParsingOptions { allow_dtd: true, ..ParsingOptions::default() })
        .map_err(|error| {
            EditError::Config(ConfigError::MalformedXml {
                path: String::new(),
                line: error.pos().row,
                column: error.pos().col,
                message: error.to_string(),
            })
        })
}

struct Editor<'a, 'input> {
    text: &'a str,
    document: &'a Document<'input>,
    quote: char,
    /// One level of indentation as the file uses it.
    unit: String,
    newline: &'static str,
}

fn element<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children().find(|c| c.is_element() && c.has_tag_name(name))
}

impl<'a, 'input> Editor<'a, 'input> {
    fn new(text: &'a str, document: &'a Document<'input>) -> Self {
        let root = document.root_element();
        // The quote of the first attribute anywhere decides the style.
        let quote = document
            .descendants()
            .flat_map(|n| n.attributes())
            .find_map(|a| text[a.range()].chars().skip_while(|c| *c != '=').nth(1))
            .filter(|q| *q == '\'' || *q == '"')
            .unwrap_or('\'');
        let root_indent = Self::indent_of_static(text, root.range().start);
        // The indentation the root's first child has beyond the root's own; none at all when
        // the file is written without indentation (children at the start of their lines).
        // Two spaces only where the file shows no line structure (everything on one line).
        let unit = root
            .children()
            .find(|c| c.is_element())
            .filter(|child| Self::starts_a_line(text, child.range().start))
            .map(|child| Self::indent_of_static(text, child.range().start))
            .and_then(|child_indent| child_indent.strip_prefix(root_indent.as_str()).map(str::to_string))
            .unwrap_or_else(|| "  ".to_string());
        let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
        Self { text, document, quote, unit, newline }
    }

    /// Whether only whitespace stands between the start of the line and `offset`.
    fn starts_a_line(text: &str, offset: usize) -> bool {
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        line_start > 0 && text[line_start..offset].chars().all(|c| c == ' ' || c == '\t')
    }

    /// The whitespace between the start of the line and `offset`, if only whitespace is there.
    fn indent_of_static(text: &str, offset: usize) -> String {
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let prefix = &text[line_start..offset];
        if prefix.chars().all(|c| c == ' ' || c == '\t') { prefix.to_string() } else { String::new() }
    }

    fn indent_of(&self, node: Node) -> String {
        Self::indent_of_static(self.text, node.range().start)
    }

    fn attribute(&self, name: &str, value: &str) -> String {
        let q = self.quote;
        format!("{name}={q}{}{q}", escape::xml(value))
    }

    fn empty_element(&self, name: &str, attributes: &[(&str, &str)]) -> String {
        let attributes: String =
            attributes.iter().map(|(k, v)| format!(" {}", self.attribute(k, v))).collect();
        format!("<{name}{attributes}/>")
    }

    /// `<cpu><feature policy=POLICY name=NAME>`: a feature the config names already (disabled,
    /// say) changes its policy, since a second <feature> of the same name is one libvirt refuses.
    fn cpu_feature_policy(&self, root: Node, name: &str, policy: &str) -> Result<Edit, EditError> {
        let cpu = element(root, "cpu").ok_or_else(|| EditError::NotApplicable("no <cpu> element".into()))?;
        let existing = cpu
            .children()
            .find(|c| c.is_element() && c.has_tag_name("feature") && c.attribute("name") == Some(name));
        Ok(match existing {
            Some(feature) => self.set_attribute(feature, "policy", policy),
            None => self.insert_child(
                cpu,
                &self.empty_element("feature", &[("policy", policy), ("name", name)]),
                &["numa"],
            ),
        })
    }

    /// Sets (or adds) one attribute of an element.
    fn set_attribute(&self, node: Node, name: &str, value: &str) -> Edit {
        if let Some(attribute) = node.attributes().find(|a| a.name() == name) {
            let range = attribute.range();
            let raw = &self.text[range.clone()];
            let value_start = raw.find(['\'', '"']).map_or(range.end, |i| range.start + i + 1);
            return Edit { span: Span::new(value_start, range.end - 1), replacement: escape::xml(value) };
        }
        let insert_at = node
            .attributes()
            .map(|a| a.range().end)
            .max()
            .unwrap_or(node.range().start + 1 + node.tag_name().name().len());
        Edit {
            span: Span::new(insert_at, insert_at),
            replacement: format!(" {}", self.attribute(name, value)),
        }
    }

    /// Inserts `snippet` (one line, no indentation) as a child of `parent`: before the first
    /// child named in `before`, else after the last element child. Handles `<parent/>`.
    fn insert_child(&self, parent: Node, snippet: &str, before: &[&str]) -> Edit {
        let parent_indent = self.indent_of(parent);
        let child_indent = parent
            .children()
            .find(|c| c.is_element())
            .map(|c| self.indent_of(c))
            .unwrap_or_else(|| format!("{parent_indent}{}", self.unit));
        let nl = self.newline;
        if let Some(anchor) =
            parent.children().find(|c| c.is_element() && before.contains(&c.tag_name().name()))
        {
            let at = anchor.range().start;
            return Edit { span: Span::new(at, at), replacement: format!("{snippet}{nl}{child_indent}") };
        }
        if let Some(last) = parent.children().rfind(|c| c.is_element()) {
            let at = last.range().end;
            return Edit { span: Span::new(at, at), replacement: format!("{nl}{child_indent}{snippet}") };
        }
        let range = parent.range();
        let raw = &self.text[range.clone()];
        if let Some(open) = raw.strip_suffix("/>") {
            // <parent attrs/> -> <parent attrs>\n  snippet\n</parent>
            let open = open.trim_end();
            let name = parent.tag_name().name();
            return Edit {
                span: range.into(),
                replacement: format!("{open}>{nl}{child_indent}{snippet}{nl}{parent_indent}</{name}>"),
            };
        }
        // <parent></parent> or <parent>  </parent>: put the child before the end tag.
        let end_tag = raw.rfind("</").map_or(range.end, |i| range.start + i);
        let content_start = raw.find('>').map_or(range.start, |i| range.start + i + 1);
        Edit {
            span: Span::new(content_start, end_tag),
            replacement: format!("{nl}{child_indent}{snippet}{nl}{parent_indent}"),
        }
    }

    /// The whole lines an element occupies, for deletion without leaving a blank line.
    fn delete_element(&self, node: Node) -> Edit {
        let range = node.range();
        let line_start = self.text[..range.start].rfind('\n').map_or(0, |i| i + 1);
        let only_whitespace_before = self.text[line_start..range.start].trim().is_empty();
        let rest = &self.text[range.end..];
        let line_end = rest.find('\n').map(|i| range.end + i + 1);
        match line_end {
            Some(end) if only_whitespace_before && self.text[range.end..end].trim().is_empty() => {
                Edit { span: Span::new(line_start, end), replacement: String::new() }
            }
            _ => Edit { span: range.into(), replacement: String::new() },
        }
    }

    /// `<name>` around one child, laid out as the file lays out `parent`'s children.
    fn wrapped(&self, parent: Node, name: &str, child: &str) -> String {
        let indent = parent
            .children()
            .find(|c| c.is_element())
            .map(|c| self.indent_of(c))
            .unwrap_or_else(|| format!("{}{}", self.indent_of(parent), self.unit));
        let nl = self.newline;
        format!("<{name}>{nl}{indent}{unit}{child}{nl}{indent}</{name}>", unit = self.unit)
    }

    fn root(&self) -> Node<'a, 'input> {
        self.document.root_element()
    }

    fn edits(&self, action: &ConfigEdit) -> Result<Vec<Edit>, EditError> {
        let root = self.root();
        match action {
            ConfigEdit::EnableHyperv { features } => {
                let mut edits = Vec::new();
                for feature in features {
                    edits.extend(self.set_hyperv(*feature, true)?);
                }
                Ok(edits)
            }
            ConfigEdit::DisableHyperv { feature } => self.set_hyperv(*feature, false),
            ConfigEdit::SetSpinlockRetries { retries } => {
                let spinlocks = element(root, "features")
                    .and_then(|f| element(f, "hyperv"))
                    .and_then(|h| element(h, "spinlocks"))
                    .ok_or_else(|| EditError::NotApplicable("no <spinlocks> element".into()))?;
                Ok(vec![self.set_attribute(spinlocks, "retries", &retries.to_string())])
            }
            ConfigEdit::SetTimer { name, attributes } => {
                let pairs: Vec<(&str, &str)> =
                    attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.set_timer(name, &pairs)
            }
            ConfigEdit::SetClockOffset { offset } => match element(root, "clock") {
                Some(clock) => Ok(vec![self.set_attribute(clock, "offset", offset)]),
                None => Ok(vec![self.insert_child(
                    root,
                    &self.empty_element("clock", &[("offset", offset)]),
                    &["on_poweroff", "on_reboot", "on_crash", "pm", "devices"],
                )]),
            },
            ConfigEdit::SetHostNeeds { needs } => {
                // One line: libvirt lays `<metadata>` out again when it stores the domain.
                let snippet: String =
                    needs.metadata_lines(self.quote).into_iter().map(|(_, line)| line).collect();
                let existing = element(root, "metadata").map(|metadata| {
                    let host = metadata
                        .children()
                        .find(|c| c.is_element() && c.has_tag_name((host_needs::NAMESPACE, "host")));
                    (metadata, host)
                });
                Ok(vec![match existing {
                    Some((_, Some(host))) => Edit { span: host.range().into(), replacement: snippet },
                    Some((metadata, None)) => self.insert_child(metadata, &snippet, &[]),
                    // libvirt's order: ... title, description, metadata, maxMemory, memory.
                    None => self.insert_child(
                        root,
                        &self.wrapped(root, "metadata", &snippet),
                        &["maxMemory", "memory", "currentMemory"],
                    ),
                }])
            }
            ConfigEdit::SetMemballoonModel { model } => {
                let devices = element(root, "devices")
                    .ok_or_else(|| EditError::NotApplicable("no <devices> element".into()))?;
                let snippet = self.empty_element("memballoon", &[("model", model)]);
                Ok(vec![match element(devices, "memballoon") {
                    // The old element's children (address, stats) belong to the old model.
                    Some(balloon) => Edit { span: balloon.range().into(), replacement: snippet },
                    None => self.insert_child(devices, &snippet, &[]),
                }])
            }
            ConfigEdit::RequireCpuFeature { name } => {
                self.cpu_feature_policy(root, name, "require").map(|e| vec![e])
            }
            ConfigEdit::DisableCpuFeature { name } => {
                self.cpu_feature_policy(root, name, "disable").map(|e| vec![e])
            }
            ConfigEdit::RemoveCpuFeature { name } => {
                let cpu = element(root, "cpu")
                    .ok_or_else(|| EditError::NotApplicable("no <cpu> element".into()))?;
                Ok(cpu
                    .children()
                    .filter(|c| {
                        c.is_element() && c.has_tag_name("feature") && c.attribute("name") == Some(name)
                    })
                    .map(|feature| self.delete_element(feature))
                    .collect())
            }
            ConfigEdit::SetCpuCacheMode { mode } => {
                let cpu = element(root, "cpu")
                    .ok_or_else(|| EditError::NotApplicable("no <cpu> element".into()))?;
                Ok(vec![match element(cpu, "cache") {
                    Some(cache) => self.set_attribute(cache, "mode", mode),
                    None => self.insert_child(
                        cpu,
                        &self.empty_element("cache", &[("mode", mode)]),
                        &["feature", "numa"],
                    ),
                }])
            }
            ConfigEdit::SetCpuTopology { sockets, dies, cores, threads } => {
                let cpu = element(root, "cpu")
                    .ok_or_else(|| EditError::NotApplicable("no <cpu> element".into()))?;
                let values = [sockets, dies, cores, threads].map(|v| v.to_string());
                let attributes = [
                    ("sockets", values[0].as_str()),
                    ("dies", &values[1]),
                    ("cores", &values[2]),
                    ("threads", &values[3]),
                ];
                let snippet = self.empty_element("topology", &attributes);
                Ok(vec![match element(cpu, "topology") {
                    Some(topology) => Edit { span: topology.range().into(), replacement: snippet },
                    None => self.insert_child(cpu, &snippet, &["cache", "feature", "numa"]),
                }])
            }
            ConfigEdit::SetCpuMode { mode, migratable } => {
                let migratable = if *migratable { "on" } else { "off" };
                match element(root, "cpu") {
                    Some(cpu) => Ok(vec![
                        self.set_attribute(cpu, "mode", mode),
                        self.set_attribute(cpu, "migratable", migratable),
                    ]),
                    None => {
                        let snippet = format!(
                            "<cpu {} {}/>",
                            self.attribute("mode", mode),
                            self.attribute("migratable", migratable)
                        );
                        Ok(vec![self.insert_child(root, &snippet, &["clock", "on_poweroff", "devices"])])
                    }
                }
            }
            ConfigEdit::SetIothreads { count } => Ok(vec![self.set_iothreads(*count)]),
            ConfigEdit::SetDiskDriver { target, attributes } => {
                let disk = self.disk(target)?;
                let attributes: Vec<(&str, &str)> =
                    attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                Ok(match element(disk, "driver") {
                    Some(driver) => {
                        attributes.iter().map(|(k, v)| self.set_attribute(driver, k, v)).collect()
                    }
                    None => {
                        let mut all = vec![("name", "qemu")];
                        all.extend(attributes);
                        vec![self.insert_child(
                            disk,
                            &self.empty_element("driver", &all),
                            &["source", "target"],
                        )]
                    }
                })
            }
            ConfigEdit::DisableSleepStates => {
                let off = [("enabled", "no")];
                let children =
                    [self.empty_element("suspend-to-mem", &off), self.empty_element("suspend-to-disk", &off)];
                Ok(match element(root, "pm") {
                    Some(pm) => children
                        .iter()
                        .zip(["suspend-to-mem", "suspend-to-disk"])
                        .map(|(snippet, name)| match element(pm, name) {
                            Some(existing) => self.set_attribute(existing, "enabled", "no"),
                            None => self.insert_child(pm, snippet, &[]),
                        })
                        .collect(),
                    None => {
                        let nl = self.newline;
                        let indent = root.children().find(|c| c.is_element()).map_or_else(
                            || format!("{}{}", self.indent_of(root), self.unit),
                            |c| self.indent_of(c),
                        );
                        let inner = format!("{indent}{}", self.unit);
                        let block = format!(
                            "<pm>{nl}{inner}{}{nl}{inner}{}{nl}{indent}</pm>",
                            children[0], children[1]
                        );
                        vec![self.insert_child(root, &block, &["devices"])]
                    }
                })
            }
            ConfigEdit::AttachDiskIothread { target, iothread } => {
                let disk = self.disk(target)?;
                let value = iothread.to_string();
                let mut edits = vec![match element(disk, "driver") {
                    Some(driver) => self.set_attribute(driver, "iothread", &value),
                    // No <driver> means libvirt's defaults (qemu, raw); naming qemu keeps them.
                    None => self.insert_child(
                        disk,
                        &self.empty_element("driver", &[("name", "qemu"), ("iothread", &value)]),
                        &["source", "target"],
                    ),
                }];
                let declared = element(root, "iothreads")
                    .and_then(|n| n.text())
                    .and_then(|t| t.trim().parse::<u32>().ok());
                if declared.is_none_or(|count| count < *iothread) {
                    edits.push(self.set_iothreads(*iothread));
                }
                Ok(edits)
            }
            ConfigEdit::SetPins { vcpus, emulator, iothreads } => {
                let cputune = element(root, "cputune");
                if vcpus.is_empty() && emulator.is_empty() && iothreads.is_empty() {
                    // The clearing step.
                    return Ok(cputune
                        .map(|cputune| {
                            cputune
                                .children()
                                .filter(|c| {
                                    c.is_element()
                                        && matches!(
                                            c.tag_name().name(),
                                            "vcpupin" | "emulatorpin" | "iothreadpin"
                                        )
                                })
                                .map(|pin| self.delete_element(pin))
                                .collect()
                        })
                        .unwrap_or_default());
                }
                let snippet = if let Some((vcpu, cpus)) = vcpus.first() {
                    self.empty_element("vcpupin", &[("vcpu", &vcpu.to_string()), ("cpuset", cpus)])
                } else if let Some((iothread, cpus)) = iothreads.first() {
                    self.empty_element(
                        "iothreadpin",
                        &[("iothread", &iothread.to_string()), ("cpuset", cpus)],
                    )
                } else {
                    self.empty_element("emulatorpin", &[("cpuset", emulator)])
                };
                Ok(vec![match cputune {
                    Some(cputune) => self.insert_child(
                        cputune,
                        &snippet,
                        &["vcpusched", "iothreadsched", "shares", "period", "quota"],
                    ),
                    None => {
                        self.insert_child(root, &self.wrapped(root, "cputune", &snippet), &["numatune", "os"])
                    }
                }])
            }
            ConfigEdit::SetNumatune { nodeset } => {
                let memory = self.empty_element("memory", &[("mode", "strict"), ("nodeset", nodeset)]);
                let Some(numatune) = element(root, "numatune") else {
                    return Ok(vec![self.insert_child(
                        root,
                        &self.wrapped(root, "numatune", &memory),
                        &["os"],
                    )]);
                };
                let mut edits = vec![match element(numatune, "memory") {
                    Some(existing) => Edit { span: existing.range().into(), replacement: memory },
                    None => self.insert_child(numatune, &memory, &["memnode"]),
                }];
                // A guest cell's <memnode> overrides <memory> for that cell's memory, so all of it
                // lands on `nodeset` only if every cell is bound there too.
                for memnode in numatune.children().filter(|c| c.is_element() && c.has_tag_name("memnode")) {
                    let Some(cell) = memnode.attribute("cellid") else { continue };
                    let attributes = [("cellid", cell), ("mode", "strict"), ("nodeset", nodeset.as_str())];
                    edits.push(Edit {
                        span: memnode.range().into(),
                        replacement: self.empty_element("memnode", &attributes),
                    });
                }
                Ok(edits)
            }
            ConfigEdit::SetGuestNuma { cells } => self.set_guest_numa(cells),
            ConfigEdit::Manual { steps } => Err(EditError::NotApplicable(format!("manual step: {steps}"))),
        }
    }

    /// `<cpu><numa>` with one cell per guest node (replacing any), and one strict `<memnode>`
    /// per cell after `<numatune><memory>` (replacing any), which the step before put there.
    fn set_guest_numa(&self, cells: &[crate::config::edit::GuestCell]) -> Result<Vec<Edit>, EditError> {
        let root = self.root();
        let cpu = element(root, "cpu").ok_or_else(|| EditError::NotApplicable("no <cpu> element".into()))?;
        let numatune = element(root, "numatune")
            .ok_or_else(|| EditError::NotApplicable("no <numatune> element".into()))?;
        let memory = element(numatune, "memory")
            .ok_or_else(|| EditError::NotApplicable("no <numatune><memory> element".into()))?;
        let nl = self.newline;
        let mut edits = Vec::new();
        let cell_indent = format!(
            "{}{}",
            cpu.children()
                .find(|c| c.is_element())
                .map_or_else(|| format!("{}{}", self.indent_of(cpu), self.unit), |c| self.indent_of(c)),
            self.unit
        );
        let numa_indent = &cell_indent[..cell_indent.len() - self.unit.len()];
        let cell_lines: String = cells
            .iter()
            .map(|cell| {
                let (id, memory) = (cell.id.to_string(), cell.memory_kib.to_string());
                let attributes =
                    [("id", id.as_str()), ("cpus", &cell.cpus), ("memory", &memory), ("unit", "KiB")];
                format!("{nl}{cell_indent}{}", self.empty_element("cell", &attributes))
            })
            .collect();
        let numa = format!("<numa>{cell_lines}{nl}{numa_indent}</numa>");
        edits.push(match element(cpu, "numa") {
            Some(existing) => Edit { span: existing.range().into(), replacement: numa },
            None => self.insert_child(cpu, &numa, &[]),
        });
        for memnode in numatune.children().filter(|c| c.is_element() && c.tag_name().name() == "memnode") {
            edits.push(self.delete_element(memnode));
        }
        let memnode_indent = self.indent_of(memory);
        let memnodes: String = cells
            .iter()
            .map(|cell| {
                let (id, node) = (cell.id.to_string(), cell.host_node.to_string());
                let attributes = [("cellid", id.as_str()), ("mode", "strict"), ("nodeset", &node)];
                format!("{nl}{memnode_indent}{}", self.empty_element("memnode", &attributes))
            })
            .collect();
        let at = memory.range().end;
        edits.push(Edit { span: Span::new(at, at), replacement: memnodes });
        Ok(edits)
    }

    /// The `<disk>` with this target device.
    fn disk(&self, target: &str) -> Result<Node<'a, 'input>, EditError> {
        element(self.root(), "devices")
            .into_iter()
            .flat_map(|devices| devices.children())
            .find(|d| {
                d.is_element()
                    && d.has_tag_name("disk")
                    && element(*d, "target").and_then(|t| t.attribute("dev")) == Some(target)
            })
            .ok_or_else(|| EditError::NotApplicable(format!("no disk with target {target}")))
    }

    fn set_iothreads(&self, count: u32) -> Edit {
        let root = self.root();
        let snippet = format!("<iothreads>{count}</iothreads>");
        match element(root, "iothreads") {
            Some(existing) => Edit { span: existing.range().into(), replacement: snippet },
            None => self.insert_child(root, &snippet, &["cputune", "numatune", "os"]),
        }
    }

    fn set_timer(&self, name: &str, attributes: &[(&str, &str)]) -> Result<Vec<Edit>, EditError> {
        let root = self.root();
        let Some(clock) = element(root, "clock") else {
            // libvirt's default offset is utc; saying so keeps the meaning while adding the timer.
            let mut timer_attributes = vec![("name", name)];
            timer_attributes.extend_from_slice(attributes);
            let nl = self.newline;
            let indent = format!("{}{}", self.indent_of(root), self.unit);
            let inner = format!("{indent}{}", self.unit);
            let snippet = format!(
                "<clock {}>{nl}{inner}{}{nl}{indent}</clock>",
                self.attribute("offset", "utc"),
                self.empty_element("timer", &timer_attributes)
            );
            return Ok(vec![self.insert_child(
                root,
                &snippet,
                &["on_poweroff", "on_reboot", "on_crash", "pm", "devices"],
            )]);
        };
        match clock
            .children()
            .find(|c| c.is_element() && c.has_tag_name("timer") && c.attribute("name") == Some(name))
        {
            Some(timer) => Ok(attributes.iter().map(|(k, v)| self.set_attribute(timer, k, v)).collect()),
            None => {
                let mut timer_attributes = vec![("name", name)];
                timer_attributes.extend_from_slice(attributes);
                Ok(vec![self.insert_child(clock, &self.empty_element("timer", &timer_attributes), &[])])
            }
        }
    }

    fn set_hyperv(&self, feature: Hv, on: bool) -> Result<Vec<Edit>, EditError> {
        let state = if on { "on" } else { "off" };
        if feature == Hv::Time {
            return self.set_timer("hypervclock", &[("present", if on { "yes" } else { "no" })]);
        }
        let root = self.root();
        if let Some((parent, child, _)) = HYPERV_SUB_ELEMENTS.iter().find(|(_, _, hv)| *hv == feature) {
            let parent_node = element(root, "features")
                .and_then(|f| element(f, "hyperv"))
                .and_then(|h| element(h, parent))
                .ok_or_else(|| EditError::NotApplicable(format!("{feature} needs <{parent}> first")))?;
            return Ok(vec![match element(parent_node, child) {
                Some(existing) => self.set_attribute(existing, "state", state),
                None => self.insert_child(parent_node, &self.empty_element(child, &[("state", state)]), &[]),
            }]);
        }
        let name = hyperv_element(feature)
            .ok_or_else(|| EditError::NotApplicable(format!("{feature} has no libvirt <hyperv> element")))?;
        let retries = crate::knowledge::recommended::SPINLOCK_RETRIES.to_string();
        let mut attributes = vec![("state", state)];
        if name == "spinlocks" && on {
            attributes.push(("retries", retries.as_str()));
        }
        let snippet = self.empty_element(name, &attributes);
        let Some(features) = element(root, "features") else {
            let nl = self.newline;
            let indent = format!("{}{}", self.indent_of(root), self.unit);
            let (one, two) =
                (format!("{indent}{}", self.unit), format!("{indent}{}{}", self.unit, self.unit));
            let block = format!(
                "<features>{nl}{one}<hyperv {}>{nl}{two}{snippet}{nl}{one}</hyperv>{nl}{indent}</features>",
                self.attribute("mode", "custom")
            );
            return Ok(vec![self.insert_child(
                root,
                &block,
                &["cpu", "clock", "on_poweroff", "on_reboot", "on_crash", "pm", "devices"],
            )]);
        };
        let Some(hyperv) = element(features, "hyperv") else {
            let nl = self.newline;
            let indent = self
                .document
                .root_element()
                .children()
                .find(|c| c.is_element() && c.has_tag_name("features"))
                .and_then(|f| f.children().find(|c| c.is_element()).map(|c| self.indent_of(c)))
                .unwrap_or_else(|| format!("{}{}", self.indent_of(features), self.unit));
            let block = format!(
                "<hyperv {}>{nl}{indent}{}{snippet}{nl}{indent}</hyperv>",
                self.attribute("mode", "custom"),
                self.unit
            );
            return Ok(vec![self.insert_child(features, &block, &["kvm", "pmu", "vmport", "smm", "ioapic"])]);
        };
        Ok(vec![match element(hyperv, name) {
            Some(existing) => self.set_attribute(existing, "state", state),
            None => self.insert_child(hyperv, &snippet, &[]),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enable(text: &str, features: &[Hv]) -> String {
        apply_actions(text, &[ConfigEdit::EnableHyperv { features: features.to_vec() }]).unwrap()
    }

    #[test]
    fn each_virtio_disk_without_an_iothread_gets_one_of_its_own() {
        let text = "<domain type='kvm'>\n  <name>w</name>\n  <devices>\n    <disk type='file' device='disk'>\n      <source file='/a.img'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw' iothread='1'/>\n      <target dev='vdb' bus='virtio'/>\n    </disk>\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <target dev='vdc' bus='virtio'/>\n    </disk>\n    <disk type='file' device='cdrom'>\n      <target dev='sda' bus='sata'/>\n    </disk>\n  </devices>\n</domain>\n";
        let config = crate::config::libvirt::parse("x", text).unwrap();
        let assigned = config.devices.iothreads_for_unattached_disks();
        assert_eq!(assigned, [("vda".to_string(), 2), ("vdc".to_string(), 3)]);
        let actions: Vec<ConfigEdit> = assigned
            .into_iter()
            .map(|(target, iothread)| ConfigEdit::AttachDiskIothread { target, iothread })
            .collect();
        let fixed = apply_actions(text, &actions).unwrap();
        assert!(
            fixed.contains("      <driver name='qemu' iothread='2'/>\n      <source file='/a.img'/>"),
            "{fixed}"
        );
        assert!(fixed.contains("<driver name='qemu' type='qcow2' iothread='3'/>"), "{fixed}");
        assert!(fixed.contains("  <iothreads>3</iothreads>\n"), "{fixed}");
        let reread = crate::config::libvirt::parse("x", &fixed).unwrap();
        assert!(reread.devices.iothreads_for_unattached_disks().is_empty());
        assert_eq!(reread.iothreads.map(|n| n.value), Some(3));
    }

    #[test]
    fn the_host_needs_go_into_metadata_and_replace_old_ones() {
        use crate::config::host_needs::HostNeeds;
        let needs = |housekeeping: &str| HostNeeds {
            cpus: Some(crate::values::CpuSet::parse_list("2-3").unwrap()),
            housekeeping: Some(crate::values::CpuSet::parse_list(housekeeping).unwrap()),
            isolate: true,
            irqs: true,
            governor: Some("performance".to_string()),
            devices: vec![crate::values::PciAddress::parse("0000:01:00.0").unwrap()],
            ..HostNeeds::default()
        };
        let read_back = |text: &str| {
            let config = crate::config::libvirt::parse("x", text).unwrap();
            config.host_needs.unwrap_or_else(|| panic!("no request in\n{text}")).needs
        };
        // No <metadata> at all; then one with libosinfo's element only.
        for text in [
            "<domain type='kvm'>\n  <name>w</name>\n  <memory>1024</memory>\n</domain>\n",
            "<domain type='kvm'>\n  <name>w</name>\n  <metadata>\n    <libosinfo:libosinfo xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'/>\n  </metadata>\n  <memory>1024</memory>\n</domain>\n",
        ] {
            let once = apply_actions(text, &[ConfigEdit::SetHostNeeds { needs: needs("0-1") }]).unwrap();
            let request = read_back(&once);
            assert!(request.isolate);
            assert_eq!(request.housekeeping.unwrap().to_string(), "0-1");
            assert_eq!(request.governor.as_deref(), Some("performance"));
            assert_eq!(request.devices[0].to_string(), "0000:01:00.0");
            assert_eq!(once.matches("<metadata>").count(), 1, "{once}");
            let twice = apply_actions(&once, &[ConfigEdit::SetHostNeeds { needs: needs("0,4") }]).unwrap();
            assert_eq!(twice.matches("kvmtune:host xmlns").count(), 1, "{twice}");
            assert_eq!(read_back(&twice).housekeeping.unwrap().to_string(), "0,4");
        }
    }

    /// Binding all memory to one node rebinds each guest cell's `<memnode>` there too, since a
    /// memnode overrides `<memory>` for its cell; the file's quotes and layout stay.
    #[test]
    fn binding_memory_rebinds_every_cell() {
        let text = "<domain type='kvm'>\n  <numatune>\n    <memory mode='interleave' nodeset='0-3'/>\n    <memnode cellid='0' mode='preferred' nodeset='2'/>\n    <memnode cellid='1' mode='strict' nodeset='3'/>\n  </numatune>\n</domain>\n";
        let fixed = apply_actions(text, &[ConfigEdit::SetNumatune { nodeset: "1".into() }]).unwrap();
        assert_eq!(
            fixed,
            "<domain type='kvm'>\n  <numatune>\n    <memory mode='strict' nodeset='1'/>\n    <memnode cellid='0' mode='strict' nodeset='1'/>\n    <memnode cellid='1' mode='strict' nodeset='1'/>\n  </numatune>\n</domain>\n"
        );
        let memnodes = crate::config::libvirt::parse("x", &fixed).unwrap().memory.memnodes;
        let read: Vec<(Option<u32>, String)> = memnodes
            .iter()
            .map(|m| (m.value.cellid, m.value.nodeset.as_ref().unwrap().to_string()))
            .collect();
        assert_eq!(read, [(Some(0), "1".to_string()), (Some(1), "1".to_string())]);
        // With no <memory> yet, it goes in before the memnodes.
        let without = text.replace("    <memory mode='interleave' nodeset='0-3'/>\n", "");
        let fixed = apply_actions(&without, &[ConfigEdit::SetNumatune { nodeset: "1".into() }]).unwrap();
        assert!(
            fixed.contains(
                "<memory mode='strict' nodeset='1'/>\n    <memnode cellid='0' mode='strict' nodeset='1'/>"
            ),
            "{fixed}"
        );
    }

    #[test]
    fn inserts_with_the_files_indentation_and_quotes() {
        let text = "<domain type=\"kvm\">\n    <features>\n        <hyperv mode=\"custom\">\n            <relaxed state=\"on\"/>\n        </hyperv>\n    </features>\n</domain>\n";
        let fixed = enable(text, &[Hv::Vpindex]);
        assert_eq!(
            fixed,
            "<domain type=\"kvm\">\n    <features>\n        <hyperv mode=\"custom\">\n            <relaxed state=\"on\"/>\n            <vpindex state=\"on\"/>\n        </hyperv>\n    </features>\n</domain>\n"
        );
    }

    #[test]
    fn turns_an_off_feature_on_in_place() {
        let text = "<domain>\n  <features>\n    <hyperv>\n      <synic state='off'/><!-- keep -->\n    </hyperv>\n  </features>\n</domain>";
        assert_eq!(enable(text, &[Hv::Synic]), text.replace("state='off'", "state='on'"));
    }

    #[test]
    fn creates_missing_containers() {
        let text = "<domain type='kvm'>\n  <name>w</name>\n  <devices/>\n</domain>\n";
        let fixed = enable(text, &[Hv::Relaxed, Hv::Time]);
        assert!(fixed.contains("  <features>\n    <hyperv mode='custom'>\n      <relaxed state='on'/>\n    </hyperv>\n  </features>\n"), "{fixed}");
        assert!(fixed.contains("  <clock offset='utc'>\n    <timer name='hypervclock' present='yes'/>\n  </clock>\n  <devices/>"), "{fixed}");
        crate::config::libvirt::parse("x", &fixed).unwrap();
    }

    #[test]
    fn sub_features_and_self_closing_parents() {
        let text = "<domain>\n  <features>\n    <hyperv>\n      <stimer state='on'/>\n    </hyperv>\n  </features>\n</domain>\n";
        let fixed = enable(text, &[Hv::StimerDirect]);
        assert!(
            fixed.contains("      <stimer state='on'>\n        <direct state='on'/>\n      </stimer>\n"),
            "{fixed}"
        );
    }

    #[test]
    fn removing_a_feature_takes_its_line() {
        let text = "<domain>\n  <cpu mode='host-passthrough'>\n    <feature policy='disable' name='hypervisor'/>\n    <feature policy='require' name='topoext'/>\n  </cpu>\n</domain>\n";
        let fixed =
            apply_actions(text, &[ConfigEdit::RemoveCpuFeature { name: "hypervisor".into() }]).unwrap();
        assert_eq!(
            fixed,
            "<domain>\n  <cpu mode='host-passthrough'>\n    <feature policy='require' name='topoext'/>\n  </cpu>\n</domain>\n"
        );
    }

    /// A file written without indentation gets inserted lines without indentation too.
    #[test]
    fn unindented_files_stay_unindented() {
        let text = "<domain type='kvm'>\n<name>w</name>\n<vcpu>2</vcpu>\n<features>\n<acpi/>\n</features>\n</domain>\n";
        let fixed = apply_actions(
            text,
            &[ConfigEdit::SetPins {
                vcpus: vec![(0, "2".into()), (1, "3".into())],
                emulator: "0".into(),
                iothreads: Vec::new(),
            }],
        )
        .unwrap();
        assert!(fixed.lines().all(|line| !line.starts_with(' ')), "{fixed}");
        assert!(fixed.contains("\n<vcpupin vcpu='1' cpuset='3'/>\n"), "{fixed}");
    }

    #[test]
    fn crlf_files_stay_crlf() {
        let text =
            "<domain>\r\n  <clock offset='utc'>\r\n    <timer name='rtc'/>\r\n  </clock>\r\n</domain>\r\n";
        let fixed = apply_actions(
            text,
            &[ConfigEdit::SetTimer {
                name: "pit".into(),
                attributes: vec![("tickpolicy".into(), "delay".into())],
            }],
        )
        .unwrap();
        assert_eq!(
            fixed,
            "<domain>\r\n  <clock offset='utc'>\r\n    <timer name='rtc'/>\r\n    <timer name='pit' tickpolicy='delay'/>\r\n  </clock>\r\n</domain>\r\n"
        );
    }

    #[test]
    fn overlapping_edits_are_refused() {
        let edits = [
            Edit { span: Span::new(0, 3), replacement: "x".into() },
            Edit { span: Span::new(2, 4), replacement: "y".into() },
        ];
        assert_eq!(apply_edits("abcdef", &edits), Err(EditError::Overlap(2)));
    }
}
