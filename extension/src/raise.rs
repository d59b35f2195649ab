//! Raising PostgreSQL errors: every SQL function and the scheduler report failures through
//! these, with the core error's message and hint and a SQLSTATE that says what went wrong.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use sc_backup_core::Error;

/// Raises an error about a named backup: "no such backup" is ERRCODE_UNDEFINED_OBJECT.
pub fn raise_for_backup(error: &Error) -> ! {
    let code = if matches!(error, Error::BackupNotFound(_)) {
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT
    } else {
        PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION
    };
    raise(error, code)
}

/// Raises `error` as a PostgreSQL ERROR with its hint.
pub fn raise(error: &Error, code: PgSqlErrorCode) -> ! {
    let mut report = ErrorReport::new(code, format!("sc_backup: {error}"), "sc_backup");
    if let Some(hint) = error.hint(sc_backup_core::error::FrontEnd::Sql) {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub fn raise_message(message: String, hint: &str, code: PgSqlErrorCode) -> ! {
    let mut report = ErrorReport::new(code, message, "sc_backup");
    if !hint.is_empty() {
        report = report.set_hint(hint.to_string());
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}
