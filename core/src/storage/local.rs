//! A repository in a local (or mounted) directory.
//!
//! The durability rules are those of PostgreSQL's contrib/basic_archive: data is written under
//! a temporary name, fsync'd, then given its final name, and the directory is fsync'd, so that a
//! crash at any point leaves either no object or the complete one, never a torn one. The final
//! name is given with link(2) rather than rename(2): link refuses to replace an existing name,
//! which makes "never overwrite an archived object" atomic instead of a check-then-act race.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{validate_key, ExactLength, ObjectMeta, ObjectWriter, Storage, StorageError};

/// Files and directories are private to the PostgreSQL OS user.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Opens the repository directory, which must exist: sc_backup never creates the root, so
    /// that an unmounted volume's empty mount point is not silently filled.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        match fs::metadata(root) {
            Ok(meta) if meta.is_dir() => Ok(LocalStorage {
                root: root.to_path_buf(),
            }),
            Ok(_) => Err(io_error(
                "open repository directory",
                root,
                io::Error::other("not a directory"),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StorageError::MissingRoot(root.display().to_string()))
            }
            Err(e) => Err(io_error("open repository directory", root, e)),
        }
    }

    fn open_file(&self, key: &str, path: &Path) -> Result<File, StorageError> {
        File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound {
                store: self.describe(),
                key: key.to_string(),
            },
            _ => io_error("open", path, e),
        })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// Makes the entries of `dir` and of every directory above it, up to the root, durable:
    /// a directory found existing may be one a writer created and crashed before syncing its
    /// parent (the root itself is the operator's).
    fn make_path_durable(&self, dir: &Path) -> Result<(), StorageError> {
        let mut durable = DURABLE_DIRECTORIES
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut synced = Vec::new();
        let mut current = dir;
        while current != self.root && current.starts_with(&self.root) {
            if durable.iter().any(|known| known == current) {
                break;
            }
            let parent = current.parent().expect("below the root");
            fsync_dir(parent)?;
            synced.push(current.to_path_buf());
            current = parent;
        }
        // A handful of directories per repository; bounded all the same.
        if durable.len() + synced.len() > 4096 {
            durable.clear();
        }
        durable.extend(synced);
        Ok(())
    }

    /// Creates the missing directories of `dir` below the root, fsyncing each new entry's
    /// parent so the directory itself survives a crash.
    fn ensure_dir(&self, dir: &Path) -> Result<(), StorageError> {
        if dir.is_dir() {
            return Ok(());
        }
        let parent = dir.parent().expect("object directories lie below the root");
        self.ensure_dir(parent)?;
        match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
            Ok(()) => fsync_dir(parent),
            // A concurrent writer created it first: fine.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_error("create directory", dir, e)),
        }
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> StorageError {
    StorageError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    record_sync(dir);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync directory", dir, e))
}

fn fsync_file(file: &File, path: &Path) -> Result<(), StorageError> {
    record_sync(path);
    file.sync_all().map_err(|e| io_error("fsync", path, e))
}

/// Directories below a repository root whose entry, and every entry above it up to the root,
/// this process has fsynced: the first object committed into a directory syncs the path down
/// to it once, the next ones only their own directory.
static DURABLE_DIRECTORIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

