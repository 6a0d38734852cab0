//! The exporter's HTTP side: one route, read-only, on a socket any local user (and a browser on
//! the host) can reach while kvmtune runs as root. So it takes nothing it does not need: only
//! GET and HEAD, no body, a bounded request head read within a deadline, a bounded number of
//! connections each in a thread of its own (a client that never finishes its request holds a
//! slot for at most [`Limits::request_deadline`] and gives it up to a newer client when all are
//! taken, so it never keeps the scraper out), and only a Host header
//! that names this host, which a page served from another domain cannot send (DNS rebinding).
//!
//! The head is parsed by httparse (the parser hyper uses); the rest is std. tiny_http, used
//! before, drained an announced body by allocating it (a `Content-Length` of 10^17 aborted the
//! process), read headers of any size, served one request at a time and ran every method;
//! hyper or axum would bring an async runtime for one route, so this is a small server of its
//! own. Each response closes its connection: Prometheus scrapes every few seconds at most.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What a client may take of the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The request line and headers together (curl and Prometheus send a few hundred bytes).
    pub(crate) max_head_bytes: usize,
    /// Connections served at once; one more is closed at once, unanswered.
    pub(crate) max_connections: usize,
    /// From accepting a connection to having its whole request head.
    pub(crate) request_deadline: Duration,
    /// For writing the response to a client that does not read it.
    pub(crate) write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 8 * 1024,
            max_connections: 32,
            request_deadline: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// A request that passed every check: GET or HEAD, no body, a Host that names this host.
pub(crate) struct Request {
    pub(crate) path: String,
    /// Whether the client takes OpenMetrics (Prometheus asks for it).
    pub(crate) accepts_openmetrics: bool,
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Self {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// Which names a Host header may give besides IP literals and `localhost`: the host's own
/// name and those the user allows. A name an attacker's DNS points at this host is none of them.
#[derive(Debug, Clone)]
pub(crate) struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Self {
        AllowedHosts {
            names: names.into_iter().map(|n| n.trim_end_matches('.').to_ascii_lowercase()).collect(),
        }
    }

    /// `value` is a Host header: `name`, `name:port`, `1.2.3.4:port` or `[v6]:port`.
    pub(crate) fn allows(&self, value: &str) -> bool {
        let value = value.trim();
        let host = if let Some(rest) = value.strip_prefix('[') {
            match rest.split_once(']') {
                Some((inside, after)) if after.is_empty() || after.starts_with(':') => inside,
                _ => return false,
            }
        } else {
            value.rsplit_once(':').map_or(value, |(host, _port)| host)
        };
        if host.parse::<IpAddr>().is_ok() {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host == "localhost" || self.names.contains(&host)
    }
}

/// The request a head makes, or the error response it gets.
fn checked_request(head: &[u8], allowed: &AllowedHosts) -> Result<Request, Response> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Response::text(400, "incomplete request\n")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Response::text(431, "more than 64 headers\n"));
        }
        Err(e) => return Err(Response::text(400, format!("not an HTTP request: {e}\n"))),
    }
    let method = parsed.method.unwrap_or_default();
    if method != "GET" && method != "HEAD" {
        return Err(Response::text(405, "only GET and HEAD are served\n"));
    }
    let headers: &[httparse::Header] = parsed.headers;
    let header = |name: &'static str| {
        headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    };
    let has_body = header("Transfer-Encoding").next().is_some()
        || header("Content-Length").any(|v| std::str::from_utf8(v).map_or(true, |v| v.trim() != "0"));
    if has_body {
        return Err(Response::text(413, "a request to the exporter has no body\n"));
    }
    let hosts: Vec<&[u8]> = header("Host").collect();
    match hosts.as_slice() {
        // HTTP/1.0 clients may leave it out; browsers never do.
        [] => {}
        [one] if std::str::from_utf8(one).is_ok_and(|h| allowed.allows(h)) => {}
        [_] => {
            return Err(Response::text(
                403,
                "the Host header names neither this host nor an address; `kvmtune exporter --allow-host NAME` allows a name\n",
            ));
        }
        _ => return Err(Response::text(400, "more than one Host header\n")),
    }
    let accepts_openmetrics = header("Accept")
        .any(|v| std::str::from_utf8(v).is_ok_and(|v| v.contains("application/openmetrics-text")));
    let path = parsed.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path).to_string();
    Ok(Request { path, accepts_openmetrics })
}

