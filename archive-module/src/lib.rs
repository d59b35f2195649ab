//! sc_backup's `archive_library` callbacks.
//!
//! A thin shim in the spirit of contrib/basic_archive: the callbacks read the settings, hand the
//! file to `sc_backup_core` (which owns the durability rules) and translate the outcome into a
//! boolean for the archiver.
//!
//! On PostgreSQL 15 and 16 an ERROR raised inside an archive callback is promoted to FATAL and
//! restarts the archiver, so nothing may escape: every callback body runs inside
//! `PgTryBuilder` (catching Rust panics and PostgreSQL errors alike) and a failure becomes
//! `false` plus one WARNING line. PostgreSQL keeps the WAL file and retries.
//!
//! The settings are read through a function the extension passes in, so that the `sc_backup.*`
//! GUCs are defined exactly once, by the extension.
//!
//! With `sc_backup.archive_parallelism` > 0 the work happens on worker threads that look ahead
//! at the archiver's `.ready` files (`sc_backup_core::wal::archive_pipeline`); the callback still
//! reports a file archived only once that file's own object is durable.
//!
//! Two ABIs: PostgreSQL 15 passes a callbacks struct to fill in (`pg15.rs`); 16 and later
//! take a pointer to a static struct and hand every callback an `ArchiveModuleState`, and add
//! a startup callback (`pg16.rs`). Both call the functions below.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use sc_backup_core::config::{ConfigError, Settings};
use sc_backup_core::repository::ClusterIdentity;
use sc_backup_core::wal::archive_pipeline::ArchivePipeline;
use sc_backup_core::wal::ArchiveOutcome;
use sc_backup_core::{Error, Repository};

#[cfg(feature = "pg15")]
mod pg15;
#[cfg(feature = "pg15")]
pub use pg15::init_pg15;
#[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
pub mod pg16;

/// Returns the current, validated `sc_backup.*` settings.
pub type SettingsSource = fn() -> Result<Settings, ConfigError>;
/// Returns how many worker threads archive ahead (0: none, work in the callback).
pub type ParallelismSource = fn() -> usize;

/// Where files go: straight to the repository, or through the look-ahead workers.
enum Archiver {
    InCallback(Repository),
    Pipelined(ArchivePipeline),
}

struct Open {
    settings: Settings,
    parallelism: usize,
    archiver: Archiver,
}

struct State {
    settings_source: SettingsSource,
    parallelism_source: ParallelismSource,
    /// The repository opened for the current settings. Opening an encrypted repository
    /// unwraps its key with the passphrase (about a second of scrypt), so it is done once per
    /// archiver process and again only when a reload changes the settings.
    open: Option<Open>,
    /// Files this archiver process reported archived, for its shutdown line.
    archived: u64,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn install(settings_source: SettingsSource, parallelism_source: ParallelismSource) {
    let mut state = lock_state();
    *state = Some(State {
        settings_source,
        parallelism_source,
        open: None,
        archived: 0,
    });
}

fn lock_state() -> std::sync::MutexGuard<'static, Option<State>> {
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `body`, turning any Rust panic or PostgreSQL error into a logged `false`.
fn guarded(what: &'static str, body: impl FnOnce() -> bool + std::panic::UnwindSafe) -> bool {
    PgTryBuilder::new(body)
        .catch_others(move |caught| {
            let message = match &caught {
                pg_sys::panic::CaughtError::PostgresError(report)
                | pg_sys::panic::CaughtError::ErrorReport(report)
                | pg_sys::panic::CaughtError::RustPanic {
                    ereport: report, ..
                } => report.message().to_string(),
            };
            log_warning(
                &format!("sc_backup: {what} failed unexpectedly: {message}"),
                None,
            );
            false
        })
        .execute()
}

fn log_warning(message: &str, hint: Option<String>) {
    let mut report = ErrorReport::new(
        PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
        message.to_string(),
        "sc_backup",
    );
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::WARNING);
}

