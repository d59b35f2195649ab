//! Re-reading a backup: every stored file decoded and checked against its digest, and the WAL it
//! needs.

use std::io;

use serde::Serialize;

use super::manifest::read_backup_file;
use super::{
    backup_prefix, find_backup, read_catalog, read_manifest, BackupMetadata, ManifestEntry,
};
use crate::error::Result;
use crate::repository::Repository;
use crate::wal::WalFileName;

/// One problem found by [`verify_backup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

/// Re-reads every stored file of a backup and the WAL it needs, reporting each problem.
pub fn verify_backup(
    repository: &Repository,
    name: &str,
) -> Result<(BackupMetadata, Vec<Problem>)> {
    let metadata = find_backup(repository, name)?;
    let mut problems = Vec::new();
    let manifest = match read_manifest(repository, &metadata) {
        Ok(manifest) => Some(manifest),
        Err(e) => {
            problems.push(Problem {
                object: format!(
                    "{}{}",
                    backup_prefix(&metadata.backup_name),
                    metadata.manifest
                ),
                problem: e.to_string(),
            });
            None
        }
    };
    if let Err(e) = read_catalog(repository, &metadata) {
        problems.push(Problem {
            object: format!(
                "{}{}",
                backup_prefix(&metadata.backup_name),
                metadata.catalog
            ),
            problem: e.to_string(),
        });
    }
    for entry in manifest.iter().flat_map(|m| m.entries.iter()) {
        let Some(object) = &entry.object else {
            continue;
        };
        if let Err(e) = check_stored_file(repository, &metadata.backup_name, entry) {
            problems.push(Problem {
                object: format!(
                    "{}{object} ({})",
                    backup_prefix(&metadata.backup_name),
                    entry.path
                ),
                problem: e.to_string(),
            });
        }
    }
    for wal_file in metadata.required_wal()? {
        let name = WalFileName::parse(&wal_file)?;
        match repository.find_wal(&name) {
            Ok(Some(stored)) => {
                if let Err(e) = repository.check_wal(&stored) {
                    problems.push(Problem {
                        object: stored.key,
                        problem: e.to_string(),
                    });
                }
            }
            Ok(None) => problems.push(Problem {
                object: format!("WAL {wal_file}"),
                problem: format!(
                    "WAL file {wal_file}, needed to make the backup consistent, is missing"
                ),
            }),
            Err(e) => problems.push(Problem {
                object: format!("WAL {wal_file}"),
                problem: e.to_string(),
            }),
        }
    }
    Ok((metadata, problems))
}

fn check_stored_file(repository: &Repository, backup: &str, entry: &ManifestEntry) -> Result<()> {
    read_backup_file(repository, backup, entry, &mut io::sink(), "nowhere").map(|_| ())
}

impl Repository {
    /// Decodes a stored WAL object completely and checks its digest.
    pub fn check_wal(&self, stored: &crate::wal::StoredWal) -> Result<()> {
        self.read_verified(
            &stored.key,
            stored.spec,
            &stored.sha256,
            None,
            &mut io::sink(),
            "nowhere",
        )
        .map(|_| ())
    }
}
