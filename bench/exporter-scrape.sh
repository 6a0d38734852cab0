#!/usr/bin/env bash
# Benchmark: what one scrape of `kvmtune exporter` costs per VM, from 1 to 20 VMs, beside
# polling `virsh domstats --vcpu` for the same VMs and beside `kvm_stat -1 -d` (the kernel's own
# tool, reading KVM's debugfs for the whole host).
#
# Halting boot-sector guests run as libvirt domains under a private libvirtd (in its own mount
# namespace, so the host's libvirt state is untouched; tracefs is mounted there too), and as
# plain QEMU processes with a QMP socket. For each VM count the exporter is scraped SCRAPES times
# and the CPU time counted is the exporter's (with its children: virsh for libvirt domains)
# plus libvirtd's, read from /proc before and after, per scrape and per VM. The tests hold the
# results; this only measures.
#
#   SCRAPES=10 COUNTS="1 5 10 20" bench/exporter-scrape.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCRAPES=${SCRAPES:-10}
COUNTS=${COUNTS:-"1 5 10 20"}

if [ -z "${KVMTUNE_BENCH_NS:-}" ]; then
  cargo build -q --release -p kvmtune-cli
  exec env KVMTUNE_BENCH_NS=1 unshare --mount --propagation private "$0" "$@"
fi

. bench/private-libvirtd.sh

# kvm_stat: Debian packages it nowhere but in the kernel's source, so it is taken from
# linux-source-6.12 into the lab cache once. It reads KVM's debugfs (mounted here, in this
# private mount namespace). It picks its exit-reason table by the vmx or svm flag of
# /proc/cpuinfo and stops with an AttributeError without one; a nested PVM host like this one
# hides the flag, so this namespace alone sees a copy of cpuinfo with the vendor's flag added.
# With -d it reads debugfs only, where that table is not used.
kvm_stat=$(command -v kvm_stat || true)
if [ -z "$kvm_stat" ]; then
  cache=${KVMTUNE_LAB_CACHE:-/var/cache/kvmtune-lab}
  kvm_stat=$cache/kvm_stat-6.12
  if [ ! -f "$kvm_stat" ]; then
    mkdir -p "$cache/linux-source"
    (cd "$cache/linux-source" && apt-get download -qq linux-source-6.12 2>&1 | grep -v unsandboxed || true)
    dpkg-deb --fsys-tarfile "$cache"/linux-source/linux-source-6.12_*.deb \
      | tar -xO --wildcards '*/linux-source-6.12.tar.xz' | xz -dc \
      | tar -xO --wildcards '*/tools/kvm/kvm_stat/kvm_stat' >"$kvm_stat.part"
    mv "$kvm_stat.part" "$kvm_stat"
    rm -rf "$cache/linux-source"
  fi
  kvm_stat="python3 $kvm_stat"
fi
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
if ! grep -qw -e vmx -e svm /proc/cpuinfo; then
  flag=svm; grep -q GenuineIntel /proc/cpuinfo && flag=vmx
  sed "/^flags/s/\$/ $flag/" /proc/cpuinfo >"$work/cpuinfo"
  mount --bind "$work/cpuinfo" /proc/cpuinfo
fi
# shellcheck disable=SC2086
kvm_stat() { $kvm_stat -1 -d; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
exporter_pid=
plain_pids=()
cleanup() {
  set +e
  for domain in $(virsh -q -c qemu:///system list --name 2>/dev/null); do
    virsh -q -c qemu:///system destroy "$domain" >/dev/null 2>&1
  done
  for pid in "${plain_pids[@]}" $exporter_pid; do kill "$pid" 2>/dev/null; done
  kill "$libvirtd_pid" "$virtlogd_pid" 2>/dev/null
  wait 2>/dev/null
  find /sys/fs/cgroup/*/machine* -depth -type d -exec rmdir {} \; 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done

"$kvmtune" exporter --listen "127.0.0.1:$port" 2>/dev/null & exporter_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

ticks_all() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# cost LABEL VMS COMMAND...: CPU ms per run and per VM of COMMAND (this shell's children) plus
# the exporter's and libvirtd's, over SCRAPES runs.
cost() {
  local label=$1 vms=$2; shift 2
  local e0 d0 c0 e1 d1 c1
  e0=$(ticks_all "$exporter_pid"); d0=$(ticks_all "$libvirtd_pid"); c0=$(awk '{print $16 + $17}' /proc/$$/stat)
  for _ in $(seq "$SCRAPES"); do "$@" >/dev/null 2>&1 || true; done
  e1=$(ticks_all "$exporter_pid"); d1=$(ticks_all "$libvirtd_pid"); c1=$(awk '{print $16 + $17}' /proc/$$/stat)
  awk -v l="$label" -v v="$vms" -v t=$(( (e1 - e0) + (d1 - d0) + (c1 - c0) )) -v hz="$hz" -v n="$SCRAPES" \
    'BEGIN { printf "  %-40s %3d VMs: %7.2f ms per scrape, %6.2f ms per VM\n", l, v, t*1000/hz/n, t*1000/hz/n/v }'
}
scrape() { curl -s -o /dev/null "http://127.0.0.1:$port/metrics"; }
domstats() { virsh -c qemu:///system domstats --vcpu; }


echo "libvirt domains (halting 1-vCPU guests), $SCRAPES scrapes or polls each"
running=0
for count in $COUNTS; do
  while [ "$running" -lt "$count" ]; do
    running=$((running + 1))
    # One image each: QEMU locks the image it writes to.
    cp "$work/boot.img" "$work/d$running.img"
    domain_xml "bench$running" 32 "$work/d$running.img" >"$work/d$running.xml"
    virsh -q -c qemu:///system create "$work/d$running.xml" >/dev/null
  done
  sleep 3  # SeaBIOS to the boot sector
  scrape  # the first scrape opens the tracepoint counters
  cost "kvmtune exporter (virsh domstats)" "$count" scrape
  cost "virsh domstats --vcpu (all domains)" "$count" domstats
  cost "kvm_stat -1 -d (host-wide)" "$count" kvm_stat
done
for domain in $(virsh -q -c qemu:///system list --name); do virsh -q -c qemu:///system destroy "$domain" >/dev/null; done

echo "plain QEMU guests with a QMP socket"
running=0
for count in $COUNTS; do
  while [ "$running" -lt "$count" ]; do
    running=$((running + 1))
    cp "$work/boot.img" "$work/p$running.img"
    qemu-system-x86_64 -accel kvm -m 32 -display none -name "guest=plain$running" \
      -qmp "unix:$work/q$running.sock,server=on,wait=off" -drive "file=$work/p$running.img,format=raw,if=ide" \
      >/dev/null 2>&1 & plain_pids+=($!)
  done
  sleep 3
  scrape
  cost "kvmtune exporter (QMP sockets)" "$count" scrape
done

