# The `kvmtune host` scenarios for a guest whose PID 1 is systemd (scripts/lab --init systemd),
# sourced after host-lib.sh and host-scenarios.sh (whose scenarios run here too). Each prints
# `PASS <name> ...` or fails with `FAIL: ...`.

UNITS="system.slice user.slice init.scope"

# A step's start, with the guest's uptime: a scenario stopped at its limit names the step.
lab_step() { echo "lab-step $(cut -d' ' -f1 /proc/uptime)s: $*"; }

allowed_cpus() { systemctl show --value -p AllowedCPUs "$1"; }

units_line() {
    local unit line=""
    for unit in $UNITS; do line="$line $unit=[$(allowed_cpus $unit)]"; done
    echo "${line# }"
}

# pid_of UNIT: the main process of a running service.
pid_of() { systemctl show --value -p MainPID "$1"; }

# Sleepers started the way systemd starts services and sessions: one in system.slice, one in
# user.slice, and a stand-in VM in machine.slice (where libvirt puts its domains' scopes).
start_units() {
    systemd-run --quiet --unit=lab-system sleep 100000
    systemd-run --quiet --unit=lab-user --slice=user.slice sleep 100000
    systemd-run --quiet --unit=lab-vm --slice=machine.slice sleep 100000
}

stop_units() { systemctl stop lab-system lab-user lab-vm 2> /dev/null; true; }

# Prepare and release as systemd hosts do them: AllowedCPUs= at runtime on the three units.
systemd_slices() {
    start_units
    local system user vm
    system=$(pid_of lab-system) user=$(pid_of lab-user) vm=$(pid_of lab-vm)
    grep -q '^0::/system.slice/lab-system.service$' /proc/$system/cgroup || fail "lab-system in $(cat /proc/$system/cgroup)"
    grep -q '^0::/user.slice/lab-user.service$' /proc/$user/cgroup || fail "lab-user in $(cat /proc/$user/cgroup)"
    local before during after
    before=$(units_line)
    snapshot > $TMPDIR/before
    kvmtune host prepare $VM_ARGS > $TMPDIR/dry || fail "dry run: $?"
    grep -q 'systemd system.slice AllowedCPUs:  → 0-1' $TMPDIR/dry || fail "the plan sets no unit property: $(cat $TMPDIR/dry)"
    [ "$(units_line)" = "$before" ] || fail "a dry run changed $(units_line)"

    kvmtune host prepare $VM_ARGS --apply > $TMPDIR/out || fail "prepare: $?"
    during=$(units_line)
    [ "$during" = "system.slice=[0-1] user.slice=[0-1] init.scope=[0-1]" ] || fail "while prepared: $during"
    [ "$(cpus_of $system)" = 0-1 ] || fail "the system.slice sleeper is on $(cpus_of $system)"
    [ "$(cpus_of $user)" = 0-1 ] || fail "the user.slice sleeper is on $(cpus_of $user)"
    [ "$(cpus_of 1)" = 0-1 ] || fail "systemd itself is on $(cpus_of 1)"
    # The VM's slice keeps every CPU (its own pinning is libvirt's business).
    [ "$(cpus_of $vm)" = 0-3 ] || fail "the machine.slice sleeper is on $(cpus_of $vm)"
    [ "$(cat /sys/fs/cgroup/machine.slice/cpuset.cpus 2>/dev/null)" = "" ] ||
        fail "machine.slice has cpuset.cpus $(cat /sys/fs/cgroup/machine.slice/cpuset.cpus)"

    kvmtune host release win > /dev/null || fail "release: $?"
    after=$(units_line)
    [ "$after" = "$before" ] || fail "after release: $after, before: $before"
    snapshot > $TMPDIR/after
    same $TMPDIR/before $TMPDIR/after || fail "release did not restore the host"
    [ "$(cpus_of $system)" = 0-3 ] && [ "$(cpus_of $user)" = 0-3 ] || fail "sleepers on $(cpus_of $system) and $(cpus_of $user) after release"
    stop_units
    echo "PASS systemd_slices (before: $before; during: $during)"
}

