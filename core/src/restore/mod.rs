//! Restoring a base backup into a data directory and configuring recovery.
//!
//! Every file is decoded into a temporary name beside its destination and renamed only once
//! its SHA-256 and size match the manifest. `global/pg_control` is written last: without it
//! PostgreSQL refuses to start, so an interrupted or failed restore can never be started and
//! mistaken for a consistent cluster.
//!
//! With `sync` (the CLI's default, as pg_basebackup and pgBackRest do) the restore is durable
//! before it reports success: files of 1 MiB or more are written past the page cache
//! ([`DirectWriter`], a thread per such file writing one chunk while the next is decoded);
//! smaller files and last partial blocks go through it, their writeback started as soon as
//! the file is complete; then every file and directory is fsynced, and only then is pg_control
//! written and fsynced. A crash at any point leaves either no pg_control or a data directory
//! whose every byte is on disk.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use crate::backup::{
    read_backup_file, BackupChain, BackupMetadata, BundleReader, EntryType, Manifest,
    ManifestEntry, Stored,
};
use crate::config::conf_quote;
use crate::error::{Error, Result};
use crate::pg::layout::RECOVERY_KEY_FILE;
use crate::pg::lsn::Lsn;
use crate::pg::server_binaries::major_of;
use crate::repository::Repository;
use crate::util::direct_write::DirectWriter;
use crate::util::time::parse_time;

const PG_CONTROL: &str = "global/pg_control";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay all available WAL.
    EndOfWal,
    /// Stop as soon as the backup is consistent.
    Immediate,
    Time(String),
    Lsn(Lsn),
    Xid(String),
    Name(String),
}

impl RecoveryTarget {
    fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            RecoveryTarget::EndOfWal => vec![],
            RecoveryTarget::Immediate => vec![("recovery_target", "immediate".into())],
            RecoveryTarget::Time(time) => vec![("recovery_target_time", time.clone())],
            RecoveryTarget::Lsn(lsn) => vec![("recovery_target_lsn", lsn.to_string())],
            RecoveryTarget::Xid(xid) => vec![("recovery_target_xid", xid.clone())],
            RecoveryTarget::Name(name) => vec![("recovery_target_name", name.clone())],
        }
    }

    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::EndOfWal => "end of archived WAL".into(),
            RecoveryTarget::Immediate => "immediate (consistency)".into(),
            RecoveryTarget::Time(t) => format!("time {t}"),
            RecoveryTarget::Lsn(l) => format!("lsn {l}"),
            RecoveryTarget::Xid(x) => format!("xid {x}"),
            RecoveryTarget::Name(n) => format!("name {n}"),
        }
    }
}

/// Chooses the backup to restore: by name, or with `latest` the newest one, and with a time
/// target the newest one that ended before the target.
pub fn choose_backup(
    backups: &[BackupMetadata],
    name: &str,
    target: &RecoveryTarget,
) -> Result<BackupMetadata> {
    let candidates: Vec<&BackupMetadata> = if name == "latest" {
        backups.iter().collect()
    } else {
        backups
            .iter()
            .filter(|b| b.playbook.backup_name == name)
            .collect()
    };
    if candidates.is_empty() {
        return Err(Error::BackupNotFound(name.to_string()));
    }
    let chosen = match target {
        RecoveryTarget::Time(text) => {
            let target_time = parse_time(text).ok_or_else(|| Error::InvalidTarget(format!(
                "cannot read --target-time \"{text}\"; use ISO 8601 with a time zone, like 2026-11-24 10:41:00+00"
            )))?;
            let ends_before = |b: &&&BackupMetadata| b.playbook.stop_time < target_time;
            candidates
                .iter()
                .rev()
                .find(ends_before)
                .copied()
                .ok_or_else(|| {
                    Error::InvalidTarget(format!(
                        "no backup{} ended before {text}; the oldest ended at {}",
                        if name == "latest" {
                            String::new()
                        } else {
                            format!(" named {name}")
                        },
                        candidates[0]
                            .playbook
                            .stop_time
                            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                    ))
                })?
        }
        RecoveryTarget::Lsn(lsn) => {
            let chosen = *candidates.last().expect("not empty");
            if *lsn < chosen.stop_lsn {
                return Err(Error::InvalidTarget(format!(
                    "target LSN {lsn} is before the end of backup {} ({}); recovery cannot stop before the backup is consistent",
                    chosen.playbook.backup_name, chosen.stop_lsn
                )));
            }
            chosen
        }
        _ => *candidates.last().expect("not empty"),
    };
    Ok(chosen.clone())
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub pgdata: PathBuf,
    pub force: bool,
    pub target: RecoveryTarget,
    /// promote, pause or shutdown; `None` leaves PostgreSQL's default (pause).
    pub target_action: Option<String>,
    pub target_timeline: Option<String>,
    /// Tablespace OID → new location.
    pub tablespace_map: BTreeMap<u32, PathBuf>,
    pub parallelism: usize,
    /// Where recovery gets its WAL.
    pub wal_source: WalSource,
    /// Turn WAL archiving and the scheduler off in the restored cluster: a side copy
    /// (table-level recovery, a test restore) must not archive its new timeline into the
    /// production repository, nor take, dump or expire backups there.
    pub archive_off: bool,
    /// Set (by a signal handler, say) to stop between files with [`Error::Interrupted`].
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Make everything durable (fsync) before returning. Off only for a copy that is thrown
    /// away (a sandbox, which also runs with fsync off); PostgreSQL would otherwise sync the
    /// directory at its first start, and a crash before that could leave a torn copy that
    /// looks complete.
    pub sync: bool,
}

