//! What a guest reaches through the I/O ports and MSRs that `perf kvm stat report
//! --event=ioport` and `--event=msr` count: the side tables that say which device or register
//! is behind a VM's IO_INSTRUCTION and MSR exits.
//!
//! Ports are the PC's fixed ones that QEMU emulates, and the ACPI power-management block where
//! the firmware puts it; MSRs are the x2APIC's (0x800 + the xAPIC register offset / 16, Intel SDM
//! vol. 3A 11.12.1.2), the TSC deadline and Hyper-V's synthetic ones. Each entry names where it
//! is defined.

use serde::Serialize;

/// A device or register behind a side table's row, as far as the diagnosis needs to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitTarget {
    /// The MC146818 real-time clock and CMOS: index port 0x70, data port 0x71.
    Rtc,
    /// The i8254 programmable interval timer: counters 0x40-0x42, control 0x43.
    Pit,
    /// The ACPI power-management timer, a 24- or 32-bit free-running counter read as a clock.
    AcpiPmTimer,
    /// PCI configuration space through the address (0xcf8) and data (0xcfc-0xcff) ports.
    PciConfig,
    /// The 8259 interrupt controllers.
    Pic,
    /// The first serial port.
    Serial,
    /// The i8042 keyboard controller.
    Keyboard,
    /// QEMU's firmware configuration interface.
    FwCfg,
    /// The x2APIC interrupt command register: every IPI the guest sends.
    X2apicIcr,
    /// The x2APIC end-of-interrupt register.
    X2apicEoi,
    /// The x2APIC timer's initial count and its LVT entry.
    X2apicTimer,
    /// The x2APIC task priority register.
    X2apicTpr,
    /// IA32_TSC_DEADLINE: the local APIC timer armed in TSC-deadline mode.
    TscDeadline,
    /// Hyper-V's APIC-access MSRs (EOI, ICR, TPR) and VP assist page.
    HypervApic,
    /// Hyper-V's synthetic timers' configuration and count.
    HypervSyntheticTimers,
    /// Hyper-V's reference counter: a clock read that exits (the TSC page does not).
    HypervReferenceCounter,
}

impl ExitTarget {
    /// A few words for tables and evidence.
    pub fn describe(self) -> &'static str {
        match self {
            ExitTarget::Rtc => "RTC",
            ExitTarget::Pit => "PIT",
            ExitTarget::AcpiPmTimer => "ACPI PM timer",
            ExitTarget::PciConfig => "PCI config space",
            ExitTarget::Pic => "8259 PIC",
            ExitTarget::Serial => "serial port",
            ExitTarget::Keyboard => "i8042 keyboard controller",
            ExitTarget::FwCfg => "QEMU fw_cfg",
            ExitTarget::X2apicIcr => "x2APIC ICR (IPIs)",
            ExitTarget::X2apicEoi => "x2APIC EOI",
            ExitTarget::X2apicTimer => "x2APIC timer",
            ExitTarget::X2apicTpr => "x2APIC TPR",
            ExitTarget::TscDeadline => "TSC deadline (APIC timer)",
            ExitTarget::HypervApic => "Hyper-V APIC MSRs",
            ExitTarget::HypervSyntheticTimers => "Hyper-V synthetic timers",
            ExitTarget::HypervReferenceCounter => "Hyper-V reference counter",
        }
    }
}

/// A range of ports or MSRs and what is behind it.
#[derive(Debug, Clone, Copy)]
pub struct TargetRange {
    pub first: u32,
    pub last: u32,
    pub target: ExitTarget,
    /// Where the address is defined.
    pub source: &'static str,
}

const fn range(first: u32, last: u32, target: ExitTarget, source: &'static str) -> TargetRange {
    TargetRange { first, last, target, source }
}

/// I/O ports.
pub const PORTS: &[TargetRange] = &[
    range(0x20, 0x21, ExitTarget::Pic, "QEMU hw/intc/i8259.c"),
    range(0xa0, 0xa1, ExitTarget::Pic, "QEMU hw/intc/i8259.c"),
    range(0x40, 0x43, ExitTarget::Pit, "QEMU hw/timer/i8254.c (PIT at 0x40)"),
    range(0x60, 0x60, ExitTarget::Keyboard, "QEMU hw/input/pckbd.c"),
    range(0x64, 0x64, ExitTarget::Keyboard, "QEMU hw/input/pckbd.c"),
    range(0x70, 0x71, ExitTarget::Rtc, "QEMU hw/rtc/mc146818rtc.c (RTC_ISA_BASE 0x70)"),
    range(0x3f8, 0x3ff, ExitTarget::Serial, "QEMU hw/char/serial-isa.c (COM1 at 0x3f8)"),
    range(0x510, 0x511, ExitTarget::FwCfg, "QEMU docs/specs/fw_cfg.rst (x86: selector 0x510, data 0x511)"),
    // The PM block's timer is at offset 8 (ACPI specification, PM_TMR_BLK); OVMF puts the
    // block at 0x600 on q35 and 0xb000 on i440fx, SeaBIOS at 0xb000 on i440fx.
    range(
        0x608,
        0x60b,
        ExitTarget::AcpiPmTimer,
        "edk2 OvmfPkg (ICH9_PMBASE_VALUE 0x600) + ACPI PM_TMR at offset 8",
    ),
    range(
        0xb008,
        0xb00b,
        ExitTarget::AcpiPmTimer,
        "SeaBIOS and edk2 OvmfPkg (PIIX4 PM base 0xb000) + ACPI PM_TMR at offset 8",
    ),
    range(0xcf8, 0xcff, ExitTarget::PciConfig, "QEMU hw/pci-host (config address 0xcf8, data 0xcfc)"),
];

