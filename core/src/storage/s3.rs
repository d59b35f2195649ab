//! S3 and S3-compatible object stores (MinIO, Ceph, R2, s3s).
//!
//! Requests are signed with SigV4 (`aws-sigv4`, no hand-rolled signing) over a blocking
//! `reqwest` client. Objects up to one part are sent with a single PUT; larger ones are
//! streamed as a multipart upload, one part in memory at a time, aborted if the writer is
//! dropped without committing, so no orphan parts remain. Every PUT carries `Content-MD5` and
//! the signed SHA-256 of its payload, which the server checks; a response is success only
//! when the server says so for the whole object. Transient failures (connection errors,
//! timeouts, 5xx, throttling) are retried with exponential backoff and jitter.
//!
//! "Never replace an object" is a HEAD before the PUT plus `If-None-Match: *`, which stores
//! that support conditional writes enforce atomically. Keys only one writer uses (a backup's
//! objects, WAL named by its digest: `create_unique`) skip the HEAD, a round trip per object.

use std::io::{self, Read, Write};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use md5::{Digest as _, Md5};
use reqwest::blocking::{Client, Response};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::Sha256;

use super::http::{
    byte_range, client, is_transient, require_partial_content, with_retries_noting, Attempt,
    LengthCheckedBody,
};
use super::{
    validate_key, ExactLength, ObjectMeta, ObjectWriter, RemoteCause, Storage, StorageError,
};

pub use crate::config::S3Config;

#[derive(Debug)]
pub struct S3Storage {
    config: S3Config,
    client: Client,
}

/// Why a request failed, before retries are decided.
enum Failure {
    /// Worth another attempt: connection trouble, timeouts, 5xx, throttling.
    Transient(RemoteCause),
    /// Final: the server answered with a client error.
    Final(StorageError),
}

impl S3Storage {
    pub fn new(config: S3Config) -> Result<Self, StorageError> {
        let client = client(config.request_timeout).map_err(|e| StorageError::Io {
            action: "create an HTTP client for",
            path: format!("s3://{}", config.bucket),
            source: io::Error::other(e),
        })?;
        Ok(S3Storage { config, client })
    }

