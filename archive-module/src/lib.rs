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
//! at the archiver's `.ready` files (`sc_backup_core::archive_pipeline`); the callback still
//! reports a file archived only once that file's own object is durable.

use std::ffi::{c_char, CStr};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use sc_backup_core::archive_pipeline::ArchivePipeline;
use sc_backup_core::config::{ConfigError, Settings};
use sc_backup_core::repository::ClusterIdentity;
use sc_backup_core::wal::ArchiveOutcome;
use sc_backup_core::{Error, Repository};

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
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Installs the callbacks (PostgreSQL 15's `_PG_archive_module_init` ABI).
///
/// # Safety
/// `callbacks` must be the pointer PostgreSQL passed to `_PG_archive_module_init`.
#[cfg(feature = "pg15")]
pub unsafe fn init_pg15(
    callbacks: *mut pg_sys::ArchiveModuleCallbacks,
    settings_source: SettingsSource,
    parallelism_source: ParallelismSource,
) {
    install(settings_source, parallelism_source);
    (*callbacks).check_configured_cb = Some(check_configured_pg15);
    (*callbacks).archive_file_cb = Some(archive_file_pg15);
    (*callbacks).shutdown_cb = None;
}

fn install(settings_source: SettingsSource, parallelism_source: ParallelismSource) {
    let mut state = STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *state = Some(State {
        settings_source,
        parallelism_source,
        open: None,
    });
}

#[cfg(feature = "pg15")]
unsafe extern "C-unwind" fn check_configured_pg15() -> bool {
    check_configured()
}

#[cfg(feature = "pg15")]
unsafe extern "C-unwind" fn archive_file_pg15(file: *const c_char, path: *const c_char) -> bool {
    let file = CStr::from_ptr(file).to_string_lossy().into_owned();
    let path = CStr::from_ptr(path).to_string_lossy().into_owned();
    archive_file(&file, &path)
}

/// PostgreSQL 16 changed the ABI: `_PG_archive_module_init` returns a pointer to a static
/// callbacks struct and every callback receives an `ArchiveModuleState *` first. pgrx's
/// bindings do not include these structs, so they are declared here, `#[repr(C)]`.
/// Not built by CI (which runs PostgreSQL 15).
#[cfg(any(feature = "pg16", feature = "pg17"))]
pub mod pg16 {
    use super::*;
    use std::ffi::c_void;

    #[repr(C)]
    pub struct ArchiveModuleState {
        pub private_data: *mut c_void,
    }

    #[repr(C)]
    pub struct ArchiveModuleCallbacks {
        pub startup_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState)>,
        pub check_configured_cb:
            Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState) -> bool>,
        pub archive_file_cb: Option<
            unsafe extern "C-unwind" fn(
                *mut ArchiveModuleState,
                *const c_char,
                *const c_char,
            ) -> bool,
        >,
        pub shutdown_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState)>,
    }

    unsafe impl Sync for ArchiveModuleCallbacks {}

    static CALLBACKS: ArchiveModuleCallbacks = ArchiveModuleCallbacks {
        startup_cb: None,
        check_configured_cb: Some(check_configured_pg16),
        archive_file_cb: Some(archive_file_pg16),
        shutdown_cb: None,
    };

    pub fn init(
        settings_source: SettingsSource,
        parallelism_source: ParallelismSource,
    ) -> *const ArchiveModuleCallbacks {
        install(settings_source, parallelism_source);
        &CALLBACKS
    }

    unsafe extern "C-unwind" fn check_configured_pg16(_state: *mut ArchiveModuleState) -> bool {
        check_configured()
    }

    unsafe extern "C-unwind" fn archive_file_pg16(
        _state: *mut ArchiveModuleState,
        file: *const c_char,
        path: *const c_char,
    ) -> bool {
        let file = CStr::from_ptr(file).to_string_lossy().into_owned();
        let path = CStr::from_ptr(path).to_string_lossy().into_owned();
        archive_file(&file, &path)
    }
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

fn check_configured() -> bool {
    guarded("check_configured", || {
        let source = match STATE.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
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
                    error.hint(),
                );
                false
            }
        }
    })
}

fn archive(file: &str, path: &str) -> Result<ArchiveOutcome, Error> {
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
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
    match &open.archiver {
        Archiver::InCallback(repository) => repository.archive_wal(Path::new(path), file),
        Archiver::Pipelined(pipeline) => pipeline.archive(file, Path::new(path)),
    }
}

fn cluster_identity() -> ClusterIdentity {
    ClusterIdentity {
        // Safety: reads the control file copy in shared memory; the archiver is attached.
        system_identifier: unsafe { pg_sys::GetSystemIdentifier() },
        pg_version_num: pg_sys::PG_VERSION_NUM,
    }
}
