//! How far the archived WAL can take a recovery: the newest archived transaction, read from
//! the WAL itself and checked against `pg_waldump`, and restores refusing targets beyond it.

use std::path::Path;
use std::process::Command;

use sc_backup_core::config::RawSettings;
use sc_backup_core::pg::lsn::Lsn;
use sc_backup_core::{Repository, Settings};
use sc_backup_pg_test::{
    archiving_conf, pg_bindir, run_ok, sc_backup, start_primary, take_backup, TestDir,
};

fn open_repository(path: &Path) -> Repository {
    Repository::open(
        &Settings::from_raw(&RawSettings {
            repository: Some(path.display().to_string()),
            ..Default::default()
        })
        .unwrap(),
    )
    .unwrap()
}

/// The newest commit or abort time (microseconds, as PostgreSQL prints them) and the end of
/// the last record, as `pg_waldump` reads `segment`.
fn pg_waldump(segment_file: &Path) -> (Option<String>, Lsn) {
    let output = run_ok(
        Command::new(pg_bindir().join("pg_waldump"))
            .env("TZ", "UTC")
            .arg(segment_file),
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut newest: Option<String> = None;
    let mut end = Lsn(0);
    for line in text.lines() {
        let field = |name: &str| {
            line.split(name)
                .nth(1)
                .map(|rest| rest.trim_start().split([',', ' ']).next().unwrap_or(""))
        };
        let (Some(lsn), Some(total)) = (field("lsn:"), line.split("len (rec/tot):").nth(1)) else {
            continue;
        };
        let total: u64 = total
            .split('/')
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        end = end.max(Lsn(lsn.parse::<Lsn>().unwrap().0 + total));
        if !line.starts_with("rmgr: Transaction") {
            continue;
        }
        let description = line.split("desc: ").nth(1).unwrap_or("");
        let kind = description.split([' ', ';']).next().unwrap_or("");
        if !["COMMIT", "ABORT", "COMMIT_PREPARED", "ABORT_PREPARED"].contains(&kind) {
            continue;
        }
        // "COMMIT 2026-11-24 19:48:46.561424 UTC; ..." or "COMMIT_PREPARED 724: 2026-...".
        let time = description
            .split(" UTC")
            .next()
            .and_then(|before| {
                before
                    .rsplit_once(": ")
                    .map(|(_, t)| t)
                    .or(before.split_once(' ').map(|(_, t)| t))
            })
            .unwrap()
            .to_string();
        if newest.as_ref().is_none_or(|n| time > *n) {
            newest = Some(time);
        }
    }
    (newest, end)
}

#[test]
fn the_newest_archived_transaction_is_what_pg_waldump_reads() {
    let dir = TestDir::new("archive_end");
    let repository = dir.subdir("repo");
    let (primary, mut client) = start_primary(
        &dir,
        &archiving_conf(&repository, "max_prepared_transactions = 2"),
    );
    client
        .batch_execute("CREATE TABLE t (x int, payload text); CHECKPOINT")
        .unwrap();
    // Small commits, a large transaction whose records span pages (full-page images after
    // the checkpoint), an abort and a two-phase commit.
    for i in 0..50 {
        client
            .batch_execute(&format!("INSERT INTO t VALUES ({i}, 'small')"))
            .unwrap();
    }
    client
        .batch_execute(
            "INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 20000) g",
        )
        .unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (-1, 'gone'); ROLLBACK")
        .unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (-2, 'prepared'); PREPARE TRANSACTION 'p'")
        .unwrap();
    client.simple_query("COMMIT PREPARED 'p'").unwrap();
    let segment = primary.switch_and_wait_archived(&mut client);

    let end = open_repository(&repository)
        .archive_end(None)
        .unwrap()
        .expect("an archive");
    assert_eq!(end.segment, segment);
    let file = dir.path.join(&segment);
    primary.wal_fetch(&segment, &file);
    let (expected_newest, expected_end) = pg_waldump(&file);
    let (newest, in_segment) = end.newest_transaction.expect("transactions found");
    assert_eq!(in_segment, segment);
    assert_eq!(
        Some(newest.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
        expected_newest
    );
    // pg_switch_wal()'s own record ends the segment's records.
    assert_eq!(end.end_of_records, Some(expected_end));
}

#[test]
fn restore_refuses_targets_the_archive_cannot_reach() {
    let dir = TestDir::new("unreachable_target");
    let repository = dir.subdir("repo");
    let (primary, mut client) = start_primary(&dir, &archiving_conf(&repository, ""));
    client
        .batch_execute("CREATE TABLE t AS SELECT 1 AS x")
        .unwrap();
    take_backup(&mut client);
    client.batch_execute("INSERT INTO t VALUES (2)").unwrap();
    primary.switch_and_wait_archived(&mut client);
    let end = open_repository(&repository)
        .archive_end(None)
        .unwrap()
        .unwrap();
    let (newest, _) = end.newest_transaction.clone().unwrap();
    // A commit after the last switch: in the server's current segment, not archived.
    std::thread::sleep(std::time::Duration::from_millis(50));
    client.batch_execute("INSERT INTO t VALUES (3)").unwrap();
    let now: String = client
        .query_one("SELECT clock_timestamp()::text", &[])
        .unwrap()
        .get(0);

    let target = dir.path.join("restored");
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "--pgdata", target.to_str().unwrap()];
        args.extend_from_slice(extra);
        sc_backup(&dir.path)
            .env("SC_BACKUP_REPOSITORY", &repository)
            .args(&args)
            .output()
            .unwrap()
    };
    let output = restore(&["--target-time", &now]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "recovery cannot reach --target-time {now}: the newest transaction in the archived WAL ended at {}",
            newest.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )),
        "{stderr}"
    );
    assert!(stderr.contains("pg_switch_wal()"), "{stderr}");
    assert!(!target.exists(), "something was written");

    let beyond = Lsn(end.end_of_records.unwrap().0 + 8);
    let output = restore(&["--target-lsn", &beyond.to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "recovery cannot reach --target-lsn {beyond}: the archived WAL ends at {}",
            end.end_of_records.unwrap()
        )),
        "{stderr}"
    );
    assert!(!target.exists(), "something was written");

    // At the newest archived transaction itself: not reachable either (recovery stops only at
    // a record later than the target); a microsecond before it: reachable.
    let at_newest = newest.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let output = restore(&["--target-time", &at_newest]);
    assert_eq!(output.status.code(), Some(2));
    let before = (newest - chrono::Duration::microseconds(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let output = restore(&["--target-time", &before]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
