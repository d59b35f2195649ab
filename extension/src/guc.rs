//! The `sc_backup.*` settings: declared here, registered once in `_PG_init`, read by
//! archiving, backups and the scheduler alike.
//!
//! All are `PGC_SIGHUP`: set in postgresql.conf or with ALTER SYSTEM, applied on reload, never
//! per session (the archiver and the backups must agree on one repository). Values are
//! validated when set: enums by PostgreSQL itself (which lists the valid values), the
//! repository by a check hook using the same parser as the CLI.

use std::ffi::{c_char, c_void, CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::{pg_guard, pg_sys, PostgresGucEnum};
use sc_backup_core::backup::BackupKind;
use sc_backup_core::config::calendar;
use sc_backup_core::config::{
    names, CompressionAlgorithm, ConfigError, EncryptionMode, RawSettings, RepositoryLocation,
    Secret, Settings,
};
use sc_backup_core::ops::schedule::{ScheduleKind, ScheduleSettings};

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum CompressionGuc {
    #[name = c"none"]
    None,
    #[name = c"gzip"]
    Gzip,
    #[name = c"zstd"]
    Zstd,
}

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum EncryptionGuc {
    #[name = c"none"]
    None,
    #[name = c"age"]
    Age,
}

pub static REPOSITORY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static COMPRESSION: GucSetting<CompressionGuc> =
    GucSetting::<CompressionGuc>::new(CompressionGuc::Zstd);
pub static COMPRESSION_LEVEL: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static ENCRYPTION: GucSetting<EncryptionGuc> =
    GucSetting::<EncryptionGuc>::new(EncryptionGuc::None);
pub static ENCRYPTION_PASSPHRASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static SECRETS_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static BACKUP_PARALLELISM: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static ARCHIVE_PARALLELISM: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static S3_REGION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static S3_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static S3_URI_STYLE: GucSetting<S3UriStyleGuc> =
    GucSetting::<S3UriStyleGuc>::new(S3UriStyleGuc::Auto);
pub static S3_ACCESS_KEY_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static S3_SECRET_ACCESS_KEY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static GCS_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static GCS_CREDENTIALS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(30);
pub static RETENTION_FULL: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static SCHEDULER: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
pub static HOURLY_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(3600);
pub static DAILY_TIME: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"02:00"));
pub static WEEKLY_DAY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WEEKLY_TIME: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"02:00"));
pub static SCHEDULE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static HOURLY_TYPE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"full"));
pub static DAILY_TYPE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"full"));
pub static WEEKLY_TYPE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"full"));
pub static SCHEDULE_TYPE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"full"));
pub static RETRY_DELAY: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static METRICS_LISTEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static VERIFY_SCHEDULE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static VERIFY_DIRECTORY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"/var/tmp"));
pub static DUMP_SCHEDULE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static DUMP_DATABASES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"*"));

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum S3UriStyleGuc {
    #[name = c"auto"]
    Auto,
    #[name = c"path"]
    Path,
    #[name = c"host"]
    Host,
}

