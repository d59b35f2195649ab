//! Logical dumps in the playbook's format: one database's `pg_dump`, streamed through the
//! codec pipeline into the repository, with a `sha256sum` line and a JSON `.meta` beside it.
//!
//! ```text
//! dumps/<db>_full_<YYYYmmdd_HHMMSS>.sql[.gz|.zst][.age]          plain SQL (pg_dump -Fp)
//! dumps/<db>_full_<YYYYmmdd_HHMMSS>.sql[.gz|.zst][.age].sha256   "<sha256>  <file>": of the stored file
//! dumps/<db>_full_<YYYYmmdd_HHMMSS>.sql[.gz|.zst][.age].meta     JSON metadata, written last
//! dumps/globals_<YYYYmmdd_HHMMSS>.sql...                         roles and tablespaces (pg_dumpall -g)
//! ```
//!
//! A dump exists exactly when its `.meta` does. The checksum is of the stored bytes, so
//! `sha256sum -c` works on a downloaded copy; the `.meta` also records the SHA-256 of the SQL
//! itself, which every read checks after decoding.
//!
//! Restoring streams the decoded SQL into `psql` inside one transaction that is committed only
//! once the whole stored file was read and its checksum matched: a corrupt or truncated dump
//! never leaves half a database. A database that already exists is replaced only on request,
//! and only after the new copy is complete: the dump is loaded into a new database that is
//! then renamed over it.
//!
//! `copy` brings a cluster's other repositories the dumps of repository 1, re-encoded for
//! each.

mod copy;
mod copy_scan;

pub use copy::{copy_dumps, DumpCopyReport};

use std::io::{self, BufRead, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::backup::Interrupted;
use crate::cluster::live::Live;
use crate::codec::{
    pump, CodecSpec, Decoder, DigestingReader, DigestingWriter, Encoder, PumpError, Sha256Digest,
};
use crate::config::EncryptionMode;
use crate::dump::copy_scan::{copy_tags, CopiedTable, CopyScan};
use crate::error::{Error, Result};
use crate::pg::quote::quote_ident;
use crate::repository::record::{read_wire_time, wire_time, PlaybookFields};
use crate::repository::{read_small_object, Repository};

pub const DUMPS_PREFIX: &str = "dumps/";
const FORMAT_VERSION: u32 = 1;
/// What is kept of pg_dump's or psql's standard error for a message.
const MAX_STDERR: usize = 16 * 1024;

/// What a dump holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpKind {
    /// One database (`pg_dump`).
    Database,
    /// The cluster's roles and tablespaces (`pg_dumpall --globals-only`).
    Globals,
}

/// A dump's metadata: the playbook's fields (shared with backups), then what restore and
/// verify need. The `.meta` document holds it as [`DumpMetadataWire`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DumpMetadataWire", into = "DumpMetadataWire")]
pub struct DumpMetadata {
    pub playbook: PlaybookFields,
    pub format: u32,
    pub content: DumpKind,
    /// The stored file's name under `dumps/`.
    pub file: String,
    /// Bytes of SQL before compression and encryption, and their SHA-256.
    pub sql_size_bytes: u64,
    pub sql_sha256: String,
    pub pg_version_num: u32,
    pub system_identifier: String,
    /// `pg_dump --version` of the program that made it.
    pub pg_dump_version: String,
}

/// The `.meta` document as written: the playbook's fields first, in its spelling (a
/// `YYYYmmdd_HHMMSS` timestamp, encryption as a boolean), then what restore and verify need.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DumpMetadataWire {
    backup_name: String,
    backup_type: String,
    /// `YYYYmmdd_HHMMSS`, UTC: when the dump started (`start_time` says it exactly).
    timestamp: String,
    database: String,
    host: String,
    size_bytes: u64,
    checksum: String,
    compression: String,
    encryption: bool,
    duration_seconds: f64,
    format: u32,
    /// Always `logical` (physical backups are described by `backup.json`).
    kind: String,
    content: DumpKind,
    file: String,
    sql_size_bytes: u64,
    sql_sha256: String,
    start_time: String,
    stop_time: String,
    pg_version_num: u32,
    system_identifier: String,
    pg_dump_version: String,
}

impl TryFrom<DumpMetadataWire> for DumpMetadata {
    type Error = String;

    fn try_from(wire: DumpMetadataWire) -> std::result::Result<Self, String> {
        Ok(DumpMetadata {
            playbook: PlaybookFields {
                backup_name: wire.backup_name,
                backup_type: wire.backup_type,
                database: wire.database,
                host: wire.host,
                size_bytes: wire.size_bytes,
                checksum: wire.checksum,
                compression: wire
                    .compression
                    .parse()
                    .map_err(|e: crate::config::ConfigError| e.to_string())?,
                encryption: EncryptionMode::of(wire.encryption),
                duration_seconds: wire.duration_seconds,
                start_time: read_wire_time("start_time", &wire.start_time)?,
                stop_time: read_wire_time("stop_time", &wire.stop_time)?,
            },
            format: wire.format,
            content: wire.content,
            file: wire.file,
            sql_size_bytes: wire.sql_size_bytes,
            sql_sha256: wire.sql_sha256,
            pg_version_num: wire.pg_version_num,
            system_identifier: wire.system_identifier,
            pg_dump_version: wire.pg_dump_version,
        })
    }
}

impl From<DumpMetadata> for DumpMetadataWire {
    fn from(metadata: DumpMetadata) -> Self {
        let playbook = metadata.playbook;
        DumpMetadataWire {
            backup_name: playbook.backup_name,
            backup_type: playbook.backup_type,
            timestamp: playbook.start_time.format("%Y%m%d_%H%M%S").to_string(),
            database: playbook.database,
            host: playbook.host,
            size_bytes: playbook.size_bytes,
            checksum: playbook.checksum,
            compression: playbook.compression.name().to_string(),
            encryption: playbook.encryption == EncryptionMode::Age,
            duration_seconds: playbook.duration_seconds,
            format: metadata.format,
            kind: "logical".into(),
            content: metadata.content,
            file: metadata.file,
            sql_size_bytes: metadata.sql_size_bytes,
            sql_sha256: metadata.sql_sha256,
            start_time: wire_time(playbook.start_time),
            stop_time: wire_time(playbook.stop_time),
            pg_version_num: metadata.pg_version_num,
            system_identifier: metadata.system_identifier,
            pg_dump_version: metadata.pg_dump_version,
        }
    }
}

