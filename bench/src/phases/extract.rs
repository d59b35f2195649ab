//! Phase `extract`: tables as of a time, through a sandbox.

use std::fs;
use std::time::Duration;

use sc_backup_pg_test::{as_postgres, pg_bindir, run_ok, sc_backup};

use crate::measure::*;
use crate::ours::*;
use crate::report::*;
use crate::*;

impl Bench {
    /// Table-level PITR: one table of the large database as of a time, copied into a new
    /// schema of the running cluster through a sandbox (restore + replay + copy).
    pub(crate) fn extract(&mut self) {
        let mut table = Table::new(
            &format!(
                "Table-level point-in-time recovery (sc-backup extract), PostgreSQL {}",
                self.server.version()
            ),
            &["seconds"],
        );
        let repo = self.dir.subdir("extract-repo");
        let repo_url = repo.display().to_string();
        let mut cluster = self.ours_cluster("extract", &ours_conf(&repo_url, 2, false));
        self.pgbench_init(&cluster, self.args.scale);
        let data_mib = Self::pgdata_bytes(&cluster) as f64 / MIB;
        let mut client = cluster.connect();
        let (name, _, _, _) = Self::ours_backup(&cluster);
        let pgbench = |seconds: &str| {
            run_ok(
                as_postgres(pg_bindir().join("pgbench"))
                    .arg("-h")
                    .arg(&cluster.socket_dir)
                    .args(["-U", "postgres", "-n", "-c", "2", "-T", seconds, "postgres"]),
            );
        };
        pgbench("30");
        let target: String = client
            .query_one("SELECT clock_timestamp()::text", &[])
            .unwrap()
            .get(0);
        let expected = query_i64(
            &mut client,
            "SELECT sum(abalance)::bigint FROM pgbench_accounts",
        );
        std::thread::sleep(Duration::from_secs(1));
        pgbench("10");
        let wal_mib = query_i64(
            &mut client,
            "SELECT ((pg_current_wal_lsn() - start_lsn::pg_lsn) / 1048576)::bigint \
             FROM sc_list_backups() ORDER BY start_lsn DESC LIMIT 1",
        );
        cluster.switch_and_wait_archived(&mut client);

        println!("== sc-backup extract of pgbench_accounts as of {target}");
        let sandboxes = self.dir.subdir("extract-sandboxes");
        let dbname = format!(
            "host={} user=postgres dbname=postgres",
            cluster.socket_dir.display()
        );
        let mut command = sc_backup(&self.dir.path);
        command
            .env("SC_BACKUP_REPOSITORY", &repo_url)
            .args([
                "extract",
                "--backup",
                &name,
                "--database",
                "postgres",
                "--table",
                "public.pgbench_accounts",
                "--target-time",
                &target,
                "--into-schema",
                "recovered",
                "--dbname",
                &dbname,
                "--sandbox-dir",
            ])
            .arg(&sandboxes);
        let log = self.dir.path.join("extract.log");
        let measured = measure("sc-backup extract", &mut command, &log);
        let got = query_i64(
            &mut client,
            "SELECT sum(abalance)::bigint FROM recovered.pgbench_accounts",
        );
        assert_eq!(
            got, expected,
            "the extracted table is the table at the target"
        );
        let text = fs::read_to_string(&log).unwrap();
        let after = |marker: &str| -> f64 {
            text.split(marker)
                .nth(1)
                .and_then(|rest| rest.split('s').next())
                .and_then(|number| number.trim().parse().ok())
                .unwrap_or(f64::NAN)
        };
        let (restore, replay, promote) = (
            after("restored in "),
            after("sandbox up: replay "),
            after(", promotion "),
        );
        table.add(
            &format!(
                "pgbench_accounts (scale {}, {data_mib:.0} MiB database, {wal_mib} MiB WAL after the backup): total",
                self.args.scale
            ),
            &[("seconds", round1(measured.seconds))],
        );
        for (label, value) in [
            ("  of which restore into the sandbox", restore),
            ("  of which start, WAL replay to the target", replay),
            ("  of which promotion", promote),
            (
                "  of which the copy (pg_dump into psql) and the rest",
                measured.seconds - restore - replay - promote,
            ),
        ] {
            table.add(label, &[("seconds", round1(value))]);
        }
        table.notes.push(format!(
            "The sandbox runs with fsync off (it is thrown away); the copy is one transaction \
             with the indexes and constraints built after the rows. sum(abalance) of the \
             extracted table equals its value at the target ({expected}). The largest \
             resident set among sc-backup and its children, the sandbox server's processes \
             (128 MB of shared buffers) included: {:.1} MiB.",
            measured.peak_rss_mib
        ));
        drop(client);
        cluster.stop("fast");
        self.tables.push(table);
    }
}
