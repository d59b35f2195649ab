//! The container image's entrypoint and healthcheck (docker/), run on the host with the server
//! under test, as the image runs them: the playbook's variables become a running server that
//! archives, takes its scheduled backup and keeps secrets out of readable files and the
//! server's environment; a bad variable stops it with one line; a changed variable applies at
//! the next start; `sc-backup` finds the settings the server uses; the playbook's restore
//! variables drive a restore; the healthcheck fails while the scheduler is down.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sc_backup_pg_test::postgres::{Client, Config, NoTls};
use sc_backup_pg_test::{
    as_postgres, objects_under, output_text as text, pg_bindir, pg_major, run_ok, sc_backup_bin,
    TestDir,
};

fn docker_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("docker")
        .join(name)
}

/// One container's worth of paths and variables.
struct Container {
    pgdata: PathBuf,
    conf_dir: PathBuf,
    socket: PathBuf,
    repository: PathBuf,
    variables: Vec<(String, String)>,
}

impl Container {
    /// `env -i` as the postgres OS user with the image's environment: PGDATA, PATH with the
    /// server's binaries, our paths, and the playbook's variables; the program follows.
    fn environment(&self) -> Command {
        let mut command = as_postgres("env");
        command
            .arg("-i")
            .arg(format!("PGDATA={}", self.pgdata.display()))
            .arg(format!("PG_MAJOR={}", pg_major()))
            .arg(format!("PATH={}:/usr/bin:/bin", pg_bindir().display()))
            .arg(format!("SC_BACKUP_PG_BINDIR={}", pg_bindir().display()))
            .arg(format!("SC_BACKUP_CONF_DIR={}", self.conf_dir.display()))
            .arg(format!(
                "SC_BACKUP_CONFIG_FILE={}/sc_backup.conf",
                self.conf_dir.display()
            ))
            .arg(format!("SC_BACKUP_CLI={}", sc_backup_bin().display()))
            // The image's own mark: the playbook's restore variables are obeyed there.
            .arg("SC_BACKUP_PLAYBOOK_VARIABLES=on")
            .arg(format!("PGHOST={}", self.socket.display()));
        for (name, value) in &self.variables {
            command.arg(format!("{name}={value}"));
        }
        command.current_dir("/");
        command
    }

    fn script(&self, name: &str) -> Command {
        let mut command = self.environment();
        command.arg("bash").arg(docker_file(name));
        command
    }

    fn set(&mut self, name: &str, value: &str) {
        self.variables.retain(|(n, _)| n != name);
        self.variables.push((name.into(), value.into()));
    }

