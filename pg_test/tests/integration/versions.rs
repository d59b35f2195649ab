//! What differs between PostgreSQL majors, on the major under test (`PG_CONFIG`): the archive
//! module's ABI and its lifecycle, an `archive_command` left beside `archive_library`, and
//! restores that need the server of the backup's own major.

use std::fs;
use std::time::Duration;

use sc_backup_core::pg::server_binaries::ServerBinaries;
use sc_backup_pg_test::postgres::Client;
use sc_backup_pg_test::{
    archiving_conf, as_postgres, files_under, objects_under, pg_bindir, pg_major, run_ok,
    sc_backup, start_primary, take_backup, Cluster, TestDir,
};

fn last_archived(client: &mut Client) -> Option<String> {
    client
        .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0)
}

#[test]
fn archive_module_starts_archives_and_stops_through_this_majors_abi() {
    let dir = TestDir::new("archive_abi");
    let repository = dir.subdir("repo");
    let (mut primary, mut client) = start_primary(&dir, &archiving_conf(&repository, ""));
    client.batch_execute("CREATE TABLE t (x int)").unwrap();
    for _ in 0..3 {
        // Something to switch away from: pg_switch_wal() on an empty segment does nothing.
        client.batch_execute("INSERT INTO t VALUES (1)").unwrap();
        primary.switch_and_wait_archived(&mut client);
    }
    let started = format!(
        "sc_backup: archive module started: WAL goes to {} (zstd, encryption none)",
        repository.display()
    );
    primary.wait_until("the startup line", Duration::from_secs(30), || {
        primary.log_text().contains(&started)
    });

    // A clean stop runs the shutdown callback: the look-ahead workers finish and the count
    // of files this archiver reported is logged.
    primary.stop("fast");
    let log = primary.log_text();
    let stopped = log
        .lines()
        .find_map(|line| {
            line.split("sc_backup: archive module stopped after archiving ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no shutdown line in the server log:\n{log}"));
    assert!(stopped >= 3, "only {stopped} files reported archived");
    // Nothing half-written is left behind by the workers (temporary names start with '.').
    let all = files_under(&repository);
    assert_eq!(
        all,
        objects_under(&repository),
        "temporary files left in the repository"
    );
}

#[test]
fn an_archive_command_left_beside_archive_library_is_explained() {
    let dir = TestDir::new("archive_command_conflict");
    let repository = dir.subdir("repo");
    let (mut primary, mut client) = start_primary(&dir, &archiving_conf(&repository, ""));
    primary.switch_and_wait_archived(&mut client);
    let ours = "archive_command is set";

    // As after a migration from another tool: its command is still configured.
    client
        .simple_query("ALTER SYSTEM SET archive_command = 'false'")
        .unwrap();
    client.simple_query("SELECT pg_reload_conf()").unwrap();
    // The scheduler worker says so after the reload.
    primary.wait_until("the worker's warning", Duration::from_secs(30), || {
        primary.log_text().contains(ours)
    });
    let backup = client.query("SELECT backup_name FROM sc_backup()", &[]);
    if pg_major() >= 16 {
        // PostgreSQL archives nothing while both are set; a backup could never complete.
        let error = backup.unwrap_err();
        let db_error = error.as_db_error().expect("a server error");
        assert!(
            db_error.message().contains(
                "archive_command is set as well as archive_library = 'sc_backup'; PostgreSQL archives no WAL at all"
            ),
            "{db_error:?}"
        );
        assert!(
            db_error
                .hint()
                .unwrap_or("")
                .contains("ALTER SYSTEM RESET archive_command"),
            "{db_error:?}"
        );
        let before = last_archived(&mut client);
        client.query_one("SELECT pg_switch_wal()", &[]).unwrap();
        primary.wait_until("PostgreSQL's own refusal", Duration::from_secs(30), || {
            let log = primary.log_text();
            log.contains("both \"archive_command\" and \"archive_library\" set")
                || log.contains("both archive_command and archive_library set")
        });
        assert_eq!(last_archived(&mut client), before, "archived regardless");
    } else {
        // 15 uses the library and ignores the command: archiving and backups go on.
        backup.unwrap();
        assert!(primary
            .log_text()
            .contains("archive_command is set but ignored"));
    }

    // The server start says it too (from the postmaster, before any archiving).
    primary.stop("fast");
    let before_restart = primary.log_text().len();
    primary.start();
    primary.wait_until("the startup warning", Duration::from_secs(30), || {
        primary.log_text()[before_restart..].contains(ours)
    });

    // Removing the command is all it takes; the archiver catches up.
    let mut client = primary.connect();
    client
        .simple_query("ALTER SYSTEM RESET archive_command")
        .unwrap();
    client.simple_query("SELECT pg_reload_conf()").unwrap();
    primary.switch_and_wait_archived(&mut client);
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS sc_backup")
        .unwrap();
    take_backup(&mut client);
}

/// An installed major other than the one under test (CI installs all four).
fn another_major() -> ServerBinaries {
    [15, 16, 17, 18]
        .into_iter()
        .filter(|major| *major != pg_major())
        .find_map(|major| ServerBinaries::find(major, None).ok())
        .expect(
            "another PostgreSQL major must be installed (scripts/install-deps.sh installs 15-18)",
        )
}

#[test]
fn restore_needs_the_server_of_the_backups_own_major() {
    let dir = TestDir::new("restore_major");
    let repository = dir.subdir("repo");
    let (primary, mut client) = start_primary(&dir, &archiving_conf(&repository, ""));
    client
        .batch_execute("CREATE TABLE kept AS SELECT generate_series(1, 1000) AS n")
        .unwrap();
    let backup = take_backup(&mut client);
    primary.switch_and_wait_archived(&mut client);
    let other = another_major();
    let cli = |args: &[&str]| {
        sc_backup(&dir.path)
            .env("SC_BACKUP_REPOSITORY", &repository)
            .args(args)
            .output()
            .unwrap()
    };

    // Binaries of another major, named explicitly: refused before anything is written.
    let target = dir.path.join("restored");
    let output = cli(&[
        "restore",
        "--pgdata",
        target.to_str().unwrap(),
        "--pg-bindir",
        other.bindir().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} holds PostgreSQL {}, but PostgreSQL {} is needed",
            other.bindir().display(),
            other.version(),
            pg_major()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("postgresql-{}", pg_major())),
        "{stderr}"
    );
    assert!(!target.exists(), "something was written");

    // A data directory of another major, even with --force: refused, left as it was.
    let foreign = dir.path.join("foreign");
    run_ok(
        as_postgres(other.program("initdb"))
            .arg("-D")
            .arg(&foreign)
            .args(["-U", "postgres", "--no-sync"]),
    );
    let output = cli(&["restore", "--pgdata", foreign.to_str().unwrap(), "--force"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "holds a PostgreSQL {} cluster, but backup \"{backup}\" is from PostgreSQL {}; nothing was written",
            other.major(),
            pg_major()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("incomplete"),
        "a refusal is not a failed restore: {stderr}"
    );
    assert_eq!(
        fs::read_to_string(foreign.join("PG_VERSION"))
            .unwrap()
            .trim(),
        other.major().to_string()
    );

    // Left to find the binaries itself, it names the right ones, and they start it.
    let output = cli(&[
        "restore",
        "--pgdata",
        target.to_str().unwrap(),
        "--target",
        "immediate",
        "--target-action",
        "promote",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let expected = ServerBinaries::find(pg_major(), None).unwrap();
    assert!(
        stderr.contains(&format!(
            "next: start the server with PostgreSQL {} in {}, e.g. {}",
            expected.version(),
            expected.bindir().display(),
            expected.program("pg_ctl").display()
        )),
        "{stderr}"
    );
    assert_eq!(
        ServerBinaries::at(&pg_bindir()).unwrap().major(),
        expected.major()
    );
    let mut restored = Cluster::adopt(&dir, "restored", target);
    restored.start();
    let mut restored_client = restored.connect();
    restored.wait_promoted(&mut restored_client);
    let count: i64 = restored_client
        .query_one("SELECT count(*) FROM kept", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 1000);
}
