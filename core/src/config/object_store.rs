//! How to reach an object store: the settings the S3 and GCS clients are built from, and the
//! service account key file they sign with. Data only; the clients live in `storage`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;

/// How to reach one bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    pub region: String,
    /// `https://host[:port]`; `None` for AWS (`https://s3.<region>.amazonaws.com`).
    pub endpoint: Option<String>,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key`.
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// Objects larger than this are uploaded in parts of this size (S3's minimum is 5 MiB).
    pub part_size: usize,
    pub max_attempts: u32,
    pub request_timeout: Duration,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials stay out of logs: only the access key id's first characters.
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field(
                "access_key_id",
                &format!(
                    "{}…",
                    self.access_key_id.chars().take(4).collect::<String>()
                ),
            )
            .finish()
    }
}

impl S3Config {
    pub const DEFAULT_PART_SIZE: usize = 16 << 20;
}

/// A service account key, as Google's JSON key files hold it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_pem: Secret,
    pub token_uri: String,
    /// The key file it was read from: a process we start (a sandbox's restore_command) is
    /// pointed at the file, never handed the key.
    pub file: std::path::PathBuf,
}

#[derive(Deserialize)]
struct ServiceAccountFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Reads a JSON key file (never printing its content in errors).
    pub fn from_file(path: &std::path::Path) -> Result<ServiceAccount, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("could not read \"{}\": {e}", path.display()))?;
        let file: ServiceAccountFile = serde_json::from_str(&text).map_err(|e| {
            format!(
                "\"{}\" is not a service account key file: {}",
                path.display(),
                e.classify_text()
            )
        })?;
        Ok(ServiceAccount {
            client_email: file.client_email,
            private_key_pem: Secret::new(file.private_key),
            token_uri: file
                .token_uri
                .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into()),
            file: path.to_path_buf(),
        })
    }
}

trait ClassifyText {
    fn classify_text(&self) -> &'static str;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> &'static str {
        // Positions and snippets of the file could show key material: say only what kind.
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "invalid JSON"
            }
            serde_json::error::Category::Data => "missing client_email or private_key",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct GcsConfig {
    pub bucket: String,
    pub prefix: String,
    /// `https://storage.googleapis.com`, or an emulator's URL.
    pub endpoint: String,
    /// `None`: no Authorization header (emulators only).
    pub credentials: Option<ServiceAccount>,
    pub chunk_size: usize,
    pub max_attempts: u32,
    pub request_timeout: Duration,
}

impl GcsConfig {
    pub const DEFAULT_CHUNK_SIZE: usize = 16 << 20;
}

impl fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsConfig")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field(
                "service_account",
                &self.credentials.as_ref().map(|c| c.client_email.clone()),
            )
            .finish()
    }
}
