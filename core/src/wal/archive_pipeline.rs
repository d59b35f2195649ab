//! Look-ahead WAL archiving: compress, encrypt and store the next segments on worker threads
//! while PostgreSQL's archiver is still busy with the current one.
//!
//! PostgreSQL's archiver hands an archive module one file at a time and waits for the answer,
//! so a module that does the work inside the callback is limited to one core and pays every
//! fsync or object-store round trip in series. Like pgBackRest's asynchronous archive-push,
//! the pipeline reads `pg_wal/archive_status/*.ready` (the archiver's own to-do list) and
//! starts on the files PostgreSQL will ask for next. When the callback comes for a file, it
//! waits only for that file's result, which usually is ready already.
//!
//! What keeps this safe:
//! - A file is reported archived only once *its own* object is durable: a worker's result is
//!   [`Repository::archive_wal`]'s, which returns after the commit (fsync + rename, or a
//!   completed PUT). Nothing is reported for files PostgreSQL has not asked about.
//! - A `.ready` file's WAL is final: PostgreSQL creates it after the segment is complete and
//!   never recycles the segment before the callback succeeded. Objects are named by their
//!   SHA-256, so a file archived early and asked for later is the same object.
//! - A failed look-ahead is not trusted: the callback runs the file again and reports that
//!   attempt's outcome, so a transient error never surfaces without a fresh try.
//! - Results nobody will ask for (their `.ready` is gone) are dropped at the next scan, and
//!   at most `look_ahead` files are in flight or waiting: memory stays bounded.
//! - The workers never call into PostgreSQL; they are spawned with every signal blocked so
//!   the host's signal handlers only ever run on its own thread.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::Result;
use crate::repository::Repository;
use crate::wal::{ArchiveOutcome, WalFileKind, WalFileName};

struct Job {
    name: String,
    path: PathBuf,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Job>,
    running: HashSet<String>,
    finished: HashMap<String, Result<ArchiveOutcome>>,
    shutting_down: bool,
}

impl Queue {
    fn knows(&self, name: &str) -> bool {
        self.running.contains(name)
            || self.finished.contains_key(name)
            || self.pending.iter().any(|job| job.name == name)
    }

    fn in_flight(&self) -> usize {
        self.pending.len() + self.running.len() + self.finished.len()
    }
}

