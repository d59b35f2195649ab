//! The restore test (`sc-backup verify --restore`, `sc_backup.verify_schedule`) and the DR
//! drill (`sc-backup drill`) on real clusters: a good backup passes; a page damaged in the
//! data directory before the backup, which the stored objects' checksums cannot see, fails
//! and is named; a drill measures RTO and RPO, fails an impossible objective, and both reach
//! the audit table and the metrics.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use sc_backup_pg_test::postgres::Client;
use sc_backup_pg_test::{
    archiving_conf, pg_major, run_ok, take_backup, Cluster, ClusterOptions, TestDir,
};

use sc_backup_pg_test::output_text as text;

/// A primary with data checksums on (18's default, asked for on the others).
fn primary_with_checksums(
    dir: &TestDir,
    repository: &std::path::Path,
    conf: &str,
) -> (Cluster, Client) {
    let checksums: &[&str] = if pg_major() >= 18 {
        &[]
    } else {
        &["--data-checksums"]
    };
    let mut primary = Cluster::init(
        dir,
        "primary",
        ClusterOptions {
            conf: &archiving_conf(repository, conf),
            initdb_args: checksums,
            ..Default::default()
        },
    );
    primary.start();
    let mut client = primary.connect();
    client.batch_execute("CREATE EXTENSION sc_backup").unwrap();
    (primary, client)
}

