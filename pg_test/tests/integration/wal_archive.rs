//! WAL archiving through `archive_library = 'sc_backup'` and back through
//! `sc-backup wal-fetch`, on real PostgreSQL clusters.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sc_backup_pg_test::{
    archiving_conf, files_under, sc_backup, write_as_postgres, Cluster, ClusterOptions, TestDir,
};

/// Every object file in the repository's WAL area.
fn stored_wal_objects(repository: &Path) -> Vec<PathBuf> {
    files_under(&repository.join("wal"))
}

fn archiver_stats(
    client: &mut sc_backup_pg_test::postgres::Client,
) -> (i64, Option<String>, i64, Option<String>) {
    let row = client
        .query_one(
            "SELECT archived_count, last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

fn wait_archived(cluster: &Cluster, wal_file: &str) {
    let mut client = cluster.connect();
    cluster.wait_until(
        &format!("{wal_file} to be archived"),
        Duration::from_secs(120),
        || {
            let (_, last, _, _) = archiver_stats(&mut client);
            last.is_some_and(|last| last.as_str() >= wal_file)
        },
    );
}

fn churn(client: &mut sc_backup_pg_test::postgres::Client, rows: i32) -> String {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS churn (id int, payload text);
             INSERT INTO churn SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 3) FROM generate_series(1, {rows}) g;
             UPDATE churn SET payload = md5(payload) WHERE id % 3 = 0;
             CHECKPOINT;
             UPDATE churn SET payload = md5(payload) WHERE id % 5 = 0;"
        ))
        .unwrap();
    client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0)
}

