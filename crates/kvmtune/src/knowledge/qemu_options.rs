//! QEMU's command-line options for x86: which exist, which take a value, and which older
//! guides still use although QEMU refuses them. QEMU's own parser (system/vl.c,
//! `lookup_opt`) takes the word after an option that has an argument whatever it looks like,
//! even one starting with `-`, and takes a word that is no option as a disk image.
//!
//! `CURRENT` is what `qemu-system-x86_64 -help` of QEMU 10.0 lists, plus the options it
//! accepts without listing them; `tests/check_oracles.rs` holds both lists against the QEMU
//! installed here, so they cannot drift from it.

/// Whether an option takes the next word as its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Flag,
    Value,
}

/// Options QEMU 10.0's x86_64 system emulator accepts, as `-help` lists them.
pub const LISTED: &[(&str, Arity)] = &[
    ("h", Arity::Flag),
    ("help", Arity::Flag),
    ("version", Arity::Flag),
    ("machine", Arity::Value),
    ("cpu", Arity::Value),
    ("accel", Arity::Value),
    ("smp", Arity::Value),
    ("numa", Arity::Value),
    ("add-fd", Arity::Value),
    ("set", Arity::Value),
    ("global", Arity::Value),
    ("boot", Arity::Value),
    ("m", Arity::Value),
    ("mem-path", Arity::Value),
    ("mem-prealloc", Arity::Flag),
    ("k", Arity::Value),
    ("audio", Arity::Value),
    ("audiodev", Arity::Value),
    ("device", Arity::Value),
    ("name", Arity::Value),
    ("uuid", Arity::Value),
    ("fda", Arity::Value),
    ("fdb", Arity::Value),
    ("hda", Arity::Value),
    ("hdb", Arity::Value),
    ("hdc", Arity::Value),
    ("hdd", Arity::Value),
    ("cdrom", Arity::Value),
    ("blockdev", Arity::Value),
    ("drive", Arity::Value),
    ("mtdblock", Arity::Value),
    ("sd", Arity::Value),
    ("pflash", Arity::Value),
    ("snapshot", Arity::Flag),
    ("fsdev", Arity::Value),
    ("virtfs", Arity::Value),
    ("iscsi", Arity::Value),
    ("usb", Arity::Flag),
    ("usbdevice", Arity::Value),
    ("display", Arity::Value),
    ("nographic", Arity::Flag),
    ("spice", Arity::Value),
    ("vga", Arity::Value),
    ("full-screen", Arity::Flag),
    ("vnc", Arity::Value),
    ("win2k-hack", Arity::Flag),
    ("no-fd-bootchk", Arity::Flag),
    ("acpitable", Arity::Value),
    ("smbios", Arity::Value),
    ("nic", Arity::Value),
    ("netdev", Arity::Value),
    ("net", Arity::Value),
    ("chardev", Arity::Value),
    ("tpmdev", Arity::Value),
    ("bios", Arity::Value),
    ("kernel", Arity::Value),
    ("shim", Arity::Value),
    ("append", Arity::Value),
    ("initrd", Arity::Value),
    ("dtb", Arity::Value),
    ("compat", Arity::Value),
    ("fw_cfg", Arity::Value),
    ("serial", Arity::Value),
    ("parallel", Arity::Value),
    ("monitor", Arity::Value),
    ("qmp", Arity::Value),
    ("qmp-pretty", Arity::Value),
    ("mon", Arity::Value),
    ("debugcon", Arity::Value),
    ("pidfile", Arity::Value),
    ("preconfig", Arity::Flag),
    ("S", Arity::Flag),
    ("overcommit", Arity::Value),
    ("gdb", Arity::Value),
    ("s", Arity::Flag),
    ("d", Arity::Value),
    ("D", Arity::Value),
    ("dfilter", Arity::Value),
    ("seed", Arity::Value),
    ("L", Arity::Value),
    ("enable-kvm", Arity::Flag),
    ("xen-domid", Arity::Value),
    ("xen-attach", Arity::Flag),
    ("xen-domid-restrict", Arity::Flag),
    ("no-reboot", Arity::Flag),
    ("no-shutdown", Arity::Flag),
    ("action", Arity::Value),
    ("loadvm", Arity::Value),
    ("daemonize", Arity::Flag),
    ("option-rom", Arity::Value),
    ("rtc", Arity::Value),
    ("icount", Arity::Value),
    ("watchdog-action", Arity::Value),
    ("echr", Arity::Value),
    ("incoming", Arity::Value),
    ("only-migratable", Arity::Flag),
    ("nodefaults", Arity::Flag),
    ("sandbox", Arity::Value),
    ("readconfig", Arity::Value),
    ("no-user-config", Arity::Flag),
    ("trace", Arity::Value),
    ("plugin", Arity::Value),
    ("enable-sync-profile", Arity::Flag),
    ("perfmap", Arity::Flag),
    ("jitdump", Arity::Flag),
    ("dump-vmstate", Arity::Value),
    ("msg", Arity::Value),
    ("object", Arity::Value),
    ("run-with", Arity::Value),
];

