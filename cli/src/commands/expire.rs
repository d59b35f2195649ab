//! `sc-backup expire` and `sc-backup delete`: retention, and removing one backup on purpose.

use sc_backup_core::retention::{delete_backup, expire, plan_expiry, RetentionPolicy};
use sc_backup_core::{Repository, Settings};

use super::list::human_bytes;
use crate::CliError;

pub fn run_expire(
    settings: &Settings,
    policy: RetentionPolicy,
    dry_run: bool,
) -> Result<(), CliError> {
    let repository = Repository::open(settings)?;
    let plan = plan_expiry(&repository, policy, chrono::Utc::now())?;
    let verb = if dry_run { "would expire" } else { "expired" };
    for name in &plan.expired_backups {
        println!("{verb} backup {name}");
    }
    if !dry_run {
        expire(&repository, &plan)?;
    }
    println!(
        "{verb} {} backup{} and {} WAL file{} ({}); kept {} backup{}",
        plan.expired_backups.len(),
        if plan.expired_backups.len() == 1 {
            ""
        } else {
            "s"
        },
        plan.expired_wal.len(),
        if plan.expired_wal.len() == 1 { "" } else { "s" },
        human_bytes(plan.expired_wal_bytes),
        plan.kept_backups.len(),
        if plan.kept_backups.len() == 1 {
            ""
        } else {
            "s"
        },
    );
    Ok(())
}

pub fn run_delete(settings: &Settings, backup: &str) -> Result<(), CliError> {
    let repository = Repository::open(settings)?;
    delete_backup(&repository, backup)?;
    println!("deleted backup {backup} (the WAL stays until `sc-backup expire`)");
    Ok(())
}