    /// The entrypoint, running the server without TCP on the test's socket directory.
    fn start(&self) -> Child {
        let socket = format!("unix_socket_directories={}", self.socket.display());
        self.script("entrypoint.sh")
            .args(["postgres", "-c", "listen_addresses=", "-c", &socket])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn connect(&self, child: &mut Child) -> Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let attempt = Config::new()
                .host_path(&self.socket)
                .user("simcorp")
                .dbname("simcorp")
                .connect(NoTls);
            match attempt {
                Ok(client) => return client,
                Err(e) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("the entrypoint ended with {status}: {e}");
                    }
                    assert!(Instant::now() < deadline, "the server never answered: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn stop(&self, mut child: Child) -> Output {
        run_ok(
            as_postgres(pg_bindir().join("pg_ctl"))
                .arg("-D")
                .arg(&self.pgdata)
                .args(["-w", "-m", "fast", "stop"]),
        );
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        Output {
            status,
            stdout: Vec::new(),
            stderr: stderr.into_bytes(),
        }
    }

    fn sc_backup(&self, args: &[&str]) -> Output {
        self.environment()
            .arg(sc_backup_bin())
            .args(args)
            .output()
            .unwrap()
    }
}

/// The compose file is valid (`docker-compose config`, which needs no daemon) with the example
/// environment, and every variable the image reads is passed through by the compose file and
/// set in the example. (container_image.rs runs the stack itself with podman-compose.)
#[test]
fn the_compose_file_is_valid_and_passes_every_variable_the_image_reads() {
    let config = Command::new("docker-compose")
        .arg("--env-file")
        .arg(docker_file(".env.example"))
        .arg("-f")
        .arg(docker_file("compose.yaml"))
        .arg("config")
        .output()
        .expect("docker-compose (scripts/install-deps.sh installs it)");
    assert!(config.status.success(), "{}", text(&config));
    // Every variable has its value in the example, so nothing renders as a silent blank.
    let warnings = String::from_utf8_lossy(&config.stderr);
    assert!(!warnings.contains("is not set"), "{warnings}");
    let rendered = String::from_utf8_lossy(&config.stdout);
    assert!(rendered.contains("POSTGRES_DB: simcorp"), "{rendered}");
    assert!(rendered.contains("test:") && rendered.contains("sc-backup-healthcheck"));
    let compose = fs::read_to_string(docker_file("compose.yaml")).unwrap();
    let example = fs::read_to_string(docker_file(".env.example")).unwrap();
    for variable in sc_backup_core::config::container_env::VARIABLES {
        assert!(
            compose.contains(&format!("{variable}: ${{{variable}")),
            "compose.yaml does not pass {variable}"
        );
        assert!(
            example.contains(&format!("\n{variable}=")),
            ".env.example does not set {variable}"
        );
    }
    // podman-compose 1.0.3 (Debian's) passes `${NAME:-}` through literally: an empty default
    // is written `${NAME}` (the image reads an empty value as unset).
    assert!(!compose.contains(":-}"), "an empty default in compose.yaml");
}

fn show(client: &mut Client, setting: &str) -> String {
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .unwrap()
        .get(0)
}

#[test]
fn the_entrypoint_runs_the_playbooks_configuration_and_applies_changes_at_restart() {
    let dir = TestDir::new("container");
    let mut container = Container {
        pgdata: dir.path.join("data"),
        conf_dir: dir.subdir("etc"),
        socket: dir.subdir("run"),
        repository: dir.subdir("backups"),
        variables: Vec::new(),
    };
    fs::set_permissions(&container.conf_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let repository = container.repository.display().to_string();
    for (name, value) in [
        ("POSTGRES_USER", "simcorp"),
        ("POSTGRES_PASSWORD", "pg-password-1"),
        ("POSTGRES_DB", "simcorp"),
        ("BACKUP_DIR", repository.as_str()),
        ("COMPRESSION", "brotli"),
        ("ENCRYPTION", "true"),
        ("ENCRYPTION_KEY", "encryption-key-1"),
        ("HOURLY_INTERVAL", "60"),
        ("DAILY_BACKUP", "false"),
    ] {
        container.set(name, value);
    }

    // A bad variable: one line naming it, and nothing created.
    let refused = container.script("entrypoint.sh").output().unwrap();
    assert!(!refused.status.success());
    let message = text(&refused);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(
        message.contains("COMPRESSION=\"brotli\": accepted values are none, gzip, zstd"),
        "{message}"
    );
    assert!(!container.pgdata.exists());

    // The playbook's local configuration: first start creates the cluster, the role (with
    // its password), the database and the extension.
    container.set("COMPRESSION", "zstd");
    let mut server = container.start();
    let mut client = container.connect(&mut server);
    assert_eq!(show(&mut client, "sc_backup.compression"), "zstd");
    assert_eq!(show(&mut client, "sc_backup.encryption"), "age");
    assert_eq!(show(&mut client, "sc_backup.repository"), repository);
    assert_eq!(show(&mut client, "sc_backup.database"), "simcorp");
    assert_eq!(show(&mut client, "sc_backup.hourly_interval"), "1min");
    assert_eq!(show(&mut client, "sc_backup.dump_schedule"), "");
    assert_eq!(show(&mut client, "archive_mode"), "on");
    assert_eq!(show(&mut client, "archive_library"), "sc_backup");
    assert_eq!(show(&mut client, "archive_timeout"), "5min");
    let password: String = client
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'simcorp'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(password.starts_with("SCRAM-SHA-256$"), "{password}");
    let extension: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname = 'sc_backup'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(extension, 1);

    // Secrets: only in the 0600 secrets file, not in the settings file, not in the server's
    // environment, and the password file initdb read is gone.
    let settings = fs::read_to_string(container.conf_dir.join("settings.conf")).unwrap();
    let secrets_path = container.conf_dir.join("secrets.conf");
    let secrets = fs::read_to_string(&secrets_path).unwrap();
    assert!(secrets.contains("encryption-key-1") && !settings.contains("encryption-key-1"));
    assert_eq!(
        fs::metadata(&secrets_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!container.conf_dir.join("bootstrap-password").exists());
    let postmaster_pid = fs::read_to_string(container.pgdata.join("postmaster.pid")).unwrap();
    let postmaster_pid = postmaster_pid.lines().next().unwrap();
    let environ = fs::read(format!("/proc/{postmaster_pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for secret in ["encryption-key-1", "pg-password-1"] {
        assert!(
            !environ.contains(secret),
            "the server's environment holds {secret}"
        );
    }
    let log = fs::read_to_string(container.pgdata.join("postgresql.conf")).unwrap();
    assert!(!log.contains("encryption-key-1"));

    // It archives, and the scheduler takes the first hourly backup a minute after it started.
    client
        .batch_execute(
            "CREATE TABLE t AS SELECT generate_series(1, 1000) AS id; SELECT pg_switch_wal()",
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    let listed = loop {
        let listed = container.sc_backup(&["list", "--json"]);
        let json = String::from_utf8_lossy(&listed.stdout).into_owned();
        let backups = serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v["backups"].as_array().map(|b| b.len()))
            .unwrap_or(0);
        if backups > 0 && !objects_under(&container.repository.join("wal")).is_empty() {
            break json;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled backup and archived WAL: {}",
            text(&listed)
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(listed.contains("\"hourly\""), "{listed}");
    // A time after the backup, then a commit after it, archived: a target restore can reach.
    let target: String = client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
            &[],
        )
        .unwrap()
        .get(0);
    let archived = objects_under(&container.repository.join("wal")).len();
    std::thread::sleep(Duration::from_millis(50));
    client
        .batch_execute("INSERT INTO t VALUES (1001); SELECT pg_switch_wal()")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while objects_under(&container.repository.join("wal")).len() == archived {
        assert!(
            Instant::now() < deadline,
            "the last WAL file was never archived"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Healthy: the server answers, the scheduler runs, backups and archiving are on time.
    let health = container.script("healthcheck.sh").output().unwrap();
    assert!(health.status.success(), "{}", text(&health));
    assert_eq!(text(&health).trim(), "healthy");
    // Without its scheduler (terminated; the postmaster restarts it 10 s later) it is not.
    client
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'sc_backup scheduler'",
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let unhealthy = loop {
        let health = container.script("healthcheck.sh").output().unwrap();
        if !health.status.success() {
            break text(&health);
        }
        assert!(
            Instant::now() < deadline,
            "still healthy without the scheduler"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        unhealthy.starts_with("scheduler: the scheduler worker is not running"),
        "{unhealthy}"
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    while !container
        .script("healthcheck.sh")
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the restarted scheduler never made it healthy"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A changed variable applies at the next start; the cluster is kept.
    drop(client);
    let stopped = container.stop(server);
    assert!(stopped.status.success(), "{}", text(&stopped));
    container.set("COMPRESSION", "gzip");
    container.set("WAL_ARCHIVE_ENABLED", "false");
    let mut server = container.start();
    let mut client = container.connect(&mut server);
    assert_eq!(show(&mut client, "sc_backup.compression"), "gzip");
    assert_eq!(show(&mut client, "archive_mode"), "off");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1001);
    drop(client);
    container.stop(server);

    // The playbook's restore variables: FORCE_RESTORE into a non-empty directory, and a
    // TARGET_TIME without a zone, read as UTC.
    let restored = dir.subdir("restored");
    fs::write(restored.join("leftover"), b"x").unwrap();
    Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&restored)
        .status()
        .unwrap();
    container.set("FORCE_RESTORE", "true");
    container.set("TARGET_TIME", &target);
    let restore = container.sc_backup(&[
        "restore",
        "-D",
        &restored.display().to_string(),
        "--archive-mode",
        "off",
    ]);
    assert!(restore.status.success(), "{}", text(&restore));
    let auto_conf = fs::read_to_string(restored.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains(&format!("recovery_target_time = '{target}+00'")),
        "{auto_conf}"
    );
    assert!(!restored.join("leftover").exists());
    // The restored copy starts, replays to the target and pauses there (PostgreSQL's default
    // action), holding exactly the state at that time: the 1000 rows, not the 1001st.
    let mut copy = sc_backup_pg_test::Cluster::adopt(&dir, "restored-copy", restored.clone());
    copy.start();
    // The image's superuser is POSTGRES_USER's, not postgres.
    let mut copy_client = Config::new()
        .host_path(&copy.socket_dir)
        .user("simcorp")
        .dbname("simcorp")
        .connect(NoTls)
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", copy.log_text()));
    copy.wait_until(
        "recovery to pause at the target",
        Duration::from_secs(120),
        || {
            copy_client
                .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
                .is_ok_and(|row| row.get::<_, String>(0) == "paused")
        },
    );
    let rows: i64 = copy_client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        rows, 1000,
        "the restored copy is not the state at TARGET_TIME"
    );
    drop(copy_client);
    copy.stop("immediate");
}
