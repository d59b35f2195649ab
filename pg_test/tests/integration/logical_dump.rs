//! Logical dumps in the playbook's format on real clusters: a dump taken under pgbench load
//! restores exactly the snapshot it was taken at; an existing database is refused, then
//! replaced with --force; a flipped byte is refused naming both digests and never half
//! restored; an encrypted dump opens with the stock age, zstd and sha256sum; sc_dump() from
//! SQL, listing, verification and deletion.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sc_backup_pg_test::postgres::{Client, GenericClient};
use sc_backup_pg_test::{
    archiving_conf, as_postgres, pg_bindir, run_ok, start_primary, table_content, Cluster, TestDir,
};

const TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_history",
    "pgbench_tellers",
];

use sc_backup_pg_test::output_text as text;

/// `sc-backup` in the data directory, so that unset settings (compression) are the cluster's.
fn cli(primary: &Cluster, _dir: &TestDir, repository: &Path, args: &[&str]) -> Output {
    primary
        .cli(&primary.data, repository)
        .args(args)
        .output()
        .unwrap()
}

fn cli_ok(primary: &Cluster, dir: &TestDir, repository: &Path, args: &[&str]) -> String {
    let output = cli(primary, dir, repository, args);
    assert!(output.status.success(), "{args:?}: {}", text(&output));
    text(&output)
}

fn connect_to(primary: &Cluster, database: &str) -> Client {
    sc_backup_pg_test::postgres::Config::new()
        .host_path(&primary.socket_dir)
        .user("postgres")
        .dbname(database)
        .connect(sc_backup_pg_test::postgres::NoTls)
        .unwrap()
}

fn database_exists(client: &mut Client, name: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

/// Row count and a digest of every row of each pgbench table.
fn contents(client: &mut impl GenericClient) -> Vec<(i64, String)> {
    TABLES
        .iter()
        .map(|table| table_content(client, table))
        .collect()
}

fn pgbench(primary: &Cluster, database: &str, args: &[&str]) -> Command {
    let mut command = as_postgres(pg_bindir().join("pgbench"));
    command
        .arg("-h")
        .arg(&primary.socket_dir)
        .args(["-U", "postgres"])
        .args(args)
        .arg(database);
    command
}

/// The one stored dump file of `database` in the repository.
fn dump_file(repository: &Path, database: &str) -> PathBuf {
    let files: Vec<PathBuf> = fs::read_dir(repository.join("dumps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&format!("{database}_full_"))
                && !name.ends_with(".sha256")
                && !name.ends_with(".meta")
        })
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&[byte[0] ^ 0x10]).unwrap();
}

