//! The conformance suite every storage backend runs: the same assertions for local
//! directories, S3 and GCS, so that code above the [`Storage`] trait never needs to know which
//! one it talks to. Each backend's tests call [`run_all`] with a store rooted at an empty
//! location.

use std::io::{Read, Write};

use super::{Storage, StorageError};

pub fn run_all(store: &dyn Storage) {
    put_then_get_round_trips(store);
    missing_objects_are_not_found(store);
    ranges_read_exactly_their_bytes(store);
    existing_objects_are_never_replaced(store);
    aborted_writes_leave_nothing(store);
    list_filters_by_prefix_and_sorts(store);
    list_returns_more_than_a_page(store);
    delete_removes_and_tolerates_missing(store);
    // Over 100 MiB: several parts or chunks, never the whole object in memory.
    large_objects_stream(store, 104 << 20);
    concurrent_writers_to_one_key_leave_one_complete_object(store);
    keys_chosen_at_commit(store);
    unique_keys_commit_like_any_other(store);
}

fn put(store: &dyn Storage, key: &str, data: &[u8]) -> Result<(), StorageError> {
    let mut writer = store.create(key)?;
    writer.write_all(data).expect("write");
    writer.commit()
}

fn get(store: &dyn Storage, key: &str) -> Result<Vec<u8>, StorageError> {
    let mut data = Vec::new();
    store.open(key)?.read_to_end(&mut data).expect("read");
    Ok(data)
}

fn put_then_get_round_trips(store: &dyn Storage) {
    put(store, "conf/round/empty", b"").unwrap();
    put(store, "conf/round/small", b"hello").unwrap();
    assert_eq!(get(store, "conf/round/empty").unwrap(), b"");
    assert_eq!(get(store, "conf/round/small").unwrap(), b"hello");
}

fn missing_objects_are_not_found(store: &dyn Storage) {
    let err = store
        .open("conf/missing/nothing")
        .err()
        .expect("missing object opened");
    assert!(err.is_not_found(), "{err}");
    assert!(store.list("conf/missing/").unwrap().is_empty());
}

fn ranges_read_exactly_their_bytes(store: &dyn Storage) {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    put(store, "conf/range/obj", &data).unwrap();
    let range = |offset: u64, length: u64| -> std::io::Result<Vec<u8>> {
        let mut read = Vec::new();
        store
            .open_range("conf/range/obj", offset, length)
            .expect("open a range")
            .read_to_end(&mut read)?;
        Ok(read)
    };
    assert_eq!(range(0, 10).unwrap(), &data[..10]);
    assert_eq!(range(4_321, 1_000).unwrap(), &data[4_321..5_321]);
    assert_eq!(range(9_000, 1_000).unwrap(), &data[9_000..]);
    assert_eq!(range(10_000, 0).unwrap(), b"");
    // Past the end: an error (on opening or on reading), never fewer bytes than asked.
    for (offset, length) in [(9_990, 11), (20_000, 5)] {
        let outcome = store
            .open_range("conf/range/obj", offset, length)
            .map_err(|e| e.to_string())
            .and_then(|mut reader| {
                let mut read = Vec::new();
                reader.read_to_end(&mut read).map_err(|e| e.to_string())
            });
        assert!(outcome.is_err(), "{offset}+{length}: {outcome:?}");
    }
    let missing = store.open_range("conf/range/missing", 0, 10).err();
    assert!(missing.is_some_and(|e| e.is_not_found()));
}

fn existing_objects_are_never_replaced(store: &dyn Storage) {
    put(store, "conf/immutable/obj", b"original").unwrap();
    let err = put(store, "conf/immutable/obj", b"different").unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
    assert_eq!(get(store, "conf/immutable/obj").unwrap(), b"original");
}

fn aborted_writes_leave_nothing(store: &dyn Storage) {
    let mut writer = store.create("conf/aborted/obj").unwrap();
    writer.write_all(b"partial").unwrap();
    drop(writer);
    assert!(store
        .open("conf/aborted/obj")
        .err()
        .expect("aborted object visible")
        .is_not_found());
    assert!(store.list("conf/aborted/").unwrap().is_empty());
}

fn keys_chosen_at_commit(store: &dyn Storage) {
    let commit_as = |created: &str, committed: &str, data: &[u8]| {
        let mut writer = store.create(created).unwrap();
        writer.write_all(data).unwrap();
        writer.commit_as(committed)
    };
    if !store.names_at_commit() {
        let err = commit_as("conf/late/placeholder", "conf/late/named", b"x").unwrap_err();
        assert!(matches!(err, StorageError::Unsupported(_)), "{err}");
        assert!(store.list("conf/late/").unwrap().is_empty(), "nothing kept");
        return;
    }
    commit_as("conf/late/placeholder", "conf/late/named", b"content").unwrap();
    assert_eq!(get(store, "conf/late/named").unwrap(), b"content");
    assert!(store
        .open("conf/late/placeholder")
        .err()
        .unwrap()
        .is_not_found());
    // Never over an existing object, and the refused content is discarded.
    let err = commit_as("conf/late/placeholder", "conf/late/named", b"other").unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
    assert_eq!(get(store, "conf/late/named").unwrap(), b"content");
    // Only within the created key's directory.
    let err = commit_as("conf/late/placeholder", "conf/elsewhere/named", b"x").unwrap_err();
    assert!(matches!(err, StorageError::InvalidKey(_)), "{err}");
    let keys: Vec<String> = store
        .list("conf/")
        .unwrap()
        .into_iter()
        .map(|meta| meta.key)
        .filter(|key| key.starts_with("conf/late/") || key.starts_with("conf/elsewhere/"))
        .collect();
    assert_eq!(keys, ["conf/late/named"]);
}

