//! What a Linux guest made of its virtual hardware, from sysfs and procfs.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::json::Json;
use crate::timing;

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|text| text.trim().to_string())
}

/// The kernel's CPU list syntax (`0-3,8`).
fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let mut bounds = part.splitn(2, '-');
        let first = bounds.next().and_then(|b| b.trim().parse::<u32>().ok());
        let last = bounds.next().and_then(|b| b.trim().parse::<u32>().ok());
        match (first, last) {
            (Some(a), Some(b)) if a <= b && b - a < 65536 => cpus.extend(a..=b),
            (Some(a), None) => cpus.push(a),
            _ => {}
        }
    }
    cpus
}

fn groups_json(groups: Vec<Vec<u32>>) -> Json {
    Json::Array(groups.into_iter().map(Json::from).collect())
}

pub fn os() -> Json {
    let pretty = read_trimmed("/etc/os-release").and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map(|value| value.trim_matches('"').to_string())
    });
    Json::object()
        .with("family", "linux")
        .with("name", pretty)
        .with("kernel", read_trimmed("/proc/sys/kernel/osrelease"))
}

pub fn topology() -> Json {
    let online =
        read_trimmed("/sys/devices/system/cpu/online").map(|t| parse_cpu_list(&t)).unwrap_or_default();
    let mut smt: Vec<Vec<u32>> = Vec::new();
    let mut l3: Vec<Vec<u32>> = Vec::new();
    let mut sockets: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for cpu in &online {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}");
        if let Some(siblings) = read_trimmed(format!("{base}/topology/thread_siblings_list")) {
            let group = parse_cpu_list(&siblings);
            if !smt.contains(&group) {
                smt.push(group);
            }
        }
        if let Some(package) =
            read_trimmed(format!("{base}/topology/physical_package_id")).and_then(|p| p.parse().ok())
        {
            sockets.entry(package).or_default().push(*cpu);
        }
        for index in 0..8 {
            let cache = format!("{base}/cache/index{index}");
            if read_trimmed(format!("{cache}/level")).as_deref() == Some("3") {
                if let Some(shared) = read_trimmed(format!("{cache}/shared_cpu_list")) {
                    let group = parse_cpu_list(&shared);
                    if !l3.contains(&group) {
                        l3.push(group);
                    }
                }
            }
        }
    }
    let mut nodes: Vec<Vec<u32>> = Vec::new();
    if let Ok(entries) = fs::read_dir("/sys/devices/system/node") {
        let mut numbered: Vec<(u32, Vec<u32>)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let number = name.strip_prefix("node")?.parse().ok()?;
                Some((
                    number,
                    read_trimmed(e.path().join("cpulist")).map(|t| parse_cpu_list(&t)).unwrap_or_default(),
                ))
            })
            .collect();
        numbered.sort();
        nodes = numbered.into_iter().map(|(_, cpus)| cpus).collect();
    }
    smt.sort();
    l3.sort();
    let cores = smt.len();
    smt.retain(|group| group.len() > 1);
    Json::object()
        .with("source", "sysfs")
        .with("logical_processors", online.len())
        .with("cores", cores)
        .with("sockets", sockets.len())
        .with("numa_nodes", nodes.len())
        .with("smt_groups", groups_json(smt))
        .with("l3_groups", groups_json(l3))
        .with("numa_groups", groups_json(nodes))
        .with("socket_groups", groups_json(sockets.into_values().collect()))
}

#[repr(C)]
struct Timespec {
    seconds: i64,
    nanoseconds: i64,
}

extern "C" {
    fn clock_getres(clock: i32, resolution: *mut Timespec) -> i32;
}

const CLOCK_MONOTONIC: i32 = 1;

fn monotonic_resolution_ns() -> Option<i64> {
    let mut resolution = Timespec { seconds: 0, nanoseconds: 0 };
    // SAFETY: clock_getres writes one timespec through a pointer to a live local of the C
    // layout (two 64-bit fields on x86_64 Linux).
    let status = unsafe { clock_getres(CLOCK_MONOTONIC, &mut resolution) };
    (status == 0).then(|| resolution.seconds * 1_000_000_000 + resolution.nanoseconds)
}

