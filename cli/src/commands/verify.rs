//! `sc-backup verify [BACKUP]`: re-reads every stored file of a backup (default: the latest)
//! and the WAL it needs; the CLI twin of sc_verify().

use sc_backup_core::backup::verify_backup;
use sc_backup_core::{Repository, Settings};

use super::{audit_start, audited};
use crate::CliError;

pub fn run(settings: &Settings, backup: &str) -> Result<(), CliError> {
    let repository = Repository::open(settings)?;
    let mut timer = audit_start("verify");
    timer.details().backup = Some(backup.to_string());
    let result = verify(&repository, backup, &mut |name| {
        timer.details().backup = Some(name.to_string())
    });
    audited(&repository, &timer, result)
}

fn verify(
    repository: &Repository,
    backup: &str,
    resolved: &mut dyn FnMut(&str),
) -> Result<(), CliError> {
    let (metadata, problems) = verify_backup(repository, backup)?;
    resolved(&metadata.backup_name);
    if problems.is_empty() {
        println!(
            "backup {}: OK ({} files, WAL {} to {})",
            metadata.backup_name, metadata.file_count, metadata.start_lsn, metadata.stop_lsn
        );
        return Ok(());
    }
    for problem in &problems {
        println!("{}: {}", problem.object, problem.problem);
    }
    Err(CliError::Message(format!(
        "backup {} has {} problem{}",
        metadata.backup_name,
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    )))
}
