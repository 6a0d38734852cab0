//! libvirt, as every part of kvmtune reaches it: the domains of a connection, a domain's XML,
//! the vCPU statistics of all running domains, a QMP command through libvirt's monitor and a
//! command to the QEMU guest agent through libvirt's agent channel.
//!
//! Each call runs `virsh` (libvirt-clients) under [`crate::host::command`], so each is bounded
//! by the client's timeout: [`Libvirt::DEFAULT_TIMEOUT`] unless the caller has a tighter budget
//! (the exporter's scrape, `top`'s refresh). Why virsh and not libvirt's own Rust binding (the
//! `virt` crate): measured beside `bench/exporter-scrape.sh` (1 to 20 domains), the binding
//! saves about 18 ms of client CPU per call, whatever the number of domains, and libvirtd's
//! own share, which grows with the domains, is the same either way. The exporter makes two calls
//! a scrape, so a scrape every 15 s would save about 0.2% of one core. Against that: the binary
//! would link libvirt.so, so a host without libvirt (Proxmox, plain QEMU) could not start it at
//! all; the binding has no deadline of its own; and its 0.4 release hands out domain statistics
//! as raw pointers and never frees them, a leak per scrape or unsafe code of ours.

use std::time::Duration;

use crate::host::command::{self, RunError};

/// One libvirt connection (`-c URI`, or virsh's default when None) and the time each call to it
/// may take.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Libvirt {
    connect: Option<String>,
    timeout: Duration,
}

/// Which domains [`Libvirt::domains`] lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domains {
    Running,
    /// Running or not (defined).
    All,
}

