//! Measuring a step: wall time, peak memory of its process tree, bytes on disk.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use sc_backup_pg_test::postgres::Client;
use sc_backup_pg_test::run_ok;

/// Bytes of the regular files under `path`.
pub(crate) fn du(path: &Path) -> u64 {
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
pub(crate) struct Measured {
    pub(crate) seconds: f64,
    pub(crate) peak_rss_mib: f64,
    /// For a restore: how long writing back what it left in the page cache took after it
    /// finished (`sync -f` of its target), which PostgreSQL's start would otherwise pay.
    pub(crate) sync_seconds: f64,
}

/// Writes back every dirty page before a timed step, so that no step pays for the writeback
/// of the one before it (pgbench's load, a restore's files).
pub(crate) fn settle() {
    run_ok(&mut Command::new("sync"));
}

// The child is reaped by wait4, which also reports its peak memory.
#[allow(clippy::zombie_processes)]
pub(crate) fn measure(what: &str, command: &mut Command, log: &Path) -> Measured {
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
pub(crate) fn level_memory(warm: Option<&Path>) {
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
pub(crate) fn measure_restore(
    what: &str,
    command: &mut Command,
    log: &Path,
    target: &Path,
) -> Measured {
    level_memory(None);
    let mut measured = measure(what, command, log);
    let started = Instant::now();
    run_ok(Command::new("sync").arg("-f").arg(target));
    measured.sync_seconds = started.elapsed().as_secs_f64();
    measured
}

/// RssAnon + RssFile of a process, in KiB (0 once it is gone).
pub(crate) fn private_rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("RssAnon:") || l.starts_with("RssFile:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

pub(crate) fn query_i64(client: &mut Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).unwrap().get(0)
}

pub(crate) fn ready_files(data: &Path) -> usize {
    fs::read_dir(data.join("pg_wal/archive_status"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count()
        })
        .unwrap_or(0)
}
