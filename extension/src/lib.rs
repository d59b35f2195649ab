//! The `sc_backup` extension library.
//!
//! One shared library serves both roles, so the repository is configured once:
//! `shared_preload_libraries = 'sc_backup'` registers the `sc_backup.*` settings and the
//! scheduler worker, and `archive_library = 'sc_backup'` makes the same library the
//! archive module, whose code lives in the `sc-backup-archive-module` crate. The archiver
//! inherits the already-loaded library from the postmaster, so `_PG_init` (and with it every
//! GUC definition) runs once per process whichever way the library was loaded.

// pgrx's CaughtError is large and carried by value through every PgTryBuilder; the SQL
// functions' row types are spelled out where PostgreSQL sees them.
#![allow(clippy::result_large_err, clippy::type_complexity)]

use pgrx::prelude::*;

pub mod archiving;
pub mod audit;
pub mod backup;
pub mod catalog;
pub mod catch_up;
pub mod dump;
pub mod guc;
pub mod host;
pub mod raise;
pub mod redact;
pub mod restore_test;
pub mod scheduled_dumps;
pub mod scheduler;
pub mod status;

::pgrx::pg_module_magic!(name, version);

/// What a backend reads of one manifest or catalog into memory. A backend that runs out of
/// memory takes the whole cluster through crash recovery, so a damaged or hostile repository
/// must not be able to make one allocate much: 64 MiB of manifest is some 300,000 files
/// (larger backups are verified and restored by the CLI, which reads up to 512 MiB).
const BACKEND_DOCUMENT_LIMIT: u64 = 64 << 20;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    redact::install();
    scheduler::register();
    sc_backup_core::backup::limit_documents_in_memory(BACKEND_DOCUMENT_LIMIT);
    // Once, in the postmaster at server start (the configuration is loaded by then).
    // Safety: plain reads of PostgreSQL's process flags.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress && !pg_sys::IsUnderPostmaster }
    {
        archiving::warn_about_command_conflict();
        archiving::remove_recovery_leftovers();
        guc::warn_about_secret_settings();
    }
}

/// The archive module entry point (PostgreSQL 15 ABI).
///
/// # Safety
/// Called by PostgreSQL with a valid callbacks struct to fill in.
#[cfg(feature = "pg15")]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _PG_archive_module_init(
    callbacks: *mut pg_sys::ArchiveModuleCallbacks,
) {
    sc_backup_archive_module::init_pg15(callbacks, guc::settings, guc::archive_parallelism);
}

