//! Tiny real KVM guests for tests and benchmarks: SeaBIOS boots a 512-byte boot sector under
//! `qemu-system-x86_64 -accel kvm`, which runs on this nested host where no OS kernel does
//! (../shared/test-environment.md 2a). Each guest announces itself with one byte on COM1 and
//! then does one kind of VM exit in a loop, so a recorder's attribution can be checked against
//! what the guest is known to do.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// `out 0x80, al` forever: port I/O exits.
    PortIo,
    /// `sti; hlt` forever: halt exits, woken by the BIOS timer tick (18.2 Hz).
    Halt,
    /// Stores to the VGA window at 0xA0000 forever: MMIO exits to QEMU's emulated VGA.
    Mmio,
    /// Writes IA32_TSC_DEADLINE (MSR 0x6e0) forever, with 0 (no timer armed): the MSR exits of
    /// a guest rearming its timer without pause. The guest's CPU model offers the TSC-deadline
    /// timer, so that the write is no #GP.
    TimerMsr,
    /// Arms its local APIC timer in TSC-deadline mode 300,000 TSC cycles ahead, halts until
    /// the timer's interrupt wakes it, and arms it again, forever: an idle guest woken by each
    /// timer it sets (EXIT030), about 6,500 times a second here (a 2.3 GHz TSC). The interrupt handler
    /// ends the interrupt with a store to the xAPIC's EOI register, reached in big real mode
    /// (a 4 GiB data segment loaded in protected mode and kept back in real mode), so that the
    /// TSC-deadline write is the guest's one MSR exit. Same CPU model as [`GuestKind::TimerMsr`].
    TimerWakeup,
    /// Halts as [`GuestKind::Halt`] does, and powers off when the ACPI power button is pressed
    /// (`virsh shutdown`, QMP `system_powerdown`), as an OS would: it enables the button's
    /// event (PWRBTN_EN in PM1_EN), checks PM1_STS at each timer tick, and on it enters the
    /// soft-off state (SLP_EN with SLP_TYP 0, which QEMU's PIIX4 PM takes as power off;
    /// hw/acpi/core.c `acpi_pm1_cnt_write`). The PM block is where the firmware put it: PMBASE
    /// of the PIIX4 PM function (00:01.3, config 0x40), so on the `pc` machine only.
    PowerButton,
}

