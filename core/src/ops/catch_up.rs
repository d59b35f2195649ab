//! Keeping repositories 2 to 4 up to date with repository 1. PostgreSQL waits for repository 1
//! only (a file is reported archived once durable there); every further repository is then
//! caught up from repository 1: its WAL by [`copy_wal`], in order and verified, so an outage of
//! an offsite store never holds back `pg_wal` (the queue is simply what repository 1 holds and
//! the other lacks, and its length is each repository's backlog); its backups by
//! [`copy_backups`], each read from repository 1 and written again for the target, so the
//! cluster is read once whatever the number of repositories; and its own retention applied
//! there.

use std::cell::Cell;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::backup::{copy_backups, list_backups, BackupCopyReport};
use crate::config::repositories::RepositoryNumber;
use crate::config::Settings;
use crate::dump::{copy_dumps, list_dumps, DumpCopyReport};
use crate::error::{Error, Result};
use crate::ops::audit::{self, AuditTimer};
use crate::ops::maintenance::expire_now;
use crate::repository::{ClusterIdentity, Repository};
use crate::wal::copy::{copy_wal_via_scratch, wal_backlog};

/// How one further repository stands after a pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RepositoryLag {
    pub number: RepositoryNumber,
    pub location: String,
    /// WAL files of repository 1 this one still lacks (0 after a complete pass); `None` when it
    /// could not be listed.
    pub backlog: Option<u64>,
    /// WAL files copied in this pass.
    pub copied: u64,
    /// When a pass last left it holding all of repository 1's WAL.
    pub caught_up_at: Option<DateTime<Utc>>,
    /// Backups of repository 1 it should get and lacked after the last look at backups
    /// (`None`: not looked at yet, or it could not be listed).
    pub backups_behind: Option<u64>,
    /// Backups copied in this pass, oldest first.
    pub backups_copied: Vec<String>,
    /// Logical dumps copied in this pass (their files in this repository).
    #[serde(default)]
    pub dumps_copied: Vec<String>,
    /// When the newest backup it holds started.
    pub newest_backup_at: Option<DateTime<Utc>>,
    /// When its backups were last compared with repository 1's.
    pub backups_checked_at: Option<DateTime<Utc>>,
    /// When its logical dumps were last compared with repository 1's.
    #[serde(default)]
    pub dumps_checked_at: Option<DateTime<Utc>>,
    /// Until when a backup is expected in repository 1 (its history file arrived; its
    /// `backup.json` follows once its last WAL is archived): backups are compared every pass.
    pub backup_expected_until: Option<DateTime<Utc>>,
    /// When its retention last ran.
    pub expired_at: Option<DateTime<Utc>>,
    /// What that expiry removed, when it removed something in this pass.
    pub expired: Option<String>,
    /// Why this pass did not complete.
    pub error: Option<String>,
}

impl RepositoryLag {
    /// A repository no pass has looked at yet.
    pub fn new(number: RepositoryNumber, location: String) -> Self {
        RepositoryLag {
            number,
            location,
            backlog: None,
            copied: 0,
            caught_up_at: None,
            backups_behind: None,
            backups_copied: Vec::new(),
            dumps_copied: Vec::new(),
            newest_backup_at: None,
            backups_checked_at: None,
            dumps_checked_at: None,
            backup_expected_until: None,
            expired_at: None,
            expired: None,
            error: None,
        }
    }
}

/// Where the scheduler worker leaves each pass's outcome for `sc_status()` and `sc_health()`
/// in other backends, relative to the data directory: `pg_stat_tmp/` is never part of a base
/// backup, so a restored copy never shows its origin's figures.
pub const STATE_FILE: &str = "pg_stat_tmp/sc_backup_repositories.json";
/// The state file is a few hundred bytes per repository; a larger one is not ours.
const STATE_FILE_LIMIT: u64 = 64 << 10;

/// Writes `lags` as the state file of the data directory `data` (replaced atomically).
pub fn write_state(data: &std::path::Path, lags: &[RepositoryLag]) -> std::io::Result<()> {
    let path = data.join(STATE_FILE);
    let temporary = path.with_extension("json.tmp");
    std::fs::write(
        &temporary,
        serde_json::to_vec(lags).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&temporary, &path)
}