impl DumpMetadata {
    pub fn key(&self) -> String {
        format!("{DUMPS_PREFIX}{}", self.file)
    }

    fn spec(&self) -> Result<CodecSpec> {
        spec_of_file(&self.file).ok_or_else(|| Error::InvalidMetadata {
            object: meta_key(&self.file),
            reason: format!("unknown encoding of \"{}\"", self.file),
        })
    }
}

fn meta_key(file: &str) -> String {
    format!("{DUMPS_PREFIX}{file}.meta")
}

fn checksum_key(file: &str) -> String {
    format!("{DUMPS_PREFIX}{file}.sha256")
}

/// `simcorp_full_20260110_143000.sql.gz.age` → gzip, encrypted.
fn spec_of_file(file: &str) -> Option<CodecSpec> {
    let index = file.find(".sql")?;
    CodecSpec::from_suffix(&file[index + 4..])
}

/// The playbook's name of a dump of `database` taken at `at`: `<db>_full_YYYYmmdd_HHMMSS`, the
/// database name made safe for an object key (the `.meta` keeps the real one).
pub fn dump_name(content: DumpKind, database: &str, at: DateTime<Utc>) -> String {
    match content {
        DumpKind::Database => crate::backup::backup_name(database, "full", at),
        DumpKind::Globals => format!("globals_{}", at.format("%Y%m%d_%H%M%S")),
    }
}

/// The line `sha256sum` prints (and `sha256sum -c` reads) for the stored file.
pub fn checksum_line(digest: &str, file: &str) -> String {
    format!("{digest}  {file}\n")
}

/// What to dump and how to run the dump program.
pub struct DumpRequest {
    /// `pg_dump` (or `pg_dumpall --globals-only`) with its connection options; it must write
    /// plain SQL to its standard output.
    pub command: Command,
    pub content: DumpKind,
    pub database: String,
    pub backup_type: String,
    pub pg_version_num: u32,
    pub system_identifier: u64,
    pub pg_dump_version: String,
}

/// Takes one dump into the repository. `poll` runs on the calling thread about every 100 ms
/// (the extension checks for interrupts there; the CLI its Ctrl-C flag) and stops the dump by
/// returning `Err(Interrupted)` or by unwinding: the dump program is killed and nothing stays.
/// The dump program runs in its own process group, so a terminal's Ctrl-C reaches only us.
pub fn take_dump(
    repository: &Repository,
    mut request: DumpRequest,
    poll: &mut dyn FnMut() -> std::result::Result<(), Interrupted>,
) -> Result<DumpMetadata> {
    // To the microsecond, as the `.meta` writes times: the record is what is stored.
    let started_at = Utc::now().trunc_subsecs(6);
    let started = Instant::now();
    let key = repository.key()?;
    let spec = Encoder::<io::Sink>::spec(repository.compression(), key);
    let name = dump_name(request.content, &request.database, started_at);
    let file = format!("{name}.sql{}", spec.suffix());
    if !repository
        .storage()
        .list(&format!("{DUMPS_PREFIX}{name}.sql"))?
        .is_empty()
    {
        return Err(Error::InvalidMetadata {
            object: format!("{DUMPS_PREFIX}{file}"),
            reason: "a dump with this name already exists (one dump per database per second)"
                .into(),
        });
    }
    let data_key = format!("{DUMPS_PREFIX}{file}");
    let mut child = request
        .command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("run", program_name(&request.command), e))?;
    let program = program_name(&request.command);
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let storage = repository.storage();
    let compression = repository.compression();

    let outcome = std::thread::scope(|scope| {
        let errors = scope.spawn(move || read_capped(stderr));
        let (done_tx, done_rx) = mpsc::channel();
        let data_key = &data_key;
        scope.spawn(move || {
            let result = (|| {
                let writer = storage.create(data_key)?;
                let encoder = Encoder::new(DigestingWriter::new(writer), compression, key)
                    .map_err(|e| Error::io("write", data_key, e))?;
                // The .meta records both: the SQL's digest and the stored file's.
                let mut sql = DigestingWriter::new(encoder);
                let mut stdout = stdout;
                match pump(&mut stdout, &mut sql) {
                    Ok(_) => {}
                    Err(PumpError::Read(e)) => return Err(Error::io("read from", "pg_dump", e)),
                    Err(PumpError::Write(e)) => return Err(Error::io("write", data_key, e)),
                }
                let (encoder, sql_digest, _) = sql.finish();
                let (digesting, summary) = encoder
                    .finish()
                    .map_err(|e| Error::io("write", data_key, e))?;
                let (writer, stored_digest, stored_size) = digesting.finish();
                Ok((writer, summary, sql_digest, stored_digest, stored_size))
            })();
            let _ = done_tx.send(result);
        });
        let mut interrupted = false;
        let stored = loop {
            match done_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(result) => break result,
                Err(mpsc::RecvTimeoutError::Timeout) if !interrupted => {
                    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut *poll));
                    if !matches!(polled, Ok(Ok(()))) {
                        // The pump sees the end of the stream and finishes; nothing is committed.
                        interrupted = true;
                        kill_group(&child);
                        if let Err(panic) = polled {
                            let _ = child.wait();
                            let _ = done_rx.recv();
                            std::panic::resume_unwind(panic);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(Error::DumpTool("the dump writer stopped".into()))
                }
            }
        };
        let status = child.wait();
        let errors = errors.join().unwrap_or_default();
        (stored, status, errors, interrupted)
    });
    let (stored, status, errors, interrupted) = outcome;
    if interrupted {
        return Err(Error::Interrupted);
    }
    let status = status.map_err(|e| Error::io("run", &program, e))?;
    let (writer, summary, sql_digest, stored_digest, stored_size) = stored?;
    if !status.success() {
        // The writer is dropped uncommitted: nothing becomes visible.
        drop(writer);
        return Err(Error::DumpTool(format!(
            "{program} of {} failed ({status}): {}",
            describe_content(request.content, &request.database),
            errors.trim()
        )));
    }
    writer.commit()?;
    let stopped_at = Utc::now().trunc_subsecs(6);
    let metadata = DumpMetadata {
        playbook: PlaybookFields {
            backup_name: name,
            backup_type: request.backup_type.clone(),
            database: request.database.clone(),
            host: crate::util::host::host_name(),
            size_bytes: stored_size,
            checksum: stored_digest.to_hex(),
            compression: spec.compression,
            encryption: EncryptionMode::of(spec.encrypted),
            duration_seconds: started.elapsed().as_secs_f64(),
            start_time: started_at,
            stop_time: stopped_at,
        },
        format: FORMAT_VERSION,
        content: request.content,
        file: file.clone(),
        sql_size_bytes: summary.original_size,
        sql_sha256: sql_digest.to_hex(),
        pg_version_num: request.pg_version_num,
        system_identifier: request.system_identifier.to_string(),
        pg_dump_version: request.pg_dump_version.clone(),
    };
    publish(repository, &metadata)?;
    Ok(metadata)
}

