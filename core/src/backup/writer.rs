//! Storing a new backup: files streamed through the codec pipeline by worker threads, then the
//! manifest, then the metadata that makes the backup exist.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::incremental::{database_directory, is_page_compared, pages_header, PageFilter};
use super::manifest::{
    Stored, BUNDLES_FORMAT_VERSION, FORMAT_VERSION, FULL_FORMAT_VERSION, INCREMENTAL_FORMAT_VERSION,
};
use super::metadata_key;
use super::{
    backup_prefix, read_manifest, read_metadata, BackupKind, BackupMetadata, BackupReport,
    BackupStatus, CatalogSnapshot, EntryType, Manifest, ManifestEntry, SourceEntry, SourceKind,
};
use crate::codec::{
    pump, DigestingWriter, EncodeSummary, Encoder, PumpError, RepositoryKey, Sha256Digest,
};
use crate::config::EncryptionMode;
use crate::error::{Error, Result};
use crate::pg::lsn::Lsn;
use crate::repository::record::PlaybookFields;
use crate::repository::Repository;
use crate::storage::ObjectWriter;
use crate::wal::WalFileName;

/// Streams files into a new backup. Nothing is visible until [`BackupWriter::finish`] writes
/// the metadata; [`BackupWriter::abort`] removes what was written.
pub struct BackupWriter<'r> {
    pub(super) repository: &'r Repository,
    name: String,
    /// For an incremental or differential backup: what it is taken against.
    parent: Option<ParentBase>,
    /// Where this writer's objects go under the backup's prefix: empty for a backup taken
    /// from the cluster; `copy-<attempt>/` for a copy from another repository, so that two
    /// copies of one backup never write the same object (see `copy`).
    pub(super) objects: String,
}

