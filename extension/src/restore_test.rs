//! The scheduler's restore test (`sc_backup.verify_schedule`): the newest backup restored into
//! a sandbox under `sc_backup.verify_directory` and every database checked, exactly as
//! `sc-backup verify --restore` does (`sc_backup_core::sandbox::restore_test`).
//!
//! It runs on a thread of the scheduler worker, so scheduled backups are not held up by it;
//! the thread never calls PostgreSQL (its signals are blocked, and the sandbox server is a
//! child process that dies with the worker). The worker gathers what the thread needs first
//! (settings, this server's own binaries, the bootstrap superuser's name) and records the
//! outcome in the audit trail when the thread is done.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use pgrx::prelude::*;
use sc_backup_core::backup::{find_backup, read_catalog, read_manifest};
use sc_backup_core::ops::audit::{source, AuditRecord, AuditTimer};
use sc_backup_core::pg::server_binaries::ServerBinaries;
use sc_backup_core::restore::{RecoveryTarget, WalSource};
use sc_backup_core::sandbox::restore_test::check_restored;
use sc_backup_core::sandbox::{Sandbox, SandboxOptions};
use sc_backup_core::{Repository, Settings};

use crate::guc;

/// This server's own installation.
fn own_binaries() -> Result<ServerBinaries, String> {
    ServerBinaries::at(&crate::dump::own_bindir()).map_err(|e| e.to_string())
}

/// Starts a restore test. Needs a transaction (to read the bootstrap superuser's name).
pub fn start(user: &str) -> Result<JoinHandle<Vec<AuditRecord>>, String> {
    let settings = guc::settings().map_err(|e| e.to_string())?;
    let server = own_binaries()?;
    let superuser = Spi::get_one::<String>("SELECT rolname::text FROM pg_authid WHERE oid = 10")
        .ok()
        .flatten()
        .unwrap_or_else(|| "postgres".into());
    let parent = PathBuf::from(
        guc::cstring_setting(&guc::VERIFY_DIRECTORY).unwrap_or_else(|| "/var/tmp".into()),
    );
    let user = user.to_string();
    sc_backup_core::util::threads::spawn_without_signals(
        "sc_backup restore test".into(),
        move || vec![run(&settings, server, superuser, parent, &user)],
    )
    .map_err(|e| format!("cannot start the restore test thread: {e}"))
}

fn run(
    settings: &Settings,
    server: ServerBinaries,
    superuser: String,
    parent: PathBuf,
    user: &str,
) -> AuditRecord {
    let mut timer = AuditTimer::start("restore-test", source::SCHEDULER, user);
    timer.details().target = Some("consistency, in a sandbox".into());
    let outcome = (|| {
        let repository = Repository::open(settings)?;
        let metadata = find_backup(&repository, "latest")?;
        timer.details().backup = Some(metadata.playbook.backup_name.clone());
        timer.details().backup_type = Some(metadata.playbook.backup_type.clone());
        let snapshot = read_catalog(&repository, &metadata)?;
        let manifest = read_manifest(&repository, &metadata)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let options = SandboxOptions {
            parent,
            server,
            target: RecoveryTarget::Immediate,
            target_timeline: None,
            wal_source: WalSource::BackupOnly,
            environment: Vec::new(),
            superuser,
            settings: Vec::new(),
            relaxed_durability: true,
            parallelism: 2,
            cancel: Arc::clone(&cancel),
        };
        let mut sandbox = Sandbox::restore(&repository, &metadata, &manifest, &options, &|_| {})?;
        sandbox.start(&cancel)?;
        check_restored(&sandbox, &metadata.playbook.backup_name, snapshot.as_ref())
    })();
    match outcome {
        Ok(report) => {
            timer.details().figures.extend(report.audit_figures());
            let problems: Vec<String> = report
                .missing
                .iter()
                .cloned()
                .chain(report.databases.iter().flat_map(|d| {
                    d.problems
                        .iter()
                        .map(move |p| format!("database {}: {p}", d.database))
                }))
                .collect();
            timer.finish(
                (!problems.is_empty())
                    .then(|| format!("{} problem(s): {}", problems.len(), problems.join("; "))),
            )
        }
        Err(error) => timer.finish(Some(error.to_string())),
    }
}
