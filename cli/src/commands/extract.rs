//! `sc-backup extract`: tables as of a recovery target, into a new schema or database of the
//! live cluster, or into a dump file (`sc_backup_core::sandbox::extract`), through a sandbox.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{ArgGroup, Args};
use sc_backup_core::backup::list_backups;
use sc_backup_core::restore::choose_backup;
use sc_backup_core::sandbox::extract::{
    check_destination, choose_tables, extract, Destination, Live,
};
use sc_backup_core::{Repository, Settings};

use super::sandbox::{self, SandboxArgs};
use super::target::TargetArgs;
use super::{audit_start, audited};
use crate::error::CliError;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("destination").required(true)
    .args(["into_schema", "into_database", "to_file"])))]
pub struct ExtractArgs {
    /// Database (in the backup) holding the tables
    #[arg(long)]
    pub database: String,

    /// Table to extract, schema.table; * and ? match as in pg_dump (repeatable)
    #[arg(long = "table", value_name = "PATTERN", required = true)]
    pub tables: Vec<String>,

    /// Copy into this new schema of the live database (refused if it exists)
    #[arg(long, value_name = "SCHEMA")]
    pub into_schema: Option<String>,

    /// Copy into this new database of the live cluster (refused if it exists)
    #[arg(long, value_name = "DATABASE")]
    pub into_database: Option<String>,

    /// Write a SQL dump instead (.sql, .sql.gz or .sql.zst; refused if it exists)
    #[arg(long, value_name = "FILE")]
    pub to_file: Option<PathBuf>,

    /// The live cluster, as libpq takes it (name, key=value string or URI; default: the PG*
    /// environment, and the database --database names for --into-schema)
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,

    /// Backup to start from, or "latest" (with --target-time: the newest that ended before it)
    #[arg(long, default_value = "latest")]
    pub backup: String,

    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

pub fn run(
    settings: &Settings,
    args: &ExtractArgs,
    cancel: &Arc<AtomicBool>,
) -> Result<(), CliError> {
    let target = args.target.target()?;
    let destination = if let Some(schema) = &args.into_schema {
        Destination::Schema(schema.clone())
    } else if let Some(database) = &args.into_database {
        Destination::Database(database.clone())
    } else {
        Destination::File(args.to_file.clone().expect("one destination is required"))
    };
    sc_backup_core::cluster::live::refuse_password(args.dbname.as_deref().unwrap_or_default())?;
    let repository = Repository::open(settings)?;
    let backups = list_backups(&repository)?;
    let metadata = choose_backup(&backups, &args.backup, &target)?;
    let mut timer = audit_start("extract");
    timer.details().backup = Some(metadata.playbook.backup_name.clone());
    timer.details().backup_type = Some(metadata.playbook.backup_type.clone());
    timer.details().target = Some(format!(
        "{}: {} of database {} into {}",
        target.describe(),
        args.tables.join(", "),
        args.database,
        destination.describe()
    ));
    let result = (|| {
        let server = sandbox::server_for(&metadata, &args.sandbox)?;
        let connection = Live {
            psql: server.program("psql"),
            conninfo: args.dbname.clone().unwrap_or_default(),
        };
        // The live database of the same name, unless --dbname says where.
        let live = match (&destination, &args.dbname) {
            (Destination::Schema(_), None) => connection.for_database(&args.database),
            _ => connection,
        };
        // Before anything is restored: the destination must be new.
        check_destination(&live, &destination)?;
        let sandbox = sandbox::open(
            settings,
            &repository,
            &metadata,
            target.clone(),
            &args.sandbox,
            cancel,
            true,
        )?;
        let tables = choose_tables(&sandbox, &args.database, &args.tables)?;
        eprintln!(
            "copying {} table{} to the {}",
            tables.len(),
            if tables.len() == 1 { "" } else { "s" },
            destination.describe()
        );
        let report = extract(
            &sandbox,
            &args.database,
            tables,
            &live,
            &destination,
            cancel,
        )?;
        let mut sandbox = sandbox;
        sandbox::keep_if_asked(&mut sandbox, &args.sandbox, &args.database);
        drop(sandbox);
        println!(
            "extracted from backup {} as of {} into the {}:",
            metadata.playbook.backup_name,
            target.describe(),
            report.destination
        );
        for table in &report.tables {
            let name = format!("{}.{}", table.schema, table.name);
            match &table.partition_of {
                Some(parent) => println!("  {name} (partition of {parent}): {} rows", table.rows),
                None => println!("  {name}: {} rows", table.rows),
            }
        }
        for left_out in &report.left_out {
            println!("  not copied: {left_out}");
        }
        if let Some(example) = &report.copy_back_example {
            println!("to copy rows back into the live table, for example:");
            println!("  {example}");
        }
        timer.details().figures.insert(
            "rows".into(),
            report.tables.iter().map(|t| t.rows as f64).sum(),
        );
        Ok::<_, CliError>(())
    })();
    audited(&repository, &timer, result)
}
