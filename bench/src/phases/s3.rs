//! Phase `s3`: archiving, backup and recovery against S3 on loopback.

use std::fs;
use std::time::Duration;

use sc_backup_pg_test::{run_ok, sc_backup, Cluster, S3Server};

use crate::measure::*;
use crate::network::{LatencyProxy, TlsTerminator};
use crate::ours::*;
use crate::pgbackrest::*;
use crate::report::*;
use crate::*;

/// The S3 phase's recovery: seconds of each replay of the same WAL and of the restore.
pub(crate) struct S3Replays {
    pub(crate) serial: f64,
    pub(crate) floor: f64,
    pub(crate) prefetched: f64,
    pub(crate) wal_mib: f64,
    pub(crate) restore: f64,
}

impl Bench {
    /// The same archive drain and a backup, into s3s-fs on loopback.
    pub(crate) fn s3(&mut self) {
        let server = S3Server::start(&self.dir, "s3");
        server.create_bucket("bench");
        let segments = (self.args.segments / 2).max(8);
        let (source, ready) = self.wal_backlog("s3-wal-source", segments);
        let wal_mib = ready as f64 * 16.0;
        let mut table = Table::new(
            &format!(
                "S3 (s3s-fs on loopback), PostgreSQL {}: archive drain of {ready} segments, then a backup",
                self.server.version()
            ),
            &["segments/s", "WAL MB/s", "seconds", "backup MB/s", "restore s"],
        );
        for parallelism in [0u32, 2] {
            let url = format!("s3://bench/wal-{parallelism}");
            let conf = format!("{}{}", server.conf(), ours_conf(&url, parallelism, true));
            let seconds = self
                .drain(&source, &format!("s3-wal-{parallelism}"), |_, _| {
                    Some(conf.clone())
                })
                .expect("our own method always runs");
            table.add(
                &format!(
                    "sc_backup archive (zstd 1, age, {})",
                    if parallelism == 0 {
                        "in the callback".into()
                    } else {
                        format!("{parallelism} look-ahead workers")
                    }
                ),
                &[
                    ("segments/s", round1(ready as f64 / seconds)),
                    ("WAL MB/s", round1(wal_mib * MIB / 1e6 / seconds)),
                    ("seconds", round2(seconds)),
                ],
            );
        }
        // pgBackRest's S3 client speaks only TLS: a terminator in front of the same server.
        let tls = TlsTerminator::start(&self.dir.path.join("s3-tls"), server.port());
        let dir = &self.dir;
        let pgbackrest_drain = self.drain(&source, "s3-wal-pgbr", |cluster, _| {
            let global = format!(
                "{}{PGBACKREST_CIPHER}",
                pgbackrest_s3_repository("wal-pgbackrest", tls.port)
            );
            let conf = pgbackrest_conf_with(dir, "s3-wal-pgbackrest", cluster, true, &global);
            pgbackrest_stanza_create(&conf)?;
            Some(format!(
                "archive_command = 'pgbackrest --config={} --stanza=bench archive-push %p'\n",
                conf.display()
            ))
        });
        if let Some(seconds) = pgbackrest_drain {
            table.add(
                "pgBackRest archive-push async (zst 1, aes-256-cbc, process-max 2, TLS)",
                &[
                    ("segments/s", round1(ready as f64 / seconds)),
                    ("WAL MB/s", round1(wal_mib * MIB / 1e6 / seconds)),
                    ("seconds", round2(seconds)),
                ],
            );
        }
        let _ = fs::remove_dir_all(&source);
        let mut cluster = self.ours_cluster(
            "s3-db",
            &format!(
                "{}{}",
                server.conf(),
                ours_conf("s3://bench/backup", 2, true)
            ),
        );
        self.pgbench_init(&cluster, self.args.small_scale);
        let pgdata = Self::pgdata_bytes(&cluster);
        let (_, seconds, _, _) = Self::ours_backup(&cluster);
        table.add(
            &format!(
                "sc_backup() to S3, scale {} ({:.0} MiB)",
                self.args.small_scale,
                pgdata as f64 / MIB
            ),
            &[
                ("backup MB/s", round1(pgdata as f64 / 1e6 / seconds)),
                ("seconds", round2(seconds)),
            ],
        );
        let S3Replays {
            serial,
            floor,
            prefetched,
            wal_mib,
            restore,
        } = self.s3_recovery(&server, &mut cluster);
        let latency = self.args.s3_latency_ms;
        table.add(
            &format!(
                "sc-backup restore from S3, scale {}, {latency} ms per request",
                self.args.small_scale
            ),
            &[("restore s", round2(restore))],
        );
        table.add(
            &format!("recovery replay of {wal_mib:.0} MiB WAL, {latency} ms per request: serial wal-fetch (--prefetch 0)"),
            &[("seconds", round2(serial))],
        );
        table.add(
            &format!("recovery replay of {wal_mib:.0} MiB WAL: every segment already in pg_wal (restore_command = false, the floor)"),
            &[("seconds", round2(floor))],
        );
        table.add(
            &format!("recovery replay of {wal_mib:.0} MiB WAL, {latency} ms per request: wal-fetch with prefetch (32 ahead, 4 workers)"),
            &[
                ("seconds", round2(prefetched)),
                ("segments/s", round1(wal_mib / 16.0 / prefetched)),
            ],
        );
        if let Some((backup_mb, pgbackrest_restore, replay)) =
            self.pgbackrest_s3(&server, &tls, cluster)
        {
            table.add(
                &format!(
                    "pgBackRest backup to S3, scale {} (zst 1, aes-256-cbc, process-max 2, bundles, TLS)",
                    self.args.small_scale
                ),
                &[("backup MB/s", round1(backup_mb))],
            );
            table.add(
                &format!(
                    "pgBackRest restore from S3, scale {}, {latency} ms per request (process-max 2, TLS)",
                    self.args.small_scale
                ),
                &[("restore s", round2(pgbackrest_restore))],
            );
            table.notes.push(format!(
                "Restores from S3 through the delaying proxy: ours {:.2}× pgBackRest's (both \
                 bundle files under 2 MiB: one request per bundle rather than per file).",
                pgbackrest_restore / restore
            ));
            table.add(
                &format!("recovery replay of {wal_mib:.0} MiB WAL, {latency} ms per request: pgBackRest archive-get async (queue 512 MiB, 32 segments)"),
                &[
                    ("seconds", round2(replay)),
                    ("segments/s", round1(wal_mib / 16.0 / replay)),
                ],
            );
            table.notes.push(format!(
                "pgBackRest reaches the same s3s-fs through stunnel (TLS, certificate not \
                 verified); its recovery row goes through stunnel and the same delaying proxy. \
                 Our prefetched replay is {:.2}× pgBackRest's asynchronous archive-get.",
                replay / prefetched
            ));
        }
        table.notes.push(format!(
            "The recovery rows restore the S3 backup (through a proxy that holds each request \
             {latency} ms before passing it on) and time `pg_ctl start` to a promoted cluster \
             replaying the WAL written after the backup; the serial row has `--prefetch 0` in \
             its restore_command. Prefetch is {:.1}× the serial fetch. The floor row replays \
             the same WAL with every segment fetched into pg_wal beforehand: PostgreSQL's redo \
             alone, which no fetching can beat (so no prefetch can be more than {:.1}× the \
             serial fetch here). basic_archive and cp write only to local directories.",
            serial / prefetched,
            serial / floor
        ));
        self.tables.push(table);
    }

