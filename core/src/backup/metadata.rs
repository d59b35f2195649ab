//! A backup's metadata (`backup.json`, the playbook's `.meta` plus what restore needs) and its
//! catalog snapshot.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::document::read_document;
use super::metadata_key;
use crate::error::{Error, Result};
use crate::pg::lsn::{segments_between, Lsn};
use crate::repository::Repository;

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

/// The backup's metadata, in the shape of the playbook's `.meta` plus what restore needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupMetadata {
    pub format: u32,
    pub backup_name: String,
    pub backup_type: String,
    /// Start time, RFC 3339 UTC.
    pub timestamp: String,
    pub database: String,
    pub host: String,
    /// Bytes of data directory copied.
    pub size_bytes: u64,
    /// Bytes stored in the repository (after compression and encryption).
    pub stored_bytes: u64,
    /// `sha256:<digest of the manifest>`.
    pub checksum: String,
    pub compression: String,
    pub encryption: String,
    pub duration_seconds: f64,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_time: String,
    pub stop_time: String,
    pub timeline: u32,
    pub pg_version_num: u32,
    pub system_identifier: String,
    pub wal_segment_size: u64,
    pub file_count: u64,
    pub manifest: String,
    /// The catalog snapshot's object (`catalog<suffix>`), when one was taken.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub catalog: String,
    /// `sha256:<digest of the catalog snapshot>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub catalog_checksum: String,
    pub status: String,
    /// The backup an incremental or differential one was taken against: its pages and
    /// unchanged files come from there (and, through it, from the chain's full backup).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent: String,
    /// `incremental` or `differential` when `parent` is set; empty for a full backup.
    /// (`backup_type` is the label: `full`, or the schedule that took it.)
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// The server's page size (BLCKSZ), for backups with page streams; 0 means 8192.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub block_size: u32,
    /// SHA-256 of this document serialized with this field empty.
    #[serde(default)]
    pub metadata_sha256: String,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl BackupMetadata {
    /// `full`, `incremental` or `differential`.
    pub fn method(&self) -> &str {
        if self.parent.is_empty() {
            "full"
        } else if self.method.is_empty() {
            "incremental"
        } else {
            &self.method
        }
    }

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

    pub fn start_lsn(&self) -> Result<Lsn> {
        self.start_lsn
            .parse()
            .map_err(|reason| self.invalid(reason))
    }

    pub fn stop_lsn(&self) -> Result<Lsn> {
        self.stop_lsn.parse().map_err(|reason| self.invalid(reason))
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidMetadata {
            object: metadata_key(&self.backup_name),
            reason,
        }
    }

    /// WAL files the backup needs to reach consistency.
    pub fn required_wal(&self) -> Result<Vec<String>> {
        Ok(segments_between(
            self.timeline,
            self.start_lsn()?,
            self.stop_lsn()?,
            self.wal_segment_size,
        ))
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
        &metadata.backup_name,
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
        m.stop_lsn = "0/4000010".into();
        assert_eq!(
            m.required_wal().unwrap(),
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004"
            ]
        );
    }
}
