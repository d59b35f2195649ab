//! Archiving and backups against an object store that goes away and comes back.

use std::fs;
use std::time::Duration;

use sc_backup_pg_test::{
    archiving_conf, sc_backup, Cluster, ClusterOptions, GcsServer, S3Server, TestDir,
};

#[test]
fn s3_outage_keeps_the_wal_fails_backups_cleanly_and_catches_up() {
    let dir = TestDir::new("s3_outage");
    let mut server = S3Server::start(&dir, "s3");
    server.create_bucket("wal");
    let mut primary = Cluster::init(
        &dir,
        "primary",
        ClusterOptions {
            conf: &archiving_conf(
                "s3://wal/main",
                &format!("{}wal_keep_size = '1GB'", server.conf()),
            ),
            ..Default::default()
        },
    );
    primary.start();
    let mut client = primary.connect();
    client
        .batch_execute("CREATE EXTENSION sc_backup; CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)")
        .unwrap();
    primary.switch_and_wait_archived(&mut client);

    server.stop();
    client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 1000)")
        .unwrap();
    let during: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    primary.wait_until("archiving to fail", Duration::from_secs(120), || {
        let row = client
            .query_one(
                "SELECT failed_count, last_failed_wal FROM pg_stat_archiver",
                &[],
            )
            .unwrap();
        row.get::<_, i64>(0) > 0
            && row.get::<_, Option<String>>(1).as_deref() == Some(during.as_str())
    });
    assert!(primary
        .data
        .join(format!("pg_wal/archive_status/{during}.ready"))
        .exists());

    // A backup during the outage fails with a clear error and leaves nothing listed.
    let err = client.query("SELECT * FROM sc_backup()", &[]).unwrap_err();
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("s3://wal/main") && message.contains("gave up after"),
        "{message}"
    );

    // One line per failed attempt, no flood, and the archiver never died.
    let failed: i64 = client
        .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    let log = primary.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains(&format!("sc_backup: could not archive \"{during}\"")))
        .count() as i64;
    assert!(
        lines >= 1 && lines <= failed + 1,
        "{lines} log lines for {failed} failures"
    );
    assert!(!log.contains("FATAL"), "{log}");

    // The store returns: archiving catches up without losing anything.
    server.restart();
    client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 10)")
        .unwrap();
    primary.switch_and_wait_archived(&mut client);
    let fetched = primary.wal_fetch(&during, &dir.path.join("fetched"));
    assert!(fetched == fs::read(primary.data.join("pg_wal").join(&during)).unwrap());
    assert!(client
        .query("SELECT * FROM sc_list_backups()", &[])
        .unwrap()
        .is_empty());
    // And backups work again.
    client.query("SELECT * FROM sc_backup()", &[]).unwrap();
    assert_eq!(
        client
            .query("SELECT * FROM sc_list_backups()", &[])
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn gcs_repository_archives_backs_up_and_restores() {
    let dir = TestDir::new("gcs_end_to_end");
    let server = GcsServer::start(&dir, "gcs");
    server.create_bucket("pg-backups");
    let mut primary = Cluster::init(
        &dir,
        "primary",
        ClusterOptions {
            conf: &archiving_conf(
                "gs://pg-backups/main",
                &format!(
                    "{}sc_backup.encryption = age\nsc_backup.encryption_passphrase = 'gcs passphrase'\nwal_keep_size = '1GB'",
                    server.conf()
                ),
            ),
            ..Default::default()
        },
    );
    primary.start();
    let mut client = primary.connect();
    client
        .batch_execute(
            "CREATE EXTENSION sc_backup; CREATE TABLE t AS SELECT generate_series(1, 1000) AS x",
        )
        .unwrap();
    client.query("SELECT * FROM sc_backup()", &[]).unwrap();
    client
        .batch_execute("INSERT INTO t SELECT generate_series(1001, 2000)")
        .unwrap();
    let last = primary.switch_and_wait_archived(&mut client);
    drop(client);
    primary.stop("fast");

    // wal-fetch as restore_command would run it: settings from the data directory.
    let fetched = primary.wal_fetch(&last, &dir.path.join("fetched"));
    assert!(fetched == fs::read(primary.data.join("pg_wal").join(&last)).unwrap());

    // Restore from the bucket alone, as after losing the machine.
    let pgdata = dir.path.join("restored");
    let output = sc_backup(&dir.path)
        .env("SC_BACKUP_REPOSITORY", "gs://pg-backups/main")
        .env("SC_BACKUP_GCS_ENDPOINT", &server.endpoint)
        .env("GOOGLE_APPLICATION_CREDENTIALS", &server.credentials_file)
        .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", "gcs passphrase")
        .args([
            "restore",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--target-action",
            "promote",
            "--archive-mode",
            "off",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut restored = Cluster::adopt(&dir, "restored", pgdata);
    // Secrets never travel in a backup: the passphrase comes back from the operator.
    restored.append_conf("sc_backup.encryption_passphrase = 'gcs passphrase'");
    restored.start();
    let mut client = restored.connect();
    restored.wait_promoted(&mut client);
    let count: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 2000);
    assert!(client
        .query("SELECT * FROM sc_verify()", &[])
        .unwrap()
        .is_empty());
    assert!(server.tokens_issued() >= 1);
}
