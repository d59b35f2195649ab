//! A repository someone else can write to: what they can and cannot make us do.
//!
//! Each test plays the attacker with only what such a person has: write access to the
//! repository, the public formats, and in an encrypted repository the public key that
//! repository.json publishes, never the passphrase. See docs/reliability.md, "Threat model".

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sc_backup_core::backup::{
    list_backups, read_manifest, read_metadata, BackupKind, BackupMetadata, BackupReport,
    BackupStatus, BackupWriter, SourceEntry, SourceKind,
};
use sc_backup_core::config::{CompressionAlgorithm, EncryptionMode, RawSettings, Secret, Settings};
use sc_backup_core::pg::lsn::Lsn;
use sc_backup_core::repository::record::PlaybookFields;
use sc_backup_core::restore::{restore, RecoveryTarget, RestoreOptions, WalSource};
use sc_backup_core::{ClusterIdentity, Error, Repository};
use sha2::{Digest, Sha256};

const CLUSTER: ClusterIdentity = ClusterIdentity {
    system_identifier: 7_311_000_000_000_000_042,
    pg_version_num: 170_011,
};
const SEGMENT: u64 = 16 << 20;
const PASSPHRASE: &str = "hostile suite passphrase";

fn settings(dir: &Path, encrypted: bool) -> Settings {
    Settings::from_raw(&RawSettings {
        repository: Some(dir.display().to_string()),
        compression: Some("none".into()),
        encryption: Some(if encrypted { "age" } else { "none" }.into()),
        encryption_passphrase: encrypted.then(|| Secret::new(PASSPHRASE)),
        ..Default::default()
    })
    .unwrap()
}

fn repository(dir: &Path, encrypted: bool) -> Repository {
    let repo = Repository::open_for_cluster(&settings(dir, encrypted), &CLUSTER).unwrap();
    let work = tempfile::tempdir().unwrap();
    for number in 1..=3u64 {
        let name = format!("00000001000000000000000{number}");
        let path = work.path().join(&name);
        fs::write(&path, format!("segment {number}")).unwrap();
        repo.archive_wal(&path, &name).unwrap();
    }
    repo
}

fn time(text: &str) -> chrono::DateTime<chrono::Utc> {
    sc_backup_core::util::time::parse_time(text).unwrap()
}

/// What sc_backup() would report of a backup of the test cluster.
fn report() -> BackupReport {
    BackupReport {
        backup_type: "full".into(),
        database: "postgres".into(),
        host: "test".into(),
        duration_seconds: 1.0,
        start_lsn: Lsn(0x2000028),
        stop_lsn: Lsn(0x2000100),
        start_time: time("2026-12-06T10:00:00Z"),
        stop_time: time("2026-12-06T10:00:01Z"),
        timeline: 1,
        pg_version_num: CLUSTER.pg_version_num,
        system_identifier: CLUSTER.system_identifier.to_string(),
        wal_segment_size: SEGMENT,
        method: BackupKind::Full,
    }
}

/// Metadata as someone with write access could make it up.
fn metadata(name: &str) -> BackupMetadata {
    let report = report();
    BackupMetadata {
        playbook: PlaybookFields {
            backup_name: name.into(),
            backup_type: report.backup_type,
            database: report.database,
            host: report.host,
            size_bytes: 0,
            checksum: String::new(),
            compression: CompressionAlgorithm::None,
            encryption: EncryptionMode::None,
            duration_seconds: report.duration_seconds,
            start_time: report.start_time,
            stop_time: report.stop_time,
        },
        format: 1,
        stored_bytes: 0,
        start_lsn: report.start_lsn,
        stop_lsn: report.stop_lsn,
        timeline: report.timeline,
        pg_version_num: report.pg_version_num,
        system_identifier: report.system_identifier,
        wal_segment_size: report.wal_segment_size,
        file_count: 0,
        manifest: String::new(),
        catalog: String::new(),
        catalog_checksum: String::new(),
        status: BackupStatus::Complete,
        parent: None,
        method: BackupKind::Full,
        block_size: 0,
        metadata_sha256: String::new(),
    }
}

