//! Physical base backups: what to copy, how it is stored, how it is found and checked.
//!
//! The PostgreSQL side (pg_backup_start / pg_backup_stop, cancellation) stays in the extension;
//! this module walks the data directory, streams files into the repository through the codec
//! pipeline on worker threads, and writes the manifest and metadata.
//!
//! ```text
//! backups/<name>/data/<n><suffix>          file n of the manifest (object names carry no paths)
//! backups/<name>/bundle/<n><suffix>        files under 2 MiB, each encoded on its own, one after
//!                                          another; entries give offset and stored size
//! backups/<name>/manifest<suffix>          JSON: every entry: path, type, size, mode, mtime, SHA-256, stored size
//! backups/<name>/backup.json               metadata (plaintext, self-checksummed); written last:
//!                                          a backup exists exactly when this object does
//! ```
//!
//! One file per concern: `source_plan` (what a backup copies), `manifest` (the list of files
//! and reading one back), `metadata` (`backup.json` and the catalog snapshot), `writer`
//! (storing a new backup), `listing` (finding backups), `verify` (re-reading one),
//! `incremental` (what an incremental backup stores and against which parent), `chain`
//! (reading a backup through the backups it depends on).

mod chain;
mod incremental;
mod listing;
mod manifest;
mod metadata;
mod source_plan;
mod verify;
mod writer;

pub use chain::{ancestors, chain_sizes, dependents, BackupChain};
pub use incremental::{
    choose_parent, is_page_compared, BackupKind, ClusterPosition, DEFAULT_BLOCK_SIZE,
};
pub use listing::{find_backup, list_backups, read_metadata, scan_backups, BackupScan};
pub(crate) use manifest::{read_backup_file, BundleReader};
pub use manifest::{read_manifest, EntryType, Manifest, ManifestEntry, Stored};
pub use metadata::{read_catalog, BackupMetadata, CatalogSnapshot, DatabaseTables};
pub use source_plan::{plan, SourceEntry, SourceKind, Tablespace};
pub use verify::{verify_backup, Problem};
pub use writer::{BackupWriter, Interrupted};

pub const BACKUPS_PREFIX: &str = "backups/";

pub fn backup_prefix(name: &str) -> String {
    format!("{BACKUPS_PREFIX}{name}/")
}

/// `<database>_full_YYYYMMDD_HHMMSS`, usable as an object key part.
pub fn backup_name(database: &str, kind: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    let database: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let database = database.trim_start_matches(['.', '_']);
    let database = if database.is_empty() { "db" } else { database };
    format!("{database}_{kind}_{}", at.format("%Y%m%d_%H%M%S"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn metadata() -> BackupMetadata {
        BackupMetadata {
            format: 1,
            backup_name: "db_full_20261124_033519".into(),
            backup_type: "full".into(),
            timestamp: "2026-11-24T03:35:19.228597Z".into(),
            database: "db".into(),
            host: "vm".into(),
            size_bytes: 23_369_675,
            stored_bytes: 3_096_262,
            checksum: "sha256:00".into(),
            compression: "gzip".into(),
            encryption: "none".into(),
            // serde_json does not parse this back to the same bits.
            duration_seconds: 2.2084096300000002,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            start_time: "2026-11-24T03:35:19.228597Z".into(),
            stop_time: "2026-11-24T03:35:21.436969Z".into(),
            timeline: 1,
            pg_version_num: 150020,
            system_identifier: "7711576491893132752".into(),
            wal_segment_size: 16 << 20,
            file_count: 970,
            manifest: "manifest.gz".into(),
            catalog: String::new(),
            catalog_checksum: String::new(),
            status: "complete".into(),
            parent: String::new(),
            method: String::new(),
            block_size: 0,
            metadata_sha256: String::new(),
        }
    }

    #[test]
    fn names_are_safe_keys() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T03:35:19Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            backup_name("postgres", "full", at),
            "postgres_full_20261124_033519"
        );
        assert_eq!(
            backup_name("../my db", "full", at),
            "my_db_full_20261124_033519"
        );
        assert_eq!(backup_name("", "full", at), "db_full_20261124_033519");
    }
}
