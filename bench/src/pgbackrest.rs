//! pgBackRest, the anchor every ratio is taken against: its configuration and runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sc_backup_pg_test::{as_postgres, run_ok, Cluster, ClusterOptions, S3Server, TestDir};

use crate::measure::*;
use crate::network::{LatencyProxy, TlsTerminator};
use crate::ours::*;
use crate::*;

/// The pgBackRest configuration for one stanza, written where the postgres user can read it.
pub(crate) fn pgbackrest_conf(
    dir: &TestDir,
    name: &str,
    cluster: &Cluster,
    async_push: bool,
) -> PathBuf {
    let repository = format!("repo1-path={}/repo\n", dir.path.join(name).display());
    pgbackrest_conf_with(dir, name, cluster, async_push, &repository)
}

/// A pgBackRest configuration for `cluster` whose `[global]` section also holds `global`
/// (the repository's lines, a cipher): zst 1, process-max 2, like every pgBackRest row.
pub(crate) fn pgbackrest_conf_with(
    dir: &TestDir,
    name: &str,
    cluster: &Cluster,
    async_archive: bool,
    global: &str,
) -> PathBuf {
    let base = dir.subdir(name);
    for sub in ["repo", "log", "lock", "spool"] {
        dir.subdir(&format!("{name}/{sub}"));
    }
    let conf = base.join("pgbackrest.conf");
    sc_backup_pg_test::write_as_postgres(
        &conf,
        format!(
            "[global]\n{global}log-path={base}/log\nlock-path={base}/lock\n\
             spool-path={base}/spool\ncompress-type=zst\ncompress-level=1\nprocess-max=2\n\
             archive-async={async_archive}\nstart-fast=y\nlog-level-console=warn\n\
             log-level-file=off\n\n[bench]\npg1-path={data}\npg1-socket-path={socket}\n",
            base = base.display(),
            async_archive = if async_archive { "y" } else { "n" },
            data = cluster.data.display(),
            socket = cluster.socket_dir.display(),
        )
        .as_bytes(),
    );
    conf
}

/// pgBackRest's lines for an S3 repository on s3s-fs behind a TLS terminator on `tls_port`.
pub(crate) fn pgbackrest_s3_repository(prefix: &str, tls_port: u16) -> String {
    format!(
        "repo1-type=s3\nrepo1-path=/{prefix}\nrepo1-s3-bucket=bench\nrepo1-s3-endpoint=127.0.0.1\n\
         repo1-storage-port={tls_port}\nrepo1-s3-region=us-east-1\nrepo1-s3-uri-style=path\n\
         repo1-s3-key={}\nrepo1-s3-key-secret={}\nrepo1-storage-verify-tls=n\n",
        S3Server::ACCESS_KEY,
        S3Server::SECRET_KEY
    )
}

/// pgBackRest's repository encryption, standing beside our age-encrypted repositories.
pub(crate) const PGBACKREST_CIPHER: &str =
    "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=bench-passphrase-not-secret\n";

