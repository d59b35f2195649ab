//! Phase `dump`: the playbook's logical dumps and their restores.

use std::fs;
use std::path::Path;
use std::process::Command;

use sc_backup_pg_test::postgres::{Config, NoTls};
use sc_backup_pg_test::{as_postgres, pg_bindir, run_ok, sc_backup};

use crate::measure::*;
use crate::ours::*;
use crate::report::*;
use crate::*;

impl Bench {
    /// Logical dumps: `sc-backup dump` / `restore-dump` against the plain pipelines a DBA
    /// would otherwise run (`pg_dump | gzip`, `pg_dump | zstd`, `pg_dump -Fc`, and their
    /// restores), on the same database, in the same run, each pair interleaved three times.
    pub(crate) fn dumps(&mut self) {
        let mut table = Table::new(
            &format!(
                "Logical dumps (pg_dump {}), median of 3 interleaved runs",
                self.server.version()
            ),
            &["seconds", "spread", "stored MiB", "vs pipeline"],
        );
        let repo = self.dir.subdir("dump-repo");
        let repo_url = repo.display().to_string();
        let files = self.dir.subdir("dump-files");
        let cluster = self.ours_cluster("dump", &ours_conf(&repo_url, 2, false));
        let socket = cluster.socket_dir.display().to_string();
        let bindir = pg_bindir();
        let shell = |script: String| {
            // bash with pipefail: a failing pg_dump or decompressor fails the pipeline.
            let mut command = as_postgres("bash");
            command
                .args(["-o", "pipefail", "-c", &script])
                .env("PGHOST", &socket)
                .env("PGUSER", "postgres");
            command
        };
        let ours = |compression: &str, args: &[&str]| {
            let mut command = sc_backup(&self.dir.path);
            command
                .env("SC_BACKUP_REPOSITORY", &repo_url)
                .env("SC_BACKUP_COMPRESSION", compression)
                .env("PGHOST", &socket)
                .env("PGUSER", "postgres")
                .args(args);
            command
        };
        let log = self.dir.path.join("dump.log");
        let median = |mut values: Vec<f64>| -> (f64, f64) {
            values.sort_by(f64::total_cmp);
            (
                values[values.len() / 2],
                values[values.len() - 1] - values[0],
            )
        };
        for scale in [self.args.small_scale, self.args.scale] {
            self.pgbench_init(&cluster, scale);
            let mut client = cluster.connect();
            let data_mib = Self::pgdata_bytes(&cluster) as f64 / MIB;
            let pg_dump = bindir.join("pg_dump").display().to_string();
            let psql = bindir.join("psql").display().to_string();
            let pg_restore = bindir.join("pg_restore").display().to_string();
            let gz = files.join("plain.sql.gz").display().to_string();
            let zst = files.join("plain.sql.zst").display().to_string();
            let custom = files.join("custom.dump").display().to_string();
            // (label, compressor, the pipeline's dump, our dump's compression)
            let pairs = [
                (
                    "gzip (level 6)",
                    format!("{pg_dump} postgres | gzip -6 > {gz}"),
                    "gzip",
                ),
                (
                    "zstd (level 3)",
                    format!("{pg_dump} postgres | zstd -q -3 > {zst}"),
                    "zstd",
                ),
            ];
            let mut restore_from = Vec::new();
            for (label, pipeline, compression) in &pairs {
                let (mut theirs, mut mine) = (Vec::new(), Vec::new());
                let mut ours_name = String::new();
                let output = if *compression == "gzip" { &gz } else { &zst };
                for _ in 0..3 {
                    let _ = fs::remove_file(output);
                    theirs.push(measure(label, &mut shell(pipeline.clone()), &log).seconds);
                    // Only the last of our dumps stays (expiring the others is not measured).
                    if !ours_name.is_empty() {
                        run_ok(&mut ours(compression, &["delete", &ours_name]));
                    }
                    mine.push(
                        measure(
                            "sc-backup dump",
                            &mut ours(
                                compression,
                                &["dump", "--database", "postgres", "--no-globals"],
                            ),
                            &log,
                        )
                        .seconds,
                    );
                    let printed = fs::read_to_string(&log).unwrap_or_default();
                    ours_name = printed
                        .split(" into ")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .unwrap_or_default()
                        .to_string();
                }
                let stored_theirs = du(Path::new(output));
                let stored_ours = du(&repo.join("dumps").join(&ours_name));
                let (their_median, their_spread) = median(theirs);
                let (our_median, our_spread) = median(mine);
                table.add(
                    &format!("scale {scale} ({data_mib:.0} MiB): pg_dump | {label}"),
                    &[
                        ("seconds", round1(their_median)),
                        ("spread", round1(their_spread)),
                        ("stored MiB", round1(stored_theirs as f64 / MIB)),
                    ],
                );
                table.add(
                    &format!("scale {scale}: sc-backup dump, {label}"),
                    &[
                        ("seconds", round1(our_median)),
                        ("spread", round1(our_spread)),
                        ("stored MiB", round1(stored_ours as f64 / MIB)),
                        ("vs pipeline", round2(our_median / their_median)),
                    ],
                );
                restore_from.push((label.to_string(), compression.to_string(), ours_name));
            }
            let custom_dump = measure(
                "pg_dump -Fc",
                &mut shell(format!(
                    "rm -f {custom}; {pg_dump} -Fc -f {custom} postgres"
                )),
                &log,
            );
            table.add(
                &format!("scale {scale}: pg_dump -Fc (gzip)"),
                &[
                    ("seconds", round1(custom_dump.seconds)),
                    ("stored MiB", round1(du(Path::new(&custom)) as f64 / MIB)),
                ],
            );

            // Restores into a new database each time, dropped after.
            let expected = query_i64(
                &mut client,
                "SELECT sum(abalance)::bigint FROM pgbench_accounts",
            );
            let mut restore = |label: &str, command: &mut Command| -> f64 {
                client
                    .batch_execute("DROP DATABASE IF EXISTS restored")
                    .unwrap();
                let seconds = measure(label, command, &log).seconds;
                let mut restored = Config::new()
                    .host_path(&cluster.socket_dir)
                    .user("postgres")
                    .dbname("restored")
                    .connect(NoTls)
                    .unwrap();
                assert_eq!(
                    query_i64(
                        &mut restored,
                        "SELECT sum(abalance)::bigint FROM pgbench_accounts"
                    ),
                    expected,
                    "{label} restored the database"
                );
                seconds
            };
            for (label, compression, name) in &restore_from {
                let file = if compression == "gzip" { &gz } else { &zst };
                let decompress = if compression == "gzip" {
                    "gunzip -c"
                } else {
                    "zstd -dc"
                };
                let (mut theirs, mut mine) = (Vec::new(), Vec::new());
                for _ in 0..3 {
                    theirs.push(restore(
                        "pipeline restore",
                        &mut shell(format!(
                            "{psql} -X -q -c 'CREATE DATABASE restored' postgres && \
                             {decompress} {file} | {psql} -X -q -v ON_ERROR_STOP=1 -1 -f - restored >/dev/null"
                        )),
                    ));
                    mine.push(restore(
                        "sc-backup restore-dump",
                        &mut ours(
                            compression,
                            &["restore-dump", name, "--database", "restored"],
                        ),
                    ));
                }
                let (their_median, their_spread) = median(theirs);
                let (our_median, our_spread) = median(mine);
                table.add(
                    &format!("scale {scale}: {decompress} | psql -1 ({label})"),
                    &[
                        ("seconds", round1(their_median)),
                        ("spread", round1(their_spread)),
                    ],
                );
                table.add(
                    &format!("scale {scale}: sc-backup restore-dump ({label})"),
                    &[
                        ("seconds", round1(our_median)),
                        ("spread", round1(our_spread)),
                        ("vs pipeline", round2(our_median / their_median)),
                    ],
                );
            }
            let custom_restore = restore(
                "pg_restore",
                &mut shell(format!(
                    "{psql} -X -q -c 'CREATE DATABASE restored' postgres && {pg_restore} -1 -d restored {custom}"
                )),
            );
            table.add(
                &format!("scale {scale}: pg_restore -1 (custom format)"),
                &[("seconds", round1(custom_restore))],
            );
            client
                .batch_execute("DROP DATABASE IF EXISTS restored")
                .unwrap();
        }
        table.notes.push(
            "The pipelines write a local file; sc-backup writes into a local repository (fsync'd \
             on commit) with the .sha256 and .meta, and restore-dump first checks the stored \
             file's SHA-256, loads in one transaction and reports every table's rows. Each \
             restore's sum(abalance) equals the source's."
                .into(),
        );
        self.tables.push(table);
    }
}
