//! The scheduler's logical dumps (`sc_backup.dump_schedule`): every database of
//! `sc_backup.dump_databases`, then the roles and tablespaces, as `sc_dump()` takes them.
//!
//! They run on a thread of the scheduler worker, like the restore test, so scheduled backups
//! are not held up; the thread never calls PostgreSQL (the dump programs are child processes).
//! The worker resolves the database list and how to reach the server first, and records each
//! dump in the audit trail when the thread is done.

use std::thread::JoinHandle;

use pgrx::prelude::*;
use sc_backup_core::backup::Interrupted;
use sc_backup_core::dump::{audit_target, take_dump, DumpKind, DumpRequest};
use sc_backup_core::ops::audit::{source, AuditRecord, AuditTimer};
use sc_backup_core::{Repository, Settings};

use crate::dump::LocalServer;
use crate::guc;
use crate::host::cluster_identity;

/// The backup type of scheduled dumps (`sc_list_backups().backup_type`).
pub const BACKUP_TYPE: &str = "scheduled";

/// The databases `sc_backup.dump_databases` names (needs a transaction).
fn databases() -> Vec<String> {
    let setting = guc::cstring_setting(&guc::DUMP_DATABASES).unwrap_or_else(|| "*".into());
    if setting.trim() == "*" {
        return Spi::connect(|client| {
            client
                .select(
                    "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                    None,
                    &[],
                )
                .map(|rows| {
                    rows.filter_map(|row| row.get::<String>(1).ok().flatten())
                        .collect()
                })
        })
        .unwrap_or_default();
    }
    setting
        .split(',')
        .map(|name| name.trim().to_string())
        .collect()
}

/// Starts a run of dumps. Needs a transaction.
pub fn start(user: &str) -> Result<JoinHandle<Vec<AuditRecord>>, String> {
    let settings = guc::settings().map_err(|e| e.to_string())?;
    let server = LocalServer::here();
    let databases = databases();
    let identity = cluster_identity();
    let user = user.to_string();
    sc_backup_core::util::threads::spawn_without_signals("sc_backup dumps".into(), move || {
        run(&settings, &server, databases, identity, &user)
    })
    .map_err(|e| format!("cannot start the dump thread: {e}"))
}

fn run(
    settings: &Settings,
    server: &LocalServer,
    databases: Vec<String>,
    identity: sc_backup_core::repository::ClusterIdentity,
    user: &str,
) -> Vec<AuditRecord> {
    let pg_dump_version = server.pg_dump_version();
    let repository = Repository::open_for_cluster(settings, &identity);
    let mut records = Vec::new();
    let jobs = databases
        .into_iter()
        .map(|db| (DumpKind::Database, db))
        .chain([(DumpKind::Globals, String::new())]);
    for (content, database) in jobs {
        let mut timer = AuditTimer::start("dump", source::SCHEDULER, user);
        timer.details().backup_type = Some(BACKUP_TYPE.into());
        timer.details().target = Some(audit_target(content, &database));
        let outcome = repository
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|repository| {
                let request = DumpRequest {
                    command: server.command(content, &database),
                    content,
                    database: database.clone(),
                    backup_type: BACKUP_TYPE.into(),
                    pg_version_num: identity.pg_version_num,
                    system_identifier: identity.system_identifier,
                    pg_dump_version: pg_dump_version.clone(),
                };
                take_dump(repository, request, &mut || Ok::<(), Interrupted>(()))
                    .map_err(|e| e.to_string())
            });
        match outcome {
            Ok(dump) => {
                timer.details().backup = Some(dump.file);
                timer.details().size_bytes = Some(dump.playbook.size_bytes);
                records.push(timer.finish(None));
            }
            Err(error) => records.push(timer.finish(Some(error))),
        }
    }
    records
}
