//! Reading a backup that depends on others: the chain from an incremental or differential
//! backup back to its full backup, and a file rebuilt from it.
//!
//! A file the newest backup holds whole is streamed as from any full backup. Otherwise the
//! file is rebuilt newest first: each backup's pages are written at their offsets unless a
//! newer backup already wrote that page or the file was shorter in a newer backup (truncated
//! since), and the walk stops at the first backup holding the file whole, or as soon as every
//! page is written. Memory per file is one page and a bitmap of its pages (16 KiB for a 1 GiB
//! segment), whatever the chain's length; every object read is checked against its digest.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use super::document::backup_object;
use super::incremental::{PageStreamParser, PAGES_HEADER_SIZE};
use super::manifest::{read_backup_file, read_stored, Stored};
use super::{read_manifest, read_metadata, BackupMetadata, EntryType, Manifest, ManifestEntry};
use crate::error::{Error, Result};
use crate::repository::Repository;
use crate::util::direct_write::DirectWriter;

/// A chain longer than this is taken for a loop in damaged metadata.
const MAX_CHAIN_LENGTH: usize = 10_000;

/// One backup of a chain, with its file entries by path.
struct ChainMember {
    name: String,
    files: HashMap<String, ManifestEntry>,
}

/// A backup and every backup it depends on, newest first.
pub struct BackupChain {
    members: Vec<ChainMember>,
    block_size: u32,
}

/// The backups `metadata` depends on, newest first (its parent, the parent's parent, ... the
/// full backup), each checked to be of the same cluster and older.
pub fn ancestors(
    repository: &Repository,
    metadata: &BackupMetadata,
) -> Result<Vec<BackupMetadata>> {
    let mut chain = Vec::new();
    let mut seen = HashSet::from([metadata.playbook.backup_name.clone()]);
    let mut child = metadata.clone();
    while let Some(parent_name) = child.parent.clone() {
        let broken = |reason: String| Error::BrokenChain {
            backup: metadata.playbook.backup_name.clone(),
            parent: parent_name.clone(),
            reason,
        };
        if !seen.insert(parent_name.clone()) || seen.len() > MAX_CHAIN_LENGTH {
            return Err(broken("appears twice in its chain".into()));
        }
        let parent = match read_metadata(repository, &parent_name) {
            Ok(parent) => parent,
            Err(Error::BackupNotFound(_)) => return Err(broken("is not in the repository".into())),
            Err(e) => return Err(broken(format!("cannot be read: {e}"))),
        };
        if parent.system_identifier != child.system_identifier
            || parent.start_lsn >= child.start_lsn
        {
            return Err(broken(format!(
                "is not an earlier backup of the same cluster (system identifier {}, start {})",
                parent.system_identifier, parent.start_lsn
            )));
        }
        chain.push(parent.clone());
        child = parent;
    }
    Ok(chain)
}

/// The backups among `backups` that depend on `name`, directly or through others.
pub fn dependents(backups: &[BackupMetadata], name: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut wanted = HashSet::from([name.to_string()]);
    // Oldest first: a backup's parent is listed before it.
    for backup in backups {
        if backup
            .parent
            .as_ref()
            .is_some_and(|parent| wanted.contains(parent))
        {
            wanted.insert(backup.playbook.backup_name.clone());
            found.push(backup.playbook.backup_name.clone());
        }
    }
    found
}

/// For each of `backups` (oldest first, as listed): how many backups a restore of it reads
/// (1 for a full backup) and their stored bytes together; a chain whose parent is missing
/// counts what is there.
pub fn chain_sizes(backups: &[BackupMetadata]) -> Vec<(u32, u64)> {
    let mut by_name: HashMap<&str, (u32, u64)> = HashMap::new();
    let mut sizes = Vec::with_capacity(backups.len());
    for backup in backups {
        let (length, bytes) = by_name
            .get(backup.parent.as_deref().unwrap_or(""))
            .copied()
            .unwrap_or((0, 0));
        let size = (length + 1, bytes + backup.stored_bytes);
        by_name.insert(&backup.playbook.backup_name, size);
        sizes.push(size);
    }
    sizes
}

