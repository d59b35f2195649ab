//! Keeps secret settings out of the server log.
//!
//! PostgreSQL logs `parameter "X" changed to "Y"` when a reload changes a setting, whatever the
//! setting's flags; `log_statement` logs `ALTER SYSTEM SET X = 'Y'` verbatim; an ERROR is
//! followed by a `STATEMENT:` line with the whole statement (a failed ALTER SYSTEM, say); a
//! rejected value is quoted in "invalid value for parameter". For our secrets that would write
//! the repository passphrase and the S3 secret key into the log. An `emit_log_hook` (installed
//! in the postmaster, inherited by every process) rewrites every message, detail or context
//! that mentions one of them, and hides the statement of any report made while running a
//! statement that does. Setting names are matched without regard to case (SQL folds
//! `SC_BACKUP.ENCRYPTION_PASSPHRASE`) by their last part, which every spelling contains
//! (`sc_backup . encryption_passphrase`, quoted identifiers).

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

/// The settings whose values must never be logged.
pub const SECRET_SETTINGS: &[&str] = sc_backup_core::config::SECRET_SETTINGS;

static mut PREVIOUS_HOOK: pg_sys::emit_log_hook_type = None;

pub fn install() {
    // Safety: _PG_init runs single-threaded in each process before any message is emitted
    // through the hook; the previous hook is chained.
    unsafe {
        PREVIOUS_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(redact_secrets);
    }
}

/// The secret setting `text` mentions, in any case.
fn mentioned_secret(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    SECRET_SETTINGS.iter().copied().find(|name| {
        let last = name.rsplit('.').next().unwrap_or(name);
        lower.contains(last)
    })
}

/// What to log instead of `message`, if it is one of the messages that carry a setting's value
/// (a reload's change, a logged statement, a refused value) and the setting is a secret. Other
/// messages only name settings ("permission denied to examine ...") and stay as they are: the
/// hook also changes what the client is sent.
fn redacted(message_id: &str, message: &str) -> Option<String> {
    let secret = mentioned_secret(message)?;
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
    } else if message_id.starts_with("invalid value for parameter") {
        Some(format!(
            "invalid value for parameter \"{secret}\" (value hidden by sc_backup)"
        ))
    } else {
        None
    }
}

/// Whether `text` (a C string PostgreSQL owns, possibly null) mentions a secret setting.
unsafe fn mentions_secret(text: *const std::ffi::c_char) -> bool {
    !text.is_null() && mentioned_secret(&CStr::from_ptr(text).to_string_lossy()).is_some()
}

unsafe extern "C-unwind" fn redact_secrets(edata: *mut pg_sys::ErrorData) {
    // Safety: PostgreSQL passes the error being reported; its strings live in ErrorContext,
    // which is also the current memory context here, so a palloc'd replacement is freed with
    // the rest of the report. debug_query_string is the statement being run, if any.
    unsafe {
        if !edata.is_null() {
            if !(*edata).message.is_null() {
                let message = CStr::from_ptr((*edata).message).to_string_lossy();
                let message_id = if (*edata).message_id.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr((*edata).message_id)
                        .to_string_lossy()
                        .into_owned()
                };
                if let Some(replacement) = redacted(&message_id, &message) {
                    if let Ok(replacement) = CString::new(replacement) {
                        (*edata).message = pg_sys::pstrdup(replacement.as_ptr());
                    }
                }
            }
            for part in [
                &mut (*edata).detail,
                &mut (*edata).detail_log,
                &mut (*edata).context,
                &mut (*edata).internalquery,
            ] {
                if mentions_secret(*part) {
                    *part = std::ptr::null_mut();
                }
            }
            if mentions_secret(pg_sys::debug_query_string) {
                // The "STATEMENT:" line of an error while running it.
                (*edata).hide_stmt = true;
            }
        }
        if let Some(previous) = PREVIOUS_HOOK {
            previous(edata);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{mentioned_secret, redacted};

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
        let statement = redacted(
            "statement: %s",
            "statement: ALTER SYSTEM SET SC_BACKUP.S3_SECRET_ACCESS_KEY = 'x'",
        )
        .unwrap();
        assert!(!statement.contains("'x'"), "{statement}");
        let invalid = redacted(
            "invalid value for parameter \"%s\": \"%s\"",
            "invalid value for parameter \"sc_backup.encryption_passphrase\": \"hunter2\"",
        )
        .unwrap();
        assert!(!invalid.contains("hunter2"), "{invalid}");
        assert_eq!(
            redacted(
                "parameter \"%s\" changed to \"%s\"",
                "parameter \"sc_backup.compression\" changed to \"gzip\""
            ),
            None
        );
        assert_eq!(redacted("statement: %s", "statement: SELECT 1"), None);
        assert_eq!(
            redacted(
                "%s",
                "sc_backup: sc_backup.encryption_passphrase is set as a configuration setting"
            ),
            None
        );
        assert_eq!(
            redacted(
                "permission denied to examine \"%s\"",
                "permission denied to examine \"sc_backup.encryption_passphrase\""
            ),
            None
        );
        for spelling in [
            "ALTER SYSTEM SET sc_backup . encryption_passphrase = 'x'",
            "ALTER SYSTEM SET \"sc_backup\".\"encryption_passphrase\" = 'x'",
            "alter system set Sc_Backup.Encryption_Passphrase to 'x'",
        ] {
            assert_eq!(
                mentioned_secret(spelling),
                Some("sc_backup.encryption_passphrase"),
                "{spelling}"
            );
        }
    }
}
