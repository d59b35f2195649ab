//! `sc_status()`, `sc_schedule()`, `sc_expire()` and `sc_delete_backup()`, and the queries
//! the scheduler worker shares with them: the figures come from the audit table,
//! `pg_stat_archiver` and `pg_wal/archive_status`; schedules from the GUCs and the audit table.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use sc_backup_core::config::calendar::parse_cron;
use sc_backup_core::ops::health::{self, Archiving, HealthCheck, ScheduledTask};
use sc_backup_core::ops::maintenance::{delete_named, expire_now, Deleted};
use sc_backup_core::ops::metrics::{BackupFigures, RecoveryFigures, Status, WalFigures};
use sc_backup_core::ops::schedule::{next_occurrence, ScheduleHistory, ScheduleKind};
use sc_backup_core::pg::archive_status::archive_backlog;
use sc_backup_core::Error;

use crate::host::open_repository;
use crate::raise::{raise, raise_message};
use crate::{audit, guc};

/// The worker's name in `pg_stat_activity.backend_type`.
pub const SCHEDULER_BACKEND_TYPE: &str = "sc_backup scheduler";

fn spi_error(context: &str, error: impl std::fmt::Display) -> ! {
    raise_message(
        format!("sc_backup: {context}: {error}"),
        "",
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
    )
}

/// Whether `CREATE EXTENSION sc_backup` has run in this database.
pub fn extension_installed() -> bool {
    Spi::get_one::<bool>("SELECT to_regclass('sc_backup.audit') IS NOT NULL")
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Gathers every figure. Needs a transaction (SPI).
pub fn gather_status(scheduler_running: bool) -> Status {
    let backups = Spi::connect(|client| {
        client
            .select(
                "SELECT backup_type,
                        extract(epoch FROM max(finished_at) FILTER (WHERE outcome = 'succeeded'))::float8,
                        (array_agg(duration_seconds ORDER BY started_at DESC) FILTER (WHERE outcome = 'succeeded'))[1],
                        (array_agg(size_bytes ORDER BY started_at DESC) FILTER (WHERE outcome = 'succeeded'))[1]::float8,
                        count(*) FILTER (WHERE outcome = 'failed'),
                        kind, database
                   FROM (SELECT *, CASE operation WHEN 'dump' THEN 'logical' ELSE 'physical' END AS kind,
                                CASE operation WHEN 'dump' THEN substring(target FROM '^database (.*)$') END AS database
                           FROM sc_backup.audit
                          WHERE operation IN ('backup', 'dump') AND backup_type IS NOT NULL) runs
                  GROUP BY kind, backup_type, database ORDER BY kind DESC, backup_type, database",
                None,
                &[],
            )
            .map(|rows| {
                rows.map(|row| BackupFigures {
                    kind: row.get::<String>(6).ok().flatten().unwrap_or_default(),
                    database: row.get::<String>(7).ok().flatten(),
                    backup_type: row.get::<String>(1).ok().flatten().unwrap_or_default(),
                    last_success_timestamp: row.get::<f64>(2).ok().flatten(),
                    last_duration_seconds: row.get::<f64>(3).ok().flatten(),
                    last_size_bytes: row.get::<f64>(4).ok().flatten(),
                    failures_total: row.get::<i64>(5).ok().flatten().unwrap_or(0) as u64,
                })
                .collect::<Vec<_>>()
            })
    })
    .unwrap_or_else(|e| spi_error("reading sc_backup.audit", e));
    let wal = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT archived_count, last_archived_wal, extract(epoch FROM last_archived_time)::float8,
                        failed_count, extract(epoch FROM last_failed_time)::float8
                   FROM pg_stat_archiver",
                None,
                &[],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>(WalFigures {
            archived_total: row.get::<i64>(1)?.unwrap_or(0) as u64,
            last_archived_segment: row.get::<String>(2)?,
            last_archived_timestamp: row.get::<f64>(3)?,
            archive_failures_total: row.get::<i64>(4)?.unwrap_or(0) as u64,
            last_failure_timestamp: row.get::<f64>(5)?,
            backlog: Default::default(),
        })
    })
    .unwrap_or_else(|e| spi_error("reading pg_stat_archiver", e));
    let recovery = Spi::connect(|client| {
        let row = client
            .select(
                "SELECT extract(epoch FROM max(finished_at) FILTER (WHERE operation = 'restore-test' AND outcome = 'succeeded'))::float8,
                        extract(epoch FROM max(finished_at) FILTER (WHERE operation = 'drill'))::float8,
                        (array_agg((figures->>'rto_seconds')::float8 ORDER BY started_at DESC) FILTER (WHERE operation = 'drill'))[1],
                        (array_agg((figures->>'rpo_seconds')::float8 ORDER BY started_at DESC) FILTER (WHERE operation = 'drill'))[1]
                   FROM sc_backup.audit WHERE operation IN ('restore-test', 'drill')",
                None,
                &[],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>(RecoveryFigures {
            last_verified_timestamp: row.get::<f64>(1)?,
            verify_scheduled: crate::guc::cstring_setting(&crate::guc::VERIFY_SCHEDULE).is_some(),
            last_drill_timestamp: row.get::<f64>(2)?,
            drill_rto_seconds: row.get::<f64>(3)?,
            drill_rpo_seconds: row.get::<f64>(4)?,
        })
    })
    .unwrap_or_else(|e| spi_error("reading sc_backup.audit", e));
    let backup_interval_seconds = guc::SCHEDULER
        .get()
        .then(|| crate::host::scheduler().ok())
        .flatten()
        .and_then(|scheduler| scheduler.shortest_interval(Utc::now()))
        .map(|interval| interval.num_seconds() as f64);
    let mut status = Status {
        backups,
        wal,
        recovery,
        scheduler_running,
        backup_interval_seconds,
        health: Vec::new(),
        // The scheduler worker's last catch-up pass (it refreshes its own snapshot directly).
        repositories: if scheduler_running {
            sc_backup_core::ops::catch_up::read_state(&crate::host::data_directory())
        } else {
            Vec::new()
        },
    };
    status.wal.backlog =
        archive_backlog(&crate::host::data_directory(), std::time::SystemTime::now())
            .unwrap_or_default();
    status.health = health_checks(&status);
    status
}