pub fn time() -> Json {
    let clocks = "/sys/devices/system/clocksource/clocksource0";
    let available = read_trimmed(format!("{clocks}/available_clocksource"))
        .map(|t| t.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_default();
    let epoch = std::time::Instant::now();
    Json::object()
        .with("counter", "clock_gettime(CLOCK_MONOTONIC)")
        .with("frequency_hz", Json::Null)
        .with("clocksource", read_trimmed(format!("{clocks}/current_clocksource")))
        .with("available_clocksources", available)
        .with("timer_resolution_ns", monotonic_resolution_ns())
        .with("call_cost", timing::call_cost(|| epoch.elapsed().as_nanos() as i64))
        .with("sleep_1ms", timing::sleep_one_ms(|| std::thread::sleep(std::time::Duration::from_millis(1))))
}

const IORESOURCE_IO: u64 = 0x100;
const IORESOURCE_MEM: u64 = 0x200;
const IORESOURCE_PREFETCH: u64 = 0x2000;

fn hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// The memory BARs from sysfs `resource` (one `start end flags` line per region; 0-5 are the
/// BARs, 6 the expansion ROM).
/// Each as `(index, size, prefetchable)`.
fn bars(device: &Path) -> Vec<(usize, u64, bool)> {
    let text = match fs::read_to_string(device.join("resource")) {
        Ok(text) => text,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate().take(6) {
        let fields: Vec<u64> = line.split_whitespace().filter_map(hex).collect();
        if fields.len() < 3 || (fields[0] == 0 && fields[1] == 0) || fields[2] & IORESOURCE_IO != 0 {
            continue;
        }
        if fields[2] & IORESOURCE_MEM == 0 {
            continue;
        }
        out.push((index, fields[1] - fields[0] + 1, fields[2] & IORESOURCE_PREFETCH != 0));
    }
    out
}

fn interrupt_mode(device: &Path) -> &'static str {
    let mut msi = false;
    let mut msix = false;
    if let Ok(entries) = fs::read_dir(device.join("msi_irqs")) {
        for entry in entries.filter_map(Result::ok) {
            match read_trimmed(entry.path()).as_deref() {
                Some("msix") => msix = true,
                Some("msi") => msi = true,
                _ => {}
            }
        }
    }
    if msix {
        "msix"
    } else if msi {
        "msi"
    } else if read_trimmed(device.join("irq")).and_then(|irq| irq.parse::<u32>().ok()).unwrap_or(0) != 0 {
        "line"
    } else {
        "none"
    }
}

pub fn pci() -> Json {
    let mut devices = Vec::new();
    let mut paths: Vec<_> = match fs::read_dir("/sys/bus/pci/devices") {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(_) => return Json::Array(devices),
    };
    paths.sort();
    for device in paths {
        let class = read_trimmed(device.join("class")).and_then(|c| hex(&c));
        let driver = fs::read_link(device.join("driver"))
            .ok()
            .and_then(|target| target.file_name().map(|n| n.to_string_lossy().to_string()));
        // amdgpu is the one driver that tells the card's memory size in sysfs.
        let memory = read_trimmed(device.join("mem_info_vram_total")).and_then(|m| m.parse::<u64>().ok());
        // Class 0x03: display controllers.
        let display = class.map_or(false, |c| c >> 16 == 0x03);
        let bar_list = bars(&device);
        let sizes: Vec<u64> = bar_list.iter().map(|&(_, size, _)| size).collect();
        devices.push(
            Json::object()
                .with("address", device.file_name().map(|n| n.to_string_lossy().to_string()))
                .with("vendor_id", read_trimmed(device.join("vendor")).and_then(|v| hex(&v)))
                .with("device_id", read_trimmed(device.join("device")).and_then(|v| hex(&v)))
                .with("class", class)
                .with("description", Json::Null)
                .with("driver", driver)
                .with("interrupt_mode", interrupt_mode(&device))
                .with("interrupt_source", "sysfs msi_irqs and irq")
                .with("display", display)
                .with(
                    "bars",
                    bar_list
                        .iter()
                        .map(|&(index, size, prefetchable)| {
                            Json::object()
                                .with("index", index)
                                .with("size_bytes", size)
                                .with("prefetchable", prefetchable)
                        })
                        .collect::<Vec<_>>(),
                )
                .with("memory_bytes", memory)
                .with("bar_resized", crate::pci::bar_resized(display, &sizes, memory)),
        );
    }
    Json::Array(devices)
}

pub fn page_file() -> Json {
    let entries: Vec<Json> = read_trimmed("/proc/swaps")
        .map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    (fields.len() >= 3).then(|| {
                        Json::object().with("path", fields[0]).with("size_kib", fields[2].parse::<u64>().ok())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Json::object().with("source", "/proc/swaps").with("system_managed", Json::Null).with("entries", entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,8\n"), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("5-2,x"), Vec::<u32>::new());
    }
}
