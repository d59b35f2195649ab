//! The maintenance operations every front end offers (`sc_expire()` and the scheduler,
//! `sc-backup expire`; `sc_delete_backup()`, `sc-backup delete`), written once: the front ends
//! add their locks, audit records and wording.

use chrono::{DateTime, Utc};

use super::retention::{expire, plan_expiry, ExpiryPlan, RetentionPolicy};
use crate::backup::{delete_backup, delete_backup_with_dependents};
use crate::dump::{delete_dump_file, find_named, Named};
use crate::error::Result;
use crate::repository::Repository;

/// Plans expiry under `policy` as of `now`, shows the plan to `planned` (an audit record
/// describes it, whether or not carrying it out then fails) and, unless `dry_run`, carries it
/// out. With `no_backup_runs` (the caller holds the backup lock, so no backup of this cluster
/// can start, run or finish meanwhile) unfinished backups are debris and go too; otherwise
/// they stay.
pub fn expire_now(
    repository: &Repository,
    policy: RetentionPolicy,
    now: DateTime<Utc>,
    dry_run: bool,
    no_backup_runs: bool,
    planned: impl FnOnce(&ExpiryPlan),
) -> Result<ExpiryPlan> {
    let plan = plan_expiry(repository, policy, now)?;
    planned(&plan);
    if !dry_run {
        expire(repository, &plan, no_backup_runs)?;
    }
    Ok(plan)
}

/// What [`delete_named`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// A logical dump file, with its `.sha256` and `.meta`.
    Dump(String),
    /// Backups, the named one last (its dependents first, when asked to take them along).
    Backups(Vec<String>),
}

/// Deletes the backup or logical dump named `name`. A backup others depend on is refused,
/// naming them, unless `with_dependents`; then they go first, newest first. The WAL stays
/// until expiry.
pub fn delete_named(repository: &Repository, name: &str, with_dependents: bool) -> Result<Deleted> {
    match find_named(repository, name)? {
        Named::Dump(dump) => {
            delete_dump_file(repository, &dump.file)?;
            Ok(Deleted::Dump(dump.file))
        }
        Named::Backup(metadata) if with_dependents => {
            delete_backup_with_dependents(repository, &metadata.playbook.backup_name)
                .map(Deleted::Backups)
        }
        Named::Backup(metadata) => {
            delete_backup(repository, &metadata.playbook.backup_name)?;
            Ok(Deleted::Backups(vec![metadata.playbook.backup_name]))
        }
    }
}