/// Real-mode code loaded by the BIOS at 0000:7C00.
fn code(kind: GuestKind) -> Vec<u8> {
    let mut code = vec![
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8      (COM1)
        0xB0, b'K', //       mov al, 'K'
        0xEE, //             out dx, al         (ready)
    ];
    code.extend_from_slice(match kind {
        GuestKind::PortIo => &[
            0xE6, 0x80, //   l: out 0x80, al    (the POST diagnostic port)
            0xEB, 0xFC, //   jmp l
        ],
        GuestKind::TimerMsr => &[
            0x66, 0xB9, 0xE0, 0x06, 0x00, 0x00, // mov ecx, 0x6e0 (IA32_TSC_DEADLINE)
            0x66, 0x31, 0xC0, //                   xor eax, eax
            0x66, 0x31, 0xD2, //                   xor edx, edx
            0x0F, 0x30, //                         l: wrmsr
            0xEB, 0xFC, //                         jmp l
        ],
        // Assembled at 0x7c00 after the 6 bytes above; the handler (0x7c63) and the GDT
        // (0x7c71, its pointer 0x7c81) are addressed absolutely.
        GuestKind::TimerWakeup => &[
            0xFA, //                               cli
            0x31, 0xC0, //                         xor ax, ax
            0x8E, 0xD8, //                         mov ds, ax
            0xC7, 0x06, 0x00, 0x01, 0x63, 0x7C, // mov word [0x100], 0x7c63 (vector 0x40: isr)
            0xA3, 0x02, 0x01, //                   mov [0x102], ax
            0x66, 0x0F, 0x01, 0x16, 0x81, 0x7C, // lgdt [0x7c81]
            0x0F, 0x20, 0xC0, //                   mov eax, cr0
            0x0C, 0x01, //                         or al, 1               (protected mode)
            0x0F, 0x22, 0xC0, //                   mov cr0, eax
            0xBB, 0x08, 0x00, //                   mov bx, 8
            0x8E, 0xC3, //                         mov es, bx             (4 GiB limit)
            0x24, 0xFE, //                         and al, 0xfe           (back to real mode)
            0x0F, 0x22, 0xC0, //                   mov cr0, eax
            0x31, 0xDB, //                         xor bx, bx
            0x8E, 0xC3, //                         mov es, bx             (base 0, limit kept)
            0x26, 0x67, 0x66, 0xC7, 0x05, 0xF0, 0x00, 0xE0, 0xFE, 0xFF, 0x01, 0x00,
            0x00, //                               mov dword [es:0xfee000f0], 0x1ff (SVR: APIC on)
            0x26, 0x67, 0x66, 0xC7, 0x05, 0x20, 0x03, 0xE0, 0xFE, 0x40, 0x00, 0x04,
            0x00, //                               mov dword [es:0xfee00320], 0x40040
            //                                     (LVT timer: vector 0x40, TSC-deadline mode)
            0x0F, 0x31, //                         arm: rdtsc
            0x66, 0x05, 0xE0, 0x93, 0x04, 0x00, // add eax, 300000
            0x66, 0x83, 0xD2, 0x00, //             adc edx, 0
            0x66, 0xB9, 0xE0, 0x06, 0x00, 0x00, // mov ecx, 0x6e0        (IA32_TSC_DEADLINE)
            0x0F, 0x30, //                         wrmsr
            0xFB, //                               sti
            0xF4, //                               hlt
            0xFA, //                               cli
            0xEB, 0xE7, //                         jmp arm
            0x26, 0x67, 0x66, 0xC7, 0x05, 0xB0, 0x00, 0xE0, 0xFE, 0x00, 0x00, 0x00,
            0x00, //                               isr: mov dword [es:0xfee000b0], 0 (EOI)
            0xCF, //                               iret
            0, 0, 0, 0, 0, 0, 0, 0, //             gdt: null descriptor
            0xFF, 0xFF, 0x00, 0x00, 0x00, 0x92, 0xCF, 0x00, // flat 4 GiB data segment
            0x0F, 0x00, 0x71, 0x7C, 0x00, 0x00, // gdt pointer: limit 15, base 0x7c71
        ],
        GuestKind::Halt => &[
            0xFB, //         sti
            0xF4, //         l: hlt
            0xEB, 0xFD, //   jmp l
        ],
        GuestKind::Mmio => &[
            0xB8, 0x00, 0xA0, // mov ax, 0xa000
            0x8E, 0xC0, //       mov es, ax
            0x26, 0xA2, 0x00, 0x00, // l: mov [es:0], al
            0xEB, 0xFA, //       jmp l
        ],
        GuestKind::PowerButton => &[
            0x66, 0xB8, 0x40, 0x0B, 0x00, 0x80, // mov eax, 0x80000b40 (PCI 00:01.3, PMBASE)
            0xBA, 0xF8, 0x0C, //                   mov dx, 0xcf8
            0x66, 0xEF, //                         out dx, eax
            0xB2, 0xFC, //                         mov dl, 0xfc
            0xED, //                               in ax, dx
            0x24, 0xC0, //                         and al, 0xc0       (the base, 64-byte aligned)
            0x89, 0xC3, //                         mov bx, ax
            0x8D, 0x57, 0x02, //                   lea dx, [bx+2]     (PM1_EN)
            0xB8, 0x00, 0x01, //                   mov ax, 0x0100     (PWRBTN_EN)
            0xEF, //                               out dx, ax
            0xFB, //                               l: sti
            0xF4, //                               hlt
            0x89, 0xDA, //                         mov dx, bx         (PM1_STS)
            0xED, //                               in ax, dx
            0xF6, 0xC4, 0x01, //                   test ah, 1         (PWRBTN_STS)
            0x74, 0xF6, //                         jz l
            0x8D, 0x57, 0x04, //                   lea dx, [bx+4]     (PM1_CNT)
            0xB8, 0x00, 0x20, //                   mov ax, 0x2000     (SLP_EN, SLP_TYP 0)
            0xEF, //                               out dx, ax
            0xEB, 0xFE, //                         jmp $
        ],
    });
    code
}

pub fn boot_sector(kind: GuestKind) -> [u8; 512] {
    let mut sector = [0u8; 512];
    let code = code(kind);
    sector[..code.len()].copy_from_slice(&code);
    sector[510] = 0x55;
    sector[511] = 0xAA;
    sector
}

/// A running guest; killed and reaped on drop.
pub struct Guest {
    pub child: Child,
    pub qmp: PathBuf,
    pub name: String,
    serial: PathBuf,
    _dir: tempfile::TempDir,
}

impl Guest {
    /// Starts the guest and waits until its boot sector runs.
    pub fn start(kind: GuestKind) -> Guest {
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("boot.img");
        std::fs::write(&image, boot_sector(kind)).expect("write boot sector");
        let qmp = dir.path().join("qmp.sock");
        let serial = dir.path().join("serial.txt");
        // Unique per guest: tests that run at once in one process each find their own.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let index = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("kvmtune-{kind:?}-{}-{index}", std::process::id()).to_lowercase();
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "kvm", "-m", "64", "-display", "none", "-no-reboot"])
            .args(if matches!(kind, GuestKind::TimerMsr | GuestKind::TimerWakeup) {
                &["-cpu", "qemu64,+tsc-deadline"][..]
            } else {
                &[]
            })
            .arg("-name")
            .arg(format!("guest={name},debug-threads=on"))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=ide", image.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (scripts/test.sh installs it from bookworm-backports)");
        let mut guest = Guest { child, qmp, name, serial, _dir: dir };
        guest.wait_ready();
        guest
    }

    fn wait_ready(&mut self) {
        // SeaBIOS runs mostly emulated on this host: about 5 s, more with other guests busy.
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("qemu exited before the guest ran: {status}");
            }
            if std::fs::read(&self.serial).is_ok_and(|s| s.contains(&b'K')) && self.qmp.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the {} guest did not boot within 120 s", self.name);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn qmp(&self) -> &Path {
        &self.qmp
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop();
    }
}
