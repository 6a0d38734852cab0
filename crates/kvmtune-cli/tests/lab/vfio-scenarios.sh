# `kvmtune vfio` scenarios in the lab guest (bash, root); each prints `PASS <name>` or fails.
# Group 2 is the "GPU and its audio": 00:10.0 on bochs-drm, 00:10.1 on snd_hda_intel.

fail() { echo "FAIL: $*"; exit 1; }
drv() { basename "$(readlink /sys/bus/pci/devices/$1/driver 2>/dev/null)" 2>/dev/null; }
GPU=0000:00:10.0 AUDIO=0000:00:10.1

# bochs-drm brings the framebuffer console back each time it gets the GPU back: the plain
# bind's scenarios take it off by hand; --single-gpu does it itself.
console_off() { echo 0 > /sys/class/vtconsole/vtcon0/bind; }

# The drivers, overrides and vfio nodes of group 2: what release must give back.
devices_state() {
    local d
    for d in $GPU $AUDIO; do echo "$d driver=$(drv $d) override=$(cat /sys/bus/pci/devices/$d/driver_override)"; done
    echo "vfio nodes: $(ls /dev/vfio 2>/dev/null | grep -v '^vfio$' | tr '\n' ' ')"
    echo "console: vtcon0 bind=$(cat /sys/class/vtconsole/vtcon0/bind 2>/dev/null) framebuffers: $(ls /sys/class/graphics | tr '\n' ' ')"
}

# The host's only GPU with the console on it: --single-gpu takes the console off, hands the
# group over, and release gives the console and the framebuffer back.
single_gpu() {
    [ "$(cat /sys/class/vtconsole/vtcon0/bind)" = 1 ] || fail "the console is not on the GPU at the start"
    devices_state > $TMPDIR/before
    grep -q 'fb0' $TMPDIR/before || fail "no framebuffer at the start: $(cat $TMPDIR/before)"
    kvmtune vfio bind 00:10.0 --name gpu --single-gpu > $TMPDIR/dry || fail "dry run"
    grep -q 'echo 0 > /sys/class/vtconsole/vtcon0/bind' $TMPDIR/dry || fail "the dry run does not unbind the console: $(cat $TMPDIR/dry)"
    kvmtune vfio bind 00:10.0 --name gpu --single-gpu --apply > /dev/null || fail "bind: $?"
    [ "$(drv $GPU) $(drv $AUDIO)" = "vfio-pci vfio-pci" ] || fail "bound: $(drv $GPU) $(drv $AUDIO)"
    # Unbound, or gone with the framebuffer console itself once no framebuffer is left.
    local during=$(cat /sys/class/vtconsole/vtcon0/bind 2>/dev/null || echo gone)
    [ "$during" != 1 ] || fail "the console is still bound"
    during="vtcon0 bind: $during, framebuffers: $(ls /sys/class/graphics | tr '\n' ' ')"
    kvmtune vfio release gpu > /dev/null || fail "release: $?"
    devices_state | cmp -s - $TMPDIR/before || fail "not given back: $(devices_state)"
    echo "PASS single_gpu (while bound: $during; after release: $(grep console $TMPDIR/before))"
}

# What probe reports for the hand-over, against sysfs read here.
probe_facts() {
    # A client holding the card open, as a display server would.
    sleep 300 < /dev/dri/card0 &
    local holder=$!
    kvmtune probe --format json > $TMPDIR/probe.json || fail "probe"
    kill $holder
    python3 - $TMPDIR/probe.json <<'PY' || fail "probe facts"
import json, os, sys
facts = json.load(open(sys.argv[1]))["host"]
# vfio-pci is built into the lab's 6.12 kernel.
assert facts["iommu"]["vfio_pci"] == {"known": "loaded"}, facts["iommu"]["vfio_pci"]
devices = facts["pci_devices"]["known"]
gpu = next(d for d in devices if d["address"] == "0000:00:10.0")
sysfs = "/sys/bus/pci/devices/0000:00:10.0"
methods = open(sysfs + "/reset_method").read().split() if os.path.exists(sysfs + "/reset_method") else []
assert gpu["reset_methods"] == methods, (gpu["reset_methods"], methods)
assert gpu["drm_card"] == sorted(c for c in os.listdir(sysfs + "/drm") if c.startswith("card"))[0], gpu["drm_card"]
assert gpu["console"] == (open("/sys/class/vtconsole/vtcon0/bind").read().strip() == "1"), gpu["console"]
assert gpu["reset_bug"] is None
assert gpu["drm_clients"] == ["sleep"], gpu["drm_clients"]
print("  GPU:", {k: gpu[k] for k in ("reset_methods", "drm_card", "console", "drm_clients", "boot_vga")})
PY
    echo "PASS probe_facts ($(kvmtune probe | grep -o 'GPU 0000:00:10.0.*' | cut -c1-160))"
}

