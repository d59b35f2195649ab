//! `sc_backup()`, `sc_list_backups()` and `sc_verify()`: thin SQL shims over
//! `sc_backup_core::backup`.
//!
//! `sc_backup()` uses the non-exclusive low-level API in its own session: `pg_backup_start`,
//! copy (on worker threads that never touch PostgreSQL), `pg_backup_stop(wait_for_archive)`.
//! Any error or cancellation aborts the backup in PostgreSQL (`do_pg_abort_backup`) and
//! removes what was written, so it is never listed.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use sc_backup_core::backup::{
    self, BackupKind, BackupMetadata, BackupReport, BackupWriter, CatalogSnapshot, ClusterPosition,
    Interrupted, Tablespace,
};
use sc_backup_core::dump::{find_named, list_dumps, verify_dump, DumpKind, Named};
use sc_backup_core::pg::lsn::Lsn;
use sc_backup_core::{Error, Repository};

use crate::host::{cluster_identity, open_repository, settings};
use crate::raise::{raise, raise_for_backup, raise_message};
use crate::{archiving, audit, catalog, guc};
use sc_backup_core::ops::audit::AuditTimer;

/// Key of the transaction-level advisory lock that serializes sc_backup backups (manual and
/// scheduled): 'scbackup' in ASCII.
const BACKUP_LOCK_KEY: i64 = 0x7363_6261_636b_7570;

/// Takes the backup lock until the end of the transaction, if no backup holds it.
pub fn try_backup_lock() -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT pg_try_advisory_xact_lock($1)",
        &[BACKUP_LOCK_KEY.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn spi_text(query: &str) -> String {
    Spi::get_one::<String>(query)
        .unwrap_or_else(|e| {
            raise_message(
                format!("sc_backup: {query}: {e}"),
                "",
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            )
        })
        .unwrap_or_default()
}

/// "START TIMELINE: 1" from a backup label.
fn label_timeline(label: &str) -> u32 {
    label
        .lines()
        .find_map(|line| line.strip_prefix("START TIMELINE: "))
        .and_then(|tli| tli.trim().parse().ok())
        .unwrap_or(1)
}

fn tablespaces() -> Vec<Tablespace> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT oid::int8, pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')",
                None,
                &[],
            )
            .map(|rows| {
                rows.filter_map(|row| {
                    let oid = row.get::<i64>(1).ok().flatten()?;
                    let location = row.get::<String>(2).ok().flatten()?;
                    Some(Tablespace {
                        oid: oid as u32,
                        location: PathBuf::from(location),
                    })
                })
                .collect::<Vec<_>>()
            })
    })
    .unwrap_or_else(|e| raise_message(format!("sc_backup: listing tablespaces: {e}"), "", PgSqlErrorCode::ERRCODE_INTERNAL_ERROR))
}

