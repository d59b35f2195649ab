//! Copying finished backups from one of a cluster's repositories into another: how repositories
//! 2 to 4 get the backups taken into repository 1 (the cluster is read once), by the scheduler's
//! catch-up and by `sc-backup copy`.
//!
//! Each stored file is read from the source, verified against its manifest entry, and encoded
//! again for the target (its compression and its own key) as it streams: whole files into an
//! object each, bundled ones into a bundle per source bundle, read with one request. The
//! manifest and `backup.json` are written by the backup writer itself, so a copy is checked as
//! a backup is (the WAL it needs is in the target, its parent is listed) and exists exactly
//! when its `backup.json` does. A copy's objects go under `copy-<attempt>/` of the backup's
//! prefix: two copies of one backup at once (the worker and `sc-backup copy`) never write the
//! same object; the first to write `backup.json` wins and the other removes its own.
//!
//! Which backups: those of the source newer than every backup the target holds, oldest first
//! (parents before the backups taken against them). So an interrupted copy resumes with the
//! next backup, and a backup the target's own retention expired is never brought back.

use std::collections::BTreeMap;
use std::io::Write;

use super::manifest::{read_backup_file, BundleReader, Stored};
use super::{
    backup_prefix, list_backups, read_catalog, read_manifest, read_metadata, BackupMetadata,
    BackupReport, BackupWriter, EntryType, ManifestEntry,
};
use crate::codec::{DigestingWriter, EncodeSummary, Encoder, RepositoryKey, Sha256Digest};
use crate::error::{Error, Result};
use crate::repository::Repository;

/// What [`copy_backups`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupCopyReport {
    /// Backups copied into the target, oldest first.
    pub copied: Vec<String>,
    /// Backups of the source the target lacks and cannot take: taken against a parent the
    /// target does not hold (its own retention removed it), with why.
    pub skipped: Vec<(String, String)>,
    /// Bytes of files copied (before the target's compression).
    pub bytes: u64,
}

/// The backups of `source` that `target` lacks and should get: newer than every backup it
/// holds, oldest first.
pub fn backups_to_copy(source: &Repository, target: &Repository) -> Result<Vec<BackupMetadata>> {
    // By start time (a cluster restored to an earlier point starts its new timeline at a lower
    // LSN), then position.
    let started = |b: &BackupMetadata| (b.playbook.start_time, b.start_lsn);
    let held = list_backups(target)?;
    let newest = held.iter().map(started).max();
    let mut pending: Vec<BackupMetadata> = list_backups(source)?
        .into_iter()
        .filter(|b| newest.is_none_or(|newest| started(b) > newest))
        .filter(|b| {
            !held
                .iter()
                .any(|h| h.playbook.backup_name == b.playbook.backup_name)
        })
        .collect();
    pending.sort_by_key(started);
    Ok(pending)
}

/// Copies into `target` the backups of `source` it should get (see [`backups_to_copy`]); the
/// WAL they need must be there first ([`crate::wal::copy::copy_wal`]). `interrupted` is asked
/// between files.
pub fn copy_backups(
    source: &Repository,
    target: &Repository,
    interrupted: &dyn Fn() -> bool,
) -> Result<BackupCopyReport> {
    let mut report = BackupCopyReport::default();
    for backup in backups_to_copy(source, target)? {
        match copy_backup(source, target, &backup, interrupted) {
            Ok(bytes) => {
                report.bytes += bytes;
                report.copied.push(backup.playbook.backup_name.clone());
            }
            // It can never be copied: the next full backup will be.
            Err(error @ Error::BrokenChain { .. }) => report
                .skipped
                .push((backup.playbook.backup_name.clone(), error.to_string())),
            Err(error) => return Err(error),
        }
    }
    Ok(report)
}

