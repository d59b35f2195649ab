//! Google Cloud Storage through its JSON API.
//!
//! Credentials are a service account's JSON key (`GOOGLE_APPLICATION_CREDENTIALS` or
//! `sc_backup.gcs_credentials`): a JWT signed with its private key (RS256, `jsonwebtoken`) is
//! exchanged at its `token_uri` for an access token (the OAuth 2.0 JWT bearer flow), cached
//! until shortly before it expires. An endpoint override serves emulators.
//!
//! Objects up to one chunk go in one `uploadType=media` request; larger ones in a resumable
//! upload, one chunk in memory at a time, cancelled if the writer is dropped uncommitted.
//! Both carry `ifGenerationMatch=0`, GCS's atomic "create only if absent", and the MD5 the
//! server computed over what it stored is compared with ours before success is reported.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use md5::{Digest as _, Md5};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::http::{
    byte_range, client, is_transient, require_partial_content, with_retries, with_retries_noting,
    Attempt, LengthCheckedBody,
};
use super::{
    validate_key, ExactLength, ObjectMeta, ObjectWriter, RemoteCause, Storage, StorageError,
};
use crate::config::Secret;

const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Resumable chunks must be multiples of 256 KiB.
const CHUNK_QUANTUM: usize = 256 << 10;

pub use crate::config::{GcsConfig, ServiceAccount};

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

pub struct GcsStorage {
    config: GcsConfig,
    client: Client,
    /// Access token and when to stop using it.
    token: Mutex<Option<(Secret, Instant)>>,
}

impl fmt::Debug for GcsStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GcsStorage({:?})", self.config)
    }
}

fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn md5_base64(digest: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}

#[derive(Deserialize)]
struct ObjectResource {
    name: String,
    #[serde(default)]
    size: Option<String>,
    #[serde(default, rename = "md5Hash")]
    md5_hash: Option<String>,
}

#[derive(Deserialize)]
struct ListResponse {
    #[serde(default)]
    items: Vec<ObjectResource>,
    #[serde(default, rename = "nextPageToken")]
    next_page_token: Option<String>,
}

impl GcsStorage {
    pub fn new(mut config: GcsConfig) -> Result<Self, StorageError> {
        config.chunk_size = (config.chunk_size / CHUNK_QUANTUM).max(1) * CHUNK_QUANTUM;
        let client = client(config.request_timeout).map_err(|e| StorageError::Io {
            action: "create an HTTP client for",
            path: format!("gs://{}", config.bucket),
            source: io::Error::other(e),
        })?;
        Ok(GcsStorage {
            config,
            client,
            token: Mutex::new(None),
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.config.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.config.prefix)
        }
    }

    fn endpoint(&self) -> &str {
        self.config.endpoint.trim_end_matches('/')
    }

    /// The retries ran out: the store (or its token endpoint) is unreachable or overloaded.
    fn unavailable_error(&self, operation: &str, key: &str, reason: RemoteCause) -> StorageError {
        StorageError::Unavailable {
            store: self.describe(),
            operation: operation.to_string(),
            key: key.to_string(),
            reason,
        }
    }

    fn remote_error(&self, operation: &str, key: &str, reason: RemoteCause) -> StorageError {
        StorageError::Remote {
            store: self.describe(),
            operation: operation.to_string(),
            key: key.to_string(),
            reason,
        }
    }

