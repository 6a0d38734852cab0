//! The report for a person reading it in the guest.

use std::fmt::Write;

use crate::json::Json;

fn get<'a>(value: &'a Json, path: &[&str]) -> Option<&'a Json> {
    let mut current = value;
    for key in path {
        match current {
            Json::Object(members) => current = &members.iter().find(|(k, _)| k == key)?.1,
            _ => return None,
        }
    }
    Some(current)
}

fn show(value: Option<&Json>) -> String {
    match value {
        None | Some(Json::Null) => "unknown".to_string(),
        Some(Json::Bool(b)) => if *b { "yes" } else { "no" }.to_string(),
        Some(Json::Int(n)) => n.to_string(),
        Some(Json::Float(f)) => format!("{f}"),
        Some(Json::Str(s)) => s.clone(),
        Some(Json::Array(items)) => {
            let parts: Vec<String> = items.iter().map(|item| show(Some(item))).collect();
            format!("[{}]", parts.join(" "))
        }
        Some(Json::Object(_)) => "{..}".to_string(),
    }
}

pub fn render(report: &Json, out: &mut String) {
    let line = |out: &mut String, label: &str, value: String| {
        let _ = writeln!(out, "{label:<28}{value}");
    };
    line(
        out,
        "OS",
        format!("{} ({})", show(get(report, &["os", "name"])), show(get(report, &["os", "family"]))),
    );
    line(out, "CPU", show(get(report, &["cpuid", "brand"])));
    line(out, "hypervisor bit", show(get(report, &["cpuid", "hypervisor_bit"])));
    line(out, "hypervisor signature", show(get(report, &["cpuid", "hypervisor", "signature"])));
    line(out, "Hyper-V interface (Hv#1)", show(get(report, &["cpuid", "hypervisor", "hyperv_interface"])));
    line(out, "invariant TSC", show(get(report, &["cpuid", "invariant_tsc"])));
    line(out, "x2APIC", show(get(report, &["cpuid", "x2apic"])));
    if let Some(Json::Array(bits)) = get(report, &["cpuid", "hypervisor", "hyperv_bits"])
        .filter(|b| !matches!(b, Json::Array(v) if v.is_empty()))
    {
        let _ = writeln!(out, "\nHyper-V CPUID bits (leaf.register[bit] name = set, QEMU property):");
        for bit in bits {
            let _ = writeln!(
                out,
                "  {:#010x}.{}[{:>2}] {:<48} {:<3} {}",
                match get(bit, &["leaf"]) {
                    Some(Json::Int(n)) => *n as u64,
                    _ => 0,
                },
                show(get(bit, &["register"])),
                show(get(bit, &["bit"])),
                show(get(bit, &["name"])),
                show(get(bit, &["set"])),
                show(get(bit, &["qemu"])),
            );
        }
    }
    let _ = writeln!(out);
    for (label, key) in [
        ("logical processors", "logical_processors"),
        ("cores", "cores"),
        ("sockets", "sockets"),
        ("NUMA nodes", "numa_nodes"),
        ("SMT groups", "smt_groups"),
        ("L3 groups", "l3_groups"),
    ] {
        line(out, label, show(get(report, &["topology", key])));
    }
    let _ = writeln!(out);
    line(out, "counter", show(get(report, &["time", "counter"])));
    line(out, "counter frequency (Hz)", show(get(report, &["time", "frequency_hz"])));
    line(out, "clocksource", show(get(report, &["time", "clocksource"])));
    line(out, "one read (median ns)", show(get(report, &["time", "call_cost", "median_ns"])));
    line(out, "sleep 1 ms (median us)", show(get(report, &["time", "sleep_1ms", "median_us"])));
    if let Some(Json::Array(devices)) = get(report, &["pci"]) {
        let _ = writeln!(out, "\nPCI devices (interrupt mode, largest memory BAR):");
        for device in devices {
            let largest = match get(device, &["bars"]) {
                Some(Json::Array(bars)) => bars
                    .iter()
                    .filter_map(|bar| match get(bar, &["size_bytes"]) {
                        Some(Json::Int(n)) => Some(*n),
                        _ => None,
                    })
                    .max(),
                _ => None,
            };
            let _ = writeln!(
                out,
                "  {:<40} {:<6} {}",
                show(get(device, &["address"])),
                show(get(device, &["interrupt_mode"])),
                largest
                    .map(|n| if n >= 1 << 20 {
                        format!("{} MiB", n >> 20)
                    } else {
                        format!("{} KiB", n >> 10)
                    })
                    .unwrap_or_else(|| "-".to_string())
            );
        }
    }
    let _ = writeln!(out);
    line(out, "collected in (ms)", show(get(report, &["collected_in_ms"])));
}
