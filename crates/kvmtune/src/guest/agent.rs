//! The QEMU guest agent (qemu-ga), used to run the guest program in a running guest: copy the
//! build for the guest's OS in (`guest-file-open`, `-write`, `-close`), run it
//! (`guest-exec`, `guest-exec-status`), remove it, and return its report. The agent is reached
//! through its socket (plain QEMU: `-chardev socket,...` on a `virtserialport` named
//! `org.qemu.guest_agent.0`) or through libvirt, which owns the socket of its domains.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::host::libvirt::{Libvirt, LibvirtError};

/// How long one agent command may take before the agent counts as not answering.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest program may run (it takes under 2 s; a loaded guest, longer).
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes per `guest-file-write`: libvirt passes the command as one argument to virsh, and
/// Linux caps one argument at 128 KiB; base64 makes 48 KiB into 64.
const CHUNK: usize = 48 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the guest agent at {path}: {why}")]
    Connect { path: String, why: String },
    #[error("the guest agent did not answer `{command}` within {:.0} s", .after.as_secs_f64())]
    Timeout { command: String, after: Duration },
    #[error("the guest agent refused `{command}`: {why}")]
    Refused { command: String, why: String },
    #[error(
        "the guest agent's policy disables {commands} (qemu-ga --block-rpcs or its allow list); verify needs them, or run kvmtune-guest by hand and use --report"
    )]
    Disabled { commands: String },
    #[error("the guest agent answered `{command}` with something that is not its protocol: {why}")]
    Protocol { command: String, why: String },
    #[error("libvirt: {0}")]
    Libvirt(#[from] crate::host::libvirt::LibvirtError),
    #[error("the guest program did not finish within {:.0} s", .0.as_secs_f64())]
    ProgramTimeout(Duration),
    #[error("the guest program failed (exit {code}): {stderr}")]
    ProgramFailed { code: i64, stderr: String },
    #[error(
        "no kvmtune-guest build for a {os} guest: looked in {looked}; build it with scripts/build-guest.sh (or install the Debian package)"
    )]
    NoBuild { os: String, looked: String },
    #[error("cannot read {path}: {why}")]
    ReadBuild { path: String, why: String },
}

/// Where the agent is.
#[derive(Debug, Clone)]
pub enum AgentChannel {
    /// The agent's socket on this host (plain QEMU).
    Socket(PathBuf),
    /// A libvirt domain's agent channel.
    Domain { libvirt: Libvirt, domain: String },
}

/// A connection to one guest agent.
pub struct Agent {
    channel: AgentChannel,
    stream: Option<BufReader<UnixStream>>,
}

impl Agent {
    /// Connects, and synchronizes: the agent may still hold a reply meant for an earlier client.
    pub fn connect(channel: AgentChannel) -> Result<Agent, AgentError> {
        let stream = match &channel {
            AgentChannel::Socket(path) => {
                let stream = UnixStream::connect(path).map_err(|e| AgentError::Connect {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?;
                stream.set_read_timeout(Some(COMMAND_TIMEOUT)).ok();
                stream.set_write_timeout(Some(COMMAND_TIMEOUT)).ok();
                Some(BufReader::new(stream))
            }
            AgentChannel::Domain { .. } => None,
        };
        let mut agent = Agent { channel, stream };
        if agent.stream.is_some() {
            agent.sync()?;
        }
        Ok(agent)
    }

    /// `guest-sync` with a fresh id, reading past anything older until its echo comes back.
    fn sync(&mut self) -> Result<(), AgentError> {
        // Unique enough to tell this sync's echo from a stale reply.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = (u64::from(std::process::id()) << 32) | u64::from(nanos);
        let request = json!({"execute": "guest-sync", "arguments": {"id": id}}).to_string();
        let stream = self.stream.as_mut().expect("socket channel");
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .and_then(|_| stream.get_mut().write_all(b"\n"))
            .map_err(|e| AgentError::Connect { path: "the agent socket".into(), why: e.to_string() })?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while Instant::now() < deadline {
            let reply = read_line(stream, "guest-sync")?;
            if reply.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(());
            }
        }
        Err(AgentError::Timeout { command: "guest-sync".into(), after: COMMAND_TIMEOUT })
    }

    /// One command; its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, AgentError> {
        let mut request = json!({"execute": command});
        if !arguments.is_null() {
            request["arguments"] = arguments;
        }
        let reply = match &self.channel {
            AgentChannel::Socket(_) => {
                let stream = self.stream.as_mut().expect("socket channel");
                let text = format!("{request}\n");
                stream.get_mut().write_all(text.as_bytes()).map_err(|e| io_error(command, &e))?;
                read_line(stream, command)?
            }
            AgentChannel::Domain { libvirt, domain } => {
                let text = match libvirt.agent_command(domain, &request.to_string(), COMMAND_TIMEOUT) {
                    Ok(text) => text,
                    // libvirt turns the agent's error reply into a failure of virsh.
                    Err(LibvirtError::Failed { why, .. })
                        if why.contains("unable to execute QEMU agent command") =>
                    {
                        return Err(AgentError::Refused { command: command.into(), why });
                    }
                    Err(LibvirtError::Failed { why, .. })
                        if why.contains("not responding") || why.contains("timed out") =>
                    {
                        return Err(AgentError::Timeout { command: command.into(), after: COMMAND_TIMEOUT });
                    }
                    Err(error) => return Err(error.into()),
                };
                serde_json::from_str(&text)
                    .map_err(|e| AgentError::Protocol { command: command.into(), why: e.to_string() })?
            }
        };
        if let Some(error) = reply.get("error") {
            let why = error.get("desc").and_then(Value::as_str).unwrap_or("no reason given").to_string();
            return Err(AgentError::Refused { command: command.into(), why });
        }
        reply.get("return").cloned().ok_or_else(|| AgentError::Protocol {
            command: command.into(),
            why: format!("no `return` in {reply}"),
        })
    }
}

