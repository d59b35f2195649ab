//! The manifest: every file, directory and link of a backup, and reading a stored file back.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::backup_prefix;
use super::document::{backup_object, read_document};
use super::metadata::BackupMetadata;
use crate::codec::{CodecSpec, ExpectedDigest, Sha256Digest};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::storage::ExactLength;

/// Format 2 adds incremental backups: entries stored as pages or unchanged, and the
/// metadata's parent. Format 3 adds bundles: small files stored one after another in one
/// object, each at its `offset`. Format 4 records files by the digest of their stored bytes
/// (`stored_sha256`) and, for relation main and init forks and page streams, by that alone:
/// a reader of format 3 or older would find them without a `sha256`. Format 1 manifests read
/// as all whole.
pub(super) const FORMAT_VERSION: u32 = 4;
/// The format of a backup with bundles whose files all have a `sha256`.
pub(super) const BUNDLES_FORMAT_VERSION: u32 = 3;
/// The format of an incremental backup without bundles.
pub(super) const INCREMENTAL_FORMAT_VERSION: u32 = 2;
/// A full backup without bundles keeps format 1: nothing in it needs more, and older readers
/// restore it.
pub(super) const FULL_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    File,
    Directory,
    Symlink,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    pub path: String,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    #[serde(default)]
    pub mode: u32,
    #[serde(default)]
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<u64>,
    /// The SHA-256 of the stored bytes (the object, or this file's range of a bundle), which
    /// is what a read checks when it is there ([`ExpectedDigest::Stored`]). Backups taken
    /// before format 4 have only `sha256`, and their reads check that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_sha256: Option<String>,
    /// Key of the stored object, relative to the backup's prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Where this file's encoded bytes (`stored_size` of them) start in `object`, a bundle of
    /// small files each encoded on its own; `None` when the object is this file's alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// How this backup holds the file: whole (every full backup's files), as the pages that
    /// changed since the parent backup, or not at all (unchanged since the parent).
    #[serde(default, skip_serializing_if = "Stored::is_whole")]
    pub stored: Stored,
    /// Pages in the object, for [`Stored::Pages`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<u64>,
}

/// How a backup holds one file. `size` is always the file's length in this backup; `sha256`
/// is the digest of what the object decodes to (the file itself when whole, the page stream
/// for pages), and for an unchanged file the parent entry's digest, copied (an unchanged file
/// has no object, so no `stored_sha256`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stored {
    #[default]
    Whole,
    /// The object holds the pages changed since the parent's start (see `incremental`); the
    /// others come from the parent backup's copy of the same path.
    Pages,
    /// No object: the parent backup's copy of the same path is this file.
    Unchanged,
}

impl Stored {
    fn is_whole(&self) -> bool {
        *self == Stored::Whole
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub backup_name: String,
    pub entries: Vec<ManifestEntry>,
}

/// Decodes one file of a backup into `out`, verified against its manifest entry.
pub(crate) fn read_backup_file(
    repository: &Repository,
    backup: &str,
    entry: &ManifestEntry,
    out: &mut dyn Write,
    destination: &str,
) -> Result<u64> {
    let invalid = |reason: &str| Error::InvalidMetadata {
        object: format!("{}manifest ({})", backup_prefix(backup), entry.path),
        reason: reason.into(),
    };
    let object = entry
        .object
        .as_deref()
        .ok_or_else(|| invalid("a file without an object"))?;
    let (key, spec) = backup_object(backup, object)?;
    // A page stream's length is not the file's.
    let expected_size = entry.size.filter(|_| entry.stored == Stored::Whole);
    read_stored(
        repository,
        backup,
        &key,
        entry,
        spec,
        expected_size,
        out,
        destination,
    )
}

impl ManifestEntry {
    /// The bytes of its object this entry's encoded file takes when the object is a bundle.
    pub(crate) fn bundle_range(&self) -> Result<Option<(u64, u64)>> {
        let Some(offset) = self.offset else {
            return Ok(None);
        };
        let length = self.stored_size.ok_or_else(|| Error::InvalidMetadata {
            object: format!("manifest ({})", self.path),
            reason: "a bundled file without a stored size".into(),
        })?;
        Ok(Some((offset, length)))
    }

    /// What a read of this entry's object (or range) is checked against: the digest of its
    /// stored bytes when the manifest has it, else of what it decodes to; `backup` names the
    /// manifest in the error.
    fn expected_digest(&self, backup: &str) -> Result<ExpectedDigest> {
        let parse = |digest: &Option<String>| digest.as_deref().map(Sha256Digest::from_hex);
        match (parse(&self.stored_sha256), parse(&self.sha256)) {
            (Some(Some(stored)), _) => Ok(ExpectedDigest::Stored(stored)),
            (None, Some(Some(decoded))) => Ok(ExpectedDigest::Decoded(decoded)),
            _ => Err(Error::InvalidMetadata {
                object: format!("{}manifest ({})", backup_prefix(backup), self.path),
                reason: "a file without a valid SHA-256".into(),
            }),
        }
    }
}

/// Decodes `entry`'s stored bytes in object `key` of `backup` (the whole object, or its range
/// of a bundle), checked against the entry's digest.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_stored(
    repository: &Repository,
    backup: &str,
    key: &str,
    entry: &ManifestEntry,
    spec: CodecSpec,
    expected_size: Option<u64>,
    out: &mut dyn Write,
    destination: &str,
) -> Result<u64> {
    let expected = entry.expected_digest(backup)?;
    match entry.bundle_range()? {
        None => repository.read_verified(key, spec, expected, expected_size, out, destination),
        Some(range) => repository.read_verified_range(
            key,
            range,
            spec,
            expected,
            expected_size,
            out,
            destination,
        ),
    }
}

