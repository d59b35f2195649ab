//! The one configuration shared by archiving, backups, the scheduler and the CLI.
//!
//! The extension reads the values from its `sc_backup.*` GUCs, the CLI from flags, environment
//! variables and the cluster's configuration files; both hand the raw strings to
//! [`Settings::from_raw`], so validation and error messages are the same everywhere.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub mod calendar;
mod conf_line;
pub mod container_env;
mod object_store;
pub mod repositories;
pub mod schedule;
mod secrets;

pub use conf_line::parse_conf_line;
pub use object_store::{GcsConfig, S3Config, ServiceAccount};
pub use secrets::{read_secrets_file, without_secret_settings, SECRET_SETTINGS};

/// Names of the settings, as they appear in postgresql.conf.
pub mod names {
    pub const REPOSITORY: &str = "sc_backup.repository";
    pub const COMPRESSION: &str = "sc_backup.compression";
    pub const COMPRESSION_LEVEL: &str = "sc_backup.compression_level";
    pub const ENCRYPTION: &str = "sc_backup.encryption";
    pub const ENCRYPTION_PASSPHRASE: &str = "sc_backup.encryption_passphrase";
    pub const SECRETS_FILE: &str = "sc_backup.secrets_file";
    pub const S3_REGION: &str = "sc_backup.s3_region";
    pub const S3_ENDPOINT: &str = "sc_backup.s3_endpoint";
    pub const S3_URI_STYLE: &str = "sc_backup.s3_uri_style";
    pub const S3_ACCESS_KEY_ID: &str = "sc_backup.s3_access_key_id";
    pub const S3_SECRET_ACCESS_KEY: &str = "sc_backup.s3_secret_access_key";
    pub const GCS_ENDPOINT: &str = "sc_backup.gcs_endpoint";
    pub const GCS_CREDENTIALS: &str = "sc_backup.gcs_credentials";
    pub const RETENTION_DAYS: &str = "sc_backup.retention_days";
    pub const RETENTION_FULL: &str = "sc_backup.retention_full";
    pub const RETENTION_HOURLY_DAYS: &str = "sc_backup.retention_hourly_days";
    pub const RETENTION_DAILY_DAYS: &str = "sc_backup.retention_daily_days";
    pub const RETENTION_WEEKLY_DAYS: &str = "sc_backup.retention_weekly_days";
    // The scheduler's settings, read only by the extension's worker.
    pub const SCHEDULER: &str = "sc_backup.scheduler";
    pub const DATABASE: &str = "sc_backup.database";
    pub const HOURLY_INTERVAL: &str = "sc_backup.hourly_interval";
    pub const HOURLY_TYPE: &str = "sc_backup.hourly_type";
    pub const DAILY_TYPE: &str = "sc_backup.daily_type";
    pub const WEEKLY_TYPE: &str = "sc_backup.weekly_type";
    pub const SCHEDULE_TYPE: &str = "sc_backup.schedule_type";
    pub const DAILY_TIME: &str = "sc_backup.daily_time";
    pub const WEEKLY_DAY: &str = "sc_backup.weekly_day";
    pub const WEEKLY_TIME: &str = "sc_backup.weekly_time";
    pub const SCHEDULE: &str = "sc_backup.schedule";
    pub const RETRY_DELAY: &str = "sc_backup.retry_delay";
    pub const METRICS_LISTEN: &str = "sc_backup.metrics_listen";
    pub const VERIFY_SCHEDULE: &str = "sc_backup.verify_schedule";
    pub const VERIFY_DIRECTORY: &str = "sc_backup.verify_directory";
    pub const DUMP_SCHEDULE: &str = "sc_backup.dump_schedule";
    pub const DUMP_DATABASES: &str = "sc_backup.dump_databases";
    // Read only inside the server (backups and the archive module's workers).
    pub const BACKUP_PARALLELISM: &str = "sc_backup.backup_parallelism";
    pub const ARCHIVE_PARALLELISM: &str = "sc_backup.archive_parallelism";

