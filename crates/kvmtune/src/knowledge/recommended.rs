//! The values kvmtune recommends for a Windows guest, each stated once. The planner, the VM
//! rules and their fixes, the existing-VM edits and every emitter read them here, so `tune`
//! cannot plan what `check` would flag. The list of enlightenments is
//! [`crate::knowledge::hyperv::RECOMMENDED_FOR_WINDOWS`].

/// `hv-spinlocks` retries: how often a vCPU spins before it tells the hypervisor it waits.
/// 8191 (0x1fff) is the common choice; libvirt refuses fewer than [`SPINLOCK_RETRIES_MIN`].
/// Source: libvirt docs/formatdomain.rst (hyperv spinlocks); ../shared/knowledge.md 2a.
pub const SPINLOCK_RETRIES: u32 = 8191;
pub const SPINLOCK_RETRIES_MIN: u32 = 4095;

/// CPUID leaf 0x40000000 holds the Hyper-V vendor id in three registers: 12 characters.
pub const VENDOR_ID_MAX_CHARS: usize = 12;

/// Windows keeps the RTC in local time. Source: libvirt formatdomain (clock offset);
/// ../shared/knowledge.md 2b.
pub const CLOCK_OFFSET: &str = "localtime";

/// Lost RTC ticks are caught up: Windows counts them. Source: libvirt formatdomain (timer
/// tickpolicy); ../shared/knowledge.md 2b.
pub const RTC_TICKPOLICY: &str = "catchup";

/// The in-kernel PIT's own default, which libvirt writes out: KVM reinjects missed ticks as
/// the guest acknowledges them. libvirt's `catchup` is the same (it writes nothing); `discard`
/// drops missed ticks. Windows does not keep time with the PIT once booted, so this only keeps
/// the config explicit. Source: QEMU hw/i386/kvm/i8254.c; libvirt qemu_command.c (checked with
/// `virsh domxml-to-native`); ../shared/knowledge.md 2b.
pub const PIT_TICKPOLICY: &str = "delay";

/// ... but where KVM switches AVIC off for a VM whose in-kernel PIT reinjects (AMD hosts with
/// AVIC on; `analysis::avic_inhibitions` decides), missed ticks are dropped instead, for the
/// same reason delay costs Windows nothing. Source: Linux arch/x86/kvm/i8254.c
/// (kvm_pit_set_reinject, APICV_INHIBIT_REASON_PIT_REINJ); QEMU hw/i386/kvm/i8254.c (discard
/// turns reinjection off).
pub const PIT_TICKPOLICY_WITH_AVIC: &str = "discard";

/// The hugepage size libvirt uses when `<hugepages/>` names none: x86's default hugepage size,
/// unless the host boots with `default_hugepagesz=`. Source: kernel admin-guide/mm/hugetlbpage.
pub const DEFAULT_HUGEPAGE_KIB: u64 = 2048;

/// 1 GiB pages, where the CPU has `pdpe1gb` and the memory is a whole number of GiB.
pub const GIGANTIC_HUGEPAGE_KIB: u64 = 1_048_576;

/// The cpufreq governor for a VM's CPUs where the host runs a slow one (powersave, ondemand,
/// conservative): a vCPU that wakes from halt should not wait for its core to clock up.
/// Source: tuned's `virtual-host` profile (throughput-performance); ../shared/host-changes.md
/// section 6.
pub const GOVERNOR: &str = "performance";

/// Governors that leave a core at a low clock until load has been seen for a while
/// (kernel Documentation/admin-guide/pm/cpufreq.rst): where the host runs one, the VM's CPUs
/// get [`GOVERNOR`].
pub const SLOW_GOVERNORS: &[&str] = &["powersave", "ondemand", "conservative"];
