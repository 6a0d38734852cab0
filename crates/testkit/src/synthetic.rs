//! Machines the corpus has no sysfs snapshot of, written in the kernel's sysfs layout so that
//! the real probe reads them: Threadripper, X3D, large EPYC and hybrid Intel parts.

use std::path::Path;

#[derive(Debug, Clone)]
pub struct SyntheticHost {
    pub name: &'static str,
    /// `AuthenticAMD` or `GenuineIntel`.
    pub vendor: &'static str,
    pub packages: u32,
    pub nodes_per_package: u32,
    pub l3_per_node: u32,
    pub cores_per_l3: u32,
    pub threads: u32,
    pub l3_size_kib: u64,
    /// L3 groups with three times the cache (X3D V-Cache CCDs).
    pub vcache_l3: Vec<u32>,
    /// Hybrid parts: this many single-thread E-cores after the P-cores, sharing the one L3.
    pub efficiency_cores: u32,
    /// GPUs to pass through: (PCI address, NUMA node).
    pub gpus: Vec<(&'static str, u32)>,
}

impl SyntheticHost {
    pub fn threadripper_2950x() -> Self {
        // 16 cores in 4 CCX of 4, two dies, each its own NUMA node (NUMA memory mode).
        Self {
            name: "threadripper-2950x",
            vendor: "AuthenticAMD",
            packages: 1,
            nodes_per_package: 2,
            l3_per_node: 2,
            cores_per_l3: 4,
            threads: 2,
            l3_size_kib: 8 * 1024,
            vcache_l3: vec![],
            efficiency_cores: 0,
            gpus: vec![],
        }
    }

    pub fn ryzen_7950x3d() -> Self {
        Self {
            name: "ryzen-7950x3d",
            vendor: "AuthenticAMD",
            packages: 1,
            nodes_per_package: 1,
            l3_per_node: 2,
            cores_per_l3: 8,
            threads: 2,
            l3_size_kib: 32 * 1024,
            vcache_l3: vec![0],
            efficiency_cores: 0,
            gpus: vec![],
        }
    }

    pub fn epyc_9654_2p() -> Self {
        // Two sockets of 12 CCDs x 8 cores, NPS1.
        Self {
            name: "epyc-9654-2p",
            vendor: "AuthenticAMD",
            packages: 2,
            nodes_per_package: 1,
            l3_per_node: 12,
            cores_per_l3: 8,
            threads: 2,
            l3_size_kib: 32 * 1024,
            vcache_l3: vec![],
            efficiency_cores: 0,
            gpus: vec![],
        }
    }

    pub fn core_i9_14900k() -> Self {
        // 8 P-cores with SMT, 16 E-cores, one 36 MiB L3.
        Self {
            name: "core-i9-14900k",
            vendor: "GenuineIntel",
            packages: 1,
            nodes_per_package: 1,
            l3_per_node: 1,
            cores_per_l3: 8,
            threads: 2,
            l3_size_kib: 36 * 1024,
            vcache_l3: vec![],
            efficiency_cores: 16,
            gpus: vec![],
        }
    }

    /// A one-node desktop part with SMT: `l3_groups` CCX/CCDs of `cores_per_l3` cores each.
    pub fn desktop(name: &'static str, vendor: &'static str, l3_groups: u32, cores_per_l3: u32) -> Self {
        Self {
            name,
            vendor,
            packages: 1,
            nodes_per_package: 1,
            l3_per_node: l3_groups,
            cores_per_l3,
            threads: 2,
            l3_size_kib: 16 * 1024,
            vcache_l3: vec![],
            efficiency_cores: 0,
            gpus: vec![],
        }
    }

    /// The configs in ../shared/corpus/user-xml whose host CPU their SOURCES.md names, each with
    /// a host built to that CPU's topology.
    pub fn for_user_xml() -> Vec<(&'static str, Self)> {
        vec![
            (
                "Abikebuk__kvm-mag-mortar-b550m-single-gpu-passtrough__win11.xml",
                Self::desktop("Ryzen 7 2700X", "AuthenticAMD", 2, 4),
            ),
            (
                "Zile995__PinnacleRidge-Polaris-GPU-Passthrough__win10.xml",
                Self::desktop("Ryzen 5 2600", "AuthenticAMD", 2, 3),
            ),
            ("grishi__vfio__win11.xml", Self::ryzen_7950x3d()),
            ("ipimpat__qemu-gaming-vm__win10.xml", Self::desktop("Core i7-7700K", "GenuineIntel", 1, 4)),
            ("leo5051__win10-vfio__win10.xml", Self::desktop("Core i7-7700K", "GenuineIntel", 1, 4)),
            (
                "NextWork123__VFIO-KVM__win10-gaming.xml",
                Self::desktop("Core i5-10400F", "GenuineIntel", 1, 6),
            ),
            ("alyssadev__vfio-configs__win10.xml", Self::desktop("Core i5-11400H", "GenuineIntel", 1, 6)),
            (
                "kvong__gpu-passthrough-windows__win11.xml",
                Self::desktop("Ryzen 9 7900", "AuthenticAMD", 2, 6),
            ),
            ("MingyaoLiu__Threadripper-KVM-guide__win10_NVMe.xml", Self::threadripper_2950x()),
        ]
    }

