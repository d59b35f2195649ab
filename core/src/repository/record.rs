//! The playbook's record of one stored copy: the fields its `.meta` files carry, written first
//! in a physical backup's `backup.json` and in a logical dump's `.meta`. Both kinds hold them
//! as one [`PlaybookFields`]; each kind's wire form spells them as the playbook did for it.

use chrono::{DateTime, Utc};

use crate::config::{CompressionAlgorithm, EncryptionMode};

/// What the playbook records of every backup and dump, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaybookFields {
    /// The copy's name: a backup's directory under `backups/`, a dump's file name without its
    /// extensions (`<db>_full_<YYYYmmdd_HHMMSS>`).
    pub backup_name: String,
    /// The label: `full` for a copy taken on request, or the schedule that took it.
    pub backup_type: String,
    /// The database dumped, or the one a backup was taken from (empty for the globals).
    pub database: String,
    pub host: String,
    /// A backup: bytes of data directory copied. A dump: bytes of the stored file.
    pub size_bytes: u64,
    /// A backup: `sha256:<digest of its manifest>`. A dump: the SHA-256 of the stored file,
    /// as its `.sha256` file says.
    pub checksum: String,
    pub compression: CompressionAlgorithm,
    pub encryption: EncryptionMode,
    pub duration_seconds: f64,
    /// When the copy started (the playbook's `timestamp`) and when it ended.
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
}

/// Times as the repository's documents write them: RFC 3339, UTC, microseconds.
pub fn wire_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A time read from a document, or what is wrong with it.
pub fn read_wire_time(field: &str, text: &str) -> Result<DateTime<Utc>, String> {
    crate::util::time::parse_time(text).ok_or_else(|| format!("{field} \"{text}\" is not a time"))
}
