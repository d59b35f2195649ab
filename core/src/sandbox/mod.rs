//! A sandbox: a throwaway cluster restored from the repository, for table-level recovery,
//! verification by restore and DR drills. This is the one place that creates, starts, waits
//! for, queries and removes such a cluster; the commands only say what to do inside it.
//!
//! It must never be mistaken for production, nor hurt it:
//! - it lives in a new directory (`sandbox-<pid>-<n>`, mode 0700) inside a private directory
//!   (`sc-backup-<uid>`: owned by the user that runs the sandbox server, mode 0700, refused
//!   otherwise) of a parent checked for room first, and listens only on a Unix socket in that
//!   directory: no TCP port, never the production socket;
//! - the server is started with every setting that matters on its command line, which beats
//!   every configuration file: its own (empty) `config_file`, `hba_file` and `ident_file` (so
//!   nothing of production's configuration, includes or `data_directory` applies),
//!   `archive_mode = off`, nothing preloaded (no scheduler, no cron extension), no logical
//!   replication workers (a restored subscription must not consume production's slots), and a
//!   small footprint (shared_buffers, connections, no autovacuum) next to production's server;
//! - it runs as the postgres OS user, in its own process group (a terminal's Ctrl-C reaches
//!   the command, which then stops it), and receives SIGQUIT if the process that started it
//!   dies, so no server outlives its command; a directory left by a killed command is swept by
//!   the next one ([`sweep_abandoned`]);
//! - it is stopped and removed when dropped, whatever happened, unless asked to be kept.
//!
//! Queries go through the sandbox major's own `psql` (`-X`, no password: trust on the private
//! socket only), so no client library has to match the server's version.

pub mod drill;
pub mod extract;
pub mod restore_test;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::backup::{BackupMetadata, Manifest};
use crate::error::{Error, Result};
use crate::pg::server_binaries::ServerBinaries;
use crate::repository::Repository;
use crate::restore::{restore, RecoveryTarget, RestoreOptions, RestoreProgress, WalSource};
use crate::util::bytes::human_bytes;

/// Room kept free beyond the backup's size: the WAL replayed and written while it runs.
pub const WORKING_ROOM: u64 = 1 << 30;
const DIRECTORY_PREFIX: &str = "sandbox-";
/// In a sandbox left running by `--keep`: the user removes it, not the sweep.
const KEPT_MARKER: &str = "kept";
/// The socket's port number: only its file name, in the sandbox's own directory.
const PORT: &str = "5432";

#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Where the sandbox directory is created.
    pub parent: PathBuf,
    /// The server of the backup's major.
    pub server: ServerBinaries,
    pub target: RecoveryTarget,
    pub target_timeline: Option<String>,
    /// Where recovery gets its WAL (the backup's own only, for a recovery to consistency).
    pub wal_source: WalSource,
    /// Environment the server (and so its `restore_command`) needs, such as object store
    /// credentials; passed to the process, never on a command line.
    pub environment: Vec<(String, String)>,
    /// The role to connect as.
    pub superuser: String,
    /// More `name=value` settings for the server (after ours, so they win).
    pub settings: Vec<(String, String)>,
    /// False for a drill, whose timings must be those of a real recovery.
    pub relaxed_durability: bool,
    pub parallelism: usize,
    /// Stops a restore or a wait in progress (Ctrl-C, SIGTERM).
    pub cancel: Arc<AtomicBool>,
}

/// How long each phase of getting a sandbox up took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Files laid down.
    pub restore: Duration,
    /// Server start to the end of WAL replay ("redo done").
    pub replay: Duration,
    /// End of replay to a promoted server accepting writes.
    pub promote: Duration,
}

#[derive(Debug)]
pub struct Sandbox {
    directory: PathBuf,
    data: PathBuf,
    log: PathBuf,
    server: ServerBinaries,
    superuser: String,
    environment: Vec<(String, String)>,
    /// The postgres OS user's uid and gid when we run as root.
    run_as: Option<(u32, u32)>,
    postmaster: Option<Child>,
    keep: bool,
    /// The recovery settings the restore wrote, repeated on the command line.
    recovery_settings: Vec<(String, String)>,
    pub timings: Timings,
}