fn io_error(command: &str, error: &std::io::Error) -> AgentError {
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            AgentError::Timeout { command: command.into(), after: COMMAND_TIMEOUT }
        }
        _ => AgentError::Protocol { command: command.into(), why: error.to_string() },
    }
}

/// One reply line. The agent may put a 0xFF byte before a reply after `guest-sync-delimited`;
/// it is skipped.
fn read_line(stream: &mut BufReader<UnixStream>, command: &str) -> Result<Value, AgentError> {
    let mut line = Vec::new();
    let read = stream.read_until(b'\n', &mut line).map_err(|e| io_error(command, &e))?;
    if read == 0 {
        return Err(AgentError::Protocol {
            command: command.into(),
            why: "the agent closed the connection".into(),
        });
    }
    let text = String::from_utf8_lossy(&line);
    serde_json::from_str(text.trim_start_matches('\u{FFFD}').trim()).map_err(|e| AgentError::Protocol {
        command: command.into(),
        why: format!("{e} in {:?}", text.trim()),
    })
}

/// The guest's OS as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestOs {
    Windows,
    Linux,
}

impl GuestOs {
    pub fn label(self) -> &'static str {
        match self {
            GuestOs::Windows => "Windows",
            GuestOs::Linux => "Linux",
        }
    }

    /// The build's file name.
    pub fn program(self) -> &'static str {
        match self {
            GuestOs::Windows => "kvmtune-guest.exe",
            GuestOs::Linux => "kvmtune-guest",
        }
    }
}

/// Where the guest program's builds are looked for: `$KVMTUNE_GUEST_DIR` alone when it is set;
/// otherwise, in order, `target/guest` next to a cargo build's `target/release`
/// (scripts/build-guest.sh), beside the kvmtune binary, and the Debian package's
/// `/usr/lib/kvmtune/guest`.
pub fn build_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("KVMTUNE_GUEST_DIR") {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs = Vec::new();
    if let Some(bin) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        if let Some(target) = bin.parent() {
            dirs.push(target.join("guest"));
        }
        dirs.push(bin);
    }
    dirs.push(PathBuf::from("/usr/lib/kvmtune/guest"));
    dirs
}

/// The build for `os`, from the first of `dirs` that has one.
pub fn find_build(os: GuestOs, dirs: &[PathBuf]) -> Result<PathBuf, AgentError> {
    dirs.iter().map(|dir| dir.join(os.program())).find(|path| path.is_file()).ok_or_else(|| {
        AgentError::NoBuild {
            os: os.label().into(),
            looked: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
        }
    })
}

/// What running the program in the guest gave.
pub struct Ran {
    pub os: GuestOs,
    pub stdout: String,
}

impl Agent {
    /// The commands verify needs that the agent's policy has switched off.
    fn disabled_commands(&mut self) -> Result<Vec<String>, AgentError> {
        const NEEDED: [&str; 6] = [
            "guest-file-open",
            "guest-file-write",
            "guest-file-close",
            "guest-exec",
            "guest-exec-status",
            "guest-get-osinfo",
        ];
        let info = self.execute("guest-info", Value::Null)?;
        let commands = info.get("supported_commands").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(NEEDED
            .iter()
            .filter(|name| {
                let entry = commands.iter().find(|c| c.get("name").and_then(Value::as_str) == Some(**name));
                entry.is_none_or(|c| c.get("enabled").and_then(Value::as_bool) == Some(false))
            })
            .map(|name| name.to_string())
            .collect())
    }

    pub fn os(&mut self) -> Result<GuestOs, AgentError> {
        let info = self.execute("guest-get-osinfo", Value::Null)?;
        Ok(if info.get("id").and_then(Value::as_str) == Some("mswindows") {
            GuestOs::Windows
        } else {
            GuestOs::Linux
        })
    }