/// Where a restored cluster gets the WAL it replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalSource {
    /// `restore_command` fetches it from the repository: this CLI invocation, without `%f %p`.
    Command(String),
    /// Only the WAL that makes the backup consistent, fetched (verified) into `pg_wal` by the
    /// restore itself; `restore_command` finds nothing more. For a recovery to consistency,
    /// which then needs neither the CLI nor the unwrapped key in the data directory.
    BackupOnly,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreProgress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub files: u64,
    pub bytes: u64,
    /// The recovery settings written into postgresql.auto.conf (restore_command, the
    /// target, ...): a sandbox also puts them on its server's command line, where nothing in
    /// the backup's own configuration can override them.
    pub recovery_settings: Vec<(String, String)>,
}

/// The refusals that need nothing written: a server running on the data directory, a
/// non-empty data or tablespace directory without `force`, and (even with `force`) a data
/// directory holding a cluster of another major version than the backup's, which is far more
/// likely a wrong path than a directory meant to be replaced.
pub fn check_target(
    metadata: &BackupMetadata,
    manifest: &Manifest,
    options: &RestoreOptions,
) -> Result<()> {
    let pgdata = &options.pgdata;
    if let Ok(pid_file) = fs::read_to_string(pgdata.join("postmaster.pid")) {
        if let Some(pid) = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        {
            if Path::new(&format!("/proc/{pid}")).exists() {
                return Err(Error::DestinationInUse(format!(
                    "a server (pid {pid}) may be running on {}; stop it first",
                    pgdata.display()
                )));
            }
        }
    }
    if let Ok(version) = fs::read_to_string(pgdata.join("PG_VERSION")) {
        let found = version.trim();
        let backup_major = major_of(metadata.pg_version_num);
        if found != backup_major.to_string() {
            return Err(Error::DataDirectoryOfAnotherVersion {
                pgdata: pgdata.display().to_string(),
                found: found.to_string(),
                backup: metadata.playbook.backup_name.clone(),
                backup_major,
            });
        }
    }
    if !options.force && !is_empty_dir(pgdata)? {
        return Err(Error::DestinationInUse(format!(
            "data directory {} is not empty; nothing was written. Empty it, or pass --force to replace its contents",
            pgdata.display()
        )));
    }
    for entry in &manifest.entries {
        let Some(oid) = entry
            .path
            .strip_prefix("pg_tblspc/")
            .and_then(|o| o.parse::<u32>().ok())
        else {
            continue;
        };
        if entry.entry_type != EntryType::Symlink {
            continue;
        }
        let location = options
            .tablespace_map
            .get(&oid)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(entry.link_target.clone().unwrap_or_default()));
        if !options.force && !is_empty_dir(&location)? {
            return Err(Error::DestinationInUse(format!(
                "tablespace directory {} (OID {oid}) is not empty; nothing was written. Pass --tablespace-map {oid}=DIR to restore it elsewhere, or --force",
                location.display()
            )));
        }
    }
    Ok(())
}