// The fsyncs this thread made, for tests that show one happens (a crash cannot be staged in a
// unit test; the call that would survive it can be seen).
#[cfg(test)]
thread_local! {
    static SYNCED: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn record_sync(_path: &Path) {
    #[cfg(test)]
    SYNCED.with(|synced| synced.borrow_mut().push(_path.to_path_buf()));
}

/// What this thread fsynced since the last call.
#[cfg(test)]
pub(crate) fn take_synced() -> Vec<PathBuf> {
    SYNCED.with(|synced| std::mem::take(&mut *synced.borrow_mut()))
}

/// Unique temporary names: several writers (threads or processes) may work in one directory.
fn temporary_name(final_path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = final_path
        .file_name()
        .expect("keys have a file name")
        .to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    final_path.with_file_name(format!(
        ".{file_name}.tmp.{}.{}.{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

struct LocalObjectWriter {
    file: Option<BufWriter<File>>,
    root: PathBuf,
    temp_path: PathBuf,
    final_path: PathBuf,
    store: String,
    key: String,
}

impl Write for LocalObjectWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("writer is open").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("writer is open").flush()
    }
}

impl ObjectWriter for LocalObjectWriter {
    fn commit(self: Box<Self>) -> Result<(), StorageError> {
        (*self).commit_to_final_path()
    }

    fn commit_as(mut self: Box<Self>, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        let final_path = self.root.join(key);
        // The temporary file lives in the created key's directory: linking it elsewhere could
        // cross a mount point, and that directory is the one fsynced below.
        if final_path.parent() != self.final_path.parent() {
            return Err(StorageError::InvalidKey(format!(
                "{key} (not in the directory of {})",
                self.key
            )));
        }
        self.final_path = final_path;
        self.key = key.to_string();
        (*self).commit_to_final_path()
    }
}

impl LocalObjectWriter {
    fn commit_to_final_path(mut self) -> Result<(), StorageError> {
        let file = self.file.take().expect("commit is called once");
        let file = file
            .into_inner()
            .map_err(|e| io_error("write", &self.temp_path, e.into_error()))?;
        // The data must be on disk before the name points to it.
        fsync_file(&file, &self.temp_path)?;
        drop(file);
        let linked = fs::hard_link(&self.temp_path, &self.final_path);
        // Whatever happened, the temporary name goes; the data lives on under the final name.
        let _ = fs::remove_file(&self.temp_path);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StorageError::AlreadyExists {
                    store: self.store.clone(),
                    key: self.key.clone(),
                })
            }
            Err(e) => return Err(io_error("link", &self.final_path, e)),
        }
        // The new name must survive a crash before success is reported, and so must the
        // names of the directories leading to it.
        let directory = self
            .final_path
            .parent()
            .expect("objects have a parent directory");
        fsync_dir(directory)?;
        LocalStorage {
            root: self.root.clone(),
        }
        .make_path_durable(directory)
    }
}

impl Drop for LocalObjectWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Aborted: never committed, so nothing may remain.
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

