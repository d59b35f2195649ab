//! Whether backups and WAL archiving keep to their schedule: `sc_health()`, the
//! `sc_backup_healthy` metric and the container's healthcheck. A server that answers but has
//! not archived WAL for an hour, or whose backups stopped succeeding, is not healthy.

use chrono::{DateTime, Duration, Utc};

use crate::pg::archive_status::ArchiveBacklog;

/// How late a scheduled run may succeed before it counts as overdue: long enough for a large
/// backup to finish and for the first retries, short enough that an hourly schedule is
/// reported within two hours of its last success (the playbook's alert).
pub const OVERDUE_AFTER: Duration = Duration::hours(1);

/// WAL waiting longer than this is reported whatever archive_timeout says: the RPO objective.
pub const WAL_WAIT_LIMIT_SECONDS: f64 = 15.0 * 60.0;

/// One scheduled task, as the health check sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledTask {
    /// `backup hourly`, `backup daily`, `dump`, ...
    pub name: String,
    /// When it is due, counted from its last success (from the scheduler's start when it
    /// never succeeded); `None`: never due.
    pub due: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    /// The last failure's message, when the last run failed.
    pub last_error: Option<String>,
}

/// WAL archiving, as the health check sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Archiving {
    /// archive_mode is not off.
    pub enabled: bool,
    pub archive_timeout_seconds: f64,
    pub backlog: ArchiveBacklog,
    /// pg_stat_archiver's last failed WAL file, when it failed after the last success.
    pub failing_since_success: Option<String>,
    /// Why the settings cannot archive at all (each value valid, the combination not: gzip at
    /// level 12, encryption without a passphrase, s3:// without keys), before any attempt.
    pub misconfigured: Option<String>,
}

/// One line of `sc_health()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub name: String,
    pub healthy: bool,
    pub detail: String,
}

/// A further repository whose WAL trails repository 1's by more than this is unhealthy (the
/// RPO objective; the alert ScBackupRepositoryBehind says the same).
pub const REPOSITORY_BEHIND_LIMIT: Duration = Duration::minutes(15);

/// One check per further repository: it held all of repository 1's WAL within
/// [`REPOSITORY_BEHIND_LIMIT`] (the worker's last pass), with its backups behind and last error.
pub fn repository_checks(
    now: DateTime<Utc>,
    repositories: &[crate::ops::catch_up::RepositoryLag],
) -> Vec<HealthCheck> {
    repositories
        .iter()
        .map(|lag| {
            let healthy = lag
                .caught_up_at
                .is_some_and(|at| now - at <= REPOSITORY_BEHIND_LIMIT);
            let mut detail = match lag.caught_up_at {
                Some(at) => format!(
                    "{} held all of repository 1's WAL {} ago",
                    lag.location,
                    approximate_duration((now - at).num_seconds().max(0) as u64)
                ),
                None => format!(
                    "{} has not held all of repository 1's WAL since the server started",
                    lag.location
                ),
            };
            match lag.backups_behind {
                Some(0) => detail.push_str("; it holds repository 1's newest backup"),
                Some(n) => detail.push_str(&format!("; it lacks {n} of repository 1's backups")),
                None => {}
            }
            if let Some(error) = &lag.error {
                detail.push_str(&format!("; last error: {error}"));
            }
            HealthCheck {
                name: lag.number.to_string(),
                healthy,
                detail,
            }
        })
        .collect()
}

/// The checks, in a fixed order: the scheduler, each scheduled task, WAL archiving.
pub fn assess(
    now: DateTime<Utc>,
    scheduler_wanted: bool,
    scheduler_running: bool,
    tasks: &[ScheduledTask],
    archiving: &Archiving,
) -> Vec<HealthCheck> {
    let mut checks = Vec::new();
    if scheduler_wanted {
        checks.push(HealthCheck {
            name: "scheduler".into(),
            healthy: scheduler_running,
            detail: if scheduler_running {
                "the scheduler worker is running".into()
            } else {
                "the scheduler worker is not running: sc_backup must be in shared_preload_libraries and CREATE EXTENSION sc_backup must have run in sc_backup.database (its log says why it stopped)".into()
            },
        });
        for task in tasks {
            checks.push(task_check(now, task));
        }
    }
    checks.push(archiving_check(archiving));
    checks
}

fn task_check(now: DateTime<Utc>, task: &ScheduledTask) -> HealthCheck {
    let last = match task.last_success {
        Some(at) => format!("last success {}", at.format("%Y-%m-%d %H:%M UTC")),
        None => "never succeeded".into(),
    };
    let (healthy, detail) = match task.due {
        None => (true, format!("{last}; not due again")),
        Some(due) if now <= due + OVERDUE_AFTER => (
            true,
            format!("{last}; next due {}", due.format("%Y-%m-%d %H:%M UTC")),
        ),
        Some(due) => {
            let late = approximate_duration((now - due).num_seconds().max(0) as u64);
            let error = task
                .last_error
                .as_deref()
                .map(|e| format!("; the last run failed: {e}"))
                .unwrap_or_default();
            (
                false,
                format!(
                    "{last}; overdue by {late} (due {}){error}",
                    due.format("%Y-%m-%d %H:%M UTC")
                ),
            )
        }
    };
    HealthCheck {
        name: task.name.clone(),
        healthy,
        detail,
    }
}

