//! sc_backup's benchmark: WAL archiving, base backup and restore, side by side with cp,
//! basic_archive, pg_basebackup and pgBackRest, on this machine and in one run.
//!
//! Machines like ours are noisy, so every figure is reported next to the others measured in
//! the same run, and the comparison is made as a ratio. Run through `bench/run.sh`, which
//! builds the release binaries first.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use sc_backup_core::pg::server_binaries::ServerBinaries;
use sc_backup_pg_test::{use_pg_bindir, TestDir};

mod measure;
mod network;
mod ours;
mod pgbackrest;
mod phases;
mod report;
use report::Table;

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
    /// Phases to run (default all): wal, backup, incremental, drill, extract, dump, s3,
    /// repositories
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
            "repositories",
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
        if runs("repositories") {
            bench.repositories();
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
