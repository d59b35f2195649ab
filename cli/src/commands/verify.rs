//! `sc-backup verify [BACKUP]`: re-reads every stored file of a backup (default: the latest)
//! and the WAL it needs; the CLI twin of sc_verify(). With `--restore`, the restore test:
//! the backup restored into a sandbox and every database checked
//! (`sc_backup_core::sandbox::restore_test`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use sc_backup_core::backup::{find_backup, read_catalog, verify_backup};
use sc_backup_core::dump::{find_named, verify_dump, Named};
use sc_backup_core::restore::RecoveryTarget;
use sc_backup_core::sandbox::restore_test::{check_restored, RestoreTestReport};
use sc_backup_core::{Repository, Settings};

use super::sandbox::{self, SandboxArgs};
use super::{audit_start, audited};
use crate::error::CliError;

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
    if let Named::Dump(dump) = find_named(repository, backup)? {
        resolved(&dump.file);
        let problems = verify_dump(repository, &dump)?;
        for problem in &problems {
            println!("{}: {}", problem.object, problem.problem);
        }
        if problems.is_empty() {
            println!(
                "dump {}: OK (checksum {}, {} bytes of SQL decoded)",
                dump.file, dump.playbook.checksum, dump.sql_size_bytes
            );
            return Ok(());
        }
        return Err(CliError::Message(format!(
            "dump {} has {} problem{}",
            dump.file,
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        )));
    }
    let (metadata, problems) = verify_backup(repository, backup)?;
    resolved(&metadata.playbook.backup_name);
    if problems.is_empty() {
        println!(
            "backup {}: OK ({} files, WAL {} to {})",
            metadata.playbook.backup_name,
            metadata.file_count,
            metadata.start_lsn,
            metadata.stop_lsn
        );
        return Ok(());
    }
    for problem in &problems {
        println!("{}: {}", problem.object, problem.problem);
    }
    Err(CliError::Message(format!(
        "backup {} has {} problem{}",
        metadata.playbook.backup_name,
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    )))
}

/// The restore test.
pub fn run_restore(
    settings: &Settings,
    backup: &str,
    json: bool,
    args: &SandboxArgs,
    cancel: &Arc<AtomicBool>,
) -> Result<(), CliError> {
    let repository = Repository::open(settings)?;
    let mut timer = audit_start("restore-test");
    timer.details().backup = Some(backup.to_string());
    timer.details().target = Some("consistency, in a sandbox".into());
    let result = (|| {
        let metadata = find_backup(&repository, backup)?;
        timer.details().backup = Some(metadata.playbook.backup_name.clone());
        timer.details().backup_type = Some(metadata.playbook.backup_type.clone());
        let snapshot = read_catalog(&repository, &metadata)?;
        let mut sandbox = sandbox::open(
            settings,
            &repository,
            &metadata,
            RecoveryTarget::Immediate,
            args,
            cancel,
            true,
        )?;
        eprintln!("checking every database of the sandbox (amcheck, every table read)");
        let report = check_restored(&sandbox, &metadata.playbook.backup_name, snapshot.as_ref())?;
        sandbox::keep_if_asked(&mut sandbox, args, "postgres");
        drop(sandbox);
        timer.details().figures.extend(report.audit_figures());
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("report serializes")
            );
        } else {
            print_report(&report);
        }
        if report.ok() {
            Ok(())
        } else {
            Err(CliError::Message(format!(
                "backup {} failed its restore test: {} problem{}",
                metadata.playbook.backup_name,
                report.problem_count(),
                if report.problem_count() == 1 { "" } else { "s" }
            )))
        }
    })();
    audited(&repository, &timer, result)
}

fn print_report(report: &RestoreTestReport) {
    println!("restore test of backup {}:", report.backup);
    for database in &report.databases {
        println!(
            "  {}: {} tables, {} rows, {} indexes and {} relations checked: {}",
            database.database,
            database.tables,
            database.rows,
            database.indexes_checked,
            database.relations_checked,
            if database.problems.is_empty() {
                "OK".to_string()
            } else {
                format!("{} PROBLEM(S)", database.problems.len())
            }
        );
        for problem in &database.problems {
            println!("    {problem}");
        }
    }
    if report.compared_with_snapshot {
        for missing in &report.missing {
            println!("  MISSING: {missing}");
        }
        if report.missing.is_empty() {
            println!("  every database and table of the backup's catalog snapshot is there");
        }
    } else {
        println!("  (this backup has no catalog snapshot to compare with)");
    }
    for changed in &report.changed_during_backup {
        println!("  created or dropped while the backup ran (not a problem): {changed}");
    }
    println!(
        "  {} in {:.1}s of checking",
        if report.ok() { "PASSED" } else { "FAILED" },
        report.seconds_checking
    );
}
