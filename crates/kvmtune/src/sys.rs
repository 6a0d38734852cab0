//! The only module with `unsafe` code: the KVM ioctls the probe needs.
//!
//! Why raw ioctls and not kvm-ioctls: that crate (0.25) has no wrapper for
//! `KVM_GET_SUPPORTED_HV_CPUID`, the one call that tells which Hyper-V enlightenments this
//! kernel can give a Windows guest, and the probe needs nothing else from it. Five ioctls on
//! plain file descriptors are easier to audit here than a dependency tree.
//!
//! Request numbers follow `_IO`/`_IOWR` from include/uapi/asm-generic/ioctl.h with KVMIO = 0xAE
//! (include/uapi/linux/kvm.h).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const KVMIO: u64 = 0xAE;

const fn io(nr: u64) -> u64 {
    (KVMIO << 8) | nr
}

const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (KVMIO << 8) | nr
}

const KVM_GET_API_VERSION: u64 = io(0x00);
const KVM_CREATE_VM: u64 = io(0x01);
const KVM_CHECK_EXTENSION: u64 = io(0x03);
const KVM_CREATE_VCPU: u64 = io(0x41);
/// The size field is that of the fixed part of `struct kvm_cpuid2` (nent + padding).
const KVM_GET_SUPPORTED_HV_CPUID: u64 = iowr(0xC1, 8);

/// One `struct kvm_cpuid_entry2` as KVM returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// `struct kvm_cpuid_entry2` is ten u32: function, index, flags, eax, ebx, ecx, edx, padding[3].
const ENTRY_WORDS: usize = 10;
/// KVM reports about ten Hyper-V leaves today; QEMU starts its own probe at 11 entries. Grow
/// on E2BIG up to a bound so that a misbehaving kernel cannot make us allocate without end.
const FIRST_ENTRY_COUNT: usize = 16;
const MAX_ENTRY_COUNT: usize = 1024;

fn ioctl_with_arg(fd: &impl AsRawFd, request: u64, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: every request passed here (API_VERSION, CREATE_VM, CHECK_EXTENSION, CREATE_VCPU)
    // takes an integer argument by value, so the kernel reads no user memory; the fd is open
    // for the lifetime of the borrow.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

pub fn api_version(kvm: &File) -> io::Result<i32> {
    ioctl_with_arg(kvm, KVM_GET_API_VERSION, 0)
}

/// `KVM_CHECK_EXTENSION`: 0 when absent, otherwise the capability's value (often 1, sometimes
/// a count or a bit mask).
pub fn check_extension(fd: &impl AsRawFd, capability: u32) -> io::Result<i32> {
    ioctl_with_arg(fd, KVM_CHECK_EXTENSION, libc::c_ulong::from(capability))
}

fn owned_fd(raw: i32) -> OwnedFd {
    // SAFETY: `raw` was just returned by a successful KVM_CREATE_VM/KVM_CREATE_VCPU ioctl, which
    // hands the caller a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

pub fn create_vm(kvm: &File) -> io::Result<OwnedFd> {
    ioctl_with_arg(kvm, KVM_CREATE_VM, 0).map(owned_fd)
}

pub fn create_vcpu(vm: &OwnedFd, id: u32) -> io::Result<OwnedFd> {
    ioctl_with_arg(vm, KVM_CREATE_VCPU, libc::c_ulong::from(id)).map(owned_fd)
}

/// `KVM_GET_SUPPORTED_HV_CPUID` on a system fd (KVM_CAP_SYS_HYPERV_CPUID) or a vCPU fd
/// (KVM_CAP_HYPERV_CPUID). Kernels without Hyper-V emulation answer EINVAL or ENOTTY.
pub fn supported_hv_cpuid(fd: &impl AsRawFd) -> io::Result<Vec<CpuidEntry>> {
    let mut capacity = FIRST_ENTRY_COUNT;
    loop {
        // u32 words keep the buffer aligned for the struct's u32 fields.
        let mut buffer = vec![0u32; 2 + capacity * ENTRY_WORDS];
        buffer[0] = u32::try_from(capacity).unwrap_or(u32::MAX);
        // SAFETY: `buffer` is a live, writable, 4-byte-aligned allocation laid out as struct
        // kvm_cpuid2 { u32 nent; u32 padding; struct kvm_cpuid_entry2 entries[nent]; } with
        // room for exactly `nent` entries; the kernel writes at most `nent` entries and updates
        // `nent`, and nothing else aliases the buffer during the call.
        let result = unsafe {
            libc::ioctl(fd.as_raw_fd(), KVM_GET_SUPPORTED_HV_CPUID as libc::Ioctl, buffer.as_mut_ptr())
        };
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
    fn request_numbers_match_the_kernel_headers() {
        // Values as computed in ../shared/knowledge.md section 4a and test-environment.md.
        assert_eq!(KVM_GET_SUPPORTED_HV_CPUID, 0xC008_AEC1);
        assert_eq!(KVM_CHECK_EXTENSION, 0xAE03);
        assert_eq!(KVM_CREATE_VCPU, 0xAE41);
    }
}
