//! Hostile input never panics, and no damage to a stored object goes unnoticed.
//!
//! The properties run over random input (proptest); the damage test is exhaustive: every
//! single-bit flip (three bits per byte) and every truncation of small encoded objects, in
//! every encoding.

use std::io::{self, Read};

use proptest::prelude::*;
use sc_backup_core::codec::keys::RepositoryKey;
use sc_backup_core::codec::{
    pump, CodecSpec, Decoder, DigestingWriter, Encoder, ExpectedDigest, Sha256Digest,
};
use sc_backup_core::config::{Compression, CompressionAlgorithm, RawSettings, Secret, Settings};
use sc_backup_core::pg::lsn::Lsn;
use sc_backup_core::wal::WalFileName;
use sc_backup_core::{ClusterIdentity, Repository};

fn encodings() -> Vec<(Compression, bool)> {
    let mut all = Vec::new();
    for (algorithm, level) in [
        (CompressionAlgorithm::None, 0),
        (CompressionAlgorithm::Gzip, 6),
        (CompressionAlgorithm::Zstd, 3),
    ] {
        for encrypted in [false, true] {
            all.push((Compression::new(algorithm, level).unwrap(), encrypted));
        }
    }
    all
}

fn encode(content: &[u8], compression: Compression, key: Option<&RepositoryKey>) -> Vec<u8> {
    let mut encoder = Encoder::new(Vec::new(), compression, key).unwrap();
    pump(&mut &content[..], &mut encoder)
        .map_err(|_| ())
        .unwrap();
    encoder.finish().unwrap().0
}

/// An object decoded by itself, checked against the digest of what it decodes to (what the
/// other tests here use: a key of another repository, random bytes).
fn decode_verified(
    stored: &[u8],
    spec: CodecSpec,
    key: Option<&RepositoryKey>,
    expected: &Sha256Digest,
) -> Result<(), String> {
    let mut decoder = Decoder::new(stored, spec, key).map_err(|e| e.to_string())?;
    let mut decoded = DigestingWriter::new(io::sink());
    pump(&mut decoder, &mut decoded).map_err(|_| "decode error".to_string())?;
    let (_, digest, _) = decoded.finish();
    if &digest == expected {
        Ok(())
    } else {
        Err("checksum mismatch".into())
    }
}

/// A local repository, encrypted or not, created for `CLUSTER`.
fn repository(dir: &std::path::Path, encrypted: bool) -> Repository {
    let settings = Settings::from_raw(&RawSettings {
        repository: Some(dir.display().to_string()),
        encryption: Some(if encrypted { "age" } else { "none" }.into()),
        encryption_passphrase: encrypted.then(|| Secret::new("hostile input passphrase")),
        ..RawSettings::default()
    })
    .unwrap();
    Repository::open_for_cluster(
        &settings,
        &ClusterIdentity {
            system_identifier: 42,
            pg_version_num: 170000,
        },
    )
    .unwrap()
}

/// Every damaged object is refused by the repository's own reader (`Repository::read_verified`,
/// which WAL fetch, restore and verify all use), whether the object is recorded by the digest
/// of its stored bytes (a backup's files) or of what it decodes to (WAL, manifests). Against a
/// stored digest every damage is refused; against a decoded digest a damage may decode to the
/// intact content (a flip in gzip's header timestamp, which no reader uses) and is then the
/// intact content; none ever yields other content. With encryption every damage is refused.
#[test]
fn every_bit_flip_and_truncation_of_a_stored_object_is_detected() {
    let content: Vec<u8> = (0..3000u32)
        .flat_map(|i| format!("row {i} {}\n", i % 7).into_bytes())
        .take(2048)
        .collect();
    let (decoded_digest, _) = Sha256Digest::of_reader(&mut &content[..]).unwrap();
    let (mut damaged_objects, mut refused, mut intact) = (0u64, 0u64, 0u64);
    let mut by_stored_digest = 0u64;
    for encrypted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(dir.path(), encrypted);
        let key = repo.key().unwrap();
        for (compression, _) in encodings().into_iter().filter(|(_, e)| !*e) {
            let spec = Encoder::<Vec<u8>>::spec(compression, key);
            let stored = encode(&content, compression, key);
            let (stored_digest, _) = Sha256Digest::of_reader(&mut &stored[..]).unwrap();
            let object = format!("objects/o{}", spec.suffix());
            let path = dir.path().join(&object);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let read = |bytes: &[u8], expected: ExpectedDigest| {
                std::fs::write(&path, bytes).unwrap();
                let mut out = Vec::new();
                repo.read_verified(&object, spec, expected, None, &mut out, "memory")
                    .map(|_| out)
            };
            for expected in [
                ExpectedDigest::Stored(stored_digest),
                ExpectedDigest::Decoded(decoded_digest),
            ] {
                assert_eq!(read(&stored, expected).unwrap(), content, "{spec:?}");
            }
            let mut damaged_versions: Vec<(String, Vec<u8>)> = Vec::new();
            for position in 0..stored.len() {
                for bit in [0u8, 3, 7] {
                    let mut damaged = stored.clone();
                    damaged[position] ^= 1 << bit;
                    damaged_versions.push((format!("flip of bit {bit} at {position}"), damaged));
                }
            }
            for length in 0..stored.len() {
                damaged_versions
                    .push((format!("truncation to {length}"), stored[..length].to_vec()));
            }
            for (what, damaged) in damaged_versions {
                damaged_objects += 1;
                let by_stored = read(&damaged, ExpectedDigest::Stored(stored_digest));
                assert!(
                    by_stored.is_err(),
                    "{spec:?}: {what} passed its stored digest"
                );
                by_stored_digest += 1;
                match read(&damaged, ExpectedDigest::Decoded(decoded_digest)) {
                    Err(_) => refused += 1,
                    Ok(out) => {
                        assert_eq!(out, content, "{spec:?}: {what} gave other content");
                        assert!(
                            !encrypted,
                            "{spec:?}: {what} was accepted despite encryption"
                        );
                        intact += 1;
                    }
                }
            }
        }
    }
    println!(
        "hostile input: {damaged_objects} damaged objects through the repository's reader: {by_stored_digest} refused by their stored digest; by their decoded digest {refused} refused, {intact} decoded to the intact content"
    );
}