    /// Every setting the CLI looks up in a cluster's configuration files.
    pub const ALL: &[&str] = &[
        REPOSITORY,
        SECRETS_FILE,
        COMPRESSION,
        COMPRESSION_LEVEL,
        ENCRYPTION,
        ENCRYPTION_PASSPHRASE,
        S3_REGION,
        S3_ENDPOINT,
        S3_URI_STYLE,
        S3_ACCESS_KEY_ID,
        S3_SECRET_ACCESS_KEY,
        GCS_ENDPOINT,
        GCS_CREDENTIALS,
        RETENTION_DAYS,
        RETENTION_FULL,
        RETENTION_HOURLY_DAYS,
        RETENTION_DAILY_DAYS,
        RETENTION_WEEKLY_DAYS,
    ];
}

/// The value each setting has when it is not set, wherever it is read (the server's settings
/// are declared with these, the CLI and the image fall back to them).
pub mod defaults {
    pub const COMPRESSION: &str = "zstd";
    /// 0: the algorithm's own default level.
    pub const COMPRESSION_LEVEL: i32 = 0;
    pub const ENCRYPTION: &str = "none";
    pub const S3_URI_STYLE: &str = "auto";
    pub const RETENTION_DAYS: u32 = 30;
    pub const RETENTION_FULL: u32 = 1;
    pub const BACKUP_PARALLELISM: u32 = 2;
    pub const ARCHIVE_PARALLELISM: u32 = 2;
    pub const SCHEDULER: bool = true;
    pub const DATABASE: &str = "postgres";
    pub const HOURLY_INTERVAL_SECONDS: u32 = 3600;
    pub const DAILY_TIME: &str = "02:00";
    pub const WEEKLY_TIME: &str = "02:00";
    /// What scheduled backups take unless told otherwise.
    pub const BACKUP_TYPE: &str = "full";
    pub const RETRY_DELAY_SECONDS: u32 = 60;
    pub const VERIFY_DIRECTORY: &str = "/var/tmp";
    /// Every database that accepts connections, except the templates.
    pub const DUMP_DATABASES: &str = "*";
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("sc_backup.repository is not set")]
    MissingRepository,

    #[error("invalid value for sc_backup.repository: \"{value}\": {reason}")]
    InvalidRepository { value: String, reason: String },

    #[error("invalid value for {setting}: \"{value}\"")]
    InvalidChoice {
        setting: &'static str,
        value: String,
        valid: &'static [&'static str],
    },

    #[error("invalid value for sc_backup.compression_level: {level} is outside the range of {algorithm} ({min}..{max})")]
    InvalidCompressionLevel {
        algorithm: CompressionAlgorithm,
        level: i32,
        min: i32,
        max: i32,
    },

    #[error("invalid value for {setting}: \"{value}\" is not an integer")]
    NotAnInteger {
        setting: &'static str,
        value: String,
    },

    #[error("no S3 credentials for {repository}")]
    MissingS3Credentials { repository: String },

    #[error("no GCS credentials for {repository}")]
    MissingGcsCredentials { repository: String },

    #[error("invalid GCS credentials: {0}")]
    InvalidGcsCredentials(String),

    #[error("sc_backup.encryption is \"age\" but sc_backup.encryption_passphrase is empty")]
    MissingPassphrase,

    #[error("secrets file \"{path}\": {reason}")]
    SecretsFile { path: String, reason: String },

    /// A value of the wrong shape for its setting (an address, a path, a list), with what
    /// was expected.
    #[error("invalid value for {setting}: \"{value}\": {reason}")]
    InvalidValue {
        setting: &'static str,
        value: String,
        reason: String,
    },

    #[error("invalid value for {setting}: \"{value}\": {reason}")]
    InvalidSchedule {
        setting: &'static str,
        value: String,
        reason: String,
    },

    #[error("\"{0}\" is not a repository number (1 to 4)")]
    InvalidRepositoryNumber(String),

    #[error("repository {0} is not configured (sc_backup.repository{0} is not set)")]
    RepositoryNotConfigured(u8),

    /// A further repository's settings (2 to 4) are wrong; `source` says which value.
    #[error("repository {number}: {source}")]
    InRepository {
        number: u8,
        #[source]
        source: Box<ConfigError>,
    },
}