pub fn register() {
    // Safety: the check hook is guarded by #[pg_guard] and never panics on any input.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"sc_backup.repository",
            c"Where WAL and backups are stored.",
            c"An absolute directory path, a file:// URL, s3://bucket/prefix or gs://bucket/prefix.",
            &REPOSITORY,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_repository),
            None,
            None,
        );
    }
    GucRegistry::define_enum_guc(
        c"sc_backup.compression",
        c"Compression of archived WAL and backup files.",
        c"none, gzip or zstd.",
        &COMPRESSION,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sc_backup.compression_level",
        c"Compression level; 0 uses the algorithm's default.",
        c"gzip: 1..9 (default 6); zstd: 1..19 (default 3).",
        &COMPRESSION_LEVEL,
        0,
        19,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"sc_backup.encryption",
        c"Encryption of archived WAL and backup files.",
        c"none, or age (X25519 + ChaCha20-Poly1305). Fixed when the repository is created.",
        &ENCRYPTION,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sc_backup.backup_parallelism",
        c"Files copied at once by a base backup.",
        c"Each worker reads, compresses, encrypts and stores one file at a time.",
        &BACKUP_PARALLELISM,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sc_backup.archive_parallelism",
        c"WAL files the archive module works on at once.",
        c"Worker threads compress, encrypt and store the next ready WAL files while the archiver \
          waits for the current one. 0 archives each file inside the archiver's callback.",
        &ARCHIVE_PARALLELISM,
        0,
        16,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"sc_backup.s3_region",
        c"Region of an s3:// repository.",
        c"Default: AWS_REGION or AWS_DEFAULT_REGION from the environment, else us-east-1.",
        &S3_REGION,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"sc_backup.s3_endpoint",
        c"Endpoint of an S3-compatible store, like http://127.0.0.1:9000.",
        c"Default: AWS_ENDPOINT_URL from the environment, else AWS.",
        &S3_ENDPOINT,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"sc_backup.s3_uri_style",
        c"S3 addressing: path (endpoint/bucket/key), host (bucket.endpoint/key) or auto.",
        c"auto uses path style with a custom endpoint and host style on AWS.",
        &S3_URI_STYLE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"sc_backup.s3_access_key_id",
        c"Access key id for an s3:// repository (default: AWS_ACCESS_KEY_ID).",
        c"",
        &S3_ACCESS_KEY_ID,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    // Safety: the show hook reads only this setting and never fails.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"sc_backup.s3_secret_access_key",
            c"Secret access key for an s3:// repository (deprecated: use sc_backup.secrets_file).",
            c"Shown to nobody; put it in the file sc_backup.secrets_file names instead.",
            &S3_SECRET_ACCESS_KEY,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            None,
            None,
            Some(show_s3_secret_access_key),
        );
    }
    GucRegistry::define_string_guc(
        c"sc_backup.gcs_endpoint",
        c"Endpoint of a gs:// repository, for emulators.",
        c"Default: STORAGE_EMULATOR_HOST from the environment, else https://storage.googleapis.com.",
        &GCS_ENDPOINT,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"sc_backup.gcs_credentials",
        c"Service account JSON key file of a gs:// repository (default: GOOGLE_APPLICATION_CREDENTIALS).",
        c"Readable only by superusers.",
        &GCS_CREDENTIALS,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    // Safety: the show hook reads only this setting and never fails.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"sc_backup.encryption_passphrase",
            c"Passphrase protecting the repository key (deprecated: use sc_backup.secrets_file).",
            c"Shown to nobody; put it in the file sc_backup.secrets_file names instead.",
            &ENCRYPTION_PASSPHRASE,
            GucContext::Sighup,
            // SUPERUSER_ONLY still lets pg_read_all_settings (so every pg_monitor account)
            // SHOW it: the show hook masks it for everyone, and NO_SHOW_ALL keeps it out of
            // pg_settings (whose reset_val no show hook covers) and SHOW ALL.
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            None,
            None,
            Some(show_encryption_passphrase),
        );
        GucRegistry::define_string_guc_with_hooks(
            c"sc_backup.secrets_file",
            c"File holding the repository passphrase and the S3 secret key.",
            c"postgresql.conf syntax (encryption_passphrase = '...', s3_access_key_id, s3_secret_access_key); a regular file owned by the PostgreSQL OS user, mode 0600, outside the data directory. A relative path is relative to the data directory.",
            &SECRETS_FILE,
            GucContext::Sighup,
            GucFlags::SUPERUSER_ONLY,
            Some(check_secrets_file),
            None,
            None,
        );
    }
    register_retention_and_scheduler();
}