/// Refuses a time or LSN target that the archived WAL cannot reach. PostgreSQL would replay
/// everything archived and then refuse to start ("recovery ended before configured recovery
/// target was reached"); saying so first spares a restore that cannot be started.
pub fn check_target_reachable(
    repository: &Repository,
    metadata: &BackupMetadata,
    target: &RecoveryTarget,
) -> Result<()> {
    if !matches!(target, RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_)) {
        return Ok(());
    }
    let first = crate::pg::lsn::segment_name(
        metadata.timeline,
        metadata.start_lsn,
        metadata.wal_segment_size,
    );
    let Some(end) = repository.archive_end(Some(&first))? else {
        return Ok(()); // no WAL at all: the backup's own check reports that
    };
    let unarchived = "WAL the server has not archived yet (its current segment) is not in the repository: on the live server, SELECT pg_switch_wal() archives it";
    match target {
        RecoveryTarget::Time(text) => {
            let wanted = parse_time(text).ok_or_else(|| {
                Error::InvalidTarget(format!("cannot read --target-time \"{text}\""))
            })?;
            match &end.newest_transaction {
                // Recovery stops only at a record later than the target (recovery_target_inclusive
                // is on): a target at or after the newest one is never reached.
                Some((newest, segment)) if *newest <= wanted => Err(Error::InvalidTarget(format!(
                    "recovery cannot reach --target-time {text}: the newest transaction in the archived WAL ended at {} (segment {segment}), and PostgreSQL would replay everything and then refuse to start (\"recovery ended before configured recovery target was reached\"). Use a target before that time, or no target to recover everything archived; {unarchived}",
                    newest.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                ))),
                None if end.scanned_all => Err(Error::InvalidTarget(format!(
                    "recovery cannot reach --target-time {text}: the archived WAL since backup {} holds no transaction at all (up to segment {}). Use no target to recover everything archived; {unarchived}",
                    metadata.playbook.backup_name, end.segment
                ))),
                _ => Ok(()),
            }
        }
        RecoveryTarget::Lsn(lsn) => match end.end_of_records {
            Some(reachable) if reachable < *lsn => Err(Error::InvalidTarget(format!(
                "recovery cannot reach --target-lsn {lsn}: the archived WAL ends at {reachable} (segment {}). Use a target at or before it, or no target; {unarchived}",
                end.segment
            ))),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Restores `metadata`'s backup into `options.pgdata` and writes the recovery configuration.
pub fn restore(
    repository: &Repository,
    metadata: &BackupMetadata,
    manifest: &Manifest,
    options: &RestoreOptions,
    progress: &(dyn Fn(RestoreProgress) + Sync),
) -> Result<RestoreSummary> {
    check_target(metadata, manifest, options)?;
    // Before anything is written: an incremental backup whose chain is broken restores nothing,
    // and neither does one with a link PostgreSQL would not have made.
    let chain = BackupChain::load(repository, metadata, manifest)?;
    check_links(repository, metadata, manifest)?;
    prepare_data_directory(&options.pgdata, options.force)?;
    let pgdata = &options.pgdata;

    // Directories and links in path order (the manifest is sorted): `pg_tblspc`, then the
    // tablespace link, then the tablespace's directories, created through the link.
    for entry in manifest
        .entries
        .iter()
        .filter(|e| e.entry_type != EntryType::File)
    {
        let path = pgdata.join(&entry.path);
        if entry.entry_type == EntryType::Symlink {
            let mut target = PathBuf::from(entry.link_target.clone().unwrap_or_default());
            if let Some(oid) = entry
                .path
                .strip_prefix("pg_tblspc/")
                .and_then(|o| o.parse::<u32>().ok())
            {
                if let Some(mapped) = options.tablespace_map.get(&oid) {
                    target = mapped.clone();
                }
                prepare_tablespace_directory(&target)?;
            }
            std::os::unix::fs::symlink(&target, &path)
                .map_err(|e| Error::io("create link", path.display(), e))?;
            continue;
        }
        fs::create_dir_all(&path).map_err(|e| Error::io("create directory", path.display(), e))?;
        fs::set_permissions(
            &path,
            fs::Permissions::from_mode(directory_mode(entry.mode)),
        )
        .map_err(|e| Error::io("set permissions on", path.display(), e))?;
    }

    let files: Vec<&ManifestEntry> = manifest
        .entries
        .iter()
        .filter(|e| {
            e.entry_type == EntryType::File && e.path != PG_CONTROL && e.path != "tablespace_map"
        })
        .collect();
    let restored: Vec<PathBuf> = files.iter().map(|e| pgdata.join(&e.path)).collect();
    let mut work = restore_work(files);
    // Largest first, as the backup does: in path order a relation's 1 GiB segments are
    // neighbours, and the last one to start would leave the other workers idle while it is
    // decoded. Equal sizes keep path order.
    work.sort_by_key(|w| std::cmp::Reverse(w.size()));
    let totals = RestoreProgress {
        files_done: 0,
        files_total: manifest
            .entries
            .iter()
            .filter(|e| e.entry_type == EntryType::File)
            .count() as u64,
        bytes_done: 0,
        bytes_total: manifest.entries.iter().filter_map(|e| e.size).sum(),
    };
    let files_done = AtomicU64::new(0);
    let bytes_done = AtomicU64::new(0);
    let report = |entry: &ManifestEntry| {
        let progress_now = RestoreProgress {
            files_done: files_done.fetch_add(1, Ordering::Relaxed) + 1,
            bytes_done: bytes_done.fetch_add(entry.size.unwrap_or(0), Ordering::Relaxed)
                + entry.size.unwrap_or(0),
            ..totals
        };
        progress(progress_now);
    };
    for_each_in_parallel(
        work,
        options.parallelism,
        &|| {
            options
                .cancel
                .as_ref()
                .is_some_and(|cancel| cancel.load(Ordering::SeqCst))
        },
        &|work| match work {
            RestoreWork::File(entry) => {
                restore_file(entry, pgdata, options.sync, |file, destination| {
                    chain.write_file(repository, entry, file, options.sync, destination)
                })?;
                report(entry);
                Ok(())
            }
            RestoreWork::Bundle(entries) => {
                let mut bundle =
                    BundleReader::open(repository, &metadata.playbook.backup_name, &entries)?;
                for entry in entries {
                    restore_file(entry, pgdata, options.sync, |file, destination| {
                        let mut writer = DirectWriter::new(file, options.sync);
                        let written = bundle.read_file(entry, &mut writer, destination)?;
                        writer
                            .finish()
                            .map_err(|e| Error::io("write", destination, e))?;
                        Ok(written)
                    })?;
                    report(entry);
                }
                Ok(())
            }
        },
    )?;

    let mut written_last: Vec<PathBuf> = Vec::new();
    if let Some((map, content)) = read_tablespace_map(repository, metadata, manifest)? {
        // PostgreSQL recreates the pg_tblspc links from this file: point it at the new homes.
        let rewritten = rewrite_tablespace_map(&content, &options.tablespace_map);
        write_new_file(&pgdata.join("tablespace_map"), rewritten.as_bytes(), 0o600)?;
        written_last.push(pgdata.join("tablespace_map"));
        report(map);
    }

    if options.wal_source == WalSource::BackupOnly {
        for segment in metadata.required_wal() {
            let path = pgdata.join("pg_wal").join(&segment);
            repository.fetch_wal(&segment, &path)?;
            written_last.push(path);
        }
    }
    let key_needed = matches!(options.wal_source, WalSource::Command(_));
    let key_written = match repository.key()?.filter(|_| key_needed) {
        Some(key) => {
            write_new_file(
                &pgdata.join(RECOVERY_KEY_FILE),
                key.identity_file().as_bytes(),
                0o600,
            )?;
            written_last.push(pgdata.join(RECOVERY_KEY_FILE));
            true
        }
        None => false,
    };
    let recovery_settings = append_recovery_settings(pgdata, metadata, options, key_written)?;
    write_new_file(&pgdata.join("recovery.signal"), b"", 0o600)?;
    written_last.extend([
        pgdata.join("postgresql.auto.conf"),
        pgdata.join("recovery.signal"),
    ]);
    if options.sync {
        // Everything but pg_control on disk before pg_control is written.
        let mut paths = restored;
        paths.extend(written_last);
        // Directories (a tablespace's link opens its new home) hold the new names.
        paths.extend(
            manifest
                .entries
                .iter()
                .filter(|e| e.entry_type != EntryType::File)
                .map(|e| pgdata.join(&e.path)),
        );
        paths.push(pgdata.clone());
        paths.extend(pgdata.parent().map(Path::to_path_buf));
        fsync_all(&paths, options.parallelism)?;
    }

    // Last: with pg_control in place the directory is startable.
    let control = manifest
        .entries
        .iter()
        .find(|e| e.path == PG_CONTROL)
        .ok_or_else(|| Error::InvalidMetadata {
            object: metadata.manifest.clone(),
            reason: "the backup has no global/pg_control".into(),
        })?;
    restore_file(control, pgdata, options.sync, |file, destination| {
        chain.write_file(repository, control, file, options.sync, destination)
    })?;
    if options.sync {
        let control = pgdata.join(PG_CONTROL);
        fsync_all(
            &[
                control.clone(),
                control.parent().unwrap_or(pgdata).to_path_buf(),
            ],
            1,
        )?;
    }
    report(control);
    Ok(RestoreSummary {
        files: totals.files_total,
        bytes: totals.bytes_total,
        recovery_settings,
    })
}

fn is_empty_dir(path: &Path) -> Result<bool> {
    match fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io("read directory", path.display(), e)),
    }
}

