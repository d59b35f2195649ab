//! What a base backup copies: the data directory and tablespaces, minus what PostgreSQL's own
//! base backup leaves out.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Directories whose contents PostgreSQL's own base backup leaves out (basebackup.c's
/// excludeDirContents): rebuilt at startup or meaningless on another server. The directories
/// themselves are kept, empty.
const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Files left out wherever they are (basebackup.c's excludeFiles), plus our own restore key.
const EXCLUDED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
    crate::pg::layout::RECOVERY_KEY_FILE,
];

/// What [`plan`] found to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    File,
    Directory,
    Symlink(String),
}

#[derive(Debug, Clone)]
pub struct SourceEntry {
    /// Path in the restored data directory, `/`-separated.
    pub path: String,
    /// Where to read it now.
    pub source: PathBuf,
    pub kind: SourceKind,
}

/// A user tablespace: `pg_tblspc/<oid>` points at `location`.
#[derive(Debug, Clone)]
pub struct Tablespace {
    pub oid: u32,
    pub location: PathBuf,
}

/// Lists what a base backup of `data_directory` must contain, applying PostgreSQL's rules.
/// Files that vanish while we look are simply not listed.
pub fn plan(data_directory: &Path, tablespaces: &[Tablespace]) -> Result<Vec<SourceEntry>> {
    let mut entries = Vec::new();
    walk(data_directory, "", true, &mut entries)?;
    for tablespace in tablespaces {
        let link = format!("pg_tblspc/{}", tablespace.oid);
        // The link itself was recorded by the walk; its contents come from the location.
        walk(&tablespace.location, &link, false, &mut entries)?;
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// pg_wal's subdirectories, empty: WAL comes from the archive. `archive_status` always;
/// `summaries` where it exists (PostgreSQL 17+, the WAL summarizer's), as pg_basebackup does.
fn push_wal_subdirectories(pg_wal: &Path, relative: &str, out: &mut Vec<SourceEntry>) {
    out.push(SourceEntry {
        path: format!("{relative}/archive_status"),
        source: pg_wal.join("archive_status"),
        kind: SourceKind::Directory,
    });
    if pg_wal.join("summaries").is_dir() {
        out.push(SourceEntry {
            path: format!("{relative}/summaries"),
            source: pg_wal.join("summaries"),
            kind: SourceKind::Directory,
        });
    }
}

fn walk(dir: &Path, prefix: &str, is_data_root: bool, out: &mut Vec<SourceEntry>) -> Result<()> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // vanished
        Err(e) => return Err(Error::io("list directory", dir.display(), e)),
    };
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| Error::io("list directory", dir.display(), e))?;
        names.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    // Unlogged relations: only their init fork is copied (they are reset at recovery).
    let unlogged: HashSet<String> = names
        .iter()
        .filter_map(|(name, _)| name.strip_suffix("_init").map(str::to_string))
        .filter(|base| base.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    for (name, path) in names {
        if EXCLUDED_FILES.contains(&name.as_str())
            || name.starts_with("pg_internal.init")
            || name.starts_with("pgsql_tmp")
        {
            continue;
        }
        if !unlogged.is_empty() && !name.ends_with("_init") {
            let relation = name.split(['_', '.']).next().unwrap_or("");
            if unlogged.contains(relation) {
                continue;
            }
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", path.display(), e)),
        };
        let relative = join(prefix, &name);
        if meta.file_type().is_symlink() {
            // pg_wal may be a link to another volume: back it up as a directory.
            if is_data_root && name == "pg_wal" {
                out.push(SourceEntry {
                    path: relative.clone(),
                    source: path.clone(),
                    kind: SourceKind::Directory,
                });
                push_wal_subdirectories(&path, &relative, out);
                continue;
            }
            let target =
                fs::read_link(&path).map_err(|e| Error::io("read link", path.display(), e))?;
            out.push(SourceEntry {
                path: relative,
                source: path,
                kind: SourceKind::Symlink(target.to_string_lossy().into_owned()),
            });
        } else if meta.is_dir() {
            if is_data_root && name == crate::pg::layout::SPOOL_DIRECTORY {
                // wal-fetch's spool in a cluster still in recovery: copies of archived WAL.
                continue;
            }
            out.push(SourceEntry {
                path: relative.clone(),
                source: path.clone(),
                kind: SourceKind::Directory,
            });
            if is_data_root && EXCLUDED_DIR_CONTENTS.contains(&name.as_str()) {
                continue;
            }
            if is_data_root && name == "pg_wal" {
                push_wal_subdirectories(&path, &relative, out);
                continue;
            }
            walk(&path, &relative, false, out)?;
        } else if meta.is_file() {
            out.push(SourceEntry {
                path: relative,
                source: path,
                kind: SourceKind::File,
            });
        }
        // Sockets, fifos and devices do not belong in a backup.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_follows_postgres_exclusions() {
        let data = tempfile::tempdir().unwrap();
        let root = data.path();
        for dir in [
            "base/5",
            "global",
            "pg_wal/archive_status",
            "pg_wal/summaries",
            "pg_stat_tmp",
            "pg_replslot/slot",
            "pg_tblspc",
            "base/pgsql_tmp",
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "PG_VERSION",
            "global/pg_control",
            "base/5/1259",
            "base/5/16384",
            "base/5/16384_init",
            "base/5/16384_fsm",
            "base/5/16390",
            "base/5/16390.1",
            "base/5/pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp123.0",
            "pg_wal/000000010000000000000001",
            "pg_wal/summaries/0000000100000000010000280000000001000060.summary",
            "pg_stat_tmp/global.stat",
            "pg_replslot/slot/state",
            "postmaster.pid",
            "postmaster.opts",
            "backup_label",
            "sc_backup_recovery.key",
        ] {
            fs::write(root.join(file), b"x").unwrap();
        }
        let paths: Vec<String> = plan(root, &[])
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "PG_VERSION",
                "base",
                "base/5",
                "base/5/1259",
                "base/5/16384_init",
                "base/5/16390",
                "base/5/16390.1",
                "global",
                "global/pg_control",
                "pg_replslot",
                "pg_stat_tmp",
                "pg_tblspc",
                "pg_wal",
                "pg_wal/archive_status",
                "pg_wal/summaries",
            ]
        );
    }
}
