//! Copying finished dumps from one of a cluster's repositories into another (the scheduler's
//! catch-up and `sc-backup copy`): each stored file decoded from the source, checked against
//! its `.sha256` and the SQL digest its `.meta` records, encoded again for the target (its
//! compression and key: the file's suffix follows), then published there as a dump is: the
//! `.sha256` of the new stored file, then the `.meta`, written last.
//!
//! Which dumps: per database (and the roles dump), those newer than the newest the target
//! holds, oldest first, so an interrupted copy resumes and what the target's own retention
//! removed is never brought back.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::AtomicBool;

use super::{
    list_dumps, meta_key, publish, read_dump, recorded_checksum, DumpKind, DumpMetadata,
    DUMPS_PREFIX,
};
use crate::codec::{DigestingWriter, Encoder};
use crate::config::EncryptionMode;
use crate::error::{Error, Result};
use crate::repository::Repository;

/// What [`copy_dumps`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpCopyReport {
    /// The dumps copied (their names in the target), oldest first.
    pub copied: Vec<String>,
    /// Bytes of SQL copied.
    pub bytes: u64,
}

/// The dumps of `source` that `target` should get: per database, newer than the newest the
/// target holds; oldest first.
pub fn dumps_to_copy(source: &Repository, target: &Repository) -> Result<Vec<DumpMetadata>> {
    let mut newest = BTreeMap::<(DumpKind, String), chrono::DateTime<chrono::Utc>>::new();
    for held in list_dumps(target)? {
        let at = newest
            .entry((held.content, held.playbook.database.clone()))
            .or_insert(held.playbook.start_time);
        *at = (*at).max(held.playbook.start_time);
    }
    Ok(list_dumps(source)?
        .into_iter()
        .filter(|dump| {
            newest
                .get(&(dump.content, dump.playbook.database.clone()))
                .is_none_or(|at| dump.playbook.start_time > *at)
        })
        .collect())
}

/// Copies into `target` the dumps of `source` it should get (see [`dumps_to_copy`]);
/// `interrupted` is asked between dumps.
pub fn copy_dumps(
    source: &Repository,
    target: &Repository,
    interrupted: &dyn Fn() -> bool,
) -> Result<DumpCopyReport> {
    let mut report = DumpCopyReport::default();
    for dump in dumps_to_copy(source, target)? {
        if interrupted() {
            return Err(Error::Interrupted);
        }
        let copied = copy_dump(source, target, &dump)?;
        report.bytes += copied.sql_size_bytes;
        report.copied.push(copied.file);
    }
    Ok(report)
}

