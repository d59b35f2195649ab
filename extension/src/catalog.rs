//! The catalog snapshot `sc_backup()` records: every database's user tables, listed after
//! `pg_backup_start` and again before `pg_backup_stop` (`sc_backup_core::backup::CatalogSnapshot`;
//! verification by restore compares the restored cluster with it).
//!
//! A backend sees only its own database's catalog, so each database is listed by a short-lived
//! dynamic background worker connected to it, which writes the list as JSON into
//! `pg_stat_tmp/` (never part of a backup) and exits; the backend waits for it and reads the
//! file. The snapshot is best effort: when a worker cannot start (max_worker_processes is
//! full) the backup goes on without one, with a NOTICE.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;
use sc_backup_core::backup::DatabaseTables;
use sc_backup_core::sandbox::restore_test::TABLES_SQL;

/// The user tables of every database that accepts connections, one worker each.
pub fn snapshot() -> Result<Vec<DatabaseTables>, String> {
    let databases: Vec<(u32, String)> = Spi::connect(|client| {
        client
            .select(
                "SELECT oid::int8, datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
                None,
                &[],
            )
            .map(|rows| {
                rows.filter_map(|row| {
                    Some((
                        row.get::<i64>(1).ok().flatten()? as u32,
                        row.get::<String>(2).ok().flatten()?,
                    ))
                })
                .collect()
            })
    })
    .map_err(|e| format!("listing databases: {e}"))?;
    databases
        .into_iter()
        .map(|(oid, name)| list_tables(oid, &name))
        .collect()
}

/// Starts a worker in database `oid` and reads what it wrote.
fn list_tables(oid: u32, name: &str) -> Result<DatabaseTables, String> {
    // Safety: MyProcPid is set for the backend's lifetime.
    let pid = unsafe { pg_sys::MyProcPid };
    let relative = format!("pg_stat_tmp/sc_backup_catalog_{pid}_{oid}.json");
    let path = crate::host::data_directory().join(&relative);
    let _ = std::fs::remove_file(&path);
    let worker = BackgroundWorkerBuilder::new(&format!("sc_backup catalog of {name}"))
        .set_type("sc_backup catalog")
        .set_library("sc_backup")
        .set_function("sc_backup_catalog_main")
        .enable_spi_access()
        // Backups can be taken on a standby too.
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(None)
        .set_argument(Some(pg_sys::Datum::from(oid)))
        .set_extra(&relative)
        .set_notify_pid(pid)
        .load_dynamic()
        .map_err(|_| "no background worker slot is free (max_worker_processes)".to_string())?;
    worker.wait_for_startup().map_err(|status| {
        format!("the catalog worker of database {name} did not start: {status:?}")
    })?;
    worker
        .wait_for_shutdown()
        .map_err(|status| format!("the catalog worker of database {name}: {status:?}"))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("the catalog worker of database {name} wrote nothing: {e}"))?;
    let _ = std::fs::remove_file(&path);
    let tables: Vec<String> = serde_json::from_str(&text)
        .map_err(|e| format!("the catalog worker of database {name}: {e}"))?;
    Ok(DatabaseTables {
        database: name.to_string(),
        tables,
    })
}

/// The worker: connects to the database given as its argument, lists the user tables into
/// the file named by its extra data (relative to the data directory, its working directory).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sc_backup_catalog_main(argument: pg_sys::Datum) {
    let oid = pg_sys::Oid::from(argument.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(oid), None);
    let path = BackgroundWorker::get_extra().to_string();
    let tables: Vec<String> = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            client.select(TABLES_SQL, None, &[]).map(|rows| {
                rows.filter_map(|row| row.get::<String>(1).ok().flatten())
                    .collect::<Vec<_>>()
            })
        })
    })
    .unwrap_or_else(|e| pgrx::error!("sc_backup catalog worker: {e}"));
    let json = serde_json::to_string(&tables).expect("a list of names serializes");
    let temporary = format!("{path}.tmp");
    if let Err(e) =
        std::fs::write(&temporary, json).and_then(|()| std::fs::rename(&temporary, &path))
    {
        pgrx::error!("sc_backup catalog worker: writing {path}: {e}");
    }
}