fn register_retention_and_scheduler() {
    GucRegistry::define_int_guc(
        c"sc_backup.retention_days",
        c"Backups that ended less than this many days ago are kept by expiry.",
        c"sc_expire(), sc-backup expire and the scheduler use it; the newest backup is never expired.",
        &RETENTION_DAYS,
        0,
        36_500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sc_backup.retention_full",
        c"Expiry keeps at least this many of the newest full backups, whatever their age.",
        c"Every backup taken since the oldest of them stays too; for logical dumps, the newest this many dumps of each database.",
        &RETENTION_FULL,
        1,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"sc_backup.scheduler",
        c"Whether the scheduler worker takes scheduled backups.",
        c"Off: the worker only serves metrics and keeps the audit table up to date.",
        &SCHEDULER,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"sc_backup.database",
        c"Database the scheduler worker connects to; CREATE EXTENSION sc_backup there.",
        c"A change restarts the worker.",
        &DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"sc_backup.hourly_interval",
        c"Interval between hourly backups; 0 turns them off.",
        c"Counted from the start of the last successful hourly backup.",
        &HOURLY_INTERVAL,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"sc_backup.retry_delay",
        c"Delay before retrying a failed scheduled backup; doubles per failure, at most 1h.",
        c"",
        &RETRY_DELAY,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    // Safety: the check hooks are guarded by #[pg_guard] and never panic on any input.
    unsafe {
        for (name, short, long, setting, hook) in [
            (
                c"sc_backup.daily_time",
                c"UTC time of the daily backup, HH:MM; empty turns it off.",
                c"",
                &DAILY_TIME,
                check_daily_time as StringCheckHook,
            ),
            (
                c"sc_backup.weekly_day",
                c"Day of the weekly backup (sunday..saturday); empty (the default) turns it off.",
                c"",
                &WEEKLY_DAY,
                check_weekly_day,
            ),
            (
                c"sc_backup.weekly_time",
                c"UTC time of the weekly backup, HH:MM.",
                c"",
                &WEEKLY_TIME,
                check_weekly_time,
            ),
            (
                c"sc_backup.hourly_type",
                c"What the hourly backups take: full, incremental (changes since the newest backup) or differential (since the newest full).",
                c"",
                &HOURLY_TYPE,
                check_hourly_type,
            ),
            (
                c"sc_backup.daily_type",
                c"What the daily backups take: full, incremental or differential.",
                c"",
                &DAILY_TYPE,
                check_daily_type,
            ),
            (
                c"sc_backup.weekly_type",
                c"What the weekly backups take: full, incremental or differential.",
                c"",
                &WEEKLY_TYPE,
                check_weekly_type,
            ),
            (
                c"sc_backup.schedule_type",
                c"What the backups of sc_backup.schedule take: full, incremental or differential.",
                c"",
                &SCHEDULE_TYPE,
                check_schedule_type,
            ),
            (
                c"sc_backup.schedule",
                c"A cron expression (minute hour day month weekday, UTC); when set it replaces the hourly, daily and weekly schedules.",
                c"Like '0 2 * * *'. Empty (the default): the built-in schedules apply.",
                &SCHEDULE,
                check_schedule,
            ),
            (
                c"sc_backup.metrics_listen",
                c"Address the scheduler worker serves Prometheus metrics on, like 127.0.0.1:9187; empty turns it off.",
                c"",
                &METRICS_LISTEN,
                check_metrics_listen,
            ),
            (
                c"sc_backup.verify_schedule",
                c"A cron expression (UTC) for the scheduler's restore test of the newest backup; empty (the default) turns it off.",
                c"Like '0 4 * * 0' (Sundays 04:00). The backup is restored into a sandbox under sc_backup.verify_directory and every database checked.",
                &VERIFY_SCHEDULE,
                check_verify_schedule,
            ),
            (
                c"sc_backup.verify_directory",
                c"Where the scheduler's restore test creates its sandbox; needs room for the backup plus 1 GiB.",
                c"",
                &VERIFY_DIRECTORY,
                check_verify_directory,
            ),
            (
                c"sc_backup.dump_schedule",
                c"A cron expression (UTC) for the scheduler's logical dumps (pg_dump) of sc_backup.dump_databases; empty (the default) turns them off.",
                c"Like '30 2 * * *'. Each database becomes <db>_full_<YYYYmmdd_HHMMSS>.sql.gz with .sha256 and .meta in the repository, plus the roles and tablespaces once per run.",
                &DUMP_SCHEDULE,
                check_dump_schedule,
            ),
            (
                c"sc_backup.dump_databases",
                c"Which databases the scheduled logical dumps take: '*' (the default) is every database that accepts connections except the templates; else a comma-separated list of names.",
                c"",
                &DUMP_DATABASES,
                check_dump_databases,
            ),
        ] {
            GucRegistry::define_string_guc_with_hooks(
                name,
                short,
                long,
                setting,
                GucContext::Sighup,
                GucFlags::default(),
                Some(hook),
                None,
                None,
            );
        }
    }
}

type StringCheckHook = unsafe extern "C-unwind" fn(
    *mut *mut c_char,
    *mut *mut c_void,
    pg_sys::GucSource::Type,
) -> bool;

/// The scheduler's settings, as the core computes schedules from them.
pub fn schedule_settings() -> ScheduleSettings {
    ScheduleSettings {
        hourly_interval_seconds: HOURLY_INTERVAL.get().max(0) as u64,
        daily_time: cstring_setting(&DAILY_TIME).unwrap_or_default(),
        weekly_day: cstring_setting(&WEEKLY_DAY).unwrap_or_default(),
        weekly_time: cstring_setting(&WEEKLY_TIME).unwrap_or_else(|| "02:00".into()),
        cron: cstring_setting(&SCHEDULE).unwrap_or_default(),
        retry_delay: std::time::Duration::from_secs(RETRY_DELAY.get().max(1) as u64),
    }
}

/// Runs `validate` on a string setting's new value (empty always passes: "off"), and turns
/// its error into PostgreSQL's "invalid value for parameter" detail and hint.
unsafe fn check_string(
    newval: *mut *mut c_char,
    validate: impl Fn(&str) -> Result<(), ConfigError>,
) -> bool {
    if newval.is_null() || (*newval).is_null() {
        return true;
    }
    let value = CStr::from_ptr(*newval).to_string_lossy().into_owned();
    if value.trim().is_empty() {
        return true;
    }
    match validate(&value) {
        Ok(()) => true,
        Err(error) => {
            set_check_error(&error.to_string(), error.hint().as_deref());
            false
        }
    }
}

/// A GUC check hook (C ABI, guarded) that runs `check_string` with `validate`.
macro_rules! string_check_hook {
    ($name:ident, $validate:expr) => {
        #[pg_guard]
        unsafe extern "C-unwind" fn $name(
            newval: *mut *mut c_char,
            _extra: *mut *mut c_void,
            _source: pg_sys::GucSource::Type,
        ) -> bool {
            check_string(newval, $validate)
        }
    };
}

// The file must exist, be private and parse; its content is never part of a message.
string_check_hook!(check_secrets_file, |v| {
    sc_backup_core::config::read_secrets_file(&std::path::Path::new(".").join(v)).map(drop)
});

/// What SHOW, current_setting() and every other reader see of a secret setting: whether it is
/// set, never its value.
fn masked(setting: &GucSetting<Option<CString>>) -> *const c_char {
    if cstring_setting(setting).is_some() {
        c"********".as_ptr()
    } else {
        c"".as_ptr()
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn show_encryption_passphrase() -> *const c_char {
    masked(&ENCRYPTION_PASSPHRASE)
}

#[pg_guard]
unsafe extern "C-unwind" fn show_s3_secret_access_key() -> *const c_char {
    masked(&S3_SECRET_ACCESS_KEY)
}

/// At server start: a secret set as a setting works, but lives in configuration files that
/// base backups copy (postgresql.auto.conf, when set with ALTER SYSTEM) and that
/// pg_read_server_files can read; the secrets file is where it belongs.
pub fn warn_about_secret_settings() {
    for (setting, name) in [
        (&ENCRYPTION_PASSPHRASE, names::ENCRYPTION_PASSPHRASE),
        (&S3_SECRET_ACCESS_KEY, names::S3_SECRET_ACCESS_KEY),
    ] {
        if cstring_setting(setting).is_some() {
            pgrx::pg_sys::panic::ErrorReport::new(
                pgrx::PgSqlErrorCode::ERRCODE_WARNING_DEPRECATED_FEATURE,
                format!("sc_backup: {name} is set as a configuration setting"),
                "sc_backup",
            )
            .set_hint(format!(
                "Move it into the file {} names (owned by the PostgreSQL OS user, mode 0600, outside the data directory), and remove the setting.",
                names::SECRETS_FILE
            ))
            .report(pgrx::PgLogLevel::WARNING);
        }
    }
}

string_check_hook!(check_daily_time, |v| {
    calendar::parse_time_of_day(names::DAILY_TIME, v).map(drop)
});
string_check_hook!(check_weekly_time, |v| {
    calendar::parse_time_of_day(names::WEEKLY_TIME, v).map(drop)
});
string_check_hook!(check_weekly_day, |v| {
    calendar::parse_weekday(names::WEEKLY_DAY, v).map(drop)
});
/// A backup type setting: full, incremental or differential.
fn parse_backup_kind(setting: &'static str, value: &str) -> Result<BackupKind, ConfigError> {
    BackupKind::parse(value).ok_or_else(|| ConfigError::InvalidChoice {
        setting,
        value: value.to_string(),
        valid: BackupKind::NAMES,
    })
}

string_check_hook!(check_hourly_type, |v| parse_backup_kind(
    names::HOURLY_TYPE,
    v
)
.map(drop));
string_check_hook!(check_daily_type, |v| parse_backup_kind(
    names::DAILY_TYPE,
    v
)
.map(drop));
string_check_hook!(check_weekly_type, |v| parse_backup_kind(
    names::WEEKLY_TYPE,
    v
)
.map(drop));
string_check_hook!(check_schedule_type, |v| {
    parse_backup_kind(names::SCHEDULE_TYPE, v).map(drop)
});

/// What a scheduled backup for `schedule` takes (full when unset).
pub fn backup_kind_for(schedule: ScheduleKind) -> BackupKind {
    let (setting, name) = match schedule {
        ScheduleKind::Hourly => (&HOURLY_TYPE, names::HOURLY_TYPE),
        ScheduleKind::Daily => (&DAILY_TYPE, names::DAILY_TYPE),
        ScheduleKind::Weekly => (&WEEKLY_TYPE, names::WEEKLY_TYPE),
        ScheduleKind::Cron => (&SCHEDULE_TYPE, names::SCHEDULE_TYPE),
    };
    cstring_setting(setting)
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| parse_backup_kind(name, &v).ok())
        .unwrap_or(BackupKind::Full)
}

string_check_hook!(check_schedule, |v| {
    calendar::parse_cron(names::SCHEDULE, v).map(drop)
});
string_check_hook!(check_metrics_listen, |v| {
    v.trim()
        .parse::<std::net::SocketAddr>()
        .map(drop)
        .map_err(|_| ConfigError::InvalidSchedule {
            setting: names::METRICS_LISTEN,
            value: v.to_string(),
            reason: "expected an IP address and port, like 127.0.0.1:9187".into(),
        })
});
string_check_hook!(check_verify_schedule, |v| {
    calendar::parse_cron(names::VERIFY_SCHEDULE, v).map(drop)
});
string_check_hook!(check_dump_schedule, |v| {
    calendar::parse_cron(names::DUMP_SCHEDULE, v).map(drop)
});
string_check_hook!(check_dump_databases, |v| {
    if v.split(',').all(|name| !name.trim().is_empty()) {
        Ok(())
    } else {
        Err(ConfigError::InvalidSchedule {
            setting: names::DUMP_DATABASES,
            value: v.to_string(),
            reason: "expected '*' or a comma-separated list of database names".into(),
        })
    }
});
string_check_hook!(check_verify_directory, |v| {
    if v.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::InvalidSchedule {
            setting: names::VERIFY_DIRECTORY,
            value: v.to_string(),
            reason: "the path must be absolute".into(),
        })
    }
});
// Empty means "not configured" and passes; the message is the CLI's.
string_check_hook!(check_repository, |v| v
    .parse::<RepositoryLocation>()
    .map(drop));

