//! The audit trail: one record per backup, verify, restore test, restore, extract, drill,
//! expire and delete, wherever it ran (SQL, the scheduler, the CLI).
//!
//! Records are kept in the repository as one small JSON object each, under
//! `audit/<day>/<time>-<pid>-<random>.json`, so the trail survives the loss of the database
//! and the CLI can write it while the server is down. The extension also keeps them in the
//! table `sc_backup.audit` (the key is the row's id); its worker copies the records the table
//! misses (failed SQL calls, whose transaction rolled back, and CLI runs) from the repository.
//! Records are plain JSON: they hold names, times and error messages, never a secret.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::util::host::host_name;
use crate::Repository;

pub const PREFIX: &str = "audit/";

/// Where an operation was started from.
pub mod source {
    pub const SQL: &str = "sql";
    pub const SCHEDULER: &str = "scheduler";
    pub const CLI: &str = "cli";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the operation started, RFC 3339 UTC.
    pub started_at: String,
    pub duration_seconds: f64,
    /// The database user (session user) for SQL, the OS user for the CLI.
    pub user: String,
    pub host: String,
    /// `sql`, `scheduler` or `cli`.
    pub source: String,
    /// `backup`, `verify`, `restore-test`, `restore`, `extract`, `drill`, `expire` or
    /// `delete`.
    pub operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_type: Option<String>,
    /// The schedules a scheduled backup ran for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<String>,
    /// A restore's recovery target, or what an expiry removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `succeeded` or `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Measured figures (a drill's RTO and RPO, a restore test's rows), by name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub figures: std::collections::BTreeMap<String, f64>,
}

pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// Times an operation and builds its record.
pub struct AuditTimer {
    started_at: DateTime<Utc>,
    started: Instant,
    record: AuditRecord,
}

