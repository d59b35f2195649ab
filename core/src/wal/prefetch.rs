//! WAL prefetch for recovery: `sc-backup wal-fetch` serves segments from a spool that a
//! background prefetcher fills with the segments after the one PostgreSQL asked for.
//!
//! PostgreSQL runs `restore_command` once per segment, serially, in the data directory. The
//! spool is `<data directory>/sc_backup_prefetch/`, used only while the directory is in
//! recovery (`recovery.signal` or `standby.signal`):
//!
//! ```text
//! sc_backup_prefetch/lock                      held (flock) by the one prefetcher
//! sc_backup_prefetch/requested                 "<segment> <segment size>": the newest request
//! sc_backup_prefetch/stop                      asks the prefetcher to exit (a sandbox's cleanup)
//! sc_backup_prefetch/served                    how many segments came from the spool
//! sc_backup_prefetch/repository                the repository the copies came from
//! sc_backup_prefetch/<segment>.<sha256 hex>    a verified copy, named with its content's digest
//! sc_backup_prefetch/.tmp-<segment>            being written
//! ```
//!
//! A spooled copy is never trusted: the prefetcher names it with the digest the repository
//! records for that segment, after verifying the download against it, and `wal-fetch` uses it
//! only when its content hashes to that name, checked at the moment it is used (a hit then needs
//! no request to the repository: that is the point on an object store). Anything else is
//! removed and the segment fetched directly, so a spool left by a crash, or damaged, costs a
//! download, never a wrong byte; a spool filled from another repository is emptied. A segment
//! the repository does not have is never remembered: the prefetcher asks again after a pause
//! (the end of the archive moves), and `wal-fetch` answers "not found" only from the repository
//! itself.
//!
//! The prefetcher keeps at most `depth` segments ahead of the newest request, removes those
//! PostgreSQL has passed (or of another timeline), and exits when recovery ends (the signal
//! files go; it then removes the spool), when the server stops, when asked to, or after a
//! minute without a new request (a paused recovery); the next `wal-fetch` starts it again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::codec::ExpectedDigest;
use crate::error::{Error, Result};
use crate::pg::layout::SPOOL_DIRECTORY;
use crate::pg::lsn::{segment_name, Lsn};
use crate::repository::Repository;
use crate::wal::{StoredWal, WalFileKind, WalFileName};

const LOCK: &str = "lock";
const REQUESTED: &str = "requested";
const STOP: &str = "stop";
const SERVED: &str = "served";
const REPOSITORY: &str = "repository";
const TEMPORARY_PREFIX: &str = ".tmp-";
/// Without a new request for this long (a recovery paused at its target, a standby with
/// nothing new), the prefetcher exits.
const IDLE_EXIT: Duration = Duration::from_secs(60);
/// Pause before asking again for a segment the repository did not have.
const END_OF_ARCHIVE_PAUSE: Duration = Duration::from_millis(500);

/// Segments the prefetcher keeps ahead by default: a local repository answers in
/// milliseconds, an object store's latency needs more in flight.
pub fn default_depth(object_store: bool) -> usize {
    if object_store {
        32
    } else {
        8
    }
}

/// Whether `data_directory` is a PostgreSQL data directory in archive recovery or standby.
pub fn in_recovery(data_directory: &Path) -> bool {
    data_directory.join("PG_VERSION").is_file()
        && (data_directory.join("recovery.signal").exists()
            || data_directory.join("standby.signal").exists())
}

/// The spool of one data directory.
pub struct Spool {
    data_directory: PathBuf,
    directory: PathBuf,
}

