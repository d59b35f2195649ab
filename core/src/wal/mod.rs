//! WAL archiving and fetching: what `archive_library` and `restore_command` do.

pub mod archive_pipeline;
pub mod copy;
pub mod prefetch;
pub mod scan;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::codec::{
    pump, CodecSpec, DigestingWriter, EncodeSummary, Encoder, ExpectedDigest, PumpError,
    Sha256Digest,
};
use crate::error::{Error, Result};
use crate::pg::lsn::Lsn;
use crate::repository::Repository;
use crate::storage::StorageError;
use crate::wal::scan::{SegmentScan, SegmentScanner};

/// The files PostgreSQL archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFileKind {
    /// `000000010000000A000000FF`
    Segment,
    /// `00000002.history`
    History,
    /// `000000010000000A000000FF.00000028.backup`
    BackupLabel,
    /// `000000010000000A000000FF.partial`
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFileName {
    name: String,
    kind: WalFileKind,
}

fn is_upper_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl WalFileName {
    pub fn parse(name: &str) -> Result<WalFileName> {
        // Every valid name is ASCII; checking first keeps the byte slicing below on character
        // boundaries (a 16-byte name with a multi-byte character once panicked here).
        let kind = if !name.is_ascii() {
            return Err(Error::InvalidWalFileName(name.to_string()));
        } else if is_upper_hex(name, 24) {
            WalFileKind::Segment
        } else if name.len() == 16 && is_upper_hex(&name[..8], 8) && &name[8..] == ".history" {
            WalFileKind::History
        } else if name.len() == 40
            && is_upper_hex(&name[..24], 24)
            && &name[24..25] == "."
            && is_upper_hex(&name[25..33], 8)
            && &name[33..] == ".backup"
        {
            WalFileKind::BackupLabel
        } else if name.len() == 32 && is_upper_hex(&name[..24], 24) && &name[24..] == ".partial" {
            WalFileKind::Partial
        } else {
            return Err(Error::InvalidWalFileName(name.to_string()));
        };
        Ok(WalFileName {
            name: name.to_string(),
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> WalFileKind {
        self.kind
    }

    /// Segments of one timeline and 4 GiB of WAL share a directory (at most 256 segments of
    /// 16 MiB), which keeps directory listings short.
    fn directory(&self) -> String {
        match self.kind {
            WalFileKind::History => "wal/history".to_string(),
            _ => format!("wal/{}", &self.name[..16]),
        }
    }

    /// All stored objects of this file start with this prefix.
    fn object_prefix(&self) -> String {
        format!("{}/{}-", self.directory(), self.name)
    }
}

/// One stored copy of a WAL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWal {
    pub key: String,
    pub sha256: Sha256Digest,
    pub spec: CodecSpec,
    pub stored_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveOutcome {
    Stored(EncodeSummary),
    /// An identical copy was already there (PostgreSQL retries a file whose `.done` it lost in
    /// a crash): success, nothing written.
    AlreadyArchived,
}

impl Repository {
    /// The stored copy of `name`, if any.
    pub fn find_wal(&self, name: &WalFileName) -> Result<Option<StoredWal>> {
        let prefix = name.object_prefix();
        let mut found: Vec<StoredWal> = self
            .storage()
            .list(&prefix)?
            .into_iter()
            .filter_map(|meta| {
                let rest = &meta.key[prefix.len()..];
                let sha256 = Sha256Digest::from_hex(rest.get(..64)?)?;
                let spec = CodecSpec::from_suffix(&rest[64..])?;
                Some(StoredWal {
                    key: meta.key,
                    sha256,
                    spec,
                    stored_size: meta.size,
                })
            })
            .collect();
        // Two encodings of the same content (say, after compression was changed and a crash
        // made PostgreSQL archive a file again) are harmless; two contents are not.
        found.dedup_by(|a, b| a.sha256 == b.sha256);
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(Error::WalAmbiguous {
                wal_file: name.as_str().to_string(),
                objects: found
                    .iter()
                    .map(|w| w.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Archives the WAL file at `source` under `name`. Returns only once the object is durable.
    pub fn archive_wal(&self, source: &Path, name: &str) -> Result<ArchiveOutcome> {
        let name = WalFileName::parse(name)?;
        let display = source.display().to_string();
        let mut file = File::open(source).map_err(|e| Error::io("open", &display, e))?;
        let digest_of_file = |file: &mut File| {
            Sha256Digest::of_reader(file)
                .map(|(digest, _)| digest)
                .map_err(|e| Error::io("read", &display, e))
        };
        if let Some(existing) = self.find_wal(&name)? {
            // Archived before (PostgreSQL retries a file whose `.done` it lost in a crash):
            // success only for the same content.
            let digest = digest_of_file(&mut file)?;
            return if existing.sha256 == digest {
                // The crash that lost the `.done` may also have come before the copy was
                // synced: success only once it is durable, as contrib/basic_archive does.
                self.storage().persist(&existing.key)?;
                Ok(ArchiveOutcome::AlreadyArchived)
            } else {
                Err(Error::WalContentMismatch {
                    wal_file: name.as_str().to_string(),
                    stored: existing.sha256.to_hex(),
                    offered: digest.to_hex(),
                })
            };
        }
        // The object's key holds the digest of the segment. Object stores take the key before
        // the first byte, so for them the segment is read twice: once for the digest, then to
        // encode it (from the page cache). A local directory names the file when it links it
        // into place, so there the encoder's own digest names it: one pass, a SHA-256 of
        // 16 MiB (about a quarter of the work per segment) saved.
        let digest_before = if self.storage().names_at_commit() {
            None
        } else {
            let digest = digest_of_file(&mut file)?;
            file.rewind().map_err(|e| Error::io("seek", &display, e))?;
            Some(digest)
        };
        let repository_key = self.key()?;
        let spec = Encoder::<io::Sink>::spec(self.compression(), repository_key);
        let key_for = |digest: &Sha256Digest| {
            format!(
                "{}{}{}",
                name.object_prefix(),
                digest.to_hex(),
                spec.suffix()
            )
        };
        // Never committed under this name when the digest is learnt at commit (see above).
        let created_key = match &digest_before {
            Some(digest) => key_for(digest),
            None => format!("{}unnamed{}", name.object_prefix(), spec.suffix()),
        };
        // find_wal above found no object for this segment, and the key names the content.
        let writer = self.storage().create_unique(&created_key)?;
        let encoder = Encoder::new(writer, self.compression(), repository_key)
            .map_err(|e| Error::io("encode", &created_key, e))?;
        // The segment is named, and fetched back, by the digest of its original bytes.
        let mut original = DigestingWriter::new(encoder);
        pump(&mut file, &mut original).map_err(|e| match e {
            PumpError::Read(e) => Error::io("read", &display, e),
            PumpError::Write(e) => Error::io("write", &created_key, e),
        })?;
        let (encoder, original_sha256, _) = original.finish();
        let (writer, summary) = encoder
            .finish()
            .map_err(|e| Error::io("write", &created_key, e))?;
        let final_key = key_for(&original_sha256);
        let committed = match digest_before {
            Some(digest) if original_sha256 != digest => {
                // The file changed under us; dropping the writer discards the object.
                drop(writer);
                return Err(Error::ChecksumMismatch {
                    object: display,
                    expected: digest.to_hex(),
                    actual: original_sha256.to_hex(),
                });
            }
            Some(_) => writer.commit(),
            None => writer.commit_as(&final_key),
        };
        match committed {
            Ok(()) => Ok(ArchiveOutcome::Stored(summary)),
            // Same key means same content: another writer got there first (and may not have
            // synced it yet).
            Err(StorageError::AlreadyExists { .. }) => {
                self.storage().persist(&final_key)?;
                Ok(ArchiveOutcome::AlreadyArchived)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Restores WAL file `name` to `destination`, which appears (atomically, by rename) only
    /// once its content matched the recorded SHA-256. `Error::WalNotFound` when absent.
    pub fn fetch_wal(&self, name: &str, destination: &Path) -> Result<StoredWal> {
        let name = WalFileName::parse(name)?;
        let stored = self
            .find_wal(&name)?
            .ok_or_else(|| Error::WalNotFound(name.as_str().to_string()))?;
        self.fetch_stored(&stored, destination)?;
        Ok(stored)
    }

    /// Decodes a WAL object found by [`Repository::find_wal`] to `destination`, verified,
    /// appearing there (by rename) only once complete.
    pub fn fetch_stored(&self, stored: &StoredWal, destination: &Path) -> Result<()> {
        let temporary = TemporaryFile::create(destination)?;
        let mut output = temporary.file()?;
        let label = temporary.path.display().to_string();
        self.read_verified(
            &stored.key,
            stored.spec,
            ExpectedDigest::Decoded(stored.sha256),
            None,
            &mut output,
            &label,
        )?;
        drop(output);
        temporary.persist(destination)
    }
}

/// Where the archived WAL ends, as far as recovery is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEnd {
    /// The newest archived segment (highest position, then highest timeline).
    pub segment: String,
    /// The end of its last complete record: no recovery target beyond it can be reached.
    pub end_of_records: Option<Lsn>,
    /// The newest commit or abort time in the newest segments that hold one, and that
    /// segment: a time target after it is never reached.
    pub newest_transaction: Option<(DateTime<Utc>, String)>,
    /// Whether every candidate segment was read (so no transaction at all means none).
    pub scanned_all: bool,
}

/// How many segments [`Repository::archive_end`] reads back looking for a transaction.
const SEGMENTS_SCANNED_BACK: usize = 16;

impl Repository {
    /// Reads the newest archived segments back (at most 16, none before `not_before`) to
    /// establish where recovery from this archive can get to. `None` for an empty archive.
    pub fn archive_end(&self, not_before: Option<&str>) -> Result<Option<ArchiveEnd>> {
        let mut segments: Vec<String> = self
            .storage()
            .list("wal/")?
            .into_iter()
            .filter_map(|meta| {
                let name = meta.key.rsplit('/').next()?.split('-').next()?.to_string();
                (WalFileName::parse(&name).ok()?.kind() == WalFileKind::Segment).then_some(name)
            })
            .filter(|name| not_before.is_none_or(|first| name[8..] >= first[8..]))
            .collect();
        // Position (log, segment) first, then timeline: after a promotion the new timeline's
        // copy of a segment is the one recovery follows.
        segments.sort_by(|a, b| (&b[8..], &b[..8]).cmp(&(&a[8..], &a[..8])));
        segments.dedup();
        let Some(newest) = segments.first().cloned() else {
            return Ok(None);
        };
        let mut end = ArchiveEnd {
            segment: newest,
            end_of_records: None,
            newest_transaction: None,
            scanned_all: segments.len() <= SEGMENTS_SCANNED_BACK,
        };
        for (index, segment) in segments.iter().take(SEGMENTS_SCANNED_BACK).enumerate() {
            let scan = self.scan_segment(segment)?;
            if index == 0 {
                end.end_of_records = scan.end_of_records;
            }
            if let Some(time) = scan.newest_transaction_time() {
                end.newest_transaction = Some((time, segment.clone()));
                break;
            }
        }
        Ok(Some(end))
    }

    /// Decodes and verifies one archived segment through the WAL scanner.
    pub fn scan_segment(&self, segment: &str) -> Result<SegmentScan> {
        let name = WalFileName::parse(segment)?;
        let stored = self
            .find_wal(&name)?
            .ok_or_else(|| Error::WalNotFound(segment.to_string()))?;
        let mut scanner = SegmentScanner::new();
        self.read_verified(
            &stored.key,
            stored.spec,
            ExpectedDigest::Decoded(stored.sha256),
            None,
            &mut scanner,
            "the WAL scanner",
        )?;
        Ok(scanner.finish())
    }
}

/// A file beside its destination that is removed unless persisted.
struct TemporaryFile {
    path: PathBuf,
    persisted: bool,
}

impl TemporaryFile {
    fn create(destination: &Path) -> Result<TemporaryFile> {
        let file_name = destination
            .file_name()
            .ok_or_else(|| {
                Error::io(
                    "write",
                    destination.display(),
                    io::Error::other("not a file path"),
                )
            })?
            .to_string_lossy();
        let path =
            destination.with_file_name(format!(".{file_name}.sc_backup.{}", std::process::id()));
        // A leftover from a killed run of this same process id is ours to replace.
        let _ = fs::remove_file(&path);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("create", path.display(), e))?;
        Ok(TemporaryFile {
            path,
            persisted: false,
        })
    }

    fn file(&self) -> Result<File> {
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| Error::io("open", self.path.display(), e))
    }

    fn persist(mut self, destination: &Path) -> Result<()> {
        // No fsync: PostgreSQL fsyncs a restored file itself when it keeps it
        // (KeepFileRestoredFromArchive uses durable_rename).
        fs::rename(&self.path, destination)
            .map_err(|e| Error::io("rename", destination.display(), e))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawSettings, Secret, Settings};
    use crate::repository::ClusterIdentity;

    const CLUSTER: ClusterIdentity = ClusterIdentity {
        system_identifier: 1,
        pg_version_num: 150018,
    };

    fn repository(dir: &Path, compression: &str, encrypted: bool) -> Repository {
        let settings = Settings::from_raw(&RawSettings {
            repository: Some(dir.display().to_string()),
            compression: Some(compression.into()),
            encryption: Some(if encrypted { "age" } else { "none" }.into()),
            encryption_passphrase: encrypted.then(|| Secret::new("pass")),
            ..Default::default()
        })
        .unwrap();
        Repository::open_for_cluster(&settings, &CLUSTER).unwrap()
    }

    fn write_file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn names() {
        for (name, kind) in [
            ("000000010000000A000000FF", WalFileKind::Segment),
            ("00000002.history", WalFileKind::History),
            (
                "000000010000000A000000FF.00000028.backup",
                WalFileKind::BackupLabel,
            ),
            ("000000010000000A000000FF.partial", WalFileKind::Partial),
        ] {
            assert_eq!(WalFileName::parse(name).unwrap().kind(), kind);
        }
        for bad in [
            "",
            "000000010000000a000000ff",
            "00000001000000000000000",
            "../../etc/passwd",
            "x.history",
            "RECOVERYXLOG",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn archive_then_fetch_every_kind() {
        let repo_dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(repo_dir.path(), "zstd", true);
        for name in [
            "000000010000000000000001",
            "00000002.history",
            "000000010000000000000001.00000028.backup",
        ] {
            let content = format!("content of {name}").repeat(1000);
            let source = write_file(work.path(), name, content.as_bytes());
            assert!(matches!(
                repo.archive_wal(&source, name).unwrap(),
                ArchiveOutcome::Stored(_)
            ));
            let restored = work.path().join("RECOVERYXLOG");
            repo.fetch_wal(name, &restored).unwrap();
            assert_eq!(fs::read(&restored).unwrap(), content.as_bytes());
        }
    }

    #[test]
    fn identical_re_archive_succeeds_different_is_refused() {
        let repo_dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(repo_dir.path(), "gzip", false);
        let name = "000000010000000000000002";
        let original = write_file(work.path(), "a", &[7u8; 100_000]);
        repo.archive_wal(&original, name).unwrap();
        assert_eq!(
            repo.archive_wal(&original, name).unwrap(),
            ArchiveOutcome::AlreadyArchived
        );
        let different = write_file(work.path(), "b", &[8u8; 100_000]);
        let err = repo.archive_wal(&different, name).unwrap_err();
        assert!(matches!(err, Error::WalContentMismatch { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("already archived with different content"));
        let restored = work.path().join("restored");
        repo.fetch_wal(name, &restored).unwrap();
        assert_eq!(fs::read(&restored).unwrap(), vec![7u8; 100_000]);
    }

    /// PostgreSQL retries a segment whose `.done` a crash lost; the crash may also have come
    /// between the copy's link and its fsyncs. Success is reported only after the existing
    /// copy, its directory and the directories above it are synced again.
    #[test]
    fn an_identical_re_archive_syncs_the_existing_copy_before_success() {
        let repo_dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(repo_dir.path(), "zstd", false);
        let name = "000000010000000000000007";
        let source = write_file(work.path(), name, &[3u8; 70_000]);
        repo.archive_wal(&source, name).unwrap();
        crate::storage::local::take_synced();
        assert_eq!(
            repo.archive_wal(&source, name).unwrap(),
            ArchiveOutcome::AlreadyArchived
        );
        let synced = crate::storage::local::take_synced();
        let stored = repo
            .find_wal(&WalFileName::parse(name).unwrap())
            .unwrap()
            .unwrap();
        let object = repo_dir.path().join(&stored.key);
        let directory = object.parent().unwrap().to_path_buf();
        assert!(
            synced.contains(&object),
            "the copy was not synced: {synced:?}"
        );
        assert!(
            synced.contains(&directory),
            "its directory was not synced: {synced:?}"
        );
    }

    #[test]
    fn missing_wal_is_not_found() {
        let repo_dir = tempfile::tempdir().unwrap();
        let repo = repository(repo_dir.path(), "none", false);
        let err = repo
            .fetch_wal("000000010000000000000009", Path::new("/nonexistent/x"))
            .unwrap_err();
        assert!(matches!(err, Error::WalNotFound(_)), "{err}");
    }

    #[test]
    fn corrupt_objects_never_reach_the_destination() {
        for (compression, encrypted) in [
            ("none", false),
            ("zstd", false),
            ("gzip", false),
            ("zstd", true),
        ] {
            let repo_dir = tempfile::tempdir().unwrap();
            let work = tempfile::tempdir().unwrap();
            let repo = repository(repo_dir.path(), compression, encrypted);
            let name = "000000010000000000000003";
            let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            let source = write_file(work.path(), "src", &content);
            repo.archive_wal(&source, name).unwrap();
            let stored = repo
                .find_wal(&WalFileName::parse(name).unwrap())
                .unwrap()
                .unwrap();
            let object = repo_dir.path().join(&stored.key);
            let mut bytes = fs::read(&object).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
            fs::write(&object, &bytes).unwrap();
            let destination = work.path().join("RECOVERYXLOG");
            let err = repo.fetch_wal(name, &destination).unwrap_err();
            assert!(
                matches!(err, Error::ChecksumMismatch { .. } | Error::Decode { .. }),
                "{compression}/{encrypted}: {err}"
            );
            assert!(
                !destination.exists(),
                "{compression}/{encrypted}: corrupt data was installed"
            );
            let leftovers: Vec<_> = fs::read_dir(work.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                leftovers.len(),
                1,
                "temporary file left behind: {leftovers:?}"
            );
        }
    }

    #[test]
    fn objects_are_not_plain_wal_when_compressed_or_encrypted() {
        let repo_dir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = repository(repo_dir.path(), "none", true);
        let content = b"PLAINTEXT-WAL-MARKER".repeat(1000);
        let source = write_file(work.path(), "src", &content);
        repo.archive_wal(&source, "000000010000000000000004")
            .unwrap();
        let stored = repo
            .find_wal(&WalFileName::parse("000000010000000000000004").unwrap())
            .unwrap()
            .unwrap();
        assert!(stored.key.ends_with(".age"));
        let bytes = fs::read(repo_dir.path().join(&stored.key)).unwrap();
        assert!(!bytes.windows(20).any(|w| w == b"PLAINTEXT-WAL-MARKER"));
    }
}
