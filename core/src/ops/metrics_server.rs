//! The Prometheus endpoint's HTTP server: one thread, one connection at a time.
//!
//! It runs inside PostgreSQL's scheduler worker, so what a client can make it do is bounded:
//! a scrape is one short GET, so connections are served one after another (never a thread or
//! a buffer per connection), each given [`CONNECTION_TIMEOUT`] to send its request and take
//! the answer, and a request head larger than [`MAX_REQUEST_HEAD`] is refused. A client that
//! connects and says nothing holds the endpoint for that long at most. The thread that calls
//! [`serve`] must have every signal blocked (see `threads`); no thread is started here.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one connection may take: to send its request, and to read the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// A scrape's request head is a few hundred bytes.
pub const MAX_REQUEST_HEAD: usize = 8 << 10;
/// How often a stop request is looked at while no client connects.
const POLL: Duration = Duration::from_millis(100);

/// An answer: status code, content type, body.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Accepts connections on `listener` until `stop` is set, answering each request's path with
/// `answer`.
pub fn serve(listener: &TcpListener, stop: &AtomicBool, answer: &dyn Fn(&str) -> Answer) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = serve_connection(stream, answer);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn serve_connection(mut stream: TcpStream, answer: &dyn Fn(&str) -> Answer) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let deadline = Instant::now() + CONNECTION_TIMEOUT;
    stream.set_write_timeout(Some(CONNECTION_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return respond(
                &mut stream,
                &Answer {
                    status: 431,
                    content_type: "text/plain",
                    body: "request header fields too large\n".into(),
                },
            );
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let reply = match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => answer(target.split('?').next().unwrap_or("")),
        _ => Answer {
            status: 405,
            content_type: "text/plain",
            body: "only GET\n".into(),
        },
    };
    respond(&mut stream, &reply)
}

fn respond(stream: &mut TcpStream, answer: &Answer) -> io::Result<()> {
    let reason = match answer.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    write!(
        stream,
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.status,
        answer.content_type,
        answer.body.len()
    )?;
    stream.write_all(answer.body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn scrape(port: u16, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let _ = stream.write_all(request);
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply
    }

    /// Clients that connect and say nothing, or send an endless head, hold the endpoint for
    /// the timeout at most; the next scrape is answered.
    #[test]
    fn slow_and_oversized_clients_cannot_hold_the_endpoint() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                serve(&listener, &stop, &|path| Answer {
                    status: if path == "/metrics" { 200 } else { 404 },
                    content_type: "text/plain",
                    body: format!("path {path}\n"),
                })
            })
        };
        // Silent clients, at once: served one after another (serve starts no thread), each
        // dropped after the timeout.
        let silent: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let started = Instant::now();
        let reply = scrape(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.ends_with("path /metrics\n"), "{reply}");
        // Served after the silent ones timed out, one after another: bounded.
        assert!(
            started.elapsed() < CONNECTION_TIMEOUT * 4,
            "{:?}",
            started.elapsed()
        );
        drop(silent);
        let huge = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_HEAD)
        );
        assert!(scrape(port, huge.as_bytes()).starts_with("HTTP/1.1 431"));
        assert!(scrape(port, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        stop.store(true, Ordering::SeqCst);
        server.join().unwrap();
    }
}