#[test]
fn archived_segments_come_back_byte_identical_and_corruption_is_caught() {
    let dir = TestDir::new("archive_round_trip");
    let repository = dir.subdir("repo");
    let restored = dir.subdir("restored");
    let mut cluster = Cluster::init(
        &dir,
        "primary",
        ClusterOptions {
            conf: &archiving_conf(
                &repository,
                "sc_backup.compression = zstd\n\
                 sc_backup.encryption = age\n\
                 sc_backup.encryption_passphrase = 'pg test passphrase'\n\
                 wal_keep_size = '2GB'",
            ),
            ..Default::default()
        },
    );
    cluster.start();
    let mut client = cluster.connect();
    let last = churn(&mut client, 150_000);
    wait_archived(&cluster, &last);

    let archived = cluster.done_files();
    assert!(
        archived.len() >= 3,
        "expected several archived segments, got {archived:?}"
    );
    for name in &archived {
        // No flags: the CLI finds the settings in the data directory's postgresql.conf,
        // exactly as it does when PostgreSQL runs it as restore_command.
        let fetched = cluster.wal_fetch(name, &restored.join(name));
        let original = fs::read(cluster.data.join("pg_wal").join(name)).unwrap();
        assert_eq!(original.len(), 16 << 20);
        assert!(fetched == original, "{name} differs from the original");
    }

    // What the repository holds is not WAL: every object is an age file.
    let objects = stored_wal_objects(&repository);
    assert_eq!(objects.len(), archived.len());
    for object in &objects {
        let bytes = fs::read(object).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n"),
            "{} is not encrypted",
            object.display()
        );
        assert!(object.to_string_lossy().ends_with(".zst.age"));
    }

    // An operator can recover a segment with the standard tools, as the README shows:
    // unwrap the repository key with the passphrase (age asks on a terminal), then decrypt and
    // decompress. The digest in the object's name is the segment's sha256sum.
    let key_file = dir.path.join("key.txt");
    sc_backup_pg_test::unwrap_key_with_stock_age(&repository, "pg test passphrase", &key_file);
    let object = &objects[0];
    let name = object.file_name().unwrap().to_string_lossy().into_owned();
    let manual = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i {} {} | zstd -d | sha256sum",
            key_file.display(),
            object.display()
        ))
        .output()
        .unwrap();
    let digest = String::from_utf8_lossy(&manual.stdout)[..64].to_string();
    assert_eq!(
        digest,
        name[25..89],
        "manual decryption of {name} did not give the original"
    );
    let original = fs::read(cluster.data.join("pg_wal").join(&name[..24])).unwrap();
    assert_eq!(
        digest,
        sc_backup_core::codec::Sha256Digest::of_reader(&mut original.as_slice())
            .unwrap()
            .0
            .to_hex()
    );

    // One flipped byte makes wal-fetch fail loudly, naming the object, and install nothing.
    let victim = &objects[objects.len() / 2];
    let mut bytes = fs::read(victim).unwrap();
    let position = bytes.len() * 2 / 3;
    bytes[position] ^= 0x01;
    fs::write(victim, &bytes).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy()[..24].to_string();
    let destination = restored.join(format!("{name}.again"));
    let output = sc_backup(&cluster.data)
        .args(["wal-fetch", &name])
        .arg(&destination)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // 255: PostgreSQL stops recovery (any status up to 125 would read as "not archived").
    assert_eq!(output.status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("integrity check failed"), "{stderr}");
    assert!(stderr.contains(&name), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(!destination.exists());

    // A segment that was never archived: exit 1 and no output (how recovery ends).
    let output = sc_backup(&cluster.data)
        .args(["wal-fetch", "0000000100000000000000FE"])
        .arg(restored.join("absent"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// PostgreSQL may offer a file again (a crash between archiving and writing `.done`).
/// Identical content is success; different content is refused and the original kept.
#[test]
fn re_archiving_identical_content_succeeds_and_different_content_is_refused() {
    let dir = TestDir::new("duplicate_archive");
    let repository = dir.subdir("repo");
    let restored = dir.subdir("restored");
    let mut cluster = Cluster::init(
        &dir,
        "primary",
        ClusterOptions {
            conf: &archiving_conf(&repository, "sc_backup.compression = gzip"),
            ..Default::default()
        },
    );
    cluster.start();
    let mut client = cluster.connect();
    let history = "00000009.history";
    let wal_path = cluster.data.join("pg_wal").join(history);
    let status = cluster.data.join("pg_wal/archive_status");
    let original = b"1\t0/3000000\tno recovery target specified\n".to_vec();
    let different = b"1\t0/5000000\tsomething else entirely\n".to_vec();

    let offer = |content: &[u8]| {
        write_as_postgres(&wal_path, content);
        let _ = fs::remove_file(status.join(format!("{history}.done")));
        write_as_postgres(&status.join(format!("{history}.ready")), b"");
    };
    let fetch = |destination: &Path| cluster.wal_fetch(history, destination);
    // Wakes the archiver, which otherwise rests up to a minute after failures.
    let nudge = |client: &mut sc_backup_pg_test::postgres::Client| {
        client.batch_execute("CREATE TABLE IF NOT EXISTS nudge (x int); INSERT INTO nudge VALUES (1); SELECT pg_switch_wal();").unwrap();
    };

    offer(&original);
    nudge(&mut client);
    cluster.wait_until(
        "the history file to be archived",
        Duration::from_secs(60),
        || status.join(format!("{history}.done")).exists(),
    );
    assert_eq!(fetch(&restored.join("first")), original);

    // Same content again: accepted without a second object.
    offer(&original);
    nudge(&mut client);
    cluster.wait_until(
        "the identical copy to be accepted",
        Duration::from_secs(60),
        || status.join(format!("{history}.done")).exists(),
    );
    let history_objects = || {
        fs::read_dir(repository.join("wal/history"))
            .unwrap()
            .count()
    };
    assert_eq!(history_objects(), 1);

    // Different content: refused, counted as a failure, logged clearly, original kept.
    let (_, _, failed_before, _) = archiver_stats(&mut client);
    offer(&different);
    nudge(&mut client);
    cluster.wait_until(
        "the different copy to be refused",
        Duration::from_secs(60),
        || {
            let (_, _, failed, last_failed) = archiver_stats(&mut client);
            failed > failed_before && last_failed.as_deref() == Some(history)
        },
    );
    assert!(!status.join(format!("{history}.done")).exists());
    assert!(
        status.join(format!("{history}.ready")).exists(),
        "PostgreSQL must keep the file for a retry"
    );
    let log = cluster.log_text();
    assert!(
        log.contains(&format!("sc_backup: could not archive \"{history}\": WAL file \"{history}\" is already archived with different content")),
        "{log}"
    );
    assert!(!log.contains("FATAL"), "the archiver must not die: {log}");
    assert_eq!(history_objects(), 1);
    assert_eq!(fetch(&restored.join("second")), original);

    // Putting the right content back lets archiving proceed.
    write_as_postgres(&wal_path, &original);
    nudge(&mut client);
    cluster.wait_until("archiving to resume", Duration::from_secs(90), || {
        status.join(format!("{history}.done")).exists()
    });
}

#[test]
fn missing_configuration_is_explained_and_archiving_catches_up_after_reload() {
    let dir = TestDir::new("unconfigured");
    let repository = dir.subdir("repo");
    let mut cluster = Cluster::init(
        &dir,
        "primary",
        ClusterOptions {
            conf: "shared_preload_libraries = 'sc_backup'\narchive_mode = on\narchive_library = 'sc_backup'\n",
            ..Default::default()
        },
    );
    cluster.start();
    let mut client = cluster.connect();
    let first = churn(&mut client, 20_000);
    cluster.wait_until("the configuration warning", Duration::from_secs(60), || {
        cluster
            .log_text()
            .contains("sc_backup: archiving is not configured: sc_backup.repository is not set")
    });
    assert_eq!(archiver_stats(&mut client).0, 0);

    // Bad values are refused when set, with the valid ones listed.
    let err = client
        .batch_execute("ALTER SYSTEM SET sc_backup.compression = 'lz4'")
        .unwrap_err();
    let err = err.as_db_error().unwrap();
    assert_eq!(
        err.message(),
        "invalid value for parameter \"sc_backup.compression\": \"lz4\""
    );
    assert_eq!(err.hint(), Some("Available values: none, gzip, zstd."));
    let err = client
        .batch_execute("ALTER SYSTEM SET sc_backup.repository = 'relative/path'")
        .unwrap_err();
    let err = err.as_db_error().unwrap();
    assert!(
        err.detail()
            .unwrap_or("")
            .contains("the path must be absolute"),
        "{err:?}"
    );
    let err = client
        .batch_execute("SET sc_backup.repository = '/tmp'")
        .unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("cannot be changed now"),
        "{err:?}"
    );

    // Configure it the way a DBA would; archiving catches up without losing a segment.
    // (One statement per call: ALTER SYSTEM refuses to run in a multi-statement batch.)
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET sc_backup.repository = '{}'",
            repository.display()
        ))
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
    let second = churn(&mut client, 20_000);
    wait_archived(&cluster, &second);
    // The segment that waited for the configuration is in the repository now (its `.done`
    // may already be gone: a checkpoint recycles archived segments).
    // The CLI reads postgresql.auto.conf too.
    cluster.wal_fetch(&first, &dir.path.join("fetched"));
}