#[test]
fn restore_test_passes_a_good_backup_and_names_a_page_damaged_before_the_backup() {
    let dir = TestDir::new("restore_test");
    let repository = dir.subdir("repo");
    let sandboxes = dir.subdir("sandboxes");
    let (mut primary, mut client) = primary_with_checksums(&dir, &repository, "");
    client.simple_query("CREATE DATABASE app").unwrap();
    client
        .batch_execute(
            "CREATE TABLE kept AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
             CREATE INDEX kept_v ON kept (v);
             CREATE TABLE damaged AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;",
        )
        .unwrap();
    let mut app = sc_backup_pg_test::postgres::Config::new()
        .host_path(&primary.socket_dir)
        .user("postgres")
        .dbname("app")
        .connect(sc_backup_pg_test::postgres::NoTls)
        .unwrap();
    app.batch_execute("CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 777) g")
        .unwrap();
    drop(app);
    // A database named like a connection string that aims at the live primary's `app`
    // (through a short link to its socket directory: names have at most 63 bytes). The
    // sandbox must check that database, in the sandbox.
    let short_socket = std::path::PathBuf::from(format!("/tmp/sc-rt-{}", std::process::id()));
    let _ = std::fs::remove_file(&short_socket);
    std::os::unix::fs::symlink(&primary.socket_dir, &short_socket).unwrap();
    let tricky = format!("host={} dbname=app", short_socket.display());
    client
        .simple_query(&format!("CREATE DATABASE \"{tricky}\""))
        .unwrap();
    let mut tricky_db = sc_backup_pg_test::postgres::Config::new()
        .host_path(&primary.socket_dir)
        .user("postgres")
        .dbname(&tricky)
        .connect(sc_backup_pg_test::postgres::NoTls)
        .unwrap();
    tricky_db
        .batch_execute("CREATE TABLE marker AS SELECT g AS id FROM generate_series(1, 5) g")
        .unwrap();
    drop(tricky_db);
    // Libraries the backup names for every session, in its postgresql.auto.conf (not applied
    // on the primary: no reload) and in its catalog (a per-role setting): the sandbox must load
    // none of them. Missing libraries, so that loading one fails every connection.
    for statement in [
        "ALTER SYSTEM SET session_preload_libraries = 'sc_backup_hostile_library'",
        "ALTER SYSTEM SET local_preload_libraries = 'sc_backup_hostile_plugin'",
        "ALTER SYSTEM SET dynamic_library_path = '/tmp/sc_backup_hostile_libraries'",
        "ALTER ROLE postgres IN DATABASE app SET session_preload_libraries = 'sc_backup_hostile_role_library'",
    ] {
        client.batch_execute(statement).unwrap();
    }
    take_backup(&mut client);
    for statement in [
        "ALTER SYSTEM RESET session_preload_libraries",
        "ALTER SYSTEM RESET local_preload_libraries",
        "ALTER SYSTEM RESET dynamic_library_path",
        "ALTER ROLE postgres IN DATABASE app RESET session_preload_libraries",
    ] {
        client.batch_execute(statement).unwrap();
    }
    primary.switch_and_wait_archived(&mut client);
    let verify = |primary: &Cluster, extra: &[&str]| {
        primary
            .cli(&dir.path, &repository)
            .args(["verify", "--restore", "--sandbox-dir"])
            .arg(&sandboxes)
            .args(extra)
            .output()
            .unwrap()
    };
    let output = verify(&primary, &[]);
    assert!(output.status.success(), "{}", text(&output));
    let report = text(&output);
    assert!(report.contains("app: 1 tables, 777 rows"), "{report}");
    assert!(
        report.contains(&format!("{tricky}: 1 tables, 5 rows")),
        "{report}"
    );
    let _ = std::fs::remove_file(&short_socket);
    assert!(
        report.contains("every database and table of the backup's catalog snapshot is there"),
        "{report}"
    );
    assert!(report.contains("PASSED"), "{report}");
    let json = verify(&primary, &["--json"]);
    assert!(json.status.success(), "{}", text(&json));
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let postgres_db = parsed["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["database"] == "postgres")
        .unwrap()
        .clone();
    let rows: std::collections::BTreeMap<String, u64> = postgres_db["table_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.get("public.kept"), Some(&20000));
    assert_eq!(rows.get("public.damaged"), Some(&20000));

    // A page damaged on disk, under PostgreSQL, before the next backup: the stored objects
    // are faithful copies of a bad file, so only reading the data can tell.
    let file: String = client
        .query_one("SELECT pg_relation_filepath('damaged')", &[])
        .unwrap()
        .get(0);
    client.batch_execute("CHECKPOINT").unwrap();
    drop(client);
    primary.stop("fast");
    let path = primary.data.join(&file);
    let handle = OpenOptions::new().write(true).open(&path).unwrap();
    handle
        .write_all_at(b"damaged by the test", 8192 + 4000)
        .unwrap();
    drop(handle);
    primary.start();
    let mut client = primary.connect();
    let backup = take_backup(&mut client);
    primary.switch_and_wait_archived(&mut client);
    let problems: i64 = client
        .query_one("SELECT count(*) FROM sc_verify($1)", &[&backup])
        .unwrap()
        .get(0);
    assert_eq!(problems, 0, "the stored objects themselves are intact");
    let output = verify(&primary, &[&backup]);
    let report = text(&output);
    assert_eq!(output.status.code(), Some(2), "{report}");
    assert!(report.contains("table public.damaged"), "{report}");
    assert!(report.contains("block 1"), "{report}");
    assert!(
        report.contains(&format!("backup {backup} failed its restore test")),
        "{report}"
    );
    assert!(!report.contains("table public.kept"), "{report}");
    // Sandboxes are made in a private directory of the user that runs them, inside the one
    // given; nothing else is left there.
    let private: Vec<_> = std::fs::read_dir(&sandboxes).unwrap().flatten().collect();
    assert_eq!(private.len(), 1, "{private:?}");
    let left = sc_backup_pg_test::sandboxes_under(&sandboxes);
    assert!(left.is_empty(), "a sandbox was left behind: {left:?}");
}

/// `sc_status()`'s value of one metric, once the scheduler has copied the CLI's audit
/// records into the table (every 15 s).
fn metric(primary: &Cluster, client: &mut Client, name: &str) -> f64 {
    let mut value = None;
    primary.wait_until(
        &format!("{name} in sc_status()"),
        Duration::from_secs(60),
        || {
            value = client
                .query_opt("SELECT value FROM sc_status() WHERE metric = $1", &[&name])
                .unwrap()
                .map(|row| row.get::<_, f64>(0));
            value.is_some()
        },
    );
    value.unwrap()
}

#[test]
fn drill_measures_rto_and_rpo_and_the_scheduler_runs_restore_tests_and_dumps() {
    let dir = TestDir::new("drill");
    let repository = dir.subdir("repo");
    let sandboxes = dir.subdir("sandboxes");
    let (primary, mut client) = primary_with_checksums(
        &dir,
        &repository,
        // The scheduler on, for restore tests and logical dumps only: no backup schedule.
        &format!(
            "sc_backup.scheduler = on\nsc_backup.hourly_interval = 0\nsc_backup.daily_time = ''\n\
             sc_backup.verify_schedule = '* * * * *'\nsc_backup.verify_directory = '{}'\n\
             sc_backup.dump_schedule = '* * * * *'\nsc_backup.dump_databases = 'postgres'",
            sandboxes.display()
        ),
    );
    let started = Instant::now();
    run_ok(&mut primary.pgbench(&["-i", "-s", "2", "-q"]));
    take_backup(&mut client);
    run_ok(&mut primary.pgbench(&["-n", "-c", "2", "-T", "5"]));
    primary.switch_and_wait_archived(&mut client);

    let drill = |extra: &[&str]| {
        primary
            .cli(&dir.path, &repository)
            .args(["drill", "--sandbox-dir"])
            .arg(&sandboxes)
            .args(extra)
            .output()
            .unwrap()
    };
    let drill_started = Instant::now();
    let output = drill(&["--json"]);
    let wall = drill_started.elapsed().as_secs_f64();
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let seconds = |field: &str| report[field].as_f64().unwrap_or(-1.0);
    assert!(seconds("rto_seconds") > 0.0, "{report}");
    // Against a clock outside the drill: its RTO (command start to a promoted server) fits in
    // the time the command took, checks and cleanup included.
    assert!(
        seconds("rto_seconds") <= wall,
        "RTO {} s, but the drill took {wall:.3} s: {report}",
        seconds("rto_seconds")
    );
    assert!(
        seconds("restore_seconds") + seconds("replay_seconds") + seconds("promote_seconds")
            <= seconds("rto_seconds"),
        "{report}"
    );
    assert!(report["rto_met"].as_bool().unwrap() && report["rpo_met"].as_bool().unwrap());
    // What was replayed is everything archived.
    assert_eq!(
        report["newest_replayed"], report["newest_archived"],
        "{report}"
    );
    assert!(seconds("rpo_seconds") < 120.0, "{report}");

    let output = drill(&["--rto-target", "0.01s"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("missed its objectives: RTO"),
        "{}",
        text(&output)
    );

    // The drills reach the audit table (copied by the scheduler) and the metrics. The copy runs
    // every 15 s: it may have taken the first drill's record before the second was written.
    let rto = metric(&primary, &mut client, "sc_backup_drill_rto_seconds");
    assert!(rto > 0.0);
    primary.wait_until("both drills in sc_backup.audit", Duration::from_secs(60), || {
        let drills: i64 = client
            .query_one(
                "SELECT count(*) FROM sc_backup.audit WHERE operation = 'drill' AND (figures->>'rto_seconds')::float8 > 0",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(drills <= 2, "{drills} drill records for two drills");
        drills == 2
    });

    // sc_backup.verify_schedule = every minute: the scheduler's own restore test passes.
    primary.wait_until(
        "a scheduled restore test",
        Duration::from_secs(150).saturating_sub(started.elapsed()) + Duration::from_secs(30),
        || {
            client
                .query_one(
                    "SELECT count(*) FROM sc_backup.audit WHERE operation = 'restore-test' AND source = 'scheduler' AND outcome = 'succeeded'",
                    &[],
                )
                .unwrap()
                .get::<_, i64>(0)
                > 0
        },
    );
    assert!(
        metric(
            &primary,
            &mut client,
            "sc_backup_last_verified_timestamp_seconds"
        ) > 0.0
    );
    assert_eq!(
        metric(&primary, &mut client, "sc_backup_verify_scheduled"),
        1.0
    );
    assert!(
        primary.log_text().contains("restore test of"),
        "{}",
        primary.log_text()
    );
    // sc_schedule() lists it beside the backup schedules, with its last outcome and next run.
    let row = client
        .query_one(
            "SELECT rule, next_run IS NOT NULL AS planned, last_success IS NOT NULL AS passed, last_outcome
               FROM sc_schedule() WHERE schedule = 'restore-test'",
            &[],
        )
        .unwrap();
    assert!(row.get::<_, String>("rule").contains("* * * * *"));
    assert!(row.get::<_, bool>("planned") && row.get::<_, bool>("passed"));
    assert_eq!(row.get::<_, String>("last_outcome"), "succeeded");

    // sc_backup.dump_schedule = every minute: the database named and the globals, listed as
    // scheduled dumps and shown by sc_schedule().
    primary.wait_until("a scheduled dump", Duration::from_secs(90), || {
        client
            .query_one(
                "SELECT count(*) FROM sc_backup.audit WHERE operation = 'dump' AND source = 'scheduler' AND outcome = 'succeeded'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
            >= 2
    });
    let dumps: Vec<(String, String, String)> = client
        .query(
            "SELECT kind, backup_type, database FROM sc_list_backups() WHERE kind <> 'physical' ORDER BY kind",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert!(
        dumps.len() >= 2
            && dumps.contains(&("globals".into(), "scheduled".into(), String::new()))
            && dumps.contains(&("logical".into(), "scheduled".into(), "postgres".into())),
        "{dumps:?}"
    );
    let row = client
        .query_one(
            "SELECT rule, last_outcome FROM sc_schedule() WHERE schedule = 'dump'",
            &[],
        )
        .unwrap();
    assert!(row
        .get::<_, String>("rule")
        .contains("logical dumps of postgres"));
    assert_eq!(row.get::<_, String>("last_outcome"), "succeeded");
    // The metrics tell the dumps' series from the base backups': kind and database labels.
    let stored: f64 = client
        .query_one(
            "SELECT value FROM sc_status()
              WHERE metric = 'sc_backup_size_bytes' AND kind = 'logical' AND backup_type = 'scheduled' AND database = 'postgres'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(stored > 0.0);
}
