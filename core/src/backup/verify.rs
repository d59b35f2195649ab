//! Re-reading a backup: every stored file decoded and checked against its digest, and the WAL it
//! needs.

use std::io;

use serde::Serialize;

use super::incremental::PageStreamParser;
use super::manifest::{read_backup_file, Stored};
use super::{
    ancestors, backup_prefix, find_backup, read_catalog, read_manifest, BackupChain,
    BackupMetadata, Manifest, ManifestEntry,
};
use crate::codec::ExpectedDigest;
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::wal::WalFileName;

/// One problem found by [`verify_backup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

/// Re-reads every stored file of a backup, and of every backup it depends on, and the WAL it
/// needs, reporting each problem.
pub fn verify_backup(
    repository: &Repository,
    name: &str,
) -> Result<(BackupMetadata, Vec<Problem>)> {
    let metadata = find_backup(repository, name)?;
    let mut problems = Vec::new();
    let manifest = check_stored_objects(repository, &metadata, &mut problems);
    if metadata.parent.is_some() {
        match ancestors(repository, &metadata) {
            Ok(parents) => {
                let mut complete = manifest.is_some();
                for parent in &parents {
                    complete &= check_stored_objects(repository, parent, &mut problems).is_some();
                }
                // Each file the chain's backups do not hold whole must be in the one before.
                if let (true, Some(manifest)) = (complete, &manifest) {
                    match BackupChain::load(repository, &metadata, manifest) {
                        Ok(chain) => {
                            for (backup, path) in chain.unresolved_files() {
                                problems.push(Problem {
                                    object: format!("{}manifest ({path})", backup_prefix(&backup)),
                                    problem: format!(
                                        "\"{path}\" is not held whole, and the backup before it in the chain does not have it"
                                    ),
                                });
                            }
                        }
                        Err(e) => problems.push(Problem {
                            object: backup_prefix(&metadata.playbook.backup_name),
                            problem: e.to_string(),
                        }),
                    }
                }
            }
            Err(e) => problems.push(Problem {
                object: backup_prefix(&metadata.playbook.backup_name),
                problem: e.to_string(),
            }),
        }
    }
    for wal_file in metadata.required_wal() {
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

/// Checks one backup's manifest, catalog snapshot and stored files; returns the manifest
/// when it could be read.
fn check_stored_objects(
    repository: &Repository,
    metadata: &BackupMetadata,
    problems: &mut Vec<Problem>,
) -> Option<Manifest> {
    let prefix = backup_prefix(&metadata.playbook.backup_name);
    let manifest = match read_manifest(repository, metadata) {
        Ok(manifest) => Some(manifest),
        Err(e) => {
            problems.push(Problem {
                object: format!("{prefix}{}", metadata.manifest),
                problem: e.to_string(),
            });
            None
        }
    };
    if let Err(e) = read_catalog(repository, metadata) {
        problems.push(Problem {
            object: format!("{prefix}{}", metadata.catalog),
            problem: e.to_string(),
        });
    }
    for entry in manifest.iter().flat_map(|m| m.entries.iter()) {
        let Some(object) = &entry.object else {
            continue;
        };
        if let Err(e) = check_stored_file(repository, metadata, entry) {
            problems.push(Problem {
                object: format!("{prefix}{object} ({})", entry.path),
                problem: e.to_string(),
            });
        }
    }
    manifest
}

fn check_stored_file(
    repository: &Repository,
    metadata: &BackupMetadata,
    entry: &ManifestEntry,
) -> Result<()> {
    let backup = &metadata.playbook.backup_name;
    if entry.stored != Stored::Pages {
        return read_backup_file(repository, backup, entry, &mut io::sink(), "nowhere").map(|_| ());
    }
    // A page stream must also parse: header, pages in order, within the file's length.
    let blocks = entry.size.unwrap_or(0) / u64::from(metadata.block_size());
    let mut parser = PageStreamParser::new(metadata.block_size(), blocks, |_, _: &[u8]| Ok(()));
    read_backup_file(repository, backup, entry, &mut parser, "nowhere")?;
    let pages = parser.finish().map_err(|reason| Error::InvalidMetadata {
        object: format!(
            "{}{}",
            backup_prefix(backup),
            entry.object.as_deref().unwrap_or("")
        ),
        reason,
    })?;
    if entry.pages.is_some_and(|expected| expected != pages) {
        return Err(Error::InvalidMetadata {
            object: format!("{}manifest ({})", backup_prefix(backup), entry.path),
            reason: format!(
                "it lists {} pages, the object holds {pages}",
                entry.pages.unwrap_or(0)
            ),
        });
    }
    Ok(())
}

impl Repository {
    /// Decodes a stored WAL object completely and checks its digest.
    pub fn check_wal(&self, stored: &crate::wal::StoredWal) -> Result<()> {
        self.read_verified(
            &stored.key,
            stored.spec,
            ExpectedDigest::Decoded(stored.sha256),
            None,
            &mut io::sink(),
            "nowhere",
        )
        .map(|_| ())
    }
}
