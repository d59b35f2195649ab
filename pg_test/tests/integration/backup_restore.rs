//! Base backups with `sc_backup()`, `sc-backup restore` and point-in-time recovery, on real
//! PostgreSQL clusters.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sc_backup_pg_test::postgres::Client;
use sc_backup_pg_test::{
    archiving_conf, files_under, run_ok, sc_backup, start_primary, take_backup, Cluster, S3Server,
    TestDir,
};

const PASSPHRASE: &str = "backup test passphrase";

fn encrypted_conf(repo: &Repo) -> String {
    repo.archiving_conf(&format!(
        "sc_backup.compression = zstd\n\
             sc_backup.encryption = age\n\
             sc_backup.encryption_passphrase = '{PASSPHRASE}'\n\
             max_wal_size = '512MB'"
    ))
}

/// A repository under test: its URL, and how the CLI reaches it (environment only, as an
/// operator would on a machine whose cluster is gone).
struct Repo {
    url: String,
    env: Vec<(&'static str, String)>,
    /// postgresql.conf lines the server needs beyond `sc_backup.repository`.
    conf: String,
}

impl Repo {
    fn local(path: &Path) -> Repo {
        Repo {
            url: path.display().to_string(),
            env: vec![],
            conf: String::new(),
        }
    }

    fn s3(server: &S3Server, bucket: &str, prefix: &str) -> Repo {
        Repo {
            url: format!("s3://{bucket}/{prefix}"),
            env: vec![
                ("SC_BACKUP_S3_ENDPOINT", server.endpoint.clone()),
                ("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY.into()),
            ],
            conf: server.conf(),
        }
    }

    fn archiving_conf(&self, extra: &str) -> String {
        archiving_conf(&self.url, &format!("{}{extra}", self.conf))
    }

    fn cli(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut command = sc_backup(cwd);
        command
            .env("SC_BACKUP_REPOSITORY", &self.url)
            .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command.args(args).output().unwrap()
    }

    fn cli_ok(&self, cwd: &Path, args: &[&str]) -> String {
        let output = self.cli(cwd, args);
        assert!(
            output.status.success(),
            "sc-backup {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// Restores into `<dir>/<name>` with `extra` restore flags, starts it, waits until it is
/// promoted and returns it with a client.
fn restore_and_start(dir: &TestDir, repo: &Repo, name: &str, extra: &[&str]) -> (Cluster, Client) {
    let pgdata = dir.path.join(name);
    let mut args = vec![
        "restore",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--target-action",
        "promote",
    ];
    args.extend_from_slice(extra);
    repo.cli_ok(&dir.path, &args);
    let mut cluster = Cluster::adopt(dir, name, pgdata);
    // Secrets never travel in a backup: the store's keys come back from the operator (their
    // secrets file, here the same lines), as on a real new host.
    cluster.append_conf(&repo.conf);
    cluster.start();
    let mut client = cluster.connect();
    cluster.wait_promoted(&mut client);
    (cluster, client)
}

fn count(client: &mut Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

#[test]
fn pitr_drill_under_pgbench_load_recovers_exactly_the_target_state() {
    let dir = TestDir::new("pitr_drill");
    let repository = dir.subdir("repo");
    pitr_drill(&dir, &Repo::local(&repository), &|| {
        restore_records(&repository.join("audit"))
    });
}

#[test]
fn pitr_drill_on_s3() {
    let dir = TestDir::new("pitr_drill_s3");
    let server = S3Server::start(&dir, "s3");
    server.create_bucket("backups");
    let log = server.root.join("backups/clusters/main/audit");
    pitr_drill(
        &dir,
        &Repo::s3(&server, "backups", "clusters/main"),
        &|| restore_records(&log),
    );
}

/// Load, a marker row every 100 ms, a backup during the load, a target time with the exact
/// state at that moment, more load; then restore to the target and compare.
fn pitr_drill(dir: &TestDir, repo: &Repo, restore_records: &dyn Fn() -> usize) {
    let (mut primary, mut client) = start_primary(dir, &encrypted_conf(repo));
    run_ok(&mut primary.pgbench(&["-i", "-s", "5", "-q"]));
    client
        .batch_execute("CREATE TABLE marker (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .unwrap();

    // Load: pgbench, plus a marker row every 100 ms.
    let mut load = primary
        .pgbench(&["-T", "18", "-c", "2", "-j", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stop_markers = Arc::new(AtomicBool::new(false));
    let markers = {
        let stop = stop_markers.clone();
        let mut marker_client = primary.connect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                marker_client
                    .batch_execute("INSERT INTO marker DEFAULT VALUES")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let backup = take_backup(&mut client);
    std::thread::sleep(Duration::from_secs(4));

    // The target: with both tables locked against writers no transaction touching them is in
    // flight, so everything committed before T is visible here and nothing after it.
    let mut snapshot = primary.connect();
    let mut transaction = snapshot.transaction().unwrap();
    transaction
        .batch_execute("LOCK TABLE pgbench_accounts, marker IN SHARE MODE")
        .unwrap();
    let row = transaction
        .query_one(
            "SELECT clock_timestamp()::text, (SELECT sum(abalance) FROM pgbench_accounts)::int8, (SELECT count(*) FROM marker)",
            &[],
        )
        .unwrap();
    let (target, balance_at_target, markers_at_target): (String, i64, i64) =
        (row.get(0), row.get(1), row.get(2));
    std::thread::sleep(Duration::from_millis(20));
    transaction.commit().unwrap();

    std::thread::sleep(Duration::from_secs(4));
    assert!(load.wait().unwrap().success(), "pgbench failed");
    stop_markers.store(true, Ordering::SeqCst);
    markers.join().unwrap();
    let markers_total = count(&mut client, "marker");
    assert!(
        markers_total > markers_at_target,
        "no marker after the target"
    );
    primary.switch_and_wait_archived(&mut client);
    drop(client);
    primary.stop("fast");

    let listed = repo.cli_ok(&dir.path, &["list", "--json"]);
    assert!(listed.contains(&backup), "{listed}");
    assert!(repo.cli_ok(&dir.path, &["verify"]).contains("OK"));
    let (_restored, mut restored_client) =
        restore_and_start(dir, repo, "restored", &["--target-time", &target]);
    let row = restored_client
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::int8, count(*), count(*) FILTER (WHERE at > $1::text::timestamptz) FROM marker",
            &[&target],
        )
        .unwrap();
    let (balance, markers_restored, markers_after_target): (i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        markers_after_target, 0,
        "markers after the target were restored"
    );
    assert_eq!(
        markers_restored, markers_at_target,
        "markers before the target are missing"
    );
    assert_eq!(
        balance, balance_at_target,
        "sum(abalance) differs from the snapshot at the target"
    );

    // Every restore is recorded in the repository.
    assert_eq!(restore_records(), 1);
}

#[test]
fn complete_loss_and_every_kind_of_target() {
    let dir = TestDir::new("restore_targets");
    let repository = dir.subdir("repo");
    let repo = Repo::local(&repository);
    let (mut primary, mut client) =
        start_primary(&dir, &repo.archiving_conf("sc_backup.compression = gzip"));
    let tablespace_dir = dir.subdir("tablespace");
    // (CREATE TABLESPACE refuses to run in a multi-statement batch.)
    client
        .batch_execute(&format!(
            "CREATE TABLESPACE extra LOCATION '{}'",
            tablespace_dir.display()
        ))
        .unwrap();
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, note text) TABLESPACE extra;
             INSERT INTO items SELECT g, 'before backup' FROM generate_series(1, 1000) g;",
        )
        .unwrap();
    take_backup(&mut client);
    let at_backup = count(&mut client, "items");

    client
        .batch_execute("INSERT INTO items SELECT g, 'wave 1' FROM generate_series(1001, 2000) g")
        .unwrap();
    let lsn_after_wave_1: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    client
        .batch_execute("INSERT INTO items SELECT g, 'wave 2' FROM generate_series(2001, 3000) g")
        .unwrap();
    client
        .batch_execute("SELECT pg_create_restore_point('before_delete')")
        .unwrap();
    client
        .batch_execute("DELETE FROM items WHERE id % 2 = 0")
        .unwrap();
    let final_count = count(&mut client, "items");
    primary.switch_and_wait_archived(&mut client);
    drop(client);
    primary.stop("fast");

    for (name, flags, expected) in [
        // Side copies: they must not archive their new timelines into the repository.
        (
            "immediate",
            vec![
                "--target",
                "immediate",
                "--archive-mode",
                "off",
                "--tablespace-map",
            ],
            at_backup,
        ),
        (
            "lsn",
            vec![
                "--target-lsn",
                lsn_after_wave_1.as_str(),
                "--archive-mode",
                "off",
                "--tablespace-map",
            ],
            2000,
        ),
        (
            "name",
            vec![
                "--target-name",
                "before_delete",
                "--archive-mode",
                "off",
                "--tablespace-map",
            ],
            3000,
        ),
    ] {
        let mapped = dir.subdir(&format!("tablespace-{name}"));
        let mapping = format!("{}={}", tablespace_oid(&primary), mapped.display());
        let mut flags = flags;
        flags.push(&mapping);
        let (mut restored, mut restored_client) = restore_and_start(&dir, &repo, name, &flags);
        assert_eq!(count(&mut restored_client, "items"), expected, "--{name}");
        let location: String = restored_client
            .query_one(
                "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'extra'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            location,
            mapped.display().to_string(),
            "tablespace of the {name} restore"
        );
        drop(restored_client);
        restored.stop("immediate");
    }

    // Complete loss: the data directory and the tablespace are gone; restore everything.
    fs::remove_dir_all(&primary.data).unwrap();
    fs::remove_dir_all(&tablespace_dir).unwrap();
    let data = primary.data.display().to_string();
    repo.cli_ok(&dir.path, &["restore", "--pgdata", &data]);
    primary.start();
    let mut client = primary.connect();
    primary.wait_promoted(&mut client);
    assert_eq!(count(&mut client, "items"), final_count);
    assert!(!primary.data.join("sc_backup_recovery.key").exists());
}

fn tablespace_oid(primary: &Cluster) -> u32 {
    // The link in pg_tblspc is named after the OID.
    fs::read_dir(primary.data.join("pg_tblspc"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .parse::<u32>()
                .unwrap()
        })
        .next()
        .unwrap()
}

/// The data objects of a backup, largest first.
fn stored_data_objects(repository: &Path, backup: &str) -> Vec<PathBuf> {
    let mut objects: Vec<PathBuf> =
        fs::read_dir(repository.join("backups").join(backup).join("data"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    objects.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    objects
}

#[test]
fn verify_reports_corruption_and_missing_wal_and_restore_refuses_corrupt_files() {
    let dir = TestDir::new("verify_corruption");
    let repository = dir.subdir("repo");
    let repo = Repo::local(&repository);
    let (mut primary, mut client) = start_primary(&dir, &encrypted_conf(&repo));
    client
        .batch_execute(
            "CREATE TABLE big AS SELECT g, md5(g::text) AS h FROM generate_series(1, 100000) g",
        )
        .unwrap();
    let backup = take_backup(&mut client);
    let problems = client.query("SELECT * FROM sc_verify()", &[]).unwrap();
    assert!(problems.is_empty(), "a fresh backup has problems");
    assert!(repo
        .cli_ok(&dir.path, &["verify"])
        .contains(&format!("backup {backup}: OK")));

    // One flipped byte in the largest stored file.
    let victim = stored_data_objects(&repository, &backup).remove(0);
    let mut bytes = fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&victim, &bytes).unwrap();
    let object_name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let rows = client
        .query("SELECT object, problem FROM sc_verify($1)", &[&backup])
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (object, problem): (String, String) = (rows[0].get(0), rows[0].get(1));
    assert!(object.contains(&object_name), "{object}");
    assert!(problem.contains("integrity check failed"), "{problem}");
    let output = repo.cli(&dir.path, &["verify", &backup]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stdout).contains(&object_name));

    // Restore refuses the file, says which, and leaves a directory that cannot start.
    let pgdata = dir.path.join("restored");
    let output = repo.cli(
        &dir.path,
        &["restore", "--pgdata", pgdata.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("integrity check failed") && stderr.contains(&object_name),
        "{stderr}"
    );
    assert!(
        !pgdata.join("global/pg_control").exists(),
        "a corrupt restore must not be startable"
    );
    // Non-empty now: a second attempt needs --force.
    let output = repo.cli(
        &dir.path,
        &["restore", "--pgdata", pgdata.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not empty"));

    // A WAL segment the backup needs goes missing.
    fs::write(&victim, {
        bytes[middle] ^= 0x40;
        &bytes
    })
    .unwrap();
    let start_wal: String = client
        .query_one(
            "SELECT start_lsn FROM sc_list_backups() WHERE backup_name = $1",
            &[&backup],
        )
        .unwrap()
        .get(0);
    let segment: String = client
        .query_one("SELECT pg_walfile_name($1::text::pg_lsn)", &[&start_wal])
        .unwrap()
        .get(0);
    let wal_dir = repository.join("wal").join(&segment[..16]);
    let wal_object = fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{segment}-"))
        })
        .unwrap();
    fs::remove_file(&wal_object).unwrap();
    let rows = client
        .query("SELECT problem FROM sc_verify()", &[])
        .unwrap();
    let problems: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        problems,
        vec![format!(
            "WAL file {segment}, needed to make the backup consistent, is missing"
        )]
    );
    drop(client);
    primary.stop("fast");
}

/// Successful restores in the repository's audit trail (a directory of JSON records).
fn restore_records(dir: &Path) -> usize {
    let mut count = 0;
    for day in fs::read_dir(dir).into_iter().flatten() {
        for record in fs::read_dir(day.unwrap().path()).unwrap() {
            let text = fs::read_to_string(record.unwrap().path()).unwrap();
            let record: serde_json::Value = serde_json::from_str(&text).unwrap();
            if record["operation"] == "restore" && record["outcome"] == "succeeded" {
                assert_eq!(record["source"], "cli");
                assert!(
                    record["target"].as_str().unwrap().contains(" into "),
                    "{record}"
                );
                count += 1;
            }
        }
    }
    count
}

#[test]
fn cancelled_backup_leaves_nothing_and_functions_need_the_operator_role() {
    let dir = TestDir::new("cancel_backup");
    let repository = dir.subdir("repo");
    let (primary, mut client) = start_primary(
        &dir,
        &archiving_conf(&repository, "sc_backup.compression = zstd"),
    );
    client
        .batch_execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g")
        .unwrap();
    primary.switch_and_wait_archived(&mut client);

    // Stall archiving so pg_backup_stop waits, then cancel the backup there.
    let wal_dirs: Vec<PathBuf> = fs::read_dir(repository.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let set_mode = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        for wal_dir in &wal_dirs {
            fs::set_permissions(wal_dir, fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    set_mode(0o500);
    let mut backend = primary.connect();
    let pid: i32 = backend
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let running = std::thread::spawn(move || {
        let result = backend.query("SELECT * FROM sc_backup()", &[]);
        (backend, result)
    });
    primary.wait_until("the backup to wait for archiving", Duration::from_secs(60), || {
        client
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'BackupWaitWalArchive'", &[&pid])
            .unwrap()
            .get::<_, i64>(0)
            == 1
    });
    client
        .query_one("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap();
    let (mut backend, result) = running.join().unwrap();
    let error = result.unwrap_err();
    assert!(
        error
            .as_db_error()
            .unwrap()
            .message()
            .contains("canceling statement"),
        "{error:?}"
    );
    set_mode(0o700);

    assert!(client
        .query("SELECT * FROM sc_list_backups()", &[])
        .unwrap()
        .is_empty());
    assert_eq!(
        files_under(&repository.join("backups")).len(),
        0,
        "the cancelled backup left objects behind"
    );
    // The session has no backup in progress any more...
    let err = backend.query("SELECT pg_backup_stop()", &[]).unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("backup is not in progress"),
        "{err:?}"
    );
    // ...and the next backup works (no stale lock or state).
    take_backup(&mut backend);
    assert_eq!(
        client
            .query("SELECT * FROM sc_list_backups()", &[])
            .unwrap()
            .len(),
        1
    );

    // Privileges: nobody but superusers and sc_backup_operator members.
    client.batch_execute("CREATE ROLE alice LOGIN").unwrap();
    let mut alice = sc_backup_pg_test::postgres::Config::new()
        .host_path(&primary.socket_dir)
        .user("alice")
        .dbname("postgres")
        .connect(sc_backup_pg_test::postgres::NoTls)
        .unwrap();
    for query in [
        "SELECT * FROM sc_list_backups()",
        "SELECT * FROM sc_verify()",
        "SELECT * FROM sc_backup()",
        "SELECT * FROM sc_dump()",
        "SELECT * FROM sc_expire()",
        "SELECT sc_delete_backup('x')",
        "SELECT * FROM sc_status()",
        "SELECT * FROM sc_schedule()",
        "SELECT * FROM sc_backup.audit",
    ] {
        let err = alice.query(query, &[]).unwrap_err();
        let message = err.as_db_error().unwrap().message();
        assert!(
            message.contains("permission denied for function")
                || message.contains("permission denied for schema sc_backup"),
            "{query}: {err:?}"
        );
    }
    client
        .batch_execute("GRANT sc_backup_operator TO alice")
        .unwrap();
    // The operator reads the audit trail: the backups above, by the session user.
    let audited: i64 = alice
        .query_one(
            "SELECT count(*) FROM sc_backup.audit WHERE operation = 'backup' AND outcome = 'succeeded' AND user_name = 'postgres' AND source = 'sql'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
    assert_eq!(
        alice
            .query("SELECT * FROM sc_list_backups()", &[])
            .unwrap()
            .len(),
        1
    );
    assert!(alice
        .query("SELECT * FROM sc_verify()", &[])
        .unwrap()
        .is_empty());
    // A bad kind is a clear error.
    let err = alice
        .query("SELECT * FROM sc_backup('snapshot')", &[])
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.message(), "sc_backup: invalid backup kind \"snapshot\"");
    assert!(
        db.hint()
            .is_some_and(|hint| hint.starts_with("Valid kinds are: full, incremental")),
        "{db:?}"
    );
}

#[test]
fn expire_removes_old_backups_and_their_wal_but_never_what_a_kept_backup_needs() {
    let dir = TestDir::new("expire");
    let repository = dir.subdir("repo");
    let repo = Repo::local(&repository);
    let (mut primary, mut client) = start_primary(&dir, &encrypted_conf(&repo));
    client
        .batch_execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
        .unwrap();
    let first = take_backup(&mut client);
    client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 1000)")
        .unwrap();
    primary.switch_and_wait_archived(&mut client);
    std::thread::sleep(Duration::from_secs(1)); // distinct backup names (second resolution)
    let second = take_backup(&mut client);
    client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 1000)")
        .unwrap();
    primary.switch_and_wait_archived(&mut client);
    let wal_objects = || files_under(&repository.join("wal")).len();
    let before = wal_objects();

    let dry = repo.cli_ok(&dir.path, &["expire", "--retention-days", "0", "--dry-run"]);
    assert!(
        dry.contains(&format!("would expire backup {first}")),
        "{dry}"
    );
    assert_eq!(
        client
            .query("SELECT * FROM sc_list_backups()", &[])
            .unwrap()
            .len(),
        2
    );
    assert_eq!(wal_objects(), before);

    let done = repo.cli_ok(&dir.path, &["expire", "--retention-days", "0"]);
    assert!(done.contains(&format!("expired backup {first}")), "{done}");
    let names: Vec<String> = client
        .query("SELECT backup_name FROM sc_list_backups()", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, std::slice::from_ref(&second));
    assert!(wal_objects() < before, "no WAL was expired");
    assert!(client
        .query("SELECT * FROM sc_verify()", &[])
        .unwrap()
        .is_empty());
    let expected = count(&mut client, "t");
    drop(client);
    primary.stop("fast");

    // Everything after the kept backup is still there: a full restore reaches the end.
    let (_restored, mut restored_client) =
        restore_and_start(&dir, &repo, "restored", &["--archive-mode", "off"]);
    assert_eq!(count(&mut restored_client, "t"), expected);
    // A side copy: neither archiving nor scheduling into production's repository.
    for (setting, value) in [("archive_mode", "off"), ("sc_backup.scheduler", "off")] {
        let shown: String = restored_client
            .query_one(&format!("SHOW {setting}"), &[])
            .unwrap()
            .get(0);
        assert_eq!(shown, value, "{setting}");
    }

    // Deleting on purpose removes the backup and its objects.
    repo.cli_ok(&dir.path, &["delete", &second]);
    assert!(repo.cli_ok(&dir.path, &["list"]).contains("no backups"));
    assert_eq!(files_under(&repository.join("backups")).len(), 0);
}