    /// WAL written after a backup to S3, then recoveries of it through a delaying proxy:
    /// serial, with the segments already in pg_wal (the floor), and prefetched; and the
    /// seconds of the first restore (through the proxy; the page cache dropped before it).
    pub(crate) fn s3_recovery(&self, server: &S3Server, cluster: &mut Cluster) -> S3Replays {
        let wal_bytes: i64 = if self.args.quick {
            128 << 20
        } else {
            512 << 20
        };
        let mut client = cluster.connect();
        let (name, _, _, _) = Self::ours_backup(cluster);
        println!("== {} MiB of WAL after the S3 backup", wal_bytes >> 20);
        Self::write_wal(cluster, &mut client, wal_bytes as u64, 5);
        let expected = query_i64(
            &mut client,
            "SELECT sum(abalance)::bigint FROM pgbench_accounts",
        );
        cluster.switch_and_wait_archived(&mut client);
        drop(client);
        let proxy = LatencyProxy::start(
            server.endpoint.trim_start_matches("http://").to_string(),
            Duration::from_millis(self.args.s3_latency_ms),
        );
        let (mut seconds, mut restores) = (Vec::new(), Vec::new());
        for prefetch in [false, true] {
            let label = if prefetch { "prefetch" } else { "serial" };
            println!(
                "== recovery from S3 with {} ms latency, {label}",
                self.args.s3_latency_ms
            );
            let target = self.dir.path.join(format!("s3-restored-{label}"));
            let mut command = sc_backup(&self.dir.path);
            command
                .env("SC_BACKUP_REPOSITORY", "s3://bench/backup")
                .env("SC_BACKUP_S3_ENDPOINT", proxy.endpoint())
                .env("SC_BACKUP_S3_URI_STYLE", "path")
                .env("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY)
                .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE)
                .args([
                    "restore",
                    "--backup",
                    &name,
                    "--archive-mode",
                    "off",
                    "--pgdata",
                ])
                .arg(&target);
            level_memory(None);
            let restore = measure(
                "sc-backup restore",
                &mut command,
                &self.dir.path.join("s3-restore.log"),
            );
            restores.push(restore.seconds);
            if !prefetch {
                let auto_conf = target.join("postgresql.auto.conf");
                let settings = fs::read_to_string(&auto_conf).unwrap();
                sc_backup_pg_test::write_as_postgres(
                    &auto_conf,
                    settings
                        .replacen(" wal-fetch ", " wal-fetch --prefetch 0 ", 1)
                        .as_bytes(),
                );
            }
            // Restored with --archive-mode off: nothing to add to its settings.
            seconds.push(self.timed_replay(&format!("s3-{label}"), &target, "", expected));
            if !prefetch {
                // The floor: the same replay with every segment already in pg_wal (fetched
                // beforehand with the restore's own restore_command), nothing to fetch.
                let _ = fs::remove_dir_all(&target);
                run_ok(&mut command);
                prefill_pg_wal(&target);
                seconds.push(self.timed_replay("s3-floor", &target, "", expected));
            }
            let _ = fs::remove_dir_all(&target);
        }
        S3Replays {
            serial: seconds[0],
            floor: seconds[1],
            prefetched: seconds[2],
            wal_mib: wal_bytes as f64 / MIB,
            restore: restores[0],
        }
    }
}
