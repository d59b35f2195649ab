//! Phase `backup`: full base backups and restores.

use std::fs;
use std::time::Duration;

use sc_backup_pg_test::{as_postgres, pg_bindir};

use crate::measure::*;
use crate::ours::*;
use crate::pgbackrest::*;
use crate::report::*;
use crate::*;

impl Bench {
    pub(crate) fn backup_restore(&mut self) {
        let mut table = Table::new(
            &format!(
                "Base backup and restore, PostgreSQL {} (pgbench database)",
                self.server.version()
            ),
            &[
                "PGDATA MiB",
                "backup s",
                "backup MB/s",
                "restore s",
                "restore MB/s",
                "restore + sync s",
                "stored MiB",
                "backup peak RSS MiB",
                "restore peak RSS MiB",
                "backup vs pgBackRest",
                "restore + sync vs pgBackRest",
            ],
        );
        let repo = self.dir.subdir("backup-repo");
        let repo_url = repo.display().to_string();
        // Unencrypted first: pgBackRest and pg_basebackup do not encrypt either.
        let mut cluster = self.ours_cluster(
            "db",
            &format!(
                "{}sc_backup.backup_parallelism = 2\n",
                ours_conf(&repo_url, 2, false)
            ),
        );

        // (method, figures, backup seconds, restore + sync seconds)
        let mut rows: Vec<(String, Figures, f64, f64)> = Vec::new();
        for scale in [self.args.small_scale, self.args.scale] {
            self.pgbench_init(&cluster, scale);
            let pgdata = Self::pgdata_bytes(&cluster);
            let pgdata_mib = pgdata as f64 / MIB;
            let mb = pgdata as f64 / 1e6;
            println!("== sc_backup at scale {scale} ({pgdata_mib:.0} MiB)");
            level_memory(Some(&cluster.data));
            let (name, backup_s, backup_rss, stored) = Self::ours_backup(&cluster);
            let target = self.dir.path.join("restored-ours");
            let restore = self.ours_restore(&repo_url, &target, &name);
            let _ = fs::remove_dir_all(&target);
            rows.push((
                format!("sc_backup (zstd 1, 2 workers), scale {scale}"),
                backup_figures(pgdata_mib, mb, (backup_s, backup_rss), &restore, stored),
                backup_s,
                restore.seconds + restore.sync_seconds,
            ));
        }
        // The others at the large size only.
        let unencrypted_rss = rows
            .last()
            .and_then(|(_, figures, _, _)| {
                figures
                    .iter()
                    .find(|(name, _)| *name == "backup peak RSS MiB")
                    .and_then(|(_, value)| value.as_f64())
            })
            .unwrap_or(f64::NAN);
        let pgdata = Self::pgdata_bytes(&cluster);
        let pgdata_mib = pgdata as f64 / MIB;
        let mb = pgdata as f64 / 1e6;
        let (encrypted_first_rss, encrypted_second_rss) = {
            println!("== sc_backup with encryption at scale {}", self.args.scale);
            let encrypted_repo = self.dir.subdir("backup-repo-age");
            let url = encrypted_repo.display().to_string();
            let mut client = cluster.connect();
            cluster.append_conf(&ours_conf(&url, 2, true));
            client.execute("SELECT pg_reload_conf()", &[]).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            level_memory(Some(&cluster.data));
            let mut backend = cluster.connect();
            let (name, backup_s, backup_rss, stored) = Self::ours_backup_in(&mut backend, "full");
            let target = self.dir.path.join("restored-ours");
            let restore = self.ours_restore(&url, &target, &name);
            let _ = fs::remove_dir_all(&target);
            // The steady state: the same backend's next backup finds the key unwrapped.
            level_memory(Some(&cluster.data));
            let (_, _, second_rss, _) = Self::ours_backup_in(&mut backend, "full");
            rows.push((
                format!(
                    "sc_backup (zstd 1, age, 2 workers), scale {}",
                    self.args.scale
                ),
                backup_figures(pgdata_mib, mb, (backup_s, backup_rss), &restore, stored),
                backup_s,
                restore.seconds + restore.sync_seconds,
            ));
            (backup_rss, second_rss)
        };
        for (label, compress, suffix) in [
            ("pg_basebackup -Ft -z (gzip 6) + tar -x", true, ".tar.gz"),
            ("pg_basebackup -Ft + tar -x", false, ".tar"),
        ] {
            println!("== {label}");
            let out = self.dir.subdir("basebackup");
            let mut command = as_postgres(pg_bindir().join("pg_basebackup"));
            command
                .arg("-h")
                .arg(&cluster.socket_dir)
                .args(["-U", "postgres", "-c", "fast", "-Ft", "-D"])
                .arg(&out);
            if compress {
                command.arg("-z");
            }
            level_memory(Some(&cluster.data));
            let backup = measure(label, &mut command, &self.dir.path.join("basebackup.log"));
            let stored = du(&out);
            let target = self.dir.subdir("restored-basebackup");
            let script = format!(
                "tar -xf {out}/base{suffix} -C {t} && tar -xf {out}/pg_wal{suffix} -C {t}/pg_wal",
                out = out.display(),
                t = target.display()
            );
            let restore = measure_restore(
                "tar -x",
                as_postgres("bash").args(["-c", &script]),
                &self.dir.path.join("tar.log"),
                &target,
            );
            let _ = fs::remove_dir_all(&out);
            let _ = fs::remove_dir_all(&target);
            rows.push(measured_row(
                label, pgdata_mib, mb, &backup, &restore, stored,
            ));
        }

        println!("== pgBackRest backup / restore");
        let conf = pgbackrest_conf(&self.dir, "pgbackrest-backup", &cluster, true);
        let mut measured_anchor = None;
        if pgbackrest_stanza_create(&conf).is_some() {
            // pgBackRest checks that its own archive receives the backup's WAL. A restart,
            // not a reload: the postmaster would restart the archiver only at its next idle
            // wake-up.
            cluster.stop("fast");
            cluster.append_conf(&format!(
                "archive_library = ''\narchive_command = 'pgbackrest --config={} --stanza=bench archive-push %p'\n",
                conf.display()
            ));
            cluster.start();
            level_memory(Some(&cluster.data));
            let backup = measure(
                "pgbackrest backup",
                pgbackrest(&conf).args(["--type=full", "backup"]),
                &self.dir.path.join("pgbackrest-backup.log"),
            );
            let stored = du(&self.dir.path.join("pgbackrest-backup/repo/backup"));
            let target = self.dir.subdir("restored-pgbackrest");
            // Its own spool: restore empties the spool's archive queue, which the running
            // cluster's asynchronous archive-push is writing into.
            let restore_spool = self.dir.subdir("pgbackrest-restore-spool");
            let restore = measure_restore(
                "pgbackrest restore",
                pgbackrest(&conf)
                    .arg(format!("--pg1-path={}", target.display()))
                    .arg(format!("--spool-path={}", restore_spool.display()))
                    .arg("restore"),
                &self.dir.path.join("pgbackrest-restore.log"),
                &target,
            );
            let _ = fs::remove_dir_all(&target);
            measured_anchor = Some((backup.seconds, restore.seconds + restore.sync_seconds));
            rows.push(measured_row(
                "pgBackRest backup / restore (zst 1, process-max 2)",
                pgdata_mib,
                mb,
                &backup,
                &restore,
                stored,
            ));
        }
        let anchor = self.anchor("backup", measured_anchor.map(|(seconds, _)| mb / seconds));
        let restore_anchor =
            self.anchor("restore", measured_anchor.map(|(_, seconds)| mb / seconds));
        let large = format!("scale {}", self.args.scale);
        for (label, mut figures, seconds, restore_seconds) in rows {
            // Ratios only between runs over the same data.
            if label.contains(&large) || !label.starts_with("sc_backup") {
                if let Some((major, anchor)) = anchor {
                    figures.push((
                        "backup vs pgBackRest",
                        self.ratio(major, (mb / seconds) / anchor),
                    ));
                }
                if let Some((major, anchor)) = restore_anchor {
                    figures.push((
                        "restore + sync vs pgBackRest",
                        self.ratio(major, (mb / restore_seconds) / anchor),
                    ));
                }
            }
            table.add(&label, &figures);
        }
        if measured_anchor.is_none() {
            self.note_skipped(
                &mut table,
                &["pgBackRest backup / restore".to_string()],
                anchor,
            );
        }
        table.notes.push(format!(
            "sc_backup's backup peak RSS is the backend's private resident memory (RssAnon + \
             RssFile, sampled every 10 ms during `SELECT sc_backup()`; the shared buffers it \
             maps are not counted); the others' are wait4's ru_maxrss of the command and its \
             children. The database is the same cluster, grown from scale {} to {} between \
             the first two rows. With encryption, opening the repository unwraps its key with \
             scrypt (N = 2^16, 64 MiB), most of that row's extra peak. Every backup and restore \
             starts from the same memory: dirty pages written back, the page cache dropped, \
             the database read back in before a backup. \"restore + sync\" adds the writeback \
             of the restored files (`sync -f`) after the command: pgBackRest and ours fsync \
             before they exit (little is left), tar leaves it to PostgreSQL's start.",
            self.args.small_scale, self.args.scale
        ));
        table.notes.push(format!(
            "A second encrypted full backup in the backend of the first (no scrypt: the first \
             call created the repository's key or unwrapped it) peaked at {encrypted_second_rss:.1} MiB, against \
             {encrypted_first_rss:.1} MiB for the first call: {:.2}× the unencrypted backup's \
             {unencrypted_rss:.1} MiB.",
            encrypted_second_rss / unencrypted_rss
        ));
        cluster.stop("fast");
        self.tables.push(table);
    }
}