# user.slice before anyone has logged in (the libvirt hook starting a VM at boot): inactive, no
# cgroup. Prepare confines it all the same (a login while the VM runs would start it on the VM's
# CPUs otherwise) and release gives it its empty AllowedCPUs= back; systemd, which made the
# slice's cgroup directory when the property was set, keeps that directory, with no task in it
# (seen here on systemd 252). Nothing else differs, and the unit stays inactive.
inactive_user_slice() {
    [ "$(systemctl show --value -p ActiveState user.slice)" = inactive ] || fail "user.slice is $(systemctl show --value -p ActiveState user.slice) at boot"
    [ ! -d /sys/fs/cgroup/user.slice ] || fail "user.slice has a cgroup at boot"
    snapshot > $TMPDIR/before
    kvmtune host prepare $VM_ARGS --apply > /dev/null || fail "prepare: $?"
    [ "$(allowed_cpus user.slice)" = 0-1 ] || fail "user.slice has AllowedCPUs=$(allowed_cpus user.slice) while prepared"
    kvmtune host release win > /dev/null || fail "release: $?"
    [ "$(systemctl show --value -p ActiveState user.slice)" = inactive ] || fail "release left user.slice $(systemctl show --value -p ActiveState user.slice)"
    [ -z "$(cat /sys/fs/cgroup/user.slice/cgroup.procs)" ] || fail "tasks in user.slice: $(cat /sys/fs/cgroup/user.slice/cgroup.procs)"
    snapshot > $TMPDIR/after
    same $TMPDIR/before $TMPDIR/after > $TMPDIR/diff
    [ "$(cat $TMPDIR/diff)" = "only after: dir /sys/fs/cgroup/user.slice" ] || fail "after release: $(cat $TMPDIR/diff)"
    echo "PASS inactive_user_slice (released; systemd keeps user.slice's cgroup, with no task in it)"
}

# kill -9 at every journal step, then at RUNS random moments, with a service running in
# system.slice and one in user.slice (as on a host with a login), each followed by release.
crash_with_units() {
    local runs=$1
    start_units
    crash_every_step
    crash_random "$runs"
    stop_units
    echo "PASS crash_with_units"
}

