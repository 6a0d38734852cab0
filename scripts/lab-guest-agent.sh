#!/bin/sh
# scripts/lab-guest-agent.sh CACHE: runs inside a lab guest (scripts/lab --agent, or a libvirt
# domain booted from the lab's kernel and initramfs) and starts Debian's QEMU guest agent,
# unpacked in CACHE/qemu-guest-agent, on the virtio-serial port named org.qemu.guest_agent.0.
# Prints `lab-agent-ready` on the console once the agent runs.
cache=$1
port=
# Without udev there is no /dev/virtio-ports/ link: the port is found by its name in sysfs.
for entry in /sys/class/virtio-ports/*; do
  [ "$(cat "$entry/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${entry##*/}
done
if [ -z "$port" ]; then
  echo "lab: no virtio-serial port named org.qemu.guest_agent.0" >&2
  exit 125
fi
mkdir -p /run/tmp/qga
"$cache/qemu-guest-agent/usr/sbin/qemu-ga" -m virtio-serial -p "$port" -t /run/tmp/qga -d -f /run/tmp/qga/pid || exit 125
echo lab-agent-ready