impl ConfigError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            ConfigError::InvalidRepositoryNumber(_) | ConfigError::RepositoryNotConfigured(_) => {
                "Repository 1 is sc_backup.repository; 2 to 4 are sc_backup.repository2 to sc_backup.repository4.".into()
            }
            ConfigError::InRepository { number, source } => match source.hint() {
                Some(hint) => format!("{hint} Repository {number}'s own settings are sc_backup.repository{number}_*; what it leaves unset comes from repository 1's."),
                None => return None,
            },
            ConfigError::MissingRepository => format!(
                "Set {} in postgresql.conf (or ALTER SYSTEM) to an absolute directory path, a file:// URL, s3://bucket/prefix or gs://bucket/prefix, then reload.",
                names::REPOSITORY
            ),
            ConfigError::InvalidRepository { .. } => {
                "Use an absolute directory path such as /var/lib/sc_backup, or a URL such as file:///var/lib/sc_backup, s3://bucket/prefix or gs://bucket/prefix."
                    .into()
            }
            ConfigError::InvalidChoice { valid, .. } => {
                format!("Valid values are: {}.", valid.join(", "))
            }
            ConfigError::NotAnInteger { setting, .. } if *setting == names::COMPRESSION_LEVEL => {
                "Use 0 for the algorithm's default level.".into()
            }
            ConfigError::InvalidCompressionLevel { .. } => {
                "Use 0 for the algorithm's default level.".into()
            }
            ConfigError::NotAnInteger { .. } => "Use a whole number.".into(),
            ConfigError::InvalidSchedule { .. } => {
                "An empty value turns that schedule off; the README's scheduler section lists the formats.".into()
            }
            ConfigError::InvalidValue { setting, .. } => format!(
                "RESET {setting} (ALTER SYSTEM RESET, then reload) goes back to its default; the README's settings reference gives each format."
            ),
            ConfigError::MissingS3Credentials { .. } => format!(
                "Put s3_access_key_id and s3_secret_access_key in the file {} names, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the server's and the CLI's environment.",
                names::SECRETS_FILE
            ),
            ConfigError::MissingGcsCredentials { .. } | ConfigError::InvalidGcsCredentials(_) => format!(
                "Set {} (or GOOGLE_APPLICATION_CREDENTIALS) to a service account's JSON key file, readable by the PostgreSQL OS user.",
                names::GCS_CREDENTIALS
            ),
            ConfigError::MissingPassphrase => format!(
                "Put encryption_passphrase in the file {} names (owned by the PostgreSQL OS user, mode 0600), or set {} = none.",
                names::SECRETS_FILE,
                names::ENCRYPTION
            ),
            ConfigError::SecretsFile { .. } => "The secrets file holds lines like encryption_passphrase = '...' and s3_secret_access_key = '...', and must be a regular file owned by the PostgreSQL OS user with mode 0600 or 0400; keep it outside the data directory.".into(),
        })
    }
}

/// Where the repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryLocation {
    /// A directory on a local (or mounted) file system.
    Local(PathBuf),
    /// `s3://bucket/prefix`
    S3 { bucket: String, prefix: String },
    /// `gs://bucket/prefix`
    Gcs { bucket: String, prefix: String },
}

impl FromStr for RepositoryLocation {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidRepository {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(ConfigError::MissingRepository);
        }
        let object_store = trimmed
            .strip_prefix("s3://")
            .map(|rest| (rest, true))
            .or_else(|| trimmed.strip_prefix("gs://").map(|rest| (rest, false)));
        if let Some((rest, is_s3)) = object_store {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                return Err(invalid(
                    "an S3 bucket name has 3 to 63 lowercase letters, digits, dots or hyphens",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
                && !prefix.is_empty()
            {
                return Err(invalid(
                    "the key prefix must not contain empty, \".\" or \"..\" parts",
                ));
            }
            let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
            return Ok(if is_s3 {
                RepositoryLocation::S3 { bucket, prefix }
            } else {
                RepositoryLocation::Gcs { bucket, prefix }
            });
        }
        let path = if let Some(rest) = trimmed.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(invalid(
                    "a file:// URL needs an absolute path (file:///dir)",
                ));
            }
            rest
        } else if let Some((scheme, _)) = trimmed.split_once("://") {
            return Err(invalid(&format!(
                "the {scheme}:// scheme is not supported; use a local directory"
            )));
        } else {
            trimmed
        };
        if !path.starts_with('/') {
            return Err(invalid("the path must be absolute"));
        }
        if path.split('/').any(|part| part == "..") {
            return Err(invalid("the path must not contain \"..\""));
        }
        Ok(RepositoryLocation::Local(PathBuf::from(path)))
    }
}

