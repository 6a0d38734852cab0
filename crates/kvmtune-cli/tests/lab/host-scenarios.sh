# The `kvmtune host` scenarios run in the lab guest (bash, as root, kvmtune on PATH); each
# prints `PASS <name>` or fails with `FAIL: ...`. Sourced after host-lib.sh.
# The VM: CPUs 2-3 (node 1), host 0-1, 16 hugepages of 2 MiB on node 1.

VM_ARGS="--name win --cpus 2-3 --housekeeping 0-1 --hugepages 2M:16@1"
NODE1_2M=/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages

start_sleepers() {
    sleep 100000 & SLEEPER=$!
    taskset -c 0,2 sleep 100000 & PINNED=$!
    sleep 0.2
}

basic() {
    start_sleepers
    snapshot > $TMPDIR/before
    kvmtune host prepare $VM_ARGS > $TMPDIR/dry || fail "dry run: $?"
    grep -q 'smp_affinity_list: 0-3 → 0-1' $TMPDIR/dry || fail "dry run shows no IRQ write: $(head -20 $TMPDIR/dry)"
    snapshot > $TMPDIR/after-dry
    same $TMPDIR/before $TMPDIR/after-dry || fail "a dry run changed the host"
    [ "$(journals)" = 0 ] || fail "a dry run left a journal"

    kvmtune host prepare $VM_ARGS --apply || fail "prepare: $?"
    [ "$(cpus_of $SLEEPER)" = 0-1 ] || fail "sleeper on $(cpus_of $SLEEPER)"
    # v2 keeps what the task asked for within the cgroup (0); v1 gives it the cpuset's CPUs.
    case "$(cpus_of $PINNED)" in 0|0-1) ;; *) fail "pinned sleeper on $(cpus_of $PINNED)";; esac
    [ "$(cpus_of 2)" = 0-1 ] || fail "kthreadd on $(cpus_of 2)"
    irqs_avoid '2|3' || fail "IRQs still on the VM's CPUs"
    [ "$(cat /proc/irq/default_smp_affinity)" = 3 ] || fail "default_smp_affinity $(cat /proc/irq/default_smp_affinity)"
    [ "$(cat /sys/devices/virtual/workqueue/cpumask)" = 3 ] || fail "workqueue mask $(cat /sys/devices/virtual/workqueue/cpumask)"
    [ "$(cat $NODE1_2M)" = 16 ] || fail "node 1 has $(cat $NODE1_2M) hugepages"
    kvmtune host status | grep -q '^win: applied' || fail "status: $(kvmtune host status)"
    kvmtune host status --format json | grep -q '"complete": true' || fail "status json"
    kvmtune host prepare $VM_ARGS --apply 2>$TMPDIR/err && fail "prepared twice"
    grep -q 'already has changes applied' $TMPDIR/err || fail "second prepare: $(cat $TMPDIR/err)"

    kvmtune host release win || fail "release: $?"
    snapshot > $TMPDIR/after
    same $TMPDIR/before $TMPDIR/after || fail "release did not restore the host"
    [ "$(journals)" = 0 ] || fail "release left a journal"
    echo "PASS basic ($(grep -c . $TMPDIR/before) snapshot lines)"
}

# crash_every_step [LAST]: kill -9 at each journal step in turn (up to step LAST, then one
# whole prepare and its release).
crash_every_step() {
    local last=${1:-0} began=$SECONDS
    # bash reports each killed prepare on stderr: noise here.
    exec 3>&2 2>/dev/null
    snapshot > $TMPDIR/before
    local k=1 rc
    while :; do
        if [ "$last" -gt 0 ] && [ $k -gt "$last" ]; then
            kvmtune host prepare $VM_ARGS --apply > /dev/null 2>&1
        else
            kvmtune host prepare $VM_ARGS --apply --test-kill-at-step $k > /dev/null 2>&1
        fi
        rc=$?
        if [ $rc = 0 ]; then
            kvmtune host release win > /dev/null || fail "release after a full prepare"
            break
        fi
        [ $rc = 137 ] || fail "step $k: prepare exited $rc, not killed"
        if [ "$(journals)" = 1 ]; then
            kvmtune host status | grep -qE "^win: (INTERRUPTED|applied)" || fail "step $k: status: $(kvmtune host status)"
            kvmtune host release win > /dev/null || fail "step $k: release failed"
        fi
        snapshot > $TMPDIR/after
        same $TMPDIR/before $TMPDIR/after || fail "killed at step $k: not restored"
        # Progress for a scenario stopped at the lab's time limit.
        [ $((k % 20)) != 0 ] || echo "lab-step $((SECONDS - began))s: crash_every_step past step $k"
        k=$((k + 1))
    done
    snapshot > $TMPDIR/after
    same $TMPDIR/before $TMPDIR/after || fail "after the full run"
    exec 2>&3
    echo "PASS crash_every_step (killed at each of $((k - 1)) steps, $((SECONDS - began)) s)"
}

