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
//! backups/<name>/copy-<attempt>/...        the same objects, in a backup copied from another
//!                                          repository (`copy`)
//! ```
//!
//! One file per concern: `source_plan` (what a backup copies), `manifest` (the list of files
//! and reading one back), `metadata` (`backup.json` and the catalog snapshot), `writer`
//! (storing a new backup), `copy` (a finished backup into another repository), `listing` (finding backups), `verify` (re-reading one),
//! `incremental` (what an incremental backup stores and against which parent), `chain`
//! (reading a backup through the backups it depends on).

mod chain;
mod copy;
mod delete;
mod document;
mod incremental;
mod listing;
mod manifest;
mod metadata;
mod source_plan;
mod verify;
mod writer;

pub use chain::{ancestors, chain_sizes, dependents, BackupChain};
pub use copy::{backups_to_copy, copy_backup, copy_backups, BackupCopyReport};
pub use delete::{delete_backup, delete_backup_with_dependents, TOMBSTONES_KEPT};
pub(crate) use delete::{remove_backup, remove_unfinished_backup, Removal};
pub use document::{limit_documents_in_memory, CappedBuffer};
pub use incremental::{
    choose_parent, is_page_compared, BackupKind, ClusterPosition, DEFAULT_BLOCK_SIZE,
};
pub use listing::{find_backup, list_backups, read_metadata, scan_backups, tombstone, BackupScan};
pub(crate) use manifest::{read_backup_file, BundleReader};
pub use manifest::{read_manifest, EntryType, Manifest, ManifestEntry, Stored};
pub use metadata::{
    read_catalog, BackupMetadata, BackupReport, BackupStatus, CatalogSnapshot, DatabaseTables,
};
pub use source_plan::{plan, SourceEntry, SourceKind, Tablespace};
pub use verify::{verify_backup, Problem};
pub use writer::{BackupWriter, Interrupted};

pub const BACKUPS_PREFIX: &str = "backups/";

pub fn backup_prefix(name: &str) -> String {
    format!("{BACKUPS_PREFIX}{name}/")
}

/// The name of the object that lists a backup, and whose presence commits it.
pub(crate) const METADATA_NAME: &str = "backup.json";

/// The key of backup `name`'s `backup.json`.
pub(crate) fn metadata_key(name: &str) -> String {
    format!("{}{METADATA_NAME}", backup_prefix(name))
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

/// The name of a backup of `database` starting now, and the time it names. When a backup of
/// this second already exists (two backups of one kind within a second: a retry, a scheduled
/// backup right after a manual one), waits for the next second, as pgBackRest does for its
/// labels, so that names stay the times backups started and sort in the order they were taken.
pub fn new_backup_name(
    repository: &crate::repository::Repository,
    database: &str,
    kind: &str,
) -> crate::error::Result<(String, chrono::DateTime<chrono::Utc>)> {
    let mut now = chrono::Utc::now();
    for _ in 0..3 {
        let name = backup_name(database, kind, now);
        if repository.storage().list(&backup_prefix(&name))?.is_empty() {
            return Ok((name, now));
        }
        let rest = 1_000_000_000 - u64::from(now.timestamp_subsec_nanos().min(999_999_999));
        std::thread::sleep(std::time::Duration::from_nanos(rest));
        now = chrono::Utc::now();
    }
    // Still taken (a clock stepped back): BackupWriter::new refuses it by name.
    Ok((backup_name(database, kind, now), now))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Taking made-up backups, for the tests of other modules.
    pub(crate) use super::chain::tests::{relation, repository, take};

    pub(crate) fn time(text: &str) -> chrono::DateTime<chrono::Utc> {
        crate::util::time::parse_time(text).expect("a test time")
    }

    pub(crate) fn metadata() -> BackupMetadata {
        BackupMetadata {
            playbook: crate::repository::record::PlaybookFields {
                backup_name: "db_full_20261124_033519".into(),
                backup_type: "full".into(),
                database: "db".into(),
                host: "vm".into(),
                size_bytes: 23_369_675,
                checksum: "sha256:00".into(),
                compression: crate::config::CompressionAlgorithm::Gzip,
                encryption: crate::config::EncryptionMode::None,
                // serde_json does not parse this back to the same bits.
                duration_seconds: 2.2084096300000002,
                start_time: time("2026-11-24T03:35:19.228597Z"),
                stop_time: time("2026-11-24T03:35:21.436969Z"),
            },
            format: 1,
            stored_bytes: 3_096_262,
            start_lsn: crate::pg::lsn::Lsn(0x2000028),
            stop_lsn: crate::pg::lsn::Lsn(0x2000100),
            timeline: 1,
            pg_version_num: 150020,
            system_identifier: "7711576491893132752".into(),
            wal_segment_size: 16 << 20,
            file_count: 970,
            manifest: "manifest.gz".into(),
            catalog: String::new(),
            catalog_checksum: String::new(),
            status: BackupStatus::Complete,
            parent: None,
            method: BackupKind::Full,
            block_size: 0,
            metadata_sha256: String::new(),
        }
    }

    /// What a caller reports of the backup [`metadata`] describes.
    pub(crate) fn report() -> BackupReport {
        let m = metadata();
        BackupReport {
            backup_type: m.playbook.backup_type,
            database: m.playbook.database,
            host: m.playbook.host,
            duration_seconds: m.playbook.duration_seconds,
            start_lsn: m.start_lsn,
            stop_lsn: m.stop_lsn,
            start_time: m.playbook.start_time,
            stop_time: m.playbook.stop_time,
            timeline: m.timeline,
            pg_version_num: m.pg_version_num,
            system_identifier: m.system_identifier,
            wal_segment_size: m.wal_segment_size,
            method: BackupKind::Full,
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

    #[test]
    fn a_second_backup_within_a_second_waits_for_the_next_free_name() {
        let dir = tempfile::tempdir().unwrap();
        let repository = super::chain::tests::repository(dir.path());
        let now = chrono::Utc::now();
        let taken: Vec<String> = [0, 1]
            .iter()
            .map(|s| backup_name("db", "full", now + chrono::Duration::seconds(*s)))
            .collect();
        for name in &taken {
            let mut writer = repository
                .storage()
                .create(&format!("{}backup.json", backup_prefix(name)))
                .unwrap();
            writer.write_all(b"{}").unwrap();
            writer.commit().unwrap();
        }
        let (name, at) = new_backup_name(&repository, "db", "full").unwrap();
        assert!(!taken.contains(&name), "{name} {taken:?}");
        assert!(at > now + chrono::Duration::seconds(1), "{at} {now}");
        assert_eq!(name, backup_name("db", "full", at));
    }
}