impl BackupChain {
    /// Loads the manifests of `metadata`'s chain; `manifest` is its own, already read.
    pub fn load(
        repository: &Repository,
        metadata: &BackupMetadata,
        manifest: &Manifest,
    ) -> Result<BackupChain> {
        let files = |manifest: &Manifest| -> HashMap<String, ManifestEntry> {
            manifest
                .entries
                .iter()
                .filter(|e| e.entry_type == EntryType::File)
                .map(|e| (e.path.clone(), e.clone()))
                .collect()
        };
        let mut members = vec![ChainMember {
            name: metadata.playbook.backup_name.clone(),
            files: files(manifest),
        }];
        for parent in ancestors(repository, metadata)? {
            let manifest = read_manifest(repository, &parent)?;
            members.push(ChainMember {
                name: parent.playbook.backup_name.clone(),
                files: files(&manifest),
            });
        }
        Ok(BackupChain {
            members,
            block_size: metadata.block_size(),
        })
    }

    /// The backups of the chain, newest first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_str())
    }

    /// Problems of the chain's structure: a file an incremental backup does not hold whole
    /// that no older backup of the chain holds either.
    pub fn unresolved_files(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (depth, member) in self.members.iter().enumerate() {
            for entry in member.files.values() {
                if entry.stored == Stored::Whole {
                    continue;
                }
                if self
                    .members
                    .get(depth + 1)
                    .and_then(|parent| parent.files.get(&entry.path))
                    .is_none()
                {
                    problems.push((member.name.clone(), entry.path.clone()));
                }
            }
        }
        problems.sort();
        problems
    }

    /// Writes the newest backup's `entry` into `file` (empty, opened for writing) and returns
    /// the bytes written: streamed when held whole, else rebuilt from the chain.
    pub fn write_file(
        &self,
        repository: &Repository,
        entry: &ManifestEntry,
        file: &mut File,
        direct: bool,
        destination: &str,
    ) -> Result<u64> {
        // Follow unchanged entries to the backup that stored something.
        let mut depth = 0;
        let mut current = entry;
        while current.stored == Stored::Unchanged {
            depth += 1;
            current = self.parent_entry(depth, &current.path)?;
        }
        if current.stored == Stored::Whole {
            let mut writer = DirectWriter::new(file, direct);
            let written = read_backup_file(
                repository,
                &self.members[depth].name,
                current,
                &mut writer,
                destination,
            )?;
            writer
                .finish()
                .map_err(|e| Error::io("write", destination, e))?;
            if Some(written) != entry.size {
                return Err(self.invalid(0, &entry.path, "its size is not the manifest's"));
            }
            return Ok(written);
        }
        self.rebuild(repository, depth, entry, file, destination)
    }

    /// Rebuilds a file whose newest stored form (at `depth`) is a page stream.
    fn rebuild(
        &self,
        repository: &Repository,
        first_depth: usize,
        entry: &ManifestEntry,
        file: &File,
        destination: &str,
    ) -> Result<u64> {
        let block_size = u64::from(self.block_size);
        let size = entry.size.unwrap_or(0);
        if !size.is_multiple_of(block_size) {
            return Err(self.invalid(0, &entry.path, "a page stream for a partial page"));
        }
        let blocks = size / block_size;
        let mut written = vec![0u64; blocks.div_ceil(64) as usize];
        let mut written_count = 0u64;
        let mut limit = blocks;
        file.set_len(size)
            .map_err(|e| Error::io("extend", destination, e))?;
        let mut depth = first_depth;
        let mut current = self.members[depth]
            .files
            .get(&entry.path)
            .expect("resolved by the caller");
        loop {
            // Pages at or past a newer backup's length were truncated away since.
            limit = limit.min(current.size.unwrap_or(0) / block_size);
            let mut apply = |block: u64, page: &[u8]| -> io::Result<()> {
                let (word, bit) = ((block / 64) as usize, 1u64 << (block % 64));
                if block < limit && written[word] & bit == 0 {
                    file.write_all_at(page, block * block_size)?;
                    written[word] |= bit;
                    written_count += 1;
                }
                Ok(())
            };
            match current.stored {
                Stored::Unchanged => {}
                Stored::Pages => {
                    let object_blocks = current.size.unwrap_or(0) / block_size;
                    let mut parser =
                        PageStreamParser::new(self.block_size, object_blocks, &mut apply);
                    self.read_object(repository, depth, current, &mut parser, destination)?;
                    let stored = parser
                        .finish()
                        .map_err(|reason| self.invalid(depth, &current.path, &reason))?;
                    if current.pages.is_some_and(|pages| pages != stored) {
                        return Err(self.invalid(depth, &current.path, "its page count differs"));
                    }
                }
                Stored::Whole => {
                    let mut pages = WholePages {
                        page: Vec::with_capacity(block_size as usize),
                        block: 0,
                        apply: &mut apply,
                    };
                    self.read_object(repository, depth, current, &mut pages, destination)?;
                    break;
                }
            }
            if written_count == blocks {
                break;
            }
            depth += 1;
            current = self.parent_entry(depth, &current.path)?;
        }
        if written_count != blocks {
            return Err(self.invalid(
                first_depth,
                &entry.path,
                &format!("the chain holds {written_count} of its {blocks} pages"),
            ));
        }
        Ok(size)
    }

    fn read_object(
        &self,
        repository: &Repository,
        depth: usize,
        entry: &ManifestEntry,
        out: &mut dyn Write,
        destination: &str,
    ) -> Result<u64> {
        let member = &self.members[depth];
        let object = entry
            .object
            .as_deref()
            .ok_or_else(|| self.invalid(depth, &entry.path, "a stored file without an object"))?;
        let (key, spec) = backup_object(&member.name, object)?;
        let expected_size = match entry.stored {
            Stored::Pages => entry
                .pages
                .map(|pages| PAGES_HEADER_SIZE as u64 + pages * (4 + u64::from(self.block_size))),
            _ => entry.size,
        };
        read_stored(
            repository,
            &member.name,
            &key,
            entry,
            spec,
            expected_size,
            out,
            destination,
        )
    }

    /// The entry for `path` in the chain member at `depth` (the parent of `depth - 1`).
    fn parent_entry(&self, depth: usize, path: &str) -> Result<&ManifestEntry> {
        let child = &self.members[depth - 1].name;
        let member = self.members.get(depth).ok_or_else(|| Error::BrokenChain {
            backup: child.clone(),
            parent: "(none)".into(),
            reason: format!(
                "does not exist: \"{path}\" is not held whole by any backup of the chain"
            ),
        })?;
        member.files.get(path).ok_or_else(|| Error::BrokenChain {
            backup: child.clone(),
            parent: member.name.clone(),
            reason: format!("does not hold \"{path}\""),
        })
    }

    fn invalid(&self, depth: usize, path: &str, reason: &str) -> Error {
        Error::InvalidMetadata {
            object: format!(
                "{}manifest ({path})",
                super::backup_prefix(&self.members[depth].name)
            ),
            reason: reason.into(),
        }
    }
}

