//! `sc-backup dump` and `sc-backup restore-dump`: logical dumps in the playbook's format
//! (`sc_backup_core::dump`), taken from and restored into a running server reached like
//! `psql` reaches it (`--dbname`, the `PG*` environment).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use sc_backup_core::backup::Interrupted;
use sc_backup_core::cluster::live::Live;
use sc_backup_core::dump::{
    audit_target, find_dump, restore_dump, take_dump, DumpKind, DumpMetadata, DumpRequest,
    RestoreDumpOptions,
};
use sc_backup_core::pg::server_binaries::{major_of, ServerBinaries};
use sc_backup_core::repository::ClusterIdentity;
use sc_backup_core::util::bytes::human_bytes;
use sc_backup_core::{Repository, Settings};

use super::{audit_start, audited};
use crate::error::CliError;

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Database to dump (repeatable)
    #[arg(
        long = "database",
        value_name = "NAME",
        required_unless_present = "all"
    )]
    pub databases: Vec<String>,

    /// Dump every database that accepts connections, except the templates
    #[arg(long, conflicts_with = "databases")]
    pub all: bool,

    /// Leave out the roles and tablespaces (pg_dumpall --globals-only), dumped once per run
    #[arg(long)]
    pub no_globals: bool,

    /// Dump as of this exported snapshot (pg_export_snapshot(); one database only)
    #[arg(long, value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,

    /// The server, as libpq takes it (name, key=value string or URI; default: the PG*
    /// environment)
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,

    /// Where pg_dump of the server's major version is (default: found like the server
    /// programs of `restore`)
    #[arg(long, value_name = "DIR", env = "SC_BACKUP_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreDumpArgs {
    /// Dump name (simcorp_full_20260110_143000, with or without .sql.gz), or "latest"
    pub dump: String,

    /// Database to restore into (created; refused if it exists unless --force)
    #[arg(long, value_name = "NAME")]
    pub database: String,

    /// With "latest": the newest dump of this database (default: of any database)
    #[arg(long, value_name = "NAME")]
    pub from_database: Option<String>,

    /// Replace an existing database: the dump is loaded into a new database, which then
    /// takes the old one's place (its connections are ended then). Also SC_BACKUP_FORCE=true,
    /// or, in the sc_backup image, the playbook's FORCE_RESTORE=true
    #[arg(long, env = "SC_BACKUP_FORCE")]
    pub force: bool,

    /// Load even if the stored file's checksum does not match its .sha256 (psql still stops
    /// at the first error, and nothing is committed unless all of it loads). Also
    /// SC_BACKUP_SKIP_VERIFY=true, or, in the sc_backup image, the playbook's SKIP_VERIFY=true
    #[arg(long, env = "SC_BACKUP_SKIP_VERIFY")]
    pub skip_verify: bool,

    /// The server, as libpq takes it (default: the PG* environment)
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,

    /// Where psql is (default: the newest PostgreSQL installation found)
    #[arg(long, value_name = "DIR", env = "SC_BACKUP_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,
}

/// The running server: its version and identity, asked through the newest psql found.
struct Server {
    live: Live,
    version_num: u32,
    system_identifier: u64,
}

fn connect(dbname: Option<&str>, pg_bindir: Option<&std::path::Path>) -> Result<Server, CliError> {
    sc_backup_core::cluster::live::refuse_password(dbname.unwrap_or_default())?;
    let client = ServerBinaries::newest(pg_bindir).map_err(sc_backup_core::Error::from)?;
    let live = Live {
        psql: client.program("psql"),
        conninfo: dbname.unwrap_or_default().to_string(),
    };
    let answer = live.query(
        "SELECT current_setting('server_version_num') || ' ' || system_identifier FROM pg_control_system();",
        "",
    )?;
    let mut words = answer.split_whitespace();
    let parsed = (
        words.next().and_then(|v| v.parse().ok()),
        words.next().and_then(|v| v.parse().ok()),
    );
    let (Some(version_num), Some(system_identifier)) = parsed else {
        return Err(CliError::Message(format!(
            "could not read the server's version and system identifier (got {answer:?})"
        )));
    };
    Ok(Server {
        live,
        version_num,
        system_identifier,
    })
}