    /// A valid access token: cached, or obtained with a freshly signed JWT.
    fn access_token(&self) -> Result<Option<Secret>, StorageError> {
        let Some(account) = &self.config.credentials else {
            return Ok(None);
        };
        let mut cached = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, valid_until)) = cached.as_ref() {
            if Instant::now() < *valid_until {
                return Ok(Some(token.clone()));
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            iss: &account.client_email,
            scope: SCOPE,
            aud: &account.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let denied = |reason: String| StorageError::Denied {
            store: self.describe(),
            backend: super::ObjectStore::Gcs,
            reason,
        };
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key_pem.expose().as_bytes())
                .map_err(|_| {
                    denied(format!(
                        "the private key of {} is not a valid RSA PEM key",
                        account.client_email
                    ))
                })?;
        let assertion = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .map_err(|e| denied(format!("could not sign the token request: {e}")))?;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ];
        let outcome = with_retries(self.config.max_attempts, || {
            match self.client.post(&account.token_uri).form(&form).send() {
                Err(e) => Attempt::Transient(RemoteCause::Transport(e)),
                Ok(response) if is_transient(response.status()) => {
                    Attempt::Transient(RemoteCause::Status {
                        status: response.status(),
                        detail: String::new(),
                    })
                }
                Ok(response) => Attempt::Done(response),
            }
        })
        .map_err(|reason| {
            self.unavailable_error("get an access token for", &account.client_email, reason)
        })?;
        if !outcome.status().is_success() {
            let status = outcome.status();
            let body = outcome.text().unwrap_or_default();
            let error = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_default();
            return Err(denied(format!(
                "the token endpoint refused service account {} (HTTP {status} {error})",
                account.client_email
            )));
        }
        let token: TokenResponse = outcome.json().map_err(|e| {
            self.remote_error(
                "get an access token for",
                &account.client_email,
                RemoteCause::Transport(e),
            )
        })?;
        let lifetime =
            Duration::from_secs(token.expires_in.unwrap_or(3600).saturating_sub(60).max(1));
        let token = Secret::new(token.access_token);
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(Some(token))
    }

    /// Sends a request built by `build`, authorized, retrying transient failures.
    fn send(
        &self,
        operation: &str,
        key: &str,
        build: &dyn Fn(&Client) -> RequestBuilder,
        accept: &dyn Fn(StatusCode) -> bool,
    ) -> Result<Response, StorageError> {
        self.send_noting(operation, key, build, accept).0
    }

    /// [`send`](GcsStorage::send), also telling whether an attempt went unanswered before the
    /// outcome (see [`with_retries_noting`]).
    fn send_noting(
        &self,
        operation: &str,
        key: &str,
        build: &dyn Fn(&Client) -> RequestBuilder,
        accept: &dyn Fn(StatusCode) -> bool,
    ) -> (Result<Response, StorageError>, bool) {
        let token = match self.access_token() {
            Ok(token) => token,
            Err(e) => return (Err(e), false),
        };
        let (outcome, unanswered) = with_retries_noting(self.config.max_attempts, || {
            let mut request = build(&self.client);
            if let Some(token) = &token {
                request = request.bearer_auth(token.expose());
            }
            match request.send() {
                Err(e) => Attempt::Transient(RemoteCause::Transport(e)),
                Ok(response) if accept(response.status()) => Attempt::Done(Ok(response)),
                Ok(response) if is_transient(response.status()) => {
                    Attempt::Transient(RemoteCause::Status {
                        status: response.status(),
                        detail: String::new(),
                    })
                }
                Ok(response) => Attempt::Done(Err(self.classify(response, operation, key))),
            }
        });
        let result =
            outcome.unwrap_or_else(|reason| Err(self.unavailable_error(operation, key, reason)));
        (result, unanswered)
    }

    /// After a conditional write that was retried and then refused: whether the object now
    /// under `key` is the one this writer sent (MD5 `ours`, which GCS records for every object),
    /// its first attempt having succeeded with the answer lost.
    fn confirm_own_write(
        &self,
        full_key: &str,
        key: &str,
        ours: &[u8],
        refusal: StorageError,
    ) -> Result<(), StorageError> {
        let url = format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint(),
            url_encode(&self.config.bucket),
            url_encode(full_key)
        );
        let response = match self.send("read back", key, &|client| client.get(&url), &|status| {
            status.is_success()
        }) {
            Ok(response) => response,
            Err(StorageError::NotFound { .. }) => return Err(refusal),
            Err(e) => return Err(e),
        };
        match self.check_md5(response, key, ours) {
            Ok(()) => Ok(()),
            // Another object: the key was taken before us.
            Err(StorageError::Remote { .. }) => Err(StorageError::AlreadyExists {
                store: self.describe(),
                key: key.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    fn classify(&self, response: Response, operation: &str, key: &str) -> StorageError {
        let status = response.status();
        let body = response.text().unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let reason = RemoteCause::Status {
            status,
            detail: message,
        };
        match status {
            StatusCode::NOT_FOUND => StorageError::NotFound {
                store: self.describe(),
                key: key.to_string(),
            },
            StatusCode::PRECONDITION_FAILED => StorageError::AlreadyExists {
                store: self.describe(),
                key: key.to_string(),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StorageError::Denied {
                store: self.describe(),
                backend: super::ObjectStore::Gcs,
                reason: reason.to_string(),
            },
            _ => self.remote_error(operation, key, reason),
        }
    }

    fn exists(&self, full_key: &str, key: &str) -> Result<bool, StorageError> {
        let url = format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint(),
            url_encode(&self.config.bucket),
            url_encode(full_key)
        );
        match self.send("check", key, &|client| client.get(&url), &|status| {
            status.is_success()
        }) {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Checks the server's MD5 of what it stored against ours.
    fn check_md5(&self, response: Response, key: &str, ours: &[u8]) -> Result<(), StorageError> {
        let resource: ObjectResource = response.json().map_err(|e| {
            self.remote_error(
                "store",
                key,
                RemoteCause::Answer(format!(
                    "unreadable response: {}",
                    RemoteCause::Transport(e)
                )),
            )
        })?;
        match resource.md5_hash {
            Some(theirs) if theirs == md5_base64(ours) => Ok(()),
            Some(theirs) => Err(self.remote_error(
                "store",
                key,
                RemoteCause::Answer(format!(
                    "the stored object's MD5 {theirs} differs from the uploaded data's {}",
                    md5_base64(ours)
                )),
            )),
            None => Err(self.remote_error(
                "store",
                key,
                RemoteCause::Answer("the server reported no MD5 for the stored object".into()),
            )),
        }
    }
}

struct GcsObjectWriter<'s> {
    storage: &'s GcsStorage,
    key: String,
    full_key: String,
    buffer: Vec<u8>,
    /// Resumable session URI, once the object outgrew one chunk.
    session: Option<String>,
    uploaded: u64,
    md5: Md5,
    committed: bool,
    /// Look before committing (see [`Storage::create_unique`]).
    check_exists: bool,
    /// Whether an attempt at the session's last chunk went unanswered.
    last_chunk_unanswered: bool,
}

impl GcsObjectWriter<'_> {
    fn start_session(&mut self) -> Result<String, StorageError> {
        let storage = self.storage;
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=resumable&ifGenerationMatch=0&name={}",
            storage.endpoint(),
            url_encode(&storage.config.bucket),
            url_encode(&self.full_key)
        );
        let response = storage.send(
            "start an upload of",
            &self.key,
            &|client| {
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{}")
            },
            &|status| status.is_success(),
        )?;
        response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                storage.remote_error(
                    "start an upload of",
                    &self.key,
                    RemoteCause::Answer("no session URI in the response".into()),
                )
            })
    }

    /// Sends the buffered chunk; `last` with the total size.
    fn send_chunk(&mut self, last: bool) -> Result<Option<Response>, StorageError> {
        let session = match &self.session {
            Some(session) => session.clone(),
            None => {
                let session = self.start_session()?;
                self.session = Some(session.clone());
                session
            }
        };
        let start = self.uploaded;
        let length = self.buffer.len() as u64;
        let range = match (last, length) {
            (true, 0) => format!("bytes */{start}"),
            (true, _) => format!("bytes {start}-{}/{}", start + length - 1, start + length),
            (false, _) => format!("bytes {start}-{}/*", start + length - 1),
        };
        let body = std::mem::take(&mut self.buffer);
        let (response, unanswered) = self.storage.send_noting(
            "upload a chunk of",
            &self.key,
            &|client| {
                client
                    .put(&session)
                    .header("content-range", &range)
                    .body(body.clone())
            },
            // 308 Resume Incomplete: the chunk is stored, more is expected.
            &|status| status.is_success() || status.as_u16() == 308,
        );
        self.last_chunk_unanswered = last && unanswered;
        let response = response?;
        self.uploaded += length;
        Ok(last.then_some(response))
    }

    fn cancel(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = self.storage.client.delete(&session).send();
        }
    }
}