    fn full_key(&self, key: &str) -> String {
        if self.config.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.config.prefix)
        }
    }

    /// URL of the bucket (no trailing slash) in the configured addressing style.
    fn bucket_url(&self) -> String {
        let endpoint = self
            .config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.config.region));
        let endpoint = endpoint.trim_end_matches('/');
        if self.config.path_style {
            format!("{endpoint}/{}", self.config.bucket)
        } else {
            let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", endpoint));
            format!("{scheme}://{}.{host}", self.config.bucket)
        }
    }

    fn object_url(&self, full_key: &str, query: &str) -> String {
        let encoded: Vec<String> = full_key
            .split('/')
            .map(|part| uri_encode(part, true))
            .collect();
        let mut url = format!("{}/{}", self.bucket_url(), encoded.join("/"));
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// Sends one signed request, retrying transient failures. `body` is resent as is.
    fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
        operation: &str,
        key: &str,
    ) -> Result<Response, StorageError> {
        self.request_noting(method, url, headers, body, operation, key)
            .0
    }

    /// [`request`](S3Storage::request), also telling whether an attempt went unanswered
    /// before the outcome (see [`with_retries_noting`]).
    fn request_noting(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
        operation: &str,
        key: &str,
    ) -> (Result<Response, StorageError>, bool) {
        let (outcome, unanswered) = with_retries_noting(self.config.max_attempts, || {
            match self.try_request(&method, url, headers, body) {
                Err(reason) => Attempt::Transient(reason),
                Ok(response)
                    if response.status().is_success()
                        || response.status() == StatusCode::NOT_MODIFIED =>
                {
                    Attempt::Done(Ok(response))
                }
                Ok(response) => match self.classify(response, operation, key) {
                    Failure::Transient(reason) => Attempt::Transient(reason),
                    Failure::Final(error) => Attempt::Done(Err(error)),
                },
            }
        });
        let result = outcome.unwrap_or_else(|reason| {
            Err(StorageError::Unavailable {
                store: self.describe(),
                operation: operation.to_string(),
                key: key.to_string(),
                reason,
            })
        });
        (result, unanswered)
    }

    /// After a conditional write that was retried and then refused: whether the object now
    /// under `key` is the one this writer sent (its SHA-256 is `ours`), its first attempt having
    /// succeeded with the answer lost. Read back and compared, since an answer that never came
    /// says nothing either way.
    /// Servers word that refusal differently (412 for an existing key; for a completed upload
    /// AWS says 404 NoSuchUpload, s3s 403): whatever it was, the object decides. Ours: success.
    /// Another: [`StorageError::AlreadyExists`]. None: the refusal itself.
    fn confirm_own_write(
        &self,
        key: &str,
        ours: &[u8; 32],
        refusal: StorageError,
    ) -> Result<(), StorageError> {
        let mut stored = match self.open(key) {
            Ok(stored) => stored,
            Err(StorageError::NotFound { .. }) => return Err(refusal),
            Err(e) => return Err(e),
        };
        let mut digest = Sha256::new();
        io::copy(&mut stored, &mut digest).map_err(|e| StorageError::Unavailable {
            store: self.describe(),
            operation: "read back".into(),
            key: key.to_string(),
            reason: RemoteCause::Read(e),
        })?;
        if digest.finalize().as_slice() == ours {
            Ok(())
        } else {
            Err(StorageError::AlreadyExists {
                store: self.describe(),
                key: key.to_string(),
            })
        }
    }

    fn try_request(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response, RemoteCause> {
        let mut settings = SigningSettings::default();
        // S3 signs the path as sent (no double encoding, no normalization) and wants the
        // payload hash in x-amz-content-sha256.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity: Identity = Credentials::new(
            self.config.access_key_id.clone(),
            self.config.secret_access_key.expose().to_string(),
            self.config
                .session_token
                .as_ref()
                .map(|t| t.expose().to_string()),
            None,
            "sc_backup",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.config.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| RemoteCause::Signing(e.into()))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            url,
            headers.iter().map(|(n, v)| (*n, v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| RemoteCause::Signing(e.into()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| RemoteCause::Signing(e.into()))?
            .into_parts();
        let mut request = self.client.request(method.clone(), url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        request
            .body(body.to_vec())
            .send()
            .map_err(RemoteCause::Transport)
    }

    fn classify(&self, response: Response, operation: &str, key: &str) -> Failure {
        let status = response.status();
        let body = response.text().unwrap_or_default();
        let ErrorDocument { code, message } = ErrorDocument::parse(&body);
        // 409 ConditionalRequestConflict: a concurrent conditional write to the key was in
        // flight; S3 says to retry, and the retry learns who won.
        let transient = is_transient(status)
            || code == "SlowDown"
            || code == "RequestTimeout"
            || code == "ConditionalRequestConflict";
        let not_found =
            status == StatusCode::NOT_FOUND && matches!(code.as_str(), "NoSuchKey" | "");
        let reason = RemoteCause::Status {
            status,
            detail: if code.is_empty() {
                String::new()
            } else {
                format!("{code}: {message}")
            },
        };
        if transient {
            return Failure::Transient(reason);
        }
        Failure::Final(match status {
            _ if not_found => StorageError::NotFound {
                store: self.describe(),
                key: key.to_string(),
            },
            StatusCode::PRECONDITION_FAILED => StorageError::AlreadyExists {
                store: self.describe(),
                key: key.to_string(),
            },
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => StorageError::Denied {
                store: self.describe(),
                backend: super::ObjectStore::S3,
                reason: reason.to_string(),
            },
            _ => StorageError::Remote {
                store: self.describe(),
                operation: operation.to_string(),
                key: key.to_string(),
                reason,
            },
        })
    }

    fn exists(&self, full_key: &str, key: &str) -> Result<bool, StorageError> {
        match self.request(
            Method::HEAD,
            &self.object_url(full_key, ""),
            &[],
            &[],
            "check",
            key,
        ) {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// S3's error document (`<Error><Code>…</Code><Message>…</Message></Error>`), which may
/// also come with a 200 answer to CompleteMultipartUpload.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorDocument {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl ErrorDocument {
    /// The error `body` describes; empty fields when it is no S3 error document (a proxy's
    /// HTML page, say).
    fn parse(body: &str) -> ErrorDocument {
        parse_document(body, "Error").unwrap_or_default()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitiateMultipartUploadResult {
    upload_id: String,
}

/// The name of a document's root element, `None` when it has none (not XML, or empty).
fn root_element(body: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(body);
    loop {
        match reader.read_event().ok()? {
            quick_xml::events::Event::Start(tag) | quick_xml::events::Event::Empty(tag) => {
                return Some(String::from_utf8_lossy(tag.local_name().as_ref()).into_owned())
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

/// Parses S3's answer `body` as the document `root` (the serde reader alone would take any
/// root element, a proxy's HTML page included, for an empty one).
fn parse_document<T: serde::de::DeserializeOwned>(body: &str, root: &str) -> Result<T, String> {
    match root_element(body) {
        Some(found) if found == root => quick_xml::de::from_str(body).map_err(|e| e.to_string()),
        Some(found) => Err(format!("a <{found}> document instead of <{root}>")),
        None => Err(format!("no XML document instead of <{root}>")),
    }
}

/// One page of ListObjectsV2.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    contents: Vec<ListedObject>,
    #[serde(default)]
    is_truncated: bool,
    next_continuation_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedObject {
    key: String,
    size: u64,
}

/// RFC 3986 encoding as SigV4 expects (`/` kept in paths when `keep_slash`).
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(body))
}

struct S3ObjectWriter<'s> {
    storage: &'s S3Storage,
    key: String,
    full_key: String,
    buffer: Vec<u8>,
    upload_id: Option<String>,
    /// (part number, ETag)
    parts: Vec<(u32, String)>,
    committed: bool,
    /// HEAD before committing (see [`Storage::create_unique`]).
    check_exists: bool,
    /// Of everything written: what a read-back after a lost answer is compared with.
    sha256: Sha256,
}

impl S3ObjectWriter<'_> {
    fn upload_part(&mut self) -> Result<(), StorageError> {
        let storage = self.storage;
        if self.upload_id.is_none() {
            let response = storage.request(
                Method::POST,
                &storage.object_url(&self.full_key, "uploads="),
                &[],
                &[],
                "start a multipart upload of",
                &self.key,
            )?;
            let body = response.text().unwrap_or_default();
            let started: InitiateMultipartUploadResult =
                parse_document(&body, "InitiateMultipartUploadResult").map_err(|reason| {
                    StorageError::Remote {
                        store: storage.describe(),
                        operation: "start a multipart upload of".into(),
                        key: self.key.clone(),
                        reason: RemoteCause::Answer(format!("unexpected answer: {reason}")),
                    }
                })?;
            self.upload_id = Some(started.upload_id);
        }
        let number = self.parts.len() as u32 + 1;
        let query = format!(
            "partNumber={number}&uploadId={}",
            uri_encode(self.upload_id.as_deref().expect("started above"), false)
        );
        let headers = [("content-md5", content_md5(&self.buffer))];
        let response = storage.request(
            Method::PUT,
            &storage.object_url(&self.full_key, &query),
            &headers,
            &self.buffer,
            "upload a part of",
            &self.key,
        )?;
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.parts.push((number, etag));
        self.buffer.clear();
        Ok(())
    }

    fn abort(&mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            let query = format!("uploadId={}", uri_encode(&upload_id, false));
            let _ = self.storage.request(
                Method::DELETE,
                &self.storage.object_url(&self.full_key, &query),
                &[],
                &[],
                "abort the upload of",
                &self.key,
            );
        }
    }
}

impl Write for S3ObjectWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.storage.config.part_size - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        self.sha256.update(&buf[..n]);
        if self.buffer.len() == self.storage.config.part_size {
            self.upload_part().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3ObjectWriter<'_> {
    fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        let storage = self.storage;
        if self.check_exists && storage.exists(&self.full_key, &self.key)? {
            self.abort();
            self.committed = true;
            return Err(StorageError::AlreadyExists {
                store: storage.describe(),
                key: self.key.clone(),
            });
        }
        let ours: [u8; 32] = std::mem::take(&mut self.sha256).finalize().into();
        if self.upload_id.is_none() {
            let headers = [
                ("content-md5", content_md5(&self.buffer)),
                ("if-none-match", "*".to_string()),
            ];
            let (stored, unanswered) = storage.request_noting(
                Method::PUT,
                &storage.object_url(&self.full_key, ""),
                &headers,
                &self.buffer,
                "store",
                &self.key,
            );
            self.committed = true;
            return match stored {
                Ok(_) => Ok(()),
                // Refused after an attempt whose answer never came: perhaps our own object.
                Err(refusal) if unanswered && !refusal.is_transient() => {
                    storage.confirm_own_write(&self.key, &ours, refusal)
                }
                Err(e) => Err(e),
            };
        }
        if !self.buffer.is_empty() {
            self.upload_part()?;
        }
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (number, etag) in &self.parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                quick_xml::escape::escape(etag.as_str())
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let query = format!(
            "uploadId={}",
            uri_encode(self.upload_id.as_deref().expect("started"), false)
        );
        let (completed, unanswered) = storage.request_noting(
            Method::POST,
            &storage.object_url(&self.full_key, &query),
            &[
                ("content-md5", content_md5(xml.as_bytes())),
                ("if-none-match", "*".to_string()),
            ],
            xml.as_bytes(),
            "complete the upload of",
            &self.key,
        );
        let response = match completed {
            Ok(response) => response,
            // A completion retried after its answer was lost meets the object it made, or an
            // upload that no longer exists.
            Err(refusal) if unanswered && !refusal.is_transient() => {
                self.upload_id = None;
                self.committed = true;
                return storage.confirm_own_write(&self.key, &ours, refusal);
            }
            Err(e) => return Err(e),
        };
        // S3 may answer 200 and still report an error in the body.
        let body = response.text().unwrap_or_default();
        if body.contains("<Error>") {
            let ErrorDocument { code, message } = ErrorDocument::parse(&body);
            let reason = RemoteCause::Answer(format!("{code}: {message}"));
            return Err(StorageError::Remote {
                store: storage.describe(),
                operation: "complete the upload of".into(),
                key: self.key.clone(),
                reason,
            });
        }
        self.upload_id = None;
        self.committed = true;
        Ok(())
    }
}

impl Drop for S3ObjectWriter<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.abort();
        }
    }
}

impl S3Storage {
    fn writer(&self, key: &str, check_exists: bool) -> Result<S3ObjectWriter<'_>, StorageError> {
        validate_key(key)?;
        Ok(S3ObjectWriter {
            storage: self,
            key: key.to_string(),
            full_key: self.full_key(key),
            buffer: Vec::new(),
            upload_id: None,
            parts: Vec::new(),
            committed: false,
            check_exists,
            sha256: Sha256::new(),
        })
    }
}