/// Makes a dump whose stored file is committed exist: its `.sha256`, then its `.meta`
/// (sealed with the repository's key), written last. On failure the stored file and the
/// checksum go again.
fn publish(repository: &Repository, metadata: &DumpMetadata) -> Result<()> {
    let file = &metadata.file;
    let finished = (|| {
        write_object(
            repository,
            &checksum_key(file),
            checksum_line(&metadata.playbook.checksum, file).as_bytes(),
        )?;
        // Written last: from here on the dump exists.
        let mut json = serde_json::to_vec_pretty(metadata).expect("metadata serializes");
        if let Some(key) = repository.key()? {
            json = crate::codec::authentication::seal(key, &meta_key(file), &json);
        }
        write_object(repository, &meta_key(file), &json)
    })();
    if let Err(error) = finished {
        let _ = repository.storage().delete(&checksum_key(file));
        let _ = repository.storage().delete(&metadata.key());
        return Err(error);
    }
    Ok(())
}

/// Kills the dump program and anything it started (its own process group), so that nothing
/// keeps the output pipe open.
fn kill_group(child: &Child) {
    // Safety: signals the process group the child leads (spawned with process_group(0)).
    unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
}

fn write_object(repository: &Repository, key: &str, data: &[u8]) -> Result<()> {
    let mut writer = repository.storage().create(key)?;
    writer
        .write_all(data)
        .map_err(|e| Error::io("write", key, e))?;
    writer.commit()?;
    Ok(())
}

/// The audit trail's `target` of a dump (the metrics read the database back from it).
pub fn audit_target(content: DumpKind, database: &str) -> String {
    match content {
        DumpKind::Database => format!("database {database}"),
        DumpKind::Globals => "roles and tablespaces".into(),
    }
}

fn describe_content(content: DumpKind, database: &str) -> String {
    match content {
        DumpKind::Database => format!("database \"{database}\""),
        DumpKind::Globals => "the roles and tablespaces".into(),
    }
}

