//! kvmtune: make Windows guests on KVM fast, and prove it.
//!
//! Data flows one way through this crate: inputs (host facts, VM configs, exit statistics) are
//! read, knowledge-driven analysis (rules, planner, diagnosis) turns them into findings and
//! plans, and outputs render those. Changes to a host are a separate, journaled step.
//!
//! The modules form layers, lowest first; a module uses only the layers below its own, and
//! `tests/layers.rs` fails on any edge that goes up or any cycle one level down:
//!
//! 1. [`values`]: the value types everything shares (CPU sets, versions, PCI addresses, sizes,
//!    spans, escaping).
//! 2. [`knowledge`]: facts about KVM, QEMU, libvirt and Windows, each with its source.
//! 3. `sys` (private): all `unsafe` code, behind typed KVM handles.
//! 4. Inputs: [`host`] (facts about the machine, read through [`host::Host`] from the live host
//!    or a snapshot), [`config`] (the model of a VM, read from libvirt XML, QEMU argv or
//!    Proxmox; its edits), [`exits`] (VM-exit statistics and the recorder), [`guest`] (what a
//!    guest sees, from the guest program's report and the QEMU guest agent).
//! 5. [`hostchange`]: the only part that writes to a host; journaled, opt-in.
//! 6. [`analysis`]: rules over host facts, configs and exit profiles, the planner and the exit
//!    diagnosis; the rule registry is its top.
//! 7. [`live`]: every running VM of this host, read and diagnosed now.
//! 8. [`output`]: renderers for people (text, HTML) and tools (JSON, libvirt XML, QEMU argv,
//!    Proxmox, KubeVirt, OpenMetrics).

pub mod analysis;
pub mod config;
pub mod exits;
pub mod experiment;
pub mod guest;
pub mod host;
pub mod hostchange;
pub mod knowledge;
pub mod live;
pub mod output;
mod sys;
pub mod values;
