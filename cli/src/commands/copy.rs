//! `sc-backup copy --to N`: brings one of the cluster's repositories up to date with another
//! (the one `--repository` names, repository 1 by default). This version copies the WAL: every
//! file the target lacks, verified on the way and re-encoded for the target's compression and
//! key (see `sc_backup_core::wal::copy`). Backups are not copied yet, and the command says so:
//! a target without a backup cannot restore alone.

use std::sync::atomic::{AtomicBool, Ordering};

use sc_backup_core::config::repositories::RepositoryNumber;
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
        "WAL from {} to {to} ({})",
        source_repository.describe(),
        target_repository.describe()
    ));
    let result = copy_wal_via_scratch(&source_repository, &target_repository, &|| {
        interrupted.load(Ordering::Relaxed)
    })
    .map_err(CliError::from);
    let report = audited(&target_repository, &timer, result)?;
    println!(
        "copied {} WAL file(s) ({}) into {to} ({}); {} were there already",
        report.copied,
        human_bytes(report.bytes),
        target_repository.describe(),
        report.present
    );
    eprintln!(
        "sc-backup: note: this version copies WAL only; {to} restores alone once it holds a backup too"
    );
    Ok(())
}