fn program_name(command: &Command) -> String {
    std::path::Path::new(command.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_capped(mut stream: impl Read) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        // Keep reading to the end whatever we keep, so the writer never blocks on a full pipe.
        let room = MAX_STDERR.saturating_sub(kept.len());
        kept.extend_from_slice(&buffer[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// What one listing of `dumps/` finds.
#[derive(Debug, Default)]
pub struct DumpScan {
    /// Complete dumps, oldest first.
    pub finished: Vec<DumpMetadata>,
    /// Keys of objects that belong to no complete dump: interrupted, or still being written.
    pub unfinished: Vec<String>,
}

pub fn scan_dumps(repository: &Repository) -> Result<DumpScan> {
    let objects = repository.storage().list(DUMPS_PREFIX)?;
    let keys: std::collections::BTreeSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut scan = DumpScan::default();
    for key in &keys {
        let Some(file) = key.strip_prefix(DUMPS_PREFIX) else {
            continue;
        };
        if let Some(file) = file.strip_suffix(".meta") {
            match read_dump_metadata(repository, file) {
                Ok(metadata) => scan.finished.push(metadata),
                Err(Error::BackupNotFound(_)) => continue,
                Err(error) => return Err(error),
            }
            continue;
        }
        let data_file = file.strip_suffix(".sha256").unwrap_or(file);
        if !keys.contains(meta_key(data_file).as_str()) {
            scan.unfinished.push(key.to_string());
        }
    }
    scan.finished.sort_by(|a, b| {
        (&a.playbook.start_time, &a.playbook.backup_name)
            .cmp(&(&b.playbook.start_time, &b.playbook.backup_name))
    });
    Ok(scan)
}

pub fn list_dumps(repository: &Repository) -> Result<Vec<DumpMetadata>> {
    Ok(scan_dumps(repository)?.finished)
}

fn read_dump_metadata(repository: &Repository, file: &str) -> Result<DumpMetadata> {
    let key = meta_key(file);
    let data = read_small_object(repository.storage(), &key)?
        .ok_or_else(|| Error::BackupNotFound(file.to_string()))?;
    let data =
        crate::codec::authentication::open(repository.key()?, &key, &data).map_err(|reason| {
            Error::NotAuthenticated {
                object: key.clone(),
                reason,
            }
        })?;
    let metadata: DumpMetadata =
        serde_json::from_slice(&data).map_err(|e| Error::InvalidMetadata {
            object: key.clone(),
            reason: e.to_string(),
        })?;
    if metadata.file != file {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: format!("it describes dump \"{}\"", metadata.file),
        });
    }
    Ok(metadata)
}

/// Whether `name` can only mean a dump: a stored file name (`…​.sql.gz`) or a `.meta` of one.
pub fn names_a_dump_file(name: &str) -> bool {
    name.contains(".sql")
}

/// A dump by name (`simcorp_full_20260110_143000`, with or without its file extensions), or
/// the newest database dump with `latest` (of `database`, when given).
pub fn find_dump(
    repository: &Repository,
    name: &str,
    database: Option<&str>,
) -> Result<DumpMetadata> {
    let dumps = list_dumps(repository)?;
    let found = if name == "latest" {
        dumps.into_iter().rfind(|d| {
            d.content == DumpKind::Database && database.is_none_or(|db| d.playbook.database == db)
        })
    } else {
        let file = name.strip_suffix(".meta").unwrap_or(name);
        let file = file.strip_suffix(".sha256").unwrap_or(file);
        dumps
            .into_iter()
            .find(|d| d.file == file || d.playbook.backup_name == file)
    };
    found.ok_or_else(|| match (name, database) {
        ("latest", Some(db)) => Error::BackupNotFound(format!("latest dump of database {db}")),
        ("latest", None) => Error::BackupNotFound("latest dump".into()),
        _ => Error::BackupNotFound(name.to_string()),
    })
}

/// Deletes the dump stored as `file`: its `.meta` first (from then on it is not listed), then
/// the rest.
pub fn delete_dump_file(repository: &Repository, file: &str) -> Result<()> {
    let storage = repository.storage();
    storage.delete(&meta_key(file))?;
    storage.delete(&checksum_key(file))?;
    storage.delete(&format!("{DUMPS_PREFIX}{file}"))?;
    Ok(())
}

/// What a name given to `verify` or `delete` means: a base backup or a dump.
pub enum Named {
    Backup(crate::backup::BackupMetadata),
    Dump(DumpMetadata),
}

/// Resolves `name`: a dump's file name is a dump; `latest` the newest base backup; otherwise
/// the base backup or the dump of that name, refused when both exist (a base backup and a
/// dump of the same database started in the same second share the playbook's name).
pub fn find_named(repository: &Repository, name: &str) -> Result<Named> {
    if names_a_dump_file(name) {
        return find_dump(repository, name, None).map(Named::Dump);
    }
    if name == "latest" {
        return crate::backup::find_backup(repository, name).map(Named::Backup);
    }
    let backup = crate::backup::find_backup(repository, name);
    let dump = find_dump(repository, name, None);
    match (backup, dump) {
        (Ok(_), Ok(dump)) => Err(Error::InvalidRequest(format!(
            "both a base backup and a dump are named \"{name}\"; name the dump by its file ({})",
            dump.file
        ))),
        (Ok(backup), Err(_)) => Ok(Named::Backup(backup)),
        (Err(Error::BackupNotFound(_)), Ok(dump)) => Ok(Named::Dump(dump)),
        (Err(error), _) => Err(error),
    }
}

/// The digest recorded in a dump's `.sha256` file.
fn recorded_checksum(repository: &Repository, dump: &DumpMetadata) -> Result<String> {
    let key = checksum_key(&dump.file);
    let data =
        read_small_object(repository.storage(), &key)?.ok_or_else(|| Error::InvalidMetadata {
            object: key.clone(),
            reason: "the checksum file is missing".into(),
        })?;
    let text = String::from_utf8_lossy(&data);
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(digest), Some(file)) if file.trim_start_matches('*') == dump.file => {
            Ok(digest.to_ascii_lowercase())
        }
        _ => Err(Error::InvalidMetadata {
            object: key,
            reason: format!("expected \"<sha256>  {}\"", dump.file),
        }),
    }
}

/// Reads a dump's stored file through the decoder into `out`: the stored bytes' SHA-256 and
/// the SQL's, with what was expected of each.
struct DumpRead {
    stored: (Sha256Digest, u64),
    sql: (Sha256Digest, u64),
}

fn read_dump(
    repository: &Repository,
    dump: &DumpMetadata,
    out: &mut dyn Write,
    destination: &str,
    cancel: &AtomicBool,
) -> Result<DumpRead> {
    let key = dump.key();
    let mut source = DigestingReader::new(CancellableReader {
        inner: repository.storage().open(&key)?,
        cancel,
    });
    let sql = {
        let mut decoder =
            Decoder::new(&mut source, dump.spec()?, repository.key()?).map_err(|e| {
                Error::Decode {
                    object: key.clone(),
                    reason: e.to_string(),
                }
            })?;
        let mut out = DigestingWriter::new(out);
        match pump(&mut decoder, &mut out) {
            Ok(_) => {}
            Err(_) if cancel.load(Ordering::SeqCst) => return Err(Error::Interrupted),
            Err(PumpError::Read(e)) => {
                return Err(Error::Decode {
                    object: key,
                    reason: e.to_string(),
                })
            }
            Err(PumpError::Write(e)) => return Err(Error::io("write", destination, e)),
        }
        let (_, digest, size) = out.finish();
        (digest, size)
    };
    // Whatever follows the end of the compressed stream is stored bytes too, and part of the
    // file's checksum.
    io::copy(&mut source, &mut io::sink()).map_err(|e| Error::io("read", &key, e))?;
    Ok(DumpRead {
        stored: source.digest(),
        sql,
    })
}

/// The SHA-256 and size of a dump's stored file, read without decoding.
fn stored_digest(
    repository: &Repository,
    dump: &DumpMetadata,
    cancel: &AtomicBool,
) -> Result<(Sha256Digest, u64)> {
    let key = dump.key();
    let mut source = DigestingReader::new(CancellableReader {
        inner: repository.storage().open(&key)?,
        cancel,
    });
    match io::copy(&mut source, &mut io::sink()) {
        Ok(_) => Ok(source.digest()),
        Err(_) if cancel.load(Ordering::SeqCst) => Err(Error::Interrupted),
        Err(e) => Err(Error::io("read", key, e)),
    }
}

struct CancellableReader<'a, R> {
    inner: R,
    cancel: &'a AtomicBool,
}

