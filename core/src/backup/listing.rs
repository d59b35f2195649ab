//! Finding backups: one listing of `backups/`, each finished backup's metadata read and checked.

use super::metadata::{metadata_key, METADATA_NAME};
use super::{BackupMetadata, BACKUPS_PREFIX};
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
    /// Names of backups with objects but no metadata: interrupted, or still being written.
    pub unfinished: Vec<String>,
}

/// Lists `backups/` once (on an object store that listing pages through every data file's
/// key, so callers needing both halves must not list twice) and reads each finished
/// backup's metadata.
pub fn scan_backups(repository: &Repository) -> Result<BackupScan> {
    let mut has_metadata = std::collections::BTreeMap::<String, bool>::new();
    for object in repository.storage().list(BACKUPS_PREFIX)? {
        let Some((name, rest)) = object
            .key
            .strip_prefix(BACKUPS_PREFIX)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        *has_metadata.entry(name.to_string()).or_default() |= rest == METADATA_NAME;
    }
    let mut scan = BackupScan {
        finished: Vec::new(),
        unfinished: Vec::new(),
    };
    for (name, finished) in has_metadata {
        if !finished {
            scan.unfinished.push(name);
            continue;
        }
        match read_metadata(repository, &name) {
            Ok(metadata) => scan.finished.push(metadata),
            // Deleted since it was listed (an expiry running meanwhile): gone, not an error.
            Err(Error::BackupNotFound(_)) => continue,
            Err(error) => return Err(error),
        }
    }
    scan.finished
        .sort_by(|a, b| (&a.start_time, &a.backup_name).cmp(&(&b.start_time, &b.backup_name)));
    Ok(scan)
}

pub fn read_metadata(repository: &Repository, name: &str) -> Result<BackupMetadata> {
    let key = metadata_key(name);
    let data = read_small_object(repository.storage(), &key)?
        .ok_or_else(|| Error::BackupNotFound(name.to_string()))?;
    let metadata: BackupMetadata =
        serde_json::from_slice(&data).map_err(|e| Error::InvalidMetadata {
            object: key.clone(),
            reason: e.to_string(),
        })?;
    if !BackupMetadata::checksum_matches(&data, &metadata.metadata_sha256) {
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
    if metadata.backup_name != name {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: format!("it describes backup \"{}\"", metadata.backup_name),
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
