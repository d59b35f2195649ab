//! `sc_dump()`: logical dumps from SQL, a thin shim over `sc_backup_core::dump`.
//!
//! The backend runs this server's own `pg_dump` (from the directory `postgres` runs from, so
//! always the server's major) as the server's OS user, through the server's first Unix
//! socket as the bootstrap superuser: the connection `local all postgres peer` allows in a
//! stock pg_hba.conf. The dump program is a child process; the backend only moves its output
//! into the repository and checks for query cancel while it runs.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgrx::prelude::*;
use sc_backup_core::backup::Interrupted;
use sc_backup_core::cluster::live::with_database;
use sc_backup_core::dump::{audit_target, take_dump, DumpKind, DumpRequest};
use sc_backup_core::Repository;

use crate::audit;
use crate::host::{cluster_identity, settings};
use crate::raise::{raise, raise_message};

/// How the backend's dump programs reach this server.
pub struct LocalServer {
    pub bindir: PathBuf,
    pub socket_directory: String,
    pub port: String,
    pub superuser: String,
}

/// This server's own bin directory (where `postgres` runs from).
pub fn own_bindir() -> PathBuf {
    // Safety: my_exec_path is set at process start and never changes.
    let postgres = PathBuf::from(
        unsafe { CStr::from_ptr(std::ptr::addr_of!(pg_sys::my_exec_path).cast()) }
            .to_string_lossy()
            .into_owned(),
    );
    postgres.parent().unwrap_or(Path::new("/")).to_path_buf()
}

impl LocalServer {
    /// Needs a transaction (reads settings and the bootstrap superuser's name).
    pub fn here() -> LocalServer {
        let text = |query: &str| {
            Spi::get_one::<String>(query)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let sockets = text("SELECT current_setting('unix_socket_directories')");
        let socket_directory = sockets.split(',').next().unwrap_or("").trim().to_string();
        if socket_directory.is_empty() {
            raise_message(
                "sc_backup: logical dumps need a Unix socket, and unix_socket_directories is empty".into(),
                "Set unix_socket_directories (pg_dump connects through the first one, as the bootstrap superuser).",
                PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            );
        }
        LocalServer {
            bindir: own_bindir(),
            socket_directory,
            port: text("SELECT current_setting('port')"),
            superuser: text("SELECT rolname::text FROM pg_authid WHERE oid = 10"),
        }
    }

    /// `pg_dump` of `database`, or `pg_dumpall --globals-only`, connected to this server.
    pub fn command(&self, content: DumpKind, database: &str) -> Command {
        let mut command = match content {
            DumpKind::Database => {
                let mut command = Command::new(self.bindir.join("pg_dump"));
                command
                    .args(["--format=plain", "--dbname"])
                    .arg(with_database("", database));
                command
            }
            DumpKind::Globals => {
                let mut command = Command::new(self.bindir.join("pg_dumpall"));
                command.arg("--globals-only");
                command
            }
        };
        command
            .arg("--no-password")
            .args(["--host", &self.socket_directory, "--port", &self.port])
            .args(["--username", &self.superuser])
            .env("PGAPPNAME", "sc_backup dump")
            // The backend's own environment must not redirect the connection.
            .env_remove("PGSERVICE")
            .env_remove("PGSERVICEFILE");
        command
    }

    pub fn pg_dump_version(&self) -> String {
        Command::new(self.bindir.join("pg_dump"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

/// One dump, in this backend, checking for query cancel while it runs.
pub fn dump_one(
    repository: &Repository,
    server: &LocalServer,
    content: DumpKind,
    database: &str,
    backup_type: &str,
) -> Result<sc_backup_core::dump::DumpMetadata, sc_backup_core::Error> {
    let identity = cluster_identity();
    let request = DumpRequest {
        command: server.command(content, database),
        content,
        database: database.to_string(),
        backup_type: backup_type.to_string(),
        pg_version_num: identity.pg_version_num,
        system_identifier: identity.system_identifier,
        pg_dump_version: server.pg_dump_version(),
    };
    take_dump(repository, request, &mut || {
        // Query cancel and termination arrive here; the dump program is killed on the way out.
        check_for_interrupts!();
        Ok::<(), Interrupted>(())
    })
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sc_dump(
    database: default!(Option<&str>, "NULL"),
    globals: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(dump_name, String),
        name!(database, String),
        name!(sql_bytes, i64),
        name!(stored_bytes, i64),
        name!(checksum, String),
        name!(duration_seconds, f64),
    ),
> {
    let settings = settings();
    let database = match database {
        Some(name) => name.to_string(),
        None => Spi::get_one::<String>("SELECT current_database()::text")
            .ok()
            .flatten()
            .unwrap_or_default(),
    };
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1 AND datallowconn)",
        &[database.as_str().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !exists {
        raise_message(
            format!("sc_backup: database \"{database}\" does not exist or does not accept connections"),
            "SELECT datname FROM pg_database WHERE datallowconn lists the databases that can be dumped.",
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        );
    }
    let repository = Repository::open_for_cluster(&settings, &cluster_identity())
        .unwrap_or_else(|e| raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION));
    let server = LocalServer::here();
    let mut jobs = vec![(DumpKind::Database, database)];
    if globals {
        jobs.push((DumpKind::Globals, String::new()));
    }
    let mut rows = Vec::new();
    for (content, database) in jobs {
        let mut timer = audit::start("dump", sc_backup_core::ops::audit::source::SQL);
        timer.details().backup_type = Some("full".into());
        timer.details().target = Some(audit_target(content, &database));
        let dump = audit::audited(&mut timer, |timer| {
            let dump = dump_one(&repository, &server, content, &database, "full")
                .unwrap_or_else(|e| raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION));
            timer.details().backup = Some(dump.file.clone());
            timer.details().size_bytes = Some(dump.playbook.size_bytes);
            dump
        });
        rows.push((
            dump.file,
            dump.playbook.database,
            dump.sql_size_bytes as i64,
            dump.playbook.size_bytes as i64,
            dump.playbook.checksum,
            dump.playbook.duration_seconds,
        ));
    }
    TableIterator::new(rows)
}
