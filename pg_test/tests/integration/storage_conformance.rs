//! The storage conformance suite against every backend, each a real server on loopback.

use std::io::Write;

use sc_backup_core::storage::conformance;
use sc_backup_core::storage::{GcsStorage, S3Storage, Storage, StorageError};
use sc_backup_pg_test::{GcsServer, S3Server, TestDir};

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
    assert!(matches!(err, StorageError::Unavailable { .. }) && err.is_transient());
    // Backoff happened between the attempts.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn gcs_backend_conforms_with_the_oauth_jwt_flow() {
    let dir = TestDir::new("gcs_conformance");
    let server = GcsServer::start(&dir, "gcs");
    server.create_bucket("conformance");
    let mut config = server.config("conformance", "repo/one");
    // Small chunks so that the large-object case exercises resumable uploads.
    config.chunk_size = 4 << 20;
    let store = GcsStorage::new(config).unwrap();
    conformance::run_all(&store);
    // One token, signed by the service account and verified by the token endpoint, served
    // every request (it is cached until it nears its expiry).
    assert_eq!(server.tokens_issued(), 1);
}

#[test]
fn gcs_wrong_service_account_key_is_refused_by_name_without_key_material() {
    let dir = TestDir::new("gcs_credentials");
    let server = GcsServer::start(&dir, "gcs");
    server.create_bucket("creds");
    let mut config = server.config("creds", "");
    // A key the token endpoint does not know.
    let other = GcsServer::start(&dir, "other");
    let account = config.credentials.as_mut().unwrap();
    account.private_key_pem = other.config("x", "").credentials.unwrap().private_key_pem;
    let store = GcsStorage::new(config).unwrap();
    let err = store.list("wal/").unwrap_err();
    let text = format!("{err} {:?}", err.hint());
    assert!(matches!(err, StorageError::Denied { .. }), "{text}");
    assert!(
        text.contains(&server.client_email) && text.contains("invalid_grant"),
        "{text}"
    );
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

/// A loopback HTTP server that misbehaves on every request: `status` answers with that status,
/// `None` accepts the connection and never answers (a hung store). Counts requests.
fn misbehaving_server(
    status: Option<u16>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    misbehaving_server_saying(status, "")
}

/// [`misbehaving_server`] with `body` (an S3 error document, say) in each answer.
fn misbehaving_server_saying(
    status: Option<u16>,
    body: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write as _};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        let mut hung = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 65536];
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(200)));
            let _ = stream.read(&mut buffer);
            counter.fetch_add(1, Ordering::SeqCst);
            match status {
                Some(code) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {code} Failing\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                None => hung.push(stream),
            }
        }
    });
    (endpoint, requests)
}

#[test]
fn server_errors_and_hung_servers_are_retried_then_reported_clearly() {
    use std::sync::atomic::Ordering;
    let dir = TestDir::new("misbehaving_store");
    let s3 = S3Server::start(&dir, "s3");
    let gcs = GcsServer::start(&dir, "gcs");
    for (status, expect) in [
        (Some(500), "HTTP 500"),
        (Some(503), "HTTP 503"),
        (None, "timed out"),
    ] {
        let (endpoint, requests) = misbehaving_server(status);
        let mut s3_config = s3.config("bucket", "");
        s3_config.endpoint = Some(endpoint.clone());
        s3_config.request_timeout = std::time::Duration::from_secs(1);
        let mut gcs_config = gcs.config("bucket", "");
        gcs_config.endpoint = endpoint.clone();
        // The token endpoint still works: only the store misbehaves.
        gcs_config.request_timeout = std::time::Duration::from_secs(1);
        let stores: Vec<Box<dyn Storage>> = vec![
            Box::new(S3Storage::new(s3_config).unwrap()),
            Box::new(GcsStorage::new(gcs_config).unwrap()),
        ];
        for store in stores {
            requests.store(0, Ordering::SeqCst);
            let err = store
                .open("wal/x")
                .err()
                .expect("a failing store succeeded");
            let text = err.to_string();
            assert!(
                matches!(err, StorageError::Unavailable { .. }) && err.is_transient(),
                "{text}"
            );
            assert!(
                text.contains("gave up after 3 attempts") && text.contains(expect),
                "{text}"
            );
            assert!(text.contains(&store.describe()), "{text}");
            assert_eq!(
                requests.load(Ordering::SeqCst),
                3,
                "{}: {text}",
                store.describe()
            );
        }
    }
}

