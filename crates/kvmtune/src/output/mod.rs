//! Renderers. Analysis produces data; these turn it into text for people or JSON for tools.
//! A new output format gets its own module here; a new format a plan can be emitted in is that
//! module plus one arm in [`emit::emit`].

pub mod diagnostics;
pub mod emit;
pub mod existing_vm;
pub mod exits_html;
pub mod exits_text;
pub mod experiment_html;
pub mod experiment_text;
pub mod host_changes;
pub mod kubevirt;
pub mod libvirt_domain;
pub mod metrics;
pub mod openstack;
pub mod plan_text;
pub mod probe_text;
pub mod proxmox;
pub mod qemu_args;
pub mod qemu_command;
pub mod top_text;
pub mod verify;

/// What a plan's hv-avic buys, for the outputs that cannot carry it (KubeVirt, Nova) but keep
/// the SynIC and hv-vapic it goes with.
pub(crate) const WITHOUT_HV_AVIC: &str = "without hv-avic, SynIC's AutoEOI switches APICv/AVIC off (HV008) and hv-vapic makes the guest end its interrupts through Hyper-V MSRs that exit (HV013)";
