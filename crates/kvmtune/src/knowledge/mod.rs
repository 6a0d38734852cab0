//! What kvmtune knows about KVM, QEMU, libvirt and Windows, as data with sources.
//!
//! Each table row carries the reference it comes from (keys as in `../shared/knowledge.md`:
//! L-KVMH = include/uapi/linux/kvm.h, L-TLFS = the Hyper-V TLFS definitions in Linux,
//! Q-KVM = QEMU target/i386/kvm/kvm.c, Q-DOC = QEMU docs/system/i386/hyperv.rst). Analysis code
//! reads these tables; it does not hard-code the facts again.

pub mod exit_targets;
pub mod gpu_reset;
pub mod hyperv;
pub mod hyperv_cpuid;
pub mod kvm_api;
pub mod libvirt;
pub mod qemu_options;
pub mod recommended;
pub mod windows;
