//! The scheduler background worker: scheduled backups, retries, expiry after each success,
//! the audit table kept complete, and the Prometheus endpoint.
//!
//! Shaped like PostgreSQL's own workers: SIGTERM is `die` (so a fast shutdown, or
//! pg_terminate_backend, ends it at the next CHECK_FOR_INTERRUPTS, mid-backup included, which
//! then aborts cleanly), SIGHUP sets ConfigReloadPending, and all waiting is on the latch.
//! Its state lives in the audit table, so a restarted worker picks up where it left off and
//! `sc_schedule()` shows exactly what it will do. The metrics thread never calls PostgreSQL:
//! it renders the last snapshot the worker took (refreshed every few seconds) plus the live
//! archive backlog from the file system.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use sc_backup_core::backup::BackupKind;
use sc_backup_core::ops::audit::{source, AuditRecord, AuditTimer};
use sc_backup_core::ops::maintenance::expire_now;
use sc_backup_core::ops::metrics::{self, Status};
use sc_backup_core::ops::schedule::ScheduleKind;
use sc_backup_core::Repository;

use crate::status::{self, SCHEDULER_BACKEND_TYPE};
use crate::{audit, backup, guc, restore_test, scheduled_dumps};

/// How often the worker refreshes the figures behind the metrics.
const REFRESH: Duration = Duration::from_secs(5);
/// How often it copies the repository's audit records the table lacks.
const IMPORT_EVERY: Duration = Duration::from_secs(15);

