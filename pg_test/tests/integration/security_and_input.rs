//! Nobody is let in, no secret leaks, and bad input is refused clearly with nothing changed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sc_backup_pg_test::postgres::{self, Client};
use sc_backup_pg_test::{
    archiving_conf, sc_backup, start_primary, take_backup, Cluster, S3Server, TestDir,
};

const PASSPHRASE: &str = "security suite passphrase 7f3a";

fn conf(extra: &str) -> String {
    format!(
        "sc_backup.compression = zstd\n\
         sc_backup.encryption = age\n\
         sc_backup.encryption_passphrase = '{PASSPHRASE}'\n\
         log_min_messages = debug1\n\
         log_statement = 'all'\n{extra}"
    )
}

fn connect_as(cluster: &Cluster, user: &str) -> Client {
    postgres::Config::new()
        .host_path(&cluster.socket_dir)
        .user(user)
        .dbname("postgres")
        .connect(postgres::NoTls)
        .unwrap()
}

fn error_message(result: Result<impl std::fmt::Debug, postgres::Error>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(error) => error
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_else(|| error.to_string()),
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        out.push(path.clone());
        if path.is_dir() {
            walk(&path, out);
        }
    }
}

#[test]
fn secrets_stay_hidden_and_functions_need_the_operator_role() {
    let dir = TestDir::new("security");
    let server = S3Server::start(&dir, "s3");
    let repository = dir.subdir("repo");
    // The passphrase in the secrets file (the way to keep it), the S3 secret key as a setting
    // (the old way, still accepted): neither may be readable by anyone but the OS user.
    let secrets_file = dir.path.join("secrets.conf");
    sc_backup_pg_test::write_as_postgres(
        &secrets_file,
        format!("encryption_passphrase = '{PASSPHRASE}'\n").as_bytes(),
    );
    fs::set_permissions(&secrets_file, fs::Permissions::from_mode(0o600)).unwrap();
    let settings = conf(&server.conf()).replace(
        &format!("sc_backup.encryption_passphrase = '{PASSPHRASE}'"),
        &format!("sc_backup.secrets_file = '{}'", secrets_file.display()),
    );
    assert!(!settings.contains(PASSPHRASE));
    let (mut cluster, mut admin) = start_primary(&dir, &archiving_conf(&repository, &settings));
    admin
        .batch_execute("CREATE ROLE mallory LOGIN; CREATE ROLE olivia LOGIN; GRANT sc_backup_operator TO olivia; CREATE ROLE monica LOGIN; GRANT pg_monitor TO monica;")
        .unwrap();
    // A setting of the old way is reported at server start.
    assert!(
        cluster
            .log_text()
            .contains("sc_backup.s3_secret_access_key is set as a configuration setting"),
        "{}",
        cluster.log_text()
    );
    let backup = take_backup(&mut admin);
    let secrets = [
        "sc_backup.encryption_passphrase",
        "sc_backup.s3_secret_access_key",
    ];
    let mut refusals = 0;

    for user in ["mallory", "olivia"] {
        let mut client = connect_as(&cluster, user);
        for secret in secrets {
            let message = error_message(client.simple_query(&format!("SHOW {secret}")));
            assert!(
                message.contains("permission denied") || message.contains("must be superuser"),
                "{user} SHOW {secret}: {message}"
            );
            let message = error_message(client.query_one("SELECT current_setting($1)", &[&secret]));
            assert!(
                message.contains("permission denied") || message.contains("must be superuser"),
                "{message}"
            );
            let visible = client
                .query(
                    "SELECT setting FROM pg_settings WHERE name = $1 AND setting IS NOT NULL",
                    &[&secret],
                )
                .unwrap();
            assert!(visible.is_empty(), "{user} reads {secret} in pg_settings");
            let all = client.simple_query("SHOW ALL").unwrap();
            assert!(!format!("{all:?}").contains(PASSPHRASE));
            assert!(!format!("{all:?}").contains(S3Server::SECRET_KEY));
            refusals += 3;
        }
    }

    // A monitoring role (pg_monitor, so pg_read_all_settings): may see that a secret is set,
    // never its value, by any way of reading settings.
    admin
        .batch_execute(&format!(
            "ALTER SYSTEM SET sc_backup.encryption_passphrase = '{PASSPHRASE}'; "
        ))
        .unwrap();
    admin.simple_query("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut monica = connect_as(&cluster, "monica");
    for secret in secrets {
        let mut seen = String::new();
        for query in [
            format!("SHOW {secret}"),
            format!("SELECT current_setting('{secret}')"),
        ] {
            match monica.simple_query(&query) {
                Ok(rows) => seen.push_str(&format!("{rows:?}")),
                Err(error) => seen.push_str(&error.to_string()),
            }
        }
        for query in [
            format!("SELECT setting, reset_val, boot_val FROM pg_settings WHERE name = '{secret}'"),
            format!("SELECT setting FROM pg_file_settings WHERE name = '{secret}'"),
            "SHOW ALL".to_string(),
        ] {
            match monica.simple_query(&query) {
                Ok(rows) => seen.push_str(&format!("{rows:?}")),
                Err(error) => seen.push_str(&error.to_string()),
            }
        }
        for value in [PASSPHRASE, S3Server::SECRET_KEY] {
            assert!(!seen.contains(value), "pg_monitor reads {secret}'s value");
        }
        refusals += 1;
    }
    admin
        .simple_query("ALTER SYSTEM RESET sc_backup.encryption_passphrase")
        .unwrap();
    admin.simple_query("SELECT pg_reload_conf()").unwrap();

    // Without the operator role: no function, no audit table.
    let mut mallory = connect_as(&cluster, "mallory");
    for call in [
        "SELECT * FROM sc_backup()",
        "SELECT * FROM sc_dump()",
        "SELECT * FROM sc_list_backups()",
        "SELECT * FROM sc_verify()",
        "SELECT * FROM sc_status()",
        "SELECT * FROM sc_schedule()",
        "SELECT * FROM sc_expire(true)",
        "SELECT * FROM sc_delete_backup('x')",
        "SELECT * FROM sc_backup.audit",
    ] {
        let message = error_message(mallory.simple_query(call));
        assert!(message.contains("permission denied"), "{call}: {message}");
        refusals += 1;
    }
    // With it: allowed.
    let mut olivia = connect_as(&cluster, "olivia");
    olivia
        .simple_query("SELECT * FROM sc_list_backups()")
        .unwrap();
    olivia
        .simple_query("SELECT count(*) FROM sc_backup.audit")
        .unwrap();

    // A superuser setting a secret with ALTER SYSTEM, statements logged: the statement and
    // the reload's "parameter changed" line must not carry the value.
    // A value different from postgresql.conf's, so that the reload logs a change.
    for statement in [
        "ALTER SYSTEM SET SC_BACKUP.S3_SECRET_ACCESS_KEY = 'rotated secret 5e1d'".to_string(),
        "SELECT pg_reload_conf()".to_string(),
        "ALTER SYSTEM RESET sc_backup.s3_secret_access_key".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        admin.simple_query(&statement).unwrap();
    }
    cluster.wait_until(
        "the reload's parameter change to be logged",
        std::time::Duration::from_secs(30),
        || {
            cluster
                .log_text()
                .contains("changed (value hidden by sc_backup)")
        },
    );
    // A statement that fails: its STATEMENT: line carries the value.
    admin.simple_query("BEGIN").unwrap();
    let failed = admin.simple_query(
        "ALTER SYSTEM SET sc_backup.encryption_passphrase = 'failed statement secret 0b9e'",
    );
    assert!(failed.is_err());
    admin.simple_query("ROLLBACK").unwrap();
    assert!(
        cluster
            .log_text()
            .contains("ALTER SYSTEM cannot run inside a transaction block"),
        "the failed statement was not logged: the check below would prove nothing"
    );

    // The backup's copy of the configuration (postgresql.conf names the S3 secret key) holds
    // no secret: restored, it is searched below with everything else.
    let restored = dir.path.join("restored");
    let restore = sc_backup(&dir.path)
        .env("SC_BACKUP_REPOSITORY", &repository)
        .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .args(["restore", "--backup", &backup, "--pgdata"])
        .arg(&restored)
        .args(["--archive-mode", "off", "--no-sync"])
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "{}",
        sc_backup_pg_test::output_text(&restore)
    );

    // Secrets appear nowhere: not in the server log (statements logged), the CLI's output,
    // error messages, or any repository object.
    let wrong = sc_backup(&dir.path)
        .env("SC_BACKUP_REPOSITORY", &repository)
        .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", "wrong passphrase 91c2")
        .args(["verify", &backup])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let mut outputs = vec![wrong];
    for args in [
        vec!["list"],
        vec!["verify", &backup],
        vec!["expire", "--dry-run"],
    ] {
        outputs.push(sc_backup(&cluster.data).args(&args).output().unwrap());
    }
    cluster.stop("fast");
    let log = fs::read(&cluster.log).unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains("statement hidden by sc_backup"),
        "the ALTER SYSTEM statement was not logged at all: the check below would prove nothing"
    );
    let mut searched = vec![("server log".to_string(), log)];
    for (index, output) in outputs.iter().enumerate() {
        searched.push((
            format!("CLI run {index}"),
            [output.stdout.clone(), output.stderr.clone()].concat(),
        ));
    }
    let mut objects = Vec::new();
    walk(&repository, &mut objects);
    for path in &objects {
        if path.is_file() {
            searched.push((path.display().to_string(), fs::read(path).unwrap()));
        }
    }
    for name in ["postgresql.conf", "postgresql.auto.conf"] {
        let path = restored.join(name);
        let text = fs::read(&path).unwrap();
        assert!(
            String::from_utf8_lossy(&text).contains("removed by sc_backup")
                || name == "postgresql.auto.conf",
            "{name}: the check would prove nothing"
        );
        searched.push((format!("the backup's {name}"), text));
    }
    for (place, bytes) in &searched {
        for secret in [
            PASSPHRASE,
            S3Server::SECRET_KEY,
            "wrong passphrase 91c2",
            "rotated secret 5e1d",
            "failed statement secret 0b9e",
        ] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{place} contains a secret"
            );
        }
    }

    // Local repository files are private to the postgres user.
    for path in &objects {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, expected, "{} has mode {mode:o}", path.display());
    }
    println!(
        "security: {refusals} refusals as expected, {} places searched for secrets, 0 found, {} repository paths 0600/0700",
        searched.len(),
        objects.len()
    );
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let dir = TestDir::new("bad_input");
    let repository = dir.subdir("repo");
    let (mut cluster, mut client) = start_primary(&dir, &archiving_conf(&repository, &conf("")));
    let backup = take_backup(&mut client);
    let auto_conf = || fs::read_to_string(cluster.data.join("postgresql.auto.conf")).unwrap();
    let before = auto_conf();
    let mut refused = 0;

    for (setting, value) in [
        ("sc_backup.compression", "lz4"),
        ("sc_backup.compression_level", "99"),
        ("sc_backup.encryption", "rot13"),
        ("sc_backup.repository", "ftp://nowhere"),
        ("sc_backup.daily_time", "25:61"),
        ("sc_backup.weekly_day", "someday"),
        ("sc_backup.schedule", "every now and then"),
        ("sc_backup.hourly_interval", "-5"),
        ("sc_backup.metrics_listen", "not an address"),
        ("sc_backup.retention_full", "-1"),
    ] {
        let message =
            error_message(client.simple_query(&format!("ALTER SYSTEM SET {setting} = '{value}'")));
        assert!(
            message.contains("invalid value") || message.contains("outside the valid range"),
            "{setting} = {value}: {message}"
        );
        refused += 1;
    }
    assert_eq!(auto_conf(), before, "a refused value was written");

    for (call, expected) in [
        ("SELECT * FROM sc_backup('bogus')", "bogus"),
        (
            "SELECT * FROM sc_verify('no-such-backup')",
            "no-such-backup",
        ),
        (
            "SELECT * FROM sc_delete_backup('no-such-backup')",
            "no-such-backup",
        ),
    ] {
        let message = error_message(client.simple_query(call));
        assert!(message.contains(expected), "{call}: {message}");
        refused += 1;
    }
    let listed: i64 = client
        .query_one("SELECT count(*) FROM sc_list_backups()", &[])
        .unwrap()
        .get(0);
    assert_eq!(listed, 1, "bad calls changed the repository");

    let target = dir.path.join("restored");
    let target_arg = target.to_str().unwrap().to_string();
    // A sandbox setting that would undo its isolation is refused before anything is written.
    let sandboxes = dir.path.join("sandboxes");
    std::fs::create_dir_all(&sandboxes).unwrap();
    let sandboxes_arg = sandboxes.to_str().unwrap().to_string();
    let extract = |setting: &'static str| {
        vec![
            "extract",
            "--database",
            "postgres",
            "--table",
            "public.t",
            "--to-file",
            "/tmp/sc_backup_never_written.sql",
            "--sandbox-dir",
            &sandboxes_arg,
            "--sandbox-setting",
            setting,
        ]
    };
    // Each refusal must say what it refuses: the value, or the conflict.
    for (args, says) in [
        (extract("port=5432"), "port=5432 is refused"),
        (extract("archive_mode=on"), "archive_mode=on is refused"),
        (
            extract("shared_preload_libraries=sc_backup"),
            "shared_preload_libraries=sc_backup is refused",
        ),
        (
            vec![
                "drill",
                "--sandbox-dir",
                &sandboxes_arg,
                "--sandbox-setting",
                "listen-addresses=*",
            ],
            "listen-addresses=* is refused",
        ),
        (vec!["drill", "--rto-target", "soon"], "soon"),
        (
            vec![
                "extract",
                "--database",
                "postgres",
                "--table",
                "public.t",
                "--into-schema",
                "a",
                "--into-database",
                "b",
            ],
            "cannot be used with",
        ),
    ] {
        let output = sc_backup(&cluster.data).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} does not say {says:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            std::fs::read_dir(&sandboxes).unwrap().count(),
            0,
            "{args:?}"
        );
        assert!(!Path::new("/tmp/sc_backup_never_written.sql").exists());
        refused += 1;
    }
    let restore = |extra: &[&'static str]| {
        let mut args = vec!["restore", "--pgdata", target_arg.as_str()];
        args.extend_from_slice(extra);
        args
    };
    for (args, says, status) in [
        (
            restore(&[
                "--target-time",
                "2026-01-01 00:00:00+00",
                "--target-lsn",
                "0/3000000",
            ]),
            "cannot be used with",
            2,
        ),
        (
            restore(&["--target-time", "yesterday-ish"]),
            "yesterday-ish",
            2,
        ),
        (restore(&["--target-lsn", "zz/zz"]), "zz/zz", 2),
        (
            restore(&["--target-time", "2001-01-01 00:00:00+00"]),
            "no backup ended before",
            2,
        ),
        (
            restore(&["--backup", "no-such-backup"]),
            "no-such-backup",
            2,
        ),
        (
            restore(&["--tablespace-map", "not-a-mapping"]),
            "not-a-mapping",
            2,
        ),
        // As restore_command: 255, so that PostgreSQL stops rather than ends recovery.
        (
            vec!["wal-fetch", "not-a-wal-file", "/tmp/x"],
            "not-a-wal-file",
            255,
        ),
        (vec!["expire", "--retention-days", "many"], "many", 2),
        (vec!["verify", "no-such-backup"], "no-such-backup", 2),
        (vec!["delete", "no-such-backup"], "no-such-backup", 2),
    ] {
        let mut command = sc_backup(&cluster.data);
        if args[0] == "restore" {
            // --pgdata names the (absent) target, so the settings come from the environment,
            // as on a host that lost its cluster: each case must reach its own refusal.
            command
                .env("SC_BACKUP_REPOSITORY", &repository)
                .env("SC_BACKUP_ENCRYPTION", "age")
                .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE);
        }
        let output = command.args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} does not say {says:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!target.exists(), "{args:?} created the target directory");
        refused += 1;
    }
    let output = sc_backup(&cluster.data).args(["list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains(&backup));

    // Each value valid, together unable to archive: said at the reload, and by sc_health()
    // before any WAL file fails.
    let failures: i64 = client
        .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    for statement in [
        "ALTER SYSTEM SET sc_backup.compression = 'gzip'",
        "ALTER SYSTEM SET sc_backup.compression_level = 12",
        "SELECT pg_reload_conf()",
    ] {
        client.simple_query(statement).unwrap();
    }
    cluster.wait_until(
        "the reload's warning about the combination",
        std::time::Duration::from_secs(30),
        || {
            cluster
                .log_text()
                .contains("these settings cannot archive WAL or take backups")
        },
    );
    let (healthy, detail): (bool, String) = {
        let row = client
            .query_one(
                "SELECT healthy, detail FROM sc_health() WHERE check_name = 'wal archiving'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(!healthy && detail.contains("cannot archive"), "{detail}");
    let failures_now: i64 = client
        .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    assert_eq!(failures_now, failures, "said only after archiving failed");
    refused += 1;
    for statement in [
        "ALTER SYSTEM RESET sc_backup.compression",
        "ALTER SYSTEM RESET sc_backup.compression_level",
        "SELECT pg_reload_conf()",
    ] {
        client.simple_query(statement).unwrap();
    }
    // A playbook variable left in a shell, outside the image: ignored, and said so.
    let elsewhere = dir.path.join("restored-everything");
    let output = sc_backup(&cluster.data)
        .env("SC_BACKUP_REPOSITORY", &repository)
        .env("SC_BACKUP_ENCRYPTION", "age")
        .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .env("TARGET_TIME", "2001-01-01 00:00:00")
        .env("FORCE_RESTORE", "true")
        .args(["restore", "--no-sync", "--archive-mode", "off", "--pgdata"])
        .arg(&elsewhere)
        .output()
        .unwrap();
    let said = sc_backup_pg_test::output_text(&output);
    assert!(output.status.success(), "{said}");
    for variable in ["TARGET_TIME", "FORCE_RESTORE"] {
        assert!(
            said.contains(&format!(
                "{variable} is set but ignored outside the sc_backup image"
            )),
            "{said}"
        );
    }
    let auto_conf = fs::read_to_string(elsewhere.join("postgresql.auto.conf")).unwrap();
    assert!(!auto_conf.contains("recovery_target_time"), "{auto_conf}");
    println!("bad input: {refused} refused with a message, 0 changes");
    cluster.stop("fast");
}