impl Write for GcsObjectWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.storage.config.chunk_size - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        self.md5.update(&buf[..n]);
        if self.buffer.len() == self.storage.config.chunk_size {
            self.send_chunk(false).map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for GcsObjectWriter<'_> {
    fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        let storage = self.storage;
        // ifGenerationMatch=0 below makes this atomic on GCS; emulators may ignore it, so
        // look first as well.
        if self.check_exists && storage.exists(&self.full_key, &self.key)? {
            self.cancel();
            self.committed = true;
            return Err(StorageError::AlreadyExists {
                store: storage.describe(),
                key: self.key.clone(),
            });
        }
        let md5 = std::mem::take(&mut self.md5).finalize();
        let response = if self.session.is_none() {
            let url = format!(
                "{}/upload/storage/v1/b/{}/o?uploadType=media&ifGenerationMatch=0&name={}",
                storage.endpoint(),
                url_encode(&storage.config.bucket),
                url_encode(&self.full_key)
            );
            let body = std::mem::take(&mut self.buffer);
            let (stored, unanswered) = storage.send_noting(
                "store",
                &self.key,
                &|client| {
                    client
                        .post(&url)
                        .header("content-type", "application/octet-stream")
                        .body(body.clone())
                },
                &|status| status.is_success(),
            );
            match stored {
                Ok(response) => response,
                // Refused after an attempt whose answer never came: perhaps our own object.
                Err(refusal) if unanswered && !refusal.is_transient() => {
                    self.committed = true;
                    return storage.confirm_own_write(&self.full_key, &self.key, &md5, refusal);
                }
                Err(e) => return Err(e),
            }
        } else {
            match self.send_chunk(true) {
                Ok(response) => response.expect("the last chunk returns the object"),
                // The session's last chunk, retried after its answer was lost, may meet the
                // object it completed.
                Err(refusal) if self.last_chunk_unanswered && !refusal.is_transient() => {
                    self.session = None;
                    self.committed = true;
                    return storage.confirm_own_write(&self.full_key, &self.key, &md5, refusal);
                }
                Err(e) => return Err(e),
            }
        };
        self.session = None;
        self.committed = true;
        storage.check_md5(response, &self.key, &md5)
    }
}

