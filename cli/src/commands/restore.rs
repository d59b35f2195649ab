//! `sc-backup restore`: a base backup into a data directory, plus the recovery configuration
//! that replays archived WAL to the chosen target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sc_backup_core::backup::{list_backups, read_manifest};
use sc_backup_core::pg::server_binaries::{major_of, ServerBinaries};
use sc_backup_core::restore::{
    check_target, check_target_reachable, choose_backup, restore, RestoreOptions, RestoreProgress,
    WalSource,
};
use sc_backup_core::{Repository, Settings};

use super::target::TargetArgs;
use super::{audit_start, audited};
use crate::error::CliError;
use sc_backup_core::util::bytes::human_bytes;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TargetAction {
    Promote,
    Pause,
    Shutdown,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup to restore, or "latest" (with --target-time: the newest that ended before it)
    #[arg(long, default_value = "latest")]
    pub backup: String,

    #[command(flatten)]
    pub target: TargetArgs,

    /// What the server does at the target (PostgreSQL's default: pause)
    #[arg(long, value_enum)]
    pub target_action: Option<TargetAction>,

    /// Timeline to follow: current, latest or a number
    #[arg(long)]
    pub target_timeline: Option<String>,

    /// Replace the contents of a non-empty data directory (also SC_BACKUP_FORCE=true, or, in
    /// the sc_backup image, the playbook's FORCE_RESTORE=true)
    #[arg(long, env = "SC_BACKUP_FORCE")]
    pub force: bool,

    /// Restore tablespace OID to DIR instead of its original location (repeatable)
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,

    /// Files restored at once
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,

    /// "off" for a side copy, so that it never archives into the repository (and its
    /// scheduler is off); "preserve" keeps the backup's settings (a replacement of the lost
    /// cluster)
    #[arg(long, value_enum, default_value = "preserve")]
    pub archive_mode: ArchiveMode,

    /// Return without waiting for the restored files to reach the disk (PostgreSQL's first
    /// start then syncs them; until it has, a crash can leave a torn copy). For a copy that
    /// is thrown away
    #[arg(long)]
    pub no_sync: bool,

    /// Bin directory of the PostgreSQL server that will run the restored cluster (default:
    /// the backup's major version, looked for where packages install it)
    #[arg(long, env = "SC_BACKUP_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchiveMode {
    Off,
    Preserve,
}

impl RestoreArgs {
    fn tablespace_map(&self) -> Result<BTreeMap<u32, PathBuf>, CliError> {
        self.tablespace_map
            .iter()
            .map(|mapping| {
                let bad = || {
                    CliError::Message(format!(
                        "--tablespace-map \"{mapping}\": expected OID=DIR with an absolute DIR"
                    ))
                };
                let (oid, dir) = mapping.split_once('=').ok_or_else(bad)?;
                let oid = oid.parse::<u32>().map_err(|_| bad())?;
                if !dir.starts_with('/') {
                    return Err(bad());
                }
                Ok((oid, PathBuf::from(dir)))
            })
            .collect()
    }
}

