//! Storing a new backup: files streamed through the codec pipeline by worker threads, then the
//! manifest, then the metadata that makes the backup exist.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use super::manifest::FORMAT_VERSION;
use super::metadata::metadata_key;
use super::{
    backup_prefix, BackupMetadata, CatalogSnapshot, EntryType, Manifest, ManifestEntry,
    SourceEntry, SourceKind,
};
use crate::codec::{pump, EncodeSummary, Encoder, PumpError};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::wal::WalFileName;

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
