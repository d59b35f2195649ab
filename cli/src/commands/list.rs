//! `sc-backup list [--json]`: the backups in the repository, oldest first (as sc_list_backups()).

use sc_backup_core::backup::list_backups;
use sc_backup_core::sandbox::human_bytes;
use sc_backup_core::{Repository, Settings};

use crate::CliError;

pub fn run(settings: &Settings, json: bool) -> Result<(), CliError> {
    let repository = Repository::open(settings)?;
    let backups = list_backups(&repository)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&backups).expect("metadata serializes")
        );
        return Ok(());
    }
    if backups.is_empty() {
        println!("no backups in {}", repository.describe());
        return Ok(());
    }
    println!(
        "{:<36} {:<5} {:<20} {:<20} {:<12} {:<12} {:>10} {:>10} {:<5} {:<5} status",
        "backup",
        "type",
        "start (UTC)",
        "stop (UTC)",
        "start lsn",
        "stop lsn",
        "size",
        "stored",
        "comp",
        "enc"
    );
    for b in backups {
        println!(
            "{:<36} {:<5} {:<20} {:<20} {:<12} {:<12} {:>10} {:>10} {:<5} {:<5} {}",
            b.backup_name,
            b.backup_type,
            short_time(&b.start_time),
            short_time(&b.stop_time),
            b.start_lsn,
            b.stop_lsn,
            human_bytes(b.size_bytes),
            human_bytes(b.stored_bytes),
            b.compression,
            b.encryption,
            b.status
        );
    }
    Ok(())
}

fn short_time(rfc3339: &str) -> String {
    rfc3339.get(..19).unwrap_or(rfc3339).replace('T', " ")
}