/// Empties (with `force`; [`check_target`] has refused otherwise) and creates the data
/// directory, mode 0700 as PostgreSQL requires.
fn prepare_data_directory(pgdata: &Path, force: bool) -> Result<()> {
    if force && !is_empty_dir(pgdata)? {
        for entry in
            fs::read_dir(pgdata).map_err(|e| Error::io("read directory", pgdata.display(), e))?
        {
            let path = entry
                .map_err(|e| Error::io("read directory", pgdata.display(), e))?
                .path();
            let removed = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| Error::io("remove", path.display(), e))?;
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(pgdata)
        .map_err(|e| Error::io("create directory", pgdata.display(), e))?;
    fs::set_permissions(pgdata, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("set permissions on", pgdata.display(), e))
}

/// Creates a tablespace's directory ([`check_target`] has refused a non-empty one without
/// `force`).
fn prepare_tablespace_directory(location: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(location)
        .map_err(|e| Error::io("create directory", location.display(), e))
}

/// One piece of a restore's work.
enum RestoreWork<'m> {
    /// A file read on its own (through the chain, when the newest backup does not hold it
    /// whole).
    File(&'m ManifestEntry),
    /// Files the newest backup holds whole in one bundle, in the order they are stored there:
    /// read with one request.
    Bundle(Vec<&'m ManifestEntry>),
}

impl RestoreWork<'_> {
    fn size(&self) -> u64 {
        match self {
            RestoreWork::File(entry) => entry.size.unwrap_or(0),
            RestoreWork::Bundle(entries) => entries.iter().filter_map(|e| e.size).sum(),
        }
    }
}

/// Groups the files held whole in a bundle of the newest backup by bundle; the others go one
/// by one.
fn restore_work(files: Vec<&ManifestEntry>) -> Vec<RestoreWork<'_>> {
    let mut bundles: BTreeMap<&str, Vec<&ManifestEntry>> = BTreeMap::new();
    let mut work = Vec::new();
    for entry in files {
        match (&entry.object, entry.offset, entry.stored) {
            (Some(object), Some(_), Stored::Whole) => {
                bundles.entry(object.as_str()).or_default().push(entry)
            }
            _ => work.push(RestoreWork::File(entry)),
        }
    }
    for (_, mut entries) in bundles {
        entries.sort_by_key(|e| e.offset);
        work.push(RestoreWork::Bundle(entries));
    }
    work
}