/// Rewrites `key=value` in a pgBackRest configuration (e.g. the data directory a restore
/// writes into, or archive-async for the restore_command it leaves behind).
pub(crate) fn pgbackrest_set(conf: &Path, key: &str, value: &str) {
    let text = fs::read_to_string(conf).unwrap();
    let prefix = format!("{key}=");
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with(&prefix) {
                found = true;
                format!("{prefix}{value}")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(found, "{key} is not in {}", conf.display());
    sc_backup_pg_test::write_as_postgres(conf, (lines.join("\n") + "\n").as_bytes());
}

/// `pgbackrest stanza-create`, or None when this pgBackRest does not support the server's
/// major version (2.45, Debian bookworm's, stops at PostgreSQL 15).
pub(crate) fn pgbackrest_stanza_create(conf: &Path) -> Option<()> {
    let output = pgbackrest(conf).arg("stanza-create").output().unwrap();
    if output.status.success() {
        return Some(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if text.contains("VersionNotSupportedError") {
        println!(
            "  (pgBackRest: {})",
            text.lines().next().unwrap_or("").trim()
        );
        return None;
    }
    panic!("pgbackrest stanza-create failed: {text}");
}

pub(crate) fn pgbackrest_version() -> String {
    let output = run_ok(Command::new("pgbackrest").arg("version"));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

pub(crate) fn pgbackrest(conf: &Path) -> Command {
    let mut command = as_postgres("pgbackrest");
    command.arg(format!("--config={}", conf.display()));
    command.arg("--stanza=bench");
    command
}

impl Bench {
    /// pgBackRest's side of the drill's replay: a cluster of the same scale with pgBackRest's
    /// own backup and archive (aes-256-cbc, zst 1, process-max 2) and the same volume of
    /// pgbench WAL after the backup, restored three times and timed from `pg_ctl start` to a
    /// promoted cluster: archive-get asynchronous (its default queue, 128 MiB: the eight
    /// segments our local prefetch keeps), serial, and with every segment already in pg_wal
    /// (the floor). None where pgBackRest does not support the major.
    pub(crate) fn pgbackrest_replay(&self, scale: u32, wal_bytes: u64) -> Option<(f64, f64, f64)> {
        println!(
            "== pgBackRest: backup, {} MiB of WAL, replay",
            wal_bytes >> 20
        );
        let mut cluster = Cluster::init(
            &self.dir,
            "drill-pgbr",
            ClusterOptions {
                conf: BASE_CONF,
                ..ClusterOptions::default()
            },
        );
        cluster.start();
        let repository = format!(
            "repo1-path={}\n{PGBACKREST_CIPHER}",
            self.dir.path.join("drill-pgbackrest/repo").display()
        );
        let conf = pgbackrest_conf_with(&self.dir, "drill-pgbackrest", &cluster, true, &repository);
        pgbackrest_stanza_create(&conf)?;
        self.pgbench_init(&cluster, scale);
        cluster.stop("fast");
        cluster.append_conf(&format!(
            "archive_command = 'pgbackrest --config={} --stanza=bench archive-push %p'\n",
            conf.display()
        ));
        cluster.start();
        run_ok(pgbackrest(&conf).args(["--type=full", "backup"]));
        let mut client = cluster.connect();
        Self::write_wal(&cluster, &mut client, wal_bytes, 10);
        let expected = query_i64(
            &mut client,
            "SELECT sum(abalance)::bigint FROM pgbench_accounts",
        );
        cluster.switch_and_wait_archived(&mut client);
        drop(client);
        cluster.stop("fast");
        let target = self.dir.path.join("drill-pgbr-restored");
        // Its own spool: the restore empties the spool's queues.
        let spool = self.dir.subdir("drill-pgbackrest-restore-spool");
        pgbackrest_set(&conf, "pg1-path", &target.display().to_string());
        pgbackrest_set(&conf, "spool-path", &spool.display().to_string());
        let mut seconds = Vec::new();
        for label in ["async", "serial", "floor"] {
            // archive-get reads it from the configuration restore_command names.
            pgbackrest_set(
                &conf,
                "archive-async",
                if label == "async" { "y" } else { "n" },
            );
            let _ = fs::remove_dir_all(&target);
            self.dir.subdir("drill-pgbr-restored");
            run_ok(pgbackrest(&conf).arg("restore"));
            if label == "floor" {
                prefill_pg_wal(&target);
            }
            seconds.push(self.timed_replay(
                &format!("drill-pgbr-{label}"),
                &target,
                "archive_mode = off\narchive_timeout = 0",
                expected,
            ));
        }
        let _ = fs::remove_dir_all(&target);
        let _ = fs::remove_dir_all(&cluster.data);
        Some((seconds[0], seconds[1], seconds[2]))
    }

    /// pgBackRest on the S3 server through `tls`: a full backup of `cluster` (switched to
    /// pgBackRest's archive_command; left stopped), the same WAL volume as our S3 recovery,
    /// then a restore replayed through the delaying proxy with archive-get asynchronous.
    /// Returns the backup's MB/s, the restore's seconds and the replay's seconds; None where
    /// pgBackRest does not support the major.
    pub(crate) fn pgbackrest_s3(
        &self,
        server: &S3Server,
        tls: &TlsTerminator,
        mut cluster: Cluster,
    ) -> Option<(f64, f64, f64)> {
        println!("== pgBackRest on S3 through TLS");
        // Bundles as ours (pgBackRest's defaults: files under 2 MiB, bundles of 20 MiB); its
        // default is off in 2.45.
        let global = format!(
            "{}{PGBACKREST_CIPHER}archive-get-queue-max=512MiB\nrepo1-bundle=y\n",
            pgbackrest_s3_repository("backup-pgbackrest", tls.port)
        );
        let conf = pgbackrest_conf_with(&self.dir, "s3-pgbackrest", &cluster, true, &global);
        pgbackrest_stanza_create(&conf)?;
        cluster.stop("fast");
        cluster.append_conf(&format!(
            "archive_library = ''\narchive_command = 'pgbackrest --config={} --stanza=bench archive-push %p'\n",
            conf.display()
        ));
        cluster.start();
        let pgdata = Self::pgdata_bytes(&cluster);
        let backup = measure(
            "pgbackrest backup to S3",
            pgbackrest(&conf).args(["--type=full", "backup"]),
            &self.dir.path.join("s3-pgbackrest-backup.log"),
        );
        let wal_bytes: u64 = if self.args.quick {
            128 << 20
        } else {
            512 << 20
        };
        let mut client = cluster.connect();
        Self::write_wal(&cluster, &mut client, wal_bytes, 5);
        let expected = query_i64(
            &mut client,
            "SELECT sum(abalance)::bigint FROM pgbench_accounts",
        );
        cluster.switch_and_wait_archived(&mut client);
        drop(client);
        cluster.stop("fast");

        let proxy = LatencyProxy::start(
            format!("127.0.0.1:{}", server.port()),
            Duration::from_millis(self.args.s3_latency_ms),
        );
        let slow_tls = TlsTerminator::start(&self.dir.path.join("s3-tls"), proxy.port);
        let target = self.dir.path.join("s3-pgbr-restored");
        let spool = self.dir.subdir("s3-pgbackrest-restore-spool");
        pgbackrest_set(&conf, "repo1-storage-port", &slow_tls.port.to_string());
        pgbackrest_set(&conf, "pg1-path", &target.display().to_string());
        pgbackrest_set(&conf, "spool-path", &spool.display().to_string());
        self.dir.subdir("s3-pgbr-restored");
        level_memory(None);
        let restore = measure(
            "pgbackrest restore from S3",
            pgbackrest(&conf).arg("restore"),
            &self.dir.path.join("s3-pgbackrest-restore.log"),
        );
        let replay = self.timed_replay(
            "s3-pgbr",
            &target,
            "archive_mode = off\narchive_timeout = 0",
            expected,
        );
        let _ = fs::remove_dir_all(&target);
        Some((
            pgdata as f64 / 1e6 / backup.seconds,
            restore.seconds,
            replay,
        ))
    }
}