impl Drop for GcsObjectWriter<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.cancel();
        }
    }
}

impl GcsStorage {
    fn writer(&self, key: &str, check_exists: bool) -> Result<GcsObjectWriter<'_>, StorageError> {
        validate_key(key)?;
        Ok(GcsObjectWriter {
            storage: self,
            key: key.to_string(),
            full_key: self.full_key(key),
            buffer: Vec::new(),
            session: None,
            uploaded: 0,
            md5: Md5::new(),
            committed: false,
            check_exists,
            last_chunk_unanswered: false,
        })
    }
}

impl GcsStorage {
    /// The URL that downloads object `key`'s content.
    fn media_url(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}?alt=media",
            self.endpoint(),
            url_encode(&self.config.bucket),
            url_encode(&self.full_key(key))
        )
    }
}

impl Storage for GcsStorage {
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter + '_>, StorageError> {
        Ok(Box::new(self.writer(key, true)?))
    }

    fn create_unique(&self, key: &str) -> Result<Box<dyn ObjectWriter + '_>, StorageError> {
        Ok(Box::new(self.writer(key, false)?))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        validate_key(key)?;
        let url = self.media_url(key);
        let response = self.send("read", key, &|client| client.get(&url), &|status| {
            status.is_success()
        })?;
        Ok(Box::new(LengthCheckedBody::new(response)))
    }

    fn open_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        validate_key(key)?;
        if length == 0 {
            return Ok(Box::new(io::empty()));
        }
        let url = self.media_url(key);
        let range = byte_range(offset, length);
        let response = self.send(
            "read",
            key,
            &|client| client.get(&url).header("range", &range),
            &|status| status.is_success(),
        )?;
        let response = require_partial_content(response, &self.describe(), key)?;
        Ok(Box::new(ExactLength::new(
            LengthCheckedBody::new(response),
            length,
        )))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let full_prefix = self.full_key(prefix);
        let strip = if self.config.prefix.is_empty() {
            0
        } else {
            self.config.prefix.len() + 1
        };
        let mut found = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/storage/v1/b/{}/o?prefix={}&maxResults=1000",
                self.endpoint(),
                url_encode(&self.config.bucket),
                url_encode(&full_prefix)
            );
            if let Some(token) = &page_token {
                url.push_str(&format!("&pageToken={}", url_encode(token)));
            }
            let response = self.send("list", prefix, &|client| client.get(&url), &|status| {
                status.is_success()
            })?;
            let page: ListResponse = response
                .json()
                .map_err(|e| self.remote_error("list", prefix, RemoteCause::Transport(e)))?;
            for item in page.items {
                if item.name.starts_with(&full_prefix) && item.name.len() > strip {
                    found.push(ObjectMeta {
                        key: item.name[strip..].to_string(),
                        size: item
                            .size
                            .as_deref()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                    });
                }
            }
            match page.next_page_token {
                Some(token) if !token.is_empty() => page_token = Some(token),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        let url = format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint(),
            url_encode(&self.config.bucket),
            url_encode(&self.full_key(key))
        );
        match self.send("delete", key, &|client| client.delete(&url), &|status| {
            status.is_success()
        }) {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn describe(&self) -> String {
        if self.config.prefix.is_empty() {
            format!("gs://{}", self.config.bucket)
        } else {
            format!("gs://{}/{}", self.config.bucket, self.config.prefix)
        }
    }

    fn atomic_create(&self) -> bool {
        // ifGenerationMatch=0 is atomic on GCS itself; an emulator may only check it.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_is_a_multiple_of_the_quantum() {
        assert_eq!(GcsConfig::DEFAULT_CHUNK_SIZE % CHUNK_QUANTUM, 0);
    }

    #[test]
    fn key_file_errors_do_not_quote_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        std::fs::write(
            &path,
            "{\"private_key\": \"-----BEGIN PRIVATE KEY-----SECRETSTUFF",
        )
        .unwrap();
        let err = ServiceAccount::from_file(&path).err().unwrap();
        assert!(err.contains("invalid JSON"), "{err}");
        assert!(!err.contains("SECRETSTUFF"), "{err}");
    }
}
