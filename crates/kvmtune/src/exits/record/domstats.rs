//! KVM's vCPU statistics of every running domain of a libvirt connection, in one call.
//!
//! Reading a libvirt domain through `virsh qemu-monitor-command` costs a virsh process and a
//! libvirtd round trip per QMP command (the exporter's benchmark measured about 70 ms per VM
//! and scrape). `virsh domstats --vcpu` carries the same KVM statistics for all domains at once:
//! libvirt asks QEMU's `query-stats` and names each `vcpu.<num>.<name>.<type>`, where the type
//! is `sum` for an aggregate (cumulative) value, `cur` for an instant one and `max` for a peak
//! (virsh(1) of libvirt 11.3, "domstats"). Only the `sum` values subtract between two
//! readings, as the cumulative statistics of `query-stats-schemas` do on the QMP path. A libvirt
//! too old to carry them gives none, and the caller goes through the monitor instead.

use std::collections::BTreeMap;

use crate::exits::read::domstats::parse_domstats;
use crate::exits::record::Sample;
use crate::host::libvirt::Libvirt;

/// Every running domain's vCPU statistics on `libvirt`, parsed. A domain that stops meanwhile is
/// simply not in it.
pub fn read_domstats(libvirt: &Libvirt) -> Result<BTreeMap<String, Sample>, String> {
    let text = libvirt.vcpu_stats().map_err(|e| e.to_string())?;
    parse_domstats(&text).map_err(|e| e.to_string())
}