# package_installed DEB: the Debian package of scripts/package-deb.sh, installed into the
# guest's overlay and used as a user would: the exporter's unit started by systemd and serving
# /metrics, its sandbox measured, a man page, the bash completion; then removed.
package_installed() {
    local deb=$1 port=10947
    [ ! -e /usr/bin/kvmtune ] || fail "/usr/bin/kvmtune is there before the package"
    # man-db's trigger would rebuild the whole man database through 9p: not this package's test.
    rm -f /var/lib/man-db/auto-update
    lab_step "dpkg -i"
    timeout 300 dpkg -i "$deb" > $TMPDIR/dpkg 2>&1 || fail "dpkg -i: $(cat $TMPDIR/dpkg)"
    lab_step "installed"
    systemctl is-enabled kvmtune-exporter > $TMPDIR/enabled 2>&1
    [ "$(cat $TMPDIR/enabled)" = disabled ] || fail "the exporter is $(cat $TMPDIR/enabled) after install, not disabled"
    timeout 120 systemctl start kvmtune-exporter || fail "start: $(journalctl -u kvmtune-exporter --no-pager | tail -5)"
    lab_step "exporter started"
    local i
    for i in $(seq 100); do
        curl -sf http://127.0.0.1:$port/metrics > $TMPDIR/metrics && break
        sleep 0.3
    done
    grep -q '^kvmtune_host_hugepages_free' $TMPDIR/metrics ||
        fail "no host facts in /metrics: $(head -5 $TMPDIR/metrics; journalctl -u kvmtune-exporter --no-pager | tail -5)"
    [ "$(systemctl show --value -p MainPID kvmtune-exporter)" != 0 ] || fail "the exporter is not running"
    local exposure
    exposure=$(systemd-analyze security --no-pager kvmtune-exporter.service |
        sed -n 's/.*Overall exposure level for kvmtune-exporter.service: \([0-9.]*\).*/\1/p')
    [ -n "$exposure" ] || fail "systemd-analyze security gave no exposure"
    awk -v e="$exposure" 'BEGIN { exit !(e < 4.0) }' || fail "exposure $exposure, not below 4.0"
    lab_step "exporter rated $exposure"
    timeout 120 systemctl stop kvmtune-exporter || fail "stop"
    MANPAGER=cat MANWIDTH=80 man kvmtune-host 2> $TMPDIR/man | grep -q 'kvmtune-host' || fail "man kvmtune-host: $(cat $TMPDIR/man)"
    local completed
    completed=$(bash -c 'source /usr/share/bash-completion/completions/kvmtune
        COMP_WORDS=(kvmtune ho); COMP_CWORD=1; _kvmtune kvmtune ho kvmtune; echo "${COMPREPLY[@]}"')
    [ "$completed" = "host hook" ] || fail "bash completes 'kvmtune ho' to '$completed'"
    local files
    files=$(dpkg -L kvmtune | while read -r f; do [ -f "$f" ] && echo "$f"; done)
    lab_step "dpkg -r"
    timeout 300 dpkg -r kvmtune > $TMPDIR/dpkg 2>&1 || fail "dpkg -r: $(cat $TMPDIR/dpkg)"
    local left
    left=$(for f in $files; do [ -e "$f" ] && echo "$f"; done)
    [ -z "$left" ] || fail "dpkg -r left $left"
    systemctl cat kvmtune-exporter.service > /dev/null 2>&1 && fail "systemd still knows the exporter after removal"
    echo "PASS package_installed ($(echo "$files" | wc -l) files; exporter served $(grep -c '^kvmtune_' $TMPDIR/metrics) samples; systemd-analyze security exposure $exposure)"
}

# A user's own AllowedCPUs= in a drop-in that outlives the boot: kvmtune leaves that unit as
# it is and says so; the other units are confined and given back as usual.
dropin_left_alone() {
    mkdir -p /etc/systemd/system/user.slice.d
    printf '[Slice]\nAllowedCPUs=0-2\n' > /etc/systemd/system/user.slice.d/90-mine.conf
    systemctl daemon-reload
    local before
    before=$(units_line)
    [ "$before" = "system.slice=[] user.slice=[0-2] init.scope=[]" ] || fail "the drop-in did not take: $before"
    snapshot > $TMPDIR/before
    kvmtune host prepare $VM_ARGS --apply > $TMPDIR/out 2>&1 || fail "prepare: $(cat $TMPDIR/out)"
    grep -q 'user.slice: AllowedCPUs= is set in /etc/systemd/system/user.slice.d/90-mine.conf' $TMPDIR/out ||
        fail "prepare did not say it left user.slice: $(grep -v '^  ' $TMPDIR/out)"
    [ "$(units_line)" = "system.slice=[0-1] user.slice=[0-2] init.scope=[0-1]" ] || fail "while prepared: $(units_line)"
    kvmtune host release win > /dev/null || fail "release"
    [ "$(units_line)" = "$before" ] || fail "after release: $(units_line)"
    # systemd's, not kvmtune's: with user.slice keeping the cpuset controller on, systemd 252
    # never writes an emptied AllowedCPUs= to the cgroup (not at set-property, daemon-reload or
    # daemon-reexec; tried in this lab), so system.slice and init.scope keep the 0-3 that release
    # widens them to (empty before; the same CPUs in effect). kvmtune does not write the file
    # itself: the cgroups of systemd's units are systemd's to write (systemd.io/CGROUP_DELEGATION).
    # Every other file, unit property and task affinity must be as before.
    snapshot | grep -v -E '^/sys/fs/cgroup/(system\.slice|init\.scope)/cpuset\.cpus ' > $TMPDIR/after
    grep -v -E '^/sys/fs/cgroup/(system\.slice|init\.scope)/cpuset\.cpus ' $TMPDIR/before > $TMPDIR/before-kept
    same $TMPDIR/before-kept $TMPDIR/after || fail "release did not restore the host"
    local slice
    for slice in system.slice init.scope; do
        [ "$(cat /sys/fs/cgroup/$slice/cpuset.cpus.effective)" = 0-3 ] ||
            fail "$slice has CPUs $(cat /sys/fs/cgroup/$slice/cpuset.cpus.effective) after release"
    done
    rm -r /etc/systemd/system/user.slice.d
    systemctl daemon-reload
    echo "PASS dropin_left_alone ($(grep -o 'user.slice: AllowedCPUs= is set in [^,]*' $TMPDIR/out))"
}

# scope_pid UNIT: the first process of a running scope (waits up to 30 s for it).
scope_pid() {
    local slice=$1 unit=$2 i
    for i in $(seq 60); do
        head -1 /sys/fs/cgroup/$slice/$unit/cgroup.procs 2>/dev/null | grep . && return 0
        sleep 0.5
    done
    return 1
}

# VMs started by hand in a `systemd-run --scope` unit: in system.slice, where prepare confines
# tasks, another VM's QEMU, or this VM's own, is refused before anything is written; the same
# QEMU in machine.slice (the refusal's advice) keeps all its CPUs through prepare and release.
scoped_vms() {
    local qemu="qemu-system-x86_64 -machine none -m 16 -nodefaults -display none -S -name guest=other"
    snapshot > $TMPDIR/before
    systemd-run --quiet --scope --unit=lab-othervm $qemu > /dev/null 2>&1 &
    local pid
    pid=$(scope_pid system.slice lab-othervm.scope) || fail "no QEMU in system.slice/lab-othervm.scope"
    kvmtune host prepare $VM_ARGS --apply > /dev/null 2> $TMPDIR/err
    [ $? = 2 ] || fail "prepare beside another VM's QEMU in system.slice did not exit 2: $(cat $TMPDIR/err)"
    grep -q "another VM's QEMU (pid $pid, \`other\`) runs in /system.slice/lab-othervm.scope" $TMPDIR/err ||
        fail "the refusal: $(cat $TMPDIR/err)"
    local other_refusal own_refusal
    other_refusal=$(head -1 $TMPDIR/err)
    kvmtune host prepare $VM_ARGS --pid $pid --apply > /dev/null 2> $TMPDIR/err
    [ $? = 2 ] || fail "prepare of a VM whose own QEMU is in system.slice did not exit 2: $(cat $TMPDIR/err)"
    grep -q "this VM's QEMU (pid $pid) runs in /system.slice/lab-othervm.scope" $TMPDIR/err ||
        fail "the refusal: $(cat $TMPDIR/err)"
    own_refusal=$(head -1 $TMPDIR/err)
    [ "$(journals)" = 0 ] || fail "a refused prepare left a journal"
    snapshot > $TMPDIR/after
    same $TMPDIR/before $TMPDIR/after || fail "a refused prepare changed the host"
    systemctl stop lab-othervm.scope
    wait

    systemd-run --quiet --scope --slice=machine.slice --unit=lab-othervm $qemu > /dev/null 2>&1 &
    pid=$(scope_pid machine.slice lab-othervm.scope) || fail "no QEMU in machine.slice/lab-othervm.scope"
    kvmtune host prepare $VM_ARGS --apply > $TMPDIR/out 2>&1 || fail "prepare beside a QEMU in machine.slice: $(cat $TMPDIR/out)"
    [ "$(cpus_of $pid)" = 0-3 ] || fail "the QEMU in machine.slice is on $(cpus_of $pid)"
    kvmtune host release win > /dev/null || fail "release"
    systemctl stop lab-othervm.scope
    wait
    snapshot > $TMPDIR/after
    same $TMPDIR/before $TMPDIR/after || fail "prepare and release beside a QEMU in machine.slice did not restore the host"
    echo "PASS scoped_vms (refused: $other_refusal | $own_refusal)"
}

# A display manager as systemd runs one: `display-manager.service` is the alias of the
# manager's own unit (gdm3.service, sddm.service), and its process holds the GPU's DRM card
# and the framebuffer open the way a display server does. Needs vfio-scenarios.sh.
start_display_manager() {
    cat > /etc/systemd/system/lab-dm.service <<'UNIT'
[Unit]
Description=a display manager's stand-in, holding the boot GPU's DRM card and framebuffer
[Service]
ExecStart=/bin/sh -c 'exec sleep infinity < /dev/dri/card0 3<> /dev/fb0'
[Install]
Alias=display-manager.service
UNIT
    ln -sf /etc/systemd/system/lab-dm.service /etc/systemd/system/display-manager.service
    systemctl daemon-reload
    timeout 60 systemctl start display-manager.service || fail "the display manager did not start"
}

# The display manager's state and whether its process holds the card: what release gives back.
display_manager_state() {
    local pid holds=no
    pid=$(systemctl show --value -p MainPID display-manager.service)
    [ "$pid" != 0 ] && ls -l /proc/$pid/fd 2>/dev/null | grep -q '/dev/dri/card0' && holds=yes
    echo "display manager: $(systemctl show --value -p ActiveState display-manager.service), holds card0: $holds"
}

devices_and_display_manager() { devices_without_console; display_manager_state; }

# `vfio bind --single-gpu` on a systemd host: the display manager is stopped before the GPU is
# handed over and started again at release, also when bind is killed at any step.
display_manager_single_gpu() {
    start_display_manager
    local before
    before="$(devices_state; display_manager_state)"
    echo "$before" | grep -q 'display manager: active, holds card0: yes' || fail "at the start: $before"
    kvmtune vfio bind 00:10.0 --name gpu --single-gpu > $TMPDIR/dry || fail "dry run"
    grep -q 'systemctl stop display-manager.service' $TMPDIR/dry || fail "the dry run does not stop the display manager: $(cat $TMPDIR/dry)"
    [ "$(sed -n -E '/systemctl stop|vtconsole|driver_override/{s/^ *//;p;q}' $TMPDIR/dry)" = "systemctl stop display-manager.service" ] ||
        fail "the display manager is not stopped first: $(cat $TMPDIR/dry)"
    kvmtune vfio bind 00:10.0 --name gpu --single-gpu --apply > /dev/null || fail "bind: $?"
    [ "$(drv $GPU) $(drv $AUDIO)" = "vfio-pci vfio-pci" ] || fail "bound: $(drv $GPU) $(drv $AUDIO)"
    local during
    during=$(display_manager_state)
    [ "$during" = "display manager: inactive, holds card0: no" ] || fail "while bound: $during"
    kvmtune vfio release gpu > /dev/null || fail "release: $?"
    local after
    after="$(devices_state; display_manager_state)"
    [ "$after" = "$before" ] || fail "after release: $after; before: $before"

    # kill -9 at each journal step, then at random moments; release after each.
    kill_single_gpu_bind devices_and_display_manager 10 800
    systemctl stop display-manager.service
    rm /etc/systemd/system/display-manager.service /etc/systemd/system/lab-dm.service
    systemctl daemon-reload
    echo "PASS display_manager_single_gpu (while bound: $during; $KILLED)"
}

# For hook-scenarios.sh under systemd: libvirtd as Debian's units run it (socket-activated,
# `Restart=on-failure`), its log in the journal.
libvirt_log() { journalctl -u libvirtd --no-pager -n 15 2>/dev/null | grep -v -e MSR -e getaddrinfo; }

# systemd starts the daemon again itself after it died: a new main process, answering.
libvirtd_again() {
    local old=$1 i pid
    for i in $(seq 120); do
        pid=$(systemctl show --value -p MainPID libvirtd)
        [ "$pid" != 0 ] && [ "$pid" != "$old" ] && [ "$(systemctl show --value -p ActiveState libvirtd)" = active ] && return 0
        sleep 1
    done
    return 1
}

# The hook installed and libvirtd restarted by systemd to read it (libvirt reads its hooks at
# start); the domains' hugepages need hugetlbfs, which systemd mounts (dev-hugepages.mount).
libvirt_up_systemd() {
    step "hook install"
    timeout 60 kvmtune hook install > $TMPDIR/install || fail "hook install"
    grep -q 'restart' $TMPDIR/install || fail "install does not say to restart libvirtd: $(cat $TMPDIR/install)"
    mountpoint -q /dev/hugepages || fail "systemd did not mount /dev/hugepages"
    step "libvirtd restart"
    timeout 300 systemctl restart libvirtd || fail "systemctl restart libvirtd: $(libvirt_log)"
    answers || fail "libvirtd does not answer: $(libvirt_log)"
    echo "PASS libvirt_up_systemd (hook installed, libvirtd $(pidof libvirtd) restarted by systemd and answering)"
}
