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
use std::time::Duration;

use thiserror::Error;

use crate::exits::record::Sample;
use crate::exits::record::monitor::virsh_within;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("virsh domstats output, line {line}: {why}")]
pub struct DomstatsError {
    pub line: usize,
    pub why: String,
}

/// `virsh domstats --raw` text: `Domain: 'NAME'` heads each domain, `  key=value` lines follow.
/// Returns each domain's cumulative KVM vCPU statistics, by vCPU number (a vCPU libvirt does not
/// list, an offline one, reads 0). A domain without any is present with an empty sample.
pub fn parse_domstats(text: &str) -> Result<BTreeMap<String, Sample>, DomstatsError> {
    let mut domains: BTreeMap<String, Sample> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (index, line) in text.lines().enumerate() {
        let fail = |why: String| DomstatsError { line: index + 1, why };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(quoted) = trimmed.strip_prefix("Domain: ") {
            // The name is printed as is between single quotes, and may hold quotes itself.
            let name = quoted
                .strip_prefix('\'')
                .and_then(|rest| rest.strip_suffix('\''))
                .ok_or_else(|| fail(format!("a domain heading without a quoted name: {trimmed:?}")))?;
            domains.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            continue;
        }
        let (key, value) = trimmed
            .split_once('=')
            .ok_or_else(|| fail(format!("neither a domain nor key=value: {trimmed:?}")))?;
        let domain = current.as_ref().ok_or_else(|| fail(format!("{key} before any `Domain:` line")))?;
        let Some((vcpu, stat)) = key.strip_prefix("vcpu.").and_then(|rest| rest.split_once('.')) else {
            continue;
        };
        let (Ok(vcpu), Some(stat)) = (vcpu.parse::<usize>(), stat.strip_suffix(".sum")) else {
            // vcpu.current, vcpu.N.state, instants (.cur) and peaks (.max).
            continue;
        };
        let value: u64 = value.parse().map_err(|_| fail(format!("{key}: not a count: {value:?}")))?;
        // A vCPU number this large is not a vCPU list: KVM allows a few thousand.
        if vcpu >= 1 << 16 {
            return Err(fail(format!("{key}: vCPU number {vcpu} is out of range")));
        }
        let per_vcpu =
            domains.get_mut(domain).expect("every domain heading adds its entry").entry(stat.to_string());
        let per_vcpu = per_vcpu.or_default();
        if per_vcpu.len() <= vcpu {
            per_vcpu.resize(vcpu + 1, 0);
        }
        per_vcpu[vcpu] = value;
    }
    Ok(domains)
}

/// Runs `virsh domstats --vcpu --raw --list-active` on `connect` (None: virsh's default),
/// bounded by `timeout`, and parses it. A domain that stops meanwhile is simply not in it.
pub fn read_domstats(connect: Option<&str>, timeout: Duration) -> Result<BTreeMap<String, Sample>, String> {
    let stdout = virsh_within(connect, &["domstats", "--vcpu", "--raw", "--list-active"], timeout)?;
    parse_domstats(&String::from_utf8_lossy(&stdout)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape libvirt 11.3 printed here for a 2-vCPU domain (trimmed to a few keys).
    const TWO_VCPUS: &str = "Domain: 't1'
  vcpu.current=2
  vcpu.maximum=2
  vcpu.0.state=1
  vcpu.0.time=1020000000
  vcpu.0.blocking.cur=no
  vcpu.0.halt_successful_poll.sum=0
  vcpu.0.exits.sum=3358
  vcpu.0.io_exits.sum=0
  vcpu.0.guest_mode.cur=no
  vcpu.1.state=1
  vcpu.1.exits.sum=1
  vcpu.1.halt_exits.sum=1
  vcpu.1.halt_wait_ns.sum=560969419

Domain: 'it''s'
  vcpu.current=1
";

    #[test]
    fn keeps_the_cumulative_kvm_statistics_by_domain_and_vcpu() {
        let domains = parse_domstats(TWO_VCPUS).unwrap();
        let t1 = &domains["t1"];
        assert_eq!(t1["exits"], [3358, 1]);
        assert_eq!(t1["halt_exits"], [0, 1]);
        assert_eq!(t1["io_exits"], [0]);
        assert!(!t1.contains_key("guest_mode") && !t1.contains_key("blocking") && !t1.contains_key("time"));
        assert!(domains["it''s"].is_empty());
    }

    #[test]
    fn bad_lines_are_errors_with_their_line() {
        assert_eq!(
            parse_domstats("Domain: 'a'\n  vcpu.0.exits.sum=many\n").unwrap_err(),
            DomstatsError { line: 2, why: "vcpu.0.exits.sum: not a count: \"many\"".into() }
        );
        assert_eq!(parse_domstats("  vcpu.0.exits.sum=1\n").unwrap_err().line, 1);
        assert_eq!(parse_domstats("Domain: a\n").unwrap_err().line, 1);
        assert_eq!(parse_domstats("Domain: 'a'\n  vcpu.99999999.exits.sum=1\n").unwrap_err().line, 2);
        assert_eq!(parse_domstats("Domain: 'a'\nwhat\n").unwrap_err().line, 2);
    }
}
