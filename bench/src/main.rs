//! sc_backup's benchmark: WAL archiving, base backup and restore, side by side with cp,
//! basic_archive, pg_basebackup and pgBackRest, on this machine and in one run.
//!
//! Machines like ours are noisy, so every figure is reported next to the others measured in
//! the same run, and the comparison is made as a ratio. Run through `bench/run.sh`, which
//! builds the release binaries first.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use sc_backup_core::pg::server_binaries::ServerBinaries;
use sc_backup_pg_test::postgres::{Client, Config, NoTls};
use sc_backup_pg_test::{
    as_postgres, pg_bindir, run_ok, sc_backup, use_pg_bindir, Cluster, ClusterOptions, S3Server,
    TestDir,
};
use serde_json::{json, Value};

mod network;
use network::{LatencyProxy, TlsTerminator};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks sc_backup against pgBackRest and PostgreSQL's own tools")]
struct Args {
    /// WAL segments (16 MiB) in the archive backlog
    #[arg(long, default_value_t = 128)]
    segments: u32,
    /// pgbench scale of the large database (about 15 MiB per unit)
    #[arg(long, default_value_t = 200)]
    scale: u32,
    /// pgbench scale of the small database (peak memory must not grow with size)
    #[arg(long, default_value_t = 50)]
    small_scale: u32,
    /// Seconds of light load for the RPO figure (archive_timeout = 60)
    #[arg(long, default_value_t = 130)]
    rpo_seconds: u64,
    /// Small sizes everywhere: checks the harness in a few minutes
    #[arg(long)]
    quick: bool,
    /// Phases to run (default all): wal, backup, incremental, drill, extract, dump, s3
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// PostgreSQL majors, e.g. 15,18: every phase on the first, WAL drain and backup on the
    /// others (the extension must be installed for each; bench/run.sh does that)
    #[arg(long, value_delimiter = ',', default_value = "15")]
    pg: Vec<u32>,
    /// Where results.md and results.json go
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Latency added to each S3 request in the S3 phase's recovery (a delaying proxy in front
    /// of s3s-fs), in milliseconds: what a real region costs
    #[arg(long, default_value_t = 20)]
    s3_latency_ms: u64,
}

const PASSPHRASE: &str = "bench-passphrase-not-secret";
const MIB: f64 = 1024.0 * 1024.0;

