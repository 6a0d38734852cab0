//! `host prepare`'s plan on hosts laid out in a temp dir: cpufreq (TCG guests have none) and
//! the calls made to systemd, in order. The isolation itself (cgroups, IRQs, workqueues,
//! hugepages) is tested for real in the lab guest (`crates/kvmtune-cli/tests/host_lab.rs`), and
//! under systemd as PID 1 there (`crates/kvmtune-cli/tests/systemd_lab.rs`).

use std::path::Path;

use kvmtune::config::host_needs::{HostNeeds, HugepageNeed, Hugepages};
use kvmtune::host::Host;
use kvmtune::host::fakes::FakeSystemd;
use kvmtune::hostchange::journal::BOOT_ID_PATH;
use kvmtune::hostchange::prepare::{self, CgroupLayout, PrepareRequest, Refusal};
use kvmtune::hostchange::{ChangeKind, Journal, JournalKind};
use kvmtune::values::CpuSet;

fn put(root: &Path, path: &str, text: &str) {
    let file = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap()
}

/// Four CPUs, one cpufreq policy each (intel_pstate with HWP: powersave + an EPP).
fn cpufreq_host() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, BOOT_ID_PATH, "0d7c2a51-1b1e-4c7a-9f00-000000000001\n");
    put(root, "/sys/devices/system/cpu/online", "0-3\n");
    for cpu in 0..4 {
        let policy = format!("/sys/devices/system/cpu/cpufreq/policy{cpu}");
        put(root, &format!("{policy}/related_cpus"), &format!("{cpu}\n"));
        put(root, &format!("{policy}/scaling_governor"), "powersave\n");
        put(root, &format!("{policy}/scaling_available_governors"), "performance powersave\n");
        put(root, &format!("{policy}/energy_performance_preference"), "balance_power\n");
        put(
            root,
            &format!("{policy}/energy_performance_available_preferences"),
            "default performance balance_performance balance_power power \n",
        );
    }
    dir
}

fn request(cpus: &str) -> PrepareRequest {
    PrepareRequest {
        vm: "win11".to_string(),
        needs: HostNeeds {
            cpus: Some(CpuSet::parse_list(cpus).unwrap()),
            governor: Some("performance".to_string()),
            epp: Some("performance".to_string()),
            ..HostNeeds::default()
        },
        vm_pids: Vec::new(),
        self_pid: std::process::id(),
    }
}

#[test]
fn epp_is_set_before_the_governor_so_undo_restores_the_governor_first() {
    let host = cpufreq_host();
    let writer = Host::rooted(host.path());
    let plan = prepare::plan(&request("2-3"), &[], &writer).unwrap();
    let files: Vec<&str> = plan.actions.iter().map(|a| a.path.rsplit('/').next().unwrap()).collect();
    assert_eq!(
        files,
        [
            "energy_performance_preference",
            "scaling_governor",
            "energy_performance_preference",
            "scaling_governor"
        ]
    );
    assert!(plan.actions[0].path.contains("policy2") && plan.actions[2].path.contains("policy3"));

    let journals = host.path().join("run-kvmtune");
    let journal = Journal::open(&journals, &writer).unwrap();
    journal.apply(JournalKind::Host, &plan.vm, &plan.taken, &plan.actions, &writer).unwrap();
    let governor = |cpu: u32| {
        read(host.path(), &format!("/sys/devices/system/cpu/cpufreq/policy{cpu}/scaling_governor"))
    };
    assert_eq!(governor(2), "performance");
    assert_eq!(governor(0), "powersave\n", "the host's CPUs keep theirs");
    journal.release(JournalKind::Host, "win11", &writer).unwrap();
    assert_eq!(governor(2), "powersave\n");
    assert_eq!(
        read(host.path(), "/sys/devices/system/cpu/cpufreq/policy2/energy_performance_preference"),
        "balance_power\n"
    );
}