/// Registers the worker; only while shared_preload_libraries is being processed (the archiver
/// and backends load this library too, and must not).
pub fn register() {
    // Safety: a plain flag set by the postmaster.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    BackgroundWorkerBuilder::new(SCHEDULER_BACKEND_TYPE)
        .set_type(SCHEDULER_BACKEND_TYPE)
        .set_library("sc_backup")
        .set_function("sc_backup_scheduler_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// Runs `body` in its own transaction: committed if it returns, rolled back (and the error
/// handed back, already logged by nobody) if it raises.
fn in_transaction<T>(body: impl FnOnce() -> T) -> Result<T, CaughtError> {
    // Safety: the worker is connected and between transactions.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(AssertUnwindSafe(|| Ok(body())))
        .catch_others(Err)
        .execute();
    // Safety: ends the transaction started above, either way.
    unsafe {
        match outcome {
            Ok(value) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
                pg_sys::pgstat_report_stat(false);
                Ok(value)
            }
            Err(caught) => {
                pg_sys::AbortCurrentTransaction();
                Err(caught)
            }
        }
    }
}

fn report_activity(what: &str) {
    let text = std::ffi::CString::new(what).unwrap_or_default();
    // Safety: copies the string into shared memory.
    unsafe {
        pg_sys::pgstat_report_activity(
            if what.is_empty() {
                pg_sys::BackendState::STATE_IDLE
            } else {
                pg_sys::BackendState::STATE_RUNNING
            },
            text.as_ptr(),
        )
    };
}

/// Logs a message once until it changes, so an idle misconfigured worker does not flood the
/// log every few seconds.
#[derive(Default)]
struct LogOnce(Option<String>);

impl LogOnce {
    fn log(&mut self, message: String) {
        if self.0.as_deref() != Some(message.as_str()) {
            pgrx::log!("{message}");
            self.0 = Some(message);
        }
    }
    fn clear(&mut self) {
        self.0 = None;
    }
}

/// PostgreSQL's signal handlers themselves: pgrx's pg_sys wraps C functions in Rust
/// functions, and a signal handler must be the C symbol.
mod postgres_handlers {
    use pgrx::pg_sys;
    use std::ffi::c_int;

    unsafe extern "C-unwind" {
        pub fn SignalHandlerForConfigReload(signal: c_int);
        pub fn die(signal: c_int);
    }

    /// `pqsignal`, which PostgreSQL 18 made a macro over `pqsignal_be` in the backend.
    ///
    /// # Safety
    /// `handler` must be async-signal-safe, as PostgreSQL's own handlers are.
    pub unsafe fn install(signal: c_int, handler: unsafe extern "C-unwind" fn(c_int)) {
        #[cfg(not(feature = "pg18"))]
        pg_sys::pqsignal(signal, Some(handler));
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(signal, Some(handler));
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn sc_backup_scheduler_main(_argument: pg_sys::Datum) {
    // Safety: installs PostgreSQL's own handlers, as its built-in workers do.
    unsafe {
        postgres_handlers::install(
            pg_sys::SIGHUP as i32,
            postgres_handlers::SignalHandlerForConfigReload,
        );
        postgres_handlers::install(pg_sys::SIGTERM as i32, postgres_handlers::die);
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    let database = guc::cstring_setting(&guc::DATABASE).unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    pgrx::log!("sc_backup scheduler started (database \"{database}\")");

    let started = Utc::now();
    let snapshot = Arc::new(Mutex::new(Status::default()));
    let mut metrics_server = MetricsServer::default();
    metrics_server.configure(&guc_listen(), &snapshot);
    let mut last_import: Option<Instant> = None;
    let mut last_failure: Option<Instant> = None;
    let mut restore_tests = CronJob::new(
        sc_backup_core::config::names::VERIFY_SCHEDULE,
        "restore test of the newest backup",
    );
    let mut dumps = CronJob::new(
        sc_backup_core::config::names::DUMP_SCHEDULE,
        "logical dumps",
    );
    let mut notice = LogOnce::default();
    // The server start already warned about a leftover archive_command (in the postmaster);
    // the worker repeats it when a reload brings one in.
    let mut command_conflict = crate::archiving::command_conflict().map(|c| c.message);
    // Settings each valid but together unable to archive (gzip at level 12, encryption without
    // a passphrase, s3:// without keys) are said once at start and after each reload that
    // changes the problem, before the archiver fails on every segment.
    let mut settings_problem = warn_about_settings(None);
    // Repositories 2 to 4 get repository 1's WAL from this thread.
    let mut catch_up = crate::catch_up::CatchUp::start(crate::host::data_directory());

    loop {
        // Only a cluster that archives copies: a restored copy (archive_mode off) or a standby
        // that does not archive must never write into the repositories it came from.
        catch_up.configure(archiving_now().then(|| guc::all_settings().ok()).flatten());
        for (warning, line) in catch_up.news() {
            if warning {
                pgrx::warning!("{line}");
            } else {
                pgrx::log!("{line}");
            }
        }
        let state = in_transaction(|| {
            status::extension_installed().then(|| {
                (
                    status::gather_status(true),
                    status::schedule_history(),
                    audit::session_user(),
                    status::last_scheduled_run("restore-test"),
                    status::last_scheduled_run("dump"),
                )
            })
        });
        let mut next_wakeup = REFRESH;
        match state {
            Err(caught) => pgrx::warning!(
                "sc_backup scheduler: could not read its state: {}",
                audit::caught_message(&caught)
            ),
            Ok(None) => notice.log(format!(
                "sc_backup scheduler: the extension is not installed in database \"{database}\"; run CREATE EXTENSION sc_backup there, or set sc_backup.database"
            )),
            Ok(Some((mut status, history, user, last_restore_test, last_dump))) => {
                status.repositories = catch_up.lags();
                catch_up.set_user(&user);
                *snapshot.lock().unwrap_or_else(|e| e.into_inner()) = status;
                if last_import.is_none_or(|at| at.elapsed() >= IMPORT_EVERY) {
                    import_audit_records(last_import.is_none());
                    last_import = Some(Instant::now());
                }
                let scheduler = crate::host::scheduler();
                let repository_set = guc::cstring_setting(&guc::REPOSITORY).is_some();
                match scheduler {
                    Err(error) => notice.log(format!("sc_backup scheduler: {error}")),
                    Ok(_) if !guc::SCHEDULER.get() => {
                        notice.log("sc_backup scheduler: scheduled backups are off (sc_backup.scheduler = off)".into())
                    }
                    Ok(_) if !repository_set => notice.log(
                        "sc_backup scheduler: sc_backup.repository is not set; no scheduled backups".into(),
                    ),
                    Ok(scheduler) => {
                        notice.clear();
                        let now = Utc::now();
                        let (next_test, _) = restore_tests.tend(
                            guc::cstring_setting(&guc::VERIFY_SCHEDULE),
                            last_restore_test,
                            started,
                            now,
                            || restore_test::start(&user),
                        );
                        let (next_dumps, dumps_ended) = dumps.tend(
                            guc::cstring_setting(&guc::DUMP_SCHEDULE),
                            last_dump,
                            started,
                            now,
                            || scheduled_dumps::start(&user),
                        );
                        if dumps_ended {
                            // The retention policy covers dumps too.
                            expire_after_backup(&user);
                        }
                        for at in [next_test, next_dumps].into_iter().flatten() {
                            let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
                            next_wakeup = next_wakeup.min(wait.max(Duration::from_millis(100)));
                        }
                        let due = scheduler.due(&history, started, now);
                        // After a failure (or a manual backup holding the lock), never two
                        // attempts within the retry delay, even if the audit trail failed to
                        // record the last one. After a success the schedule alone decides.
                        let resting = last_failure
                            .is_some_and(|at| at.elapsed() < scheduler.retry_delay);
                        if !due.is_empty() && !resting {
                            last_failure = match run_scheduled_backup(&due, &user) {
                                true => None,
                                false => Some(Instant::now()),
                            };
                            continue;
                        }
                        if let Some(at) = scheduler.next_wakeup(&history, started) {
                            let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
                            next_wakeup = next_wakeup.min(wait.max(Duration::from_millis(100)));
                        }
                    }
                }
            }
        }
        report_activity("");
        wait(next_wakeup);
        // Safety: reads and clears a flag set by the SIGHUP handler.
        if unsafe { pg_sys::ConfigReloadPending } != 0 {
            unsafe {
                pg_sys::ConfigReloadPending = 0;
                pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
            }
            let now_database =
                guc::cstring_setting(&guc::DATABASE).unwrap_or_else(|| "postgres".into());
            if now_database != database {
                pgrx::log!(
                    "sc_backup scheduler: sc_backup.database changed to \"{now_database}\"; restarting"
                );
                // Exit code 1: the postmaster starts the worker again, connected anew.
                unsafe { pg_sys::proc_exit(1) };
            }
            metrics_server.configure(&guc_listen(), &snapshot);
            notice.clear();
            let conflict = crate::archiving::command_conflict().map(|c| c.message);
            if conflict.is_some() && conflict != command_conflict {
                crate::archiving::warn_about_command_conflict();
            }
            command_conflict = conflict;
            settings_problem = warn_about_settings(settings_problem);
        }
    }
}

/// Warns when the settings cannot archive or back up, unless that was already said; returns the
/// problem, if any.
fn warn_about_settings(already_said: Option<String>) -> Option<String> {
    let problem = guc::settings().err()?;
    let text = problem.to_string();
    if already_said.as_deref() != Some(text.as_str()) {
        let mut report = pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("sc_backup: these settings cannot archive WAL or take backups: {text}"),
            "sc_backup",
        );
        if let Some(hint) = problem.hint() {
            report = report.set_hint(hint);
        }
        report.report(pgrx::PgLogLevel::WARNING);
    }
    Some(text)
}

/// Whether this server archives WAL now (archive_mode = always, or on outside recovery).
fn archiving_now() -> bool {
    // Safety: reads of the postmaster's settings and the shared recovery state.
    unsafe {
        let mode = pg_sys::XLogArchiveMode as u32;
        mode == pg_sys::ArchiveMode::ARCHIVE_MODE_ALWAYS
            || (mode == pg_sys::ArchiveMode::ARCHIVE_MODE_ON && !pg_sys::RecoveryInProgress())
    }
}

/// Sleeps on the latch; SIGTERM (die) ends the process in CHECK_FOR_INTERRUPTS.
fn wait(timeout: Duration) {
    // Safety: the worker's own latch; WL_EXIT_ON_PM_DEATH exits if the postmaster dies.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            timeout.as_millis().min(i64::MAX as u128) as i64,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    check_for_interrupts!();
}

fn guc_listen() -> String {
    guc::cstring_setting(&guc::METRICS_LISTEN).unwrap_or_default()
}

/// One backup for all the schedules due, labelled with the rarest; then expiry. Returns
/// whether the backup was taken.
fn run_scheduled_backup(due: &[ScheduleKind], user: &str) -> bool {
    let kind = due[0];
    // A full backup due on any of them is never put off for an incremental one.
    let method = due
        .iter()
        .map(|schedule| guc::backup_kind_for(*schedule))
        .max_by_key(|method| match method {
            BackupKind::Incremental => 0,
            BackupKind::Differential => 1,
            BackupKind::Full => 2,
        })
        .unwrap_or(BackupKind::Full);
    let mut timer = AuditTimer::start("backup", source::SCHEDULER, user);
    timer.details().backup_type = Some(kind.name().into());
    timer.details().schedules = due.iter().map(|k| k.name().to_string()).collect();
    report_activity(&format!("taking a scheduled {kind} backup"));
    pgrx::log!("sc_backup scheduler: starting a scheduled {kind} backup");
    let outcome = in_transaction(|| {
        let metadata = backup::take_backup(kind.name(), method, true, &mut timer);
        // Recorded in the backup's own transaction: both or neither.
        audit::store(&timer.finish(None), true);
        metadata
    });
    match outcome {
        Ok(metadata) => {
            pgrx::log!(
                "sc_backup scheduler: {kind} backup {} done: {} files, {} bytes in {:.1} s",
                metadata.playbook.backup_name,
                metadata.file_count,
                metadata.playbook.size_bytes,
                metadata.playbook.duration_seconds
            );
            expire_after_backup(user);
            true
        }
        Err(caught) => {
            let message = audit::caught_message(&caught);
            if audit::caught_report(&caught).sql_error_code()
                == PgSqlErrorCode::ERRCODE_OBJECT_IN_USE
            {
                // A manual sc_backup() is running: not a failure, try again shortly.
                pgrx::log!("sc_backup scheduler: {message}; the scheduled {kind} backup waits");
                return false;
            }
            pgrx::warning!("sc_backup scheduler: the scheduled {kind} backup failed: {message}");
            let record = timer.finish(Some(message));
            if let Err(caught) = in_transaction(|| audit::store(&record, true)) {
                pgrx::warning!(
                    "sc_backup scheduler: could not record the failure: {}",
                    audit::caught_message(&caught)
                );
            }
            false
        }
    }
}

/// A job the worker runs on its own thread when its cron setting says so (the restore test,
/// the logical dumps): at most one run at a time; its audit records are stored when it ends.
struct CronJob {
    /// The cron setting's name, for messages.
    setting: &'static str,
    /// What a run does, for the log.
    what: &'static str,
    running: Option<JoinHandle<Vec<AuditRecord>>>,
    /// When this worker last started one (in case the audit trail could not record it).
    last_started: Option<DateTime<Utc>>,
}

impl CronJob {
    fn new(setting: &'static str, what: &'static str) -> CronJob {
        CronJob {
            setting,
            what,
            running: None,
            last_started: None,
        }
    }

    /// Records a finished run, starts one when `expression` says so (with `start`, in a
    /// transaction), and returns when the next one is due. Returns whether a run just ended.
    fn tend(
        &mut self,
        expression: Option<String>,
        last_recorded: Option<DateTime<Utc>>,
        scheduler_started: DateTime<Utc>,
        now: DateTime<Utc>,
        start: impl FnOnce() -> Result<JoinHandle<Vec<AuditRecord>>, String>,
    ) -> (Option<DateTime<Utc>>, bool) {
        let mut ended = false;
        if self.running.as_ref().is_some_and(|t| t.is_finished()) {
            let records = self
                .running
                .take()
                .expect("checked")
                .join()
                .unwrap_or_else(|_| {
                    vec![AuditTimer::start(self.what, source::SCHEDULER, "")
                        .finish(Some(format!("the {} thread panicked", self.what)))]
                });
            for record in &records {
                let subject = record
                    .backup
                    .as_deref()
                    .or(record.target.as_deref())
                    .unwrap_or("?");
                match &record.error {
                    None => pgrx::log!(
                        "sc_backup scheduler: {} of {subject} succeeded in {:.1} s",
                        record.operation,
                        record.duration_seconds
                    ),
                    Some(error) => pgrx::warning!(
                        "sc_backup scheduler: {} of {subject} failed: {error}",
                        record.operation
                    ),
                }
                if let Err(caught) = in_transaction(|| audit::store(record, true)) {
                    pgrx::warning!(
                        "sc_backup scheduler: could not record the {}: {}",
                        record.operation,
                        audit::caught_message(&caught)
                    );
                }
            }
            ended = true;
        }
        let Some(expression) = expression else {
            return (None, ended);
        };
        let Ok(cron) = sc_backup_core::config::calendar::parse_cron(self.setting, &expression)
        else {
            return (None, ended);
        };
        let last = last_recorded.max(self.last_started);
        let Some(next) =
            sc_backup_core::ops::schedule::next_occurrence(&cron, last, scheduler_started)
        else {
            return (None, ended);
        };
        if self.running.is_some() || next > now {
            return (Some(next), ended);
        }
        pgrx::log!("sc_backup scheduler: starting the scheduled {}", self.what);
        self.last_started = Some(now);
        match in_transaction(start) {
            Ok(Ok(handle)) => self.running = Some(handle),
            Ok(Err(error)) => pgrx::warning!("sc_backup scheduler: {}: {error}", self.what),
            Err(caught) => pgrx::warning!(
                "sc_backup scheduler: {}: {}",
                self.what,
                audit::caught_message(&caught)
            ),
        }
        (
            sc_backup_core::ops::schedule::next_occurrence(&cron, Some(now), scheduler_started),
            ended,
        )
    }
}

fn expire_after_backup(user: &str) {
    report_activity("expiring backups past sc_backup.retention_days");
    let mut timer = AuditTimer::start("expire", source::SCHEDULER, user);
    let outcome = in_transaction(|| {
        audit::audited(&mut timer, |timer| {
            let settings = crate::host::settings();
            let repository = crate::host::open_repository();
            // Taken before planning: no backup of this cluster can then start, run or finish
            // between the plan and its execution, so unfinished ones are debris. (Backups from
            // elsewhere are covered by the removal itself: see retention::expire.)
            let no_backup_runs = crate::backup::try_backup_lock();
            expire_now(
                &repository,
                settings.retention,
                Utc::now(),
                false,
                no_backup_runs,
                |plan| timer.details().target = Some(plan.describe()),
            )
            .unwrap_or_else(|e| {
                crate::raise::raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION)
            })
        })
    });
    match outcome {
        Ok(plan) if !plan.expired_backups.is_empty() || !plan.expired_wal.is_empty() => {
            pgrx::log!("sc_backup scheduler: expired {}", plan.describe())
        }
        Ok(_) => {}
        Err(caught) => pgrx::warning!(
            "sc_backup scheduler: expiry failed: {}",
            audit::caught_message(&caught)
        ),
    }
}

/// Copies the repository's audit records the table lacks: all of them at start, then those
/// of today and yesterday (UTC).
fn import_audit_records(everything: bool) {
    let outcome = in_transaction(|| {
        let Ok(settings) = guc::settings() else {
            return Ok(0);
        };
        let repository = Repository::open(&settings)?;
        let today = Utc::now().date_naive();
        let recent = [today.pred_opt().unwrap_or(today), today];
        audit::import_from_repository(&repository, (!everything).then_some(&recent[..]))
    });
    match outcome {
        Ok(Ok(0)) => {}
        Ok(Ok(count)) => pgrx::log!(
            "sc_backup scheduler: copied {count} audit record(s) from the repository into sc_backup.audit"
        ),
        // A repository that is not there yet (nothing archived) has nothing to import.
        Ok(Err(sc_backup_core::Error::NotARepository { .. })) => {}
        Ok(Err(error)) => pgrx::warning!("sc_backup scheduler: reading the audit records: {error}"),
        Err(caught) => pgrx::warning!(
            "sc_backup scheduler: copying audit records: {}",
            audit::caught_message(&caught)
        ),
    }
}

/// The Prometheus endpoint (`sc_backup_core::ops::metrics_server`: one connection at a time, with
/// timeouts) on its own thread, rebound when sc_backup.metrics_listen changes.
#[derive(Default)]
struct MetricsServer {
    listen: String,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    fn configure(&mut self, listen: &str, snapshot: &Arc<Mutex<Status>>) {
        if listen == self.listen && (self.stop.is_some() || listen.is_empty()) {
            return;
        }
        if let Some(stop) = self.stop.take() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.listen = listen.to_string();
        if listen.is_empty() {
            return;
        }
        let listener = match std::net::TcpListener::bind(listen) {
            Ok(listener) => listener,
            Err(error) => {
                pgrx::warning!("sc_backup scheduler: cannot serve metrics on {listen}: {error}");
                return;
            }
        };
        let data_directory = crate::host::data_directory();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let snapshot = Arc::clone(snapshot);
        let thread = sc_backup_core::util::threads::spawn_without_signals(
            "sc_backup metrics".into(),
            move || serve(&listener, &stopping, &snapshot, data_directory),
        );
        match thread {
            Ok(thread) => {
                pgrx::log!(
                    "sc_backup scheduler: serving Prometheus metrics on http://{listen}/metrics"
                );
                self.stop = Some(stop);
                self.thread = Some(thread);
            }
            Err(error) => {
                pgrx::warning!("sc_backup scheduler: cannot start the metrics thread: {error}")
            }
        }
    }
}

/// The metrics thread: no PostgreSQL calls here.
fn serve(
    listener: &std::net::TcpListener,
    stop: &std::sync::atomic::AtomicBool,
    snapshot: &Mutex<Status>,
    data_directory: PathBuf,
) {
    use sc_backup_core::ops::metrics_server::Answer;
    sc_backup_core::ops::metrics_server::serve(listener, stop, &|path| {
        if path == "/metrics" || path == "/" {
            let mut status = snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Ok(backlog) = sc_backup_core::pg::archive_status::archive_backlog(
                &data_directory,
                std::time::SystemTime::now(),
            ) {
                status.wal.backlog = backlog;
            }
            Answer {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                body: status.render(),
            }
        } else {
            Answer {
                status: 404,
                content_type: "text/plain",
                body: "not found; try /metrics\n".into(),
            }
        }
    });
}
