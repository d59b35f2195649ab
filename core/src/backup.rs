//! Physical base backups: what to copy, how it is stored, how it is found and checked.
//!
//! The PostgreSQL side (pg_backup_start / pg_backup_stop, cancellation) stays in the extension;
//! this module walks the data directory, streams files into the repository through the codec
//! pipeline on worker threads, and writes the manifest and metadata.
//!
//! ```text
//! backups/<name>/data/<n><suffix>          file n of the manifest (object names carry no paths)
//! backups/<name>/manifest<suffix>          JSON: every entry: path, type, size, mode, mtime, SHA-256, stored size
//! backups/<name>/backup.json               metadata (plaintext, self-checksummed); written last:
//!                                          a backup exists exactly when this object does
//! ```

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{pump, CodecSpec, EncodeSummary, Encoder, PumpError, Sha256Digest};
use crate::error::{Error, Result};
use crate::lsn::{segments_between, Lsn};
use crate::repository::{read_small_object, Repository};
use crate::wal::WalFileName;

pub const BACKUPS_PREFIX: &str = "backups/";
const METADATA_NAME: &str = "backup.json";
const EMPTY_DIGEST_FIELD: &str = "\"metadata_sha256\": \"\"";
const FORMAT_VERSION: u32 = 1;
/// The manifest grows with the number of files, never with their size; this bounds what a
/// damaged or hostile manifest can make us allocate.
const MAX_MANIFEST_SIZE: u64 = 512 << 20;

/// Directories whose contents PostgreSQL's own base backup leaves out (basebackup.c's
/// excludeDirContents): rebuilt at startup or meaningless on another server. The directories
/// themselves are kept, empty.
const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files left out wherever they are (basebackup.c's excludeFiles), plus our own restore key.
const EXCLUDED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
    crate::restore::RECOVERY_KEY_FILE,
];

/// What [`plan`] found to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Directory,
    Symlink(String),
}

#[derive(Debug, Clone)]
pub struct SourceEntry {
    /// Path in the restored data directory, `/`-separated.
    pub path: String,
    /// Where to read it now.
    pub source: PathBuf,
    pub kind: SourceKind,
}

/// A user tablespace: `pg_tblspc/<oid>` points at `location`.
#[derive(Debug, Clone)]
pub struct Tablespace {
    pub oid: u32,
    pub location: PathBuf,
}

