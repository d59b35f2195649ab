//! The image itself (docker/Dockerfile) in podman, run as the playbook deploys it: its three
//! example configurations at once — S3 with point-in-time recovery against s3s-fs, GCS against
//! the emulator with the GCS example's BACKUP_ENCRYPTION, and local development on a named
//! volume. Each container creates its database on first start, archives WAL and takes its first
//! scheduled backup; `sc-backup` inside the container lists the backup and restores it, and the
//! restored copy starts there with the expected rows. A bad variable stops a container at start
//! with one line naming it.
//!
//! The image under test is `sc_backup:<major>`, which scripts/test.sh builds first with
//! `SC_BACKUP_BUILD=debug bash docker/build-image.sh <major>`; the test refuses an image
//! holding another `sc-backup` than this build's. The containers share the host's network
//! (s3s-fs and the emulator listen on loopback); each server listens on 127.0.0.1 only, on a
//! free port. podman runs with runc (its default crun fails on this machine kind's cgroups).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sc_backup_pg_test::{
    free_port, output_text as text, pg_major, run_ok, sc_backup_bin, GcsServer, S3Server, TestDir,
};

/// The image's postgres user (the official image's uid), which owns mounted key files.
const IMAGE_POSTGRES_UID: &str = "999";

fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", "runc"]);
    command
}

/// `sc_backup:<major>`, checked to hold the sc-backup this test run built.
fn image() -> String {
    let image = format!("sc_backup:{}", pg_major());
    let build = format!(
        "build it with SC_BACKUP_BUILD=debug bash docker/build-image.sh {}",
        pg_major()
    );
    let inspect = podman()
        .args(["image", "inspect", "--format"])
        .arg("{{ index .Labels \"sc_backup.cli_sha256\" }}")
        .arg(&image)
        .output()
        .expect("podman (scripts/install-deps.sh installs it)");
    assert!(inspect.status.success(), "no image {image}: {build}");
    let label = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    let ours = run_ok(Command::new("sha256sum").arg(sc_backup_bin())).stdout;
    let ours = String::from_utf8_lossy(&ours);
    assert_eq!(
        Some(label.as_str()),
        ours.split_whitespace().next(),
        "{image} holds another sc-backup than this build: {build}"
    );
    image
}

/// One container of the image, with its two named volumes (data and backups) as compose.yaml
/// declares them; removed with them when dropped. Started by `podman run`, or by
/// podman-compose from docker/compose.yaml (then `compose` is the project's directory).
struct Container {
    name: String,
    compose: Option<(PathBuf, String)>,
}

/// podman-compose on a copy of docker/compose.yaml in `dir`, beside the `.env` it reads there.
fn podman_compose(dir: &Path, project: &str) -> Command {
    let mut command = Command::new("podman-compose");
    command
        .arg("--podman-args=--runtime runc")
        .arg("--podman-run-args=--ulimit nofile=1024:1024 --ulimit nproc=4096:4096")
        .args(["-p", project, "-f"])
        .arg(dir.join("compose.yaml"))
        .current_dir(dir);
    command
}

impl Container {
    /// The stack of docker/compose.yaml, with docker/.env.example as its `.env` and
    /// `variables` appended (the later value wins); the server's port published on `port`.
    fn compose_up(dir: &Path, variables: &[(&str, &str)]) -> Container {
        let docker = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker");
        fs::copy(docker.join("compose.yaml"), dir.join("compose.yaml")).unwrap();
        let mut env = fs::read_to_string(docker.join(".env.example")).unwrap();
        for (name, value) in variables {
            env.push_str(&format!("{name}={value}\n"));
        }
        fs::write(dir.join(".env"), env).unwrap();
        let project = format!("sctest{}", std::process::id());
        let container = Container {
            name: format!("{project}_postgres_1"),
            compose: Some((dir.to_path_buf(), project.clone())),
        };
        run_ok(podman_compose(dir, &project).args(["up", "-d"]));
        container
    }

