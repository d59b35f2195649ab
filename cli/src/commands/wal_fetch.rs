//! `sc-backup wal-fetch %f %p`: PostgreSQL's restore_command.
//!
//! What PostgreSQL does with the exit status (xlogarchive.c, `RestoreArchivedFile`, the same on
//! 15 to 18): 0 means the file is at %p; any status up to 125 means "not in the archive", after
//! which archive recovery with no target ends and the server promotes (a standby asks again
//! later); a status above 125, or death by a signal, is FATAL: the startup process exits, the
//! server shuts down, and starting it again resumes recovery where it stopped. So:
//!
//! - 0: the file is at %p, verified against the digest the repository records;
//! - 1, silently: the repository answered that it does not hold the file, which is how
//!   PostgreSQL learns that recovery reached the end of the archive;
//! - a transient failure (the object store unreachable, overloaded, a connection cut) is tried
//!   again for up to `--retry-for` seconds (default 60; each attempt may take up to the store's
//!   own request timeout and retries); then, on a standby (`standby.signal`), 1 with a warning
//!   line (a standby never promotes on its own: it asks again after wal_retrieve_retry_interval,
//!   so a short outage does not kill it), and elsewhere [`STOP_RECOVERY`];
//! - anything else (a damaged object, a wrong key, no repository, a bad setting, a bug):
//!   [`STOP_RECOVERY`], with one log line naming the file and the cause. Recovery must never end
//!   early and promote a cluster missing every later transaction.
//!
//! With several repositories (the cluster's `sc_backup.repository2` ...; `--repository`
//! names one and only that one), each is asked in order: a file missing or damaged in one
//! comes from the next, with a warning naming both. "Not in the archive" (1) only when every
//! repository answered that it does not hold the file; a damaged object or an outage with no
//! repository holding the file is treated as above.
//!
//! In a data directory in recovery, segments come from the prefetch spool when a verified copy
//! is there (`sc_backup_core::wal::prefetch`), and each call makes sure a prefetcher runs: this
//! same program, started detached with the same arguments and `SC_BACKUP_WAL_PREFETCHER` set,
//! so it resolves the settings exactly as this call did. The spool only ever saves downloads:
//! the repository's own answer decides what exists, and any trouble with the spool falls back
//! to fetching directly.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use sc_backup_core::codec::RepositoryKey;
use sc_backup_core::config::repositories::RepositoryNumber;
use sc_backup_core::wal::prefetch::{default_depth, Spool};
use sc_backup_core::wal::{WalFileKind, WalFileName};
use sc_backup_core::{Error, Repository, Settings};

use crate::error::CliError;
use crate::settings::SettingsArgs;

/// The exit status that makes PostgreSQL stop recovery (FATAL) instead of taking the file for
/// absent: anything above 125 that is not 128 + a signal number PostgreSQL handles itself
/// (128 + SIGTERM would be read as a shutdown request).
pub const STOP_RECOVERY: u8 = 255;
/// The file is not in the repository: the end of the archive.
pub const NOT_IN_REPOSITORY: u8 = 1;

/// `sc-backup wal-fetch`'s arguments.
#[derive(Debug, clap::Args)]
pub struct WalFetchArgs {
    /// WAL file name (%f)
    pub wal_file: String,
    /// Where to write it (%p), relative to the current directory
    pub destination: PathBuf,
    /// The unwrapped repository key written by `sc-backup restore` (instead of the passphrase)
    #[arg(long)]
    pub identity_file: Option<PathBuf>,
    /// Segments fetched ahead, in the background, into the data directory's spool while it
    /// is in recovery (default 8 for a local repository, 32 for S3/GCS; 0 turns it off)
    #[arg(long, env = "SC_BACKUP_RESTORE_PREFETCH")]
    pub prefetch: Option<usize>,
    /// How long to keep trying when the repository is unreachable or overloaded, in seconds;
    /// then recovery stops (a standby asks again later instead)
    #[arg(
        long,
        value_name = "SECONDS",
        env = "SC_BACKUP_WAL_FETCH_RETRY_SECONDS",
        default_value_t = 60
    )]
    pub retry_for: u64,
}

