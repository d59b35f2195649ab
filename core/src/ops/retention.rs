//! Retention: which backups and WAL files may go.
//!
//! A backup is kept while it is younger than the retention period, and the newest
//! `min_backups` full backups, with everything taken after the oldest of them, are kept
//! whatever their age (at least one: the newest backup is never expired), and so is every backup a kept incremental or differential backup is restored
//! through (its chain, back to its full backup). WAL is kept from the start of the oldest kept backup onwards, because
//! point-in-time recovery from that backup needs every WAL file after it; older segments go.
//! Timeline history files are always kept (they are tiny, and recovery follows them).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::backup::{backup_prefix, BackupKind, BackupMetadata};
use crate::backup::{remove_backup, remove_unfinished_backup, Removal, TOMBSTONES_KEPT};
use crate::error::Result;
use crate::Repository;

pub use crate::config::RetentionPolicy;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryPlan {
    pub expired_backups: Vec<String>,
    pub kept_backups: Vec<String>,
    /// Keys of WAL objects older than what the oldest kept backup needs.
    pub expired_wal: Vec<String>,
    pub expired_wal_bytes: u64,
    /// Backups whose objects exist but whose metadata was never written: interrupted (a crash,
    /// kill -9) or still running. Only a caller that knows no backup is running may remove
    /// them ([`expire`] with `remove_unfinished`).
    pub unfinished_backups: Vec<String>,
    /// Tombstones of unfinished backups an expiry removed more than [`TOMBSTONES_KEPT`] ago:
    /// no writer runs that long, they go with the unfinished backups.
    pub old_tombstones: Vec<String>,
    /// Logical dumps (their file names) that go, and those kept: by the same rule as backups,
    /// applied to each database's dumps (and to the roles-and-tablespaces dumps) on its own.
    pub expired_dumps: Vec<String>,
    pub kept_dumps: Vec<String>,
}

impl ExpiryPlan {
    /// For the audit trail: what went.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} backup(s), {} WAL file(s) ({} bytes)",
            self.expired_backups.len(),
            self.expired_wal.len(),
            self.expired_wal_bytes
        );
        if !self.expired_backups.is_empty() {
            text.push_str(": ");
            text.push_str(&self.expired_backups.join(", "));
        }
        if !self.expired_dumps.is_empty() {
            text.push_str(&format!(
                "; {} dump(s): {}",
                self.expired_dumps.len(),
                self.expired_dumps.join(", ")
            ));
        }
        if !self.unfinished_backups.is_empty() {
            text.push_str(&format!(
                "; unfinished: {}",
                self.unfinished_backups.join(", ")
            ));
        }
        text
    }
}

/// `(timeline, segment number)` of a WAL object key, for segments, .backup and .partial files.
fn segment_position(key: &str) -> Option<(u32, u64)> {
    let name = key.rsplit('/').next()?;
    let hex = name.get(..24)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let timeline = u32::from_str_radix(&hex[..8], 16).ok()?;
    let high = u64::from_str_radix(&hex[8..16], 16).ok()?;
    let low = u64::from_str_radix(&hex[16..24], 16).ok()?;
    // Comparable within one segment size: high * 2^32 / segment size + low, kept as a pair.
    Some((timeline, (high << 32) | low))
}

/// The position [`segment_position`] gives the segment holding `lsn`.
fn lsn_position(lsn: u64, segment_size: u64) -> u64 {
    let segment = segment_size.max(1);
    let per_id = 0x1_0000_0000 / segment;
    let number = lsn / segment;
    ((number / per_id) << 32) | (number % per_id)
}

/// `(timeline, segment number)` of the segment holding the backup's last byte of WAL.
fn stop_position(backup: &BackupMetadata) -> (u32, u64) {
    let last = backup.stop_lsn.0.saturating_sub(1).max(backup.start_lsn.0);
    (backup.timeline, lsn_position(last, backup.wal_segment_size))
}

fn start_position(backup: &BackupMetadata) -> Result<(u32, u64)> {
    Ok((
        backup.timeline,
        lsn_position(backup.start_lsn.0, backup.wal_segment_size),
    ))
}

