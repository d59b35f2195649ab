//! `pg_wal/archive_status`: the WAL segments PostgreSQL has completed and not yet archived.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

/// Segments waiting to be archived (`.ready` files), and how long the oldest has waited: the
/// WAL a crash of this machine would lose right now, beyond the segment being written.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArchiveBacklog {
    pub ready_segments: u64,
    pub oldest_ready_age_seconds: f64,
}

/// Counts `.ready` files in `<data directory>/pg_wal/archive_status` and ages the oldest by
/// its modification time (set when the segment was completed).
pub fn archive_backlog(data_directory: &Path, now: SystemTime) -> std::io::Result<ArchiveBacklog> {
    let mut backlog = ArchiveBacklog::default();
    for entry in fs::read_dir(data_directory.join("pg_wal/archive_status"))? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().ends_with(".ready") {
            continue;
        }
        // A file archived (renamed to .done) between listing and stat is simply skipped.
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        backlog.ready_segments += 1;
        let age = now
            .duration_since(modified)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        backlog.oldest_ready_age_seconds = backlog.oldest_ready_age_seconds.max(age);
    }
    Ok(backlog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_counts_ready_files_and_ages_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let status_dir = dir.path().join("pg_wal/archive_status");
        fs::create_dir_all(&status_dir).unwrap();
        for name in [
            "000000010000000000000001.done",
            "000000010000000000000002.ready",
            "000000010000000000000003.ready",
        ] {
            fs::write(status_dir.join(name), b"").unwrap();
        }
        let later = SystemTime::now() + std::time::Duration::from_secs(30);
        let backlog = archive_backlog(dir.path(), later).unwrap();
        assert_eq!(backlog.ready_segments, 2);
        assert!(
            (29.0..40.0).contains(&backlog.oldest_ready_age_seconds),
            "{backlog:?}"
        );
    }
}