/// Writes `entry` under `pgdata` through a temporary name: `write` fills the file.
fn restore_file(
    entry: &ManifestEntry,
    pgdata: &Path,
    sync: bool,
    write: impl FnOnce(&mut File, &str) -> Result<u64>,
) -> Result<()> {
    let destination = pgdata.join(&entry.path);
    let temporary = destination.with_file_name(format!(
        ".{}.sc_backup_restore",
        destination
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            // Never through a link left at the temporary name.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)
            .map_err(|e| Error::io("create", temporary.display(), e))?;
        write(&mut file, &temporary.display().to_string())?;
        file.set_permissions(fs::Permissions::from_mode(file_mode(entry.mode)))
            .map_err(|e| Error::io("set permissions on", temporary.display(), e))?;
        let mtime = UNIX_EPOCH + Duration::from_secs(entry.mtime.max(0) as u64);
        file.set_modified(mtime)
            .map_err(|e| Error::io("set the time of", temporary.display(), e))?;
        if sync {
            start_writeback(&file);
        }
        fs::rename(&temporary, &destination)
            .map_err(|e| Error::io("rename", destination.display(), e))
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&temporary);
        Error::RestoreFile {
            path: entry.path.clone(),
            source: Box::new(source),
        }
    })
}

/// Asks the kernel to start writing `file` back now, without waiting: the final fsync then
/// finds little left to do, and the disk works while the next file is decoded (PostgreSQL's
/// pg_flush_data does the same). Only a hint; errors surface at the fsync.
fn start_writeback(file: &File) {
    // Safety: sync_file_range on a descriptor we own; offset 0, length 0 means the whole file.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// fsyncs every path (files and directories), `parallelism` at a time.
fn fsync_all(paths: &[PathBuf], parallelism: usize) -> Result<()> {
    for_each_in_parallel(paths, parallelism, &|| false, &|path| {
        match File::open(path).and_then(|f| f.sync_all()) {
            Ok(()) => Ok(()),
            // A directory we may not open (a parent of 0711, say) cannot be synced by us;
            // PostgreSQL's fsync_fname ignores that case too.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && path.is_dir() => Ok(()),
            Err(e) => Err(Error::io("fsync", path.display(), e)),
        }
    })
}

/// Runs `work` on each item in order, `parallelism` at a time. No new item is started after
/// the first error, which is returned, nor once `interrupted` says so ([`Error::Interrupted`]).
fn for_each_in_parallel<I>(
    items: I,
    parallelism: usize,
    interrupted: &(dyn Fn() -> bool + Sync),
    work: &(dyn Fn(I::Item) -> Result<()> + Sync),
) -> Result<()>
where
    I: IntoIterator,
    I::IntoIter: Send,
{
    let queue = Mutex::new(items.into_iter());
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..parallelism.max(1) {
            scope.spawn(|| loop {
                if first_error.lock().unwrap().is_some() {
                    return;
                }
                if interrupted() {
                    first_error
                        .lock()
                        .unwrap()
                        .get_or_insert(Error::Interrupted);
                    return;
                }
                let Some(item) = queue.lock().unwrap().next() else {
                    return;
                };
                if let Err(e) = work(item) {
                    first_error.lock().unwrap().get_or_insert(e);
                    return;
                }
            });
        }
    });
    match first_error.into_inner().unwrap() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The mode of a restored file: what PostgreSQL itself creates, 0600, or 0640 in a cluster