/// `sc_health()`'s checks: the scheduler runs, each backup and dump schedule succeeded within
/// an hour of being due, and no WAL waits for the archiver too long. `status` gives the WAL
/// figures.
pub fn health_checks(status: &Status) -> Vec<HealthCheck> {
    let now = Utc::now();
    let running = scheduler_started();
    let started = running.unwrap_or(now);
    let mut tasks = Vec::new();
    // An invalid schedule cannot be set (check hooks), so a failure here is not a health
    // question; sc_schedule() reports it.
    if let Ok(scheduler) = crate::host::scheduler() {
        let history = schedule_history();
        for schedule in &scheduler.schedules {
            let past = history.get(&schedule.kind).cloned().unwrap_or_default();
            tasks.push(ScheduledTask {
                name: format!("{} backups", schedule.kind.name()),
                due: Some(schedule.next_run(past.last_success, started)),
                last_success: past.last_success,
                last_error: past.last_error.filter(|_| past.consecutive_failures > 0),
            });
        }
    }
    if let Some(expression) = guc::cstring_setting(&guc::DUMP_SCHEDULE) {
        if let Ok(cron) = parse_cron("dump", &expression) {
            let past = scheduled_history("dump");
            tasks.push(ScheduledTask {
                name: "logical dumps".into(),
                due: next_occurrence(&cron, past.last_success, started),
                last_success: past.last_success,
                last_error: past.last_error.filter(|_| past.consecutive_failures > 0),
            });
        }
    }
    let archive_mode = Spi::get_one::<String>("SELECT current_setting('archive_mode')")
        .ok()
        .flatten()
        .unwrap_or_default();
    let archive_timeout_seconds = Spi::get_one::<f64>(
        "SELECT setting::float8 FROM pg_settings WHERE name = 'archive_timeout'",
    )
    .ok()
    .flatten()
    .unwrap_or(0.0);
    let failing_since_success = Spi::get_one::<String>(
        "SELECT last_failed_wal FROM pg_stat_archiver
          WHERE last_failed_time > coalesce(last_archived_time, '-infinity')",
    )
    .ok()
    .flatten();
    let mut checks = health::assess(
        now,
        guc::SCHEDULER.get(),
        running.is_some(),
        &tasks,
        &Archiving {
            enabled: archive_mode != "off",
            archive_timeout_seconds,
            backlog: status.wal.backlog,
            failing_since_success,
            misconfigured: guc::settings().err().map(|e| e.to_string()),
        },
    );
    checks.extend(health::repository_checks(now, &status.repositories));
    checks
}