fn archiver_rss_kib(client: &mut sc_backup_pg_test::postgres::Client) -> u64 {
    let pid: i32 = client
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'",
            &[],
        )
        .unwrap()
        .get(0);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn switch_segments(client: &mut sc_backup_pg_test::postgres::Client, count: u32) -> String {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS ticks (i int);
             DO $$ BEGIN FOR i IN 1..{count} LOOP
                 INSERT INTO ticks VALUES (i);
                 PERFORM pg_switch_wal();
             END LOOP; END $$;"
        ))
        .unwrap();
    // The block's commit record went into a new segment: close that one too, and wait for it.
    client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0)
}

#[test]
fn archiver_memory_stays_flat_over_hundreds_of_segments() {
    let dir = TestDir::new("archiver_memory");
    let repository = dir.subdir("repo");
    let mut cluster = Cluster::init(
        &dir,
        "primary",
        ClusterOptions {
            conf: &archiving_conf(
                &repository,
                "sc_backup.encryption = age\nsc_backup.encryption_passphrase = 'memory test'\nmax_wal_size = '64MB'",
            ),
            // Small segments: many archive calls for little disk.
            wal_segment_mb: Some(1),
            ..Default::default()
        },
    );
    cluster.start();
    let mut client = cluster.connect();
    // Warm up: the key is unwrapped, codec buffers reach their steady size.
    let warm = switch_segments(&mut client, 40);
    wait_archived(&cluster, &warm);
    let before = archiver_rss_kib(&mut client);
    let last = switch_segments(&mut client, 400);
    wait_archived(&cluster, &last);
    let after = archiver_rss_kib(&mut client);
    let (archived, _, failed, _) = archiver_stats(&mut client);
    assert!(archived >= 440, "archived {archived}");
    assert_eq!(failed, 0);
    eprintln!("archiver RSS: {before} KiB after warm-up, {after} KiB after 400 more segments");
    // A leak of 10 KiB per segment would add 4 MiB.
    assert!(
        after <= before + 4096,
        "archiver RSS grew from {before} KiB to {after} KiB"
    );
}