/// Quotes a word for the shell that runs restore_command.
fn shell_quote(word: &str) -> String {
    if word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The restore_command for the restored cluster: where the repository is, explicitly (the
/// restored configuration may predate a move); credentials stay in the configuration or the
/// server's environment, never on a command line.
pub fn wal_fetch_command(executable: &Path, settings: &Settings) -> String {
    let mut command = format!(
        "{} wal-fetch --repository {}",
        shell_quote(&executable.display().to_string()),
        shell_quote(&settings.repository.to_string())
    );
    if let Some(s3) = &settings.s3 {
        command.push_str(&format!(" --s3-region {}", shell_quote(&s3.region)));
        if let Some(endpoint) = &s3.endpoint {
            command.push_str(&format!(" --s3-endpoint {}", shell_quote(endpoint)));
        }
        command.push_str(if s3.path_style {
            " --s3-uri-style path"
        } else {
            " --s3-uri-style host"
        });
    }
    if let Some(gcs) = &settings.gcs {
        command.push_str(&format!(" --gcs-endpoint {}", shell_quote(&gcs.endpoint)));
    }
    command
}

/// The repository a restore reads: the one `--repository` names; else repository 1 when it
/// holds a backup for the target, else the first of the cluster's others that does (the
/// local volume lost, the offsite copy restores alone), said on standard error.
pub fn repository_for(
    chosen: &crate::settings::SettingsArgs,
    first: &Settings,
    args: &RestoreArgs,
) -> Result<Settings, CliError> {
    if chosen.repository.is_some() {
        return Ok(first.clone());
    }
    let all = chosen.resolve_all()?;
    if all.len() < 2 {
        return Ok(first.clone());
    }
    let target = args.target.target_or_env()?;
    let serves = |settings: &Settings| -> Result<(), CliError> {
        let repository = Repository::open(settings)?;
        choose_backup(&list_backups(&repository)?, &args.backup, &target)?;
        Ok(())
    };
    let mut first_refusal = None;
    for (number, settings) in all {
        match serves(&settings) {
            Ok(()) if first_refusal.is_none() => return Ok(settings),
            Ok(()) => {
                eprintln!(
                    "sc-backup: note: restoring from {number} ({}): repository 1 cannot ({})",
                    settings.repository,
                    first_refusal.unwrap_or_default()
                );
                return Ok(settings);
            }
            Err(refusal) if first_refusal.is_none() => first_refusal = Some(refusal.to_string()),
            Err(_) => {}
        }
    }
    // None can: repository 1's own answer says why.
    Ok(first.clone())
}

pub fn run(settings: &Settings, pgdata: Option<&Path>, args: &RestoreArgs) -> Result<(), CliError> {
    let pgdata = pgdata.ok_or_else(|| {
        CliError::Message("restore needs --pgdata DIR (the data directory to create)".into())
    })?;
    let pgdata = std::path::absolute(pgdata)
        .map_err(|e| CliError::Message(format!("{}: {e}", pgdata.display())))?;
    let target = args.target.target_or_env()?;
    let tablespace_map = args.tablespace_map()?;
    let started = Instant::now();
    let repository = Repository::open(settings)?;
    let backups = list_backups(&repository)?;
    let metadata = choose_backup(&backups, &args.backup, &target)?;
    let mut timer = audit_start("restore");
    timer.details().backup = Some(metadata.playbook.backup_name.clone());
    timer.details().backup_type = Some(metadata.playbook.backup_type.clone());
    timer.details().target = Some(format!("{} into {}", target.describe(), pgdata.display()));
    let executable = std::env::current_exe()
        .map_err(|e| CliError::Message(format!("cannot find my own executable: {e}")))?;
    let options = RestoreOptions {
        pgdata: pgdata.clone(),
        force: args.force,
        target: target.clone(),
        target_action: args.target_action.map(|a| format!("{a:?}").to_lowercase()),
        target_timeline: args.target_timeline.clone(),
        tablespace_map,
        parallelism: args.parallel,
        archive_off: args.archive_mode == ArchiveMode::Off,
        wal_source: WalSource::Command(wal_fetch_command(&executable, settings)),
        cancel: None,
        sync: !args.no_sync,
    };
    let result = (|| {
        // Refusals come first, while nothing is written: a backup only starts with the server
        // of its own major version, and an occupied directory is not ours to fill.
        let server =
            ServerBinaries::find(major_of(metadata.pg_version_num), args.pg_bindir.as_deref())
                .map_err(sc_backup_core::Error::from)?;
        let manifest = read_manifest(&repository, &metadata)?;
        check_target(&metadata, &manifest, &options)?;
        check_target_reachable(&repository, &metadata, &target)?;
        eprintln!(
            "restoring backup {} (PostgreSQL {}, {} files, {}) into {}",
            metadata.playbook.backup_name,
            server.major(),
            metadata.file_count,
            human_bytes(metadata.playbook.size_bytes),
            pgdata.display()
        );
        let bar = ProgressBar::new(metadata.playbook.size_bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        let progress = |p: RestoreProgress| bar.set_position(p.bytes_done);
        let restored = restore(&repository, &metadata, &manifest, &options, &progress);
        bar.finish_and_clear();
        let summary = restored.map_err(|source| CliError::CoreThen {
            source: Box::new(source),
            consequence: format!(
                "the data directory {} is incomplete and cannot be started (global/pg_control is restored last)",
                pgdata.display()
            ),
        })?;
        Ok::<_, CliError>((summary, server))
    })();
    let (summary, server) = audited(&repository, &timer, result)?;
    eprintln!(
        "restored {} files ({}) in {:.1}s; recovery target: {}",
        summary.files,
        human_bytes(summary.bytes),
        started.elapsed().as_secs_f64(),
        target.describe()
    );
    eprintln!(
        "next: start the server with {server}, e.g. {} -D {} start",
        shell_quote(&server.program("pg_ctl").display().to_string()),
        shell_quote(&pgdata.display().to_string())
    );
    eprintln!("      it replays WAL from the repository; check its log for \"recovery stopping\" and \"archive recovery complete\"");
    Ok(())
}