    /// Copies the program for the guest's OS in, runs it with `--format json`, removes it.
    pub fn run_guest_program(&mut self, dirs: &[PathBuf]) -> Result<Ran, AgentError> {
        let disabled = self.disabled_commands()?;
        if !disabled.is_empty() {
            return Err(AgentError::Disabled { commands: disabled.join(", ") });
        }
        let os = self.os()?;
        let build = find_build(os, dirs)?;
        let bytes = std::fs::read(&build)
            .map_err(|e| AgentError::ReadBuild { path: build.display().to_string(), why: e.to_string() })?;
        let name = format!(
            "kvmtune-guest-{}{}",
            std::process::id(),
            if os == GuestOs::Windows { ".exe" } else { "" }
        );
        let guest_path = self.copy_in(os, &name, &bytes)?;
        let ran = self.run(os, &guest_path);
        let removed = self.remove(os, &guest_path);
        let stdout = ran?;
        removed?;
        Ok(Ran { os, stdout })
    }

    /// Writes `bytes` to a new file in the guest's first writable temporary directory.
    fn copy_in(&mut self, os: GuestOs, name: &str, bytes: &[u8]) -> Result<String, AgentError> {
        let dirs: &[&str] = match os {
            GuestOs::Windows => &["C:\\Windows\\Temp"],
            // /run last: a tmpfs on every systemd guest, and where a read-only root keeps its
            // scratch space.
            GuestOs::Linux => &["/tmp", "/var/tmp", "/run"],
        };
        let separator = if os == GuestOs::Windows { "\\" } else { "/" };
        let mut last_error = None;
        for dir in dirs {
            let path = format!("{dir}{separator}{name}");
            let handle = match self.execute("guest-file-open", json!({"path": path, "mode": "wb"})) {
                Ok(handle) => handle,
                Err(error @ AgentError::Refused { .. }) => {
                    last_error = Some(error);
                    continue;
                }
                Err(error) => return Err(error),
            };
            let written = bytes.chunks(CHUNK).try_for_each(|chunk| {
                self.execute("guest-file-write", json!({"handle": handle, "buf-b64": BASE64.encode(chunk)}))
                    .map(|_| ())
            });
            let closed = self.execute("guest-file-close", json!({"handle": handle}));
            if let Err(error) = written.and(closed.map(|_| ())) {
                let _ = self.remove(os, &path);
                return Err(error);
            }
            return Ok(path);
        }
        Err(last_error.expect("at least one directory"))
    }

    fn run(&mut self, os: GuestOs, path: &str) -> Result<String, AgentError> {
        let (program, args) = match os {
            GuestOs::Windows => (path.to_string(), vec!["--format".to_string(), "json".to_string()]),
            // guest-file-open makes no executable file: the shell sets the mode first.
            GuestOs::Linux => (
                "/bin/sh".to_string(),
                vec!["-c".into(), "chmod 700 \"$0\" && exec \"$0\" --format json".into(), path.to_string()],
            ),
        };
        let started =
            self.execute("guest-exec", json!({"path": program, "arg": args, "capture-output": true}))?;
        let pid = started.get("pid").and_then(Value::as_i64).ok_or_else(|| AgentError::Protocol {
            command: "guest-exec".into(),
            why: format!("no pid in {started}"),
        })?;
        let deadline = Instant::now() + PROGRAM_TIMEOUT;
        loop {
            let status = self.execute("guest-exec-status", json!({"pid": pid}))?;
            if status.get("exited").and_then(Value::as_bool) == Some(true) {
                let decode = |key: &str| {
                    status
                        .get(key)
                        .and_then(Value::as_str)
                        .and_then(|b64| BASE64.decode(b64).ok())
                        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                        .unwrap_or_default()
                };
                let code = status.get("exitcode").and_then(Value::as_i64).unwrap_or(-1);
                if code != 0 {
                    let stderr = decode("err-data");
                    return Err(AgentError::ProgramFailed { code, stderr: stderr.trim().to_string() });
                }
                return Ok(decode("out-data"));
            }
            if Instant::now() > deadline {
                return Err(AgentError::ProgramTimeout(PROGRAM_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Removes the program again (the agent has no command for it: the guest's own tools do).
    fn remove(&mut self, os: GuestOs, path: &str) -> Result<(), AgentError> {
        let (program, args) = match os {
            GuestOs::Windows => {
                ("cmd.exe", vec!["/c".to_string(), "del".into(), "/f".into(), "/q".into(), path.to_string()])
            }
            GuestOs::Linux => ("/bin/rm", vec!["-f".to_string(), path.to_string()]),
        };
        let started = self.execute("guest-exec", json!({"path": program, "arg": args}))?;
        if let Some(pid) = started.get("pid").and_then(Value::as_i64) {
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            while Instant::now() < deadline {
                let status = self.execute("guest-exec-status", json!({"pid": pid}))?;
                if status.get("exited").and_then(Value::as_bool) == Some(true) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}