/// Reads up to the blank line that ends the head, within `deadline` and `max` bytes.
fn read_head(stream: &mut TcpStream, deadline: Instant, max: usize) -> Result<Vec<u8>, Response> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Response::text(408, "the request took too long\n"));
        }
        // A client that stalls each read is held to the whole deadline, not one per read.
        let _ = stream.set_read_timeout(Some(left));
        let read = match stream.read(&mut buffer) {
            Ok(0) => return Err(Response::text(400, "incomplete request\n")),
            Ok(read) => read,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(Response::text(408, "the request took too long\n"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Response::text(400, "incomplete request\n")),
        };
        // Look for the end only where it can newly be: the last 3 bytes before and the new ones.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buffer[..read]);
        if let Some(end) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(from + end + 4);
            return Ok(head);
        }
        if head.len() > max {
            return Err(Response::text(431, format!("the request head is over {max} bytes\n")));
        }
    }
}

fn respond(stream: &mut TcpStream, response: &Response, head_only: bool) {
    let mut bytes = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.status == 405 {
        bytes.push_str("Allow: GET, HEAD\r\n");
    }
    bytes.push_str("\r\n");
    let mut bytes = bytes.into_bytes();
    if !head_only {
        bytes.extend_from_slice(response.body.as_bytes());
    }
    // A client that went away, or stopped reading, is its own business.
    let _ = stream.write_all(&bytes).and_then(|()| stream.flush());
    let _ = stream.shutdown(Shutdown::Both);
}

fn serve_one(
    mut stream: TcpStream,
    limits: Limits,
    allowed: &AllowedHosts,
    handle: &(dyn Fn(&Request) -> Response + Sync),
    head_read: impl FnOnce(),
) {
    let _ = stream.set_write_timeout(Some(limits.write_timeout));
    let deadline = Instant::now() + limits.request_deadline;
    let head = match read_head(&mut stream, deadline, limits.max_head_bytes) {
        Ok(head) => head,
        Err(response) => return respond(&mut stream, &response, false),
    };
    head_read();
    let head_only = head.starts_with(b"HEAD ");
    let response = match checked_request(&head, allowed) {
        Ok(request) => handle(&request),
        Err(response) => response,
    };
    respond(&mut stream, &response, head_only);
}

/// Stops [`serve`] from another thread (a signal handler).
#[derive(Clone)]
pub(crate) struct Stopper {
    stopped: Arc<AtomicBool>,
    wake: SocketAddr,
}

impl Stopper {
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // accept() returns for this connection and sees the flag.
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
    }
}

pub(crate) struct Server {
    listener: TcpListener,
    stopped: Arc<AtomicBool>,
}

impl Server {
    pub(crate) fn bind(address: SocketAddr) -> std::io::Result<Self> {
        Ok(Server { listener: TcpListener::bind(address)?, stopped: Arc::new(AtomicBool::new(false)) })
    }

    pub(crate) fn stopper(&self) -> std::io::Result<Stopper> {
        let mut wake = self.listener.local_addr()?;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                SocketAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        Ok(Stopper { stopped: self.stopped.clone(), wake })
    }

