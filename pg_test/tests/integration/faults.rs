//! Fault injection: things break on purpose, and nothing PostgreSQL was told is archived or
//! backed up may be lost or served corrupt.
//!
//! Trials are seeded and reproducible: `SC_BACKUP_FAULT_SEED` (default below) and
//! `SC_BACKUP_FAULT_TRIALS` (kill -9 rounds per target, default 3; docs/reliability.md's long
//! run uses 20, and `SC_BACKUP_FAULT_SAMPLES` for the corruption sample, default 30).
//! Each test prints one `faults:` line with what it injected, detected and lost.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sc_backup_pg_test::fault_proxy::{Fault, FaultProxy};
use sc_backup_pg_test::postgres::Client;
use sc_backup_pg_test::{
    archiving_conf, objects_under, run_ok, sc_backup, start_primary, take_backup, Cluster,
    ClusterOptions, S3Server, TestDir,
};

const PASSPHRASE: &str = "fault suite passphrase";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    env_number("SC_BACKUP_FAULT_SEED", 20261124)
}

fn encrypted(extra: &str) -> String {
    format!(
        "sc_backup.compression = zstd\n\
         sc_backup.encryption = age\n\
         sc_backup.encryption_passphrase = '{PASSPHRASE}'\n\
         sc_backup.archive_parallelism = 2\n\
         wal_keep_size = '4GB'\n\
         max_wal_size = '4GB'\n{extra}"
    )
}

/// `sc-backup` against a local repository with the suite's passphrase.
fn cli(cwd: &Path, repository: &Path, args: &[&str]) -> std::process::Output {
    sc_backup(cwd)
        .env("SC_BACKUP_REPOSITORY", repository)
        .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE)
        .args(args)
        .output()
        .unwrap()
}

use sc_backup_pg_test::output_text as text;

/// Some WAL: rows with full-page images, then a switch. Returns the finished segment.
fn write_wal(client: &mut Client, rows: i32) -> String {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS churn (id int, payload text);
             INSERT INTO churn SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {rows}) g;"
        ))
        .unwrap();
    client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0)
}

/// Every segment PostgreSQL considers archived and still has in pg_wal comes back from the
/// repository byte-identical. Returns how many were compared.
/// Fetches every segment PostgreSQL marked `.done` that is still in pg_wal and compares it with
/// the original: `(compared, different)`.
fn every_archived_segment_is_identical(cluster: &Cluster, scratch: &Path) -> (usize, usize) {
    let (mut compared, mut different) = (0, 0);
    for name in cluster.done_files() {
        let original = cluster.data.join("pg_wal").join(&name);
        let Ok(expected) = fs::read(&original) else {
            continue; // recycled
        };
        let destination = scratch.join(format!("fetched-{name}"));
        let fetched = cluster.wal_fetch(&name, &destination);
        if fetched != expected {
            eprintln!("{name}: the archived copy differs");
            different += 1;
        }
        fs::remove_file(&destination).unwrap();
        compared += 1;
    }
    (compared, different)
}

