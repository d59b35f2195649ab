//! Phase `incremental`: incremental and differential backups and their restores.

use std::fs;

use sc_backup_pg_test::Cluster;
use serde_json::json;

use crate::measure::*;
use crate::ours::*;
use crate::pgbackrest::*;
use crate::report::*;
use crate::*;

impl Bench {
    /// Incremental backups: a full backup, then 1 % of pgbench_accounts' rows updated and an
    /// incremental one, twice: the rows of one contiguous aid range (few pages change), then
    /// every 100th aid (spread over about half the table's pages). Ours against pgBackRest's
    /// `--type=incr` and `--type=diff` over the same changes (pgBackRest 2.45 copies a changed
    /// file whole), and the restore of each tool's newest backup against its full one.
    pub(crate) fn incremental(&mut self) {
        let mut table = Table::new(
            &format!(
                "Incremental backups, PostgreSQL {} (pgbench scale {}, 1 % of pgbench_accounts updated)",
                self.server.version(),
                self.args.scale
            ),
            &[
                "backup s",
                "stored MiB",
                "stored vs full",
                "time vs full",
                "restore s",
                "backup peak RSS MiB",
                "vs pgBackRest incr stored",
            ],
        );
        let repo = self.dir.subdir("incremental-repo");
        let repo_url = repo.display().to_string();
        let ours = format!(
            "{}sc_backup.backup_parallelism = 2
autovacuum = off
",
            ours_conf(&repo_url, 2, false)
        );
        let mut cluster = self.ours_cluster("incr", &ours);
        self.pgbench_init(&cluster, self.args.scale);
        let accounts = query_i64(
            &mut cluster.connect(),
            "SELECT count(*) FROM pgbench_accounts",
        );
        let conf = pgbackrest_conf(&self.dir, "pgbackrest-incremental", &cluster, true);
        let pgbackrest_runs = pgbackrest_stanza_create(&conf).is_some();
        let pgbackrest_archive = format!(
            "archive_library = ''
archive_command = 'pgbackrest --config={} --stanza=bench archive-push %p'
",
            conf.display()
        );
        // One archiver at a time: each tool's backups wait for their WAL in their own archive.
        let archive_to = |cluster: &mut Cluster, settings: &str| {
            cluster.stop("fast");
            cluster.append_conf(settings);
            cluster.start();
        };
        let ours_archive = "archive_command = ''\narchive_library = 'sc_backup'\n";
        let pgbackrest_backup = |kind: &str| -> (Measured, u64) {
            let before = du(&self.dir.path.join("pgbackrest-incremental/repo/backup"));
            let measured = measure(
                &format!("pgbackrest {kind}"),
                pgbackrest(&conf)
                    .arg(format!("--type={kind}"))
                    .arg("backup"),
                &self.dir.path.join("pgbackrest-incremental.log"),
            );
            let after = du(&self.dir.path.join("pgbackrest-incremental/repo/backup"));
            (measured, after - before)
        };

        println!("== full backups");
        let (full_name, full_s, full_rss, full_stored) =
            Self::ours_backup_of_kind(&cluster, "full");
        let mut pgbackrest_full = None;
        if pgbackrest_runs {
            archive_to(&mut cluster, &pgbackrest_archive);
            pgbackrest_full = Some(pgbackrest_backup("full"));
            archive_to(&mut cluster, ours_archive);
        }

        let mut steps = Vec::new();
        for (label, predicate) in [
            ("contiguous", format!("aid <= {}", accounts / 100)),
            ("every 100th aid", "aid % 100 = 0".to_string()),
        ] {
            println!("== 1 % of the rows updated ({label})");
            let mut client = cluster.connect();
            client
                .batch_execute(&format!(
                    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE {predicate}"
                ))
                .unwrap();
            client.batch_execute("CHECKPOINT").unwrap();
            drop(client);
            let (name, seconds, rss, stored) = Self::ours_backup_of_kind(&cluster, "incremental");
            let mut pgbackrest_step = None;
            if pgbackrest_runs {
                archive_to(&mut cluster, &pgbackrest_archive);
                let incr = pgbackrest_backup("incr");
                let diff = pgbackrest_backup("diff");
                archive_to(&mut cluster, ours_archive);
                pgbackrest_step = Some((incr, diff));
            }
            steps.push((label, name, seconds, rss, stored, pgbackrest_step));
        }
        cluster.stop("fast");

        // Restores of the full backup and of the newest incremental one (its chain of three).
        let target = self.dir.path.join("restored-incremental");
        let full_restore = self.ours_restore(&repo_url, &target, &full_name);
        let _ = fs::remove_dir_all(&target);
        let newest = steps.last().map(|step| step.1.clone()).unwrap_or_default();
        let newest_restore = self.ours_restore(&repo_url, &target, &newest);
        let _ = fs::remove_dir_all(&target);
        // pgBackRest restores its newest backup: the last differential one.
        let pgbackrest_restore = || {
            let restore_spool = self.dir.subdir("pgbackrest-incremental-restore-spool");
            let measured = measure_restore(
                "pgbackrest restore",
                pgbackrest(&conf)
                    .arg(format!("--pg1-path={}", target.display()))
                    .arg(format!("--spool-path={}", restore_spool.display()))
                    .arg("restore"),
                &self.dir.path.join("pgbackrest-incremental-restore.log"),
                &target,
            );
            let _ = fs::remove_dir_all(&target);
            measured
        };
        let full_mib = full_stored as f64 / MIB;
        table.add(
            "sc_backup full",
            &[
                ("backup s", round2(full_s)),
                ("stored MiB", round1(full_mib)),
                ("restore s", round2(full_restore.seconds)),
                ("backup peak RSS MiB", round1(full_rss)),
            ],
        );
        for (index, (label, _, seconds, rss, stored, pgbackrest_step)) in steps.iter().enumerate() {
            let mut figures = vec![
                ("backup s", round2(*seconds)),
                ("stored MiB", round1(*stored as f64 / MIB)),
                (
                    "stored vs full",
                    json!(format!(
                        "{:.1} %",
                        100.0 * *stored as f64 / full_stored as f64
                    )),
                ),
                (
                    "time vs full",
                    json!(format!("{:.0} %", 100.0 * seconds / full_s)),
                ),
                ("backup peak RSS MiB", round1(*rss)),
            ];
            if index + 1 == steps.len() {
                figures.push(("restore s", round2(newest_restore.seconds)));
            }
            if let Some(((_, incr_stored), _)) = pgbackrest_step {
                figures.push((
                    "vs pgBackRest incr stored",
                    json!(format!(
                        "1/{:.1}",
                        *incr_stored as f64 / (*stored).max(1) as f64
                    )),
                ));
            }
            table.add(&format!("sc_backup incremental, {label}"), &figures);
        }
        if let Some((full, full_stored_pgbr)) = &pgbackrest_full {
            table.add(
                "pgBackRest full (zst 1, process-max 2)",
                &[
                    ("backup s", round2(full.seconds)),
                    ("stored MiB", round1(*full_stored_pgbr as f64 / MIB)),
                    ("backup peak RSS MiB", round1(full.peak_rss_mib)),
                ],
            );
            let full_stored_pgbr = *full_stored_pgbr as f64;
            let last = steps.len().saturating_sub(1);
            for (step, (label, _, _, _, _, pgbackrest_step)) in steps.iter().enumerate() {
                let Some(((incr, incr_stored), (diff, diff_stored))) = pgbackrest_step else {
                    continue;
                };
                for (kind, measured, stored) in
                    [("incr", incr, incr_stored), ("diff", diff, diff_stored)]
                {
                    let mut figures = vec![
                        ("backup s", round2(measured.seconds)),
                        ("stored MiB", round1(*stored as f64 / MIB)),
                        (
                            "stored vs full",
                            json!(format!(
                                "{:.1} %",
                                100.0 * *stored as f64 / full_stored_pgbr
                            )),
                        ),
                        (
                            "time vs full",
                            json!(format!("{:.0} %", 100.0 * measured.seconds / full.seconds)),
                        ),
                        ("backup peak RSS MiB", round1(measured.peak_rss_mib)),
                    ];
                    if step == last && kind == "diff" {
                        figures.push(("restore s", round2(pgbackrest_restore().seconds)));
                    }
                    table.add(&format!("pgBackRest --type={kind}, {label}"), &figures);
                }
            }
        } else {
            self.note_skipped(&mut table, &["pgBackRest incr / diff".to_string()], None);
        }
        table.notes.push(format!(
            "One cluster, autovacuum off, a CHECKPOINT after each UPDATE. Each tool archives \
             while it backs up (the archiver is switched between them), so both see the same \
             changes: the second pair of incremental backups holds the second UPDATE only, the \
             differential one both. Stored bytes are what each backup added to its repository \
             (for pgBackRest, the growth of repo/backup). Our incremental backups read every \
             relation page and store those with an LSN at or after the parent's start; \
             pgBackRest 2.45 stores each changed file (1 GiB segments) whole. Restore s: ours of \
             the full backup, and of the newest incremental one through its chain of three; \
             pgBackRest's of its newest backup (the last differential). {} \
             accounts, so 1 % is {} rows.",
            accounts,
            accounts / 100
        ));
        self.tables.push(table);
    }
}
