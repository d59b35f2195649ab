//! Table-level point-in-time recovery (`sc-backup extract`) on real clusters: a table deleted
//! under load comes back as it was, in a new schema, while production keeps running; every
//! recovery target kind and every destination; refusals; Ctrl-C leaves nothing behind.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sc_backup_pg_test::postgres::Client;
use sc_backup_pg_test::{
    archiving_conf, as_postgres, pg_bindir, run_ok, start_primary, table_content, take_backup,
    Cluster, TestDir,
};

use sc_backup_pg_test::output_text as text;

fn extract(primary: &Cluster, dir: &TestDir, repository: &Path, args: &[&str]) -> Output {
    let sandboxes = dir.subdir("sandboxes");
    primary
        .cli(&dir.path, repository)
        .arg("extract")
        .args(args)
        .arg("--sandbox-dir")
        .arg(&sandboxes)
        .output()
        .unwrap()
}

fn extract_ok(primary: &Cluster, dir: &TestDir, repository: &Path, args: &[&str]) -> String {
    let output = extract(primary, dir, repository, args);
    assert!(
        output.status.success(),
        "extract {args:?}: {}",
        text(&output)
    );
    text(&output)
}

/// Nothing left of any sandbox.
fn assert_no_sandbox(dir: &TestDir) {
    let left = sc_backup_pg_test::sandboxes_under(&dir.subdir("sandboxes"));
    assert!(left.is_empty(), "sandboxes left: {left:?}");
    let processes: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.ok()?.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(&format!("{}/sandboxes", dir.path.display()))
                .then_some(cmdline)
        })
        .collect();
    assert!(processes.is_empty(), "processes left: {processes:?}");
}