/// A backup of `entries` (plus a pg_control), written through the writer as anyone with
/// write access to an unencrypted repository could write it.
fn store(repo: &Repository, name: &str, source: &Path, mut entries: Vec<SourceEntry>) {
    let control = source.join("pg_control");
    fs::write(&control, [0u8; 64]).unwrap();
    for directory in ["global", "pg_wal"] {
        entries.push(SourceEntry {
            path: directory.into(),
            source: source.to_path_buf(),
            kind: SourceKind::Directory,
        });
    }
    entries.push(SourceEntry {
        path: "global/pg_control".into(),
        source: control,
        kind: SourceKind::File,
    });
    let writer = BackupWriter::new(repo, name).unwrap();
    let stored = writer.store_files(entries, 1, &mut || Ok(())).unwrap();
    writer.finish(stored, None, report()).unwrap();
}

fn file(source: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
    let path = source.join(name);
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn restore_into(repo: &Repository, name: &str, pgdata: &Path) -> Result<(), Error> {
    let metadata = read_metadata(repo, name)?;
    let manifest = read_manifest(repo, &metadata)?;
    let options = RestoreOptions {
        pgdata: pgdata.to_path_buf(),
        force: false,
        target: RecoveryTarget::Immediate,
        target_action: None,
        target_timeline: None,
        tablespace_map: Default::default(),
        parallelism: 1,
        wal_source: WalSource::BackupOnly,
        archive_off: true,
        cancel: None,
        sync: false,
    };
    restore(repo, &metadata, &manifest, &options, &|_| {}).map(|_| ())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        found.push(entry.path());
        if entry.file_type().unwrap().is_dir() {
            found.extend(files_under(&entry.path()));
        }
    }
    found
}

/// A link anywhere but `pg_tblspc/<oid>`, or one there pointing elsewhere than the backup's
/// tablespace_map says, is refused before anything is written; nothing lands outside.
#[test]
fn links_escaping_the_data_directory_are_refused_before_anything_is_written() {
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repository(repo_dir.path(), false);
    let source = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let payload = file(source.path(), "payload", b"written through a link", 0o600);
    let outside_path = outside.path().display().to_string();
    let cases: Vec<(&str, Vec<SourceEntry>, &str)> = vec![
        (
            "link_in_base",
            vec![
                SourceEntry {
                    path: "base".into(),
                    source: source.path().into(),
                    kind: SourceKind::Directory,
                },
                SourceEntry {
                    path: "base/1".into(),
                    source: source.path().into(),
                    kind: SourceKind::Symlink(outside_path.clone()),
                },
                SourceEntry {
                    path: "base/1/postgresql.auto.conf".into(),
                    source: payload.clone(),
                    kind: SourceKind::File,
                },
            ],
            "a link outside pg_tblspc",
        ),
        (
            "tablespace_elsewhere",
            vec![
                SourceEntry {
                    path: "pg_tblspc".into(),
                    source: source.path().into(),
                    kind: SourceKind::Directory,
                },
                SourceEntry {
                    path: "pg_tblspc/16385".into(),
                    source: source.path().into(),
                    kind: SourceKind::Symlink(outside_path.clone()),
                },
                SourceEntry {
                    path: "pg_tblspc/16385/PG_17_202406281/evil".into(),
                    source: payload.clone(),
                    kind: SourceKind::File,
                },
                SourceEntry {
                    path: "tablespace_map".into(),
                    source: file(
                        source.path(),
                        "map",
                        b"16385 /srv/the/real/tablespace\n",
                        0o600,
                    ),
                    kind: SourceKind::File,
                },
            ],
            "the backup's tablespace_map says",
        ),
        (
            "tablespace_without_map",
            vec![
                SourceEntry {
                    path: "pg_tblspc".into(),
                    source: source.path().into(),
                    kind: SourceKind::Directory,
                },
                SourceEntry {
                    path: "pg_tblspc/16385".into(),
                    source: source.path().into(),
                    kind: SourceKind::Symlink(outside_path.clone()),
                },
            ],
            "not in the backup's tablespace_map",
        ),
    ];
    for (name, entries, refusal) in cases {
        let backup = format!("{name}_full_20261206_100000");
        store(&repo, &backup, source.path(), entries);
        let pgdata = tempfile::tempdir().unwrap();
        let target = pgdata.path().join("data");
        let error = restore_into(&repo, &backup, &target)
            .unwrap_err()
            .to_string();
        assert!(error.contains(refusal), "{name}: {error}");
        assert!(
            files_under(outside.path()).is_empty(),
            "{name}: written outside: {:?}",
            files_under(outside.path())
        );
        assert!(!target.exists(), "{name}: the data directory was started");
    }
}