impl Storage for S3Storage {
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter + '_>, StorageError> {
        Ok(Box::new(self.writer(key, true)?))
    }

    fn create_unique(&self, key: &str) -> Result<Box<dyn ObjectWriter + '_>, StorageError> {
        Ok(Box::new(self.writer(key, false)?))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        validate_key(key)?;
        let response = self.request(
            Method::GET,
            &self.object_url(&self.full_key(key), ""),
            &[],
            &[],
            "read",
            key,
        )?;
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
        let response = self.request(
            Method::GET,
            &self.object_url(&self.full_key(key), ""),
            &[("range", byte_range(offset, length))],
            &[],
            "read",
            key,
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
        let mut token: Option<String> = None;
        loop {
            let mut query = format!("list-type=2&prefix={}", uri_encode(&full_prefix, false));
            if let Some(token) = &token {
                query = format!("continuation-token={}&{query}", uri_encode(token, false));
            }
            let url = format!("{}/?{query}", self.bucket_url());
            let body = self
                .request(Method::GET, &url, &[], &[], "list", prefix)?
                .text()
                .map_err(|e| StorageError::Unavailable {
                    store: self.describe(),
                    operation: "list".into(),
                    key: prefix.into(),
                    reason: RemoteCause::Transport(e),
                })?;
            // A body that is no listing (a proxy's page answered with 200, say) is an error,
            // never an empty repository.
            let page: ListBucketResult =
                parse_document(&body, "ListBucketResult").map_err(|reason| {
                    StorageError::Remote {
                        store: self.describe(),
                        operation: "list".into(),
                        key: prefix.into(),
                        reason: RemoteCause::Answer(format!("unexpected answer: {reason}")),
                    }
                })?;
            for object in page.contents {
                if object.key.len() >= strip && object.key.starts_with(&full_prefix) {
                    found.push(ObjectMeta {
                        key: object.key[strip..].to_string(),
                        size: object.size,
                    });
                }
            }
            match (page.is_truncated, page.next_continuation_token) {
                (true, Some(next)) => token = Some(next),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        match self.request(
            Method::DELETE,
            &self.object_url(&self.full_key(key), ""),
            &[],
            &[],
            "delete",
            key,
        ) {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn atomic_create(&self) -> bool {
        // AWS enforces If-None-Match atomically; S3-compatible servers may only check it.
        false
    }

    fn describe(&self) -> String {
        if self.config.prefix.is_empty() {
            format!("s3://{}", self.config.bucket)
        } else {
            format!("s3://{}/{}", self.config.bucket, self.config.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page_reads_keys_sizes_and_the_continuation() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount>
<Contents><Key>p/wal/a&amp;b</Key><LastModified>2026-12-06T10:00:00.000Z</LastModified><ETag>&quot;x&quot;</ETag><Size>16777216</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>p/backups/c</Key><Size>0</Size></Contents>
<IsTruncated>true</IsTruncated><NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken></ListBucketResult>"#;
        let page: ListBucketResult = parse_document(body, "ListBucketResult").unwrap();
        let listed: Vec<(&str, u64)> = page
            .contents
            .iter()
            .map(|o| (o.key.as_str(), o.size))
            .collect();
        assert_eq!(listed, [("p/wal/a&b", 16_777_216), ("p/backups/c", 0)]);
        assert!(page.is_truncated);
        assert_eq!(
            page.next_continuation_token.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
        let last: ListBucketResult = parse_document(
            "<ListBucketResult><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>",
            "ListBucketResult",
        )
        .unwrap();
        assert!(last.contents.is_empty() && !last.is_truncated);
    }

    #[test]
    fn an_answer_that_is_no_listing_is_refused_not_taken_for_an_empty_bucket() {
        for body in [
            "<html><body>502 Bad Gateway</body></html>",
            "",
            "<ListBucketResult><Contents><Key>k</Key><Size>many</Size></Contents></ListBucketResult>",
        ] {
            assert!(
                parse_document::<ListBucketResult>(body, "ListBucketResult").is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn error_documents_give_code_and_message() {
        let error = ErrorDocument::parse(
            "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Reduce your &lt;rate&gt;</Message><RequestId>1</RequestId></Error>",
        );
        assert_eq!(error.code, "SlowDown");
        assert_eq!(error.message, "Reduce your <rate>");
        assert_eq!(ErrorDocument::parse("<html>oops</html>").code, "");
    }
}