/// The archive module entry point (PostgreSQL 16, 17, 18 ABI: returns the callbacks).
#[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn _PG_archive_module_init(
) -> *const sc_backup_archive_module::pg16::ArchiveModuleCallbacks {
    sc_backup_archive_module::pg16::init(guc::settings, guc::archive_parallelism)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Applies a value the way postgresql.conf does (PGC_S_FILE), without changing it, and
    /// returns PostgreSQL's error message when the value is rejected.
    fn validate_as_in_config_file(name: &str, value: &str) -> Result<(), String> {
        let name_c = std::ffi::CString::new(name).unwrap();
        let value_c = std::ffi::CString::new(value).unwrap();
        PgTryBuilder::new(|| {
            unsafe {
                pg_sys::set_config_option(
                    name_c.as_ptr(),
                    value_c.as_ptr(),
                    pg_sys::GucContext::PGC_SIGHUP,
                    pg_sys::GucSource::PGC_S_FILE,
                    pg_sys::GucAction::GUC_ACTION_SET,
                    false,
                    PgLogLevel::ERROR as i32,
                    false,
                );
            }
            Ok(())
        })
        .catch_others(|caught| match caught {
            pg_sys::panic::CaughtError::PostgresError(report)
            | pg_sys::panic::CaughtError::ErrorReport(report)
            | pg_sys::panic::CaughtError::RustPanic {
                ereport: report, ..
            } => Err(format!(
                "{} | {} | {}",
                report.message(),
                report.detail().unwrap_or(""),
                report.hint().unwrap_or("")
            )),
        })
        .execute()
    }

    #[pg_test]
    fn settings_are_reload_only_and_the_secret_is_not_listed() {
        for name in crate::guc::DEFINED {
            let context = Spi::get_one_with_args::<String>(
                "SELECT context FROM pg_settings WHERE name = $1",
                &[(*name).into()],
            );
            if *name == "sc_backup.encryption_passphrase"
                || *name == "sc_backup.s3_secret_access_key"
            {
                // GUC_NO_SHOW_ALL: absent from pg_settings and SHOW ALL for everyone.
                assert!(context.is_err(), "{name} is listed in pg_settings");
            } else {
                assert_eq!(context.unwrap().as_deref(), Some("sighup"), "{name}");
            }
        }
        // A superuser can still read it explicitly.
        let shown =
            Spi::get_one::<String>("SELECT current_setting('sc_backup.encryption_passphrase')")
                .unwrap();
        assert_eq!(shown.as_deref(), Some(""));
    }

    #[pg_test]
    fn compression_rejects_unknown_algorithms_listing_valid_ones() {
        let err = validate_as_in_config_file("sc_backup.compression", "lz4").unwrap_err();
        assert!(
            err.contains("invalid value for parameter \"sc_backup.compression\": \"lz4\""),
            "{err}"
        );
        assert!(err.contains("Available values: none, gzip, zstd"), "{err}");
        for good in ["none", "gzip", "zstd", "ZSTD"] {
            validate_as_in_config_file("sc_backup.compression", good).unwrap();
        }
    }

    #[pg_test]
    fn encryption_rejects_unknown_modes_listing_valid_ones() {
        let err = validate_as_in_config_file("sc_backup.encryption", "aes").unwrap_err();
        assert!(err.contains("Available values: none, age"), "{err}");
        validate_as_in_config_file("sc_backup.encryption", "age").unwrap();
    }

    #[pg_test]
    fn compression_level_is_range_checked() {
        let err = validate_as_in_config_file("sc_backup.compression_level", "23").unwrap_err();
        assert!(err.contains("23 is outside the valid range"), "{err}");
        validate_as_in_config_file("sc_backup.compression_level", "19").unwrap();
    }

    #[pg_test]
    fn repository_rejects_relative_paths_and_unknown_schemes() {
        let err = validate_as_in_config_file("sc_backup.repository", "backups/here").unwrap_err();
        assert!(
            err.contains("invalid value for parameter \"sc_backup.repository\""),
            "{err}"
        );
        assert!(err.contains("the path must be absolute"), "{err}");
        let err = validate_as_in_config_file("sc_backup.repository", "ftp://host/x").unwrap_err();
        assert!(err.contains("ftp:// scheme is not supported"), "{err}");
        validate_as_in_config_file("sc_backup.repository", "/var/lib/sc_backup").unwrap();
        validate_as_in_config_file("sc_backup.repository", "file:///var/lib/sc_backup").unwrap();
        validate_as_in_config_file("sc_backup.repository", "").unwrap();
    }

    #[pg_test]
    fn schedule_settings_are_validated_when_set() {
        let err = validate_as_in_config_file("sc_backup.daily_time", "2am").unwrap_err();
        assert!(
            err.contains("invalid value for parameter \"sc_backup.daily_time\": \"2am\""),
            "{err}"
        );
        assert!(err.contains("HH:MM"), "{err}");
        let err = validate_as_in_config_file("sc_backup.schedule", "0 25 * * *").unwrap_err();
        assert!(err.contains("not a cron expression"), "{err}");
        let err = validate_as_in_config_file("sc_backup.weekly_day", "caturday").unwrap_err();
        assert!(err.contains("day of the week"), "{err}");
        let err = validate_as_in_config_file("sc_backup.metrics_listen", "localhost").unwrap_err();
        assert!(err.contains("127.0.0.1:9187"), "{err}");
        // Not a schedule: its hint says how to go back, not how to turn a schedule off.
        assert!(
            !err.contains("schedule") && err.contains("RESET sc_backup.metrics_listen"),
            "{err}"
        );
        let err = validate_as_in_config_file("sc_backup.hourly_interval", "-1").unwrap_err();
        assert!(err.contains("outside the valid range"), "{err}");
        for (name, good) in [
            ("sc_backup.daily_time", "23:59"),
            ("sc_backup.daily_time", ""),
            ("sc_backup.weekly_day", "sun"),
            ("sc_backup.weekly_time", "03:30"),
            ("sc_backup.schedule", "*/15 9-17 * * mon-fri"),
            ("sc_backup.metrics_listen", "127.0.0.1:9187"),
            ("sc_backup.hourly_interval", "20s"),
            ("sc_backup.retention_days", "0"),
        ] {
            validate_as_in_config_file(name, good)
                .unwrap_or_else(|e| panic!("{name} = {good}: {e}"));
        }
    }

    #[pg_test]
    fn passphrase_is_hidden_from_non_superusers() {
        Spi::run("CREATE ROLE sc_backup_test_nobody NOLOGIN").unwrap();
        Spi::run("SET ROLE sc_backup_test_nobody").unwrap();
        let shown = PgTryBuilder::new(|| {
            Spi::get_one::<String>("SELECT current_setting('sc_backup.encryption_passphrase')")
                .map(|_| ())
                .map_err(|e| (PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, e.to_string()))
        })
        .catch_others(|caught| match caught {
            pg_sys::panic::CaughtError::PostgresError(report)
            | pg_sys::panic::CaughtError::ErrorReport(report)
            | pg_sys::panic::CaughtError::RustPanic {
                ereport: report, ..
            } => Err((report.sql_error_code(), report.message().to_string())),
        })
        .execute();
        // The wording changed in PostgreSQL 16 ("permission denied to examine ..."); the
        // SQLSTATE and the setting's name did not.
        let (code, message) = shown.unwrap_err();
        assert_eq!(
            code,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "{message}"
        );
        assert!(
            message.contains("\"sc_backup.encryption_passphrase\""),
            "{message}"
        );
        let listed = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_settings WHERE name = 'sc_backup.encryption_passphrase'",
        )
        .unwrap();
        assert_eq!(listed, Some(0));
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'sc_backup'"]
    }
}