fn list_filters_by_prefix_and_sorts(store: &dyn Storage) {
    for key in [
        "conf/list/b/2",
        "conf/list/a-1",
        "conf/list/a-2",
        "conf/list/b/1",
        "conf/listx",
    ] {
        put(store, key, key.as_bytes()).unwrap();
    }
    let keys = |prefix: &str| -> Vec<String> {
        store
            .list(prefix)
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect()
    };
    assert_eq!(
        keys("conf/list/"),
        [
            "conf/list/a-1",
            "conf/list/a-2",
            "conf/list/b/1",
            "conf/list/b/2"
        ]
    );
    assert_eq!(keys("conf/list/a-"), ["conf/list/a-1", "conf/list/a-2"]);
    assert_eq!(keys("conf/list/b/"), ["conf/list/b/1", "conf/list/b/2"]);
    assert_eq!(
        keys("conf/list"),
        [
            "conf/list/a-1",
            "conf/list/a-2",
            "conf/list/b/1",
            "conf/list/b/2",
            "conf/listx"
        ]
    );
    let sizes: Vec<u64> = store
        .list("conf/list/a-")
        .unwrap()
        .into_iter()
        .map(|m| m.size)
        .collect();
    assert_eq!(sizes, [13, 13]);
}

fn list_returns_more_than_a_page(store: &dyn Storage) {
    // Object stores page listings at 1000 keys; the trait hides that.
    for i in 0..1100 {
        put(store, &format!("conf/many/{i:05}"), b"x").unwrap();
    }
    let listed = store.list("conf/many/").unwrap();
    assert_eq!(listed.len(), 1100);
    assert_eq!(listed[0].key, "conf/many/00000");
    assert_eq!(listed[1099].key, "conf/many/01099");
}

fn delete_removes_and_tolerates_missing(store: &dyn Storage) {
    put(store, "conf/delete/obj", b"x").unwrap();
    store.delete("conf/delete/obj").unwrap();
    assert!(store
        .open("conf/delete/obj")
        .err()
        .expect("deleted object opened")
        .is_not_found());
    store.delete("conf/delete/obj").unwrap();
}

fn large_objects_stream(store: &dyn Storage, size: usize) {
    // Written and read in 1 MiB pieces: neither side may need the whole object in memory.
    let piece: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut writer = store.create("conf/large/obj").unwrap();
    for _ in 0..size / piece.len() {
        writer.write_all(&piece).unwrap();
    }
    writer.commit().unwrap();
    let mut reader = store.open("conf/large/obj").unwrap();
    let mut buffer = vec![0u8; piece.len()];
    let mut total = 0;
    loop {
        let mut filled = 0;
        while filled < buffer.len() {
            let n = reader.read(&mut buffer[filled..]).unwrap();
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        assert_eq!(
            &buffer[..filled],
            &piece[..filled],
            "content differs at offset {total}"
        );
        total += filled;
    }
    assert_eq!(total, size);
    assert_eq!(store.list("conf/large/").unwrap()[0].size, size as u64);
}

fn concurrent_writers_to_one_key_leave_one_complete_object(store: &dyn Storage) {
    let outcomes: Vec<Result<(), StorageError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8u8)
            .map(|i| scope.spawn(move || put(store, "conf/race/obj", &[i; 4096])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = outcomes.iter().filter(|o| o.is_ok()).count();
    if store.atomic_create() {
        assert_eq!(winners, 1, "{outcomes:?}");
    } else {
        assert!(winners >= 1, "{outcomes:?}");
    }
    for outcome in &outcomes {
        if let Err(e) = outcome {
            assert!(matches!(e, StorageError::AlreadyExists { .. }), "{e}");
        }
    }
    let stored = get(store, "conf/race/obj").unwrap();
    assert_eq!(stored.len(), 4096);
    assert!(
        stored.iter().all(|b| *b == stored[0]),
        "object mixes writers' data"
    );
}

/// `create_unique` only leaves out the look before committing: one part and several parts
/// are durable and listed like `create`'s, an aborted one leaves nothing.
fn unique_keys_commit_like_any_other(store: &dyn Storage) {
    let mut writer = store.create_unique("conf/unique/small").unwrap();
    writer.write_all(b"the only writer of this key").unwrap();
    writer.commit().unwrap();
    assert_eq!(
        get(store, "conf/unique/small").unwrap(),
        b"the only writer of this key"
    );

    // Past one S3 part and one GCS chunk (16 MiB each by default).
    let piece: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut writer = store.create_unique("conf/unique/large").unwrap();
    for _ in 0..20 {
        writer.write_all(&piece).unwrap();
    }
    writer.commit().unwrap();
    let data = get(store, "conf/unique/large").unwrap();
    assert_eq!(data.len(), 20 << 20);
    assert!(data.chunks(piece.len()).all(|chunk| chunk == piece));

    let mut aborted = store.create_unique("conf/unique/aborted").unwrap();
    aborted.write_all(b"never committed").unwrap();
    drop(aborted);
    assert!(store
        .open("conf/unique/aborted")
        .err()
        .unwrap()
        .is_not_found());
    let keys: Vec<String> = store
        .list("conf/unique/")
        .unwrap()
        .into_iter()
        .map(|meta| meta.key)
        .collect();
    assert_eq!(keys, ["conf/unique/large", "conf/unique/small"]);
}
