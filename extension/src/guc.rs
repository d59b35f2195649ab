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
use sc_backup_core::config::repositories::{RawRepository, FURTHER_REPOSITORY_NAMES};
use sc_backup_core::config::schedule::{RawScheduleSettings, ScheduleSettings};
use sc_backup_core::config::{
    defaults, names, CompressionAlgorithm, ConfigError, EncryptionMode, RawSettings,
    RepositoryLocation, Secret, Settings,
};
use sc_backup_core::ops::schedule::ScheduleKind;

/// `a == b`, where only a const fn may run (a setting's default is chosen at compile time).
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The variant of a GUC enum named as PostgreSQL lists it; an unknown name (a default in
/// `sc_backup_core::config::defaults` this enum lacks) fails the build.
macro_rules! named_variants {
    ($enum:ident { $($name:literal => $variant:ident),* $(,)? }) => {
        impl $enum {
            const fn named(name: &str) -> $enum {
                $(if same(name, $name) {
                    return $enum::$variant;
                })*
                panic!(concat!("a default that ", stringify!($enum), " does not list"))
            }
        }
    };
}

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

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum S3UriStyleGuc {
    #[name = c"auto"]
    Auto,
    #[name = c"path"]
    Path,
    #[name = c"host"]
    Host,
}

named_variants!(CompressionGuc { "none" => None, "gzip" => Gzip, "zstd" => Zstd });
named_variants!(EncryptionGuc { "none" => None, "age" => Age });
named_variants!(S3UriStyleGuc { "auto" => Auto, "path" => Path, "host" => Host });

/// Turns a `&str` constant (a setting's name or default from `sc_backup_core::config`) into
/// the `&'static CStr` PostgreSQL's GUC API takes, at compile time.
macro_rules! cstr {
    ($text:expr) => {{
        const TEXT: &str = $text;
        const BYTES: [u8; TEXT.len() + 1] = {
            let mut bytes = [0u8; TEXT.len() + 1];
            let mut i = 0;
            while i < TEXT.len() {
                bytes[i] = TEXT.as_bytes()[i];
                i += 1;
            }
            bytes
        };
        const C: &CStr = match CStr::from_bytes_with_nul(&BYTES) {
            Ok(c) => c,
            Err(_) => panic!("a setting's name or default holds a NUL byte"),
        };
        C
    }};
}

/// Declares every setting once: its static, its registration (all `PGC_SIGHUP`) and its name
/// in [`DEFINED`]. Names and defaults come from `sc_backup_core::config::{names, defaults}`,
/// which the CLI and the image read too.
macro_rules! settings {
    ($(
        $static:ident: $kind:ident<$ty:ty> = $default:expr, $name:expr,
        $short:literal, $long:literal, $flags:expr
        $(, range $min:expr, $max:expr)? $(, check $check:expr)? $(, show $show:expr)?;
    )*) => {
        $(pub static $static: GucSetting<$ty> = GucSetting::<$ty>::new($default);)*

        /// Every setting this module defines, for tests and documentation.
        pub const DEFINED: &[&str] = &[$($name),*];

        pub fn register() {
            $(settings!(@register $kind $static, cstr!($name), $short, $long, $flags
                $(, range $min, $max)? $(, check $check)? $(, show $show)?);)*
        }
    };
    (@register string $static:ident, $name:expr, $short:literal, $long:literal, $flags:expr
        $(, check $check:expr)? $(, show $show:expr)?) => {
        // Safety: the check hooks are guarded by #[pg_guard] and never panic on any input;
        // the show hooks read only their own setting and never fail.
        unsafe {
            GucRegistry::define_string_guc_with_hooks(
                $name, $short, $long, &$static, GucContext::Sighup, $flags,
                None $(.or(Some($check as StringCheckHook)))?, None,
                None $(.or(Some($show as StringShowHook)))?,
            )
        }
    };
    (@register int $static:ident, $name:expr, $short:literal, $long:literal, $flags:expr,
        range $min:expr, $max:expr) => {
        GucRegistry::define_int_guc(
            $name, $short, $long, &$static, $min, $max, GucContext::Sighup, $flags,
        )
    };
    (@register bool $static:ident, $name:expr, $short:literal, $long:literal, $flags:expr) => {
        GucRegistry::define_bool_guc($name, $short, $long, &$static, GucContext::Sighup, $flags)
    };
    (@register enum $static:ident, $name:expr, $short:literal, $long:literal, $flags:expr) => {
        GucRegistry::define_enum_guc($name, $short, $long, &$static, GucContext::Sighup, $flags)
    };
}

/// A string setting's default, from `sc_backup_core::config::defaults`.
macro_rules! text {
    ($default:expr) => {
        Some(cstr!($default))
    };
}

// Secrets: SUPERUSER_ONLY still lets pg_read_all_settings (so every pg_monitor account) SHOW
// them: the show hook masks them for everyone, and NO_SHOW_ALL keeps them out of pg_settings
// (whose reset_val no show hook covers) and SHOW ALL.
const SECRET: GucFlags = GucFlags::SUPERUSER_ONLY.union(GucFlags::NO_SHOW_ALL);

settings! {
    REPOSITORY: string<Option<CString>> = None, names::REPOSITORY,
        c"Where WAL and backups are stored.",
        c"An absolute directory path, a file:// URL, s3://bucket/prefix or gs://bucket/prefix.",
        GucFlags::empty(), check check_repository;
    COMPRESSION: enum<CompressionGuc> = CompressionGuc::named(defaults::COMPRESSION), names::COMPRESSION,
        c"Compression of archived WAL and backup files.",
        c"none, gzip or zstd.",
        GucFlags::empty();
    COMPRESSION_LEVEL: int<i32> = defaults::COMPRESSION_LEVEL, names::COMPRESSION_LEVEL,
        c"Compression level; 0 uses the algorithm's default.",
        c"gzip: 1..9 (default 6); zstd: 1..19 (default 3).",
        GucFlags::empty(), range 0, 19;
    ENCRYPTION: enum<EncryptionGuc> = EncryptionGuc::named(defaults::ENCRYPTION), names::ENCRYPTION,
        c"Encryption of archived WAL and backup files.",
        c"none, or age (X25519 + ChaCha20-Poly1305). Fixed when the repository is created.",
        GucFlags::empty();
    BACKUP_PARALLELISM: int<i32> = defaults::BACKUP_PARALLELISM as i32, names::BACKUP_PARALLELISM,
        c"Files copied at once by a base backup.",
        c"Each worker reads, compresses, encrypts and stores one file at a time.",
        GucFlags::empty(), range 1, 64;
    ARCHIVE_PARALLELISM: int<i32> = defaults::ARCHIVE_PARALLELISM as i32, names::ARCHIVE_PARALLELISM,
        c"WAL files the archive module works on at once.",
        c"Worker threads compress, encrypt and store the next ready WAL files while the archiver waits for the current one. 0 archives each file inside the archiver's callback.",
        GucFlags::empty(), range 0, 16;
    S3_REGION: string<Option<CString>> = None, names::S3_REGION,
        c"Region of an s3:// repository.",
        c"Default: AWS_REGION or AWS_DEFAULT_REGION from the environment, else us-east-1.",
        GucFlags::empty();
    S3_ENDPOINT: string<Option<CString>> = None, names::S3_ENDPOINT,
        c"Endpoint of an S3-compatible store, like http://127.0.0.1:9000.",
        c"Default: AWS_ENDPOINT_URL from the environment, else AWS.",
        GucFlags::empty();
    S3_URI_STYLE: enum<S3UriStyleGuc> = S3UriStyleGuc::named(defaults::S3_URI_STYLE), names::S3_URI_STYLE,
        c"S3 addressing: path (endpoint/bucket/key), host (bucket.endpoint/key) or auto.",
        c"auto uses path style with a custom endpoint and host style on AWS.",
        GucFlags::empty();
    S3_ACCESS_KEY_ID: string<Option<CString>> = None, names::S3_ACCESS_KEY_ID,
        c"Access key id for an s3:// repository (default: AWS_ACCESS_KEY_ID).",
        c"",
        GucFlags::SUPERUSER_ONLY;
    S3_SECRET_ACCESS_KEY: string<Option<CString>> = None, names::S3_SECRET_ACCESS_KEY,
        c"Secret access key for an s3:// repository (deprecated: use sc_backup.secrets_file).",
        c"Shown to nobody; put it in the file sc_backup.secrets_file names instead.",
        SECRET, show show_s3_secret_access_key;
    GCS_ENDPOINT: string<Option<CString>> = None, names::GCS_ENDPOINT,
        c"Endpoint of a gs:// repository, for emulators.",
        c"Default: STORAGE_EMULATOR_HOST from the environment, else https://storage.googleapis.com.",
        GucFlags::empty();
    GCS_CREDENTIALS: string<Option<CString>> = None, names::GCS_CREDENTIALS,
        c"Service account JSON key file of a gs:// repository (default: GOOGLE_APPLICATION_CREDENTIALS).",
        c"Readable only by superusers.",
        GucFlags::SUPERUSER_ONLY;
    ENCRYPTION_PASSPHRASE: string<Option<CString>> = None, names::ENCRYPTION_PASSPHRASE,
        c"Passphrase protecting the repository key (deprecated: use sc_backup.secrets_file).",
        c"Shown to nobody; put it in the file sc_backup.secrets_file names instead.",
        SECRET, show show_encryption_passphrase;
    SECRETS_FILE: string<Option<CString>> = None, names::SECRETS_FILE,
        c"File holding the repository passphrase and the S3 secret key.",
        c"postgresql.conf syntax (encryption_passphrase = '...', s3_access_key_id, s3_secret_access_key); a regular file owned by the PostgreSQL OS user, mode 0600, outside the data directory. A relative path is relative to the data directory.",
        GucFlags::SUPERUSER_ONLY, check check_secrets_file;
    RETENTION_DAYS: int<i32> = defaults::RETENTION_DAYS as i32, names::RETENTION_DAYS,
        c"Backups that ended less than this many days ago are kept by expiry.",
        c"sc_expire(), sc-backup expire and the scheduler use it; the newest backup is never expired.",
        GucFlags::empty(), range 0, 36_500;
    RETENTION_FULL: int<i32> = defaults::RETENTION_FULL as i32, names::RETENTION_FULL,
        c"Expiry keeps at least this many of the newest full backups, whatever their age.",
        c"Every backup taken since the oldest of them stays too; for logical dumps, the newest this many dumps of each database.",
        GucFlags::empty(), range 1, 100_000;
    REPOSITORY2: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[0].location,
        c"Repository 2: another place that holds the cluster's WAL and backups, complete and restorable alone.",
        c"An absolute directory path, a file:// URL, s3://bucket/prefix or gs://bucket/prefix; empty (the default): none. Its own settings are sc_backup.repository2_*; what it leaves unset comes from repository 1's.",
        GucFlags::empty(), check check_repository;
    REPOSITORY2_COMPRESSION: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[0].compression,
        c"Repository 2's compression: none, gzip or zstd; empty: sc_backup.compression.",
        c"",
        GucFlags::empty(), check check_further_compression;
    REPOSITORY2_COMPRESSION_LEVEL: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[0].compression_level,
        c"Repository 2's compression level; empty: sc_backup.compression_level.",
        c"",
        GucFlags::empty(), check check_repository2_compression_level;
    REPOSITORY2_ENCRYPTION: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[0].encryption,
        c"Repository 2's encryption: none or age; empty: sc_backup.encryption. Its passphrase is repository2_encryption_passphrase in the secrets file (else repository 1's).",
        c"",
        GucFlags::empty(), check check_further_encryption;
    REPOSITORY2_RETENTION_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[0].retention_days,
        c"Repository 2's retention in days; empty: sc_backup.retention_days.",
        c"",
        GucFlags::empty(), check check_repository2_retention_days;
    REPOSITORY2_RETENTION_FULL: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[0].retention_full,
        c"Repository 2's number of full backups always kept; empty: sc_backup.retention_full.",
        c"",
        GucFlags::empty(), check check_repository2_retention_full;
    REPOSITORY2_RETENTION_HOURLY_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[0].retention_hourly_days,
        c"Days repository 2 keeps hourly backups; -1: its retention days; empty: sc_backup.retention_hourly_days.",
        c"",
        GucFlags::empty(), check check_repository2_retention_hourly_days;
    REPOSITORY2_RETENTION_DAILY_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[0].retention_daily_days,
        c"Days repository 2 keeps daily backups; -1: its retention days; empty: sc_backup.retention_daily_days.",
        c"",
        GucFlags::empty(), check check_repository2_retention_daily_days;
    REPOSITORY2_RETENTION_WEEKLY_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[0].retention_weekly_days,
        c"Days repository 2 keeps weekly backups; -1: its retention days; empty: sc_backup.retention_weekly_days.",
        c"",
        GucFlags::empty(), check check_repository2_retention_weekly_days;
    REPOSITORY3: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[1].location,
        c"Repository 3: another place that holds the cluster's WAL and backups, complete and restorable alone.",
        c"An absolute directory path, a file:// URL, s3://bucket/prefix or gs://bucket/prefix; empty (the default): none. Its own settings are sc_backup.repository3_*; what it leaves unset comes from repository 1's.",
        GucFlags::empty(), check check_repository;
    REPOSITORY3_COMPRESSION: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[1].compression,
        c"Repository 3's compression: none, gzip or zstd; empty: sc_backup.compression.",
        c"",
        GucFlags::empty(), check check_further_compression;
    REPOSITORY3_COMPRESSION_LEVEL: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[1].compression_level,
        c"Repository 3's compression level; empty: sc_backup.compression_level.",
        c"",
        GucFlags::empty(), check check_repository3_compression_level;
    REPOSITORY3_ENCRYPTION: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[1].encryption,
        c"Repository 3's encryption: none or age; empty: sc_backup.encryption. Its passphrase is repository3_encryption_passphrase in the secrets file (else repository 1's).",
        c"",
        GucFlags::empty(), check check_further_encryption;
    REPOSITORY3_RETENTION_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[1].retention_days,
        c"Repository 3's retention in days; empty: sc_backup.retention_days.",
        c"",
        GucFlags::empty(), check check_repository3_retention_days;
    REPOSITORY3_RETENTION_FULL: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[1].retention_full,
        c"Repository 3's number of full backups always kept; empty: sc_backup.retention_full.",
        c"",
        GucFlags::empty(), check check_repository3_retention_full;
    REPOSITORY3_RETENTION_HOURLY_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[1].retention_hourly_days,
        c"Days repository 3 keeps hourly backups; -1: its retention days; empty: sc_backup.retention_hourly_days.",
        c"",
        GucFlags::empty(), check check_repository3_retention_hourly_days;
    REPOSITORY3_RETENTION_DAILY_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[1].retention_daily_days,
        c"Days repository 3 keeps daily backups; -1: its retention days; empty: sc_backup.retention_daily_days.",
        c"",
        GucFlags::empty(), check check_repository3_retention_daily_days;
    REPOSITORY3_RETENTION_WEEKLY_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[1].retention_weekly_days,
        c"Days repository 3 keeps weekly backups; -1: its retention days; empty: sc_backup.retention_weekly_days.",
        c"",
        GucFlags::empty(), check check_repository3_retention_weekly_days;
    REPOSITORY4: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[2].location,
        c"Repository 4: another place that holds the cluster's WAL and backups, complete and restorable alone.",
        c"An absolute directory path, a file:// URL, s3://bucket/prefix or gs://bucket/prefix; empty (the default): none. Its own settings are sc_backup.repository4_*; what it leaves unset comes from repository 1's.",
        GucFlags::empty(), check check_repository;
    REPOSITORY4_COMPRESSION: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[2].compression,
        c"Repository 4's compression: none, gzip or zstd; empty: sc_backup.compression.",
        c"",
        GucFlags::empty(), check check_further_compression;
    REPOSITORY4_COMPRESSION_LEVEL: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[2].compression_level,
        c"Repository 4's compression level; empty: sc_backup.compression_level.",
        c"",
        GucFlags::empty(), check check_repository4_compression_level;
    REPOSITORY4_ENCRYPTION: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[2].encryption,
        c"Repository 4's encryption: none or age; empty: sc_backup.encryption. Its passphrase is repository4_encryption_passphrase in the secrets file (else repository 1's).",
        c"",
        GucFlags::empty(), check check_further_encryption;
    REPOSITORY4_RETENTION_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[2].retention_days,
        c"Repository 4's retention in days; empty: sc_backup.retention_days.",
        c"",
        GucFlags::empty(), check check_repository4_retention_days;
    REPOSITORY4_RETENTION_FULL: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[2].retention_full,
        c"Repository 4's number of full backups always kept; empty: sc_backup.retention_full.",
        c"",
        GucFlags::empty(), check check_repository4_retention_full;
    REPOSITORY4_RETENTION_HOURLY_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[2].retention_hourly_days,
        c"Days repository 4 keeps hourly backups; -1: its retention days; empty: sc_backup.retention_hourly_days.",
        c"",
        GucFlags::empty(), check check_repository4_retention_hourly_days;
    REPOSITORY4_RETENTION_DAILY_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[2].retention_daily_days,
        c"Days repository 4 keeps daily backups; -1: its retention days; empty: sc_backup.retention_daily_days.",
        c"",
        GucFlags::empty(), check check_repository4_retention_daily_days;
    REPOSITORY4_RETENTION_WEEKLY_DAYS: string<Option<CString>> = None, FURTHER_REPOSITORY_NAMES[2].retention_weekly_days,
        c"Days repository 4 keeps weekly backups; -1: its retention days; empty: sc_backup.retention_weekly_days.",
        c"",
        GucFlags::empty(), check check_repository4_retention_weekly_days;
    RETENTION_HOURLY_DAYS: int<i32> = -1, names::RETENTION_HOURLY_DAYS,
        c"Days the hourly backups (backup_type hourly) are kept; -1 (the default): sc_backup.retention_days.",
        c"The playbook's tiers: hourly backups 30 days, daily ones long-term, weekly ones extended. WAL is kept from the oldest backup within sc_backup.retention_days on; older backups a longer tier keeps keep only the WAL that makes them consistent.",
        GucFlags::empty(), range -1, 36_500;
    RETENTION_DAILY_DAYS: int<i32> = -1, names::RETENTION_DAILY_DAYS,
        c"Days the daily backups are kept; -1 (the default): sc_backup.retention_days.",
        c"",
        GucFlags::empty(), range -1, 36_500;
    RETENTION_WEEKLY_DAYS: int<i32> = -1, names::RETENTION_WEEKLY_DAYS,
        c"Days the weekly backups are kept; -1 (the default): sc_backup.retention_days.",
        c"",
        GucFlags::empty(), range -1, 36_500;
    SCHEDULER: bool<bool> = defaults::SCHEDULER, names::SCHEDULER,
        c"Whether the scheduler worker takes scheduled backups.",
        c"Off: the worker only serves metrics and keeps the audit table up to date.",
        GucFlags::empty();
    DATABASE: string<Option<CString>> = text!(defaults::DATABASE), names::DATABASE,
        c"Database the scheduler worker connects to; CREATE EXTENSION sc_backup there.",
        c"A change restarts the worker.",
        GucFlags::empty();
    HOURLY_INTERVAL: int<i32> = defaults::HOURLY_INTERVAL_SECONDS as i32, names::HOURLY_INTERVAL,
        c"Interval between hourly backups; 0 turns them off.",
        c"Counted from the start of the last successful hourly backup.",
        GucFlags::UNIT_S, range 0, i32::MAX;
    RETRY_DELAY: int<i32> = defaults::RETRY_DELAY_SECONDS as i32, names::RETRY_DELAY,
        c"Delay before retrying a failed scheduled backup; doubles per failure, at most 1h.",
        c"",
        GucFlags::UNIT_S, range 1, 86_400;
    DAILY_TIME: string<Option<CString>> = text!(defaults::DAILY_TIME), names::DAILY_TIME,
        c"UTC time of the daily backup, HH:MM; empty turns it off.",
        c"",
        GucFlags::empty(), check check_daily_time;
    WEEKLY_DAY: string<Option<CString>> = None, names::WEEKLY_DAY,
        c"Day of the weekly backup (sunday..saturday); empty (the default) turns it off.",
        c"",
        GucFlags::empty(), check check_weekly_day;
    WEEKLY_TIME: string<Option<CString>> = text!(defaults::WEEKLY_TIME), names::WEEKLY_TIME,
        c"UTC time of the weekly backup, HH:MM.",
        c"",
        GucFlags::empty(), check check_weekly_time;
    HOURLY_TYPE: string<Option<CString>> = text!(defaults::BACKUP_TYPE), names::HOURLY_TYPE,
        c"What the hourly backups take: full, incremental (changes since the newest backup) or differential (since the newest full).",
        c"",
        GucFlags::empty(), check check_hourly_type;
    DAILY_TYPE: string<Option<CString>> = text!(defaults::BACKUP_TYPE), names::DAILY_TYPE,
        c"What the daily backups take: full, incremental or differential.",
        c"",
        GucFlags::empty(), check check_daily_type;
    WEEKLY_TYPE: string<Option<CString>> = text!(defaults::BACKUP_TYPE), names::WEEKLY_TYPE,
        c"What the weekly backups take: full, incremental or differential.",
        c"",
        GucFlags::empty(), check check_weekly_type;
    SCHEDULE_TYPE: string<Option<CString>> = text!(defaults::BACKUP_TYPE), names::SCHEDULE_TYPE,
        c"What the backups of sc_backup.schedule take: full, incremental or differential.",
        c"",
        GucFlags::empty(), check check_schedule_type;
    SCHEDULE: string<Option<CString>> = None, names::SCHEDULE,
        c"A cron expression (minute hour day month weekday, UTC); when set it replaces the hourly, daily and weekly schedules.",
        c"Like '0 2 * * *'. Empty (the default): the built-in schedules apply.",
        GucFlags::empty(), check check_schedule;
    METRICS_LISTEN: string<Option<CString>> = None, names::METRICS_LISTEN,
        c"Address the scheduler worker serves Prometheus metrics on, like 127.0.0.1:9187; empty turns it off.",
        c"",
        GucFlags::empty(), check check_metrics_listen;
    VERIFY_SCHEDULE: string<Option<CString>> = None, names::VERIFY_SCHEDULE,
        c"A cron expression (UTC) for the scheduler's restore test of the newest backup; empty (the default) turns it off.",
        c"Like '0 4 * * 0' (Sundays 04:00). The backup is restored into a sandbox under sc_backup.verify_directory and every database checked.",
        GucFlags::empty(), check check_verify_schedule;
    VERIFY_DIRECTORY: string<Option<CString>> = text!(defaults::VERIFY_DIRECTORY), names::VERIFY_DIRECTORY,
        c"Where the scheduler's restore test creates its sandbox; needs room for the backup plus 1 GiB.",
        c"",
        GucFlags::empty(), check check_verify_directory;
    DUMP_SCHEDULE: string<Option<CString>> = None, names::DUMP_SCHEDULE,
        c"A cron expression (UTC) for the scheduler's logical dumps (pg_dump) of sc_backup.dump_databases; empty (the default) turns them off.",
        c"Like '30 2 * * *'. Each database becomes <db>_full_<YYYYmmdd_HHMMSS>.sql.gz with .sha256 and .meta in the repository, plus the roles and tablespaces once per run.",
        GucFlags::empty(), check check_dump_schedule;
    DUMP_DATABASES: string<Option<CString>> = text!(defaults::DUMP_DATABASES), names::DUMP_DATABASES,
        c"Which databases the scheduled logical dumps take: '*' (the default) is every database that accepts connections except the templates; else a comma-separated list of names.",
        c"",
        GucFlags::empty(), check check_dump_databases;
}

type StringCheckHook = unsafe extern "C-unwind" fn(
    *mut *mut c_char,
    *mut *mut c_void,
    pg_sys::GucSource::Type,
) -> bool;
type StringShowHook = unsafe extern "C-unwind" fn() -> *const c_char;

/// The scheduler's settings, as the core computes schedules from them.
/// The schedule settings, parsed by config's one parser (the check hooks refuse a bad value
/// when it is set, so an error here means a value set before this version checked it).
pub fn schedule_settings() -> Result<ScheduleSettings, ConfigError> {
    ScheduleSettings::from_raw(&RawScheduleSettings {
        hourly_interval_seconds: HOURLY_INTERVAL.get().max(0) as u64,
        daily_time: cstring_setting(&DAILY_TIME).unwrap_or_default(),
        weekly_day: cstring_setting(&WEEKLY_DAY).unwrap_or_default(),
        weekly_time: cstring_setting(&WEEKLY_TIME).unwrap_or_else(|| defaults::WEEKLY_TIME.into()),
        cron: cstring_setting(&SCHEDULE).unwrap_or_default(),
        retry_delay: std::time::Duration::from_secs(RETRY_DELAY.get().max(1) as u64),
    })
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

// Repositories 2 to 4: the same parsers as repository 1's settings; empty inherits.
string_check_hook!(check_further_compression, |v| v
    .parse::<CompressionAlgorithm>()
    .map(drop));
string_check_hook!(check_further_encryption, |v| v
    .parse::<EncryptionMode>()
    .map(drop));
/// Check hooks for repository N's whole-number settings, each naming its own setting.
macro_rules! whole_number_hooks {
    ($($hook:ident: $index:literal . $field:ident;)*) => {
        $(string_check_hook!($hook, |v| whole_number(FURTHER_REPOSITORY_NAMES[$index].$field, v));)*
    };
}
whole_number_hooks! {
    check_repository2_compression_level: 0.compression_level;
    check_repository2_retention_days: 0.retention_days;
    check_repository2_retention_full: 0.retention_full;
    check_repository3_compression_level: 1.compression_level;
    check_repository3_retention_days: 1.retention_days;
    check_repository3_retention_full: 1.retention_full;
    check_repository4_compression_level: 2.compression_level;
    check_repository4_retention_days: 2.retention_days;
    check_repository4_retention_full: 2.retention_full;
}

/// Check hooks for repository N's tier settings: days, or -1 (its retention days).
macro_rules! tier_days_hooks {
    ($($hook:ident: $index:literal . $field:ident;)*) => {
        $(string_check_hook!($hook, |v| tier_days(FURTHER_REPOSITORY_NAMES[$index].$field, v));)*
    };
}
tier_days_hooks! {
    check_repository2_retention_hourly_days: 0.retention_hourly_days;
    check_repository2_retention_daily_days: 0.retention_daily_days;
    check_repository2_retention_weekly_days: 0.retention_weekly_days;
    check_repository3_retention_hourly_days: 1.retention_hourly_days;
    check_repository3_retention_daily_days: 1.retention_daily_days;
    check_repository3_retention_weekly_days: 1.retention_weekly_days;
    check_repository4_retention_hourly_days: 2.retention_hourly_days;
    check_repository4_retention_daily_days: 2.retention_daily_days;
    check_repository4_retention_weekly_days: 2.retention_weekly_days;
}

fn tier_days(like: &'static str, value: &str) -> Result<(), ConfigError> {
    match value.trim() {
        "-1" => Ok(()),
        other => whole_number(like, other),
    }
}

fn whole_number(like: &'static str, value: &str) -> Result<(), ConfigError> {
    value
        .trim()
        .parse::<u32>()
        .map(drop)
        .map_err(|_| ConfigError::NotAnInteger {
            setting: like,
            value: value.to_string(),
        })
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
        .map_err(|_| ConfigError::InvalidValue {
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
        Err(ConfigError::InvalidValue {
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
        Err(ConfigError::InvalidValue {
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
    Settings::from_raw(&raw_settings()?).and_then(Settings::for_writing)
}

/// Every configured repository's settings, repository 1 first.
pub fn all_settings() -> Result<
    Vec<(
        sc_backup_core::config::repositories::RepositoryNumber,
        Settings,
    )>,
    ConfigError,
> {
    Settings::all_from_raw(&raw_settings()?)
}

/// The settings as the server holds them, with the secrets file's.
fn raw_settings() -> Result<RawSettings, ConfigError> {
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
        retention_hourly_days: Some(RETENTION_HOURLY_DAYS.get().to_string()),
        retention_daily_days: Some(RETENTION_DAILY_DAYS.get().to_string()),
        retention_weekly_days: Some(RETENTION_WEEKLY_DAYS.get().to_string()),
        secrets_file: cstring_setting(&SECRETS_FILE),
        further: further_repositories(),
    };
    // Every process of the server works in the data directory.
    raw.with_secrets_file(std::path::Path::new("."))
}

/// Repositories 2 to 4 as their settings say (unset: `None`, inherited from repository 1).
fn further_repositories() -> [RawRepository; 3] {
    type Setting = GucSetting<Option<CString>>;
    let one =
        |[location, compression, level, encryption, days, full, hourly, daily, weekly]: [&Setting;
             9]| {
            RawRepository {
                location: cstring_setting(location),
                compression: cstring_setting(compression),
                compression_level: cstring_setting(level),
                encryption: cstring_setting(encryption),
                encryption_passphrase: None,
                retention_days: cstring_setting(days),
                retention_full: cstring_setting(full),
                retention_hourly_days: cstring_setting(hourly),
                retention_daily_days: cstring_setting(daily),
                retention_weekly_days: cstring_setting(weekly),
            }
        };
    [
        one([
            &REPOSITORY2,
            &REPOSITORY2_COMPRESSION,
            &REPOSITORY2_COMPRESSION_LEVEL,
            &REPOSITORY2_ENCRYPTION,
            &REPOSITORY2_RETENTION_DAYS,
            &REPOSITORY2_RETENTION_FULL,
            &REPOSITORY2_RETENTION_HOURLY_DAYS,
            &REPOSITORY2_RETENTION_DAILY_DAYS,
            &REPOSITORY2_RETENTION_WEEKLY_DAYS,
        ]),
        one([
            &REPOSITORY3,
            &REPOSITORY3_COMPRESSION,
            &REPOSITORY3_COMPRESSION_LEVEL,
            &REPOSITORY3_ENCRYPTION,
            &REPOSITORY3_RETENTION_DAYS,
            &REPOSITORY3_RETENTION_FULL,
            &REPOSITORY3_RETENTION_HOURLY_DAYS,
            &REPOSITORY3_RETENTION_DAILY_DAYS,
            &REPOSITORY3_RETENTION_WEEKLY_DAYS,
        ]),
        one([
            &REPOSITORY4,
            &REPOSITORY4_COMPRESSION,
            &REPOSITORY4_COMPRESSION_LEVEL,
            &REPOSITORY4_ENCRYPTION,
            &REPOSITORY4_RETENTION_DAYS,
            &REPOSITORY4_RETENTION_FULL,
            &REPOSITORY4_RETENTION_HOURLY_DAYS,
            &REPOSITORY4_RETENTION_DAILY_DAYS,
            &REPOSITORY4_RETENTION_WEEKLY_DAYS,
        ]),
    ]
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
