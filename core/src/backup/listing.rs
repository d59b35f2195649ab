//! Finding backups: one listing of `backups/`, each finished backup's metadata read and checked.

use super::{metadata_key, METADATA_NAME};
use super::{BackupMetadata, BACKUPS_PREFIX};
use crate::codec::authentication;
use crate::error::{Error, Result};
use crate::repository::{read_small_object, Repository};

/// Every complete backup in the repository, oldest first.
pub fn list_backups(repository: &Repository) -> Result<Vec<BackupMetadata>> {
    Ok(scan_backups(repository)?.finished)
}

/// What one listing of `backups/` finds.
pub struct BackupScan {
    /// Complete backups (their metadata is there and valid), oldest first.
    pub finished: Vec<BackupMetadata>,
    /// Names of backups with objects but no metadata: interrupted, or still being written;
    /// and those an expiry claimed ([`tombstone`]) but did not finish removing.
    pub unfinished: Vec<String>,
    /// Unfinished backups an expiry removed, by name, with when it claimed them (Unix time):
    /// their tombstone stays so that a writer still running cannot complete them.
    pub tombstones: Vec<(String, u64)>,
}

/// Lists `backups/` once (on an object store that listing pages through every data file's
/// key, so callers needing both halves must not list twice) and reads each finished
/// backup's metadata.
pub fn scan_backups(repository: &Repository) -> Result<BackupScan> {
    // Per backup: whether its metadata key is there, and how many objects it has.
    let mut listed = std::collections::BTreeMap::<String, (bool, usize)>::new();
    for object in repository.storage().list(BACKUPS_PREFIX)? {
        let Some((name, rest)) = object
            .key
            .strip_prefix(BACKUPS_PREFIX)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let entry = listed.entry(name.to_string()).or_default();
        entry.0 |= rest == METADATA_NAME;
        entry.1 += 1;
    }
    let mut scan = BackupScan {
        finished: Vec::new(),
        unfinished: Vec::new(),
        tombstones: Vec::new(),
    };
    for (name, (finished, objects)) in listed {
        if !finished {
            scan.unfinished.push(name);
            continue;
        }
        match read_listed(repository, &name) {
            Ok(Listed::Backup(metadata)) => scan.finished.push(*metadata),
            Ok(Listed::Tombstone(claimed)) => {
                if objects > 1 {
                    // Claimed by an expiry that has not finished removing it.
                    scan.unfinished.push(name.clone());
                }
                scan.tombstones.push((name, claimed));
            }
            // Deleted since it was listed (an expiry running meanwhile): gone, not an error.
            Ok(Listed::Gone) => continue,
            Err(error) => return Err(error),
        }
    }
    scan.finished.sort_by(|a, b| {
        (&a.playbook.start_time, &a.playbook.backup_name)
            .cmp(&(&b.playbook.start_time, &b.playbook.backup_name))
    });
    Ok(scan)
}

/// What the metadata key of a listed backup holds.
enum Listed {
    Backup(Box<BackupMetadata>),
    /// An expiry's claim on an unfinished backup ([`tombstone`]), made at this Unix time.
    Tombstone(u64),
    Gone,
}

/// The marker an expiry writes as the metadata of an unfinished backup it removes: created only
/// if absent, like a backup's own metadata, so that the backup either completed first (and is
/// kept) or can no longer complete. Never listed as a backup.
/// It stays after the backup's objects are gone, so that a writer still running (on another
/// host, say) fails rather than completes a backup whose files were removed, until
/// [`crate::ops::retention`] removes it after a week.
pub fn tombstone(name: &str, claimed_unix: u64) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({
        TOMBSTONE_FIELD: "an unfinished backup, removed by expiry",
        "backup_name": name,
        "claimed_unix": claimed_unix,
    }))
    .expect("a tombstone serializes")
}

const TOMBSTONE_FIELD: &str = "sc_backup_tombstone";

/// When a tombstone was written, if `data` is one (an unreadable time counts as now: kept).
fn tombstone_claimed(data: &[u8]) -> Option<u64> {
    let value = serde_json::from_slice::<serde_json::Value>(data).ok()?;
    value.get(TOMBSTONE_FIELD)?;
    Some(
        value
            .get("claimed_unix")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| chrono::Utc::now().timestamp().max(0) as u64),
    )
}

fn read_listed(repository: &Repository, name: &str) -> Result<Listed> {
    let key = metadata_key(name);
    let Some(data) = read_small_object(repository.storage(), &key)? else {
        return Ok(Listed::Gone);
    };
    if let Some(claimed) = tombstone_claimed(&data) {
        return Ok(Listed::Tombstone(claimed));
    }
    let document = authentication::open(repository.key()?, &key, &data).map_err(|reason| {
        Error::NotAuthenticated {
            object: key.clone(),
            reason,
        }
    })?;
    parse_metadata(name, &key, &document).map(|metadata| Listed::Backup(Box::new(metadata)))
}

pub fn read_metadata(repository: &Repository, name: &str) -> Result<BackupMetadata> {
    match read_listed(repository, name)? {
        Listed::Backup(metadata) => Ok(*metadata),
        Listed::Tombstone(_) | Listed::Gone => Err(Error::BackupNotFound(name.to_string())),
    }
}

fn parse_metadata(name: &str, key: &str, data: &[u8]) -> Result<BackupMetadata> {
    let key = key.to_string();
    let metadata: BackupMetadata =
        serde_json::from_slice(data).map_err(|e| Error::InvalidMetadata {
            object: key.clone(),
            reason: e.to_string(),
        })?;
    if !BackupMetadata::checksum_matches(data, &metadata.metadata_sha256) {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: "its checksum does not match its content".into(),
        });
    }
    if metadata.format > super::manifest::FORMAT_VERSION {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: format!(
                "it is in format {}, written by a newer sc_backup; this one reads up to {}",
                metadata.format,
                super::manifest::FORMAT_VERSION
            ),
        });
    }
    // Values that size buffers and divide: PostgreSQL's own ranges (BLCKSZ 1-32 kB,
    // --wal-segsize 1 MB-1 GB, powers of two). A document with others is not a backup of
    // PostgreSQL, and a page buffer of 4 GiB would abort the process (a backend: the cluster).
    let block_size_valid = metadata.block_size == 0
        || (metadata.block_size.is_power_of_two() && (1024..=32768).contains(&metadata.block_size));
    let segment_size_valid = metadata.wal_segment_size.is_power_of_two()
        && ((1 << 20)..=(1 << 30)).contains(&metadata.wal_segment_size);
    if !block_size_valid || !segment_size_valid {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: format!(
                "block size {} or WAL segment size {} is not one PostgreSQL can have",
                metadata.block_size, metadata.wal_segment_size
            ),
        });
    }
    if metadata.playbook.backup_name != name {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: format!("it describes backup \"{}\"", metadata.playbook.backup_name),
        });
    }
    Ok(metadata)
}

/// Finds a backup by name, or the newest with `latest`.
pub fn find_backup(repository: &Repository, name: &str) -> Result<BackupMetadata> {
    if name == "latest" {
        list_backups(repository)?
            .pop()
            .ok_or_else(|| Error::BackupNotFound("latest".into()))
    } else {
        read_metadata(repository, name)
    }
}
