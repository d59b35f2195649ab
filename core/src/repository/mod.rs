//! A repository: one storage location holding one cluster's WAL and backups.
//!
//! Layout (keys relative to the repository root):
//!
//! ```text
//! repository.json                      identity: format, cluster system identifier, encryption
//! keys/repository.key.age              the X25519 private key, age-encrypted with the passphrase
//! wal/<timeline+log>/<segment>-<sha256><suffix>    WAL segments, .backup and .partial files
//! wal/history/<tli>.history-<sha256><suffix>       timeline history files
//! ```
//!
//! `<sha256>` is the digest of the original file and `<suffix>` says how it was encoded
//! (`.zst`, `.gz`, `.age`), so every object is self-describing and naming it is atomic: there
//! is no separate checksum file that could go missing.

pub mod record;

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::sync::OnceLock;

use crate::codec::keys::KeyError;
use crate::codec::{
    pump, CodecSpec, DecodeError, Decoder, DigestingReader, DigestingWriter, ExpectedDigest,
    PumpError, RepositoryKey,
};
use crate::config::{
    Compression, ConfigError, EncryptionMode, RepositoryLocation, Secret, Settings,
};
use crate::error::{Error, Result};
use crate::storage::{GcsStorage, LocalStorage, S3Storage, Storage, StorageError};

pub const INFO_KEY: &str = "repository.json";
pub const KEY_KEY: &str = "keys/repository.key.age";
const FORMAT_VERSION: u32 = 1;
/// Metadata objects are small; refuse to read anything larger (hostile or damaged input).
const MAX_METADATA_SIZE: u64 = 1 << 20;

/// Which cluster is writing; repositories are bound to one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub system_identifier: u64,
    pub pg_version_num: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepositoryInfo {
    pub format: u32,
    /// Kept as a string: JSON readers commonly lose precision on 64-bit integers.
    pub system_identifier: String,
    pub pg_version_num: u32,
    pub encryption: String,
    /// The public half of the repository key (`age1...`), when encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_recipient: Option<String>,
    pub created_unix: u64,
}

#[derive(Debug)]
pub struct Repository {
    storage: Box<dyn Storage>,
    info: RepositoryInfo,
    passphrase: Option<Secret>,
    /// Unwrapped on first use (scrypt costs time and 64 MiB): archiving an unencrypted
    /// repository never needs it; reading an encrypted repository's metadata does (its MACs).
    key: OnceLock<RepositoryKey>,
    compression: Compression,
}

pub fn open_storage(settings: &Settings) -> Result<Box<dyn Storage>, StorageError> {
    match &settings.repository {
        RepositoryLocation::Local(path) => Ok(Box::new(LocalStorage::open(path)?)),
        RepositoryLocation::S3 { .. } => {
            let config = settings
                .s3
                .clone()
                .expect("S3 settings are resolved with the location");
            Ok(Box::new(S3Storage::new(config)?))
        }
        RepositoryLocation::Gcs { .. } => {
            let config = settings
                .gcs
                .clone()
                .expect("GCS settings are resolved with the location");
            Ok(Box::new(GcsStorage::new(config)?))
        }
    }
}

impl Repository {
    /// Opens an existing repository for reading (wal-fetch, restore, verify).
    pub fn open(settings: &Settings) -> Result<Repository> {
        let storage = open_storage(settings)?;
        let info = read_info(storage.as_ref())?.ok_or_else(|| Error::NotARepository {
            location: storage.describe(),
            reason: format!("{INFO_KEY} is missing"),
        })?;
        // repository.json is plain text anyone who can write the repository can change: a
        // reader configured for encryption never takes its word that there is none (and with
        // it, that nothing needs authenticating).
        if info.encryption == "none" && settings.encryption == EncryptionMode::Age {
            return Err(Error::EncryptionMismatch {
                location: storage.describe(),
                repository_mode: describe_mode(&info.encryption),
                configured_mode: format!("\"{}\"", settings.encryption),
            });
        }
        Repository::from_parts(storage, info, settings)
    }

