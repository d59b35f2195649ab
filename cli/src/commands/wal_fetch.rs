//! `sc-backup wal-fetch %f %p`: PostgreSQL's restore_command.
//!
//! Exit status 0: the file is at %p, verified. Exit status 1, silently: the file is not in the
//! repository, which is how PostgreSQL learns that recovery reached the end of the archive.
//! Anything else (corruption, wrong key, unreachable repository) is a loud failure.
//!
//! In a data directory in recovery, segments come from the prefetch spool when a verified copy
//! is there (`sc_backup_core::wal_prefetch`), and each call makes sure a prefetcher runs: this
//! same program, started detached with the same arguments and `SC_BACKUP_WAL_PREFETCHER` set,
//! so it resolves the settings exactly as this call did. The spool only ever saves downloads:
//! the repository's own answer decides what exists, and any trouble with the spool falls back
//! to fetching directly.

use std::path::Path;
use std::process::{Command, Stdio};

use sc_backup_core::codec::RepositoryKey;
use sc_backup_core::wal::{WalFileKind, WalFileName};
use sc_backup_core::wal_prefetch::{default_depth, Spool};
use sc_backup_core::{Error, Repository, Settings};

use crate::CliError;

/// Set (to the depth) in the environment of the prefetcher a `wal-fetch` starts.
const PREFETCHER_ENV: &str = "SC_BACKUP_WAL_PREFETCHER";

pub fn run(
    settings: &Settings,
    wal_file: &str,
    destination: &Path,
    identity_file: Option<&Path>,
    prefetch: Option<usize>,
) -> Result<(), CliError> {
    let object_store = settings.s3.is_some() || settings.gcs.is_some();
    let location = settings.repository.to_string();
    let in_recovery_spool = || {
        std::env::current_dir()
            .ok()
            .and_then(|dir| Spool::in_recovery(&dir, &location).ok().flatten())
    };
    if let Some(depth) = std::env::var(PREFETCHER_ENV)
        .ok()
        .and_then(|d| d.parse().ok())
    {
        let Some(spool) = in_recovery_spool() else {
            return Ok(());
        };
        let repository = open(settings, identity_file)?;
        spool.prefetch(&repository, depth, if object_store { 4 } else { 2 })?;
        return Ok(());
    }
    let depth = prefetch.unwrap_or_else(|| default_depth(object_store));
    let name = WalFileName::parse(wal_file)?;
    let spool = match (depth, name.kind()) {
        (1.., WalFileKind::Segment) => in_recovery_spool(),
        _ => None,
    };
    let Some(spool) = spool else {
        let repository = open(settings, identity_file)?;
        return match repository.fetch_wal(wal_file, destination) {
            Ok(_) => Ok(()),
            Err(Error::WalNotFound(_)) => Err(CliError::QuietNotFound),
            Err(e) => Err(e.into()),
        };
    };
    // A verified spooled copy needs nothing from the repository; otherwise what exists is the
    // repository's answer, never the spool's.
    if !spool.take(&name, destination).unwrap_or(false) {
        let repository = open(settings, identity_file)?;
        let Some(stored) = repository.find_wal(&name)? else {
            return Err(CliError::QuietNotFound);
        };
        repository.fetch_stored(&stored, destination)?;
    }
    // Best effort from here: the file is in place, recovery goes on without a prefetcher.
    if let Ok(meta) = std::fs::metadata(destination) {
        if spool.note_request(wal_file, meta.len()).is_ok() && !spool.prefetcher_running() {
            start_prefetcher(depth);
        }
    }
    Ok(())
}

fn open(settings: &Settings, identity_file: Option<&Path>) -> Result<Repository, CliError> {
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
    Ok(repository)
}

/// This program again, same arguments, detached (its own session, no terminal, nothing
/// PostgreSQL waits for), as the prefetcher.
fn start_prefetcher(depth: usize) {
    let Ok(executable) = std::env::current_exe() else {
        return;
    };
    let mut command = Command::new(executable);
    command
        .args(std::env::args_os().skip(1))
        .env(PREFETCHER_ENV, depth.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Safety: setsid is async-signal-safe; it only detaches the child from our session.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::setsid();
            Ok(())
        });
    }
    let _ = command.spawn();
}
