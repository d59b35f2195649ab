//! The figures behind `sc_status()` and the Prometheus endpoint: one struct, two renderings,
//! so SQL and monitoring never disagree.
//!
//! The front end gathers the figures (the audit table for backups, `pg_stat_archiver` for
//! archiving, `pg_wal/archive_status` for the backlog); this module only shapes them.

use std::sync::atomic::AtomicU64;

use crate::ops::health::HealthCheck;

use crate::pg::archive_status::ArchiveBacklog;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Backups of one kind and type: base backups (`physical`) of one type (manual `full`, or a
/// schedule's name), or logical dumps (`logical`) of one database and type, so that every
/// series compares like with like (a dump's size against the same database's dumps).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupFigures {
    /// `physical` or `logical`.
    pub kind: String,
    pub backup_type: String,
    /// The database of logical dumps (empty for the roles and tablespaces).
    pub database: Option<String>,
    /// End of the last successful backup, seconds since the epoch.
    pub last_success_timestamp: Option<f64>,
    pub last_duration_seconds: Option<f64>,
    /// Data directory bytes of the last successful backup; stored bytes of the last dump.
    pub last_size_bytes: Option<f64>,
    pub failures_total: u64,
}

/// WAL archiving, as PostgreSQL's archiver reports it plus the backlog on disk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalFigures {
    pub archived_total: u64,
    pub last_archived_segment: Option<String>,
    pub last_archived_timestamp: Option<f64>,
    pub archive_failures_total: u64,
    pub last_failure_timestamp: Option<f64>,
    pub backlog: ArchiveBacklog,
}

/// Restore tests (verification by restore) and DR drills, from the audit trail.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveryFigures {
    /// End of the last successful restore test.
    pub last_verified_timestamp: Option<f64>,
    /// Whether `sc_backup.verify_schedule` is set (the restore-test alert needs it).
    pub verify_scheduled: bool,
    /// End of the last drill, and its measurements.
    pub last_drill_timestamp: Option<f64>,
    pub drill_rto_seconds: Option<f64>,
    pub drill_rpo_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub backups: Vec<BackupFigures>,
    pub wal: WalFigures,
    pub recovery: RecoveryFigures,
    /// Whether the scheduler worker is running.
    pub scheduler_running: bool,
    /// The shortest time between two scheduled base backups, when backups are scheduled.
    pub backup_interval_seconds: Option<f64>,
    /// `sc_health()`'s checks: backups and WAL archiving on time.
    pub health: Vec<HealthCheck>,
    /// Repositories 2 to 4 and how far behind repository 1's WAL each is (the scheduler
    /// worker's catch-up; empty elsewhere).
    pub repositories: Vec<crate::ops::catch_up::RepositoryLag>,
}

/// One figure: its Prometheus name, the kind, backup type and database it is about (if any),
/// its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub metric: &'static str,
    pub kind: Option<String>,
    pub backup_type: Option<String>,
    pub database: Option<String>,
    /// The further repository (2 to 4) a repository figure is about.
    pub repository: Option<u8>,
    pub value: f64,
}

impl BackupFigures {
    /// The series' labels: kind, type, and the database of a dump.
    fn labels(&self) -> Vec<(String, String)> {
        let mut labels = vec![
            ("kind".to_string(), self.kind.clone()),
            ("type".to_string(), self.backup_type.clone()),
        ];
        if let Some(database) = &self.database {
            labels.push(("database".to_string(), database.clone()));
        }
        labels
    }
}

