//! Capabilities for hosts that are not this machine: what a rooted host or a snapshot has in
//! place of systemd, irqbalance, the scheduler and programs, and fakes that tests set up with a
//! state and read back, instead of matching the commands kvmtune would run.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::host::access::{Irqbalance, Programs, ReadError, Systemd, ThreadAffinity, allowed_cpus};
use crate::host::kvm::{KvmDevice, KvmDeviceReport};
use crate::values::CpuSet;

/// A capability the host does not have: every call says so.
#[derive(Debug, Clone)]
pub struct Unavailable {
    /// The host, as messages name it.
    pub host: String,
}

impl Unavailable {
    fn error(&self, what: &str) -> std::io::Error {
        std::io::Error::new(ErrorKind::Unsupported, format!("{what} is not available on {}", self.host))
    }
}

impl Systemd for Unavailable {
    fn property(&self, unit: &str, _: &str) -> std::io::Result<String> {
        Err(self.error(&format!("systemd (unit {unit})")))
    }
    fn set_runtime_property(&self, unit: &str, _: &str, _: &str) -> std::io::Result<()> {
        Err(self.error(&format!("systemd (unit {unit})")))
    }
    fn start(&self, unit: &str) -> std::io::Result<()> {
        Err(self.error(&format!("systemd (unit {unit})")))
    }
    fn stop(&self, unit: &str) -> std::io::Result<()> {
        Err(self.error(&format!("systemd (unit {unit})")))
    }
}

impl Irqbalance for Unavailable {
    fn request(&self, socket: &str, _: &[u8]) -> std::io::Result<Vec<u8>> {
        Err(self.error(socket))
    }
}

impl Programs for Unavailable {
    fn output(&self, _: &str, _: &[&str]) -> Option<Result<String, ReadError>> {
        None
    }
}

impl KvmDevice for Unavailable {
    fn query(&self) -> Option<KvmDeviceReport> {
        None
    }
}

/// A rooted host's threads: each thread's CPUs are the `Cpus_allowed_list` line of its
/// `proc/<tid>/status` under the root, which setting rewrites.
#[derive(Debug, Clone)]
pub struct StatusFileAffinity {
    pub root: PathBuf,
}

impl StatusFileAffinity {
    fn status(&self, tid: u32) -> PathBuf {
        self.root.join(format!("proc/{tid}/status"))
    }
}

impl ThreadAffinity for StatusFileAffinity {
    fn get(&self, tid: u32) -> std::io::Result<CpuSet> {
        allowed_cpus(&std::fs::read_to_string(self.status(tid))?)
    }
    fn set(&self, tid: u32, cpus: &CpuSet) -> std::io::Result<()> {
        let text = std::fs::read_to_string(self.status(tid))?;
        let text: String = text
            .lines()
            .map(|line| match line.starts_with("Cpus_allowed_list:") {
                true => format!("Cpus_allowed_list:\t{cpus}\n"),
                false => format!("{line}\n"),
            })
            .collect();
        std::fs::write(self.status(tid), text)
    }
}

/// systemd as a test sets it up: units with their properties and whether they run. Setting a
/// property or starting a unit changes that state, and every change is kept in order. A clone
/// is the same systemd: the test keeps one to read back what the host it built did.
#[derive(Debug, Default, Clone)]
pub struct FakeSystemd {
    state: Arc<Mutex<SystemdState>>,
}

#[derive(Debug, Default)]
struct SystemdState {
    units: BTreeMap<String, BTreeMap<String, String>>,
    changes: Vec<String>,
}

impl FakeSystemd {
    /// A unit with these properties (`ActiveState` says whether it runs).
    pub fn with_unit(self, unit: &str, properties: &[(&str, &str)]) -> Self {
        let entry: BTreeMap<String, String> =
            properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.state.lock().expect("not poisoned").units.insert(unit.to_string(), entry);
        self
    }

    /// A property as it is now (empty where none was ever set, as systemd prints it).
    pub fn value(&self, unit: &str, property: &str) -> String {
        let state = self.state.lock().expect("not poisoned");
        state.units.get(unit).and_then(|u| u.get(property)).cloned().unwrap_or_default()
    }

    /// Every change made, in order: `UNIT PROPERTY=VALUE`, `start UNIT`, `stop UNIT`.
    pub fn changes(&self) -> Vec<String> {
        self.state.lock().expect("not poisoned").changes.clone()
    }

    fn set(&self, unit: &str, property: &str, value: &str, change: String) {
        let mut state = self.state.lock().expect("not poisoned");
        state.units.entry(unit.to_string()).or_default().insert(property.to_string(), value.to_string());
        state.changes.push(change);
    }
}

impl Systemd for FakeSystemd {
    fn property(&self, unit: &str, property: &str) -> std::io::Result<String> {
        Ok(self.value(unit, property))
    }
    fn set_runtime_property(&self, unit: &str, property: &str, value: &str) -> std::io::Result<()> {
        self.set(unit, property, value, format!("{unit} {property}={value}"));
        Ok(())
    }
    fn start(&self, unit: &str) -> std::io::Result<()> {
        self.set(unit, "ActiveState", "active", format!("start {unit}"));
        Ok(())
    }
    fn stop(&self, unit: &str) -> std::io::Result<()> {
        self.set(unit, "ActiveState", "inactive", format!("stop {unit}"));
        Ok(())
    }
}

/// irqbalance as a test sets it up: the CPUs it bans, read with `setup` and set with
/// `settings cpus LIST` (or `NULL`), as its control socket takes them. A clone is the same one.
#[derive(Debug, Default, Clone)]
pub struct FakeIrqbalance {
    banned: Arc<Mutex<CpuSet>>,
}

impl FakeIrqbalance {
    /// The CPUs it bans now.
    pub fn banned(&self) -> CpuSet {
        self.banned.lock().expect("not poisoned").clone()
    }
}

impl Irqbalance for FakeIrqbalance {
    fn request(&self, _: &str, message: &[u8]) -> std::io::Result<Vec<u8>> {
        let message = String::from_utf8_lossy(message);
        let mut banned = self.banned.lock().expect("not poisoned");
        if message == "setup" {
            return Ok(
                format!("SLEEP 10 LOGLEVEL 0 POLICYSCRIPT NONE BANNED {}", banned.to_mask()).into_bytes()
            );
        }
        match message.strip_prefix("settings cpus ") {
            Some("NULL") => *banned = CpuSet::new(),
            Some(list) => *banned = CpuSet::parse_list(list).map_err(std::io::Error::other)?,
            None => return Err(std::io::Error::other(format!("irqbalance does not take `{message}`"))),
        }
        Ok(Vec::new())
    }
}