/// Copies one dump; returns the target's metadata of it.
fn copy_dump(
    source: &Repository,
    target: &Repository,
    dump: &DumpMetadata,
) -> Result<DumpMetadata> {
    let key = target.key()?;
    let spec = Encoder::<io::Sink>::spec(target.compression(), key);
    let file = format!("{}.sql{}", dump.playbook.backup_name, spec.suffix());
    if !target.storage().list(&meta_key(&file))?.is_empty() {
        return Err(Error::InvalidMetadata {
            object: format!("{DUMPS_PREFIX}{file}"),
            reason: "the target already holds a dump of this name, older than its newest: it is kept, and this one is not copied".into(),
        });
    }
    let data_key = format!("{DUMPS_PREFIX}{file}");
    let expected_checksum = recorded_checksum(source, dump)?;
    // An interrupted copy's stored file (no .meta: not a dump) is replaced.
    let writer = target.storage().create(&data_key)?;
    let mut encoder = Encoder::new(DigestingWriter::new(writer), target.compression(), key)
        .map_err(|e| Error::io("write", &data_key, e))?;
    let read = read_dump(
        source,
        dump,
        &mut encoder,
        &data_key,
        &AtomicBool::new(false),
    )?;
    let source_key = dump.key();
    // The target's writer is dropped uncommitted on a mismatch: nothing becomes visible.
    if read.stored.0.to_hex() != expected_checksum {
        return Err(Error::ChecksumMismatch {
            object: source_key,
            expected: expected_checksum,
            actual: read.stored.0.to_hex(),
        });
    }
    if read.sql.0.to_hex() != dump.sql_sha256 || read.sql.1 != dump.sql_size_bytes {
        return Err(Error::ChecksumMismatch {
            object: format!("{source_key} (its SQL)"),
            expected: dump.sql_sha256.clone(),
            actual: read.sql.0.to_hex(),
        });
    }
    let (digesting, _) = encoder
        .finish()
        .map_err(|e| Error::io("write", &data_key, e))?;
    let (writer, stored_digest, stored_size) = digesting.finish();
    writer.commit()?;
    let mut copied = dump.clone();
    copied.file = file;
    copied.playbook.size_bytes = stored_size;
    copied.playbook.checksum = stored_digest.to_hex();
    copied.playbook.compression = spec.compression;
    copied.playbook.encryption = EncryptionMode::of(spec.encrypted);
    publish(target, &copied)?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{never, repository, request};
    use super::*;
    use crate::dump::{take_dump, verify_dump};

    /// Dumps of two databases copied from a gzip repository into a zstd one: renamed for the
    /// target's codec, verified there (`.sha256`, `.meta`, SQL digest); a second copy does
    /// nothing; a damaged source file is refused and leaves no dump behind; a dump the
    /// target removed is not brought back.
    #[test]
    fn dumps_are_copied_re_encoded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["source", "target"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let source = repository(&dir.path().join("source"), "gzip");
        let target = repository(&dir.path().join("target"), "zstd");
        let first = take_dump(
            &source,
            request("printf 'CREATE TABLE a (id int);\\n'", "alpha"),
            &mut never(),
        )
        .unwrap();
        take_dump(
            &source,
            request("printf 'CREATE TABLE b (id int);\\n'", "beta"),
            &mut never(),
        )
        .unwrap();
        let report = copy_dumps(&source, &target, &|| false).unwrap();
        assert_eq!(report.copied.len(), 2);
        assert!(report.copied.iter().all(|file| file.ends_with(".sql.zst")));
        for dump in list_dumps(&target).unwrap() {
            assert!(verify_dump(&target, &dump).unwrap().is_empty(), "{dump:?}");
        }
        assert_eq!(
            copy_dumps(&source, &target, &|| false)
                .unwrap()
                .copied
                .len(),
            0
        );

        // A newer dump of alpha, damaged: refused, nothing of it in the target.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let newer = take_dump(
            &source,
            request("printf 'CREATE TABLE a2 (id int);\\n'", "alpha"),
            &mut never(),
        )
        .unwrap();
        let stored = dir.path().join("source/dumps").join(&newer.file);
        let mut bytes = std::fs::read(&stored).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::set_permissions(&stored, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::write(&stored, &bytes).unwrap();
        let refused = copy_dumps(&source, &target, &|| false).unwrap_err();
        assert!(
            matches!(
                refused,
                Error::ChecksumMismatch { .. } | Error::Decode { .. }
            ),
            "{refused}"
        );
        assert_eq!(list_dumps(&target).unwrap().len(), 2);
        assert!(!target
            .storage()
            .list(&format!("{DUMPS_PREFIX}{}", newer.playbook.backup_name))
            .unwrap()
            .iter()
            .any(|o| o.key.ends_with(".meta") || o.key.ends_with(".sha256")));

        // Repaired, it arrives; the older alpha dump the target then deletes stays deleted.
        bytes[middle] ^= 0x40;
        std::fs::write(&stored, &bytes).unwrap();
        assert_eq!(
            copy_dumps(&source, &target, &|| false)
                .unwrap()
                .copied
                .len(),
            1
        );
        let old_copy = format!("{}.sql.zst", first.playbook.backup_name);
        crate::dump::delete_dump_file(&target, &old_copy).unwrap();
        assert!(dumps_to_copy(&source, &target).unwrap().is_empty());
    }
}