    fn run(image: &str, name: &str, variables: &[(&str, &str)], mounts: &[String]) -> Container {
        let name = format!("sc-backup-test-{name}-{}", std::process::id());
        let container = Container {
            name,
            compose: None,
        };
        let port = free_port().to_string();
        let mut command = container.podman_run(variables);
        command
            .arg("-d")
            .arg(format!("--env=PGPORT={port}"))
            .arg(format!(
                "--volume={}-data:/var/lib/postgresql/data",
                container.name
            ))
            .arg(format!("--volume={}-backups:/backups", container.name));
        for mount in mounts {
            command.arg(format!("--volume={mount}"));
        }
        command
            .arg(image)
            .args(["postgres", "-c", "listen_addresses=127.0.0.1"]);
        run_ok(&mut command);
        container
    }

    /// `podman run` with the name, the host's network, runc's limits and the variables, as
    /// compose passes them (PGUSER and PGDATABASE too); the image and command follow.
    fn podman_run(&self, variables: &[(&str, &str)]) -> Command {
        let mut command = podman();
        command
            .args(["run", "--name", &self.name, "--network", "host"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
            ])
            .args(["--env=PGUSER=simcorp", "--env=PGDATABASE=simcorp"])
            .args(["--env=POSTGRES_USER=simcorp", "--env=POSTGRES_DB=simcorp"]);
        for (name, value) in variables {
            command.arg(format!("--env={name}={value}"));
        }
        command
    }

    fn exec(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut command = podman();
        command.arg("exec");
        for (name, value) in env {
            command.arg(format!("--env={name}={value}"));
        }
        command.arg(&self.name).args(args).output().unwrap()
    }

