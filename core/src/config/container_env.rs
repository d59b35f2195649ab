//! The playbook's environment variables (docker compose's `.env`), turned into `sc_backup.*`
//! and server settings for the container image, and the restore variables the CLI accepts.
//!
//! The playbook ran a backup container configured by `BACKUP_DIR`, `HOURLY_BACKUP`,
//! `COMPRESSION` and friends. Our image reads the same names at every start and writes the
//! settings they mean into two files the server includes: one anyone may read, one with the
//! secrets, readable by the postgres OS user only. A value we cannot map stops the container
//! with one line naming the variable and what it accepts, before the server starts.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::{NaiveTime, Timelike};

use crate::config::{conf_quote, defaults, names, repositories, CompressionAlgorithm, Secret};
use crate::util::time::parse_time;

/// A playbook variable whose value we cannot use. Displayed as the single line the container
/// prints before it stops; secrets' values are never part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}{shown}: {problem}", shown = shown_value(variable, value))]
pub struct ContainerEnvError {
    pub variable: &'static str,
    pub value: String,
    pub problem: String,
}

fn shown_value(variable: &str, value: &str) -> String {
    if value.is_empty() || SECRET_VARIABLES.contains(&variable) {
        String::new()
    } else {
        format!("=\"{value}\"")
    }
}

const SECRET_VARIABLES: &[&str] = &[
    "POSTGRES_PASSWORD",
    "ENCRYPTION_KEY",
    "BACKUP_ENCRYPTION_KEY",
    "AWS_SECRET_ACCESS_KEY",
];

/// Every variable the image reads, for the README's table and for the entrypoint, which
/// removes the secret ones from the server's environment once they are in the secrets file.
pub const VARIABLES: &[&str] = &[
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "BACKUP_DIR",
    "BACKUP_TYPE",
    "BACKUP_STORAGE",
    "BACKUP_LOCAL",
    "RETENTION_DAYS",
    "OFFSITE_RETENTION_DAYS",
    "COMPRESSION",
    "ENCRYPTION",
    "ENCRYPTION_KEY",
    "BACKUP_ENCRYPTION",
    "BACKUP_ENCRYPTION_KEY",
    "HOURLY_BACKUP",
    "HOURLY_INTERVAL",
    "DAILY_BACKUP",
    "DAILY_TIME",
    "WEEKLY_BACKUP",
    "WEEKLY_DAY",
    "WEEKLY_TIME",
    "S3_BUCKET",
    "GCS_BUCKET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST",
    "WAL_ARCHIVE_ENABLED",
    "POSTGRES_ENABLE_WAL_ARCHIVING",
    "ARCHIVE_TIMEOUT",
];

