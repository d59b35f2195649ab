//! sc_backup's side: clusters archiving with it, load, its backups and restores.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sc_backup_pg_test::postgres::Client;
use sc_backup_pg_test::{as_postgres, pg_bindir, run_ok, sc_backup, Cluster, ClusterOptions};

use crate::measure::*;
use crate::*;

/// postgresql.conf lines shared by every benchmark cluster: sc_backup loaded (its settings
/// exist), archiving on but paused, and enough WAL room that no checkpoint interferes.
pub(crate) const BASE_CONF: &str = "shared_preload_libraries = 'sc_backup'\n\
    sc_backup.scheduler = off\n\
    archive_mode = on\n\
    archive_command = ''\n\
    archive_library = ''\n\
    max_wal_size = '64GB'\n\
    checkpoint_timeout = '1h'\n\
    shared_buffers = '512MB'\n\
    sc_backup.compression = 'zstd'\n\
    sc_backup.compression_level = 1\n";

/// The WAL segment after `name` (16 MiB segments: 256 per log id).
pub(crate) fn next_segment(name: &str) -> String {
    let timeline = &name[..8];
    let log = u32::from_str_radix(&name[8..16], 16).unwrap();
    let segment = u32::from_str_radix(&name[16..24], 16).unwrap();
    let (log, segment) = if segment == 0xff {
        (log + 1, 0)
    } else {
        (log, segment + 1)
    };
    format!("{timeline}{log:08X}{segment:08X}")
}

/// Lays every archived segment the restored `target` replays into its pg_wal, untimed, with
/// the restore_command its restore wrote (run serially: `--prefetch 0` for ours, pgBackRest's
/// configuration set to archive-async=n), then makes restore_command `false` so that recovery
/// reads pg_wal only: what the same replay costs when no segment has to be fetched, the floor
/// under both tools. Returns the number of segments laid down.
pub(crate) fn prefill_pg_wal(target: &Path) -> usize {
    let auto_conf = target.join("postgresql.auto.conf");
    let settings = fs::read_to_string(&auto_conf).unwrap();
    let quoted = settings
        .lines()
        .filter_map(|line| line.trim().strip_prefix("restore_command = "))
        .next_back()
        .expect("the restore wrote a restore_command");
    let command = quoted
        .trim()
        .strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or(quoted)
        .replace("''", "'")
        .replacen(" wal-fetch ", " wal-fetch --prefetch 0 ", 1);
    let label = fs::read_to_string(target.join("backup_label")).unwrap();
    let start = label
        .split("(file ")
        .nth(1)
        .expect("backup_label names its first segment");
    let mut segment = start[..24].to_string();
    let mut fetched = 0;
    loop {
        let line = command
            .replace("%f", &segment)
            .replace("%p", &format!("pg_wal/{segment}"));
        // PostgreSQL runs restore_command in the data directory, as its own user.
        let status = as_postgres("sh")
            .args(["-c", &line])
            .current_dir(target)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if !status.success() {
            break;
        }
        fetched += 1;
        segment = next_segment(&segment);
    }
    assert!(fetched > 0, "no segment came back with {command}");
    let separator = if settings.ends_with('\n') { "" } else { "\n" };
    sc_backup_pg_test::write_as_postgres(
        &auto_conf,
        format!("{settings}{separator}restore_command = 'false'\n").as_bytes(),
    );
    fetched
}

pub(crate) fn ours_conf(repository: &str, parallelism: u32, encrypted: bool) -> String {
    let mut conf = format!(
        "archive_library = 'sc_backup'\nsc_backup.repository = '{repository}'\n\
         sc_backup.archive_parallelism = {parallelism}\n"
    );
    if encrypted {
        conf.push_str(&format!(
            "sc_backup.encryption = 'age'\nsc_backup.encryption_passphrase = '{PASSPHRASE}'\n"
        ));
    }
    conf
}

impl Bench {
    /// A cluster with the benchmark's base settings plus `conf`, started, with the extension.
    pub(crate) fn ours_cluster(&self, name: &str, conf: &str) -> Cluster {
        let mut cluster = Cluster::init(
            &self.dir,
            name,
            ClusterOptions {
                conf: BASE_CONF,
                ..ClusterOptions::default()
            },
        );
        cluster.append_conf(conf);
        cluster.start();
        cluster
            .connect()
            .batch_execute("CREATE EXTENSION sc_backup")
            .unwrap();
        cluster
    }

