//! Real PostgreSQL clusters on private Unix sockets: start, archive, back up, compare.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::*;
use crate::files::*;
use crate::postgres;
use crate::process::*;

/// A table's row count and an MD5 of all its rows in text order: equal contents give equal
/// pairs, whatever the physical order (an empty table's digest is "").
pub fn table_content(client: &mut impl postgres::GenericClient, table: &str) -> (i64, String) {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t"
            ),
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// Every user table of every database but the templates, with [`table_content`]: what a
/// restore of the cluster must give back, keyed by `database.schema.table` (the extension's own
/// audit table left out: a backup's audit row commits after the backup ends).
pub fn cluster_content(cluster: &Cluster) -> std::collections::BTreeMap<String, (i64, String)> {
    let mut content = std::collections::BTreeMap::new();
    let databases: Vec<String> = cluster
        .connect()
        .query(
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for database in databases {
        let mut client = cluster.connect_to(&database);
        let tables: Vec<String> = client
            .query(
                "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables WHERE schemaname <> 'sc_backup' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        content.insert(
            format!("{database} (database)"),
            (tables.len() as i64, String::new()),
        );
        for table in tables {
            let digest = table_content(&mut client, &table);
            content.insert(format!("{database}.{table}"), digest);
        }
    }
    content
}

/// A PostgreSQL cluster run by the postgres OS user.
pub struct Cluster {
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub log: PathBuf,
    running: bool,
}

/// Options for [`Cluster::init`].
#[derive(Default)]
pub struct ClusterOptions<'a> {
    /// Lines appended to postgresql.conf.
    pub conf: &'a str,
    /// WAL segment size in MiB (initdb --wal-segsize); default 16.
    pub wal_segment_mb: Option<u32>,
    /// More initdb arguments (`--data-checksums`, say).
    pub initdb_args: &'a [&'a str],
}

impl Cluster {
    pub fn init(dir: &TestDir, name: &str, options: ClusterOptions) -> Cluster {
        let data = dir.path.join(name);
        let mut initdb = as_postgres(pg_bindir().join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        if let Some(mb) = options.wal_segment_mb {
            initdb.arg(format!("--wal-segsize={mb}"));
        }
        initdb.args(options.initdb_args);
        run_ok(&mut initdb);
        let cluster = Cluster::adopt(dir, name, data);
        cluster.append_conf(options.conf);
        cluster
    }

    /// A cluster for an existing data directory (a restored backup, say), given its own socket
    /// directory and log under `dir`.
    pub fn adopt(dir: &TestDir, name: &str, data: PathBuf) -> Cluster {
        let cluster = Cluster {
            socket_dir: dir.subdir(&format!("{name}.sock")),
            log: dir.path.join(format!("{name}.log")),
            data,
            running: false,
        };
        cluster.append_conf(&format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nlog_min_messages = info",
            cluster.socket_dir.display()
        ));
        cluster
    }

    pub fn append_conf(&self, lines: &str) {
        let path = self.data.join("postgresql.conf");
        let mut conf = fs::read_to_string(&path).unwrap();
        conf.push('\n');
        conf.push_str(lines);
        conf.push('\n');
        fs::write(&path, conf).unwrap();
    }

    pub fn start(&mut self) {
        let output = as_postgres(pg_bindir().join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap();
        if !output.status.success() {
            panic!(
                "pg_ctl start failed: {}\nserver log:\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log_text()
            );
        }
        self.running = true;
    }

    /// `mode`: smart, fast or immediate.
    pub fn stop(&mut self, mode: &str) {
        run_ok(
            as_postgres(pg_bindir().join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "60", "-m", mode, "stop"]),
        );
        self.running = false;
    }

    pub fn connect(&self) -> postgres::Client {
        self.connect_to("postgres")
    }

    pub fn connect_to(&self, database: &str) -> postgres::Client {
        postgres::Config::new()
            .host_path(&self.socket_dir)
            .user("postgres")
            .dbname(database)
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect: {e}\nserver log:\n{}", self.log_text()))
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `condition` until it holds, failing with the server log after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\nserver log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = as_postgres(pg_bindir().join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-m", "immediate", "stop"])
                .output();
        }
    }
}

/// A cluster initialised with `conf`, started, with the extension created: most tests' primary.
pub fn start_primary(dir: &TestDir, conf: &str) -> (Cluster, postgres::Client) {
    let mut primary = Cluster::init(
        dir,
        "primary",
        ClusterOptions {
            conf,
            ..Default::default()
        },
    );
    primary.start();
    let mut client = primary.connect();
    client.batch_execute("CREATE EXTENSION sc_backup").unwrap();
    (primary, client)
}

/// `SELECT sc_backup()`, returning the new backup's name.
pub fn take_backup(client: &mut postgres::Client) -> String {
    client
        .query_one("SELECT backup_name FROM sc_backup()", &[])
        .unwrap()
        .get(0)
}