impl fmt::Display for RepositoryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepositoryLocation::Local(path) => write!(f, "{}", path.display()),
            RepositoryLocation::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "s3://{bucket}")
            }
            RepositoryLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            RepositoryLocation::Gcs { bucket, prefix } if prefix.is_empty() => {
                write!(f, "gs://{bucket}")
            }
            RepositoryLocation::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionAlgorithm {
    None,
    Gzip,
    Zstd,
}

impl CompressionAlgorithm {
    pub const NAMES: &'static [&'static str] = &["none", "gzip", "zstd"];

    pub fn name(self) -> &'static str {
        match self {
            CompressionAlgorithm::None => "none",
            CompressionAlgorithm::Gzip => "gzip",
            CompressionAlgorithm::Zstd => "zstd",
        }
    }

    /// Valid explicit levels; 0 always means "the algorithm's default".
    pub fn level_range(self) -> (i32, i32) {
        match self {
            CompressionAlgorithm::None => (0, 0),
            CompressionAlgorithm::Gzip => (1, 9),
            CompressionAlgorithm::Zstd => (1, 19),
        }
    }

    pub fn default_level(self) -> i32 {
        match self {
            CompressionAlgorithm::None => 0,
            CompressionAlgorithm::Gzip => 6,
            // Level 1..3 keeps up with a busy archiver on one core; WAL compresses well anyway.
            CompressionAlgorithm::Zstd => 3,
        }
    }
}

impl fmt::Display for CompressionAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CompressionAlgorithm {
    type Err = ConfigError;
    fn from_str(value: &str) -> Result<Self, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(CompressionAlgorithm::None),
            "gzip" => Ok(CompressionAlgorithm::Gzip),
            "zstd" => Ok(CompressionAlgorithm::Zstd),
            _ => Err(ConfigError::InvalidChoice {
                setting: names::COMPRESSION,
                value: value.to_string(),
                valid: Self::NAMES,
            }),
        }
    }
}

/// A compression algorithm with a validated, concrete level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub algorithm: CompressionAlgorithm,
    pub level: i32,
}

impl Compression {
    pub const NONE: Compression = Compression {
        algorithm: CompressionAlgorithm::None,
        level: 0,
    };

    /// `level` 0 selects the algorithm's default.
    pub fn new(algorithm: CompressionAlgorithm, level: i32) -> Result<Self, ConfigError> {
        if level == 0 {
            return Ok(Compression {
                algorithm,
                level: algorithm.default_level(),
            });
        }
        let (min, max) = algorithm.level_range();
        if level < min || level > max {
            return Err(ConfigError::InvalidCompressionLevel {
                algorithm,
                level,
                min,
                max,
            });
        }
        Ok(Compression { algorithm, level })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionMode {
    None,
    /// age (X25519 + ChaCha20-Poly1305), see `codec::keys`.
    Age,
}

impl EncryptionMode {
    pub const NAMES: &'static [&'static str] = &["none", "age"];

    /// The mode of what a codec wrote: encrypted objects are always age.
    pub fn of(encrypted: bool) -> Self {
        if encrypted {
            EncryptionMode::Age
        } else {
            EncryptionMode::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EncryptionMode::None => "none",
            EncryptionMode::Age => "age",
        }
    }
}

impl fmt::Display for EncryptionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EncryptionMode {
    type Err = ConfigError;
    fn from_str(value: &str) -> Result<Self, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(EncryptionMode::None),
            "age" => Ok(EncryptionMode::Age),
            _ => Err(ConfigError::InvalidChoice {
                setting: names::ENCRYPTION,
                value: value.to_string(),
                valid: Self::NAMES,
            }),
        }
    }
}