    pub(crate) fn pgbench_init(&self, cluster: &Cluster, scale: u32) {
        println!("\n== pgbench -i -s {scale}");
        run_ok(
            as_postgres(pg_bindir().join("pgbench"))
                .arg("-h")
                .arg(&cluster.socket_dir)
                .args([
                    "-U",
                    "postgres",
                    "-i",
                    "-q",
                    "-s",
                    &scale.to_string(),
                    "postgres",
                ]),
        );
        let mut client = cluster.connect();
        client.batch_execute("CHECKPOINT").unwrap();
    }

    /// PGDATA without pg_wal: what every method copies.
    /// pgbench (2 clients) in rounds of `round_seconds` until `bytes` of WAL were written
    /// after the call began.
    pub(crate) fn write_wal(
        cluster: &Cluster,
        client: &mut Client,
        bytes: u64,
        round_seconds: u32,
    ) {
        let start_lsn: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .unwrap()
            .get(0);
        loop {
            run_ok(
                cluster
                    .pgbench(&["-n", "-c", "2", "-T", &round_seconds.to_string()])
                    .stdout(Stdio::null()),
            );
            let written: i64 = client
                .query_one(
                    "SELECT (pg_current_wal_lsn() - $1::text::pg_lsn)::bigint",
                    &[&start_lsn],
                )
                .unwrap()
                .get(0);
            if written as u64 >= bytes {
                return;
            }
        }
    }

    /// Starts the restored data directory `target` as cluster `name` with `conf` appended,
    /// times `pg_ctl start` to a promoted cluster, checks that it reached the state whose
    /// pgbench balance sum is `expected` (the end of the WAL), and stops it.
    pub(crate) fn timed_replay(&self, name: &str, target: &Path, conf: &str, expected: i64) -> f64 {
        let mut restored = Cluster::adopt(&self.dir, name, target.to_path_buf());
        if !conf.is_empty() {
            restored.append_conf(conf);
        }
        let started = Instant::now();
        restored.start();
        let mut client = restored.connect();
        restored.wait_promoted(&mut client);
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(
            query_i64(
                &mut client,
                "SELECT sum(abalance)::bigint FROM pgbench_accounts"
            ),
            expected,
            "{name}: the replay reached the end of the WAL"
        );
        drop(client);
        restored.stop("fast");
        seconds
    }

    pub(crate) fn pgdata_bytes(cluster: &Cluster) -> u64 {
        du(&cluster.data) - du(&cluster.data.join("pg_wal"))
    }

    /// `SELECT sc_backup()` timed, with the backend's peak private memory (anonymous plus
    /// file-backed resident pages, sampled every 10 ms; shared buffers are not ours).
    pub(crate) fn ours_backup(cluster: &Cluster) -> (String, f64, f64, u64) {
        Self::ours_backup_of_kind(cluster, "full")
    }

    /// [`Bench::ours_backup`] of `kind` (full, incremental, differential).
    pub(crate) fn ours_backup_of_kind(cluster: &Cluster, kind: &str) -> (String, f64, f64, u64) {
        Self::ours_backup_in(&mut cluster.connect(), kind)
    }

    /// [`Bench::ours_backup_of_kind`] in the backend of `client`, which may have taken
    /// backups before.
    pub(crate) fn ours_backup_in(client: &mut Client, kind: &str) -> (String, f64, f64, u64) {
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let done = std::sync::Arc::clone(&done);
            std::thread::spawn(move || {
                let mut peak_kib = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak_kib = peak_kib.max(private_rss_kib(pid));
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak_kib
            })
        };
        settle();
        let started = Instant::now();
        let row = client
            .query_one(
                "SELECT backup_name, stored_bytes FROM sc_backup($1)",
                &[&kind],
            )
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak_kib = sampler.join().unwrap();
        let name: String = row.get(0);
        let stored: i64 = row.get(1);
        (name, seconds, peak_kib as f64 / 1024.0, stored as u64)
    }

    pub(crate) fn ours_restore_command(
        &self,
        repository: &str,
        target: &Path,
        name: &str,
    ) -> Command {
        let mut command = sc_backup(&self.dir.path);
        command
            .env("SC_BACKUP_REPOSITORY", repository)
            .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE)
            .args(["restore", "--backup", name, "--parallel", "2", "--pgdata"])
            .arg(target);
        command
    }

    /// Our restore timed from level memory, with the writeback of its files after it.
    pub(crate) fn ours_restore(&self, repository: &str, target: &Path, name: &str) -> Measured {
        measure_restore(
            "sc-backup restore",
            &mut self.ours_restore_command(repository, target, name),
            &self.dir.path.join("restore.log"),
            target,
        )
    }
}