pub fn cstring_setting(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .map(|value| value.to_string_lossy().into_owned())
        .filter(|value| !value.is_empty())
}

/// The current settings, validated. Called in the archiver and in backends.
/// Worker threads for the archive module (`sc_backup.archive_parallelism`).
pub fn archive_parallelism() -> usize {
    ARCHIVE_PARALLELISM.get().max(0) as usize
}

pub fn settings() -> Result<Settings, ConfigError> {
    let compression = match COMPRESSION.get() {
        CompressionGuc::None => CompressionAlgorithm::None,
        CompressionGuc::Gzip => CompressionAlgorithm::Gzip,
        CompressionGuc::Zstd => CompressionAlgorithm::Zstd,
    };
    let encryption = match ENCRYPTION.get() {
        EncryptionGuc::None => EncryptionMode::None,
        EncryptionGuc::Age => EncryptionMode::Age,
    };
    let raw = RawSettings {
        repository: cstring_setting(&REPOSITORY),
        compression: Some(compression.name().to_string()),
        compression_level: Some(COMPRESSION_LEVEL.get().to_string()),
        encryption: Some(encryption.name().to_string()),
        encryption_passphrase: cstring_setting(&ENCRYPTION_PASSPHRASE).map(Secret::new),
        s3_region: cstring_setting(&S3_REGION),
        s3_endpoint: cstring_setting(&S3_ENDPOINT),
        s3_uri_style: Some(
            match S3_URI_STYLE.get() {
                S3UriStyleGuc::Auto => "auto",
                S3UriStyleGuc::Path => "path",
                S3UriStyleGuc::Host => "host",
            }
            .to_string(),
        ),
        s3_access_key_id: cstring_setting(&S3_ACCESS_KEY_ID),
        s3_secret_access_key: cstring_setting(&S3_SECRET_ACCESS_KEY).map(Secret::new),
        gcs_endpoint: cstring_setting(&GCS_ENDPOINT),
        gcs_credentials: cstring_setting(&GCS_CREDENTIALS),
        retention_days: Some(RETENTION_DAYS.get().to_string()),
        retention_full: Some(RETENTION_FULL.get().to_string()),
        secrets_file: cstring_setting(&SECRETS_FILE),
    };
    // Every process of the server works in the data directory.
    let raw = raw.with_secrets_file(std::path::Path::new("."))?;
    Settings::from_raw(&raw).and_then(Settings::for_writing)
}

