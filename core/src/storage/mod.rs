//! One storage interface for every backend (local directory now; S3 and GCS later).
//!
//! Objects are immutable: [`Storage::create`] returns a writer whose [`ObjectWriter::commit`]
//! makes the object durable and visible in one step and refuses to replace an existing key.
//! Dropping a writer without committing aborts it: nothing becomes visible. Every backend runs
//! the same conformance suite ([`conformance`]).

use std::fmt;
use std::io::{self, Read, Write};

pub mod conformance;
pub mod gcs;
mod http;
pub(crate) mod local;
pub mod s3;

pub use gcs::{GcsConfig, GcsStorage};
pub use local::LocalStorage;
pub use s3::{S3Config, S3Storage};

/// An object store by its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectStore {
    S3,
    Gcs,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object \"{key}\" does not exist in {store}")]
    NotFound { store: String, key: String },

    #[error("object \"{key}\" already exists in {store}")]
    AlreadyExists { store: String, key: String },

    #[error("invalid object key \"{0}\"")]
    InvalidKey(String),

    #[error("this store does not support {0}")]
    Unsupported(String),

    #[error("repository directory {0} does not exist")]
    MissingRoot(String),

    #[error("access to {store} was denied: {reason}")]
    Denied {
        store: String,
        /// Which store refused: its hint names that store's credentials.
        backend: ObjectStore,
        reason: String,
    },

    #[error("could not {operation} \"{key}\" in {store}: {reason}")]
    Remote {
        store: String,
        operation: String,
        key: String,
        #[source]
        reason: RemoteCause,
    },

    /// The store did not answer, or answered "try again" (timeouts, connection errors, 5xx,
    /// throttling) until the retries ran out: an outage, which may end.
    #[error("could not {operation} \"{key}\" in {store}: {reason}")]
    Unavailable {
        store: String,
        operation: String,
        key: String,
        #[source]
        reason: RemoteCause,
    },

    #[error("could not {action} \"{path}\": {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Why a request to an object store failed, with its cause kept. Its text is one line (a
/// transport error's causes joined), as the front ends print it.
#[derive(Debug, thiserror::Error)]
pub enum RemoteCause {
    /// No answer: the connection was refused or cut, TLS failed, the request timed out.
    #[error("{}", http::describe_reqwest_error(.0))]
    Transport(#[source] reqwest::Error),
    /// The answer could not be read to its end.
    #[error("{0}")]
    Read(#[source] io::Error),
    /// The store answered with an error status, and what its error document said (S3:
    /// `Code: Message`; GCS: the message), if anything.
    #[error("HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(" {detail}") })]
    Status {
        status: reqwest::StatusCode,
        detail: String,
    },
    /// The request could not be signed.
    #[error("signing: {0}")]
    Signing(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An answer that makes no sense for the request.
    #[error("{0}")]
    Answer(String),
    /// Transient failures until the attempts ran out; the last one is kept.
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        #[source]
        last: Box<RemoteCause>,
        attempts: u32,
    },
}

impl StorageError {
    pub fn hint(&self) -> Option<String> {
        match self {
            StorageError::MissingRoot(_) => Some(
                "Create the directory, owned by the PostgreSQL OS user with mode 0700; sc_backup does not create it, so that an unmounted volume is never filled by mistake."
                    .into(),
            ),
            StorageError::Denied {
                backend: ObjectStore::S3,
                ..
            } => Some(
                "Check the credentials (sc_backup.s3_access_key_id / sc_backup.s3_secret_access_key or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), the region, and the bucket policy."
                    .into(),
            ),
            StorageError::Denied {
                backend: ObjectStore::Gcs,
                ..
            } => Some(
                "Check the service account key (sc_backup.gcs_credentials or GOOGLE_APPLICATION_CREDENTIALS) and that its account may read and create objects in the bucket (roles/storage.objectUser)."
                    .into(),
            ),
            StorageError::Remote { .. } | StorageError::Unavailable { .. } => Some(
                "Check that the object store is reachable (sc_backup.s3_endpoint or sc_backup.gcs_endpoint, network, TLS); PostgreSQL keeps the WAL and retries.".into(),
            ),
            StorageError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => Some(
                "The repository must be writable by the PostgreSQL OS user.".into(),
            ),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// Whether trying again later may succeed: the store was unreachable or overloaded, or a
    /// connection broke. Everything else (a refusal, a missing root, a damaged answer) stays
    /// as it is until someone acts.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Unavailable { .. } => true,
            StorageError::Io { source, .. } => is_transient_io(source),
            _ => false,
        }
    }
}

/// I/O errors of a connection (a body cut short, a reset), which a new attempt may not meet.
pub fn is_transient_io(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::Interrupted
    )
}

/// An entry returned by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full key, relative to the repository root, `/`-separated.
    pub key: String,
    pub size: u64,
}

