//! Phase `repositories`: local and offsite at once. What an S3 repository 2 beside a local
//! repository 1 costs the cluster: the archive drain with repository 1 alone and with
//! repository 2 beside it (PostgreSQL waits for repository 1; the worker copies into S3
//! meanwhile), and a base backup with one repository and with two (the call, and until
//! repository 2 holds the backup too); pgBackRest with repo1 local and repo2 on S3 beside
//! ours. Runs are interleaved (one, two, one, two...) and the medians reported.

use std::time::{Duration, Instant};

use sc_backup_core::backup::read_metadata;
use sc_backup_core::wal::copy::wal_backlog;
use sc_backup_core::{RawSettings, Repository, Settings};
use sc_backup_pg_test::{Cluster, S3Server};

use crate::measure::*;
use crate::network::TlsTerminator;
use crate::ours::*;
use crate::pgbackrest::*;
use crate::report::*;
use crate::*;

/// Interleaved rounds of each configuration.
const ROUNDS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A repository as the bench reads it from outside (the cluster's passphrase; S3 straight to
/// the server).
fn open(location: &str, server: &S3Server) -> Option<Repository> {
    let settings = Settings::from_raw(&RawSettings {
        repository: Some(location.into()),
        encryption_passphrase: Some(sc_backup_core::config::Secret::new(String::from(
            PASSPHRASE,
        ))),
        s3_endpoint: Some(server.endpoint.clone()),
        s3_region: Some("us-east-1".into()),
        s3_access_key_id: Some(S3Server::ACCESS_KEY.into()),
        s3_secret_access_key: Some(sc_backup_core::config::Secret::new(String::from(
            S3Server::SECRET_KEY,
        ))),
        ..Default::default()
    })
    .ok()?;
    Repository::open(&settings).ok()
}

/// Waits until `done` (polled every 100 ms, up to 30 minutes).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Bench {
    pub(crate) fn repositories(&mut self) {
        let server = S3Server::start(&self.dir, "s3-offsite");
        server.create_bucket("bench");
        let segments = (self.args.segments / 2).max(8);
        let (source, ready) = self.wal_backlog("repos-wal-source", segments);
        let wal_mib = ready as f64 * 16.0;
        let mut table = Table::new(
            &format!(
                "Local and offsite, PostgreSQL {}: archive drain of {ready} segments ({wal_mib:.0} MiB), \
                 then base backups, repository 1 local and repository 2 on S3 (s3s-fs on loopback); \
                 medians of {ROUNDS} interleaved runs",
                self.server.version()
            ),
            &["segments/s", "seconds", "offsite s", "ratio"],
        );

        // The drain: repository 1 alone, then with repository 2, interleaved.
        let (mut alone, mut beside, mut offsite_done) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let local = self.dir.subdir(&format!("repos-local-{round}"));
            let conf = ours_conf(&local.display().to_string(), 2, true);
            alone.push(
                self.drain(&source, &format!("repos-alone-{round}"), |_, _| {
                    Some(conf.clone())
                })
                .expect("our own method always runs"),
            );
            let local = self.dir.subdir(&format!("repos-both-{round}"));
            let offsite = format!("s3://bench/offsite-wal-{round}");
            let conf = format!(
                "{}{}sc_backup.repository2 = '{offsite}'\n",
                server.conf(),
                ours_conf(&local.display().to_string(), 2, true)
            );
            let mut done = 0.0;
            beside.push(
                self.drain_then(
                    &source,
                    &format!("repos-beside-{round}"),
                    |_, _| Some(conf.clone()),
                    |_, started| {
                        let first = Repository::open(
                            &Settings::from_raw(&RawSettings {
                                repository: Some(local.display().to_string()),
                                encryption_passphrase: Some(sc_backup_core::config::Secret::new(
                                    String::from(PASSPHRASE),
                                )),
                                ..Default::default()
                            })
                            .unwrap(),
                        )
                        .unwrap();
                        wait_for("repository 2 to hold the drained WAL", || {
                            open(&offsite, &server).is_some_and(|offsite| {
                                wal_backlog(&first, &offsite).is_ok_and(|n| n == 0)
                            })
                        });
                        done = started.elapsed().as_secs_f64();
                    },
                )
                .expect("our own method always runs"),
            );
            offsite_done.push(done);
        }
        let (alone, beside, offsite_done) = (
            median(&mut alone),
            median(&mut beside),
            median(&mut offsite_done),
        );
        table.add(
            "sc_backup archive, repository 1 local alone (zstd 1, age, 2 look-ahead workers)",
            &[
                ("segments/s", round1(ready as f64 / alone)),
                ("seconds", round2(alone)),
            ],
        );
        table.add(
            "sc_backup archive, repository 1 local + repository 2 S3 (the worker's catch-up)",
            &[
                ("segments/s", round1(ready as f64 / beside)),
                ("seconds", round2(beside)),
                ("offsite s", round2(offsite_done)),
                ("ratio", round2(beside / alone)),
            ],
        );
        table.notes.push(format!(
            "Archiving into local + S3 costs PostgreSQL's archiver {:+.1} % of its throughput \
             (the drain's seconds, {beside:.2} against {alone:.2}): it waits for repository 1 \
             only. Repository 2 held every drained file {offsite_done:.2} s after the drain \
             started ({:.2} s after PostgreSQL had archived the last one).",
            (beside / alone - 1.0) * 100.0,
            offsite_done - beside
        ));
        let _ = std::fs::remove_dir_all(&source);

        // Backups: one repository, then two, interleaved, in one cluster.
        let local = self.dir.subdir("repos-backups-local");
        let offsite = "s3://bench/offsite-backups";
        let cluster = self.ours_cluster(
            "repos-db",
            &format!(
                "{}{}",
                server.conf(),
                ours_conf(&local.display().to_string(), 2, true)
            ),
        );
        self.pgbench_init(&cluster, self.args.small_scale);
        let pgdata = Self::pgdata_bytes(&cluster);
        let mut client = cluster.connect();
        let first = open(&local.display().to_string(), &server).expect("repository 1");
        let (mut one, mut two, mut both) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            client
                .batch_execute("ALTER SYSTEM RESET sc_backup.repository2")
                .unwrap();
            client.batch_execute("SELECT pg_reload_conf()").unwrap();
            std::thread::sleep(Duration::from_secs(2));
            let (name, seconds, _, _) = Self::ours_backup_in(&mut client, "full");
            one.push(seconds);
            // Not for repository 2: only the backups taken with it configured are copied.
            client
                .execute("SELECT sc_delete_backup($1)", &[&name])
                .unwrap();
            client
                .batch_execute(&format!(
                    "ALTER SYSTEM SET sc_backup.repository2 = '{offsite}'"
                ))
                .unwrap();
            client.batch_execute("SELECT pg_reload_conf()").unwrap();
            // The worker took the setting and holds repository 1's WAL there.
            wait_for("repository 2 to catch up before the backup", || {
                open(offsite, &server)
                    .is_some_and(|offsite| wal_backlog(&first, &offsite).is_ok_and(|n| n == 0))
            });
            let started = Instant::now();
            let (name, seconds, _, _) = Self::ours_backup_in(&mut client, "full");
            two.push(seconds);
            wait_for("repository 2 to hold the backup", || {
                open(offsite, &server).is_some_and(|offsite| read_metadata(&offsite, &name).is_ok())
            });
            both.push(started.elapsed().as_secs_f64());
        }
        drop(client);
        let (one, two, both) = (median(&mut one), median(&mut two), median(&mut both));
        let scale = self.args.small_scale;
        let mib = pgdata as f64 / MIB;
        table.add(
            &format!("sc_backup(), scale {scale} ({mib:.0} MiB), repository 1 local alone"),
            &[("seconds", round2(one))],
        );
        table.add(
            &format!("sc_backup(), scale {scale}, repository 1 local + repository 2 S3"),
            &[
                ("seconds", round2(two)),
                ("offsite s", round2(both)),
                ("ratio", round2(two / one)),
            ],
        );
        table.notes.push(format!(
            "A backup with two repositories reads the cluster once: sc_backup() returns in \
             {:.2}× the time of one repository ({two:.2} s against {one:.2} s), and repository \
             2 holds the backup {both:.2} s after the call started ({:.2}× one repository's \
             backup: up to 10 s until the worker's next pass, then the copy from repository \
             1, re-encoded for S3).",
            two / one,
            both / one
        ));

        if let Some((push, repo1, repo2)) = self.pgbackrest_two_repositories(&server, cluster) {
            match push {
                Some(push) => table.add(
                    "pgBackRest archive-push async, repo1 local + repo2 S3 (zst 1, aes-256-cbc, process-max 2, TLS)",
                    &[
                        ("segments/s", round1(ready as f64 / push)),
                        ("seconds", round2(push)),
                        ("ratio", round2(push / alone)),
                    ],
                ),
                None => table.notes.push(
                    "pgBackRest archive-push async into repo1 local + repo2 S3 did not drain the \
                     backlog within 180 s (the run's log says where it stopped and why): it \
                     reports a segment archived only when every repository took it."
                        .into(),
                ),
            }
            table.add(
                &format!("pgBackRest backup --repo=1 then --repo=2, scale {scale}"),
                &[
                    ("seconds", round2(repo1 + repo2)),
                    ("ratio", round2((repo1 + repo2) / one)),
                ],
            );
            table.notes.push(format!(
                "pgBackRest backs up one repository per command: two repositories are two \
                 backups, each reading the cluster ({repo1:.2} s into repo1, {repo2:.2} s into \
                 repo2). Its archive-push sends each segment to both repositories before \
                 PostgreSQL is told (the drain's ratio column is against our local-alone \
                 drain)."
            ));
        }
        self.tables.push(table);
    }

    /// pgBackRest with repo1 local and repo2 on S3 (through TLS): the same drain as ours
    /// (a new backlog of the same size), and a full backup into each repository; None where
    /// pgBackRest does not support the major.
    fn pgbackrest_two_repositories(
        &self,
        server: &S3Server,
        cluster: Cluster,
    ) -> Option<(Option<f64>, f64, f64)> {
        let tls = TlsTerminator::start(&self.dir.path.join("repos-tls"), server.port());
        let global = |name: &str| {
            format!(
                "repo1-path={}/repo\n{PGBACKREST_CIPHER}{}{}",
                self.dir.path.join(name).display(),
                pgbackrest_s3_repository(&format!("{name}-offsite"), tls.port)
                    .replace("repo1-", "repo2-"),
                PGBACKREST_CIPHER.replace("repo1-", "repo2-")
            )
        };
        let segments = (self.args.segments / 2).max(8);
        let (source, _) = self.wal_backlog("repos-pgbr-source", segments);
        let dir = &self.dir;
        let mut supported = false;
        // At most 180 s: pgBackRest tells PostgreSQL a segment is archived only once every
        // repository took it, so a store that refuses one stalls the drain.
        let push = self.drain_within(
            &source,
            "repos-pgbr-wal",
            |cluster, _| {
                let conf = pgbackrest_conf_with(
                    dir,
                    "repos-pgbr-wal-conf",
                    cluster,
                    true,
                    &global("repos-pgbr-wal-conf"),
                );
                pgbackrest_stanza_create(&conf)?;
                supported = true;
                Some(format!(
                    "archive_command = 'pgbackrest --config={} --stanza=bench archive-push %p'\n",
                    conf.display()
                ))
            },
            |_, _| {},
            Duration::from_secs(180),
            false,
        );
        let _ = std::fs::remove_dir_all(&source);
        if !supported {
            return None;
        }
        let mut cluster = cluster;
        cluster.stop("fast");
        let conf = pgbackrest_conf_with(
            dir,
            "repos-pgbr-backup",
            &cluster,
            true,
            &global("repos-pgbr-backup"),
        );
        cluster.append_conf(&format!(
            "archive_library = ''\narchive_command = 'pgbackrest --config={} --stanza=bench archive-push %p'\n",
            conf.display()
        ));
        cluster.start();
        pgbackrest_stanza_create(&conf)?;
        let mut seconds = Vec::new();
        for repo in ["1", "2"] {
            settle();
            let started = Instant::now();
            sc_backup_pg_test::run_ok(
                pgbackrest(&conf)
                    .arg(format!("--repo={repo}"))
                    .args(["--type=full", "backup"]),
            );
            seconds.push(started.elapsed().as_secs_f64());
        }
        cluster.stop("fast");
        Some((push, seconds[0], seconds[1]))
    }
}
