//! The scheduler worker on a real cluster: schedules applied on SIGHUP, one backup at a time,
//! retries with the failures counted, expiry after each backup, the audit trail, the metrics
//! endpoint scraped over HTTP, restart by the postmaster and a prompt fast shutdown.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sc_backup_pg_test::postgres::Client;
use sc_backup_pg_test::{archiving_conf, free_port, sc_backup, Cluster, ClusterOptions, TestDir};

/// The advisory lock key sc_backup() and the scheduler take ('scbackup').
const BACKUP_LOCK_KEY: i64 = 0x7363_6261_636b_7570;

fn scrape(port: u16) -> prometheus_parse::Scrape {
    let response = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics")).unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert!(response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = response.text().unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).unwrap()
}

fn value(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    backup_type: Option<&str>,
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && s.labels.get("type") == backup_type)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{metric} is not a plain value"),
        })
}

fn scheduled_backups(client: &mut Client, outcome: &str) -> Vec<String> {
    client
        .query(
            "SELECT coalesce(backup_name, '') FROM sc_backup.audit
              WHERE operation = 'backup' AND source = 'scheduler' AND outcome = $1
              ORDER BY started_at",
            &[&outcome],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn listed_backups(client: &mut Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT backup_name, pg_walfile_name(start_lsn::pg_lsn) FROM sc_list_backups()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Segment names (24 hex digits) of the WAL objects in a local repository.
fn archived_segments(repository: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for dir in fs::read_dir(repository.join("wal")).unwrap() {
        let dir = dir.unwrap().path();
        if dir.file_name().unwrap() == "history" {
            continue;
        }
        for object in fs::read_dir(&dir).unwrap() {
            let name = object.unwrap().file_name().to_string_lossy().into_owned();
            if name.len() > 24 && name.as_bytes()[24] == b'-' {
                names.push(name[..24].to_string());
            }
        }
    }
    names.sort();
    names
}

fn reload(client: &mut Client, setting: &str, value: &str) {
    client
        .batch_execute(&format!("ALTER SYSTEM SET {setting} = '{value}'"))
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
}

fn worker_pid(client: &mut Client) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'sc_backup scheduler'",
            &[],
        )
        .unwrap()
        .map(|row| row.get(0))
}

fn chmod_recursive(path: &Path, mode: &str) {
    let status = Command::new("chmod")
        .args(["-R", mode])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn scheduled_backups_retries_expiry_audit_metrics_and_shutdown() {
    let dir = TestDir::new("scheduler");
    let repository = dir.subdir("repo");
    let port = free_port();
    let conf = archiving_conf(
        &repository,
        &format!(
            "sc_backup.scheduler = on\n\
             sc_backup.hourly_interval = '1h'\n\
             sc_backup.daily_time = ''\n\
             sc_backup.retry_delay = '2s'\n\
             sc_backup.retention_days = 0\n\
             sc_backup.retention_full = 2\n\
             sc_backup.metrics_listen = '127.0.0.1:{port}'"
        ),
    );
    let mut primary = Cluster::init(
        &dir,
        "primary",
        ClusterOptions {
            conf: &conf,
            ..Default::default()
        },
    );
    primary.start();
    let mut client = primary.connect();
    client
        .batch_execute(
            "CREATE EXTENSION sc_backup; CREATE TABLE t AS SELECT generate_series(1, 10000) AS x",
        )
        .unwrap();

    // The schedule from the settings: hourly, next run an hour after the worker started.
    primary.wait_until("the scheduler", Duration::from_secs(30), || {
        worker_pid(&mut client).is_some()
    });
    let row = client
        .query_one(
            "SELECT schedule, rule, extract(epoch FROM next_run - now())::float8, consecutive_failures FROM sc_schedule()",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "hourly");
    assert_eq!(row.get::<_, String>(1), "every 1h");
    let wait: f64 = row.get(2);
    assert!((3000.0..=3600.0).contains(&wait), "next run in {wait} s");
    assert_eq!(row.get::<_, i32>(3), 0);

    // SIGHUP: a 10 s interval applies without a restart, and the first run is due at once.
    reload(&mut client, "sc_backup.hourly_interval", "10s");
    primary.wait_until("a scheduled backup", Duration::from_secs(60), || {
        !scheduled_backups(&mut client, "succeeded").is_empty()
    });
    let first = scheduled_backups(&mut client, "succeeded")[0].clone();
    assert!(first.starts_with("postgres_hourly_"), "{first}");

    // The metrics endpoint, scraped over HTTP and parsed.
    primary.wait_until("the backup in the metrics", Duration::from_secs(30), || {
        value(
            &scrape(port),
            "sc_backup_last_success_timestamp_seconds",
            Some("hourly"),
        )
        .is_some()
    });
    let metrics = scrape(port);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = value(
        &metrics,
        "sc_backup_last_success_timestamp_seconds",
        Some("hourly"),
    )
    .unwrap();
    assert!(
        now - last < 120.0 && last <= now + 1.0,
        "last success {last}, now {now}"
    );
    assert!(value(&metrics, "sc_backup_duration_seconds", Some("hourly")).unwrap() > 0.0);
    assert!(value(&metrics, "sc_backup_size_bytes", Some("hourly")).unwrap() > 10_000_000.0);
    assert_eq!(
        value(&metrics, "sc_backup_failures_total", Some("hourly")),
        Some(0.0)
    );
    assert!(value(&metrics, "sc_backup_wal_archived_total", None).unwrap() >= 1.0);
    assert!(value(
        &metrics,
        "sc_backup_wal_last_archived_timestamp_seconds",
        None
    )
    .is_some());
    assert!(value(&metrics, "sc_backup_wal_ready_segments", None).is_some());
    assert!(value(
        &metrics,
        "sc_backup_wal_oldest_unarchived_age_seconds",
        None
    )
    .is_some());
    assert_eq!(value(&metrics, "sc_backup_scheduler_up", None), Some(1.0));
    // The same figures from SQL.
    let sql_size: f64 = client
        .query_one(
            "SELECT value FROM sc_status() WHERE metric = 'sc_backup_size_bytes' AND backup_type = 'hourly'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        Some(sql_size),
        value(&metrics, "sc_backup_size_bytes", Some("hourly"))
    );

    // One backup at a time: while a manual backup holds the lock, the scheduled one waits,
    // and waiting is not a failure.
    let mut holder = primary.connect();
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&BACKUP_LOCK_KEY])
        .unwrap();
    primary.wait_until(
        "the scheduled backup to wait",
        Duration::from_secs(30),
        || {
            primary
                .log_text()
                .contains("the scheduled hourly backup waits")
        },
    );
    assert_eq!(
        scheduled_backups(&mut client, "failed"),
        Vec::<String>::new()
    );
    let done = scheduled_backups(&mut client, "succeeded").len();
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&BACKUP_LOCK_KEY])
        .unwrap();

    // Expiry after each backup (keep 2, age 0): exactly the two newest backups remain, and
    // exactly the WAL before the oldest kept backup's start is gone.
    let expired_exactly = |client: &mut Client| {
        let succeeded = scheduled_backups(client, "succeeded");
        if succeeded.len() < done.max(3) {
            return false;
        }
        let listed = listed_backups(client);
        let names: Vec<&String> = listed.iter().map(|(name, _)| name).collect();
        // Expiry deletes the backups first, then their WAL.
        names == succeeded[succeeded.len() - 2..].iter().collect::<Vec<_>>()
            && archived_segments(&repository)
                .iter()
                .all(|segment| segment >= &listed[0].1)
    };
    primary.wait_until(
        "a third scheduled backup and its expiry",
        Duration::from_secs(90),
        || expired_exactly(&mut client),
    );
    // Hold the backup lock so that no further backup (and expiry) runs while we look.
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&BACKUP_LOCK_KEY])
        .unwrap();
    primary.wait_until("a settled expiry", Duration::from_secs(30), || {
        expired_exactly(&mut client)
    });
    let listed = listed_backups(&mut client);
    let oldest_kept_start = &listed[0].1;
    let segments = archived_segments(&repository);
    assert!(
        segments.iter().all(|s| s >= oldest_kept_start),
        "WAL before {oldest_kept_start} survived: {segments:?}"
    );
    let last_archived: String = client
        .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    for needed in segments_between(oldest_kept_start, &last_archived) {
        assert!(
            segments.contains(&needed),
            "{needed} is needed by a kept backup but was expired"
        );
    }
    let expired: i64 = client
        .query_one(
            "SELECT count(*) FROM sc_backup.audit WHERE operation = 'expire' AND source = 'scheduler' AND target LIKE '%' || $1 || '%'",
            &[&first],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        expired, 1,
        "the expiry of {first} is not in the audit trail"
    );
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&BACKUP_LOCK_KEY])
        .unwrap();

    // After successes the interval alone spaces the backups: a retry delay (for failures)
    // longer than the interval does not stretch a 10 s interval to 60 s.
    reload(&mut client, "sc_backup.retry_delay", "60s");
    let before = scheduled_backups(&mut client, "succeeded").len();
    primary.wait_until(
        "two more backups 10 s apart",
        Duration::from_secs(45),
        || scheduled_backups(&mut client, "succeeded").len() >= before + 2,
    );
    reload(&mut client, "sc_backup.retry_delay", "2s");

    // The audit trail: a CLI run and a failed SQL call (rolled back) reach the table through
    // the repository.
    let verified = sc_backup(&primary.data)
        .args(["verify", "latest"])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let err = client
        .query("SELECT * FROM sc_verify('no-such-backup')", &[])
        .unwrap_err();
    let message = err.as_db_error().unwrap().message();
    assert!(message.contains("no-such-backup"), "{message}");
    primary.wait_until("the CLI's and the failed call's audit records", Duration::from_secs(40), || {
        client
            .query_one(
                "SELECT count(*) FILTER (WHERE source = 'cli' AND operation = 'verify' AND outcome = 'succeeded'),
                        count(*) FILTER (WHERE source = 'sql' AND operation = 'verify' AND outcome = 'failed' AND backup_name = 'no-such-backup')
                   FROM sc_backup.audit",
                &[],
            )
            .map(|row| row.get::<_, i64>(0) == 1 && row.get::<_, i64>(1) == 1)
            .unwrap()
    });

    // A failing backup (repository not writable) is retried with backoff and counted.
    chmod_recursive(&repository, "a-w");
    primary.wait_until(
        "two failed scheduled backups",
        Duration::from_secs(60),
        || scheduled_backups(&mut client, "failed").len() >= 2,
    );
    let row = client
        .query_one(
            "SELECT last_outcome, consecutive_failures, last_error FROM sc_schedule()",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("failed"));
    assert!(row.get::<_, i32>(1) >= 2);
    let error: String = row.get(2);
    assert!(error.contains("ermission denied"), "{error}");
    primary.wait_until(
        "the failures in the metrics",
        Duration::from_secs(30),
        || value(&scrape(port), "sc_backup_failures_total", Some("hourly")).unwrap_or(0.0) >= 2.0,
    );
    assert!(primary
        .log_text()
        .contains("the scheduled hourly backup failed"));
    chmod_recursive(&repository, "u+w");
    let failed = scheduled_backups(&mut client, "failed").len();
    primary.wait_until(
        "a success after the failures",
        Duration::from_secs(60),
        || {
            client
                .query_one(
                    "SELECT last_outcome = 'succeeded', consecutive_failures FROM sc_schedule()",
                    &[],
                )
                .map(|row| row.get::<_, bool>(0) && row.get::<_, i32>(1) == 0)
                .unwrap()
        },
    );
    assert!(scheduled_backups(&mut client, "failed").len() >= failed);

    // Killed, the worker is started again by the postmaster.
    reload(&mut client, "sc_backup.hourly_interval", "1h");
    let pid = worker_pid(&mut client).unwrap();
    client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    primary.wait_until(
        "the scheduler to be restarted",
        Duration::from_secs(40),
        || worker_pid(&mut client).is_some_and(|new| new != pid),
    );

    // A fast shutdown with the worker waiting on its latch is prompt.
    drop(holder);
    drop(client);
    std::thread::sleep(Duration::from_secs(1));
    let stopping = Instant::now();
    primary.stop("fast");
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(5), "fast shutdown took {took:?}");
}

/// Segment names from `first` to `last` on one timeline (16 MiB segments).
fn segments_between(first: &str, last: &str) -> Vec<String> {
    let number = |name: &str| {
        u64::from_str_radix(&name[8..16], 16).unwrap() * 256
            + u64::from_str_radix(&name[16..24], 16).unwrap()
    };
    let timeline = &first[..8];
    (number(first)..=number(last))
        .map(|n| format!("{timeline}{:08X}{:08X}", n / 256, n % 256))
        .collect()
}
