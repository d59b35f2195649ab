pub mod container_settings;
pub mod copy;
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

/// Records how an operation ended, then hands its result on unchanged (the one policy of
/// [`audit::record`]): a record the repository did not take is a warning, with the record in
/// full on standard error so that the log keeps it.
pub fn audited<T>(
    repository: &Repository,
    timer: &AuditTimer,
    result: Result<T, CliError>,
) -> Result<T, CliError> {
    let record = timer.finish(result.as_ref().err().map(|error| error.to_string()));
    if let Err(unrecorded) = audit::record(repository, &record) {
        eprintln!(
            "sc-backup: warning: {unrecorded}; the record: {}",
            serde_json::to_string(&record).unwrap_or_default()
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use sc_backup_core::config::RawSettings;
    use sc_backup_core::{ClusterIdentity, Settings};

    #[test]
    fn an_operation_outcome_stands_when_its_record_cannot_be_stored() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::from_raw(&RawSettings {
            repository: Some(dir.path().display().to_string()),
            ..Default::default()
        })
        .unwrap();
        let identity = ClusterIdentity {
            system_identifier: 1,
            pg_version_num: 180000,
        };
        let repository = Repository::open_for_cluster(&settings, &identity).unwrap();
        // A file where the audit directory goes: no record can be stored (even as root).
        std::fs::write(dir.path().join("audit"), b"").unwrap();
        let timer = audit_start("delete");
        assert!(audit::record(&repository, &timer.finish(None)).is_err());
        assert_eq!(audited(&repository, &timer, Ok(7)).unwrap(), 7);
        let failed: Result<(), CliError> = Err(CliError::Message("refused".into()));
        let error = audited(&repository, &timer, failed).unwrap_err();
        assert_eq!(error.to_string(), "refused");
    }
}