/// MSRs.
pub const MSRS: &[TargetRange] = &[
    range(
        0x6e0,
        0x6e0,
        ExitTarget::TscDeadline,
        "Linux arch/x86/include/asm/msr-index.h (MSR_IA32_TSC_DEADLINE)",
    ),
    range(
        0x808,
        0x808,
        ExitTarget::X2apicTpr,
        "Linux arch/x86/include/asm/apicdef.h (APIC_BASE_MSR + APIC_TASKPRI >> 4)",
    ),
    range(
        0x80b,
        0x80b,
        ExitTarget::X2apicEoi,
        "Linux arch/x86/include/asm/apicdef.h (APIC_BASE_MSR + APIC_EOI >> 4)",
    ),
    range(
        0x830,
        0x830,
        ExitTarget::X2apicIcr,
        "Linux arch/x86/include/asm/apicdef.h (APIC_BASE_MSR + APIC_ICR >> 4)",
    ),
    range(
        0x832,
        0x832,
        ExitTarget::X2apicTimer,
        "Linux arch/x86/include/asm/apicdef.h (APIC_BASE_MSR + APIC_LVTT >> 4)",
    ),
    range(
        0x838,
        0x838,
        ExitTarget::X2apicTimer,
        "Linux arch/x86/include/asm/apicdef.h (APIC_BASE_MSR + APIC_TMICT >> 4)",
    ),
    range(
        0x4000_0020,
        0x4000_0020,
        ExitTarget::HypervReferenceCounter,
        "Linux arch/x86/include/asm/hyperv-tlfs.h (HV_X64_MSR_TIME_REF_COUNT)",
    ),
    range(
        0x4000_0070,
        0x4000_0073,
        ExitTarget::HypervApic,
        "Linux arch/x86/include/asm/hyperv-tlfs.h (HV_X64_MSR_EOI, ICR, TPR, VP_ASSIST_PAGE)",
    ),
    range(
        0x4000_00b0,
        0x4000_00b7,
        ExitTarget::HypervSyntheticTimers,
        "Linux arch/x86/include/asm/hyperv-tlfs.h (HV_X64_MSR_STIMER0_CONFIG to STIMER3_COUNT)",
    ),
];

/// What a side table's row name (`0x70:POUT`, `0x6e0:W`, or a range as the recorder counts
/// it, `0x400000b0-0x400000b7:W`) reaches, with `table` its kind.
pub fn target_of(table: &'static [TargetRange], row_name: &str) -> Option<&'static TargetRange> {
    let number = row_name.split([':', '-']).next()?.trim();
    let number =
        u32::from_str_radix(number.strip_prefix("0x").or_else(|| number.strip_prefix("0X"))?, 16).ok()?;
    table.iter().find(|r| (r.first..=r.last).contains(&number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_name_their_targets() {
        assert_eq!(target_of(PORTS, "0x70:POUT").map(|r| r.target), Some(ExitTarget::Rtc));
        assert_eq!(target_of(PORTS, "0xcfc:PIN").map(|r| r.target), Some(ExitTarget::PciConfig));
        assert_eq!(target_of(PORTS, "0x608:PIN").map(|r| r.target), Some(ExitTarget::AcpiPmTimer));
        assert_eq!(target_of(PORTS, "0xb008:PIN").map(|r| r.target), Some(ExitTarget::AcpiPmTimer));
        assert_eq!(target_of(PORTS, "0x1f0:PIN").map(|r| r.target), None);
        assert_eq!(target_of(MSRS, "0x6e0:W").map(|r| r.target), Some(ExitTarget::TscDeadline));
        assert_eq!(target_of(MSRS, "0x830:W").map(|r| r.target), Some(ExitTarget::X2apicIcr));
        assert_eq!(target_of(MSRS, "0x40000070:W").map(|r| r.target), Some(ExitTarget::HypervApic));
        assert_eq!(
            target_of(MSRS, "0x400000b3:W").map(|r| r.target),
            Some(ExitTarget::HypervSyntheticTimers)
        );
        assert_eq!(
            target_of(MSRS, "0x400000b0-0x400000b7:W").map(|r| r.target),
            Some(ExitTarget::HypervSyntheticTimers)
        );
        assert_eq!(target_of(MSRS, "0x3b:R").map(|r| r.target), None);
        assert!(target_of(MSRS, "HLT").is_none());
    }

    #[test]
    fn ranges_do_not_overlap() {
        for table in [PORTS, MSRS] {
            for (i, a) in table.iter().enumerate() {
                assert!(a.first <= a.last);
                for b in &table[i + 1..] {
                    assert!(a.last < b.first || b.last < a.first, "{a:?} overlaps {b:?}");
                }
            }
        }
    }
}