/// Lists what a base backup of `data_directory` must contain, applying PostgreSQL's rules.
/// Files that vanish while we look are simply not listed.
pub fn plan(data_directory: &Path, tablespaces: &[Tablespace]) -> Result<Vec<SourceEntry>> {
    let mut entries = Vec::new();
    walk(data_directory, "", true, &mut entries)?;
    for tablespace in tablespaces {
        let link = format!("pg_tblspc/{}", tablespace.oid);
        // The link itself was recorded by the walk; its contents come from the location.
        walk(&tablespace.location, &link, false, &mut entries)?;
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// pg_wal's subdirectories, empty: WAL comes from the archive. `archive_status` always;
/// `summaries` where it exists (PostgreSQL 17+, the WAL summarizer's), as pg_basebackup does.
fn push_wal_subdirectories(pg_wal: &Path, relative: &str, out: &mut Vec<SourceEntry>) {
    out.push(SourceEntry {
        path: format!("{relative}/archive_status"),
        source: pg_wal.join("archive_status"),
        kind: SourceKind::Directory,
    });
    if pg_wal.join("summaries").is_dir() {
        out.push(SourceEntry {
            path: format!("{relative}/summaries"),
            source: pg_wal.join("summaries"),
            kind: SourceKind::Directory,
        });
    }
}

fn walk(dir: &Path, prefix: &str, is_data_root: bool, out: &mut Vec<SourceEntry>) -> Result<()> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // vanished
        Err(e) => return Err(Error::io("list directory", dir.display(), e)),
    };
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| Error::io("list directory", dir.display(), e))?;
        names.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    // Unlogged relations: only their init fork is copied (they are reset at recovery).
    let unlogged: HashSet<String> = names
        .iter()
        .filter_map(|(name, _)| name.strip_suffix("_init").map(str::to_string))
        .filter(|base| base.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    for (name, path) in names {
        if EXCLUDED_FILES.contains(&name.as_str())
            || name.starts_with("pg_internal.init")
            || name.starts_with("pgsql_tmp")
        {
            continue;
        }
        if !unlogged.is_empty() && !name.ends_with("_init") {
            let relation = name.split(['_', '.']).next().unwrap_or("");
            if unlogged.contains(relation) {
                continue;
            }
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", path.display(), e)),
        };
        let relative = join(prefix, &name);
        if meta.file_type().is_symlink() {
            // pg_wal may be a link to another volume: back it up as a directory.
            if is_data_root && name == "pg_wal" {
                out.push(SourceEntry {
                    path: relative.clone(),
                    source: path.clone(),
                    kind: SourceKind::Directory,
                });
                push_wal_subdirectories(&path, &relative, out);
                continue;
            }
            let target =
                fs::read_link(&path).map_err(|e| Error::io("read link", path.display(), e))?;
            out.push(SourceEntry {
                path: relative,
                source: path,
                kind: SourceKind::Symlink(target.to_string_lossy().into_owned()),
            });
        } else if meta.is_dir() {
            out.push(SourceEntry {
                path: relative.clone(),
                source: path.clone(),
                kind: SourceKind::Directory,
            });
            if is_data_root && EXCLUDED_DIR_CONTENTS.contains(&name.as_str()) {
                continue;
            }
            if is_data_root && name == "pg_wal" {
                push_wal_subdirectories(&path, &relative, out);
                continue;
            }
            walk(&path, &relative, false, out)?;
        } else if meta.is_file() {
            out.push(SourceEntry {
                path: relative,
                source: path,
                kind: SourceKind::File,
            });
        }
        // Sockets, fifos and devices do not belong in a backup.
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    File,
    Directory,
    Symlink,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    pub path: String,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    #[serde(default)]
    pub mode: u32,
    #[serde(default)]
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_size: Option<u64>,
    /// Key of the stored object, relative to the backup's prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub backup_name: String,
    pub entries: Vec<ManifestEntry>,
}

/// The user tables of one database.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseTables {
    pub database: String,
    /// `schema.table`, sorted.
    pub tables: Vec<String>,
}

/// The user tables of every database, listed by `sc_backup()` just after `pg_backup_start`
/// and again just before `pg_backup_stop`: what a restore of the backup must hold, apart from
/// what changed between the two (verification by restore compares with it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogSnapshot {
    pub at_start: Vec<DatabaseTables>,
    pub before_stop: Vec<DatabaseTables>,
}

/// The backup's metadata, in the shape of the playbook's `.meta` plus what restore needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupMetadata {
    pub format: u32,
    pub backup_name: String,
    pub backup_type: String,
    /// Start time, RFC 3339 UTC.
    pub timestamp: String,
    pub database: String,
    pub host: String,
    /// Bytes of data directory copied.
    pub size_bytes: u64,
    /// Bytes stored in the repository (after compression and encryption).
    pub stored_bytes: u64,
    /// `sha256:<digest of the manifest>`.
    pub checksum: String,
    pub compression: String,
    pub encryption: String,
    pub duration_seconds: f64,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_time: String,
    pub stop_time: String,
    pub timeline: u32,
    pub pg_version_num: u32,
    pub system_identifier: String,
    pub wal_segment_size: u64,
    pub file_count: u64,
    pub manifest: String,
    /// The catalog snapshot's object (`catalog<suffix>`), when one was taken.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub catalog: String,
    /// `sha256:<digest of the catalog snapshot>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub catalog_checksum: String,
    pub status: String,
    /// SHA-256 of this document serialized with this field empty.
    #[serde(default)]
    pub metadata_sha256: String,
}

impl BackupMetadata {
    /// Serializes the metadata with `metadata_sha256` set to the SHA-256 of the document as
    /// written with that field empty. The digest is over bytes, not values: parsing and
    /// re-serializing a float need not give the same text back.
    fn to_checksummed_json(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.metadata_sha256 = String::new();
        let text = serde_json::to_string_pretty(&copy).expect("metadata serializes");
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        text.replacen(
            EMPTY_DIGEST_FIELD,
            &format!("\"metadata_sha256\": \"{digest}\""),
            1,
        )
        .into_bytes()
    }

