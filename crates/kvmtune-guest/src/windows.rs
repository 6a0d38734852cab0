//! What a Windows guest made of its virtual hardware, through the Win32 API and the registry.
//! Every raw call sits behind a small typed wrapper here; nothing is written anywhere.
//!
//! Tested only under Wine (crates/kvmtune-cli/tests/guest_program.rs), which has no PCI
//! devices and a registry of its own: the topology, clock and OS readers run there; the PCI
//! readers (interrupts, BARs through cfgmgr32, MSI registry values), the page file and the
//! edition have not yet run on a real Windows.

use std::ffi::OsStr;
use std::os::windows::ffi::OsStrExt;

use crate::json::Json;
use crate::timing;

type Bool = i32;
type Hkey = isize;
type DevInst = u32;
/// `LOG_CONF` and `RES_DES` are `DWORD_PTR` handles.
type CmHandle = usize;

#[repr(C)]
struct OsVersionInfoW {
    size: u32,
    major: u32,
    minor: u32,
    build: u32,
    platform: u32,
    service_pack: [u16; 128],
}

#[link(name = "kernel32")]
extern "system" {
    fn GetLogicalProcessorInformationEx(relationship: u32, buffer: *mut u8, length: *mut u32) -> Bool;
    fn QueryPerformanceFrequency(frequency: *mut i64) -> Bool;
    fn QueryPerformanceCounter(count: *mut i64) -> Bool;
    fn Sleep(milliseconds: u32);
}

#[link(name = "ntdll")]
extern "system" {
    fn RtlGetVersion(info: *mut OsVersionInfoW) -> i32;
    fn NtQueryTimerResolution(coarsest: *mut u32, finest: *mut u32, current: *mut u32) -> i32;
}

#[link(name = "advapi32")]
extern "system" {
    fn RegOpenKeyExW(key: Hkey, subkey: *const u16, options: u32, access: u32, result: *mut Hkey) -> i32;
    fn RegQueryValueExW(
        key: Hkey,
        name: *const u16,
        reserved: *mut u32,
        kind: *mut u32,
        data: *mut u8,
        length: *mut u32,
    ) -> i32;
    fn RegEnumKeyExW(
        key: Hkey,
        index: u32,
        name: *mut u16,
        name_length: *mut u32,
        reserved: *mut u32,
        class: *mut u16,
        class_length: *mut u32,
        last_write: *mut u64,
    ) -> i32;
    fn RegCloseKey(key: Hkey) -> i32;
}

#[link(name = "cfgmgr32")]
extern "system" {
    fn CM_Locate_DevNodeW(devinst: *mut DevInst, device_id: *const u16, flags: u32) -> u32;
    fn CM_Get_First_Log_Conf(log_conf: *mut CmHandle, devinst: DevInst, flags: u32) -> u32;
    fn CM_Get_Next_Res_Des(
        next: *mut CmHandle,
        current: CmHandle,
        resource: u32,
        resource_id: *mut u32,
        flags: u32,
    ) -> u32;
    fn CM_Get_Res_Des_Data_Size(size: *mut u32, res_des: CmHandle, flags: u32) -> u32;
    fn CM_Get_Res_Des_Data(res_des: CmHandle, buffer: *mut u8, length: u32, flags: u32) -> u32;
    fn CM_Free_Res_Des_Handle(res_des: CmHandle) -> u32;
    fn CM_Free_Log_Conf_Handle(log_conf: CmHandle) -> u32;
}

fn wide(text: &str) -> Vec<u16> {
    OsStr::new(text).encode_wide().chain(Some(0)).collect()
}

fn from_wide(units: &[u16]) -> String {
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    String::from_utf16_lossy(&units[..end])
}

// ---- registry -------------------------------------------------------------------------------