/// Copies one finished backup of `source` into `target`; returns the bytes of files copied.
/// A backup of that name already in the target is kept when it is the same backup (same
/// cluster and positions: a concurrent copy finished first) and refused otherwise.
pub fn copy_backup(
    source: &Repository,
    target: &Repository,
    backup: &BackupMetadata,
    interrupted: &dyn Fn() -> bool,
) -> Result<u64> {
    let name = &backup.playbook.backup_name;
    if let Some(present) = same_backup_in(target, backup)? {
        return present.map(|()| 0);
    }
    // Before copying a byte: an incremental whose parent the target lacks can never restore
    // there (the writer would refuse it only after the copy).
    if let Some(parent) = &backup.parent {
        if let Err(error) = read_metadata(target, parent) {
            return Err(Error::BrokenChain {
                backup: name.clone(),
                parent: parent.clone(),
                reason: format!("the target does not hold it: {error}"),
            });
        }
    }
    let attempt = format!("copy-{:016x}/", rand::random::<u64>());
    let writer = BackupWriter::for_copy(target, backup, attempt.clone());
    let copied = copy_files(source, &writer, backup, interrupted).and_then(|(entries, bytes)| {
        let catalog = read_catalog(source, backup)?;
        writer.finish(entries, catalog.as_ref(), BackupReport::of(backup))?;
        Ok(bytes)
    });
    match copied {
        Ok(bytes) => {
            remove_other_attempts(target, name, &attempt);
            Ok(bytes)
        }
        Err(error) => {
            writer.abort();
            // Another copy of the same backup committed first: that one stands.
            match same_backup_in(target, backup) {
                Ok(Some(Ok(()))) => Ok(0),
                _ => Err(error),
            }
        }
    }
}