#[test]
fn a_governor_or_epp_the_policy_does_not_offer_is_refused() {
    let host = cpufreq_host();
    let writer = Host::rooted(host.path());
    let mut asked = request("2-3");
    asked.needs.governor = Some("schedutil".to_string());
    let refusal = prepare::plan(&asked, &[], &writer).unwrap_err();
    assert!(matches!(refusal, Refusal::NotOffered { what: "governor", .. }), "{refusal}");
    assert!(refusal.to_string().contains("performance powersave"), "{refusal}");
    let mut asked = request("2-3");
    asked.needs.epp = Some("fast".to_string());
    assert!(matches!(prepare::plan(&asked, &[], &writer), Err(Refusal::NotOffered { what: "EPP", .. })));
}

/// systemd cannot run as PID 1 here: a rooted host whose systemd is the fake, with the units
/// a host has (slices without AllowedCPUs, as systemd 252 prints them: empty).
fn systemd_host(root: &Path, systemd: FakeSystemd) -> Host {
    Host { systemd: Box::new(systemd), ..Host::rooted(root) }
}

#[test]
fn with_systemd_the_host_units_get_allowed_cpus_through_systemd_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, BOOT_ID_PATH, "0d7c2a51-1b1e-4c7a-9f00-000000000002\n");
    put(root, "/sys/devices/system/cpu/online", "0-7\n");
    put(root, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
    put(root, "/proc/1/comm", "systemd\n");
    let systemd = FakeSystemd::default()
        .with_unit("system.slice", &[("AllowedCPUs", "")])
        .with_unit("user.slice", &[("AllowedCPUs", "")])
        .with_unit("init.scope", &[("AllowedCPUs", "")]);
    let host = systemd_host(root, systemd.clone());
    assert_eq!(prepare::cgroup_layout(&host), CgroupLayout::V2Systemd);
    let mut asked = request("2-7");
    (asked.needs.governor, asked.needs.epp, asked.needs.isolate) = (None, None, true);
    let plan = prepare::plan(&asked, &[], &host).unwrap();
    let units: Vec<(&str, &str)> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ChangeKind::SystemdProperty { .. }))
        .map(|a| (a.path.as_str(), a.new.as_str()))
        .collect();
    assert_eq!(units, [("system.slice", "0-1"), ("user.slice", "0-1"), ("init.scope", "0-1")]);
    // No cgroup file is written behind systemd's back.
    assert!(plan.actions.iter().all(|a| !a.path.starts_with("/sys/fs/cgroup")), "{:?}", plan.actions);

    let journal = Journal::open(root.join("run-kvmtune"), &host).unwrap();
    journal.apply(JournalKind::Host, &plan.vm, &plan.taken, &plan.actions, &host).unwrap();
    let allowed = |unit: &str| systemd.value(unit, "AllowedCPUs");
    for unit in ["system.slice", "user.slice", "init.scope"] {
        assert_eq!(allowed(unit), "0-1", "{unit} while the VM runs");
    }
    journal.release(JournalKind::Host, "win11", &host).unwrap();
    for unit in ["system.slice", "user.slice", "init.scope"] {
        assert_eq!(allowed(unit), "", "{unit} after release: no restriction, as before");
    }
    // Undone newest first; an empty original is reached through every online CPU, which gives
    // the tasks their CPUs back before systemd turns the cpuset controller off.
    assert_eq!(
        systemd.changes(),
        [
            "system.slice AllowedCPUs=0-1",
            "user.slice AllowedCPUs=0-1",
            "init.scope AllowedCPUs=0-1",
            "init.scope AllowedCPUs=0-7",
            "init.scope AllowedCPUs=",
            "user.slice AllowedCPUs=0-7",
            "user.slice AllowedCPUs=",
            "system.slice AllowedCPUs=0-7",
            "system.slice AllowedCPUs=",
        ]
    );
}