impl AuditTimer {
    pub fn start(operation: &str, source: &str, user: &str) -> AuditTimer {
        let started_at = Utc::now();
        AuditTimer {
            started_at,
            started: Instant::now(),
            record: AuditRecord {
                started_at: started_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                duration_seconds: 0.0,
                user: user.to_string(),
                host: host_name(),
                source: source.to_string(),
                operation: operation.to_string(),
                backup: None,
                backup_type: None,
                schedules: Vec::new(),
                target: None,
                outcome: String::new(),
                size_bytes: None,
                error: None,
                figures: Default::default(),
            },
        }
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// Fills in what is known so far (the backup's name, its type, the target...).
    pub fn details(&mut self) -> &mut AuditRecord {
        &mut self.record
    }

    /// The finished record: it failed with `error`, or with an error already set through
    /// [`AuditTimer::details`] (an operation that reports problems without failing).
    pub fn finish(&self, error: Option<String>) -> AuditRecord {
        let mut record = self.record.clone();
        let error = error.or(record.error.take());
        record.duration_seconds = self.started.elapsed().as_secs_f64();
        record.outcome = if error.is_none() { SUCCEEDED } else { FAILED }.to_string();
        record.error = error;
        record
    }
}

/// The key a record started at `at` is stored under: sorted by time (the record's time keeps
/// microseconds), then by the order one process appended them, unique across processes.
fn record_key(at: DateTime<Utc>) -> String {
    static APPENDED: AtomicU32 = AtomicU32::new(0);
    format!(
        "{PREFIX}{}/{}Z-{}-{:06}-{:08x}.json",
        at.format("%Y-%m-%d"),
        at.format("%Y%m%dT%H%M%S.%f"),
        std::process::id(),
        APPENDED.fetch_add(1, Ordering::Relaxed) % 1_000_000,
        rand::random::<u32>()
    )
}

/// Stores a record in the repository; returns its key (the audit table's id).
pub fn append(repository: &Repository, record: &AuditRecord) -> Result<String> {
    let started = crate::util::time::parse_time(&record.started_at).unwrap_or_else(Utc::now);
    let key = record_key(started);
    let mut writer = repository.storage().create(&key)?;
    let mut line = serde_json::to_vec(record).expect("record serializes");
    line.push(b'\n');
    writer
        .write_all(&line)
        .map_err(|e| Error::io("write", &key, e))?;
    writer.commit()?;
    Ok(key)
}

/// An audit record the repository did not take, and why.
#[derive(Debug, thiserror::Error)]
#[error("could not store the audit record of this {operation} in the repository: {cause}")]
pub struct Unrecorded {
    pub operation: String,
    #[source]
    pub cause: Box<Error>,
}

/// Records how an operation ended, under the one policy every front end follows: the
/// operation's outcome stands whatever becomes of its record (a backup taken is not reported
/// failed because the trail could not be written, nor is a failure hidden), and a record the
/// repository did not take comes back as [`Unrecorded`], for the front end to warn and keep it
/// where it can (the extension: its `sc_backup.audit` table; the CLI: its standard error, the
/// record in full).
pub fn record(
    repository: &Repository,
    record: &AuditRecord,
) -> std::result::Result<String, Unrecorded> {
    append(repository, record).map_err(|cause| Unrecorded {
        operation: record.operation.clone(),
        cause: Box::new(cause),
    })
}

/// Keys of the records stored on `days` (all of them when None), oldest first.
pub fn list(repository: &Repository, days: Option<&[NaiveDate]>) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    match days {
        None => keys.extend(
            repository
                .storage()
                .list(PREFIX)?
                .into_iter()
                .map(|o| o.key),
        ),
        Some(days) => {
            for day in days {
                let prefix = format!("{PREFIX}{}/", day.format("%Y-%m-%d"));
                keys.extend(
                    repository
                        .storage()
                        .list(&prefix)?
                        .into_iter()
                        .map(|o| o.key),
                );
            }
        }
    }
    keys.retain(|key| key.ends_with(".json"));
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Reads one record. Records are small; a huge or malformed object is an error, not a crash.
pub fn read(repository: &Repository, key: &str) -> Result<AuditRecord> {
    use std::io::Read;
    let mut text = Vec::new();
    repository
        .storage()
        .open(key)?
        .take(1 << 20)
        .read_to_end(&mut text)
        .map_err(|e| Error::io("read", key, e))?;
    serde_json::from_slice(&text).map_err(|e| Error::Decode {
        object: key.to_string(),
        reason: format!("not an audit record: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawSettings, Settings};

    #[test]
    fn records_round_trip_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::from_raw(&RawSettings {
            repository: Some(dir.path().display().to_string()),
            ..Default::default()
        })
        .unwrap();
        let repository = Repository::open_for_cluster(
            &settings,
            &crate::ClusterIdentity {
                system_identifier: 1,
                pg_version_num: 150000,
            },
        )
        .unwrap();
        let mut timer = AuditTimer::start("restore", source::CLI, "alice");
        timer.details().backup = Some("db_full_1".into());
        timer.details().target = Some("time 2026-11-24 10:00:00+00".into());
        let first = timer.finish(None);
        let second = AuditTimer::start("verify", source::CLI, "bob").finish(Some("boom".into()));
        let first_key = append(&repository, &first).unwrap();
        let second_key = append(&repository, &second).unwrap();
        assert!(first_key < second_key, "{first_key} {second_key}");
        // The key's time is the record's own start time, to the microsecond...
        assert!(
            first_key
                .contains(&first.started_at[..first.started_at.len() - 1].replace(['-', ':'], "")),
            "{first_key} {}",
            first.started_at
        );
        let today = Utc::now().date_naive();
        assert_eq!(
            list(&repository, Some(&[today])).unwrap(),
            vec![first_key.clone(), second_key.clone()]
        );
        assert_eq!(list(&repository, None).unwrap().len(), 2);
        assert_eq!(read(&repository, &first_key).unwrap(), first);
        let failed = read(&repository, &second_key).unwrap();
        assert_eq!(failed.outcome, FAILED);
        assert_eq!(failed.error.as_deref(), Some("boom"));
        assert_eq!(first.outcome, SUCCEEDED);
    }

    #[test]
    fn records_started_in_the_same_microsecond_keep_the_order_they_were_appended_in() {
        let at = Utc::now();
        let keys: Vec<String> = (0..1000).map(|_| record_key(at)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