impl<R: Read> Read for CancellableReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        self.inner.read(buf)
    }
}

/// Checks one dump: the `.sha256` file and the `.meta` agree, the stored file has that
/// checksum and size, and it decodes in full to SQL of the recorded SHA-256. Returns the
/// problems found (none: the dump is good).
pub fn verify_dump(
    repository: &Repository,
    dump: &DumpMetadata,
) -> Result<Vec<crate::backup::Problem>> {
    let mut problems = Vec::new();
    let problem = |object: &str, text: String| crate::backup::Problem {
        object: object.to_string(),
        problem: text,
    };
    match recorded_checksum(repository, dump) {
        Ok(recorded) if recorded != dump.playbook.checksum => problems.push(problem(
            &checksum_key(&dump.file),
            format!("says {recorded}, the .meta says {}", dump.playbook.checksum),
        )),
        Ok(_) => {}
        Err(error) => problems.push(problem(&checksum_key(&dump.file), error.to_string())),
    }
    let never = AtomicBool::new(false);
    match read_dump(repository, dump, &mut io::sink(), "nowhere", &never) {
        Ok(read) => problems.extend(
            compare(dump, &read)
                .into_iter()
                .map(|text| problem(&dump.key(), text)),
        ),
        Err(Error::Storage(e)) if e.is_not_found() => {
            problems.push(problem(&dump.key(), "the dump file is missing".into()))
        }
        Err(error @ (Error::Decode { .. } | Error::WrongKey { .. })) => {
            problems.push(problem(&dump.key(), error.to_string()))
        }
        Err(error) => return Err(error),
    }
    Ok(problems)
}

/// What differs between what was read and what the `.meta` recorded.
fn compare(dump: &DumpMetadata, read: &DumpRead) -> Vec<String> {
    let mut differences = Vec::new();
    if read.stored.0.to_hex() != dump.playbook.checksum || read.stored.1 != dump.playbook.size_bytes
    {
        differences.push(format!(
            "checksum mismatch: the stored file has SHA-256 {} ({} bytes), expected {} ({} bytes)",
            read.stored.0, read.stored.1, dump.playbook.checksum, dump.playbook.size_bytes
        ));
    }
    if read.sql.0.to_hex() != dump.sql_sha256 || read.sql.1 != dump.sql_size_bytes {
        differences.push(format!(
            "the decoded SQL has SHA-256 {} ({} bytes), expected {} ({} bytes)",
            read.sql.0, read.sql.1, dump.sql_sha256, dump.sql_size_bytes
        ));
    }
    differences
}

/// How [`restore_dump`] treats an existing database and the checksum.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreDumpOptions {
    /// Replace an existing target database (once the new copy is complete).
    pub force: bool,
    /// Commit even when the stored file's checksum does not match (psql still stops at the
    /// first error, and a stream that does not decode is never committed).
    pub skip_verify: bool,
}

/// What [`restore_dump`] restored.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreDumpReport {
    pub database: String,
    pub replaced: bool,
    /// Every table restored and its rows, `schema.table` order.
    pub tables: Vec<(String, u64)>,
    /// The checksum did not match and `skip_verify` was given.
    pub checksum_mismatch: Option<String>,
}

impl RestoreDumpReport {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, rows)| rows).sum()
    }
}

/// Restores database dump `dump` into database `target` of the server `live` reaches (its
/// `psql` and connection; the database in the connection is only used to create and rename
/// databases). See the module documentation.
pub fn restore_dump(
    repository: &Repository,
    dump: &DumpMetadata,
    live: &Live,
    target: &str,
    options: RestoreDumpOptions,
    cancel: &AtomicBool,
) -> Result<RestoreDumpReport> {
    if dump.content != DumpKind::Database {
        return Err(Error::InvalidRequest(format!(
            "\"{}\" holds the cluster's roles and tablespaces, not a database; run it with psql (see the README, \"Logical dumps\")",
            dump.file
        )));
    }
    if !options.skip_verify {
        // First, as `sha256sum -c` would: a damaged file is refused before anything is created.
        let recorded = recorded_checksum(repository, dump)?;
        let (actual, _) = stored_digest(repository, dump, cancel)?;
        if actual.to_hex() != recorded || recorded != dump.playbook.checksum {
            return Err(Error::DumpChecksumMismatch(format!(
                "the stored file {} has SHA-256 {actual}, its .sha256 file says {recorded}{}",
                dump.file,
                if recorded == dump.playbook.checksum {
                    String::new()
                } else {
                    format!(" and its .meta {}", dump.playbook.checksum)
                }
            )));
        }
    }
    let exists = live.query(
        "SELECT count(*) FROM pg_database WHERE datname = :'name';",
        target,
    )? != "0";
    if exists && !options.force {
        return Err(Error::DatabaseExists(target.to_string()));
    }
    // psql runs what the dump holds, meta-commands included (`\!` runs a shell command as
    // this user): only a psql that can refuse them is used (see `load`).
    if !live.psql_restricts()? {
        return Err(Error::DumpTool(format!(
            "{} cannot refuse the psql meta-commands a dump may hold (\\restrict is in 13.22, 14.19, 15.14, 16.10, 17.6 and later); nothing was restored. Install a current minor release of the client, or point --pg-bindir at one",
            live.psql.display()
        )));
    }
    // Always into a new database under a name of its own, renamed only once complete: the
    // target's name never holds half a database, whatever the dump commits on its own (its
    // large objects come between BEGIN and COMMIT) and however this process ends (a kill -9
    // leaves `<name>_sc_restore_<pid>`, never a partial `<name>`).
    let load_into = format!("{}_sc_restore_{}", truncate(target, 40), std::process::id());
    live.query("CREATE DATABASE :\"name\" TEMPLATE template0;", &load_into)?;
    let loaded = load(
        repository,
        dump,
        &live.for_database(&load_into),
        options,
        cancel,
    );
    let (checksum_mismatch, copied) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => {
            let _ = live.query(
                "DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);",
                &load_into,
            );
            return Err(error);
        }
    };
    let mut put_in_place = Vec::new();
    if exists {
        // Connections to the old database are ended (the playbook's FORCE_RESTORE did that
        // before loading; here the old copy served them until now).
        put_in_place.push(format!(
            "DROP DATABASE {} WITH (FORCE)",
            quote_ident(target)
        ));
    }
    put_in_place.push(format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(&load_into),
        quote_ident(target)
    ));
    if let Err(error) = live.run_separately(&put_in_place) {
        let _ = live.query(
            "DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);",
            &load_into,
        );
        return Err(error);
    }
    let restored = live.for_database(target);
    let tables = match copied {
        Some(copied) if same_tables(&restored, &copied)? => {
            let mut tables: Vec<(String, u64)> = copied
                .into_iter()
                .map(|(table, rows)| (table.shown, rows))
                .collect();
            tables.sort();
            tables
        }
        _ => count_rows(&restored)?,
    };
    Ok(RestoreDumpReport {
        database: target.to_string(),
        replaced: exists,
        tables,
        checksum_mismatch,
    })
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Each table a dump's COPY filled, with the rows psql reported for it.
type CopiedRows = Vec<(CopiedTable, u64)>;

