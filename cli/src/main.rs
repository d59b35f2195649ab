//! `sc-backup`: the companion CLI of the sc_backup extension.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use error::{report, CliError};

mod commands;
mod error;
mod interrupt;
mod pgconf;
mod settings;

#[derive(Debug, Parser)]
#[command(
    name = "sc-backup",
    version,
    about = "PostgreSQL backup and point-in-time recovery"
)]
struct Cli {
    #[command(flatten)]
    settings: settings::SettingsArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch one WAL file from the repository (use as restore_command = 'sc-backup wal-fetch %f %p').
    /// Exit status 0: restored; 1: not in the repository; 255: recovery must stop
    WalFetch(commands::wal_fetch::WalFetchArgs),
    /// List the backups in the repository, oldest first
    List {
        /// Print JSON (the backups' metadata)
        #[arg(long)]
        json: bool,
    },
    /// Re-read a backup's files and the WAL it needs, reporting every problem; with --restore,
    /// restore it into a sandbox and check every database (the restore test)
    Verify {
        /// Backup name, or "latest"
        #[arg(default_value = "latest")]
        backup: String,
        /// Restore into a sandbox, start it, and check every index, table and database
        #[arg(long)]
        restore: bool,
        /// With --restore: print the report as JSON
        #[arg(long, requires = "restore")]
        json: bool,
        #[command(flatten)]
        sandbox: commands::sandbox::SandboxArgs,
    },
    /// Restore a base backup into a new data directory and configure point-in-time recovery
    Restore(commands::restore::RestoreArgs),
    /// Copy tables as of a recovery target into a new schema or database of the live cluster,
    /// or into a dump file, through a sandbox
    Extract(commands::extract::ExtractArgs),
    /// DR drill: restore the newest backup into a sandbox, replay all archived WAL, promote,
    /// and measure RTO and RPO against the objectives
    Drill(commands::drill::DrillArgs),
    /// Take logical dumps (pg_dump) of databases into the repository, in the playbook's format
    /// (<db>_full_<YYYYmmdd_HHMMSS>.sql.gz with .sha256 and .meta), and the roles and tablespaces
    Dump(commands::dump::DumpArgs),
    /// Restore a logical dump into a new database (or, with --force, in place of one)
    RestoreDump(commands::dump::RestoreDumpArgs),
    /// Delete backups past the retention period, and the WAL that no kept backup needs
    Expire {
        /// Keep backups that ended less than this many days ago (default:
        /// sc_backup.retention_days of the cluster, else 30)
        #[arg(long)]
        retention_days: Option<u32>,
        /// Keep at least this many of the newest full backups, and every backup taken since
        /// the oldest of them, whatever their age (default: sc_backup.retention_full of the
        /// cluster, else 1)
        #[arg(long)]
        retention_full: Option<u32>,
        /// Show what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Bring repository N up to date with the one --repository names (default 1): every WAL
    /// file it lacks, then the backups and logical dumps newer than its newest, each verified
    /// and re-encoded for its settings; resumable, never replacing what is there
    Copy {
        /// The repository to fill: 2 to 4 (sc_backup.repository2 ...), or 1
        #[arg(long, value_name = "N")]
        to: String,
    },
    /// Delete one backup on purpose (an erasure request, say)
    Delete {
        /// Backup name
        backup: String,
        /// Also delete the incremental and differential backups that depend on it (refused
        /// without this flag, naming them)
        #[arg(long)]
        with_dependents: bool,
    },
    /// For the container image's entrypoint: write the settings the playbook's variables mean
    /// (POSTGRES_DB, BACKUP_STORAGE, COMPRESSION, ...) into DIR/settings.conf and, readable only
    /// by this user, DIR/secrets.conf; print the bootstrap user and database
    ContainerSettings {
        /// The directory the server's postgresql.conf includes the two files from
        #[arg(long, value_name = "DIR")]
        write: PathBuf,
    },
}

fn main() -> ExitCode {
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // As restore_command, every way of failing must say "stop recovery", arguments and
    // panics included (see commands::wal_fetch).
    let wal_fetch = arguments.iter().skip(1).any(|a| a == "wal-fetch");
    if wal_fetch {
        commands::wal_fetch::stop_recovery_on_panic();
    }
    commands::container_settings::adopt_restore_variables();
    let cli = match Cli::try_parse_from(&arguments) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.exit_code() {
                0 => ExitCode::SUCCESS,
                _ if wal_fetch => ExitCode::from(commands::wal_fetch::STOP_RECOVERY),
                code => ExitCode::from(u8::try_from(code).unwrap_or(2)),
            };
        }
    };
    if let Command::WalFetch(args) = &cli.command {
        return commands::wal_fetch::main(&cli.settings, args);
    }
    // Before any repository setting exists: it is what writes them.
    let result = if let Command::ContainerSettings { write } = &cli.command {
        commands::container_settings::run(write)
    } else {
        cli.settings
            .resolve()
            .and_then(|settings| run(&cli, &settings))
    };
    report(result)
}

fn run(cli: &Cli, settings: &sc_backup_core::config::Settings) -> Result<(), CliError> {
    match &cli.command {
        Command::WalFetch(_) => unreachable!("wal-fetch has its own exit statuses"),
        Command::List { json } => commands::list::run(settings, *json),
        Command::Verify {
            backup,
            restore: false,
            ..
        } => commands::verify::run(settings, backup),
        Command::Verify {
            backup,
            json,
            sandbox,
            ..
        } => commands::verify::run_restore(settings, backup, *json, sandbox, &interrupt::install()),
        Command::Extract(args) => commands::extract::run(settings, args, &interrupt::install()),
        Command::Drill(args) => commands::drill::run(settings, args, &interrupt::install()),
        Command::Dump(args) => commands::dump::run_dump(settings, args, &interrupt::install()),
        Command::RestoreDump(args) => {
            commands::dump::run_restore_dump(settings, args, &interrupt::install())
        }
        Command::Expire {
            retention_days,
            retention_full,
            dry_run,
        } => commands::expire::run_expire(
            settings,
            sc_backup_core::ops::retention::RetentionPolicy {
                days: retention_days.unwrap_or(settings.retention.days),
                min_backups: retention_full.unwrap_or(settings.retention.min_backups),
                tiers: settings.retention.tiers,
            },
            *dry_run,
        ),
        Command::Delete {
            backup,
            with_dependents,
        } => commands::expire::run_delete(settings, backup, *with_dependents),
        Command::Restore(args) => {
            let settings = commands::restore::repository_for(&cli.settings, settings, args)?;
            commands::restore::run(&settings, cli.settings.pgdata.as_deref(), args)
        }
        Command::Copy { to } => {
            let to = to.parse()?;
            let target = cli.settings.resolve_number(to)?;
            commands::copy::run(settings, to, target, &interrupt::install())
        }
        Command::ContainerSettings { .. } => unreachable!("run before the settings resolve"),
    }
}
