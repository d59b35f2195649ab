//! A fault-injecting TCP proxy in front of an object store on loopback: errors, throttling,
//! cut connections, slowness, an outage, and a conditional write that succeeded but whose
//! answer was lost.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to each new connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Pass,
    /// Answer every request with this status (500, or 503 SlowDown) and close.
    Status(u16),
    /// Forward, but cut the connection after this many response bytes.
    CutAfter(usize),
    /// Forward the response's headers whole, then cut the connection after this many bytes of
    /// its body.
    CutBodyAfter(usize),
    /// Forward with this delay before each response chunk.
    Slow(Duration),
    /// Accept and close at once (the store is down).
    Refuse,
    /// Forward everything, but for the next conditional writes (`If-None-Match`, GCS's
    /// `ifGenerationMatch=0`; see [`FaultProxy::lose_answers`]) let the store carry the
    /// request out, then close the connection instead of passing its answer on: a write that
    /// succeeded and timed out.
    LoseAnswers,
}

pub struct FaultProxy {
    port: u16,
    fault: Arc<Mutex<Fault>>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    /// Conditional writes whose answers are still to be lost.
    answers_to_lose: Arc<AtomicUsize>,
    /// Answers lost so far.
    answers_lost: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`), passing everything until told otherwise.
    pub fn start(upstream: String) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let answers_to_lose = Arc::new(AtomicUsize::new(0));
        let answers_lost = Arc::new(AtomicUsize::new(0));
        let (shared_fault, shared_connections) = (fault.clone(), connections.clone());
        let (to_lose, lost) = (answers_to_lose.clone(), answers_lost.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let fault = *shared_fault.lock().unwrap();
                shared_connections
                    .lock()
                    .unwrap()
                    .push(client.try_clone().unwrap());
                let upstream = upstream.clone();
                let (to_lose, lost) = (to_lose.clone(), lost.clone());
                std::thread::spawn(move || match fault {
                    Fault::LoseAnswers => serve_losing_answers(client, &upstream, &to_lose, &lost),
                    _ => serve(client, &upstream, fault),
                });
            }
        });
        FaultProxy {
            port,
            fault,
            connections,
            answers_to_lose,
            answers_lost,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Applies to new connections; open ones are cut so that pooled connections cannot dodge
    /// the fault.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }

    /// Loses the answers of the next `count` conditional writes (see [`Fault::LoseAnswers`]).
    pub fn lose_answers(&self, count: usize) {
        self.answers_to_lose.store(count, Ordering::SeqCst);
        self.set(Fault::LoseAnswers);
    }

    /// How many answers [`FaultProxy::lose_answers`] lost so far.
    pub fn answers_lost(&self) -> usize {
        self.answers_lost.load(Ordering::SeqCst)
    }
}

fn serve(mut client: TcpStream, upstream: &str, fault: Fault) {
    match fault {
        Fault::Refuse => {}
        Fault::Status(status) => {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let (reason, code) = if status == 503 {
                ("Slow Down", "SlowDown")
            } else {
                ("Internal Server Error", "InternalError")
            };
            let body = format!("<Error><Code>{code}</Code><Message>injected</Message></Error>");
            let _ = write!(
                client,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Fault::Pass
        | Fault::CutAfter(_)
        | Fault::CutBodyAfter(_)
        | Fault::Slow(_)
        | Fault::LoseAnswers => {
            let Ok(mut server) = TcpStream::connect(upstream) else {
                return;
            };
            let (mut client_reader, mut server_writer) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_reader, &mut server_writer);
                let _ = server_writer.shutdown(Shutdown::Write);
            });
            let mut forwarded = 0usize;
            let mut buffer = [0u8; 8192];
            // For CutBodyAfter: the headers seen so far, and where the body starts.
            let mut head = Vec::new();
            let mut body_starts: Option<usize> = None;
            loop {
                let n = match server.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Fault::Slow(delay) = fault {
                    std::thread::sleep(delay);
                }
                if body_starts.is_none() {
                    head.extend_from_slice(&buffer[..n]);
                    body_starts = head
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|at| at + 4);
                }
                let n = match fault {
                    Fault::CutAfter(limit) => n.min(limit.saturating_sub(forwarded)),
                    Fault::CutBodyAfter(limit) => match body_starts {
                        Some(start) => n.min((start + limit).saturating_sub(forwarded)),
                        None => n,
                    },
                    _ => n,
                };
                if n == 0 || client.write_all(&buffer[..n]).is_err() {
                    break;
                }
                forwarded += n;
                let cut = match (fault, body_starts) {
                    (Fault::CutAfter(limit), _) => forwarded >= limit,
                    (Fault::CutBodyAfter(limit), Some(start)) => forwarded >= start + limit,
                    _ => false,
                };
                if cut {
                    break; // and close: the peer sees the response end early
                }
            }
            let _ = server.shutdown(Shutdown::Both);
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

/// Relays requests one by one (the clients do not pipeline), and the answers back, except the
/// answer of a conditional write while `to_lose` lasts: the store receives and carries out the
/// write, its first answer byte shows it has, and the client's connection is then closed.
fn serve_losing_answers(
    client: TcpStream,
    upstream: &str,
    to_lose: &AtomicUsize,
    lost: &Arc<AtomicUsize>,
) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let losing = Arc::new(AtomicBool::new(false));
    let answers = {
        let (mut server, mut client) = (server.try_clone().unwrap(), client.try_clone().unwrap());
        let (losing, lost) = (losing.clone(), lost.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            loop {
                let n = match server.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if losing.load(Ordering::SeqCst) {
                    // The store answered, so the write is done: the answer goes nowhere.
                    lost.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                if client.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        })
    };
    let mut reader = std::io::BufReader::new(client.try_clone().unwrap());
    let mut server_writer = server;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match std::io::BufRead::read_until(&mut reader, b'\n', &mut line) {
                Ok(0) | Err(_) => {
                    let _ = server_writer.shutdown(Shutdown::Write);
                    let _ = answers.join();
                    return;
                }
                Ok(_) => head.extend_from_slice(&line),
            }
            if head.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: usize = text
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        let conditional =
            text.contains("\r\nif-none-match:") || text.contains("ifgenerationmatch=0");
        if conditional
            && to_lose
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            losing.store(true, Ordering::SeqCst);
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err()
            || server_writer.write_all(&head).is_err()
            || server_writer.write_all(&body).is_err()
        {
            let _ = server_writer.shutdown(Shutdown::Both);
            let _ = answers.join();
            return;
        }
    }
}
