//! Phase `drill`: a point-in-time recovery drill under load, RTO and RPO.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sc_backup_pg_test::{as_postgres, pg_bindir, run_ok, sc_backup, Cluster};
use serde_json::{json, Value};

use crate::measure::*;
use crate::ours::*;
use crate::report::*;
use crate::*;

impl Bench {
    /// RTO: restore + replay of 1 GiB of WAL to a promoted, queryable cluster; RPO: the age of
    /// the newest archived WAL over a window of light load with `archive_timeout = 60`.
    pub(crate) fn drill(&mut self) {
        let mut table = Table::new(
            &format!("Recovery drill, PostgreSQL {}", self.server.version()),
            &["figure", "seconds"],
        );
        let repo = self.dir.subdir("drill-repo");
        let repo_url = repo.display().to_string();
        let cluster = self.ours_cluster(
            "drill",
            &format!("{}archive_timeout = 60\n", ours_conf(&repo_url, 2, true)),
        );
        let (scale, wal_bytes) = if self.args.quick {
            (5, 128 << 20)
        } else {
            (70, 1u64 << 30)
        };
        self.pgbench_init(&cluster, scale);
        let data_mib = Self::pgdata_bytes(&cluster) as f64 / MIB;
        let mut client = cluster.connect();
        let (name, _, _, _) = Self::ours_backup(&cluster);
        println!("== {} MiB of WAL after the backup", wal_bytes >> 20);
        Self::write_wal(&cluster, &mut client, wal_bytes, 10);
        let expected = query_i64(
            &mut client,
            "SELECT sum(abalance)::bigint FROM pgbench_accounts",
        );
        cluster.switch_and_wait_archived(&mut client);

        println!(
            "== RPO: light load for {} s with archive_timeout = 60",
            self.args.rpo_seconds
        );
        let mut load = as_postgres(pg_bindir().join("pgbench"))
            .arg("-h")
            .arg(&cluster.socket_dir)
            .args(["-U", "postgres", "-n", "-c", "1", "-R", "20", "-T"])
            .arg((self.args.rpo_seconds + 30).to_string())
            .arg("postgres")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let rpo_started = Instant::now();
        let mut worst = 0.0f64;
        let mut at_crash = 0.0f64;
        while rpo_started.elapsed() < Duration::from_secs(self.args.rpo_seconds) {
            std::thread::sleep(Duration::from_secs(1));
            let age: f64 = client
                .query_one(
                    "SELECT coalesce(extract(epoch FROM now() - last_archived_time), 0)::float8 \
                     FROM pg_stat_archiver",
                    &[],
                )
                .unwrap()
                .get(0);
            // The first minute may still see the drain of the RTO WAL finishing.
            if rpo_started.elapsed() > Duration::from_secs(5) {
                worst = worst.max(age);
            }
            at_crash = age;
        }
        let _ = load.kill();
        let _ = load.wait();
        drop(client);
        // The crash: kill -9 of the postmaster. What is archived is what a restore gets.
        let pid: i32 = fs::read_to_string(cluster.data.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        unsafe { libc::kill(pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_secs(1));
        let _ = Command::new("pkill")
            .args(["-9", "-f", &cluster.data.display().to_string()])
            .status();
        std::mem::forget(cluster);

        println!("== RTO: restore the backup and replay the archived WAL");
        let target = self.dir.path.join("drill-restored");
        // The RTO's clock starts with nothing left to write back (measure would sync inside
        // it), and the restore leaves its files to PostgreSQL's start to sync, as it would.
        settle();
        let started = Instant::now();
        let restore = measure(
            "sc-backup restore",
            &mut self.ours_restore_command(&repo_url, &target, &name),
            &self.dir.path.join("restore.log"),
        );
        let mut restored = Cluster::adopt(&self.dir, "drill-restored", target.clone());
        // Each replay of our backup: a side copy that archives and schedules nothing.
        let replay_conf = "archive_mode = off\nsc_backup.scheduler = off\narchive_timeout = 0";
        restored.append_conf(replay_conf);
        let replay_started = Instant::now();
        restored.start();
        let mut client = restored.connect();
        restored.wait_promoted(&mut client);
        let replay = replay_started.elapsed().as_secs_f64();
        let rto = started.elapsed().as_secs_f64();
        let restored_sum = query_i64(
            &mut client,
            "SELECT sum(abalance)::bigint FROM pgbench_accounts",
        );
        // The RPO load ran after `expected` was read: the restored state includes at least it.
        assert!(
            restored_sum != 0 || expected == 0,
            "the restored cluster has data"
        );
        table.add(
            &format!(
                "RTO: restore + replay of {} MiB WAL ({data_mib:.0} MiB data)",
                wal_bytes >> 20
            ),
            &[
                ("figure", json!("to a promoted, queryable cluster")),
                ("seconds", round1(rto)),
            ],
        );
        table.add(
            "  of which sc-backup restore",
            &[
                ("figure", json!("files laid down")),
                ("seconds", round1(restore.seconds)),
            ],
        );
        table.add(
            "  of which start + WAL replay + promotion",
            &[
                ("figure", json!("restore_command = sc-backup wal-fetch")),
                ("seconds", round1(replay)),
            ],
        );
        // The same replay with wal-fetch's prefetch off: one serial fetch per segment.
        drop(client);
        restored.stop("fast");
        let _ = fs::remove_dir_all(&target);
        // Restored as the first replay's was: its files left for PostgreSQL's start to sync.
        run_ok(&mut self.ours_restore_command(&repo_url, &target, &name));
        let auto_conf = target.join("postgresql.auto.conf");
        let settings = fs::read_to_string(&auto_conf).unwrap();
        sc_backup_pg_test::write_as_postgres(
            &auto_conf,
            settings
                .replacen(" wal-fetch ", " wal-fetch --prefetch 0 ", 1)
                .as_bytes(),
        );
        // It must reach the same state as the prefetched replay.
        let serial_replay = self.timed_replay("drill-serial", &target, replay_conf, restored_sum);
        table.add(
            "  same replay with wal-fetch --prefetch 0",
            &[
                ("figure", json!("one serial fetch per segment")),
                ("seconds", round1(serial_replay)),
            ],
        );
        // The floor: the same replay with every segment already in pg_wal.
        let _ = fs::remove_dir_all(&target);
        // Restored as the first replay's was: its files left for PostgreSQL's start to sync.
        run_ok(&mut self.ours_restore_command(&repo_url, &target, &name));
        let segments = prefill_pg_wal(&target);
        let floor = self.timed_replay("drill-floor", &target, replay_conf, restored_sum);
        table.add(
            "  same replay, every segment already in pg_wal",
            &[
                (
                    "figure",
                    json!(format!("{segments} segments, restore_command = false")),
                ),
                ("seconds", round1(floor)),
            ],
        );
        let _ = fs::remove_dir_all(&target);
        if let Some((pgbr_async, pgbr_serial, pgbr_floor)) =
            self.pgbackrest_replay(scale, wal_bytes)
        {
            table.add(
                "  pgBackRest: same scale and WAL volume, archive-get async",
                &[
                    (
                        "figure",
                        json!("archive-get-queue-max 128 MiB (8 segments)"),
                    ),
                    ("seconds", round1(pgbr_async)),
                ],
            );
            table.add(
                "  pgBackRest: the same, archive-get serial",
                &[
                    ("figure", json!("archive-async=n")),
                    ("seconds", round1(pgbr_serial)),
                ],
            );
            table.add(
                "  pgBackRest: the same, every segment already in pg_wal",
                &[
                    ("figure", json!("restore_command = false")),
                    ("seconds", round1(pgbr_floor)),
                ],
            );
            table.notes.push(format!(
                "Replay, `pg_ctl start` to a promoted cluster: sc-backup wal-fetch with prefetch \
                 is {:.2}× pgBackRest archive-get async and serial wal-fetch {:.2}× serial \
                 archive-get. pgBackRest replays its own backup and archive of a cluster of the \
                 same scale after the same volume of pgbench WAL (aes-256-cbc, zst 1, \
                 process-max 2; ours age, zstd 1); ours also replays the RPO window's light load. \
                 The rows \"already in pg_wal\" are each tool's floor, PostgreSQL's redo alone: \
                 above it, fetching costs ours {:.2} s with prefetch ({:.2} s serial) and \
                 pgBackRest {:.2} s async ({:.2} s serial).",
                pgbr_async / replay,
                pgbr_serial / serial_replay,
                replay - floor,
                serial_replay - floor,
                pgbr_async - pgbr_floor,
                pgbr_serial - pgbr_floor,
            ));
        }
        table.add(
            "RPO: newest archived WAL age, worst over the window",
            &[
                ("figure", json!("archive_timeout = 60, pgbench -R 20")),
                ("seconds", round1(worst)),
            ],
        );
        table.add(
            "RPO: newest archived WAL age at the kill -9",
            &[
                ("figure", json!("what a restore would lose")),
                ("seconds", round1(at_crash)),
            ],
        );

        println!("== RTO: sc-backup drill on the same repository");
        let sandboxes = self.dir.subdir("drill-sandboxes");
        let mut command = sc_backup(&self.dir.path);
        command
            .env("SC_BACKUP_REPOSITORY", &repo_url)
            .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE)
            .args(["drill", "--backup", &name, "--json", "--sandbox-dir"])
            .arg(&sandboxes);
        let log = self.dir.path.join("drill.log");
        measure("sc-backup drill", &mut command, &log);
        let text = fs::read_to_string(&log).unwrap();
        // The JSON report (stdout) among the progress lines (stderr) in one log.
        let report: Value = text
            .find("{\n")
            .and_then(|start| {
                serde_json::Deserializer::from_str(&text[start..])
                    .into_iter::<Value>()
                    .next()?
                    .ok()
            })
            .unwrap_or_else(|| panic!("no drill report in {text}"));
        let seconds = |field: &str| round1(report[field].as_f64().unwrap_or(f64::NAN));
        table.add(
            "sc-backup drill: RTO, same backup and WAL",
            &[
                (
                    "figure",
                    json!("command start to a promoted cluster that took a write"),
                ),
                ("seconds", seconds("rto_seconds")),
            ],
        );
        for (label, field) in [
            ("  of which restore into the sandbox", "restore_seconds"),
            ("  of which WAL replay", "replay_seconds"),
            ("  of which promotion", "promote_seconds"),
        ] {
            table.add(
                label,
                &[("figure", json!("fsync on")), ("seconds", seconds(field))],
            );
        }
        table.notes.push(
            "The drill replays the RTO WAL plus the RPO window's; its RPO is not shown (it \
             counts the time the first restore took)."
                .to_string(),
        );
        self.tables.push(table);
    }
}