/// The scheduler's start time, when it runs.
fn scheduler_started() -> Option<DateTime<Utc>> {
    Spi::get_one_with_args::<String>(
        "SELECT to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM pg_stat_activity WHERE backend_type = $1",
        &[SCHEDULER_BACKEND_TYPE.into()],
    )
    .ok()
    .flatten()
    .and_then(|text| sc_backup_core::util::time::parse_time(&text))
}

/// Each schedule's past, from the audit table (scheduled backups, oldest first).
pub fn schedule_history() -> BTreeMap<ScheduleKind, ScheduleHistory> {
    let runs = scheduled_runs(
        "SELECT s, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), outcome = 'succeeded', error
           FROM sc_backup.audit, unnest(schedules) AS s
          WHERE operation = 'backup' AND source = 'scheduler'
          ORDER BY started_at",
    );
    let mut history: BTreeMap<ScheduleKind, ScheduleHistory> = BTreeMap::new();
    for (schedule, started, succeeded, error) in runs {
        if let Some(kind) = ScheduleKind::from_name(&schedule) {
            history
                .entry(kind)
                .or_default()
                .record(started, succeeded, error);
        }
    }
    history
}

/// The scheduler's runs from the audit table, oldest first: (schedule, start, succeeded,
/// error), as `sql` selects them.
fn scheduled_runs(sql: &str) -> Vec<(String, DateTime<Utc>, bool, Option<String>)> {
    Spi::connect(|client| {
        client.select(sql, None, &[]).map(|rows| {
            rows.filter_map(|row| {
                Some((
                    row.get::<String>(1).ok().flatten()?,
                    sc_backup_core::util::time::parse_time(&row.get::<String>(2).ok().flatten()?)?,
                    row.get::<bool>(3).ok().flatten()?,
                    row.get::<String>(4).ok().flatten(),
                ))
            })
            .collect()
        })
    })
    .unwrap_or_else(|e| spi_error("reading sc_backup.audit", e))
}

/// When the scheduler last started a run of `operation` (`restore-test`, `dump`).
pub fn last_scheduled_run(operation: &str) -> Option<DateTime<Utc>> {
    Spi::get_one_with_args::<String>(
        "SELECT to_char(max(started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
           FROM sc_backup.audit WHERE operation = $1 AND source = 'scheduler'",
        &[operation.into()],
    )
    .ok()
    .flatten()
    .and_then(|at| sc_backup_core::util::time::parse_time(&at))
}

/// The scheduler's runs of `operation` (restore tests, dumps), folded like a backup
/// schedule's runs.
fn scheduled_history(operation: &str) -> ScheduleHistory {
    let mut history = ScheduleHistory::default();
    let quoted = operation.replace('\'', "''");
    for (_, started, succeeded, error) in scheduled_runs(&format!(
        "SELECT operation, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), outcome = 'succeeded', error
           FROM sc_backup.audit
          WHERE operation = '{quoted}' AND source = 'scheduler'
          ORDER BY started_at"
    )) {
        history.record(started, succeeded, error);
    }
    history
}

fn to_timestamptz(at: DateTime<Utc>) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(at.timestamp_micros() - 946_684_800_000_000).ok()
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sc_status() -> TableIterator<
    'static,
    (
        name!(metric, String),
        name!(backup_type, Option<String>),
        name!(value, f64),
        name!(kind, Option<String>),
        name!(database, Option<String>),
        name!(repository, Option<i32>),
    ),