#[test]
fn an_object_of_another_key_is_refused() {
    let ours = RepositoryKey::generate();
    let theirs = RepositoryKey::generate();
    let zstd = Compression::new(CompressionAlgorithm::Zstd, 3).unwrap();
    let stored = encode(b"secret WAL", zstd, Some(&theirs));
    let (expected, _) = Sha256Digest::of_reader(&mut &b"secret WAL"[..]).unwrap();
    let spec = Encoder::<Vec<u8>>::spec(zstd, Some(&ours));
    assert!(decode_verified(&stored, spec, Some(&ours), &expected).is_err());
    assert!(decode_verified(&stored, spec, None, &expected).is_err());
}

#[test]
fn a_zstd_frame_asking_for_a_huge_window_is_refused_not_allocated() {
    // Magic, then a frame header descriptor without single-segment flag, so a window
    // descriptor follows: exponent 21 → a 2 GiB window (libzstd's default limit is 128 MiB).
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 21 << 3];
    frame.extend_from_slice(&[0u8; 64]);
    let spec = CodecSpec::from_suffix(".zst").unwrap();
    let mut decoder = Decoder::new(&frame[..], spec, None).unwrap();
    let mut buffer = [0u8; 1024];
    assert!(decoder.read(&mut buffer).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random bytes as a stored object: no panic, no large allocation; compressed or
    /// encrypted, they are refused or decode to nothing at all (never to content); plain, they
    /// are what they are.
    #[test]
    fn random_bytes_never_panic_and_never_decode_to_content(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        encoding in 0usize..6,
    ) {
        let key = RepositoryKey::generate();
        let (compression, encrypted) = encodings()[encoding];
        let key = encrypted.then_some(&key);
        let spec = Encoder::<Vec<u8>>::spec(compression, key);
        let decoded = Decoder::new(&bytes[..], spec, key).ok().and_then(|mut decoder| {
            let mut out = Vec::new();
            pump(&mut decoder, &mut out).ok().map(|_| out)
        });
        if compression.algorithm == CompressionAlgorithm::None && !encrypted {
            prop_assert_eq!(decoded, Some(bytes.clone()));
        } else {
            prop_assert!(decoded.is_none_or(|out| out.is_empty()), "{:?} decoded random bytes", spec);
        }
    }

    #[test]
    fn wal_file_names_and_lsns_never_panic(text in "\\PC{0,48}") {
        if let Ok(name) = WalFileName::parse(&text) {
            // What parses is exactly one of the names PostgreSQL archives.
            prop_assert!(matches!(text.len(), 16 | 24 | 32 | 40));
            prop_assert_eq!(name.as_str(), text.as_str());
        }
        let _ = text.parse::<Lsn>();
    }

    /// One setting at a time gets a random value, every other a valid one: parsing stops at
    /// the first invalid value, so only then is every parser reached.
    #[test]
    fn settings_never_panic(field in 0usize..10, text in "\\PC{0,40}") {
        let mut raw = RawSettings {
            repository: Some("s3://bucket/prefix".into()),
            compression: Some("zstd".into()),
            compression_level: Some("3".into()),
            encryption: Some("none".into()),
            s3_region: Some("eu-west-1".into()),
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            s3_uri_style: Some("path".into()),
            s3_access_key_id: Some("id".into()),
            s3_secret_access_key: Some(Secret::new("secret")),
            retention_days: Some("30".into()),
            retention_full: Some("1".into()),
            ..RawSettings::default()
        };
        let value = Some(text.clone());
        match field {
            0 => raw.repository = value,
            1 => raw.compression = value,
            2 => raw.compression_level = value,
            3 => raw.encryption = value,
            4 => raw.s3_region = value,
            5 => raw.s3_endpoint = value,
            6 => raw.s3_uri_style = value,
            7 => raw.retention_days = value,
            8 => raw.retention_full = value,
            _ => raw.gcs_credentials = value,
        }
        let _ = Settings::from_raw(&raw);
        if field == 0 {
            // A gs:// repository reads its credentials file: that parser too.
            raw.repository = Some("gs://bucket".into());
            raw.gcs_credentials = Some(text);
            let _ = Settings::from_raw(&raw);
        }
    }

    #[test]
    fn schedule_values_never_panic(text in "\\PC{0,40}") {
        let _ = sc_backup_core::config::calendar::parse_time_of_day("t", &text);
        let _ = sc_backup_core::config::calendar::parse_weekday("t", &text);
        let _ = sc_backup_core::config::calendar::parse_cron("t", &text);
    }
}
