# Helpers for the `kvmtune host` tests in the lab guest (sourced by bash there).
# A snapshot is every piece of kernel state `host prepare` may touch, one `key value` line each;
# task lines are keyed by thread, and only threads alive in both snapshots are compared.

# Every thread's allowed CPUs and cgroup, as `task/proc/<pid>/task/<tid>/{status,cgroup}:` lines,
# in one awk (each process costs tens of milliseconds under TCG, and a snapshot is taken after
# every kill of the crash scenarios). The CPUs of threads only the kernel may move are left out
# (PF_NO_SETAFFINITY in /proc/<tid>/stat's flags: per-CPU kthreads, workqueue rescuers): kvmtune
# skips them as sched_setaffinity does, and a rescuer of an unbound workqueue takes the
# workqueue mask (in the snapshot) or the CPUs of the pool it last rescued work for, whenever
# the kernel decides. A thread that ends while it is read is left out (getline fails quietly).
task_lines() {
    awk 'BEGIN {
        for (i = 1; i < ARGC; i++) {
            dir = ARGV[i]; sub(/stat$/, "", dir)
            if ((getline stat < ARGV[i]) <= 0) { close(ARGV[i]); continue }
            close(ARGV[i])
            rest = stat; sub(/^.*\) /, "", rest); split(rest, field, " ")
            kernel_bound = int(field[7] / 67108864) % 2 == 1
            while (!kernel_bound && (getline line < (dir "status")) > 0)
                if (line ~ /^Cpus_allowed_list:/) print "task" dir "status:" line
            close(dir "status")
            while ((getline line < (dir "cgroup")) > 0)
                if (line ~ /^0::|cpuset/) print "task" dir "cgroup:" line
            close(dir "cgroup")
        }
        exit
    }' /proc/[0-9]*/task/[0-9]*/stat
}

snapshot() {
    {
        grep -H . /proc/irq/*/smp_affinity_list /proc/irq/default_smp_affinity \
            /sys/devices/virtual/workqueue/cpumask /sys/bus/workqueue/devices/writeback/cpumask \
            /sys/devices/system/node/node*/hugepages/hugepages-*/nr_hugepages \
            /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages
        grep -H . /sys/fs/cgroup/cgroup.subtree_control /sys/fs/cgroup/*/cpuset.cpus \
            /sys/fs/cgroup/cpuset/*/cpuset.cpus /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null
        task_lines
        # Under systemd (scripts/lab --init systemd), the property it confines host units with.
        # One `systemctl show` for the four (each systemctl costs most of a second under TCG).
        if [ -d /run/systemd/system ]; then
            systemctl show -p Id -p AllowedCPUs system.slice user.slice init.scope machine.slice |
                awk 'BEGIN { RS = "" } {
                    id = ""; cpus = ""; n = split($0, line, "\n")
                    for (i = 1; i <= n; i++) {
                        if (line[i] ~ /^Id=/) id = substr(line[i], 4)
                        if (line[i] ~ /^AllowedCPUs=/) cpus = substr(line[i], 13)
                    }
                    print "unit-" id ": AllowedCPUs=" cpus
                }'
        fi
    } | sed 's/:[[:space:]]*/ /'
    # Under systemd the second level is its units, which come and go on their own (libvirtd
    # leaves after 120 s idle); the cgroups kvmtune could leave behind are top-level ones there.
    local depth=2
    [ -d /run/systemd/system ] && depth=1
    find /sys/fs/cgroup -maxdepth $depth -type d | sed 's/^/dir /'
}

# same BEFORE AFTER: identical but for threads that exist in only one of them.
same() {
    awk '{ key = ($1 == "dir") ? $2 : $1 }
         NR == FNR { a[key] = $0; next }
         { b[key] = $0 }
         END {
             bad = 0
             for (k in a) if (!(k in b) && k !~ /^task/) { print "only before: " a[k]; bad = 1 }
             for (k in b) if (!(k in a) && k !~ /^task/) { print "only after: " b[k]; bad = 1 }
             for (k in a) if ((k in b) && a[k] != b[k]) { print "changed: " a[k] " -> " b[k]; bad = 1 }
             exit bad
         }' "$1" "$2"
}

fail() { echo "FAIL: $*"; exit 1; }

cpus_of() { sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "/proc/$1/status"; }

# Every IRQ whose affinity kvmtune could move avoids the CPUs in $1 (a grep -E pattern).
irqs_avoid() {
    local moved=0 stuck=0 f
    for f in /proc/irq/[0-9]*/smp_affinity_list; do
        if grep -qE "$1" "$f"; then stuck=$((stuck + 1)); else moved=$((moved + 1)); fi
    done
    echo "irqs: $moved off the VM's CPUs, $stuck left (refused)"
    [ "$moved" -gt 10 ]
}

journals() { ls /run/kvmtune/*.journal 2>/dev/null | wc -l; }