/// PostgreSQL asks before each archiving cycle whether archiving can proceed.
fn check_configured() -> bool {
    guarded("check_configured", || {
        let source = match lock_state().as_ref() {
            Some(state) => state.settings_source,
            None => return false,
        };
        match source() {
            Ok(_) => true,
            Err(error) => {
                // PostgreSQL follows with "archive_mode enabled, yet archiving is not
                // configured"; this line says why.
                log_warning(
                    &format!("sc_backup: archiving is not configured: {error}"),
                    error.hint(),
                );
                false
            }
        }
    })
}

fn archive_file(file: &str, path: &str) -> bool {
    guarded("archiving", || {
        let started = Instant::now();
        match archive(file, path) {
            Ok(outcome) => {
                let detail = match outcome {
                    ArchiveOutcome::Stored(summary) => format!(
                        "{} bytes stored as {} bytes",
                        summary.original_size, summary.stored_size
                    ),
                    ArchiveOutcome::AlreadyArchived => {
                        "an identical copy was already archived".to_string()
                    }
                };
                debug1!(
                    "sc_backup: archived \"{file}\" in {:?}: {detail}",
                    started.elapsed()
                );
                true
            }
            Err(error) => {
                log_warning(
                    &format!("sc_backup: could not archive \"{file}\": {error}"),
                    error.hint(sc_backup_core::error::FrontEnd::Sql),
                );
                false
            }
        }
    })
}

fn archive(file: &str, path: &str) -> Result<ArchiveOutcome, Error> {
    let mut guard = lock_state();
    let state = guard
        .as_mut()
        .expect("callbacks are installed before they are called");
    let settings = (state.settings_source)()?;
    let parallelism = (state.parallelism_source)();
    let reuse = matches!(&state.open, Some(open)
        if open.settings == settings && open.parallelism == parallelism);
    if !reuse {
        // Stop the old workers (they finish their current file) and drop the old repository
        // and its key before opening the new one.
        state.open = None;
        let repository = Repository::open_for_cluster(&settings, &cluster_identity())?;
        let archiver = if parallelism == 0 {
            Archiver::InCallback(repository)
        } else {
            // The archiver runs with the data directory as its working directory.
            let pipeline = ArchivePipeline::start(repository, "pg_wal", parallelism)
                .map_err(|e| Error::io("start worker threads for", "archiving", e))?;
            Archiver::Pipelined(pipeline)
        };
        state.open = Some(Open {
            settings,
            parallelism,
            archiver,
        });
    }
    let open = state.open.as_ref().expect("opened above");
    // `path` is relative to the data directory, the archiver's working directory.
    let outcome = match &open.archiver {
        Archiver::InCallback(repository) => repository.archive_wal(Path::new(path), file),
        Archiver::Pipelined(pipeline) => pipeline.archive(file, Path::new(path)),
    }?;
    state.archived += 1;
    Ok(outcome)
}

/// The archiver has loaded the module: say where WAL goes, or nothing (check_configured
/// explains a configuration that is not usable, before every archiving cycle).
fn startup() {
    guarded("startup", || {
        let source = match lock_state().as_ref() {
            Some(state) => state.settings_source,
            None => return false,
        };
        if let Ok(settings) = source() {
            pgrx::log!(
                "sc_backup: archive module started: WAL goes to {} ({}, encryption {})",
                settings.repository,
                settings.compression.algorithm,
                settings.encryption
            );
        }
        true
    });
}

/// The archiver is exiting: stop the look-ahead workers (each finishes the file it is on,
/// whose object is then either committed or discarded) and drop the unwrapped key now rather
/// than at process exit.
fn shutdown() {
    guarded("shutdown", || {
        let (open, archived) = match lock_state().as_mut() {
            Some(state) => (state.open.take(), state.archived),
            None => return true,
        };
        drop(open);
        pgrx::log!("sc_backup: archive module stopped after archiving {archived} WAL file(s)");
        true
    });
}

/// This cluster's identity, which keeps its WAL and backups apart from another cluster's in a
/// shared repository.
/// The extension's functions use this one too.
pub fn cluster_identity() -> ClusterIdentity {
    ClusterIdentity {
        // Safety: reads the control file copy in shared memory, to which the archiver and
        // every backend are attached.
        system_identifier: unsafe { pg_sys::GetSystemIdentifier() },
        pg_version_num: pg_sys::PG_VERSION_NUM,
    }
}