/// Options QEMU accepts without listing them in `-help` (their help text is empty).
pub const UNLISTED: &[(&str, Arity)] =
    &[("M", Arity::Value), ("qtest", Arity::Value), ("qtest-log", Arity::Value)];

/// An option QEMU's x86 emulator refuses, that old guides and configs still carry.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub name: &'static str,
    pub arity: Arity,
    /// What QEMU answers: `invalid option` (removed) or `Option not supported for this target`.
    pub answer: &'static str,
    /// What to write instead.
    pub instead: &'static str,
}

const REMOVED: &str = "invalid option";
const OTHER_TARGET: &str = "Option not supported for this target";

/// Each checked against QEMU 10.0 in `tests/check_oracles.rs`.
#[rustfmt::skip]
pub const REFUSED: &[Refused] = &[
    removed("no-hpet", Arity::Flag, "-machine hpet=off (libvirt: <timer name='hpet' present='no'/>)"),
    removed("no-acpi", Arity::Flag, "-machine acpi=off"),
    removed("localtime", Arity::Flag, "-rtc base=localtime (libvirt: <clock offset='localtime'>)"),
    removed("rtc-td-hack", Arity::Flag, "-rtc driftfix=slew (libvirt: <timer name='rtc' tickpolicy='catchup'/>)"),
    removed("no-kvm-pit-reinjection", Arity::Flag, "-global kvm-pit.lost_tick_policy=discard"),
    removed("no-kvm", Arity::Flag, "-accel tcg"),
    removed("enable-fips", Arity::Flag, "nothing: QEMU follows the host's FIPS mode"),
    removed("no-quit", Arity::Flag, "-display ...,window-close=off"),
    removed("alt-grab", Arity::Flag, "-display ...,grab-mod=lshift-lctrl-lalt"),
    removed("ctrl-grab", Arity::Flag, "-display ...,grab-mod=rctrl"),
    removed("no-frame", Arity::Flag, "nothing (the SDL option has no successor)"),
    removed("sdl", Arity::Flag, "-display sdl"),
    removed("curses", Arity::Flag, "-display curses"),
    removed("show-cursor", Arity::Flag, "-display ...,show-cursor=on"),
    removed("tdf", Arity::Flag, "-global kvm-pit.lost_tick_policy=delay (the default)"),
    removed("realtime", Arity::Value, "-overcommit mem-lock=on"),
    removed("soundhw", Arity::Value, "-audio or -device with -audiodev"),
    removed("watchdog", Arity::Value, "-device with the watchdog model"),
    removed("writeconfig", Arity::Value, "nothing (removed)"),
    removed("singlestep", Arity::Flag, "-accel tcg,one-insn-per-tb=on"),
    removed("runas", Arity::Value, "-run-with user=..."),
    removed("chroot", Arity::Value, "-run-with chroot=..."),
    removed("async-teardown", Arity::Flag, "-run-with async-teardown=on"),
    removed("virtioconsole", Arity::Value, "-device virtconsole"),
    other_target("old-param", Arity::Flag, "nothing: an ARM option"),
    other_target("semihosting", Arity::Flag, "nothing: an option of other targets"),
    other_target("prom-env", Arity::Value, "nothing: a SPARC/PowerPC option"),
    other_target("g", Arity::Value, "nothing: a SPARC/PowerPC option"),
];

const fn removed(name: &'static str, arity: Arity, instead: &'static str) -> Refused {
    Refused { name, arity, answer: REMOVED, instead }
}

const fn other_target(name: &'static str, arity: Arity, instead: &'static str) -> Refused {
    Refused { name, arity, answer: OTHER_TARGET, instead }
}

/// What QEMU makes of an option name (without its leading `-` or `--`).
#[derive(Debug, Clone, Copy)]
pub enum Known {
    Accepted(Arity),
    Refused(&'static Refused),
    Unknown,
}

pub fn lookup(name: &str) -> Known {
    if let Some((_, arity)) = LISTED.iter().chain(UNLISTED).find(|(n, _)| *n == name) {
        return Known::Accepted(*arity);
    }
    match REFUSED.iter().find(|r| r.name == name) {
        Some(refused) => Known::Refused(refused),
        None => Known::Unknown,
    }
}

/// How a reader of command lines (old ones included) takes the word after `name`: as its
/// value, or not. QEMU stops at an option it does not know; a reader goes on, and most
/// options take a value, so an unknown one is read as taking one.
pub fn takes_value(name: &str) -> bool {
    match lookup(name) {
        Known::Accepted(arity) => arity == Arity::Value,
        Known::Refused(refused) => refused.arity == Arity::Value,
        Known::Unknown => true,
    }
}