/// What the playbook's variables mean for one start of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// `name = value` for the file every local user may read.
    pub settings: Vec<(&'static str, String)>,
    /// `name = value` for the file only the postgres OS user reads, which
    /// `sc_backup.secrets_file` names (it is not included: settings can be read by
    /// monitoring roles): the passphrase and the S3 keys.
    pub secrets: Vec<(&'static str, Secret)>,
    /// The role and database the first start creates, like the official image.
    pub user: String,
    pub database: String,
    /// The bootstrap role's password (`POSTGRES_PASSWORD`), for initdb's --pwfile.
    pub password: Option<Secret>,
}

/// The file the server's postgresql.conf includes and `sc-backup` reads (SC_BACKUP_CONFIG_FILE
/// in the image), in the directory the entrypoint names; it includes the other two. Outside
/// the data directory, so a restore into an empty volume finds it, and base backups never
/// carry the secrets.
pub const CONFIG_FILE: &str = "sc_backup.conf";
pub const SETTINGS_FILE: &str = "settings.conf";
pub const SECRETS_FILE: &str = "secrets.conf";
/// Read by initdb on the first start, removed by the entrypoint right after.
pub const PASSWORD_FILE: &str = "bootstrap-password";

impl ContainerSettings {
    /// Writes the settings, the secrets and the password file (each replaced atomically,
    /// mode 0600: the directory is the postgres OS user's alone).
    pub fn write_files(&self, directory: &Path) -> std::io::Result<()> {
        let header =
            "# Written by the sc_backup image's entrypoint at every start, from the container's\n\
                      # environment (the playbook's variables): edit those, not this file.\n";
        let settings: String = self
            .settings
            .iter()
            .map(|(name, value)| conf_line(name, value))
            .collect();
        write_private(directory, SETTINGS_FILE, &format!("{header}{settings}"))?;
        let secrets: String = self
            .secrets
            .iter()
            .map(|(name, value)| conf_line(name, value.expose()))
            .collect();
        write_private(directory, SECRETS_FILE, &format!("{header}{secrets}"))?;
        let secrets_path = std::path::absolute(directory.join(SECRETS_FILE))?;
        write_private(
            directory,
            CONFIG_FILE,
            &format!(
                "{header}include '{SETTINGS_FILE}'\n{}",
                conf_line(names::SECRETS_FILE, &secrets_path.display().to_string())
            ),
        )?;
        match &self.password {
            Some(password) => write_private(directory, PASSWORD_FILE, password.expose()),
            None => match fs::remove_file(directory.join(PASSWORD_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// `NAME=value` lines for the entrypoint's shell (both are plain identifiers, checked).
    pub fn shell_assignments(&self) -> String {
        format!(
            "SC_BACKUP_BOOTSTRAP_USER={}\nSC_BACKUP_BOOTSTRAP_DATABASE={}\n",
            self.user, self.database
        )
    }
}

fn conf_line(name: &str, value: &str) -> String {
    format!("{name} = {}\n", conf_quote(value))
}

fn write_private(directory: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(directory)?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(directory.join(name)).map_err(|e| e.error)?;
    Ok(())
}

/// Which backups the scheduler takes, from `BACKUP_TYPE`: `incremental` and `differential`
/// are `full` with the hourly backups taking only what changed (daily and weekly stay full).
const BACKUP_TYPES: &[&str] = &["full", "incremental", "differential", "physical", "logical"];
const STORAGES: &[&str] = &["local", "s3", "gcs"];
const BOOLEANS: &[&str] = &["true", "false"];

/// Reads the playbook's variables through `lookup` (the process environment in the image,
/// a map in tests). Empty values count as unset, as compose writes `VAR=` for them.
pub fn container_settings(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ContainerSettings, ContainerEnvError> {
    let env = Env { lookup: &lookup };
    let mut settings: Vec<(&'static str, String)> = Vec::new();
    let mut secrets: Vec<(&'static str, Secret)> = Vec::new();

    let user = env
        .get("POSTGRES_USER")
        .unwrap_or_else(|| "postgres".into());
    if !is_identifier(&user) {
        return Err(env.error("POSTGRES_USER", "use a role name of letters, digits and _"));
    }
    // The official image's default: the database is named after the user.
    let database = env.get("POSTGRES_DB").unwrap_or_else(|| user.clone());
    if !is_identifier(&database) {
        return Err(env.error(
            "POSTGRES_DB",
            "use a database name of letters, digits and _",
        ));
    }

    // Where backups go: the backups volume (BACKUP_DIR) and, with BACKUP_STORAGE=s3 or gcs,
    // the bucket too, as the playbook keeps them "locally and offsite": the volume is
    // repository 1 (what PostgreSQL waits for, the fast restores) and the bucket repository 2
    // (every WAL file and backup copied by the scheduler worker, restorable alone).
    // BACKUP_LOCAL=false keeps the bucket alone, as repository 1.
    let storage = env.choice("BACKUP_STORAGE", STORAGES, "local")?;
    let offsite = match storage {
        "s3" => {
            let bucket = env.required("S3_BUCKET", "BACKUP_STORAGE=s3")?;
            bucket_name(&env, "S3_BUCKET", &bucket)?;
            if let Some(region) = env.get("AWS_DEFAULT_REGION") {
                settings.push((names::S3_REGION, region));
            }
            if let Some(endpoint) = env.get("AWS_ENDPOINT_URL") {
                settings.push((names::S3_ENDPOINT, endpoint));
            }
            match (
                env.get("AWS_ACCESS_KEY_ID"),
                env.get("AWS_SECRET_ACCESS_KEY"),
            ) {
                (Some(id), Some(secret)) => {
                    secrets.push((names::S3_ACCESS_KEY_ID, Secret::new(id)));
                    secrets.push((names::S3_SECRET_ACCESS_KEY, Secret::new(secret)));
                }
                (None, None) => {} // an instance role, or a credentials file
                (Some(_), None) => {
                    return Err(
                        env.error("AWS_SECRET_ACCESS_KEY", "is needed with AWS_ACCESS_KEY_ID")
                    )
                }
                (None, Some(_)) => {
                    return Err(
                        env.error("AWS_ACCESS_KEY_ID", "is needed with AWS_SECRET_ACCESS_KEY")
                    )
                }
            }
            Some(format!("s3://{bucket}"))
        }
        "gcs" => {
            let bucket = env.required("GCS_BUCKET", "BACKUP_STORAGE=gcs")?;
            bucket_name(&env, "GCS_BUCKET", &bucket)?;
            if let Some(credentials) = env.get("GOOGLE_APPLICATION_CREDENTIALS") {
                settings.push((names::GCS_CREDENTIALS, credentials));
            }
            if let Some(emulator) = env.get("STORAGE_EMULATOR_HOST") {
                settings.push((names::GCS_ENDPOINT, emulator));
            }
            Some(format!("gs://{bucket}"))
        }
        _ => None,
    };
    let local = || {
        let directory = env.get("BACKUP_DIR").unwrap_or_else(|| "/backups".into());
        if directory.starts_with('/') {
            Ok(directory)
        } else {
            Err(env.error("BACKUP_DIR", "use an absolute directory path"))
        }
    };
    let offsite_names = &repositories::FURTHER_REPOSITORY_NAMES[0];
    match offsite {
        None => settings.push((names::REPOSITORY, local()?)),
        Some(bucket) if env.boolean("BACKUP_LOCAL", true)? => {
            settings.push((names::REPOSITORY, local()?));
            settings.push((offsite_names.location, bucket));
            // Offsite often keeps longer: repository 2's own retention.
            if env.get("OFFSITE_RETENTION_DAYS").is_some() {
                let days = env.number("OFFSITE_RETENTION_DAYS", 0, 0..=36_500)?;
                settings.push((offsite_names.retention_days, days.to_string()));
            }
        }
        Some(bucket) => settings.push((names::REPOSITORY, bucket)),
    }

    let compression = env.choice("COMPRESSION", CompressionAlgorithm::NAMES, "gzip")?;
    settings.push((names::COMPRESSION, compression.to_string()));

    // ENCRYPTION / ENCRYPTION_KEY, or the GCS example's BACKUP_ENCRYPTION / _KEY.
    let (switch, key) = if env.get("BACKUP_ENCRYPTION").is_some() {
        ("BACKUP_ENCRYPTION", "BACKUP_ENCRYPTION_KEY")
    } else {
        ("ENCRYPTION", "ENCRYPTION_KEY")
    };
    if env.boolean(switch, false)? {
        let passphrase = env.get(key).ok_or_else(|| {
            env.error(
                key,
                &format!("is needed when {switch}=true: it protects the repository's key"),
            )
        })?;
        settings.push((names::ENCRYPTION, "age".into()));
        secrets.push((names::ENCRYPTION_PASSPHRASE, Secret::new(passphrase)));
    } else {
        settings.push((names::ENCRYPTION, "none".into()));
    }

    let retention_days = env.number("RETENTION_DAYS", 30, 0..=36_500)?;
    settings.push((names::RETENTION_DAYS, retention_days.to_string()));

    // The schedules. BACKUP_TYPE says whether they take base backups, dumps or both.
    let backup_type = env.choice("BACKUP_TYPE", BACKUP_TYPES, "full")?;
    let hourly = if env.boolean("HOURLY_BACKUP", true)? {
        env.number(
            "HOURLY_INTERVAL",
            defaults::HOURLY_INTERVAL_SECONDS as u64,
            60..=31 * 86_400,
        )?
    } else {
        0
    };
    let daily_time = if env.boolean("DAILY_BACKUP", true)? {
        Some(env.time_of_day("DAILY_TIME", names::DAILY_TIME, defaults::DAILY_TIME)?)
    } else {
        None
    };
    let weekly = if env.boolean("WEEKLY_BACKUP", false)? {
        let day = env.number("WEEKLY_DAY", 0, 0..=6)?;
        let time = env.time_of_day("WEEKLY_TIME", names::WEEKLY_TIME, defaults::WEEKLY_TIME)?;
        Some((WEEKDAYS[day as usize], time))
    } else {
        None
    };
    settings.push((names::SCHEDULER, "on".into()));
    settings.push((names::DATABASE, database.clone()));
    let hh_mm = |time: NaiveTime| time.format("%H:%M").to_string();
    if backup_type == "logical" {
        // Dumps only: no base backups on any schedule.
        settings.push((names::HOURLY_INTERVAL, "0".into()));
        settings.push((names::DAILY_TIME, String::new()));
        settings.push((names::WEEKLY_DAY, String::new()));
    } else {
        settings.push((names::HOURLY_INTERVAL, format!("{hourly}s")));
        settings.push((names::DAILY_TIME, daily_time.map(hh_mm).unwrap_or_default()));
        settings.push((
            names::WEEKLY_DAY,
            weekly.map(|(day, _)| day).unwrap_or_default().into(),
        ));
        if let Some((_, time)) = weekly {
            settings.push((names::WEEKLY_TIME, hh_mm(time)));
        }
        let hourly_type = match backup_type {
            "incremental" | "differential" => backup_type,
            _ => "full",
        };
        settings.push((names::HOURLY_TYPE, hourly_type.into()));
    }
    // The playbook's files: a dump of every database. With base backups (full), once a day
    // half an hour after the daily base backup, so the two do not read the disk at once;
    // dumps only (logical), on the hourly schedule in whole hours, else the daily one.
    let at = |time: NaiveTime| format!("{} {} * * *", time.minute(), time.hour());
    let dump_schedule = match (backup_type, daily_time) {
        ("physical", _) => String::new(),
        ("logical", _) if hourly > 0 => format!("0 */{} * * *", (hourly / 3600).clamp(1, 23)),
        ("logical", Some(time)) => at(time),
        (_, Some(time)) => at(time + chrono::Duration::minutes(30)),
        (_, None) => String::new(),
    };
    settings.push((names::DUMP_SCHEDULE, dump_schedule));

    // WAL archiving: either variable turns it off; the playbook's archive_timeout unless set.
    let archiving = env.boolean("WAL_ARCHIVE_ENABLED", true)?
        && env.boolean("POSTGRES_ENABLE_WAL_ARCHIVING", true)?;
    settings.push(("archive_mode", if archiving { "on" } else { "off" }.into()));
    settings.push(("archive_library", "sc_backup".into()));
    let archive_timeout = env.number("ARCHIVE_TIMEOUT", 300, 0..=86_400)?;
    settings.push(("archive_timeout", format!("{archive_timeout}s")));

    Ok(ContainerSettings {
        settings,
        secrets,
        user,
        database,
        password: env.get("POSTGRES_PASSWORD").map(Secret::new),
    })
}

/// PostgreSQL's own numbering of weekdays (0 = Sunday), as cron and the playbook use it.
const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// The playbook's restore variables, as the `SC_BACKUP_*` names the CLI reads (those stay
/// primary: a variable already set is left alone). `(playbook, ours)`.
pub const RESTORE_VARIABLES: &[(&str, &str)] = &[
    ("FORCE_RESTORE", "SC_BACKUP_FORCE"),
    ("SKIP_VERIFY", "SC_BACKUP_SKIP_VERIFY"),
    ("TARGET_TIME", "SC_BACKUP_TARGET_TIME"),
];

/// `(our variable, value)` for each playbook restore variable set where ours is not. The
/// playbook's TARGET_TIME carries no time zone and its containers run in UTC, so a time
/// without an offset is read as UTC (ours require the offset).
pub fn restore_variables(lookup: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
    let env = Env { lookup: &lookup };
    RESTORE_VARIABLES
        .iter()
        .filter(|(_, ours)| env.get(ours).is_none())
        .filter_map(|(playbook, ours)| {
            let value = env.get(playbook)?;
            let value = if *playbook == "TARGET_TIME"
                && parse_time(&value).is_none()
                && parse_time(&format!("{value}+00")).is_some()
            {
                format!("{value}+00")
            } else {
                value
            };
            Some((*ours, value))
        })
        .collect()
}

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn get(&self, variable: &str) -> Option<String> {
        (self.lookup)(variable)
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
    }

    fn error(&self, variable: &'static str, problem: &str) -> ContainerEnvError {
        ContainerEnvError {
            variable,
            value: self.get(variable).unwrap_or_default(),
            problem: problem.to_string(),
        }
    }

    fn required(&self, variable: &'static str, because: &str) -> Result<String, ContainerEnvError> {
        self.get(variable)
            .ok_or_else(|| self.error(variable, &format!("is needed with {because}")))
    }

    fn choice(
        &self,
        variable: &'static str,
        accepted: &'static [&'static str],
        default: &'static str,
    ) -> Result<&'static str, ContainerEnvError> {
        let Some(value) = self.get(variable) else {
            return Ok(default);
        };
        accepted
            .iter()
            .find(|name| name.eq_ignore_ascii_case(&value))
            .copied()
            .ok_or_else(|| {
                self.error(
                    variable,
                    &format!("accepted values are {}", accepted.join(", ")),
                )
            })
    }

    fn time_of_day(
        &self,
        variable: &'static str,
        setting: &'static str,
        default: &str,
    ) -> Result<NaiveTime, ContainerEnvError> {
        let value = self.get(variable).unwrap_or_else(|| default.into());
        crate::config::calendar::parse_time_of_day(setting, &value)
            .map_err(|_| self.error(variable, "use a UTC time of day as HH:MM, like 02:00"))
    }

    fn boolean(&self, variable: &'static str, default: bool) -> Result<bool, ContainerEnvError> {
        let Some(value) = self.get(variable) else {
            return Ok(default);
        };
        match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(self.error(
                variable,
                &format!(
                    "accepted values are {} (or yes, no, on, off, 1, 0)",
                    BOOLEANS.join(", ")
                ),
            )),
        }
    }

    fn number(
        &self,
        variable: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ContainerEnvError> {
        let Some(value) = self.get(variable) else {
            return Ok(default);
        };
        value
            .parse::<u64>()
            .ok()
            .filter(|number| range.contains(number))
            .ok_or_else(|| {
                self.error(
                    variable,
                    &format!(
                        "use a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            })
    }
}

fn bucket_name(env: &Env, variable: &'static str, bucket: &str) -> Result<(), ContainerEnvError> {
    let valid = bucket.len() >= 3
        && bucket.len() <= 222
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c));
    if valid {
        Ok(())
    } else {
        Err(env.error(
            variable,
            "use the bucket's name alone (lowercase letters, digits, - . _), without s3:// or gs://",
        ))
    }
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// The environment as a map, for tests and for the CLI's listing.
pub fn lookup_in(map: &BTreeMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_for(pairs: &[(&str, &str)]) -> Result<ContainerSettings, ContainerEnvError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        container_settings(lookup_in(&map))
    }

    fn value<'a>(settings: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        settings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn defaults_are_the_playbooks() {
        let rendered = settings_for(&[]).unwrap();
        let s = &rendered.settings;
        assert_eq!(value(s, names::REPOSITORY), Some("/backups"));
        assert_eq!(value(s, names::COMPRESSION), Some("gzip"));
        assert_eq!(value(s, names::ENCRYPTION), Some("none"));
        assert_eq!(value(s, names::RETENTION_DAYS), Some("30"));
        assert_eq!(value(s, names::HOURLY_INTERVAL), Some("3600s"));
        assert_eq!(value(s, names::DAILY_TIME), Some("02:00"));
        assert_eq!(value(s, names::WEEKLY_DAY), Some(""));
        assert_eq!(value(s, names::DUMP_SCHEDULE), Some("30 2 * * *"));
        assert_eq!(value(s, "archive_mode"), Some("on"));
        assert_eq!(value(s, "archive_timeout"), Some("300s"));
        assert_eq!(value(s, names::DATABASE), Some("postgres"));
        assert!(rendered.secrets.is_empty());
        assert_eq!(
            (rendered.user.as_str(), rendered.database.as_str()),
            ("postgres", "postgres")
        );
        // Every value the image writes is one the server itself accepts.
        for (name, value) in s {
            if let Some(setting) = name.strip_prefix("sc_backup.") {
                assert!(!setting.is_empty() && !value.contains('\n'));
            }
        }
    }

    #[test]
    fn the_s3_example_with_pitr() {
        let rendered = settings_for(&[
            ("POSTGRES_DB", "simcorp"),
            ("POSTGRES_USER", "simcorp"),
            ("BACKUP_STORAGE", "s3"),
            ("S3_BUCKET", "simcorp-backups"),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very secret"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("POSTGRES_ENABLE_WAL_ARCHIVING", "true"),
            ("COMPRESSION", "zstd"),
            ("WEEKLY_BACKUP", "true"),
            ("WEEKLY_DAY", "0"),
            ("WEEKLY_TIME", "03:30"),
        ])
        .unwrap();
        let s = &rendered.settings;
        // Locally and offsite: the backups volume, and the bucket as repository 2.
        assert_eq!(value(s, names::REPOSITORY), Some("/backups"));
        assert_eq!(
            value(s, "sc_backup.repository2"),
            Some("s3://simcorp-backups")
        );
        assert_eq!(value(s, "sc_backup.repository2_retention_days"), None);
        assert_eq!(value(s, names::S3_REGION), Some("eu-west-1"));
        assert_eq!(value(s, names::COMPRESSION), Some("zstd"));
        assert_eq!(value(s, names::WEEKLY_DAY), Some("sunday"));
        assert_eq!(value(s, names::WEEKLY_TIME), Some("03:30"));
        assert_eq!(value(s, names::DATABASE), Some("simcorp"));
        assert_eq!(
            rendered.secrets[1],
            (names::S3_SECRET_ACCESS_KEY, Secret::new("very secret"))
        );
        // Secrets only in the secrets file.
        assert!(s
            .iter()
            .all(|(_, v)| v != "very secret" && v != "AKIAEXAMPLE"));
    }

    /// Local 7 days, offsite a year, both encrypted with the one key: the playbook's
    /// production example. A bad value names its variable.
    #[test]
    fn local_and_offsite_keep_their_own_retention() {
        let rendered = settings_for(&[
            ("BACKUP_STORAGE", "s3"),
            ("S3_BUCKET", "offsite"),
            ("BACKUP_DIR", "/var/backups"),
            ("RETENTION_DAYS", "7"),
            ("OFFSITE_RETENTION_DAYS", "365"),
            ("ENCRYPTION", "true"),
            ("ENCRYPTION_KEY", "one key"),
        ])
        .unwrap();
        let s = &rendered.settings;
        assert_eq!(value(s, names::REPOSITORY), Some("/var/backups"));
        assert_eq!(value(s, "sc_backup.repository2"), Some("s3://offsite"));
        assert_eq!(value(s, names::RETENTION_DAYS), Some("7"));
        assert_eq!(
            value(s, "sc_backup.repository2_retention_days"),
            Some("365")
        );
        assert_eq!(value(s, names::ENCRYPTION), Some("age"));
        // Repository 2 inherits the encryption and its passphrase.
        assert_eq!(value(s, "sc_backup.repository2_encryption"), None);
        for (variables, said) in [
            (
                &[("OFFSITE_RETENTION_DAYS", "a year")][..],
                "OFFSITE_RETENTION_DAYS=\"a year\"",
            ),
            (&[("BACKUP_DIR", "backups")][..], "BACKUP_DIR=\"backups\""),
            (
                &[("BACKUP_LOCAL", "perhaps")][..],
                "BACKUP_LOCAL=\"perhaps\"",
            ),
        ] {
            let mut all = vec![("BACKUP_STORAGE", "s3"), ("S3_BUCKET", "offsite")];
            all.extend_from_slice(variables);
            let error = settings_for(&all).unwrap_err().to_string();
            assert!(error.starts_with(said), "{error}");
        }
    }

    #[test]
    fn the_gcs_example_with_encryption() {
        let rendered = settings_for(&[
            ("BACKUP_STORAGE", "gcs"),
            ("BACKUP_LOCAL", "false"),
            ("GCS_BUCKET", "simcorp-backups"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/secrets/gcs-key.json"),
            ("BACKUP_ENCRYPTION", "true"),
            ("BACKUP_ENCRYPTION_KEY", "it's a passphrase"),
        ])
        .unwrap();
        let s = &rendered.settings;
        // The bucket alone (BACKUP_LOCAL=false).
        assert_eq!(value(s, names::REPOSITORY), Some("gs://simcorp-backups"));
        assert_eq!(value(s, "sc_backup.repository2"), None);
        assert_eq!(
            value(s, names::GCS_CREDENTIALS),
            Some("/secrets/gcs-key.json")
        );
        assert_eq!(value(s, names::ENCRYPTION), Some("age"));
        let directory = tempfile::tempdir().unwrap();
        rendered.write_files(directory.path()).unwrap();
        let secrets = fs::read_to_string(directory.path().join(SECRETS_FILE)).unwrap();
        assert!(secrets.ends_with("\nsc_backup.encryption_passphrase = 'it''s a passphrase'\n"));
        let settings = fs::read_to_string(directory.path().join(SETTINGS_FILE)).unwrap();
        assert!(settings.contains("\nsc_backup.repository = 'gs://simcorp-backups'\n"));
        assert!(!settings.contains("passphrase"));
        // The secrets are not settings: the file is named, not included, and reads as one.
        let config = fs::read_to_string(directory.path().join(CONFIG_FILE)).unwrap();
        assert!(
            !config.contains(&format!("include '{SECRETS_FILE}'")),
            "{config}"
        );
        assert!(config.contains(&format!(
            "sc_backup.secrets_file = '{}'",
            directory.path().join(SECRETS_FILE).display()
        )));
        let read = crate::config::read_secrets_file(&directory.path().join(SECRETS_FILE)).unwrap();
        assert_eq!(
            read.encryption_passphrase.unwrap().expose(),
            "it's a passphrase"
        );
        for name in [CONFIG_FILE, SETTINGS_FILE, SECRETS_FILE] {
            let mode = fs::metadata(directory.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        // No password: no password file, and a stale one is removed.
        assert!(!directory.path().join(PASSWORD_FILE).exists());
        let with_password = settings_for(&[("POSTGRES_PASSWORD", "pw")]).unwrap();
        with_password.write_files(directory.path()).unwrap();
        assert_eq!(
            fs::read_to_string(directory.path().join(PASSWORD_FILE)).unwrap(),
            "pw"
        );
        rendered.write_files(directory.path()).unwrap();
        assert!(!directory.path().join(PASSWORD_FILE).exists());
        assert_eq!(
            fs::read_dir(directory.path()).unwrap().count(),
            3,
            "no temporary file left"
        );
    }

    #[test]
    fn backup_types_choose_base_backups_dumps_or_both() {
        let incremental = settings_for(&[("BACKUP_TYPE", "incremental")])
            .unwrap()
            .settings;
        assert_eq!(value(&incremental, names::HOURLY_TYPE), Some("incremental"));
        assert_eq!(value(&incremental, names::DAILY_TIME), Some("02:00"));
        assert_eq!(
            value(&incremental, names::DUMP_SCHEDULE),
            Some("30 2 * * *")
        );
        let physical = settings_for(&[("BACKUP_TYPE", "physical")])
            .unwrap()
            .settings;
        assert_eq!(value(&physical, names::HOURLY_TYPE), Some("full"));
        assert_eq!(value(&physical, names::DUMP_SCHEDULE), Some(""));
        assert_eq!(value(&physical, names::DAILY_TIME), Some("02:00"));
        let logical = settings_for(&[("BACKUP_TYPE", "logical"), ("HOURLY_INTERVAL", "7200")])
            .unwrap()
            .settings;
        assert_eq!(value(&logical, names::HOURLY_INTERVAL), Some("0"));
        assert_eq!(value(&logical, names::DAILY_TIME), Some(""));
        assert_eq!(value(&logical, names::DUMP_SCHEDULE), Some("0 */2 * * *"));
        let daily_dumps = settings_for(&[
            ("BACKUP_TYPE", "LOGICAL"),
            ("HOURLY_BACKUP", "false"),
            ("DAILY_TIME", "23:45"),
        ])
        .unwrap()
        .settings;
        assert_eq!(
            value(&daily_dumps, names::DUMP_SCHEDULE),
            Some("45 23 * * *")
        );
        // The dump half an hour after a late daily backup wraps past midnight.
        let late = settings_for(&[("DAILY_TIME", "23:45")]).unwrap().settings;
        assert_eq!(value(&late, names::DUMP_SCHEDULE), Some("15 0 * * *"));
        let nothing = settings_for(&[("HOURLY_BACKUP", "no"), ("DAILY_BACKUP", "0")])
            .unwrap()
            .settings;
        assert_eq!(value(&nothing, names::HOURLY_INTERVAL), Some("0s"));
        assert_eq!(value(&nothing, names::DAILY_TIME), Some(""));
        assert_eq!(value(&nothing, names::DUMP_SCHEDULE), Some(""));
    }

    #[test]
    fn bad_values_name_the_variable_and_what_it_accepts() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("COMPRESSION", "brotli")],
                "COMPRESSION=\"brotli\": accepted values are none, gzip, zstd",
            ),
            (
                &[("BACKUP_STORAGE", "azure")],
                "BACKUP_STORAGE=\"azure\": accepted values are local, s3, gcs",
            ),
            (
                &[("BACKUP_STORAGE", "s3")],
                "S3_BUCKET: is needed with BACKUP_STORAGE=s3",
            ),
            (
                &[("BACKUP_STORAGE", "s3"), ("S3_BUCKET", "s3://bucket")],
                "S3_BUCKET=\"s3://bucket\": use the bucket's name alone",
            ),
            (
                &[("HOURLY_INTERVAL", "1h")],
                "HOURLY_INTERVAL=\"1h\": use a whole number from 60 to 2678400",
            ),
            (
                &[("WEEKLY_BACKUP", "true"), ("WEEKLY_DAY", "7")],
                "WEEKLY_DAY=\"7\": use a whole number from 0 to 6",
            ),
            (
                &[("DAILY_TIME", "2am")],
                "DAILY_TIME=\"2am\": use a UTC time of day as HH:MM",
            ),
            (
                &[("WAL_ARCHIVE_ENABLED", "maybe")],
                "WAL_ARCHIVE_ENABLED=\"maybe\": accepted values are true, false",
            ),
            (
                &[("RETENTION_DAYS", "-1")],
                "RETENTION_DAYS=\"-1\": use a whole number",
            ),
            (
                &[("BACKUP_TYPE", "snapshot")],
                "BACKUP_TYPE=\"snapshot\": accepted values are full, incremental, differential, physical, logical",
            ),
            (
                &[("ENCRYPTION", "true")],
                "ENCRYPTION_KEY: is needed when ENCRYPTION=true",
            ),
            (
                &[("POSTGRES_USER", "bad user")],
                "POSTGRES_USER=\"bad user\": use a role name",
            ),
            (
                &[("BACKUP_DIR", "backups")],
                "BACKUP_DIR=\"backups\": use an absolute",
            ),
        ];
        for (pairs, expected) in cases {
            let message = settings_for(pairs).unwrap_err().to_string();
            assert!(
                message.starts_with(expected),
                "{message} (expected {expected})"
            );
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn the_playbooks_restore_variables_map_unless_ours_are_set() {
        let map: BTreeMap<String, String> = [
            ("FORCE_RESTORE", "true"),
            ("SKIP_VERIFY", "true"),
            ("SC_BACKUP_SKIP_VERIFY", "false"),
            ("TARGET_TIME", "2026-11-24 10:41:00"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            restore_variables(lookup_in(&map)),
            vec![
                ("SC_BACKUP_FORCE", "true".to_string()),
                (
                    "SC_BACKUP_TARGET_TIME",
                    "2026-11-24 10:41:00+00".to_string()
                ),
            ]
        );
        let with_offset: BTreeMap<String, String> = [(
            "TARGET_TIME".to_string(),
            "2026-11-24 10:41:00+02".to_string(),
        )]
        .into();
        assert_eq!(
            restore_variables(lookup_in(&with_offset)),
            vec![(
                "SC_BACKUP_TARGET_TIME",
                "2026-11-24 10:41:00+02".to_string()
            )]
        );
        // Unreadable: passed on as it is, for restore's own error.
        let unreadable: BTreeMap<String, String> =
            [("TARGET_TIME".to_string(), "yesterday".to_string())].into();
        assert_eq!(
            restore_variables(lookup_in(&unreadable)),
            vec![("SC_BACKUP_TARGET_TIME", "yesterday".to_string())]
        );
    }

    #[test]
    fn secrets_never_reach_the_message() {
        let message = settings_for(&[
            ("BACKUP_STORAGE", "s3"),
            ("S3_BUCKET", "b-1"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
        ])
        .unwrap_err()
        .to_string();
        assert!(message.starts_with("AWS_ACCESS_KEY_ID"), "{message}");
        assert!(!message.contains("hunter2"));
    }
}