fn archiving_check(archiving: &Archiving) -> HealthCheck {
    let name = "wal archiving".to_string();
    if !archiving.enabled {
        return HealthCheck {
            name,
            healthy: true,
            detail: "archive_mode is off: no point-in-time recovery past the last backup".into(),
        };
    }
    if let Some(problem) = &archiving.misconfigured {
        return HealthCheck {
            name,
            healthy: false,
            detail: format!("the settings cannot archive: {problem}"),
        };
    }
    // A segment waits up to archive_timeout to be completed, then for the archiver: twice the
    // timeout is late, and 15 minutes is late whatever the timeout.
    let limit = (2.0 * archiving.archive_timeout_seconds).clamp(60.0, WAL_WAIT_LIMIT_SECONDS);
    let backlog = &archiving.backlog;
    let waiting = format!(
        "{} WAL file{} waiting",
        backlog.ready_segments,
        if backlog.ready_segments == 1 { "" } else { "s" }
    );
    if backlog.ready_segments > 0 && backlog.oldest_ready_age_seconds > limit {
        let failing = archiving
            .failing_since_success
            .as_deref()
            .map(|wal| format!("; archiving {wal} failed (the server log says why)"))
            .unwrap_or_default();
        HealthCheck {
            name,
            healthy: false,
            detail: format!(
                "{waiting}, the oldest for {}{failing}",
                approximate_duration(backlog.oldest_ready_age_seconds as u64)
            ),
        }
    } else {
        HealthCheck {
            name,
            healthy: true,
            detail: waiting,
        }
    }
}

/// "2d 3h", "1h 1min", "10min", "45s": the two largest units, for a person reading a check.
fn approximate_duration(seconds: u64) -> String {
    let (days, hours, minutes) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}min"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}min"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        crate::util::time::parse_time(text).unwrap()
    }

    fn archiving(ready: u64, oldest: f64) -> Archiving {
        Archiving {
            enabled: true,
            archive_timeout_seconds: 300.0,
            backlog: ArchiveBacklog {
                ready_segments: ready,
                oldest_ready_age_seconds: oldest,
            },
            failing_since_success: Some("000000010000000000000007".into()),
            misconfigured: None,
        }
    }

    /// Settings that cannot archive are unhealthy at once, before WAL piles up.
    #[test]
    fn settings_that_cannot_archive_are_reported_before_any_failure() {
        let mut archiving = archiving(0, 0.0);
        archiving.misconfigured = Some("no S3 credentials for s3://b".into());
        let check = archiving_check(&archiving);
        assert!(!check.healthy);
        assert!(
            check.detail.contains("no S3 credentials"),
            "{}",
            check.detail
        );
    }

    fn hourly(last_success: &str) -> ScheduledTask {
        let last = at(last_success);
        ScheduledTask {
            name: "backup hourly".into(),
            due: Some(last + Duration::hours(1)),
            last_success: Some(last),
            last_error: Some("could not reach the repository".into()),
        }
    }

    #[test]
    fn a_schedule_is_overdue_an_hour_after_its_due_time() {
        let task = hourly("2026-11-24 10:00:00Z");
        let on_time = assess(
            at("2026-11-24 11:59:00Z"),
            true,
            true,
            std::slice::from_ref(&task),
            &archiving(0, 0.0),
        );
        assert!(on_time.iter().all(|c| c.healthy), "{on_time:?}");
        assert_eq!(
            on_time[1].detail,
            "last success 2026-11-24 10:00 UTC; next due 2026-11-24 11:00 UTC"
        );
        let late = assess(
            at("2026-11-24 12:01:00Z"),
            true,
            true,
            &[task],
            &archiving(0, 0.0),
        );
        assert!(!late[1].healthy);
        assert_eq!(
            late[1].detail,
            "last success 2026-11-24 10:00 UTC; overdue by 1h 1min (due 2026-11-24 11:00 UTC); the last run failed: could not reach the repository"
        );
        // Never due (a cron date that never comes) is never overdue.
        let never = ScheduledTask {
            due: None,
            ..hourly("2026-11-24 10:00:00Z")
        };
        assert!(
            assess(
                at("2030-01-01 00:00:00Z"),
                true,
                true,
                &[never],
                &archiving(0, 0.0)
            )[1]
            .healthy
        );
    }

    #[test]
    fn waiting_wal_is_late_after_twice_archive_timeout_and_never_later_than_15_minutes() {
        let now = at("2026-11-24 12:00:00Z");
        let check = |archiving: &Archiving| assess(now, false, false, &[], archiving).remove(0);
        assert!(check(&archiving(3, 599.0)).healthy);
        let late = check(&archiving(3, 601.0));
        assert!(!late.healthy);
        assert_eq!(
            late.detail,
            "3 WAL files waiting, the oldest for 10min; archiving 000000010000000000000007 failed (the server log says why)"
        );
        let mut long_timeout = archiving(1, 901.0);
        long_timeout.archive_timeout_seconds = 3600.0;
        assert!(!check(&long_timeout).healthy);
        let mut off = archiving(10, 100_000.0);
        off.enabled = false;
        assert!(check(&off).healthy);
    }

    #[test]
    fn a_stopped_scheduler_is_unhealthy_and_a_disabled_one_is_not_checked() {
        let now = at("2026-11-24 12:00:00Z");
        let task = hourly("2026-11-20 10:00:00Z");
        let stopped = assess(
            now,
            true,
            false,
            std::slice::from_ref(&task),
            &archiving(0, 0.0),
        );
        assert_eq!(stopped[0].name, "scheduler");
        assert!(!stopped[0].healthy);
        let disabled = assess(now, false, false, &[task], &archiving(0, 0.0));
        assert_eq!(disabled.len(), 1, "only archiving: {disabled:?}");
    }
}
