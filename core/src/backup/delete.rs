//! Removing backups: one on purpose (refused while others depend on it, or with them), and
//! what expiry removes, finished or not. Each removal takes the metadata first, so a backup is
//! listed whole or not at all, and rechecks its dependents afterwards, so no listed backup is
//! ever left without its parent, across processes and hosts alike.

use std::io::Write;

use super::dependents as dependents_of;
use super::{backup_prefix, list_backups, metadata_key, read_metadata, tombstone};
use crate::error::{Error, Result};
use crate::repository::Repository;

/// Deletes one backup: its metadata first (from then on it is not listed), then its objects.
/// Refused, naming them, when incremental or differential backups depend on it.
pub fn delete_backup(repository: &Repository, name: &str) -> Result<()> {
    read_metadata(repository, name)?;
    let dependents = dependents_of(&list_backups(repository)?, name);
    if !dependents.is_empty() {
        return Err(Error::BackupHasDependents {
            backup: name.to_string(),
            dependents,
        });
    }
    match remove_backup(repository, name)? {
        Removal::Removed => Ok(()),
        Removal::KeptForADependent => Err(Error::BackupHasDependents {
            backup: name.to_string(),
            dependents: dependents_of(&list_backups(repository)?, name),
        }),
    }
}

/// Deletes a backup and every backup that depends on it, newest first (so a chain is never
/// left with a missing middle); returns their names, the named backup last.
pub fn delete_backup_with_dependents(repository: &Repository, name: &str) -> Result<Vec<String>> {
    read_metadata(repository, name)?;
    let mut doomed = dependents_of(&list_backups(repository)?, name);
    doomed.reverse();
    doomed.push(name.to_string());
    for backup in &doomed {
        if remove_backup(repository, backup)? == Removal::KeptForADependent {
            return Err(Error::BackupHasDependents {
                backup: backup.clone(),
                dependents: dependents_of(&list_backups(repository)?, backup),
            });
        }
    }
    Ok(doomed)
}

/// What [`remove_backup`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    Removed,
    /// A backup that depends on it completed meanwhile (an incremental started before the
    /// plan, say, or on another host): put back, kept.
    KeptForADependent,
}

/// Removes a finished backup: its metadata first (from then on it is not listed), then, unless
/// a backup that depends on it has completed meanwhile, its objects.
///
/// The race this closes: a plan (or a user) chose `name` when nothing depended on it, and an
/// incremental backup taken against it commits while it is being removed. The writer of such
/// a backup checks its parent after committing and withdraws itself if the parent's metadata is
/// gone ([`crate::backup::BackupWriter::finish`]); here the dependents are listed only after
/// the metadata is gone. Whichever comes second sees the other, so no listed backup is ever
/// left without its parent, across processes and hosts alike.
pub(crate) fn remove_backup(repository: &Repository, name: &str) -> Result<Removal> {
    let prefix = backup_prefix(name);
    let metadata_key = metadata_key(name);
    let metadata = crate::repository::read_small_object(repository.storage(), &metadata_key)?;
    repository.storage().delete(&metadata_key)?;
    let dependents = dependents_of(&list_backups(repository)?, name);
    if let (false, Some(metadata)) = (dependents.is_empty(), metadata) {
        let mut writer = repository.storage().create(&metadata_key)?;
        writer
            .write_all(&metadata)
            .map_err(|e| Error::io("write", &metadata_key, e))?;
        writer.commit()?;
        return Ok(Removal::KeptForADependent);
    }
    for object in repository.storage().list(&prefix)? {
        repository.storage().delete(&object.key)?;
    }
    Ok(Removal::Removed)
}

/// Removes what an unfinished backup left, unless it completes first. Its metadata key is
/// claimed with a tombstone, created only if absent, as the writer creates the metadata: one of
/// the two wins. The writer losing fails ("removed by expiry while it ran"); expiry losing
/// finds a backup that completed after the plan, and leaves it. The tombstone goes last, so an
/// interrupted removal is finished by the next one.
pub(crate) fn remove_unfinished_backup(repository: &Repository, name: &str) -> Result<()> {
    let prefix = backup_prefix(name);
    let metadata_key = metadata_key(name);
    let mut writer = repository.storage().create(&metadata_key)?;
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    writer
        .write_all(&tombstone(name, now))
        .map_err(|e| Error::io("write", &metadata_key, e))?;
    match writer.commit() {
        Ok(()) => {}
        Err(crate::storage::StorageError::AlreadyExists { .. }) => {
            match read_metadata(repository, name) {
                // Completed after the plan listed it unfinished: not ours to remove.
                Ok(_) => return Ok(()),
                // Claimed by an earlier removal that did not finish: finish it.
                Err(Error::BackupNotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Err(e) => return Err(e.into()),
    }
    for object in repository.storage().list(&prefix)? {
        if object.key != metadata_key {
            repository.storage().delete(&object.key)?;
        }
    }
    // The tombstone stays (see tombstone).
    Ok(())
}

/// How long the tombstone of a removed unfinished backup stays: far longer than any backup runs.
pub const TOMBSTONES_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