/// Paths that climb out, are absolute, empty or odd are refused when the manifest is read.
#[test]
fn path_tricks_in_the_manifest_are_refused() {
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repository(repo_dir.path(), false);
    let source = tempfile::tempdir().unwrap();
    let payload = file(source.path(), "payload", b"x", 0o600);
    for (index, path) in [
        "../escape",
        "/etc/passwd",
        "base//x",
        "base/./x",
        "a/../../b",
        "",
    ]
    .into_iter()
    .enumerate()
    {
        let backup = format!("trick{index}_full_20261206_100000");
        store(
            &repo,
            &backup,
            source.path(),
            vec![SourceEntry {
                path: path.into(),
                source: payload.clone(),
                kind: SourceKind::File,
            }],
        );
        let metadata = read_metadata(&repo, &backup).unwrap();
        let error = read_manifest(&repo, &metadata).unwrap_err().to_string();
        assert!(error.contains("unsafe path"), "{path:?}: {error}");
    }
}

/// Modes from the manifest are masked to what PostgreSQL makes: no setuid, no access for
/// others.
#[test]
fn modes_from_the_manifest_are_masked() {
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repository(repo_dir.path(), false);
    let source = tempfile::tempdir().unwrap();
    let suid = file(source.path(), "suid", b"#!/bin/sh\n", 0o4777);
    fs::create_dir(source.path().join("open")).unwrap();
    fs::set_permissions(
        source.path().join("open"),
        fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    store(
        &repo,
        "modes_full_20261206_100000",
        source.path(),
        vec![
            SourceEntry {
                path: "open".into(),
                source: source.path().join("open"),
                kind: SourceKind::Directory,
            },
            SourceEntry {
                path: "open/suid".into(),
                source: suid,
                kind: SourceKind::File,
            },
        ],
    );
    let pgdata = tempfile::tempdir().unwrap();
    let target = pgdata.path().join("data");
    restore_into(&repo, "modes_full_20261206_100000", &target).unwrap();
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&target.join("open/suid")), 0o640);
    assert_eq!(mode(&target.join("open")), 0o750);
}

/// The digest `backup.json` records for itself, as anyone can compute it (the document with
/// the field empty).
fn recompute_self_digest(document: &str) -> String {
    let start = document.find("\"metadata_sha256\": \"").unwrap() + 20;
    let end = start + document[start..].find('"').unwrap();
    let blanked = format!("{}{}", &document[..start], &document[end..]);
    let digest = hex::encode(Sha256::digest(blanked.as_bytes()));
    format!("{}{digest}{}", &document[..start], &document[end..])
}

fn recipient(repo_dir: &Path) -> age::x25519::Recipient {
    let info: serde_json::Value =
        serde_json::from_slice(&fs::read(repo_dir.join("repository.json")).unwrap()).unwrap();
    info["key_recipient"].as_str().unwrap().parse().unwrap()
}

fn encrypt_to(recipient: &age::x25519::Recipient, plain: &[u8]) -> Vec<u8> {
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient)).unwrap();
    let mut out = Vec::new();
    let mut writer = encryptor.wrap_output(&mut out).unwrap();
    std::io::Write::write_all(&mut writer, plain).unwrap();
    writer.finish().unwrap();
    out
}