    /// A 2950X whose GPU sits on NUMA node 1 (the second die's PCIe lanes).
    pub fn threadripper_2950x_gpu_on_node1() -> Self {
        Self {
            name: "threadripper-2950x-gpu-node1",
            gpus: vec![("0000:41:00.0", 1)],
            ..Self::threadripper_2950x()
        }
    }

    /// A 7950X3D with its GPU (one NUMA node, so node 0).
    pub fn ryzen_7950x3d_with_gpu() -> Self {
        Self { name: "ryzen-7950x3d-gpu", gpus: vec![("0000:01:00.0", 0)], ..Self::ryzen_7950x3d() }
    }

    /// A 48-core AMD part in 8 NUMA nodes of one 6-core L3 each, SMT off (an EPYC 7643 in
    /// NPS4 with L3-as-NUMA, or a 2-socket 7443 in NPS4).
    pub fn amd_48c_8_nodes() -> Self {
        Self {
            name: "amd-48c-8-nodes",
            vendor: "AuthenticAMD",
            packages: 1,
            nodes_per_package: 8,
            l3_per_node: 1,
            cores_per_l3: 6,
            threads: 1,
            l3_size_kib: 32 * 1024,
            vcache_l3: vec![],
            efficiency_cores: 0,
            gpus: vec![],
        }
    }

    pub fn all() -> Vec<Self> {
        vec![
            Self::threadripper_2950x(),
            Self::ryzen_7950x3d(),
            Self::epyc_9654_2p(),
            Self::core_i9_14900k(),
            Self::amd_48c_8_nodes(),
            Self::threadripper_2950x_gpu_on_node1(),
            Self::ryzen_7950x3d_with_gpu(),
        ]
    }

    fn big_cores(&self) -> u32 {
        self.packages * self.nodes_per_package * self.l3_per_node * self.cores_per_l3
    }

    pub fn cpu_count(&self) -> u32 {
        self.big_cores() * self.threads + self.efficiency_cores
    }