#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("cannot run virsh: it is not installed (Debian: apt install libvirt-clients)")]
    NotInstalled,
    #[error("libvirt did not answer `{verb}` within {:.1} s", after.as_secs_f64())]
    TimedOut { verb: &'static str, after: Duration },
    #[error("virsh {verb} failed: {why}")]
    Failed { verb: &'static str, why: String },
}

impl Libvirt {
    /// Long enough for a busy libvirtd to answer a dumpxml; short enough that a dead one is
    /// reported rather than waited on forever.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    pub fn new(connect: Option<&str>) -> Self {
        Libvirt { connect: connect.map(str::to_string), timeout: Self::DEFAULT_TIMEOUT }
    }

    /// The same connection with each call bounded by `timeout` instead.
    pub fn within(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connection's URI as given (None: virsh's default).
    pub fn uri(&self) -> Option<&str> {
        self.connect.as_deref()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The names of the connection's domains (`virsh list --name`).
    pub fn domains(&self, which: Domains) -> Result<Vec<String>, LibvirtError> {
        let args: &[&str] = match which {
            Domains::Running => &["--name"],
            Domains::All => &["--all", "--name"],
        };
        self.virsh("list", args).map(|stdout| domain_names(&stdout))
    }

    /// A domain's persistent XML (`virsh dumpxml --inactive`): what starts next time, not what
    /// a running domain was started with.
    pub fn domain_xml(&self, domain: &str) -> Result<String, LibvirtError> {
        let stdout = self.virsh("dumpxml", &["--inactive", "--domain", domain])?;
        String::from_utf8(stdout)
            .map_err(|_| LibvirtError::Failed { verb: "dumpxml", why: "it printed non-UTF-8".into() })
    }

    /// `virsh domstats --vcpu --raw --list-active`: every running domain's vCPU statistics in
    /// one call, as text for [`crate::exits::read::domstats`].
    pub fn vcpu_stats(&self) -> Result<String, LibvirtError> {
        self.virsh("domstats", &["--vcpu", "--raw", "--list-active"])
            .map(|stdout| String::from_utf8_lossy(&stdout).into_owned())
    }

    /// One QMP command (JSON text) through libvirt's own monitor of `domain`
    /// (`virsh qemu-monitor-command`); the reply as QEMU gave it.
    pub fn monitor_command(&self, domain: &str, qmp: &str) -> Result<String, LibvirtError> {
        self.virsh("qemu-monitor-command", &["--domain", domain, qmp])
            .map(|stdout| String::from_utf8_lossy(&stdout).into_owned())
    }

    /// One QEMU guest agent command (JSON text) through libvirt's own agent channel of
    /// `domain` (`virsh qemu-agent-command`), waiting at most `wait` for the agent; the reply
    /// as the agent gave it.
    pub fn agent_command(&self, domain: &str, command: &str, wait: Duration) -> Result<String, LibvirtError> {
        let seconds = wait.as_secs().max(1).to_string();
        self.virsh("qemu-agent-command", &["--domain", domain, "--timeout", &seconds, command])
            .map(|stdout| String::from_utf8_lossy(&stdout).into_owned())
    }

    /// Whether `domain` runs now (`virsh domstate`: `running`, `paused`, ... all but `shut off`
    /// and `crashed` are a QEMU process).
    pub fn is_active(&self, domain: &str) -> Result<bool, LibvirtError> {
        let stdout = self.virsh("domstate", &["--domain", domain])?;
        let state = String::from_utf8_lossy(&stdout).trim().to_string();
        Ok(!matches!(state.as_str(), "shut off" | "crashed"))
    }

    /// Makes the XML in `file` the persistent definition of the domain it names (`virsh
    /// define --validate`: checked against libvirt's schema first, refused whole when wrong).
    pub fn define(&self, file: &std::path::Path) -> Result<(), LibvirtError> {
        let path = file.to_string_lossy();
        self.virsh("define", &["--validate", "--file", &path]).map(drop)
    }

    /// Makes `xml` the persistent definition of the domain it names, as [`Libvirt::define`]
    /// does, through a file in a new directory only this user can enter, removed afterwards.
    pub fn define_xml(&self, xml: &str) -> Result<(), LibvirtError> {
        let failed = |why: std::io::Error| LibvirtError::Failed { verb: "define", why: why.to_string() };
        let dir = tempfile::Builder::new().prefix("kvmtune-define-").tempdir().map_err(failed)?;
        let file = dir.path().join("domain.xml");
        std::fs::write(&file, xml).map_err(failed)?;
        self.define(&file)
    }

    /// Asks the guest to shut down (`virsh shutdown`: ACPI power button or the guest agent);
    /// returns at once, the guest may take its time or refuse.
    pub fn shutdown(&self, domain: &str) -> Result<(), LibvirtError> {
        self.virsh("shutdown", &["--domain", domain]).map(drop)
    }

    /// Starts a defined domain (`virsh start`).
    pub fn start(&self, domain: &str) -> Result<(), LibvirtError> {
        self.virsh("start", &["--domain", domain]).map(drop)
    }

    /// Stops a running domain at once, as pulling its plug would (`virsh destroy`): what an
    /// experiment does to a variant it has measured, whose guest state it does not keep.
    pub fn destroy(&self, domain: &str) -> Result<(), LibvirtError> {
        self.virsh("destroy", &["--domain", domain]).map(drop)
    }

    fn virsh(&self, verb: &'static str, args: &[&str]) -> Result<Vec<u8>, LibvirtError> {
        let mut argv = vec!["-q"];
        if let Some(uri) = &self.connect {
            argv.extend(["-c", uri.as_str()]);
        }
        argv.push(verb);
        argv.extend(args);
        match command::run("virsh", &argv, self.timeout) {
            Ok(ran) if ran.status.success() => Ok(ran.stdout),
            Ok(ran) => {
                let why = ran.stderr_line();
                let why = if why.is_empty() { format!("it ended with {}", ran.status) } else { why };
                Err(LibvirtError::Failed { verb, why })
            }
            Err(RunError::NotInstalled { .. }) => Err(LibvirtError::NotInstalled),
            Err(RunError::TimedOut { after, .. }) => Err(LibvirtError::TimedOut { verb, after }),
            Err(error) => Err(LibvirtError::Failed { verb, why: error.to_string() }),
        }
    }
}

/// The names `virsh list --name` prints, one per line.
pub fn domain_names(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_per_line() {
        assert_eq!(domain_names(b"win11\n  gaming \n\n"), ["win11", "gaming"]);
    }

    #[test]
    fn each_client_carries_its_timeout() {
        let libvirt = Libvirt::new(Some("test:///default"));
        assert_eq!(libvirt.timeout(), Libvirt::DEFAULT_TIMEOUT);
        let tight = libvirt.clone().within(Duration::from_millis(500));
        assert_eq!((tight.uri(), tight.timeout()), (Some("test:///default"), Duration::from_millis(500)));
    }
}
