//! The storage conformance suite against every backend, each a real server on loopback.

use std::io::Write;

use sc_backup_core::storage::conformance;
use sc_backup_core::storage::{S3Storage, Storage, StorageError};
use sc_backup_pg_test::{S3Server, TestDir};

#[test]
fn s3_backend_conforms() {
    let dir = TestDir::new("s3_conformance");
    let server = S3Server::start(&dir, "s3");
    server.create_bucket("conformance");
    let mut config = server.config("conformance", "repo/one");
    // Small parts so that the large-object case exercises multipart uploads.
    config.part_size = 5 << 20;
    let store = S3Storage::new(config).unwrap();
    conformance::run_all(&store);
    // Everything lives under the prefix.
    assert!(server
        .root
        .join("conformance/repo/one/conf/round/small")
        .exists());
}

#[test]
fn s3_bad_credentials_are_named_and_the_secret_is_not_printed() {
    let dir = TestDir::new("s3_credentials");
    let server = S3Server::start(&dir, "s3");
    server.create_bucket("creds");
    let mut config = server.config("creds", "");
    config.secret_access_key = sc_backup_core::config::Secret::new("wrong-secret-0123456789");
    let store = S3Storage::new(config).unwrap();
    let mut writer = store.create("obj").unwrap();
    writer.write_all(b"x").unwrap();
    let err = writer.commit().unwrap_err();
    let text = format!("{err} {:?}", err.hint());
    assert!(matches!(err, StorageError::Denied { .. }), "{text}");
    assert!(
        text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied")
            || text.contains("403"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret"), "{text}");
    assert!(!text.contains(S3Server::SECRET_KEY), "{text}");
}

#[test]
fn s3_server_down_is_retried_then_reported() {
    let dir = TestDir::new("s3_down");
    let server = S3Server::start(&dir, "s3");
    server.create_bucket("down");
    let config = server.config("down", "");
    drop(server);
    let store = S3Storage::new(config).unwrap();
    let started = std::time::Instant::now();
    let err = store.list("wal/").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("gave up after 3 attempts"), "{text}");
    assert!(matches!(err, StorageError::Remote { .. }));
    // Backoff happened between the attempts.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}
