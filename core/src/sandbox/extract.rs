//! Table-level point-in-time recovery: tables of a sandbox (restored to the target) copied
//! into a new schema or a new database of the live cluster, or into a dump file.
//!
//! Nothing is written into an existing schema, database or file: each destination is checked
//! before the backup is even restored, and the copy itself is one transaction (`psql -1`)
//! whose `CREATE SCHEMA` fails if the schema appeared meanwhile. An interrupted or failed copy
//! leaves nothing: the transaction rolls back, and a database created for the copy is dropped.
//!
//! The sandbox is reshaped first (it is thrown away): for a new schema, the chosen tables are
//! moved into a schema of that name (`ALTER TABLE ... SET SCHEMA` takes their indexes,
//! constraints and owned sequences along), foreign keys to tables not copied and user
//! triggers are dropped (they would tie the copy to live objects), and that schema is dumped;
//! for a new database, every other table is dropped and the whole database dumped (types,
//! functions and schemas the tables need come along). Dumps are made by the sandbox major's
//! `pg_dump` without owners, privileges, tablespaces or large objects, and stream straight
//! into the live server's `psql` through a pipe.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pg::quote::quote_ident;
use crate::sandbox::Sandbox;

pub use crate::cluster::live::{with_database, Live};

/// Where the tables go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A new schema of the live database.
    Schema(String),
    /// A new database of the live cluster.
    Database(String),
    /// A plain SQL dump (`.sql`, `.sql.gz`, `.sql.zst`).
    File(PathBuf),
}

impl Destination {
    pub fn describe(&self) -> String {
        match self {
            Destination::Schema(name) => format!("new schema {name}"),
            Destination::Database(name) => format!("new database {name}"),
            Destination::File(path) => format!("file {}", path.display()),
        }
    }
}

/// PostgreSQL identifiers we create: plain lower-case names, so that they need no quoting in
/// messages, psql meta-commands or the copy-back example.
pub fn check_new_name(kind: &str, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{kind} name \"{name}\" must be lower-case letters, digits and underscores (up to 63), starting with a letter or underscore"
        )))
    }
}

/// Refuses a destination that exists, before anything is restored.
pub fn check_destination(live: &Live, destination: &Destination) -> Result<()> {
    match destination {
        Destination::Schema(name) => {
            check_new_name("schema", name)?;
            let exists = live.query(
                "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = :'name');",
                name,
            )?;
            if exists == "t" {
                return Err(Error::DestinationInUse(format!(
                    "schema {name} already exists in the live database{}; nothing was written. Choose a new schema name (extract never writes into an existing schema)",
                    live.describe()
                )));
            }
        }
        Destination::Database(name) => {
            check_new_name("database", name)?;
            let exists = live.query(
                "SELECT EXISTS (SELECT FROM pg_database WHERE datname = :'name');",
                name,
            )?;
            if exists == "t" {
                return Err(Error::DestinationInUse(format!(
                    "database {name} already exists in the live cluster{}; nothing was written. Choose a new database name",
                    live.describe()
                )));
            }
        }
        Destination::File(path) => {
            if path.exists() {
                return Err(Error::DestinationInUse(format!(
                    "{} already exists; nothing was written. Choose a new file name",
                    path.display()
                )));
            }
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(Error::DestinationInUse(format!(
                    "directory {} does not exist",
                    parent.display()
                )));
            }
        }
    }
    Ok(())
}

/// A table chosen for the copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// A partition of another chosen table (moved and counted with it).
    pub partition_of: Option<String>,
    pub rows: u64,
    pub has_key: bool,
}

