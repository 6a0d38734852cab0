//! Topologies the corpus has no sysfs snapshot of (its SOURCES.md says so): an X3D part with
//! one V-Cache CCD, and a hybrid Intel part that exposes the kernel's `cpu_core`/`cpu_atom`
//! PMUs. Built by hand in the kernel's sysfs layout.

use std::path::Path;

use kvmtune::host::topology::CoreType;
use kvmtune::host::{self, Host};

fn write(root: &Path, path: &str, contents: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, contents).unwrap();
}

/// `cores` cores with `threads` threads each, numbered like Linux on AMD/Intel desktop parts
/// (sibling of core c is c + cores); `l3_of(core)` gives the L3 index and its size in KiB.
fn build(root: &Path, vendor: &str, cores: u32, threads: u32, l3_of: impl Fn(u32) -> (u32, u64)) {
    let cpus = cores * threads;
    write(root, "proc/cpuinfo", &format!("processor : 0\nvendor_id : {vendor}\nflags : fpu\n\n"));
    write(root, "sys/devices/system/cpu/online", &format!("0-{}\n", cpus - 1));
    write(root, "sys/devices/system/node/node0/cpulist", &format!("0-{}\n", cpus - 1));
    for cpu in 0..cpus {
        let core = cpu % cores;
        let siblings: Vec<String> = (0..threads).map(|t| (core + t * cores).to_string()).collect();
        let (l3, size) = l3_of(core);
        let l3_cpus: Vec<String> =
            (0..cpus).filter(|c| l3_of(c % cores).0 == l3).map(|c| c.to_string()).collect();
        let base = format!("sys/devices/system/cpu/cpu{cpu}");
        write(root, &format!("{base}/topology/physical_package_id"), "0\n");
        write(root, &format!("{base}/topology/core_id"), &format!("{core}\n"));
        write(root, &format!("{base}/topology/core_cpus_list"), &format!("{}\n", siblings.join(",")));
        write(root, &format!("{base}/cache/index3/level"), "3\n");
        write(root, &format!("{base}/cache/index3/type"), "Unified\n");
        write(root, &format!("{base}/cache/index3/id"), &format!("{l3}\n"));
        write(root, &format!("{base}/cache/index3/size"), &format!("{size}K\n"));
        write(root, &format!("{base}/cache/index3/shared_cpu_list"), &format!("{}\n", l3_cpus.join(",")));
    }
}

#[test]
fn ryzen_7950x3d_vcache_ccd_stands_out() {
    let dir = tempfile::tempdir().unwrap();
    // 16 cores, SMT2, CCD 0 (cores 0-7) with 96 MiB of L3, CCD 1 with 32 MiB.
    build(dir.path(), "AuthenticAMD", 16, 2, |core| if core < 8 { (0, 96 * 1024) } else { (1, 32 * 1024) });
    let facts = host::probe(&Host::snapshot(dir.path()).unwrap());
    let groups = &facts.topology.l3_groups;
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].cpus.to_string(), "0-7,16-23");
    assert!(groups[0].larger_than_others);
    assert!(!groups[1].larger_than_others);
    assert_eq!(facts.topology.smt_sibling_sets.len(), 16);
    assert_eq!(facts.topology.core_types.known(), Some(&None), "AMD parts are not classified as hybrid");
    let text = kvmtune::output::probe_text::render(&facts, &[]);
    assert!(text.contains("L3 #0  96 MiB  CPUs 0-7,16-23  larger L3 (V-Cache?)"), "{text}");
}

#[test]
fn hybrid_intel_from_the_kernel_pmus() {
    let dir = tempfile::tempdir().unwrap();
    // An i9-14900K-like part, shrunk: 8 P-cores with SMT (CPUs 0-15), 16 E-cores (16-31).
    let root = dir.path();
    write(root, "proc/cpuinfo", "processor : 0\nvendor_id : GenuineIntel\nflags : fpu\n\n");
    write(root, "sys/devices/system/cpu/online", "0-31\n");
    write(root, "sys/devices/cpu_core/cpus", "0-15\n");
    write(root, "sys/devices/cpu_atom/cpus", "16-31\n");
    for cpu in 0..32u32 {
        let siblings = if cpu < 16 { format!("{},{}", cpu & !1, cpu | 1) } else { cpu.to_string() };
        let base = format!("sys/devices/system/cpu/cpu{cpu}");
        write(root, &format!("{base}/topology/physical_package_id"), "0\n");
        write(
            root,
            &format!("{base}/topology/core_id"),
            &format!("{}\n", if cpu < 16 { cpu / 2 } else { cpu }),
        );
        write(root, &format!("{base}/topology/core_cpus_list"), &format!("{siblings}\n"));
    }
    let facts = host::probe(&Host::snapshot(root).unwrap());
    let types = facts.topology.core_types.known().cloned().flatten().expect("hybrid detected");
    assert_eq!(types.performance.to_string(), "0-15");
    assert_eq!(types.efficiency.to_string(), "16-31");
    assert!(types.method.contains("cpu_core"));
    assert_eq!(facts.topology.cpu(3).unwrap().core_type, Some(CoreType::Performance));
    assert_eq!(facts.topology.cpu(20).unwrap().core_type, Some(CoreType::Efficiency));
    assert_eq!(facts.topology.smt_sibling_sets.len(), 24);
}
