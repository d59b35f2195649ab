//! Loopback network pieces the object-store benchmarks put in front of s3s-fs: a proxy that
//! adds a region's latency to every request, and a TLS terminator for clients (pgBackRest)
//! that speak S3 only over TLS.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sc_backup_pg_test::{free_port, run_ok};

/// A TCP proxy that holds each request `latency` before passing it on: the first bytes a
/// client sends on a fresh connection, or after the server answered, wait; the rest flows.
pub struct LatencyProxy {
    pub port: u16,
}

impl LatencyProxy {
    pub fn start(upstream: String, latency: Duration) -> LatencyProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                        return;
                    };
                    let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
                    let (mut client_in, mut server_out) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let request_answered = answered.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buffer = vec![0u8; 64 << 10];
                        loop {
                            let n = match client_in.read(&mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if request_answered.swap(false, std::sync::atomic::Ordering::SeqCst) {
                                std::thread::sleep(latency);
                            }
                            if server_out.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = server_out.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut server_in, mut client_out) = (server, client);
                    use std::io::{Read, Write};
                    let mut buffer = vec![0u8; 64 << 10];
                    loop {
                        let n = match server_in.read(&mut buffer) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        answered.store(true, std::sync::atomic::Ordering::SeqCst);
                        if client_out.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = client_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        LatencyProxy { port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// `stunnel` (Debian's stunnel4) accepting TLS on a loopback port with a self-signed
/// certificate and passing the plain bytes on to `upstream_port`: pgBackRest's S3 client
/// requires TLS and s3s-fs serves plain HTTP. Killed when dropped.
pub struct TlsTerminator {
    child: Child,
    pub port: u16,
}

impl TlsTerminator {
    pub fn start(dir: &Path, upstream_port: u16) -> TlsTerminator {
        fs::create_dir_all(dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() {
            run_ok(
                Command::new("openssl")
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    ])
                    .args(["-subj", "/CN=127.0.0.1", "-keyout"])
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert)
                    .stderr(Stdio::null()),
            );
        }
        let port = free_port();
        let conf = dir.join(format!("stunnel-{port}.conf"));
        fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\n[s3]\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{upstream_port}\ncert = {}\nkey = {}\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let child = Command::new("stunnel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start stunnel (apt stunnel4, bench/run.sh): {e}")
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "stunnel did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsTerminator { child, port }
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