/// A secret string: never printed by `Debug`, wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites a string holding secret material before its memory is freed.
pub(crate) fn wipe(text: &mut str) {
    // Safety: zero bytes keep the String valid UTF-8.
    for byte in unsafe { text.as_bytes_mut() } {
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
}

/// The settings as strings, wherever they came from; `None` means "not set".
#[derive(Debug, Clone, Default)]
pub struct RawSettings {
    pub repository: Option<String>,
    pub compression: Option<String>,
    pub compression_level: Option<String>,
    pub encryption: Option<String>,
    pub encryption_passphrase: Option<Secret>,
    /// A file holding the secret settings ([`read_secrets_file`]).
    pub secrets_file: Option<String>,
    pub s3_region: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_uri_style: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<Secret>,
    pub gcs_endpoint: Option<String>,
    pub gcs_credentials: Option<String>,
    pub retention_days: Option<String>,
    pub retention_full: Option<String>,
    /// Each tier's days (`-1` or empty: `retention_days`).
    pub retention_hourly_days: Option<String>,
    pub retention_daily_days: Option<String>,
    pub retention_weekly_days: Option<String>,
    /// Repositories 2 to 4 ([`repositories`]).
    pub further: [repositories::RawRepository; 3],
}

impl RawSettings {
    /// Fills every unset value from `fallback` (the next source in precedence order).
    pub fn or(self, fallback: RawSettings) -> RawSettings {
        RawSettings {
            repository: self.repository.or(fallback.repository),
            compression: self.compression.or(fallback.compression),
            compression_level: self.compression_level.or(fallback.compression_level),
            encryption: self.encryption.or(fallback.encryption),
            encryption_passphrase: self
                .encryption_passphrase
                .or(fallback.encryption_passphrase),
            secrets_file: self.secrets_file.or(fallback.secrets_file),
            s3_region: self.s3_region.or(fallback.s3_region),
            s3_endpoint: self.s3_endpoint.or(fallback.s3_endpoint),
            s3_uri_style: self.s3_uri_style.or(fallback.s3_uri_style),
            s3_access_key_id: self.s3_access_key_id.or(fallback.s3_access_key_id),
            s3_secret_access_key: self.s3_secret_access_key.or(fallback.s3_secret_access_key),
            gcs_endpoint: self.gcs_endpoint.or(fallback.gcs_endpoint),
            gcs_credentials: self.gcs_credentials.or(fallback.gcs_credentials),
            retention_days: self.retention_days.or(fallback.retention_days),
            retention_full: self.retention_full.or(fallback.retention_full),
            retention_hourly_days: self
                .retention_hourly_days
                .or(fallback.retention_hourly_days),
            retention_daily_days: self.retention_daily_days.or(fallback.retention_daily_days),
            retention_weekly_days: self
                .retention_weekly_days
                .or(fallback.retention_weekly_days),
            further: {
                let [a, b, c] = self.further;
                let [fa, fb, fc] = fallback.further;
                [a.or(fa), b.or(fb), c.or(fc)]
            },
        }
    }

    /// These settings with the secrets of [`secrets_file`](RawSettings::secrets_file), if
    /// one is named, taking precedence over the same settings given directly (which are the
    /// old way, and whose leftovers must not silently win). A relative path is relative to
    /// `data_directory`, as PostgreSQL reads relative paths.
    pub fn with_secrets_file(
        self,
        data_directory: &std::path::Path,
    ) -> Result<RawSettings, ConfigError> {
        match self
            .secrets_file
            .as_deref()
            .filter(|p| !p.trim().is_empty())
        {
            Some(path) => Ok(read_secrets_file(&data_directory.join(path))?.or(self)),
            None => Ok(self),
        }
    }

    /// Sets the value of one setting by its postgresql.conf name; unknown names are ignored.
    pub fn set(&mut self, name: &str, value: String) {
        match name {
            names::REPOSITORY => self.repository = Some(value),
            names::COMPRESSION => self.compression = Some(value),
            names::COMPRESSION_LEVEL => self.compression_level = Some(value),
            names::ENCRYPTION => self.encryption = Some(value),
            names::ENCRYPTION_PASSPHRASE => self.encryption_passphrase = Some(Secret::new(value)),
            names::SECRETS_FILE => self.secrets_file = Some(value),
            names::S3_REGION => self.s3_region = Some(value),
            names::S3_ENDPOINT => self.s3_endpoint = Some(value),
            names::S3_URI_STYLE => self.s3_uri_style = Some(value),
            names::S3_ACCESS_KEY_ID => self.s3_access_key_id = Some(value),
            names::S3_SECRET_ACCESS_KEY => self.s3_secret_access_key = Some(Secret::new(value)),
            names::GCS_ENDPOINT => self.gcs_endpoint = Some(value),
            names::GCS_CREDENTIALS => self.gcs_credentials = Some(value),
            names::RETENTION_DAYS => self.retention_days = Some(value),
            names::RETENTION_FULL => self.retention_full = Some(value),
            names::RETENTION_HOURLY_DAYS => self.retention_hourly_days = Some(value),
            names::RETENTION_DAILY_DAYS => self.retention_daily_days = Some(value),
            names::RETENTION_WEEKLY_DAYS => self.retention_weekly_days = Some(value),
            _ => {
                repositories::set_further(&mut self.further, name, value);
            }
        }
    }

    /// Whether `name` is one of the settings [`RawSettings::set`] takes: what the CLI looks
    /// up in a cluster's configuration files.
    pub fn takes(name: &str) -> bool {
        names::ALL.contains(&name)
            || repositories::FURTHER_REPOSITORY_NAMES
                .iter()
                .any(|further| further.all().contains(&name))
    }
}

/// What `expire` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub days: u32,
    /// Keep at least this many of the newest backups (values below 1 count as 1).
    pub min_backups: u32,
    /// Days the scheduled tiers' backups are kept, where they differ from `days`.
    pub tiers: TierDays,
}

