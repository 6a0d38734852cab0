# The libvirt hook with a real libvirtd in the lab guest (bash, root); each scenario prints
# `PASS <name>` or fails. libvirtd and virtlogd run from this machine's packages over the 9p
# root, their state in tmpfs mounts over /etc/libvirt and /var/{lib,cache,log}/libvirt. The
# domains are TCG guests with no disk (they sit in the firmware): enough for libvirt to run the
# hook at their start and stop.

. crates/kvmtune-cli/tests/lab/host-lib.sh
GPU=0000:00:10.0 AUDIO=0000:00:10.1
drv() { basename "$(readlink /sys/bus/pci/devices/$1/driver 2>/dev/null)" 2>/dev/null; }
# Every call bounded: a daemon that stops answering fails the scenario with its log, rather
# than holding the guest until the lab's own limit.
V() { timeout 180 virsh -q -c qemu:///system "$@"; }
# The daemon answers (up to 6 minutes: it probes QEMU under TCG when it starts).
answers() {
    local i
    for i in $(seq 12); do timeout 30 virsh -q -c qemu:///system version > /dev/null 2>&1 && return 0; sleep 1; done
    return 1
}
# Where the scenarios are, with the guest's clock: a guest the lab stops at its time limit leaves
# these lines in the test's output, so the step that hung is named.
step() { echo "lab-step ${SECONDS}s: $*"; }
libvirt_log() { tail -n 15 /var/log/libvirt/libvirtd.log 2>/dev/null | grep -v -e MSR -e getaddrinfo; }

# alive PID: the process runs (a zombie does not).
# One read of its stat: a zombie reaped between a test for the file and a grep of it made the
# grep fail, which read as "alive".
alive() { local stat; stat=$(cat /proc/$1/stat 2>/dev/null) || return 1; ! printf '%s\n' "$stat" | grep -q '^[0-9]* (.*) Z '; }

# libvirtd_again OLD_PID: the daemon started again after it died (here by hand, as an init
# without service supervision leaves it).
libvirtd_again() { rm -f /run/libvirtd.pid; timeout 120 /usr/sbin/libvirtd -d; }

libvirt_up() {
    local d
    step "libvirt state to tmpfs"
    for d in /etc/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do
        mkdir -p "$TMPDIR/orig$d"
        timeout 120 cp -a "$d/." "$TMPDIR/orig$d/" 2>/dev/null
        mount -t tmpfs tmpfs "$d" && cp -a "$TMPDIR/orig$d/." "$d/" || fail "tmpfs over $d"
    done
    mkdir -p /dev/hugepages && mount -t hugetlbfs hugetlbfs /dev/hugepages || fail "hugetlbfs"
    # The hook must be there when the daemon starts (libvirt docs/hooks.rst).
    step "hook install"
    timeout 60 kvmtune hook install > $TMPDIR/install || fail "hook install"
    grep -q 'restart' $TMPDIR/install || fail "install does not say to restart libvirtd: $(cat $TMPDIR/install)"
    # Each daemon's -d waits for the daemon it forks to report that it set up: bounded too.
    step "virtlogd"
    timeout 120 /usr/sbin/virtlogd -d || fail "virtlogd"
    # A domain started before virtlogd listens fails to start.
    for _ in $(seq 100); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.1; done
    step "libvirtd"
    timeout 120 /usr/sbin/libvirtd -d || fail "libvirtd: $(libvirt_log)"
    step "libvirtd answers"
    answers || fail "libvirtd does not answer: $(libvirt_log)"
    echo "PASS libvirt_up (hook installed, libvirtd answering)"
}

# domain NAME METADATA: a TCG domain with vCPUs pinned to CPUs 2-3, its emulator on 0-1, and
# 64 MiB of 2 MiB hugepages bound to node 1, which the host has none of until the hook
# allocates them.
domain() {
    cat > $TMPDIR/$1.xml <<XML
<domain type='qemu'>
  <name>$1</name>
  <metadata>$2</metadata>
  <memory unit='MiB'>64</memory>
  <memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages></memoryBacking>
  <vcpu placement='static'>2</vcpu>
  <cputune>
    <vcpupin vcpu='0' cpuset='2'/>
    <vcpupin vcpu='1' cpuset='3'/>
    <emulatorpin cpuset='0-1'/>
  </cputune>
  <numatune><memory mode='strict' nodeset='1'/></numatune>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
XML
    V define $TMPDIR/$1.xml > /dev/null || fail "define $1"
}

HOOKED="<kvmtune:host xmlns:kvmtune='https://kvmtune.dev/xmlns/libvirt/host/1'>
  <kvmtune:isolate housekeeping='0-1'/><kvmtune:hugepages/>
  <kvmtune:vfio><kvmtune:device address='$GPU'/></kvmtune:vfio></kvmtune:host>"

# The host as a scenario starts (console off the GPU, as a plain bind needs), and the check
# that it is so again at the end.
start_state() { echo 0 > /sys/class/vtconsole/vtcon0/bind; state > $TMPDIR/before; }
unchanged() { state > $TMPDIR/after; same $TMPDIR/before $TMPDIR/after || fail "$1"; }

node1_pages() { cat /sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages; }

# libvirt's own cgroups of its domains are libvirt's business, not what the hook must undo
# (machine/ without systemd, machine.slice under it).
state() {
    snapshot | grep -v -e "/sys/fs/cgroup/machine/" -e "/sys/fs/cgroup/machine.slice"
    echo "drivers $(drv $GPU) $(drv $AUDIO)"
}

# The host tasks confined while a hooked domain runs: in kvmtune's own cgroup, or under
# systemd by AllowedCPUs= on its units.
host_tasks_confined() {
    if [ -d /run/systemd/system ]; then
        [ "$(systemctl show --value -p AllowedCPUs system.slice)" = 0-1 ] || fail "system.slice AllowedCPUs=$(systemctl show --value -p AllowedCPUs system.slice)"
        [ "$(cpus_of 1)" = 0-1 ] || fail "systemd itself is on $(cpus_of 1)"
    else
        [ -d /sys/fs/cgroup/kvmtune.host ] || fail "no host cgroup"
    fi
}

# Without the metadata the hook does nothing.
plain_domain() {
    step plain_domain
    domain plain ""
    sed -i 's/<memoryBacking>.*<\/memoryBacking>//; s/<numatune>.*<\/numatune>//' $TMPDIR/plain.xml
    V undefine plain > /dev/null && V define $TMPDIR/plain.xml > /dev/null || fail "redefine plain"
    V start plain > /dev/null || fail "start plain"
    [ "$(journals)" = 0 ] || fail "the hook acted on a domain without metadata"
    V destroy plain > /dev/null || fail "destroy plain"
    [ "$(journals)" = 0 ] || fail "the hook acted on a domain without metadata"
    echo "PASS plain_domain (started and stopped, nothing journaled)"
}

hook_start_stop() {
    step hook_start_stop
    start_state
    domain hooked "$HOOKED"
    V start hooked > /dev/null 2> $TMPDIR/err || fail "start hooked: $(cat $TMPDIR/err) $(libvirt_log)"
    [ "$(drv $GPU) $(drv $AUDIO)" = "vfio-pci vfio-pci" ] || fail "group 2 not on vfio-pci: $(drv $GPU) $(drv $AUDIO)"
    [ "$(node1_pages)" -ge 32 ] || fail "node 1 has $(node1_pages) pages"
    host_tasks_confined
    irqs_avoid '^(2|3)$|^2-3$' > $TMPDIR/irqs || fail "$(cat $TMPDIR/irqs)"
    kvmtune host status --format json | grep -q '"by": "libvirt-hook"' || fail "journals not the hook's: $(kvmtune host status)"
    local running="journals $(journals), node 1 pages $(node1_pages), $(cat $TMPDIR/irqs)"
    V destroy hooked > /dev/null || fail "destroy hooked"
    [ "$(journals)" = 0 ] || fail "journals left: $(kvmtune host status)"
    unchanged "the host is not as it was"
    echo "PASS hook_start_stop (while running: $running; all of it undone at release)"
}

# A request the host cannot meet keeps the domain from starting, with kvmtune's reason in
# libvirt's error, and leaves nothing behind.
failing_prepare() {
    step failing_prepare
    start_state
    domain failing "${HOOKED/$GPU/0000:00:1f.7}"
    if V start failing > /dev/null 2> $TMPDIR/err; then fail "a domain whose device does not exist started"; fi
    grep -q 'kvmtune.*0000:00:1f.7' $TMPDIR/err || fail "libvirt's error does not give kvmtune's reason: $(cat $TMPDIR/err)"
    [ "$(journals)" = 0 ] || fail "journals left: $(kvmtune host status)"
    unchanged "the failed start left changes"
    echo "PASS failing_prepare ($(grep -o 'kvmtune.*' $TMPDIR/err | head -1 | cut -c1-200))"
}

# libvirtd restarts while a hooked domain runs and another has gone meanwhile: the hook's
# changes of the gone one are undone, those of the running one stay until it stops.
reconnect() {
    step reconnect
    start_state
    domain stays "<kvmtune:host xmlns:kvmtune='https://kvmtune.dev/xmlns/libvirt/host/1'><kvmtune:hugepages/></kvmtune:host>"
    V start hooked > /dev/null 2> $TMPDIR/err || fail "start hooked: $(cat $TMPDIR/err)"
    V start stays > /dev/null 2> $TMPDIR/err || fail "start stays: $(cat $TMPDIR/err)"
    [ "$(journals)" = 3 ] || fail "expected 3 journals: $(kvmtune host status)"
    # The daemon dies (kill -9, as a crash or an OOM kill would have it), and one VM with it
    # while it is gone: stopped first, so that it never sees the VM go.
    local daemon i
    daemon=$(pidof libvirtd)
    kill -STOP $daemon
    kill -9 "$(cat /run/libvirt/qemu/hooked.pid)"
    kill -9 $daemon
    for i in $(seq 100); do alive $daemon || break; sleep 0.2; done
    alive $daemon && fail "libvirtd survived kill -9"
    step "libvirtd again"
    libvirtd_again $daemon || fail "libvirtd does not start again: $(libvirt_log)"
    answers || fail "libvirtd does not answer after the restart: $(libvirt_log)"
    # libvirt's own clean-up of the dead domain or the hook's reconcile, whichever comes first.
    for i in $(seq 60); do [ "$(journals)" = 1 ] && break; sleep 1; done
    [ "$(journals)" = 1 ] || fail "after the restart: $(kvmtune host status); $(libvirt_log)"
    [ "$(drv $GPU)" != vfio-pci ] || fail "the gone domain's GPU is still on vfio-pci"
    V destroy stays > /dev/null || fail "destroy stays"
    [ "$(journals)" = 0 ] || fail "journals left: $(kvmtune host status)"
    unchanged "the host is not as it was"
    echo "PASS reconnect"
}

hook_uninstall() {
    step hook_uninstall
    kvmtune hook uninstall > /dev/null || fail "uninstall"
    [ ! -e /etc/libvirt/hooks/qemu.d/kvmtune ] || fail "the hook is still there"
    echo "PASS hook_uninstall"
}
