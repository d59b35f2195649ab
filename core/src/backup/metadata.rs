//! A backup's metadata (`backup.json`, the playbook's `.meta` plus what restore needs) and its
//! catalog snapshot.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::document::read_document;
use super::BackupKind;
use crate::error::{Error, Result};
use crate::pg::lsn::{segments_between, Lsn};
use crate::repository::record::{read_wire_time, wire_time, PlaybookFields};
use crate::repository::Repository;
use chrono::{DateTime, Utc};

const EMPTY_DIGEST_FIELD: &str = "\"metadata_sha256\": \"\"";

/// The user tables of one database.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseTables {
    pub database: String,
    /// `schema.table`, sorted.
    pub tables: Vec<String>,
}

/// The user tables of every database, listed by `sc_backup()` just after `pg_backup_start`
/// and again just before `pg_backup_stop`: what a restore of the backup must hold, apart from
/// what changed between the two (verification by restore compares with it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogSnapshot {
    pub at_start: Vec<DatabaseTables>,
    pub before_stop: Vec<DatabaseTables>,
}

/// A backup's metadata: what PostgreSQL reported of it (positions, times, timeline), what the
/// writer stored (sizes, digests, codec), and how it relates to other backups.
/// `backup.json` holds it as [`BackupMetadataWire`]; the conversions below are the one place
/// where text becomes types and back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BackupMetadataWire", into = "BackupMetadataWire")]
pub struct BackupMetadata {
    /// The playbook's fields, shared with dumps.
    pub playbook: PlaybookFields,
    pub format: u32,
    /// Bytes stored in the repository (after compression and encryption).
    pub stored_bytes: u64,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub timeline: u32,
    pub pg_version_num: u32,
    pub system_identifier: String,
    pub wal_segment_size: u64,
    pub file_count: u64,
    pub manifest: String,
    /// The catalog snapshot's object (`catalog<suffix>`), empty when none was taken.
    pub catalog: String,
    /// `sha256:<digest of the catalog snapshot>`.
    pub catalog_checksum: String,
    pub status: BackupStatus,
    /// The backup an incremental or differential one was taken against: its pages and
    /// unchanged files come from there (and, through it, from the chain's full backup).
    pub parent: Option<String>,
    /// What was taken: full, or the changes since `parent`.
    pub method: BackupKind,
    /// The server's page size (BLCKSZ), for backups with page streams; 0 means 8192.
    pub block_size: u32,
    /// SHA-256 of the document serialized with this field empty.
    pub metadata_sha256: String,
}

/// What a backup's caller knows once its files are stored: what PostgreSQL reported of it
/// (`pg_backup_start`, `pg_backup_stop`, the control file) and who took it. The writer adds
/// what it stored ([`super::BackupWriter::finish`]), so no field is ever written as a
/// placeholder.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupReport {
    pub backup_type: String,
    pub database: String,
    pub host: String,
    pub duration_seconds: f64,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_time: DateTime<Utc>,
    pub stop_time: DateTime<Utc>,
    pub timeline: u32,
    pub pg_version_num: u32,
    pub system_identifier: String,
    pub wal_segment_size: u64,
    /// What the caller asked for: incremental or differential for a writer made with a
    /// parent (a writer without one takes a full backup whatever this says).
    pub method: BackupKind,
}

/// Where a backup stands. Only complete backups are ever listed: an unfinished one has no
/// `backup.json` (or a tombstone in its place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupStatus {
    Complete,
}

impl BackupStatus {
    pub fn name(self) -> &'static str {
        match self {
            BackupStatus::Complete => "complete",
        }
    }
}

