//! Talking QMP to a running VM: over its own socket, or through libvirt when libvirt owns the
//! monitor (a QMP socket takes one client at a time, and libvirtd is already that client).

use std::io::{BufRead, BufReader, ErrorKind, Read as _, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::exits::record::RecordError;
use crate::host::libvirt::Libvirt;

/// The longest QMP message read: `query-stats` of a 1024-vCPU VM is a few MiB. A monitor that
/// sends more (a process posing as QEMU) is cut off rather than read into memory.
pub const MAX_QMP_MESSAGE: u64 = 16 * 1024 * 1024;

/// How long one message may take when the caller set no deadline: a monitor that another
/// client holds accepts the connection but never greets.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub enum Monitor {
    Socket { path: PathBuf, reader: BufReader<UnixStream>, writer: UnixStream, deadline: Option<Instant> },
    Libvirt { libvirt: Libvirt, domain: String },
}

impl Monitor {
    /// The QMP socket at `path`, each message read within 10 s.
    pub fn socket(path: &Path) -> Result<Self, RecordError> {
        Self::socket_until(path, None)
    }

    /// The QMP socket at `path`, every exchange done by `deadline` (when given): past it the
    /// socket is shut and each call fails, so that no reader outlives its caller's patience.
    pub fn socket_until(path: &Path, deadline: Option<Instant>) -> Result<Self, RecordError> {
        let fail = |why: String| RecordError::Monitor { target: path.display().to_string(), why };
        let stream = UnixStream::connect(path).map_err(|e| fail(e.to_string()))?;
        Self::over(stream, path, deadline)
    }

    /// The QMP monitor at the other end of `stream` (connected to `path`): greeted and past
    /// capabilities negotiation. Public for the fuzz target, which feeds it a socket pair.
    pub fn over(stream: UnixStream, path: &Path, deadline: Option<Instant>) -> Result<Self, RecordError> {
        let fail = |why: String| RecordError::Monitor { target: path.display().to_string(), why };
        stream.set_write_timeout(Some(READ_TIMEOUT)).map_err(|e| fail(e.to_string()))?;
        let writer = stream.try_clone().map_err(|e| fail(e.to_string()))?;
        let mut monitor =
            Monitor::Socket { path: path.to_path_buf(), reader: BufReader::new(stream), writer, deadline };
        let greeting = monitor.read_message().map_err(|e| fail(format!("no QMP greeting: {e}")))?;
        if greeting.get("QMP").is_none() {
            return Err(fail(format!("not a QMP monitor (it said {})", clipped(&greeting.to_string()))));
        }
        monitor.execute("qmp_capabilities", None)?;
        Ok(monitor)
    }

    /// `domain`'s monitor, which libvirtd holds, through `libvirt`.
    pub fn libvirt(libvirt: Libvirt, domain: String) -> Self {
        Monitor::Libvirt { libvirt, domain }
    }

    pub fn describe(&self) -> String {
        match self {
            Monitor::Socket { path, .. } => format!("QMP socket {}", path.display()),
            Monitor::Libvirt { domain, .. } => {
                format!("libvirt domain {domain} (virsh qemu-monitor-command)")
            }
        }
    }

    fn read_message(&mut self) -> Result<Value, String> {
        let Monitor::Socket { reader, writer, deadline, .. } = self else {
            unreachable!("only sockets are read")
        };
        loop {
            let wait = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        let _ = writer.shutdown(Shutdown::Both);
                        return Err("no answer within the time given".into());
                    }
                    left.min(READ_TIMEOUT)
                }
                None => READ_TIMEOUT,
            };
            writer.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
            let mut line = Vec::new();
            let read = reader.by_ref().take(MAX_QMP_MESSAGE + 1).read_until(b'\n', &mut line);
            match read {
                Ok(0) => return Err("the monitor closed the connection (the VM stopped?)".into()),
                Ok(_) if line.len() as u64 > MAX_QMP_MESSAGE => {
                    let _ = writer.shutdown(Shutdown::Both);
                    return Err(format!("a message longer than {} MiB; not QEMU's", MAX_QMP_MESSAGE >> 20));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let _ = writer.shutdown(Shutdown::Both);
                    return Err(format!("no answer within {:.1} s", wait.as_secs_f64()));
                }
                Err(e) => return Err(e.to_string()),
            }
            let message = parse_message(&line)?;
            // Asynchronous events (STOP, RESUME, ...) interleave with replies.
            if message.get("event").is_none() {
                return Ok(message);
            }
        }
    }

    /// Runs one QMP command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, RecordError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let target = self.describe();
        let fail = |why: String| RecordError::Monitor { target: target.clone(), why };
        let reply = match self {
            Monitor::Socket { writer, .. } => {
                writeln!(writer, "{request}").map_err(|e| fail(e.to_string()))?;
                self.read_message().map_err(fail)?
            }
            Monitor::Libvirt { libvirt, domain } => {
                let reply =
                    libvirt.monitor_command(domain, &request.to_string()).map_err(|e| fail(e.to_string()))?;
                serde_json::from_str(&reply).map_err(|e| fail(format!("bad reply from virsh: {e}")))?
            }
        };
        if let Some(error) = reply.get("error") {
            let why = error.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
            return Err(fail(format!("{command}: {why}")));
        }
        reply.get("return").cloned().ok_or_else(|| fail(format!("{command}: reply without a return value")))
    }
}

