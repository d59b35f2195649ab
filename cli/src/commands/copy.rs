//! `sc-backup copy --to N`: brings one of the cluster's repositories up to date with another
//! (the one `--repository` names, repository 1 by default): first every WAL file the target
//! lacks, then the backups newer than the newest it holds (their WAL is then there), then the
//! logical dumps newer than its newest of each database, each file
//! verified on the way and re-encoded for the target's compression and key (see
//! `sc_backup_core::wal::copy` and `sc_backup_core::backup::copy_backups`). The same copy the
//! scheduler runs in the background; an interrupted one resumes where it stopped.

use std::sync::atomic::{AtomicBool, Ordering};

use sc_backup_core::backup::copy_backups;
use sc_backup_core::config::repositories::RepositoryNumber;
use sc_backup_core::dump::copy_dumps;
use sc_backup_core::ops::catch_up::open_further;
use sc_backup_core::util::bytes::human_bytes;
use sc_backup_core::wal::copy::copy_wal_via_scratch;
use sc_backup_core::{Repository, Settings};

use super::{audit_start, audited};
use crate::error::CliError;

pub fn run(
    source: &Settings,
    to: RepositoryNumber,
    target: Settings,
    interrupted: &AtomicBool,
) -> Result<(), CliError> {
    let source_repository = Repository::open(source)?;
    let target_repository = open_further(&source_repository, &target)?;
    if target_repository.describe() == source_repository.describe() {
        return Err(CliError::Message(format!(
            "{to} is the repository being copied ({})",
            source_repository.describe()
        )));
    }
    let mut timer = audit_start("copy");
    timer.details().target = Some(format!(
        "WAL, backups and dumps from {} to {to} ({})",
        source_repository.describe(),
        target_repository.describe()
    ));
    let interrupted = || interrupted.load(Ordering::Relaxed);
    let result = copy_wal_via_scratch(&source_repository, &target_repository, &interrupted)
        .and_then(|wal| {
            let backups = copy_backups(&source_repository, &target_repository, &interrupted)?;
            let dumps = copy_dumps(&source_repository, &target_repository, &interrupted)?;
            Ok((wal, backups, dumps))
        })
        .map_err(CliError::from);
    let (wal, backups, dumps) = audited(&target_repository, &timer, result)?;
    println!(
        "copied {} WAL file(s) ({}) into {to} ({}); {} were there already",
        wal.copied,
        human_bytes(wal.bytes),
        target_repository.describe(),
        wal.present
    );
    if backups.copied.is_empty() {
        println!("no backup to copy: {to} holds the newest one");
    } else {
        println!(
            "copied {} backup(s) ({}): {}",
            backups.copied.len(),
            human_bytes(backups.bytes),
            backups.copied.join(", ")
        );
    }
    if !dumps.copied.is_empty() {
        println!(
            "copied {} dump(s) ({} of SQL): {}",
            dumps.copied.len(),
            human_bytes(dumps.bytes),
            dumps.copied.join(", ")
        );
    }
    for (name, why) in &backups.skipped {
        eprintln!("sc-backup: warning: backup {name} was not copied: {why}");
    }
    Ok(())
}
