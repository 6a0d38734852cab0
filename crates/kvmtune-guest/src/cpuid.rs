//! What CPUID tells this guest: the hypervisor bit and leaves, the Hyper-V leaves bit by bit,
//! invariant TSC, x2APIC, the CPU model and the cache leaves.

#[path = "../../kvmtune/src/knowledge/hyperv_cpuid.rs"]
#[allow(dead_code)]
pub mod hyperv_cpuid;

use self::hyperv_cpuid::{
    signature_of, Register, HV_CPUID_BITS, INTERFACE_HV1, KVM_LEAVES_WITH_HYPERV, LEAF_INTERFACE,
    LEAF_LIMITS, LEAF_RECOMMENDATIONS, LEAF_VENDOR, LEAF_VERSION,
};
use crate::json::Json;

/// `[eax, ebx, ecx, edx]` of one leaf and subleaf.
fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 processor, reads no memory and changes no state; an
    // unknown leaf returns some other leaf's values, never faults.
    let r = unsafe { std::arch::x86_64::__cpuid_count(leaf, subleaf) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn leaf_json(leaf: u32, subleaf: u32, registers: [u32; 4]) -> Json {
    Json::object()
        .with("leaf", leaf)
        .with("subleaf", subleaf)
        .with("eax", registers[0])
        .with("ebx", registers[1])
        .with("ecx", registers[2])
        .with("edx", registers[3])
}

fn bit(value: u32, bit: u32) -> bool {
    value & (1 << bit) != 0
}

fn brand() -> Option<String> {
    if cpuid(0x8000_0000, 0)[0] < 0x8000_0004 {
        return None;
    }
    let mut bytes = Vec::with_capacity(48);
    for leaf in 0x8000_0002..=0x8000_0004u32 {
        for value in cpuid(leaf, 0) {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    let text = String::from_utf8_lossy(&bytes).trim_matches(|c: char| c == '\0' || c == ' ').to_string();
    Some(text)
}

/// The cache levels from leaf 4 (Intel) or 0x8000001D (AMD, with TOPOEXT).
fn caches(vendor: &str) -> (Option<u32>, Vec<Json>) {
    let leaf = if vendor == "GenuineIntel" {
        if cpuid(0, 0)[0] < 4 {
            return (None, Vec::new());
        }
        4
    } else {
        if cpuid(0x8000_0000, 0)[0] < 0x8000_001D || !bit(cpuid(0x8000_0001, 0)[2], 22) {
            return (None, Vec::new());
        }
        0x8000_001D
    };
    let mut out = Vec::new();
    for subleaf in 0..16 {
        let r = cpuid(leaf, subleaf);
        let kind = match r[0] & 0x1f {
            0 => break,
            1 => "data",
            2 => "instruction",
            3 => "unified",
            _ => "other",
        };
        let ways = u64::from(r[1] >> 22) + 1;
        let partitions = u64::from((r[1] >> 12) & 0x3ff) + 1;
        let line = u64::from(r[1] & 0xfff) + 1;
        let sets = u64::from(r[2]) + 1;
        out.push(
            Json::object()
                .with("level", (r[0] >> 5) & 7)
                .with("type", kind)
                .with("size_kib", ways * partitions * line * sets / 1024)
                .with("shared_by_logical_processors", ((r[0] >> 14) & 0xfff) + 1),
        );
    }
    (Some(leaf), out)
}

pub fn read() -> Json {
    let basic = cpuid(0, 0);
    let vendor = signature_of([0, basic[1], basic[3], basic[2]]);
    let leaf1 = cpuid(1, 0);
    let family_base = (leaf1[0] >> 8) & 0xf;
    let family = if family_base == 0xf { family_base + ((leaf1[0] >> 20) & 0xff) } else { family_base };
    let model_base = (leaf1[0] >> 4) & 0xf;
    let model = if family_base == 6 || family_base == 0xf {
        model_base | (((leaf1[0] >> 16) & 0xf) << 4)
    } else {
        model_base
    };
    let max_extended = cpuid(0x8000_0000, 0)[0];
    let invariant_tsc =
        if max_extended >= 0x8000_0007 { Some(bit(cpuid(0x8000_0007, 0)[3], 8)) } else { None };
    let hypervisor_bit = bit(leaf1[2], 31);
    let (cache_leaf, caches) = caches(&vendor);

    let mut out = Json::object()
        .with("vendor", vendor.clone())
        .with("brand", brand())
        .with("family", family)
        .with("model", model)
        .with("stepping", leaf1[0] & 0xf)
        .with("hypervisor_bit", hypervisor_bit)
        .with("x2apic", bit(leaf1[2], 21))
        .with("invariant_tsc", invariant_tsc)
        .with("cache_leaf", cache_leaf)
        .with("caches", caches);
    out = out.with("hypervisor", if hypervisor_bit { hypervisor() } else { Json::Null });
    out
}

/// Leaf 0x40000001 EAX as four characters, when it is text (`Hv#1`); KVM's own leaf
/// 0x40000001 holds feature bits there instead.
fn printable(value: u32) -> Option<String> {
    let bytes = value.to_le_bytes();
    bytes.iter().all(|b| b.is_ascii_graphic()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// The hypervisor leaves. Only read when the hypervisor bit is set: without it, leaf
/// 0x40000000 is not defined and returns another leaf's values.
fn hypervisor() -> Json {
    let vendor = cpuid(LEAF_VENDOR, 0);
    let max_leaf = vendor[0];
    let interface = cpuid(LEAF_INTERFACE, 0);
    let hyperv = interface[0] == INTERFACE_HV1;
    let mut leaves = vec![leaf_json(LEAF_VENDOR, 0, vendor), leaf_json(LEAF_INTERFACE, 0, interface)];
    let mut bits = Vec::new();
    let mut values = Json::Null;
    if hyperv && max_leaf >= LEAF_LIMITS {
        let last = max_leaf.min(0x4000_000A);
        let mut registers_of = Vec::new();
        for leaf in LEAF_VERSION..=last {
            let registers = cpuid(leaf, 0);
            leaves.push(leaf_json(leaf, 0, registers));
            registers_of.push((leaf, registers));
        }
        for b in HV_CPUID_BITS {
            if let Some((_, registers)) = registers_of.iter().find(|(leaf, _)| *leaf == b.leaf) {
                bits.push(
                    Json::object()
                        .with("leaf", b.leaf)
                        .with("register", b.register.name())
                        .with("bit", b.bit)
                        .with("name", b.name)
                        .with("set", bit(b.register.of(*registers), u32::from(b.bit)))
                        .with("qemu", b.qemu.to_vec()),
                );
            }
        }
        let version = cpuid(LEAF_VERSION, 0);
        let limits = cpuid(LEAF_LIMITS, 0);
        values = Json::object()
            .with("build", version[0])
            .with("version_major", version[1] >> 16)
            .with("version_minor", version[1] & 0xffff)
            .with("spinlock_retries", Register::Ebx.of(cpuid(LEAF_RECOMMENDATIONS, 0)))
            .with("max_virtual_processors", limits[0])
            .with("max_logical_processors", limits[1]);
    }
    // KVM moves its own leaves to 0x40000100 when the Hyper-V ones take 0x40000000.
    let kvm_high = cpuid(KVM_LEAVES_WITH_HYPERV, 0);
    let kvm_high_signature = signature_of(kvm_high);
    let kvm_leaves_at = if signature_of(vendor) == "KVMKVMKVM" {
        Some(LEAF_VENDOR)
    } else if kvm_high_signature == "KVMKVMKVM" {
        leaves.push(leaf_json(KVM_LEAVES_WITH_HYPERV, 0, kvm_high));
        Some(KVM_LEAVES_WITH_HYPERV)
    } else {
        None
    };
    Json::object()
        .with("max_leaf", max_leaf)
        .with("signature", signature_of(vendor))
        .with("interface", printable(interface[0]))
        .with("hyperv_interface", hyperv)
        .with("kvm_leaves_at", kvm_leaves_at)
        .with("hyperv", values)
        .with("hyperv_bits", bits)
        .with("leaves", leaves)
}
