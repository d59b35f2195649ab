//! `sc-backup wal-fetch %f %p`: PostgreSQL's restore_command.
//!
//! Exit status 0: the file is at %p, verified. Exit status 1, silently: the file is not in the
//! repository, which is how PostgreSQL learns that recovery reached the end of the archive.
//! Anything else (corruption, wrong key, unreachable repository) is a loud failure.

use std::path::Path;

use sc_backup_core::codec::RepositoryKey;
use sc_backup_core::{Error, Repository, Settings};

use crate::CliError;

pub fn run(
    settings: &Settings,
    wal_file: &str,
    destination: &Path,
    identity_file: Option<&Path>,
) -> Result<(), CliError> {
    let mut repository = Repository::open(settings)?;
    if let Some(path) = identity_file {
        // Written by `sc-backup restore`: spares each call the passphrase derivation.
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::Message(format!(
                "could not read identity file \"{}\": {e}",
                path.display()
            ))
        })?;
        let key = RepositoryKey::from_identity_file(&text)
            .map_err(|e| CliError::Message(format!("identity file \"{}\": {e}", path.display())))?;
        repository = repository.with_key(key)?;
    }
    match repository.fetch_wal(wal_file, destination) {
        Ok(_) => Ok(()),
        Err(Error::WalNotFound(_)) => Err(CliError::QuietNotFound),
        Err(e) => Err(e.into()),
    }
}
