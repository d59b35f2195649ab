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

/// Six batches of 20,000 rows, one segment switch after each, all archived; returns the
/// segment each batch ended in and the LSN after each batch.
fn six_archived_batches(
    primary: &Cluster,
    client: &mut sc_backup_pg_test::postgres::Client,
) -> (Vec<String>, Vec<String>) {
    client
        .batch_execute("CREATE TABLE rows (batch int, n int, filler text)")
        .unwrap();
    let backup: String = client
        .query_one("SELECT backup_name FROM sc_backup()", &[])
        .unwrap()
        .get(0);
    assert!(!backup.is_empty());
    let (mut segments, mut lsns) = (Vec::new(), Vec::new());
    for batch in 1..=6 {
        client
            .execute(
                "INSERT INTO rows SELECT $1, n, repeat('x', 40) FROM generate_series(1, 20000) n",
                &[&batch],
            )
            .unwrap();
        let lsn: String = client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .unwrap()
            .get(0);
        lsns.push(lsn);
        segments.push(primary.switch_and_wait_archived(client));
    }
    (segments, lsns)
}

/// `pg_ctl start` that may fail (recovery stopping is the point): whether it reported the
/// server up (read-only connections count).
fn try_start(cluster: &Cluster) -> bool {
    as_postgres(pg_bindir().join("pg_ctl"))
        .arg("-D")
        .arg(&cluster.data)
        .arg("-l")
        .arg(&cluster.log)
        .args(["-w", "-t", "120", "start"])
        .output()
        .unwrap()
        .status
        .success()
}

/// Waits for the server of `cluster` to have exited on its own.
fn wait_server_gone(cluster: &Cluster) {
    cluster.wait_until("the server to stop", Duration::from_secs(120), || {
        !cluster.data.join("postmaster.pid").exists()
    });
}

fn restored_rows(cluster: &Cluster) -> i64 {
    let mut client = cluster.connect();
    cluster.wait_promoted(&mut client);
    client
        .query_one("SELECT count(*) FROM rows", &[])
        .unwrap()
        .get(0)
}

/// Appends settings to postgresql.auto.conf, after those `sc-backup restore` wrote there (which
/// postgresql.conf cannot override).
fn append_auto_conf(data: &Path, lines: &str) {
    let path = data.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&path).unwrap() + lines + "\n";
    sc_backup_pg_test::write_as_postgres(&path, text.as_bytes());
}

/// Makes every `wal-fetch` of the restored cluster give up on an unreachable store after
/// `seconds` (the restore wrote restore_command into postgresql.auto.conf).
fn set_wal_fetch_retry(data: &Path, seconds: u64) {
    let path = data.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(" wal-fetch "), "{text}");
    let text = text.replace(" wal-fetch ", &format!(" wal-fetch --retry-for {seconds} "));
    sc_backup_pg_test::write_as_postgres(&path, text.as_bytes());
}

/// A damaged segment in the middle of the archive, and a restore to the end of the archive
/// (no target): PostgreSQL takes every restore_command status up to 125 for "not in the
/// archive" and would end recovery there, promote, and serve a cluster missing every later
/// transaction. wal-fetch must make it stop instead, saying which file and why; once the
/// object is repaired, starting again reaches the true end.
#[test]
fn a_damaged_segment_stops_recovery_instead_of_ending_it_early() {
    let dir = TestDir::new("recovery_stops_at_damage");
    // A % in the path: PostgreSQL substitutes %f, %p, %r and %% in restore_command.
    let repository = dir.subdir("repo%f");
    let (mut primary, mut client) =
        sc_backup_pg_test::start_primary(&dir, &archiving_conf(&repository, ""));
    let (segments, _) = six_archived_batches(&primary, &mut client);
    drop(client);
    primary.stop("fast");

    let damaged_segment = &segments[2];
    let object = sc_backup_pg_test::objects_under(&repository)
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{damaged_segment}-"))
        })
        .expect("the third batch's segment is archived");
    let original = std::fs::read(&object).unwrap();
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    std::fs::write(&object, &damaged).unwrap();

    let target = dir.path.join("restored");
    let output = primary
        .cli(&dir.path, &repository)
        .args(["restore", "--pgdata"])
        .arg(&target)
        .args(["--archive-mode", "off"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        sc_backup_pg_test::output_text(&output)
    );
    let mut restored = Cluster::adopt(&dir, "restored", target);
    // pg_ctl may see it up (read-only, once consistent) before it reaches the damage.
    let _ = try_start(&restored);
    wait_server_gone(&restored);
    let log = restored.log_text();
    assert!(
        log.contains(&format!(
            "sc-backup: error: could not fetch WAL file \"{damaged_segment}\""
        )) && log.contains("integrity check failed"),
        "{log}"
    );
    assert!(
        log.contains(&format!("could not restore file \"{damaged_segment}\"")),
        "PostgreSQL did not stop on it: {log}"
    );
    for promotion in ["selected new timeline ID", "archive recovery complete"] {
        assert!(!log.contains(promotion), "recovery ended early: {log}");
    }

    // Repaired, the same data directory recovers everything.
    std::fs::write(&object, &original).unwrap();
    restored.start();
    assert_eq!(restored_rows(&restored), 120_000);
    restored.stop("fast");
}

