//! WAL prefetch during recovery, on a real cluster: `sc-backup wal-fetch` serves segments
//! from the spool its prefetcher fills, ignores a spooled copy whose content is not the
//! repository's, and the spool is gone once recovery ends.

use std::fs;
use std::path::Path;
use std::time::Duration;

use sc_backup_core::pg::layout::SPOOL_DIRECTORY;
use sc_backup_core::wal::WalFileName;
use sc_backup_pg_test::{
    archiving_conf, output_text, sc_backup, start_primary, take_backup, Cluster, TestDir,
};

fn repository(path: &Path) -> sc_backup_core::Repository {
    let settings = sc_backup_core::Settings::from_raw(&sc_backup_core::RawSettings {
        repository: Some(path.display().to_string()),
        ..Default::default()
    })
    .unwrap();
    sc_backup_core::Repository::open(&settings).unwrap()
}

#[test]
fn recovery_reads_ahead_through_the_spool_and_never_trusts_a_bad_copy() {
    let dir = TestDir::new("wal_prefetch");
    let repository_dir = dir.subdir("repo");
    let (mut primary, mut client) = start_primary(
        &dir,
        &archiving_conf(&repository_dir, "sc_backup.compression = zstd"),
    );
    client.batch_execute("CREATE TABLE t (i int)").unwrap();
    take_backup(&mut client);
    // Thirty segments, a thousand rows in each; the target is after the fifteenth.
    let mut target = String::new();
    let mut planted_segment = String::new();
    for round in 1..=30 {
        client
            .batch_execute("INSERT INTO t SELECT g FROM generate_series(1, 1000) g")
            .unwrap();
        let row = client
            .query_one(
                "SELECT pg_current_wal_insert_lsn()::text, pg_walfile_name(pg_current_wal_insert_lsn())",
                &[],
            )
            .unwrap();
        if round == 15 {
            target = row.get(0);
        }
        if round == 5 {
            planted_segment = row.get(1);
        }
        if round < 30 {
            client.batch_execute("SELECT pg_switch_wal()").unwrap();
        }
    }
    primary.switch_and_wait_archived(&mut client);
    drop(client);
    primary.stop("fast");

    let pgdata = dir.path.join("restored");
    let output = sc_backup(&dir.path)
        .env("SC_BACKUP_REPOSITORY", &repository_dir)
        .args(["restore", "--pgdata", pgdata.to_str().unwrap()])
        .args(["--target-lsn", &target, "--target-action", "pause"])
        .args(["--archive-mode", "off"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let auto_conf = fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains(&format!("rm -rf {SPOOL_DIRECTORY}")),
        "{auto_conf}"
    );

    // A copy of a segment recovery needs, named with the repository's digest but holding
    // other bytes (a damaged spool after a crash): it must be checked, found wrong, replaced.
    let stored = repository(&repository_dir)
        .find_wal(&WalFileName::parse(&planted_segment).unwrap())
        .unwrap()
        .unwrap();
    let spool = pgdata.join(SPOOL_DIRECTORY);
    fs::create_dir(&spool).unwrap();
    let planted = spool.join(format!("{planted_segment}.{}", stored.sha256.to_hex()));
    fs::write(&planted, vec![0x5a; 16 << 20]).unwrap();
    // And one under a digest the repository does not have.
    let foreign = spool.join(format!("{planted_segment}.{}", "0".repeat(64)));
    fs::write(&foreign, b"not WAL").unwrap();
    // Filled from this repository (a spool of another one would be emptied unread).
    let location = repository_dir.display().to_string();
    fs::write(spool.join("repository"), &location).unwrap();
    let status = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&spool)
        .status()
        .unwrap();
    assert!(status.success());

    let mut restored = Cluster::adopt(&dir, "restored", pgdata.clone());
    restored.start();
    let mut restored_client = restored.connect();
    restored.wait_until(
        "recovery paused at the target",
        Duration::from_secs(120),
        || {
            restored_client
                .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
                .unwrap()
                .get::<_, String>(0)
                == "paused"
        },
    );
    let rows: i64 = restored_client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 15_000, "the state at the target");
    let served: u64 = fs::read_to_string(spool.join("served"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(served >= 1, "no segment came from the spool");
    assert!(
        !planted.exists() && !foreign.exists(),
        "bad copies left in the spool"
    );

    restored_client
        .batch_execute("SELECT pg_wal_replay_resume()")
        .unwrap();
    restored.wait_promoted(&mut restored_client);
    let rows: i64 = restored_client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 15_000);
    restored.wait_until("the spool removed", Duration::from_secs(90), || {
        !spool.exists()
    });
    drop(restored_client);
    restored.stop("fast");
}