/// One line of the monitor as a JSON message. Public for the fuzz target.
pub fn parse_message(line: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(line).map_err(|e| format!("bad QMP reply: {e}"))
}

/// A message for an error text: what a process posing as QEMU said, cut short.
fn clipped(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// Where a QEMU process takes QMP, read from its command line: `-qmp unix:PATH`, or a
/// `-chardev socket,path=PATH,server=on` that a `-mon chardev=ID,mode=control` uses. libvirt's
/// own monitor (`-mon chardev=charmonitor`) belongs to libvirtd; for that the caller gets the
/// domain name (`-name guest=NAME`) to go through virsh instead.
#[derive(Debug, PartialEq, Eq)]
pub enum MonitorAddress {
    Socket(PathBuf),
    LibvirtDomain(String),
}

pub fn monitor_from_argv(argv: &[String]) -> Option<MonitorAddress> {
    let mut control_chardevs = Vec::new();
    let mut chardev_paths = Vec::new();
    let mut guest_name = None;
    let mut direct = None;
    for pair in argv.windows(2) {
        let (option, value) = (pair[0].trim_start_matches('-'), pair[1].as_str());
        let field = |key: &str| value.split(',').find_map(|p| p.strip_prefix(key)).map(str::to_string);
        match option {
            "qmp" if direct.is_none() => {
                direct = value
                    .strip_prefix("unix:")
                    .map(|rest| PathBuf::from(rest.split(',').next().unwrap_or("")))
            }
            "mon" if value.contains("mode=control") => control_chardevs.extend(field("chardev=")),
            "chardev" if value.starts_with("socket") => {
                if let (Some(id), Some(path)) = (field("id="), field("path=")) {
                    chardev_paths.push((id, path));
                }
            }
            "name" => guest_name = field("guest=").or_else(|| Some(value.split(',').next()?.to_string())),
            _ => {}
        }
    }
    if let Some(path) = direct {
        return Some(MonitorAddress::Socket(path));
    }
    for id in &control_chardevs {
        if id == "charmonitor"
            && let Some(name) = &guest_name
        {
            return Some(MonitorAddress::LibvirtDomain(name.clone()));
        }
        if let Some((_, path)) = chardev_paths.iter().find(|(chardev, _)| chardev == id) {
            return Some(MonitorAddress::Socket(PathBuf::from(path)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket in a temp dir whose one client gets `greeting` written by a thread.
    fn posing_monitor(greeting: impl FnOnce(UnixStream) + Send + 'static) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                greeting(stream);
            }
        });
        (dir, path)
    }

    #[test]
    fn a_greeting_without_end_is_cut_off_at_the_message_bound() {
        let (_dir, path) = posing_monitor(|mut stream| {
            let chunk = vec![b'a'; 1 << 20];
            // Until the reader shuts the socket: at most a little more than the bound.
            for _ in 0..64 {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        let error =
            Monitor::socket_until(&path, Some(Instant::now() + Duration::from_secs(30))).err().unwrap();
        assert!(error.to_string().contains("longer than 16 MiB"), "{error}");
    }

    #[test]
    fn a_silent_monitor_is_given_up_at_the_deadline() {
        let (_dir, path) = posing_monitor(|stream| {
            std::thread::sleep(Duration::from_secs(5));
            drop(stream);
        });
        let started = Instant::now();
        let error = Monitor::socket_until(&path, Some(started + Duration::from_millis(300))).err().unwrap();
        assert!(error.to_string().contains("no answer within"), "{error}");
        // Well before the 5 s the monitor stays silent, and the 10 s of a read with no deadline.
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    }

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn finds_the_qmp_socket_or_the_libvirt_domain() {
        assert_eq!(
            monitor_from_argv(&argv("qemu -accel kvm -qmp unix:/tmp/q.sock,server=on,wait=off")),
            Some(MonitorAddress::Socket("/tmp/q.sock".into()))
        );
        assert_eq!(
            monitor_from_argv(&argv(
                "qemu -chardev socket,id=mon0,path=/run/m.sock,server=on,wait=off -mon chardev=mon0,mode=control"
            )),
            Some(MonitorAddress::Socket("/run/m.sock".into()))
        );
        let libvirt = "qemu-system-x86_64 -name guest=win11,debug-threads=on -chardev \
                       socket,id=charmonitor,fd=31,server=on,wait=off -mon chardev=charmonitor,id=monitor,mode=control";
        assert_eq!(monitor_from_argv(&argv(libvirt)), Some(MonitorAddress::LibvirtDomain("win11".into())));
        assert_eq!(monitor_from_argv(&argv("qemu -accel kvm -monitor stdio")), None);
    }
}