/// Two repositories in the cluster's configuration (the second a copy of the first), a
/// segment damaged in the first: a real recovery to the end of the archive reads that segment
/// from repository 2, says so in the server log, and reaches the true end; with repository 1
/// gone, `--repository 2` alone lists and verifies the backup, and `copy` fills a repository 3
/// with its WAL and backup, which verifies there.
#[test]
fn a_segment_damaged_in_one_repository_comes_from_the_next() {
    let dir = TestDir::new("recovery_second_repository");
    let first = dir.subdir("first");
    let second = dir.path.join("second");
    let (mut primary, mut client) =
        sc_backup_pg_test::start_primary(&dir, &archiving_conf(&first, ""));
    let (segments, _) = six_archived_batches(&primary, &mut client);
    drop(client);
    primary.stop("fast");
    run_ok(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&first)
            .arg(&second),
    );

    let damaged_segment = &segments[2];
    let object = sc_backup_pg_test::objects_under(&first)
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{damaged_segment}-"))
        })
        .expect("the third batch's segment is archived");
    let mut damaged = std::fs::read(&object).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    std::fs::write(&object, &damaged).unwrap();

    let target = dir.path.join("restored");
    let output = primary
        .cli(&dir.path, &first)
        .args(["restore", "--pgdata"])
        .arg(&target)
        .args(["--archive-mode", "off"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        sc_backup_pg_test::output_text(&output)
    );
    // As a DBA configures a standby or a restored cluster that knows both repositories:
    // wal-fetch reads them from the configuration, in order.
    append_auto_conf(
        &target,
        &format!(
            "sc_backup.repository2 = '{}'\n\
             sc_backup.repository4 = 's3://no-credentials-here/pg'\n\
             restore_command = '{} wal-fetch %f %p'",
            second.display(),
            sc_backup_bin().display()
        ),
    );
    let mut restored = Cluster::adopt(&dir, "restored", target.clone());
    restored.start();
    assert_eq!(restored_rows(&restored), 120_000);
    restored.stop("fast");
    let log = restored.log_text();
    assert!(
        log.contains(&format!(
            "sc-backup: warning: WAL file \"{damaged_segment}\" came from repository 2 (repository 1: "
        )) && log.contains("integrity check failed"),
        "{log}"
    );
    // A repository this host cannot use (no S3 keys) is left out, not a reason to stop.
    assert!(
        log.contains("repository 4 is not used"),
        "repository 4 was not reported: {log}"
    );

    // Repository 1 gone: repository 2 alone holds everything.
    std::fs::rename(&first, dir.path.join("first-gone")).unwrap();
    for command in [&["list"][..], &["verify"][..]] {
        let output = sc_backup_pg_test::sc_backup(&dir.path)
            .arg("-D")
            .arg(&target)
            .args(["--repository", "2"])
            .args(command)
            .output()
            .unwrap();
        let said = sc_backup_pg_test::output_text(&output);
        assert!(output.status.success(), "{command:?}: {said}");
    }
    let cli = |args: &[&str]| {
        let output = sc_backup_pg_test::sc_backup(&dir.path)
            .arg("-D")
            .arg(&target)
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            sc_backup_pg_test::output_text(&output),
        )
    };
    let (ok, said) = cli(&["--repository", "3", "list"]);
    assert!(
        !ok && said.contains("repository 3 is not configured"),
        "{said}"
    );

    // copy fills a new repository 3 (gzip where 2 holds zstd) from 2, resumably.
    let third = dir.subdir("third");
    append_auto_conf(
        &target,
        &format!(
            "sc_backup.repository3 = '{}'\nsc_backup.repository3_compression = 'gzip'",
            third.display()
        ),
    );
    // Every WAL object of repository 2 (its segments and the backup's .backup file).
    let held = sc_backup_pg_test::objects_under(&second.join("wal")).len();
    let (ok, said) = cli(&["--repository", "2", "copy", "--to", "3"]);
    assert!(
        ok && said.contains(&format!("copied {held} WAL file(s)"))
            && said.contains("copied 1 backup(s)"),
        "{said}"
    );
    let (ok, said) = cli(&["--repository", "2", "copy", "--to", "3"]);
    assert!(
        ok && said.contains("copied 0 WAL file(s)")
            && said.contains(&format!("{held} were there already"))
            && said.contains("no backup to copy"),
        "{said}"
    );
    // Repository 3 alone: its copy of the backup verifies (every file, and the WAL it needs).
    let (ok, said) = cli(&["--repository", "3", "verify"]);
    assert!(ok && said.contains("OK"), "{said}");
    let fetched = |repository: &str| {
        let file = dir.path.join(format!("fetched-{repository}"));
        restored.wal_fetch_with(&["--repository", repository], damaged_segment, &file)
    };
    assert!(fetched("3") == fetched("2"), "repository 3's copy differs");
    assert!(
        sc_backup_pg_test::objects_under(&third)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".gz")),
        "repository 3 did not re-encode with its own compression"
    );
}

