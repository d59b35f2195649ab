//! Keeps secret settings out of the server log.
//!
//! PostgreSQL logs `parameter "X" changed to "Y"` when a reload changes a setting, whatever the
//! setting's flags, and `log_statement` logs `ALTER SYSTEM SET X = 'Y'` verbatim. For our two
//! secrets that would write the repository passphrase and the S3 secret key into the log. An
//! `emit_log_hook` (installed in the postmaster, inherited by every process) rewrites exactly
//! those messages before they are written; everything else passes through untouched.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

/// The settings whose values must never be logged.
pub const SECRET_SETTINGS: &[&str] = &[
    sc_backup_core::config::names::ENCRYPTION_PASSPHRASE,
    sc_backup_core::config::names::S3_SECRET_ACCESS_KEY,
];

static mut PREVIOUS_HOOK: pg_sys::emit_log_hook_type = None;

pub fn install() {
    // Safety: _PG_init runs single-threaded in each process before any message is emitted
    // through the hook; the previous hook is chained.
    unsafe {
        PREVIOUS_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(redact_secrets);
    }
}

/// What to log instead of `message`, if it would reveal a secret setting's value.
fn redacted(message_id: &str, message: &str) -> Option<String> {
    let secret = SECRET_SETTINGS
        .iter()
        .find(|name| message.contains(*name))?;
    if message_id.starts_with("parameter \"%s\" changed to") {
        Some(format!(
            "parameter \"{secret}\" changed (value hidden by sc_backup)"
        ))
    } else if message_id.starts_with("statement: ")
        || message_id.starts_with("duration: ")
        || message_id.starts_with("execute ")
    {
        Some(format!(
            "statement hidden by sc_backup: it mentions {secret}"
        ))
    } else {
        None
    }
}

unsafe extern "C-unwind" fn redact_secrets(edata: *mut pg_sys::ErrorData) {
    // Safety: PostgreSQL passes the error being reported; its strings live in ErrorContext,
    // which is also the current memory context here, so a palloc'd replacement is freed with
    // the rest of the report.
    unsafe {
        if !edata.is_null() && !(*edata).message.is_null() && !(*edata).message_id.is_null() {
            let message = CStr::from_ptr((*edata).message).to_string_lossy();
            let message_id = CStr::from_ptr((*edata).message_id).to_string_lossy();
            if let Some(replacement) = redacted(&message_id, &message) {
                if let Ok(replacement) = CString::new(replacement) {
                    (*edata).message = pg_sys::pstrdup(replacement.as_ptr());
                }
            }
        }
        if let Some(previous) = PREVIOUS_HOOK {
            previous(edata);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn only_messages_revealing_a_secret_are_rewritten() {
        assert_eq!(
            redacted(
                "parameter \"%s\" changed to \"%s\"",
                "parameter \"sc_backup.encryption_passphrase\" changed to \"hunter2\""
            )
            .as_deref(),
            Some(
                "parameter \"sc_backup.encryption_passphrase\" changed (value hidden by sc_backup)"
            )
        );
        assert!(redacted(
            "statement: %s",
            "statement: ALTER SYSTEM SET sc_backup.s3_secret_access_key = 'x'"
        )
        .is_some());
        assert!(redacted(
            "parameter \"%s\" changed to \"%s\"",
            "parameter \"sc_backup.compression\" changed to \"gzip\""
        )
        .is_none());
        assert!(redacted("statement: %s", "statement: SELECT 1").is_none());
    }
}
