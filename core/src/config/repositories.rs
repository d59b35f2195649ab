//! The cluster's repositories. Repository 1 is the one `sc_backup.repository` names, with the
//! settings every version had; repositories 2 to 4 (`sc_backup.repository2` ...) each name a
//! location of their own and may set their own compression, encryption, passphrase and
//! retention. What a further repository leaves unset comes from repository 1's settings, and so
//! do the object stores' endpoints and credentials: one S3 account and one GCS service account
//! per cluster. Each repository is complete and restorable alone (its own `repository.json`,
//! its own key), as pgBackRest's repo1 to repo4 are.

use std::fmt;
use std::str::FromStr;

use super::{ConfigError, RawSettings, Secret, Settings};

/// How many repositories a cluster may have.
pub const MAX_REPOSITORIES: u8 = 4;

/// Which of the cluster's repositories: 1 to [`MAX_REPOSITORIES`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "u8", into = "u8")]
pub struct RepositoryNumber(u8);

impl TryFrom<u8> for RepositoryNumber {
    type Error = String;
    fn try_from(number: u8) -> Result<Self, String> {
        RepositoryNumber::new(number).ok_or_else(|| format!("no repository {number}"))
    }
}

impl From<RepositoryNumber> for u8 {
    fn from(number: RepositoryNumber) -> u8 {
        number.0
    }
}

impl RepositoryNumber {
    pub const FIRST: RepositoryNumber = RepositoryNumber(1);

    pub fn new(number: u8) -> Option<RepositoryNumber> {
        (1..=MAX_REPOSITORIES)
            .contains(&number)
            .then_some(RepositoryNumber(number))
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// Every possible repository, in order.
    pub fn all() -> impl Iterator<Item = RepositoryNumber> {
        (1..=MAX_REPOSITORIES).map(RepositoryNumber)
    }
}

impl fmt::Display for RepositoryNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "repository {}", self.0)
    }
}

impl FromStr for RepositoryNumber {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        text.trim()
            .parse::<u8>()
            .ok()
            .and_then(RepositoryNumber::new)
            .ok_or_else(|| ConfigError::InvalidRepositoryNumber(text.to_string()))
    }
}

/// What repository 2, 3 or 4 sets for itself (unset: repository 1's value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRepository {
    pub location: Option<String>,
    pub compression: Option<String>,
    pub compression_level: Option<String>,
    pub encryption: Option<String>,
    pub encryption_passphrase: Option<Secret>,
    pub retention_days: Option<String>,
    pub retention_full: Option<String>,
    /// Its tiers (`-1`: its `retention_days`).
    pub retention_hourly_days: Option<String>,
    pub retention_daily_days: Option<String>,
    pub retention_weekly_days: Option<String>,
}

impl RawRepository {
    pub(super) fn or(self, fallback: RawRepository) -> RawRepository {
        RawRepository {
            location: self.location.or(fallback.location),
            compression: self.compression.or(fallback.compression),
            compression_level: self.compression_level.or(fallback.compression_level),
            encryption: self.encryption.or(fallback.encryption),
            encryption_passphrase: self
                .encryption_passphrase
                .or(fallback.encryption_passphrase),
            retention_days: self.retention_days.or(fallback.retention_days),
            retention_full: self.retention_full.or(fallback.retention_full),
            retention_hourly_days: self
                .retention_hourly_days
                .or(fallback.retention_hourly_days),
            retention_daily_days: self.retention_daily_days.or(fallback.retention_daily_days),
            retention_weekly_days: self
                .retention_weekly_days
                .or(fallback.retention_weekly_days),
        }
    }

    fn is_set(&self) -> bool {
        self.location
            .as_deref()
            .is_some_and(|l| !l.trim().is_empty())
    }
}

/// The names of one further repository's settings, as postgresql.conf spells them.
#[derive(Debug, Clone, Copy)]
pub struct RepositoryNames {
    pub location: &'static str,
    pub compression: &'static str,
    pub compression_level: &'static str,
    pub encryption: &'static str,
    /// Only in the secrets file (`repository2_encryption_passphrase = '...'`).
    pub encryption_passphrase: &'static str,
    pub retention_days: &'static str,
    pub retention_full: &'static str,
    pub retention_hourly_days: &'static str,
    pub retention_daily_days: &'static str,
    pub retention_weekly_days: &'static str,
}