/// The state file of the data directory `data`: empty when there is none (no further
/// repository, or the worker has not finished a pass since the server started) or it cannot
/// be read.
pub fn read_state(data: &std::path::Path) -> Vec<RepositoryLag> {
    use std::io::Read;
    let mut text = Vec::new();
    let read = std::fs::File::open(data.join(STATE_FILE))
        .and_then(|file| file.take(STATE_FILE_LIMIT).read_to_end(&mut text));
    match read {
        Ok(_) => serde_json::from_slice(&text).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Backups are compared at least this often (each look lists both repositories' backups,
/// requests that cost on an object store), and in the pass after a backup's history file
/// (`.backup`, archived when a backup stops) reached the repository.
pub const BACKUPS_CHECKED_EVERY: Duration = Duration::from_secs(300);
/// Logical dumps are compared this often: a dump leaves no trace in the WAL to wake the copy,
/// and listing `dumps/` costs a request or two.
pub const DUMPS_CHECKED_EVERY: Duration = Duration::from_secs(60);
/// After a backup history file arrives, how long backups are compared every pass.
const BACKUP_EXPECTED_FOR: chrono::Duration = chrono::Duration::minutes(10);
/// A further repository's own retention runs at least this often, and after a backup arrives.
pub const EXPIRY_EVERY: Duration = Duration::from_secs(3600);
/// While backups are copied (an hour for a large one), its WAL is caught up this often, so
/// that the repository's RPO does not grow with a backup's size.
pub const WAL_WHILE_COPYING_EVERY: Duration = Duration::from_secs(10);

/// The cluster identity repository 1 records: a new further repository is created for it.
fn identity_of(repository: &Repository) -> Result<ClusterIdentity> {
    let info = repository.info();
    Ok(ClusterIdentity {
        system_identifier: info
            .system_identifier
            .parse()
            .map_err(|_| Error::InvalidMetadata {
                object: crate::repository::INFO_KEY.into(),
                reason: format!("bad system_identifier {:?}", info.system_identifier),
            })?,
        pg_version_num: info.pg_version_num,
    })
}

/// Repository `settings` opened for writing by the cluster `first` belongs to: created, with
/// its own key, when the location is new; refused when it is another cluster's.
pub fn open_further(first: &Repository, settings: &Settings) -> Result<Repository> {
    let settings = settings.clone().for_writing()?;
    Repository::open_for_cluster(&settings, &identity_of(first)?)
}

/// One pass: copies into each further repository the WAL it lacks (see
/// [`copy_wal_via_scratch`]), then, when due, the backups it lacks and its own expiry. A
/// failing repository stops only its own copy; `previous` carries each one's state forward.
/// Backups copied and expiries are recorded in repository 1's audit trail, as `user`.
pub fn catch_up_pass(
    first: &Repository,
    further: &[(RepositoryNumber, Settings)],
    previous: &[RepositoryLag],
    user: &str,
    interrupted: &dyn Fn() -> bool,
) -> Vec<RepositoryLag> {
    further
        .iter()
        .map(|(number, settings)| {
            let location = settings.repository.to_string();
            let mut lag = previous
                .iter()
                .find(|p| p.number == *number && p.location == location)
                .cloned()
                .unwrap_or_else(|| RepositoryLag::new(*number, location));
            lag.copied = 0;
            lag.backups_copied.clear();
            lag.dumps_copied.clear();
            lag.expired = None;
            lag.error = None;
            lag.backlog = None;
            if let Err(error) = catch_up_one(first, settings, &mut lag, user, interrupted) {
                lag.error = Some(error.to_string());
            }
            lag
        })
        .collect()
}

fn catch_up_one(
    first: &Repository,
    settings: &Settings,
    lag: &mut RepositoryLag,
    user: &str,
    interrupted: &dyn Fn() -> bool,
) -> Result<()> {
    let target = open_further(first, settings)?;
    let report = copy_wal_via_scratch(first, &target, interrupted).inspect_err(|_| {
        // How far behind it is, if it can still be listed.
        lag.backlog = wal_backlog(first, &target).ok();
    })?;
    lag.copied = report.copied;
    lag.backlog = Some(0);
    lag.caught_up_at = Some(Utc::now());

    let now = Utc::now();
    let due = |at: Option<DateTime<Utc>>, every: Duration| {
        at.is_none_or(|at| (now - at).to_std().unwrap_or_default() >= every)
    };
    if report.backup_histories > 0 {
        lag.backup_expected_until = Some(now + BACKUP_EXPECTED_FOR);
    }
    let backups_due = lag.backup_expected_until.is_some_and(|until| now < until)
        || lag.backups_behind.is_some_and(|n| n > 0)
        || due(lag.backups_checked_at, BACKUPS_CHECKED_EVERY);
    let dumps_due = due(lag.dumps_checked_at, DUMPS_CHECKED_EVERY);
    if backups_due || dumps_due {
        copy_backups_into(
            first,
            &target,
            lag,
            user,
            interrupted,
            backups_due,
            dumps_due,
        )?;
        if !lag.backups_copied.is_empty() {
            lag.backup_expected_until = None;
        }
    }
    if !lag.backups_copied.is_empty()
        || !lag.dumps_copied.is_empty()
        || due(lag.expired_at, EXPIRY_EVERY)
    {
        expire_further(&target, settings, lag, first, user)?;
    }
    Ok(())
}

/// Copies the backups `target` lacks, its WAL kept up meanwhile; records what it copied.
/// Copies the backups (when `backups`) and logical dumps (when `dumps`) `target` lacks, its WAL
/// kept up meanwhile; records what it copied.
fn copy_backups_into(
    first: &Repository,
    target: &Repository,
    lag: &mut RepositoryLag,
    user: &str,
    interrupted: &dyn Fn() -> bool,
    backups: bool,
    dumps: bool,
) -> Result<()> {
    // Each copy lists what the target lacks itself: a comparison that finds nothing copies
    // nothing and records nothing.
    let mut timer = AuditTimer::start("copy", audit::source::SCHEDULER, user);
    timer.details().target = Some(format!(
        "backups and dumps from repository 1 to {} ({})",
        lag.number, lag.location
    ));
    let wal_copied_at = Cell::new(Instant::now());
    let between_files = || {
        if wal_copied_at.get().elapsed() >= WAL_WHILE_COPYING_EVERY {
            // A failure here shows in the next pass, which copies the WAL first.
            if copy_wal_via_scratch(first, target, interrupted).is_ok() {
                wal_copied_at.set(Instant::now());
            }
        }
        interrupted()
    };
    let copied = (|| {
        let backups = match backups {
            true => copy_backups(first, target, &between_files)?,
            false => BackupCopyReport::default(),
        };
        let dumps = match dumps {
            true => copy_dumps(first, target, &between_files)?,
            false => DumpCopyReport::default(),
        };
        Ok((backups, dumps))
    })();
    let happened = match &copied {
        Ok((backups, dumps)) => {
            lag.backups_copied = backups.copied.clone();
            lag.dumps_copied = dumps.copied.clone();
            let details = timer.details();
            details.backup = backups.copied.last().cloned();
            details.size_bytes = Some(backups.bytes + dumps.bytes);
            details.target = Some(format!(
                "{} backup(s) and {} dump(s) from repository 1 to {} ({}): {}{}",
                backups.copied.len(),
                dumps.copied.len(),
                lag.number,
                lag.location,
                backups
                    .copied
                    .iter()
                    .chain(&dumps.copied)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                backups
                    .skipped
                    .iter()
                    .map(|(name, why)| format!("; not copied: {name} ({why})"))
                    .collect::<String>()
            ));
            !backups.copied.is_empty() || !backups.skipped.is_empty() || !dumps.copied.is_empty()
        }
        Err(_) => true,
    };
    if happened {
        let record = timer.finish(copied.as_ref().err().map(|e: &Error| e.to_string()));
        // The copy's outcome stands; a record the repository did not take is not a reason to
        // copy again.
        let _ = audit::record(first, &record);
    }
    let (backup_report, _) = copied?;
    if dumps {
        lag.dumps_checked_at = Some(Utc::now());
    }
    if backups {
        lag.backups_checked_at = Some(Utc::now());
        // What it still lacks: the backups it cannot take (their parent is gone there).
        lag.backups_behind = Some(backup_report.skipped.len() as u64);
        lag.newest_backup_at = list_backups(target)?
            .iter()
            .map(|b| b.playbook.start_time)
            .max();
    }
    Ok(())
}

/// Applies `settings`' retention in `target`. Unfinished backups there stay (a copy may be
/// running from another process: `sc-backup copy`).
fn expire_further(
    target: &Repository,
    settings: &Settings,
    lag: &mut RepositoryLag,
    first: &Repository,
    user: &str,
) -> Result<()> {
    if list_backups(target)?.is_empty() && list_dumps(target)?.is_empty() {
        // Nothing to keep or expire yet.
        return Ok(());
    }
    let mut timer = AuditTimer::start("expire", audit::source::SCHEDULER, user);
    let plan = expire_now(
        target,
        settings.retention,
        Utc::now(),
        false,
        false,
        |plan| {
            timer.details().target = Some(format!(
                "{} ({}): {}",
                lag.number,
                lag.location,
                plan.describe()
            ))
        },
    );
    lag.expired_at = Some(Utc::now());
    let removed = plan
        .as_ref()
        .is_ok_and(|p| !p.expired_backups.is_empty() || !p.expired_wal.is_empty());
    if removed || plan.is_err() {
        let record = timer.finish(plan.as_ref().err().map(|e| e.to_string()));
        let _ = audit::record(first, &record);
    }
    let plan = plan?;
    if removed {
        lag.expired = Some(plan.describe());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::tests::{relation, repository, take};
    use crate::config::RawSettings;

    /// One pass copies the WAL and the backups, then applies the further repository's own
    /// retention (here: only the newest full backup), recording both in repository 1's audit
    /// trail; what it expired is not copied again by the next pass, and repository 1 keeps all.
    #[test]
    fn a_pass_copies_backups_then_applies_the_repositorys_own_retention() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("base/5")).unwrap();
        std::fs::write(data.join("PG_VERSION"), b"15\n").unwrap();
        std::fs::write(data.join("base/5/16384"), relation(&[(0x100, 1)])).unwrap();
        let first_dir = root.path().join("first");
        std::fs::create_dir_all(&first_dir).unwrap();
        let first = repository(&first_dir);
        let full = take(&first, &data, "f", 0x1000, None);
        std::fs::write(data.join("base/5/16384"), relation(&[(0x2000, 2)])).unwrap();
        take(&first, &data, "i1", 0x3000, Some(&full));
        take(&first, &data, "g", 0x5000, None);

        std::fs::create_dir(root.path().join("second")).unwrap();
        let number = RepositoryNumber::new(2).unwrap();
        let settings = Settings::from_raw(&RawSettings {
            repository: Some(root.path().join("second").display().to_string()),
            retention_days: Some("0".into()),
            retention_full: Some("1".into()),
            ..Default::default()
        })
        .unwrap();
        let further = [(number, settings)];
        let lags = catch_up_pass(&first, &further, &[], "tester", &|| false);
        let lag = &lags[0];
        assert_eq!(lag.error, None);
        assert_eq!(lag.backups_copied, ["f", "i1", "g"]);
        assert_eq!(lag.backups_behind, Some(0));
        assert!(
            lag.expired.as_deref().is_some_and(|e| e.contains('f')),
            "{lag:?}"
        );
        let second = open_further(&first, &further[0].1).unwrap();
        let held = |repository: &Repository| -> Vec<String> {
            list_backups(repository)
                .unwrap()
                .into_iter()
                .map(|b| b.playbook.backup_name)
                .collect()
        };
        assert_eq!(held(&second), ["g"]);
        assert_eq!(held(&first), ["f", "i1", "g"]);

        // The next pass finds nothing to copy (f and i1 are older than g) and expires nothing.
        let again = catch_up_pass(&first, &further, &lags, "tester", &|| false);
        assert_eq!(again[0].error, None);
        assert!(again[0].backups_copied.is_empty());
        assert_eq!(held(&second), ["g"]);

        // Both recorded in repository 1's trail.
        let records: Vec<_> = crate::ops::audit::list(&first, None)
            .unwrap()
            .iter()
            .map(|key| crate::ops::audit::read(&first, key).unwrap())
            .collect();
        let copy = records.iter().find(|r| r.operation == "copy").unwrap();
        assert_eq!(
            (copy.user.as_str(), copy.source.as_str()),
            ("tester", "scheduler")
        );
        assert!(
            copy.target.as_deref().unwrap().contains("3 backup(s)"),
            "{copy:?}"
        );
        assert!(records.iter().any(|r| r.operation == "expire"));
    }
}
