//! Talking QMP to a running VM: over its own socket, or through libvirt when libvirt owns the
//! monitor (a QMP socket takes one client at a time, and libvirtd is already that client).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::exits::record::RecordError;
use crate::host::libvirt::Libvirt;

pub enum Monitor {
    Socket { path: PathBuf, reader: BufReader<UnixStream>, writer: UnixStream },
    Libvirt { libvirt: Libvirt, domain: String },
}

impl Monitor {
    pub fn socket(path: &Path) -> Result<Self, RecordError> {
        let fail = |why: String| RecordError::Monitor { target: path.display().to_string(), why };
        let stream = UnixStream::connect(path).map_err(|e| fail(e.to_string()))?;
        // A monitor that another client holds accepts the connection but never greets us.
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| fail(e.to_string()))?;
        let writer = stream.try_clone().map_err(|e| fail(e.to_string()))?;
        let mut monitor =
            Monitor::Socket { path: path.to_path_buf(), reader: BufReader::new(stream), writer };
        let greeting = monitor.read_message().map_err(|e| fail(format!("no QMP greeting: {e}")))?;
        if greeting.get("QMP").is_none() {
            return Err(fail(format!("not a QMP monitor (it said {greeting})")));
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
        let Monitor::Socket { reader, .. } = self else { unreachable!("only sockets are read") };
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return Err("the monitor closed the connection (the VM stopped?)".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            let message: Value = serde_json::from_str(&line).map_err(|e| format!("bad QMP reply: {e}"))?;
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