/// A slice whose `AllowedCPUs=` the user set in a drop-in under /etc keeps it: a runtime value
/// would hide the user's until the next boot. The plan says so; a runtime drop-in (kvmtune's
/// own, left by an earlier release) does not count.
#[test]
fn with_systemd_a_users_own_allowed_cpus_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, "/sys/devices/system/cpu/online", "0-7\n");
    put(root, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
    put(root, "/proc/1/comm", "systemd\n");
    let mine = "/etc/systemd/system/user.slice.d/90-mine.conf";
    let runtime = "/run/systemd/system.control/system.slice.d/50-AllowedCPUs.conf";
    put(root, mine, "[Slice]\nAllowedCPUs=0-5\n");
    put(root, runtime, "[Slice]\nAllowedCPUs=\nAllowedCPUs=\n");
    let systemd = FakeSystemd::default()
        .with_unit("system.slice", &[("AllowedCPUs", ""), ("DropInPaths", runtime)])
        .with_unit("user.slice", &[("AllowedCPUs", "0-5"), ("DropInPaths", mine)])
        .with_unit("init.scope", &[("AllowedCPUs", "")]);
    let host = systemd_host(root, systemd);
    let mut asked = request("2-7");
    (asked.needs.governor, asked.needs.epp, asked.needs.isolate) = (None, None, true);
    let plan = prepare::plan(&asked, &[], &host).unwrap();
    let units: Vec<&str> = plan
        .actions
        .iter()
        .filter(|a| matches!(a.kind, ChangeKind::SystemdProperty { .. }))
        .map(|a| a.path.as_str())
        .collect();
    assert_eq!(units, ["system.slice", "init.scope"]);
    assert!(
        plan.left_alone
            .iter()
            .any(|n| n.starts_with("user.slice: AllowedCPUs= is set in") && n.contains(mine)),
        "{:?}",
        plan.left_alone
    );
}

/// A VM started by hand with `systemd-run --scope` lives in `system.slice` (or `user.slice`
/// from a login), not in libvirt's `machine.slice`: confining that slice would take its CPUs
/// from it. Another VM's QEMU there, or this VM's own, is refused before anything is written;
/// one in `machine.slice`, or in a slice the user confines, is not in the way.
#[test]
fn with_systemd_a_vm_in_a_confined_slice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, "/sys/devices/system/cpu/online", "0-7\n");
    put(root, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
    put(root, "/proc/1/comm", "systemd\n");
    put(root, "/proc/1/cmdline", "/sbin/init\0");
    put(root, "/proc/1/cgroup", "0::/init.scope\n");
    let qemu = |pid: u32, name: &str, cgroup: &str| {
        let argv =
            format!("/usr/bin/qemu-system-x86_64\0-name\0guest={name},debug-threads=on\0-accel\0kvm\0");
        put(root, &format!("/proc/{pid}/cmdline"), &argv);
        put(root, &format!("/proc/{pid}/cgroup"), &format!("0::{cgroup}\n"));
    };
    qemu(300, "libvirts", "/machine.slice/machine-qemu\\x2d1\\x2dlibvirts.scope/libvirt/emulator");
    let mine = "/etc/systemd/system/user.slice.d/90-mine.conf";
    put(root, mine, "[Slice]\nAllowedCPUs=0-1\n");
    qemu(400, "in-my-slice", "/user.slice/user-1000.slice/session-2.scope");
    let systemd = FakeSystemd::default()
        .with_unit("system.slice", &[("AllowedCPUs", "")])
        .with_unit("user.slice", &[("AllowedCPUs", "0-1"), ("DropInPaths", mine)])
        .with_unit("init.scope", &[("AllowedCPUs", "")]);
    let host = systemd_host(root, systemd);
    let mut asked = request("2-7");
    (asked.needs.governor, asked.needs.epp, asked.needs.isolate) = (None, None, true);
    // libvirt's VM, and one in the slice the user confines, are not in the way.
    prepare::plan(&asked, &[], &host).unwrap();

    qemu(500, "other", "/system.slice/run-r8b1f0c.scope");
    let refused = prepare::plan(&asked, &[], &host).unwrap_err();
    assert!(matches!(refused, Refusal::OtherVmConfined { pid: 500, .. }), "{refused}");
    let message = refused.to_string();
    assert!(message.contains("`other`") && message.contains("/system.slice/run-r8b1f0c.scope"), "{message}");
    assert!(message.contains("--slice=machine.slice") && message.contains("--no-isolate"), "{message}");

    // The same QEMU given as this VM's own (--pid): it would be kept off its own CPUs.
    asked.vm_pids = vec![500];
    let refused = prepare::plan(&asked, &[], &host).unwrap_err();
    assert!(
        matches!(&refused, Refusal::OwnVmConfined { pid: 500, unit, .. } if unit == "system.slice"),
        "{refused}"
    );
}