/// The playbook's tiers: hourly backups kept 30 days, daily ones long-term, weekly ones
/// extended. A backup belongs to the tier its label (`backup_type`) names; `None`: `days`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierDays {
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
}

impl RetentionPolicy {
    /// The policy with no tier of its own.
    pub fn uniform(days: u32, min_backups: u32) -> RetentionPolicy {
        RetentionPolicy {
            days,
            min_backups,
            tiers: TierDays::default(),
        }
    }

    /// How many days a backup labelled `backup_type` is kept.
    pub fn days_for(&self, backup_type: &str) -> u32 {
        match backup_type {
            "hourly" => self.tiers.hourly,
            "daily" => self.tiers.daily,
            "weekly" => self.tiers.weekly,
            _ => None,
        }
        .unwrap_or(self.days)
    }
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub repository: RepositoryLocation,
    pub compression: Compression,
    pub encryption: EncryptionMode,
    pub encryption_passphrase: Option<Secret>,
    /// How to reach the bucket, for an `s3://` repository.
    pub s3: Option<S3Config>,
    /// How to reach the bucket, for a `gs://` repository.
    pub gcs: Option<GcsConfig>,
    /// What `expire` keeps.
    pub retention: RetentionPolicy,
}

/// Non-empty values only: an empty GUC means "not set".
fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.trim().is_empty())
}