/// The names of the backups with objects in a local repository.
fn backup_prefixes(repository: &Path) -> Vec<String> {
    fs::read_dir(repository.join("backups"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// WAL files waiting for the archiver (`archive_status/*.ready`).
fn ready_files(cluster: &Cluster) -> usize {
    sc_backup_core::pg::archive_status::archive_backlog(&cluster.data, std::time::SystemTime::now())
        .map_or(0, |backlog| backlog.ready_segments as usize)
}

/// After failures PostgreSQL's archiver sleeps up to a minute unless new WAL wakes it: write a
/// little, switch, and wait until everything up to that is archived.
fn nudge_and_wait_archived(cluster: &Cluster, client: &mut Client) {
    let nudge = write_wal(client, 10);
    cluster.wait_archived(client, &nudge);
}

fn listed_backups(client: &mut Client) -> Vec<String> {
    client
        .query("SELECT backup_name FROM sc_list_backups()", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn backend_pid(client: &mut Client, backend_type: &str) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = $1",
            &[&backend_type],
        )
        .unwrap()
        .map(|row| row.get(0))
}

/// After a process of the cluster was killed, PostgreSQL (as it should) resets every backend
/// and runs crash recovery. Waits for that reset to reach `client` (so that a reconnect does
/// not land before it), then reconnects.
fn after_crash_reset(cluster: &Cluster, mut client: Client) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if client.simple_query("SELECT 1").is_err() {
            return cluster.reconnect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    client
}

fn kill9(pid: i32) {
    // Safety: kill(2) on a process of the test's own cluster.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[test]
fn kill_9_of_archiver_postmaster_and_backup_backend_loses_nothing() {
    let trials = env_number("SC_BACKUP_FAULT_TRIALS", 3);
    assert!(trials >= 1, "SC_BACKUP_FAULT_TRIALS must be at least 1");
    let mut rng = StdRng::seed_from_u64(seed());
    let dir = TestDir::new("faults_kill9");
    let repository = dir.subdir("repo");
    let (mut cluster, mut client) =
        start_primary(&dir, &archiving_conf(&repository, &encrypted("")));
    client
        .batch_execute(
            "CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g",
        )
        .unwrap();
    let mut completed_backups = Vec::new();
    let mut interrupted_backups = 0;
    let mut kills = [0u32; 3];
    // Kills of the archiver while WAL waited for it, and of a backend while its sc_backup()
    // was writing objects: evidence that the kills hit work in flight.
    let (mut archiver_busy, mut backend_mid_backup) = (0, 0);
    // A backup killed before it committed: never listed.
    let mut killed_before_commit = Vec::new();
    for trial in 0..trials {
        // The archiver, mid-segment: PostgreSQL restarts every process (crash recovery).
        // After the previous trial's crash the postmaster starts the archiver at its next
        // wake-up (up to a minute when idle); a new connection wakes it.
        let mut archiver = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while archiver.is_none() && Instant::now() < deadline {
            archiver = backend_pid(&mut cluster.reconnect(), "archiver");
            std::thread::sleep(Duration::from_millis(50));
        }
        let archiver = archiver.expect("the archiver is running");
        // The kill lands a random few milliseconds after a segment switch, while that segment
        // still waits (its .ready is there until the archive is durable). An archiver quicker
        // than the pause gets another segment, so that every trial's kill hits WAL in flight
        // (a single trial, as in CI's subsets, proves the point too).
        for _ in 0..20 {
            write_wal(&mut client, 20_000);
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
            if ready_files(&cluster) > 0 {
                archiver_busy += 1;
                break;
            }
        }
        kill9(archiver);
        kills[0] += 1;
        client = after_crash_reset(&cluster, client);

        // The postmaster and everything under it, as a power cut would.
        write_wal(&mut client, 20_000);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        drop(client);
        cluster.crash();
        kills[1] += 1;
        cluster.start();
        client = cluster.reconnect();

        // A backend in the middle of sc_backup().
        let mut backup_client = cluster.connect();
        let pid: i32 = backup_client
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        let backup = std::thread::spawn(move || {
            backup_client
                .query_one("SELECT backup_name FROM sc_backup()", &[])
                .map(|row| row.get::<_, String>(0))
        });
        // A backup here takes a few seconds: some are killed, some complete. The first trial's
        // kill lands while the backup's objects are being written (a new backup's prefix has
        // appeared, and it has no backup.json yet), before it can have committed.
        let prefixes_before = backup_prefixes(&repository);
        let mut writing = None;
        if trial == 0 {
            let deadline = Instant::now() + Duration::from_secs(60);
            while writing.is_none() && Instant::now() < deadline {
                writing = backup_prefixes(&repository)
                    .into_iter()
                    .find(|name| !prefixes_before.contains(name));
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(writing.is_some(), "the first backup never started writing");
        } else {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..5000)));
        }
        let committed_before_kill = writing.as_ref().is_some_and(|name| {
            repository
                .join("backups")
                .join(name)
                .join("backup.json")
                .exists()
        });
        kill9(pid);
        kills[2] += 1;
        if let Some(name) = writing.filter(|_| !committed_before_kill) {
            backend_mid_backup += 1;
            killed_before_commit.push(name);
        }
        match backup.join().unwrap() {
            Ok(name) => completed_backups.push(name),
            Err(_) => interrupted_backups += 1,
        }
        client = after_crash_reset(&cluster, client);
        eprintln!("trial {trial}: completed backups so far {completed_backups:?}");
    }

    // Archiving catches up; every archived segment is intact.
    let last = write_wal(&mut client, 1000);
    cluster.wait_archived(&mut client, &last);
    let (compared, lost) = every_archived_segment_is_identical(&cluster, &dir.path);
    assert_eq!(lost, 0, "archived segments differ from the originals");
    assert!(
        compared >= 3 * trials as usize,
        "only {compared} segments compared"
    );
    assert!(archiver_busy >= 1, "no archiver kill hit pending WAL");
    assert!(
        backend_mid_backup >= 1,
        "no backend kill landed before its backup committed"
    );

    // Every backup that reported success is listed, and every listed backup verifies. A
    // kill can land after a backup committed (its backup.json durable) and before the reply
    // reached the client, like a COMMIT whose acknowledgement is lost: such a backup is
    // listed though its caller saw an error, and it must verify like any other.
    let listed = listed_backups(&mut client);
    for name in &completed_backups {
        assert!(listed.contains(name), "{name} completed but is not listed");
    }
    for name in &killed_before_commit {
        assert!(
            !listed.contains(name),
            "{name} was killed before it committed, and is listed"
        );
    }
    let committed_unreported = listed.len() - completed_backups.len();
    assert!(
        committed_unreported <= interrupted_backups,
        "listed: {listed:?}, reported: {completed_backups:?}"
    );
    eprintln!("{committed_unreported} backup(s) committed before the kill reached their reply");
    for name in &listed {
        let problems = client
            .query("SELECT * FROM sc_verify($1)", &[name])
            .unwrap();
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
    // What interrupted backups left is cleaned by expiry (under the backup lock).
    client.query("SELECT * FROM sc_expire()", &[]).unwrap();
    // No object of an unlisted backup is left but the tombstone expiry claimed it with (kept a
    // week, so that its writer could not complete it). (Files a killed writer was writing stay
    // under their dot-names, which no reader lists, until expiry finds them an hour old.)
    let stored = objects_under(&repository.join("backups"));
    let leftovers: Vec<&PathBuf> = stored
        .iter()
        .filter(|path| {
            !listed
                .iter()
                .any(|name| path.starts_with(repository.join("backups").join(name)))
        })
        .filter(|path| {
            !(path.ends_with("backup.json")
                && fs::read_to_string(path).is_ok_and(|text| text.contains("sc_backup_tombstone")))
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    let mut everything = Vec::new();
    walk_all(&repository, &mut everything);
    let temporaries = everything
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp."))
        .count();
    // And a new backup after all that is whole.
    let fresh = take_backup(&mut client);
    assert!(client
        .query("SELECT * FROM sc_verify($1)", &[&fresh])
        .unwrap()
        .is_empty());
    println!(
        "faults: kill -9 seed {} archiver {} ({archiver_busy} with WAL pending) postmaster {} backup-backend {} ({backend_mid_backup} while writing, before commit); segments compared {compared}, lost {lost}; \
         backups completed {} interrupted {interrupted_backups}, killed before commit and listed 0 of {}, committed but unreported {committed_unreported} (verified), objects left after expire {} (besides tombstones), \
         temporary files of killed writers {temporaries} (unlisted; swept by expire after an hour)",
        seed(),
        kills[0],
        kills[1],
        kills[2],
        completed_backups.len(),
        killed_before_commit.len(),
        leftovers.len()
    );
    cluster.stop("fast");
}

/// A repository on a small tmpfs: archiving fails with a clear error while it is full, no
/// partial object is ever visible, PostgreSQL keeps the WAL, and archiving resumes when space
/// returns.
#[test]
fn disk_full_repository_keeps_the_wal_and_resumes() {
    let dir = TestDir::new("faults_disk_full");
    let mount_point = dir.subdir("small-fs");
    run_ok(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=40m,mode=0755", "tmpfs"])
            .arg(&mount_point),
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mount_point.clone());
    let repository = mount_point.join("repo");
    fs::create_dir(&repository).unwrap();
    fs::set_permissions(&repository, fs::Permissions::from_mode(0o700)).unwrap();
    run_ok(
        std::process::Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&mount_point),
    );
    let (mut cluster, mut client) = start_primary(
        &dir,
        &archiving_conf(
            &repository,
            // Uncompressed, so that three segments cannot fit into 40 MiB.
            "sc_backup.compression = none\nwal_keep_size = '1GB'\nsc_backup.archive_parallelism = 2",
        ),
    );
    let mut last = String::new();
    for _ in 0..4 {
        last = write_wal(&mut client, 30_000);
    }
    cluster.wait_until("an archiving failure", Duration::from_secs(60), || {
        let failed: i64 = client
            .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
            .unwrap()
            .get(0);
        failed > 0
    });
    let log = cluster.log_text();
    assert!(log.contains("No space left on device"), "{log}");
    let ready = fs::read_dir(cluster.data.join("pg_wal/archive_status"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .count();
    assert!(ready > 0, "PostgreSQL must keep the unarchived WAL");
    // Everything visible decodes whole: no partial object (temporary files are dot-named and
    // never listed).
    let (visible, visible_different) = every_archived_segment_is_identical(&cluster, &dir.path);
    run_ok(
        std::process::Command::new("mount")
            .args(["-o", "remount,size=512m"])
            .arg(&mount_point),
    );
    nudge_and_wait_archived(&cluster, &mut client);
    assert!(last <= cluster.done_files().last().cloned().unwrap_or_default());
    let (compared, different) = every_archived_segment_is_identical(&cluster, &dir.path);
    assert_eq!(
        (visible_different, different),
        (0, 0),
        "archived copies differ"
    );
    assert!(compared > visible);
    println!(
        "faults: disk full: archiving failures reported, .ready kept {ready}, visible-while-full {visible} ({visible_different} different), \
         after space returned {compared} segments compared, {different} different"
    );
    cluster.stop("fast");
}

/// Which object a trial corrupts.
#[derive(Debug, Clone, Copy)]
enum Victim {
    DataFile,
    /// A bundle of small files: a damaged byte is named as the file stored there.
    Bundle,
    Manifest,
    Metadata,
    WalSegment,
    History,
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    FlipByte,
    Truncate,
    Delete,
}

/// Every file under `dir`, temporary ones included.
fn walk_all(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            walk_all(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

/// The objects under `dir`: what readers see (temporary dot-files excluded).
/// Seeded random corruption of every kind of object: each one is detected by `sc_verify()`
/// or by restore / wal-fetch, with a message naming the object.
#[test]
fn corruption_of_any_object_is_detected_and_named() {
    let samples = env_number("SC_BACKUP_FAULT_SAMPLES", 30);
    // Fewer would leave a victim × damage pair untried.
    assert!(
        samples >= 18,
        "SC_BACKUP_FAULT_SAMPLES must be at least 18 (6 victims × 3 damages), not {samples}"
    );
    let mut rng = StdRng::seed_from_u64(seed() ^ 0xc0ffee);
    let dir = TestDir::new("faults_corruption");
    let repository = dir.subdir("repo");
    let (mut cluster, mut client) =
        start_primary(&dir, &archiving_conf(&repository, &encrypted("")));
    client
        .batch_execute("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g")
        .unwrap();
    let backup = take_backup(&mut client);
    let last = write_wal(&mut client, 10_000);
    cluster.wait_archived(&mut client, &last);
    cluster.stop("fast");
    // A history file, archived by the same code the archiver runs (a promotion is slow).
    let history = dir.path.join("00000002.history");
    fs::write(&history, "1\t0/3000000\tno recovery target specified\n").unwrap();
    {
        let settings = sc_backup_core::Settings::from_raw(&sc_backup_core::RawSettings {
            repository: Some(repository.display().to_string()),
            compression: Some("zstd".into()),
            encryption: Some("age".into()),
            encryption_passphrase: Some(sc_backup_core::config::Secret::new(PASSPHRASE)),
            ..Default::default()
        })
        .unwrap();
        let repo = sc_backup_core::Repository::open(&settings).unwrap();
        repo.archive_wal(&history, "00000002.history").unwrap();
        run_ok(
            std::process::Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(&repository),
        );
    }
    cluster.start();
    let mut client = cluster.connect();

    let backup_dir = repository.join("backups").join(&backup);
    let data_objects = objects_under(&backup_dir.join("data"));
    let bundle_objects = objects_under(&backup_dir.join("bundle"));
    assert!(!bundle_objects.is_empty(), "the backup has no bundle");
    let wal_objects = objects_under(&repository.join("wal"));
    let (history_objects, segment_objects): (Vec<PathBuf>, Vec<PathBuf>) = wal_objects
        .into_iter()
        .partition(|p| p.to_string_lossy().contains("/history/"));
    let manifest = fs::read_dir(&backup_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("manifest")
        })
        .expect("a manifest object");
    let metadata = backup_dir.join("backup.json");
    assert!(metadata.exists() && !segment_objects.is_empty() && !history_objects.is_empty());

    let victims = [
        Victim::DataFile,
        Victim::Bundle,
        Victim::Manifest,
        Victim::Metadata,
        Victim::WalSegment,
        Victim::History,
    ];
    let damages = [Damage::FlipByte, Damage::Truncate, Damage::Delete];
    let mut detected = 0;
    let mut by_kind = std::collections::BTreeMap::<String, u32>::new();
    for sample in 0..samples {
        // Every pair in turn (so every pair is tried), where and how much at random.
        let pair = sample as usize % (victims.len() * damages.len());
        let victim = victims[pair / damages.len()];
        let damage = damages[pair % damages.len()];
        let object = match victim {
            Victim::DataFile => data_objects[rng.gen_range(0..data_objects.len())].clone(),
            Victim::Bundle => bundle_objects[rng.gen_range(0..bundle_objects.len())].clone(),
            Victim::Manifest => manifest.clone(),
            Victim::Metadata => metadata.clone(),
            Victim::WalSegment => segment_objects[rng.gen_range(0..segment_objects.len())].clone(),
            Victim::History => history_objects[0].clone(),
        };
        let original = fs::read(&object).unwrap();
        match damage {
            Damage::FlipByte => {
                let mut bytes = original.clone();
                let at = rng.gen_range(0..bytes.len());
                bytes[at] ^= 1 << rng.gen_range(0..8);
                fs::write(&object, bytes).unwrap();
            }
            Damage::Truncate => {
                let keep = rng.gen_range(0..original.len());
                fs::write(&object, &original[..keep]).unwrap();
            }
            Damage::Delete => fs::remove_file(&object).unwrap(),
        }
        let file_name = object.file_name().unwrap().to_string_lossy().into_owned();
        // Each damaged object is named by its own key; a backup whose metadata is gone no
        // longer exists, and that is what is said.
        let expected_name = match (victim, damage) {
            (Victim::Metadata, Damage::Delete) => {
                format!("backup \"{backup}\" is not in the repository")
            }
            (Victim::Metadata, _) => format!("backups/{backup}/backup.json"),
            _ => file_name.clone(),
        };
        let what = format!("sample {sample}: {damage:?} of {victim:?} {file_name}");
        match victim {
            Victim::WalSegment | Victim::History => {
                // The object name starts with the WAL file name.
                let wal_name = file_name.split('-').next().unwrap().to_string();
                let destination = dir.path.join("fetched");
                let output = cli(
                    &cluster.data,
                    &repository,
                    &["wal-fetch", &wal_name, destination.to_str().unwrap()],
                );
                assert!(!output.status.success(), "{what}: wal-fetch succeeded");
                assert!(!destination.exists(), "{what}: wal-fetch left a file");
                let message = text(&output);
                if matches!(damage, Damage::Delete) {
                    // restore_command's convention: a missing file is exit status 1 and no
                    // noise (PostgreSQL probes for files that do not exist).
                    assert_eq!(output.status.code(), Some(1), "{what}: {message}");
                } else {
                    assert!(message.contains(&wal_name), "{what}: {message}");
                }
            }
            _ => {
                let verified =
                    client.query("SELECT object, problem FROM sc_verify($1)", &[&backup]);
                let said = match verified {
                    Ok(rows) => {
                        assert!(!rows.is_empty(), "{what}: sc_verify found nothing");
                        rows.iter()
                            .map(|row| {
                                format!("{}: {}", row.get::<_, String>(0), row.get::<_, String>(1))
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    }
                    Err(error) => error
                        .as_db_error()
                        .map(|e| e.message().to_string())
                        .unwrap_or_default(),
                };
                assert!(
                    said.contains(&expected_name),
                    "{what}: sc_verify did not name {expected_name}: {said}"
                );
                let target = dir.path.join("restored");
                let output = cli(
                    &dir.path,
                    &repository,
                    &[
                        "restore",
                        "--backup",
                        &backup,
                        "--pgdata",
                        target.to_str().unwrap(),
                    ],
                );
                assert!(!output.status.success(), "{what}: restore succeeded");
                let message = text(&output);
                assert!(
                    message.contains(&expected_name),
                    "{what}: restore said {message}"
                );
                let _ = fs::remove_dir_all(&target);
            }
        }
        detected += 1;
        *by_kind.entry(format!("{victim:?}/{damage:?}")).or_default() += 1;
        fs::write(&object, &original).unwrap();
        run_ok(
            std::process::Command::new("chown")
                .arg("postgres")
                .arg(&object),
        );
    }
    // Everything put back: the backup verifies again.
    assert!(client
        .query("SELECT * FROM sc_verify($1)", &[&backup])
        .unwrap()
        .is_empty());
    assert_eq!(by_kind.len(), victims.len() * damages.len(), "{by_kind:?}");
    println!(
        "faults: corruption seed {} injected {samples} detected and named {detected} ({}%), {} victim × damage pairs, by kind {by_kind:?}",
        seed() ^ 0xc0ffee,
        detected * 100 / samples,
        by_kind.len()
    );
    cluster.stop("fast");
}

/// Wrong passphrase, another cluster's repository, a mode mismatch: refused with a clear
/// message, nothing written, and archiving resumes once the setting is right.
#[test]
fn wrong_key_and_foreign_repository_are_refused_without_writing() {
    let dir = TestDir::new("faults_wrong_key");
    let repository = dir.subdir("repo");
    let (mut cluster, mut client) =
        start_primary(&dir, &archiving_conf(&repository, &encrypted("")));
    let first = write_wal(&mut client, 1000);
    cluster.wait_archived(&mut client, &first);
    let count_objects = || objects_under(&repository).len();

    // Wrong passphrase: refused, nothing written, WAL kept. The refusal is the archiver's
    // own message (PostgreSQL's reload line names the setting too, and proves nothing), and
    // the count is taken after the archiver has failed on the new WAL.
    let mut refusals = 0;
    let failures = archiver_failures(&mut client);
    let log_mark = cluster.log_text().len();
    cluster.append_conf("sc_backup.encryption_passphrase = 'not the passphrase'");
    client.execute("SELECT pg_reload_conf()", &[]).unwrap();
    cluster.wait_until("the reload", Duration::from_secs(30), || {
        cluster.log_text()[log_mark..].contains("sc_backup.encryption_passphrase")
    });
    let before = count_objects();
    let pending = write_wal(&mut client, 1000);
    cluster.wait_until("the wrong key's refusal", Duration::from_secs(60), || {
        cluster.log_text()[log_mark..].contains("wrong passphrase for the key of repository")
            && archiver_failures(&mut client) > failures
    });
    refusals += 1;
    assert_eq!(
        count_objects(),
        before,
        "nothing may be written with a wrong key"
    );
    assert!(
        !cluster.log_text().contains("not the passphrase"),
        "the secret was logged"
    );
    let output = sc_backup(&dir.path)
        .env("SC_BACKUP_REPOSITORY", &repository)
        .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", "still wrong")
        .args(["wal-fetch", &first, dir.path.join("x").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("passphrase"), "{}", text(&output));
    assert!(!text(&output).contains("still wrong"));
    assert!(!dir.path.join("x").exists());

    // Encryption mode mismatch.
    let failures = archiver_failures(&mut client);
    let log_mark = cluster.log_text().len();
    cluster.append_conf("sc_backup.encryption = none");
    client.execute("SELECT pg_reload_conf()", &[]).unwrap();
    cluster.wait_until("the mode refusal", Duration::from_secs(60), || {
        cluster.log_text()[log_mark..].contains("but sc_backup.encryption is \"none\"")
            && archiver_failures(&mut client) > failures
    });
    refusals += 1;
    assert_eq!(count_objects(), before);

    // Back to the right settings: the kept WAL is archived.
    cluster.append_conf(&format!(
        "sc_backup.encryption = age\nsc_backup.encryption_passphrase = '{PASSPHRASE}'"
    ));
    client.execute("SELECT pg_reload_conf()", &[]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    nudge_and_wait_archived(&cluster, &mut client);
    assert!(cluster.done_files().contains(&pending));

    // Another cluster pointed at this repository: refused by system identifier.
    let mut other = Cluster::init(
        &dir,
        "other",
        ClusterOptions {
            conf: &archiving_conf(&repository, &encrypted("")),
            ..Default::default()
        },
    );
    other.start();
    let mut other_client = other.connect();
    let before = count_objects();
    let other_failures = archiver_failures(&mut other_client);
    other_client
        .query_one("SELECT pg_switch_wal()", &[])
        .unwrap();
    other_client
        .batch_execute("CREATE TABLE x AS SELECT 1; SELECT pg_switch_wal()")
        .unwrap();
    other.wait_until(
        "the foreign-repository refusal",
        Duration::from_secs(60),
        || {
            other.log_text().contains("belongs to another cluster")
                && archiver_failures(&mut other_client) > other_failures
        },
    );
    refusals += 1;
    let written = count_objects() - before;
    assert_eq!(written, 0, "another cluster wrote into the repository");
    println!("faults: wrong key / mode / foreign cluster: refused {refusals} of 3, objects written {written}, WAL kept and archived after the fix");
    other.stop("immediate");
    cluster.stop("fast");
}

fn archiver_failures(client: &mut Client) -> i64 {
    client
        .query_one("SELECT failed_count FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0)
}

/// The object store misbehaves (errors, throttling, cut connections, slowness, an outage under
/// load); archiving keeps the WAL and catches up, nothing truncated is accepted, and a restore
/// afterwards is exact.
#[test]
fn object_store_faults_lose_nothing_and_accept_nothing_truncated() {
    let dir = TestDir::new("faults_object_store");
    let server = S3Server::start(&dir, "s3");
    server.create_bucket("faults");
    let proxy = FaultProxy::start(server.endpoint.trim_start_matches("http://").to_string());
    let conf = format!(
        "{}sc_backup.s3_endpoint = '{}'\n",
        server.conf(),
        proxy.endpoint()
    );
    let url = "s3://faults/cluster";
    let (mut cluster, mut client) = start_primary(
        &dir,
        &archiving_conf(url, &format!("{conf}{}", encrypted("archive_timeout = 0"))),
    );
    let first = write_wal(&mut client, 2000);
    cluster.wait_archived(&mut client, &first);
    // The CLI reads the store directly, to see what really is there.
    let direct = |args: &[&str]| {
        sc_backup(&dir.path)
            .env("SC_BACKUP_REPOSITORY", url)
            .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE)
            .env("SC_BACKUP_S3_ENDPOINT", &server.endpoint)
            .env("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY)
            .args(args)
            .output()
            .unwrap()
    };

    let mut injected = Vec::new();
    let backups_before = listed_backups(&mut client).len();
    for fault in [
        Fault::Status(500),
        Fault::Status(503),
        Fault::CutAfter(100),
        Fault::Refuse,
    ] {
        let failures = archiver_failures(&mut client);
        proxy.set(fault);
        let pending = write_wal(&mut client, 2000);
        cluster.wait_until(
            &format!("a failure under {fault:?}"),
            Duration::from_secs(60),
            || archiver_failures(&mut client) > failures,
        );
        assert!(
            cluster
                .data
                .join(format!("pg_wal/archive_status/{pending}.ready"))
                .exists(),
            "{fault:?}: the WAL must stay ready"
        );
        // A backup during the fault fails cleanly and leaves nothing listed.
        assert!(client.query("SELECT * FROM sc_backup()", &[]).is_err());
        proxy.set(Fault::Pass);
        nudge_and_wait_archived(&cluster, &mut client);
        assert!(cluster.done_files().contains(&pending));
        assert_eq!(listed_backups(&mut client).len(), backups_before);
        injected.push(format!("{fault:?}"));
    }

    // Conditional writes carried out whose answers were lost (timeouts on a flaky link): the
    // retries meet their own objects, which must be confirmed, not refused; the backup and the
    // archiving around it succeed.
    proxy.lose_answers(3);
    let confirmed = take_backup(&mut client);
    let lost = proxy.answers_lost();
    proxy.set(Fault::Pass);
    assert!(lost >= 1, "no answer was lost");
    assert!(listed_backups(&mut client).contains(&confirmed));
    injected.push(format!("{lost} lost answers to conditional writes"));

    // Slow responses: archiving still succeeds, just later.
    proxy.set(Fault::Slow(Duration::from_millis(50)));
    let slow = write_wal(&mut client, 2000);
    cluster.wait_archived(&mut client, &slow);
    proxy.set(Fault::Pass);
    injected.push("Slow(50ms per chunk)".into());

    // An outage under load.
    let backup = take_backup(&mut client);
    let outage = Duration::from_secs(env_number("SC_BACKUP_FAULT_OUTAGE_SECONDS", 10));
    let failures_before_outage = archiver_failures(&mut client);
    proxy.set(Fault::Refuse);
    let mut load = cluster.pgbench(&["-i", "-s", "2", "-q"]).output().unwrap();
    assert!(load.status.success());
    let until = Instant::now() + outage;
    while Instant::now() < until {
        load = cluster.pgbench(&["-n", "-T", "2"]).output().unwrap();
        assert!(load.status.success());
        write_wal(&mut client, 500);
    }
    let failed_during_outage = archiver_failures(&mut client) - failures_before_outage;
    assert!(
        failed_during_outage > 0,
        "archiving never failed during the outage"
    );
    proxy.set(Fault::Pass);
    nudge_and_wait_archived(&cluster, &mut client);
    let expected: i64 = client
        .query_one("SELECT sum(abalance)::bigint FROM pgbench_accounts", &[])
        .unwrap()
        .get(0);
    let last = write_wal(&mut client, 100);
    cluster.wait_archived(&mut client, &last);
    injected.push(format!("outage {}s under pgbench", outage.as_secs()));
    let (compared, different) = every_archived_segment_is_identical(&cluster, &dir.path);
    assert_eq!(different, 0, "archived copies differ from the originals");
    assert!(compared > 0, "no archived segment was left to compare");

    // Truncated GET responses never become a WAL file.
    let proxied_fetch = |wal: &str, destination: &Path| {
        sc_backup(&dir.path)
            .env("SC_BACKUP_REPOSITORY", url)
            .env("SC_BACKUP_ENCRYPTION_PASSPHRASE", PASSPHRASE)
            .env("SC_BACKUP_S3_ENDPOINT", proxy.endpoint())
            .env("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3Server::SECRET_KEY)
            // A cut connection is an outage to wal-fetch, tried again for this long.
            .env("SC_BACKUP_WAL_FETCH_RETRY_SECONDS", "1")
            .args(["wal-fetch", wal])
            .arg(destination)
            .output()
            .unwrap()
    };
    let stored = objects_under(&server.root.join("faults"));
    let object_size = stored
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&last))
        .map(|p| fs::metadata(p).unwrap().len() as usize)
        .expect("the last segment's object");
    let (mut truncations, mut accepted) = (0, 0);
    // Mid-headers; mid-body and one byte short of the object's body (counted from the end of
    // the response's headers).
    for cut in [
        Fault::CutAfter(100),
        Fault::CutBodyAfter(object_size / 2),
        Fault::CutBodyAfter(object_size - 1),
    ] {
        proxy.set(cut);
        let destination = dir.path.join(format!("cut-{truncations}"));
        let output = proxied_fetch(&last, &destination);
        if output.status.success() || destination.exists() {
            accepted += 1;
        }
        truncations += 1;
    }
    proxy.set(Fault::Pass);
    assert_eq!(accepted, 0, "a truncated fetch was accepted");

    // A restore after all that reaches exactly the final state.
    cluster.stop("fast");
    let target = dir.path.join("restored");
    let output = direct(&[
        "restore",
        "--backup",
        &backup,
        "--pgdata",
        target.to_str().unwrap(),
        "--target-action",
        "promote",
        "--archive-mode",
        "off",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let mut restored = Cluster::adopt(&dir, "restored", target);
    // Secrets never travel in a backup: the store's keys come back from the operator.
    restored.append_conf(&server.conf());
    restored.start();
    let mut restored_client = restored.connect();
    restored.wait_promoted(&mut restored_client);
    let actual: i64 = restored_client
        .query_one("SELECT sum(abalance)::bigint FROM pgbench_accounts", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        actual, expected,
        "the restore after the faults is not exact"
    );
    println!(
        "faults: object store {injected:?}: WAL kept and archived after each, archiving failed {failed_during_outage} time(s) during the outage, {compared} segments compared, {different} different; \
         truncated GETs {truncations}, accepted {accepted}; restore after outage exact (sum {actual})"
    );
    restored.stop("fast");
}