/// Bytes free for an unprivileged user on the filesystem holding `path`.
pub fn free_space(path: &Path) -> Result<u64> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        Error::io(
            "check free space in",
            path.display(),
            std::io::Error::other("NUL in path"),
        )
    })?;
    // Safety: statvfs fills the struct we pass; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(Error::io(
            "check free space in",
            path.display(),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The postgres OS user's uid and gid, when we run as root (PostgreSQL refuses root).
fn postgres_user() -> Result<Option<(u32, u32)>> {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // Safety: getpwnam returns a pointer to static storage or NULL; read at once.
    let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if entry.is_null() {
        return Err(Error::Sandbox(
            "running as root, but there is no postgres OS user to run the sandbox server as".into(),
        ));
    }
    Ok(Some(unsafe { ((*entry).pw_uid, (*entry).pw_gid) }))
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| Error::io("change the owner of", path.display(), e))?;
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path.display(), e))?;
    if meta.is_dir() {
        for entry in
            fs::read_dir(path).map_err(|e| Error::io("read directory", path.display(), e))?
        {
            let entry = entry.map_err(|e| Error::io("read directory", path.display(), e))?;
            chown_tree(&entry.path(), (uid, gid))?;
        }
    }
    Ok(())
}

/// Removes sandboxes left under `parent` by commands that were killed (their process is
/// gone), stopping a server still running in one. Returns what was removed.
pub fn sweep_abandoned(parent: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(parent) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIRECTORY_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() as i32
            || Path::new(&format!("/proc/{pid}")).exists()
            || entry.path().join(KEPT_MARKER).exists()
        {
            continue;
        }
        let data = entry.path().join("data");
        if let Some(postmaster) = running_postmaster(&data) {
            // Safety: kill(2) on the server of an abandoned sandbox (its pid file says so).
            unsafe { libc::kill(postmaster, libc::SIGQUIT) };
            wait_gone(postmaster, Duration::from_secs(30));
        }
        if fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// The postmaster running on `data`, if one is: the pid its `postmaster.pid` names, and only
/// when that process's working directory is `data` itself (a postmaster works in its data
/// directory). A pid file is only text: one written by someone else, or left by a server whose
/// pid was reused, must never get a signal sent to an unrelated process.
fn running_postmaster(data: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    if pid <= 1 {
        return None;
    }
    let working_directory = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    (working_directory == fs::canonicalize(data).ok()?).then_some(pid)
}

/// The directory under `parent` where this user's sandboxes are made: owned by the user that
/// runs the sandbox server (postgres when we run as root), mode 0700, created if missing and
/// refused if anything else (a link, another owner, wider access). `parent` itself (default
/// /var/tmp) may be shared by every local user; nobody else can then place, read or change
/// anything in a sandbox, nor plant a `postmaster.pid` for the sweep to act on.
pub fn private_directory(parent: &Path) -> Result<PathBuf> {
    private_directory_for(parent, postgres_user()?)
}

fn private_directory_for(parent: &Path, run_as: Option<(u32, u32)>) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    // Safety: geteuid has no preconditions.
    let uid = run_as.map_or_else(|| unsafe { libc::geteuid() }, |(uid, _)| uid);
    let directory = parent.join(format!("sc-backup-{uid}"));
    match fs::DirBuilder::new().mode(0o700).create(&directory) {
        Ok(()) => {
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::lchown(&directory, Some(uid), Some(gid))
                    .map_err(|e| Error::io("change the owner of", directory.display(), e))?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create directory", directory.display(), e)),
    }
    let meta =
        fs::symlink_metadata(&directory).map_err(|e| Error::io("stat", directory.display(), e))?;
    if !meta.file_type().is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(Error::SandboxPlace(format!(
            "{} is not a private directory (a {} owned by uid {}, mode {:o}): sandboxes are made only in a directory owned by the user that runs them (uid {uid}), mode 0700; remove it, or choose another place",
            directory.display(),
            if meta.file_type().is_symlink() { "link" } else if meta.is_dir() { "directory" } else { "file" },
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(directory)
}

fn wait_gone(pid: i32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Sandbox {
    /// Creates the sandbox directory and restores `metadata` into it, with recovery to
    /// `options.target` then promotion. Refuses, before writing anything, when the parent
    /// lacks room for the backup plus [`WORKING_ROOM`].
    pub fn restore(
        repository: &Repository,
        metadata: &BackupMetadata,
        manifest: &Manifest,
        options: &SandboxOptions,
        progress: &(dyn Fn(RestoreProgress) + Sync),
    ) -> Result<Sandbox> {
        for (name, value) in &options.settings {
            check_extra_setting(name, value)?;
        }
        let needed = metadata.playbook.size_bytes + WORKING_ROOM;
        let free = free_space(&options.parent)?;
        if free < needed {
            return Err(Error::SandboxPlace(format!(
                "not enough free space in {} for a sandbox of backup {}: it needs {} (the backup, {}, plus {} of working room), {} are free",
                options.parent.display(),
                metadata.playbook.backup_name,
                human_bytes(needed),
                human_bytes(metadata.playbook.size_bytes),
                human_bytes(WORKING_ROOM),
                human_bytes(free)
            )));
        }
        let run_as = postgres_user()?;
        let directory = create_directory(&private_directory_for(&options.parent, run_as)?)?;
        let data = directory.join("data");
        let mut sandbox = Sandbox {
            log: directory.join("server.log"),
            data: data.clone(),
            directory,
            server: options.server.clone(),
            superuser: options.superuser.clone(),
            environment: options.environment.clone(),
            run_as,
            postmaster: None,
            keep: false,
            recovery_settings: Vec::new(),
            timings: Timings::default(),
        };
        let started = Instant::now();
        let restore_options = RestoreOptions {
            pgdata: data,
            force: false,
            target: options.target.clone(),
            target_action: Some("promote".into()),
            target_timeline: options.target_timeline.clone(),
            tablespace_map: manifest
                .entries
                .iter()
                .filter_map(|entry| {
                    let oid = entry.path.strip_prefix("pg_tblspc/")?.parse::<u32>().ok()?;
                    Some((oid, sandbox.directory.join(format!("tablespace-{oid}"))))
                })
                .collect(),
            parallelism: options.parallelism,
            wal_source: options.wal_source.clone(),
            archive_off: true,
            cancel: Some(options.cancel.clone()),
            // Thrown away after use, and run with fsync off.
            sync: false,
        };
        let restored = restore(repository, metadata, manifest, &restore_options, progress)?;
        sandbox.recovery_settings = restored.recovery_settings;
        sandbox.write_configuration(options)?;
        if let Some(owner) = run_as {
            chown_tree(&sandbox.directory, owner)?;
        }
        sandbox.timings.restore = started.elapsed();
        Ok(sandbox)
    }

    /// The configuration files the server is pointed at, and the settings it starts with.
    fn write_configuration(&self, options: &SandboxOptions) -> Result<()> {
        let write = |name: &str, text: &str| {
            let path = self.directory.join(name);
            fs::write(&path, text).map_err(|e| Error::io("write", path.display(), e))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io("set permissions on", path.display(), e))
        };
        write(
            "sandbox.conf",
            "# An sc-backup sandbox. Its settings are on the server's command line\n\
             # (postmaster.opts); production's configuration files are not read.\n",
        )?;
        // Only the postgres OS user can reach the socket (the directory is 0700).
        write("pg_hba.conf", "local all all trust\n")?;
        write("pg_ident.conf", "")?;
        let mut settings = self.settings(options.relaxed_durability);
        settings.extend(options.settings.iter().cloned());
        let text: String = settings
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        write("settings", &text)
    }

    fn settings(&self, relaxed_durability: bool) -> Vec<(String, String)> {
        let dir = self.directory.display().to_string();
        let mut settings: Vec<(&str, String)> = vec![
            ("config_file", format!("{dir}/sandbox.conf")),
            ("hba_file", format!("{dir}/pg_hba.conf")),
            ("ident_file", format!("{dir}/pg_ident.conf")),
            ("data_directory", self.data.display().to_string()),
            ("listen_addresses", String::new()),
            ("unix_socket_directories", dir.clone()),
            ("port", PORT.into()),
            ("cluster_name", "sc-backup sandbox".into()),
            ("unix_socket_permissions", "0700".into()),
            ("unix_socket_group", String::new()),
            ("archive_mode", "off".into()),
            ("archive_command", String::new()),
            ("archive_library", String::new()),
            // Nothing the backup's own configuration names is loaded or run: a backup taken
            // from (or written into the repository by) someone else could ship a library in
            // its data directory, or a command, and the sandbox runs as the postgres OS user.
            ("shared_preload_libraries", String::new()),
            ("session_preload_libraries", String::new()),
            ("local_preload_libraries", String::new()),
            ("dynamic_library_path", "$libdir".into()),
            ("jit", "off".into()),
            ("jit_provider", "llvmjit".into()),
            ("archive_cleanup_command", String::new()),
            ("recovery_end_command", String::new()),
            ("ssl_passphrase_command", String::new()),
            ("external_pid_file", String::new()),
            ("primary_conninfo", String::new()),
            ("primary_slot_name", String::new()),
            ("max_logical_replication_workers", "0".into()),
            ("max_wal_senders", "0".into()),
            ("hot_standby", "off".into()),
            // Replaying prepared transactions needs room for them; their number is not known.
            ("max_prepared_transactions", "64".into()),
            ("max_connections", "20".into()),
            ("superuser_reserved_connections", "3".into()),
            ("shared_buffers", "128MB".into()),
            ("max_worker_processes", "8".into()),
            ("max_parallel_workers", "2".into()),
            ("autovacuum", "off".into()),
            ("ssl", "off".into()),
            ("logging_collector", "off".into()),
            ("log_destination", "stderr".into()),
            ("log_line_prefix", "%m [%p] ".into()),
            ("log_timezone", "UTC".into()),
        ];
        if self.server.major() >= 17 {
            // Login event triggers (17+) of the restored catalog would run at our connections.
            settings.push(("event_triggers", "off".into()));
        }
        if self.server.major() >= 18 {
            // Where CREATE EXTENSION finds control files (and so libraries): the server's own.
            settings.push(("extension_control_path", "$system".into()));
        }
        if relaxed_durability {
            // Thrown away afterwards: nothing needs to survive a crash of the machine.
            settings.push(("fsync", "off".into()));
            settings.push(("synchronous_commit", "off".into()));
        }
        let mut settings: Vec<(String, String)> = settings
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        // Ours, after the defaults above: restore_command, recovery_end_command (the spool's
        // and the key's cleanup) and the target.
        settings.extend(self.recovery_settings.iter().cloned());
        settings
    }

    /// Starts the server and waits until recovery has ended and it accepts connections.
    /// A server that stops on its own (a target not reached, a missing WAL file) is an error
    /// quoting its log.
    pub fn start(&mut self, cancel: &AtomicBool) -> Result<()> {
        let settings = fs::read_to_string(self.directory.join("settings"))
            .map_err(|e| Error::io("read", self.directory.join("settings").display(), e))?;
        // Appended to: a kept sandbox is started a second time (see `keep`).
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::io("create", self.log.display(), e))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.log, Some(uid), Some(gid))
                .map_err(|e| Error::io("change the owner of", self.log.display(), e))?;
        }
        let mut command = Command::new(self.server.program("postgres"));
        command.arg("-D").arg(&self.data);
        for line in settings.lines() {
            command.arg("-c").arg(line);
        }
        command
            .current_dir(&self.directory)
            .envs(self.environment.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| Error::io("open", self.log.display(), e))?,
            )
            .stderr(log)
            // Its own process group: a terminal's Ctrl-C is ours to handle, then we stop it.
            .process_group(0);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        if !self.keep {
            // Safety: prctl in the forked child before exec (after its setuid, which would
            // clear it), async-signal-safe. If the thread that started the server dies, the
            // server gets SIGQUIT (immediate shutdown).
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let started = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| Error::io("start", self.server.program("postgres").display(), e))?;
        self.postmaster = Some(child);
        let ready = loop {
            if cancel.load(Ordering::SeqCst) {
                return Err(Error::Interrupted);
            }
            if let Some(status) = self
                .postmaster
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                self.postmaster = None;
                return Err(Error::Sandbox(format!(
                    "the sandbox server stopped ({status}) before recovery ended: {}",
                    self.log_problems()
                )));
            }
            match self.psql("postgres", "SELECT pg_is_in_recovery()") {
                Ok(answer) if answer.trim() == "f" => break Instant::now(),
                Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                Err(Error::Sandbox(refusal)) if !still_starting(&refusal) => {
                    // The server is up but refuses us for good (a library its configuration
                    // names cannot be loaded, say): waiting would never end.
                    return Err(Error::Sandbox(format!(
                        "the sandbox server refuses connections: {refusal}"
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let log = self.log_text();
        let at = |marker: &str| log_time(&log, marker);
        let (first, redo_done, accepting) = (
            log.lines().find_map(line_time),
            at("redo done at"),
            at("database system is ready to accept connections"),
        );
        self.timings.replay = match (first, redo_done) {
            (Some(first), Some(done)) => (done - first).to_std().unwrap_or_default(),
            _ => ready - started,
        };
        self.timings.promote = match (redo_done, accepting) {
            (Some(done), Some(accepting)) => (accepting - done).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        Ok(())
    }

    /// Runs `sql` in `database` with the sandbox's `psql`; returns its unaligned output
    /// (fields separated by U+001F, rows by newlines).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let output = self
            .client("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-F",
                "\u{1f}",
            ])
            // As a connection string whose one parameter is the database: a database named
            // like `host=/run/postgresql dbname=postgres` must not aim psql at production.
            .arg("-d")
            .arg(crate::cluster::live::with_database("", database))
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("run", self.server.program("psql").display(), e))?;
        if !output.status.success() {
            return Err(Error::Sandbox(format!(
                "in the sandbox, database \"{database}\": {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A client program of the sandbox's major (`psql`, `pg_dump`) aimed at the sandbox.
    pub fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.server.program(program));
        command
            .env("PGHOST", &self.directory)
            .env("PGPORT", PORT)
            .env("PGUSER", &self.superuser)
            // A client's options beat the restored catalog's per-role and per-database
            // settings (ALTER ROLE ... SET session_preload_libraries), which beat the command
            // line: nothing is loaded at our connections either.
            .env(
                "PGOPTIONS",
                "-c session_preload_libraries= -c local_preload_libraries= -c jit=off",
            )
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGDATABASE");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// libpq connection parameters of the sandbox (for `--keep`).
    pub fn conninfo(&self, database: &str) -> String {
        use crate::pg::quote::quote_conninfo_value as quote;
        format!(
            "host={} port={PORT} user={} dbname={}",
            quote(&self.directory.display().to_string()),
            quote(&self.superuser),
            quote(database)
        )
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    pub fn server(&self) -> &ServerBinaries {
        &self.server
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server log's FATAL, PANIC and ERROR lines (with their DETAIL and HINT), or its
    /// tail when there are none.
    pub fn log_problems(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let mut picked = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if ["FATAL:", "PANIC:", "ERROR:"]
                .iter()
                .any(|l| line.contains(l))
            {
                picked.push(line.trim());
                for follow in lines.iter().skip(i + 1).take(2) {
                    if follow.contains("DETAIL:") || follow.contains("HINT:") {
                        picked.push(follow.trim());
                    }
                }
            }
        }
        if picked.is_empty() {
            picked = lines.iter().rev().take(5).rev().map(|l| l.trim()).collect();
        }
        picked.join(" | ")
    }

    /// Leaves the sandbox running when dropped (the caller prints how to reach it).
    pub fn keep(&mut self) -> Result<()> {
        // The running server would die with us (parent-death signal), and that cannot be
        // undone from outside: restart it untied. It is promoted, so it is up at once.
        let timings = self.timings;
        self.stop();
        // Marks it as kept on purpose: the sweep leaves it alone.
        let marker = self.directory.join(KEPT_MARKER);
        fs::write(&marker, "").map_err(|e| Error::io("write", marker.display(), e))?;
        self.keep = true;
        let started = self.start(&AtomicBool::new(false));
        self.timings = timings;
        if started.is_err() {
            // Dropped like any other sandbox: stopped and removed.
            self.keep = false;
        }
        started
    }

    /// Stops the server: fast shutdown, then immediate, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        let pid = child.id() as i32;
        for (signal, patience) in [
            (libc::SIGINT, Duration::from_secs(30)),
            (libc::SIGQUIT, Duration::from_secs(10)),
            (libc::SIGKILL, Duration::from_secs(10)),
        ] {
            // Safety: kill(2) on our own child.
            unsafe { libc::kill(pid, signal) };
            let deadline = Instant::now() + patience;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.keep {
            if let Some(child) = self.postmaster.take() {
                // Not ours to stop any more; it no longer dies with us either.
                std::mem::forget(child);
            }
            return;
        }
        self.stop();
        // The server is gone; its WAL prefetcher notices within a download, or is told to.
        crate::wal::prefetch::stop_prefetcher(&self.data, Duration::from_secs(10));
        let _ = fs::remove_dir_all(&self.directory);
    }
}

/// A new sandbox directory, mode 0700, named after this process (for [`sweep_abandoned`]),
/// in `parent`, the [`private_directory`].
fn create_directory(parent: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    sweep_abandoned(parent);
    let name = format!(
        "{DIRECTORY_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let path = parent.join(name);
    // The server's socket lives in the sandbox directory; its lock file's path must fit in a
    // socket address (sun_path, 108 bytes with its terminating NUL).
    let socket_lock = path.join(format!(".s.PGSQL.{PORT}.lock"));
    if socket_lock.as_os_str().len() > 107 {
        return Err(Error::SandboxPlace(format!(
            "the sandbox's socket {} would be longer than a Unix socket path may be (107 bytes); choose a shorter path",
            socket_lock.display()
        )));
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|e| Error::io("create directory", path.display(), e))?;
    Ok(path)
}

/// Whether a failed connection is one a server in recovery gives until it accepts them (no
/// socket yet, starting up, not accepting connections during recovery, shutting down), rather
/// than a refusal that will not change.
fn still_starting(psql_error: &str) -> bool {
    let fatal = psql_error.contains("FATAL:") || psql_error.contains("ERROR:");
    !fatal
        || [
            "the database system is starting up",
            "not yet accepting connections",
            "the database system is not accepting connections",
            "the database system is shutting down",
            "consistent recovery state has not been yet reached",
        ]
        .iter()
        .any(|phase| psql_error.contains(phase))
}

/// The time at the start of a server log line (`log_line_prefix = '%m [%p] '`, UTC).
fn line_time(line: &str) -> Option<DateTime<Utc>> {
    let stamp = line.get(..23)?;
    NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.3f")
        .ok()
        .map(|t| t.and_utc())
}

fn log_time(log: &str, marker: &str) -> Option<DateTime<Utc>> {
    log.lines()
        .filter(|l| l.contains(marker))
        .find_map(line_time)
}

/// Settings that keep the sandbox away from production and from the repository: a setting
/// given by the user comes after ours and would win, so these cannot be given at all.
const ISOLATION_SETTINGS: &[&str] = &[
    "config_file",
    "hba_file",
    "ident_file",
    "data_directory",
    "listen_addresses",
    "unix_socket_directories",
    "unix_socket_permissions",
    "unix_socket_group",
    "port",
    "archive_mode",
    "archive_command",
    "archive_library",
    "archive_cleanup_command",
    "restore_command",
    "recovery_end_command",
    "primary_conninfo",
    "primary_slot_name",
    "max_wal_senders",
    "max_logical_replication_workers",
    "hot_standby",
    "session_preload_libraries",
    "local_preload_libraries",
    "dynamic_library_path",
    "jit_provider",
    "ssl_passphrase_command",
    "external_pid_file",
    "event_triggers",
    "extension_control_path",
];

/// Refuses a user's setting that would undo the sandbox's isolation: its socket, its own
/// configuration files, archiving off, no replication, nothing loaded or run that the sandbox
/// did not choose (a preloaded sc_backup's scheduler, for one, would take backups of the
/// sandbox into the repository named in the restored `postgresql.auto.conf`).
pub fn check_extra_setting(name: &str, value: &str) -> Result<()> {
    // `postgres -c` reads `listen-addresses` as `listen_addresses`, and names are
    // case-insensitive: compare what the server will see.
    let lower = name.trim().to_ascii_lowercase().replace('-', "_");
    let refused = ISOLATION_SETTINGS.contains(&lower.as_str())
        || lower.starts_with("recovery_target")
        || lower.starts_with("sc_backup.")
        || lower.contains('=')
        // The operator may preload what a database needs (timescaledb, say), from the
        // server's own library directory, but not sc_backup.
        || (lower == "shared_preload_libraries"
            && value.split(',').any(|library| {
                // `sc_backup`, `"sc_backup"`, `$libdir/sc_backup.so`: the same library.
                let file = library.trim().trim_matches(['"', '\'']);
                let file = file.rsplit('/').next().unwrap_or(file);
                file.trim_end_matches(".so") == "sc_backup"
            }));
    if refused {
        return Err(Error::Sandbox(format!(
            "the sandbox setting {name}={value} is refused: the sandbox sets {name} itself so that it stays on its private socket, never archives and cannot reach production or the repository"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_give_the_phases() {
        let log = "2026-11-24 20:01:02.100 UTC [10] LOG:  starting PostgreSQL 17.6\n\
                   2026-11-24 20:01:05.250 UTC [12] LOG:  redo done at 0/3000028 system usage: ...\n\
                   2026-11-24 20:01:05.900 UTC [10] LOG:  database system is ready to accept connections\n";
        let first = log.lines().find_map(line_time).unwrap();
        let done = log_time(log, "redo done at").unwrap();
        let ready = log_time(log, "ready to accept connections").unwrap();
        assert_eq!((done - first).num_milliseconds(), 3150);
        assert_eq!((ready - done).num_milliseconds(), 650);
        assert_eq!(line_time("garbage"), None);
    }

    #[test]
    fn abandoned_sandboxes_of_dead_processes_are_swept_and_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        // A pid that cannot exist (above pid_max) and our own.
        let dead = parent.path().join(format!("{DIRECTORY_PREFIX}999999999-0"));
        let ours = parent
            .path()
            .join(format!("{DIRECTORY_PREFIX}{}-0", std::process::id()));
        let other = parent.path().join("something-else");
        let kept = parent.path().join(format!("{DIRECTORY_PREFIX}999999998-0"));
        for dir in [&dead, &ours, &other, &kept] {
            fs::create_dir_all(dir.join("data")).unwrap();
        }
        fs::write(kept.join(KEPT_MARKER), "").unwrap();
        assert_eq!(sweep_abandoned(parent.path()), vec![dead.clone()]);
        assert!(!dead.exists() && ours.exists() && other.exists() && kept.exists());
    }

    /// Only a directory of our own, 0700, holds sandboxes; a link or a directory someone else
    /// made in a shared parent is refused.
    #[test]
    fn sandboxes_live_only_in_a_private_directory() {
        use std::os::unix::fs::MetadataExt;
        let parent = tempfile::tempdir().unwrap();
        let private = private_directory_for(parent.path(), None).unwrap();
        let meta = fs::symlink_metadata(&private).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(private_directory_for(parent.path(), None).unwrap(), private);
        fs::set_permissions(&private, fs::Permissions::from_mode(0o777)).unwrap();
        let error = private_directory_for(parent.path(), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a private directory"), "{error}");
        fs::remove_dir(&private).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), &private).unwrap();
        let error = private_directory_for(parent.path(), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("a link"), "{error}");
        fs::remove_file(&private).unwrap();
        // Owned by someone else (nobody's uid, when we may chown).
        if unsafe { libc::geteuid() } == 0 {
            fs::DirBuilder::new().mode(0o700).create(&private).unwrap();
            std::os::unix::fs::chown(&private, Some(65534), None).unwrap();
            let error = private_directory_for(parent.path(), None)
                .unwrap_err()
                .to_string();
            assert!(error.contains("owned by uid 65534"), "{error}");
        }
    }

    /// A `postmaster.pid` naming a live process that is not that directory's postmaster (this
    /// test's own process, here) gets no signal.
    #[test]
    fn the_sweep_signals_only_the_postmaster_of_that_data_directory() {
        let parent = tempfile::tempdir().unwrap();
        let planted = parent.path().join(format!("{DIRECTORY_PREFIX}999999997-0"));
        fs::create_dir_all(planted.join("data")).unwrap();
        let victim = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs::write(
            planted.join("data/postmaster.pid"),
            format!("{}\n/some/data\n", victim.id()),
        )
        .unwrap();
        assert_eq!(running_postmaster(&planted.join("data")), None);
        sweep_abandoned(parent.path());
        let mut victim = victim;
        assert!(
            victim.try_wait().unwrap().is_none(),
            "the sweep signalled a process that is not a postmaster of the sandbox"
        );
        let _ = victim.kill();
        let _ = victim.wait();
    }

    #[test]
    fn settings_that_would_undo_the_isolation_are_refused() {
        for (name, value) in [
            ("port", "5432"),
            ("Listen_Addresses", "*"),
            ("listen-addresses", "*"),
            ("archive_mode", "on"),
            ("recovery_target_time", "2026-11-24 10:00:00+00"),
            ("recovery-target-time", "2026-11-24 10:00:00+00"),
            ("sc_backup.repository", "/tmp/x"),
            ("shared_preload_libraries", "timescaledb, sc_backup"),
            ("shared_preload_libraries", "'$libdir/sc_backup.so'"),
            ("session_preload_libraries", "/tmp/x.so"),
            ("local-preload-libraries", "x"),
            ("dynamic_library_path", "/tmp"),
            ("jit_provider", "../../tmp/x"),
            ("archive_cleanup_command", "touch /tmp/x"),
            ("recovery_end_command", "touch /tmp/x"),
            ("ssl_passphrase_command", "touch /tmp/x"),
            ("external_pid_file", "/etc/x"),
            ("shared-preload-libraries", "sc_backup"),
        ] {
            let error = check_extra_setting(name, value).unwrap_err().to_string();
            assert!(error.contains("is refused"), "{name}: {error}");
        }
        check_extra_setting("work_mem", "64MB").unwrap();
        check_extra_setting("shared_preload_libraries", "timescaledb").unwrap();
    }

    #[test]
    fn a_server_still_starting_is_waited_for_and_a_refusal_is_not() {
        for starting in [
            "psql: error: connection to server on socket \"/x/.s.PGSQL.5432\" failed: No such file or directory\n\tIs the server running locally and accepting connections on that socket?",
            "psql: error: connection to server on socket \"/x/.s.PGSQL.5432\" failed: FATAL:  the database system is starting up",
            "psql: error: connection to server on socket \"/x/.s.PGSQL.5432\" failed: FATAL:  the database system is not accepting connections\nDETAIL:  Hot standby mode is disabled.",
        ] {
            assert!(still_starting(starting), "{starting}");
        }
        assert!(!still_starting(
            "psql: error: connection to server on socket \"/x/.s.PGSQL.5432\" failed: FATAL:  could not access file \"evil\": No such file or directory"
        ));
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn free_space_is_read() {
        assert!(free_space(Path::new("/")).unwrap() > 0);
        assert!(free_space(Path::new("/no/such/directory")).is_err());
    }
}
