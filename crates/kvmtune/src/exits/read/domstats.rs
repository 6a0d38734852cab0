//! `virsh domstats --vcpu` text: KVM's vCPU statistics of libvirt domains, `Domain: 'NAME'`
//! headings each followed by `  vcpu.<num>.<name>.<type>=<value>` lines, where the type is `sum`
//! for an aggregate (cumulative) value, `cur` for an instant one and `max` for a peak (virsh(1)
//! of libvirt 11.3, "domstats"). The one reader of it: the exporter and `top` read virsh's
//! output with [`parse_domstats`], `exits analyze` a pasted copy with [`FORMAT`] (one profile
//! per domain, its `sum` counters summed over vCPUs).

use std::collections::BTreeMap;

use thiserror::Error;

use crate::exits::model::{ExitProfile, ExitRow, Sample};
use crate::exits::read::text::{Line, Pasted};
use crate::exits::read::{ExitParseError, Format, settle_isa};

pub const FORMAT: Format = Format { name: "virsh domstats --vcpu", sniff, read };

fn is_vcpu_line(body: &str) -> bool {
    let body = body.trim_start();
    body.starts_with("vcpu.") && body.contains(".sum=")
}

fn sniff(pasted: &Pasted) -> bool {
    pasted.lines.iter().any(|l| is_vcpu_line(&l.body))
}

fn read(pasted: &Pasted) -> Result<Vec<ExitProfile>, ExitParseError> {
    // Only the headings and the statistics lines: prose around a paste is not virsh's.
    let kept: Vec<&Line> = pasted
        .lines
        .iter()
        .filter(|l| l.body.trim_start().starts_with("Domain: ") || l.body.trim_start().starts_with("vcpu."))
        .collect();
    let text: String = kept.iter().map(|l| format!("{}\n", l.body)).collect();
    let mut warnings = Vec::new();
    let domains = parse(&text, Some(""), &mut |bad: DomstatsError| {
        let line = kept[bad.line - 1];
        warnings.push(pasted.skipped_row(line, &bad.why));
        Ok(())
    })
    .expect("every bad line is passed over");
    let first_line = kept.first().map_or(1, |l| l.number);
    Ok(domains
        .into_iter()
        .filter(|(_, sample)| !sample.is_empty())
        .map(|(domain, sample)| {
            let mut profile = ExitProfile::new("virsh domstats", "KVM vCPU stats");
            let heading = format!("Domain: '{domain}'");
            profile.line = kept.iter().find(|l| l.body.trim() == heading).map_or(first_line, |l| l.number);
            if !domain.is_empty() {
                profile.notes.push(format!("domain {domain}"));
            }
            profile.notes.extend(warnings.iter().cloned());
            profile.rows =
                sample.into_iter().map(|(name, per_vcpu)| ExitRow::per_vcpu(name, per_vcpu)).collect();
            settle_isa(&mut profile);
            profile
        })
        .collect())
}

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
    parse(text, None, &mut Err)
}

/// [`parse_domstats`], with the lines before any `Domain:` heading taken as those of
/// `headless` where given (a paste of the `vcpu.` lines alone), and each line that cannot be
/// read handed to `bad_line`, which fails the whole text or passes the line over.
fn parse(
    text: &str,
    headless: Option<&str>,
    bad_line: &mut dyn FnMut(DomstatsError) -> Result<(), DomstatsError>,
) -> Result<BTreeMap<String, Sample>, DomstatsError> {
    let mut domains: BTreeMap<String, Sample> = BTreeMap::new();
    let mut current: Option<String> = headless.map(str::to_string);
    if let Some(name) = headless {
        domains.entry(name.to_string()).or_default();
    }
    for (index, line) in text.lines().enumerate() {
        let fail = |why: String| DomstatsError { line: index + 1, why };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(quoted) = trimmed.strip_prefix("Domain: ") {
            // The name is printed as is between single quotes, and may hold quotes itself.
            match quoted.strip_prefix('\'').and_then(|rest| rest.strip_suffix('\'')) {
                Some(name) => {
                    domains.entry(name.to_string()).or_default();
                    current = Some(name.to_string());
                }
                None => bad_line(fail(format!("a domain heading without a quoted name: {trimmed:?}")))?,
            }
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            bad_line(fail(format!("neither a domain nor key=value: {trimmed:?}")))?;
            continue;
        };
        let Some(domain) = current.as_ref() else {
            bad_line(fail(format!("{key} before any `Domain:` line")))?;
            continue;
        };
        let Some((vcpu, stat)) = key.strip_prefix("vcpu.").and_then(|rest| rest.split_once('.')) else {
            continue;
        };
        let (Ok(vcpu), Some(stat)) = (vcpu.parse::<usize>(), stat.strip_suffix(".sum")) else {
            // vcpu.current, vcpu.N.state, instants (.cur) and peaks (.max).
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            bad_line(fail(format!("{key}: not a count: {value:?}")))?;
            continue;
        };
        // A vCPU number this large is not a vCPU list: KVM allows a few thousand.
        if vcpu >= 1 << 16 {
            bad_line(fail(format!("{key}: vCPU number {vcpu} is out of range")))?;
            continue;
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
