//! Hostile input never panics, and no damage to a stored object goes unnoticed.
//!
//! The properties run over random input (proptest); the damage test is exhaustive: every
//! single-bit flip (three bits per byte) and every truncation of small encoded objects, in
//! every encoding.

use std::io::{self, Read};

use proptest::prelude::*;
use sc_backup_core::codec::keys::RepositoryKey;
use sc_backup_core::codec::{pump, CodecSpec, Decoder, DigestingWriter, Encoder, Sha256Digest};
use sc_backup_core::config::{Compression, CompressionAlgorithm, RawSettings, Settings};
use sc_backup_core::lsn::Lsn;
use sc_backup_core::wal::WalFileName;

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

/// What a reader of the repository does with an object recorded by the SHA-256 of what it
/// decodes to: decode all of it (streaming, into a sink) and compare the digest of the
/// decoded bytes with the recorded one. `Ok` only for the intact content. (Backup files
/// recorded by the digest of their stored bytes are refused at the first changed byte:
/// `repository::tests`.)
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

/// Every damaged object is either refused, or (a flip in a field no reader depends on, such as
/// gzip's header timestamp) decodes to the intact content; no damage ever yields different
/// content. With encryption, every single damage is refused (authenticated encryption).
#[test]
fn every_bit_flip_and_truncation_of_a_stored_object_is_detected() {
    let key = RepositoryKey::generate();
    let content: Vec<u8> = (0..3000u32)
        .flat_map(|i| format!("row {i} {}\n", i % 7).into_bytes())
        .take(2048)
        .collect();
    let (expected, _) = Sha256Digest::of_reader(&mut &content[..]).unwrap();
    let (mut refused, mut intact) = (0u64, 0u64);
    for (compression, encrypted) in encodings() {
        let key = encrypted.then_some(&key);
        let spec = Encoder::<Vec<u8>>::spec(compression, key);
        let stored = encode(&content, compression, key);
        assert_eq!(decode_verified(&stored, spec, key, &expected), Ok(()));
        let mut damaged_versions: Vec<(String, Vec<u8>)> = Vec::new();
        for position in 0..stored.len() {
            for bit in [0u8, 3, 7] {
                let mut damaged = stored.clone();
                damaged[position] ^= 1 << bit;
                damaged_versions.push((format!("flip of bit {bit} at {position}"), damaged));
            }
        }
        for length in 0..stored.len() {
            damaged_versions.push((format!("truncation to {length}"), stored[..length].to_vec()));
        }
        for (what, damaged) in damaged_versions {
            // `Ok` means the SHA-256 of what came out is the recorded one: intact content.
            match decode_verified(&damaged, spec, key, &expected) {
                Err(_) => refused += 1,
                Ok(()) => {
                    assert!(
                        !encrypted,
                        "{spec:?}: {what} was accepted despite encryption"
                    );
                    intact += 1;
                }
            }
        }
    }
    println!(
        "hostile input: {} damaged objects: {refused} refused, {intact} decoded to the intact content, 0 accepted with other content",
        refused + intact
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

    #[test]
    fn random_bytes_never_decode_and_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        encoding in 0usize..6,
    ) {
        let key = RepositoryKey::generate();
        let (compression, encrypted) = encodings()[encoding];
        let key = encrypted.then_some(&key);
        let spec = Encoder::<Vec<u8>>::spec(compression, key);
        let expected = Sha256Digest([0x5a; 32]);
        prop_assert!(decode_verified(&bytes, spec, key, &expected).is_err());
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

    #[test]
    fn settings_never_panic(
        repository in "\\PC{0,40}",
        compression in "\\PC{0,8}",
        level in "\\PC{0,6}",
        encryption in "\\PC{0,6}",
        days in "\\PC{0,6}",
    ) {
        let _ = Settings::from_raw(&RawSettings {
            repository: Some(repository),
            compression: Some(compression),
            compression_level: Some(level),
            encryption: Some(encryption),
            retention_days: Some(days),
            ..RawSettings::default()
        });
    }

    #[test]
    fn schedule_values_never_panic(text in "\\PC{0,40}") {
        let _ = sc_backup_core::schedule::parse_time_of_day("t", &text);
        let _ = sc_backup_core::schedule::parse_weekday("t", &text);
        let _ = sc_backup_core::schedule::parse_cron("t", &text);
    }
}
