//! `sc-backup list [--json]`: the base backups and logical dumps in the repository, oldest
//! first (as sc_list_backups()).

use sc_backup_core::backup::{chain_sizes, list_backups, BackupMetadata};
use sc_backup_core::dump::{list_dumps, DumpKind, DumpMetadata};
use sc_backup_core::util::bytes::human_bytes;
use sc_backup_core::{Repository, Settings};

use crate::error::CliError;

pub fn run(settings: &Settings, json: bool) -> Result<(), CliError> {
    let repository = Repository::open(settings)?;
    let backups = list_backups(&repository)?;
    let dumps = list_dumps(&repository)?;
    if json {
        let listing = serde_json::json!({ "backups": backups, "dumps": dumps });
        println!(
            "{}",
            serde_json::to_string_pretty(&listing).expect("metadata serializes")
        );
        return Ok(());
    }
    if backups.is_empty() && dumps.is_empty() {
        println!("no backups in {}", repository.describe());
        return Ok(());
    }
    if !backups.is_empty() {
        print_backups(&backups);
    }
    if !dumps.is_empty() {
        if !backups.is_empty() {
            println!();
        }
        print_dumps(&dumps);
    }
    Ok(())
}

fn print_backups(backups: &[BackupMetadata]) {
    println!(
        "{:<40} {:<12} {:<12} {:<20} {:<20} {:<12} {:<12} {:>10} {:>10} {:<5} {:<5} {:<8} chain",
        "backup",
        "type",
        "method",
        "start (UTC)",
        "stop (UTC)",
        "start lsn",
        "stop lsn",
        "size",
        "stored",
        "comp",
        "enc",
        "status"
    );
    for (b, (length, bytes)) in backups.iter().zip(chain_sizes(backups)) {
        // A full backup stands alone; an incremental one names its parent and what a restore
        // of it reads: the backups of its chain and their stored bytes.
        let chain = match &b.parent {
            None => "-".to_string(),
            Some(parent) => format!(
                "{length} backups, {} stored, parent {parent}",
                human_bytes(bytes),
            ),
        };
        println!(
            "{:<40} {:<12} {:<12} {:<20} {:<20} {:<12} {:<12} {:>10} {:>10} {:<5} {:<5} {:<8} {}",
            b.playbook.backup_name,
            b.playbook.backup_type,
            b.method.name(),
            b.playbook.start_time.format(SHORT_TIME).to_string(),
            b.playbook.stop_time.format(SHORT_TIME).to_string(),
            b.start_lsn,
            b.stop_lsn,
            human_bytes(b.playbook.size_bytes),
            human_bytes(b.stored_bytes),
            b.playbook.compression.name(),
            b.playbook.encryption.name(),
            b.status.name(),
            chain
        );
    }
}

fn print_dumps(dumps: &[DumpMetadata]) {
    println!(
        "{:<48} {:<6} {:<20} {:<20} {:>10} {:>10} {:<5} {:<5} database",
        "logical dump", "type", "start (UTC)", "stop (UTC)", "sql", "stored", "comp", "enc"
    );
    for d in dumps {
        println!(
            "{:<48} {:<6} {:<20} {:<20} {:>10} {:>10} {:<5} {:<5} {}",
            d.file,
            d.playbook.backup_type,
            d.playbook.start_time.format(SHORT_TIME).to_string(),
            d.playbook.stop_time.format(SHORT_TIME).to_string(),
            human_bytes(d.sql_size_bytes),
            human_bytes(d.playbook.size_bytes),
            d.playbook.compression.name(),
            d.playbook.encryption.name(),
            match d.content {
                DumpKind::Database => d.playbook.database.as_str(),
                DumpKind::Globals => "(roles and tablespaces)",
            }
        );
    }
}

/// Times in the listing: to the second, UTC.
pub(crate) const SHORT_TIME: &str = "%Y-%m-%d %H:%M:%S";