/// Runs `wal-fetch` and turns its outcome into the exit status PostgreSQL acts on (see the
/// module documentation).
pub fn main(settings: &SettingsArgs, args: &WalFetchArgs) -> ExitCode {
    let prefetcher = std::env::var_os(PREFETCHER_ENV).is_some();
    let fetch = || {
        settings.resolve_all().and_then(|repositories| {
            // The spool belongs to the first repository: the prefetcher reads that one only,
            // and a file it cannot get there is left to wal-fetch's fallback (which says so).
            let asked = if prefetcher {
                &repositories[..1]
            } else {
                &repositories[..]
            };
            fetch_from_any(asked, args)
        })
    };
    if prefetcher {
        // The detached prefetcher: nobody reads its status.
        let _ = fetch();
        return ExitCode::SUCCESS;
    }
    let data_directory = std::env::current_dir().unwrap_or_default();
    let standby = data_directory.join("standby.signal").exists();
    let deadline = Instant::now() + Duration::from_secs(args.retry_for);
    let mut attempt = 0u32;
    loop {
        let error = match fetch() {
            Ok(()) => return ExitCode::SUCCESS,
            Err(CliError::QuietNotFound) => return ExitCode::from(NOT_IN_REPOSITORY),
            Err(error) => error,
        };
        let transient = error.is_transient();
        // A server stopped meanwhile (its postmaster.pid gone) no longer waits for us.
        let server_waits = !data_directory.join("PG_VERSION").exists()
            || data_directory.join("postmaster.pid").exists();
        if transient && Instant::now() < deadline && server_waits {
            if attempt == 0 {
                eprintln!(
                    "sc-backup: warning: could not fetch WAL file \"{}\": {error}; trying again for up to {} s",
                    args.wal_file, args.retry_for
                );
            }
            std::thread::sleep(retry_pause(attempt).min(deadline - Instant::now()));
            attempt += 1;
            continue;
        }
        let hint = error
            .hint()
            .map(|hint| format!(" Hint: {hint}"))
            .unwrap_or_default();
        if transient && standby {
            eprintln!(
                "sc-backup: warning: could not fetch WAL file \"{}\": {error}. This standby asks again after wal_retrieve_retry_interval.{hint}",
                args.wal_file
            );
            return ExitCode::from(NOT_IN_REPOSITORY);
        }
        eprintln!(
            "sc-backup: error: could not fetch WAL file \"{}\" from the repository: {error}. Recovery stops here instead of ending early; start the server again once this is fixed.{hint}",
            args.wal_file
        );
        return ExitCode::from(STOP_RECOVERY);
    }
}

/// Asks each repository in turn until one has the file. The first repository alone uses the
/// identity file and the prefetch spool (both belong to it); a later one is a fallback.
fn fetch_from_any(
    repositories: &[(RepositoryNumber, Settings)],
    args: &WalFetchArgs,
) -> Result<(), CliError> {
    let mut refusals: Vec<(RepositoryNumber, CliError)> = Vec::new();
    for (index, (number, settings)) in repositories.iter().enumerate() {
        let first = index == 0;
        let outcome = run(
            settings,
            &args.wal_file,
            &args.destination,
            args.identity_file.as_deref().filter(|_| first),
            if first { args.prefetch } else { Some(0) },
        );
        match outcome {
            Ok(()) => {
                if !refusals.is_empty() {
                    let why: Vec<String> = refusals
                        .iter()
                        .map(|(number, error)| match error {
                            CliError::QuietNotFound => format!("{number} does not hold it"),
                            error => format!("{number}: {error}"),
                        })
                        .collect();
                    eprintln!(
                        "sc-backup: warning: WAL file \"{}\" came from {number} ({})",
                        args.wal_file,
                        why.join("; ")
                    );
                }
                return Ok(());
            }
            Err(error) => refusals.push((*number, error)),
        }
    }
    // None had it. Absent everywhere is the end of the archive; otherwise what went wrong
    // decides, a damaged copy (which stops recovery) before an outage (which may end).
    let mut errors: Vec<CliError> = refusals
        .into_iter()
        .map(|(_, error)| error)
        .filter(|error| !matches!(error, CliError::QuietNotFound))
        .collect();
    errors.sort_by_key(CliError::is_transient);
    Err(errors.into_iter().next().unwrap_or(CliError::QuietNotFound))
}

