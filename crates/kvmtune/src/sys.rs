//! The only module with `unsafe` code: the KVM ioctls the probe needs, the tracepoint
//! counters the exit recorder opens with `perf_event_open`, `sched_setaffinity` for the host
//! changes that move kernel threads ([`set_thread_affinity`]), stopping a program that overran
//! its deadline ([`kill_process_group`]), the user this process acts as ([`effective_uid`]),
//! and the journal's test failpoint
//! ([`die_by_sigkill`]).
//!
//! Why raw ioctls and not kvm-ioctls: that crate (0.25) has no wrapper for
//! `KVM_GET_SUPPORTED_HV_CPUID`, the one call that tells which Hyper-V enlightenments this
//! kernel can give a Windows guest, and the probe needs little else from it (the CPUID KVM
//! supports, and whether a vCPU takes the IA32_ARCH_CAPABILITIES KVM offers). Nine ioctls on
//! plain file descriptors are easier to audit here than a dependency tree.
//!
//! Each kind of KVM fd is its own type ([`KvmSystem`], [`KvmVm`], [`KvmVcpu`], as kvm-ioctls
//! has them), and each ioctl is a method of the types whose fd accepts it, so the SAFETY
//! comments below hold by construction. The module is private to the crate.
//!
//! Request numbers follow `_IO`/`_IOWR` from include/uapi/asm-generic/ioctl.h with KVMIO = 0xAE
//! (include/uapi/linux/kvm.h).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::knowledge::kvm_api::CpuidEntry;

const KVMIO: u64 = 0xAE;

const fn io(nr: u64) -> u64 {
    (KVMIO << 8) | nr
}

const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (KVMIO << 8) | nr
}

const fn iow(nr: u64, size: u64) -> u64 {
    (1 << 30) | (size << 16) | (KVMIO << 8) | nr
}

const KVM_GET_API_VERSION: u64 = io(0x00);
const KVM_CREATE_VM: u64 = io(0x01);
const KVM_CHECK_EXTENSION: u64 = io(0x03);
const KVM_CREATE_VCPU: u64 = io(0x41);
/// The size field is that of the fixed part of `struct kvm_cpuid2` (nent + padding).
const KVM_GET_SUPPORTED_HV_CPUID: u64 = iowr(0xC1, 8);
const KVM_GET_SUPPORTED_CPUID: u64 = iowr(0x05, 8);
/// The size fields are those of the fixed parts of `struct kvm_msrs` (nmsrs + pad) and
/// `struct kvm_cpuid2` (nent + padding).
const KVM_GET_MSRS: u64 = iowr(0x88, 8);
const KVM_SET_MSRS: u64 = iow(0x89, 8);
const KVM_SET_CPUID2: u64 = iow(0x90, 8);
/// `kvm_cpuid_entry2.flags`: the entry holds for its `index` only (include/uapi/asm/kvm.h).
const KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1;
/// The CPUID functions whose index (ECX) selects a subleaf, which KVM wants flagged
/// (`cpuid_function_is_indexed`, arch/x86/include/asm/cpuid.h in Linux 6.x).
const INDEXED_CPUID_FUNCTIONS: &[u32] =
    &[0x4, 0x7, 0xb, 0xd, 0xf, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1d, 0x1e, 0x1f, 0x24, 0x8000_001d];

/// `struct kvm_cpuid_entry2` is ten u32: function, index, flags, eax, ebx, ecx, edx, padding[3].
const ENTRY_WORDS: usize = 10;
/// KVM reports about ten Hyper-V leaves today; QEMU starts its own probe at 11 entries. Grow
/// on E2BIG up to a bound so that a misbehaving kernel cannot make us allocate without end.
const FIRST_ENTRY_COUNT: usize = 16;
const MAX_ENTRY_COUNT: usize = 1024;