type Figures = Vec<(&'static str, Value)>;

/// One row of a result table.
struct Row {
    method: String,
    figures: BTreeMap<&'static str, Value>,
}

struct Table {
    title: String,
    columns: Vec<&'static str>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    fn new(title: &str, columns: &[&'static str]) -> Table {
        Table {
            title: title.into(),
            columns: columns.to_vec(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn add(&mut self, method: &str, figures: &[(&'static str, Value)]) {
        let row = Row {
            method: method.into(),
            figures: figures.iter().cloned().collect(),
        };
        println!("  {:<44} {}", row.method, render_figures(&row.figures));
        self.rows.push(row);
    }

    fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n| method |", self.title);
        for column in &self.columns {
            out.push_str(&format!(" {column} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(self.columns.len()));
        out.push('\n');
        for row in &self.rows {
            // A shell pipeline's "|" would end the cell.
            out.push_str(&format!("| {} |", row.method.replace('|', "\\|")));
            for column in &self.columns {
                let cell = row.figures.get(column).map(cell).unwrap_or_default();
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("\n{note}\n"));
        }
        out
    }

    fn json(&self) -> Value {
        json!({
            "title": self.title,
            "notes": self.notes,
            "rows": self.rows.iter().map(|row| {
                let mut object = serde_json::Map::new();
                object.insert("method".into(), json!(row.method));
                for (name, value) in &row.figures {
                    object.insert((*name).into(), value.clone());
                }
                Value::Object(object)
            }).collect::<Vec<_>>(),
        })
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 && f.abs() < 10.0 => format!("{f:.2}"),
            Some(f) if f.fract() != 0.0 => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_figures(figures: &BTreeMap<&'static str, Value>) -> String {
    figures
        .iter()
        .map(|(name, value)| format!("{name}={}", cell(value)))
        .collect::<Vec<_>>()
        .join("  ")
}

/// A row of a tool timed with [`measure`]: (method, figures, backup seconds, restore + sync
/// seconds).
fn measured_row(
    label: &str,
    pgdata_mib: f64,
    mb: f64,
    backup: &Measured,
    restore: &Measured,
    stored_bytes: u64,
) -> (String, Figures, f64, f64) {
    (
        label.to_string(),
        backup_figures(
            pgdata_mib,
            mb,
            (backup.seconds, backup.peak_rss_mib),
            restore,
            stored_bytes,
        ),
        backup.seconds,
        restore.seconds + restore.sync_seconds,
    )
}

/// One backup-and-restore row's figures; `mb` is PGDATA in MB (10^6 bytes).
fn backup_figures(
    pgdata_mib: f64,
    mb: f64,
    backup: (f64, f64),
    restore: &Measured,
    stored_bytes: u64,
) -> Figures {
    let (backup_seconds, backup_peak_mib) = backup;
    vec![
        ("PGDATA MiB", round1(pgdata_mib)),
        ("backup s", round2(backup_seconds)),
        ("backup MB/s", round1(mb / backup_seconds)),
        ("restore s", round2(restore.seconds)),
        ("restore MB/s", round1(mb / restore.seconds)),
        (
            "restore + sync s",
            round2(restore.seconds + restore.sync_seconds),
        ),
        ("stored MiB", round1(stored_bytes as f64 / MIB)),
        ("backup peak RSS MiB", round1(backup_peak_mib)),
        ("restore peak RSS MiB", round1(restore.peak_rss_mib)),
    ]
}

fn round1(x: f64) -> Value {
    json!((x * 10.0).round() / 10.0)
}

fn round2(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

/// Bytes of the regular files under `path`.
fn du(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}

/// Wall time and peak resident memory of a command and everything it waited for.
struct Measured {
    seconds: f64,
    peak_rss_mib: f64,
    /// For a restore: how long writing back what it left in the page cache took after it
    /// finished (`sync -f` of its target), which PostgreSQL's start would otherwise pay.
    sync_seconds: f64,
}

/// Writes back every dirty page before a timed step, so that no step pays for the writeback
/// of the one before it (pgbench's load, a restore's files).
fn settle() {
    run_ok(&mut Command::new("sync"));
}

// The child is reaped by wait4, which also reports its peak memory.
#[allow(clippy::zombie_processes)]
fn measure(what: &str, command: &mut Command, log: &Path) -> Measured {
    let log_file = fs::File::create(log).unwrap();
    settle();
    let started = Instant::now();
    let child = command
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: could not start {command:?}: {e}"));
    let mut status = 0;
    // Safety: plain wait4 on our own child; its rusage covers the descendants it waited for
    // (runuser's child, pgBackRest's local processes), and ru_maxrss is their maximum.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    assert!(waited > 0, "{what}: wait4 failed");
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        panic!(
            "{what} failed (status {status}): {}",
            fs::read_to_string(log).unwrap_or_default()
        );
    }
    Measured {
        seconds,
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        sync_seconds: 0.0,
    }
}

/// Starts a timed backup or restore from the same memory every time: dirty pages written
/// back, the page cache dropped, then `warm` read back in (a backup reads a database that is
/// in memory; a restore host has its memory free and reads a repository that is not).
/// Without it a restore ran 5.2 s when it followed pgbench's load and 1.9 s after another
/// restore's files were removed: the kernel reclaiming page cache, not the tool. Needs root
/// (the benchmark runs as root); otherwise only the writeback happens.
fn level_memory(warm: Option<&Path>) {
    settle();
    if fs::write("/proc/sys/vm/drop_caches", "1").is_err() {
        eprintln!("bench: could not drop the page cache (not root?): timings may drift");
    }
    if let Some(path) = warm {
        // cat, not tar to /dev/null: GNU tar skips reading when it writes to /dev/null.
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg("find \"$1\" -type f -exec cat {} + > /dev/null")
                .arg("sh")
                .arg(path),
        );
    }
}

/// A restore timed from level memory ([`level_memory`]), then its target written back.
fn measure_restore(what: &str, command: &mut Command, log: &Path, target: &Path) -> Measured {
    level_memory(None);
    let mut measured = measure(what, command, log);
    let started = Instant::now();
    run_ok(Command::new("sync").arg("-f").arg(target));
    measured.sync_seconds = started.elapsed().as_secs_f64();
    measured
}

/// RssAnon + RssFile of a process, in KiB (0 once it is gone).
fn private_rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("RssAnon:") || l.starts_with("RssFile:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn query_i64(client: &mut Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).unwrap().get(0)
}

fn ready_files(data: &Path) -> usize {
    fs::read_dir(data.join("pg_wal/archive_status"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count()
        })
        .unwrap_or(0)
}

/// The pgBackRest configuration for one stanza, written where the postgres user can read it.
fn pgbackrest_conf(dir: &TestDir, name: &str, cluster: &Cluster, async_push: bool) -> PathBuf {
    let repository = format!("repo1-path={}/repo\n", dir.path.join(name).display());
    pgbackrest_conf_with(dir, name, cluster, async_push, &repository)
}

/// A pgBackRest configuration for `cluster` whose `[global]` section also holds `global`
/// (the repository's lines, a cipher): zst 1, process-max 2, like every pgBackRest row.
fn pgbackrest_conf_with(
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
fn pgbackrest_s3_repository(prefix: &str, tls_port: u16) -> String {
    format!(
        "repo1-type=s3\nrepo1-path=/{prefix}\nrepo1-s3-bucket=bench\nrepo1-s3-endpoint=127.0.0.1\n\
         repo1-storage-port={tls_port}\nrepo1-s3-region=us-east-1\nrepo1-s3-uri-style=path\n\
         repo1-s3-key={}\nrepo1-s3-key-secret={}\nrepo1-storage-verify-tls=n\n",
        S3Server::ACCESS_KEY,
        S3Server::SECRET_KEY
    )
}

/// pgBackRest's repository encryption, standing beside our age-encrypted repositories.
const PGBACKREST_CIPHER: &str =
    "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=bench-passphrase-not-secret\n";

/// Rewrites `key=value` in a pgBackRest configuration (e.g. the data directory a restore
/// writes into, or archive-async for the restore_command it leaves behind).
fn pgbackrest_set(conf: &Path, key: &str, value: &str) {
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
fn pgbackrest_stanza_create(conf: &Path) -> Option<()> {
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

fn pgbackrest_version() -> String {
    let output = run_ok(Command::new("pgbackrest").arg("version"));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn pgbackrest(conf: &Path) -> Command {
    let mut command = as_postgres("pgbackrest");
    command.arg(format!("--config={}", conf.display()));
    command.arg("--stanza=bench");
    command
}

/// postgresql.conf lines shared by every benchmark cluster: sc_backup loaded (its settings
/// exist), archiving on but paused, and enough WAL room that no checkpoint interferes.
const BASE_CONF: &str = "shared_preload_libraries = 'sc_backup'\n\
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
fn next_segment(name: &str) -> String {
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
fn prefill_pg_wal(target: &Path) -> usize {
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

fn ours_conf(repository: &str, parallelism: u32, encrypted: bool) -> String {
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

struct Bench {
    args: Args,
    dir: TestDir,
    tables: Vec<Table>,
    /// The server measured now.
    server: ServerBinaries,
    /// pgBackRest's rate per table kind ("wal": segments/s, "backup": MB/s) and the major it
    /// was measured on: the ratio's denominator on a major pgBackRest cannot run on. Rates,
    /// not seconds, because each major's backlog and database differ a little in size.
    pgbackrest_anchor: BTreeMap<&'static str, (u32, f64)>,
}

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.segments = args.segments.min(24);
        args.scale = args.scale.min(20);
        args.small_scale = args.small_scale.min(5);
        args.rpo_seconds = args.rpo_seconds.min(70);
    }
    let phases: Vec<String> = if args.only.is_empty() {
        [
            "wal",
            "backup",
            "incremental",
            "drill",
            "extract",
            "dump",
            "s3",
        ]
        .map(String::from)
        .to_vec()
    } else {
        args.only.clone()
    };
    let servers: Vec<ServerBinaries> = args
        .pg
        .iter()
        .map(|major| ServerBinaries::find(*major, None).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let mut bench = Bench {
        dir: TestDir::new("bench"),
        args,
        tables: Vec::new(),
        server: servers[0].clone(),
        pgbackrest_anchor: BTreeMap::new(),
    };
    let started = Instant::now();
    let machine = machine_description(&servers);
    println!("sc_backup benchmark on {machine}");
    for (index, server) in servers.into_iter().enumerate() {
        use_pg_bindir(server.bindir());
        println!("\n=== PostgreSQL {}", server.version());
        if index > 0 {
            // Clusters and repositories are named by phase: each major gets its own
            // directory (replacing the previous one removes it).
            bench.dir = TestDir::new(&format!("bench-pg{}", server.major()));
        }
        bench.server = server;
        // Every phase on the first major; the others are compared on WAL and backups.
        let runs = |phase: &str| {
            phases.iter().any(|p| p == phase) && (index == 0 || phase == "wal" || phase == "backup")
        };
        if runs("wal") {
            bench.wal_drain();
        }
        if runs("backup") {
            bench.backup_restore();
        }
        if runs("incremental") {
            bench.incremental();
        }
        if runs("drill") {
            bench.drill();
        }
        if runs("extract") {
            bench.extract();
        }
        if runs("dump") {
            bench.dumps();
        }
        if runs("s3") {
            bench.s3();
        }
    }
    bench.write(&machine, started.elapsed());
}

fn machine_description(servers: &[ServerBinaries]) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let versions: Vec<String> = servers
        .iter()
        .map(|server| format!("PostgreSQL {}", server.version()))
        .collect();
    format!(
        "{} × {cpu}, {memory_gib:.0} GiB RAM, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        versions.join(" and ")
    )
}

/// The S3 phase's recovery: seconds of each replay of the same WAL and of the restore.
struct S3Replays {
    serial: f64,
    floor: f64,
    prefetched: f64,
    wal_mib: f64,
    restore: f64,
}

impl Bench {
    /// A cluster with archiving paused and `segments` ready WAL segments of table churn with
    /// full-page images (updates right after checkpoints), stopped cleanly.
    fn wal_backlog(&self, name: &str, segments: u32) -> (PathBuf, u64) {
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
    fn drain(
        &self,
        source: &Path,
        name: &str,
        prepare: impl FnOnce(&Cluster, &mut Client) -> Option<String>,
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
        let deadline = started + Duration::from_secs(1800);
        while ready_files(&data) > 0 {
            assert!(
                Instant::now() < deadline,
                "{name}: the backlog did not drain\n{}",
                cluster.log_text()
            );
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
        drop(client);
        cluster.stop("fast");
        let _ = fs::remove_dir_all(&data);
        Some(seconds)
    }

    fn wal_drain(&mut self) {
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

    /// A cluster with the benchmark's base settings plus `conf`, started, with the extension.
    fn ours_cluster(&self, name: &str, conf: &str) -> Cluster {
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

    fn pgbench_init(&self, cluster: &Cluster, scale: u32) {
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
    fn write_wal(cluster: &Cluster, client: &mut Client, bytes: u64, round_seconds: u32) {
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
    fn timed_replay(&self, name: &str, target: &Path, conf: &str, expected: i64) -> f64 {
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

    fn pgdata_bytes(cluster: &Cluster) -> u64 {
        du(&cluster.data) - du(&cluster.data.join("pg_wal"))
    }

    /// `SELECT sc_backup()` timed, with the backend's peak private memory (anonymous plus
    /// file-backed resident pages, sampled every 10 ms; shared buffers are not ours).
    fn ours_backup(cluster: &Cluster) -> (String, f64, f64, u64) {
        Self::ours_backup_of_kind(cluster, "full")
    }

    /// [`Bench::ours_backup`] of `kind` (full, incremental, differential).
    fn ours_backup_of_kind(cluster: &Cluster, kind: &str) -> (String, f64, f64, u64) {
        Self::ours_backup_in(&mut cluster.connect(), kind)
    }

    /// [`Bench::ours_backup_of_kind`] in the backend of `client`, which may have taken
    /// backups before.
    fn ours_backup_in(client: &mut Client, kind: &str) -> (String, f64, f64, u64) {
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

    fn ours_restore_command(&self, repository: &str, target: &Path, name: &str) -> Command {
        let mut command = sc_backup(&self.dir.path);
        command
            .env("SC_BACKUP_REPOSITORY", repository)
            .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE)
            .args(["restore", "--backup", name, "--parallel", "2", "--pgdata"])
            .arg(target);
        command
    }

    /// Our restore timed from level memory, with the writeback of its files after it.
    fn ours_restore(&self, repository: &str, target: &Path, name: &str) -> Measured {
        measure_restore(
            "sc-backup restore",
            &mut self.ours_restore_command(repository, target, name),
            &self.dir.path.join("restore.log"),
            target,
        )
    }

    fn backup_restore(&mut self) {
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

    /// Incremental backups: a full backup, then 1 % of pgbench_accounts' rows updated and an
    /// incremental one, twice: the rows of one contiguous aid range (few pages change), then
    /// every 100th aid (spread over about half the table's pages). Ours against pgBackRest's
    /// `--type=incr` and `--type=diff` over the same changes (pgBackRest 2.45 copies a changed
    /// file whole), and the restore of each tool's newest backup against its full one.
    fn incremental(&mut self) {
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

    /// RTO: restore + replay of 1 GiB of WAL to a promoted, queryable cluster; RPO: the age of
    /// the newest archived WAL over a window of light load with `archive_timeout = 60`.
    fn drill(&mut self) {
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

    /// pgBackRest's side of the drill's replay: a cluster of the same scale with pgBackRest's
    /// own backup and archive (aes-256-cbc, zst 1, process-max 2) and the same volume of
    /// pgbench WAL after the backup, restored three times and timed from `pg_ctl start` to a
    /// promoted cluster: archive-get asynchronous (its default queue, 128 MiB: the eight
    /// segments our local prefetch keeps), serial, and with every segment already in pg_wal
    /// (the floor). None where pgBackRest does not support the major.
    fn pgbackrest_replay(&self, scale: u32, wal_bytes: u64) -> Option<(f64, f64, f64)> {
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

    /// Table-level PITR: one table of the large database as of a time, copied into a new
    /// schema of the running cluster through a sandbox (restore + replay + copy).
    fn extract(&mut self) {
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

    /// Logical dumps: `sc-backup dump` / `restore-dump` against the plain pipelines a DBA
    /// would otherwise run (`pg_dump | gzip`, `pg_dump | zstd`, `pg_dump -Fc`, and their
    /// restores), on the same database, in the same run, each pair interleaved three times.
    fn dumps(&mut self) {
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

    /// The same archive drain and a backup, into s3s-fs on loopback.
    fn s3(&mut self) {
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
    fn s3_recovery(&self, server: &S3Server, cluster: &mut Cluster) -> S3Replays {
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

    /// pgBackRest on the S3 server through `tls`: a full backup of `cluster` (switched to
    /// pgBackRest's archive_command; left stopped), the same WAL volume as our S3 recovery,
    /// then a restore replayed through the delaying proxy with archive-get asynchronous.
    /// Returns the backup's MB/s, the restore's seconds and the replay's seconds; None where
    /// pgBackRest does not support the major.
    fn pgbackrest_s3(
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

    /// The pgBackRest rate to compare with: this major's if measured (it becomes the anchor
    /// for later majors of the run), else the one measured on an earlier major.
    fn anchor(&mut self, kind: &'static str, measured_rate: Option<f64>) -> Option<(u32, f64)> {
        if let Some(rate) = measured_rate {
            self.pgbackrest_anchor
                .insert(kind, (self.server.major(), rate));
            return Some((self.server.major(), rate));
        }
        self.pgbackrest_anchor.get(kind).copied()
    }

    /// "1.32×", or "1.32× (vs 15)" against pgBackRest measured on another major.
    fn ratio(&self, anchor_major: u32, ratio: f64) -> Value {
        if anchor_major == self.server.major() {
            json!(format!("{ratio:.2}×"))
        } else {
            json!(format!("{ratio:.2}× (vs {anchor_major})"))
        }
    }

    fn note_skipped(&self, table: &mut Table, skipped: &[String], anchor: Option<(u32, f64)>) {
        if skipped.is_empty() {
            return;
        }
        let compared = match anchor {
            Some((major, _)) if major != self.server.major() => format!(
                " Ratios marked \"(vs {major})\" compare with pgBackRest measured on PostgreSQL {major} in the same run."
            ),
            _ => String::new(),
        };
        table.notes.push(format!(
            "Not run on PostgreSQL {major}: {} ({} does not support PostgreSQL {major}).{compared}",
            skipped.join(", "),
            pgbackrest_version(),
            major = self.server.major(),
        ));
    }

    fn write(&self, machine: &str, elapsed: Duration) {
        fs::create_dir_all(&self.args.out).unwrap();
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let mut markdown = format!(
            "## sc_backup benchmark, {}\n\nMachine: {machine}. Whole run: {:.1} min.\n\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            elapsed.as_secs_f64() / 60.0
        );
        for table in &self.tables {
            markdown.push_str(&table.markdown());
            markdown.push('\n');
        }
        let json = json!({
            "machine": machine,
            "command": command,
            "minutes": elapsed.as_secs_f64() / 60.0,
            "tables": self.tables.iter().map(Table::json).collect::<Vec<_>>(),
        });
        fs::write(self.args.out.join("results.md"), &markdown).unwrap();
        fs::write(
            self.args.out.join("results.json"),
            serde_json::to_string_pretty(&json).unwrap(),
        )
        .unwrap();
        println!("\n{markdown}");
        println!(
            "written to {} and {}",
            self.args.out.join("results.md").display(),
            self.args.out.join("results.json").display()
        );
    }
}