pub const LAST_SUCCESS: &str = "sc_backup_last_success_timestamp_seconds";
pub const DURATION: &str = "sc_backup_duration_seconds";
pub const SIZE: &str = "sc_backup_size_bytes";
pub const FAILURES: &str = "sc_backup_failures_total";
pub const WAL_ARCHIVED: &str = "sc_backup_wal_archived_total";
pub const WAL_LAST_ARCHIVED: &str = "sc_backup_wal_last_archived_timestamp_seconds";
pub const WAL_FAILURES: &str = "sc_backup_wal_archive_failures_total";
pub const WAL_LAST_FAILURE: &str = "sc_backup_wal_last_failure_timestamp_seconds";
pub const WAL_READY: &str = "sc_backup_wal_ready_segments";
pub const WAL_OLDEST_READY_AGE: &str = "sc_backup_wal_oldest_unarchived_age_seconds";
pub const SCHEDULER_UP: &str = "sc_backup_scheduler_up";
pub const BACKUP_INTERVAL: &str = "sc_backup_backup_interval_seconds";
pub const HEALTHY: &str = "sc_backup_healthy";
pub const LAST_VERIFIED: &str = "sc_backup_last_verified_timestamp_seconds";
pub const VERIFY_SCHEDULED: &str = "sc_backup_verify_scheduled";
pub const LAST_DRILL: &str = "sc_backup_last_drill_timestamp_seconds";
pub const DRILL_RTO: &str = "sc_backup_drill_rto_seconds";
pub const DRILL_RPO: &str = "sc_backup_drill_rpo_seconds";
pub const REPOSITORY_BACKLOG: &str = "sc_backup_repository_wal_backlog_files";
pub const REPOSITORY_CAUGHT_UP: &str = "sc_backup_repository_caught_up_timestamp_seconds";
pub const REPOSITORY_BACKUPS_BEHIND: &str = "sc_backup_repository_backups_behind";
pub const REPOSITORY_LAST_BACKUP: &str = "sc_backup_repository_last_backup_timestamp_seconds";

/// The recovery figures' metrics, with their help text, in a fixed order.
fn recovery_metrics(recovery: &RecoveryFigures) -> [(&'static str, &'static str, Option<f64>); 5] {
    [
        (
            LAST_VERIFIED,
            "End of the last successful restore test (sc-backup verify --restore, sc_backup.verify_schedule)",
            recovery.last_verified_timestamp,
        ),
        (
            VERIFY_SCHEDULED,
            "1 when sc_backup.verify_schedule is set",
            Some(if recovery.verify_scheduled { 1.0 } else { 0.0 }),
        ),
        (LAST_DRILL, "End of the last DR drill (sc-backup drill)", recovery.last_drill_timestamp),
        (DRILL_RTO, "Recovery time measured by the last DR drill", recovery.drill_rto_seconds),
        (DRILL_RPO, "Recovery point measured by the last DR drill", recovery.drill_rpo_seconds),
    ]
}

impl Status {
    /// Whether every health check passes.
    pub fn healthy(&self) -> bool {
        self.health.iter().all(|check| check.healthy)
    }

    /// Every figure, in a fixed order (the rows of `sc_status()`).
    pub fn figures(&self) -> Vec<Figure> {
        let mut figures = Vec::new();
        for backup in &self.backups {
            let typed = |metric, value: Option<f64>| {
                value.map(|value| Figure {
                    metric,
                    kind: Some(backup.kind.clone()),
                    backup_type: Some(backup.backup_type.clone()),
                    database: backup.database.clone(),
                    repository: None,
                    value,
                })
            };
            figures.extend(typed(LAST_SUCCESS, backup.last_success_timestamp));
            figures.extend(typed(DURATION, backup.last_duration_seconds));
            figures.extend(typed(SIZE, backup.last_size_bytes));
            figures.extend(typed(FAILURES, Some(backup.failures_total as f64)));
        }
        let wal = &self.wal;
        let plain = |metric, value: Option<f64>| {
            value.map(|value| Figure {
                metric,
                kind: None,
                backup_type: None,
                database: None,
                repository: None,
                value,
            })
        };
        figures.extend(plain(WAL_ARCHIVED, Some(wal.archived_total as f64)));
        figures.extend(plain(WAL_LAST_ARCHIVED, wal.last_archived_timestamp));
        figures.extend(plain(WAL_FAILURES, Some(wal.archive_failures_total as f64)));
        figures.extend(plain(WAL_LAST_FAILURE, wal.last_failure_timestamp));
        figures.extend(plain(WAL_READY, Some(wal.backlog.ready_segments as f64)));
        figures.extend(plain(
            WAL_OLDEST_READY_AGE,
            Some(wal.backlog.oldest_ready_age_seconds),
        ));
        figures.extend(plain(
            SCHEDULER_UP,
            Some(if self.scheduler_running { 1.0 } else { 0.0 }),
        ));
        figures.extend(plain(BACKUP_INTERVAL, self.backup_interval_seconds));
        figures.extend(plain(HEALTHY, Some(if self.healthy() { 1.0 } else { 0.0 })));
        for (metric, _, value) in recovery_metrics(&self.recovery) {
            figures.extend(plain(metric, value));
        }
        for lag in &self.repositories {
            let seconds = |at: Option<chrono::DateTime<chrono::Utc>>| {
                at.map(|at| at.timestamp_millis() as f64 / 1000.0)
            };
            for (metric, value) in [
                (REPOSITORY_BACKLOG, lag.backlog.map(|n| n as f64)),
                (REPOSITORY_CAUGHT_UP, seconds(lag.caught_up_at)),
                (
                    REPOSITORY_BACKUPS_BEHIND,
                    lag.backups_behind.map(|n| n as f64),
                ),
                (REPOSITORY_LAST_BACKUP, seconds(lag.newest_backup_at)),
            ] {
                figures.extend(plain(metric, value).map(|figure| Figure {
                    repository: Some(lag.number.get()),
                    ..figure
                }));
            }
        }
        figures
    }