/// An ioctl whose argument is an integer passed by value. Private: only the typed handles below
/// call it, each with a request that the kind of fd it holds accepts.
fn ioctl_with_arg(fd: &impl AsRawFd, request: u64, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: every request passed here (API_VERSION, CREATE_VM, CHECK_EXTENSION, CREATE_VCPU,
    // PERF_EVENT_IOC_ENABLE) takes an integer argument by value, so the kernel reads no user
    // memory; the fd is open for the lifetime of the borrow.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

fn owned_fd(raw: i32) -> OwnedFd {
    // SAFETY: `raw` was just returned by a successful KVM_CREATE_VM/KVM_CREATE_VCPU ioctl, which
    // hands the caller a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// The KVM system fd: `/dev/kvm` itself. Only system ioctls are defined on it, so a VM or vCPU
/// ioctl cannot be sent to the wrong kind of fd.
pub struct KvmSystem(File);

/// A VM fd, from [`KvmSystem::create_vm`].
pub struct KvmVm(OwnedFd);

/// A vCPU fd, from [`KvmVm::create_vcpu`].
pub struct KvmVcpu(OwnedFd);

impl KvmSystem {
    /// Opens the KVM device (normally `/dev/kvm`) read-write, as every KVM ioctl needs.
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        std::fs::OpenOptions::new().read(true).write(true).open(path).map(KvmSystem)
    }

    /// `KVM_GET_API_VERSION`: 12 on every kernel since 2.6.22.
    pub fn api_version(&self) -> io::Result<i32> {
        ioctl_with_arg(&self.0, KVM_GET_API_VERSION, 0)
    }

    /// `KVM_CHECK_EXTENSION`: 0 when absent, otherwise the capability's value (often 1,
    /// sometimes a count or a bit mask).
    pub fn check_extension(&self, capability: u32) -> io::Result<i32> {
        ioctl_with_arg(&self.0, KVM_CHECK_EXTENSION, libc::c_ulong::from(capability))
    }

    /// `KVM_CREATE_VM` with the default machine type.
    pub fn create_vm(&self) -> io::Result<KvmVm> {
        ioctl_with_arg(&self.0, KVM_CREATE_VM, 0).map(|raw| KvmVm(owned_fd(raw)))
    }

    /// `KVM_GET_SUPPORTED_HV_CPUID` on the system fd (KVM_CAP_SYS_HYPERV_CPUID, Linux 5.11+).
    /// Kernels without Hyper-V emulation answer EINVAL or ENOTTY.
    pub fn supported_hv_cpuid(&self) -> io::Result<Vec<CpuidEntry>> {
        cpuid2_query(&self.0, KVM_GET_SUPPORTED_HV_CPUID)
    }

    /// `KVM_GET_SUPPORTED_CPUID` (system fd only): the CPUID bits KVM can give a guest on this
    /// host, what `-cpu host` passes.
    pub fn supported_cpuid(&self) -> io::Result<Vec<CpuidEntry>> {
        cpuid2_query(&self.0, KVM_GET_SUPPORTED_CPUID)
    }

    /// `KVM_GET_MSRS` on the system fd (KVM_CAP_GET_MSR_FEATURES): the value KVM offers guests
    /// for a feature MSR such as IA32_ARCH_CAPABILITIES, what `-cpu host` then sets on each
    /// vCPU; `None` where KVM has no such feature MSR.
    pub fn feature_msr(&self, index: u32) -> io::Result<Option<u64>> {
        let mut msrs = OneMsr::new(index, 0);
        msr_ioctl(&self.0, KVM_GET_MSRS, &mut msrs).map(|read| (read == 1).then_some(msrs.data))
    }
}

impl KvmVm {
    /// `KVM_CREATE_VCPU` with this vCPU id.
    pub fn create_vcpu(&self, id: u32) -> io::Result<KvmVcpu> {
        ioctl_with_arg(&self.0, KVM_CREATE_VCPU, libc::c_ulong::from(id)).map(|raw| KvmVcpu(owned_fd(raw)))
    }
}

impl KvmVcpu {
    /// `KVM_GET_SUPPORTED_HV_CPUID` on a vCPU fd (KVM_CAP_HYPERV_CPUID, Linux 5.0-5.10 answer
    /// only here).
    pub fn supported_hv_cpuid(&self) -> io::Result<Vec<CpuidEntry>> {
        cpuid2_query(&self.0, KVM_GET_SUPPORTED_HV_CPUID)
    }

    /// `KVM_SET_CPUID2`: the CPUID this vCPU's guest will see; entries of indexed functions
    /// hold for their own index only.
    pub fn set_cpuid(&self, entries: &[CpuidEntry]) -> io::Result<()> {
        let mut buffer = vec![0u32; 2 + entries.len() * ENTRY_WORDS];
        buffer[0] = u32::try_from(entries.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        for (i, e) in entries.iter().enumerate() {
            let words = &mut buffer[2 + i * ENTRY_WORDS..2 + (i + 1) * ENTRY_WORDS];
            let flags = if INDEXED_CPUID_FUNCTIONS.contains(&e.function) {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            };
            words[..7].copy_from_slice(&[e.function, e.index, flags, e.eax, e.ebx, e.ecx, e.edx]);
        }
        // SAFETY: `buffer` is a live, 4-byte-aligned allocation laid out as struct kvm_cpuid2
        // { u32 nent; u32 padding; struct kvm_cpuid_entry2 entries[nent]; } holding exactly
        // `nent` entries; KVM_SET_CPUID2 only reads it, and nothing else aliases it.
        let result =
            unsafe { libc::ioctl(self.0.as_raw_fd(), KVM_SET_CPUID2 as libc::Ioctl, buffer.as_ptr()) };
        if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// `KVM_SET_MSRS` of one MSR, as userspace (host-initiated): whether KVM took the value.
    pub fn set_msr(&self, index: u32, value: u64) -> io::Result<bool> {
        let mut msrs = OneMsr::new(index, value);
        msr_ioctl(&self.0, KVM_SET_MSRS, &mut msrs).map(|written| written == 1)
    }
}

/// `struct kvm_msrs` with room for one `struct kvm_msr_entry` (include/uapi/asm/kvm.h).
#[repr(C)]
struct OneMsr {
    nmsrs: u32,
    pad: u32,
    index: u32,
    reserved: u32,
    data: u64,
}

impl OneMsr {
    fn new(index: u32, data: u64) -> Self {
        OneMsr { nmsrs: 1, pad: 0, index, reserved: 0, data }
    }
}

/// `KVM_GET_MSRS`/`KVM_SET_MSRS` with one entry; the kernel answers how many it read or wrote.
/// Private, reached through the fd types that accept each.
fn msr_ioctl(fd: &impl AsRawFd, request: u64, msrs: &mut OneMsr) -> io::Result<i32> {
    // SAFETY: `msrs` is a live, exclusively borrowed `#[repr(C)]` struct laid out as struct
    // kvm_msrs { u32 nmsrs; u32 pad; struct kvm_msr_entry entries[1]; } with nmsrs = 1; the
    // kernel reads at most that one entry and (for KVM_GET_MSRS) writes only its data.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, std::ptr::from_mut(msrs)) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

/// An ioctl that fills a `struct kvm_cpuid2` (`KVM_GET_SUPPORTED_HV_CPUID`,
/// `KVM_GET_SUPPORTED_CPUID`); private, reached through the fd types that accept each.
fn cpuid2_query(fd: &impl AsRawFd, request: u64) -> io::Result<Vec<CpuidEntry>> {
    let mut capacity = FIRST_ENTRY_COUNT;
    loop {
        // u32 words keep the buffer aligned for the struct's u32 fields.
        let mut buffer = vec![0u32; 2 + capacity * ENTRY_WORDS];
        buffer[0] = u32::try_from(capacity).unwrap_or(u32::MAX);
        // SAFETY: `buffer` is a live, writable, 4-byte-aligned allocation laid out as struct
        // kvm_cpuid2 { u32 nent; u32 padding; struct kvm_cpuid_entry2 entries[nent]; } with
        // room for exactly `nent` entries; the kernel writes at most `nent` entries and updates
        // `nent`, and nothing else aliases the buffer during the call.
        let result = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, buffer.as_mut_ptr()) };
        if result < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::E2BIG) && capacity < MAX_ENTRY_COUNT {
                capacity *= 4;
                continue;
            }
            return Err(error);
        }
        let returned = (buffer[0] as usize).min(capacity);
        return Ok((0..returned)
            .map(|i| {
                let e = &buffer[2 + i * ENTRY_WORDS..2 + (i + 1) * ENTRY_WORDS];
                CpuidEntry { function: e[0], index: e[1], eax: e[3], ebx: e[4], ecx: e[5], edx: e[6] }
            })
            .collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_goes_up_to_the_hard_limit() {
        let raised = raise_open_file_limit().unwrap();
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit(2) writes one `rlimit` into `now`, which lives for the call.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!((now.rlim_cur, raised), (now.rlim_max, now.rlim_max));
    }

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        // Values as computed in ../shared/knowledge.md section 4a and test-environment.md.
        assert_eq!(KVM_GET_SUPPORTED_HV_CPUID, 0xC008_AEC1);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xC008_AE05);
        assert_eq!(KVM_CHECK_EXTENSION, 0xAE03);
        assert_eq!(KVM_CREATE_VCPU, 0xAE41);
        assert_eq!(KVM_GET_MSRS, 0xC008_AE88);
        assert_eq!(KVM_SET_MSRS, 0x4008_AE89);
        assert_eq!(KVM_SET_CPUID2, 0x4008_AE90);
        assert_eq!(std::mem::size_of::<OneMsr>(), 24);
    }
}

/// `struct perf_event_attr` up to `config1`: PERF_ATTR_SIZE_VER0 (64 bytes), which every
/// kernel since 2.6.31 accepts (include/uapi/linux/perf_event.h).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttrVer0 {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// Bit 0 is `disabled`: the counter starts stopped so that its filter is in place before
    /// it counts anything.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IO('$', 0)` and `_IOW('$', 6, char *)` from include/uapi/linux/perf_event.h.
const PERF_EVENT_IOC_ENABLE: u64 = 0x2400;
const PERF_EVENT_IOC_SET_FILTER: u64 = 0x4008_2406;

/// A kernel-side counter of one tracepoint in one thread: the kernel adds one per event and
/// nothing is copied to userspace until [`TracepointCounter::read`], so counting costs the
/// traced thread almost nothing (this is what `perf stat -e kvm:...` uses).
pub struct TracepointCounter {
    fd: OwnedFd,
}

impl TracepointCounter {
    /// `tracepoint_id` is the number in tracefs `events/<system>/<event>/id`; `filter` is a
    /// tracefs filter expression over the event's fields (`reason == 2`).
    pub fn open(tracepoint_id: u64, thread_id: i32, filter: Option<&str>) -> io::Result<Self> {
        let attr = PerfEventAttrVer0 {
            kind: PERF_TYPE_TRACEPOINT,
            size: std::mem::size_of::<PerfEventAttrVer0>() as u32,
            config: tracepoint_id,
            flags: 1,
            ..Default::default()
        };
        // SAFETY: `attr` is a valid, initialised perf_event_attr of the size its `size` field
        // declares and outlives the call; pid is a thread id, cpu -1 means any CPU, group_fd -1
        // means no group. The kernel only reads `attr`.
        let raw = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttrVer0,
                thread_id as libc::c_long,
                -1 as libc::c_long,
                -1 as libc::c_long,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a successful perf_event_open returns a new file descriptor that nothing else
        // owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        if let Some(filter) = filter {
            let filter = std::ffi::CString::new(filter)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter contains NUL"))?;
            // SAFETY: SET_FILTER reads a NUL-terminated string; `filter` owns one and lives
            // until the call returns.
            let result = unsafe {
                libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_SET_FILTER as libc::Ioctl, filter.as_ptr())
            };
            if result < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        ioctl_with_arg(&fd, PERF_EVENT_IOC_ENABLE, 0)?;
        Ok(Self { fd })
    }

    /// Events counted since the counter was opened.
    pub fn read(&self) -> io::Result<u64> {
        let mut value = [0u8; 8];
        // SAFETY: `value` is 8 writable bytes, the size of the u64 a counter without
        // read_format flags returns; the fd is open while `self` lives.
        let read = unsafe { libc::read(self.fd.as_raw_fd(), value.as_mut_ptr().cast(), value.len()) };
        if read != 8 {
            return Err(if read < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::new(io::ErrorKind::UnexpectedEof, "short read from a perf counter")
            });
        }
        Ok(u64::from_ne_bytes(value))
    }
}

