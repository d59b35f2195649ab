//! Several repositories: repository 1 is what PostgreSQL waits for; repository 2 gets every WAL
//! file and every backup from the scheduler worker's catch-up, goes on without it during an
//! outage of its own (archiving into repository 1 never stops), catches up, verified, when it
//! is back, and restores alone.

use std::path::Path;
use std::time::{Duration, Instant};

use sc_backup_pg_test::{archiving_conf, files_under, free_port, TestDir};

/// The WAL files a local repository holds, by name.
fn wal_names(repository: &Path) -> std::collections::BTreeSet<String> {
    files_under(&repository.join("wal"))
        .iter()
        .filter_map(|path| {
            let base = path.file_name()?.to_string_lossy().into_owned();
            Some(base.split('-').next()?.to_string())
        })
        .collect()
}

/// Repository 2's figures on the worker's metrics endpoint: (backlog, caught up at).
fn repository_figures(port: u16) -> (Option<f64>, Option<f64>) {
    let text = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .and_then(|response| response.text())
        .unwrap_or_default();
    let value = |metric: &str| {
        text.lines()
            .find(|line| line.starts_with(&format!("{metric}{{repository=\"2\"}} ")))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    };
    (
        value("sc_backup_repository_wal_backlog_files"),
        value("sc_backup_repository_caught_up_timestamp_seconds"),
    )
}

/// The worker's pass interval (extension/src/catch_up.rs, CATCH_UP_EVERY).
fn catch_up_interval() -> Duration {
    Duration::from_secs(10)
}

/// Starts a restored cluster, waits for its promotion, and returns `sql`'s one row; the
/// cluster is stopped again.
fn promoted_row(
    restored: &mut sc_backup_pg_test::Cluster,
    sql: &str,
) -> sc_backup_pg_test::postgres::Row {
    restored.start();
    let mut client = restored.connect();
    restored.wait_promoted(&mut client);
    let row = client.query_one(sql, &[]).unwrap();
    drop(client);
    restored.stop("fast");
    row
}

fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_second_repository_gets_every_wal_file_and_catches_up_after_an_outage() {
    let dir = TestDir::new("second_repository_catch_up");
    let first = dir.subdir("first");
    let second = dir.subdir("second");
    let port = free_port();
    let (primary, mut client) = sc_backup_pg_test::start_primary(
        &dir,
        &archiving_conf(
            &first,
            &format!(
                "sc_backup.repository2 = '{}'\nsc_backup.repository2_compression = 'gzip'\n\
                 sc_backup.metrics_listen = '127.0.0.1:{port}'",
                second.display()
            ),
        ),
    );
    client.batch_execute("CREATE TABLE t (n int)").unwrap();
    // A switch with nothing written since the last one switches nothing: write first.
    let next_segment = |client: &mut sc_backup_pg_test::postgres::Client| {
        client
            .batch_execute("INSERT INTO t SELECT generate_series(1, 1000)")
            .unwrap();
        primary.switch_and_wait_archived(client)
    };
    for _ in 0..3 {
        next_segment(&mut client);
    }
    wait_for(
        "repository 2 to hold repository 1's WAL",
        Duration::from_secs(60),
        || {
            let held = wal_names(&first);
            !held.is_empty() && wal_names(&second) == held
        },
    );
    assert!(
        files_under(&second.join("wal"))
            .iter()
            .all(|p| p.to_string_lossy().ends_with(".gz")),
        "repository 2 did not use its own compression"
    );

    wait_for(
        "the metrics to show repository 2 caught up",
        Duration::from_secs(30),
        || matches!(repository_figures(port), (Some(backlog), Some(_)) if backlog == 0.0),
    );
    let (_, caught_up_before) = repository_figures(port);
    // The same figures in SQL, from any backend.
    let backlog_in_sql: f64 = client
        .query_one(
            "SELECT value FROM sc_status()
              WHERE metric = 'sc_backup_repository_wal_backlog_files' AND repository = 2",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(backlog_in_sql, 0.0);
    let health = |client: &mut sc_backup_pg_test::postgres::Client| -> (bool, String) {
        let row = client
            .query_one(
                "SELECT healthy, detail FROM sc_health() WHERE check_name = 'repository 2'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    let (healthy, detail) = health(&mut client);
    assert!(
        healthy && detail.contains("held all of repository 1's WAL"),
        "{detail}"
    );

    // Repository 2 goes away: archiving into repository 1 goes on, and the worker says so.
    let away = dir.path.join("second-away");
    std::fs::rename(&second, &away).unwrap();
    let mut during = Vec::new();
    for _ in 0..3 {
        during.push(next_segment(&mut client));
    }
    primary.wait_until(
        "the worker to report repository 2 behind",
        Duration::from_secs(60),
        || {
            primary.log_text().contains("sc_backup: repository 2 (")
                && primary
                    .log_text()
                    .contains("is not caught up with repository 1")
        },
    );
    // Its RPO grows: no backlog can be counted, and the time it last held everything stays
    // where it was, pass after pass.
    wait_for(
        "the backlog to become unknown",
        Duration::from_secs(15),
        || repository_figures(port).0.is_none(),
    );
    let (_, caught_up_during) = repository_figures(port);
    // Healthy still (within the 15 minutes of the RPO objective), the error said.
    let (healthy, detail) = health(&mut client);
    assert!(healthy && detail.contains("last error:"), "{detail}");
    assert!(caught_up_during >= caught_up_before, "{caught_up_during:?}");
    std::thread::sleep(catch_up_interval() + Duration::from_secs(2));
    assert_eq!(
        repository_figures(port),
        (None, caught_up_during),
        "repository 2 counted as caught up while away"
    );
    assert_eq!(
        primary.ready_segments(),
        0,
        "archiving waited for repository 2"
    );

    // Back: what it missed arrives, in full, and reads back the same as from repository 1.
    std::fs::rename(&away, &second).unwrap();
    wait_for("repository 2 to catch up", Duration::from_secs(60), || {
        wal_names(&second) == wal_names(&first)
    });
    primary.wait_until(
        "the worker to report repository 2 caught up",
        Duration::from_secs(30),
        || {
            primary.log_text().contains("sc_backup: repository 2 (")
                && primary
                    .log_text()
                    .contains("holds all of repository 1's WAL")
        },
    );
    wait_for(
        "the metrics to show repository 2 caught up again",
        Duration::from_secs(30),
        || {
            matches!(repository_figures(port), (Some(backlog), Some(at))
            if backlog == 0.0 && Some(at) > caught_up_before)
        },
    );
    for segment in &during {
        let fetch = |repository: &str| {
            let file = dir.path.join(format!("{segment}-{repository}"));
            primary.wal_fetch_with(&["--repository", repository], segment, &file)
        };
        assert!(
            fetch("2") == fetch("1"),
            "{segment} differs in repository 2"
        );
    }

    // A backup into repository 1 reaches repository 2 (its own compression), and each
    // repository, the other gone, restores to a point in time exactly.
    let backup = sc_backup_pg_test::take_backup(&mut client);
    primary.wait_until(
        "the worker to copy the backup into repository 2",
        Duration::from_secs(60),
        || {
            primary.log_text().contains(&format!(
                "sc_backup: copied backup(s) {backup} into repository 2 ("
            ))
        },
    );
    assert!(
        files_under(&second.join("backups").join(&backup))
            .iter()
            .all(|p| p.ends_with("backup.json") || p.to_string_lossy().ends_with(".gz")),
        "the backup's copy did not use repository 2's compression"
    );
    // A logical dump too, restored from repository 2 by restore-dump.
    let rows_dumped: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    let dump: String = client
        .query_one(
            "SELECT dump_name FROM sc_dump('postgres') WHERE database = 'postgres'",
            &[],
        )
        .unwrap()
        .get(0);
    primary.wait_until(
        "the worker to copy the dump into repository 2",
        Duration::from_secs(60),
        || {
            primary
                .log_text()
                .contains("sc_backup: copied dump(s) postgres_full_")
        },
    );
    let output = primary
        .cli(&dir.path, &second)
        .args(["restore-dump", "latest", "--from-database", "postgres"])
        .args(["--database", "from_offsite"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{dump}: {}",
        sc_backup_pg_test::output_text(&output)
    );
    let mut offsite_copy = primary.connect_to("from_offsite");
    let rows: i64 = offsite_copy
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, rows_dumped);
    drop(offsite_copy);
    client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 777)")
        .unwrap();
    let row = client
        .query_one("SELECT clock_timestamp()::text, count(*) FROM t", &[])
        .unwrap();
    let (target, rows_at_target): (String, i64) = (row.get(0), row.get(1));
    std::thread::sleep(Duration::from_millis(50));
    client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 555)")
        .unwrap();
    next_segment(&mut client);
    wait_for("repository 2 to catch up", Duration::from_secs(60), || {
        wal_names(&second) == wal_names(&first)
    });
    drop(client);
    let mut primary = primary;
    primary.stop("fast");
    for (alone, other) in [(&second, &first), (&first, &second)] {
        let gone = dir.path.join("gone");
        std::fs::rename(other, &gone).unwrap();
        let pgdata = dir.path.join(format!(
            "restored-from-{}",
            alone.file_name().unwrap().to_string_lossy()
        ));
        // As a DBA restores on a new host with the cluster's configuration: no repository
        // named, the first that holds a backup for the target serves.
        let output = sc_backup_pg_test::sc_backup(&dir.path)
            .arg("--config-file")
            .arg(primary.data.join("postgresql.conf"))
            .args(["restore", "--pgdata"])
            .arg(&pgdata)
            .args(["--archive-mode", "off", "--target-action", "promote"])
            .args(["--target-time", &target])
            .output()
            .unwrap();
        let said = sc_backup_pg_test::output_text(&output);
        assert!(output.status.success(), "{said}");
        assert_eq!(
            said.contains("sc-backup: note: restoring from repository 2 ("),
            alone == &second,
            "{said}"
        );
        let mut restored = sc_backup_pg_test::Cluster::adopt(
            &dir,
            &format!("restored-{}", alone.file_name().unwrap().to_string_lossy()),
            pgdata,
        );
        let rows: i64 = promoted_row(&mut restored, "SELECT count(*) FROM t").get(0);
        assert_eq!(rows, rows_at_target, "restored from {}", alone.display());
        std::fs::rename(&gone, other).unwrap();
    }
}

/// Repository 1 local, repository 2 on S3 behind a proxy, under pgbench: the S3 side refuses
/// every connection for two minutes. Archiving into repository 1 never fails, `pg_wal` does
/// not fill and a backup taken meanwhile succeeds; once S3 answers again, repository 2 catches
/// up, holds exactly repository 1's WAL, and gets the backup, which verifies there. Then, the
/// local repository lost, `copy` fills an empty bucket from repository 2, and each of the two
/// restores a point in time exactly, alone.
#[test]
fn an_s3_outage_of_the_offsite_repository_never_holds_back_archiving() {
    use sc_backup_pg_test::fault_proxy::{Fault, FaultProxy};
    let dir = TestDir::new("offsite_outage");
    let server = sc_backup_pg_test::S3Server::start(&dir, "s3");
    server.create_bucket("offsite");
    let proxy = FaultProxy::start(server.endpoint.trim_start_matches("http://").to_string());
    let first = dir.subdir("local");
    let port = free_port();
    let conf = server.conf().replace(&server.endpoint, &proxy.endpoint());
    let (primary, mut client) = sc_backup_pg_test::start_primary(
        &dir,
        &archiving_conf(
            &first,
            &format!(
                "{conf}sc_backup.repository2 = 's3://offsite/pg'\n\
                 sc_backup.metrics_listen = '127.0.0.1:{port}'\narchive_timeout = 2"
            ),
        ),
    );
    let offsite = || {
        sc_backup_core::Repository::open(
            &sc_backup_core::Settings::from_raw(&sc_backup_core::RawSettings {
                repository: Some("s3://offsite/pg".into()),
                s3_endpoint: Some(server.endpoint.clone()),
                s3_region: Some("us-east-1".into()),
                s3_access_key_id: Some(sc_backup_pg_test::S3Server::ACCESS_KEY.into()),
                s3_secret_access_key: Some(sc_backup_core::config::Secret::new(String::from(
                    sc_backup_pg_test::S3Server::SECRET_KEY,
                ))),
                ..Default::default()
            })
            .unwrap(),
        )
    };
    let offsite_names = || -> std::collections::BTreeSet<String> {
        offsite()
            .and_then(|repository| repository.list_wal())
            .map(|files| {
                files
                    .into_iter()
                    .map(|(name, _)| name.as_str().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    sc_backup_pg_test::run_ok(&mut primary.pgbench(&["-i", "-s", "2", "-q"]));
    let mut load = primary
        .pgbench(&["-T", "140", "-c", "2", "-j", "2", "-R", "200"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "repository 2 to catch up under load",
        Duration::from_secs(60),
        || matches!(repository_figures(port), (Some(backlog), Some(_)) if backlog == 0.0),
    );
    let failed = |client: &mut sc_backup_pg_test::postgres::Client| -> i64 {
        client
            .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
            .unwrap()
            .get(0)
    };
    let failed_before = failed(&mut client);

    // The outage: two minutes of refused connections while the load goes on.
    proxy.set(Fault::Refuse);
    let outage = Instant::now();
    let mut most_ready = 0;
    while outage.elapsed() < Duration::from_secs(60) {
        most_ready = most_ready.max(primary.ready_segments());
        std::thread::sleep(Duration::from_millis(500));
    }
    // A backup taken meanwhile goes to repository 1 as always.
    let backup = sc_backup_pg_test::take_backup(&mut client);
    while outage.elapsed() < Duration::from_secs(120) {
        most_ready = most_ready.max(primary.ready_segments());
        std::thread::sleep(Duration::from_millis(500));
    }
    let archived_during = wal_names(&first).len();
    assert!(
        primary
            .log_text()
            .contains("is not caught up with repository 1"),
        "the outage went unreported"
    );
    assert_eq!(
        failed(&mut client),
        failed_before,
        "archiving into repository 1 failed"
    );
    assert!(
        most_ready <= 3,
        "pg_wal filled: {most_ready} segments waited at once"
    );

    // Back: every file repository 1 holds arrives.
    proxy.set(Fault::Pass);
    let _ = load.wait();
    client.batch_execute("SELECT pg_switch_wal()").unwrap();
    wait_for(
        "repository 2 to hold repository 1's WAL",
        Duration::from_secs(120),
        || {
            let local = wal_names(&first);
            local.len() >= archived_during && offsite_names() == local
        },
    );
    let newest = wal_names(&first).into_iter().next_back().unwrap();
    // Straight to the store, past the proxy.
    let fetch = |repository: &str| {
        let file = dir.path.join(format!("{newest}-{repository}"));
        let flags = [
            "--repository",
            repository,
            "--s3-endpoint",
            &server.endpoint,
        ];
        primary.wal_fetch_with(&flags, &newest, &file)
    };
    assert!(fetch("2") == fetch("1"), "{newest} differs in repository 2");

    // The backup taken during the outage arrives too, and verifies from the store alone.
    wait_for(
        "the backup to reach repository 2",
        Duration::from_secs(120),
        || {
            offsite()
                .and_then(|repository| sc_backup_core::backup::read_metadata(&repository, &backup))
                .is_ok()
        },
    );
    let (_, problems) =
        sc_backup_core::backup::verify_backup(&offsite().unwrap(), &backup).unwrap();
    assert_eq!(problems, [], "the offsite copy of {backup}");

    // A point in time after the load, a row after it, all of it offsite.
    client
        .batch_execute("CREATE TABLE after_target (n int)")
        .unwrap();
    let row = client
        .query_one(
            "SELECT clock_timestamp()::text, count(*) FROM pgbench_history",
            &[],
        )
        .unwrap();
    let (target, history_at_target): (String, i64) = (row.get(0), row.get(1));
    std::thread::sleep(Duration::from_millis(50));
    client
        .batch_execute("INSERT INTO after_target VALUES (1)")
        .unwrap();
    primary.switch_and_wait_archived(&mut client);
    wait_for(
        "repository 2 to hold the last WAL",
        Duration::from_secs(60),
        || offsite_names() == wal_names(&first),
    );
    drop(client);
    let mut primary = primary;
    primary.stop("fast");

    // `copy` fills an empty bucket (repository 3) from repository 2 alone.
    primary.append_conf("sc_backup.repository3 = 's3://offsite/copied'\n");
    let config = primary.data.join("postgresql.conf");
    let cli = |args: &[&str]| {
        let output = sc_backup_pg_test::sc_backup(&dir.path)
            .arg("--config-file")
            .arg(&config)
            .args(["--s3-endpoint", &server.endpoint])
            .args(args)
            .output()
            .unwrap();
        let said = sc_backup_pg_test::output_text(&output);
        assert!(output.status.success(), "{args:?}: {said}");
        said
    };
    std::fs::rename(&first, dir.path.join("local-lost")).unwrap();
    let said = cli(&["--repository", "2", "copy", "--to", "3"]);
    assert!(said.contains("copied 1 backup(s)"), "{said}");

    // Each offsite repository alone restores the point in time exactly.
    for repository in ["2", "3"] {
        let pgdata = dir.path.join(format!("restored-{repository}"));
        cli(&[
            "--repository",
            repository,
            "restore",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--archive-mode",
            "off",
            "--target-action",
            "promote",
            "--target-time",
            &target,
        ]);
        let mut restored =
            sc_backup_pg_test::Cluster::adopt(&dir, &format!("restored-{repository}"), pgdata);
        // Secrets never travel in a backup: the store's keys come back from the operator.
        restored.append_conf(&server.conf());
        let row = promoted_row(
            &mut restored,
            "SELECT (SELECT count(*) FROM pgbench_history), (SELECT count(*) FROM after_target)",
        );
        let (history, after): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            (history, after),
            (history_at_target, 0),
            "restored from repository {repository}"
        );
    }
}

/// Repository 1 local, repository 2 on GCS (the emulator) with a key of its own: the worker
/// copies the WAL and a backup there; with the local repository gone, a restore on the
/// cluster's configuration finds repository 1 unusable, reads repository 2 alone and reaches
/// the end of the archive.
#[test]
fn a_gcs_offsite_repository_gets_the_backups_and_restores_alone() {
    let dir = TestDir::new("offsite_gcs");
    let server = sc_backup_pg_test::GcsServer::start(&dir, "gcs");
    server.create_bucket("offsite");
    let first = dir.subdir("local");
    let secrets = dir.path.join("secrets.conf");
    sc_backup_pg_test::write_as_postgres(
        &secrets,
        b"sc_backup.encryption_passphrase = 'local passphrase'\n\
          sc_backup.repository2_encryption_passphrase = 'offsite passphrase'\n",
    );
    std::fs::set_permissions(
        &secrets,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (mut primary, mut client) = sc_backup_pg_test::start_primary(
        &dir,
        &archiving_conf(
            &first,
            &format!(
                "{}sc_backup.encryption = age\nsc_backup.secrets_file = '{}'\n\
                 sc_backup.repository2 = 'gs://offsite/pg'\nsc_backup.repository2_compression = 'gzip'",
                server.conf(),
                secrets.display()
            ),
        ),
    );
    client
        .batch_execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS n")
        .unwrap();
    let backup = sc_backup_pg_test::take_backup(&mut client);
    client
        .batch_execute("INSERT INTO t SELECT generate_series(1001, 1500)")
        .unwrap();
    let last = primary.switch_and_wait_archived(&mut client);
    let offsite = || {
        sc_backup_core::Repository::open(
            &sc_backup_core::Settings::from_raw(&sc_backup_core::RawSettings {
                repository: Some("gs://offsite/pg".into()),
                gcs_endpoint: Some(server.endpoint.clone()),
                gcs_credentials: Some(server.credentials_file.display().to_string()),
                encryption_passphrase: Some(sc_backup_core::config::Secret::new(String::from(
                    "offsite passphrase",
                ))),
                ..Default::default()
            })
            .unwrap(),
        )
    };
    wait_for(
        "repository 2 to hold the backup and the last WAL file",
        Duration::from_secs(90),
        || {
            offsite().is_ok_and(|repository| {
                sc_backup_core::backup::read_metadata(&repository, &backup).is_ok()
                    && sc_backup_core::wal::WalFileName::parse(&last)
                        .ok()
                        .and_then(|name| repository.find_wal(&name).ok().flatten())
                        .is_some()
            })
        },
    );
    drop(client);
    primary.stop("fast");

    // The local repository lost with the host; the cluster's configuration comes back.
    std::fs::rename(&first, dir.path.join("local-lost")).unwrap();
    let pgdata = dir.path.join("restored");
    let output = sc_backup_pg_test::sc_backup(&dir.path)
        .arg("--config-file")
        .arg(primary.data.join("postgresql.conf"))
        .args(["restore", "--pgdata"])
        .arg(&pgdata)
        .args(["--archive-mode", "off", "--target-action", "promote"])
        .output()
        .unwrap();
    let said = sc_backup_pg_test::output_text(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("sc-backup: note: restoring from repository 2 (gs://offsite/pg)"),
        "{said}"
    );
    let mut restored = sc_backup_pg_test::Cluster::adopt(&dir, "restored", pgdata);
    let rows: i64 = promoted_row(&mut restored, "SELECT count(*) FROM t").get(0);
    assert_eq!(rows, 1500);

    // Named by its location, a configured repository is that repository (its own key).
    let output = sc_backup_pg_test::sc_backup(&dir.path)
        .arg("--config-file")
        .arg(primary.data.join("postgresql.conf"))
        .args(["--repository", "gs://offsite/pg", "verify", &backup])
        .output()
        .unwrap();
    let said = sc_backup_pg_test::output_text(&output);
    assert!(output.status.success() && said.contains("OK"), "{said}");
}