/// HKEY_LOCAL_MACHINE: `(HKEY)(ULONG_PTR)(LONG)0x80000002`, sign-extended on 64-bit Windows.
const HKEY_LOCAL_MACHINE: Hkey = 0x8000_0002u32 as i32 as isize;
const KEY_READ: u32 = 0x2_0019;
const REG_SZ: u32 = 1;
const REG_EXPAND_SZ: u32 = 2;
const REG_DWORD: u32 = 4;
const REG_MULTI_SZ: u32 = 7;
const REG_QWORD: u32 = 11;

enum RegValue {
    Text(String),
    Texts(Vec<String>),
    Number(u64),
    Bytes(Vec<u8>),
}

/// An open registry key, closed when dropped.
struct RegKey(Hkey);

impl RegKey {
    fn open_local_machine(path: &str) -> Option<RegKey> {
        RegKey(HKEY_LOCAL_MACHINE).open_raw(path)
    }

    fn open(&self, path: &str) -> Option<RegKey> {
        self.open_raw(path)
    }

    fn open_raw(&self, path: &str) -> Option<RegKey> {
        let path = wide(path);
        let mut key: Hkey = 0;
        // SAFETY: `path` is NUL-terminated and outlives the call; `key` is a live local the
        // call writes one handle to.
        let status = unsafe { RegOpenKeyExW(self.0, path.as_ptr(), 0, KEY_READ, &mut key) };
        (status == 0).then(|| RegKey(key))
    }

    fn subkeys(&self) -> Vec<String> {
        let mut names = Vec::new();
        for index in 0.. {
            let mut name = [0u16; 512];
            let mut length = name.len() as u32;
            // SAFETY: `name` has room for `length` UTF-16 units, which the call may write, and
            // updates `length`; the optional pointers are null.
            let status = unsafe {
                RegEnumKeyExW(
                    self.0,
                    index,
                    name.as_mut_ptr(),
                    &mut length,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            if status != 0 {
                break;
            }
            names.push(from_wide(&name[..length as usize]));
        }
        names
    }

    fn value(&self, name: &str) -> Option<RegValue> {
        let name = wide(name);
        let mut kind = 0u32;
        let mut length = 0u32;
        // SAFETY: a size query: a null data pointer, `kind` and `length` live locals.
        let status = unsafe {
            RegQueryValueExW(
                self.0,
                name.as_ptr(),
                std::ptr::null_mut(),
                &mut kind,
                std::ptr::null_mut(),
                &mut length,
            )
        };
        if status != 0 {
            return None;
        }
        let mut data = vec![0u8; length as usize + 2];
        let mut length = data.len() as u32;
        // SAFETY: `data` has `length` writable bytes; the call writes at most that many.
        let status = unsafe {
            RegQueryValueExW(
                self.0,
                name.as_ptr(),
                std::ptr::null_mut(),
                &mut kind,
                data.as_mut_ptr(),
                &mut length,
            )
        };
        if status != 0 {
            return None;
        }
        data.truncate(length as usize);
        let units: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        Some(match kind {
            REG_SZ | REG_EXPAND_SZ => RegValue::Text(from_wide(&units)),
            REG_MULTI_SZ => RegValue::Texts(
                String::from_utf16_lossy(&units)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            REG_DWORD if data.len() >= 4 => {
                RegValue::Number(u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]])))
            }
            REG_QWORD if data.len() >= 8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&data[..8]);
                RegValue::Number(u64::from_le_bytes(bytes))
            }
            _ => RegValue::Bytes(data),
        })
    }

    fn text(&self, name: &str) -> Option<String> {
        match self.value(name)? {
            RegValue::Text(text) => Some(text),
            _ => None,
        }
    }

    fn number(&self, name: &str) -> Option<u64> {
        match self.value(name)? {
            RegValue::Number(n) => Some(n),
            // Some drivers write the memory size as 4 or 8 raw bytes.
            RegValue::Bytes(bytes) if bytes.len() == 4 || bytes.len() == 8 => {
                let mut padded = [0u8; 8];
                padded[..bytes.len()].copy_from_slice(&bytes);
                Some(u64::from_le_bytes(padded))
            }
            _ => None,
        }
    }
}

