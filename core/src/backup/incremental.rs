//! Incremental and differential backups: which parent a backup is taken against, which files
//! are compared page by page, which pages a backup stores, and the page stream's format.
//!
//! A relation's main (or init) fork is read page by page and a page is stored when its LSN is
//! at or after the parent's start LSN, when the parent's copy of the file is shorter, or when
//! it is all zeros. Every other file is stored whole when its content (SHA-256) differs from
//! the parent's, else recorded as unchanged. docs/design.md ("Incremental backups") says why
//! the LSN rule is safe and which cases send a file whole.
//!
//! ```text
//! page stream (what a `Stored::Pages` object decodes to):
//!   "SCPAGES1"  u32 LE block size  u32 LE 0
//!   then per page, in increasing block order:  u32 LE block number  <block size bytes>
//! ```

use std::io::{self, Write};

use super::BackupMetadata;
use crate::pg::lsn::Lsn;

/// PostgreSQL's default BLCKSZ; the extension passes the server's own.
pub const DEFAULT_BLOCK_SIZE: u32 = 8192;

const PAGES_MAGIC: &[u8; 8] = b"SCPAGES1";
pub(super) const PAGES_HEADER_SIZE: usize = 16;

/// What `sc_backup(kind)` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    Full,
    /// Changes since the newest backup of any type.
    Incremental,
    /// Changes since the newest full backup.
    Differential,
}

impl BackupKind {
    pub const NAMES: &'static [&'static str] = &["full", "incremental", "differential"];

    pub fn parse(text: &str) -> Option<BackupKind> {
        match text.trim().to_ascii_lowercase().as_str() {
            "full" => Some(BackupKind::Full),
            "incremental" | "incr" => Some(BackupKind::Incremental),
            "differential" | "diff" => Some(BackupKind::Differential),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
            BackupKind::Differential => "differential",
        }
    }
}

/// The cluster a new backup is taken of, as far as choosing a parent goes.
#[derive(Debug, Clone, Copy)]
pub struct ClusterPosition {
    pub system_identifier: u64,
    pub pg_version_num: u32,
    /// The timeline the cluster writes WAL on now.
    pub timeline: u32,
}

/// The backup a new incremental (newest of any type) or differential (newest full) backup is
/// taken against, from `backups` (oldest first); `Err` says why a full backup is taken instead.
///
/// The parent must be of this cluster and major, and on the cluster's current timeline: after
/// a promotion or a point-in-time restore the cluster's pages may have left the parent's
/// history with LSNs below the parent's start, which the page rule would take for unchanged.
pub fn choose_parent(
    backups: &[BackupMetadata],
    kind: BackupKind,
    cluster: ClusterPosition,
) -> Result<Option<&BackupMetadata>, String> {
    let parent = match kind {
        BackupKind::Full => return Ok(None),
        BackupKind::Incremental => backups.last(),
        BackupKind::Differential => backups.iter().rev().find(|b| b.parent.is_none()),
    };
    let Some(parent) = parent else {
        return Err(match kind {
            BackupKind::Differential => "the repository has no full backup".into(),
            _ => "the repository has no backup".into(),
        });
    };
    if parent.system_identifier != cluster.system_identifier.to_string() {
        return Err(format!(
            "the newest backup, \"{}\", is of another cluster (system identifier {})",
            parent.playbook.backup_name, parent.system_identifier
        ));
    }
    if parent.pg_version_num / 10000 != cluster.pg_version_num / 10000 {
        return Err(format!(
            "the newest backup, \"{}\", is of PostgreSQL {}",
            parent.playbook.backup_name,
            parent.pg_version_num / 10000
        ));
    }
    if parent.timeline != cluster.timeline {
        return Err(format!(
            "the newest backup, \"{}\", is on timeline {} and the cluster on timeline {}",
            parent.playbook.backup_name, parent.timeline, cluster.timeline
        ));
    }
    Ok(Some(parent))
}