fn env_var(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

impl Settings {
    /// The S3 client configuration: settings first, then the standard AWS environment.
    fn s3_config(raw: &RawSettings, bucket: &str, prefix: &str) -> Result<S3Config, ConfigError> {
        let endpoint = non_empty(&raw.s3_endpoint)
            .or_else(|| env_var(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
        let path_style = match non_empty(&raw.s3_uri_style)
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("auto") => endpoint.is_some(),
            Some("path") => true,
            Some("host") => false,
            Some(other) => {
                return Err(ConfigError::InvalidChoice {
                    setting: names::S3_URI_STYLE,
                    value: other.to_string(),
                    valid: &["auto", "path", "host"],
                })
            }
        };
        let access_key_id =
            non_empty(&raw.s3_access_key_id).or_else(|| env_var(&["AWS_ACCESS_KEY_ID"]));
        let secret_access_key = raw
            .s3_secret_access_key
            .clone()
            .filter(|s| !s.expose().is_empty())
            .or_else(|| env_var(&["AWS_SECRET_ACCESS_KEY"]).map(Secret::new));
        let (Some(access_key_id), Some(secret_access_key)) = (access_key_id, secret_access_key)
        else {
            return Err(ConfigError::MissingS3Credentials {
                repository: format!("s3://{bucket}"),
            });
        };
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            region: non_empty(&raw.s3_region)
                .or_else(|| env_var(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
                .unwrap_or_else(|| "us-east-1".into()),
            endpoint,
            path_style,
            access_key_id,
            secret_access_key,
            session_token: env_var(&["AWS_SESSION_TOKEN"]).map(Secret::new),
            part_size: S3Config::DEFAULT_PART_SIZE,
            max_attempts: 5,
            request_timeout: std::time::Duration::from_secs(120),
        })
    }

    /// The GCS client configuration: settings first, then the standard environment
    /// (`GOOGLE_APPLICATION_CREDENTIALS`, `STORAGE_EMULATOR_HOST`).
    fn gcs_config(raw: &RawSettings, bucket: &str, prefix: &str) -> Result<GcsConfig, ConfigError> {
        let emulator = env_var(&["STORAGE_EMULATOR_HOST"]).map(|host| {
            if host.contains("://") {
                host
            } else {
                format!("http://{host}")
            }
        });
        let endpoint = non_empty(&raw.gcs_endpoint).or(emulator);
        let credentials_file = non_empty(&raw.gcs_credentials)
            .or_else(|| env_var(&["GOOGLE_APPLICATION_CREDENTIALS"]));
        let credentials = match credentials_file {
            Some(path) => Some(
                ServiceAccount::from_file(std::path::Path::new(&path))
                    .map_err(ConfigError::InvalidGcsCredentials)?,
            ),
            // Emulators take unauthenticated requests; Google does not.
            None if endpoint.is_some() => None,
            None => {
                return Err(ConfigError::MissingGcsCredentials {
                    repository: format!("gs://{bucket}"),
                })
            }
        };
        Ok(GcsConfig {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: endpoint.unwrap_or_else(|| "https://storage.googleapis.com".into()),
            credentials,
            chunk_size: GcsConfig::DEFAULT_CHUNK_SIZE,
            max_attempts: 5,
            request_timeout: std::time::Duration::from_secs(120),
        })
    }

    /// Validates raw settings; unset values take their documented defaults
    /// (compression zstd at its default level, no encryption).
    pub fn from_raw(raw: &RawSettings) -> Result<Settings, ConfigError> {
        let repository: RepositoryLocation = raw
            .repository
            .as_deref()
            .ok_or(ConfigError::MissingRepository)?
            .parse()?;
        let algorithm: CompressionAlgorithm = raw
            .compression
            .as_deref()
            .unwrap_or(defaults::COMPRESSION)
            .parse()?;
        let level = match raw.compression_level.as_deref().map(str::trim) {
            None | Some("") => defaults::COMPRESSION_LEVEL,
            Some(text) => text.parse::<i32>().map_err(|_| ConfigError::NotAnInteger {
                setting: names::COMPRESSION_LEVEL,
                value: text.to_string(),
            })?,
        };
        let compression = Compression::new(algorithm, level)?;
        let encryption: EncryptionMode = raw
            .encryption
            .as_deref()
            .unwrap_or(defaults::ENCRYPTION)
            .parse()?;
        let encryption_passphrase = raw
            .encryption_passphrase
            .clone()
            .filter(|secret| !secret.expose().is_empty());
        let s3 = match &repository {
            RepositoryLocation::S3 { bucket, prefix } => {
                Some(Settings::s3_config(raw, bucket, prefix)?)
            }
            _ => None,
        };
        let gcs = match &repository {
            RepositoryLocation::Gcs { bucket, prefix } => {
                Some(Settings::gcs_config(raw, bucket, prefix)?)
            }
            _ => None,
        };
        let retention = RetentionPolicy {
            days: parse_count(
                names::RETENTION_DAYS,
                &raw.retention_days,
                defaults::RETENTION_DAYS,
            )?,
            min_backups: parse_count(
                names::RETENTION_FULL,
                &raw.retention_full,
                defaults::RETENTION_FULL,
            )?,
            tiers: TierDays {
                hourly: parse_tier_days(names::RETENTION_HOURLY_DAYS, &raw.retention_hourly_days)?,
                daily: parse_tier_days(names::RETENTION_DAILY_DAYS, &raw.retention_daily_days)?,
                weekly: parse_tier_days(names::RETENTION_WEEKLY_DAYS, &raw.retention_weekly_days)?,
            },
        };
        Ok(Settings {
            repository,
            compression,
            encryption,
            encryption_passphrase,
            s3,
            gcs,
            retention,
        })
    }
}

/// A tier's days: `None` when unset, empty or -1 (the tier follows `retention_days`).
fn parse_tier_days(
    setting: &'static str,
    value: &Option<String>,
) -> Result<Option<u32>, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("") | Some("-1") => Ok(None),
        Some(text) => text
            .parse::<u32>()
            .map(Some)
            .map_err(|_| ConfigError::NotAnInteger {
                setting,
                value: text.to_string(),
            }),
    }
}