    /// Serves until stopped: each connection in a thread of its own, at most
    /// `limits.max_connections` at once; `handle` is called for each request that passes.
    pub(crate) fn serve(
        self,
        limits: Limits,
        allowed: AllowedHosts,
        handle: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) {
        let handle: Arc<dyn Fn(&Request) -> Response + Send + Sync> = Arc::new(handle);
        let allowed = Arc::new(allowed);
        let slots = Arc::new(Slots::default());
        for stream in self.listener.incoming() {
            if self.stopped.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let Some(slot) = slots.take(&stream, limits.max_connections) else {
                // Closed unanswered: writing could block the accept loop on this very client.
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            };
            let (handle, allowed, slots_here) = (handle.clone(), allowed.clone(), slots.clone());
            let spawned = std::thread::Builder::new().name("exporter-connection".into()).spawn(move || {
                serve_one(stream, limits, &allowed, &*handle, || slots_here.read(slot));
                slots_here.free(slot);
            });
            if spawned.is_err() {
                slots.free(slot);
            }
        }
    }
}

/// The connections being served. When all are taken, the one that has waited longest for its
/// request head gives way to the new one: a client that opens connections and sends nothing
/// cannot keep a scraper out, whose request comes at once.
#[derive(Default)]
struct Slots {
    taken: std::sync::Mutex<Vec<Slot>>,
    next_id: AtomicUsize,
}

struct Slot {
    id: usize,
    /// The same socket as the serving thread's, to shut it from here.
    stream: TcpStream,
    since: Instant,
    /// Still reading its request head (a request being answered is never evicted).
    reading: bool,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, stream: &TcpStream, max: usize) -> Option<usize> {
        let mut taken = self.lock();
        if taken.len() >= max {
            let oldest = taken.iter().enumerate().filter(|(_, s)| s.reading).min_by_key(|(_, s)| s.since)?.0;
            // Its read fails at once and its thread ends.
            let _ = taken.swap_remove(oldest).stream.shutdown(Shutdown::Both);
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let stream = stream.try_clone().ok()?;
        taken.push(Slot { id, stream, since: Instant::now(), reading: true });
        Some(id)
    }

    fn read(&self, id: usize) {
        if let Some(slot) = self.lock().iter_mut().find(|s| s.id == id) {
            slot.reading = false;
        }
    }

    fn free(&self, id: usize) {
        self.lock().retain(|s| s.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> AllowedHosts {
        AllowedHosts::new(["kvmhost".to_string(), "kvmhost.example.org.".to_string()])
    }

    #[test]
    fn host_headers_that_name_this_host_or_an_address_pass_and_others_do_not() {
        let allowed = allowed();
        for ok in [
            "127.0.0.1:10947",
            "localhost:10947",
            "LOCALHOST",
            "[::1]:10947",
            "[::1]",
            "10.0.0.5",
            "kvmhost:10947",
            "KVMhost.example.org:1",
        ] {
            assert!(allowed.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example.com:10947",
            "127.0.0.1.evil.example:10947",
            "[::1",
            "[::1]x",
            "localhost.evil:1",
            "",
        ] {
            assert!(!allowed.allows(bad), "{bad}");
        }
    }

    fn status_of(head: &str) -> u16 {
        match checked_request(head.as_bytes(), &allowed()) {
            Ok(_) => 200,
            Err(response) => response.status,
        }
    }

    #[test]
    fn only_bodyless_gets_and_heads_from_this_host_pass() {
        assert_eq!(status_of("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"), 200);
        assert_eq!(status_of("HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"), 200);
        assert_eq!(status_of("GET /metrics HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"), 200);
        assert_eq!(status_of("POST /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"), 405);
        assert_eq!(
            status_of(
                "GET /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000000000000\r\n\r\n"
            ),
            413
        );
        assert_eq!(
            status_of("GET /metrics HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"),
            413
        );
        assert_eq!(status_of("GET /metrics HTTP/1.1\r\nHost: rebound.example\r\n\r\n"), 403);
        assert_eq!(status_of("GET /metrics HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n"), 400);
        assert_eq!(status_of("\u{1b}[2J\r\n\r\n"), 400);
        let many: String = (0..65).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status_of(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }
}