/// The parent of an incremental backup, as the writer compares files with it.
struct ParentBase {
    name: String,
    start_lsn: Lsn,
    block_size: u32,
    /// The parent's file entries by path.
    files: HashMap<String, ManifestEntry>,
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
            parent: None,
            objects: String::new(),
        })
    }

    /// A writer of a copy of `source`, a finished backup of another repository, into
    /// `repository`, its objects under `objects` (a prefix of this attempt's own). Unlike
    /// [`BackupWriter::new`], objects of an earlier attempt may be there: a copy interrupted
    /// before its metadata was written (see `copy`).
    pub(super) fn for_copy(
        repository: &'r Repository,
        source: &BackupMetadata,
        objects: String,
    ) -> Self {
        BackupWriter {
            repository,
            name: source.playbook.backup_name.clone(),
            // The files are not compared with the parent's: the copy's entries are the
            // source's, so only what `finish` checks of the parent is needed.
            parent: source.parent.as_ref().map(|parent| ParentBase {
                name: parent.clone(),
                start_lsn: Lsn(0),
                block_size: source.block_size,
                files: HashMap::new(),
            }),
            objects,
        }
    }

    /// A writer of an incremental or differential backup taken against `parent`: relation
    /// files keep only the pages changed since the parent's start, other files only when
    /// their content changed. `block_size` is the server's BLCKSZ.
    pub fn new_incremental(
        repository: &'r Repository,
        name: &str,
        parent: &BackupMetadata,
        block_size: u32,
    ) -> Result<Self> {
        let mut writer = BackupWriter::new(repository, name)?;
        let files = read_manifest(repository, parent)?
            .entries
            .into_iter()
            .filter(|e| e.entry_type == EntryType::File)
            .map(|e| (e.path.clone(), e))
            .collect();
        writer.parent = Some(ParentBase {
            name: parent.playbook.backup_name.clone(),
            start_lsn: parent.start_lsn,
            block_size,
            files,
        });
        Ok(writer)
    }

    /// The backup this one is taken against, if any.
    pub fn parent_name(&self) -> Option<&str> {
        self.parent.as_ref().map(|p| p.name.as_str())
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
                        stored_sha256: None,
                        object: None,
                        offset: None,
                        link_target: None,
                        stored: Stored::Whole,
                        pages: None,
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
                    stored_sha256: None,
                    object: None,
                    offset: None,
                    link_target: Some(target.clone()),
                    stored: Stored::Whole,
                    pages: None,
                }),
            }
        }
        // Largest first, so that a big relation segment does not start last and leave the
        // other workers idle while it is copied; the small files that go into bundles come
        // last, one after another.
        let mut files: Vec<(usize, SourceEntry, u64)> = files
            .into_iter()
            .map(|(index, entry)| {
                let size = fs::metadata(&entry.source).map(|m| m.len()).unwrap_or(0);
                (index, entry, size)
            })
            .collect();
        files.sort_by_key(|(_, _, size)| std::cmp::Reverse(*size));
        let recreated = self.recreated_databases(&files);
        let recreated = &recreated;
        let key = self.repository.key()?;
        let queue = Mutex::new(files.into_iter());
        let stop = AtomicBool::new(false);
        let bundles_opened = AtomicU32::new(0);
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
            let mut workers = Vec::new();
            for _ in 0..parallelism.max(1) {
                let results = results.clone();
                let (queue, stop, bundles_opened) = (&queue, &stop, &bundles_opened);
                // The caller is a PostgreSQL backend: its signals must reach its own thread.
                crate::util::threads::with_signals_blocked(|| {
                    workers.push(scope.spawn(move || -> Result<()> {
                        // Each worker fills its own bundle; one that fails is dropped (its
                        // upload discarded) and so is the backup.
                        let mut bundle = BundleSlot {
                            open: None,
                            opened: bundles_opened,
                        };
                        loop {
                            if stop.load(Ordering::SeqCst) {
                                return Ok(());
                            }
                            let Some((index, entry, size)) = queue.lock().unwrap().next() else {
                                break;
                            };
                            let slot = (size < BUNDLE_LIMIT).then_some(&mut bundle);
                            let result = self.store_file(index, &entry, key, recreated, slot);
                            if result.is_err() {
                                bundle.open = None;
                            }
                            if results.send(result).is_err() {
                                return Ok(());
                            }
                            if bundle
                                .open
                                .as_ref()
                                .is_some_and(|b| b.written >= BUNDLE_SIZE)
                            {
                                bundle
                                    .commit()
                                    .inspect_err(|_| stop.store(true, Ordering::SeqCst))?;
                            }
                        }
                        bundle
                            .commit()
                            .inspect_err(|_| stop.store(true, Ordering::SeqCst))
                    }))
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
            // A bundle is committed after its files were reported: the backup is stored only
            // once every worker committed its last one.
            for worker in workers {
                match worker.join() {
                    Ok(committed) => committed?,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Ok(())
        });
        outcome?;
        manifest.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(manifest)
    }

    /// Database directories whose `PG_VERSION` is not the parent's (same size and mtime): the
    /// database was created since (CREATE DATABASE ... STRATEGY file_copy, or ALTER DATABASE
    /// SET TABLESPACE, copies files whose page LSNs are old), so all of its files go whole.
    fn recreated_databases(&self, files: &[(usize, SourceEntry, u64)]) -> HashSet<String> {
        let Some(parent) = &self.parent else {
            return HashSet::new();
        };
        files
            .iter()
            .filter_map(|(_, entry, _)| {
                let directory = database_directory(&entry.path)?;
                if entry.path.strip_prefix(directory)? != "/PG_VERSION" {
                    return None;
                }
                let now = fs::metadata(&entry.source).ok();
                let same = parent.files.get(&entry.path).is_some_and(|previous| {
                    now.as_ref().is_some_and(|now| {
                        previous.mtime == now.mtime() && previous.size == Some(now.len())
                    })
                });
                (!same).then(|| directory.to_string())
            })
            .collect()
    }

    /// Stores one file, into `bundle` when given and the file is stored whole; `None` when it
    /// vanished before we could open it (PostgreSQL dropped the relation; WAL replay accounts
    /// for that).
    fn store_file(
        &self,
        index: usize,
        entry: &SourceEntry,
        key: Option<&RepositoryKey>,
        recreated: &HashSet<String>,
        bundle: Option<&mut BundleSlot<'_, 'r>>,
    ) -> Result<Option<ManifestEntry>> {
        let previous = self.parent.as_ref().and_then(|parent| {
            let in_recreated =
                database_directory(&entry.path).is_some_and(|d| recreated.contains(d));
            let previous = parent.files.get(&entry.path).filter(|_| !in_recreated)?;
            Some((parent, previous))
        });
        match previous {
            None => self.store_whole(index, entry, key, bundle),
            Some((parent, previous)) if is_page_compared(&entry.path) => {
                self.store_pages(index, entry, key, parent, previous)
            }
            Some((_, previous)) => {
                if let Some(unchanged) = unchanged_file(entry, previous)? {
                    return Ok(Some(unchanged));
                }
                self.store_whole(index, entry, key, bundle)
            }
        }
    }

    /// Stores the pages of a relation file that changed since the parent's start, or records
    /// the file as unchanged when none did and its length is the parent's.
    fn store_pages(
        &self,
        index: usize,
        entry: &SourceEntry,
        key: Option<&RepositoryKey>,
        parent: &ParentBase,
        previous: &ManifestEntry,
    ) -> Result<Option<ManifestEntry>> {
        let mut file = match File::open(&entry.source) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", entry.source.display(), e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("stat", entry.source.display(), e))?;
        let block_size = parent.block_size as usize;
        let filter = PageFilter {
            parent_start_lsn: parent.start_lsn,
            parent_blocks: previous.size.unwrap_or(0) / block_size as u64,
        };
        let spec = Encoder::<io::Sink>::spec(self.repository.compression(), key);
        let object = format!("{}data/{index:06}{}", self.objects, spec.suffix());
        let full_key = format!("{}{object}", backup_prefix(&self.name));
        let start = || -> Result<_> {
            let writer = self.repository.storage().create_unique(&full_key)?;
            let mut encoder = Encoder::new(
                DigestingWriter::new(writer),
                self.repository.compression(),
                key,
            )
            .map_err(|e| Error::io("encode", &full_key, e))?;
            encoder
                .write_all(&pages_header(parent.block_size))
                .map_err(|e| Error::io("write", &full_key, e))?;
            Ok(encoder)
        };
        // Pages are checked where they were read, 128 at a time: the scan of unchanged pages,
        // most of an incremental backup's work, costs one read and no copy.
        let mut chunk = vec![0u8; PAGES_PER_READ * block_size];
        let mut encoder = None;
        let (mut blocks, mut pages) = (0u64, 0u64);
        // Whole pages to the end, whatever the size was when listed: a torn or partly written
        // last page belongs to a change after our start, which WAL replay redoes (PostgreSQL
        // itself counts whole pages only, mdnblocks).
        loop {
            let filled = read_full(&mut file, &mut chunk)
                .map_err(|e| Error::io("read", entry.source.display(), e))?;
            for page in chunk[..filled - filled % block_size].chunks_exact(block_size) {
                if filter.must_store(blocks, page) {
                    if encoder.is_none() {
                        encoder = Some(start()?);
                    }
                    let encoder = encoder.as_mut().expect("started");
                    let block = u32::try_from(blocks).map_err(|_| Error::InvalidMetadata {
                        object: entry.path.clone(),
                        reason: "more pages than a relation segment can hold".into(),
                    })?;
                    encoder
                        .write_all(&block.to_le_bytes())
                        .and_then(|()| encoder.write_all(page))
                        .map_err(|e| Error::io("write", &full_key, e))?;
                    pages += 1;
                }
                blocks += 1;
            }
            if filled < chunk.len() {
                break;
            }
        }
        let size = blocks * block_size as u64;
        let mut stored = ManifestEntry {
            path: entry.path.clone(),
            entry_type: EntryType::File,
            mode: meta.permissions().mode() & 0o7777,
            mtime: meta.mtime(),
            size: Some(size),
            sha256: previous.sha256.clone(),
            stored_size: None,
            stored_sha256: None,
            object: None,
            offset: None,
            link_target: None,
            stored: Stored::Unchanged,
            pages: None,
        };
        if encoder.is_none() && previous.size == Some(size) {
            return Ok(Some(stored));
        }
        let encoder = match encoder {
            Some(encoder) => encoder,
            // Shorter than the parent's copy, nothing else changed: an empty page stream.
            None => start()?,
        };
        let (digesting, summary) = encoder
            .finish()
            .map_err(|e| Error::io("write", &full_key, e))?;
        let (writer, stored_sha256, _) = digesting.finish();
        writer.commit()?;
        // Read back by the digest of its stored bytes; nothing compares a page stream's
        // content with another's.
        stored.sha256 = None;
        stored.stored_size = Some(summary.stored_size);
        stored.stored_sha256 = Some(stored_sha256.to_hex());
        stored.object = Some(object);
        stored.stored = Stored::Pages;
        stored.pages = Some(pages);
        Ok(Some(stored))
    }

    /// Stores a whole file: in its own object, or appended to `bundle`.
    fn store_whole(
        &self,
        index: usize,
        entry: &SourceEntry,
        key: Option<&RepositoryKey>,
        bundle: Option<&mut BundleSlot<'_, 'r>>,
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
        // A later incremental backup compares a file whole with this copy by the SHA-256 of
        // its content, so that digest is taken, except for relation main and init forks:
        // those are compared page by page by LSN, and read back by the digest of their stored
        // bytes, so hashing their content (as costly as compressing it, and most of the
        // backup's bytes) would serve nothing.
        let digest_original = !is_page_compared(&entry.path);
        let stored = |object: String, offset: Option<u64>, encoded: EncodedObject| {
            Some(ManifestEntry {
                path: entry.path.clone(),
                entry_type: EntryType::File,
                mode: meta.permissions().mode() & 0o7777,
                mtime: meta.mtime(),
                size: Some(encoded.summary.original_size),
                sha256: encoded.original_sha256.map(|digest| digest.to_hex()),
                stored_size: Some(encoded.summary.stored_size),
                stored_sha256: Some(encoded.stored_sha256.to_hex()),
                object: Some(object),
                offset,
                link_target: None,
                stored: Stored::Whole,
                pages: None,
            })
        };
        if let Some(slot) = bundle {
            let bundle = slot.get_or_open(self, &spec.suffix())?;
            let offset = bundle.written;
            // Each file is encoded on its own (a zstd frame, an age stream), so that a ranged
            // read of its bytes decodes it alone.
            let (_, encoded) = self
                .encode_object(&mut file, &mut bundle.writer, key, digest_original)
                .map_err(|e| match e {
                    PumpError::Read(e) => Error::io("read", entry.source.display(), e),
                    PumpError::Write(e) => Error::io("write", &bundle.key, e),
                })?;
            bundle.written += encoded.summary.stored_size;
            return Ok(stored(bundle.object.clone(), Some(offset), encoded));
        }
        let object = format!("{}data/{index:06}{}", self.objects, spec.suffix());
        let full_key = format!("{}{object}", backup_prefix(&self.name));
        let writer = self.repository.storage().create_unique(&full_key)?;
        // Read to the end, whatever the size was when listed: a file may grow or shrink while
        // PostgreSQL runs; torn pages are repaired by WAL replay (full_page_writes is forced on
        // during a backup).
        let (writer, encoded) = self
            .encode_object(&mut file, writer, key, digest_original)
            .map_err(|e| match e {
                PumpError::Read(e) => Error::io("read", entry.source.display(), e),
                PumpError::Write(e) => Error::io("write", &full_key, e),
            })?;
        writer.commit()?;
        Ok(stored(object, None, encoded))
    }

    /// Encodes everything `source` yields into `sink`, taking the SHA-256 of the stored bytes
    /// (what a read checks) and, when `digest_original`, of the original ones.
    fn encode_object<W: Write>(
        &self,
        source: &mut dyn Read,
        sink: W,
        key: Option<&RepositoryKey>,
        digest_original: bool,
    ) -> std::result::Result<(W, EncodedObject), PumpError> {
        let encoder = Encoder::new(
            DigestingWriter::new(sink),
            self.repository.compression(),
            key,
        )
        .map_err(PumpError::Write)?;
        let (encoder, original_sha256) = if digest_original {
            let mut original = DigestingWriter::new(encoder);
            pump(source, &mut original)?;
            let (encoder, digest, _) = original.finish();
            (encoder, Some(digest))
        } else {
            let mut encoder = encoder;
            pump(source, &mut encoder)?;
            (encoder, None)
        };
        let (digesting, summary) = encoder.finish().map_err(PumpError::Write)?;
        let (sink, stored_sha256, _) = digesting.finish();
        Ok((
            sink,
            EncodedObject {
                summary,
                original_sha256,
                stored_sha256,
            },
        ))
    }

    /// Stores a file produced in memory (backup_label, tablespace_map) under `path`.
    pub fn store_bytes(&self, path: &str, content: &[u8]) -> Result<ManifestEntry> {
        // Object names are dot-free before their codec suffix (`data/postgresql_conf.zst`).
        let base = path.replace(['.', '/'], "_");
        let (object, encoded, original_sha256) =
            self.store_document(&format!("data/{base}"), content)?;
        Ok(ManifestEntry {
            path: path.to_string(),
            entry_type: EntryType::File,
            mode: 0o600,
            mtime: chrono::Utc::now().timestamp(),
            size: Some(encoded.summary.original_size),
            sha256: Some(original_sha256.to_hex()),
            stored_size: Some(encoded.summary.stored_size),
            stored_sha256: Some(encoded.stored_sha256.to_hex()),
            object: Some(object),
            offset: None,
            link_target: None,
            stored: Stored::Whole,
            pages: None,
        })
    }

    /// Encodes `content` into the backup's object `base` (plus the codec suffix); returns the
    /// object's name, what was encoded and the SHA-256 of `content`.
    fn store_document(
        &self,
        base: &str,
        content: &[u8],
    ) -> Result<(String, EncodedObject, Sha256Digest)> {
        let key = self.repository.key()?;
        let spec = Encoder::<io::Sink>::spec(self.repository.compression(), key);
        let object = format!("{}{base}{}", self.objects, spec.suffix());
        let full_key = format!("{}{object}", backup_prefix(&self.name));
        let writer = self.repository.storage().create_unique(&full_key)?;
        let (writer, encoded) = self
            .encode_object(&mut &content[..], writer, key, false)
            .map_err(|e| match e {
                PumpError::Read(e) => Error::io("read", "memory", e),
                PumpError::Write(e) => Error::io("write", &full_key, e),
            })?;
        writer.commit()?;
        let original_sha256 = Sha256Digest(Sha256::digest(content).into());
        Ok((object, encoded, original_sha256))
    }

    /// Writes the manifest (and the catalog snapshot, if taken), checks that the WAL the
    /// backup needs is archived, then writes the metadata: from that moment the backup is
    /// listed.
    pub fn finish(
        &self,
        entries: Vec<ManifestEntry>,
        catalog: Option<&CatalogSnapshot>,
        report: BackupReport,
    ) -> Result<BackupMetadata> {
        let key = self.repository.key()?;
        let spec = Encoder::<io::Sink>::spec(self.repository.compression(), key);
        // The oldest format that says it all, so that older readers restore what they can.
        let format = if entries
            .iter()
            .any(|e| e.entry_type == EntryType::File && e.object.is_some() && e.sha256.is_none())
        {
            FORMAT_VERSION
        } else if entries.iter().any(|e| e.offset.is_some()) {
            BUNDLES_FORMAT_VERSION
        } else if self.parent.is_some() {
            INCREMENTAL_FORMAT_VERSION
        } else {
            FULL_FORMAT_VERSION
        };
        let manifest = Manifest {
            format,
            backup_name: self.name.clone(),
            entries,
        };
        let json = serde_json::to_vec(&manifest).expect("manifest serializes");
        let (manifest_object, manifest_encoded, manifest_sha256) =
            self.store_document("manifest", &json)?;
        let (mut catalog_object, mut catalog_checksum, mut catalog_stored) =
            (String::new(), String::new(), 0);
        if let Some(catalog) = catalog {
            let json = serde_json::to_vec(catalog).expect("catalog serializes");
            let (object, catalog_encoded, catalog_sha256) =
                self.store_document("catalog", &json)?;
            catalog_object = object;
            catalog_checksum = format!("sha256:{}", catalog_sha256.to_hex());
            catalog_stored = catalog_encoded.summary.stored_size;
        }

        let files = manifest
            .entries
            .iter()
            .filter(|e| e.entry_type == EntryType::File);
        let metadata = BackupMetadata {
            playbook: PlaybookFields {
                backup_name: self.name.clone(),
                backup_type: report.backup_type,
                database: report.database,
                host: report.host,
                size_bytes: files.clone().filter_map(|e| e.size).sum(),
                checksum: format!("sha256:{}", manifest_sha256.to_hex()),
                compression: spec.compression,
                encryption: EncryptionMode::of(spec.encrypted),
                duration_seconds: report.duration_seconds,
                start_time: report.start_time,
                stop_time: report.stop_time,
            },
            format,
            stored_bytes: files.clone().filter_map(|e| e.stored_size).sum::<u64>()
                + manifest_encoded.summary.stored_size
                + catalog_stored,
            start_lsn: report.start_lsn,
            stop_lsn: report.stop_lsn,
            timeline: report.timeline,
            pg_version_num: report.pg_version_num,
            system_identifier: report.system_identifier,
            wal_segment_size: report.wal_segment_size,
            file_count: files.count() as u64,
            manifest: manifest_object,
            catalog: catalog_object,
            catalog_checksum,
            status: BackupStatus::Complete,
            parent: self.parent_name().map(str::to_string),
            // What a writer with a parent takes is what its caller asked for; without one,
            // everything.
            method: match (&self.parent, report.method) {
                (Some(_), BackupKind::Differential) => BackupKind::Differential,
                (Some(_), _) => BackupKind::Incremental,
                (None, _) => BackupKind::Full,
            },
            block_size: self.parent.as_ref().map_or(0, |p| p.block_size),
            metadata_sha256: String::new(),
        };

        for wal_file in metadata.required_wal() {
            if self
                .repository
                .find_wal(&WalFileName::parse(&wal_file)?)?
                .is_none()
            {
                return Err(Error::WalNotFound(wal_file));
            }
        }
        if let Some(parent) = &self.parent {
            // Refused early when the parent is already gone; after committing it is checked
            // again (below), which is what closes the race with its removal.
            self.check_parent(parent)?;
        }
        let mut json = metadata.to_checksummed_json();
        if let Some(key) = self.repository.key()? {
            json = crate::codec::authentication::seal(key, &metadata_key(&self.name), &json);
        }
        let mut writer = self
            .repository
            .storage()
            .create(&metadata_key(&self.name))?;
        writer
            .write_all(&json)
            .map_err(|e| Error::io("write", metadata_key(&self.name), e))?;
        match writer.commit() {
            Ok(()) => {}
            // An expiry claimed this unfinished backup first (retention::expire).
            Err(crate::storage::StorageError::AlreadyExists { .. }) => {
                return Err(Error::InvalidMetadata {
                    object: metadata_key(&self.name),
                    reason: "an expiry removed this backup while it was being taken (it was listed as unfinished); take it again".into(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(parent) = &self.parent {
            // A removal of the parent lists its dependents only after deleting the parent's
            // metadata: if the metadata is still there now, that listing will see this
            // backup and keep the parent; if it is gone, that listing may already have run,
            // and this backup withdraws (backup::delete::remove_backup).
            if let Err(error) = self.check_parent(parent) {
                let _ = self.repository.storage().delete(&metadata_key(&self.name));
                return Err(error);
            }
        }
        Ok(metadata)
    }

    /// The parent of an incremental backup is still listed.
    fn check_parent(&self, parent: &ParentBase) -> Result<()> {
        read_metadata(self.repository, &parent.name)
            .map(|_| ())
            .map_err(|e| Error::BrokenChain {
                backup: self.name.clone(),
                parent: parent.name.clone(),
                reason: format!("could not be read when this backup finished: {e}"),
            })
    }

    /// Removes everything this backup wrote (best effort: an abort must not fail).
    pub fn abort(&self) {
        delete_prefix(
            self.repository,
            &format!("{}{}", backup_prefix(&self.name), self.objects),
        );
    }
}

/// What encoding one object (or a file's part of a bundle) recorded.
struct EncodedObject {
    summary: EncodeSummary,
    /// Of the original bytes, when asked for.
    original_sha256: Option<Sha256Digest>,
    /// Of the stored bytes: what a read checks.
    stored_sha256: Sha256Digest,
}

fn delete_prefix(repository: &Repository, prefix: &str) {
    if let Ok(objects) = repository.storage().list(prefix) {
        for object in objects {
            let _ = repository.storage().delete(&object.key);
        }
    }
}

/// Files smaller than this (when listed) are stored in bundles rather than an object each: a
/// data directory holds hundreds of catalog files, FSM and VM forks and SLRU segments of a few
/// KiB, and on an object store each object costs a request (and its latency) to write and to
/// read back. pgBackRest's `bundle-limit` default is the same.
const BUNDLE_LIMIT: u64 = 2 << 20;

/// A bundle is committed, and the worker starts a new one, once it holds this much: large
/// enough to make its requests few, small enough that a restore spreads bundles over its
/// workers (pgBackRest's `bundle-size` default).
const BUNDLE_SIZE: u64 = 20 << 20;

/// A worker's bundle of small files being written: files are appended, each encoded on its
/// own, and the entries say where (`offset`, `stored_size`).
struct Bundle<'s> {
    /// Object name relative to the backup's prefix, as manifest entries name it.
    object: String,
    /// Full key, for messages.
    key: String,
    writer: Box<dyn ObjectWriter + 's>,
    written: u64,
}

/// The bundle a worker is filling, if any; `opened` numbers bundles across workers.
struct BundleSlot<'a, 's> {
    open: Option<Bundle<'s>>,
    opened: &'a AtomicU32,
}

impl<'s> BundleSlot<'_, 's> {
    fn get_or_open(&mut self, writer: &BackupWriter<'s>, suffix: &str) -> Result<&mut Bundle<'s>> {
        if self.open.is_none() {
            let number = self.opened.fetch_add(1, Ordering::Relaxed) + 1;
            let object = format!("{}bundle/{number:06}{suffix}", writer.objects);
            let key = format!("{}{object}", backup_prefix(&writer.name));
            let storage = writer.repository.storage();
            self.open = Some(Bundle {
                writer: storage.create_unique(&key)?,
                object,
                key,
                written: 0,
            });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// Makes the open bundle durable, if there is one.
    fn commit(&mut self) -> Result<()> {
        match self.open.take() {
            Some(bundle) => Ok(bundle.writer.commit()?),
            None => Ok(()),
        }
    }
}

/// Pages read at once when comparing a relation file page by page (1 MiB of 8 KiB pages).
const PAGES_PER_READ: usize = 128;

/// Fills `buffer` from `reader` until it is full or the file ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The entry of a file whose content is the parent's (same length and SHA-256), else `None`.
/// The file is read once here and again if it is stored: only files that are not compared
/// page by page come here, and they are small (the SLRUs, pg_filenode.map, the FSM and VM).
fn unchanged_file(entry: &SourceEntry, previous: &ManifestEntry) -> Result<Option<ManifestEntry>> {
    let file = match File::open(&entry.source) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", entry.source.display(), e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("stat", entry.source.display(), e))?;
    if previous.size != Some(meta.len()) {
        return Ok(None);
    }
    let mut hasher = Sha256::new();
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let size = io::copy(&mut reader, &mut hasher)
        .map_err(|e| Error::io("read", entry.source.display(), e))?;
    let digest = hex::encode(hasher.finalize());
    if Some(size) != previous.size || previous.sha256.as_deref() != Some(digest.as_str()) {
        return Ok(None);
    }
    Ok(Some(ManifestEntry {
        path: entry.path.clone(),
        entry_type: EntryType::File,
        mode: meta.permissions().mode() & 0o7777,
        mtime: meta.mtime(),
        size: Some(size),
        sha256: Some(digest),
        stored_size: None,
        stored_sha256: None,
        object: None,
        offset: None,
        link_target: None,
        stored: Stored::Unchanged,
        pages: None,
    }))
}