# crash_random [RUNS]: RUNS (50) prepares, each killed at a random moment.
crash_random() {
    local runs=${1:-50} began=$SECONDS
    exec 3>&2 2>/dev/null
    snapshot > $TMPDIR/before
    local start end span i delay killed=0
    start=$(date +%s%N)
    kvmtune host prepare $VM_ARGS --apply > /dev/null || fail "timing run"
    end=$(date +%s%N)
    kvmtune host release win > /dev/null
    span=$(( (end - start) / 1000000 ))
    for i in $(seq $runs); do
        delay=$(( RANDOM % (span + 1) ))
        kvmtune host prepare $VM_ARGS --apply > /dev/null 2>&1 &
        local pid=$!
        sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
        kill -9 $pid 2>/dev/null && killed=$((killed + 1))
        wait $pid 2>/dev/null
        if [ "$(journals)" = 1 ]; then kvmtune host release win > /dev/null || fail "release after kill $i"; fi
        snapshot > $TMPDIR/after
        same $TMPDIR/before $TMPDIR/after || fail "random kill $i after ${delay} ms: not restored"
        [ $((i % 10)) != 0 ] || echo "lab-step $((SECONDS - began))s: crash_random past run $i"
    done
    exec 2>&3
    echo "PASS crash_random ($runs runs, $killed killed mid-way, prepare takes ${span} ms, $((SECONDS - began)) s)"
}

two_vms() {
    start_sleepers
    snapshot > $TMPDIR/before
    local order
    for order in a-first b-first; do
        kvmtune host prepare --name a --cpus 2 --hugepages 2M:8@1 --apply > /dev/null || fail "prepare a"
        kvmtune host prepare --name b --cpus 3 --hugepages 2M:4@1 --apply > /dev/null || fail "prepare b"
        [ "$(cpus_of $SLEEPER)" = 0-1 ] || fail "both prepared: sleeper on $(cpus_of $SLEEPER)"
        [ "$(cat $NODE1_2M)" = 12 ] || fail "both prepared: $(cat $NODE1_2M) hugepages"
        if [ $order = a-first ]; then
            kvmtune host release a > /dev/null || fail "release a"
            [ "$(cpus_of $SLEEPER)" = 0-2 ] || fail "a released: sleeper on $(cpus_of $SLEEPER), not 0-2"
            [ "$(cat /sys/devices/virtual/workqueue/cpumask)" = 7 ] || fail "a released: workqueue mask $(cat /sys/devices/virtual/workqueue/cpumask)"
            irqs_avoid '3' > /dev/null || fail "a released: IRQs back on b's CPU"
            [ "$(cat $NODE1_2M)" = 4 ] || fail "a released: $(cat $NODE1_2M) hugepages, not b's 4"
            kvmtune host release b > /dev/null || fail "release b"
        else
            kvmtune host release b > /dev/null || fail "release b"
            [ "$(cpus_of $SLEEPER)" = 0-1,3 ] || fail "b released: sleeper on $(cpus_of $SLEEPER), not 0-1,3"
            [ "$(cat /sys/devices/virtual/workqueue/cpumask)" = b ] || fail "b released: workqueue mask $(cat /sys/devices/virtual/workqueue/cpumask)"
            [ "$(cat $NODE1_2M)" = 8 ] || fail "b released: $(cat $NODE1_2M) hugepages, not a's 8"
            kvmtune host release a > /dev/null || fail "release a"
        fi
        snapshot > $TMPDIR/after
        same $TMPDIR/before $TMPDIR/after || fail "two VMs, $order: not restored"
    done
    echo "PASS two_vms (both orders)"
}

# refuse ARGS...: exit 2, a message, nothing written, no journal.
refuse() {
    kvmtune host prepare "$@" > /dev/null 2> $TMPDIR/err
    local rc=$?
    [ $rc = 2 ] || fail "prepare $* exited $rc, not 2"
    [ -s $TMPDIR/err ] || fail "prepare $*: no message"
    echo "  refused: $* -- $(head -1 $TMPDIR/err)"
}