impl Table {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtractReport {
    pub database: String,
    pub tables: Vec<Table>,
    /// Foreign keys to tables not copied, and user triggers: not in the copy.
    pub left_out: Vec<String>,
    /// How to put rows back, for a copy into a schema.
    pub copy_back_example: Option<String>,
    pub destination: String,
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `schema.table` patterns as pg_dump takes them (`*` and `?` wildcards; no schema: any
/// schema) as a SQL condition on `n.nspname` and `c.relname`.
fn pattern_condition(pattern: &str) -> String {
    let like = |text: &str| {
        let mut out = String::new();
        for c in text.chars() {
            match c {
                '*' => out.push('%'),
                '?' => out.push('_'),
                '%' | '_' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        quote_literal(&out)
    };
    match pattern.split_once('.') {
        Some((schema, table)) => format!(
            "(n.nspname LIKE {} AND c.relname LIKE {})",
            like(schema),
            like(table)
        ),
        None => format!("c.relname LIKE {}", like(pattern)),
    }
}

/// The sandbox's tables matching `patterns`, with the partitions of partitioned ones; each
/// pattern must match something.
pub fn choose_tables(sandbox: &Sandbox, database: &str, patterns: &[String]) -> Result<Vec<Table>> {
    let user_tables =
        "c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                       AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";
    let mut chosen: Vec<Table> = Vec::new();
    for pattern in patterns {
        let sql = format!(
            "WITH matched AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                               WHERE {user_tables} AND {}),
                  tree AS (SELECT t.relid, t.parentrelid FROM matched m, pg_partition_tree(m.oid) t
                           UNION SELECT m.oid, NULL FROM matched m)
             SELECT n.nspname, c.relname, coalesce(pn.nspname || '.' || p.relname, ''),
                    EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisunique))
               FROM tree t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_class p ON p.oid = t.parentrelid LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace
              ORDER BY 1, 2",
            pattern_condition(pattern)
        );
        let found = sandbox.psql(database, &sql)?;
        if found.trim().is_empty() {
            return Err(Error::InvalidRequest(format!(
                "--table {pattern} matches no table of database {database} as of the target"
            )));
        }
        for line in found.lines() {
            let fields: Vec<&str> = line.split('\u{1f}').collect();
            if fields.len() < 4 {
                continue;
            }
            let table = Table {
                schema: fields[0].into(),
                name: fields[1].into(),
                partition_of: (!fields[2].is_empty()).then(|| fields[2].to_string()),
                rows: 0,
                has_key: fields[3] == "t",
            };
            if !chosen
                .iter()
                .any(|t| t.schema == table.schema && t.name == table.name)
            {
                chosen.push(table);
            }
        }
    }
    for table in &mut chosen {
        // Leaf tables hold the rows; a partitioned table's count would repeat its partitions'.
        let count = sandbox.psql(
            database,
            &format!("SELECT count(*) FROM ONLY {} ", table.qualified()),
        )?;
        table.rows = count.trim().parse().unwrap_or(0);
    }
    Ok(chosen)
}

/// Drops, in the sandbox, what must not travel with the copy; returns what was dropped.
fn drop_ties(
    sandbox: &Sandbox,
    database: &str,
    tables: &[Table],
    triggers: bool,
) -> Result<Vec<String>> {
    let chosen = tables
        .iter()
        .map(|t| format!("{}::regclass", quote_literal(&t.qualified())))
        .collect::<Vec<_>>()
        .join(", ");
    // An empty search_path prints every regclass with its schema.
    let mut sql = format!(
        "SET search_path = ''; SELECT 'ALTER TABLE ' || conrelid::regclass || ' DROP CONSTRAINT ' || quote_ident(conname),
                'foreign key ' || conname || ' of ' || conrelid::regclass || ' (to ' || confrelid::regclass || ', not copied)'
           FROM pg_constraint
          WHERE contype = 'f' AND conrelid IN ({chosen}) AND confrelid NOT IN ({chosen})"
    );
    if triggers {
        sql.push_str(&format!(
            " UNION ALL
             SELECT 'DROP TRIGGER ' || quote_ident(tgname) || ' ON ' || tgrelid::regclass,
                    'trigger ' || tgname || ' of ' || tgrelid::regclass
               FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN ({chosen}) AND tgparentid = 0"
        ));
    }
    let found = sandbox.psql(database, &sql)?;
    let mut statements = Vec::new();
    let mut dropped = Vec::new();
    for line in found.lines() {
        if let Some((statement, what)) = line.split_once('\u{1f}') {
            statements.push(format!("{statement};"));
            dropped.push(what.to_string());
        }
    }
    if !statements.is_empty() {
        sandbox.psql(database, &statements.join("\n"))?;
    }
    Ok(dropped)
}

/// Moves the chosen tables into a new schema `target` of the sandbox.
fn move_into_schema(
    sandbox: &Sandbox,
    database: &str,
    tables: &[Table],
    target: &str,
) -> Result<()> {
    let mut seen = std::collections::BTreeMap::new();
    for table in tables {
        if let Some(other) = seen.insert(table.name.clone(), table.schema.clone()) {
            return Err(Error::InvalidRequest(format!(
                "tables {other}.{name} and {}.{name} would both become {target}.{name}; choose them in separate extracts",
                table.schema,
                name = table.name
            )));
        }
    }
    let mut sql = format!("BEGIN; CREATE SCHEMA {};\n", quote_ident(target));
    for table in tables {
        sql.push_str(&format!(
            "ALTER TABLE {} SET SCHEMA {};\n",
            table.qualified(),
            quote_ident(target)
        ));
    }
    sql.push_str("COMMIT;");
    sandbox.psql(database, &sql)?;
    Ok(())
}

/// Drops every user table of the sandbox database but the chosen ones.
fn keep_only(sandbox: &Sandbox, database: &str, tables: &[Table]) -> Result<()> {
    let keep = tables
        .iter()
        .map(|t| format!("{}::regclass", quote_literal(&t.qualified())))
        .collect::<Vec<_>>()
        .join(", ");
    // Materialized views and foreign tables are dropped as such; extensions' tables stay.
    let sql = format!(
        "DO $$ DECLARE r record; BEGIN
           FOR r IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('r', 'p', 'f', 'm') AND NOT c.relispartition
                       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
                       AND c.oid NOT IN ({keep})
                       AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
           LOOP
             EXECUTE format('DROP %s IF EXISTS %s CASCADE',
               CASE r.relkind WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.rel);
           END LOOP; END $$;"
    );
    sandbox.psql(database, &sql)?;
    Ok(())
}

/// pg_dump of the sandbox database, with the options every copy uses.
fn pg_dump(sandbox: &Sandbox, database: &str, selection: &[String]) -> Command {
    let mut command = sandbox.client("pg_dump");
    command
        .args([
            "--no-owner",
            "--no-privileges",
            "--no-tablespaces",
            "--no-publications",
        ])
        .args(["--no-subscriptions", "--no-security-labels", "-B"])
        .arg("-d")
        .arg(crate::cluster::live::with_database("", database))
        .args(selection);
    command
}

/// Runs `dump | load` with both in their own process groups, stopping both on `cancel`.
fn pipe(mut dump: Command, mut load: Command, cancel: &AtomicBool) -> Result<()> {
    dump.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut dumping = dump.spawn().map_err(|e| Error::io("run", "pg_dump", e))?;
    let stream = dumping.stdout.take().expect("piped");
    load.stdin(Stdio::from(stream))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut loading = match load.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = dumping.kill();
            let _ = dumping.wait();
            return Err(Error::io("run", "psql", e));
        }
    };
    let (dumped, loaded) = wait_both(&mut dumping, &mut loading, cancel);
    let stderr = |child: &mut Child| {
        let mut text = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = io::Read::read_to_string(&mut err, &mut text);
        }
        text.trim().to_string()
    };
    if cancel.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    if !loaded {
        return Err(Error::LiveCluster(format!(
            "loading into the live cluster failed (rolled back): {}",
            stderr(&mut loading)
        )));
    }
    if !dumped {
        return Err(Error::Sandbox(format!(
            "pg_dump of the sandbox failed: {}",
            stderr(&mut dumping)
        )));
    }
    Ok(())
}