macro_rules! repository_names {
    ($n:literal) => {
        RepositoryNames {
            location: concat!("sc_backup.repository", $n),
            compression: concat!("sc_backup.repository", $n, "_compression"),
            compression_level: concat!("sc_backup.repository", $n, "_compression_level"),
            encryption: concat!("sc_backup.repository", $n, "_encryption"),
            encryption_passphrase: concat!("sc_backup.repository", $n, "_encryption_passphrase"),
            retention_days: concat!("sc_backup.repository", $n, "_retention_days"),
            retention_full: concat!("sc_backup.repository", $n, "_retention_full"),
            retention_hourly_days: concat!("sc_backup.repository", $n, "_retention_hourly_days"),
            retention_daily_days: concat!("sc_backup.repository", $n, "_retention_daily_days"),
            retention_weekly_days: concat!("sc_backup.repository", $n, "_retention_weekly_days"),
        }
    };
}

/// Repositories 2, 3 and 4's setting names.
pub const FURTHER_REPOSITORY_NAMES: [RepositoryNames; 3] = [
    repository_names!("2"),
    repository_names!("3"),
    repository_names!("4"),
];

impl RepositoryNames {
    /// Every name, the passphrase last (a secret: the secrets file holds it, not a setting).
    pub fn all(&self) -> [&'static str; 10] {
        [
            self.location,
            self.compression,
            self.compression_level,
            self.encryption,
            self.retention_days,
            self.retention_full,
            self.retention_hourly_days,
            self.retention_daily_days,
            self.retention_weekly_days,
            self.encryption_passphrase,
        ]
    }
}

/// Sets `name` if it is one of a further repository's settings; whether it was.
pub(super) fn set_further(further: &mut [RawRepository; 3], name: &str, value: String) -> bool {
    for (names, raw) in FURTHER_REPOSITORY_NAMES.iter().zip(further.iter_mut()) {
        let field = match name {
            n if n == names.location => &mut raw.location,
            n if n == names.compression => &mut raw.compression,
            n if n == names.compression_level => &mut raw.compression_level,
            n if n == names.encryption => &mut raw.encryption,
            n if n == names.retention_days => &mut raw.retention_days,
            n if n == names.retention_full => &mut raw.retention_full,
            n if n == names.retention_hourly_days => &mut raw.retention_hourly_days,
            n if n == names.retention_daily_days => &mut raw.retention_daily_days,
            n if n == names.retention_weekly_days => &mut raw.retention_weekly_days,
            n if n == names.encryption_passphrase => {
                raw.encryption_passphrase = Some(Secret::new(value));
                return true;
            }
            _ => continue,
        };
        *field = Some(value);
        return true;
    }
    false
}

impl RawSettings {
    /// Repository `number`'s settings, as one repository's: its own values where it sets
    /// them, repository 1's elsewhere; `None` when it is not configured.
    pub fn for_repository(&self, number: RepositoryNumber) -> Option<RawSettings> {
        if number == RepositoryNumber::FIRST {
            return Some(self.clone());
        }
        let own = &self.further[usize::from(number.get()) - 2];
        if !own.is_set() {
            return None;
        }
        let own = own.clone();
        Some(RawSettings {
            repository: own.location,
            compression: own.compression.or_else(|| self.compression.clone()),
            compression_level: own
                .compression_level
                .or_else(|| self.compression_level.clone()),
            encryption: own.encryption.or_else(|| self.encryption.clone()),
            encryption_passphrase: own
                .encryption_passphrase
                .or_else(|| self.encryption_passphrase.clone()),
            retention_days: own.retention_days.or_else(|| self.retention_days.clone()),
            retention_full: own.retention_full.or_else(|| self.retention_full.clone()),
            retention_hourly_days: own
                .retention_hourly_days
                .or_else(|| self.retention_hourly_days.clone()),
            retention_daily_days: own
                .retention_daily_days
                .or_else(|| self.retention_daily_days.clone()),
            retention_weekly_days: own
                .retention_weekly_days
                .or_else(|| self.retention_weekly_days.clone()),
            further: Default::default(),
            ..self.clone()
        })
    }
}