/// A conditional write whose first attempt succeeded but whose answer was lost (a timeout, a
/// cut connection): the retry meets the object it made itself. That is success once the object
/// is read back and found to be ours, never "already exists" (which failed and then deleted a
/// whole backup on a flaky link); an object that really was there first is still refused.
#[test]
fn a_conditional_write_whose_answer_was_lost_is_confirmed_not_refused() {
    use sc_backup_pg_test::fault_proxy::{Fault, FaultProxy};
    let dir = TestDir::new("lost_answers");
    let s3 = S3Server::start(&dir, "s3");
    s3.create_bucket("lost");
    let gcs = GcsServer::start(&dir, "gcs");
    gcs.create_bucket("lost");
    let s3_proxy = FaultProxy::start(s3.endpoint.trim_start_matches("http://").to_string());
    let gcs_proxy = FaultProxy::start(gcs.endpoint.trim_start_matches("http://").to_string());
    let mut s3_config = s3.config("lost", "repo");
    s3_config.endpoint = Some(s3_proxy.endpoint());
    s3_config.part_size = 5 << 20;
    let mut gcs_config = gcs.config("lost", "repo");
    gcs_config.endpoint = gcs_proxy.endpoint();
    gcs_config.chunk_size = 4 << 20;
    let stores: Vec<(Box<dyn Storage>, &FaultProxy)> = vec![
        (Box::new(S3Storage::new(s3_config).unwrap()), &s3_proxy),
        (Box::new(GcsStorage::new(gcs_config).unwrap()), &gcs_proxy),
    ];
    for (store, proxy) in stores {
        let name = store.describe();
        // One request (small), and a multipart upload or resumable session (large).
        for (key, size) in [("wal/small", 1000usize), ("backups/b/data/large", 9 << 20)] {
            let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            for unique in [false, true] {
                let key = format!("{key}-{unique}");
                proxy.lose_answers(1);
                let lost_before = proxy.answers_lost();
                let mut writer = if unique {
                    store.create_unique(&key).unwrap()
                } else {
                    store.create(&key).unwrap()
                };
                writer.write_all(&content).unwrap();
                writer
                    .commit()
                    .unwrap_or_else(|e| panic!("{name} {key}: {e}"));
                assert_eq!(
                    proxy.answers_lost(),
                    lost_before + 1,
                    "{name} {key}: no answer was lost"
                );
                proxy.set(Fault::Pass);
                let mut stored = Vec::new();
                std::io::Read::read_to_end(&mut store.open(&key).unwrap(), &mut stored).unwrap();
                assert!(stored == content, "{name} {key}: wrong content");

                // Another object under that key: refused, whatever was lost. (fake-gcs-server
                // does not enforce ifGenerationMatch=0: a second object replaces the first, so
                // there only S3 can show the refusal, and the lost answer cannot fail there.)
                if !name.starts_with("s3://") {
                    continue;
                }
                proxy.lose_answers(1);
                let mut other = store.create_unique(&key).unwrap();
                other.write_all(b"someone else's").unwrap();
                let refused = other.commit();
                proxy.set(Fault::Pass);
                assert!(
                    matches!(refused, Err(StorageError::AlreadyExists { .. })),
                    "{name} {key}: {refused:?}"
                );
            }
        }
    }
}

/// S3's 409 ConditionalRequestConflict means a concurrent conditional write was in flight:
/// retry, and the retry learns who won. Taking it for "already exists" failed the write.
#[test]
fn s3_conditional_request_conflict_is_retried_not_taken_for_existing() {
    use std::sync::atomic::Ordering;
    let dir = TestDir::new("s3_conflict");
    let s3 = S3Server::start(&dir, "s3");
    let (endpoint, requests) = misbehaving_server_saying(
        Some(409),
        "<Error><Code>ConditionalRequestConflict</Code><Message>try again</Message></Error>",
    );
    let mut config = s3.config("bucket", "");
    config.endpoint = Some(endpoint);
    let store = S3Storage::new(config).unwrap();
    let mut writer = store.create_unique("wal/x").unwrap();
    writer.write_all(b"segment").unwrap();
    let err = writer.commit().unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("ConditionalRequestConflict"),
        "{err}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}
