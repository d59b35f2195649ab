//! Phase `wal`: draining an archive backlog.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sc_backup_pg_test::postgres::Client;
use sc_backup_pg_test::{run_ok, Cluster, ClusterOptions};

use crate::measure::*;
use crate::ours::*;
use crate::pgbackrest::*;
use crate::report::*;
use crate::*;

impl Bench {
    /// A cluster with archiving paused and `segments` ready WAL segments of table churn with
    /// full-page images (updates right after checkpoints), stopped cleanly.
    pub(crate) fn wal_backlog(&self, name: &str, segments: u32) -> (PathBuf, u64) {
        println!("\n== building a backlog of {segments} WAL segments");
        let mut cluster = Cluster::init(
            &self.dir,
            name,
            ClusterOptions {
                conf: BASE_CONF,
                ..ClusterOptions::default()
            },
        );
        cluster.start();
        let mut client = cluster.connect();
        client
            .batch_execute(
                "CREATE TABLE churn (id bigint PRIMARY KEY, counter int, payload text);
                 INSERT INTO churn SELECT g, 0, repeat(md5(g::text), 3)
                   FROM generate_series(1, 400000) g;
                 CHECKPOINT;",
            )
            .unwrap();
        let mut round = 0;
        while (ready_files(&cluster.data) as u32) < segments {
            // After each checkpoint the first change to every page logs the whole page.
            client
                .batch_execute(&format!(
                    "UPDATE churn SET counter = counter + 1, payload = md5(payload) || \
                     substr(payload, 33) WHERE id % 4 = {};",
                    round % 4
                ))
                .unwrap();
            if round % 2 == 1 {
                client.batch_execute("CHECKPOINT").unwrap();
            }
            round += 1;
        }
        client.batch_execute("SELECT pg_switch_wal()").unwrap();
        drop(client);
        cluster.stop("fast");
        let ready = ready_files(&cluster.data) as u64;
        let data = cluster.data.clone();
        std::mem::forget(cluster); // stopped; the copies are what run
        (data, ready)
    }

    /// Copies the backlog cluster, lets `prepare` set up on the running copy (archiving still
    /// paused) and return the method's settings, then restarts the copy with them and times
    /// the drain of every `.ready` from `pg_ctl start`. (Changing `archive_library` by reload
    /// would restart the archiver only at the postmaster's next idle wake-up, up to a minute
    /// later, and that wait is not the method's.)
    pub(crate) fn drain(
        &self,
        source: &Path,
        name: &str,
        prepare: impl FnOnce(&Cluster, &mut Client) -> Option<String>,
    ) -> Option<f64> {
        self.drain_then(source, name, prepare, |_, _| {})
    }

    /// [`Bench::drain`], then `drained` with the cluster still running and the drain's start
    /// (what else it did meanwhile: a second repository's catch-up, say).
    pub(crate) fn drain_then(
        &self,
        source: &Path,
        name: &str,
        prepare: impl FnOnce(&Cluster, &mut Client) -> Option<String>,
        drained: impl FnOnce(&Cluster, Instant),
    ) -> Option<f64> {
        self.drain_within(
            source,
            name,
            prepare,
            drained,
            Duration::from_secs(1800),
            true,
        )
    }