#[test]
fn a_dump_under_load_restores_its_snapshot_and_refuses_what_it_must() {
    let dir = TestDir::new("dump_under_load");
    let repository = dir.subdir("repo");
    let (primary, mut client) = start_primary(
        &dir,
        &archiving_conf(&repository, "sc_backup.compression = gzip"),
    );
    client.batch_execute("CREATE DATABASE simcorp").unwrap();
    run_ok(&mut pgbench(&primary, "simcorp", &["-i", "-s", "5", "-q"]));
    // A large object: pg_dump writes its data between a BEGIN and a COMMIT of its own.
    connect_to(&primary, "simcorp")
        .batch_execute("SELECT lo_from_bytea(0, 'a large object')")
        .unwrap();

    // Under load: the dump is taken as of a snapshot the test exported and read itself.
    let mut load = pgbench(&primary, "simcorp", &["-n", "-c", "2", "-T", "15"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let mut reference_client = connect_to(&primary, "simcorp");
    let mut snapshot_holder = reference_client.transaction().unwrap();
    snapshot_holder
        .batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    let snapshot: String = snapshot_holder
        .query_one("SELECT pg_export_snapshot()", &[])
        .unwrap()
        .get(0);
    let reference = contents(&mut snapshot_holder);
    let dumped = cli_ok(
        &primary,
        &dir,
        &repository,
        &["dump", "--database", "simcorp", "--snapshot", &snapshot],
    );
    snapshot_holder.commit().unwrap();
    assert!(load.wait().unwrap().success());
    assert!(
        dumped.contains("dumped database simcorp into simcorp_full_"),
        "{dumped}"
    );
    assert!(
        dumped.contains("dumped roles and tablespaces into globals_"),
        "{dumped}"
    );
    assert!(
        reference[3].0 > 0 && reference[2].0 > 0,
        "the load wrote history rows"
    );

    // The playbook's three files; sha256sum -c checks the stored file as it lies.
    let stored = dump_file(&repository, "simcorp");
    let name = stored.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        regex_like_playbook_name(&name),
        "{name} is not <db>_full_<YYYYmmdd_HHMMSS>.sql.gz"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(format!("{}.meta", stored.display())).unwrap()).unwrap();
    for field in [
        "backup_name",
        "backup_type",
        "timestamp",
        "database",
        "host",
        "size_bytes",
        "checksum",
        "compression",
        "encryption",
        "duration_seconds",
    ] {
        assert!(meta.get(field).is_some(), "{field} missing from {meta}");
    }
    assert_eq!(meta["database"], "simcorp");
    assert_eq!(meta["compression"], "gzip");
    assert_eq!(meta["encryption"], false);
    assert_eq!(meta["size_bytes"], fs::metadata(&stored).unwrap().len());
    let check = run_ok(
        Command::new("sha256sum")
            .args(["-c", &format!("{name}.sha256")])
            .current_dir(repository.join("dumps")),
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains(": OK"));

    // Into a new database: exactly the snapshot, and the rows reported.
    let restored = cli_ok(
        &primary,
        &dir,
        &repository,
        &[
            "restore-dump",
            "latest",
            "--from-database",
            "simcorp",
            "--database",
            "simcorp_recovery",
        ],
    );
    let accounts_line = format!("public.pgbench_accounts: {} rows", reference[0].0);
    assert!(restored.contains(&accounts_line), "{restored}");
    assert_eq!(
        contents(&mut connect_to(&primary, "simcorp_recovery")),
        reference
    );
    let large_objects: i64 = connect_to(&primary, "simcorp_recovery")
        .query_one(
            "SELECT count(*) FROM pg_largeobject_metadata m WHERE lo_get(m.oid) = 'a large object'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(large_objects, 1);
    // pg_dump's own \restrict lines were in the dump (this client has them), and went.
    let plain = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | head -c 4096", stored.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&plain.stdout).contains("\\restrict "),
        "pg_dump wrote no \\restrict: the filter is not exercised"
    );

    // An existing database is refused, and left alone.
    let mut recovery_client = connect_to(&primary, "simcorp_recovery");
    recovery_client
        .batch_execute("DELETE FROM pgbench_accounts WHERE aid <= 1000")
        .unwrap();
    let refused = cli(
        &primary,
        &dir,
        &repository,
        &["restore-dump", &name, "--database", "simcorp_recovery"],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("already exists"),
        "{}",
        text(&refused)
    );
    assert!(text(&refused).contains("--force"), "{}", text(&refused));
    assert_eq!(
        contents(&mut recovery_client)[0].0,
        reference[0].0 - 1000,
        "the refused restore changed the database"
    );

    // --force replaces it (its connections are ended once the new copy is complete).
    cli_ok(
        &primary,
        &dir,
        &repository,
        &[
            "restore-dump",
            &name,
            "--database",
            "simcorp_recovery",
            "--force",
        ],
    );
    assert!(
        recovery_client.simple_query("SELECT 1").is_err(),
        "the old connection survived"
    );
    assert_eq!(
        contents(&mut connect_to(&primary, "simcorp_recovery")),
        reference
    );
    let large_objects: i64 = connect_to(&primary, "simcorp_recovery")
        .query_one(
            "SELECT count(*) FROM pg_largeobject_metadata m WHERE lo_get(m.oid) = 'a large object'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(large_objects, 1);
    // pg_dump's own \restrict lines were in the dump (this client has them), and went.
    let plain = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | head -c 4096", stored.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&plain.stdout).contains("\\restrict "),
        "pg_dump wrote no \\restrict: the filter is not exercised"
    );
    let leftovers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE '%sc_restore%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);

    // SQL sees it: listed with its kind, verified clean.
    let kind: String = client
        .query_one(
            "SELECT kind FROM sc_list_backups() WHERE backup_name = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(kind, "logical");
    let problems = client
        .query("SELECT * FROM sc_verify($1)", &[&name])
        .unwrap();
    assert!(problems.is_empty());

    // A flipped byte: refused before anything is created, naming both digests; with
    // --skip-verify the stream is read anyway, and a flip inside the compressed data cannot
    // decode (gzip's CRC-32): it fails loudly and leaves nothing.
    let original = fs::read(&stored).unwrap();
    flip_byte(&stored, original.len() as u64 / 2);
    let refused = cli(
        &primary,
        &dir,
        &repository,
        &["restore-dump", &name, "--database", "simcorp_flipped"],
    );
    let message = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{message}");
    assert!(message.contains("checksum mismatch"), "{message}");
    assert!(
        message.contains(meta["checksum"].as_str().unwrap()),
        "{message}"
    );
    let flipped_digest = hex_sha256(&fs::read(&stored).unwrap());
    assert!(message.contains(&flipped_digest), "{message}");
    assert!(!database_exists(&mut client, "simcorp_flipped"));
    let skipped = cli(
        &primary,
        &dir,
        &repository,
        &[
            "restore-dump",
            &name,
            "--database",
            "simcorp_flipped",
            "--skip-verify",
        ],
    );
    // Which of the two notices first depends on where the flip lands in the deflate stream
    // (the dump's bytes differ from run to run): the decoder (gzip's CRC-32 at the end of the
    // member) or psql (a COPY line the garbled bytes broke). Either way: a failure that says so,
    // and nothing committed.
    assert_eq!(skipped.status.code(), Some(2), "{}", text(&skipped));
    assert!(
        text(&skipped).contains("integrity check failed")
            || text(&skipped).contains("psql stopped at an error; nothing was committed"),
        "{}",
        text(&skipped)
    );
    assert!(
        !database_exists(&mut client, "simcorp_flipped"),
        "half restored"
    );
    let verify = cli(&primary, &dir, &repository, &["verify", &name]);
    assert_eq!(verify.status.code(), Some(2), "{}", text(&verify));
    let rows = client
        .query("SELECT problem FROM sc_verify($1)", &[&name])
        .unwrap();
    assert!(!rows.is_empty());
    // A flip of gzip's header timestamp (bytes 4-7), which no decoder reads: the stored file
    // is not the one recorded (refused), but its SQL is intact, so --skip-verify loads all of
    // it and says the checksum did not match.
    fs::write(&stored, &original).unwrap();
    flip_byte(&stored, 5);
    let refused = cli(
        &primary,
        &dir,
        &repository,
        &["restore-dump", &name, "--database", "simcorp_header"],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(!database_exists(&mut client, "simcorp_header"));
    let loaded = cli_ok(
        &primary,
        &dir,
        &repository,
        &[
            "restore-dump",
            &name,
            "--database",
            "simcorp_header",
            "--skip-verify",
        ],
    );
    assert!(loaded.contains("checksum"), "{loaded}");
    assert_eq!(
        contents(&mut connect_to(&primary, "simcorp_header")),
        reference
    );
    fs::write(&stored, &original).unwrap();
    assert!(cli_ok(&primary, &dir, &repository, &["verify", &name]).contains("OK"));

    // psql stopping half way (an object owned by a role the target lacks) commits nothing.
    client.batch_execute("CREATE ROLE dump_owner").unwrap();
    client.batch_execute("CREATE DATABASE owned").unwrap();
    let mut owned = connect_to(&primary, "owned");
    owned
        .batch_execute(
            "CREATE TABLE first (id int); INSERT INTO first VALUES (1);
             CREATE TABLE second (id int); ALTER TABLE second OWNER TO dump_owner;",
        )
        .unwrap();
    drop(owned);
    cli_ok(
        &primary,
        &dir,
        &repository,
        &["dump", "--database", "owned", "--no-globals"],
    );
    client.batch_execute("DROP DATABASE owned").unwrap();
    client.batch_execute("DROP ROLE dump_owner").unwrap();
    let failed = cli(
        &primary,
        &dir,
        &repository,
        &[
            "restore-dump",
            "latest",
            "--from-database",
            "owned",
            "--database",
            "owned",
        ],
    );
    assert_eq!(failed.status.code(), Some(2), "{}", text(&failed));
    assert!(text(&failed).contains("dump_owner"), "{}", text(&failed));
    assert!(!database_exists(&mut client, "owned"), "half restored");

    // From SQL: the database and the globals, then one removed on purpose.
    let rows = client
        .query(
            "SELECT dump_name, database, checksum FROM sc_dump('simcorp')",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    let sql_dump: String = rows[0].get(0);
    assert!(sql_dump.starts_with("simcorp_full_") && sql_dump.ends_with(".sql.gz"));
    let listed = cli_ok(&primary, &dir, &repository, &["list"]);
    assert!(listed.contains(&sql_dump), "{listed}");
    client
        .execute("SELECT sc_delete_backup($1)", &[&sql_dump])
        .unwrap();
    assert!(!repository.join("dumps").join(&sql_dump).exists());
    assert!(!repository
        .join("dumps")
        .join(format!("{sql_dump}.meta"))
        .exists());
    let audited: i64 = client
        .query_one(
            "SELECT count(*) FROM sc_backup.audit WHERE operation = 'dump' AND source = 'sql' AND outcome = 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(audited, 2);
}

fn regex_like_playbook_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("simcorp_full_") else {
        return false;
    };
    let (stamp, suffix) = rest.split_at(15.min(rest.len()));
    suffix == ".sql.gz"
        && stamp.len() == 15
        && stamp.as_bytes()[8] == b'_'
        && stamp
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 8 || b.is_ascii_digit())
}

fn hex_sha256(data: &[u8]) -> String {
    sc_backup_core::codec::Sha256Digest::of_reader(&mut &data[..])
        .unwrap()
        .0
        .to_hex()
}

#[test]
fn an_encrypted_dump_opens_with_the_stock_age_zstd_and_sha256sum() {
    const PASSPHRASE: &str = "dump test passphrase";
    let dir = TestDir::new("dump_encrypted");
    let repository = dir.subdir("repo");
    let (primary, mut client) = start_primary(
        &dir,
        &archiving_conf(
            &repository,
            &format!(
                "sc_backup.compression = zstd\n\
                 sc_backup.encryption = age\n\
                 sc_backup.encryption_passphrase = '{PASSPHRASE}'"
            ),
        ),
    );
    client
        .batch_execute(
            "CREATE TABLE patients (id int PRIMARY KEY, name text);
             INSERT INTO patients SELECT g, 'patient ' || g FROM generate_series(1, 5000) g;",
        )
        .unwrap();
    let row = client
        .query_one(
            "SELECT dump_name, checksum FROM sc_dump(globals => false)",
            &[],
        )
        .unwrap();
    let (name, checksum): (String, String) = (row.get(0), row.get(1));
    assert!(
        name.starts_with("postgres_full_") && name.ends_with(".sql.zst.age"),
        "{name}"
    );
    let stored = repository.join("dumps").join(&name);
    let bytes = fs::read(&stored).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    assert!(!String::from_utf8_lossy(&bytes).contains("patient 4242"));
    assert_eq!(hex_sha256(&bytes), checksum);
    run_ok(
        Command::new("sha256sum")
            .args(["-c", &format!("{name}.sha256")])
            .current_dir(repository.join("dumps")),
    );

    // The README's manual recovery: unwrap the key with the passphrase (age asks on a
    // terminal), then decrypt and decompress with the stock tools.
    let key_file = dir.path.join("key.txt");
    sc_backup_pg_test::unwrap_key_with_stock_age(&repository, PASSPHRASE, &key_file);
    let sql = run_ok(Command::new("sh").arg("-c").arg(format!(
        "age -d -i {} {} | zstd -d",
        key_file.display(),
        stored.display()
    )))
    .stdout;
    assert!(String::from_utf8_lossy(&sql).contains("patient 4242"));
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(format!("{}.meta", stored.display())).unwrap()).unwrap();
    assert_eq!(meta["sql_sha256"], hex_sha256(&sql));
    assert_eq!(meta["encryption"], true);

    // And sc-backup restores it with the passphrase from the cluster's configuration.
    let output = primary
        .cli(&primary.data, &repository)
        .args(["restore-dump", &name, "--database", "patients_copy"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("public.patients: 5000 rows"),
        "{}",
        text(&output)
    );
}

/// Writes a dump into an unencrypted repository as anyone who can write there could: plain SQL,
/// its .sha256 and a .meta with the right digests.
fn forge_dump(repository: &Path, database: &str, sql: &str) -> String {
    let name = format!("{database}_full_20261206_120000");
    let file = format!("{name}.sql");
    let dumps = repository.join("dumps");
    fs::create_dir_all(&dumps).unwrap();
    fs::write(dumps.join(&file), sql).unwrap();
    let digest = hex_sha256(sql.as_bytes());
    fs::write(
        dumps.join(format!("{file}.sha256")),
        format!("{digest}  {file}\n"),
    )
    .unwrap();
    let meta = serde_json::json!({
        "backup_name": name, "backup_type": "full", "timestamp": "20261206_120000",
        "database": database, "host": "elsewhere", "size_bytes": sql.len(), "checksum": digest,
        "compression": "none", "encryption": false, "duration_seconds": 1.0, "format": 1,
        "kind": "logical", "content": "database", "file": file, "sql_size_bytes": sql.len(),
        "sql_sha256": digest, "start_time": "2026-12-06T12:00:00Z",
        "stop_time": "2026-12-06T12:00:01Z", "pg_version_num": 170000,
        "system_identifier": "1", "pg_dump_version": "pg_dump (PostgreSQL) 17.0",
    });
    fs::write(
        dumps.join(format!("{file}.meta")),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();
    sc_backup_pg_test::run_ok(Command::new("chown").args(["-R", "postgres"]).arg(&dumps));
    name
}

/// A dump holding psql meta-commands (a shell command, here) gets none of them run; one that
/// commits on its own and is then killed mid-load never leaves part of a database under the
/// target's name.
#[test]
fn a_dump_runs_no_meta_command_and_never_leaves_half_a_database() {
    let dir = TestDir::new("hostile_dumps");
    let repository = dir.subdir("repo");
    let (primary, mut client) = start_primary(&dir, &archiving_conf(&repository, ""));
    // The repository exists once something is archived.
    primary.switch_and_wait_archived(&mut client);
    let marker = dir.path.join("meta-command-ran");
    // A shell command as it is; and after lifting a restriction of its own, as a dump with
    // pg_dump's \restrict lines could try.
    for (database, sql) in [
        (
            "shell",
            format!("CREATE TABLE t (x int);\n\\! touch {}\nSELECT 1;\n", marker.display()),
        ),
        (
            "unrestricted",
            format!(
                "--\n-- PostgreSQL database dump\n--\n\n\\restrict ForgedKey1\n\nCREATE TABLE t (x int);\n\\unrestrict ForgedKey1\n\\! touch {}\nSELECT 1;\n",
                marker.display()
            ),
        ),
    ] {
        let name = forge_dump(&repository, database, &sql);
        let refused = cli(
            &primary,
            &dir,
            &repository,
            &["restore-dump", &name, "--database", database],
        );
        assert!(!refused.status.success(), "{}", text(&refused));
        assert!(
            text(&refused).contains("psql stopped at an error"),
            "refused for another reason: {}",
            text(&refused)
        );
        assert!(!marker.exists(), "{database}: the dump ran a shell command");
        assert!(!database_exists(&mut client, database));
    }

    // Commits on its own, then takes its time: killed there, the target must not exist.
    let name = forge_dump(
        &repository,
        "halfway",
        "CREATE TABLE t AS SELECT 1 AS x;\nCOMMIT;\nSELECT pg_sleep(60);\n",
    );
    let mut running = primary
        .cli(&primary.data, &repository)
        .args(["restore-dump", &name, "--database", "halfway"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    primary.wait_until(
        "the dump's own COMMIT",
        std::time::Duration::from_secs(60),
        || {
            client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'",
                    &[],
                )
                .unwrap()
                .get::<_, i64>(0)
                == 1
        },
    );
    // runuser's child: the sc-backup process itself.
    let pid = fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        running.id(),
        running.id()
    ))
    .ok()
    .and_then(|children| children.split_whitespace().next()?.parse::<i32>().ok())
    .unwrap_or(running.id() as i32);
    // Safety: kill(2) on the sc-backup process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = running.wait();
    assert!(
        !database_exists(&mut client, "halfway"),
        "a killed restore left part of a database under the target's name"
    );
    client
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'")
        .unwrap();
}