/// A writer for a new object; see the module documentation.
pub trait ObjectWriter: Write + Send {
    /// Makes everything written durable and visible under the key. Fails with
    /// [`StorageError::AlreadyExists`] (and leaves the existing object untouched) when the key
    /// already exists.
    fn commit(self: Box<Self>) -> Result<(), StorageError>;

    /// Like [`commit`](ObjectWriter::commit), under `key` instead of the key the writer was
    /// created with, which must name an object in the same directory. Only writers of a
    /// backend whose [`Storage::names_at_commit`] is true support it; the others fail with
    /// [`StorageError::Unsupported`] and discard what was written.
    fn commit_as(self: Box<Self>, key: &str) -> Result<(), StorageError> {
        Err(StorageError::Unsupported(format!(
            "choosing the key of \"{key}\" at commit"
        )))
    }
}

pub trait Storage: Send + Sync + fmt::Debug {
    /// Starts writing a new object.
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter + '_>, StorageError>;

    /// Starts writing a new object whose key no other writer uses: in a prefix its writer
    /// found empty and holds (a backup's objects, under the backup lock), or named by its
    /// content (WAL, after the archive found no object for the segment). Object stores then
    /// skip the existence check they make before committing, one round trip per object;
    /// the conditional write still refuses an existing key where the store enforces it.
    fn create_unique(&self, key: &str) -> Result<Box<dyn ObjectWriter + '_>, StorageError> {
        self.create(key)
    }

    /// Opens an object for streaming reads.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError>;

    /// Opens bytes `offset .. offset + length` of an object (one file of a backup's bundle):
    /// one ranged request on an object store. The reader yields exactly `length` bytes or
    /// fails; a range past the object's end is an error, never a short read. An empty range
    /// is not requested (nor is the object's existence checked for it).
    fn open_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Box<dyn Read + Send + '_>, StorageError>;

    /// Every committed object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Removes an object; removing a missing object is not an error.
    fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Where this store is, for messages (never includes credentials).
    fn describe(&self) -> String;

    /// Whether this store is a directory of this machine (or a mount), rather than a service
    /// reached over the network: a read that fails there is the disk's failure, not a
    /// connection's.
    fn is_local(&self) -> bool {
        false
    }

    /// Whether [`ObjectWriter::commit`] refuses an existing key atomically even against a
    /// concurrent writer. Where it does not (S3-compatible servers without atomic conditional
    /// writes), two racing writers may both succeed and the last one's object stays; callers
    /// that write keys whose content is not fixed by the key read them back.
    fn atomic_create(&self) -> bool;

    /// Whether writers accept [`ObjectWriter::commit_as`]. A local file gets its name when it
    /// is linked into place, so the key may depend on the content written (a digest) and the
    /// content need not be read twice; object stores take the key with the first byte.
    fn names_at_commit(&self) -> bool {
        false
    }

    /// Makes object `key`, found already stored, as durable as [`ObjectWriter::commit`] makes a
    /// new one, before a caller reports it stored: a writer may have crashed after naming it and
    /// before syncing it (contrib/basic_archive fsyncs an identical existing file and its
    /// directory before returning success, for the same reason). An object store's
    /// acknowledged write is durable, so the default does nothing.
    fn persist(&self, _key: &str) -> Result<(), StorageError> {
        Ok(())
    }

    /// Removes what writers killed mid-write left behind, once older than `older_than`, and
    /// returns how many. Local directories keep such temporary files (never listed, never
    /// read); object stores discard unfinished uploads themselves (abort-incomplete-multipart
    /// lifecycle rules, expiring resumable sessions), so the default does nothing.
    fn remove_abandoned(&self, _older_than: std::time::Duration) -> Result<u64, StorageError> {
        Ok(0)
    }
}