/// Whether `path` (relative to the data directory) is a segment of a relation's main or init
/// fork: `global/<n>`, `base/<db>/<n>`, `pg_tblspc/<ts>/<version>/<db>/<n>`, with `_init` or
/// `.<segment>`. The free space map is not WAL-logged and the visibility map's bits are cleared
/// without its page LSN moving, so both forks are compared whole, never by page LSN.
pub fn is_page_compared(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let in_database = match parts.as_slice() {
        ["global", _] => true,
        ["base", db, _] => is_number(db),
        ["pg_tblspc", ts, version, db, _] => {
            is_number(ts) && version.starts_with("PG_") && is_number(db)
        }
        _ => false,
    };
    if !in_database {
        return false;
    }
    let name = parts[parts.len() - 1];
    let (relation, segment) = match name.split_once('.') {
        Some((relation, segment)) => (relation, Some(segment)),
        None => (name, None),
    };
    let relation = relation.strip_suffix("_init").unwrap_or(relation);
    is_number(relation) && segment.is_none_or(is_number)
}

/// The database directory holding `path`, when it is in one (`base/<db>`,
/// `pg_tblspc/<ts>/<version>/<db>`); `global` is not a database directory.
pub fn database_directory(path: &str) -> Option<&str> {
    let parts: Vec<&str> = path.split('/').collect();
    let depth = match parts.as_slice() {
        ["base", db, ..] if is_number(db) && parts.len() > 2 => 2,
        ["pg_tblspc", ts, _, db, ..] if is_number(ts) && is_number(db) && parts.len() > 4 => 4,
        _ => return None,
    };
    let length: usize = parts[..depth].iter().map(|p| p.len() + 1).sum::<usize>() - 1;
    Some(&path[..length])
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Decides, page by page, what an incremental backup of one file stores.
#[derive(Debug, Clone, Copy)]
pub struct PageFilter {
    pub parent_start_lsn: Lsn,
    /// Whole pages in the parent's copy of the file.
    pub parent_blocks: u64,
}

impl PageFilter {
    /// `page` is block `block_number` as read now.
    pub fn must_store(&self, block_number: u64, page: &[u8]) -> bool {
        if block_number >= self.parent_blocks {
            // Beyond the parent's copy: a page added since (or re-added after a truncation).
            return true;
        }
        // pd_lsn is the page's first 8 bytes: xlogid, xrecoff, in the server's byte order
        // (bufpage.h); sc_backup runs on the server's machine.
        let high = u32::from_ne_bytes(page[0..4].try_into().expect("4 bytes"));
        let low = u32::from_ne_bytes(page[4..8].try_into().expect("4 bytes"));
        let lsn = Lsn((u64::from(high) << 32) | u64::from(low));
        if lsn >= self.parent_start_lsn {
            return true;
        }
        // A new page not yet initialized has LSN 0 but may replace an older page the parent
        // holds at this position (truncated, then extended again): store it rather than let
        // the old content come back.
        page.iter().all(|&b| b == 0)
    }
}

/// The header of a page stream.
pub(super) fn pages_header(block_size: u32) -> [u8; PAGES_HEADER_SIZE] {
    let mut header = [0u8; PAGES_HEADER_SIZE];
    header[..8].copy_from_slice(PAGES_MAGIC);
    header[8..12].copy_from_slice(&block_size.to_le_bytes());
    header
}

/// Parses a page stream written into it, handing each page to `apply`. A malformed stream
/// (which a digest mismatch would also reveal) stops the applying and is reported by
/// [`PageStreamParser::finish`], never written anywhere.
pub(super) struct PageStreamParser<F: FnMut(u64, &[u8]) -> io::Result<()>> {
    block_size: usize,
    /// Block numbers must be below this: the file's length in pages in this backup.
    blocks: u64,
    buffer: Vec<u8>,
    header_seen: bool,
    last_block: Option<u64>,
    pub(super) pages: u64,
    problem: Option<String>,
    apply: F,
}

impl<F: FnMut(u64, &[u8]) -> io::Result<()>> PageStreamParser<F> {
    pub(super) fn new(block_size: u32, blocks: u64, apply: F) -> Self {
        PageStreamParser {
            block_size: block_size as usize,
            blocks,
            buffer: Vec::with_capacity(4 + block_size as usize),
            header_seen: false,
            last_block: None,
            pages: 0,
            problem: None,
            apply,
        }
    }

    fn record_size(&self) -> usize {
        if self.header_seen {
            4 + self.block_size
        } else {
            PAGES_HEADER_SIZE
        }
    }

    fn take_record(&mut self) -> io::Result<()> {
        if !self.header_seen {
            let block_size = u32::from_le_bytes(self.buffer[8..12].try_into().expect("4"));
            if &self.buffer[..8] != PAGES_MAGIC {
                self.problem = Some("not a page stream".into());
            } else if block_size as usize != self.block_size {
                self.problem = Some(format!(
                    "pages of {block_size} bytes, expected {}",
                    self.block_size
                ));
            }
            self.header_seen = true;
            return Ok(());
        }
        let block = u64::from(u32::from_le_bytes(self.buffer[..4].try_into().expect("4")));
        if block >= self.blocks || self.last_block.is_some_and(|last| block <= last) {
            self.problem = Some(format!(
                "page {block} is out of order or beyond the file's {} pages",
                self.blocks
            ));
            return Ok(());
        }
        self.last_block = Some(block);
        self.pages += 1;
        (self.apply)(block, &self.buffer[4..])
    }

    /// Checks the stream ended at a record boundary; returns the number of pages.
    pub(super) fn finish(self) -> Result<u64, String> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        if !self.header_seen {
            return Err("the page stream has no header".into());
        }
        if !self.buffer.is_empty() {
            return Err("the page stream ends inside a page".into());
        }
        Ok(self.pages)
    }
}