/// with group access; whatever else a manifest says (setuid, world access) is dropped.
fn file_mode(recorded: u32) -> u32 {
    (recorded & 0o640) | 0o600
}

/// The mode of a restored directory: 0700, or 0750 with group access.
fn directory_mode(recorded: u32) -> u32 {
    (recorded & 0o750) | 0o700
}

/// Refuses links PostgreSQL would not have made, before anything is written: a data directory
/// holds links only at `pg_tblspc/<oid>`, each pointing at its tablespace's location as the
/// backup's own `tablespace_map` records it. Any other link would let the files restored
/// through it land anywhere the restoring user can write.
fn check_links(
    repository: &Repository,
    metadata: &BackupMetadata,
    manifest: &Manifest,
) -> Result<()> {
    let refuse = |entry: &ManifestEntry, reason: String| Error::InvalidMetadata {
        object: format!(
            "{}manifest ({})",
            crate::backup::backup_prefix(&metadata.playbook.backup_name),
            entry.path
        ),
        reason,
    };
    let links: Vec<&ManifestEntry> = manifest
        .entries
        .iter()
        .filter(|e| e.entry_type == EntryType::Symlink)
        .collect();
    if links.is_empty() {
        return Ok(());
    }
    let recorded = match read_tablespace_map(repository, metadata, manifest)? {
        Some((_, content)) => parse_tablespace_map(&content),
        None => BTreeMap::new(),
    };
    for link in links {
        let oid = link
            .path
            .strip_prefix("pg_tblspc/")
            .filter(|oid| !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|oid| oid.parse::<u32>().ok())
            .ok_or_else(|| {
                refuse(
                    link,
                    "a link outside pg_tblspc/<oid>, where PostgreSQL never makes one".into(),
                )
            })?;
        let target = link.link_target.as_deref().unwrap_or_default();
        match recorded.get(&oid) {
            Some(location) if location == target && Path::new(target).is_absolute() => {}
            Some(location) => {
                return Err(refuse(
                    link,
                    format!(
                    "it points at {target:?}, but the backup's tablespace_map says {location:?}"
                ),
                ))
            }
            None => {
                return Err(refuse(
                    link,
                    format!("tablespace {oid} is not in the backup's tablespace_map"),
                ))
            }
        }
    }
    Ok(())
}