/// Waits for both children; on `cancel`, terminates them. Returns their successes.
fn wait_both(first: &mut Child, second: &mut Child, cancel: &AtomicBool) -> (bool, bool) {
    let mut results = [None, None];
    loop {
        for (i, child) in [&mut *first, &mut *second].into_iter().enumerate() {
            if results[i].is_none() {
                if let Ok(Some(status)) = child.try_wait() {
                    results[i] = Some(status.success());
                }
            }
        }
        if let [Some(a), Some(b)] = results {
            return (a, b);
        }
        if cancel.load(Ordering::SeqCst) {
            // psql going away rolls its transaction back.
            let _ = first.kill();
            let _ = second.kill();
            let _ = first.wait();
            let _ = second.wait();
            return (false, false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copies `tables` of the sandbox's `database` to `destination`; see the module
/// documentation. [`check_destination`] must have passed.
pub fn extract(
    sandbox: &Sandbox,
    database: &str,
    tables: Vec<Table>,
    live: &Live,
    destination: &Destination,
    cancel: &AtomicBool,
) -> Result<ExtractReport> {
    let mut report = ExtractReport {
        database: database.to_string(),
        destination: destination.describe(),
        ..Default::default()
    };
    let top_level: Vec<Table> = tables
        .iter()
        .filter(|t| t.partition_of.is_none())
        .cloned()
        .collect();
    match destination {
        Destination::Schema(schema) => {
            report.left_out = drop_ties(sandbox, database, &tables, true)?;
            // Partitions too: the dump takes what is in the schema.
            move_into_schema(sandbox, database, &tables, schema)?;
            let mut load = live.command();
            load.args(["-1", "-f", "-"]);
            pipe(
                pg_dump(sandbox, database, &["-n".into(), schema.clone()]),
                load,
                cancel,
            )?;
            if let Some(first) = top_level.first() {
                let original = first.qualified();
                let copy = format!("{}.{}", quote_ident(schema), quote_ident(&first.name));
                report.copy_back_example = Some(if first.has_key {
                    format!("INSERT INTO {original} SELECT * FROM {copy} ON CONFLICT DO NOTHING;")
                } else {
                    format!("INSERT INTO {original} SELECT * FROM {copy};  -- no primary key: check for duplicates first")
                });
            }
        }
        Destination::Database(name) => {
            report.left_out = drop_ties(sandbox, database, &tables, false)?;
            keep_only(sandbox, database, &tables)?;
            live.query("CREATE DATABASE :\"name\";", name)?;
            let target = live.for_database(name);
            let mut load = target.command();
            load.args(["-1", "-f", "-"]);
            if let Err(error) = pipe(pg_dump(sandbox, database, &[]), load, cancel) {
                // The database is ours, created a moment ago: take it back.
                let _ = live.query("DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);", name);
                return Err(error);
            }
        }
        Destination::File(path) => {
            // Every partition by name: -t of a partitioned table leaves them out (before 16).
            let selection: Vec<String> = tables
                .iter()
                .flat_map(|t| {
                    [
                        "-t".to_string(),
                        format!(
                            "\"{}\".\"{}\"",
                            t.schema.replace('"', "\"\""),
                            t.name.replace('"', "\"\"")
                        ),
                    ]
                })
                .collect();
            write_dump(pg_dump(sandbox, database, &selection), path, cancel)?;
        }
    }
    report.tables = tables;
    Ok(report)
}

/// Streams a dump into `path` (compressed by its extension), durably, by rename.
fn write_dump(mut dump: Command, path: &Path, cancel: &AtomicBool) -> Result<()> {
    let temporary = path.with_file_name(format!(
        ".{}.sc_backup.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    // The dump holds table data: private, like everything else sc_backup writes.
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|e| Error::io("create", temporary.display(), e))?;
    let result = (|| {
        dump.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = dump.spawn().map_err(|e| Error::io("run", "pg_dump", e))?;
        let mut stream = child.stdout.take().expect("piped");
        let mut writer =
            DumpEncoder::for_path(path, file).map_err(|e| Error::io("write", path.display(), e))?;
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            if cancel.load(Ordering::SeqCst) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Interrupted);
            }
            let n = io::Read::read(&mut stream, &mut buffer)
                .map_err(|e| Error::io("read from", "pg_dump", e))?;
            if n == 0 {
                break;
            }
            writer
                .write_all(&buffer[..n])
                .map_err(|e| Error::io("write", temporary.display(), e))?;
        }
        // The compressor's last output is written here: its errors (a full disk) count.
        let file = writer
            .finish()
            .map_err(|e| Error::io("write", temporary.display(), e))?;
        let output = child
            .wait_with_output()
            .map_err(|e| Error::io("run", "pg_dump", e))?;
        if !output.status.success() {
            return Err(Error::Sandbox(format!(
                "pg_dump of the sandbox failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        file.sync_all()
            .map_err(|e| Error::io("sync", temporary.display(), e))?;
        // Never replaces a file that appeared meanwhile.
        fs::hard_link(&temporary, path).map_err(|e| Error::io("create", path.display(), e))?;
        // The new name must survive a crash before success is reported.
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        fs::File::open(directory)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("sync", directory.display(), e))?;
        Ok(())
    })();
    let _ = fs::remove_file(&temporary);
    result
}

/// The compression a `--to-file` name asks for (`.gz`, `.zst`, or none), finished explicitly:
/// a compressor writes its last output when finished, and finishing it by dropping it (as
/// `auto_finish` and `GzEncoder`'s `Drop` do) loses the error of that write.
enum DumpEncoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> DumpEncoder<W> {
    fn for_path(path: &Path, inner: W) -> io::Result<Self> {
        let name = path.to_string_lossy();
        Ok(if name.ends_with(".gz") {
            DumpEncoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::default(),
            ))
        } else if name.ends_with(".zst") {
            DumpEncoder::Zstd(zstd::Encoder::new(inner, 3)?)
        } else {
            DumpEncoder::Plain(inner)
        })
    }

    /// Writes what the compressor still holds and returns the destination, flushed.
    fn finish(self) -> io::Result<W> {
        let mut inner = match self {
            DumpEncoder::Plain(inner) => inner,
            DumpEncoder::Gzip(encoder) => encoder.finish()?,
            DumpEncoder::Zstd(encoder) => encoder.finish()?,
        };
        inner.flush()?;
        Ok(inner)
    }
}

impl<W: Write> Write for DumpEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DumpEncoder::Plain(inner) => inner.write(buf),
            DumpEncoder::Gzip(encoder) => encoder.write(buf),
            DumpEncoder::Zstd(encoder) => encoder.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            DumpEncoder::Plain(inner) => inner.flush(),
            DumpEncoder::Gzip(encoder) => encoder.flush(),
            DumpEncoder::Zstd(encoder) => encoder.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_pg_dump() {
        assert_eq!(
            pattern_condition("public.audit_*"),
            "(n.nspname LIKE 'public' AND c.relname LIKE 'audit\\_%')"
        );
        assert_eq!(pattern_condition("it's"), "c.relname LIKE 'it''s'");
    }

    /// A disk with room for `room` bytes, then full.
    struct FullDisk {
        written: usize,
        room: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written + buf.len() > self.room {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.written += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The disk fills up just before the compressed stream's last bytes (gzip's trailer,
    /// zstd's frame end), which are written when it is finished: that failure must be the
    /// dump's failure, not lost when the compressor is dropped.
    #[test]
    fn a_disk_full_when_the_compressed_dump_is_finished_is_an_error() {
        let sql: Vec<u8> = (0..2000)
            .flat_map(|i| format!("{i}\tvalue {i}\n").into_bytes())
            .collect();
        for name in ["t.sql.gz", "t.sql.zst"] {
            let whole = {
                let mut encoder = DumpEncoder::for_path(Path::new(name), Vec::new()).unwrap();
                encoder.write_all(&sql).unwrap();
                encoder.flush().unwrap();
                encoder.finish().unwrap().len()
            };
            let disk = FullDisk {
                written: 0,
                room: whole - 1,
            };
            let mut encoder = DumpEncoder::for_path(Path::new(name), disk).unwrap();
            encoder.write_all(&sql).unwrap();
            encoder.flush().unwrap();
            let error = encoder.finish().err().expect("a full disk went unnoticed");
            assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{name}");
        }
    }

    #[test]
    fn new_names_are_plain_identifiers() {
        check_new_name("schema", "recovered_1440").unwrap();
        for bad in ["", "Recovered", "1st", "a-b", "a;drop", &"x".repeat(64)] {
            assert!(check_new_name("schema", bad).is_err(), "{bad}");
        }
    }
}