    /// Writes `sys/` and `proc/` under `root`.
    pub fn write(&self, root: &Path) {
        let write = |path: &str, contents: String| {
            let full = root.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, contents).unwrap();
        };
        let cores = self.big_cores();
        let cpus = self.cpu_count();
        let hybrid = self.efficiency_cores > 0;
        let flags = if self.vendor == "AuthenticAMD" {
            "fpu tsc constant_tsc nonstop_tsc pdpe1gb svm topoext"
        } else {
            "fpu tsc constant_tsc nonstop_tsc pdpe1gb vmx"
        };
        let mut cpuinfo = String::new();
        for cpu in 0..cpus {
            cpuinfo.push_str(&format!("processor : {cpu}\nvendor_id : {}\nflags : {flags}\n\n", self.vendor));
        }
        write("proc/cpuinfo", cpuinfo);
        write(
            "proc/meminfo",
            "MemTotal:       263907244 kB\nMemFree:        250000000 kB\nMemAvailable:   255000000 kB\n"
                .into(),
        );
        write("sys/devices/system/cpu/online", format!("0-{}\n", cpus - 1));
        write("sys/devices/system/cpu/present", format!("0-{}\n", cpus - 1));
        write("sys/devices/system/cpu/possible", format!("0-{}\n", cpus - 1));
        // (cpu, core index, siblings, l3 index) for every CPU.
        let mut layout: Vec<(u32, u32, Vec<u32>, u32)> = Vec::new();
        for core in 0..cores {
            let siblings: Vec<u32> = if hybrid {
                (0..self.threads).map(|t| core * self.threads + t).collect()
            } else {
                (0..self.threads).map(|t| core + t * cores).collect()
            };
            for &cpu in &siblings {
                layout.push((cpu, core, siblings.clone(), core / self.cores_per_l3));
            }
        }
        for e in 0..self.efficiency_cores {
            let cpu = cores * self.threads + e;
            layout.push((cpu, cores + e, vec![cpu], 0));
        }
        let node_of_l3 = |l3: u32| l3 / self.l3_per_node;
        for node in 0..self.packages * self.nodes_per_package {
            let list: Vec<String> = layout
                .iter()
                .filter(|(_, _, _, l3)| node_of_l3(*l3) == node)
                .map(|(c, ..)| c.to_string())
                .collect();
            write(&format!("sys/devices/system/node/node{node}/cpulist"), format!("{}\n", list.join(",")));
            write(
                &format!("sys/devices/system/node/node{node}/meminfo"),
                format!("Node {node} MemTotal:       65536000 kB\nNode {node} MemFree:        60000000 kB\n"),
            );
        }
        for (cpu, core, siblings, l3) in &layout {
            let base = format!("sys/devices/system/cpu/cpu{cpu}");
            let package = node_of_l3(*l3) / self.nodes_per_package;
            let l3_cpus: Vec<String> =
                layout.iter().filter(|(_, _, _, g)| g == l3).map(|(c, ..)| c.to_string()).collect();
            let size = if self.vcache_l3.contains(l3) { self.l3_size_kib * 3 } else { self.l3_size_kib };
            let sibling_list: Vec<String> = siblings.iter().map(u32::to_string).collect();
            write(&format!("{base}/topology/physical_package_id"), format!("{package}\n"));
            write(&format!("{base}/topology/core_id"), format!("{core}\n"));
            write(&format!("{base}/topology/core_cpus_list"), format!("{}\n", sibling_list.join(",")));
            write(&format!("{base}/topology/thread_siblings_list"), format!("{}\n", sibling_list.join(",")));
            write(&format!("{base}/cache/index3/level"), "3\n".into());
            write(&format!("{base}/cache/index3/type"), "Unified\n".into());
            write(&format!("{base}/cache/index3/id"), format!("{l3}\n"));
            write(&format!("{base}/cache/index3/size"), format!("{size}K\n"));
            write(&format!("{base}/cache/index3/shared_cpu_list"), format!("{}\n", l3_cpus.join(",")));
        }
        for (address, node) in &self.gpus {
            let device = format!("sys/bus/pci/devices/{address}");
            write(&format!("{device}/class"), "0x030000\n".into());
            write(&format!("{device}/vendor"), "0x10de\n".into());
            write(&format!("{device}/device"), "0x2684\n".into());
            write(&format!("{device}/numa_node"), format!("{node}\n"));
        }
        if hybrid {
            write("sys/devices/cpu_core/cpus", format!("0-{}\n", cores * self.threads - 1));
            write("sys/devices/cpu_atom/cpus", format!("{}-{}\n", cores * self.threads, cpus - 1));
        }
    }
}

/// The small hosts the check-rule fixtures are checked against (no corpus snapshot has KVM,
/// IOMMU and GPU facts together). AMD: 2 NUMA nodes, one 32 MiB L3 each, 4 cores x 2 threads
/// per node (CPU c and c+8 are siblings; node 0 = 0-3,8-11). Intel: an older part without
/// FlexPriority, with the same layout (for LEG001). Both have GPUs at 0000:0a:00.0 (node 0) and
/// 0000:0b:00.0 (node 1), and 2048 x 2 MiB hugepages unless `hugepages` is false.
#[derive(Debug, Clone, Copy)]
pub struct RuleFixtureHost {
    pub intel: bool,
    /// APICv (Intel) or AVIC (AMD) switched on in KVM.
    pub apicv: bool,
    pub hugepages: bool,
    /// One L3 for all 16 CPUs instead of one per node.
    pub one_l3: bool,
}

impl RuleFixtureHost {
    /// The host a fixture's `host=` header names (`amd`, `amd-apicv-off`, `amd-no-hugepages`,
    /// `amd-one-l3`, `intel-no-flexpriority`); `None` for `none` or no header.
    pub fn named(name: &str) -> Option<Self> {
        let amd = |apicv, hugepages| Some(Self { intel: false, apicv, hugepages, one_l3: false });
        match name {
            "none" => None,
            "amd" => amd(true, true),
            "amd-apicv-off" => amd(false, true),
            "amd-no-hugepages" => amd(true, false),
            "intel-no-flexpriority" => {
                Some(Self { intel: true, apicv: false, hugepages: true, one_l3: false })
            }
            "amd-one-l3" => Some(Self { intel: false, apicv: true, hugepages: true, one_l3: true }),
            other => panic!("unknown fixture host {other}"),
        }
    }