/// The backup's `tablespace_map` file and its text, if it has one (at most 1 MiB: a line per
/// tablespace).
fn read_tablespace_map<'m>(
    repository: &Repository,
    metadata: &BackupMetadata,
    manifest: &'m Manifest,
) -> Result<Option<(&'m ManifestEntry, String)>> {
    let Some(map) = manifest
        .entries
        .iter()
        .find(|e| e.path == "tablespace_map" && e.entry_type == EntryType::File)
    else {
        return Ok(None);
    };
    let mut content = crate::backup::CappedBuffer::new(1 << 20);
    read_backup_file(
        repository,
        &metadata.playbook.backup_name,
        map,
        &mut content,
        "memory",
    )?;
    let text = String::from_utf8_lossy(&content.into_inner()).into_owned();
    Ok(Some((map, text)))
}

/// `<oid> <location>` lines of a tablespace_map. PostgreSQL writes a backslash before each
/// newline, carriage return and backslash of a location (do_pg_backup_start), so a line ends
/// at an unescaped newline only.
fn parse_tablespace_map(content: &str) -> BTreeMap<u32, String> {
    let mut map = BTreeMap::new();
    let mut line = String::new();
    let mut add = |line: &mut String| {
        if let Some((oid, location)) = line.split_once(' ') {
            if let Ok(oid) = oid.parse() {
                map.insert(oid, location.to_string());
            }
        }
        line.clear();
    };
    let mut chars = content.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => line.extend(chars.next()),
            '\n' => add(&mut line),
            other => line.push(other),
        }
    }
    add(&mut line);
    map
}

fn write_new_file(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("create", path.display(), e))?;
    file.write_all(content)
        .map_err(|e| Error::io("write", path.display(), e))
}

fn rewrite_tablespace_map(content: &str, mapping: &BTreeMap<u32, PathBuf>) -> String {
    content
        .lines()
        .map(|line| match line.split_once(' ') {
            Some((oid, _)) => match oid.parse::<u32>().ok().and_then(|oid| mapping.get(&oid)) {
                Some(location) => format!("{oid} {}\n", location.display()),
                None => format!("{line}\n"),
            },
            None => format!("{line}\n"),
        })
        .collect()
}