# The framebuffer console sits on the boot VGA: a plain bind (no --single-gpu) is refused
# until it is off, as on a host with a console on its only GPU.
console_refusal() {
    kvmtune vfio bind 00:10.0 --name gpu --apply > /dev/null 2> $TMPDIR/err
    [ $? = 2 ] || fail "bound the boot VGA under the console"
    grep -q 'console' $TMPDIR/err || fail "refusal: $(cat $TMPDIR/err)"
    echo "  refused: $(head -1 $TMPDIR/err)"
    echo "PASS console_refusal"
}

bind_release() {
    devices_state > $TMPDIR/before
    console_off
    devices_state > $TMPDIR/console-off
    kvmtune vfio bind 00:10.0 --name gpu > $TMPDIR/dry || fail "dry run"
    grep -q "$AUDIO class 0x040300 on snd_hda_intel" $TMPDIR/dry || fail "dry run does not show the audio function: $(cat $TMPDIR/dry)"
    devices_state | cmp -s - $TMPDIR/console-off || fail "a dry run changed the devices"
    kvmtune vfio bind 00:10.0 --name gpu --apply > /dev/null || fail "bind: $?"
    [ "$(drv $GPU) $(drv $AUDIO)" = "vfio-pci vfio-pci" ] || fail "bound: $(drv $GPU) $(drv $AUDIO)"
    [ -e /dev/vfio/2 ] || fail "no /dev/vfio/2"
    kvmtune vfio release gpu > /dev/null || fail "release: $?"
    devices_state | cmp -s - $TMPDIR/before || fail "not given back: $(devices_state)"
    echo "PASS bind_release ($(tr '\n' ' ' < $TMPDIR/before))"
}

# DEV012 against the kernel and QEMU: with the audio function alone on vfio-pci and the VGA
# still on bochs-drm, QEMU refuses the audio function ("group N is not viable") and `check`
# reports DEV012 for a domain that passes it alone; with the whole group on vfio-pci, QEMU
# opens both and `check` says nothing of DEV012 for the domain that passes both. The devices
# end as they began.
group_viability() {
    local rc
    devices_state > $TMPDIR/before
    domain_passing() {
        local hostdevs= d
        for d in "$@"; do
            hostdevs="$hostdevs<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x00' slot='0x10' function='0x${d##*.}'/></source></hostdev>"
        done
        echo "<domain type='kvm'><name>dev012</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os><devices>$hostdevs</devices></domain>"
    }
    qemu_with() {
        local args= d
        for d in "$@"; do args="$args -device vfio-pci,host=$d"; done
        timeout 30 qemu-system-x86_64 -accel tcg -machine q35 -m 64 -nodefaults -display none -S $args > $TMPDIR/qemu.out 2>&1
    }
    domain_passing $AUDIO > $TMPDIR/audio.xml
    domain_passing $GPU $AUDIO > $TMPDIR/both.xml
    echo vfio-pci > /sys/bus/pci/devices/$AUDIO/driver_override
    echo $AUDIO > /sys/bus/pci/devices/$AUDIO/driver/unbind
    echo $AUDIO > /sys/bus/pci/drivers_probe
    [ "$(drv $GPU) $(drv $AUDIO)" = "bochs-drm vfio-pci" ] || fail "half bound: $(drv $GPU) $(drv $AUDIO)"
    qemu_with $AUDIO
    grep -q 'is not viable' $TMPDIR/qemu.out || fail "QEMU took half a group: $(cat $TMPDIR/qemu.out)"
    local refusal=$(grep -o 'group [0-9]* is not viable' $TMPDIR/qemu.out)
    kvmtune check --host live --select DEV012 $TMPDIR/audio.xml > $TMPDIR/check.out 2>&1
    rc=$?
    [ $rc = 1 ] && grep -q 'error\[DEV012\].*bochs-drm' $TMPDIR/check.out || fail "check on half a group (exit $rc): $(cat $TMPDIR/check.out)"
    echo > /sys/bus/pci/devices/$AUDIO/driver_override
    echo $AUDIO > /sys/bus/pci/drivers/vfio-pci/unbind
    echo $AUDIO > /sys/bus/pci/drivers_probe
    kvmtune vfio bind 00:10.0 --name gpu --single-gpu --apply > /dev/null || fail "bind: $?"
    qemu_with $GPU $AUDIO
    rc=$?
    [ $rc = 124 ] && ! grep -q 'not viable' $TMPDIR/qemu.out || fail "QEMU with the whole group (exit $rc): $(cat $TMPDIR/qemu.out)"
    kvmtune check --host live --select DEV012 $TMPDIR/both.xml > $TMPDIR/check.out 2>&1
    rc=$?
    kvmtune vfio release gpu > /dev/null || fail "release: $?"
    [ $rc = 0 ] || fail "check on the whole group (exit $rc): $(cat $TMPDIR/check.out)"
    devices_state | cmp -s - $TMPDIR/before || fail "not given back: $(devices_state)"
    echo "PASS group_viability (QEMU on half the group: $refusal; on all of it: started; DEV012 where QEMU refused)"
}