    /// [`Bench::drain_then`] within `limit`: past it, fails (`must_drain`) or gives up
    /// (returns None, saying where it stopped) for a method that may stall.
    pub(crate) fn drain_within(
        &self,
        source: &Path,
        name: &str,
        prepare: impl FnOnce(&Cluster, &mut Client) -> Option<String>,
        drained: impl FnOnce(&Cluster, Instant),
        limit: Duration,
        must_drain: bool,
    ) -> Option<f64> {
        let data = self.dir.path.join(name);
        let _ = fs::remove_dir_all(&data);
        run_ok(Command::new("cp").arg("-a").arg(source).arg(&data));
        let mut cluster = Cluster::adopt(&self.dir, name, data.clone());
        cluster.start();
        // The copy's dirty pages must not be written back during someone's drain.
        run_ok(&mut Command::new("sync"));
        let conf = {
            let mut client = cluster.connect();
            prepare(&cluster, &mut client)
        };
        cluster.stop("fast");
        let Some(conf) = conf else {
            let _ = fs::remove_dir_all(&data);
            return None;
        };
        cluster.append_conf(&conf);
        let backlog = ready_files(&data);
        let started = Instant::now();
        cluster.start();
        let deadline = started + limit;
        while ready_files(&data) > 0 {
            if Instant::now() >= deadline {
                assert!(
                    !must_drain,
                    "{name}: the backlog did not drain\n{}",
                    cluster.log_text()
                );
                println!(
                    "  ({name}: gave up after {} s with {} of {backlog} files still waiting)",
                    limit.as_secs(),
                    ready_files(&data)
                );
                cluster.stop("immediate");
                let _ = fs::remove_dir_all(&data);
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut client = cluster.connect();
        let failed = query_i64(&mut client, "SELECT failed_count FROM pg_stat_archiver");
        assert_eq!(
            failed,
            0,
            "{name}: archiving failed\n{}",
            cluster.log_text()
        );
        println!("  ({name}: {backlog} files in {seconds:.1} s)");
        drained(&cluster, started);
        drop(client);
        cluster.stop("fast");
        let _ = fs::remove_dir_all(&data);
        Some(seconds)
    }

    pub(crate) fn wal_drain(&mut self) {
        let (source, ready) = self.wal_backlog("wal-source", self.args.segments);
        let wal_mib = ready as f64 * 16.0;
        let mut table = Table::new(
            &format!(
                "WAL archive drain, PostgreSQL {}: {ready} ready segments ({wal_mib:.0} MiB of WAL)",
                self.server.version()
            ),
            &[
                "segments/s",
                "WAL MB/s",
                "seconds",
                "repository MiB",
                "vs pgBackRest async",
            ],
        );
        let mut results: Vec<(String, f64, u64)> = Vec::new();
        let mut skipped: Vec<String> = Vec::new();
        let mut run =
            |bench: &Bench,
             label: &str,
             name: &str,
             repo: PathBuf,
             prepare: &dyn Fn(&Cluster, &mut Client) -> Option<String>| {
                match bench.drain(&source, name, |c, client| prepare(c, client)) {
                    Some(seconds) => results.push((label.to_string(), seconds, du(&repo))),
                    None => skipped.push(label.to_string()),
                }
                let _ = fs::remove_dir_all(&repo);
            };

        let repo = self.dir.subdir("cp-archive");
        let target = repo.clone();
        run(
            self,
            "cp archive_command (no fsync)",
            "wal-cp",
            repo,
            &|_, _| {
                Some(format!(
                    "archive_command = 'test ! -f {0}/%f && cp %p {0}/%f'\n",
                    target.display()
                ))
            },
        );

        let repo = self.dir.subdir("basic-archive");
        let target = repo.clone();
        run(self, "basic_archive (fsync)", "wal-basic", repo, &|_, _| {
            Some(format!(
                "archive_library = 'basic_archive'\nbasic_archive.archive_directory = '{}'\n",
                target.display()
            ))
        });

        for async_push in [false, true] {
            let name = if async_push {
                "wal-pgbr-async"
            } else {
                "wal-pgbr-sync"
            };
            let label = if async_push {
                "pgBackRest archive-push async (zst 1, process-max 2)"
            } else {
                "pgBackRest archive-push (zst 1)"
            };
            let conf_dir = self.dir.path.join(format!("{name}-pgbackrest"));
            let dir = &self.dir;
            run(self, label, name, conf_dir.join("repo"), &|cluster, _| {
                let conf = pgbackrest_conf(dir, &format!("{name}-pgbackrest"), cluster, async_push);
                pgbackrest_stanza_create(&conf)?;
                Some(format!(
                    "archive_command = 'pgbackrest --config={} --stanza=bench archive-push %p'\n",
                    conf.display()
                ))
            });
        }

        for (parallelism, encrypted) in [(0, false), (2, false), (2, true)] {
            let name = format!("wal-ours-{parallelism}-{encrypted}");
            let label = format!(
                "sc_backup (zstd 1{}, {})",
                if encrypted { ", age" } else { "" },
                if parallelism == 0 {
                    "in the callback".to_string()
                } else {
                    format!("{parallelism} look-ahead workers")
                }
            );
            let repo = self.dir.subdir(&format!("{name}-repo"));
            let url = repo.display().to_string();
            run(self, &label, &name, repo, &|_, _| {
                Some(ours_conf(&url, parallelism, encrypted))
            });
        }

        let rate = |seconds: f64| ready as f64 / seconds;
        let anchor = self.anchor(
            "wal",
            results
                .iter()
                .find(|(label, _, _)| label.contains("async"))
                .map(|(_, seconds, _)| rate(*seconds)),
        );
        for (label, seconds, size) in &results {
            let mut figures = vec![
                ("segments/s", round1(ready as f64 / seconds)),
                ("WAL MB/s", round1(wal_mib * MIB / 1e6 / seconds)),
                ("seconds", round2(*seconds)),
                ("repository MiB", round1(*size as f64 / MIB)),
            ];
            if let Some((major, anchor)) = anchor {
                figures.push((
                    "vs pgBackRest async",
                    self.ratio(major, rate(*seconds) / anchor),
                ));
            }
            table.add(label, &figures);
        }
        self.note_skipped(&mut table, &skipped, anchor);
        table.notes.push(
            "Each method starts from a copy of the same stopped cluster whose `.ready` backlog \
             was written with archiving paused (`archive_command = ''`); the clock runs from \
             `pg_ctl start` with the method's settings (about 0.2 s of start-up, the same for \
             all) until no `.ready` file is left. Durable methods fsync every file; `cp` does \
             not. The encrypted run includes creating the repository key (one scrypt at N = 2^16)."
                .into(),
        );
        self.tables.push(table);
        let _ = fs::remove_dir_all(&source);
    }
}
