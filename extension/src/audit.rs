//! The audit trail from SQL and the scheduler: each record goes to the repository (it
//! survives the loss of the database) and to the table `sc_backup.audit` (queryable, readable
//! by `sc_backup_operator`). See `sc_backup_core::ops::audit` for the format.
//!
//! A failed SQL call rolls its transaction back, row included; its record still reaches the
//! repository, and the scheduler worker copies such records into the table
//! ([`import_from_repository`]).

use std::panic::AssertUnwindSafe;

use pgrx::pg_sys::panic::{CaughtError, ErrorReportWithLevel};
use pgrx::prelude::*;
use sc_backup_core::ops::audit::{self as core_audit, AuditRecord, AuditTimer};
use sc_backup_core::Repository;

use crate::guc;

/// The session user: who logged in, whatever role a SECURITY DEFINER function runs as.
pub fn session_user() -> String {
    Spi::get_one::<String>("SELECT session_user::text")
        .ok()
        .flatten()
        .unwrap_or_else(|| "unknown".into())
}

pub fn start(operation: &str, source: &str) -> AuditTimer {
    AuditTimer::start(operation, source, &session_user())
}

/// The report of a caught PostgreSQL error, Rust error or panic.
pub fn caught_report(caught: &CaughtError) -> &ErrorReportWithLevel {
    match caught {
        CaughtError::PostgresError(report)
        | CaughtError::ErrorReport(report)
        | CaughtError::RustPanic {
            ereport: report, ..
        } => report,
    }
}

/// The message of a caught error, for the record.
pub fn caught_message(caught: &CaughtError) -> String {
    caught_report(caught).message().to_string()
}

/// Runs `operation` and records how it went: a success in the repository and the table (in
/// this transaction), a failure in the repository only, before the error goes on to the
/// caller.
pub fn audited<T>(timer: &mut AuditTimer, operation: impl FnOnce(&mut AuditTimer) -> T) -> T {
    let outcome = PgTryBuilder::new(AssertUnwindSafe(|| Ok(operation(&mut *timer))))
        .catch_others(Err)
        .execute();
    match outcome {
        Ok(value) => {
            store(&timer.finish(None), true);
            value
        }
        Err(caught) => {
            store(&timer.finish(Some(caught_message(&caught))), false);
            caught.rethrow()
        }
    }
}

/// Stores a record in the repository and, with `in_table`, in `sc_backup.audit`. A repository
/// that cannot take it (the failure being recorded may be that very repository) costs a
/// WARNING, and the row gets a local id.
pub fn store(record: &AuditRecord, in_table: bool) {
    // The one policy of core_audit::record: the operation's outcome stands; a record the
    // repository did not take is a WARNING, and the table keeps it under a local id.
    let stored = guc::settings()
        .map_err(sc_backup_core::Error::from)
        .and_then(|settings| Repository::open(&settings))
        .map_err(|cause| core_audit::Unrecorded {
            operation: record.operation.clone(),
            cause: Box::new(cause),
        })
        .and_then(|repository| core_audit::record(&repository, record));
    let id = match stored {
        Ok(key) => key,
        Err(unrecorded) => {
            pgrx::warning!("sc_backup: {unrecorded}");
            format!(
                "local/{}-{}-{:08x}",
                record.started_at,
                std::process::id(),
                rand_u32()
            )
        }
    };
    if in_table {
        insert(&id, record);
    }
}

fn rand_u32() -> u32 {
    // Good enough to tell apart two local ids of one process in one microsecond.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Inserts a row unless one with this id exists. Raises on SQL errors.
pub fn insert(id: &str, record: &AuditRecord) {
    Spi::run_with_args(
        "INSERT INTO sc_backup.audit (id, started_at, finished_at, duration_seconds, user_name, host, source, operation, backup_name, backup_type, schedules, target, outcome, size_bytes, error, figures)
         VALUES ($1, $2::timestamptz, $2::timestamptz + make_interval(secs => $3), $3, $4, $5, $6, $7, $8, $9, string_to_array(nullif($10, ''), ','), $11, $12, $13, $14, nullif($15, '{}')::jsonb)
         ON CONFLICT (id) DO NOTHING",
        &[
            id.into(),
            record.started_at.clone().into(),
            record.duration_seconds.into(),
            record.user.clone().into(),
            record.host.clone().into(),
            record.source.clone().into(),
            record.operation.clone().into(),
            record.backup.clone().into(),
            record.backup_type.clone().into(),
            record.schedules.join(",").into(),
            record.target.clone().into(),
            record.outcome.clone().into(),
            record.size_bytes.map(|b| b as i64).into(),
            record.error.clone().into(),
            serde_json::to_string(&record.figures)
                .unwrap_or_default()
                .into(),
        ],
    )
    .unwrap_or_else(|e| {
        crate::raise::raise_message(
            format!("sc_backup: could not insert into sc_backup.audit: {e}"),
            "",
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        )
    });
}

/// Copies into the table the repository's records it does not have yet: those of `days`
/// (UTC dates), or all with None. Returns how many were copied.
pub fn import_from_repository(
    repository: &Repository,
    days: Option<&[chrono::NaiveDate]>,
) -> Result<usize, sc_backup_core::Error> {
    let keys = core_audit::list(repository, days)?;
    if keys.is_empty() {
        return Ok(0);
    }
    let missing: Vec<String> = Spi::connect(|client| {
        client
            .select(
                "SELECT k FROM unnest($1::text[]) AS k WHERE NOT EXISTS (SELECT FROM sc_backup.audit WHERE id = k)",
                None,
                &[keys.into()],
            )
            .map(|rows| {
                rows.filter_map(|row| row.get::<String>(1).ok().flatten())
                    .collect()
            })
    })
    .unwrap_or_default();
    for key in &missing {
        match core_audit::read(repository, key) {
            Ok(record) => insert(key, &record),
            Err(error) => pgrx::warning!("sc_backup: skipping audit record {key}: {error}"),
        }
    }
    Ok(missing.len())
}

extension_sql!(
    r#"
CREATE SCHEMA sc_backup;
COMMENT ON SCHEMA sc_backup IS 'sc_backup''s tables';
CREATE TABLE sc_backup.audit (
    id text PRIMARY KEY,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    duration_seconds double precision NOT NULL,
    user_name text NOT NULL,
    host text NOT NULL,
    source text NOT NULL CHECK (source IN ('sql', 'scheduler', 'cli')),
    operation text NOT NULL,
    backup_name text,
    backup_type text,
    schedules text[],
    target text,
    outcome text NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    size_bytes bigint,
    error text,
    figures jsonb
);
CREATE INDEX audit_operation_started_at ON sc_backup.audit (operation, started_at);
COMMENT ON TABLE sc_backup.audit IS 'Every sc_backup backup, verify, restore test, restore, extract, drill, expire and delete; also kept in the repository under audit/';
COMMENT ON COLUMN sc_backup.audit.figures IS 'Measured figures: a drill''s rto_seconds and rpo_seconds, a restore test''s tables and rows';
REVOKE ALL ON SCHEMA sc_backup FROM PUBLIC;
REVOKE ALL ON sc_backup.audit FROM PUBLIC;
"#,
    name = "audit_table",
    bootstrap
);