/// The object store goes away in the middle of a recovery to the end of the archive: a standby
/// keeps running and asks again, archive recovery stops (after `--retry-for`) instead of
/// promoting with what it had, and a restart after the outage reaches the true end.
#[test]
fn an_object_store_outage_stops_recovery_and_spares_a_standby() {
    use sc_backup_pg_test::fault_proxy::{Fault, FaultProxy};
    let dir = TestDir::new("recovery_outage");
    let server = sc_backup_pg_test::S3Server::start(&dir, "s3");
    server.create_bucket("outage");
    let proxy = FaultProxy::start(server.endpoint.trim_start_matches("http://").to_string());
    let url = "s3://outage/cluster";
    let (mut primary, mut client) = sc_backup_pg_test::start_primary(
        &dir,
        &archiving_conf(url, &format!("{}archive_timeout = 0", server.conf())),
    );
    let (_, lsns) = six_archived_batches(&primary, &mut client);
    drop(client);
    primary.stop("fast");

    // The CLI's precedence: a key exported in the shell beats the cluster's configuration
    // (which holds the right one here): the exported, wrong one is used, and refused.
    let listed = sc_backup_pg_test::sc_backup(&primary.data)
        .env("AWS_SECRET_ACCESS_KEY", "an exported key that is wrong")
        .arg("list")
        .output()
        .unwrap();
    let said = sc_backup_pg_test::output_text(&listed);
    assert!(
        !listed.status.success(),
        "the configuration's key won: {said}"
    );
    assert!(said.contains("denied"), "{said}");

    // Restores read the store through the proxy, and so do their restore_commands.
    let restore_into = |name: &str, retry_for: u64| {
        let target = dir.path.join(name);
        let output = primary
            .cli(&dir.path, Path::new(url))
            .env("SC_BACKUP_S3_ENDPOINT", proxy.endpoint())
            .env("AWS_ACCESS_KEY_ID", sc_backup_pg_test::S3Server::ACCESS_KEY)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                sc_backup_pg_test::S3Server::SECRET_KEY,
            )
            .args(["restore", "--pgdata"])
            .arg(&target)
            .args(["--archive-mode", "off", "--target-action", "promote"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            sc_backup_pg_test::output_text(&output)
        );
        set_wal_fetch_retry(&target, retry_for);
        let cluster = Cluster::adopt(&dir, name, target);
        // Secrets never travel in a backup: the restored cluster gets the store's keys back,
        // as a DBA's secrets file would give them. The proxy stands in front of the store.
        cluster.append_conf(&format!(
            "{}sc_backup.s3_endpoint = '{}'",
            server.conf(),
            proxy.endpoint()
        ));
        cluster
    };

    // A standby: all the archive replayed, then the store goes away; it must stay up.
    let mut standby = restore_into("standby", 2);
    std::fs::rename(
        standby.data.join("recovery.signal"),
        standby.data.join("standby.signal"),
    )
    .unwrap();
    standby.start();
    let mut standby_client = standby.connect();
    standby.wait_until(
        "the standby to replay the archive",
        Duration::from_secs(120),
        || {
            standby_client
                .query_one("SELECT count(*) FROM rows", &[])
                .is_ok_and(|row| row.get::<_, i64>(0) == 120_000)
        },
    );
    proxy.set(Fault::Refuse);
    standby.wait_until(
        "the standby's warning about the outage",
        Duration::from_secs(60),
        || {
            standby
                .log_text()
                .contains("This standby asks again after wal_retrieve_retry_interval")
        },
    );
    // Through more than one give-up of wal-fetch, and still in recovery.
    std::thread::sleep(Duration::from_secs(8));
    let in_recovery: bool = standby_client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery, "{}", standby.log_text());
    assert!(!standby.log_text().contains("could not restore file"));
    proxy.set(Fault::Pass);
    drop(standby_client);
    standby.stop("fast");

    // Archive recovery: first up to the end of the third batch, then shut down there.
    let mut restored = restore_into("restored", 10);
    append_auto_conf(
        &restored.data,
        &format!(
            "recovery_target_lsn = '{}'\nrecovery_target_action = 'shutdown'",
            lsns[2]
        ),
    );
    let _ = try_start(&restored);
    wait_server_gone(&restored);
    assert!(
        restored.log_text().contains("shutdown at recovery target"),
        "{}",
        restored.log_text()
    );
    // Then on to the end of the archive, while the store is unreachable.
    append_auto_conf(&restored.data, "recovery_target_lsn = ''");
    proxy.set(Fault::Refuse);
    let _ = try_start(&restored);
    wait_server_gone(&restored);
    let log = restored.log_text();
    assert!(
        log.contains("trying again for up to 10 s")
            && log.contains("sc-backup: error: could not fetch WAL file"),
        "{log}"
    );
    for promotion in ["selected new timeline ID", "archive recovery complete"] {
        assert!(!log.contains(promotion), "recovery ended early: {log}");
    }
    // After the outage.
    proxy.set(Fault::Pass);
    restored.start();
    assert_eq!(restored_rows(&restored), 120_000);
    restored.stop("fast");
}