> {
    let status = gather_status(scheduler_started().is_some());
    TableIterator::new(status.figures().into_iter().map(|figure| {
        (
            figure.metric.to_string(),
            figure.backup_type,
            figure.value,
            figure.kind,
            figure.database,
            figure.repository.map(i32::from),
        )
    }))
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sc_health() -> TableIterator<
    'static,
    (
        name!(check_name, String),
        name!(healthy, bool),
        name!(detail, String),
    ),
> {
    let status = gather_status(scheduler_started().is_some());
    TableIterator::new(
        status
            .health
            .into_iter()
            .map(|check| (check.name, check.healthy, check.detail)),
    )
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sc_schedule() -> TableIterator<
    'static,
    (
        name!(schedule, String),
        name!(rule, String),
        name!(next_run, Option<TimestampWithTimeZone>),
        name!(last_success, Option<TimestampWithTimeZone>),
        name!(last_outcome, Option<String>),
        name!(consecutive_failures, i32),
        name!(last_error, Option<String>),
    ),
> {
    let scheduler = crate::host::scheduler()
        .unwrap_or_else(|e| raise(&Error::Config(e), PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR));
    let running = scheduler_started();
    let history = schedule_history();
    let upcoming = scheduler.upcoming(&history, running.unwrap_or_else(Utc::now));
    let enabled = guc::SCHEDULER.get() && running.is_some();
    let rows: Vec<_> = scheduler
        .schedules
        .iter()
        .zip(upcoming)
        .map(|(schedule, (_, next))| {
            let past = history.get(&schedule.kind).cloned().unwrap_or_default();
            (
                schedule.kind.name().to_string(),
                schedule.description.clone(),
                // No next run while the worker is off or not running.
                enabled.then(|| to_timestamptz(next)).flatten(),
                past.last_success.and_then(to_timestamptz),
                past.last_outcome,
                past.consecutive_failures as i32,
                past.last_error,
            )
        })
        .collect::<Vec<_>>();
    // The restore test and the logical dumps are listed with the backup schedules when their
    // settings are set, so one query shows everything the worker will do.
    let mut rows = rows;
    let databases = guc::cstring_setting(&guc::DUMP_DATABASES).unwrap_or_else(|| "*".into());
    for (schedule, setting, operation, what) in [
        (
            "restore-test",
            &guc::VERIFY_SCHEDULE,
            "restore-test",
            "restore test of the newest backup".to_string(),
        ),
        (
            "dump",
            &guc::DUMP_SCHEDULE,
            "dump",
            if databases.trim() == "*" {
                "logical dumps of every database".to_string()
            } else {
                format!("logical dumps of {databases}")
            },
        ),
    ] {
        let Some(expression) = guc::cstring_setting(setting) else {
            continue;
        };
        let cron = sc_backup_core::config::calendar::parse_cron(schedule, &expression)
            .unwrap_or_else(|e| {
                raise(&Error::Config(e), PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR)
            });
        let past = scheduled_history(operation);
        let next = sc_backup_core::ops::schedule::next_occurrence(
            &cron,
            last_scheduled_run(operation),
            running.unwrap_or_else(Utc::now),
        );
        rows.push((
            schedule.to_string(),
            format!("{what}, cron '{expression}' UTC"),
            enabled.then(|| next.and_then(to_timestamptz)).flatten(),
            past.last_success.and_then(to_timestamptz),
            past.last_outcome,
            past.consecutive_failures as i32,
            past.last_error,
        ));
    }
    TableIterator::new(rows)
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sc_expire(
    dry_run: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(expired_backups, Vec<String>),
        name!(kept_backups, Vec<String>),
        name!(expired_wal_files, i64),
        name!(expired_wal_bytes, i64),
    ),
> {
    let settings = crate::host::settings();
    let mut timer = audit::start("expire", sc_backup_core::ops::audit::source::SQL);
    let run = |timer: &mut sc_backup_core::ops::audit::AuditTimer| {
        let repository = open_repository();
        // Taken before planning: no backup of this cluster can then start, run or finish
        // between the plan and its execution, so unfinished ones are debris. (Backups from
        // elsewhere are covered by the removal itself: see retention::expire.)
        let no_backup_runs = !dry_run && crate::backup::try_backup_lock();
        expire_now(
            &repository,
            settings.retention,
            Utc::now(),
            dry_run,
            no_backup_runs,
            |plan| timer.details().target = Some(plan.describe()),
        )
        .unwrap_or_else(|e| raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION))
    };
    // A dry run changes nothing and is not recorded.
    let plan = if dry_run {
        run(&mut timer)
    } else {
        audit::audited(&mut timer, run)
    };
    TableIterator::once((
        plan.expired_backups,
        plan.kept_backups,
        plan.expired_wal.len() as i64,
        plan.expired_wal_bytes as i64,
    ))
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sc_delete_backup(name: &str, with_dependents: default!(bool, false)) {
    let mut timer = audit::start("delete", sc_backup_core::ops::audit::source::SQL);
    timer.details().backup = Some(name.to_string());
    audit::audited(&mut timer, |timer| {
        if name == "latest" {
            raise_message(
                "sc_backup: sc_delete_backup() takes the name of one backup or dump, not \"latest\"".into(),
                "SELECT backup_name FROM sc_list_backups() lists them.",
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            );
        }
        let repository = open_repository();
        let deleted =
            delete_named(&repository, name, with_dependents).map(|deleted| match deleted {
                Deleted::Dump(file) => timer.details().backup = Some(file),
                Deleted::Backups(names) if with_dependents => {
                    timer.details().target = Some(format!("deleted {}", names.join(", ")))
                }
                Deleted::Backups(_) => {}
            });
        deleted.unwrap_or_else(|e| crate::raise::raise_for_backup(&e))
    });
}