refusals() {
    local args
    for args in "00:1f.7" "0000:00:99.0" "nonsense"; do
        kvmtune vfio bind $args --apply > /dev/null 2> $TMPDIR/err
        [ $? = 2 ] || fail "bind $args did not exit 2"
        echo "  refused: $args -- $(head -1 $TMPDIR/err)"
    done
    echo "PASS refusals"
}

# The guest's root filesystem comes over virtio-9p: its PCI function is the host's disk.
root_share_refusal() {
    local v address=
    for v in /sys/bus/virtio/devices/*; do
        [ -e "$v/mount_tag" ] && address=$(basename "$(dirname "$(readlink -f "$v")")")
    done
    [ -n "$address" ] || fail "no virtio-9p device"
    kvmtune vfio bind "$address" --name root --apply > /dev/null 2> $TMPDIR/err
    [ $? = 2 ] || fail "bound the root filesystem's device $address"
    grep -q "9p share" $TMPDIR/err || fail "refusal: $(cat $TMPDIR/err)"
    echo "PASS root_share_refusal ($(head -1 $TMPDIR/err))"
}

# The NIC that carries the default route stays with the host (the route is made here on a
# link without a peer; the kernel keeps it, marked linkdown).
default_route_refusal() {
    local nic=0000:00:11.0 iface
    iface=$(ls /sys/bus/pci/devices/$nic/net)
    ip link set "$iface" up && ip addr add 10.0.2.15/24 dev "$iface" && ip route add default via 10.0.2.2 dev "$iface" \
        || fail "cannot route over $iface"
    kvmtune vfio bind $nic --name nic --apply > /dev/null 2> $TMPDIR/err
    local rc=$?
    ip route del default; ip addr del 10.0.2.15/24 dev "$iface"; ip link set "$iface" down
    [ $rc = 2 ] || fail "bound the NIC of the default route"
    grep -q 'default route' $TMPDIR/err || fail "refusal: $(cat $TMPDIR/err)"
    [ "$(drv $nic)" = e1000e ] || fail "the NIC left e1000e: $(drv $nic)"
    echo "PASS default_route_refusal ($(head -1 $TMPDIR/err))"
}

# The NIC alone in its IOMMU group (no default route over it) goes and comes back.
lone_nic() {
    local nic=0000:00:11.0
    local before="$(drv $nic)"
    [ "$before" = e1000e ] || fail "the NIC is on '$before', not e1000e"
    kvmtune vfio bind $nic --name nic --apply > /dev/null || fail "bind: $?"
    [ "$(drv $nic)" = vfio-pci ] || fail "bound: $(drv $nic)"
    local group=$(basename "$(readlink /sys/bus/pci/devices/$nic/iommu_group)")
    [ -e /dev/vfio/$group ] || fail "no /dev/vfio/$group"
    kvmtune vfio release nic > /dev/null || fail "release: $?"
    [ "$(drv $nic)" = e1000e ] || fail "not given back: $(drv $nic)"
    echo "PASS lone_nic ($nic, group $group: e1000e -> vfio-pci -> e1000e)"
}

# Booted without intel_iommu=on (scripts/lab with LAB_IOMMU=off): no groups, a refusal that
# names the parameter.
no_iommu_refusal() {
    [ -z "$(ls /sys/kernel/iommu_groups)" ] || fail "the IOMMU is on"
    kvmtune vfio bind 00:10.0 --name gpu --apply > /dev/null 2> $TMPDIR/err
    [ $? = 2 ] || fail "bound without an IOMMU"
    grep -q 'intel_iommu=on' $TMPDIR/err || fail "refusal: $(cat $TMPDIR/err)"
    echo "PASS no_iommu_refusal ($(head -1 $TMPDIR/err | cut -c1-150))"
}

# The console line is left out here: killed after the console came off but before the GPU's
# driver let go, release writes vtcon0/bind = 1, which this guest's kernel ignores (vt.c
# vt_bind needs a console driver registered at boot, and here even the dummy console is a
# module); the console returns when the GPU's driver registers its framebuffer again, as in
# single_gpu above.
crash_every_step() {
    kill_single_gpu_bind devices_without_console 20 400
    echo "PASS crash_every_step (--single-gpu; $KILLED)"
}

devices_without_console() { devices_state | grep -v '^console'; }

# A round of kill_single_gpu_bind (bind, release, read back) takes seconds (86 s once, beside a
# compile). One that has not ended after LAB_HANG_SECONDS (default 300) has hung: what every
# blocked task waits on (sysrq w, with each kvmtune's kernel stack) goes to the console, and the
# guest powers off, so the test fails within minutes and says where, not at the lab's limit.
watch_for_hang() {
    local what=$1 limit=${LAB_HANG_SECONDS:-300}
    # Everything after the sleep goes through the kernel log, with shell built-ins only: printk
    # writes the serial console by polling, so this reaches the host even if the tty's output
    # or the 9p root (where ps and cat live) is what hangs. sysrq w lists every blocked task
    # with its kernel stack, sysrq l what each CPU runs.
    (
        sleep "$limit"
        echo 7 > /proc/sys/kernel/printk
        echo "<2>lab-hang: $what has not ended after $limit s" > /dev/kmsg
        echo w > /proc/sysrq-trigger
        echo l > /proc/sysrq-trigger
        echo "<2>FAIL: $what hung" > /dev/kmsg
        echo o > /proc/sysrq-trigger
    ) &
    HANG_WATCH=$!
}
end_hang_watch() {
    kill $HANG_WATCH 2>/dev/null
    wait $HANG_WATCH 2>/dev/null
}

# kill_single_gpu_bind STATE RUNS MAX_MS: `vfio bind --single-gpu` of group 2 killed at each
# journal step in turn, then at RUNS random moments within MAX_MS; after each, release must
# leave what the function STATE prints as it was before. Sets KILLED to what was done.
kill_single_gpu_bind() {
    local state=$1 runs=$2 max_ms=$3 before after k=1 rc i killed=0 pid
    exec 3>&2 2>/dev/null
    # The kernel's errors reach the console while the rounds run (the guest boots with
    # loglevel=3, which shows only worse): a lost-timer report from RCU, a pr_err, is then in
    # the host's copy of the console, and scripts/lab runs CMD again in a fresh guest.
    echo 4 > /proc/sys/kernel/printk
    before=$($state)
    while :; do
        watch_for_hang "step $k"
        kvmtune vfio bind 00:10.0 --name gpu --single-gpu --apply --test-kill-at-step $k > /dev/null 2>&1
        rc=$?
        [ $rc = 0 ] || [ $rc = 137 ] || fail "step $k: bind exited $rc"
        if [ -e /run/kvmtune/gpu.vfio.journal ]; then
            kvmtune vfio release gpu > /dev/null || fail "step $k: release failed"
        fi
        after=$($state)
        end_hang_watch
        [ "$after" = "$before" ] || fail "killed at step $k: $after"
        [ $rc = 0 ] && break
        echo "lab-step ${SECONDS}s: killed at step $k, released"
        k=$((k + 1))
    done
    local wait_ms
    for i in $(seq $runs); do
        wait_ms=$((RANDOM % max_ms))
        watch_for_hang "random kill $i (after $wait_ms ms)"
        kvmtune vfio bind 00:10.0 --name gpu --single-gpu --apply > /dev/null 2>&1 &
        pid=$!
        sleep "0.$(printf '%03d' $wait_ms)"
        kill -9 $pid 2>/dev/null && killed=$((killed + 1))
        wait $pid
        if [ -e /run/kvmtune/gpu.vfio.journal ]; then
            kvmtune vfio release gpu > /dev/null || fail "random kill $i: release failed"
        fi
        after=$($state)
        end_hang_watch
        [ "$after" = "$before" ] || fail "random kill $i: $after"
        echo "lab-step ${SECONDS}s: random kill $i after $wait_ms ms, released"
    done
    exec 2>&3
    KILLED="killed at each of $((k - 1)) steps, then $runs random kills of which $killed mid-way"
}
