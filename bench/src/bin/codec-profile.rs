//! Where the time of archiving one WAL segment goes: each stage of the codec pipeline timed
//! alone on real segments (from the page cache), single-threaded.
//!   cargo run --release -p sc-backup-bench --bin codec-profile -- <segment files...>

use std::fs::File;
use std::io::{self, Read};
use std::time::Instant;

use sc_backup_core::codec::keys::RepositoryKey;
use sc_backup_core::codec::{pump, Encoder, Sha256Digest};
use sc_backup_core::config::{Compression, CompressionAlgorithm};

/// One stage of the pipeline, run over a whole file.
type Stage<'a> = dyn Fn(&mut File) + 'a;

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    assert!(
        !files.is_empty(),
        "usage: codec-profile <WAL segment files...>"
    );
    let key = RepositoryKey::generate();
    let zstd1 = Compression::new(CompressionAlgorithm::Zstd, 1).unwrap();
    let none = Compression::new(CompressionAlgorithm::None, 0).unwrap();
    let rounds = 3;
    let stages: [(&str, &Stage<'_>); 5] = [
        ("read only", &|f| {
            io::copy(f, &mut io::sink()).unwrap();
        }),
        ("sha256", &|f| {
            Sha256Digest::of_reader(f).unwrap();
        }),
        ("sha256 + zstd 1", &|f| {
            let mut encoder = Encoder::new(io::sink(), zstd1, None).unwrap();
            pump(f, &mut encoder).map_err(|_| ()).unwrap();
            encoder.finish().unwrap();
        }),
        ("sha256 + age (no compression)", &|f| {
            let mut encoder = Encoder::new(io::sink(), none, Some(&key)).unwrap();
            pump(f, &mut encoder).map_err(|_| ()).unwrap();
            encoder.finish().unwrap();
        }),
        ("sha256 + zstd 1 + age", &|f| {
            let mut encoder = Encoder::new(io::sink(), zstd1, Some(&key)).unwrap();
            pump(f, &mut encoder).map_err(|_| ()).unwrap();
            encoder.finish().unwrap();
        }),
    ];
    let repository_dir = std::env::temp_dir().join(format!("codec-profile-{}", std::process::id()));
    std::fs::create_dir_all(&repository_dir).unwrap();
    let settings = sc_backup_core::Settings::from_raw(&sc_backup_core::RawSettings {
        repository: Some(repository_dir.display().to_string()),
        compression: Some("zstd".into()),
        compression_level: Some("1".into()),
        ..Default::default()
    })
    .unwrap();
    let repository = sc_backup_core::Repository::open_for_cluster(
        &settings,
        &sc_backup_core::ClusterIdentity {
            system_identifier: 1,
            pg_version_num: 150000,
        },
    )
    .unwrap();
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    // Warm the page cache.
    for file in &files {
        let mut content = Vec::new();
        File::open(file).unwrap().read_to_end(&mut content).unwrap();
    }
    println!(
        "{} files, {:.0} MiB, {rounds} rounds each",
        files.len(),
        bytes as f64 / 1048576.0
    );
    for (name, stage) in stages {
        let started = Instant::now();
        for _ in 0..rounds {
            for file in &files {
                stage(&mut File::open(file).unwrap());
            }
        }
        let seconds = started.elapsed().as_secs_f64() / rounds as f64;
        report(name, seconds, bytes);
    }
    // The whole of `archive_wal`: digest, look for an existing copy, encode, write, fsync,
    // link into place, fsync the directory. Once per file (a second time is a no-op).
    let started = Instant::now();
    for file in &files {
        let path = std::path::Path::new(file);
        let name = path.file_name().unwrap().to_str().unwrap();
        repository.archive_wal(path, name).unwrap();
    }
    report(
        "archive_wal (zstd 1, local, fsync)",
        started.elapsed().as_secs_f64(),
        bytes,
    );
    // The same through the look-ahead pipeline, as the archiver drives it: a pg_wal directory
    // of ready files, one call at a time, `.ready` renamed to `.done` after each.
    let wal = repository_dir.join("pg_wal");
    std::fs::create_dir_all(wal.join("archive_status")).unwrap();
    let mut names = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let name = format!("0000000200000000{:08X}", index + 1);
        std::fs::copy(file, wal.join(&name)).unwrap();
        std::fs::write(
            wal.join("archive_status").join(format!("{name}.ready")),
            b"",
        )
        .unwrap();
        names.push(name);
    }
    for workers in [1, 2] {
        let repository = sc_backup_core::Repository::open(&settings).unwrap();
        let pipeline = sc_backup_core::wal::archive_pipeline::ArchivePipeline::start(
            repository, &wal, workers,
        )
        .unwrap();
        let started = Instant::now();
        for name in &names {
            pipeline.archive(name, &wal.join(name)).unwrap();
            let status = wal.join("archive_status");
            std::fs::rename(
                status.join(format!("{name}.ready")),
                status.join(format!("{name}.done")),
            )
            .unwrap();
        }
        report(
            &format!("pipeline, {workers} workers"),
            started.elapsed().as_secs_f64(),
            bytes,
        );
        for name in &names {
            let status = wal.join("archive_status");
            std::fs::rename(
                status.join(format!("{name}.done")),
                status.join(format!("{name}.ready")),
            )
            .unwrap();
        }
        drop(pipeline);
        let _ = std::fs::remove_dir_all(repository_dir.join("wal/0000000200000000"));
    }
    let _ = std::fs::remove_dir_all(&repository_dir);
}

fn report(name: &str, seconds: f64, bytes: u64) {
    {
        println!(
            "  {name:<32} {:>7.1} ms per 16 MiB  {:>7.0} MB/s",
            seconds * 1000.0 * (16.0 * 1048576.0) / bytes as f64,
            bytes as f64 / 1e6 / seconds
        );
    }
}