/// A single-GPU hand-over where systemd runs a display manager: stopped through systemd
/// before the console comes off the GPU, started again last at release.
#[test]
fn with_systemd_the_display_manager_stops_first_and_starts_last() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(root, BOOT_ID_PATH, "0d7c2a51-1b1e-4c7a-9f00-000000000003\n");
    let gpu = "/sys/bus/pci/devices/0000:01:00.0";
    put(root, &format!("{gpu}/class"), "0x030000\n");
    put(root, &format!("{gpu}/boot_vga"), "1\n");
    put(root, "/proc/self/mountinfo", "1 0 254:0 / / rw - ext4 /dev/vda rw\n");
    put(root, "/sys/class/vtconsole/vtcon1/bind", "1\n");
    put(root, "/sys/class/vtconsole/vtcon1/name", "(M) frame buffer device\n");
    let link = |path: &str, target: &str| {
        let file = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, file).unwrap();
    };
    link(&format!("{gpu}/iommu_group"), "../../../kernel/iommu_groups/1");
    std::fs::create_dir_all(root.join("sys/kernel/iommu_groups/1/devices/0000:01:00.0")).unwrap();
    std::fs::create_dir_all(root.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
    std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
    link("/etc/systemd/system/display-manager.service", "/lib/systemd/system/gdm3.service");
    let systemd = FakeSystemd::default().with_unit("display-manager.service", &[("ActiveState", "active")]);
    let host = systemd_host(root, systemd.clone());

    let plan =
        kvmtune::hostchange::vfio::plan_bind("win", &["01:00.0".parse().unwrap()], true, &host).unwrap();
    let kinds: Vec<&ChangeKind> = plan.actions.iter().map(|a| &a.kind).collect();
    assert_eq!(kinds, [&ChangeKind::ServiceState, &ChangeKind::Write, &ChangeKind::VfioBind]);
    // The device itself is not there to be bound in a directory: only the steps before it.
    let journal = Journal::open(root.join("run-kvmtune"), &host).unwrap();
    journal.apply(JournalKind::Devices, "win", &CpuSet::new(), &plan.actions[..2], &host).unwrap();
    assert_eq!(std::fs::read_to_string(root.join("sys/class/vtconsole/vtcon1/bind")).unwrap(), "0");
    assert_eq!(systemd.value("display-manager.service", "ActiveState"), "inactive");
    journal.release(JournalKind::Devices, "win", &host).unwrap();
    // The original bytes, as they were read.
    assert_eq!(std::fs::read_to_string(root.join("sys/class/vtconsole/vtcon1/bind")).unwrap(), "1\n");
    assert_eq!(systemd.value("display-manager.service", "ActiveState"), "active");
    assert_eq!(systemd.changes(), ["stop display-manager.service", "start display-manager.service"]);
}

/// A request for more hugepages than the node has memory (from metadata or a flag) is refused
/// before anything is planned, and counts that would overflow never wrap.
#[test]
fn hugepages_beyond_the_nodes_memory_are_refused() {
    let host = cpufreq_host();
    let root = host.path();
    put(root, "/sys/devices/system/node/online", "0\n");
    put(root, "/sys/devices/system/node/node0/meminfo", "Node 0 MemTotal:       16318000 kB\n");
    let pool = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB";
    put(root, &format!("{pool}/nr_hugepages"), "0\n");
    put(root, &format!("{pool}/free_hugepages"), "0\n");
    let writer = Host::rooted(root);
    for count in [33_554_432, u64::MAX] {
        let mut asked = request("2-3");
        asked.needs.hugepages =
            Hugepages::Exactly(vec![HugepageNeed { size_kib: 2048, count, node: Some(0) }]);
        let refusal = prepare::plan(&asked, &[], &writer).unwrap_err();
        assert!(matches!(refusal, Refusal::MoreThanMemory { .. }), "{refusal}");
        assert!(refusal.to_string().contains("more than the 16318000 KiB of memory on node 0"), "{refusal}");
    }
    let mut asked = request("2-3");
    asked.needs.hugepages =
        Hugepages::Exactly(vec![HugepageNeed { size_kib: 2048, count: 4096, node: Some(0) }]);
    let plan = prepare::plan(&asked, &[], &writer).unwrap();
    assert!(plan.actions.iter().any(|a| a.path.ends_with("nr_hugepages") && a.new == "4096"));
}