impl Cluster {
    /// pgbench against this cluster's `postgres` database (`args` before the database name).
    pub fn pgbench(&self, args: &[&str]) -> Command {
        let mut command = as_postgres(pg_bindir().join("pgbench"));
        command
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-U", "postgres"])
            .args(args)
            .arg("postgres");
        command
    }

    /// WAL files PostgreSQL considers archived (`archive_status/*.done`), sorted.
    pub fn done_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.data.join("pg_wal/archive_status"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".done").map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    pub fn postmaster_pid(&self) -> i32 {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no postmaster.pid in {}", self.data.display()))
    }

    /// A power-loss-like stop: kill -9 of the postmaster and all of its children at once.
    /// The cluster is left stopped; [`Cluster::start`] runs crash recovery.
    pub fn crash(&mut self) {
        let postmaster = self.postmaster_pid();
        // Stopped first, so that it cannot fork a child we would miss (a child outliving the
        // postmaster keeps its shared memory attached and the next start refuses to run).
        // Safety: kill(2) on this cluster's postmaster.
        unsafe { libc::kill(postmaster, libc::SIGSTOP) };
        let mut victims = vec![postmaster];
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The parent pid is the second field after the parenthesised command name.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if parent == Some(postmaster) {
                victims.push(pid);
            }
        }
        for pid in &victims {
            // Safety: kill(2) on processes of this cluster.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while victims
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        {
            assert!(Instant::now() < deadline, "processes survived kill -9");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.running = false;
    }

    /// Connects, waiting while the server restarts (after a crash of one of its processes).
    pub fn reconnect(&self) -> postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let attempt = postgres::Config::new()
                .host_path(&self.socket_dir)
                .user("postgres")
                .dbname("postgres")
                .connect(postgres::NoTls);
            if let Ok(mut client) = attempt {
                if client.simple_query("SELECT 1").is_ok() {
                    return client;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "the server did not come back\nserver log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// postgresql.conf lines that archive into `repository` through the sc_backup library.
/// Scheduled backups are off unless `extra` turns them on (later lines win): a test that
/// counts backups must not meet the default 02:00 UTC daily one.
pub fn archiving_conf(repository: impl AsRef<std::ffi::OsStr>, extra: &str) -> String {
    let repository = repository.as_ref().to_string_lossy();
    format!(
        "shared_preload_libraries = 'sc_backup'\n\
         sc_backup.scheduler = off\n\
         archive_mode = on\n\
         archive_library = 'sc_backup'\n\
         sc_backup.repository = '{repository}'\n\
         {extra}\n"
    )
}

impl Cluster {
    /// Switches to a new WAL segment and waits until the finished one is archived.
    pub fn switch_and_wait_archived(&self, client: &mut postgres::Client) -> String {
        let last: String = client
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .unwrap()
            .get(0);
        self.wait_archived(client, &last);
        last
    }

    /// Runs `sc-backup wal-fetch` the way PostgreSQL runs restore_command (as the postgres OS
    /// user, in the data directory, no flags: the settings come from the cluster's
    /// configuration), asserts that it succeeded, and returns what it wrote to `destination`.
    pub fn wal_fetch(&self, wal_file: &str, destination: &Path) -> Vec<u8> {
        self.wal_fetch_with(&[], wal_file, destination)
    }

    /// [`Cluster::wal_fetch`] with settings flags first (`--repository 2`, say).
    pub fn wal_fetch_with(&self, flags: &[&str], wal_file: &str, destination: &Path) -> Vec<u8> {
        let output = sc_backup(&self.data)
            .args(flags)
            .args(["wal-fetch", wal_file])
            .arg(destination)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "wal-fetch {flags:?} {wal_file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        fs::read(destination).unwrap()
    }

    /// `.ready` files: WAL waiting to be archived.
    pub fn ready_segments(&self) -> u64 {
        sc_backup_core::pg::archive_status::archive_backlog(
            &self.data,
            std::time::SystemTime::now(),
        )
        .unwrap()
        .ready_segments
    }

    /// Waits until recovery has ended and the server accepts writes.
    pub fn wait_promoted(&self, client: &mut postgres::Client) {
        self.wait_until("the end of recovery", Duration::from_secs(120), || {
            !client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .unwrap()
                .get::<_, bool>(0)
        });
    }

    pub fn wait_archived(&self, client: &mut postgres::Client, wal_file: &str) {
        self.wait_until(
            &format!("{wal_file} to be archived"),
            Duration::from_secs(120),
            || {
                let archived: Option<String> = client
                    .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
                    .unwrap()
                    .get(0);
                archived.is_some_and(|a| a.as_str() >= wal_file)
            },
        );
    }
}

impl Cluster {
    /// `sc-backup` as the postgres OS user, with libpq's environment aimed at this cluster
    /// (what `extract` calls the live cluster) and the repository given.
    pub fn cli(&self, cwd: &Path, repository: &Path) -> Command {
        let mut command = sc_backup(cwd);
        command
            .env("SC_BACKUP_REPOSITORY", repository)
            .env("PGHOST", &self.socket_dir)
            .env("PGUSER", "postgres");
        command
    }
}