/// A non-negative whole number, or `default` when unset.
fn parse_count(
    setting: &'static str,
    value: &Option<String>,
    default: u32,
) -> Result<u32, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(text) => text.parse::<u32>().map_err(|_| ConfigError::NotAnInteger {
            setting,
            value: text.to_string(),
        }),
    }
}

impl Settings {
    /// Writers (the archiver, backups) need the passphrase of an encrypted repository up
    /// front; readers may bring an already unwrapped key instead.
    pub fn for_writing(self) -> Result<Settings, ConfigError> {
        if self.encryption == EncryptionMode::Age && self.encryption_passphrase.is_none() {
            return Err(ConfigError::MissingPassphrase);
        }
        Ok(self)
    }
}

/// A value quoted as postgresql.conf reads it: in single quotes, with quotes doubled and
/// backslashes escaped (the configuration file's lexer reads backslash escapes).
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conf_quote(r"a\b"), r"'a\\b'");
    }

    fn raw(repository: &str) -> RawSettings {
        RawSettings {
            repository: Some(repository.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_zstd_without_encryption() {
        let settings = Settings::from_raw(&raw("/var/lib/sc_backup")).unwrap();
        assert_eq!(
            settings.repository,
            RepositoryLocation::Local("/var/lib/sc_backup".into())
        );
        assert_eq!(
            settings.compression,
            Compression {
                algorithm: CompressionAlgorithm::Zstd,
                level: 3
            }
        );
        assert_eq!(settings.encryption, EncryptionMode::None);
    }

    #[test]
    fn repository_locations() {
        assert_eq!(
            "file:///srv/repo".parse::<RepositoryLocation>().unwrap(),
            RepositoryLocation::Local("/srv/repo".into())
        );
        assert_eq!(
            "s3://my-bucket/pg/main/"
                .parse::<RepositoryLocation>()
                .unwrap(),
            RepositoryLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "pg/main".into()
            }
        );
        assert_eq!(
            "s3://my-bucket"
                .parse::<RepositoryLocation>()
                .unwrap()
                .to_string(),
            "s3://my-bucket"
        );
        for bad in [
            "relative/dir",
            "file://relative",
            "/a/../b",
            "ftp://host/x",
            "s3://Upper",
            "s3://b",
            "s3://bucket/a//b",
        ] {
            assert!(
                matches!(
                    bad.parse::<RepositoryLocation>(),
                    Err(ConfigError::InvalidRepository { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            "  ".parse::<RepositoryLocation>(),
            Err(ConfigError::MissingRepository)
        );
    }

    #[test]
    fn invalid_choices_list_valid_values() {
        let mut settings = raw("/r");
        settings.compression = Some("lz4".into());
        let err = Settings::from_raw(&settings).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for sc_backup.compression: \"lz4\""
        );
        assert_eq!(err.hint().unwrap(), "Valid values are: none, gzip, zstd.");
    }

    #[test]
    fn compression_levels_are_checked_per_algorithm() {
        let mut settings = raw("/r");
        settings.compression = Some("gzip".into());
        settings.compression_level = Some("12".into());
        assert!(matches!(
            Settings::from_raw(&settings),
            Err(ConfigError::InvalidCompressionLevel {
                level: 12,
                max: 9,
                ..
            })
        ));
        settings.compression_level = Some("9".into());
        assert_eq!(Settings::from_raw(&settings).unwrap().compression.level, 9);
        settings.compression_level = Some("fast".into());
        assert!(Settings::from_raw(&settings).is_err());
    }

    #[test]
    fn encryption_needs_a_passphrase() {
        let mut settings = raw("/r");
        settings.encryption = Some("age".into());
        let writing = |raw: &RawSettings| Settings::from_raw(raw).and_then(Settings::for_writing);
        assert_eq!(writing(&settings), Err(ConfigError::MissingPassphrase));
        settings.encryption_passphrase = Some(Secret::new(""));
        assert_eq!(writing(&settings), Err(ConfigError::MissingPassphrase));
        // Readers may bring an unwrapped key instead.
        assert!(Settings::from_raw(&settings).is_ok());
        settings.encryption_passphrase = Some(Secret::new("correct horse"));
        assert_eq!(writing(&settings).unwrap().encryption, EncryptionMode::Age);
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