impl Drop for RegKey {
    fn drop(&mut self) {
        if self.0 != HKEY_LOCAL_MACHINE {
            // SAFETY: the handle came from RegOpenKeyExW and is closed once, here.
            unsafe { RegCloseKey(self.0) };
        }
    }
}

// ---- OS ---------------------------------------------------------------------------------------

pub fn os() -> Json {
    let mut info = OsVersionInfoW {
        size: std::mem::size_of::<OsVersionInfoW>() as u32,
        major: 0,
        minor: 0,
        build: 0,
        platform: 0,
        service_pack: [0; 128],
    };
    // SAFETY: `info` is a live OSVERSIONINFOW with its size member set, as the call requires.
    let status = unsafe { RtlGetVersion(&mut info) };
    let current = RegKey::open_local_machine("SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion");
    let text = |name: &str| current.as_ref().and_then(|key| key.text(name));
    let mut out = Json::object().with("family", "windows").with("name", text("ProductName"));
    if status == 0 {
        out = out.with("version", format!("{}.{}", info.major, info.minor)).with("build", info.build);
    }
    out.with("edition", text("EditionID"))
        .with("installation_type", text("InstallationType"))
        .with("display_version", text("DisplayVersion"))
}

// ---- topology ---------------------------------------------------------------------------------

const RELATION_PROCESSOR_CORE: u32 = 0;
const RELATION_NUMA_NODE: u32 = 1;
const RELATION_CACHE: u32 = 2;
const RELATION_PROCESSOR_PACKAGE: u32 = 3;
const RELATION_ALL: u32 = 0xffff;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?, *bytes.get(at + 2)?, *bytes.get(at + 3)?]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let mut value = [0u8; 8];
    value.copy_from_slice(bytes.get(at..at + 8)?);
    Some(u64::from_le_bytes(value))
}

/// The logical processors of `count` GROUP_AFFINITY records (a 64-bit mask, a group number,
/// padding: 16 bytes each) starting at `at`. Windows before 10 wrote a zero count and one record.
fn processors(body: &[u8], count_at: usize, masks_at: usize) -> Vec<u32> {
    let count = u16_at(body, count_at).unwrap_or(0).max(1) as usize;
    let mut cpus = Vec::new();
    for record in 0..count {
        let at = masks_at + record * 16;
        let (mask, group) = match (u64_at(body, at), u16_at(body, at + 8)) {
            (Some(mask), Some(group)) => (mask, u32::from(group)),
            _ => break,
        };
        cpus.extend((0..64).filter(|bit| mask & (1 << bit) != 0).map(|bit| group * 64 + bit));
    }
    cpus
}

fn groups_json(mut groups: Vec<Vec<u32>>) -> Json {
    groups.sort();
    groups.dedup();
    Json::Array(groups.into_iter().map(Json::from).collect())
}