/// Ends this process with SIGKILL, as `kill -9` from outside would: no destructors, no buffered
/// output flushed, no atexit handlers. The journal's crash tests use it to stop at an exact step.
pub fn die_by_sigkill() -> ! {
    // SAFETY: raise(3) takes a signal number and touches no memory of ours; SIGKILL cannot be
    // caught, so the process ends inside this call.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
    unreachable!("SIGKILL cannot be caught")
}

/// Sets the CPUs thread `tid` may run on (`sched_setaffinity(2)`). ESRCH when the thread is gone,
/// EINVAL when the set holds no online CPU or the thread refuses (`PF_NO_SETAFFINITY`).
pub fn set_thread_affinity(tid: u32, cpus: &crate::values::CpuSet) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let capacity = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for cpu in cpus.iter() {
        let cpu = cpu as usize;
        if cpu >= capacity {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {cpu} is beyond cpu_set_t"),
            ));
        }
        // SAFETY: `cpu` is below the set's capacity (checked above), so CPU_SET stays inside it.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    let tid = libc::pid_t::try_from(tid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: `set` is a valid cpu_set_t of the size passed; the kernel only reads it.
    let result = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Sends SIGKILL to every process of the group that `leader` leads: a child spawned with
/// `process_group(0)` and not yet reaped, so that its group id is still its own and cannot have
/// been given to another process. [`crate::host::command`] stops a program that overran its
/// deadline this way, with whatever it started (virsh's ssh for a remote URI).
pub fn kill_process_group(leader: &std::process::Child) -> io::Result<()> {
    let group = libc::pid_t::try_from(leader.id()).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a negative pid names
    // the process group, which the unreaped leader keeps from being reused.
    let result = unsafe { libc::kill(-group, libc::SIGKILL) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The user this process acts as (`geteuid(2)`): the owner every file root's instructions live
/// in must have.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes nothing, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Raises this process's soft limit of open files to its hard limit. The recorder holds one
/// perf event per tracepoint row and vCPU (about twenty rows), which passes the usual soft
/// limit of 1024 from about 48 vCPUs; the hard limit (524288 under systemd) is meant to be
/// reached this way (systemd.exec(5), LimitNOFILE=). Returns the limit now in force.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit(2) writes one `rlimit` into the value `limit` points at, which lives
    // for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit(2) reads one `rlimit` from `raised`, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Has the program `command` starts killed with SIGKILL when the thread that spawns it ends
/// (`prctl(PR_SET_PDEATHSIG)`), so that a VM an experiment started cannot outlive a kvmtune
/// ended by `kill -9`. The setting survives the `exec` of a variant script and its own `exec`
/// of QEMU; it is cleared only by a set-user-id exec.
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // Read before the fork: the parent may already be gone when the child checks (below).
    // SAFETY: getpid(2) takes nothing and touches no memory of ours.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: prctl(2), getppid(2) and kill(2) are system calls that allocate nothing
    // and take no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent ended before the prctl took effect: no signal will come.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
}