/// Reads the files of one bundle with one request, in the order they were stored: a restore
/// of a bundle's hundred catalog files costs one GET rather than a hundred.
pub(crate) struct BundleReader<'r> {
    repository: &'r Repository,
    backup: String,
    key: String,
    spec: CodecSpec,
    stream: Box<dyn io::Read + Send + 'r>,
    /// Offset in the bundle of the stream's next byte.
    position: u64,
}

impl<'r> BundleReader<'r> {
    /// Opens the part of `entries`' bundle that holds them all; `entries` are files of
    /// `backup` in one bundle, in offset order.
    pub(crate) fn open(
        repository: &'r Repository,
        backup: &str,
        entries: &[&ManifestEntry],
    ) -> Result<Self> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Err(Error::InvalidMetadata {
                object: format!("{}manifest", backup_prefix(backup)),
                reason: "an empty bundle was asked for".into(),
            });
        };
        let object = first.object.as_deref().unwrap_or_default();
        let (start, _) = first.bundle_range()?.unwrap_or_default();
        let (last_offset, last_length) = last.bundle_range()?.unwrap_or_default();
        let (key, spec) = backup_object(backup, object)?;
        let length = last_offset
            .checked_add(last_length)
            .and_then(|end| end.checked_sub(start))
            .ok_or_else(|| Error::InvalidMetadata {
                object: format!("{}manifest ({})", backup_prefix(backup), last.path),
                reason: "bundled files out of order, or past any possible end".into(),
            })?;
        let stream = repository.storage().open_range(&key, start, length)?;
        Ok(BundleReader {
            repository,
            backup: backup.to_string(),
            key,
            spec,
            stream,
            position: start,
        })
    }

    /// Decodes the next file, `entry`, into `out`, verified like [`read_backup_file`].
    pub(crate) fn read_file(
        &mut self,
        entry: &ManifestEntry,
        out: &mut dyn Write,
        destination: &str,
    ) -> Result<u64> {
        let invalid = |reason: &str| Error::InvalidMetadata {
            object: format!("{}manifest ({})", backup_prefix(&self.backup), entry.path),
            reason: reason.into(),
        };
        let (offset, length) = entry
            .bundle_range()?
            .ok_or_else(|| invalid("not a bundled file"))?;
        let gap = offset
            .checked_sub(self.position)
            .ok_or_else(|| invalid("bundled files out of order"))?;
        let expected = entry.expected_digest(&self.backup)?;
        let skipped = io::copy(&mut (&mut self.stream).take(gap), &mut io::sink())
            .map_err(|e| Error::io("read", &self.key, e))?;
        if skipped != gap {
            return Err(invalid("the bundle ends before this file"));
        }
        let mut part = ExactLength::new(&mut self.stream, length);
        let decoded = self.repository.decode_verified(
            &mut part,
            &self.key,
            self.spec,
            expected,
            entry.size,
            out,
            destination,
        );
        // What the decoder did not read (nothing for a well-formed object; the rest of a
        // damaged one) is skipped, so that the next file reads from its own start.
        io::copy(&mut part, &mut io::sink()).map_err(|e| Error::io("read", &self.key, e))?;
        self.position = offset.saturating_add(length);
        decoded
    }
}

pub fn read_manifest(repository: &Repository, metadata: &BackupMetadata) -> Result<Manifest> {
    let (key, json) = read_document(
        repository,
        &metadata.playbook.backup_name,
        &metadata.manifest,
        &metadata.playbook.checksum,
    )?;
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| Error::InvalidMetadata {
        object: key.clone(),
        reason: e.to_string(),
    })?;
    if manifest.backup_name != metadata.playbook.backup_name {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: format!("it belongs to backup \"{}\"", manifest.backup_name),
        });
    }
    for entry in &manifest.entries {
        let path_is_safe = !entry.path.is_empty()
            && !entry.path.starts_with('/')
            && entry
                .path
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        let object_is_safe = entry
            .object
            .as_deref()
            .is_none_or(|object| crate::storage::validate_key(object).is_ok());
        if !path_is_safe || !object_is_safe {
            return Err(Error::InvalidMetadata {
                object: key,
                reason: format!("unsafe path {:?}", entry.path),
            });
        }
    }
    Ok(manifest)
}