/// Streams the dump into `psql` between BEGIN and a COMMIT that is sent only when everything
/// read was verified. Returns the checksum mismatch that `skip_verify` let through, and the
/// rows each COPY loaded when psql's tags and the dump's COPY statements pair up.
fn load(
    repository: &Repository,
    dump: &DumpMetadata,
    database: &Live,
    options: RestoreDumpOptions,
    cancel: &AtomicBool,
) -> Result<(Option<String>, Option<CopiedRows>)> {
    let expected = recorded_checksum(repository, dump);
    let mut psql = database
        .command()
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("run", database.psql.display(), e))?;
    let stderr = psql.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || read_capped(stderr));
    // Command tags, one line per statement: only the COPY counts are kept.
    let stdout = psql.stdout.take().expect("piped");
    let tags = std::thread::spawn(move || {
        let mut tags = Vec::new();
        let mut reader = io::BufReader::new(stdout);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            tags.extend(copy_tags(&String::from_utf8_lossy(&line)));
            line.clear();
        }
        tags
    });
    let mut stdin = CopyScan::new(psql.stdin.take().expect("piped"));
    // A key nobody can guess: a dump cannot \unrestrict what it did not \restrict.
    let key: String = {
        use rand::Rng;
        rand::thread_rng()
            .sample_iter(rand::distributions::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect()
    };
    let streamed = (|| {
        // Command tags on (psql runs with -q): "COPY <rows>" after each table's data. Then no
        // meta-command at all from the dump: psql refuses each (CVE-2025-8714's class), and
        // ON_ERROR_STOP ends the load there.
        stdin
            .write_all(format!("\\set QUIET off\n\\restrict {key}\nBEGIN;\n").as_bytes())
            .map_err(|e| Error::io("write to", "psql", e))?;
        let mut filtered = OwnRestrictLines::new(&mut stdin);
        let read = read_dump(repository, dump, &mut filtered, "psql", cancel);
        filtered
            .finish()
            .map_err(|e| Error::io("write to", "psql", e))?;
        let read = read?;
        let mut mismatch = None;
        let recorded = expected?;
        if read.stored.0.to_hex() != recorded || recorded != dump.playbook.checksum {
            let text = format!(
                "the stored file {} has SHA-256 {}, its .sha256 file says {}",
                dump.file, read.stored.0, recorded
            );
            if !options.skip_verify {
                return Err(Error::DumpChecksumMismatch(text));
            }
            mismatch = Some(text);
        }
        if let Some(difference) = compare(dump, &read)
            .into_iter()
            .find(|d| d.starts_with("the decoded"))
        {
            // The SQL itself is not what was dumped: never committed, whatever was asked.
            return Err(Error::Decode {
                object: dump.key(),
                reason: difference,
            });
        }
        stdin
            .write_all(b"COMMIT;\n")
            .map_err(|e| Error::io("write to", "psql", e))?;
        Ok(mismatch)
    })();
    // Without the COMMIT, psql reaches the end of its input inside the transaction, which the
    // server rolls back when it disconnects.
    let copied = stdin.tables().map(<[_]>::to_vec);
    drop(stdin);
    if streamed.is_err() {
        let _ = psql.kill();
    }
    let status = wait_cancellable(&mut psql, cancel);
    let errors = errors.join().unwrap_or_default();
    let tags = tags.join().unwrap_or_default();
    if cancel.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    let copied = copied
        .filter(|tables| tables.len() == tags.len())
        .map(|tables| tables.into_iter().zip(tags).collect());
    match (streamed, status) {
        (Err(Error::Io { path, .. }), Some(false)) if path == "psql" => Err(psql_failed(&errors)),
        (Err(error), _) => Err(error),
        (Ok(mismatch), Some(true)) => Ok((mismatch, copied)),
        (Ok(_), _) => Err(psql_failed(&errors)),
    }
}

/// Passes a dump's SQL on without the `\restrict <key>` line pg_dump writes after its header
/// comments and the `\unrestrict <key>` after its closing comment (our own `\restrict` is in
/// force: psql would refuse theirs). Only there, where nothing else can be (comments and blank
/// lines around them): the same text anywhere else goes on, and psql refuses it.
struct OwnRestrictLines<W: Write> {
    inner: W,
    /// The current line, while it could still be one of those.
    line: Vec<u8>,
    /// Whether only comments and blank lines came so far (the header), or since the closing
    /// comment (the trailer).
    outside_sql: bool,
    /// Whether the current line is being passed on as it comes.
    passing: bool,
}

const DUMP_COMPLETE: &[u8] = b"-- PostgreSQL database dump complete";

impl<W: Write> OwnRestrictLines<W> {
    fn new(inner: W) -> Self {
        OwnRestrictLines {
            inner,
            line: Vec::new(),
            outside_sql: true,
            passing: false,
        }
    }

