//! What a QMP socket may send, from QEMU or from a process posing as one: a greeting, events
//! and replies, cut short or not JSON. Reading never panics, and a monitor is accepted only
//! after a greeting and a reply to `qmp_capabilities`.
#![no_main]
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use kvmtune::exits::record::monitor::Monitor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // Under the socket buffer: the whole input is there before the reader starts.
    if bytes.len() > 64 * 1024 {
        return;
    }
    let (mut peer, ours) = UnixStream::pair().expect("a socket pair");
    peer.write_all(bytes).expect("fits the buffer");
    peer.shutdown(std::net::Shutdown::Write).expect("shut");
    let deadline = Instant::now() + Duration::from_secs(1);
    if Monitor::over(ours, Path::new("fuzz.qmp"), Some(deadline)).is_ok() {
        let text = String::from_utf8_lossy(bytes);
        assert!(text.contains("QMP") && text.contains("return"), "accepted without a greeting and a reply");
    }
});
