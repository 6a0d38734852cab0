# `kvmtune vfio` scenarios in the lab guest (bash, root); each prints `PASS <name>` or fails.
# Group 2 is the "GPU and its audio": 00:10.0 on bochs-drm, 00:10.1 on snd_hda_intel.

fail() { echo "FAIL: $*"; exit 1; }
drv() { basename "$(readlink /sys/bus/pci/devices/$1/driver 2>/dev/null)" 2>/dev/null; }
GPU=0000:00:10.0 AUDIO=0000:00:10.1

# bochs-drm brings the framebuffer console back each time it gets the GPU back: take it off
# before each bind (the single-GPU hand-over that would do this is not built yet).
console_off() { echo 0 > /sys/class/vtconsole/vtcon0/bind; }

# The drivers, overrides and vfio nodes of group 2: what release must give back.
devices_state() {
    local d
    for d in $GPU $AUDIO; do echo "$d driver=$(drv $d) override=$(cat /sys/bus/pci/devices/$d/driver_override)"; done
    echo "vfio nodes: $(ls /dev/vfio 2>/dev/null | grep -v '^vfio$' | tr '\n' ' ')"
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
    kvmtune vfio bind 00:10.0 --name gpu > $TMPDIR/dry || fail "dry run"
    grep -q "$AUDIO class 0x040300 on snd_hda_intel" $TMPDIR/dry || fail "dry run does not show the audio function: $(cat $TMPDIR/dry)"
    devices_state | cmp -s - $TMPDIR/before || fail "a dry run changed the devices"
    kvmtune vfio bind 00:10.0 --name gpu --apply > /dev/null || fail "bind: $?"
    [ "$(drv $GPU) $(drv $AUDIO)" = "vfio-pci vfio-pci" ] || fail "bound: $(drv $GPU) $(drv $AUDIO)"
    [ -e /dev/vfio/2 ] || fail "no /dev/vfio/2"
    kvmtune vfio release gpu > /dev/null || fail "release: $?"
    devices_state | cmp -s - $TMPDIR/before || fail "not given back: $(devices_state)"
    echo "PASS bind_release ($(tr '\n' ' ' < $TMPDIR/before))"
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

crash_every_step() {
    exec 3>&2 2>/dev/null
    devices_state > $TMPDIR/before
    local k=1 rc
    while :; do
        console_off
        kvmtune vfio bind 00:10.0 --name gpu --apply --test-kill-at-step $k > /dev/null 2>&1
        rc=$?
        [ $rc = 0 ] || [ $rc = 137 ] || fail "step $k: bind exited $rc"
        if ls /run/kvmtune/gpu.vfio.journal > /dev/null 2>&1; then
            kvmtune vfio release gpu > /dev/null || fail "step $k: release failed"
        fi
        devices_state | cmp -s - $TMPDIR/before || fail "killed at step $k: $(devices_state)"
        [ $rc = 0 ] && break
        k=$((k + 1))
    done
    local random killed=0 pid i
    for i in $(seq 20); do
        console_off
        kvmtune vfio bind 00:10.0 --name gpu --apply > /dev/null 2>&1 &
        pid=$!
        sleep "0.$(printf '%03d' $((RANDOM % 400)))"
        kill -9 $pid 2>/dev/null && killed=$((killed + 1))
        wait $pid
        if ls /run/kvmtune/gpu.vfio.journal > /dev/null 2>&1; then
            kvmtune vfio release gpu > /dev/null || fail "random kill $i: release failed"
        fi
        devices_state | cmp -s - $TMPDIR/before || fail "random kill $i: $(devices_state)"
    done
    exec 2>&3
    echo "PASS crash_every_step (killed at each of $((k - 1)) steps, then 20 random kills of which $killed mid-way)"
}