/// A reader of exactly `length` bytes of `inner`: stops there, and fails if `inner` ends first
/// (a range past an object's end, a truncated response).
pub(crate) struct ExactLength<R> {
    inner: R,
    remaining: u64,
    length: u64,
}

impl<R: Read> ExactLength<R> {
    pub(crate) fn new(inner: R, length: u64) -> Self {
        ExactLength {
            inner,
            remaining: length,
            length,
        }
    }
}

impl<R: Read> Read for ExactLength<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let wanted = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..wanted])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the range ended after {} of {} bytes",
                    self.length - self.remaining,
                    self.length
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Keys are relative, `/`-separated, without empty, `.` or `..` parts and without parts that
/// start with a dot (those names are reserved for in-flight temporary files).
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let valid = !key.is_empty()
        && key.len() <= 1024
        && key
            .split('/')
            .all(|part| !part.is_empty() && !part.starts_with('.') && !part.contains('\0'));
    if valid {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in ["repository.json", "wal/0000000100000000/x-y.zst"] {
            validate_key(good).unwrap();
        }
        for bad in ["", "/abs", "a//b", "../x", "a/./b", "a/.tmp", "trailing/"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refusal_names_the_credentials_of_the_store_that_refused() {
        let denied = |backend| StorageError::Denied {
            store: "store".into(),
            backend,
            reason: "HTTP 403".into(),
        };
        let gcs = denied(ObjectStore::Gcs).hint().unwrap();
        assert!(
            gcs.contains("sc_backup.gcs_credentials") && !gcs.contains("s3"),
            "{gcs}"
        );
        let s3 = denied(ObjectStore::S3).hint().unwrap();
        assert!(s3.contains("sc_backup.s3_access_key_id"), "{s3}");
    }

    /// An outage keeps what went wrong as a chain of causes down to the socket's error, and
    /// still prints as one line.
    #[test]
    fn an_unreachable_store_keeps_the_transport_error_as_the_cause() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let storage = S3Storage::new(S3Config {
            bucket: "b".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            path_style: true,
            access_key_id: "id".into(),
            secret_access_key: crate::config::Secret::new(String::from("secret")),
            session_token: None,
            part_size: 5 << 20,
            max_attempts: 2,
            request_timeout: std::time::Duration::from_secs(5),
        })
        .unwrap();
        let error = storage.list("wal/").unwrap_err();
        assert!(error.is_transient(), "{error}");
        let text = error.to_string();
        assert!(text.contains("gave up after 2 attempts"), "{text}");
        let mut causes = Vec::new();
        let mut cause = std::error::Error::source(&error);
        while let Some(inner) = cause {
            causes.push(inner);
            cause = inner.source();
        }
        assert!(
            matches!(
                causes.first().and_then(|c| c.downcast_ref::<RemoteCause>()),
                Some(RemoteCause::GaveUp { attempts: 2, .. })
            ),
            "{causes:?}"
        );
        assert!(
            causes
                .iter()
                .any(|c| c.downcast_ref::<reqwest::Error>().is_some()),
            "the transport error is not kept: {causes:?}"
        );
    }
}
