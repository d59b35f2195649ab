//! Several repositories: repository 1 is what PostgreSQL waits for; repository 2 gets every WAL
//! file from the scheduler worker's catch-up, goes on without it during an outage of its own
//! (archiving into repository 1 never stops), and catches up, verified, when it is back.

use std::path::Path;
use std::time::{Duration, Instant};

use sc_backup_pg_test::{archiving_conf, files_under, sc_backup, TestDir};

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
    let (primary, mut client) = sc_backup_pg_test::start_primary(
        &dir,
        &archiving_conf(
            &first,
            &format!(
                "sc_backup.repository2 = '{}'\nsc_backup.repository2_compression = 'gzip'",
                second.display()
            ),
        ),
    );
    client.batch_execute("CREATE TABLE t (n int)").unwrap();
    // A switch with nothing written since the last one switches nothing: write first.
    let mut next_segment = |client: &mut sc_backup_pg_test::postgres::Client| {
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
    let ready = std::fs::read_dir(primary.data.join("pg_wal/archive_status"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".ready")
        })
        .count();
    assert_eq!(ready, 0, "archiving waited for repository 2");

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
    for segment in &during {
        let fetch = |repository: &str| {
            let file = dir.path.join(format!("{segment}-{repository}"));
            let output = sc_backup(&primary.data)
                .args(["--repository", repository, "wal-fetch", segment])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                sc_backup_pg_test::output_text(&output)
            );
            std::fs::read(&file).unwrap()
        };
        assert!(
            fetch("2") == fetch("1"),
            "{segment} differs in repository 2"
        );
    }
}