refusals() {
    snapshot > $TMPDIR/before
    local as_root nobody="setpriv --reuid 65534 --regid 65534 --clear-groups"
    for as_root in yes no; do
        local run=""
        [ $as_root = no ] && run="$nobody"
        for args in "--cpus 2-3 --housekeeping 1-2" "--cpus 7" "--cpus 0-3" "--cpus 2-3 --hugepages 2M:4@5" \
                    "--cpus 2-3 --governor nonsense" "--cpus 2-3 --hugepages 3M:4@1" \
                    "--cpus 2-3 --hugepages 2M:100000@1"; do
            # As root with --apply; as nobody without (with it, nobody is refused for not being root).
            $run kvmtune host prepare --name bad $args $([ $as_root = yes ] && echo --apply) > /dev/null 2> $TMPDIR/err
            local rc=$?
            [ $rc = 2 ] || fail "($as_root) $args exited $rc, not 2"
            echo "  refused ($([ $as_root = yes ] && echo root || echo nobody)): $args -- $(tail -1 $TMPDIR/err)"
        done
    done
    # Not a refusal but a failure midway: as many 2 MiB hugepages as node 1 has memory passes
    # the check (it is not more than the node has), but the kernel keeps some of that memory
    # for itself, so it gives fewer even after compaction; what was done before is rolled back
    # and prepare exits 2.
    local node1_pages=$(awk '/MemTotal/ { print int($4 / 2048) }' /sys/devices/system/node/node1/meminfo)
    kvmtune host prepare --name big --cpus 2-3 --hugepages 2M:$node1_pages@1 --apply > /dev/null 2> $TMPDIR/err
    [ $? = 2 ] || fail "a short hugepage allocation did not exit 2"
    grep -q 'the kernel gave' $TMPDIR/err && grep -q 'undone' $TMPDIR/err || fail "short allocation: $(cat $TMPDIR/err)"
    echo "  failed midway and rolled back: $(head -1 $TMPDIR/err)"
    $nobody kvmtune host prepare --name bad --cpus 2-3 --apply 2> $TMPDIR/err && fail "nobody could apply"
    grep -q 'needs root' $TMPDIR/err || fail "nobody: $(cat $TMPDIR/err)"
    snapshot > $TMPDIR/after
    same $TMPDIR/before $TMPDIR/after || fail "a refusal changed the host"
    [ "$(journals)" = 0 ] || fail "a refusal left a journal"
    echo "PASS refusals"
}

# irqbalance's banned CPUs, as its socket's `setup` answer gives them (a hex mask).
irqbalance_banned() {
    python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1]); s.sendall(b"setup"); s.shutdown(socket.SHUT_WR)
print(s.recv(65536).decode())' "$1" | sed -n 's/.*BANNED \([0-9a-fA-F,]*\).*/\1/p'
}

irqbalance_ban() {
    [ -x "$LAB_IRQBALANCE" ] || fail "no irqbalance in the lab cache (scripts/test.sh downloads it)"
    mkdir -p /run/irqbalance
    # A ban takes effect at irqbalance's next rescan: every second here, not every 10 s.
    "$LAB_IRQBALANCE" --foreground --interval=1 > $TMPDIR/irqbalance.log 2>&1 &
    local pid=$! i
    local socket=/run/irqbalance/irqbalance$pid.sock
    # Every wait polls, up to a minute: in CI this TCG guest shares 2 cores with two others, and
    # irqbalance's start and its rescans then take far longer than their nominal times.
    for i in $(seq 600); do [ -S $socket ] && break; sleep 0.1; done
    [ -S $socket ] || fail "irqbalance made no socket: $(cat $TMPDIR/irqbalance.log)"
    local before during after
    before=$(irqbalance_banned $socket)
    kvmtune host prepare $VM_ARGS --apply > $TMPDIR/out || fail "prepare with irqbalance: $?"
    grep -q irqbalance $TMPDIR/out && fail "irqbalance was not reached: $(cat $TMPDIR/out)"
    for i in $(seq 120); do
        during=$(irqbalance_banned $socket)
        [ "$(echo "$during" | sed "s/^0*//")" = c ] && break
        sleep 0.5
    done
    kvmtune host release win > /dev/null || fail "release with irqbalance"
    for i in $(seq 120); do
        after=$(irqbalance_banned $socket)
        [ "$after" = "$before" ] && break
        sleep 0.5
    done
    kill $pid
    [ "$(echo "$during" | sed "s/^0*//")" = c ] || fail "irqbalance bans $during while the VM runs, not c (CPUs 2-3)"
    [ "$after" = "$before" ] || fail "irqbalance bans $after after release, not $before"
    echo "PASS irqbalance_ban (banned mask $before -> $during -> $after)"
}
