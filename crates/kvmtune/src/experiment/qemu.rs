//! Variants of a plain QEMU VM: each is a script that execs QEMU in the foreground with `"$@"`
//! appended, where kvmtune puts a QMP monitor on a socket of its own.
//!
//! The script runs in a process group of its own (so that stopping it reaches whatever it
//! started) and with the parent-death signal set, so that a kvmtune ended by `kill -9` takes
//! its VM with it: nothing of a plain QEMU experiment can outlive it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::RunningVm;
use crate::exits::record::Target;
use crate::exits::record::monitor::Monitor;

/// How long a VM may take from its start until its monitor answers.
const MONITOR_WAIT: Duration = Duration::from_secs(60);
/// How long QEMU may take to quit when asked before it is killed.
const QUIT_WAIT: Duration = Duration::from_secs(10);

/// A variant script must be an executable regular file.
pub fn check_script(script: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(script).map_err(|e| format!("{}: {e}", script.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", script.display()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{} is not executable (chmod +x it)", script.display()));
    }
    Ok(())
}

pub struct ScriptVm {
    child: Option<Child>,
    qmp: PathBuf,
    log: PathBuf,
}

impl ScriptVm {
    /// Runs `script -qmp unix:QMP,server=on,wait=off`, its output into `log`, and waits until
    /// its monitor answers. `qmp` is in a directory only this user can write.
    pub fn start(script: &Path, log: &Path, qmp: &Path) -> Result<Self, String> {
        let qmp = qmp.to_path_buf();
        let _ = std::fs::remove_file(&qmp);
        let output = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let errors = output.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(script);
        command
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .process_group(0);
        crate::sys::die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let mut vm = ScriptVm { child: Some(child), qmp, log: log.to_path_buf() };
        vm.wait_for_monitor()?;
        Ok(vm)
    }

    fn wait_for_monitor(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + MONITOR_WAIT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "the script ended ({status}) before its QMP monitor answered; {}",
                    self.log_tail()
                ));
            }
            if self.qmp.exists()
                && Monitor::socket_until(&self.qmp, Some(Instant::now() + Duration::from_secs(5))).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.stop();
                return Err(format!(
                    "no QMP monitor answered within {} s (does the script exec QEMU with \"$@\"?); {}",
                    MONITOR_WAIT.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        if lines.is_empty() {
            format!("it printed nothing ({})", self.log.display())
        } else {
            let tail: Vec<&str> = lines.into_iter().rev().collect();
            format!("its last lines ({}): {}", self.log.display(), tail.join(" | "))
        }
    }
}

impl RunningVm for ScriptVm {
    fn target(&self) -> Target {
        Target::Qmp(self.qmp.clone())
    }

    fn environment(&self) -> Vec<(String, String)> {
        let mut environment = vec![("KVMTUNE_QMP".to_string(), self.qmp.display().to_string())];
        if let Some(child) = &self.child {
            environment.push(("KVMTUNE_VM_PID".to_string(), child.id().to_string()));
        }
        environment
    }

    /// Asks QEMU to quit, waits a little, then kills the script's process group.
    fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        if let Ok(mut monitor) =
            Monitor::socket_until(&self.qmp, Some(Instant::now() + Duration::from_secs(5)))
        {
            // The monitor closes as QEMU quits: a missing reply is the expected answer.
            let _ = monitor.execute("quit", None);
        }
        let deadline = Instant::now() + QUIT_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                let _ = std::fs::remove_file(&self.qmp);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let killed = crate::sys::kill_process_group(&child);
        let _ = child.wait();
        let _ = std::fs::remove_file(&self.qmp);
        killed.map_err(|e| {
            format!("QEMU did not quit within {} s and could not be killed: {e}", QUIT_WAIT.as_secs())
        })
    }
}

impl Drop for ScriptVm {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