impl Settings {
    /// Every configured repository's settings, in order: repository 1 first (it must be
    /// set), then 2 to 4 where their location is set. A further repository's error names it.
    pub fn all_from_raw(
        raw: &RawSettings,
    ) -> Result<Vec<(RepositoryNumber, Settings)>, ConfigError> {
        let mut all = vec![(RepositoryNumber::FIRST, Settings::from_raw(raw)?)];
        for number in RepositoryNumber::all().skip(1) {
            if let Some(own) = raw.for_repository(number) {
                let settings =
                    Settings::from_raw(&own).map_err(|source| ConfigError::InRepository {
                        number: number.get(),
                        source: Box::new(source),
                    })?;
                all.push((number, settings));
            }
        }
        Ok(all)
    }

    /// Repository `number`'s settings, or why there are none.
    pub fn of_repository(
        raw: &RawSettings,
        number: RepositoryNumber,
    ) -> Result<Settings, ConfigError> {
        if number == RepositoryNumber::FIRST {
            return Settings::from_raw(raw);
        }
        let own = raw
            .for_repository(number)
            .ok_or(ConfigError::RepositoryNotConfigured(number.get()))?;
        Settings::from_raw(&own).map_err(|source| ConfigError::InRepository {
            number: number.get(),
            source: Box::new(source),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawSettings {
        let mut raw = RawSettings::default();
        for (name, value) in pairs {
            raw.set(name, value.to_string());
        }
        raw
    }

    #[test]
    fn a_further_repository_inherits_what_it_leaves_unset() {
        let raw = raw(&[
            ("sc_backup.repository", "/var/backups/pg"),
            ("sc_backup.compression", "gzip"),
            ("sc_backup.s3_region", "eu-west-1"),
            ("sc_backup.s3_access_key_id", "AKIAEXAMPLE"),
            ("sc_backup.s3_secret_access_key", "secret"),
            ("sc_backup.retention_days", "30"),
            ("sc_backup.retention_daily_days", "90"),
            ("sc_backup.retention_weekly_days", "400"),
            ("sc_backup.repository2", "s3://offsite-bucket/pg"),
            ("sc_backup.repository2_retention_days", "365"),
            ("sc_backup.repository2_retention_weekly_days", "3650"),
        ]);
        let all = Settings::all_from_raw(&raw).unwrap();
        assert_eq!(all.len(), 2);
        let (number, offsite) = &all[1];
        assert_eq!(number.get(), 2);
        assert_eq!(offsite.repository.to_string(), "s3://offsite-bucket/pg");
        assert_eq!(offsite.retention.days, 365);
        // Its own tiers where it sets them, repository 1's elsewhere.
        let tiers = offsite.retention.tiers;
        assert_eq!(
            (tiers.hourly, tiers.daily, tiers.weekly),
            (None, Some(90), Some(3650))
        );
        let first = all[0].1.retention.tiers;
        assert_eq!(
            (first.hourly, first.daily, first.weekly),
            (None, Some(90), Some(400))
        );
        assert_eq!(
            offsite.compression.algorithm,
            super::super::CompressionAlgorithm::Gzip
        );
        assert_eq!(offsite.s3.as_ref().unwrap().region, "eu-west-1");
        assert_eq!(all[0].1.retention.days, 30);
        assert!(Settings::of_repository(&raw, RepositoryNumber::new(3).unwrap()).is_err());
    }

    #[test]
    fn a_further_repositorys_bad_value_names_the_repository() {
        let raw = raw(&[
            ("sc_backup.repository", "/var/backups/pg"),
            ("sc_backup.repository2", "/mnt/second"),
            ("sc_backup.repository2_compression", "lz4"),
        ]);
        let error = Settings::all_from_raw(&raw).unwrap_err().to_string();
        assert!(error.starts_with("repository 2"), "{error}");
        assert!(error.contains("lz4"), "{error}");
        for bad in ["0", "5", "two", ""] {
            assert!(bad.parse::<RepositoryNumber>().is_err(), "{bad}");
        }
        assert_eq!("4".parse::<RepositoryNumber>().unwrap().get(), 4);
    }
}
