//! Point-in-time recovery with `restore_command = 'sc-backup wal-fetch %f %p'`.
//!
//! The base backup here is PostgreSQL's own `pg_basebackup -X none`: it carries no WAL, so
//! every byte recovery replays comes out of the sc_backup repository through wal-fetch, which
//! also has to signal the end of the archive the way PostgreSQL expects.

use std::path::Path;
use std::time::Duration;

use sc_backup_pg_test::{
    archiving_conf, as_postgres, pg_bindir, run_ok, sc_backup_bin, Cluster, ClusterOptions, TestDir,
};

#[test]
fn point_in_time_recovery_replays_archived_wal_up_to_the_target() {
    let dir = TestDir::new("pitr_wal_fetch");
    let repository = dir.subdir("repo");
    let mut primary = Cluster::init(
        &dir,
        "primary",
        ClusterOptions {
            conf: &archiving_conf(
                &repository,
                "sc_backup.compression = zstd\n\
                 sc_backup.encryption = age\n\
                 sc_backup.encryption_passphrase = 'pitr passphrase'",
            ),
            ..Default::default()
        },
    );
    primary.start();
    let mut client = primary.connect();
    client
        .batch_execute("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .unwrap();

    let base = dir.path.join("base");
    run_ok(
        as_postgres(pg_bindir().join("pg_basebackup"))
            .arg("-h")
            .arg(&primary.socket_dir)
            .args(["-U", "postgres", "-X", "none", "-c", "fast", "-D"])
            .arg(&base),
    );

    // Rows before and after the target, in separate segments, with the target in between.
    for id in 1..=50 {
        client
            .execute("INSERT INTO marker (id) VALUES ($1)", &[&id])
            .unwrap();
    }
    client.batch_execute("SELECT pg_switch_wal()").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let target: String = client
        .query_one("SELECT clock_timestamp()::text", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(50));
    for id in 51..=100 {
        client
            .execute("INSERT INTO marker (id) VALUES ($1)", &[&id])
            .unwrap();
    }
    let last: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    primary.wait_until(
        "the last segment to be archived",
        Duration::from_secs(60),
        || {
            let archived: Option<String> = client
                .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
                .unwrap()
                .get(0);
            archived.is_some_and(|a| a >= last)
        },
    );
    drop(client);
    primary.stop("fast");

    // Restore: the copied postgresql.conf already names the repository and the passphrase,
    // so restore_command needs nothing but the file names.
    let mut restored = Cluster::adopt(&dir, "restored", base.clone());
    restored.append_conf(&format!(
        "restore_command = '{} wal-fetch %f %p'\n\
         recovery_target_time = '{target}'\n\
         recovery_target_action = 'promote'\n",
        sc_backup_bin().display()
    ));
    sc_backup_pg_test::write_as_postgres(&base.join("recovery.signal"), b"");
    restored.start();
    let mut client = restored.connect();
    restored.wait_promoted(&mut client);
    let (count, max): (i64, Option<i32>) = {
        let row = client
            .query_one("SELECT count(*), max(id) FROM marker", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (count, max),
        (50, Some(50)),
        "recovery did not stop at the target"
    );
    let log = restored.log_text();
    assert!(
        log.contains("recovery stopping before commit of transaction"),
        "{log}"
    );
    assert!(log.contains("restored log file"), "{log}");
    assert!(!log.contains("sc-backup: error"), "{log}");
    assert_history_archived(&repository);
}

/// After promotion the new timeline's history file is archived like any WAL file.
fn assert_history_archived(repository: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = std::fs::read_dir(repository.join("wal/history"))
            .map(|entries| {
                entries.filter_map(Result::ok).any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("00000002.history-")
                })
            })
            .unwrap_or(false);
        if found {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "00000002.history was not archived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