    /// Opens the repository for writing by `cluster`, creating it if the location is new.
    /// Refuses a repository of another cluster or of another encryption mode.
    pub fn open_for_cluster(settings: &Settings, cluster: &ClusterIdentity) -> Result<Repository> {
        let storage = open_storage(settings)?;
        // A new repository's key was just generated: no need to unwrap it again (a second).
        let (info, new_key) = match read_info(storage.as_ref())? {
            Some(info) => (info, None),
            None => create(storage.as_ref(), settings, cluster)?,
        };
        let location = storage.describe();
        let repository_system_identifier: u64 =
            info.system_identifier
                .parse()
                .map_err(|_| Error::InvalidMetadata {
                    object: INFO_KEY.into(),
                    reason: format!("bad system_identifier {:?}", info.system_identifier),
                })?;
        if repository_system_identifier != cluster.system_identifier {
            return Err(Error::SystemIdentifierMismatch {
                location,
                repository: repository_system_identifier,
                cluster: cluster.system_identifier,
            });
        }
        if info.encryption != settings.encryption.name() {
            return Err(Error::EncryptionMismatch {
                location,
                repository_mode: describe_mode(&info.encryption),
                configured_mode: format!("\"{}\"", settings.encryption),
            });
        }
        let repository = Repository::from_parts(storage, info, settings)?;
        if let Some(key) = new_key {
            if repository.info.key_recipient.as_deref() == Some(key.recipient_string().as_str()) {
                let _ = repository.key.set(key);
            }
        }
        // A writer checks the passphrase now rather than at its first object.
        repository.key()?;
        Ok(repository)
    }

    fn from_parts(
        storage: Box<dyn Storage>,
        info: RepositoryInfo,
        settings: &Settings,
    ) -> Result<Repository> {
        if info.format != FORMAT_VERSION {
            return Err(Error::InvalidMetadata {
                object: INFO_KEY.into(),
                reason: format!(
                    "format {} is not supported by this version (expected {FORMAT_VERSION})",
                    info.format
                ),
            });
        }
        if !matches!(info.encryption.as_str(), "none" | "age") {
            return Err(Error::InvalidMetadata {
                object: INFO_KEY.into(),
                reason: format!("unknown encryption {:?}", info.encryption),
            });
        }
        Ok(Repository {
            storage,
            info,
            passphrase: settings.encryption_passphrase.clone(),
            key: OnceLock::new(),
            compression: settings.compression,
        })
    }

    /// Uses an already unwrapped key (from `sc-backup restore`'s identity file) instead of the
    /// passphrase; refused unless it is this repository's key.
    pub fn with_key(self, key: RepositoryKey) -> Result<Repository> {
        // Also when repository.json claims no encryption: the key says there is.
        if self.info.encryption == "none"
            || self.info.key_recipient.as_deref() != Some(key.recipient_string().as_str())
        {
            return Err(Error::WrongKey {
                object: KEY_KEY.into(),
            });
        }
        let _ = self.key.set(key);
        Ok(self)
    }

    /// The repository key (`None` for an unencrypted repository), unwrapped on first use.
    pub fn key(&self) -> Result<Option<&RepositoryKey>> {
        if self.info.encryption == "none" {
            return Ok(None);
        }
        if let Some(key) = self.key.get() {
            return Ok(Some(key));
        }
        let passphrase = self
            .passphrase
            .as_ref()
            .ok_or(Error::Config(ConfigError::MissingPassphrase))?;
        let key = load_key(self.storage.as_ref(), passphrase)?;
        if self.info.key_recipient.as_deref() != Some(key.recipient_string().as_str()) {
            return Err(Error::InvalidMetadata {
                object: KEY_KEY.into(),
                reason: "the key does not match the public key recorded in repository.json".into(),
            });
        }
        Ok(Some(self.key.get_or_init(|| key)))
    }

    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    pub fn info(&self) -> &RepositoryInfo {
        &self.info
    }