enum Failure {
    Core(Error),
    Postgres(CaughtError),
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sc_backup(
    kind: default!(&str, "'full'"),
    fast_checkpoint: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(backup_name, String),
        name!(start_lsn, String),
        name!(stop_lsn, String),
        name!(files, i64),
        name!(size_bytes, i64),
        name!(stored_bytes, i64),
        name!(duration_seconds, f64),
    ),
> {
    let Some(kind) = BackupKind::parse(kind) else {
        raise_message(
            format!("sc_backup: invalid backup kind \"{kind}\""),
            "Valid kinds are: full, incremental (changes since the newest backup), differential (changes since the newest full backup).",
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        );
    };
    let mut timer = audit::start("backup", sc_backup_core::ops::audit::source::SQL);
    timer.details().backup_type = Some(kind.name().into());
    let metadata = audit::audited(&mut timer, |timer| {
        take_backup(kind.name(), kind, fast_checkpoint, timer)
    });
    TableIterator::once((
        metadata.playbook.backup_name,
        metadata.start_lsn.to_string(),
        metadata.stop_lsn.to_string(),
        metadata.file_count as i64,
        metadata.playbook.size_bytes as i64,
        metadata.stored_bytes as i64,
        metadata.playbook.duration_seconds,
    ))
}

/// Takes one base backup labelled `backup_type` in the current transaction, one at a time
/// (a transaction-level advisory lock, also taken by the scheduler). `kind` incremental or
/// differential takes only what changed since its parent, or a full backup (with a NOTICE
/// saying why) when no backup can be its parent. Raises an ERROR on failure, after aborting
/// the backup in PostgreSQL and removing what was stored; the lock being taken is
/// ERRCODE_OBJECT_IN_USE.
pub fn take_backup(
    backup_type: &str,
    kind: BackupKind,
    fast_checkpoint: bool,
    timer: &mut AuditTimer,
) -> BackupMetadata {
    let settings = settings();
    archiving::require_sc_backup_archiving();
    if !try_backup_lock() {
        raise_message(
            "sc_backup: another sc_backup backup is running".into(),
            "Wait for it to finish; sc_backup takes one backup at a time.",
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
        );
    }
    let repository = Repository::open_for_cluster(&settings, &cluster_identity())
        .unwrap_or_else(|e| raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION));
    let database = spi_text("SELECT current_database()::text");
    let started = Instant::now();
    let parent = choose_parent(&repository, kind);
    let backup_type = match (&parent, backup_type) {
        // sc_backup('incremental') that became a full backup is labelled as one.
        (None, "incremental" | "differential") => "full",
        _ => backup_type,
    };
    let (name, started_at) = backup::new_backup_name(&repository, &database, backup_type)
        .unwrap_or_else(|e| raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION));
    timer.details().backup = Some(name.clone());
    let writer = match &parent {
        Some(parent) => BackupWriter::new_incremental(&repository, &name, parent, pg_sys::BLCKSZ),
        None => BackupWriter::new(&repository, &name),
    }
    .unwrap_or_else(|e| raise(&e, PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT));
    let tablespaces = tablespaces();
    let data_directory = crate::host::data_directory();
    let start_lsn = Spi::get_one_with_args::<String>(
        "SELECT pg_backup_start($1, $2)::text",
        &[format!("sc_backup {name}").into(), fast_checkpoint.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();

    let staged = PgTryBuilder::new(AssertUnwindSafe(|| {
        let start_lsn: Lsn = start_lsn.parse().map_err(|e| {
            Failure::Core(Error::BackupStop(format!("pg_backup_start returned {e}")))
        })?;
        copy_and_stop(&writer, &data_directory, &tablespaces, start_lsn)
            .map(|(entries, stop_lsn, label, catalog)| {
                (entries, start_lsn, stop_lsn, label, catalog)
            })
            .map_err(Failure::Core)
    }))
    .catch_others(|caught| Err(Failure::Postgres(caught)))
    .execute();

    let fail = |failure: Failure| -> ! {
        // The session's backup, if still running, ends here; then nothing of it may remain.
        unsafe { pg_sys::do_pg_abort_backup(0, pg_sys::Datum::from(false)) };
        writer.abort();
        match failure {
            Failure::Core(e) => raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
            Failure::Postgres(caught) => caught.rethrow(),
        }
    };
    let (entries, start_lsn, stop_lsn, label, catalog) = match staged {
        Ok(staged) => staged,
        Err(failure) => fail(failure),
    };
    let stopped_at = chrono_now();
    let report = BackupReport {
        backup_type: backup_type.into(),
        database,
        host: sc_backup_core::util::host::host_name(),
        duration_seconds: started.elapsed().as_secs_f64(),
        start_lsn,
        stop_lsn,
        start_time: started_at,
        stop_time: stopped_at,
        timeline: label_timeline(&label),
        pg_version_num: pg_sys::PG_VERSION_NUM,
        system_identifier: cluster_identity().system_identifier.to_string(),
        // Safety: set once at startup.
        wal_segment_size: unsafe { pg_sys::wal_segment_size } as u64,
        method: kind,
    };
    let metadata = writer
        .finish(entries, catalog.as_ref(), report)
        .unwrap_or_else(|e| fail(Failure::Core(e)));
    timer.details().size_bytes = Some(metadata.playbook.size_bytes);
    metadata
}

/// The configuration files of the data directory that a backup stores without the secret
/// settings they may assign.
const CONFIGURATION_FILES: &[&str] = &["postgresql.conf", "postgresql.auto.conf"];

/// Copies the data directory, stops the backup (waiting until its WAL is archived) and stores
/// backup_label and tablespace_map. Returns the manifest entries, stop LSN, label, and the
/// catalog snapshot taken around the copy (when it could be taken).
fn copy_and_stop(
    writer: &BackupWriter,
    data_directory: &Path,
    tablespaces: &[Tablespace],
    start_lsn: Lsn,
) -> Result<
    (
        Vec<backup::ManifestEntry>,
        Lsn,
        String,
        Option<CatalogSnapshot>,
    ),
    Error,
> {
    let at_start = catalog::snapshot();
    let mut plan = backup::plan(data_directory, tablespaces)?;
    // Secrets never travel into the repository: a secrets file kept (against advice) inside
    // the data directory is left out, and postgresql.auto.conf is stored without the secrets
    // ALTER SYSTEM may have written there.
    if let Some(secrets) = guc::cstring_setting(&guc::SECRETS_FILE)
        .and_then(|path| std::fs::canonicalize(data_directory.join(path)).ok())
    {
        plan.retain(|entry| std::fs::canonicalize(&entry.source).ok().as_ref() != Some(&secrets));
    }
    let (configuration, plan): (Vec<_>, Vec<_>) = plan.into_iter().partition(|entry| {
        matches!(entry.kind, backup::SourceKind::File)
            && CONFIGURATION_FILES.contains(&entry.path.as_str())
    });
    let parallelism = guc::BACKUP_PARALLELISM.get().max(1) as usize;
    let mut entries = writer.store_files(plan, parallelism, &mut || {
        // Query cancel and termination arrive here, on the backend's own thread.
        check_for_interrupts!();
        Ok::<(), Interrupted>(())
    })?;
    for file in configuration {
        let text = std::fs::read_to_string(&file.source)
            .map_err(|e| Error::io("read", file.source.display(), e))?;
        let (kept, removed) = sc_backup_core::config::without_secret_settings(&text);
        for name in removed {
            warning!(
                "sc_backup: {name} is set in {}; this backup's copy of the file leaves it out (move it into the file sc_backup.secrets_file names)",
                file.path
            );
        }
        entries.push(writer.store_bytes(&file.path, kept.as_bytes())?);
    }
    let catalog = match (at_start, catalog::snapshot()) {
        (Ok(at_start), Ok(before_stop)) => Some(CatalogSnapshot {
            at_start,
            before_stop,
        }),
        (Err(error), _) | (_, Err(error)) => {
            notice!("sc_backup: this backup has no catalog snapshot (verify --restore will not compare tables): {error}");
            None
        }
    };
    let (stop_lsn, label, map) = Spi::get_three::<String, String, String>(
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => false)",
    )
    .map_err(|e| Error::BackupStop(format!("pg_backup_stop failed: {e}")))?;
    let label = label.unwrap_or_default();
    let stop_lsn: Lsn = stop_lsn
        .unwrap_or_default()
        .parse()
        .map_err(|e| Error::BackupStop(format!("pg_backup_stop returned {e}")))?;
    // Safety: set once at startup.
    let segment_size = unsafe { pg_sys::wal_segment_size } as u64;
    let segments = sc_backup_core::pg::lsn::segments_between(
        label_timeline(&label),
        start_lsn,
        stop_lsn,
        segment_size,
    );
    wait_until_archived(data_directory, &segments);
    entries.push(writer.store_bytes("backup_label", label.as_bytes())?);
    if let Some(map) = map.filter(|m| !m.is_empty()) {
        entries.push(writer.store_bytes("tablespace_map", map.as_bytes())?);
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((entries, stop_lsn, label, catalog))
}

/// Waits until the archiver has archived `segments`, as `pg_backup_stop(wait_for_archive =>
/// true)` does (its `XLogArchiveIsBusy` test: `.done`, or neither `.ready` nor the file), but
/// looking every 10 ms: PostgreSQL's loop sleeps a whole second between looks, which added
/// about a second to every backup. Interruptible (query cancel); warns each minute, and waits
/// as long as it takes, as PostgreSQL does: a backup without its WAL is no backup.
fn wait_until_archived(data_directory: &Path, segments: &[String]) {
    // Shown in pg_stat_activity as PostgreSQL's own wait shows (pgstat_report_wait_start is a
    // static inline writing this word); cleared when done, and by PostgreSQL on an ERROR.
    struct ReportedWait;
    impl Drop for ReportedWait {
        fn drop(&mut self) {
            // Safety: my_wait_event_info points at this backend's wait event word.
            unsafe { *pg_sys::my_wait_event_info = 0 };
        }
    }
    // Safety: as above.
    unsafe {
        *pg_sys::my_wait_event_info = pg_sys::WaitEventIPC::WAIT_EVENT_BACKUP_WAIT_WAL_ARCHIVE;
    }
    let _reported = ReportedWait;
    let pg_wal = data_directory.join("pg_wal");
    let started = Instant::now();
    let mut next_warning = Duration::from_secs(60);
    for segment in segments {
        loop {
            let status = |suffix: &str| {
                pg_wal
                    .join("archive_status")
                    .join(format!("{segment}.{suffix}"))
                    .exists()
            };
            let busy = !status("done") && (status("ready") || pg_wal.join(segment).exists());
            if !busy {
                break;
            }
            check_for_interrupts!();
            if started.elapsed() >= next_warning {
                warning!(
                    "sc_backup: still waiting for WAL file {segment} to be archived ({} s elapsed)",
                    started.elapsed().as_secs()
                );
                next_warning += Duration::from_secs(60);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The parent of a new `kind` backup, with its chain checked readable; `None` (with a NOTICE
/// saying why, for incremental and differential) when a full backup is to be taken.
fn choose_parent(repository: &Repository, kind: BackupKind) -> Option<BackupMetadata> {
    if kind == BackupKind::Full {
        return None;
    }
    // Safety: reads shared memory state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        notice!(
            "sc_backup: taking a full backup instead of an {} one: the server is in recovery",
            kind.name()
        );
        return None;
    }
    let backups = backup::list_backups(repository)
        .unwrap_or_else(|e| raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION));
    let position = ClusterPosition {
        system_identifier: cluster_identity().system_identifier,
        pg_version_num: pg_sys::PG_VERSION_NUM,
        // Safety: the WAL insertion timeline, valid once recovery has ended (checked above).
        timeline: unsafe { pg_sys::GetWALInsertionTimeLine() },
    };
    let chosen = backup::choose_parent(&backups, kind, position).and_then(|parent| match parent {
        Some(parent) => backup::ancestors(repository, parent)
            .map(|_| Some(parent.clone()))
            .map_err(|e| e.to_string()),
        None => Ok(None),
    });
    match chosen {
        Ok(parent) => parent,
        Err(reason) => {
            notice!(
                "sc_backup: taking a full backup instead of an {} one: {reason}",
                kind.name()
            );
            None
        }
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// PostgreSQL's timestamptz of text in one of the forms `parse_time` reads.
/// PostgreSQL's timestamptz: microseconds since 2000-01-01 UTC.
pub fn to_timestamptz(at: chrono::DateTime<chrono::Utc>) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(at.timestamp_micros() - 946_684_800_000_000).ok()
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sc_list_backups() -> TableIterator<
    'static,
    (
        name!(backup_name, String),
        name!(backup_type, String),
        name!(start_time, Option<TimestampWithTimeZone>),
        name!(stop_time, Option<TimestampWithTimeZone>),
        name!(start_lsn, Option<String>),
        name!(stop_lsn, Option<String>),
        name!(size_bytes, i64),
        name!(stored_bytes, i64),
        name!(compression, String),
        name!(encryption, String),
        name!(status, String),
        name!(kind, String),
        name!(database, String),
        name!(method, String),
        name!(parent, Option<String>),
        name!(chain_length, i32),
        name!(chain_stored_bytes, i64),
    ),
> {
    let repository = open_repository();
    let backups = backup::list_backups(&repository)
        .unwrap_or_else(|e| raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION));
    let chains = backup::chain_sizes(&backups);
    let dumps = list_dumps(&repository)
        .unwrap_or_else(|e| raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION));
    let mut rows: Vec<_> = backups
        .into_iter()
        .zip(chains)
        .map(|(b, (chain_length, chain_stored_bytes))| {
            (
                b.playbook.backup_name,
                b.playbook.backup_type,
                to_timestamptz(b.playbook.start_time),
                to_timestamptz(b.playbook.stop_time),
                Some(b.start_lsn.to_string()),
                Some(b.stop_lsn.to_string()),
                b.playbook.size_bytes as i64,
                b.stored_bytes as i64,
                b.playbook.compression.name().to_string(),
                b.playbook.encryption.name().to_string(),
                b.status.name().to_string(),
                "physical".to_string(),
                b.playbook.database,
                b.method.name().to_string(),
                b.parent,
                chain_length as i32,
                chain_stored_bytes as i64,
            )
        })
        .chain(dumps.into_iter().map(|d| {
            (
                d.file,
                d.playbook.backup_type,
                to_timestamptz(d.playbook.start_time),
                to_timestamptz(d.playbook.stop_time),
                None,
                None,
                d.sql_size_bytes as i64,
                d.playbook.size_bytes as i64,
                d.playbook.compression.name().to_string(),
                d.playbook.encryption.name().to_string(),
                "complete".to_string(),
                match d.content {
                    DumpKind::Database => "logical",
                    DumpKind::Globals => "globals",
                }
                .to_string(),
                d.playbook.database,
                "full".to_string(),
                None,
                1,
                d.playbook.size_bytes as i64,
            )
        }))
        .collect();
    // Oldest first, both kinds together.
    rows.sort_by_key(|row| row.2.map(|at| at.into_inner()));
    TableIterator::new(rows)
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sc_verify(
    name: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(backup_name, String),
        name!(object, String),
        name!(problem, String),
    ),
> {
    let mut timer = audit::start("verify", sc_backup_core::ops::audit::source::SQL);
    timer.details().backup = name.map(str::to_string);
    let (verified, problems) = audit::audited(&mut timer, |timer| {
        let repository = open_repository();
        let (verified, problems) = match find_named(&repository, name.unwrap_or("latest")) {
            Ok(Named::Dump(dump)) => {
                let problems =
                    verify_dump(&repository, &dump).unwrap_or_else(|e| raise_for_backup(&e));
                (dump.file, problems)
            }
            Ok(Named::Backup(metadata)) => {
                let (metadata, problems) =
                    backup::verify_backup(&repository, &metadata.playbook.backup_name)
                        .unwrap_or_else(|e| raise_for_backup(&e));
                (metadata.playbook.backup_name, problems)
            }
            Err(error) => raise_for_backup(&error),
        };
        timer.details().backup = Some(verified.clone());
        if !problems.is_empty() {
            // Not an ERROR (the rows are the answer), but a failure for the record.
            timer.details().error = Some(format!("{} problem(s) found", problems.len()));
        }
        (verified, problems)
    });
    TableIterator::new(
        problems
            .into_iter()
            .map(move |p| (verified.clone(), p.object, p.problem)),
    )
}

extension_sql!(
    r#"
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'sc_backup_operator') THEN
        CREATE ROLE sc_backup_operator NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE sc_backup_operator IS 'May take, list, verify and expire sc_backup backups, and read the audit trail';
REVOKE ALL ON FUNCTION sc_backup(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sc_list_backups() FROM PUBLIC;
REVOKE ALL ON FUNCTION sc_verify(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sc_backup(text, boolean) TO sc_backup_operator;
GRANT EXECUTE ON FUNCTION sc_list_backups() TO sc_backup_operator;
GRANT EXECUTE ON FUNCTION sc_verify(text) TO sc_backup_operator;
REVOKE ALL ON FUNCTION sc_expire(boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sc_delete_backup(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION sc_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION sc_schedule() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sc_expire(boolean) TO sc_backup_operator;
GRANT EXECUTE ON FUNCTION sc_delete_backup(text, boolean) TO sc_backup_operator;
GRANT EXECUTE ON FUNCTION sc_status() TO sc_backup_operator;
GRANT EXECUTE ON FUNCTION sc_schedule() TO sc_backup_operator;
GRANT USAGE ON SCHEMA sc_backup TO sc_backup_operator;
GRANT SELECT ON sc_backup.audit TO sc_backup_operator;
REVOKE ALL ON FUNCTION sc_dump(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sc_dump(text, boolean) TO sc_backup_operator;
REVOKE ALL ON FUNCTION sc_health() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sc_health() TO sc_backup_operator;
"#,
    name = "privileges",
    finalize
);