fn refused_as_forged(result: Result<impl std::fmt::Debug, Error>, what: &str) {
    match result {
        Err(Error::NotAuthenticated { object, .. }) => {
            assert!(
                object.ends_with("backup.json") || object.ends_with(".meta"),
                "{what}: {object}"
            );
        }
        other => panic!("{what}: not refused as forged: {other:?}"),
    }
}

/// In an encrypted repository, someone with only the public key forges a manifest (pointing a
/// file at their own object), a whole backup, and moves one backup's metadata under another
/// name: each is refused by name. They also claim the repository is unencrypted: refused.
#[test]
fn forged_and_swapped_backups_in_an_encrypted_repository_are_refused() {
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repository(repo_dir.path(), true);
    let source = tempfile::tempdir().unwrap();
    let data = file(source.path(), "data", b"the real table", 0o600);
    let entry = |path: &str| SourceEntry {
        path: path.into(),
        source: data.clone(),
        kind: SourceKind::File,
    };
    store(
        &repo,
        "a_full_20261206_100000",
        source.path(),
        vec![entry("PG_VERSION")],
    );
    store(
        &repo,
        "b_full_20261206_110000",
        source.path(),
        vec![entry("PG_VERSION")],
    );
    assert_eq!(list_backups(&repo).unwrap().len(), 2);
    let recipient = recipient(repo_dir.path());
    let a_json = repo_dir
        .path()
        .join("backups/a_full_20261206_100000/backup.json");
    let original = fs::read_to_string(&a_json).unwrap();

    // 1. A forged manifest: the attacker's own file content, encrypted to the public key, its
    // digests recorded, the manifest's checksum and backup.json's own digest recomputed.
    let a = read_metadata(&repo, "a_full_20261206_100000").unwrap();
    let mut manifest = read_manifest(&repo, &a).unwrap();
    let evil = encrypt_to(&recipient, b"attacker's bytes");
    let evil_object = "data/999999.age";
    fs::create_dir_all(repo_dir.path().join("backups/a_full_20261206_100000/data")).unwrap();
    fs::write(
        repo_dir
            .path()
            .join("backups/a_full_20261206_100000")
            .join(evil_object),
        &evil,
    )
    .unwrap();
    for entry in &mut manifest.entries {
        if entry.path == "PG_VERSION" {
            entry.object = Some(evil_object.into());
            entry.offset = None;
            entry.size = Some(16);
            entry.stored_size = Some(evil.len() as u64);
            entry.stored_sha256 = Some(hex::encode(Sha256::digest(&evil)));
            entry.sha256 = Some(hex::encode(Sha256::digest(b"attacker's bytes")));
        }
    }
    let manifest_json = serde_json::to_vec(&manifest).unwrap();
    let manifest_object = "manifest.age";
    fs::write(
        repo_dir
            .path()
            .join("backups/a_full_20261206_100000")
            .join(manifest_object),
        encrypt_to(&recipient, &manifest_json),
    )
    .unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(&original).unwrap();
    forged["manifest"] = manifest_object.into();
    forged["checksum"] = format!("sha256:{}", hex::encode(Sha256::digest(&manifest_json))).into();
    forged["metadata_sha256"] = "".into();
    if let Some(object) = forged.as_object_mut() {
        object.remove("metadata_mac");
    }
    let forged = recompute_self_digest(&serde_json::to_string_pretty(&forged).unwrap());
    fs::write(&a_json, &forged).unwrap();
    refused_as_forged(
        read_metadata(&repo, "a_full_20261206_100000"),
        "forged manifest",
    );
    refused_as_forged(list_backups(&repo), "listing with a forged backup");
    let pgdata = tempfile::tempdir().unwrap();
    refused_as_forged(
        restore_into(&repo, "a_full_20261206_100000", &pgdata.path().join("data")),
        "restore of a forged backup",
    );
    // Keeping the real MAC but changing a value: refused too.
    let tampered = recompute_self_digest(&original.replace("0/2000100", "0/2000200"));
    fs::write(&a_json, &tampered).unwrap();
    refused_as_forged(
        read_metadata(&repo, "a_full_20261206_100000"),
        "a changed value",
    );
    fs::write(&a_json, &original).unwrap();
    read_metadata(&repo, "a_full_20261206_100000").unwrap();

    // 2. A swap: b's metadata (with its valid MAC) under a's name.
    let b_json = repo_dir
        .path()
        .join("backups/b_full_20261206_110000/backup.json");
    fs::copy(&b_json, &a_json).unwrap();
    refused_as_forged(
        read_metadata(&repo, "a_full_20261206_100000"),
        "swapped metadata",
    );
    fs::write(&a_json, &original).unwrap();

    // 3. A whole backup made up by someone without the passphrase.
    let made_up = repo_dir.path().join("backups/z_full_20261206_120000");
    fs::create_dir_all(&made_up).unwrap();
    let mut fake = metadata("z_full_20261206_120000");
    let empty_manifest = br#"{"format":1,"backup_name":"z_full_20261206_120000","entries":[]}"#;
    fs::write(
        made_up.join("manifest.age"),
        encrypt_to(&recipient, empty_manifest),
    )
    .unwrap();
    fake.manifest = "manifest.age".into();
    fake.playbook.checksum = format!("sha256:{}", hex::encode(Sha256::digest(empty_manifest)));
    fake.playbook.encryption = EncryptionMode::Age;
    let fake = recompute_self_digest(&serde_json::to_string_pretty(&fake).unwrap());
    fs::write(made_up.join("backup.json"), fake).unwrap();
    refused_as_forged(
        read_metadata(&repo, "z_full_20261206_120000"),
        "made-up backup",
    );
    fs::remove_dir_all(&made_up).unwrap();
    assert_eq!(list_backups(&repo).unwrap().len(), 2);

    // 4. A made-up logical dump: SQL of the attacker's, encrypted to the public key, with
    // its .sha256 and a .meta that records the right digests.
    let sql = b"CREATE ROLE intruder SUPERUSER;\n";
    let stored = encrypt_to(&recipient, sql);
    let dumps = repo_dir.path().join("dumps");
    fs::create_dir_all(&dumps).unwrap();
    let file = "postgres_full_20261206_120000.sql.age";
    fs::write(dumps.join(file), &stored).unwrap();
    let checksum = hex::encode(Sha256::digest(&stored));
    fs::write(
        dumps.join(format!("{file}.sha256")),
        format!("{checksum}  {file}\n"),
    )
    .unwrap();
    let meta = serde_json::json!({
        "backup_name": "postgres_full_20261206_120000", "backup_type": "full",
        "timestamp": "20261206_120000", "database": "postgres", "host": "x",
        "size_bytes": stored.len(), "checksum": checksum, "compression": "none",
        "encryption": true, "duration_seconds": 1.0, "format": 1, "kind": "logical",
        "content": "database", "file": file, "sql_size_bytes": sql.len(),
        "sql_sha256": hex::encode(Sha256::digest(sql)),
        "start_time": "2026-12-06T12:00:00Z", "stop_time": "2026-12-06T12:00:01Z",
        "pg_version_num": CLUSTER.pg_version_num,
        "system_identifier": CLUSTER.system_identifier.to_string(),
        "pg_dump_version": "pg_dump (PostgreSQL) 17.11",
    });
    fs::write(
        dumps.join(format!("{file}.meta")),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();
    refused_as_forged(sc_backup_core::dump::list_dumps(&repo), "made-up dump");
    fs::remove_dir_all(&dumps).unwrap();

    // 5. "This repository is not encrypted": a reader that expects encryption refuses.
    let info_path = repo_dir.path().join("repository.json");
    let info = fs::read_to_string(&info_path).unwrap();
    fs::write(&info_path, info.replace("\"age\"", "\"none\"")).unwrap();
    let error = Repository::open(&settings(repo_dir.path(), true)).unwrap_err();
    assert!(matches!(error, Error::EncryptionMismatch { .. }), "{error}");
}

/// Values in `backup.json` that size buffers or divide are refused when read: a page size of
/// 2 GiB would make a backend allocate it (and abort), a segment size of 0 divide by zero.
#[test]
fn absurd_page_and_segment_sizes_are_refused() {
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repository(repo_dir.path(), false);
    let source = tempfile::tempdir().unwrap();
    let data = file(source.path(), "data", b"x", 0o600);
    store(
        &repo,
        "sizes_full_20261206_100000",
        source.path(),
        vec![SourceEntry {
            path: "PG_VERSION".into(),
            source: data,
            kind: SourceKind::File,
        }],
    );
    let json = repo_dir
        .path()
        .join("backups/sizes_full_20261206_100000/backup.json");
    let original = fs::read_to_string(&json).unwrap();
    for (field, value) in [
        ("block_size", serde_json::json!(1u64 << 31)),
        ("block_size", serde_json::json!(3000)),
        ("wal_segment_size", serde_json::json!(0)),
        ("wal_segment_size", serde_json::json!(12345)),
    ] {
        let mut document: serde_json::Value = serde_json::from_str(&original).unwrap();
        document[field] = value.clone();
        document["metadata_sha256"] = "".into();
        fs::write(
            &json,
            recompute_self_digest(&serde_json::to_string_pretty(&document).unwrap()),
        )
        .unwrap();
        let error = read_metadata(&repo, "sizes_full_20261206_100000")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("not one PostgreSQL can have"),
            "{field}={value}: {error}"
        );
    }
}

