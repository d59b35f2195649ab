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

pub fn pg_bindir() -> &'static Path {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR.get_or_init(|| {
        let pg_config = std::env::var("PG_CONFIG").unwrap_or_else(|_| "pg_config".into());
        let output = run_ok(Command::new(pg_config).arg("--bindir"));
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
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
        let dir = Path::new("/tmp/sc_backup_pg_test/bin");
        fs::create_dir_all(dir).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        let installed = dir.join(format!("sc-backup-{}", std::process::id()));
        fs::copy(&built, &installed).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
        fs::set_permissions(&installed, fs::Permissions::from_mode(0o755)).unwrap();
        installed
    })
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
        postgres::Config::new()
            .host_path(&self.socket_dir)
            .user("postgres")
            .dbname("postgres")
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

/// postgresql.conf lines that archive into `repository` through the sc_backup library.
pub fn archiving_conf(repository: &Path, extra: &str) -> String {
    format!(
        "shared_preload_libraries = 'sc_backup'\n\
         archive_mode = on\n\
         archive_library = 'sc_backup'\n\
         sc_backup.repository = '{}'\n\
         {extra}\n",
        repository.display()
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

/// `sc-backup` run as the postgres OS user in `cwd` (restore_command's working directory is
/// the data directory).
pub fn sc_backup(cwd: &Path) -> Command {
    let mut command = as_postgres(sc_backup_bin());
    command.current_dir(cwd);
    command
}