struct Shared {
    repository: Repository,
    queue: Mutex<Queue>,
    /// Signalled when a job is queued or shutdown begins.
    work_available: Condvar,
    /// Signalled when a job finishes.
    job_finished: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A worker that panicked mid-job left the queue consistent (its job is simply never
        // finished; the callback that waits for it runs it itself, see `archive`).
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Archives WAL files for PostgreSQL's archiver with `workers` threads looking ahead.
pub struct ArchivePipeline {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// `pg_wal`, where the segments and `archive_status/` are.
    wal_directory: PathBuf,
    look_ahead: usize,
}

impl ArchivePipeline {
    /// Starts `workers` threads (at least one) that archive into `repository` the files listed
    /// in `wal_directory/archive_status` as ready, up to twice as many files ahead.
    pub fn start(
        repository: Repository,
        wal_directory: impl Into<PathBuf>,
        workers: usize,
    ) -> std::io::Result<ArchivePipeline> {
        let workers = workers.max(1);
        let shared = Arc::new(Shared {
            repository,
            queue: Mutex::new(Queue::default()),
            work_available: Condvar::new(),
            job_finished: Condvar::new(),
        });
        let mut pipeline = ArchivePipeline {
            shared,
            workers: Vec::with_capacity(workers),
            wal_directory: wal_directory.into(),
            look_ahead: 2 * workers,
        };
        for index in 0..workers {
            let shared = Arc::clone(&pipeline.shared);
            let handle = crate::util::threads::spawn_without_signals(
                format!("sc_backup archive {index}"),
                move || work(&shared),
            )?;
            pipeline.workers.push(handle);
        }
        Ok(pipeline)
    }

    pub fn repository(&self) -> &Repository {
        &self.shared.repository
    }

    /// Archives `name` (at `path`) and returns once its object is durable, queueing the next
    /// ready files for the workers on the way.
    pub fn archive(&self, name: &str, path: &Path) -> Result<ArchiveOutcome> {
        let upcoming = self.ready_files(name);
        let mut queue = self.shared.lock();
        // A failed look-ahead attempt is dropped here: this call makes a fresh one.
        if let Some(Ok(outcome)) = queue.finished.remove(name) {
            self.queue_upcoming(&mut queue, &upcoming);
            return Ok(outcome);
        }
        if !queue.knows(name) {
            queue.pending.push_front(Job {
                name: name.to_string(),
                path: path.to_path_buf(),
            });
            self.shared.work_available.notify_one();
        }
        self.queue_upcoming(&mut queue, &upcoming);
        loop {
            if let Some(result) = queue.finished.remove(name) {
                return result;
            }
            if !queue.knows(name) || self.workers.iter().all(|w| w.is_finished()) {
                // Its worker died (a panic), or there are no workers left: do it here.
                drop(queue);
                return self.shared.repository.archive_wal(path, name);
            }
            queue = self
                .shared
                .job_finished
                .wait(queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// The ready files after `current`, in the order PostgreSQL's archiver takes them, at most
    /// `look_ahead` of them. Read before taking the lock: a directory scan may be slow.
    fn ready_files(&self, current: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.wal_directory.join("archive_status")) else {
            return Vec::new();
        };
        let mut ready: Vec<(u8, String)> = entries
            .filter_map(|entry| {
                let file_name = entry.ok()?.file_name().into_string().ok()?;
                let name = file_name.strip_suffix(".ready")?;
                let parsed = WalFileName::parse(name).ok()?;
                // History files first, then oldest first, as pgarch_readyXlog does.
                let rank = u8::from(parsed.kind() != WalFileKind::History);
                Some((rank, name.to_string()))
            })
            .filter(|(_, name)| name != current)
            .collect();
        ready.sort_unstable();
        ready.truncate(self.look_ahead * 4);
        ready.into_iter().map(|(_, name)| name).collect()
    }

    fn queue_upcoming(&self, queue: &mut Queue, upcoming: &[String]) {
        // Results whose `.ready` is gone will never be asked for.
        queue
            .finished
            .retain(|name, _| upcoming.iter().any(|ready| ready == name));
        for name in upcoming {
            if queue.in_flight() >= self.look_ahead {
                break;
            }
            if queue.knows(name) {
                continue;
            }
            queue.pending.push_back(Job {
                name: name.clone(),
                path: self.wal_directory.join(name),
            });
            self.shared.work_available.notify_one();
        }
    }
}

impl Drop for ArchivePipeline {
    /// Lets running jobs finish (their objects are either committed or discarded), then stops.
    fn drop(&mut self) {
        {
            let mut queue = self.shared.lock();
            queue.shutting_down = true;
            queue.pending.clear();
        }
        self.shared.work_available.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn work(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if queue.shutting_down {
                    return;
                }
                if let Some(job) = queue.pending.pop_front() {
                    queue.running.insert(job.name.clone());
                    break job;
                }
                queue = shared
                    .work_available
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shared.repository.archive_wal(&job.path, &job.name)
        }));
        let mut queue = shared.lock();
        queue.running.remove(&job.name);
        // After a panic the job is forgotten: the callback, finding it unknown, archives the
        // file itself.
        if let Ok(result) = outcome {
            queue.finished.insert(job.name, result);
        }
        drop(queue);
        shared.job_finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawSettings, Settings};
    use crate::repository::ClusterIdentity;
    use std::fs;

    fn repository(dir: &Path) -> Repository {
        fs::create_dir_all(dir).unwrap();
        let settings = Settings::from_raw(&RawSettings {
            repository: Some(dir.display().to_string()),
            compression: Some("zstd".into()),
            ..RawSettings::default()
        })
        .unwrap();
        Repository::open_for_cluster(
            &settings,
            &ClusterIdentity {
                system_identifier: 7,
                pg_version_num: 150000,
            },
        )
        .unwrap()
    }

    /// A pg_wal directory with `count` ready segments of distinct content.
    fn pg_wal(dir: &Path, count: u32) -> Vec<String> {
        fs::create_dir_all(dir.join("archive_status")).unwrap();
        (1..=count)
            .map(|n| {
                let name = format!("0000000100000000{n:08X}");
                let content: Vec<u8> = (0..64 * 1024u32)
                    .map(|i| (i.wrapping_mul(n) >> 3) as u8)
                    .collect();
                fs::write(dir.join(&name), content).unwrap();
                fs::write(
                    dir.join("archive_status").join(format!("{name}.ready")),
                    b"",
                )
                .unwrap();
                name
            })
            .collect()
    }

    /// Plays PostgreSQL's archiver: one file at a time, `.ready` renamed to `.done` on success.
    fn archive_all(pipeline: &ArchivePipeline, wal: &Path, names: &[String]) {
        for name in names {
            let outcome = pipeline.archive(name, &wal.join(name)).unwrap();
            assert!(
                matches!(outcome, ArchiveOutcome::Stored(_)),
                "{name}: {outcome:?}"
            );
            let status = wal.join("archive_status");
            fs::rename(
                status.join(format!("{name}.ready")),
                status.join(format!("{name}.done")),
            )
            .unwrap();
        }
    }

    #[test]
    fn archives_every_file_exactly_once_and_fetches_identical() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("pg_wal");
        let names = pg_wal(&wal, 12);
        let repo_dir = dir.path().join("repo");
        let pipeline = ArchivePipeline::start(repository(&repo_dir), &wal, 2).unwrap();
        archive_all(&pipeline, &wal, &names);
        for name in &names {
            let fetched = dir.path().join("fetched");
            pipeline.repository().fetch_wal(name, &fetched).unwrap();
            assert_eq!(
                fs::read(&fetched).unwrap(),
                fs::read(wal.join(name)).unwrap()
            );
        }
        let queue = pipeline.shared.lock();
        assert_eq!(queue.in_flight(), 0, "nothing left behind");
    }

    #[test]
    fn a_failed_look_ahead_is_retried_by_the_callback() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("pg_wal");
        let names = pg_wal(&wal, 3);
        // The second file is unreadable while the first is archived: its look-ahead fails.
        let second = wal.join(&names[1]);
        let content = fs::read(&second).unwrap();
        fs::remove_file(&second).unwrap();
        let pipeline =
            ArchivePipeline::start(repository(&dir.path().join("repo")), &wal, 1).unwrap();
        pipeline.archive(&names[0], &wal.join(&names[0])).unwrap();
        // Wait for the look-ahead of the second to have failed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !matches!(pipeline.shared.lock().finished.get(&names[1]), Some(Err(_))) {
            assert!(std::time::Instant::now() < deadline, "look-ahead never ran");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        fs::write(&second, &content).unwrap();
        let outcome = pipeline.archive(&names[1], &second).unwrap();
        assert!(matches!(outcome, ArchiveOutcome::Stored(_)));
    }

    #[test]
    fn results_nobody_asks_for_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("pg_wal");
        let names = pg_wal(&wal, 4);
        let pipeline =
            ArchivePipeline::start(repository(&dir.path().join("repo")), &wal, 2).unwrap();
        pipeline.archive(&names[0], &wal.join(&names[0])).unwrap();
        // Someone removed the other .ready files (the segments were dealt with elsewhere).
        for name in &names {
            let _ = fs::remove_file(wal.join("archive_status").join(format!("{name}.ready")));
        }
        // Until the look-ahead jobs are done (their results waiting, nobody asking).
        {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let mut queue = pipeline.shared.lock();
            while !(queue.pending.is_empty() && queue.running.is_empty()) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "look-ahead never finished"
                );
                queue = pipeline
                    .shared
                    .job_finished
                    .wait_timeout(queue, std::time::Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            assert!(
                !queue.finished.is_empty(),
                "nothing was looked ahead: the test would prove nothing"
            );
        }
        // The next call's scan finds no .ready files and forgets the look-ahead results.
        let _ = pipeline.archive(&names[3], &wal.join(&names[3]));
        assert_eq!(pipeline.shared.lock().in_flight(), 0);
    }
}