/// Splits a whole file's stream into pages for the rebuild.
struct WholePages<'a, F: FnMut(u64, &[u8]) -> io::Result<()>> {
    page: Vec<u8>,
    block: u64,
    apply: &'a mut F,
}

impl<F: FnMut(u64, &[u8]) -> io::Result<()>> Write for WholePages<'_, F> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let written = data.len();
        let block_size = self.page.capacity();
        while !data.is_empty() {
            let take = (block_size - self.page.len()).min(data.len());
            self.page.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.page.len() == block_size {
                (self.apply)(self.block, &self.page)?;
                self.page.clear();
                self.block += 1;
            }
        }
        // A partial last page is never needed: a newer backup that counts it stores it.
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;
    use crate::backup::incremental::is_page_compared;
    use crate::backup::{plan, BackupKind, BackupReport, BackupWriter, BundleReader};
    use crate::config::{RawSettings, Settings};
    use crate::pg::lsn::Lsn;
    use crate::repository::ClusterIdentity;

    const PAGE: usize = 8192;

    pub(crate) fn repository(dir: &Path) -> Repository {
        let settings = Settings::from_raw(&RawSettings {
            repository: Some(dir.display().to_string()),
            ..Default::default()
        })
        .unwrap();
        Repository::open_for_cluster(
            &settings,
            &ClusterIdentity {
                system_identifier: 7711576491893132752,
                pg_version_num: 150020,
            },
        )
        .unwrap()
    }

    /// A relation file of pages whose LSNs and fill bytes are given.
    pub(crate) fn relation(pages: &[(u64, u8)]) -> Vec<u8> {
        let mut file = Vec::new();
        for &(lsn, fill) in pages {
            let mut page = vec![fill; PAGE];
            page[0..4].copy_from_slice(&((lsn >> 32) as u32).to_ne_bytes());
            page[4..8].copy_from_slice(&(lsn as u32).to_ne_bytes());
            file.extend_from_slice(&page);
        }
        file
    }

    /// Takes a backup of `data` with start LSN `start` against `parent`; no WAL is needed
    /// (start and stop in one segment that is archived first).
    pub(crate) fn take(
        repo: &Repository,
        data: &Path,
        name: &str,
        start: u64,
        parent: Option<&BackupMetadata>,
    ) -> BackupMetadata {
        let writer = match parent {
            Some(parent) => BackupWriter::new_incremental(repo, name, parent, 8192).unwrap(),
            None => BackupWriter::new(repo, name).unwrap(),
        };
        let entries = writer
            .store_files(plan(data, &[]).unwrap(), 2, &mut || Ok(()))
            .unwrap();
        let segment = crate::pg::lsn::segment_name(1, Lsn(start), 16 << 20);
        if repo
            .find_wal(&crate::wal::WalFileName::parse(&segment).unwrap())
            .unwrap()
            .is_none()
        {
            let wal = data.parent().unwrap().join(&segment);
            std::fs::write(&wal, name).unwrap();
            repo.archive_wal(&wal, &segment).unwrap();
        }
        let report = BackupReport {
            backup_type: if parent.is_some() {
                "incremental"
            } else {
                "full"
            }
            .into(),
            start_lsn: Lsn(start),
            stop_lsn: Lsn(start + 0x100),
            wal_segment_size: 16 << 20,
            method: BackupKind::Incremental,
            ..crate::backup::tests::report()
        };
        // Taken in the order of their positions, a second per 256 bytes of WAL.
        let later = chrono::Duration::seconds((start / 0x100) as i64);
        let report = BackupReport {
            start_time: report.start_time + later,
            stop_time: report.stop_time + later,
            ..report
        };
        writer.finish(entries, None, report).unwrap()
    }

    pub(crate) fn restored(
        repo: &Repository,
        metadata: &BackupMetadata,
        path: &str,
        work: &Path,
    ) -> Result<Vec<u8>> {
        let manifest = read_manifest(repo, metadata)?;
        let chain = BackupChain::load(repo, metadata, &manifest)?;
        let entry = manifest.entries.iter().find(|e| e.path == path).unwrap();
        let target = work.join("restored");
        let mut file = File::create(&target).unwrap();
        chain.write_file(repo, entry, &mut file, false, "restored")?;
        Ok(std::fs::read(&target).unwrap())
    }

    #[test]
    fn a_chain_rebuilds_each_backup_exactly() {
        let root = tempfile::tempdir().unwrap();
        let (repo_dir, data, work) = (
            root.path().join("repo"),
            root.path().join("data"),
            root.path().join("work"),
        );
        for dir in [&repo_dir, &data.join("base/5"), &work] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let repo = repository(&repo_dir);
        let write = |path: &str, content: &[u8]| std::fs::write(data.join(path), content).unwrap();
        write("PG_VERSION", b"15\n");
        write("base/5/PG_VERSION", b"15\n");
        write(
            "base/5/16384",
            &relation(&[(0x100, 1), (0x100, 2), (0x100, 3), (0x100, 4)]),
        );
        write(
            "base/5/16390",
            &relation(&[(0x100, 1), (0x100, 2), (0x100, 3)]),
        );
        write("base/5/16384_vm", b"visibility");
        let full = take(&repo, &data, "f", 0x1000, None);
        let mut expected = vec![(
            full.clone(),
            std::fs::read(data.join("base/5/16384")).unwrap(),
            std::fs::read(data.join("base/5/16390")).unwrap(),
        )];

        // Page 1 changed, page 4 added; 16390 truncated to 2 pages; the VM changed.
        write(
            "base/5/16384",
            &relation(&[
                (0x100, 1),
                (0x2000, 20),
                (0x100, 3),
                (0x100, 4),
                (0x2000, 50),
            ]),
        );
        write("base/5/16390", &relation(&[(0x100, 1), (0x100, 2)]));
        write("base/5/16384_vm", b"visibilitx");
        let first = take(&repo, &data, "i1", 0x3000, Some(&full));
        expected.push((
            first.clone(),
            std::fs::read(data.join("base/5/16384")).unwrap(),
            std::fs::read(data.join("base/5/16390")).unwrap(),
        ));

        // Page 2 changed; 16390 extended again with a zero (new, uninitialized) page and a new one.
        let mut grown = relation(&[(0x100, 1), (0x100, 2)]);
        grown.extend_from_slice(&vec![0; PAGE]);
        grown.extend_from_slice(&relation(&[(0x4000, 9)]));
        write(
            "base/5/16384",
            &relation(&[
                (0x100, 1),
                (0x2000, 20),
                (0x4000, 30),
                (0x100, 4),
                (0x2000, 50),
            ]),
        );
        write("base/5/16390", &grown);
        let second = take(&repo, &data, "i2", 0x5000, Some(&first));
        expected.push((
            second.clone(),
            std::fs::read(data.join("base/5/16384")).unwrap(),
            grown,
        ));

        let manifest = read_manifest(&repo, &second).unwrap();
        let entry = |path: &str| {
            manifest
                .entries
                .iter()
                .find(|e| e.path == path)
                .unwrap()
                .clone()
        };
        assert_eq!(entry("base/5/16384").stored, Stored::Pages);
        assert_eq!(entry("base/5/16384").pages, Some(1));
        assert_eq!(entry("base/5/PG_VERSION").stored, Stored::Unchanged);
        assert_eq!(entry("base/5/16384_vm").stored, Stored::Unchanged);
        assert_eq!(second.parent.as_deref(), Some("i1"));

        for (metadata, main, truncated) in &expected {
            assert_eq!(
                &restored(&repo, metadata, "base/5/16384", &work).unwrap(),
                main,
                "{}",
                metadata.playbook.backup_name
            );
            assert_eq!(
                &restored(&repo, metadata, "base/5/16390", &work).unwrap(),
                truncated,
                "{}",
                metadata.playbook.backup_name
            );
        }
        assert_eq!(
            restored(&repo, &second, "base/5/16384_vm", &work).unwrap(),
            b"visibilitx"
        );
        let (_, problems) = crate::backup::verify_backup(&repo, "i2").unwrap();
        assert_eq!(problems, []);

        // One page of the middle backup damaged: verify of the newest names it, restore fails.
        let first_manifest = read_manifest(&repo, &first).unwrap();
        let object = first_manifest
            .entries
            .iter()
            .find(|e| e.path == "base/5/16384")
            .unwrap()
            .object
            .clone()
            .unwrap();
        let stored = repo_dir.join(format!("backups/i1/{object}"));
        let mut bytes = std::fs::read(&stored).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::set_permissions(&stored, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::write(&stored, &bytes).unwrap();
        let (_, problems) = crate::backup::verify_backup(&repo, "i2").unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].object.contains(&format!("backups/i1/{object}")),
            "{problems:?}"
        );
        let error = restored(&repo, &second, "base/5/16384", &work)
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("backups/i1/{object}")), "{error}");

        // Deleting the full backup alone is refused, naming both dependents.
        let refused = crate::backup::delete_backup(&repo, "f")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("\"i1\", \"i2\""), "{refused}");
        assert_eq!(
            crate::backup::delete_backup_with_dependents(&repo, "i1").unwrap(),
            ["i2", "i1"]
        );
        assert_eq!(crate::backup::list_backups(&repo).unwrap().len(), 1);
    }

    #[test]
    fn small_files_share_bundles_and_each_reads_back_alone() {
        let root = tempfile::tempdir().unwrap();
        let (repo_dir, data, work) = (
            root.path().join("repo"),
            root.path().join("data"),
            root.path().join("work"),
        );
        for dir in [&repo_dir, &data.join("base/5"), &work] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let repo = repository(&repo_dir);
        let mut contents = std::collections::BTreeMap::new();
        for n in 0..300u32 {
            let content: Vec<u8> = (0..(n % 7) * 3001)
                .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(n) >> 13) as u8)
                .collect();
            contents.insert(format!("base/5/{}", 16384 + n), content);
        }
        // Free space maps: compared whole by an incremental, so recorded by both digests.
        for n in 0..20u32 {
            contents.insert(format!("base/5/{}_fsm", 16384 + n), vec![n as u8; 24576]);
        }
        contents.insert("base/5/big".into(), relation(&[(0x100, 7); 400]));
        for (path, content) in &contents {
            std::fs::write(data.join(path), content).unwrap();
        }
        let full = take(&repo, &data, "f", 0x1000, None);
        assert_eq!(full.format, super::super::manifest::FORMAT_VERSION);
        let manifest = read_manifest(&repo, &full).unwrap();
        let files: Vec<&ManifestEntry> = manifest
            .entries
            .iter()
            .filter(|e| contents.contains_key(&e.path))
            .collect();
        assert_eq!(files.len(), contents.len());
        let mut bundles = std::collections::BTreeMap::<&str, Vec<&ManifestEntry>>::new();
        for entry in &files {
            let object = entry.object.as_deref().unwrap();
            if entry.path == "base/5/big" {
                // 3.2 MiB: past the bundle limit, an object of its own.
                assert!(
                    object.starts_with("data/") && entry.offset.is_none(),
                    "{entry:?}"
                );
            } else {
                assert!(
                    object.starts_with("bundle/") && entry.offset.is_some(),
                    "{entry:?}"
                );
                bundles.entry(object).or_default().push(entry);
            }
        }
        // Two workers, each with one bundle of its share.
        assert!((1..=2).contains(&bundles.len()), "{bundles:?}");

        // Each file alone (a ranged read), and each bundle with one read in offset order.
        for entry in &files {
            assert_eq!(
                &restored(&repo, &full, &entry.path, &work).unwrap(),
                &contents[&entry.path]
            );
        }
        // Reads check the digest of the stored bytes. Relation forks have no other; files an
        // incremental compares whole also have the digest of their content. An entry of a
        // backup taken before stored digests has only that one, and reads check it.
        for entry in &files {
            assert!(entry.stored_sha256.is_some(), "{entry:?}");
            assert_eq!(
                entry.sha256.is_some(),
                !is_page_compared(&entry.path),
                "{entry:?}"
            );
            if entry.sha256.is_none() {
                continue;
            }
            let mut before_stored_digests = (*entry).clone();
            before_stored_digests.stored_sha256 = None;
            let mut read = Vec::new();
            read_backup_file(&repo, "f", &before_stored_digests, &mut read, "memory").unwrap();
            assert_eq!(&read, &contents[&entry.path], "{}", entry.path);
            before_stored_digests.sha256 = Some(hex::encode([7u8; 32]));
            let err = read_backup_file(&repo, "f", &before_stored_digests, &mut io::sink(), "-")
                .unwrap_err();
            assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
        }
        for entries in bundles.values_mut() {
            entries.sort_by_key(|e| e.offset);
            let mut reader = BundleReader::open(&repo, "f", entries).unwrap();
            for entry in entries.iter() {
                let mut read = Vec::new();
                reader.read_file(entry, &mut read, "memory").unwrap();
                assert_eq!(&read, &contents[&entry.path], "{}", entry.path);
            }
        }

        // A damaged byte in a bundle is the damage of the one file stored there, by name.
        let (object, entries) = bundles.iter().next().unwrap();
        let victim = entries
            .iter()
            .find(|e| e.stored_size.unwrap() > 100)
            .unwrap();
        let stored = repo_dir.join(format!("backups/f/{object}"));
        let mut bytes = std::fs::read(&stored).unwrap();
        bytes[(victim.offset.unwrap() + victim.stored_size.unwrap() / 2) as usize] ^= 0x20;
        std::fs::remove_file(&stored).unwrap();
        std::fs::write(&stored, &bytes).unwrap();
        let (_, problems) = crate::backup::verify_backup(&repo, "f").unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].object.contains(&victim.path), "{problems:?}");
        let mut reader = BundleReader::open(&repo, "f", entries).unwrap();
        for entry in entries.iter() {
            let outcome = reader.read_file(entry, &mut io::sink(), "nowhere");
            assert_eq!(
                outcome.is_err(),
                entry.path == victim.path,
                "{}",
                entry.path
            );
        }
    }
}
