//! The manifest: every file, directory and link of a backup, and reading a stored file back.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::backup_prefix;
use super::metadata::{metadata_key, BackupMetadata};
use crate::codec::{CodecSpec, Sha256Digest};
use crate::error::{Error, Result};
use crate::repository::Repository;

/// Format 2 adds incremental backups: entries stored as pages or unchanged, and the
/// metadata's parent. Format 1 manifests read as all whole.
pub(super) const FORMAT_VERSION: u32 = 2;
/// Full backups keep format 1: nothing in them needs more, and older readers restore them.
pub(super) const FULL_FORMAT_VERSION: u32 = 1;

/// The manifest grows with the number of files, never with their size; this bounds what a
/// damaged or hostile manifest can make us allocate.
pub(super) const MAX_MANIFEST_SIZE: u64 = 512 << 20;

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
    /// Key of the stored object, relative to the backup's prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
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
/// for pages), and for an unchanged file the parent entry's digest, copied.
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

/// The key and encoding of a stored object of a backup. Object names are a dot-free base plus
/// the codec suffix: `data/000012.zst.age`, `manifest.zst`.
pub(super) fn backup_object(backup: &str, object: &str) -> Result<(String, CodecSpec)> {
    let key = format!("{}{object}", backup_prefix(backup));
    let base = object.rsplit('/').next().unwrap_or(object);
    let suffix = base.find('.').map(|i| &base[i..]).unwrap_or("");
    let spec = CodecSpec::from_suffix(suffix).ok_or_else(|| Error::InvalidMetadata {
        object: key.clone(),
        reason: "unknown encoding suffix".into(),
    })?;
    Ok((key, spec))
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
    let expected = entry
        .sha256
        .as_deref()
        .and_then(Sha256Digest::from_hex)
        .ok_or_else(|| invalid("a file without a valid SHA-256"))?;
    let (key, spec) = backup_object(backup, object)?;
    // A page stream's length is not the file's.
    let expected_size = entry.size.filter(|_| entry.stored == Stored::Whole);
    repository.read_verified(&key, spec, &expected, expected_size, out, destination)
}

/// Collects a small decoded object in memory, refusing to grow past `limit`.
pub(super) struct CappedBuffer {
    pub(super) data: Vec<u8>,
    pub(super) limit: usize,
}

impl Write for CappedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.data.len() + buf.len() > self.limit {
            return Err(io::Error::other(format!(
                "larger than {} bytes",
                self.limit
            )));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn read_manifest(repository: &Repository, metadata: &BackupMetadata) -> Result<Manifest> {
    let (key, spec) = backup_object(&metadata.backup_name, &metadata.manifest)?;
    let expected = metadata
        .checksum
        .strip_prefix("sha256:")
        .and_then(Sha256Digest::from_hex)
        .ok_or_else(|| Error::InvalidMetadata {
            object: metadata_key(&metadata.backup_name),
            reason: format!("bad checksum {:?}", metadata.checksum),
        })?;
    let mut buffer = CappedBuffer {
        data: Vec::new(),
        limit: MAX_MANIFEST_SIZE as usize,
    };
    repository.read_verified(
        &key,
        spec,
        &expected,
        None,
        &mut buffer,
        "the manifest in memory",
    )?;
    let json = buffer.data;
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| Error::InvalidMetadata {
        object: key.clone(),
        reason: e.to_string(),
    })?;
    if manifest.backup_name != metadata.backup_name {
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