pub fn run_dump(
    settings: &Settings,
    args: &DumpArgs,
    cancel: &Arc<AtomicBool>,
) -> Result<(), CliError> {
    let server = connect(args.dbname.as_deref(), args.pg_bindir.as_deref())?;
    // pg_dump refuses a newer server, and an older pg_dump would miss what is new.
    let programs = ServerBinaries::find(major_of(server.version_num), args.pg_bindir.as_deref())
        .map_err(sc_backup_core::Error::from)?;
    let repository = Repository::open_for_cluster(
        settings,
        &ClusterIdentity {
            system_identifier: server.system_identifier,
            pg_version_num: server.version_num,
        },
    )?;
    let databases = if args.all {
        server
            .live
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1;",
                "",
            )?
            .lines()
            .map(str::to_string)
            .collect()
    } else {
        args.databases.clone()
    };
    if args.snapshot.is_some() && databases.len() != 1 {
        return Err(CliError::Message(
            "--snapshot names a snapshot of one database: give exactly one --database".into(),
        ));
    }
    let pg_dump_version = program_version(&programs.program("pg_dump"));
    let mut failures = 0;
    let mut jobs: Vec<(DumpKind, String)> = databases
        .into_iter()
        .map(|db| (DumpKind::Database, db))
        .collect();
    if !args.no_globals {
        jobs.push((DumpKind::Globals, String::new()));
    }
    for (content, database) in jobs {
        let mut command = match content {
            DumpKind::Database => {
                let mut command = Command::new(programs.program("pg_dump"));
                command
                    .args(["--format=plain", "--no-password", "--dbname"])
                    .arg(server.live.for_database(&database).conninfo);
                if let Some(snapshot) = &args.snapshot {
                    command.arg(format!("--snapshot={snapshot}"));
                }
                command
            }
            DumpKind::Globals => {
                let mut command = Command::new(programs.program("pg_dumpall"));
                command.args(["--globals-only", "--no-password"]);
                if !server.live.conninfo.is_empty() {
                    command.arg("--dbname").arg(&server.live.conninfo);
                }
                command
            }
        };
        command.env("PGAPPNAME", "sc-backup dump");
        let mut timer = audit_start("dump");
        timer.details().backup_type = Some("full".into());
        timer.details().target = Some(audit_target(content, &database));
        let request = DumpRequest {
            command,
            content,
            database: database.clone(),
            backup_type: "full".into(),
            pg_version_num: server.version_num,
            system_identifier: server.system_identifier,
            pg_dump_version: pg_dump_version.clone(),
        };
        let result = take_dump(&repository, request, &mut || {
            if cancel.load(Ordering::SeqCst) {
                Err(Interrupted)
            } else {
                Ok(())
            }
        });
        if let Ok(dump) = &result {
            timer.details().backup = Some(dump.file.clone());
            timer.details().size_bytes = Some(dump.playbook.size_bytes);
        }
        match audited(&repository, &timer, result.map_err(CliError::from)) {
            Ok(dump) => print_dump(&dump),
            Err(CliError::Core(sc_backup_core::Error::Interrupted)) => {
                return Err(sc_backup_core::Error::Interrupted.into())
            }
            Err(error) => {
                failures += 1;
                eprintln!("sc-backup: error: {error}");
            }
        }
    }
    if failures > 0 {
        return Err(CliError::Message(format!(
            "{failures} dump{} failed",
            if failures == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

fn print_dump(dump: &DumpMetadata) {
    println!(
        "dumped {} into {} ({} of SQL stored as {}, sha256 {}, {:.1} s)",
        match dump.content {
            DumpKind::Database => format!("database {}", dump.playbook.database),
            DumpKind::Globals => "roles and tablespaces".into(),
        },
        dump.file,
        human_bytes(dump.sql_size_bytes),
        human_bytes(dump.playbook.size_bytes),
        dump.playbook.checksum,
        dump.playbook.duration_seconds
    );
}

/// "pg_dump (PostgreSQL) 17.11" as the program prints it.
fn program_version(program: &std::path::Path) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn run_restore_dump(
    settings: &Settings,
    args: &RestoreDumpArgs,
    cancel: &Arc<AtomicBool>,
) -> Result<(), CliError> {
    let repository = Repository::open(settings)?;
    let dump = find_dump(&repository, &args.dump, args.from_database.as_deref())?;
    let mut timer = audit_start("restore-dump");
    timer.details().backup = Some(dump.file.clone());
    timer.details().backup_type = Some(dump.playbook.backup_type.clone());
    timer.details().target = Some(format!(
        "database {} into database {}{}",
        dump.playbook.database,
        args.database,
        if args.force { " (replacing it)" } else { "" }
    ));
    let result = (|| {
        let server = connect(args.dbname.as_deref(), args.pg_bindir.as_deref())?;
        let report = restore_dump(
            &repository,
            &dump,
            &server.live,
            &args.database,
            RestoreDumpOptions {
                force: args.force,
                skip_verify: args.skip_verify,
            },
            cancel,
        )?;
        if let Some(mismatch) = &report.checksum_mismatch {
            eprintln!("sc-backup: warning: loaded despite a checksum mismatch (--skip-verify): {mismatch}");
        }
        println!(
            "restored dump {} (database {}, taken {}) into {}database {}: {} tables, {} rows",
            dump.file,
            dump.playbook.database,
            dump.playbook.start_time.format(super::list::SHORT_TIME),
            if report.replaced {
                "the replaced "
            } else {
                "new "
            },
            report.database,
            report.tables.len(),
            report.rows()
        );
        for (table, rows) in &report.tables {
            println!("  {table}: {rows} rows");
        }
        timer
            .details()
            .figures
            .insert("tables".into(), report.tables.len() as f64);
        timer
            .details()
            .figures
            .insert("rows".into(), report.rows() as f64);
        Ok::<_, CliError>(())
    })();
    audited(&repository, &timer, result)
}
