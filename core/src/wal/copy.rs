//! Copying WAL from one of a cluster's repositories into another: `sc-backup copy`, which
//! brings a new or lagging repository up to date. Each file the target lacks is read from the
//! source, verified against the SHA-256 its name records, and archived into the target through
//! the target's own archive path: its compression and key, durable before the next file, and a
//! copy already there with other content refused, never replaced. What the target holds is
//! skipped, so an interrupted copy resumes where it stopped. Files go oldest first (history
//! files, then segments by position), so a target cut off midway holds a prefix of the WAL.

use std::path::Path;

use super::{StoredWal, WalFileKind, WalFileName};
use crate::codec::{CodecSpec, Sha256Digest};
use crate::error::{Error, Result};
use crate::repository::Repository;

/// What [`copy_wal`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalCopyReport {
    /// Files archived into the target.
    pub copied: u64,
    /// Files the target already held (the same content).
    pub present: u64,
    /// Bytes of WAL copied (before the target's compression).
    pub bytes: u64,
    /// Backup history files (`.backup`) among those copied: a backup of the cluster stopped.
    pub backup_histories: u64,
}

impl Repository {
    /// Every WAL file stored here, in the order recovery needs them: history files, then
    /// segments (and `.backup`, `.partial` files) by position, then timeline.
    pub fn list_wal(&self) -> Result<Vec<(WalFileName, StoredWal)>> {
        let mut files: Vec<(WalFileName, StoredWal)> = self
            .storage()
            .list("wal/")?
            .into_iter()
            .filter_map(|meta| {
                let base = meta.key.rsplit('/').next()?;
                let (name, rest) = base.split_once('-')?;
                let name = WalFileName::parse(name).ok()?;
                let sha256 = Sha256Digest::from_hex(rest.get(..64)?)?;
                let spec = CodecSpec::from_suffix(&rest[64..])?;
                Some((
                    name,
                    StoredWal {
                        key: meta.key,
                        sha256,
                        spec,
                        stored_size: meta.size,
                    },
                ))
            })
            .collect();
        files.sort_by_key(|(name, _)| order(name));
        Ok(files)
    }
}

/// History files first, then by position (log and segment) and timeline.
fn order(name: &WalFileName) -> (bool, String, String) {
    let text = name.as_str();
    (
        name.kind() != WalFileKind::History,
        text.get(8..).unwrap_or(text).to_string(),
        text.get(..8).unwrap_or(text).to_string(),
    )
}

/// How many WAL files of `source` `target` lacks.
pub fn wal_backlog(source: &Repository, target: &Repository) -> Result<u64> {
    let held: std::collections::HashSet<String> = target
        .list_wal()?
        .into_iter()
        .map(|(name, _)| name.as_str().to_string())
        .collect();
    Ok(source
        .list_wal()?
        .iter()
        .filter(|(name, _)| !held.contains(name.as_str()))
        .count() as u64)
}

/// Copies every WAL file of `source` that `target` lacks, through a file in `scratch` (a
/// private directory: one WAL file at a time, never more in memory than a buffer).
/// `interrupted` is asked between files.
pub fn copy_wal(
    source: &Repository,
    target: &Repository,
    scratch: &Path,
    interrupted: &dyn Fn() -> bool,
) -> Result<WalCopyReport> {
    let mut report = WalCopyReport::default();
    let held: std::collections::HashMap<String, Sha256Digest> = target
        .list_wal()?
        .into_iter()
        .map(|(name, stored)| (name.as_str().to_string(), stored.sha256))
        .collect();
    for (name, stored) in source.list_wal()? {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        match held.get(name.as_str()) {
            Some(digest) if *digest == stored.sha256 => {
                report.present += 1;
                continue;
            }
            Some(digest) => {
                return Err(Error::WalContentMismatch {
                    wal_file: name.as_str().to_string(),
                    stored: digest.to_hex(),
                    offered: stored.sha256.to_hex(),
                })
            }
            None => {}
        }
        let file = scratch.join(name.as_str());
        source.fetch_stored(&stored, &file)?;
        let copied = target.archive_wal(&file, name.as_str());
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&file);
        copied?;
        report.copied += 1;
        report.backup_histories += u64::from(name.kind() == WalFileKind::BackupLabel);
        report.bytes += size;
    }
    Ok(report)
}