impl Storage for LocalStorage {
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter + '_>, StorageError> {
        let final_path = self.path_of(key)?;
        self.ensure_dir(final_path.parent().expect("keys have a parent"))?;
        let temp_path = temporary_name(&final_path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temp_path)
            .map_err(|e| io_error("create", &temp_path, e))?;
        Ok(Box::new(LocalObjectWriter {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            root: self.root.clone(),
            temp_path,
            final_path,
            store: self.describe(),
            key: key.to_string(),
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        let path = self.path_of(key)?;
        Ok(Box::new(self.open_file(key, &path)?))
    }

    fn open_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        let path = self.path_of(key)?;
        let mut file = self.open_file(key, &path)?;
        file.seek(io::SeekFrom::Start(offset))
            .map_err(|e| io_error("seek", &path, e))?;
        Ok(Box::new(ExactLength::new(file, length)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        // Start at the deepest directory the prefix names, then filter by the full prefix.
        let dir_part = match prefix.rfind('/') {
            Some(pos) => &prefix[..pos],
            None => "",
        };
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            validate_key(dir_part)?;
            self.root.join(dir_part)
        };
        let mut found = Vec::new();
        let mut pending = vec![(start, dir_part.to_string())];
        while let Some((dir, key_prefix)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("list directory", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_error("list directory", &dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // in-flight temporary files are not objects
                }
                let key = if key_prefix.is_empty() {
                    name
                } else {
                    format!("{key_prefix}/{name}")
                };
                let file_type = entry
                    .file_type()
                    .map_err(|e| io_error("stat", &entry.path(), e))?;
                if file_type.is_dir() {
                    // Only descend where keys below may still match the prefix.
                    if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                        pending.push((entry.path(), key));
                    }
                } else if key.starts_with(prefix) {
                    let size = match entry.metadata() {
                        Ok(metadata) => metadata.len(),
                        // Deleted between readdir and stat (an expiry running meanwhile): an
                        // object that no longer exists is not listed, as on object stores.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_error("stat", &entry.path(), e)),
                    };
                    found.push(ObjectMeta { key, size });
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(path.parent().expect("objects have a parent directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn names_at_commit(&self) -> bool {
        true
    }

    fn is_local(&self) -> bool {
        true
    }

    fn persist(&self, key: &str) -> Result<(), StorageError> {
        // What commit does after linking: the file's data, its name, the path to it.
        let path = self.path_of(key)?;
        let file = self.open_file(key, &path)?;
        fsync_file(&file, &path)?;
        let directory = path.parent().expect("objects have a parent directory");
        fsync_dir(directory)?;
        self.make_path_durable(directory)
    }

    fn atomic_create(&self) -> bool {
        true // link(2) fails on an existing name
    }

    fn remove_abandoned(&self, older_than: std::time::Duration) -> Result<u64, StorageError> {
        let cutoff = std::time::SystemTime::now() - older_than;
        let mut removed = 0;
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("list directory", &dir, e)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(metadata) = entry.metadata() else {
                    continue;
                };
                if metadata.is_dir() {
                    pending.push(entry.path());
                } else if name.starts_with('.')
                    && name.contains(".tmp.")
                    && metadata.modified().is_ok_and(|modified| modified < cutoff)
                {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_error("remove", &entry.path(), e)),
                    }
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).unwrap();
        super::super::conformance::run_all(&store);
    }

    #[test]
    fn missing_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = LocalStorage::open(&dir.path().join("unmounted")).unwrap_err();
        assert!(matches!(err, StorageError::MissingRoot(_)));
        assert!(err.hint().unwrap().contains("does not create it"));
    }

    #[test]
    fn files_and_directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).unwrap();
        let mut writer = store.create("wal/0000000100000000/obj").unwrap();
        writer.write_all(b"x").unwrap();
        writer.commit().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("wal")), 0o700);
        assert_eq!(mode(&dir.path().join("wal/0000000100000000")), 0o700);
        assert_eq!(mode(&dir.path().join("wal/0000000100000000/obj")), 0o600);
    }

    /// A directory found existing may be one a crashed writer made without syncing its
    /// parent: the first commit into it syncs the entries on the way down from the root.
    #[test]
    fn a_directory_found_existing_has_its_entries_synced_at_the_first_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).unwrap();
        fs::create_dir_all(dir.path().join("wal/0000000100000000")).unwrap();
        take_synced();
        let mut writer = store.create("wal/0000000100000000/obj").unwrap();
        writer.write_all(b"x").unwrap();
        writer.commit().unwrap();
        let synced = take_synced();
        for expected in [
            dir.path().join("wal/0000000100000000"),
            dir.path().join("wal"),
            dir.path().to_path_buf(),
        ] {
            assert!(synced.contains(&expected), "{expected:?} not in {synced:?}");
        }
        // The next commit there syncs only its own directory.
        let mut writer = store.create("wal/0000000100000000/obj2").unwrap();
        writer.write_all(b"y").unwrap();
        writer.commit().unwrap();
        let synced = take_synced();
        assert!(!synced.contains(&dir.path().join("wal")), "{synced:?}");
    }

    #[test]
    fn abandoned_temporary_files_are_removed_only_when_old() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let mut writer = storage.create("backups/b/data/000001").unwrap();
        writer.write_all(b"half").unwrap();
        // A writer killed here leaves its temporary file.
        std::mem::forget(writer);
        let mut done = storage.create("backups/b/data/000002").unwrap();
        done.write_all(b"whole").unwrap();
        done.commit().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(storage.remove_abandoned(hour).unwrap(), 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let moment = std::time::Duration::from_millis(10);
        assert_eq!(storage.remove_abandoned(moment).unwrap(), 1);
        let left: Vec<_> = fs::read_dir(dir.path().join("backups/b/data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec!["000002".to_string()]);
    }

    #[test]
    fn no_temporary_file_survives_commit_or_abort() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStorage::open(dir.path()).unwrap();
        let mut committed = store.create("a/one").unwrap();
        committed.write_all(b"1").unwrap();
        committed.commit().unwrap();
        let mut aborted = store.create("a/two").unwrap();
        aborted.write_all(b"2").unwrap();
        drop(aborted);
        let mut refused = store.create("a/one").unwrap();
        refused.write_all(b"other").unwrap();
        assert!(matches!(
            refused.commit(),
            Err(StorageError::AlreadyExists { .. })
        ));
        let names: Vec<_> = fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["one".to_string()]);
    }
}