pub fn topology() -> Json {
    let mut length = 0u32;
    // SAFETY: a size query: a null buffer and a live length the call writes.
    unsafe { GetLogicalProcessorInformationEx(RELATION_ALL, std::ptr::null_mut(), &mut length) };
    let mut buffer = vec![0u8; length as usize];
    // SAFETY: `buffer` has `length` writable bytes, the size the call asked for.
    let ok = unsafe { GetLogicalProcessorInformationEx(RELATION_ALL, buffer.as_mut_ptr(), &mut length) };
    if ok == 0 || length == 0 {
        return Json::object()
            .with("source", "GetLogicalProcessorInformationEx")
            .with("error", "the call failed");
    }
    buffer.truncate(length as usize);
    let (mut cores, mut smt, mut l3, mut nodes, mut packages) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0usize;
    // Each record: Relationship (u32), Size (u32), then the relationship's own structure.
    while let (Some(relationship), Some(size)) = (u32_at(&buffer, offset), u32_at(&buffer, offset + 4)) {
        let size = size as usize;
        if size < 8 || offset + size > buffer.len() {
            break;
        }
        let body = &buffer[offset + 8..offset + size];
        match relationship {
            // PROCESSOR_RELATIONSHIP: Flags (LTP_PC_SMT = 1), EfficiencyClass, 20 reserved, GroupCount at 22, masks at 24.
            RELATION_PROCESSOR_CORE => {
                let cpus = processors(body, 22, 24);
                if body.first().copied().unwrap_or(0) & 1 != 0 || cpus.len() > 1 {
                    smt.push(cpus.clone());
                }
                cores.push(cpus);
            }
            RELATION_PROCESSOR_PACKAGE => packages.push(processors(body, 22, 24)),
            // NUMA_NODE_RELATIONSHIP: NodeNumber, 18 reserved, GroupCount at 22, masks at 24.
            RELATION_NUMA_NODE => nodes.push(processors(body, 22, 24)),
            // CACHE_RELATIONSHIP: Level at 0, ..., GroupCount at 30, masks at 32.
            RELATION_CACHE if body.first() == Some(&3) => l3.push(processors(body, 30, 32)),
            _ => {}
        }
        offset += size;
    }
    let logical: usize = cores.iter().map(Vec::len).sum();
    Json::object()
        .with("source", "GetLogicalProcessorInformationEx")
        .with("logical_processors", logical)
        .with("cores", cores.len())
        .with("sockets", packages.len())
        .with("numa_nodes", nodes.len())
        .with("smt_groups", groups_json(cores.into_iter().filter(|c| c.len() > 1).chain(smt).collect()))
        .with("l3_groups", groups_json(l3))
        .with("numa_groups", groups_json(nodes))
        .with("socket_groups", groups_json(packages))
}

// ---- time -------------------------------------------------------------------------------------

fn counter() -> i64 {
    let mut count = 0i64;
    // SAFETY: writes one i64 to a live local; cannot fail on Windows XP and later.
    unsafe { QueryPerformanceCounter(&mut count) };
    count
}

pub fn time() -> Json {
    let mut frequency = 0i64;
    // SAFETY: writes one i64 to a live local.
    let frequency_ok = unsafe { QueryPerformanceFrequency(&mut frequency) } != 0;
    let (mut coarsest, mut finest, mut current) = (0u32, 0u32, 0u32);
    // SAFETY: writes three u32 (100 ns units) to live locals.
    let resolution_ok = unsafe { NtQueryTimerResolution(&mut coarsest, &mut finest, &mut current) } == 0;
    Json::object()
        .with("counter", "QueryPerformanceCounter")
        .with("frequency_hz", if frequency_ok { Some(frequency) } else { None })
        .with("clocksource", Json::Null)
        .with("available_clocksources", Vec::<String>::new())
        .with("timer_resolution_ns", if resolution_ok { Some(u64::from(current) * 100) } else { None })
        .with("call_cost", timing::call_cost(counter))
        .with(
            "sleep_1ms",
            timing::sleep_one_ms(|| {
                // SAFETY: Sleep takes a plain count of milliseconds.
                unsafe { Sleep(1) }
            }),
        )
}

// ---- PCI devices ------------------------------------------------------------------------------

const CR_SUCCESS: u32 = 0;
const ALLOC_LOG_CONF: u32 = 2;
const RES_TYPE_MEM: u32 = 1;
const RES_TYPE_IRQ: u32 = 4;
const RES_TYPE_MEM_LARGE: u32 = 7;