    /// A whole line (with its newline, unless at the end), kept or dropped.
    fn end_line(&mut self) -> io::Result<()> {
        let line = std::mem::take(&mut self.line);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let restrict = [&b"\\restrict "[..], &b"\\unrestrict "[..]]
            .iter()
            .any(|command| {
                text.strip_prefix(*command).is_some_and(|key| {
                    !key.is_empty() && key.iter().all(|b| b.is_ascii_alphanumeric())
                })
            });
        if self.outside_sql && restrict {
            return Ok(());
        }
        if text.starts_with(DUMP_COMPLETE) {
            self.outside_sql = true;
        } else if !(text.is_empty() || text.starts_with(b"--") || restrict) {
            self.outside_sql = false;
        }
        self.inner.write_all(&line)
    }

    fn finish(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            self.end_line()?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Write for OwnRestrictLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1);
            if self.passing {
                // The rest of a long line: not one of those, passed on as it comes.
                self.inner.write_all(&rest[..end])?;
                self.passing = rest[end - 1] != b'\n';
                rest = &rest[end..];
                continue;
            }
            let take = end.min(MAX_RESTRICT_LINE + 1 - self.line.len());
            self.line.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.line.ends_with(b"\n") {
                self.end_line()?;
            } else if self.line.len() > MAX_RESTRICT_LINE {
                // Longer than any of those lines: SQL or a long comment, passed on.
                let line = std::mem::take(&mut self.line);
                if !line.starts_with(b"--") {
                    self.outside_sql = false;
                }
                self.inner.write_all(&line)?;
                self.passing = true;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Longer than pg_dump's `\restrict <key>` lines can be.
const MAX_RESTRICT_LINE: usize = 200;

/// Whether the COPY statements filled exactly the database's tables, each once, apart from
/// tables an extension created (CREATE EXTENSION made them, not the dump): then the COPY tags
/// are the rows restored.
fn same_tables(database: &Live, copied: &[(CopiedTable, u64)]) -> Result<bool> {
    let output = database.query(
        "SELECT format('%I.%I', n.nspname, c.relname), \
                EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                          AND d.objid = c.oid AND d.deptype = 'e') \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
            AND n.nspname NOT LIKE 'pg_toast%';",
        "",
    )?;
    let mut unmatched: Vec<&str> = copied.iter().map(|(t, _)| t.quoted.as_str()).collect();
    for line in output.lines().filter(|l| !l.is_empty()) {
        let Some((table, of_extension)) = line.rsplit_once('|') else {
            return Ok(false);
        };
        match unmatched.iter().position(|t| *t == table) {
            Some(at) => {
                unmatched.swap_remove(at);
            }
            None if of_extension == "t" => {}
            None => return Ok(false),
        }
    }
    Ok(unmatched.is_empty())
}

fn psql_failed(errors: &str) -> Error {
    Error::DumpLoad(format!(
        "psql stopped at an error; nothing was committed: {}",
        errors.trim()
    ))
}

/// Waits for `child`, killing it on `cancel`; `Some(success)`, or `None` when killed.
fn wait_cancellable(child: &mut Child, cancel: &AtomicBool) -> Option<bool> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.success()),
            Ok(None) => {}
            Err(_) => return None,
        }
        if cancel.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every ordinary table of the database (partitions rather than their parents) and its rows.
fn count_rows(database: &Live) -> Result<Vec<(String, u64)>> {
    let output = database.query(
        "SELECT format('%s.%s', n.nspname, c.relname), \
                (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
            AND n.nspname NOT LIKE 'pg_toast%' \
          ORDER BY 1;",
        "",
    )?;
    Ok(output
        .lines()
        .filter_map(|line| {
            let (table, rows) = line.rsplit_once('|')?;
            Some((table.to_string(), rows.trim().parse().ok()?))
        })
        .collect())
}

#[cfg(test)]
mod restrict_lines_tests {
    use super::*;