#[test]
fn a_table_deleted_under_load_comes_back_as_it_was_in_a_new_schema() {
    let dir = TestDir::new("extract_under_load");
    let repository = dir.subdir("repo");
    let (primary, mut client) =
        start_primary(&dir, &archiving_conf(&repository, "max_wal_size = '1GB'"));
    client
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, name text);
             INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 100) g;
             CREATE TABLE missions (
                 id bigserial PRIMARY KEY,
                 user_id int REFERENCES users,
                 title text NOT NULL CHECK (length(title) > 0),
                 done boolean NOT NULL DEFAULT false);
             CREATE INDEX missions_title ON missions (title);
             CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
             CREATE TRIGGER missions_touch BEFORE UPDATE ON missions FOR EACH ROW EXECUTE FUNCTION touch();
             INSERT INTO missions (user_id, title)
                 SELECT (g % 100) + 1, 'mission ' || g FROM generate_series(1, 5000) g;",
        )
        .unwrap();
    run_ok(&mut primary.pgbench(&["-i", "-s", "2", "-q"]));
    take_backup(&mut client);

    // Production under load: pgbench, and a writer on the table itself.
    let mut load = primary
        .pgbench(&["-n", "-c", "2", "-T", "10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut writer_client = primary.connect();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                writer_client
                    .batch_execute(&format!(
                        "INSERT INTO missions (user_id, title) VALUES ({}, 'new {i}');
                         UPDATE missions SET done = NOT done WHERE id = {};",
                        i % 100 + 1,
                        i % 5000 + 1
                    ))
                    .unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    // The target: taken while the table is locked against writers, so its state at that
    // time is exactly what is read.
    let mut transaction = client.transaction().unwrap();
    // It also takes a transaction id, so that its commit record, written after the target and
    // before the lock is released, is where recovery stops: a writer's nextval() after the
    // release is WAL-logged at once (a sequence is not transactional) and would otherwise be
    // replayed if no other commit came between, leaving the sequence more than 32 ahead.
    transaction
        .batch_execute("LOCK TABLE missions IN SHARE MODE; SELECT txid_current()")
        .unwrap();
    let expected = {
        let row = transaction
            .query_one(
                "SELECT count(*), md5(string_agg(m::text, ',' ORDER BY m::text)) FROM missions m",
                &[],
            )
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, String>(1))
    };
    let sequence: i64 = transaction
        .query_one("SELECT last_value FROM missions_id_seq", &[])
        .unwrap()
        .get(0);
    let target: String = transaction
        .query_one("SELECT clock_timestamp()::text", &[])
        .unwrap()
        .get(0);
    transaction.commit().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    // The accident, while pgbench still runs.
    client.batch_execute("DELETE FROM missions").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    load.wait().unwrap();
    primary.switch_and_wait_archived(&mut client);
    let others_before = table_content(&mut client, "pgbench_accounts");

    let output = extract_ok(
        &primary,
        &dir,
        &repository,
        &[
            "--target-time",
            &target,
            "--database",
            "postgres",
            "--table",
            "public.missions",
            "--into-schema",
            "recovered",
        ],
    );
    assert!(
        output.contains(&format!("public.missions: {} rows", expected.0)),
        "{output}"
    );
    assert!(
        output.contains(
            "not copied: foreign key missions_user_id_fkey of public.missions (to public.users, not copied)"
        ),
        "{output}"
    );
    assert!(
        output.contains("not copied: trigger missions_touch of public.missions"),
        "{output}"
    );
    let example =
        "INSERT INTO public.missions SELECT * FROM recovered.missions ON CONFLICT DO NOTHING;";
    assert!(output.contains(example), "{output}");
    assert_no_sandbox(&dir);

    // Exactly the table at the target: rows, indexes, constraints, the sequence's value.
    assert_eq!(table_content(&mut client, "recovered.missions"), expected);
    let indexes: Vec<String> = client
        .query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'recovered' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(indexes, ["missions_pkey", "missions_title"]);
    let check: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'recovered.missions'::regclass AND contype = 'c'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(check, 1);
    // A sequence's WAL runs up to 32 values ahead of what it handed out (SEQ_LOG_VALS), and
    // recovery restores what was logged, as after any crash: never behind, at most 32 ahead.
    let recovered_sequence: i64 = client
        .query_one("SELECT last_value FROM recovered.missions_id_seq", &[])
        .unwrap()
        .get(0);
    assert!(
        (sequence..=sequence + 32).contains(&recovered_sequence),
        "sequence at the target {sequence}, recovered {recovered_sequence}"
    );
    // The live cluster ran on, its other tables untouched.
    assert_eq!(
        table_content(&mut client, "pgbench_accounts"),
        others_before
    );
    assert_eq!(table_content(&mut client, "missions").0, 0);

    // The printed example puts the rows back.
    client.batch_execute(example).unwrap();
    assert_eq!(table_content(&mut client, "missions"), expected);

    // An existing schema is refused, before anything is restored.
    let output = extract(
        &primary,
        &dir,
        &repository,
        &[
            "--target-time",
            &target,
            "--database",
            "postgres",
            "--table",
            "public.missions",
            "--into-schema",
            "recovered",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("schema recovered already exists in the live database"),
        "{}",
        text(&output)
    );
    assert!(
        !text(&output).contains("restoring backup"),
        "{}",
        text(&output)
    );
    assert_no_sandbox(&dir);
}

#[test]
fn every_recovery_target_kind_and_every_destination() {
    let dir = TestDir::new("extract_targets");
    let repository = dir.subdir("repo");
    let (primary, mut client) = start_primary(&dir, &archiving_conf(&repository, ""));
    let insert = |client: &mut Client, from: i32, to: i32| {
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT g, 'row ' || g FROM generate_series({from}, {to}) g"
            ))
            .unwrap();
    };
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, label text); CREATE TABLE other (x int)",
        )
        .unwrap();
    insert(&mut client, 1, 10);
    take_backup(&mut client);
    insert(&mut client, 11, 20);
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    insert(&mut client, 21, 30);
    client
        .batch_execute("SELECT pg_create_restore_point('before_31')")
        .unwrap();
    let mut transaction = client.transaction().unwrap();
    transaction
        .batch_execute("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(31, 40) g")
        .unwrap();
    let xid: String = transaction
        .query_one("SELECT txid_current()::text", &[])
        .unwrap()
        .get(0);
    transaction.commit().unwrap();
    insert(&mut client, 41, 50);
    primary.switch_and_wait_archived(&mut client);
    let common = ["--database", "postgres", "--table", "t"];
    let run = |target: &[&str], destination: &[&str]| {
        let mut args: Vec<&str> = target.to_vec();
        args.extend_from_slice(&common);
        args.extend_from_slice(destination);
        extract_ok(&primary, &dir, &repository, &args)
    };
    let count = |client: &mut Client, table: &str| -> i64 {
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    };

    // A new database: the table, and not the others.
    run(
        &["--target-lsn", &lsn],
        &["--into-database", "recovered_lsn"],
    );
    let mut recovered = postgres_client(&primary, "recovered_lsn");
    assert_eq!(count(&mut recovered, "t"), 20);
    let tables: i64 = recovered
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "only the chosen table is copied");
    run(
        &["--target-name", "before_31"],
        &["--into-schema", "by_name"],
    );
    assert_eq!(count(&mut client, "by_name.t"), 30);

    // Dump files, loaded back by hand into scratch databases.
    let gz = dir.path.join("t_xid.sql.gz");
    run(
        &["--target-xid", &xid],
        &["--to-file", gz.to_str().unwrap()],
    );
    let zst = dir.path.join("t_immediate.sql.zst");
    run(
        &["--target", "immediate"],
        &["--to-file", zst.to_str().unwrap()],
    );
    for (file, decompress, database, rows) in [
        (&gz, "gunzip -c", "from_gz", 40),
        (&zst, "zstd -dc", "from_zst", 10),
    ] {
        client
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .unwrap();
        run_ok(as_postgres("bash").arg("-c").arg(format!(
            "{decompress} {} | {}/psql -X -q -v ON_ERROR_STOP=1 -h {} -U postgres -d {database}",
            file.display(),
            pg_bindir().display(),
            primary.socket_dir.display()
        )));
        let mut loaded = postgres_client(&primary, database);
        assert_eq!(count(&mut loaded, "t"), rows, "{}", file.display());
    }
    // A file that exists is never replaced; a database that exists is refused.
    let output = extract(
        &primary,
        &dir,
        &repository,
        &[
            "--database",
            "postgres",
            "--table",
            "t",
            "--to-file",
            gz.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("already exists"),
        "{}",
        text(&output)
    );
    let output = extract(
        &primary,
        &dir,
        &repository,
        &[
            "--database",
            "postgres",
            "--table",
            "t",
            "--into-database",
            "recovered_lsn",
        ],
    );
    assert!(
        text(&output).contains("database recovered_lsn already exists in the live cluster"),
        "{}",
        text(&output)
    );
    // --keep leaves the sandbox running after the command, untied from it, and the sweep of
    // the next sandbox command (the refusal below) leaves it alone.
    let kept_dump = dir.path.join("kept.sql");
    let output = extract_ok(
        &primary,
        &dir,
        &repository,
        &[
            "--database",
            "postgres",
            "--table",
            "t",
            "--to-file",
            kept_dump.to_str().unwrap(),
            "--keep",
        ],
    );
    assert!(output.contains("the sandbox is kept running"), "{output}");
    let kept = sc_backup_pg_test::sandboxes_under(&dir.subdir("sandboxes"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept = &kept[0];
    let query_kept = || {
        as_postgres(pg_bindir().join("psql"))
            .args(["-X", "-A", "-t", "-h"])
            .arg(kept)
            .args(["-p", "5432", "-U", "postgres", "-d", "postgres"])
            .args(["-c", "SELECT count(*) FROM t"])
            .output()
            .unwrap()
    };
    // A table that is not there is named.
    let output = extract(
        &primary,
        &dir,
        &repository,
        &[
            "--database",
            "postgres",
            "--table",
            "public.nope",
            "--into-schema",
            "x",
        ],
    );
    assert!(
        text(&output).contains("--table public.nope matches no table of database postgres"),
        "{}",
        text(&output)
    );
    let answer = query_kept();
    assert!(answer.status.success(), "{}", text(&answer));
    assert!(
        String::from_utf8_lossy(&answer.stdout)
            .trim()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    run_ok(
        as_postgres(pg_bindir().join("pg_ctl"))
            .arg("-D")
            .arg(kept.join("data"))
            .args(["stop", "-m", "fast"]),
    );
    std::fs::remove_dir_all(kept).unwrap();
    assert_no_sandbox(&dir);
}

fn postgres_client(cluster: &Cluster, database: &str) -> Client {
    sc_backup_pg_test::postgres::Config::new()
        .host_path(&cluster.socket_dir)
        .user("postgres")
        .dbname(database)
        .connect(sc_backup_pg_test::postgres::NoTls)
        .unwrap()
}

/// The `sc-backup` process under `runuser` (the test runs as root).
fn cli_pid(runuser: u32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{runuser}/task/{runuser}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        if !Path::new(&format!("/proc/{runuser}")).exists() {
            return runuser as i32; // not under runuser
        }
        assert!(Instant::now() < deadline, "sc-backup did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_interrupted_extract_leaves_no_sandbox_no_process_and_nothing_live() {
    let dir = TestDir::new("extract_interrupted");
    let repository = dir.subdir("repo");
    let (primary, mut client) =
        start_primary(&dir, &archiving_conf(&repository, "max_wal_size = '1GB'"));
    client
        .batch_execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
        .unwrap();
    take_backup(&mut client);
    // Enough WAL after the backup that replaying it takes a while.
    for _ in 0..6 {
        client
            .batch_execute(
                "INSERT INTO t SELECT g FROM generate_series(1, 300000) g; DELETE FROM t WHERE id > 1000",
            )
            .unwrap();
    }
    let target: String = client
        .query_one("SELECT clock_timestamp()::text", &[])
        .unwrap()
        .get(0);
    client.batch_execute("INSERT INTO t VALUES (0)").unwrap();
    primary.switch_and_wait_archived(&mut client);

    // Interrupt once the sandbox server is up and replaying, as Ctrl-C would.
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let sandboxes = dir.subdir("sandboxes");
        let child = primary
            .cli(&dir.path, &repository)
            .args([
                "extract",
                "--target-time",
                &target,
                "--database",
                "postgres",
            ])
            .args([
                "--table",
                "t",
                "--into-schema",
                "interrupted",
                "--sandbox-dir",
            ])
            .arg(&sandboxes)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = cli_pid(child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let started = sc_backup_pg_test::sandboxes_under(&sandboxes)
                .iter()
                .any(|sandbox| sandbox.join("data/postmaster.pid").exists());
            if started {
                break;
            }
            assert!(Instant::now() < deadline, "the sandbox never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Safety: kill(2) on the sc-backup process this test started.
        unsafe { libc::kill(pid, signal) };
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(130), "{}", text(&output));
        assert!(text(&output).contains("interrupted"), "{}", text(&output));
        assert_no_sandbox(&dir);
        let schemas: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'interrupted'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(schemas, 0, "something was created in the live cluster");
    }
}