    /// Writes `sys/` and `proc/` under `root`.
    pub fn write(&self, root: &Path) {
        let write = |path: &str, contents: &str| {
            let full = root.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, contents).unwrap();
        };
        let apicv = if self.apicv { "Y\n" } else { "N\n" };
        if self.intel {
            write(
                "proc/cpuinfo",
                "processor : 0\nvendor_id : GenuineIntel\ncpu family : 6\nmodel : 23\nmodel name : Intel(R) Core(TM)2 Quad CPU Q9550\nstepping : 10\nflags : vmx constant_tsc nonstop_tsc x2apic tpr_shadow vnmi ept vpid\n\n",
            );
            write("sys/module/kvm_intel/parameters/enable_apicv", apicv);
            write("sys/module/kvm_intel/parameters/nested", "N\n");
        } else {
            write(
                "proc/cpuinfo",
                "processor : 0\nvendor_id : AuthenticAMD\ncpu family : 25\nmodel : 33\nmodel name : AMD Ryzen 9 5950X\nstepping : 0\nflags : svm constant_tsc nonstop_tsc topoext x2apic avic npt\n\n",
            );
            write("sys/module/kvm_amd/parameters/avic", apicv);
            write("sys/module/kvm_amd/parameters/nested", "1\n");
        }
        write("sys/devices/system/cpu/online", "0-15\n");
        for cpu in 0..16u32 {
            let core = cpu % 8;
            let node = core / 4;
            let base = format!("sys/devices/system/cpu/cpu{cpu}");
            write(&format!("{base}/topology/physical_package_id"), "0\n");
            write(&format!("{base}/topology/core_id"), &format!("{core}\n"));
            write(&format!("{base}/topology/core_cpus_list"), &format!("{core},{}\n", core + 8));
            write(&format!("{base}/cache/index3/level"), "3\n");
            write(&format!("{base}/cache/index3/type"), "Unified\n");
            write(&format!("{base}/cache/index3/size"), "32768K\n");
            let l3 = match (self.one_l3, node) {
                (true, _) => "0-15",
                (false, 0) => "0-3,8-11",
                (false, _) => "4-7,12-15",
            };
            write(&format!("{base}/cache/index3/shared_cpu_list"), &format!("{l3}\n"));
        }
        write("sys/devices/system/node/node0/cpulist", "0-3,8-11\n");
        write("sys/devices/system/node/node1/cpulist", "4-7,12-15\n");
        write("sys/module/kvm/parameters/halt_poll_ns", "200000\n");
        let pages = if self.hugepages { "2048\n" } else { "0\n" };
        write("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", pages);
        write("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", pages);
        for (address, node) in [("0000:0a:00.0", "0"), ("0000:0b:00.0", "1")] {
            let device = format!("sys/bus/pci/devices/{address}");
            write(&format!("{device}/class"), "0x030000\n");
            write(&format!("{device}/vendor"), "0x10de\n");
            write(&format!("{device}/device"), "0x2684\n");
            write(&format!("{device}/numa_node"), &format!("{node}\n"));
        }
        // A GPU and its HDMI audio function in one IOMMU group, the GPU unbound and the audio on
        // the host's sound driver (for DEV012; no other fixture passes them through).
        for (function, class, driver) in [("0", "0x030000", None), ("1", "0x040300", Some("snd_hda_intel"))] {
            let device = format!("sys/bus/pci/devices/0000:0c:00.{function}");
            write(&format!("{device}/class"), &format!("{class}\n"));
            write(&format!("{device}/vendor"), "0x10de\n");
            write(&format!("{device}/device"), if function == "0" { "0x2684\n" } else { "0x22ba\n" });
            write(&format!("{device}/numa_node"), "0\n");
            let link = |name: &str, target: &str| {
                let path = root.join(&device).join(name);
                let _ = std::fs::remove_file(&path);
                std::os::unix::fs::symlink(target, path).unwrap();
            };
            link("iommu_group", "../../../../kernel/iommu_groups/16");
            if let Some(driver) = driver {
                link("driver", &format!("../../../../bus/pci/drivers/{driver}"));
            }
            let member = format!("sys/kernel/iommu_groups/16/devices/0000:0c:00.{function}");
            std::fs::create_dir_all(root.join(&member).parent().unwrap()).unwrap();
            let _ = std::fs::remove_file(root.join(&member));
            std::os::unix::fs::symlink(
                format!("../../../../devices/pci0000:00/0000:0c:00.{function}"),
                root.join(&member),
            )
            .unwrap();
        }
    }
}