/// Computes what `policy` expires at `now`, without changing anything.
pub fn plan_expiry(
    repository: &Repository,
    policy: RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<ExpiryPlan> {
    let crate::backup::BackupScan {
        finished: backups,
        unfinished: unfinished_backups,
        tombstones,
    } = crate::backup::scan_backups(repository)?;
    let cutoff = now - chrono::Duration::days(i64::from(policy.days));
    let tombstone_cutoff = now.timestamp() - TOMBSTONES_KEPT.as_secs() as i64;
    let mut plan = ExpiryPlan {
        unfinished_backups,
        old_tombstones: tombstones
            .into_iter()
            .filter(|(_, claimed)| (*claimed as i64) < tombstone_cutoff)
            .map(|(name, _)| name)
            .collect(),
        ..Default::default()
    };
    plan_dump_expiry(
        &crate::dump::list_dumps(repository)?,
        policy,
        cutoff,
        &mut plan,
    );
    if backups.is_empty() {
        return Ok(plan);
    }
    // retention_full counts full backups, as pgBackRest's repo-retention-full does: the
    // newest `min_backups` full backups, and everything taken since the oldest of them, stay
    // whatever their age. With fewer full backups than that, all stay.
    let protected_from = backups
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, backup)| backup.method == BackupKind::Full)
        .nth(policy.min_backups.max(1) as usize - 1)
        .map_or(0, |(index, _)| index);
    // Each backup for its tier's days (`retention_days` unless its tier has its own). Those
    // kept by `retention_days` or `retention_full` are the point-in-time recovery window:
    // WAL is kept from the oldest of them on. Older ones a longer tier keeps (weekly backups
    // for a year, say) keep only the WAL that makes each of them consistent.
    let mut keep: HashSet<&str> = HashSet::new();
    let mut window: HashSet<&str> = HashSet::new();
    for (index, backup) in backups.iter().enumerate() {
        let label = backup.playbook.backup_type.as_str();
        let tier_cutoff = now - chrono::Duration::days(i64::from(policy.days_for(label)));
        let protected = index >= protected_from;
        if protected || backup.playbook.stop_time >= tier_cutoff {
            keep.insert(&backup.playbook.backup_name);
        }
        let kept = keep.contains(backup.playbook.backup_name.as_str());
        if protected || (kept && backup.playbook.stop_time >= cutoff) {
            window.insert(&backup.playbook.backup_name);
        }
    }
    // A kept incremental or differential backup keeps the backups it is restored through.
    let by_name: HashMap<&str, &BackupMetadata> = backups
        .iter()
        .map(|b| (b.playbook.backup_name.as_str(), b))
        .collect();
    // The window's chains are in the window too: point-in-time recovery starts from the
    // oldest backup a restore inside it reads.
    for set in [&mut keep, &mut window] {
        let mut pending: Vec<&str> = set.iter().copied().collect();
        while let Some(name) = pending.pop() {
            let parent = by_name
                .get(name)
                .and_then(|b| b.parent.as_deref())
                .unwrap_or("");
            if !parent.is_empty() && by_name.contains_key(parent) && set.insert(parent) {
                pending.push(parent);
            }
        }
    }
    let mut oldest_in_window: Option<&BackupMetadata> = None;
    // (timeline, first segment, last segment) of each kept backup older than the window.
    let mut consistency: Vec<(u32, u64, u64)> = Vec::new();
    for backup in &backups {
        if keep.contains(backup.playbook.backup_name.as_str()) {
            plan.kept_backups.push(backup.playbook.backup_name.clone());
            if window.contains(backup.playbook.backup_name.as_str()) {
                oldest_in_window.get_or_insert(backup);
            } else if oldest_in_window.is_none() {
                let (timeline, first) = start_position(backup)?;
                let (_, last) = stop_position(backup);
                consistency.push((timeline, first, last));
            }
        } else {
            plan.expired_backups
                .push(backup.playbook.backup_name.clone());
        }
    }
    let oldest_in_window = oldest_in_window.expect("the newest backup is always in the window");
    let (keep_timeline, keep_from) = start_position(oldest_in_window)?;
    for object in repository.storage().list("wal/")? {
        if object.key.starts_with("wal/history/") {
            continue;
        }
        if let Some((timeline, position)) = segment_position(&object.key) {
            let makes_one_consistent = consistency
                .iter()
                .any(|(t, first, last)| *t == timeline && (*first..=*last).contains(&position));
            if timeline <= keep_timeline && position < keep_from && !makes_one_consistent {
                plan.expired_wal_bytes += object.size;
                plan.expired_wal.push(object.key);
            }
        }
    }
    Ok(plan)
}