impl<F: FnMut(u64, &[u8]) -> io::Result<()>> Write for PageStreamParser<F> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let written = data.len();
        while !data.is_empty() && self.problem.is_none() {
            let wanted = self.record_size() - self.buffer.len();
            let take = wanted.min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == self.record_size() {
                self.take_record()?;
                self.buffer.clear();
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_compared_files_are_main_and_init_forks() {
        for path in [
            "global/1262",
            "base/5/16384",
            "base/5/16384.3",
            "base/5/16384_init",
            "pg_tblspc/16390/PG_17_202406281/5/16391.1",
        ] {
            assert!(is_page_compared(path), "{path}");
        }
        for path in [
            "global/pg_control",
            "global/pg_filenode.map",
            "base/5/16384_fsm",
            "base/5/16384_vm",
            "base/5/16384_vm.1",
            "base/5/PG_VERSION",
            "base/5/pg_internal.init",
            "base/x/16384",
            "pg_xact/0000",
            "pg_tblspc/16390/PG_17_202406281/5/16391_fsm",
            "16384",
        ] {
            assert!(!is_page_compared(path), "{path}");
        }
    }

    #[test]
    fn database_directories() {
        assert_eq!(database_directory("base/5/16384"), Some("base/5"));
        assert_eq!(database_directory("base/5/PG_VERSION"), Some("base/5"));
        assert_eq!(
            database_directory("pg_tblspc/16390/PG_17_202406281/5/16391"),
            Some("pg_tblspc/16390/PG_17_202406281/5")
        );
        assert_eq!(database_directory("base/5"), None);
        assert_eq!(database_directory("global/1262"), None);
    }

    fn page(lsn: u64, fill: u8) -> Vec<u8> {
        let mut page = vec![fill; 8192];
        page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
        page[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
        page
    }

    #[test]
    fn pages_at_or_after_the_parent_start_are_stored() {
        let filter = PageFilter {
            parent_start_lsn: Lsn(0x1_0000_0028),
            parent_blocks: 10,
        };
        assert!(!filter.must_store(0, &page(0x1_0000_0027, 1)));
        assert!(filter.must_store(0, &page(0x1_0000_0028, 1)));
        assert!(filter.must_store(0, &page(0x2_0000_0000, 1)));
        // Beyond the parent's copy, whatever the LSN.
        assert!(filter.must_store(10, &page(0x10, 1)));
        // Zeros replace what the parent held there.
        assert!(filter.must_store(3, &vec![0; 8192]));
    }

    #[test]
    fn page_stream_round_trips_in_any_write_sizes() {
        let mut stream = pages_header(8192).to_vec();
        for (block, fill) in [(1u32, 7u8), (4, 9)] {
            stream.extend_from_slice(&block.to_le_bytes());
            stream.extend_from_slice(&page(u64::from(block), fill));
        }
        for chunk in [1, 7, 4096, 100_000] {
            let mut seen = Vec::new();
            let mut parser = PageStreamParser::new(8192, 5, |block, page: &[u8]| {
                seen.push((block, page[100]));
                Ok(())
            });
            for piece in stream.chunks(chunk) {
                parser.write_all(piece).unwrap();
            }
            assert_eq!(parser.finish(), Ok(2));
            assert_eq!(seen, [(1, 7), (4, 9)]);
        }
        // Out of range for a file of 4 pages, truncated, wrong header: refused, nothing applied.
        let mut applied = 0;
        let mut parser = PageStreamParser::new(8192, 4, |_, _: &[u8]| {
            applied += 1;
            Ok(())
        });
        parser.write_all(&stream).unwrap();
        assert!(parser.finish().is_err());
        assert_eq!(applied, 1);
        let mut parser = PageStreamParser::new(8192, 5, |_, _: &[u8]| Ok(()));
        parser.write_all(&stream[..stream.len() - 1]).unwrap();
        assert!(parser.finish().is_err());
        let mut parser = PageStreamParser::new(4096, 5, |_, _: &[u8]| Ok(()));
        parser.write_all(&stream).unwrap();
        assert!(parser.finish().is_err());
    }

    fn backup(name: &str, parent: &str, timeline: u32) -> BackupMetadata {
        let mut metadata = crate::backup::tests::metadata();
        metadata.playbook.backup_name = name.into();
        BackupMetadata {
            parent: Some(parent.to_string()).filter(|p| !p.is_empty()),
            method: if parent.is_empty() {
                BackupKind::Full
            } else {
                BackupKind::Incremental
            },
            timeline,
            ..metadata
        }
    }

    #[test]
    fn parents_are_the_newest_backup_or_the_newest_full() {
        let cluster = ClusterPosition {
            system_identifier: 7711576491893132752,
            pg_version_num: 150020,
            timeline: 1,
        };
        let backups = [
            backup("f1", "", 1),
            backup("i1", "f1", 1),
            backup("d1", "f1", 1),
        ];
        let name = |kind| {
            choose_parent(&backups, kind, cluster)
                .map(|p| p.map(|p| p.playbook.backup_name.clone()))
        };
        assert_eq!(name(BackupKind::Full), Ok(None));
        assert_eq!(name(BackupKind::Incremental), Ok(Some("d1".into())));
        assert_eq!(name(BackupKind::Differential), Ok(Some("f1".into())));
        assert!(choose_parent(&[], BackupKind::Incremental, cluster).is_err());
        let promoted = ClusterPosition {
            timeline: 2,
            ..cluster
        };
        let refused = choose_parent(&backups, BackupKind::Incremental, promoted).unwrap_err();
        assert!(refused.contains("timeline 1"), "{refused}");
        let other = ClusterPosition {
            system_identifier: 1,
            ..cluster
        };
        assert!(choose_parent(&backups, BackupKind::Incremental, other).is_err());
    }
}