impl Spool {
    /// The spool of `data_directory`, created if needed; `None` unless it is in recovery (a
    /// `wal-fetch` run by hand elsewhere gets no spool).
    /// `repository` names the repository the segments come from: a spool filled from
    /// another one (the restore_command was changed) is emptied first.
    pub fn in_recovery(data_directory: &Path, repository: &str) -> Result<Option<Spool>> {
        if !in_recovery(data_directory) {
            return Ok(None);
        }
        let directory = data_directory.join(SPOOL_DIRECTORY);
        match fs::DirBuilder::new().mode(0o700).create(&directory) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create directory", directory.display(), e)),
        }
        let spool = Spool {
            data_directory: data_directory.to_path_buf(),
            directory,
        };
        let recorded = spool.directory.join(REPOSITORY);
        if fs::read_to_string(&recorded).ok().as_deref() != Some(repository) {
            for entry in spool.entries() {
                if ![LOCK, STOP].contains(&entry.as_str()) {
                    let _ = fs::remove_file(spool.directory.join(entry));
                }
            }
            fs::write(&recorded, repository)
                .map_err(|e| Error::io("write", recorded.display(), e))?;
        }
        Ok(Some(spool))
    }

    fn spooled_path(&self, segment: &str, stored: &StoredWal) -> PathBuf {
        self.directory
            .join(format!("{segment}.{}", stored.sha256.to_hex()))
    }

    /// Moves a spooled copy of segment `name` to `destination` when there is one whose content
    /// hashes to the digest in its name (the repository's digest, recorded by the prefetcher
    /// that downloaded and verified it); `false` when there is none. Copies that do not match
    /// are removed. No request to the repository: that is what makes a spooled segment cheap.
    pub fn take(&self, name: &WalFileName, destination: &Path) -> Result<bool> {
        let segment = name.as_str();
        let mut candidates: Vec<String> = self
            .entries()
            .into_iter()
            .filter(|entry| {
                entry
                    .strip_prefix(segment)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some_and(|digest| digest.len() == 64)
            })
            .collect();
        let Some(entry) = candidates.pop() else {
            return Ok(false);
        };
        for other in candidates {
            let _ = fs::remove_file(self.directory.join(other));
        }
        let wanted = self.directory.join(&entry);
        let digest = &entry[segment.len() + 1..];
        let mut file = match File::open(&wanted) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("open", wanted.display(), e)),
        };
        let mut hasher = Sha256::new();
        io::copy(&mut file, &mut hasher).map_err(|e| Error::io("read", wanted.display(), e))?;
        drop(file);
        if hex::encode(hasher.finalize()) != digest {
            let _ = fs::remove_file(&wanted);
            return Ok(false);
        }
        // Only the prefetcher writes spooled files, and never once they have their final
        // name: what was hashed is what is renamed.
        let moved = match fs::rename(&wanted, destination) {
            Ok(()) => Ok(true),
            // pg_wal on another file system: copy, as a direct fetch would write it.
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let copied = copy_file(&wanted, destination);
                let _ = fs::remove_file(&wanted);
                copied.map(|()| true)
            }
            Err(e) => Err(Error::io("rename", destination.display(), e)),
        };
        if moved.is_ok() {
            self.count_served();
        }
        moved
    }

    /// Counts a segment served from the spool (for operators and tests: the spool works).
    fn count_served(&self) {
        let path = self.directory.join(SERVED);
        let served: u64 = fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        let _ = fs::write(&path, format!("{}\n", served + 1));
    }

    /// Records the newest segment PostgreSQL asked for, which the prefetcher reads ahead of.
    pub fn note_request(&self, segment: &str, segment_size: u64) -> Result<()> {
        let path = self.directory.join(REQUESTED);
        let temporary = self
            .directory
            .join(format!("{TEMPORARY_PREFIX}{REQUESTED}"));
        fs::write(&temporary, format!("{segment} {segment_size}\n"))
            .and_then(|()| fs::rename(&temporary, &path))
            .map_err(|e| Error::io("write", path.display(), e))
    }

    /// Whether a prefetcher holds the spool's lock.
    pub fn prefetcher_running(&self) -> bool {
        match self.try_lock() {
            Ok(Some(lock)) => {
                drop(lock);
                false
            }
            _ => true,
        }
    }

    fn try_lock(&self) -> io::Result<Option<File>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.directory.join(LOCK))?;
        // Safety: flock on a descriptor we own; released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            Ok(Some(file))
        } else {
            Ok(None)
        }
    }

    fn entries(&self) -> Vec<String> {
        fs::read_dir(&self.directory)
            .map(|listing| {
                listing
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn requested(&self) -> Option<(String, u64)> {
        let text = fs::read_to_string(self.directory.join(REQUESTED)).ok()?;
        let (segment, size) = text.trim().split_once(' ')?;
        let size: u64 = size.parse().ok()?;
        let name = WalFileName::parse(segment).ok()?;
        (name.kind() == WalFileKind::Segment && size.is_power_of_two() && size >= 1 << 20)
            .then(|| (segment.to_string(), size))
    }

    /// Why the prefetcher should stop now, if it should.
    fn stop_reason(&self) -> Option<&'static str> {
        if !in_recovery(&self.data_directory) {
            Some("recovery ended")
        } else if !self.data_directory.join("postmaster.pid").exists() {
            Some("the server stopped")
        } else if self.directory.join(STOP).exists() || !self.directory.is_dir() {
            Some("asked to stop")
        } else {
            None
        }
    }

    /// The prefetcher: keeps up to `depth` verified segments ahead of PostgreSQL's newest
    /// request, with `workers` downloads at once, until a reason to stop (see the module's
    /// notes). Returns at once when another prefetcher holds the lock.
    pub fn prefetch(&self, repository: &Repository, depth: usize, workers: usize) -> Result<()> {
        let Some(_lock) = self
            .try_lock()
            .map_err(|e| Error::io("lock", self.directory.display(), e))?
        else {
            return Ok(());
        };
        for entry in self.entries() {
            if entry.starts_with(TEMPORARY_PREFIX)
                && entry != format!("{TEMPORARY_PREFIX}{REQUESTED}")
            {
                let _ = fs::remove_file(self.directory.join(entry));
            }
        }
        let mut last_request: Option<String> = None;
        let mut last_change = Instant::now();
        loop {
            if let Some(reason) = self.stop_reason() {
                if reason == "recovery ended" {
                    let _ = fs::remove_dir_all(&self.directory);
                }
                return Ok(());
            }
            let Some((requested, segment_size)) = self.requested() else {
                if last_change.elapsed() > IDLE_EXIT {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            if last_request.as_deref() != Some(requested.as_str()) {
                last_request = Some(requested.clone());
                last_change = Instant::now();
            } else if last_change.elapsed() > IDLE_EXIT {
                return Ok(());
            }
            let wanted = following_segments(&requested, segment_size, depth);
            let present = self.tidy(&wanted);
            let missing: Vec<&String> = wanted
                .iter()
                .filter(|segment| !present.contains(segment))
                .collect();
            if missing.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if !self.fetch_in_order(repository, &missing, workers)? {
                std::thread::sleep(END_OF_ARCHIVE_PAUSE);
            }
        }
    }

    /// Removes what is not wanted any more (segments passed, other timelines, beyond the
    /// window); returns the wanted segments already spooled.
    fn tidy(&self, wanted: &[String]) -> Vec<String> {
        let mut present = Vec::new();
        for entry in self.entries() {
            if [LOCK, REQUESTED, STOP, SERVED, REPOSITORY].contains(&entry.as_str())
                || entry.starts_with(TEMPORARY_PREFIX)
            {
                continue;
            }
            let segment = entry.split('.').next().unwrap_or("");
            if wanted.iter().any(|w| w == segment) {
                present.push(segment.to_string());
            } else {
                let _ = fs::remove_file(self.directory.join(&entry));
            }
        }
        present
    }

    /// Fetches `segments` (in order) into the spool with `workers` threads; `false` when the
    /// repository did not have one of them yet (those after it are left for the next round).
    fn fetch_in_order(
        &self,
        repository: &Repository,
        segments: &[&String],
        workers: usize,
    ) -> Result<bool> {
        let queue = Mutex::new(segments.iter());
        let ended = AtomicBool::new(false);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..workers.max(1) {
                scope.spawn(|| loop {
                    if ended.load(Ordering::SeqCst)
                        || failure.lock().unwrap().is_some()
                        || self.stop_reason().is_some()
                    {
                        return;
                    }
                    let Some(segment) = queue.lock().unwrap().next() else {
                        return;
                    };
                    match self.fetch_one(repository, segment) {
                        Ok(true) => {}
                        Ok(false) => ended.store(true, Ordering::SeqCst),
                        Err(e) => {
                            failure.lock().unwrap().get_or_insert(e);
                        }
                    }
                });
            }
        });
        if let Some(error) = failure.into_inner().unwrap() {
            return Err(error);
        }
        Ok(!ended.load(Ordering::SeqCst))
    }

    /// Downloads one segment, verified against the repository's digest, into the spool under
    /// its digest's name; `false` when the repository does not have it.
    fn fetch_one(&self, repository: &Repository, segment: &str) -> Result<bool> {
        let name = WalFileName::parse(segment)?;
        let Some(stored) = repository.find_wal(&name)? else {
            return Ok(false);
        };
        let temporary = self.directory.join(format!("{TEMPORARY_PREFIX}{segment}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| Error::io("create", temporary.display(), e))?;
        let written = repository.read_verified(
            &stored.key,
            stored.spec,
            ExpectedDigest::Decoded(stored.sha256),
            None,
            &mut file,
            &temporary.display().to_string(),
        );
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&temporary);
            return Err(e);
        }
        fs::rename(&temporary, self.spooled_path(segment, &stored))
            .map_err(|e| Error::io("rename", temporary.display(), e))?;
        Ok(true)
    }
}

/// Asks the prefetcher of `data_directory` to exit and waits (at most `patience`) until it
/// has: whoever removes a data directory must not race a writer in it.
pub fn stop_prefetcher(data_directory: &Path, patience: Duration) {
    let directory = data_directory.join(SPOOL_DIRECTORY);
    if !directory.is_dir() {
        return;
    }
    let _ = fs::write(directory.join(STOP), b"");
    let spool = Spool {
        data_directory: data_directory.to_path_buf(),
        directory,
    };
    let deadline = Instant::now() + patience;
    while spool.prefetcher_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `count` segments after `segment` on its timeline, for segments of `segment_size`.
pub fn following_segments(segment: &str, segment_size: u64, count: usize) -> Vec<String> {
    let parse = |range: std::ops::Range<usize>| u64::from_str_radix(&segment[range], 16).ok();
    let (Some(timeline), Some(high), Some(low)) = (parse(0..8), parse(8..16), parse(16..24)) else {
        return Vec::new();
    };
    let per_id = 0x1_0000_0000 / segment_size;
    let position = high * per_id + low;
    (1..=count as u64)
        .map(|ahead| {
            segment_name(
                timeline as u32,
                Lsn((position + ahead) * segment_size),
                segment_size,
            )
        })
        .collect()
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let temporary = to.with_file_name(format!(
        ".{}.sc_backup_prefetch",
        to.file_name().unwrap_or_default().to_string_lossy()
    ));
    let copied = (|| -> io::Result<()> {
        let mut source = File::open(from)?;
        let mut target = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = source.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            target.write_all(&buffer[..n])?;
        }
        drop(target);
        fs::rename(&temporary, to)
    })();
    copied.map_err(|e| {
        let _ = fs::remove_file(&temporary);
        Error::io("copy", to.display(), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn following_segments_cross_the_high_word() {
        assert_eq!(
            following_segments("0000000200000001000000FE", 16 << 20, 3),
            [
                "0000000200000001000000FF",
                "000000020000000200000000",
                "000000020000000200000001"
            ]
        );
        // 1 GiB segments: four per 4 GiB.
        assert_eq!(
            following_segments("000000010000000000000003", 1 << 30, 1),
            ["000000010000000100000000"]
        );
    }
}