    fn exec_ok(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let output = self.exec(env, args);
        assert!(
            output.status.success(),
            "{} in {}: {}\n{}",
            args.join(" "),
            self.name,
            text(&output),
            self.logs()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// One statement through psql inside the container; its unaligned output.
    fn psql(&self, extra: &[&str], sql: &str) -> String {
        let mut args = vec!["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-c", sql]);
        self.exec_ok(&[], &args)
    }

    fn logs(&self) -> String {
        text(&podman().args(["logs", &self.name]).output().unwrap())
    }

    fn wait_until(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{}: {what} did not happen in {timeout:?}\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn wait_ready(&self) {
        self.wait_until(
            "the server accepting connections",
            Duration::from_secs(120),
            || self.exec(&[], &["pg_isready", "-q"]).status.success(),
        );
    }

    /// Runs `sql`, then switches WAL and waits until the server has archived that segment.
    fn write_and_archive(&self, sql: &str) {
        // Separately: psql -c runs a multi-statement string as one transaction, whose commit
        // would come after the switch.
        self.psql(&[], sql);
        let switched = self.psql(&[], "SELECT pg_walfile_name(pg_switch_wal())");
        self.wait_until(
            &format!("archiving {switched}"),
            Duration::from_secs(60),
            || {
                let archived = self.psql(
                    &[],
                    "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                );
                archived.as_str() >= switched.as_str()
            },
        );
    }

    /// The backups `sc-backup list --json` shows inside the container.
    fn listed_backups(&self) -> Vec<serde_json::Value> {
        let listed = self.exec(&[], &["sc-backup", "list", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&listed.stdout)
            .ok()
            .and_then(|v| v["backups"].as_array().cloned())
            .unwrap_or_default()
    }

    /// `sc-backup restore` inside the container (with the playbook's restore variables in
    /// `env`), then the restored copy started on a private socket there; its row count of t.
    fn restore_and_count(&self, env: &[(&str, &str)]) -> i64 {
        self.exec_ok(
            env,
            &[
                "sc-backup",
                "restore",
                "-D",
                "/tmp/restored",
                "--archive-mode",
                "off",
                "--target-action",
                "promote",
            ],
        );
        self.exec_ok(&[], &["mkdir", "-p", "/tmp/restored-socket"]);
        let pg_ctl = |args: &[&str]| {
            let mut all = vec!["pg_ctl", "-D", "/tmp/restored", "-w", "-s"];
            all.extend_from_slice(args);
            self.exec_ok(&[], &all)
        };
        pg_ctl(&[
            "-l",
            "/tmp/restored.log",
            "-o",
            "-c listen_addresses='' -c unix_socket_directories=/tmp/restored-socket",
            "start",
        ]);
        let restored = ["-h", "/tmp/restored-socket"];
        self.wait_until(
            "the restored copy's promotion",
            Duration::from_secs(120),
            || self.psql(&restored, "SELECT pg_is_in_recovery()") == "f",
        );
        assert_eq!(self.psql(&restored, "SHOW sc_backup.scheduler"), "off");
        let rows = self.psql(&restored, "SELECT count(*) FROM t");
        pg_ctl(&["-m", "fast", "stop"]);
        rows.parse().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some((dir, project)) = &self.compose {
            let _ = podman_compose(dir, project).args(["down", "-v"]).output();
            let _ = podman()
                .args(["network", "rm", "--force"])
                .arg(format!("{project}_default"))
                .output();
            return;
        }
        let _ = podman()
            .args(["rm", "--force", "--volumes", "--time", "10", &self.name])
            .output();
        let _ = podman()
            .args(["volume", "rm", "--force"])
            .arg(format!("{}-data", self.name))
            .arg(format!("{}-backups", self.name))
            .output();
    }
}

#[test]
fn the_image_runs_the_playbooks_three_configurations_and_restores_inside_the_container() {
    let image = image();
    let dir = TestDir::new("container-image");

    // A bad variable stops the container before anything starts, with one line naming it.
    let refused = Container {
        name: format!("sc-backup-test-refused-{}", std::process::id()),
        compose: None,
    };
    let output = refused
        .podman_run(&[("BACKUP_STORAGE", "gcs")])
        .arg(&image)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let logs = refused.logs();
    assert_eq!(logs.trim().lines().count(), 1, "{logs}");
    assert!(
        logs.contains("GCS_BUCKET: is needed with BACKUP_STORAGE=gcs"),
        "{logs}"
    );
    drop(refused);

    // The three example configurations, started together: the first scheduled backup comes
    // one HOURLY_INTERVAL (60 s, the shortest) after each start.
    let s3 = S3Server::start(&dir, "s3");
    s3.create_bucket("simcorp-backups");
    let gcs = GcsServer::start(&dir, "gcs");
    gcs.create_bucket("simcorp-gcs-backups");
    // The service account's key, mounted read-only and owned by the image's postgres user.
    let key = dir.path.join("gcs-key.json");
    fs::copy(&gcs.credentials_file, &key).unwrap();
    run_ok(Command::new("chown").arg(IMAGE_POSTGRES_UID).arg(&key));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let common = [
        ("POSTGRES_PASSWORD", "pg-password"),
        ("HOURLY_INTERVAL", "60"),
        ("DAILY_BACKUP", "false"),
    ];
    let with = |specific: &[(&'static str, &'static str)]| {
        let mut variables: Vec<(&str, &str)> = common.to_vec();
        variables.extend_from_slice(specific);
        variables
    };
    let on_s3 = Container::run(
        &image,
        "s3",
        &with(&[
            ("BACKUP_STORAGE", "s3"),
            ("S3_BUCKET", "simcorp-backups"),
            ("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("COMPRESSION", "zstd"),
            ("ENCRYPTION", "true"),
            ("ENCRYPTION_KEY", "s3-encryption-key"),
        ])
        .into_iter()
        .chain([("AWS_ENDPOINT_URL", s3.endpoint.as_str())])
        .collect::<Vec<_>>(),
        &[],
    );
    let on_gcs = Container::run(
        &image,
        "gcs",
        &with(&[
            ("BACKUP_STORAGE", "gcs"),
            ("GCS_BUCKET", "simcorp-gcs-backups"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/secrets/gcs-key.json"),
            ("BACKUP_ENCRYPTION", "true"),
            ("BACKUP_ENCRYPTION_KEY", "gcs-encryption-key"),
        ])
        .into_iter()
        .chain([("STORAGE_EMULATOR_HOST", gcs.endpoint.as_str())])
        .collect::<Vec<_>>(),
        &[format!("{}:/secrets/gcs-key.json:ro", key.display())],
    );
    // Local development through the compose file itself, its port published on the host.
    let port = free_port().to_string();
    let major = pg_major().to_string();
    let local = Container::compose_up(
        &dir.subdir("compose"),
        &with(&[("POSTGRES_USER", "simcorp"), ("POSTGRES_DB", "simcorp")])
            .into_iter()
            .chain([
                ("PG_MAJOR", major.as_str()),
                ("POSTGRES_PORT", port.as_str()),
            ])
            .collect::<Vec<_>>(),
    );
    let containers = [&on_s3, &on_gcs, &local];

    for container in containers {
        container.wait_ready();
        container.write_and_archive("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id");
    }
    // From outside the container, over the published port: the first start's role, with
    // its password (scram-sha-256), and no other password.
    let over_tcp = |password: &str| {
        sc_backup_pg_test::postgres::Config::new()
            .host("127.0.0.1")
            .port(port.parse().unwrap())
            .user("simcorp")
            .password(password)
            .dbname("simcorp")
            .connect(sc_backup_pg_test::postgres::NoTls)
    };
    let mut client = over_tcp("pg-password").expect("a connection through the published port");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1000);
    drop(client);
    let refused = over_tcp("change-me")
        .err()
        .expect("a wrong password refused");
    assert!(
        format!("{refused:?}").contains("password authentication failed"),
        "{refused:?}"
    );
    for container in containers {
        container.wait_until(
            "the first scheduled backup",
            Duration::from_secs(180),
            || !container.listed_backups().is_empty(),
        );
        let backups = container.listed_backups();
        assert_eq!(backups[0]["backup_type"], "hourly", "{backups:?}");
        // Healthy: the server answers, the scheduler runs, backups and WAL are on time.
        assert_eq!(
            container.exec_ok(&[], &["sc-backup-healthcheck"]),
            "healthy"
        );
    }

    // Objects where the playbook lists them: backups/ and wal/ in the buckets. With S3, the
    // backups volume is repository 1 and the bucket repository 2, filled by the worker.
    on_s3.wait_until(
        "the first backup in the S3 bucket",
        Duration::from_secs(60),
        || s3.root.join("simcorp-backups/backups").is_dir(),
    );
    assert!(s3.root.join("simcorp-backups/wal").is_dir());
    assert!(gcs.root.join("simcorp-gcs-backups").is_dir());

    // S3 with PITR: a time after the backup, a row committed after it, then the playbook's
    // TARGET_TIME (UTC, no zone) restores exactly the state at that time.
    let target = on_s3.psql(
        &[],
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    );
    std::thread::sleep(Duration::from_millis(50));
    for container in containers {
        container.write_and_archive("INSERT INTO t VALUES (1001)");
    }
    // Scenario 3 from the offsite copy alone: the backups volume emptied once the bucket
    // holds every WAL file, then the S3 repository restores to the playbook's TARGET_TIME.
    let names_under = |listing: String| -> std::collections::BTreeSet<String> {
        listing.lines().map(str::to_string).collect()
    };
    on_s3.wait_until(
        "the S3 bucket to hold every WAL file of the backups volume",
        Duration::from_secs(60),
        || {
            let local = names_under(on_s3.exec_ok(
                &[],
                &["find", "/backups/wal", "-type", "f", "-printf", "%f\\n"],
            ));
            let offsite = names_under(
                sc_backup_pg_test::files_under(&s3.root.join("simcorp-backups/wal"))
                    .iter()
                    .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            !local.is_empty() && local.is_subset(&offsite)
        },
    );
    on_s3.exec_ok(&[], &["sh", "-c", "rm -rf /backups/*"]);
    assert_eq!(
        on_s3.restore_and_count(&[("TARGET_TIME", &target), ("SC_BACKUP_REPOSITORY", "2")]),
        1000
    );
    // GCS and local: the latest state.
    assert_eq!(on_gcs.restore_and_count(&[]), 1001);
    assert_eq!(local.restore_and_count(&[]), 1001);

    // The local repository is the backups volume.
    let stored = local.exec_ok(&[], &["ls", "/backups"]);
    assert!(
        stored.contains("backups") && stored.contains("wal"),
        "{stored}"
    );
}