    /// The Prometheus/OpenMetrics text exposition of the figures.
    pub fn render(&self) -> String {
        type TypeLabel = Vec<(String, String)>;
        type TypedGauge = Family<TypeLabel, Gauge<f64, AtomicU64>>;
        let mut registry = Registry::default();
        let gauges: Vec<(&str, &str, TypedGauge)> = vec![
            (
                LAST_SUCCESS,
                "End of the last successful backup or dump, by kind (physical, logical), type and dumped database",
                Family::default(),
            ),
            (
                DURATION,
                "Duration of the last successful backup or dump, by kind, type and dumped database",
                Family::default(),
            ),
            (
                SIZE,
                "Bytes of the last successful backup (data directory) or dump (stored file), by kind, type and dumped database",
                Family::default(),
            ),
        ];
        let failures = Family::<TypeLabel, Counter>::default();
        for backup in &self.backups {
            let label = backup.labels();
            let values = [
                backup.last_success_timestamp,
                backup.last_duration_seconds,
                backup.last_size_bytes,
            ];
            for ((_, _, family), value) in gauges.iter().zip(values) {
                if let Some(value) = value {
                    family.get_or_create(&label).set(value);
                }
            }
            failures.get_or_create(&label).inc_by(backup.failures_total);
        }
        for (name, help, family) in gauges {
            registry.register(name, help, family);
        }
        // OpenMetrics appends _total to counters itself.
        registry.register(
            FAILURES.trim_end_matches("_total"),
            "Failed backups and dumps, by kind, type and dumped database",
            failures,
        );

        let wal = &self.wal;
        let counter = |value: u64| {
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            counter
        };
        let gauge = |value: f64| {
            let gauge = Gauge::<f64, AtomicU64>::default();
            gauge.set(value);
            gauge
        };
        registry.register(
            WAL_ARCHIVED.trim_end_matches("_total"),
            "WAL files archived since the archiver's statistics were reset",
            counter(wal.archived_total),
        );
        registry.register(
            WAL_FAILURES.trim_end_matches("_total"),
            "Failed WAL archiving attempts since the archiver's statistics were reset",
            counter(wal.archive_failures_total),
        );
        if let Some(at) = wal.last_archived_timestamp {
            registry.register(
                WAL_LAST_ARCHIVED,
                "When the last WAL file was archived",
                gauge(at),
            );
        }
        if let Some(segment) = &wal.last_archived_segment {
            registry.register(
                "sc_backup_wal_last_archived",
                "The last WAL file archived",
                Info::new(vec![("segment".to_string(), segment.clone())]),
            );
        }
        if let Some(at) = wal.last_failure_timestamp {
            registry.register(
                WAL_LAST_FAILURE,
                "When WAL archiving last failed",
                gauge(at),
            );
        }
        registry.register(
            WAL_READY,
            "WAL segments waiting to be archived (.ready files)",
            gauge(wal.backlog.ready_segments as f64),
        );
        registry.register(
            WAL_OLDEST_READY_AGE,
            "Age of the oldest WAL segment waiting to be archived: the live RPO exposure",
            gauge(wal.backlog.oldest_ready_age_seconds),
        );
        registry.register(
            SCHEDULER_UP,
            "1 while the sc_backup scheduler worker runs",
            gauge(if self.scheduler_running { 1.0 } else { 0.0 }),
        );
        if let Some(interval) = self.backup_interval_seconds {
            registry.register(
                BACKUP_INTERVAL,
                "The shortest time between two scheduled base backups (sc_backup.hourly_interval, daily, weekly or cron)",
                gauge(interval),
            );
        }
        registry.register(
            HEALTHY,
            "1 while every sc_health() check passes: the scheduler runs, no backup or dump is over an hour late, no WAL waits too long",
            gauge(if self.healthy() { 1.0 } else { 0.0 }),
        );
        for (metric, help, value) in recovery_metrics(&self.recovery) {
            if let Some(value) = value {
                registry.register(metric, help, gauge(value));
            }
        }
        if !self.repositories.is_empty() {
            let backlog = TypedGauge::default();
            let caught_up = TypedGauge::default();
            let backups_behind = TypedGauge::default();
            let last_backup = TypedGauge::default();
            for lag in &self.repositories {
                let label = vec![("repository".to_string(), lag.number.get().to_string())];
                if let Some(behind) = lag.backups_behind {
                    backups_behind.get_or_create(&label).set(behind as f64);
                }
                if let Some(at) = lag.newest_backup_at {
                    last_backup
                        .get_or_create(&label)
                        .set(at.timestamp_millis() as f64 / 1000.0);
                }
                if let Some(files) = lag.backlog {
                    backlog.get_or_create(&label).set(files as f64);
                }
                if let Some(at) = lag.caught_up_at {
                    caught_up
                        .get_or_create(&label)
                        .set(at.timestamp_millis() as f64 / 1000.0);
                }
            }
            registry.register(
                REPOSITORY_BACKLOG,
                "WAL files of repository 1 that repository 2, 3 or 4 lacked after the last catch-up pass (absent while it cannot be listed)",
                backlog,
            );
            registry.register(
                REPOSITORY_CAUGHT_UP,
                "When repository 2, 3 or 4 last held all of repository 1's WAL: its RPO is the time since",
                caught_up,
            );
            registry.register(
                REPOSITORY_BACKUPS_BEHIND,
                "Backups of repository 1 that repository 2, 3 or 4 lacked when last compared (absent until compared)",
                backups_behind,
            );
            registry.register(
                REPOSITORY_LAST_BACKUP,
                "When the newest backup repository 2, 3 or 4 holds started",
                last_backup,
            );
        }
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }
}

