pub mod container_settings;
pub mod drill;
pub mod dump;
pub mod expire;
pub mod extract;
pub mod list;
pub mod restore;
pub mod sandbox;
pub mod target;
pub mod verify;
pub mod wal_fetch;

use sc_backup_core::ops::audit::{self, AuditTimer};
use sc_backup_core::Repository;

use crate::error::CliError;

/// The OS user running the CLI, for the audit trail.
pub fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            let uid = std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .unwrap_or(0);
            format!("uid {uid}")
        })
}

/// Starts the audit record of a CLI operation.
pub fn audit_start(operation: &str) -> AuditTimer {
    AuditTimer::start(operation, audit::source::CLI, &os_user())
}

/// Records how an operation ended, then hands its result on. The record is best effort when
/// the operation itself failed (the repository may be what failed); after a success, failing
/// to record it is an error, so the trail has no silent holes.
pub fn audited<T>(
    repository: &Repository,
    timer: &AuditTimer,
    result: Result<T, CliError>,
) -> Result<T, CliError> {
    match result {
        Ok(value) => {
            audit::append(repository, &timer.finish(None))?;
            Ok(value)
        }
        Err(error) => {
            if let Err(audit_error) =
                audit::append(repository, &timer.finish(Some(error.to_string())))
            {
                eprintln!("sc-backup: warning: could not record the failure in the audit trail: {audit_error}");
            }
            Err(error)
        }
    }
}
