//! The server's side of WAL archiving, as sc_backup needs it: archiving on, through
//! `archive_library = 'sc_backup'`, and no `archive_command` beside it.
//!
//! A leftover `archive_command` (from the tool sc_backup replaces) is the one setting that
//! silently breaks archiving: PostgreSQL 16 and later refuse to archive anything while both
//! are set (the archiver exits with "both archive_command and archive_library set" and is
//! restarted every 10 seconds, src/backend/postmaster/pgarch.c, LoadArchiveLibrary), so WAL
//! piles up in pg_wal and `pg_backup_stop` waits forever; 15 uses the library and ignores the
//! command. The server says so only in its own terse line, so we say it where an operator
//! looks: at server start, in the scheduler's log after a reload, and as the error of
//! `sc_backup()`.

use std::ffi::CStr;

use pgrx::{pg_sys, PgSqlErrorCode};

use crate::raise::raise_message;

/// One of PostgreSQL's own settings, as the server currently sees it ("" when unset).
pub fn core_setting(name: &CStr) -> String {
    // Safety: GetConfigOption returns the setting's current string (or NULL when missing),
    // copied at once.
    let value = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    if value.is_null() {
        return String::new();
    }
    unsafe { CStr::from_ptr(value) }
        .to_string_lossy()
        .into_owned()
}

/// An `archive_command` set beside `archive_library = 'sc_backup'`.
pub struct CommandConflict {
    pub message: String,
    pub hint: &'static str,
    /// True where PostgreSQL then archives nothing at all (16 and later).
    pub stops_archiving: bool,
}

const HINT: &str = "Remove archive_command: ALTER SYSTEM RESET archive_command; then SELECT pg_reload_conf(), and delete it from postgresql.conf if it is set there.";

/// The conflict, if `archive_command` is set while sc_backup is the archive library. The
/// command itself is not quoted: it may hold another tool's credentials.
pub fn command_conflict() -> Option<CommandConflict> {
    if core_setting(c"archive_library") != "sc_backup"
        || core_setting(c"archive_command").is_empty()
    {
        return None;
    }
    Some(if pg_sys::PG_VERSION_NUM >= 160000 {
        CommandConflict {
            message: "sc_backup: archive_command is set as well as archive_library = 'sc_backup'; PostgreSQL archives no WAL at all while both are set, so WAL accumulates in pg_wal and backups cannot complete".into(),
            hint: HINT,
            stops_archiving: true,
        }
    } else {
        CommandConflict {
            message: "sc_backup: archive_command is set but ignored: archive_library = 'sc_backup' archives the WAL".into(),
            hint: HINT,
            stops_archiving: false,
        }
    })
}

/// Logs the conflict as a WARNING with its hint, if there is one.
pub fn warn_about_command_conflict() -> Option<String> {
    let conflict = command_conflict()?;
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        conflict.message.clone(),
        "sc_backup",
    )
    .set_hint(conflict.hint)
    .report(pgrx::PgLogLevel::WARNING);
    Some(conflict.message)
}

/// At server start, outside recovery: removes what `sc-backup restore` left for a recovery that
/// has ended without its `recovery_end_command` (a crash just after promotion, a
/// `recovery.signal` removed by hand): the unwrapped repository key, and the prefetch spool.
/// Until recovery ends they are needed; after it, the key must not stay in the data directory,
/// where any copy of the directory (a `pg_basebackup`, a file-level copy) would carry it.
pub fn remove_recovery_leftovers() {
    let data_directory = std::path::Path::new(".");
    if data_directory.join("recovery.signal").exists()
        || data_directory.join("standby.signal").exists()
    {
        return;
    }
    for leftover in [
        sc_backup_core::pg::layout::RECOVERY_KEY_FILE,
        sc_backup_core::pg::layout::SPOOL_DIRECTORY,
    ] {
        let path = data_directory.join(leftover);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if removed.is_ok() {
            pgrx::log!("sc_backup: removed {leftover}, left in the data directory by a recovery that has ended");
        }
    }
}

/// Raises an ERROR unless WAL is archived through sc_backup: a base backup cannot be restored
/// without the WAL written while it was taken, and `pg_backup_stop` waits for that WAL.
pub fn require_sc_backup_archiving() {
    let code = PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
    if core_setting(c"archive_mode") == "off" {
        raise_message(
            "sc_backup: WAL archiving is off".into(),
            "Set archive_mode = on and archive_library = 'sc_backup' (a restart is needed): a base backup cannot be restored without the WAL written while it was taken.",
            code,
        );
    }
    let library = core_setting(c"archive_library");
    if library != "sc_backup" {
        raise_message(
            format!("sc_backup: archive_library is \"{library}\", not \"sc_backup\""),
            "Set archive_library = 'sc_backup' so that the WAL a backup needs is archived into the same repository.",
            code,
        );
    }
    if let Some(conflict) = command_conflict().filter(|c| c.stops_archiving) {
        raise_message(conflict.message, conflict.hint, code);
    }
}