    /// Checks the digest written by [`BackupMetadata::to_checksummed_json`] against `stored`.
    fn checksum_matches(stored: &[u8], digest: &str) -> bool {
        let text = String::from_utf8_lossy(stored);
        let blanked = text.replacen(
            &format!("\"metadata_sha256\": \"{digest}\""),
            EMPTY_DIGEST_FIELD,
            1,
        );
        !digest.is_empty() && hex::encode(Sha256::digest(blanked.as_bytes())) == digest
    }

    pub fn start_lsn(&self) -> Result<Lsn> {
        self.start_lsn
            .parse()
            .map_err(|reason| self.invalid(reason))
    }

    pub fn stop_lsn(&self) -> Result<Lsn> {
        self.stop_lsn.parse().map_err(|reason| self.invalid(reason))
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidMetadata {
            object: metadata_key(&self.backup_name),
            reason,
        }
    }

    /// WAL files the backup needs to reach consistency.
    pub fn required_wal(&self) -> Result<Vec<String>> {
        Ok(segments_between(
            self.timeline,
            self.start_lsn()?,
            self.stop_lsn()?,
            self.wal_segment_size,
        ))
    }
}

pub fn backup_prefix(name: &str) -> String {
    format!("{BACKUPS_PREFIX}{name}/")
}

fn metadata_key(name: &str) -> String {
    format!("{}{METADATA_NAME}", backup_prefix(name))
}

/// `<database>_full_YYYYMMDD_HHMMSS`, usable as an object key part.
pub fn backup_name(database: &str, kind: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    let database: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let database = database.trim_start_matches(['.', '_']);
    let database = if database.is_empty() { "db" } else { database };
    format!("{database}_{kind}_{}", at.format("%Y%m%d_%H%M%S"))
}

/// Streams files into a new backup. Nothing is visible until [`BackupWriter::finish`] writes
/// the metadata; [`BackupWriter::abort`] removes what was written.
pub struct BackupWriter<'r> {
    repository: &'r Repository,
    name: String,
}

/// Returned by the poll closure to stop a backup (PostgreSQL's query cancel, say).
#[derive(Debug)]
pub struct Interrupted;

