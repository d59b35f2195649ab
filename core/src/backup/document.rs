//! Reading a backup's objects by name: the key and encoding of each, and its small JSON
//! documents (manifest, catalog) read whole into memory, capped, and checked against the
//! digest `backup.json` records for them.

use std::io::{self, Write};

use super::{backup_prefix, metadata_key};
use crate::codec::{CodecSpec, ExpectedDigest, Sha256Digest};
use crate::error::{Error, Result};
use crate::repository::Repository;

/// The manifest grows with the number of files, never with their size; this bounds what a
/// damaged or hostile manifest can make us allocate (about 2.5 million files).
pub(super) const MAX_MANIFEST_SIZE: u64 = 512 << 20;

/// What this process reads of one manifest or catalog into memory: [`MAX_MANIFEST_SIZE`]
/// unless lowered with [`limit_documents_in_memory`].
static DOCUMENT_LIMIT: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(MAX_MANIFEST_SIZE);

/// Lowers what this process reads of a manifest or catalog into memory (never raises it above
/// [`MAX_MANIFEST_SIZE`]). A PostgreSQL backend sets it far lower: memory exhausted there
/// takes the whole cluster through crash recovery, so what a damaged or hostile repository
/// can make a backend allocate is capped, and larger backups are verified by the CLI.
pub fn limit_documents_in_memory(bytes: u64) {
    DOCUMENT_LIMIT.store(
        bytes.min(MAX_MANIFEST_SIZE),
        std::sync::atomic::Ordering::Relaxed,
    );
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

/// Collects a small decoded object in memory, refusing to grow past `limit`.
pub struct CappedBuffer {
    pub(super) data: Vec<u8>,
    pub(super) limit: usize,
    /// Whether a write was refused for going past the limit.
    pub(super) overflowed: bool,
}

impl CappedBuffer {
    pub fn new(limit: usize) -> Self {
        CappedBuffer {
            data: Vec::new(),
            limit,
            overflowed: false,
        }
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.data
    }
}

impl Write for CappedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.data.len() + buf.len() > self.limit {
            self.overflowed = true;
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

/// Reads a JSON document of backup `backup` (its manifest, its catalog): object `object`,
/// checked against `checksum` (`sha256:<hex>` of the decoded document, from `backup.json`) and
/// at most [`MAX_MANIFEST_SIZE`] long. Returns its key and its bytes.
pub(super) fn read_document(
    repository: &Repository,
    backup: &str,
    object: &str,
    checksum: &str,
) -> Result<(String, Vec<u8>)> {
    let (key, spec) = backup_object(backup, object)?;
    let expected = checksum
        .strip_prefix("sha256:")
        .and_then(Sha256Digest::from_hex)
        .ok_or_else(|| Error::InvalidMetadata {
            object: metadata_key(backup),
            reason: format!("bad checksum {checksum:?} of {object}"),
        })?;
    let limit = DOCUMENT_LIMIT.load(std::sync::atomic::Ordering::Relaxed);
    let mut buffer = CappedBuffer::new(limit as usize);
    let read = repository.read_verified(
        &key,
        spec,
        ExpectedDigest::Decoded(expected),
        None,
        &mut buffer,
        &format!("the {object} in memory"),
    );
    if buffer.overflowed {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: format!(
                "it decodes to more than {} MiB, the most this process reads into memory{}",
                limit >> 20,
                if limit < MAX_MANIFEST_SIZE {
                    " (a PostgreSQL backend's limit: verify or restore it with sc-backup)"
                } else {
                    ""
                }
            ),
        });
    }
    read?;
    Ok((key, buffer.data))
}