/// `backup.json` as written: the playbook's `.meta` fields plus what restore needs, every
/// value in the text form other tools read (LSNs as PostgreSQL prints them, times in RFC 3339).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BackupMetadataWire {
    format: u32,
    backup_name: String,
    backup_type: String,
    /// Start time, RFC 3339 UTC.
    timestamp: String,
    database: String,
    host: String,
    size_bytes: u64,
    stored_bytes: u64,
    checksum: String,
    compression: String,
    encryption: String,
    duration_seconds: f64,
    start_lsn: String,
    stop_lsn: String,
    start_time: String,
    stop_time: String,
    timeline: u32,
    pg_version_num: u32,
    system_identifier: String,
    wal_segment_size: u64,
    file_count: u64,
    manifest: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    catalog: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    catalog_checksum: String,
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    parent: String,
    /// `incremental` or `differential` when `parent` is set; empty for a full backup (and,
    /// written before differential backups existed, for an incremental one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    method: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    block_size: u32,
    #[serde(default)]
    metadata_sha256: String,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl TryFrom<BackupMetadataWire> for BackupMetadata {
    type Error = String;

    fn try_from(wire: BackupMetadataWire) -> std::result::Result<Self, String> {
        let parent = Some(wire.parent).filter(|name| !name.is_empty());
        let method = match (&parent, wire.method.as_str()) {
            (None, "" | "full") => BackupKind::Full,
            (None, other) => return Err(format!("method \"{other}\" without a parent")),
            (Some(_), "" | "incremental") => BackupKind::Incremental,
            (Some(_), "differential") => BackupKind::Differential,
            (Some(_), other) => return Err(format!("unknown method \"{other}\"")),
        };
        let status = match wire.status.as_str() {
            "complete" => BackupStatus::Complete,
            other => return Err(format!("status \"{other}\" is not complete")),
        };
        Ok(BackupMetadata {
            playbook: PlaybookFields {
                backup_name: wire.backup_name,
                backup_type: wire.backup_type,
                database: wire.database,
                host: wire.host,
                size_bytes: wire.size_bytes,
                checksum: wire.checksum,
                compression: wire
                    .compression
                    .parse()
                    .map_err(|e: crate::config::ConfigError| e.to_string())?,
                encryption: wire
                    .encryption
                    .parse()
                    .map_err(|e: crate::config::ConfigError| e.to_string())?,
                duration_seconds: wire.duration_seconds,
                start_time: read_wire_time("start_time", &wire.start_time)?,
                stop_time: read_wire_time("stop_time", &wire.stop_time)?,
            },
            format: wire.format,
            start_lsn: wire.start_lsn.parse()?,
            stop_lsn: wire.stop_lsn.parse()?,
            stored_bytes: wire.stored_bytes,
            timeline: wire.timeline,
            pg_version_num: wire.pg_version_num,
            system_identifier: wire.system_identifier,
            wal_segment_size: wire.wal_segment_size,
            file_count: wire.file_count,
            manifest: wire.manifest,
            catalog: wire.catalog,
            catalog_checksum: wire.catalog_checksum,
            status,
            parent,
            method,
            block_size: wire.block_size,
            metadata_sha256: wire.metadata_sha256,
        })
    }
}

impl From<BackupMetadata> for BackupMetadataWire {
    fn from(metadata: BackupMetadata) -> Self {
        let playbook = metadata.playbook;
        BackupMetadataWire {
            format: metadata.format,
            backup_name: playbook.backup_name,
            backup_type: playbook.backup_type,
            timestamp: wire_time(playbook.start_time),
            database: playbook.database,
            host: playbook.host,
            size_bytes: playbook.size_bytes,
            stored_bytes: metadata.stored_bytes,
            checksum: playbook.checksum,
            compression: playbook.compression.name().to_string(),
            encryption: playbook.encryption.name().to_string(),
            duration_seconds: playbook.duration_seconds,
            start_lsn: metadata.start_lsn.to_string(),
            stop_lsn: metadata.stop_lsn.to_string(),
            start_time: wire_time(playbook.start_time),
            stop_time: wire_time(playbook.stop_time),
            timeline: metadata.timeline,
            pg_version_num: metadata.pg_version_num,
            system_identifier: metadata.system_identifier,
            wal_segment_size: metadata.wal_segment_size,
            file_count: metadata.file_count,
            manifest: metadata.manifest,
            catalog: metadata.catalog,
            catalog_checksum: metadata.catalog_checksum,
            status: metadata.status.name().to_string(),
            parent: metadata.parent.unwrap_or_default(),
            method: match metadata.method {
                BackupKind::Full => String::new(),
                other => other.name().to_string(),
            },
            block_size: metadata.block_size,
            metadata_sha256: metadata.metadata_sha256,
        }
    }
}

impl BackupMetadata {
    /// The page size of the backup's page streams.
    pub fn block_size(&self) -> u32 {
        if self.block_size == 0 {
            super::DEFAULT_BLOCK_SIZE
        } else {
            self.block_size
        }
    }

    /// Serializes the metadata with `metadata_sha256` set to the SHA-256 of the document as
    /// written with that field empty. The digest is over bytes, not values: parsing and
    /// re-serializing a float need not give the same text back.
    pub(super) fn to_checksummed_json(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.metadata_sha256 = String::new();
        let text = serde_json::to_string_pretty(&copy).expect("metadata serializes");
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        text.replacen(
            EMPTY_DIGEST_FIELD,
            &format!("\"metadata_sha256\": \"{digest}\""),
            1,
        )
        .into_bytes()
    }

    /// Checks the digest written by [`BackupMetadata::to_checksummed_json`] against `stored`.
    pub(super) fn checksum_matches(stored: &[u8], digest: &str) -> bool {
        let text = String::from_utf8_lossy(stored);
        let blanked = text.replacen(
            &format!("\"metadata_sha256\": \"{digest}\""),
            EMPTY_DIGEST_FIELD,
            1,
        );
        !digest.is_empty() && hex::encode(Sha256::digest(blanked.as_bytes())) == digest
    }