    fn filtered(input: &str, chunk: usize) -> String {
        let mut out = Vec::new();
        let mut filter = OwnRestrictLines::new(&mut out);
        for piece in input.as_bytes().chunks(chunk) {
            filter.write_all(piece).unwrap();
        }
        filter.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn only_pg_dumps_own_restrict_lines_in_its_header_and_trailer_go() {
        let long = "x".repeat(500);
        let dump = format!(
            "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\nSET x = 1;\n\\restrict Z9\nINSERT INTO t VALUES ('{long}');\n\\unrestrict Z9\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict AbC123\n\n"
        );
        for chunk in [1, 7, 4096] {
            let out = filtered(&dump, chunk);
            assert!(!out.contains("AbC123"), "chunk {chunk}: {out}");
            // In the middle of the SQL they stay, for psql to refuse.
            assert!(out.contains("\\restrict Z9\n") && out.contains("\\unrestrict Z9\n"));
            assert!(out.contains(&long) && out.contains("SET x = 1;\n"));
            assert_eq!(out.lines().count(), dump.lines().count() - 2);
        }
        // \! and friends are never removed.
        let out = filtered("\\! touch /tmp/x\nSELECT 1;\n", 3);
        assert_eq!(out, "\\! touch /tmp/x\nSELECT 1;\n");
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::{RawSettings, Settings};
    use crate::repository::ClusterIdentity;

    pub(super) fn repository(dir: &std::path::Path, compression: &str) -> Repository {
        let settings = Settings::from_raw(&RawSettings {
            repository: Some(dir.display().to_string()),
            compression: Some(compression.into()),
            ..Default::default()
        })
        .unwrap();
        Repository::open_for_cluster(
            &settings,
            &ClusterIdentity {
                system_identifier: 1,
                pg_version_num: 170000,
            },
        )
        .unwrap()
    }

    /// A stand-in for pg_dump: a real child process writing SQL to its standard output.
    pub(super) fn request(script: &str, database: &str) -> DumpRequest {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        DumpRequest {
            command,
            content: DumpKind::Database,
            database: database.into(),
            backup_type: "full".into(),
            pg_version_num: 170000,
            system_identifier: 1,
            pg_dump_version: "test".into(),
        }
    }

    pub(super) fn never() -> impl FnMut() -> std::result::Result<(), Interrupted> {
        || Ok(())
    }

    #[test]
    fn a_dump_is_three_files_that_sha256sum_and_verify_accept() {
        let dir = tempfile::tempdir().unwrap();
        let repository = repository(dir.path(), "gzip");
        let dump = take_dump(
            &repository,
            request("printf 'CREATE TABLE t (id int);\\n'", "simcorp"),
            &mut never(),
        )
        .unwrap();
        assert!(dump.file.starts_with("simcorp_full_") && dump.file.ends_with(".sql.gz"));
        assert_eq!(
            dump.playbook.backup_name.len(),
            "simcorp_full_20260110_143000".len()
        );
        assert_eq!(dump.sql_size_bytes, 25);
        let stored = std::fs::read(dir.path().join("dumps").join(&dump.file)).unwrap();
        let digest = Sha256Digest::of_reader(&mut &stored[..])
            .unwrap()
            .0
            .to_hex();
        assert_eq!(digest, dump.playbook.checksum);
        let line = std::fs::read_to_string(dir.path().join(format!("dumps/{}.sha256", dump.file)))
            .unwrap();
        assert_eq!(line, checksum_line(&digest, &dump.file));
        assert!(verify_dump(&repository, &dump).unwrap().is_empty());
        assert!(matches!(
            find_named(&repository, &dump.playbook.backup_name).unwrap(),
            Named::Dump(_)
        ));
        assert_eq!(
            find_dump(&repository, "latest", Some("simcorp")).unwrap(),
            dump
        );
        assert!(find_dump(&repository, "latest", Some("other")).is_err());

        // A changed .sha256 is a problem of its own.
        std::fs::write(
            dir.path().join(format!("dumps/{}.sha256", dump.file)),
            checksum_line(&"0".repeat(64), &dump.file),
        )
        .unwrap();
        let problems = verify_dump(&repository, &dump).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        delete_dump_file(&repository, &dump.file).unwrap();
        assert!(list_dumps(&repository).unwrap().is_empty());
        assert!(repository.storage().list(DUMPS_PREFIX).unwrap().is_empty());
    }

    #[test]
    fn a_failed_or_interrupted_dump_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repository = repository(dir.path(), "zstd");
        let error = take_dump(
            &repository,
            request(
                "printf 'CREATE'; echo 'pg_dump: error: boom' >&2; exit 1",
                "db",
            ),
            &mut never(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("boom"), "{error}");
        let mut polls = 0;
        let pid_file = dir.path().join("dump.pid");
        let error = take_dump(
            &repository,
            request(
                &format!(
                    "echo $$ > {}; printf 'x'; exec sleep 30",
                    pid_file.display()
                ),
                "db",
            ),
            &mut || {
                polls += 1;
                if polls > 2 {
                    Err(Interrupted)
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert!(matches!(error, Error::Interrupted), "{error}");
        // The dump program was stopped (and reaped), not left running.
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the interrupted dump's process {pid} still runs"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(repository
            .storage()
            .list("")
            .unwrap()
            .iter()
            .all(|o| !o.key.starts_with(DUMPS_PREFIX)));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("dumps"))
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// A `.meta` as the untyped metadata wrote it (the playbook's spelling: a
    /// `YYYYmmdd_HHMMSS` timestamp, encryption as a boolean).
    const WRITTEN_BEFORE: &str = r#"{
  "backup_name": "simcorp_full_20261206_120000",
  "backup_type": "daily",
  "timestamp": "20261206_120000",
  "database": "simcorp",
  "host": "db1",
  "size_bytes": 4096,
  "checksum": "ab",
  "compression": "zstd",
  "encryption": true,
  "duration_seconds": 1.5,
  "format": 1,
  "kind": "logical",
  "content": "database",
  "file": "simcorp_full_20261206_120000.sql.zst.age",
  "sql_size_bytes": 10000,
  "sql_sha256": "cd",
  "start_time": "2026-12-06T12:00:00.250000Z",
  "stop_time": "2026-12-06T12:00:01.750000Z",
  "pg_version_num": 170000,
  "system_identifier": "7711576491893132752",
  "pg_dump_version": "pg_dump (PostgreSQL) 17.0"
}"#;

    #[test]
    fn a_meta_written_before_reads_into_the_shared_record_and_back_unchanged() {
        let read: DumpMetadata = serde_json::from_str(WRITTEN_BEFORE).unwrap();
        assert_eq!(read.playbook.backup_name, "simcorp_full_20261206_120000");
        assert_eq!(read.playbook.encryption, EncryptionMode::Age);
        assert_eq!(
            read.playbook.compression,
            crate::config::CompressionAlgorithm::Zstd
        );
        assert_eq!(
            read.playbook.stop_time - read.playbook.start_time,
            chrono::Duration::milliseconds(1500)
        );
        let written = serde_json::to_string_pretty(&read).unwrap();
        assert_eq!(written, WRITTEN_BEFORE, "the .meta's text changed");

        for (field, bad) in [
            ("\"compression\": \"zstd\"", "\"compression\": \"lz4\""),
            (
                "\"start_time\": \"2026-12-06T12:00:00.250000Z\"",
                "\"start_time\": \"noon\"",
            ),
        ] {
            let damaged = WRITTEN_BEFORE.replace(field, bad);
            assert!(
                serde_json::from_str::<DumpMetadata>(&damaged).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn names_follow_the_playbook() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-10T14:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            dump_name(DumpKind::Database, "simcorp", at),
            "simcorp_full_20260110_143000"
        );
        assert_eq!(
            dump_name(DumpKind::Globals, "", at),
            "globals_20260110_143000"
        );
        let spec = spec_of_file("simcorp_full_20260110_143000.sql.zst.age").unwrap();
        assert!(spec.encrypted);
        assert!(names_a_dump_file("simcorp_full_20260110_143000.sql.gz"));
        assert!(!names_a_dump_file("simcorp_full_20260110_143000"));
    }
}
