# Run in the lab guest by bench/host-vs-vfio-isolate.sh (after tests/lab/host-lib.sh).
# shellcheck shell=bash

# Each prepare is one process (no shell function around it), so that kill -9 hits the tool itself.
peer=(env PYTHONPATH=$PEER /usr/bin/python3 -c 'import vfio_isolate; vfio_isolate.run_cli()')
peer_prepare=("${peer[@]}" -u $TMPDIR/undo cpuset-create --cpus C0-1 /host.slice move-tasks / /host.slice irq-affinity mask C2-3)
ours_prepare=(kvmtune host prepare --name win --cpus 2-3 --housekeeping 0-1 --apply)
peer_prepare() { "${peer_prepare[@]}"; }
peer_release() { "${peer[@]}" restore $TMPDIR/undo; rm -f $TMPDIR/undo; }
ours_prepare() { "${ours_prepare[@]}"; }
ours_release() { kvmtune host release win; }

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# mean_ms PREPARE RELEASE: mean wall time of each over $RUNS rounds, process start included.
mean_ms() {
    local prepare=0 release=0 start i
    for i in $(seq "$RUNS"); do
        start=$(now_ms); $1 > /dev/null 2>&1 || echo "$1 failed" >&2; prepare=$((prepare + $(now_ms) - start))
        start=$(now_ms); $2 > /dev/null 2>&1 || echo "$2 failed" >&2; release=$((release + $(now_ms) - start))
    done
    echo "$((prepare / RUNS)) $((release / RUNS))"
}

# after_kill NAME PREPARE UNDO TRIGGER: start PREPARE, kill -9 it as soon as TRIGGER holds (its
# first changes are visible), undo with what the tool left (UNDO); prints how many snapshot lines
# still differ from before.
after_kill() {
    snapshot > $TMPDIR/before
    local -n command=$2
    "${command[@]}" > /dev/null 2>&1 &
    local pid=$!
    until $4 || ! kill -0 $pid 2>/dev/null; do sleep 0.01; done
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    $3 > /dev/null 2>&1
    snapshot > $TMPDIR/after
    same $TMPDIR/before $TMPDIR/after > $TMPDIR/changed-$1
    grep -c . $TMPDIR/changed-$1 || true
}

# kvmtune: a third of its journal written (begin + before/done pairs).
ours_midway() { [ "$(cat /run/kvmtune/win.journal 2>/dev/null | wc -l)" -ge 20 ]; }
# vfio-isolate: its cpuset made (its first action; the moves and IRQ masks follow).
peer_midway() { [ -d /sys/fs/cgroup/cpuset/host.slice ]; }

peer_undo_if_any() { [ -f $TMPDIR/undo ] && peer_release; }
ours_undo_if_any() { [ -n "$(ls /run/kvmtune/*.journal 2>/dev/null)" ] && ours_release; }

compare() {
    exec 3>&2 2>/dev/null
    sleep 100000 & sleep 100000 &
    local ours_p ours_r peer_p peer_r
    set -- $(mean_ms ours_prepare ours_release); ours_p=$1 ours_r=$2
    set -- $(mean_ms peer_prepare peer_release); peer_p=$1 peer_r=$2
    echo "runs: $RUNS each, cgroup v1, 4 CPUs (TCG), VM on 2-3"
    printf '%-14s %12s %12s\n' tool "prepare ms" "release ms"
    printf '%-14s %12s %12s\n' kvmtune "$ours_p" "$ours_r" vfio-isolate "$peer_p" "$peer_r"
    echo "kill -9 midway through each tool's changes, then each tool's own undo; snapshot lines still changed:"
    local round
    for round in 1 2 3; do
        echo "  round $round: kvmtune $(after_kill ours ours_prepare ours_undo_if_any ours_midway), vfio-isolate $(after_kill peer peer_prepare peer_undo_if_any peer_midway) (its undo file: $([ -f $TMPDIR/undo ] && echo present || echo none))"
        rm -f $TMPDIR/undo
        # What vfio-isolate left is put back by hand between rounds (its cpuset removed, tasks back).
        if [ -d /sys/fs/cgroup/cpuset/host.slice ]; then
            for pid in $(cat /sys/fs/cgroup/cpuset/host.slice/cgroup.procs); do echo $pid > /sys/fs/cgroup/cpuset/cgroup.procs; done
            rmdir /sys/fs/cgroup/cpuset/host.slice
        fi
        for f in /proc/irq/[0-9]*/smp_affinity_list; do echo 0-3 > $f; done 2>/dev/null
    done
    echo "what vfio-isolate left changed in the last round (first lines):"
    head -4 $TMPDIR/changed-peer
}
