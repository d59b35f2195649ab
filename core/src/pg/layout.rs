//! What we add to a data directory, by name: [`crate::backup`] leaves these out of every
//! backup, and restore and recovery use them.

/// The unwrapped repository key, written into the restored data directory for the duration of
/// recovery so each `restore_command` call skips the passphrase derivation; removed by
/// `recovery_end_command` and never included in backups.
pub const RECOVERY_KEY_FILE: &str = "sc_backup_recovery.key";

/// The directory, inside the data directory, where `wal-fetch` spools the segments it reads
/// ahead during recovery.
pub const SPOOL_DIRECTORY: &str = "sc_backup_prefetch";
