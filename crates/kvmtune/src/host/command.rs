//! Running another program with a deadline and a bound on what it prints.
//!
//! kvmtune asks other programs (virsh, systemctl, lscpu, ...) for what it cannot read from a
//! file, often from a loop that must not stall: the exporter answers a scrape, `top` redraws,
//! a hook runs while libvirtd waits on it. A program that hangs (a libvirtd that does not
//! answer, an ssh connection to a remote URI that never opens) is stopped at its deadline with
//! everything it started, and its output is read only up to a limit.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a program printed before it ended on its own.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Ran {
    /// Its standard error in one line, for an error message.
    pub fn stderr_line(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().replace('\n', "; ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{program} is not installed (not found on PATH)")]
    NotInstalled { program: String },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} did not finish within {:.1} s and was stopped", after.as_secs_f64())]
    TimedOut { program: String, after: Duration },
    #[error("{program} printed more than {limit} bytes and was stopped")]
    TooLarge { program: String, limit: usize },
}

/// The most a program may print on one stream: far above any domain XML or statistics table,
/// far below what would hurt this process.
pub const OUTPUT_LIMIT: usize = 64 << 20;

/// Runs `program` with `args` (no shell, stdin closed) in a process group of its own. It is
/// stopped, with the processes it started, when it has not ended after `timeout` or prints more
/// than [`OUTPUT_LIMIT`] bytes on a stream. It dies with this process too: a kvmtune ended by
/// `kill -9` leaves no program of its own running, so none of them (a `systemctl stop` of the
/// display manager on its way) acts after the undo that follows.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> Result<Ran, RunError> {
    run_limited(program, args, timeout, OUTPUT_LIMIT)
}

pub fn run_limited(program: &str, args: &[&str], timeout: Duration, limit: usize) -> Result<Ran, RunError> {
    let deadline = Instant::now() + timeout;
    let mut command = Command::new(program);
    // The thread that spawns it waits for it below, so it cannot end first.
    crate::sys::die_with_parent(&mut command);
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => RunError::NotInstalled { program: program.to_string() },
            _ => RunError::Spawn { program: program.to_string(), source },
        })?;
    let (sender, receiver) = mpsc::channel();
    for (stream, pipe) in [
        (Stream::Out, child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
        (Stream::Err, child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
    ] {
        let Some(pipe) = pipe else { continue };
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            // One byte past the limit tells "exactly the limit" from "more".
            let read = pipe.take(limit as u64 + 1).read_to_end(&mut bytes);
            let _ = sender.send((stream, read.map(|_| bytes)));
        });
    }
    drop(sender);
    let stop = |child: &mut Child, error: RunError| {
        let _ = crate::sys::kill_process_group(child);
        let _ = child.wait();
        Err(error)
    };
    let (mut stdout, mut stderr) = (None, None);
    // Both streams first (they close when the program and its children end), then the status.
    while stdout.is_none() || stderr.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok((_, Ok(bytes))) if bytes.len() > limit => {
                return stop(&mut child, RunError::TooLarge { program: program.to_string(), limit });
            }
            Ok((Stream::Out, read)) => stdout = Some(read.unwrap_or_default()),
            Ok((Stream::Err, read)) => stderr = Some(read.unwrap_or_default()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return stop(&mut child, RunError::TimedOut { program: program.to_string(), after: timeout });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // The streams are closed; the program is ending or has ended. Polling does not reap it
    // before it is known to be done, so the group id stays its own until then.
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                return stop(&mut child, RunError::TimedOut { program: program.to_string(), after: timeout });
            }
            Ok(None) => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(source) => return Err(RunError::Spawn { program: program.to_string(), source }),
        }
    };
    Ok(Ran { status, stdout: stdout.unwrap_or_default(), stderr: stderr.unwrap_or_default() })
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_status_come_back() {
        let ran = run("sh", &["-c", "echo out; echo err >&2; exit 3"], Duration::from_secs(10)).unwrap();
        assert_eq!(ran.stdout, b"out\n");
        assert_eq!(ran.stderr_line(), "err");
        assert_eq!(ran.status.code(), Some(3));
    }

    #[test]
    fn a_program_past_its_deadline_is_stopped_with_its_children() {
        let marker = tempfile::NamedTempFile::new().unwrap();
        let path = marker.path().display().to_string();
        // The grandchild would write the marker after 1 s; it belongs to the group and dies too.
        let script = format!("(sleep 1; echo late > {path}) & sleep 30");
        let error = run("sh", &["-c", &script], Duration::from_millis(300)).unwrap_err();
        assert!(matches!(error, RunError::TimedOut { .. }), "{error}");
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(std::fs::read_to_string(marker.path()).unwrap(), "", "the grandchild outlived the stop");
    }

    const PID_FILE_ENV: &str = "KVMTUNE_TEST_PROGRAM_PID_FILE";

    /// Not a test of its own: the kvmtune of `a_program_dies_with_the_kvmtune_that_ran_it`,
    /// which runs it with `--ignored` and kills it.
    #[test]
    #[ignore = "the child process of a_program_dies_with_the_kvmtune_that_ran_it, run by it"]
    fn child_runs_a_long_program() {
        let pid_file =
            std::env::var(PID_FILE_ENV).expect("run by a_program_dies_with_the_kvmtune_that_ran_it");
        // The pid appears whole or not at all (rename), then the shell becomes the sleep.
        let script = r#"echo $$ > "$1.tmp" && mv "$1.tmp" "$1" && exec sleep 60"#;
        let _ = run("sh", &["-c", script, "sh", &pid_file], Duration::from_secs(120));
    }

    /// Whether process `pid` still runs (a zombie nobody reaped yet has ended).
    fn runs(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    }

    #[test]
    fn a_program_dies_with_the_kvmtune_that_ran_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut kvmtune = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "host::command::tests::child_runs_a_long_program", "--ignored"])
            .env(PID_FILE_ENV, &pid_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let program = loop {
            if let Ok(pid) = std::fs::read_to_string(&pid_file) {
                break pid.trim().to_string();
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the program never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(runs(&program));
        kvmtune.kill().unwrap();
        kvmtune.wait().unwrap();
        let killed = Instant::now();
        while runs(&program) && killed.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let outlived = runs(&program);
        if outlived {
            let _ = std::process::Command::new("kill").args(["-KILL", &program]).status();
        }
        assert!(!outlived, "the program outlived the kvmtune killed with SIGKILL");
    }

    #[test]
    fn output_past_the_limit_is_refused() {
        let error = run_limited("sh", &["-c", "yes"], Duration::from_secs(10), 1000).unwrap_err();
        assert!(matches!(error, RunError::TooLarge { limit: 1000, .. }), "{error}");
        let ran = run_limited("printf", &["%1000s", ""], Duration::from_secs(10), 1000).unwrap();
        assert_eq!(ran.stdout.len(), 1000);
    }

    #[test]
    fn a_missing_program_says_so() {
        let error = run("kvmtune-no-such-program", &[], Duration::from_secs(1)).unwrap_err();
        assert_eq!(error.to_string(), "kvmtune-no-such-program is not installed (not found on PATH)");
    }
}