    /// Compression for new objects.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    pub fn describe(&self) -> String {
        self.storage.describe()
    }
}

/// Objects from this size on are decoded on one thread and written (and digested) on another
/// ([`Decoder::pump_on_two_threads`]); below it a thread costs more than it saves.
const TWO_THREADS_FROM: u64 = 8 << 20;

impl Repository {
    /// Streams object `key` through the decoder into `out`, and succeeds only when the object
    /// has the digest `expected` (of its decoded or of its stored bytes) and decodes to
    /// `expected_size` bytes, when known. The one place where stored data is verified on
    /// read: WAL fetch, restore and verify all use it. `destination` names `out` in error
    /// messages.
    pub fn read_verified(
        &self,
        key: &str,
        spec: CodecSpec,
        expected: ExpectedDigest,
        expected_size: Option<u64>,
        out: &mut dyn Write,
        destination: &str,
    ) -> Result<u64> {
        let source = self.storage().open(key)?;
        self.decode_verified(source, key, spec, expected, expected_size, out, destination)
    }

    /// [`read_verified`](Repository::read_verified) of the object encoded at `offset ..
    /// offset + length` of object `key` (a file in a backup's bundle).
    #[allow(clippy::too_many_arguments)]
    pub fn read_verified_range(
        &self,
        key: &str,
        (offset, length): (u64, u64),
        spec: CodecSpec,
        expected: ExpectedDigest,
        expected_size: Option<u64>,
        out: &mut dyn Write,
        destination: &str,
    ) -> Result<u64> {
        let source = self.storage().open_range(key, offset, length)?;
        self.decode_verified(source, key, spec, expected, expected_size, out, destination)
    }

    /// Decodes what `source` yields (stored object `key`, or a part of it) into `out`, checked
    /// as [`read_verified`](Repository::read_verified) checks it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decode_verified(
        &self,
        source: impl Read + Send,
        key: &str,
        spec: CodecSpec,
        expected: ExpectedDigest,
        expected_size: Option<u64>,
        out: &mut dyn Write,
        destination: &str,
    ) -> Result<u64> {
        let (expected, actual, size) = match expected {
            ExpectedDigest::Decoded(expected) => {
                let mut out = DigestingWriter::new(out);
                self.decode(source, key, spec, expected_size, &mut out, destination)?;
                let (_, actual, size) = out.finish();
                (expected, actual, size)
            }
            ExpectedDigest::Stored(expected) => {
                let mut stored = DigestingReader::new(source);
                let size = self.decode(&mut stored, key, spec, expected_size, out, destination)?;
                // Whatever follows the end of the encoded stream is stored bytes too: an
                // object the digest vouches for has nothing there.
                io::copy(&mut stored, &mut io::sink()).map_err(|e| Error::io("read", key, e))?;
                let (actual, _) = stored.digest();
                (expected, actual, size)
            }
        };
        if actual != expected || expected_size.is_some_and(|expected| expected != size) {
            return Err(Error::ChecksumMismatch {
                object: key.into(),
                expected: expected.to_hex(),
                actual: actual.to_hex(),
            });
        }
        Ok(size)
    }

    /// Decodes everything `source` yields into `out`; returns the decoded size. A read that
    /// fails in the storage is reported as such, not as a corrupt object.
    fn decode(
        &self,
        source: impl Read + Send,
        key: &str,
        spec: CodecSpec,
        expected_size: Option<u64>,
        out: &mut dyn Write,
        destination: &str,
    ) -> Result<u64> {
        let source = TaggedReader(source);
        let mut decoder = Decoder::new(source, spec, self.key()?).map_err(|e| match e {
            DecodeError::WrongKey => Error::WrongKey { object: key.into() },
            other => Error::Decode {
                object: key.into(),
                reason: other.to_string(),
            },
        })?;
        let pumped = if expected_size.is_some_and(|size| size >= TWO_THREADS_FROM) {
            decoder.pump_on_two_threads(out)
        } else {
            pump(&mut decoder, out)
        };
        match pumped {
            Ok(_) => Ok(decoder.decoded_size()),
            Err(PumpError::Read(e))
                if e.get_ref()
                    .is_some_and(|inner| inner.is::<StorageReadError>()) =>
            {
                Err(self.read_error(key, e))
            }
            Err(PumpError::Read(e)) => Err(Error::Decode {
                object: key.into(),
                reason: e.to_string(),
            }),
            Err(PumpError::Write(e)) => Err(Error::io("write", destination, e)),
        }
    }
}