/// Each database's dumps (oldest first in `dumps`) on their own: the newest `min_backups`
/// and those younger than the cutoff stay, so a database dumped rarely keeps its last dump.
fn plan_dump_expiry(
    dumps: &[crate::dump::DumpMetadata],
    policy: RetentionPolicy,
    cutoff: DateTime<Utc>,
    plan: &mut ExpiryPlan,
) {
    let mut groups: std::collections::BTreeMap<
        (crate::dump::DumpKind, &str),
        Vec<&crate::dump::DumpMetadata>,
    > = Default::default();
    for dump in dumps {
        groups
            .entry((dump.content, dump.playbook.database.as_str()))
            .or_default()
            .push(dump);
    }
    for group in groups.values() {
        let protected_from = group
            .len()
            .saturating_sub(policy.min_backups.max(1) as usize);
        for (index, dump) in group.iter().enumerate() {
            let recent = dump.playbook.stop_time >= cutoff;
            if recent || index >= protected_from {
                plan.kept_dumps.push(dump.file.clone());
            } else {
                plan.expired_dumps.push(dump.file.clone());
            }
        }
    }
}

/// How old a temporary file must be before expiry takes it for a dead writer's.
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Carries out a plan: backups first, then the WAL only they needed. With
/// `remove_unfinished` (only when no backup can be running: the caller holds the backup lock)
/// also the objects of unfinished backups.
///
/// The plan may be older than the repository: backups complete after it was made (on this
/// host or another). None of them is removed: an unfinished backup is claimed before its
/// objects go ([`remove_unfinished_backup`]), and a planned backup that a new incremental
/// depends on is kept, with the WAL it needs (no WAL is expired then; the next run replans).
pub fn expire(repository: &Repository, plan: &ExpiryPlan, remove_unfinished: bool) -> Result<()> {
    // Newest first: an expired chain loses its incremental backups before their parents. No
    // kept backup depends on an expired one (plan_expiry keeps whole chains).
    let mut all_removed = true;
    for name in plan.expired_backups.iter().rev() {
        all_removed &= remove_backup(repository, name)? == Removal::Removed;
    }
    for file in &plan.expired_dumps {
        crate::dump::delete_dump_file(repository, file)?;
    }
    if remove_unfinished {
        for name in &plan.unfinished_backups {
            remove_unfinished_backup(repository, name)?;
        }
        for name in &plan.old_tombstones {
            // The tombstone last: until it goes, nothing can complete the backup.
            let prefix = backup_prefix(name);
            let metadata_key = format!("{prefix}backup.json");
            for object in repository.storage().list(&prefix)? {
                if object.key != metadata_key {
                    repository.storage().delete(&object.key)?;
                }
            }
            repository.storage().delete(&metadata_key)?;
        }
        // Temporary files of writers killed mid-write. An hour old at least: a live writer
        // (the archiver's workers, say) touches its file far more often than that.
        repository.storage().remove_abandoned(ABANDONED_AFTER)?;
    }
    if all_removed {
        for key in &plan.expired_wal {
            repository.storage().delete(key)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{list_backups, BackupReport, BackupWriter, SourceEntry, SourceKind};
    use crate::config::{RawSettings, Settings};
    use crate::repository::ClusterIdentity;
    use crate::Error;
    use std::path::Path;

    const SEGMENT: u64 = 16 << 20;

    fn repository(dir: &Path) -> Repository {
        let settings = Settings::from_raw(&RawSettings {
            repository: Some(dir.display().to_string()),
            ..Default::default()
        })
        .unwrap();
        Repository::open_for_cluster(
            &settings,
            &ClusterIdentity {
                system_identifier: 1,
                pg_version_num: 150000,
            },
        )
        .unwrap()
    }

    fn archive_segment(repo: &Repository, work: &Path, number: u64) {
        let name = crate::pg::lsn::segment_name(1, crate::pg::lsn::Lsn(number * SEGMENT), SEGMENT);
        let path = work.join(&name);
        std::fs::write(&path, format!("segment {number}")).unwrap();
        repo.archive_wal(&path, &name).unwrap();
    }

    /// A backup covering segment `segment`, finished `age_days` before `now`.
    fn backup(
        repo: &Repository,
        work: &Path,
        name: &str,
        segment: u64,
        age_days: i64,
        now: DateTime<Utc>,
    ) {
        backup_against(repo, work, name, segment, age_days, now, None)
    }

    /// A backup as [`backup`] makes, incremental when `parent` is given.
    fn backup_against(
        repo: &Repository,
        work: &Path,
        name: &str,
        segment: u64,
        age_days: i64,
        now: DateTime<Utc>,
        parent: Option<&str>,
    ) {
        let (writer, entries, metadata) =
            staged_backup(repo, work, name, segment, age_days, now, parent);
        writer.finish(entries, None, metadata).unwrap();
    }

    /// A backup as [`backup_against`] makes, its files stored but not finished: what a
    /// backup running while an expiry plans looks like.
    fn staged_backup<'r>(
        repo: &'r Repository,
        work: &Path,
        name: &str,
        segment: u64,
        age_days: i64,
        now: DateTime<Utc>,
        parent: Option<&str>,
    ) -> (
        BackupWriter<'r>,
        Vec<crate::backup::ManifestEntry>,
        BackupReport,
    ) {
        let file = work.join(format!("{name}.data"));
        std::fs::write(&file, name).unwrap();
        let writer = match parent {
            Some(parent) => {
                let parent = crate::backup::read_metadata(repo, parent).unwrap();
                BackupWriter::new_incremental(repo, name, &parent, 8192).unwrap()
            }
            None => BackupWriter::new(repo, name).unwrap(),
        };
        let entries = writer
            .store_files(
                vec![SourceEntry {
                    path: "PG_VERSION".into(),
                    source: file,
                    kind: SourceKind::File,
                }],
                1,
                &mut || Ok(()),
            )
            .unwrap();
        let at = now - chrono::Duration::days(age_days);
        let lsn = |offset: u64| crate::pg::lsn::Lsn(segment * SEGMENT + offset);
        let report = BackupReport {
            start_lsn: lsn(0x28),
            stop_lsn: lsn(0x100),
            start_time: at,
            stop_time: at,
            wal_segment_size: SEGMENT,
            method: BackupKind::Incremental,
            ..crate::backup::tests::report()
        };
        (writer, entries, report)
    }

    fn names(repo: &Repository) -> Vec<String> {
        list_backups(repo)
            .unwrap()
            .into_iter()
            .map(|b| b.playbook.backup_name)
            .collect()
    }

    /// The plan lists a running backup as unfinished; the backup completes; the expiry then
    /// carried out with the lock that says "no backup runs" (taken after the backup released
    /// it) must not remove it. And one claimed before it completes cannot complete.
    #[test]
    fn an_unfinished_backup_completed_after_the_plan_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(dir.path());
        let now = Utc::now();
        for segment in 1..=9 {
            archive_segment(&repo, work.path(), segment);
        }
        backup(&repo, work.path(), "a_full", 2, 1, now);
        let policy = RetentionPolicy::uniform(30, 1);
        let (writer, entries, metadata) =
            staged_backup(&repo, work.path(), "b_full", 4, 0, now, None);
        let plan = plan_expiry(&repo, policy, now).unwrap();
        assert_eq!(plan.unfinished_backups, ["b_full"]);
        writer.finish(entries, None, metadata).unwrap();
        expire(&repo, &plan, true).unwrap();
        assert_eq!(names(&repo), ["a_full", "b_full"]);
        let (_, problems) = crate::backup::verify_backup(&repo, "b_full").unwrap();
        assert_eq!(problems, []);

        // Claimed first: the backup fails when it tries to complete, and nothing stays.
        let (writer, entries, metadata) =
            staged_backup(&repo, work.path(), "c_full", 6, 0, now, None);
        let plan = plan_expiry(&repo, policy, now).unwrap();
        assert_eq!(plan.unfinished_backups, ["c_full"]);
        expire(&repo, &plan, true).unwrap();
        let error = writer.finish(entries, None, metadata).unwrap_err();
        assert!(error.to_string().contains("removed this backup"), "{error}");
        writer.abort();
        assert_eq!(names(&repo), ["a_full", "b_full"]);
        let left = repo.storage().list(&backup_prefix("c_full")).unwrap();
        assert!(left.len() <= 1, "{left:?}");
        // Its tombstone goes a week later.
        let plan = plan_expiry(&repo, policy, now + chrono::Duration::days(8)).unwrap();
        assert!(plan.unfinished_backups.is_empty());
        if left.len() == 1 {
            assert_eq!(plan.old_tombstones, ["c_full"]);
        }
        expire(&repo, &plan, true).unwrap();
        assert!(repo
            .storage()
            .list(&backup_prefix("c_full"))
            .unwrap()
            .is_empty());
    }

    /// Backups and expiries racing on threads, in every interleaving the scheduler gives:
    /// whatever is listed at the end verifies, chain included.
    #[test]
    fn backups_and_expiries_racing_never_leave_a_listed_backup_broken() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(dir.path());
        let now = Utc::now();
        for segment in 1..=16 {
            archive_segment(&repo, work.path(), segment);
        }
        backup(&repo, work.path(), "round00_full", 1, 40, now);
        let policy = RetentionPolicy::uniform(30, 1);
        // Every third round a new full backup, otherwise an incremental on the newest one;
        // each a few days younger, so that older chains pass out of retention meanwhile.
        for round in 1..=12u64 {
            let parent = (round % 3 != 0)
                .then(|| names(&repo).last().cloned())
                .flatten();
            // The plan is always made while the backup runs; its completion and the expiry
            // then race.
            let staged = std::sync::Barrier::new(2);
            let planned = std::sync::Barrier::new(2);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let name = format!("round{round:02}");
                    let (writer, entries, metadata) = staged_backup(
                        &repo,
                        work.path(),
                        &name,
                        1 + round,
                        (39 - 3 * round as i64).max(0),
                        now,
                        parent.as_deref(),
                    );
                    staged.wait();
                    planned.wait();
                    if writer.finish(entries, None, metadata).is_err() {
                        writer.abort();
                    }
                });
                scope.spawn(|| {
                    staged.wait();
                    let plan = plan_expiry(&repo, policy, now);
                    planned.wait();
                    if let Ok(plan) = plan {
                        let _ = expire(&repo, &plan, true);
                    }
                });
            });
            for name in names(&repo) {
                let (_, problems) = crate::backup::verify_backup(&repo, &name).unwrap();
                assert_eq!(problems, [], "round {round}: {name}");
            }
        }
    }

    /// A backup planned for expiry gains an incremental that completes before the expiry runs
    /// (started before the plan, or on another host): the backup, and the WAL it needs, stay;
    /// and an incremental whose parent's removal has begun withdraws instead of completing.
    #[test]
    fn a_planned_backup_an_incremental_completed_on_meanwhile_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(dir.path());
        let now = Utc::now();
        for segment in 1..=9 {
            archive_segment(&repo, work.path(), segment);
        }
        backup(&repo, work.path(), "a_full", 2, 40, now);
        backup(&repo, work.path(), "b_full", 4, 1, now);
        let policy = RetentionPolicy::uniform(30, 1);
        let plan = plan_expiry(&repo, policy, now).unwrap();
        assert_eq!(plan.expired_backups, ["a_full"]);
        assert!(!plan.expired_wal.is_empty());
        backup_against(&repo, work.path(), "c_incr", 6, 0, now, Some("a_full"));
        expire(&repo, &plan, false).unwrap();
        assert_eq!(names(&repo), ["a_full", "b_full", "c_incr"]);
        let (_, problems) = crate::backup::verify_backup(&repo, "c_incr").unwrap();
        assert_eq!(problems, []);
        // The stale plan's WAL list included what the kept chain needs: none of it went.
        for key in &plan.expired_wal {
            assert!(
                repo.storage().open(key).is_ok(),
                "{key}: WAL of the kept chain was expired"
            );
        }

        // The other order: the parent's removal has begun (its metadata is gone) when the
        // incremental completes. It withdraws: never listed without its parent.
        let (writer, entries, metadata) =
            staged_backup(&repo, work.path(), "d_incr", 8, 0, now, Some("b_full"));
        repo.storage()
            .delete(&format!("{}backup.json", backup_prefix("b_full")))
            .unwrap();
        let error = writer.finish(entries, None, metadata).unwrap_err();
        assert!(matches!(error, Error::BrokenChain { .. }), "{error}");
        assert!(!names(&repo).contains(&"d_incr".to_string()));
    }

    /// retention_full counts full backups: two of them kept means the two newest full
    /// backups and the incrementals between and after them, however old.
    #[test]
    fn retention_full_counts_full_backups() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(dir.path());
        let now = Utc::now();
        for segment in 1..=9 {
            archive_segment(&repo, work.path(), segment);
        }
        backup(&repo, work.path(), "a_full", 2, 90, now);
        backup(&repo, work.path(), "b_full", 3, 80, now);
        backup_against(&repo, work.path(), "c_incr", 4, 70, now, Some("b_full"));
        backup(&repo, work.path(), "d_full", 5, 60, now);
        backup_against(&repo, work.path(), "e_incr", 6, 50, now, Some("d_full"));
        backup_against(&repo, work.path(), "f_incr", 7, 40, now, Some("e_incr"));
        let plan = plan_expiry(&repo, RetentionPolicy::uniform(30, 2), now).unwrap();
        assert_eq!(plan.expired_backups, ["a_full"]);
        assert_eq!(
            plan.kept_backups,
            ["b_full", "c_incr", "d_full", "e_incr", "f_incr"]
        );
    }

    /// A full backup labelled as the schedule `label` takes it.
    fn backup_labelled(
        repo: &Repository,
        work: &Path,
        name: &str,
        segment: u64,
        age_days: i64,
        now: DateTime<Utc>,
        label: &str,
    ) {
        let (writer, entries, mut report) =
            staged_backup(repo, work, name, segment, age_days, now, None);
        report.backup_type = label.into();
        writer.finish(entries, None, report).unwrap();
    }

    /// The playbook's tiers: each backup kept for its tier's days; WAL continuous from the
    /// oldest backup within retention_days, and before it only what makes each kept backup
    /// consistent.
    #[test]
    fn each_tier_keeps_its_backups_for_its_days_and_old_ones_only_their_own_wal() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(dir.path());
        let now = Utc::now();
        for segment in 1..=9 {
            archive_segment(&repo, work.path(), segment);
        }
        backup_labelled(&repo, work.path(), "a_weekly", 2, 200, now, "weekly");
        backup_labelled(&repo, work.path(), "b_daily", 4, 60, now, "daily");
        backup_labelled(&repo, work.path(), "c_daily", 5, 100, now, "daily");
        backup_labelled(&repo, work.path(), "d_hourly", 6, 10, now, "hourly");
        backup_labelled(&repo, work.path(), "e_hourly", 8, 1, now, "hourly");
        let policy = RetentionPolicy {
            tiers: crate::config::TierDays {
                hourly: Some(7),
                daily: Some(90),
                weekly: Some(365),
            },
            ..RetentionPolicy::uniform(30, 1)
        };
        let plan = plan_expiry(&repo, policy, now).unwrap();
        // Oldest first: c_daily (100 days) is past the daily tier, d_hourly past the hourly.
        assert_eq!(plan.expired_backups, ["c_daily", "d_hourly"]);
        assert_eq!(plan.kept_backups, ["a_weekly", "b_daily", "e_hourly"]);
        let expired_segments: Vec<String> = plan
            .expired_wal
            .iter()
            .map(|key| key.rsplit('/').next().unwrap()[..24].to_string())
            .collect();
        let segment = |n: u64| format!("{:024X}", (1u128 << 64) | n as u128);
        assert_eq!(
            expired_segments,
            [1, 3, 5, 6, 7].map(segment),
            "kept: 2 (a_weekly), 4 (b_daily), 8 and 9 (the window)"
        );

        // Without tiers, retention_days alone: everything older than 30 days goes.
        let uniform = plan_expiry(&repo, RetentionPolicy::uniform(30, 1), now).unwrap();
        assert_eq!(uniform.expired_backups, ["a_weekly", "c_daily", "b_daily"]);
    }

    #[test]
    fn a_kept_incremental_keeps_its_chain() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(dir.path());
        let now = Utc::now();
        for segment in 1..=9 {
            archive_segment(&repo, work.path(), segment);
        }
        backup(&repo, work.path(), "a_full", 2, 50, now);
        backup(&repo, work.path(), "b_full", 3, 45, now);
        backup_against(&repo, work.path(), "c_incr", 4, 40, now, Some("b_full"));
        backup_against(&repo, work.path(), "d_incr", 6, 10, now, Some("c_incr"));
        backup(&repo, work.path(), "e_full", 8, 1, now);
        let policy = RetentionPolicy::uniform(30, 1);
        let plan = plan_expiry(&repo, policy, now).unwrap();
        assert_eq!(plan.expired_backups, ["a_full"]);
        assert_eq!(plan.kept_backups, ["b_full", "c_incr", "d_incr", "e_full"]);
        // WAL from the chain's full backup on.
        assert!(plan
            .expired_wal
            .iter()
            .all(|k| k.contains("000000010000000000000001")
                || k.contains("000000010000000000000002")));
        expire(&repo, &plan, false).unwrap();
        let (_, problems) = crate::backup::verify_backup(&repo, "d_incr").unwrap();
        assert_eq!(problems, []);

        // Once the incremental is past retention too, the whole chain goes, newest first.
        let later = now + chrono::Duration::days(25);
        let plan = plan_expiry(&repo, policy, later).unwrap();
        assert_eq!(plan.expired_backups, ["b_full", "c_incr", "d_incr"]);
        expire(&repo, &plan, false).unwrap();
        let left: Vec<String> = list_backups(&repo)
            .unwrap()
            .into_iter()
            .map(|b| b.playbook.backup_name)
            .collect();
        assert_eq!(left, ["e_full"]);
    }

    #[test]
    fn expires_old_backups_and_the_wal_only_they_needed() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(dir.path());
        let now = Utc::now();
        for segment in 1..=9 {
            archive_segment(&repo, work.path(), segment);
        }
        backup(&repo, work.path(), "a_full", 2, 40, now);
        backup(&repo, work.path(), "b_full", 4, 35, now);
        backup(&repo, work.path(), "c_full", 6, 10, now);
        backup(&repo, work.path(), "d_full", 8, 1, now);

        let plan = plan_expiry(&repo, RetentionPolicy::uniform(30, 1), now).unwrap();
        assert_eq!(plan.expired_backups, ["a_full", "b_full"]);
        assert_eq!(plan.kept_backups, ["c_full", "d_full"]);
        let expired_segments: Vec<&str> = plan
            .expired_wal
            .iter()
            .map(|k| &k.rsplit('/').next().unwrap()[..24])
            .collect();
        assert_eq!(
            expired_segments,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000010000000000000005"
            ]
        );

        // At least three backups: b_full stays, and with it the WAL from segment 4.
        let plan3 = plan_expiry(&repo, RetentionPolicy::uniform(30, 3), now).unwrap();
        assert_eq!(plan3.expired_backups, ["a_full"]);
        assert_eq!(plan3.expired_wal.len(), 3);

        // An interrupted backup: objects, no metadata. Listed as unfinished, never as a backup,
        // and removed only when the caller says no backup can be running.
        let mut orphan = repo
            .storage()
            .create("backups/e_full/data/000001.zst")
            .unwrap();
        orphan.write_all(b"partial").unwrap();
        orphan.commit().unwrap();
        let plan = plan_expiry(&repo, RetentionPolicy::uniform(30, 2), now).unwrap();
        assert_eq!(plan.unfinished_backups, ["e_full"]);
        expire(
            &repo,
            &ExpiryPlan {
                unfinished_backups: plan.unfinished_backups.clone(),
                ..Default::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(repo.storage().list("backups/e_full/").unwrap().len(), 1);

        expire(&repo, &plan, true).unwrap();
        // Only its tombstone stays (a week), so that its writer could not complete it now.
        let left: Vec<String> = repo
            .storage()
            .list("backups/e_full/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(left, ["backups/e_full/backup.json"]);
        let left: Vec<String> = list_backups(&repo)
            .unwrap()
            .into_iter()
            .map(|b| b.playbook.backup_name)
            .collect();
        assert_eq!(left, ["c_full", "d_full"]);
        assert!(repo.storage().list("backups/a_full/").unwrap().is_empty());
        // What the kept backups need is intact.
        for name in ["c_full", "d_full"] {
            let (_, problems) = crate::backup::verify_backup(&repo, name).unwrap();
            assert!(problems.is_empty(), "{name}: {problems:?}");
        }
        assert!(repo
            .find_wal(&crate::wal::WalFileName::parse("000000010000000000000006").unwrap())
            .unwrap()
            .is_some());
        assert!(repo
            .find_wal(&crate::wal::WalFileName::parse("000000010000000000000005").unwrap())
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_newest_backup_is_never_expired() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(dir.path());
        let now = Utc::now();
        for segment in 1..=4 {
            archive_segment(&repo, work.path(), segment);
        }
        backup(&repo, work.path(), "old_full", 2, 400, now);
        backup(&repo, work.path(), "older_full", 1, 500, now);
        let plan = plan_expiry(&repo, RetentionPolicy::uniform(30, 0), now).unwrap();
        // Sorted by start time, "old_full" is the newest of the two.
        assert_eq!(plan.kept_backups, ["old_full"]);
        assert_eq!(plan.expired_backups, ["older_full"]);
        assert_eq!(plan.expired_wal.len(), 1);
    }

    #[test]
    fn nothing_expires_without_backups() {
        let dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(dir.path());
        archive_segment(&repo, work.path(), 1);
        let plan = plan_expiry(&repo, RetentionPolicy::uniform(0, 1), Utc::now()).unwrap();
        assert_eq!(plan, ExpiryPlan::default());
    }

    fn dump(database: &str, days_ago: i64, now: DateTime<Utc>) -> crate::dump::DumpMetadata {
        let stop = (now - chrono::Duration::days(days_ago)).to_rfc3339();
        serde_json::from_value(serde_json::json!({
            "backup_name": format!("{database}_full_{days_ago}"), "backup_type": "full",
            "timestamp": "", "database": database, "host": "", "size_bytes": 1, "checksum": "",
            "compression": "gzip", "encryption": false, "duration_seconds": 1.0, "format": 1,
            "kind": "logical", "content": "database",
            "file": format!("{database}_full_{days_ago}.sql.gz"), "sql_size_bytes": 1,
            "sql_sha256": "", "start_time": stop, "stop_time": stop, "pg_version_num": 170000,
            "system_identifier": "1", "pg_dump_version": ""
        }))
        .unwrap()
    }

    #[test]
    fn each_databases_dumps_keep_their_newest() {
        let now = Utc::now();
        // Oldest first, as listed: a database dumped daily, and one dumped once, long ago.
        let dumps = vec![
            dump("rare", 90, now),
            dump("simcorp", 40, now),
            dump("simcorp", 35, now),
            dump("simcorp", 2, now),
            dump("simcorp", 1, now),
        ];
        let mut plan = ExpiryPlan::default();
        let policy = RetentionPolicy::uniform(30, 1);
        plan_dump_expiry(&dumps, policy, now - chrono::Duration::days(30), &mut plan);
        assert_eq!(
            plan.expired_dumps,
            vec!["simcorp_full_40.sql.gz", "simcorp_full_35.sql.gz"]
        );
        assert!(plan.kept_dumps.contains(&"rare_full_90.sql.gz".to_string()));
        assert_eq!(plan.kept_dumps.len(), 3);
    }
}
