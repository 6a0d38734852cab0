//! Where each kind of change may act. A journal is replayed as root, so a record is checked
//! against its kind's list before anything of its journal is undone: a cpuset change names a
//! cgroup file, a device hand-over a PCI device and a driver's name, a systemd change one of the
//! units kvmtune plans for. Whatever else a journal says (a write to `/etc/shadow`, a unit of
//! someone's choosing, a socket anywhere) is refused, and so is the journal.
//!
//! Patterns are host paths whose segments may hold `*` (any characters but `/`) or be `**` (any
//! number of segments); a path matches only when every segment is a plain name (no `.`, `..`
//! or empty segment), so that no pattern can be walked out of.

/// Whether `path` matches `pattern` (see the module docs).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let Some(path) = path.strip_prefix('/') else { return false };
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return false;
    }
    let pattern: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    segments_match(&pattern, &segments)
}

fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            segments_match(&pattern[1..], path) || (!path.is_empty() && segments_match(pattern, &path[1..]))
        }
        (Some(p), Some(s)) => segment_matches(p, s) && segments_match(&pattern[1..], &path[1..]),
        _ => false,
    }
}

/// `*` in `pattern` matches any run of characters.
fn segment_matches(pattern: &str, segment: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = segment.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (index, part) in parts.iter().enumerate() {
        if index + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// The units systemd runs host tasks in; init.scope too (systemd/systemd#23748): the only units
/// whose properties `host prepare` changes.
pub const SYSTEMD_HOST_UNITS: [&str; 3] = ["system.slice", "user.slice", "init.scope"];
/// The one property it changes on them.
pub const SYSTEMD_PROPERTY: &str = "AllowedCPUs";

/// systemd's alias for whichever display manager is enabled (gdm, sddm, lightdm, ...): the only
/// unit `vfio bind --single-gpu` stops.
pub const DISPLAY_MANAGER: &str = "display-manager.service";
/// The firmware framebuffers that hold a boot GPU's memory, as platform devices (the kernel's
/// sysfb: drivers/firmware/sysfb.c; efifb, simpledrm/simplefb, vesafb).
pub const FIRMWARE_FRAMEBUFFERS: [&str; 3] =
    ["efi-framebuffer.0", "simple-framebuffer.0", "vesa-framebuffer.0"];

/// irqbalance's control sockets (irqbalance.h `SOCKET_TMPFS`, `SOCKET_PATH`).
pub const IRQBALANCE_SOCKETS: &[&str] = &["/run/irqbalance/irqbalance*.sock"];

/// Files of the cgroup filesystem (v2 at `/sys/fs/cgroup`, v1's cpuset below it).
pub const CGROUP_FILES: &[&str] = &["/sys/fs/cgroup/**/*"];

/// IRQ masks: each IRQ's and the default for new ones (Documentation/core-api/irq/irq-affinity.rst).
pub const IRQ_MASKS: &[&str] =
    &["/proc/irq/*/smp_affinity_list", "/proc/irq/*/smp_affinity", "/proc/irq/default_smp_affinity"];

/// Hugepage pools, per node and host-wide (Documentation/admin-guide/mm/hugetlbpage.rst).
pub const HUGEPAGE_POOLS: &[&str] = &[
    "/sys/devices/system/node/node*/hugepages/hugepages-*kB/nr_hugepages",
    "/sys/kernel/mm/hugepages/hugepages-*kB/nr_hugepages",
];

/// The kernel files a plain write may change: what `host prepare` and `vfio bind` tune.
pub const WRITABLE_FILES: &[&[&str]] = &[
    IRQ_MASKS,
    HUGEPAGE_POOLS,
    CGROUP_FILES,
    &[
        // Unbound workqueues (Documentation/core-api/workqueue.rst).
        "/sys/devices/virtual/workqueue/cpumask",
        "/sys/bus/workqueue/devices/*/cpumask",
        // cpufreq (Documentation/admin-guide/pm/cpufreq.rst, intel_pstate.rst).
        "/sys/devices/system/cpu/cpufreq/policy*/scaling_governor",
        "/sys/devices/system/cpu/cpufreq/policy*/energy_performance_preference",
        "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor",
        "/sys/devices/system/cpu/cpu*/cpufreq/energy_performance_preference",
        // Virtual consoles off a framebuffer, and a GPU's reset method (single-GPU hand-over).
        "/sys/class/vtconsole/*/bind",
        "/sys/bus/pci/devices/*/reset_method",
    ],
];

/// Whether `path` matches one of `patterns`.
pub fn any_matches(patterns: &[&str], path: &str) -> bool {
    patterns.iter().any(|pattern| path_matches(pattern, path))
}

/// A driver's or unit's name as sysfs and systemd give them: no path, no spaces, no control
/// characters.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':' | '\\'))
        && name != "."
        && name != ".."
}

/// The target of a change to a libvirt domain: `libvirt:URI#DOMAIN`, URI empty for virsh's
/// default connection.
pub fn domain_path(connect: Option<&str>, domain: &str) -> String {
    format!("libvirt:{}#{domain}", connect.unwrap_or(""))
}

/// The connection and domain of [`domain_path`]'s target, or why it is not one: a domain name
/// is a plain name (no path, no space, no control character) and a URI has no `#` or control
/// character.
pub fn domain_target(path: &str) -> Result<(Option<&str>, &str), String> {
    let rest = path.strip_prefix("libvirt:").ok_or("not a libvirt domain")?;
    let (uri, domain) = rest.rsplit_once('#').ok_or("not a libvirt domain")?;
    if !plain_name(domain) || domain.contains(':') || domain.contains('\\') {
        return Err(format!("`{}` is not a domain name kvmtune changes", domain.escape_debug()));
    }
    if uri.contains('#') || uri.chars().any(char::is_control) || uri.contains(' ') {
        return Err(format!("`{}` is not a libvirt URI", uri.escape_debug()));
    }
    Ok(((!uri.is_empty()).then_some(uri), domain))
}

/// `Ok` when `xml` is a libvirt domain definition whose `<name>` is `domain`: what a journal
/// may define again for that domain and nothing else.
pub fn domain_xml_of(xml: &str, domain: &str) -> Result<(), String> {
    let document = roxmltree::Document::parse(xml).map_err(|e| format!("not XML: {e}"))?;
    let root = document.root_element();
    if !root.has_tag_name("domain") {
        return Err("not a libvirt domain definition".to_string());
    }
    let name = root.children().find(|c| c.has_tag_name("name")).and_then(|n| n.text()).map(str::trim);
    match name {
        Some(name) if name == domain => Ok(()),
        Some(name) => Err(format!("it defines domain `{}`, not `{domain}`", name.escape_debug())),
        None => Err("it names no domain".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_targets_name_a_connection_and_a_plain_domain() {
        assert_eq!(
            domain_target(&domain_path(Some("qemu:///system"), "win11")),
            Ok((Some("qemu:///system"), "win11"))
        );
        assert_eq!(domain_target(&domain_path(None, "win11")), Ok((None, "win11")));
        assert!(domain_target("libvirt:#../x").is_err());
        assert!(domain_target("/proc/irq/1/smp_affinity").is_err());
        assert!(domain_target("libvirt:qemu:///system#a b").is_err());
        assert_eq!(domain_xml_of("<domain type='kvm'><name>win11</name></domain>", "win11"), Ok(()));
        assert!(
            domain_xml_of("<domain type='kvm'><name>other</name></domain>", "win11")
                .unwrap_err()
                .contains("`other`")
        );
        assert!(domain_xml_of("<network><name>win11</name></network>", "win11").is_err());
    }

    #[test]
    fn patterns_match_whole_segments_and_never_climb() {
        assert!(path_matches("/proc/irq/*/smp_affinity_list", "/proc/irq/24/smp_affinity_list"));
        assert!(!path_matches("/proc/irq/*/smp_affinity_list", "/proc/irq/24/x/smp_affinity_list"));
        assert!(!path_matches("/proc/irq/*/smp_affinity_list", "/proc/irq/../../etc/smp_affinity_list"));
        assert!(path_matches("/sys/fs/cgroup/**/*", "/sys/fs/cgroup/cgroup.subtree_control"));
        assert!(path_matches("/sys/fs/cgroup/**/*", "/sys/fs/cgroup/host.slice/cpuset.cpus"));
        assert!(!path_matches("/sys/fs/cgroup/**/*", "/sys/fs/cgroup/../../../etc/shadow"));
        assert!(!path_matches("/sys/fs/cgroup/**/*", "/sys/fs/cgroup//x"));
        assert!(!path_matches("/sys/fs/cgroup/**/*", "/etc/shadow"));
        assert!(!path_matches("/sys/fs/cgroup/**/*", "sys/fs/cgroup/x"));
        assert!(path_matches(
            "/sys/devices/system/node/node*/hugepages/hugepages-*kB/nr_hugepages",
            "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"
        ));
        assert!(!path_matches(
            "/sys/devices/system/node/node*/hugepages/hugepages-*kB/nr_hugepages",
            "/sys/devices/system/node/node1/hugepages/hugepages-2048MB/nr_hugepages"
        ));
    }

    #[test]
    fn plain_names_have_no_paths_or_spaces() {
        for ok in ["vfio-pci", "nvidia", "snd_hda_intel", "system.slice", "getty@tty1.service", "(none)"] {
            assert_eq!(plain_name(ok), ok != "(none)", "{ok}");
        }
        for bad in ["", "..", "../x", "a b", "a\nb", "x/y"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }
}