/// Appends the recovery settings to postgresql.auto.conf; returns them.
fn append_recovery_settings(
    pgdata: &Path,
    metadata: &BackupMetadata,
    options: &RestoreOptions,
    key_written: bool,
) -> Result<Vec<(String, String)>> {
    let mut settings: Vec<(&str, String)> = Vec::new();
    let key_flag = if key_written {
        format!(" --identity-file {RECOVERY_KEY_FILE}")
    } else {
        String::new()
    };
    settings.push((
        "restore_command",
        match &options.wal_source {
            // PostgreSQL replaces %f, %p, %r and %% anywhere in restore_command: a % of the
            // command itself (a repository path's) is written as %%.
            WalSource::Command(command) => {
                format!("{}{key_flag} %f %p", command.replace('%', "%%"))
            }
            // Archive recovery needs a restore_command; finding nothing, it reads pg_wal.
            WalSource::BackupOnly => "false".to_string(),
        },
    ));
    if let WalSource::Command(_) = &options.wal_source {
        // The unwrapped key and wal-fetch's prefetch spool end with recovery.
        let mut remove = format!("rm -rf {}", crate::pg::layout::SPOOL_DIRECTORY);
        if key_written {
            remove.push_str(&format!(" {RECOVERY_KEY_FILE}"));
        }
        settings.push(("recovery_end_command", remove));
    }
    settings.extend(options.target.settings());
    if let Some(action) = &options.target_action {
        settings.push(("recovery_target_action", action.clone()));
    }
    if let Some(timeline) = &options.target_timeline {
        settings.push(("recovery_target_timeline", timeline.clone()));
    }
    if options.archive_off {
        settings.push(("archive_mode", "off".into()));
        // Nor its own scheduled backups, dumps and expiry (its configuration is production's).
        settings.push(("sc_backup.scheduler", "off".into()));
    }
    let path = pgdata.join("postgresql.auto.conf");
    let mut text = fs::read_to_string(&path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# Recovery settings written by sc-backup restore of {} at {}\n",
        metadata.playbook.backup_name,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    for (name, value) in &settings {
        text.push_str(&format!("{name} = {}\n", conf_quote(value)));
    }
    // Rewritten through a temporary name: the restored file may be a link.
    let temporary = path.with_file_name(".postgresql.auto.conf.sc_backup_restore");
    write_new_file(&temporary, text.as_bytes(), 0o600)?;
    fs::rename(&temporary, &path).map_err(|e| Error::io("rename", path.display(), e))?;
    Ok(settings
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(name: &str, stop_time: &str, stop_lsn: &str) -> BackupMetadata {
        let mut backup = crate::backup::tests::metadata();
        backup.playbook.backup_name = name.into();
        backup.playbook.stop_time = crate::backup::tests::time(stop_time);
        backup.stop_lsn = stop_lsn.parse().unwrap();
        backup
    }

    #[test]
    fn latest_with_a_time_target_is_the_newest_that_ended_before_it() {
        let backups = [
            backup("a", "2026-11-24T01:00:00Z", "0/3000000"),
            backup("b", "2026-11-24T02:00:00Z", "0/5000000"),
            backup("c", "2026-11-24T03:00:00Z", "0/7000000"),
        ];
        let at = |t: &str| RecoveryTarget::Time(t.into());
        let chosen = |name: &str, target: &RecoveryTarget| {
            choose_backup(&backups, name, target).map(|b| b.playbook.backup_name)
        };
        assert_eq!(chosen("latest", &RecoveryTarget::EndOfWal).unwrap(), "c");
        assert_eq!(
            chosen("latest", &at("2026-11-24 02:30:00+00")).unwrap(),
            "b"
        );
        assert_eq!(
            chosen("latest", &at("2026-11-24 04:30:00+02")).unwrap(),
            "b"
        );
        assert_eq!(chosen("b", &at("2026-11-24 02:30:00+00")).unwrap(), "b");
        let err = chosen("latest", &at("2026-11-24 00:30:00+00"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no backup ended before"), "{err}");
        let err = chosen("c", &at("2026-11-24 02:30:00+00"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no backup named c ended before"), "{err}");
        assert!(chosen("latest", &at("next tuesday"))
            .unwrap_err()
            .to_string()
            .contains("cannot read --target-time"));
        let err = chosen("latest", &RecoveryTarget::Lsn("0/6000000".parse().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("before the end of backup c"), "{err}");
        assert!(matches!(
            chosen("nope", &RecoveryTarget::Immediate),
            Err(Error::BackupNotFound(_))
        ));
    }

    #[test]
    fn fsync_all_syncs_files_and_directories_and_names_what_it_could_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("16384");
        fs::write(&file, b"page").unwrap();
        fsync_all(&[file.clone(), dir.path().to_path_buf()], 2).unwrap();
        let missing = dir.path().join("gone");
        let error = fsync_all(&[file, missing], 1).unwrap_err().to_string();
        assert!(error.contains("fsync") && error.contains("gone"), "{error}");
    }

    #[test]
    fn tablespace_map_locations_are_unescaped_as_postgresql_escapes_them() {
        let map = parse_tablespace_map("16385 /srv/ts one\n16386 /odd\\\\path\\\nline\n");
        assert_eq!(map.get(&16385).map(String::as_str), Some("/srv/ts one"));
        assert_eq!(
            map.get(&16386).map(String::as_str),
            Some("/odd\\path\nline")
        );
        assert_eq!(parse_tablespace_map("").len(), 0);
        assert_eq!(
            parse_tablespace_map("1 /a").get(&1).map(String::as_str),
            Some("/a")
        );
    }

    #[test]
    fn modes_are_those_postgresql_makes() {
        assert_eq!(file_mode(0o104_777), 0o640);
        assert_eq!(file_mode(0o600), 0o600);
        assert_eq!(file_mode(0), 0o600);
        assert_eq!(directory_mode(0o1777), 0o750);
        assert_eq!(directory_mode(0o700), 0o700);
        assert_eq!(directory_mode(0), 0o700);
    }

    #[test]
    fn tablespace_map_is_rewritten() {
        let mapping = BTreeMap::from([(16385, PathBuf::from("/new/ts"))]);
        assert_eq!(
            rewrite_tablespace_map("16385 /old/ts\n16386 /other\n", &mapping),
            "16385 /new/ts\n16386 /other\n"
        );
    }
}