/// 1 s, 2 s, 4 s ... up to 10 s between attempts.
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_secs((1u64 << attempt.min(4)).min(10))
}

/// For the whole of a `wal-fetch` run: a panic anywhere (any thread) must stop recovery, not
/// exit 101, which PostgreSQL would take for "not in the archive".
pub fn stop_recovery_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "sc-backup: error: wal-fetch failed unexpectedly ({info}). Recovery stops here instead of ending early; please report this."
        );
        std::process::exit(i32::from(STOP_RECOVERY));
    }));
}

/// Set (to the depth) in the environment of the prefetcher a `wal-fetch` starts.
const PREFETCHER_ENV: &str = "SC_BACKUP_WAL_PREFETCHER";

pub fn run(
    settings: &Settings,
    wal_file: &str,
    destination: &Path,
    identity_file: Option<&Path>,
    prefetch: Option<usize>,
) -> Result<(), CliError> {
    let object_store = settings.s3.is_some() || settings.gcs.is_some();
    let location = settings.repository.to_string();
    let in_recovery_spool = || {
        std::env::current_dir()
            .ok()
            .and_then(|dir| Spool::in_recovery(&dir, &location).ok().flatten())
    };
    if let Some(depth) = std::env::var(PREFETCHER_ENV)
        .ok()
        .and_then(|d| d.parse().ok())
    {
        let Some(spool) = in_recovery_spool() else {
            return Ok(());
        };
        let repository = open(settings, identity_file)?;
        spool.prefetch(&repository, depth, if object_store { 4 } else { 2 })?;
        return Ok(());
    }
    let depth = prefetch.unwrap_or_else(|| default_depth(object_store));
    let name = WalFileName::parse(wal_file)?;
    let spool = match (depth, name.kind()) {
        (1.., WalFileKind::Segment) => in_recovery_spool(),
        _ => None,
    };
    let Some(spool) = spool else {
        let repository = open(settings, identity_file)?;
        return match repository.fetch_wal(wal_file, destination) {
            Ok(_) => Ok(()),
            Err(Error::WalNotFound(_)) => Err(CliError::QuietNotFound),
            Err(e) => Err(e.into()),
        };
    };
    // A verified spooled copy needs nothing from the repository; otherwise what exists is the
    // repository's answer, never the spool's.
    if !spool.take(&name, destination).unwrap_or(false) {
        let repository = open(settings, identity_file)?;
        let Some(stored) = repository.find_wal(&name)? else {
            return Err(CliError::QuietNotFound);
        };
        repository.fetch_stored(&stored, destination)?;
    }
    // Best effort from here: the file is in place, recovery goes on without a prefetcher.
    if let Ok(meta) = std::fs::metadata(destination) {
        if spool.note_request(wal_file, meta.len()).is_ok() && !spool.prefetcher_running() {
            start_prefetcher(depth);
        }
    }
    Ok(())
}

fn open(settings: &Settings, identity_file: Option<&Path>) -> Result<Repository, CliError> {
    let mut repository = Repository::open(settings)?;
    if let Some(path) = identity_file {
        // Written by `sc-backup restore`: spares each call the passphrase derivation.
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::Message(format!(
                "could not read identity file \"{}\": {e}",
                path.display()
            ))
        })?;
        let key = RepositoryKey::from_identity_file(&text)
            .map_err(|e| CliError::Message(format!("identity file \"{}\": {e}", path.display())))?;
        repository = repository.with_key(key)?;
    }
    Ok(repository)
}

/// This program again, same arguments, detached (its own session, no terminal, nothing
/// PostgreSQL waits for), as the prefetcher.
fn start_prefetcher(depth: usize) {
    let Ok(executable) = std::env::current_exe() else {
        return;
    };
    let mut command = Command::new(executable);
    command
        .args(std::env::args_os().skip(1))
        .env(PREFETCHER_ENV, depth.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Safety: setsid is async-signal-safe; it only detaches the child from our session.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::setsid();
            Ok(())
        });
    }
    let _ = command.spawn();
}