/// `None` when `target` lists no backup named as `backup`; `Some(Ok)` when it holds that same
/// backup, `Some(Err)` when another one under its name.
fn same_backup_in(target: &Repository, backup: &BackupMetadata) -> Result<Option<Result<()>>> {
    let name = &backup.playbook.backup_name;
    match read_metadata(target, name) {
        Ok(held) => Ok(Some(
            if held.system_identifier == backup.system_identifier
                && held.start_lsn == backup.start_lsn
                && held.stop_lsn == backup.stop_lsn
                && held.timeline == backup.timeline
            {
                Ok(())
            } else {
                Err(Error::InvalidMetadata {
                    object: super::metadata_key(name),
                    reason: format!(
                        "the target holds another backup under this name (from {} to {}, where the source's runs from {} to {}); it is kept, and this one is not copied",
                        held.start_lsn, held.stop_lsn, backup.start_lsn, backup.stop_lsn
                    ),
                })
            },
        )),
        Err(Error::BackupNotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Objects an earlier, interrupted copy left under the backup's prefix: removed once this one
/// committed (best effort; a failure leaves only unreferenced objects).
fn remove_other_attempts(target: &Repository, name: &str, attempt: &str) {
    let prefix = backup_prefix(name);
    if let Ok(objects) = target.storage().list(&prefix) {
        for object in objects {
            let rest = &object.key[prefix.len().min(object.key.len())..];
            if rest.starts_with("copy-") && !rest.starts_with(attempt) {
                let _ = target.storage().delete(&object.key);
            }
        }
    }
}

impl BackupReport {
    /// What a finished backup's metadata says PostgreSQL reported for it.
    pub fn of(metadata: &BackupMetadata) -> Self {
        BackupReport {
            backup_type: metadata.playbook.backup_type.clone(),
            database: metadata.playbook.database.clone(),
            host: metadata.playbook.host.clone(),
            duration_seconds: metadata.playbook.duration_seconds,
            start_lsn: metadata.start_lsn,
            stop_lsn: metadata.stop_lsn,
            start_time: metadata.playbook.start_time,
            stop_time: metadata.playbook.stop_time,
            timeline: metadata.timeline,
            pg_version_num: metadata.pg_version_num,
            system_identifier: metadata.system_identifier.clone(),
            wal_segment_size: metadata.wal_segment_size,
            method: metadata.method,
        }
    }
}

/// Copies every stored file of `backup` through `writer`; returns the target's manifest
/// entries (the source's, each pointing at its new object) and the bytes copied.
fn copy_files(
    source: &Repository,
    writer: &BackupWriter<'_>,
    backup: &BackupMetadata,
    interrupted: &dyn Fn() -> bool,
) -> Result<(Vec<ManifestEntry>, u64)> {
    let name = &backup.playbook.backup_name;
    let target = writer.repository;
    let key = target.key()?;
    let suffix = Encoder::<std::io::Sink>::spec(target.compression(), key).suffix();
    let manifest = read_manifest(source, backup)?;
    let mut entries = Vec::with_capacity(manifest.entries.len());
    // Bundled files by bundle, in offset order, each bundle read with one request.
    let mut bundles = BTreeMap::<String, Vec<ManifestEntry>>::new();
    let mut bytes = 0;
    for (index, entry) in manifest.entries.into_iter().enumerate() {
        let stored_object = entry.entry_type == EntryType::File
            && entry.stored != Stored::Unchanged
            && entry.object.is_some();
        if !stored_object {
            entries.push(entry);
            continue;
        }
        if entry.offset.is_some() {
            let object = entry.object.clone().unwrap_or_default();
            bundles.entry(object).or_default().push(entry);
            continue;
        }
        if interrupted() {
            return Err(Error::Interrupted);
        }
        let object = format!("{}data/{index:06}{suffix}", writer.objects);
        let full_key = format!("{}{object}", backup_prefix(name));
        let sink = target.storage().create_unique(&full_key)?;
        let (sink, encoded) = encode(sink, key, target, &full_key, |out| {
            read_backup_file(source, name, &entry, out, &full_key)
        })?;
        sink.commit()?;
        bytes += encoded.summary.original_size;
        entries.push(encoded.entry(entry, object, None));
    }
    for (number, (_, mut files)) in bundles.into_iter().enumerate() {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        files.sort_by_key(|e| e.offset);
        let object = format!("{}bundle/{:06}{suffix}", writer.objects, number + 1);
        let full_key = format!("{}{object}", backup_prefix(name));
        let mut sink = target.storage().create_unique(&full_key)?;
        let mut reader = BundleReader::open(source, name, &files.iter().collect::<Vec<_>>())?;
        let mut written = 0u64;
        for entry in files {
            let (_, encoded) = encode(&mut sink, key, target, &full_key, |out| {
                reader.read_file(&entry, out, &full_key)
            })?;
            bytes += encoded.summary.original_size;
            let stored_size = encoded.summary.stored_size;
            entries.push(encoded.entry(entry, object.clone(), Some(written)));
            written += stored_size;
        }
        sink.commit()?;
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((entries, bytes))
}

/// One file as encoded for the target.
struct Encoded {
    summary: EncodeSummary,
    stored_sha256: Sha256Digest,
}

impl Encoded {
    /// The source's entry for the file, pointing at its copy.
    fn entry(self, source: ManifestEntry, object: String, offset: Option<u64>) -> ManifestEntry {
        ManifestEntry {
            stored_size: Some(self.summary.stored_size),
            stored_sha256: Some(self.stored_sha256.to_hex()),
            object: Some(object),
            offset,
            ..source
        }
    }
}

/// Encodes for `target` what `fill` writes (one file, decoded and verified from the source)
/// into `sink`, each file on its own (a zstd frame, an age stream), as the writer does.
fn encode<W: Write>(
    sink: W,
    key: Option<&RepositoryKey>,
    target: &Repository,
    full_key: &str,
    fill: impl FnOnce(&mut dyn Write) -> Result<u64>,
) -> Result<(W, Encoded)> {
    let mut encoder = Encoder::new(DigestingWriter::new(sink), target.compression(), key)
        .map_err(|e| Error::io("encode", full_key, e))?;
    fill(&mut encoder)?;
    let (digesting, summary) = encoder
        .finish()
        .map_err(|e| Error::io("write", full_key, e))?;
    let (sink, stored_sha256, _) = digesting.finish();
    Ok((
        sink,
        Encoded {
            summary,
            stored_sha256,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::backup::chain::tests::{relation, restored, take};
    use crate::backup::{delete_backup_with_dependents, verify_backup};
    use crate::config::{CompressionAlgorithm, EncryptionMode, RawSettings, Settings};
    use crate::repository::ClusterIdentity;
    use crate::wal::copy::copy_wal;

    /// An offsite repository: zstd and encrypted with its own key, where the source (the chain
    /// tests' repository) is gzip and plain.
    fn offsite(dir: &Path) -> Repository {
        std::fs::create_dir_all(dir).unwrap();
        let settings = Settings::from_raw(&RawSettings {
            repository: Some(dir.display().to_string()),
            compression: Some("zstd".into()),
            encryption: Some("age".into()),
            encryption_passphrase: Some(crate::config::Secret::new(String::from("offsite"))),
            ..Default::default()
        })
        .unwrap();
        Repository::open_for_cluster(
            &settings,
            &ClusterIdentity {
                system_identifier: 7711576491893132752,
                pg_version_num: 150020,
            },
        )
        .unwrap()
    }

    fn names(report: &BackupCopyReport) -> Vec<&str> {
        report.copied.iter().map(String::as_str).collect()
    }

    /// A full backup and two incrementals (bundles, page streams, unchanged files) copied into a
    /// repository with another codec and key: each restores the same bytes from the copy
    /// alone and verifies; a second pass copies nothing; a damaged source object fails its
    /// copy, leaving nothing in the target; a backup the target removed is not brought back.
    #[test]
    fn a_chain_is_copied_re_encoded_and_restores_from_the_copy_alone() {
        let root = tempfile::tempdir().unwrap();
        let (data, work) = (root.path().join("data"), root.path().join("work"));
        for dir in [&data.join("base/5"), &work, &root.path().join("source")] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let source = crate::backup::chain::tests::repository(&root.path().join("source"));
        let target = offsite(&root.path().join("target"));
        let write = |path: &str, content: &[u8]| std::fs::write(data.join(path), content).unwrap();
        write("PG_VERSION", b"15\n");
        write("base/5/PG_VERSION", b"15\n");
        write("base/5/16384", &relation(&[(0x100, 1), (0x100, 2)]));
        write("base/5/16384_vm", b"visibility");
        let full = take(&source, &data, "f", 0x1000, None);
        write(
            "base/5/16384",
            &relation(&[(0x100, 1), (0x2000, 20), (0x2000, 30)]),
        );
        let first = take(&source, &data, "i1", 0x3000, Some(&full));
        write("base/5/16384_vm", b"visibilitx");
        let second = take(&source, &data, "i2", 0x5000, Some(&first));
        let expected = std::fs::read(data.join("base/5/16384")).unwrap();

        // Without the WAL the backups need, nothing is copied.
        let missing = copy_backups(&source, &target, &|| false).unwrap_err();
        assert!(matches!(missing, Error::WalNotFound(_)), "{missing}");
        assert!(list_backups(&target).unwrap().is_empty());

        let scratch = work.join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        copy_wal(&source, &target, &scratch, &|| false).unwrap();
        let report = copy_backups(&source, &target, &|| false).unwrap();
        assert_eq!(names(&report), ["f", "i1", "i2"]);
        assert!(report.skipped.is_empty());
        for original in [&full, &first, &second] {
            let name = &original.playbook.backup_name;
            let copy = read_metadata(&target, name).unwrap();
            assert_eq!(
                (copy.start_lsn, copy.stop_lsn, &copy.parent, copy.method),
                (
                    original.start_lsn,
                    original.stop_lsn,
                    &original.parent,
                    original.method
                )
            );
            assert_eq!(copy.playbook.compression, CompressionAlgorithm::Zstd);
            assert_eq!(copy.playbook.encryption, EncryptionMode::Age);
            assert_eq!(copy.playbook.size_bytes, original.playbook.size_bytes);
            let (_, problems) = verify_backup(&target, name).unwrap();
            assert_eq!(problems, [], "{name}");
        }
        let copied = read_metadata(&target, "i2").unwrap();
        assert_eq!(
            restored(&target, &copied, "base/5/16384", &work).unwrap(),
            expected
        );
        assert_eq!(
            restored(&target, &copied, "base/5/16384_vm", &work).unwrap(),
            b"visibilitx"
        );
        let pages = read_manifest(&target, &read_metadata(&target, "i1").unwrap()).unwrap();
        assert!(pages
            .entries
            .iter()
            .any(|e| e.path == "base/5/16384" && e.stored == Stored::Pages));
        let manifest = read_manifest(&target, &copied).unwrap();
        let entry = |path: &str| manifest.entries.iter().find(|e| e.path == path).unwrap();
        assert_eq!(entry("base/5/16384").stored, Stored::Unchanged);
        assert!(entry("base/5/16384_vm").offset.is_some());
        assert!(entry("base/5/16384_vm")
            .object
            .as_deref()
            .is_some_and(|o| o.starts_with("copy-") && o.ends_with(".zst.age")));
        assert_eq!(
            copy_backups(&source, &target, &|| false).unwrap(),
            BackupCopyReport::default()
        );

        // A damaged object of a new backup fails its copy, and the target keeps nothing of it.
        write("base/5/16384", &relation(&[(0x6000, 7)]));
        let third = take(&source, &data, "i3", 0x7000, Some(&second));
        let object = read_manifest(&source, &third)
            .unwrap()
            .entries
            .into_iter()
            .find(|e| e.path == "base/5/16384")
            .and_then(|e| e.object)
            .unwrap();
        let stored = root.path().join(format!("source/backups/i3/{object}"));
        let mut bytes = std::fs::read(&stored).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::set_permissions(&stored, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::write(&stored, &bytes).unwrap();
        copy_wal(&source, &target, &scratch, &|| false).unwrap();
        let damaged = copy_backups(&source, &target, &|| false)
            .unwrap_err()
            .to_string();
        assert!(damaged.contains("backups/i3/"), "{damaged}");
        assert!(target
            .storage()
            .list(&backup_prefix("i3"))
            .unwrap()
            .is_empty());

        // Repaired, it is copied. What the target's own retention then removes (older than
        // its newest backup) is not brought back.
        bytes[middle] ^= 0x40;
        std::fs::write(&stored, &bytes).unwrap();
        let report = copy_backups(&source, &target, &|| false).unwrap();
        assert_eq!(names(&report), ["i3"]);
        let newer = take(&source, &data, "g", 0x9000, None);
        copy_wal(&source, &target, &scratch, &|| false).unwrap();
        assert_eq!(
            names(&copy_backups(&source, &target, &|| false).unwrap()),
            [newer.playbook.backup_name.as_str()]
        );
        delete_backup_with_dependents(&target, "f").unwrap();
        assert!(backups_to_copy(&source, &target).unwrap().is_empty());
        assert_eq!(list_backups(&target).unwrap().len(), 1);

        // Asked for anyway, an incremental whose parent the target lacks is refused before
        // a byte is copied.
        let started = std::cell::Cell::new(false);
        let refused = copy_backup(&source, &target, &third, &|| {
            started.set(true);
            false
        })
        .unwrap_err();
        assert!(matches!(refused, Error::BrokenChain { .. }), "{refused}");
        assert!(!started.get(), "files were copied before the refusal");
        assert!(target
            .storage()
            .list(&backup_prefix("i3"))
            .unwrap()
            .is_empty());
    }
}