/// The content type of [`Status::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            backup_interval_seconds: Some(3600.0),
            backups: vec![
                BackupFigures {
                    kind: "physical".into(),
                    backup_type: "hourly".into(),
                    database: None,
                    last_success_timestamp: Some(1_795_000_000.5),
                    last_duration_seconds: Some(12.25),
                    last_size_bytes: Some(1_073_741_824.0),
                    failures_total: 2,
                },
                BackupFigures {
                    kind: "physical".into(),
                    backup_type: "full".into(),
                    failures_total: 1,
                    ..Default::default()
                },
                BackupFigures {
                    kind: "logical".into(),
                    backup_type: "scheduled".into(),
                    database: Some("simcorp".into()),
                    last_size_bytes: Some(2048.0),
                    ..Default::default()
                },
            ],
            wal: WalFigures {
                archived_total: 40,
                last_archived_segment: Some("000000010000000000000028".into()),
                last_archived_timestamp: Some(1_795_000_100.0),
                archive_failures_total: 3,
                last_failure_timestamp: None,
                backlog: ArchiveBacklog {
                    ready_segments: 4,
                    oldest_ready_age_seconds: 61.0,
                },
            },
            recovery: RecoveryFigures {
                last_verified_timestamp: Some(1_794_000_000.0),
                verify_scheduled: true,
                last_drill_timestamp: None,
                drill_rto_seconds: None,
                drill_rpo_seconds: None,
            },
            scheduler_running: true,
            health: Vec::new(),
            repositories: vec![crate::ops::catch_up::RepositoryLag {
                backlog: Some(3),
                caught_up_at: chrono::DateTime::from_timestamp(1_795_000_050, 0),
                backups_behind: Some(1),
                newest_backup_at: chrono::DateTime::from_timestamp(1_794_990_000, 0),
                error: Some("outage".into()),
                ..crate::ops::catch_up::RepositoryLag::new(
                    crate::config::repositories::RepositoryNumber::new(2).unwrap(),
                    "s3://offsite/pg".into(),
                )
            }],
        }
    }

    #[test]
    fn renders_labelled_openmetrics_text() {
        let text = status().render();
        for line in [
            "sc_backup_repository_wal_backlog_files{repository=\"2\"} 3.0",
            "sc_backup_repository_caught_up_timestamp_seconds{repository=\"2\"} 1795000050.0",
            "sc_backup_repository_backups_behind{repository=\"2\"} 1.0",
            "sc_backup_repository_last_backup_timestamp_seconds{repository=\"2\"} 1794990000.0",
            "sc_backup_last_success_timestamp_seconds{kind=\"physical\",type=\"hourly\"} 1795000000.5",
            "sc_backup_duration_seconds{kind=\"physical\",type=\"hourly\"} 12.25",
            "sc_backup_size_bytes{kind=\"physical\",type=\"hourly\"} 1073741824.0",
            "sc_backup_size_bytes{kind=\"logical\",type=\"scheduled\",database=\"simcorp\"} 2048.0",
            "sc_backup_failures_total{kind=\"physical\",type=\"hourly\"} 2",
            "sc_backup_failures_total{kind=\"physical\",type=\"full\"} 1",
            "sc_backup_wal_archived_total 40",
            "sc_backup_wal_archive_failures_total 3",
            "sc_backup_wal_last_archived_info{segment=\"000000010000000000000028\"} 1",
            "sc_backup_wal_ready_segments 4.0",
            "sc_backup_wal_oldest_unarchived_age_seconds 61.0",
            "sc_backup_scheduler_up 1.0",
            "sc_backup_healthy 1.0",
            "sc_backup_last_verified_timestamp_seconds 1794000000.0",
            "sc_backup_verify_scheduled 1.0",
            "# TYPE sc_backup_failures counter",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text
            .contains("sc_backup_last_success_timestamp_seconds{kind=\"physical\",type=\"full\"}"));
        assert!(!text.contains("sc_backup_wal_last_failure_timestamp_seconds"));
        assert!(!text.contains("sc_backup_drill_rto_seconds"));
    }

    #[test]
    fn figures_match_the_rendering() {
        let figures = status().figures();
        let failures: Vec<_> = figures.iter().filter(|f| f.metric == FAILURES).collect();
        assert_eq!(failures.len(), 3);
        assert!(figures.contains(&Figure {
            metric: WAL_OLDEST_READY_AGE,
            kind: None,
            backup_type: None,
            database: None,
            repository: None,
            value: 61.0
        }));
        assert!(figures.contains(&Figure {
            metric: REPOSITORY_BACKUPS_BEHIND,
            kind: None,
            backup_type: None,
            database: None,
            repository: Some(2),
            value: 1.0
        }));
        assert!(figures.contains(&Figure {
            metric: SIZE,
            kind: Some("physical".into()),
            backup_type: Some("hourly".into()),
            database: None,
            repository: None,
            value: 1_073_741_824.0
        }));
        assert!(figures.contains(&Figure {
            metric: SIZE,
            kind: Some("logical".into()),
            backup_type: Some("scheduled".into()),
            database: Some("simcorp".into()),
            repository: None,
            value: 2048.0
        }));
    }
}
