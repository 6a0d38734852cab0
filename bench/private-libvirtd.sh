# Sourced by the benchmarks that need libvirt (not run): in the private mount namespace the
# caller re-executed itself into, a work directory ($work), libvirt's QEMU as root without a
# per-domain /dev namespace (from inside this mount namespace it would not carry /dev/kvm over,
# and QEMU would see no KVM; only this namespace sees the changed qemu.conf), tracefs, a halting
# boot sector ($work/boot.img), a release kvmtune ($kvmtune), and virtlogd and libvirtd
# started ($virtlogd_pid, $libvirtd_pid). The caller's cleanup stops them.
# shellcheck shell=bash
work=$(mktemp -d)
chmod 755 "$work"
{ cat /etc/libvirt/qemu.conf; echo 'namespaces = []'; echo 'user = "root"'; echo 'group = "root"'; } >"$work/qemu.conf"
mount --bind "$work/qemu.conf" /etc/libvirt/qemu.conf
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
cargo run -q -p kvmtune-testkit --example boot_sector -- halt >"$work/boot.img"
chmod 666 "$work/boot.img"
kvmtune=$PWD/target/release/kvmtune
/usr/sbin/virtlogd & virtlogd_pid=$!
# A domain started before virtlogd listens fails to start.
for _ in $(seq 100); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.1; done
/usr/sbin/libvirtd >"$work/libvirtd.log" 2>&1 & libvirtd_pid=$!

# domain_xml NAME MEMORY_MIB IMAGE [SERIAL_FILE]: a 1-vCPU KVM domain that boots IMAGE from an
# IDE disk, its serial port written to SERIAL_FILE when given.
domain_xml() {
  local serial=
  [ -n "${4:-}" ] && serial="<serial type='file'><source path='$4'/></serial>"
  cat <<XML
<domain type='kvm'>
  <name>$1</name>
  <memory unit='MiB'>$2</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$3'/><target dev='hda' bus='ide'/></disk>
    $serial
    <memballoon model='none'/>
  </devices>
</domain>
XML
}
