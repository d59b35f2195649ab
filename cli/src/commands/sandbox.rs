//! What `extract`, `verify --restore` and `drill` share: the sandbox's flags, and bringing a
//! sandbox up for a backup (`sc_backup_core::sandbox` owns the sandbox itself).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sc_backup_core::backup::{read_manifest, BackupMetadata};
use sc_backup_core::pg::server_binaries::{major_of, ServerBinaries};
use sc_backup_core::restore::{check_target_reachable, RecoveryTarget, RestoreProgress, WalSource};
use sc_backup_core::sandbox::{Sandbox, SandboxOptions};
use sc_backup_core::util::bytes::human_bytes;
use sc_backup_core::{Repository, Settings};

use super::restore::wal_fetch_command;
use crate::error::CliError;

#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Where the sandbox is created: it needs room for the backup plus 1 GiB
    #[arg(long, env = "SC_BACKUP_SANDBOX_DIR", default_value = "/var/tmp")]
    pub sandbox_dir: PathBuf,

    /// Leave the sandbox running at the end and print how to connect to it
    #[arg(long)]
    pub keep: bool,

    /// Bin directory of the server of the backup's major (default: looked for)
    #[arg(long, env = "SC_BACKUP_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,

    /// Role to connect to the sandbox as (the cluster's bootstrap superuser)
    #[arg(long, default_value = "postgres")]
    pub sandbox_user: String,

    /// A server setting for the sandbox, e.g. shared_preload_libraries=timescaledb (repeatable)
    #[arg(long = "sandbox-setting", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
}

/// The environment the sandbox server's `restore_command` needs beyond ours: credentials
/// that came from the cluster's configuration files rather than from our environment.
fn credential_environment(settings: &Settings) -> Vec<(String, String)> {
    let mut environment = Vec::new();
    if let Some(s3) = &settings.s3 {
        environment.push((
            "SC_BACKUP_S3_ACCESS_KEY_ID".to_string(),
            s3.access_key_id.clone(),
        ));
        environment.push((
            "SC_BACKUP_S3_SECRET_ACCESS_KEY".to_string(),
            s3.secret_access_key.expose().to_string(),
        ));
        if let Some(token) = &s3.session_token {
            environment.push(("AWS_SESSION_TOKEN".to_string(), token.expose().to_string()));
        }
    }
    if let Some(account) = settings.gcs.as_ref().and_then(|g| g.credentials.as_ref()) {
        environment.push((
            "SC_BACKUP_GCS_CREDENTIALS".to_string(),
            account.file.display().to_string(),
        ));
    }
    environment
}

/// Run as root, the sandbox server (run as postgres) executes this very binary as its
/// restore_command: say so now rather than in the middle of recovery.
fn check_executable_by_postgres(executable: &Path) -> Result<(), CliError> {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let mut blocked = None;
    for ancestor in executable.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o001 == 0 {
            blocked = Some(ancestor.to_path_buf());
        }
    }
    let file_mode = std::fs::metadata(executable)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if blocked.is_some() || file_mode & 0o001 == 0 {
        return Err(CliError::Message(format!(
            "the sandbox server runs as the postgres OS user and uses {} as its restore_command, which postgres cannot execute{}; install sc-backup where every user can run it (e.g. /usr/local/bin)",
            executable.display(),
            blocked
                .map(|dir| format!(" ({} is closed to it)", dir.display()))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// The server of the backup's major: `--pg-bindir`, else looked for.
pub fn server_for(
    metadata: &BackupMetadata,
    args: &SandboxArgs,
) -> Result<ServerBinaries, CliError> {
    Ok(
        ServerBinaries::find(major_of(metadata.pg_version_num), args.pg_bindir.as_deref())
            .map_err(sc_backup_core::Error::from)?,
    )
}

/// Restores `metadata` into a new sandbox with recovery to `target`, starts it and waits for
/// its promotion. Everything is refused before anything is written when the target cannot be
/// reached or the server of the backup's major is missing.
pub fn open(
    settings: &Settings,
    repository: &Repository,
    metadata: &BackupMetadata,
    target: RecoveryTarget,
    args: &SandboxArgs,
    cancel: &Arc<AtomicBool>,
    relaxed_durability: bool,
) -> Result<Sandbox, CliError> {
    let server = server_for(metadata, args)?;
    let manifest = read_manifest(repository, metadata)?;
    check_target_reachable(repository, metadata, &target)?;
    // To consistency the backup's own WAL is enough, fetched by the restore itself;
    // otherwise the server fetches WAL with this very binary.
    let wal_source = if target == RecoveryTarget::Immediate {
        WalSource::BackupOnly
    } else {
        let executable = std::env::current_exe()
            .map_err(|e| CliError::Message(format!("cannot find my own executable: {e}")))?;
        check_executable_by_postgres(&executable)?;
        WalSource::Command(wal_fetch_command(&executable, settings))
    };
    let extra_settings = args
        .settings
        .iter()
        .map(|setting| {
            setting
                .split_once('=')
                .map(|(name, value)| (name.trim().to_string(), value.to_string()))
                .ok_or_else(|| {
                    CliError::Message(format!(
                        "--sandbox-setting \"{setting}\": expected NAME=VALUE"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let describe_target = target.describe();
    let options = SandboxOptions {
        parent: args.sandbox_dir.clone(),
        server: server.clone(),
        target,
        target_timeline: None,
        wal_source,
        environment: credential_environment(settings),
        superuser: args.sandbox_user.clone(),
        settings: extra_settings,
        relaxed_durability,
        parallelism: 2,
        cancel: Arc::clone(cancel),
    };
    eprintln!(
        "restoring backup {} (PostgreSQL {}, {} files, {}) into a sandbox under {}",
        metadata.playbook.backup_name,
        server.version(),
        metadata.file_count,
        human_bytes(metadata.playbook.size_bytes),
        args.sandbox_dir.display()
    );
    let bar = ProgressBar::new(metadata.playbook.size_bytes);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template"),
    );
    let progress = |p: RestoreProgress| bar.set_position(p.bytes_done);
    let restored = Sandbox::restore(repository, metadata, &manifest, &options, &progress);
    bar.finish_and_clear();
    let mut sandbox = restored?;
    eprintln!(
        "restored in {:.1}s; replaying WAL to {describe_target} in the sandbox",
        sandbox.timings.restore.as_secs_f64()
    );
    sandbox.start(cancel)?;
    eprintln!(
        "sandbox up: replay {:.1}s, promotion {:.1}s",
        sandbox.timings.replay.as_secs_f64(),
        sandbox.timings.promote.as_secs_f64()
    );
    Ok(sandbox)
}

/// `--keep`: leave the sandbox running and say how to reach and remove it.
pub fn keep_if_asked(sandbox: &mut Sandbox, args: &SandboxArgs, database: &str) {
    if !args.keep {
        return;
    }
    if let Err(error) = sandbox.keep() {
        eprintln!("the sandbox could not be kept running, so it is removed: {error}");
        return;
    }
    eprintln!(
        "the sandbox is kept running: psql \"{}\"",
        sandbox.conninfo(database)
    );
    // pg_ctl refuses to run as root.
    // Safety: geteuid cannot fail.
    let as_postgres = if unsafe { libc::geteuid() } == 0 {
        "runuser -u postgres -- "
    } else {
        ""
    };
    eprintln!(
        "      remove it with: {as_postgres}{} -D {}/data stop -m fast && rm -rf {}",
        sandbox.server().program("pg_ctl").display(),
        sandbox.directory().display(),
        sandbox.directory().display()
    );
}
