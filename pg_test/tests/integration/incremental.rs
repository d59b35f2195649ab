//! Incremental and differential backups on a real cluster: a chain taken between waves of
//! pgbench load and the changes that move, shrink, rewrite, copy and drop relation files;
//! each backup of the chain, and a point between two of them, restored and compared table by
//! table with the live cluster at that moment; damage in the middle of the chain found by
//! verify and restore; deleting a parent refused. The repository is encrypted, as production
//! ones with PII are.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sc_backup_core::backup::{read_manifest, read_metadata, Stored};
use sc_backup_pg_test::postgres::Client;
use sc_backup_pg_test::{
    archiving_conf, cluster_content, output_text, run_ok, sc_backup, start_primary, Cluster,
    TestDir,
};

type Content = BTreeMap<String, (i64, String)>;

const PASSPHRASE: &str = "incremental test passphrase";

fn backup(client: &mut Client, kind: &str) -> String {
    client
        .query_one("SELECT backup_name FROM sc_backup($1)", &[&kind])
        .unwrap()
        .get(0)
}

/// Statements one at a time (CREATE DATABASE and VACUUM refuse a multi-statement batch).
fn execute_each(client: &mut Client, statements: &[&str]) {
    for statement in statements {
        client
            .batch_execute(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

fn cli(dir: &Path, repository: &Path, args: &[&str]) -> std::process::Output {
    sc_backup(dir)
        .env("SC_BACKUP_REPOSITORY", repository)
        .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .args(args)
        .output()
        .unwrap()
}

fn cli_ok(dir: &Path, repository: &Path, args: &[&str]) -> String {
    let output = cli(dir, repository, args);
    assert!(
        output.status.success(),
        "sc-backup {args:?}: {}",
        output_text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn pgbench(primary: &Cluster, transactions: &str) {
    run_ok(
        primary
            .pgbench(&["-n", "-t", transactions, "-c", "2", "-j", "2"])
            .stdout(std::process::Stdio::null()),
    );
}

/// The object holding `path` in `backup`, and how it is stored.
fn stored_object(repository: &Path, backup: &str, path: &str) -> (PathBuf, Stored) {
    // The repository of this test is not encrypted (a reader configured for encryption now
    // refuses one that says it is not).
    let settings = sc_backup_core::Settings::from_raw(&sc_backup_core::RawSettings {
        repository: Some(repository.display().to_string()),
        encryption_passphrase: Some(sc_backup_core::config::Secret::new(PASSPHRASE)),
        ..Default::default()
    })
    .unwrap();
    let repo = sc_backup_core::Repository::open(&settings).unwrap();
    let metadata = read_metadata(&repo, backup).unwrap();
    let manifest = read_manifest(&repo, &metadata).unwrap();
    let entry = manifest.entries.iter().find(|e| e.path == path).unwrap();
    let object = entry.object.clone().expect("stored");
    (
        repository.join("backups").join(backup).join(object),
        entry.stored,
    )
}

#[test]
fn a_chain_restores_each_backup_and_a_point_between_them_exactly() {
    let dir = TestDir::new("incremental_chain");
    let repository = dir.subdir("repo");
    let (mut primary, mut client) = start_primary(
        &dir,
        &archiving_conf(
            &repository,
            "sc_backup.compression = zstd\nautovacuum = off",
        ),
    );
    let tablespace = dir.subdir("tablespace");
    client
        .batch_execute(&format!(
            "CREATE TABLESPACE extra LOCATION '{}'",
            tablespace.display()
        ))
        .unwrap();
    run_ok(
        primary
            .pgbench(&["-i", "-s", "5", "-q"])
            .stdout(std::process::Stdio::null()),
    );
    client
        .batch_execute(
            "CREATE TABLE shrink (id int, pad text);
             INSERT INTO shrink SELECT g, repeat('s', 200) FROM generate_series(1, 20000) g;
             CREATE TABLE rewritten (id int PRIMARY KEY, note text);
             INSERT INTO rewritten SELECT g, 'first' FROM generate_series(1, 5000) g;
             CREATE TABLE moved (id int PRIMARY KEY, note text);
             INSERT INTO moved SELECT g, 'here' FROM generate_series(1, 5000) g;",
        )
        .unwrap();
    execute_each(
        &mut client,
        &["CREATE DATABASE seeded", "CREATE DATABASE doomed"],
    );
    for (database, table) in [("seeded", "s"), ("doomed", "d")] {
        primary
            .connect_to(database)
            .batch_execute(&format!(
                "CREATE TABLE {table} (id int, note text);
                 INSERT INTO {table} SELECT g, md5(g::text) FROM generate_series(1, 3000) g;"
            ))
            .unwrap();
    }

    // With no backup to build on, an incremental one is a full backup (and says so).
    let full = backup(&mut client, "incremental");
    assert!(full.contains("_full_"), "{full}");
    let mut expected: Vec<(String, Content)> = vec![(full.clone(), cluster_content(&primary))];

    // Wave 1: load, a relation truncated in place by VACUUM, one rewritten, a database copied
    // file by file from a template (its pages keep their old LSNs), one dropped.
    pgbench(&primary, "300");
    execute_each(
        &mut client,
        &[
            "DELETE FROM shrink WHERE id > 5000",
            "VACUUM shrink",
            "VACUUM FULL rewritten",
            "CREATE DATABASE copied TEMPLATE seeded STRATEGY file_copy",
            "DROP DATABASE doomed",
        ],
    );
    let first = backup(&mut client, "incremental");
    assert!(first.contains("_incremental_"), "{first}");
    expected.push((first.clone(), cluster_content(&primary)));

    // Wave 2: the shrunk relation grows again, a table moves to the tablespace; then a
    // target time with nothing in flight.
    pgbench(&primary, "300");
    client
        .batch_execute(
            "INSERT INTO shrink SELECT g, repeat('t', 200) FROM generate_series(5001, 15000) g;
             ALTER TABLE moved SET TABLESPACE extra;",
        )
        .unwrap();
    let at_target = cluster_content(&primary);
    let target: String = client
        .query_one("SELECT clock_timestamp()::text", &[])
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_millis(50));

    // Wave 3, a second incremental; a database moved to the tablespace, then a differential.
    pgbench(&primary, "300");
    client
        .batch_execute("UPDATE rewritten SET note = 'second' WHERE id % 3 = 0")
        .unwrap();
    let second = backup(&mut client, "incremental");
    expected.push((second.clone(), cluster_content(&primary)));
    client
        .batch_execute("ALTER DATABASE seeded SET TABLESPACE extra")
        .unwrap();
    pgbench(&primary, "100");
    let differential = backup(&mut client, "differential");
    assert!(differential.contains("_differential_"), "{differential}");
    expected.push((differential.clone(), cluster_content(&primary)));

    let listed: Vec<(String, String, Option<String>, i32, i64)> = client
        .query(
            "SELECT backup_name, method, parent, chain_length, stored_bytes FROM sc_list_backups() ORDER BY start_time",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let shape: Vec<(&str, &str, Option<&str>, i32)> = listed
        .iter()
        .map(|(name, method, parent, length, _)| {
            (name.as_str(), method.as_str(), parent.as_deref(), *length)
        })
        .collect();
    assert_eq!(
        shape,
        [
            (full.as_str(), "full", None, 1),
            (first.as_str(), "incremental", Some(full.as_str()), 2),
            (second.as_str(), "incremental", Some(first.as_str()), 3),
            (
                differential.as_str(),
                "differential",
                Some(full.as_str()),
                2
            ),
        ]
    );
    // A few hundred transactions change a small part of a 75 MB database.
    let (full_bytes, second_bytes) = (listed[0].4, listed[2].4);
    assert!(
        second_bytes * 4 < full_bytes,
        "incremental {second_bytes} bytes, full {full_bytes}"
    );
    let problems: i64 = client
        .query_one("SELECT count(*) FROM sc_verify($1)", &[&second])
        .unwrap()
        .get(0);
    assert_eq!(problems, 0, "sc_verify({second})");

    // The scheduler's hourly backups as incremental ones: a bad type is refused, then one
    // scheduled run builds on the differential backup.
    let refused = client
        .batch_execute("ALTER SYSTEM SET sc_backup.hourly_type = 'snapshot'")
        .unwrap_err();
    let refused = refused.as_db_error().unwrap();
    assert!(
        refused
            .hint()
            .unwrap_or("")
            .contains("full, incremental, differential"),
        "{refused:?}"
    );
    execute_each(
        &mut client,
        &[
            "ALTER SYSTEM SET sc_backup.hourly_type = 'incremental'",
            "ALTER SYSTEM SET sc_backup.hourly_interval = '2s'",
            "ALTER SYSTEM SET sc_backup.scheduler = on",
            "SELECT pg_reload_conf()",
        ],
    );
    let mut scheduled: Option<(String, String, Option<String>)> = None;
    primary.wait_until("a scheduled incremental backup", Duration::from_secs(90), || {
        scheduled = client
            .query_opt(
                "SELECT backup_name, method, parent FROM sc_list_backups() WHERE backup_type = 'hourly'",
                &[],
            )
            .unwrap()
            .map(|row| (row.get(0), row.get(1), row.get(2)));
        scheduled.is_some()
    });
    execute_each(
        &mut client,
        &[
            "ALTER SYSTEM SET sc_backup.hourly_interval = 0",
            "SELECT pg_reload_conf()",
        ],
    );
    let (scheduled_name, method, parent) = scheduled.unwrap();
    assert_eq!(
        (method.as_str(), parent.as_deref()),
        ("incremental", Some(differential.as_str())),
        "{scheduled_name}"
    );

    let accounts: String = client
        .query_one("SELECT pg_relation_filepath('pgbench_accounts')", &[])
        .unwrap()
        .get(0);
    primary.switch_and_wait_archived(&mut client);
    drop(client);
    primary.stop("fast");

    let oid = fs::read_dir(primary.data.join("pg_tblspc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .next()
        .unwrap();
    // (Short directory names: the socket path must stay within 107 bytes.)
    let restore = |name: &str, flags: &[&str]| -> Content {
        let pgdata = dir.path.join(format!("restored-{name}"));
        let mapping = format!(
            "{oid}={}",
            dir.subdir(&format!("tablespace-{name}")).display()
        );
        let mut args = vec![
            "restore",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--target-action",
            "promote",
            "--archive-mode",
            "off",
            "--tablespace-map",
            &mapping,
        ];
        args.extend_from_slice(flags);
        cli_ok(&dir.path, &repository, &args);
        let mut cluster = Cluster::adopt(&dir, &format!("restored-{name}"), pgdata);
        cluster.start();
        let mut restored_client = cluster.connect();
        cluster.wait_promoted(&mut restored_client);
        let content = cluster_content(&cluster);
        drop(restored_client);
        cluster.stop("immediate");
        content
    };

    for (index, (name, content)) in expected.iter().enumerate() {
        assert!(
            cli_ok(&dir.path, &repository, &["verify", name]).contains("OK"),
            "verify {name}"
        );
        let label = format!("b{index}");
        let restored = restore(&label, &["--backup", name, "--target", "immediate"]);
        assert_eq!(&restored, content, "restore of {name}");
    }
    // Point in time between the two incremental backups: restored from the first.
    let restored = restore("target", &["--target-time", &target]);
    assert_eq!(restored, at_target, "restore to {target}");

    // One page stream of the middle backup damaged: verify of the newest names that object,
    // restore of the newest refuses it.
    let (damaged, stored) = stored_object(&repository, &first, &accounts);
    assert_eq!(stored, Stored::Pages);
    let mut bytes = fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::set_permissions(
        &damaged,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    fs::write(&damaged, &bytes).unwrap();
    let object = damaged
        .strip_prefix(&repository)
        .unwrap()
        .display()
        .to_string();
    let verified = cli(&dir.path, &repository, &["verify", &second]);
    assert!(!verified.status.success());
    assert!(
        output_text(&verified).contains(&object),
        "{}",
        output_text(&verified)
    );
    let pgdata = dir.path.join("restored-damaged");
    let refused = cli(
        &dir.path,
        &repository,
        &[
            "restore",
            "--backup",
            &second,
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--tablespace-map",
            &format!("{oid}={}", dir.subdir("tablespace-damaged").display()),
        ],
    );
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains(&object),
        "{}",
        output_text(&refused)
    );
    // The differential backup does not go through the damaged one.
    assert!(cli_ok(&dir.path, &repository, &["verify", &differential]).contains("OK"));

    // Deleting the full backup alone is refused, naming what depends on it; with its
    // dependents it goes, newest first.
    let refused = cli(&dir.path, &repository, &["delete", &full]);
    assert!(!refused.status.success());
    let message = output_text(&refused);
    for dependent in [&first, &second, &differential, &scheduled_name] {
        assert!(message.contains(dependent.as_str()), "{message}");
    }
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    let deleted = cli_ok(
        &dir.path,
        &repository,
        &["delete", &first, "--with-dependents"],
    );
    assert!(
        deleted.contains(&second) && deleted.contains(&first),
        "{deleted}"
    );
    let left = cli_ok(&dir.path, &repository, &["list", "--json"]);
    assert!(
        left.contains(&full) && left.contains(&differential) && !left.contains(&second),
        "{left}"
    );
}