/// The resource descriptors of one type in a device's allocated configuration, as raw bytes.
fn allocated(devinst: DevInst, resource: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut log_conf: CmHandle = 0;
    // SAFETY: writes one handle to a live local.
    if unsafe { CM_Get_First_Log_Conf(&mut log_conf, devinst, ALLOC_LOG_CONF) } != CR_SUCCESS {
        return out;
    }
    let mut current = log_conf;
    loop {
        let mut next: CmHandle = 0;
        // SAFETY: `current` is the log conf or a descriptor handle from the previous call;
        // `next` a live local; the resource id pointer may be null.
        if unsafe { CM_Get_Next_Res_Des(&mut next, current, resource, std::ptr::null_mut(), 0) } != CR_SUCCESS
        {
            break;
        }
        if current != log_conf {
            // SAFETY: a descriptor handle from CM_Get_Next_Res_Des, freed once.
            unsafe { CM_Free_Res_Des_Handle(current) };
        }
        current = next;
        let mut size = 0u32;
        // SAFETY: writes one u32 to a live local.
        if unsafe { CM_Get_Res_Des_Data_Size(&mut size, current, 0) } == CR_SUCCESS && size > 0 {
            let mut data = vec![0u8; size as usize];
            // SAFETY: `data` has `size` writable bytes, the size the previous call gave.
            if unsafe { CM_Get_Res_Des_Data(current, data.as_mut_ptr(), size, 0) } == CR_SUCCESS {
                out.push(data);
            }
        }
    }
    if current != log_conf {
        // SAFETY: the last descriptor handle, freed once.
        unsafe { CM_Free_Res_Des_Handle(current) };
    }
    // SAFETY: the log conf handle from CM_Get_First_Log_Conf, freed once.
    unsafe { CM_Free_Log_Conf_Handle(log_conf) };
    out
}

fn present(instance_id: &str) -> Option<DevInst> {
    let id = wide(instance_id);
    let mut devinst: DevInst = 0;
    // SAFETY: `id` is NUL-terminated; `devinst` a live local. Flag 0 finds present devices only.
    (unsafe { CM_Locate_DevNodeW(&mut devinst, id.as_ptr(), 0) } == CR_SUCCESS).then(|| devinst)
}

fn hex_after(text: &str, marker: &str, digits: usize) -> Option<u64> {
    let at = text.find(marker)? + marker.len();
    u64::from_str_radix(text.get(at..at + digits)?, 16).ok()
}