/// [`copy_wal`] through a private scratch directory of its own (mode 0700 in the temporary
/// directory, one WAL file at a time, removed afterwards).
pub fn copy_wal_via_scratch(
    source: &Repository,
    target: &Repository,
    interrupted: &dyn Fn() -> bool,
) -> Result<WalCopyReport> {
    let scratch = tempfile::Builder::new()
        .prefix("sc-backup-copy-")
        .tempdir()
        .map_err(|e| {
            Error::io(
                "create a scratch directory in",
                std::env::temp_dir().display(),
                e,
            )
        })?;
    copy_wal(source, target, scratch.path(), interrupted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawSettings, Settings};
    use crate::repository::ClusterIdentity;

    fn repository(dir: &Path, compression: &str, encryption: &str) -> Repository {
        std::fs::create_dir_all(dir).unwrap();
        let settings = Settings::from_raw(&RawSettings {
            repository: Some(dir.display().to_string()),
            compression: Some(compression.into()),
            encryption: Some(encryption.into()),
            encryption_passphrase: Some(crate::config::Secret::new(String::from("copy test"))),
            ..Default::default()
        })
        .unwrap();
        Repository::open_for_cluster(
            &settings,
            &ClusterIdentity {
                system_identifier: 7,
                pg_version_num: 170000,
            },
        )
        .unwrap()
    }

    /// A gzip, unencrypted source into a zstd, encrypted target: re-encoded, verified,
    /// resumable, and a different copy already in the target is refused, not replaced.
    #[test]
    fn wal_is_copied_re_encoded_resumably_and_never_over_other_content() {
        let dir = tempfile::tempdir().unwrap();
        let source = repository(&dir.path().join("source"), "gzip", "none");
        let target = repository(&dir.path().join("target"), "zstd", "age");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let names = [
            "00000001000000000000000A",
            "000000010000000000000009",
            "00000002.history",
            "00000002000000000000000A",
        ];
        for (index, name) in names.iter().enumerate() {
            let file = dir.path().join(name);
            std::fs::write(&file, vec![index as u8 + 1; 64 << 10]).unwrap();
            source.archive_wal(&file, name).unwrap();
        }
        let listed: Vec<String> = source
            .list_wal()
            .unwrap()
            .into_iter()
            .map(|(name, _)| name.as_str().to_string())
            .collect();
        assert_eq!(
            listed,
            [
                "00000002.history",
                "000000010000000000000009",
                "00000001000000000000000A",
                "00000002000000000000000A"
            ]
        );

        // Interrupted before the first file, then resumed: each file once.
        let stop = || true;
        assert!(matches!(
            copy_wal(&source, &target, &scratch, &stop),
            Err(Error::Interrupted)
        ));
        let report = copy_wal(&source, &target, &scratch, &|| false).unwrap();
        assert_eq!((report.copied, report.present), (4, 0));
        let again = copy_wal(&source, &target, &scratch, &|| false).unwrap();
        assert_eq!((again.copied, again.present), (0, 4));
        for (index, name) in names.iter().enumerate() {
            let back = dir.path().join(format!("{name}.back"));
            let stored = target.fetch_wal(name, &back).unwrap();
            assert_eq!(stored.spec.suffix(), ".zst.age", "{name}");
            assert_eq!(
                std::fs::read(&back).unwrap(),
                vec![index as u8 + 1; 64 << 10]
            );
        }
        assert!(std::fs::read_dir(&scratch).unwrap().next().is_none());

        // Another content under a name the target holds: refused, the target's kept.
        let other = dir.path().join("other");
        let third = repository(&dir.path().join("third"), "none", "none");
        std::fs::write(&other, vec![0xEE; 64 << 10]).unwrap();
        third.archive_wal(&other, names[0]).unwrap();
        let refused = copy_wal(&third, &target, &scratch, &|| false).unwrap_err();
        assert!(
            matches!(refused, Error::WalContentMismatch { .. }),
            "{refused}"
        );
        let back = dir.path().join("kept");
        target.fetch_wal(names[0], &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), vec![1u8; 64 << 10]);
    }
}