impl<'r> BackupWriter<'r> {
    pub fn new(repository: &'r Repository, name: &str) -> Result<Self> {
        if !repository.storage().list(&backup_prefix(name))?.is_empty() {
            return Err(Error::InvalidMetadata {
                object: backup_prefix(name),
                reason: "a backup with this name already exists".into(),
            });
        }
        Ok(BackupWriter {
            repository,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Copies `entries` with `parallelism` worker threads. The workers never call back into
    /// the caller; `poll` runs on the calling thread about every 100 ms (the extension checks
    /// for interrupts there) and may stop everything by returning `Err(Interrupted)` or by
    /// unwinding. Returns the manifest entries, sorted by path.
    pub fn store_files(
        &self,
        entries: Vec<SourceEntry>,
        parallelism: usize,
        poll: &mut dyn FnMut() -> std::result::Result<(), Interrupted>,
    ) -> Result<Vec<ManifestEntry>> {
        let mut manifest = Vec::with_capacity(entries.len());
        let mut files = Vec::new();
        for (index, entry) in entries.into_iter().enumerate() {
            match &entry.kind {
                SourceKind::File => files.push((index, entry)),
                SourceKind::Directory => {
                    let meta = fs::metadata(&entry.source).ok();
                    manifest.push(ManifestEntry {
                        path: entry.path,
                        entry_type: EntryType::Directory,
                        mode: meta
                            .as_ref()
                            .map(|m| m.permissions().mode() & 0o7777)
                            .unwrap_or(0o700),
                        mtime: meta.as_ref().map(|m| m.mtime()).unwrap_or(0),
                        size: None,
                        sha256: None,
                        stored_size: None,
                        object: None,
                        link_target: None,
                    })
                }
                SourceKind::Symlink(target) => manifest.push(ManifestEntry {
                    path: entry.path,
                    entry_type: EntryType::Symlink,
                    mode: 0o777,
                    mtime: 0,
                    size: None,
                    sha256: None,
                    stored_size: None,
                    object: None,
                    link_target: Some(target.clone()),
                }),
            }
        }
        // Largest first, so that a big relation segment does not start last and leave the
        // other workers idle while it is copied.
        files.sort_by_cached_key(|(_, entry)| {
            std::cmp::Reverse(fs::metadata(&entry.source).map(|m| m.len()).unwrap_or(0))
        });
        let key = self.repository.key()?;
        let queue = Mutex::new(files.into_iter());
        let stop = AtomicBool::new(false);
        let (results, received) = mpsc::channel::<Result<Option<ManifestEntry>>>();
        let total = queue.lock().unwrap().len();
        let outcome = std::thread::scope(|scope| -> Result<()> {
            // Workers stop when told to or when the caller unwinds (the guard sets `stop`).
            struct StopOnDrop<'a>(&'a AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _guard = StopOnDrop(&stop);
            for _ in 0..parallelism.max(1) {
                let results = results.clone();
                let (queue, stop) = (&queue, &stop);
                // The caller is a PostgreSQL backend: its signals must reach its own thread.
                crate::threads::with_signals_blocked(|| {
                    scope.spawn(move || loop {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let Some((index, entry)) = queue.lock().unwrap().next() else {
                            return;
                        };
                        let result = self.store_file(index, &entry, key);
                        if results.send(result).is_err() {
                            return;
                        }
                    })
                });
            }
            drop(results);
            let mut received_count = 0;
            while received_count < total {
                match received.recv_timeout(Duration::from_millis(100)) {
                    Ok(result) => {
                        received_count += 1;
                        if let Some(entry) = result? {
                            manifest.push(entry);
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if poll().is_err() {
                    return Err(Error::Interrupted);
                }
            }
            Ok(())
        });
        outcome?;
        manifest.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(manifest)
    }

    /// Stores one file; `None` when it vanished before we could open it (PostgreSQL dropped the
    /// relation; WAL replay accounts for that).
    fn store_file(
        &self,
        index: usize,
        entry: &SourceEntry,
        key: Option<&crate::codec::RepositoryKey>,
    ) -> Result<Option<ManifestEntry>> {
        let mut file = match File::open(&entry.source) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", entry.source.display(), e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("stat", entry.source.display(), e))?;
        let spec = Encoder::<io::Sink>::spec(self.repository.compression(), key);
        let object = format!("data/{index:06}{}", spec.suffix());
        let full_key = format!("{}{object}", backup_prefix(&self.name));
        let writer = self.repository.storage().create(&full_key)?;
        let mut encoder = Encoder::new(writer, self.repository.compression(), key)
            .map_err(|e| Error::io("encode", &full_key, e))?;
        // Read to the end, whatever the size was when listed: a file may grow or shrink while
        // PostgreSQL runs; torn pages are repaired by WAL replay (full_page_writes is forced on
        // during a backup).
        pump(&mut file, &mut encoder).map_err(|e| match e {
            PumpError::Read(e) => Error::io("read", entry.source.display(), e),
            PumpError::Write(e) => Error::io("write", &full_key, e),
        })?;
        let (writer, summary) = encoder
            .finish()
            .map_err(|e| Error::io("write", &full_key, e))?;
        writer.commit()?;
        Ok(Some(ManifestEntry {
            path: entry.path.clone(),
            entry_type: EntryType::File,
            mode: meta.permissions().mode() & 0o7777,
            mtime: meta.mtime(),
            size: Some(summary.original_size),
            sha256: Some(summary.original_sha256.to_hex()),
            stored_size: Some(summary.stored_size),
            object: Some(object),
            link_target: None,
        }))
    }

    /// Stores a file produced in memory (backup_label, tablespace_map) under `path`.
    pub fn store_bytes(&self, path: &str, content: &[u8]) -> Result<ManifestEntry> {
        let (object, summary) = self.store_document(&format!("data/{path}"), content)?;
        Ok(ManifestEntry {
            path: path.to_string(),
            entry_type: EntryType::File,
            mode: 0o600,
            mtime: chrono::Utc::now().timestamp(),
            size: Some(summary.original_size),
            sha256: Some(summary.original_sha256.to_hex()),
            stored_size: Some(summary.stored_size),
            object: Some(object),
            link_target: None,
        })
    }

    /// Encodes `content` into the backup's object `base` (plus the codec suffix); returns the
    /// object's name and the encoder's summary.
    fn store_document(&self, base: &str, content: &[u8]) -> Result<(String, EncodeSummary)> {
        let key = self.repository.key()?;
        let spec = Encoder::<io::Sink>::spec(self.repository.compression(), key);
        let object = format!("{base}{}", spec.suffix());
        let full_key = format!("{}{object}", backup_prefix(&self.name));
        let writer = self.repository.storage().create(&full_key)?;
        let mut encoder = Encoder::new(writer, self.repository.compression(), key)
            .map_err(|e| Error::io("encode", &full_key, e))?;
        encoder
            .write_all(content)
            .map_err(|e| Error::io("write", &full_key, e))?;
        let (writer, summary) = encoder
            .finish()
            .map_err(|e| Error::io("write", &full_key, e))?;
        writer.commit()?;
        Ok((object, summary))
    }

    /// Writes the manifest (and the catalog snapshot, if taken), checks that the WAL the
    /// backup needs is archived, then writes the metadata: from that moment the backup is
    /// listed.
    pub fn finish(
        &self,
        entries: Vec<ManifestEntry>,
        catalog: Option<&CatalogSnapshot>,
        mut metadata: BackupMetadata,
    ) -> Result<BackupMetadata> {
        let key = self.repository.key()?;
        let spec = Encoder::<io::Sink>::spec(self.repository.compression(), key);
        let manifest = Manifest {
            format: FORMAT_VERSION,
            backup_name: self.name.clone(),
            entries,
        };
        let json = serde_json::to_vec(&manifest).expect("manifest serializes");
        let (manifest_object, summary) = self.store_document("manifest", &json)?;
        let mut catalog_stored = 0;
        if let Some(catalog) = catalog {
            let json = serde_json::to_vec(catalog).expect("catalog serializes");
            let (object, catalog_summary) = self.store_document("catalog", &json)?;
            metadata.catalog = object;
            metadata.catalog_checksum =
                format!("sha256:{}", catalog_summary.original_sha256.to_hex());
            catalog_stored = catalog_summary.stored_size;
        }

        for wal_file in metadata.required_wal()? {
            if self
                .repository
                .find_wal(&WalFileName::parse(&wal_file)?)?
                .is_none()
            {
                return Err(Error::WalNotFound(wal_file));
            }
        }

        let files = manifest
            .entries
            .iter()
            .filter(|e| e.entry_type == EntryType::File);
        metadata.format = FORMAT_VERSION;
        metadata.backup_name = self.name.clone();
        metadata.file_count = files.clone().count() as u64;
        metadata.size_bytes = files.clone().filter_map(|e| e.size).sum();
        metadata.stored_bytes =
            files.filter_map(|e| e.stored_size).sum::<u64>() + summary.stored_size + catalog_stored;
        metadata.checksum = format!("sha256:{}", summary.original_sha256.to_hex());
        metadata.manifest = manifest_object;
        metadata.compression = spec.compression.name().to_string();
        metadata.encryption = if spec.encrypted { "age" } else { "none" }.to_string();
        metadata.status = "complete".to_string();
        let json = metadata.to_checksummed_json();
        let mut writer = self
            .repository
            .storage()
            .create(&metadata_key(&self.name))?;
        writer
            .write_all(&json)
            .map_err(|e| Error::io("write", metadata_key(&self.name), e))?;
        writer.commit()?;
        Ok(metadata)
    }

    /// Removes everything this backup wrote (best effort: an abort must not fail).
    pub fn abort(&self) {
        delete_prefix(self.repository, &backup_prefix(&self.name));
    }
}

fn delete_prefix(repository: &Repository, prefix: &str) {
    if let Ok(objects) = repository.storage().list(prefix) {
        for object in objects {
            let _ = repository.storage().delete(&object.key);
        }
    }
}

/// Every complete backup in the repository, oldest first.
pub fn list_backups(repository: &Repository) -> Result<Vec<BackupMetadata>> {
    Ok(scan_backups(repository)?.finished)
}

/// What one listing of `backups/` finds.
pub struct BackupScan {
    /// Complete backups (their metadata is there and valid), oldest first.
    pub finished: Vec<BackupMetadata>,
    /// Names of backups with objects but no metadata: interrupted, or still being written.
    pub unfinished: Vec<String>,
}

/// Lists `backups/` once (on an object store that listing pages through every data file's
/// key, so callers needing both halves must not list twice) and reads each finished
/// backup's metadata.
pub fn scan_backups(repository: &Repository) -> Result<BackupScan> {
    let mut has_metadata = std::collections::BTreeMap::<String, bool>::new();
    for object in repository.storage().list(BACKUPS_PREFIX)? {
        let Some((name, rest)) = object
            .key
            .strip_prefix(BACKUPS_PREFIX)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        *has_metadata.entry(name.to_string()).or_default() |= rest == METADATA_NAME;
    }
    let mut scan = BackupScan {
        finished: Vec::new(),
        unfinished: Vec::new(),
    };
    for (name, finished) in has_metadata {
        if !finished {
            scan.unfinished.push(name);
            continue;
        }
        match read_metadata(repository, &name) {
            Ok(metadata) => scan.finished.push(metadata),
            // Deleted since it was listed (an expiry running meanwhile): gone, not an error.
            Err(Error::BackupNotFound(_)) => continue,
            Err(error) => return Err(error),
        }
    }
    scan.finished
        .sort_by(|a, b| (&a.start_time, &a.backup_name).cmp(&(&b.start_time, &b.backup_name)));
    Ok(scan)
}

pub fn read_metadata(repository: &Repository, name: &str) -> Result<BackupMetadata> {
    let key = metadata_key(name);
    let data = read_small_object(repository.storage(), &key)?
        .ok_or_else(|| Error::BackupNotFound(name.to_string()))?;
    let metadata: BackupMetadata =
        serde_json::from_slice(&data).map_err(|e| Error::InvalidMetadata {
            object: key.clone(),
            reason: e.to_string(),
        })?;
    if !BackupMetadata::checksum_matches(&data, &metadata.metadata_sha256) {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: "its checksum does not match its content".into(),
        });
    }
    if metadata.backup_name != name {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: format!("it describes backup \"{}\"", metadata.backup_name),
        });
    }
    Ok(metadata)
}

/// Finds a backup by name, or the newest with `latest`.
pub fn find_backup(repository: &Repository, name: &str) -> Result<BackupMetadata> {
    if name == "latest" {
        list_backups(repository)?
            .pop()
            .ok_or_else(|| Error::BackupNotFound("latest".into()))
    } else {
        read_metadata(repository, name)
    }
}

/// The key and encoding of a stored object of a backup. Object names are a dot-free base plus
/// the codec suffix: `data/000012.zst.age`, `manifest.zst`.
fn backup_object(backup: &str, object: &str) -> Result<(String, CodecSpec)> {
    let key = format!("{}{object}", backup_prefix(backup));
    let base = object.rsplit('/').next().unwrap_or(object);
    let suffix = base.find('.').map(|i| &base[i..]).unwrap_or("");
    let spec = CodecSpec::from_suffix(suffix).ok_or_else(|| Error::InvalidMetadata {
        object: key.clone(),
        reason: "unknown encoding suffix".into(),
    })?;
    Ok((key, spec))
}

/// Decodes one file of a backup into `out`, verified against its manifest entry.
pub(crate) fn read_backup_file(
    repository: &Repository,
    backup: &str,
    entry: &ManifestEntry,
    out: &mut dyn Write,
    destination: &str,
) -> Result<u64> {
    let invalid = |reason: &str| Error::InvalidMetadata {
        object: format!("{}manifest ({})", backup_prefix(backup), entry.path),
        reason: reason.into(),
    };
    let object = entry
        .object
        .as_deref()
        .ok_or_else(|| invalid("a file without an object"))?;
    let expected = entry
        .sha256
        .as_deref()
        .and_then(Sha256Digest::from_hex)
        .ok_or_else(|| invalid("a file without a valid SHA-256"))?;
    let (key, spec) = backup_object(backup, object)?;
    repository.read_verified(&key, spec, &expected, entry.size, out, destination)
}

/// Collects a small decoded object in memory, refusing to grow past `limit`.
struct CappedBuffer {
    data: Vec<u8>,
    limit: usize,
}

impl Write for CappedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.data.len() + buf.len() > self.limit {
            return Err(io::Error::other(format!(
                "larger than {} bytes",
                self.limit
            )));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn read_manifest(repository: &Repository, metadata: &BackupMetadata) -> Result<Manifest> {
    let (key, spec) = backup_object(&metadata.backup_name, &metadata.manifest)?;
    let expected = metadata
        .checksum
        .strip_prefix("sha256:")
        .and_then(Sha256Digest::from_hex)
        .ok_or_else(|| Error::InvalidMetadata {
            object: metadata_key(&metadata.backup_name),
            reason: format!("bad checksum {:?}", metadata.checksum),
        })?;
    let mut buffer = CappedBuffer {
        data: Vec::new(),
        limit: MAX_MANIFEST_SIZE as usize,
    };
    repository.read_verified(
        &key,
        spec,
        &expected,
        None,
        &mut buffer,
        "the manifest in memory",
    )?;
    let json = buffer.data;
    let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| Error::InvalidMetadata {
        object: key.clone(),
        reason: e.to_string(),
    })?;
    if manifest.backup_name != metadata.backup_name {
        return Err(Error::InvalidMetadata {
            object: key,
            reason: format!("it belongs to backup \"{}\"", manifest.backup_name),
        });
    }
    for entry in &manifest.entries {
        let path_is_safe = !entry.path.is_empty()
            && !entry.path.starts_with('/')
            && entry
                .path
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        let object_is_safe = entry
            .object
            .as_deref()
            .is_none_or(|object| crate::storage::validate_key(object).is_ok());
        if !path_is_safe || !object_is_safe {
            return Err(Error::InvalidMetadata {
                object: key,
                reason: format!("unsafe path {:?}", entry.path),
            });
        }
    }
    Ok(manifest)
}

/// The backup's catalog snapshot, verified against its recorded digest; `None` for backups
/// taken without one.
pub fn read_catalog(
    repository: &Repository,
    metadata: &BackupMetadata,
) -> Result<Option<CatalogSnapshot>> {
    if metadata.catalog.is_empty() {
        return Ok(None);
    }
    let (key, spec) = backup_object(&metadata.backup_name, &metadata.catalog)?;
    let expected = metadata
        .catalog_checksum
        .strip_prefix("sha256:")
        .and_then(Sha256Digest::from_hex)
        .ok_or_else(|| Error::InvalidMetadata {
            object: metadata_key(&metadata.backup_name),
            reason: format!("bad catalog checksum {:?}", metadata.catalog_checksum),
        })?;
    let mut buffer = CappedBuffer {
        data: Vec::new(),
        limit: MAX_MANIFEST_SIZE as usize,
    };
    repository.read_verified(&key, spec, &expected, None, &mut buffer, "memory")?;
    serde_json::from_slice(&buffer.data)
        .map(Some)
        .map_err(|e| Error::InvalidMetadata {
            object: key,
            reason: e.to_string(),
        })
}

/// One problem found by [`verify_backup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

/// Re-reads every stored file of a backup and the WAL it needs, reporting each problem.
pub fn verify_backup(
    repository: &Repository,
    name: &str,
) -> Result<(BackupMetadata, Vec<Problem>)> {
    let metadata = find_backup(repository, name)?;
    let mut problems = Vec::new();
    let manifest = match read_manifest(repository, &metadata) {
        Ok(manifest) => Some(manifest),
        Err(e) => {
            problems.push(Problem {
                object: format!(
                    "{}{}",
                    backup_prefix(&metadata.backup_name),
                    metadata.manifest
                ),
                problem: e.to_string(),
            });
            None
        }
    };
    if let Err(e) = read_catalog(repository, &metadata) {
        problems.push(Problem {
            object: format!(
                "{}{}",
                backup_prefix(&metadata.backup_name),
                metadata.catalog
            ),
            problem: e.to_string(),
        });
    }
    for entry in manifest.iter().flat_map(|m| m.entries.iter()) {
        let Some(object) = &entry.object else {
            continue;
        };
        if let Err(e) = check_stored_file(repository, &metadata.backup_name, entry) {
            problems.push(Problem {
                object: format!(
                    "{}{object} ({})",
                    backup_prefix(&metadata.backup_name),
                    entry.path
                ),
                problem: e.to_string(),
            });
        }
    }
    for wal_file in metadata.required_wal()? {
        let name = WalFileName::parse(&wal_file)?;
        match repository.find_wal(&name) {
            Ok(Some(stored)) => {
                if let Err(e) = repository.check_wal(&stored) {
                    problems.push(Problem {
                        object: stored.key,
                        problem: e.to_string(),
                    });
                }
            }
            Ok(None) => problems.push(Problem {
                object: format!("WAL {wal_file}"),
                problem: format!(
                    "WAL file {wal_file}, needed to make the backup consistent, is missing"
                ),
            }),
            Err(e) => problems.push(Problem {
                object: format!("WAL {wal_file}"),
                problem: e.to_string(),
            }),
        }
    }
    Ok((metadata, problems))
}

fn check_stored_file(repository: &Repository, backup: &str, entry: &ManifestEntry) -> Result<()> {
    read_backup_file(repository, backup, entry, &mut io::sink(), "nowhere").map(|_| ())
}

impl Repository {
    /// Decodes a stored WAL object completely and checks its digest.
    pub fn check_wal(&self, stored: &crate::wal::StoredWal) -> Result<()> {
        self.read_verified(
            &stored.key,
            stored.spec,
            &stored.sha256,
            None,
            &mut io::sink(),
            "nowhere",
        )
        .map(|_| ())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn metadata() -> BackupMetadata {
        BackupMetadata {
            format: 1,
            backup_name: "db_full_20261124_033519".into(),
            backup_type: "full".into(),
            timestamp: "2026-11-24T03:35:19.228597Z".into(),
            database: "db".into(),
            host: "vm".into(),
            size_bytes: 23_369_675,
            stored_bytes: 3_096_262,
            checksum: "sha256:00".into(),
            compression: "gzip".into(),
            encryption: "none".into(),
            // serde_json does not parse this back to the same bits.
            duration_seconds: 2.2084096300000002,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            start_time: "2026-11-24T03:35:19.228597Z".into(),
            stop_time: "2026-11-24T03:35:21.436969Z".into(),
            timeline: 1,
            pg_version_num: 150020,
            system_identifier: "7711576491893132752".into(),
            wal_segment_size: 16 << 20,
            file_count: 970,
            manifest: "manifest.gz".into(),
            catalog: String::new(),
            catalog_checksum: String::new(),
            status: "complete".into(),
            metadata_sha256: String::new(),
        }
    }

    #[test]
    fn metadata_checksum_covers_the_stored_bytes() {
        let json = metadata().to_checksummed_json();
        let parsed: BackupMetadata = serde_json::from_slice(&json).unwrap();
        assert!(BackupMetadata::checksum_matches(
            &json,
            &parsed.metadata_sha256
        ));
        let tampered = String::from_utf8(json.clone())
            .unwrap()
            .replace("23369675", "23369676");
        assert!(!BackupMetadata::checksum_matches(
            tampered.as_bytes(),
            &parsed.metadata_sha256
        ));
        assert!(!BackupMetadata::checksum_matches(&json, ""));
    }

    #[test]
    fn required_wal_spans_start_to_stop() {
        let mut m = metadata();
        m.stop_lsn = "0/4000010".into();
        assert_eq!(
            m.required_wal().unwrap(),
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004"
            ]
        );
    }

    #[test]
    fn plan_follows_postgres_exclusions() {
        let data = tempfile::tempdir().unwrap();
        let root = data.path();
        for dir in [
            "base/5",
            "global",
            "pg_wal/archive_status",
            "pg_wal/summaries",
            "pg_stat_tmp",
            "pg_replslot/slot",
            "pg_tblspc",
            "base/pgsql_tmp",
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "PG_VERSION",
            "global/pg_control",
            "base/5/1259",
            "base/5/16384",
            "base/5/16384_init",
            "base/5/16384_fsm",
            "base/5/16390",
            "base/5/16390.1",
            "base/5/pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp123.0",
            "pg_wal/000000010000000000000001",
            "pg_wal/summaries/0000000100000000010000280000000001000060.summary",
            "pg_stat_tmp/global.stat",
            "pg_replslot/slot/state",
            "postmaster.pid",
            "postmaster.opts",
            "backup_label",
            "sc_backup_recovery.key",
        ] {
            fs::write(root.join(file), b"x").unwrap();
        }
        let paths: Vec<String> = plan(root, &[])
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "PG_VERSION",
                "base",
                "base/5",
                "base/5/1259",
                "base/5/16384_init",
                "base/5/16390",
                "base/5/16390.1",
                "global",
                "global/pg_control",
                "pg_replslot",
                "pg_stat_tmp",
                "pg_tblspc",
                "pg_wal",
                "pg_wal/archive_status",
                "pg_wal/summaries",
            ]
        );
    }

    #[test]
    fn names_are_safe_keys() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T03:35:19Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            backup_name("postgres", "full", at),
            "postgres_full_20261124_033519"
        );
        assert_eq!(
            backup_name("../my db", "full", at),
            "my_db_full_20261124_033519"
        );
        assert_eq!(backup_name("", "full", at), "db_full_20261124_033519");
    }
}