impl Repository {
    /// The error of a read of object `key` that failed in the storage: on a local disk an I/O
    /// error, on an object store a connection that broke mid-body, which a new attempt may not
    /// meet ([`StorageError::Unavailable`]).
    pub(crate) fn read_error(&self, key: &str, error: io::Error) -> Error {
        if self.storage.is_local() {
            Error::io("read", key, error)
        } else {
            Error::Storage(StorageError::Unavailable {
                store: self.storage.describe(),
                operation: "read".into(),
                key: key.to_string(),
                reason: crate::storage::RemoteCause::Read(error),
            })
        }
    }
}

/// Marks errors of the storage read underneath a decoder, so that a failing disk or network
/// is not reported as a corrupt object.
struct TaggedReader<R>(R);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StorageReadError(std::io::Error);

impl<R: Read> Read for TaggedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), StorageReadError(e)))
    }
}

fn describe_mode(mode: &str) -> String {
    match mode {
        "none" => "not encrypted".into(),
        other => format!("encrypted with \"{other}\""),
    }
}

/// Reads a small metadata object; `None` when it does not exist.
pub(crate) fn read_small_object(storage: &dyn Storage, key: &str) -> Result<Option<Vec<u8>>> {
    let reader = match storage.open(key) {
        Ok(reader) => reader,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut data = Vec::new();
    reader
        .take(MAX_METADATA_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io("read", key, e))?;
    if data.len() as u64 > MAX_METADATA_SIZE {
        return Err(Error::InvalidMetadata {
            object: key.into(),
            reason: format!("larger than {MAX_METADATA_SIZE} bytes"),
        });
    }
    Ok(Some(data))
}

/// Writes a small object once; `Ok(false)` when it already existed (left untouched).
fn write_new_object(storage: &dyn Storage, key: &str, data: &[u8]) -> Result<bool> {
    let mut writer = storage.create(key)?;
    writer
        .write_all(data)
        .map_err(|e| Error::io("write", key, e))?;
    match writer.commit() {
        Ok(()) => Ok(true),
        Err(StorageError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn read_info(storage: &dyn Storage) -> Result<Option<RepositoryInfo>> {
    let Some(data) = read_small_object(storage, INFO_KEY)? else {
        return Ok(None);
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| Error::InvalidMetadata {
            object: INFO_KEY.into(),
            reason: e.to_string(),
        })
}

fn load_key(storage: &dyn Storage, passphrase: &Secret) -> Result<RepositoryKey> {
    let wrapped = read_small_object(storage, KEY_KEY)?.ok_or_else(|| Error::InvalidMetadata {
        object: KEY_KEY.into(),
        reason: "the repository is encrypted but its key is missing".into(),
    })?;
    RepositoryKey::unwrap_key_once(&wrapped, passphrase).map_err(|e| match e {
        KeyError::WrongPassphrase => Error::WrongPassphrase {
            location: storage.describe(),
        },
        other => Error::InvalidMetadata {
            object: KEY_KEY.into(),
            reason: other.to_string(),
        },
    })
}

/// Creates a repository. Safe against concurrent creators (archiver and a backup starting at
/// once): every object is written with create-if-absent, and a loser adopts the winner's.
fn create(
    storage: &dyn Storage,
    settings: &Settings,
    cluster: &ClusterIdentity,
) -> Result<(RepositoryInfo, Option<RepositoryKey>)> {
    let key = match settings.encryption {
        EncryptionMode::None => None,
        EncryptionMode::Age => {
            let passphrase = settings
                .encryption_passphrase
                .as_ref()
                .ok_or(Error::Config(ConfigError::MissingPassphrase))?;
            let key = RepositoryKey::generate();
            let wrapped = key
                .wrap(passphrase, None)
                .map_err(|e| Error::InvalidMetadata {
                    object: KEY_KEY.into(),
                    reason: e.to_string(),
                })?;
            if write_new_object(storage, KEY_KEY, &wrapped)? {
                // This process's next open reads these bytes back: no second scrypt.
                key.keep_unwrapped(&wrapped, passphrase);
                Some(key)
            } else {
                Some(load_key(storage, passphrase)?)
            }
        }
    };
    let key_recipient = key.as_ref().map(RepositoryKey::recipient_string);
    let info = RepositoryInfo {
        format: FORMAT_VERSION,
        system_identifier: cluster.system_identifier.to_string(),
        pg_version_num: cluster.pg_version_num,
        encryption: settings.encryption.name().to_string(),
        key_recipient,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let json = serde_json::to_vec_pretty(&info).expect("repository info serializes");
    if write_new_object(storage, INFO_KEY, &json)? {
        Ok((info, key))
    } else {
        // Another writer created the repository first; its key is the one that counts.
        let info = read_info(storage)?.ok_or_else(|| Error::NotARepository {
            location: storage.describe(),
            reason: format!("{INFO_KEY} vanished while the repository was being created"),
        })?;
        Ok((info, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoder;
    use crate::config::{CompressionAlgorithm, RawSettings};

    pub(crate) fn settings(dir: &std::path::Path, encryption: Option<&str>) -> Settings {
        Settings::from_raw(&RawSettings {
            repository: Some(dir.display().to_string()),
            encryption: encryption.map(Into::into),
            encryption_passphrase: encryption.map(|_| Secret::new("test passphrase")),
            ..Default::default()
        })
        .unwrap()
    }

    const CLUSTER: ClusterIdentity = ClusterIdentity {
        system_identifier: 7_300_000_000_000_000_001,
        pg_version_num: 150018,
    };

    #[test]
    fn created_once_then_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let created = Repository::open_for_cluster(&settings(dir.path(), None), &CLUSTER).unwrap();
        assert_eq!(created.info().system_identifier, "7300000000000000001");
        let reopened = Repository::open(&settings(dir.path(), None)).unwrap();
        assert_eq!(reopened.info(), created.info());
    }

    #[test]
    fn another_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Repository::open_for_cluster(&settings(dir.path(), None), &CLUSTER).unwrap();
        let other = ClusterIdentity {
            system_identifier: 42,
            ..CLUSTER
        };
        let err = Repository::open_for_cluster(&settings(dir.path(), None), &other).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SystemIdentifierMismatch {
                    repository: 7_300_000_000_000_000_001,
                    cluster: 42,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn reading_needs_an_existing_repository() {
        let dir = tempfile::tempdir().unwrap();
        let err = Repository::open(&settings(dir.path(), None)).unwrap_err();
        assert!(
            err.to_string().contains("repository.json is missing"),
            "{err}"
        );
    }

    #[test]
    fn encryption_mode_is_fixed_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        Repository::open_for_cluster(&settings(dir.path(), None), &CLUSTER).unwrap();
        let err =
            Repository::open_for_cluster(&settings(dir.path(), Some("age")), &CLUSTER).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "repository {} is not encrypted, but sc_backup.encryption is \"age\"",
                dir.path().display()
            )
        );
    }

    #[test]
    fn encrypted_repository_needs_the_right_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let created =
            Repository::open_for_cluster(&settings(dir.path(), Some("age")), &CLUSTER).unwrap();
        assert!(created.key().unwrap().is_some());
        let mut wrong = settings(dir.path(), Some("age"));
        wrong.encryption_passphrase = Some(Secret::new("not it"));
        let err = Repository::open(&wrong).unwrap().key().unwrap_err();
        assert!(matches!(err, Error::WrongPassphrase { .. }), "{err}");
        assert!(!err.to_string().contains("not it"));
        let reopened = Repository::open(&settings(dir.path(), Some("age"))).unwrap();
        assert_eq!(
            reopened.key().unwrap().unwrap().recipient_string(),
            created.key().unwrap().unwrap().recipient_string()
        );
    }

    /// A file recorded by the digest of its stored bytes decodes when they are intact, and is
    /// refused at any changed, missing or added byte, in every encoding (even where the codec
    /// itself would not notice, as in gzip's header timestamp), and at a decoded size that is
    /// not the manifest's.
    #[test]
    fn a_stored_digest_refuses_every_damage_of_the_stored_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let repository =
            Repository::open_for_cluster(&settings(dir.path(), Some("age")), &CLUSTER).unwrap();
        let content: Vec<u8> = (0..400u32)
            .flat_map(|i| format!("row {i} {}\n", i % 7).into_bytes())
            .collect();
        let size = Some(content.len() as u64);
        for (algorithm, level) in [
            (CompressionAlgorithm::None, 0),
            (CompressionAlgorithm::Gzip, 6),
            (CompressionAlgorithm::Zstd, 1),
        ] {
            let compression = Compression::new(algorithm, level).unwrap();
            for key in [None, repository.key().unwrap()] {
                let spec = Encoder::<Vec<u8>>::spec(compression, key);
                let mut encoder =
                    Encoder::new(DigestingWriter::new(Vec::new()), compression, key).unwrap();
                encoder.write_all(&content).unwrap();
                let (digesting, _) = encoder.finish().unwrap();
                let (stored, digest, _) = digesting.finish();
                let expected = ExpectedDigest::Stored(digest);
                let read = |stored: &[u8], size: Option<u64>| {
                    let mut out = Vec::new();
                    repository
                        .decode_verified(stored, "object", spec, expected, size, &mut out, "out")
                        .map(|_| out)
                };
                assert_eq!(read(&stored, size).unwrap(), content, "{spec:?}");
                assert!(read(&stored, Some(content.len() as u64 + 1)).is_err());
                for position in 0..stored.len() {
                    let mut damaged = stored.clone();
                    damaged[position] ^= 1 << (position % 8);
                    assert!(
                        read(&damaged, size).is_err(),
                        "{spec:?}: flip at {position}"
                    );
                }
                for length in 0..stored.len() {
                    let truncated = &stored[..length];
                    assert!(read(truncated, size).is_err(), "{spec:?}: cut at {length}");
                }
                let mut appended = stored.clone();
                appended.push(0);
                assert!(read(&appended, size).is_err(), "{spec:?}: a byte appended");
            }
        }
    }

    /// The process that creates an encrypted repository paid scrypt to wrap its key; its next
    /// open (a backend's second `sc_backup()`, the scheduler's next run) must not pay it again
    /// to unwrap the bytes it wrote itself.
    #[test]
    fn the_creator_reopens_its_encrypted_repository_without_another_scrypt() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path(), Some("age"));
        let created = Repository::open_for_cluster(&settings, &CLUSTER).unwrap();
        let stored_key_file = read_small_object(created.storage(), KEY_KEY)
            .unwrap()
            .unwrap();
        let passphrase = settings.encryption_passphrase.as_ref().unwrap();
        let kept = crate::codec::keys::already_unwrapped(&stored_key_file, passphrase)
            .expect("the creator keeps the key it wrapped");
        assert_eq!(
            kept.recipient_string(),
            created.key().unwrap().unwrap().recipient_string()
        );
    }
}