/// What GUC_check_errdetail()/GUC_check_errhint() do in C: PostgreSQL adds these to its
/// "invalid value for parameter" message.
unsafe fn set_check_error(detail: &str, hint: Option<&str>) {
    let detail = CString::new(detail.replace('\0', "")).unwrap_or_default();
    pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
    if let Some(hint) = hint {
        let hint = CString::new(hint.replace('\0', "")).unwrap_or_default();
        pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(hint.as_ptr());
    }
}

/// Every setting this module defines, for tests and documentation.
pub const DEFINED: &[&str] = &[
    names::REPOSITORY,
    names::COMPRESSION,
    names::COMPRESSION_LEVEL,
    names::ENCRYPTION,
    names::ENCRYPTION_PASSPHRASE,
    names::SECRETS_FILE,
    "sc_backup.backup_parallelism",
    "sc_backup.archive_parallelism",
    names::S3_REGION,
    names::S3_ENDPOINT,
    names::S3_URI_STYLE,
    names::S3_ACCESS_KEY_ID,
    names::S3_SECRET_ACCESS_KEY,
    names::GCS_ENDPOINT,
    names::GCS_CREDENTIALS,
    names::RETENTION_DAYS,
    names::RETENTION_FULL,
    names::SCHEDULER,
    names::DATABASE,
    names::HOURLY_INTERVAL,
    names::DAILY_TIME,
    names::WEEKLY_DAY,
    names::WEEKLY_TIME,
    names::SCHEDULE,
    names::HOURLY_TYPE,
    names::DAILY_TYPE,
    names::WEEKLY_TYPE,
    names::SCHEDULE_TYPE,
    names::RETRY_DELAY,
    names::METRICS_LISTEN,
    names::VERIFY_SCHEDULE,
    names::VERIFY_DIRECTORY,
    names::DUMP_SCHEDULE,
    names::DUMP_DATABASES,
];