pub fn pci() -> Json {
    let mut devices = Vec::new();
    let enumerated = match RegKey::open_local_machine("SYSTEM\\CurrentControlSet\\Enum\\PCI") {
        Some(key) => key,
        None => return Json::Array(devices),
    };
    for hardware_id in enumerated.subkeys() {
        let hardware = match enumerated.open(&hardware_id) {
            Some(key) => key,
            None => continue,
        };
        for instance in hardware.subkeys() {
            let instance_id = format!("PCI\\{hardware_id}\\{instance}");
            let devinst = match present(&instance_id) {
                Some(devinst) => devinst,
                None => continue,
            };
            let key = match hardware.open(&instance) {
                Some(key) => key,
                None => continue,
            };
            // "@oem12.inf,%desc%;NVIDIA GeForce RTX 3080": the text after the last ';'.
            let description = key.text("DeviceDesc").map(|d| d.rsplit(';').next().unwrap_or("").to_string());
            let msi = key.open("Device Parameters\\Interrupt Management\\MessageSignaledInterruptProperties");
            let msi_supported = msi.as_ref().and_then(|k| k.number("MSISupported"));
            let message_limit = msi.as_ref().and_then(|k| k.number("MessageNumberLimit"));
            // IRQ_DES: Count, Type, Flags, then the allocated number at 12; message-signaled
            // interrupts are allocated numbers at and above 0x80000000 (negative as shown by
            // Device Manager).
            let irqs: Vec<u32> =
                allocated(devinst, RES_TYPE_IRQ).iter().filter_map(|d| u32_at(d, 12)).collect();
            let (mode, source) = if irqs.iter().any(|&n| n >= 0x8000_0000) {
                ("msi", "assigned resources")
            } else if !irqs.is_empty() {
                ("line", "assigned resources")
            } else {
                match msi_supported {
                    Some(1) => ("msi", "registry MSISupported"),
                    Some(_) => ("line", "registry MSISupported"),
                    None => ("unknown", "no assigned interrupt, no MSI registry values"),
                }
            };
            // MEM_DES and MEM_LARGE_DES: Count, Type, then the allocated base at 8 and end at 16.
            let sizes: Vec<u64> = allocated(devinst, RES_TYPE_MEM)
                .into_iter()
                .chain(allocated(devinst, RES_TYPE_MEM_LARGE))
                .filter_map(|data| {
                    let (base, end) = (u64_at(&data, 8)?, u64_at(&data, 16)?);
                    (end > base).then(|| end - base + 1)
                })
                .collect();
            let bars: Vec<Json> = sizes
                .iter()
                .enumerate()
                .map(|(index, &size)| {
                    Json::object()
                        .with("index", index)
                        .with("size_bytes", size)
                        .with("prefetchable", Json::Null)
                })
                .collect();
            let display = key.text("Class").as_deref() == Some("Display");
            let memory = key
                .text("Driver")
                .and_then(|driver| {
                    RegKey::open_local_machine(&format!(
                        "SYSTEM\\CurrentControlSet\\Control\\Class\\{driver}"
                    ))
                })
                .and_then(|class| {
                    class
                        .number("HardwareInformation.qwMemorySize")
                        .or_else(|| class.number("HardwareInformation.MemorySize"))
                });
            devices.push(
                Json::object()
                    .with("address", instance_id.clone())
                    .with("vendor_id", hex_after(&hardware_id, "VEN_", 4))
                    .with("device_id", hex_after(&hardware_id, "DEV_", 4))
                    .with("class", hex_after(&hardware_id, "CC_", 6))
                    .with("description", description)
                    .with("driver", key.text("Service"))
                    .with("interrupt_mode", mode)
                    .with("interrupt_source", source)
                    .with("msi_supported", msi_supported)
                    .with("msi_message_limit", message_limit)
                    .with("display", display)
                    .with("bars", bars)
                    .with("memory_bytes", memory)
                    .with("bar_resized", crate::pci::bar_resized(display, &sizes, memory)),
            );
        }
    }
    Json::Array(devices)
}

// ---- page file --------------------------------------------------------------------------------

pub fn page_file() -> Json {
    let key =
        RegKey::open_local_machine("SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Memory Management");
    let entries: Vec<String> = match key.as_ref().and_then(|k| k.value("PagingFiles")) {
        Some(RegValue::Texts(entries)) => entries,
        Some(RegValue::Text(entry)) if !entry.is_empty() => vec![entry],
        _ => Vec::new(),
    };
    // "?:\pagefile.sys" (every drive, system managed), "C:\pagefile.sys 0 0" (system managed
    // size) or "C:\pagefile.sys 4096 8192" (initial and maximum MiB).
    let system_managed = !entries.is_empty()
        && entries.iter().all(|e| {
            let fields: Vec<&str> = e.split_whitespace().collect();
            e.starts_with("?:")
                || fields.len() == 1
                || (fields.len() == 3 && fields[1] == "0" && fields[2] == "0")
        });
    let parsed: Vec<Json> = entries
        .iter()
        .map(|e| {
            let fields: Vec<&str> = e.split_whitespace().collect();
            Json::object()
                .with("path", fields.first().copied().unwrap_or(""))
                .with("initial_mib", fields.get(1).and_then(|f| f.parse::<u64>().ok()))
                .with("maximum_mib", fields.get(2).and_then(|f| f.parse::<u64>().ok()))
        })
        .collect();
    Json::object()
        .with("source", "registry PagingFiles")
        .with("system_managed", if entries.is_empty() { None } else { Some(system_managed) })
        .with("entries", parsed)
}