/// A manifest that decodes to more than a process may hold (a few KiB of zstd can decode to
/// gigabytes) is refused at the limit: 512 MiB in the CLI, 64 MiB in a PostgreSQL backend.
#[test]
fn a_manifest_decoding_past_the_limit_is_refused_at_the_limit() {
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repository(repo_dir.path(), false);
    let source = tempfile::tempdir().unwrap();
    let data = file(source.path(), "data", b"x", 0o600);
    store(
        &repo,
        "big_full_20261206_100000",
        source.path(),
        vec![SourceEntry {
            path: "PG_VERSION".into(),
            source: data,
            kind: SourceKind::File,
        }],
    );
    // 600 MiB of spaces, then the real manifest: valid JSON, a few hundred KiB stored.
    let backup_dir = repo_dir.path().join("backups/big_full_20261206_100000");
    let metadata = read_metadata(&repo, "big_full_20261206_100000").unwrap();
    let real = serde_json::to_vec(&read_manifest(&repo, &metadata).unwrap()).unwrap();
    let mut hasher = Sha256::new();
    let stored = fs::File::create(backup_dir.join("manifest.zst")).unwrap();
    let mut encoder = zstd::Encoder::new(stored, 19).unwrap();
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..600 {
        std::io::Write::write_all(&mut encoder, &spaces).unwrap();
        hasher.update(&spaces);
    }
    std::io::Write::write_all(&mut encoder, &real).unwrap();
    hasher.update(&real);
    encoder.finish().unwrap();
    let json = backup_dir.join("backup.json");
    let mut document: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    document["manifest"] = "manifest.zst".into();
    document["checksum"] = format!("sha256:{}", hex::encode(hasher.finalize())).into();
    document["metadata_sha256"] = "".into();
    fs::write(
        &json,
        recompute_self_digest(&serde_json::to_string_pretty(&document).unwrap()),
    )
    .unwrap();
    let metadata = read_metadata(&repo, "big_full_20261206_100000").unwrap();
    let error = read_manifest(&repo, &metadata).unwrap_err().to_string();
    assert!(error.contains("more than 512 MiB"), "{error}");
    sc_backup_core::backup::limit_documents_in_memory(64 << 20);
    let error = read_manifest(&repo, &metadata).unwrap_err().to_string();
    assert!(
        error.contains("more than 64 MiB") && error.contains("backend"),
        "{error}"
    );
}