    /// WAL files the backup needs to reach consistency.
    pub fn required_wal(&self) -> Vec<String> {
        segments_between(
            self.timeline,
            self.start_lsn,
            self.stop_lsn,
            self.wal_segment_size,
        )
    }
}
/// The backup's catalog snapshot, verified against its recorded digest; `None` for backups
/// taken without one.
pub fn read_catalog(
    repository: &Repository,
    metadata: &BackupMetadata,
) -> Result<Option<CatalogSnapshot>> {
    if metadata.catalog.is_empty() {
        return Ok(None);
    }
    let (key, json) = read_document(
        repository,
        &metadata.playbook.backup_name,
        &metadata.catalog,
        &metadata.catalog_checksum,
    )?;
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|e| Error::InvalidMetadata {
            object: key,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::tests::metadata;
    use crate::config::{CompressionAlgorithm, EncryptionMode};

    /// A backup.json of an incremental backup as the untyped metadata wrote it (before
    /// differential backups, `method` stayed empty).
    const WRITTEN_BEFORE: &str = r#"{
  "format": 2,
  "backup_name": "db_incremental_20261124_043519",
  "backup_type": "hourly",
  "timestamp": "2026-11-24T04:35:19.228597Z",
  "database": "db",
  "host": "vm",
  "size_bytes": 23369675,
  "stored_bytes": 96262,
  "checksum": "sha256:00",
  "compression": "zstd",
  "encryption": "age",
  "duration_seconds": 2.5,
  "start_lsn": "0/5000028",
  "stop_lsn": "0/5000100",
  "start_time": "2026-11-24T04:35:19.228597Z",
  "stop_time": "2026-11-24T04:35:21.436969Z",
  "timeline": 1,
  "pg_version_num": 170005,
  "system_identifier": "7711576491893132752",
  "wal_segment_size": 16777216,
  "file_count": 970,
  "manifest": "manifest.zst.age",
  "catalog": "catalog.zst.age",
  "catalog_checksum": "sha256:01",
  "status": "complete",
  "parent": "db_full_20261124_033519",
  "metadata_sha256": "abc"
}"#;

    #[test]
    fn backup_json_written_before_the_types_reads_and_writes_back_the_same() {
        let read: BackupMetadata = serde_json::from_str(WRITTEN_BEFORE).unwrap();
        assert_eq!(read.method, BackupKind::Incremental);
        assert_eq!(read.parent.as_deref(), Some("db_full_20261124_033519"));
        assert_eq!(read.start_lsn, Lsn(0x5000028));
        assert_eq!(read.playbook.compression, CompressionAlgorithm::Zstd);
        assert_eq!(read.playbook.encryption, EncryptionMode::Age);
        assert_eq!(read.status, BackupStatus::Complete);
        assert_eq!(
            read.playbook.stop_time,
            crate::backup::tests::time("2026-11-24T04:35:21.436969Z")
        );
        // Written back as before, with the method now said (readers of either form agree).
        assert_eq!(
            serde_json::to_string_pretty(&read).unwrap(),
            WRITTEN_BEFORE.replace(
                "\"parent\": \"db_full_20261124_033519\",",
                "\"parent\": \"db_full_20261124_033519\",\n  \"method\": \"incremental\","
            )
        );
        // A full backup writes neither parent nor method, as before.
        let full = serde_json::to_string(&metadata()).unwrap();
        assert!(
            !full.contains("\"parent\"") && !full.contains("\"method\""),
            "{full}"
        );
    }

    #[test]
    fn values_that_are_no_lsn_time_codec_status_or_method_are_refused() {
        for (field, bad) in [
            (
                "\"start_lsn\": \"0/5000028\"",
                "\"start_lsn\": \"yesterday\"",
            ),
            (
                "\"stop_time\": \"2026-11-24T04:35:21.436969Z\"",
                "\"stop_time\": \"soon\"",
            ),
            ("\"compression\": \"zstd\"", "\"compression\": \"lz77\""),
            ("\"encryption\": \"age\"", "\"encryption\": \"rot13\""),
            ("\"status\": \"complete\"", "\"status\": \"partial\""),
            (
                "\"parent\": \"db_full_20261124_033519\"",
                "\"parent\": \"db_full_20261124_033519\",\n  \"method\": \"sideways\"",
            ),
        ] {
            assert!(WRITTEN_BEFORE.contains(field), "{field}");
            let json = WRITTEN_BEFORE.replace(field, bad);
            assert!(
                serde_json::from_str::<BackupMetadata>(&json).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn metadata_checksum_covers_the_stored_bytes() {
        let json = metadata().to_checksummed_json();
        let parsed: BackupMetadata = serde_json::from_slice(&json).unwrap();
        assert!(BackupMetadata::checksum_matches(
            &json,
            &parsed.metadata_sha256
        ));
        let tampered = String::from_utf8(json.clone())
            .unwrap()
            .replace("23369675", "23369676");
        assert!(!BackupMetadata::checksum_matches(
            tampered.as_bytes(),
            &parsed.metadata_sha256
        ));
        assert!(!BackupMetadata::checksum_matches(&json, ""));
    }

    #[test]
    fn required_wal_spans_start_to_stop() {
        let mut m = metadata();
        m.stop_lsn = Lsn(0x4000010);
        assert_eq!(
            m.required_wal(),
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004"
            ]
        );
    }
}
