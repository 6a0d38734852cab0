//! The whole snapshot reader: arbitrary bytes split into the files a topology probe reads.
#![no_main]
use libfuzzer_sys::fuzz_target;

const FILES: &[&str] = &[
    "sys/devices/system/cpu/online",
    "sys/devices/system/cpu/present",
    "sys/devices/system/cpu/cpu0/topology/core_cpus_list",
    "sys/devices/system/cpu/cpu0/topology/core_id",
    "sys/devices/system/cpu/cpu0/topology/physical_package_id",
    "sys/devices/system/cpu/cpu0/cache/index3/level",
    "sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list",
    "sys/devices/system/cpu/cpu0/cache/index3/size",
    "sys/devices/system/node/node0/cpulist",
    "proc/cpuinfo",
    "proc/mounts",
];

fuzz_target!(|data: &[u8]| {
    let dir = tempfile_dir();
    for (file, chunk) in FILES.iter().zip(data.split(|b| *b == 0)) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, chunk).unwrap();
    }
    let host = kvmtune::host::Host::snapshot(&dir).unwrap();
    let facts = kvmtune::host::probe(&host);
    let _ = kvmtune::output::probe_text::render(&facts, &kvmtune::analysis::host_rules::evaluate(&facts));
    std::fs::remove_dir_all(&dir).unwrap();
});

fn tempfile_dir() -> std::path::PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = std::path::Path::new(base).join(format!("kvmtune-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sys")).unwrap();
    dir
}
