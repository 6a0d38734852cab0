#!/usr/bin/env bash
# Benchmark: what recording costs, per VM and per sample.
#
# One halting boot-sector guest runs under a private libvirtd (in its own mount namespace, so
# the host's libvirt state is untouched), and the same per-vCPU KVM statistics are fetched
# SAMPLES times by each of:
#   - `virsh domstats --vcpu`                      (the usual way)
#   - `kvmtune exits record --domain`              (QMP query-stats through virsh)
#   - `kvmtune exits record --qmp` on a plain QEMU (QMP socket, no libvirt)
# The CPU time counted is the client's (user+sys of the process and its children) plus, for
# the libvirt paths, libvirtd's own, read from /proc before and after.
#
#   SAMPLES=100 bench/exits-record.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SAMPLES=${SAMPLES:-100}

if [ -z "${KVMTUNE_BENCH_NS:-}" ]; then
  cargo build -q --release -p kvmtune-cli
  exec env KVMTUNE_BENCH_NS=1 unshare --mount --propagation private "$0" "$@"
fi

. bench/private-libvirtd.sh
qemu_pid=
cleanup() {
  set +e
  virsh -q -c qemu:///system destroy benchguest >/dev/null 2>&1 || true
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2>/dev/null; fi
  kill "$libvirtd_pid" "$virtlogd_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  # libvirt's cgroup directories for the guest, if it left them.
  find /sys/fs/cgroup/*/machine* -depth -type d -exec rmdir {} \; 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done

domain_xml benchguest 64 "$work/boot.img" "$work/serial.txt" >"$work/guest.xml"
virsh -q -c qemu:///system create "$work/guest.xml" >/dev/null
for _ in $(seq 600); do grep -q K "$work/serial.txt" 2>/dev/null && break; sleep 0.2; done

# Ticks of a process (user+sys) from /proc/PID/stat.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# CPU milliseconds of a command and its children, plus libvirtd's, divided by SAMPLES.
measure() {
  local label=$1; shift
  local daemon_before client_before client_after daemon_after
  daemon_before=$(ticks "$libvirtd_pid")
  client_before=$(awk '{print $16 + $17}' /proc/$$/stat)
  "$@" >/dev/null 2>&1 || true  # exit code 1 only means findings
  client_after=$(awk '{print $16 + $17}' /proc/$$/stat)
  daemon_after=$(ticks "$libvirtd_pid")
  awk -v l="$label" -v c=$((client_after - client_before)) -v d=$((daemon_after - daemon_before)) \
      -v hz="$hz" -v n="$SAMPLES" \
      'BEGIN { printf "%-44s client %6.2f ms  libvirtd %6.2f ms  total %6.2f ms per sample\n", l, c*1000/hz/n, d*1000/hz/n, (c+d)*1000/hz/n }'
}

poll_domstats() { for _ in $(seq "$SAMPLES"); do virsh -c qemu:///system domstats --vcpu benchguest; done; }
# --interval 0.05 s: the sampling itself, not the sleeping, is what is measured.
record_domain() { "$kvmtune" exits record --domain benchguest --connect qemu:///system --quiet \
                    --interval 50ms --duration "$((SAMPLES * 50))ms"; }

echo "per-vCPU KVM stats of one 1-vCPU guest, $SAMPLES samples each"
measure "virsh domstats --vcpu (polled)" poll_domstats
measure "kvmtune exits record --domain" record_domain

# The same guest code under a plain QEMU with a QMP socket.
qemu-system-x86_64 -accel kvm -m 64 -display none -serial "file:$work/plain.txt" \
  -qmp "unix:$work/qmp.sock,server=on,wait=off" -drive "file=$work/boot.img,format=raw,if=ide" \
  >/dev/null 2>&1 & qemu_pid=$!
for _ in $(seq 600); do grep -q K "$work/plain.txt" 2>/dev/null && break; sleep 0.2; done
record_qmp() { "$kvmtune" exits record --qmp "$work/qmp.sock" --quiet --interval 50ms --duration "$((SAMPLES * 50))ms"; }
measure "kvmtune exits record --qmp (with tracepoints)" record_qmp
