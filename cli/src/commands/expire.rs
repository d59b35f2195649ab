//! `sc-backup expire` and `sc-backup delete`: retention, and removing one backup on purpose.

use sc_backup_core::ops::maintenance::{delete_named, expire_now, Deleted};
use sc_backup_core::ops::retention::RetentionPolicy;
use sc_backup_core::{Repository, Settings};

use super::{audit_start, audited};
use crate::error::CliError;
use sc_backup_core::util::bytes::human_bytes;

pub fn run_expire(
    settings: &Settings,
    policy: RetentionPolicy,
    dry_run: bool,
) -> Result<(), CliError> {
    let repository = Repository::open(settings)?;
    // The CLI cannot know whether a backup is running right now, so unfinished backups stay;
    // sc_expire() and the scheduler remove them while holding the backup lock.
    let no_backup_runs = false;
    if dry_run {
        let plan = expire_now(
            &repository,
            policy,
            chrono::Utc::now(),
            true,
            no_backup_runs,
            |_| {},
        )?;
        return report(&plan, true);
    }
    let mut timer = audit_start("expire");
    let result = expire_now(
        &repository,
        policy,
        chrono::Utc::now(),
        false,
        no_backup_runs,
        |plan| timer.details().target = Some(plan.describe()),
    )
    .map_err(CliError::from);
    let plan = audited(&repository, &timer, result)?;
    report(&plan, false)
}

fn report(
    plan: &sc_backup_core::ops::retention::ExpiryPlan,
    dry_run: bool,
) -> Result<(), CliError> {
    if !plan.unfinished_backups.is_empty() {
        println!(
            "left {} unfinished backup(s) (interrupted, or running now): {}; SELECT sc_expire() removes them when no backup runs",
            plan.unfinished_backups.len(),
            plan.unfinished_backups.join(", ")
        );
    }
    let verb = if dry_run { "would expire" } else { "expired" };
    for name in &plan.expired_backups {
        println!("{verb} backup {name}");
    }
    for file in &plan.expired_dumps {
        println!("{verb} dump {file}");
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
    if !plan.expired_dumps.is_empty() || !plan.kept_dumps.is_empty() {
        println!(
            "{verb} {} logical dump(s); kept {}",
            plan.expired_dumps.len(),
            plan.kept_dumps.len()
        );
    }
    Ok(())
}

pub fn run_delete(
    settings: &Settings,
    backup: &str,
    with_dependents: bool,
) -> Result<(), CliError> {
    if backup == "latest" {
        return Err(CliError::Message(
            "delete takes the name of one backup or dump, not \"latest\" (see `sc-backup list`)"
                .into(),
        ));
    }
    let repository = Repository::open(settings)?;
    let mut timer = audit_start("delete");
    timer.details().backup = Some(backup.to_string());
    let deleted = delete_named(&repository, backup, with_dependents).map(|deleted| match deleted {
        Deleted::Dump(file) => {
            timer.details().backup = Some(file.clone());
            format!("deleted dump {file} with its .sha256 and .meta")
        }
        Deleted::Backups(names) if with_dependents => format!(
            "deleted backup(s) {} (the WAL stays until `sc-backup expire`)",
            names.join(", ")
        ),
        Deleted::Backups(names) => format!(
            "deleted backup {} (the WAL stays until `sc-backup expire`)",
            names.join(", ")
        ),
    });
    let message = audited(&repository, &timer, deleted.map_err(CliError::from))?;
    println!("{message}");
    Ok(())
}
