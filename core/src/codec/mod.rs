//! The one streaming codec pipeline, used by WAL archiving and backups alike.
//!
//! Writing: original bytes → compress → encrypt → count → sink.
//! Reading: source → decrypt (authenticated) → decompress → caller.
//! The codec digests nothing itself: SHA-256 costs about what zstd does, so each caller
//! digests exactly what it records or checks ([`ExpectedDigest`]) with a [`DigestingWriter`]
//! or [`DigestingReader`] on the side it needs: the original bytes (a WAL segment is named by
//! them) or the stored ones (a backup's files are checked by them). A reader compares the
//! digest with the recorded one before trusting anything it wrote.
//!
//! Stored objects are plain standard formats so an operator can recover data without our
//! binary: a gzip or zstd stream, optionally inside an age file (`age -d | zstd -d`).
//! Memory is bounded by the codecs' windows and buffers, whatever the object size.

pub mod authentication;
pub mod keys;

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::config::{Compression, CompressionAlgorithm};

pub use keys::RepositoryKey;

/// How an object was encoded; recorded in its name as a suffix (`.zst`, `.gz`, `.age`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecSpec {
    pub compression: CompressionAlgorithm,
    pub encrypted: bool,
}

impl CodecSpec {
    pub fn suffix(&self) -> String {
        let compression = match self.compression {
            CompressionAlgorithm::None => "",
            CompressionAlgorithm::Gzip => ".gz",
            CompressionAlgorithm::Zstd => ".zst",
        };
        let encryption = if self.encrypted { ".age" } else { "" };
        format!("{compression}{encryption}")
    }

    /// Parses what [`CodecSpec::suffix`] produced, which must be the whole of `suffix`.
    pub fn from_suffix(suffix: &str) -> Option<CodecSpec> {
        let (rest, encrypted) = match suffix.strip_suffix(".age") {
            Some(rest) => (rest, true),
            None => (suffix, false),
        };
        let compression = match rest {
            "" => CompressionAlgorithm::None,
            ".gz" => CompressionAlgorithm::Gzip,
            ".zst" => CompressionAlgorithm::Zstd,
            _ => return None,
        };
        Some(CodecSpec {
            compression,
            encrypted,
        })
    }
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Sha256Digest> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(text, &mut digest).ok()?;
        Some(Sha256Digest(digest))
    }

    /// Digest of everything `reader` yields, read in bounded pieces.
    pub fn of_reader(reader: &mut dyn Read) -> io::Result<(Sha256Digest, u64)> {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buffer[..n]);
            total += n as u64;
        }
        Ok((Sha256Digest(hasher.finalize().into()), total))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

/// Which side of a [`pump`] failed.
#[derive(Debug)]
pub enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies everything from `reader` to `writer` in 256 KiB pieces (bounded memory whatever the
/// size), telling a failed read from a failed write.
pub fn pump(reader: &mut dyn Read, writer: &mut dyn Write) -> Result<u64, PumpError> {
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PumpError::Read(e)),
        };
        writer.write_all(&buffer[..n]).map_err(PumpError::Write)?;
        total += n as u64;
    }
}

/// What an [`Encoder`] saw and produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeSummary {
    pub original_size: u64,
    pub stored_size: u64,
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum EncryptStage<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Write for EncryptStage<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            EncryptStage::Plain(w) => w.write(buf),
            EncryptStage::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            EncryptStage::Plain(w) => w.flush(),
            EncryptStage::Age(w) => w.flush(),
        }
    }
}

impl<W: Write> EncryptStage<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            EncryptStage::Plain(w) => Ok(w),
            // Writes the final, authenticated chunk; without it the file is truncated.
            EncryptStage::Age(w) => w.finish(),
        }
    }
}

enum CompressStage<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Write for CompressStage<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressStage::Plain(w) => w.write(buf),
            CompressStage::Gzip(w) => w.write(buf),
            CompressStage::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressStage::Plain(w) => w.flush(),
            CompressStage::Gzip(w) => w.flush(),
            CompressStage::Zstd(w) => w.flush(),
        }
    }
}

impl<W: Write> CompressStage<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            CompressStage::Plain(w) => Ok(w),
            CompressStage::Gzip(w) => w.finish(),
            CompressStage::Zstd(w) => w.finish(),
        }
    }
}

/// Push side of the pipeline: write original bytes in, call [`Encoder::finish`]. It digests
/// nothing: put a [`DigestingWriter`] in front of it for the original bytes' SHA-256, or
/// behind it (its sink) for the stored bytes'.
pub struct Encoder<W: Write> {
    stages: CompressStage<EncryptStage<CountingWriter<W>>>,
    original_size: u64,
}

impl<W: Write> Encoder<W> {
    /// `key` is `Some` for an encrypted repository: the object is encrypted to its public key,
    /// which costs one X25519 operation, no passphrase derivation.
    pub fn new(sink: W, compression: Compression, key: Option<&RepositoryKey>) -> io::Result<Self> {
        let counted = CountingWriter {
            inner: sink,
            count: 0,
        };
        let encrypted = match key {
            Some(key) => EncryptStage::Age(key.encryptor().wrap_output(counted)?),
            None => EncryptStage::Plain(counted),
        };
        let stages = match compression.algorithm {
            CompressionAlgorithm::None => CompressStage::Plain(encrypted),
            CompressionAlgorithm::Gzip => CompressStage::Gzip(flate2::write::GzEncoder::new(
                encrypted,
                flate2::Compression::new(compression.level as u32),
            )),
            CompressionAlgorithm::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(encrypted, compression.level)?;
                // A frame checksum lets `zstd -t` check an unencrypted object on its own.
                encoder.include_checksum(true)?;
                CompressStage::Zstd(encoder)
            }
        };
        Ok(Encoder {
            stages,
            original_size: 0,
        })
    }

    pub fn spec(compression: Compression, key: Option<&RepositoryKey>) -> CodecSpec {
        CodecSpec {
            compression: compression.algorithm,
            encrypted: key.is_some(),
        }
    }

    /// Flushes every stage and returns the sink with what was written.
    pub fn finish(self) -> io::Result<(W, EncodeSummary)> {
        let counted = self.stages.finish()?.finish()?;
        Ok((
            counted.inner,
            EncodeSummary {
                original_size: self.original_size,
                stored_size: counted.count,
            },
        ))
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stages.write(buf)?;
        self.original_size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stages.flush()
    }
}

/// Why an object could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the object was encrypted with a different key")]
    WrongKey,
    #[error("the object is encrypted but the repository has no key")]
    MissingKey,
    #[error("{0}")]
    Corrupt(String),
}

enum DecryptStage<R: Read> {
    Plain(R),
    Age(age::stream::StreamReader<R>),
}

impl<R: Read> Read for DecryptStage<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DecryptStage::Plain(r) => r.read(buf),
            DecryptStage::Age(r) => r.read(buf),
        }
    }
}

enum DecompressStage<R: BufRead> {
    Plain(R),
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Read for DecompressStage<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DecompressStage::Plain(r) => r.read(buf),
            DecompressStage::Gzip(r) => r.read(buf),
            DecompressStage::Zstd(r) => r.read(buf),
        }
    }
}

/// What a stored object is checked against once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedDigest {
    /// The SHA-256 of what the object decodes to: WAL segments (named by it), a backup's
    /// manifest and catalog, and the files of backups taken before stored digests.
    Decoded(Sha256Digest),
    /// The SHA-256 of the stored bytes themselves (the object, or a file's range of a
    /// bundle): at zstd's usual ratios a twentieth of the bytes to hash. The codec's own
    /// check vouches for the decoding of bytes found intact: zstd's frame checksum (XXH64 of
    /// the content, which our encoder always writes), gzip's CRC-32, age's authenticated
    /// chunks; an object neither compressed nor encrypted is its content.
    Stored(Sha256Digest),
}

/// Pull side of the pipeline: read original bytes out. It digests nothing: the caller takes
/// the digest it checks ([`ExpectedDigest`]) on the side it is recorded for.
pub struct Decoder<R: Read> {
    stages: DecompressStage<BufReader<DecryptStage<R>>>,
    size: u64,
}

impl<R: Read> Decoder<R> {
    pub fn new(
        source: R,
        spec: CodecSpec,
        key: Option<&RepositoryKey>,
    ) -> Result<Self, DecodeError> {
        let decrypted = if spec.encrypted {
            let key = key.ok_or(DecodeError::MissingKey)?;
            DecryptStage::Age(key.decrypt(source)?)
        } else {
            DecryptStage::Plain(source)
        };
        let buffered = BufReader::with_capacity(128 * 1024, decrypted);
        let stages = match spec.compression {
            CompressionAlgorithm::None => DecompressStage::Plain(buffered),
            CompressionAlgorithm::Gzip => {
                DecompressStage::Gzip(flate2::bufread::MultiGzDecoder::new(buffered))
            }
            CompressionAlgorithm::Zstd => DecompressStage::Zstd(
                zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(|e| DecodeError::Corrupt(format!("zstd: {e}")))?,
            ),
        };
        Ok(Decoder { stages, size: 0 })
    }

    /// How many decoded bytes were read so far.
    pub fn decoded_size(&self) -> u64 {
        self.size
    }

    /// [`pump`]s everything left into `writer` on two threads: a second one decrypts and
    /// decompresses while this one writes what it decoded before, and digests it when
    /// `writer` is a [`DigestingWriter`]. SHA-256 of the decoded bytes is about as costly as
    /// zstd's decoding and the copy together, and writing a 1 GiB relation segment past the
    /// page cache waits on the disk, so one large object (at the end of a restore, when the
    /// other workers are done) uses two cores instead of one. Worth a thread only for objects
    /// of some megabytes.
    pub fn pump_on_two_threads(&mut self, writer: &mut dyn Write) -> Result<u64, PumpError>
    where
        R: Send,
    {
        const PIECE: usize = 256 * 1024;
        // Three pieces in all: one being decoded, one being digested and written, one queued.
        let (decoded, decoded_pieces) = mpsc::sync_channel::<Vec<u8>>(1);
        let (give_back, empty_pieces) = mpsc::channel::<Vec<u8>>();
        for _ in 0..3 {
            give_back
                .send(vec![0u8; PIECE])
                .expect("the receiver is here");
        }
        let Decoder { stages, size } = self;
        std::thread::scope(|scope| {
            // The caller may be a PostgreSQL process (sc_verify() in a backend): its signals
            // must reach its own thread.
            let decoding = crate::util::threads::with_signals_blocked(|| {
                scope.spawn(move || -> io::Result<()> {
                    // Ends when the pieces stop coming back: the writing side stopped.
                    while let Ok(mut piece) = empty_pieces.recv() {
                        piece.resize(PIECE, 0);
                        let n = loop {
                            match stages.read(&mut piece) {
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                                other => break other?,
                            }
                        };
                        if n == 0 {
                            return Ok(());
                        }
                        piece.truncate(n);
                        if decoded.send(piece).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(())
                })
            });
            let mut written = 0u64;
            let mut write_error = None;
            for piece in decoded_pieces.iter() {
                *size += piece.len() as u64;
                if let Err(e) = writer.write_all(&piece) {
                    write_error = Some(e);
                    break;
                }
                written += piece.len() as u64;
                let _ = give_back.send(piece);
            }
            // Unblocks the decoding thread if it waits on either channel.
            drop(decoded_pieces);
            drop(give_back);
            let decoded = decoding
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the decoding thread panicked")));
            match (write_error, decoded) {
                (Some(e), _) => Err(PumpError::Write(e)),
                (None, Err(e)) => Err(PumpError::Read(e)),
                (None, Ok(())) => Ok(written),
            }
        })
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stages.read(buf)?;
        self.size += n as u64;
        Ok(n)
    }
}

/// Passes bytes through to `inner` and digests them: the SHA-256 of a stored object itself
/// (what `sha256sum` of a downloaded copy prints), where the pipeline's own digest is of the
/// original bytes.
pub struct DigestingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> DigestingWriter<W> {
    pub fn new(inner: W) -> Self {
        DigestingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub fn finish(self) -> (W, Sha256Digest, u64) {
        (
            self.inner,
            Sha256Digest(self.hasher.finalize().into()),
            self.size,
        )
    }
}

impl<W: Write> Write for DigestingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The reading side of [`DigestingWriter`]: the SHA-256 and size of the stored bytes read.
pub struct DigestingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> DigestingReader<R> {
    pub fn new(inner: R) -> Self {
        DigestingReader {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub fn digest(&self) -> (Sha256Digest, u64) {
        (
            Sha256Digest(self.hasher.clone().finalize().into()),
            self.size,
        )
    }
}

impl<R: Read> Read for DigestingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn test_key() -> RepositoryKey {
        RepositoryKey::generate()
    }

    fn compressions() -> Vec<Compression> {
        vec![
            Compression::NONE,
            Compression::new(CompressionAlgorithm::Gzip, 1).unwrap(),
            Compression::new(CompressionAlgorithm::Zstd, 0).unwrap(),
        ]
    }

    /// WAL-like content: mostly compressible with some noise.
    fn sample(size: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..size)
            .map(|i| {
                if i % 64 < 48 {
                    (i / 8192) as u8
                } else {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                }
            })
            .collect()
    }

    fn encode(
        data: &[u8],
        compression: Compression,
        key: Option<&RepositoryKey>,
    ) -> (Vec<u8>, EncodeSummary) {
        let mut encoder = Encoder::new(Vec::new(), compression, key).unwrap();
        for piece in data.chunks(100_000) {
            encoder.write_all(piece).unwrap();
        }
        encoder.finish().unwrap()
    }

    fn decode(
        stored: &[u8],
        spec: CodecSpec,
        key: Option<&RepositoryKey>,
    ) -> Result<(Vec<u8>, Sha256Digest), String> {
        let one_thread = decode_on(stored, spec, key, false);
        let two_threads = decode_on(stored, spec, key, true);
        assert_eq!(
            one_thread, two_threads,
            "one thread or two, the same outcome"
        );
        one_thread
    }

    fn decode_on(
        stored: &[u8],
        spec: CodecSpec,
        key: Option<&RepositoryKey>,
        two_threads: bool,
    ) -> Result<(Vec<u8>, Sha256Digest), String> {
        let mut decoder = Decoder::new(stored, spec, key).map_err(|e| e.to_string())?;
        let mut out = DigestingWriter::new(Vec::new());
        if two_threads {
            let written = decoder.pump_on_two_threads(&mut out).map_err(|e| match e {
                PumpError::Read(e) => e.to_string(),
                PumpError::Write(e) => panic!("writing into memory failed: {e}"),
            })?;
            assert_eq!(written, decoder.decoded_size());
        } else {
            pump(&mut decoder, &mut out).map_err(|e| match e {
                PumpError::Read(e) => e.to_string(),
                PumpError::Write(e) => panic!("writing into memory failed: {e}"),
            })?;
        }
        let (out, digest, size) = out.finish();
        assert_eq!(size, out.len() as u64);
        assert_eq!(decoder.decoded_size(), size);
        Ok((out, digest))
    }

    #[test]
    fn every_combination_round_trips_empty_small_and_16_mib() {
        let key = test_key();
        for size in [0usize, 1, 5000, 16 << 20] {
            let data = sample(size);
            let expected = Sha256Digest(Sha256::digest(&data).into());
            for compression in compressions() {
                for key in [None, Some(&key)] {
                    let spec = Encoder::<Vec<u8>>::spec(compression, key);
                    let (stored, summary) = encode(&data, compression, key);
                    assert_eq!(summary.original_size, size as u64);
                    assert_eq!(summary.stored_size, stored.len() as u64);
                    if size >= 5000
                        && (key.is_some() || compression.algorithm != CompressionAlgorithm::None)
                    {
                        assert_ne!(
                            &stored[..64],
                            &data[..64],
                            "{spec:?} stored the original bytes"
                        );
                    }
                    let (decoded, digest) = decode(&stored, spec, key).unwrap();
                    assert!(decoded == data, "{spec:?} size {size} did not round trip");
                    assert_eq!(digest, expected);
                }
            }
        }
    }

    #[test]
    fn a_failed_write_stops_the_two_threads_pump() {
        struct FullDisk;
        impl Write for FullDisk {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let compression = compressions()[2];
        let (stored, _) = encode(&sample(4 << 20), compression, None);
        let spec = Encoder::<Vec<u8>>::spec(compression, None);
        let mut decoder = Decoder::new(&stored[..], spec, None).unwrap();
        match decoder.pump_on_two_threads(&mut FullDisk) {
            Err(PumpError::Write(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC)),
            other => panic!(
                "expected the write's error, got {:?}",
                other.map_err(|_| ())
            ),
        }
    }

    #[test]
    fn the_two_threads_pumps_decoding_thread_receives_no_signals() {
        // Reads on the decoding thread and notes whether SIGINT and SIGTERM are blocked there.
        struct MaskProbe<'a>(&'a [u8], std::sync::Arc<std::sync::Mutex<Vec<bool>>>);
        impl Read for MaskProbe<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                // Safety: queries the calling thread's signal mask only.
                let blocked = unsafe {
                    let mut mask: libc::sigset_t = std::mem::zeroed();
                    libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
                    libc::sigismember(&mask, libc::SIGINT) == 1
                        && libc::sigismember(&mask, libc::SIGTERM) == 1
                };
                self.1.lock().unwrap().push(blocked);
                self.0.read(buf)
            }
        }
        let data = sample(1 << 20);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let spec = Encoder::<Vec<u8>>::spec(Compression::NONE, None);
        let mut decoder = Decoder::new(MaskProbe(&data, seen.clone()), spec, None).unwrap();
        let mut out = Vec::new();
        decoder.pump_on_two_threads(&mut out).unwrap();
        assert!(out == data);
        let seen = seen.lock().unwrap();
        assert!(
            !seen.is_empty() && seen.iter().all(|&blocked| blocked),
            "{seen:?}"
        );
    }

    #[test]
    fn compression_actually_compresses() {
        let data = sample(1 << 20);
        for compression in compressions().into_iter().skip(1) {
            let (stored, _) = encode(&data, compression, None);
            assert!(
                stored.len() < data.len() / 2,
                "{compression:?}: {}",
                stored.len()
            );
        }
    }

    #[test]
    fn a_flipped_byte_is_detected_in_every_combination() {
        let key = test_key();
        let data = sample(300_000);
        let expected = Sha256Digest(Sha256::digest(&data).into());
        for compression in compressions() {
            for key in [None, Some(&key)] {
                let spec = Encoder::<Vec<u8>>::spec(compression, key);
                let (stored, _) = encode(&data, compression, key);
                // Several positions: header, middle, last byte.
                for position in [stored.len() / 3, stored.len() / 2, stored.len() - 1] {
                    let mut damaged = stored.clone();
                    damaged[position] ^= 0x01;
                    match decode(&damaged, spec, key) {
                        Err(_) => {}
                        Ok((_, digest)) => {
                            assert_ne!(digest, expected, "{spec:?} at {position} went unnoticed")
                        }
                    }
                }
                // A truncated object is never accepted either.
                match decode(&stored[..stored.len() - 7], spec, key) {
                    Err(_) => {}
                    Ok((_, digest)) => {
                        assert_ne!(digest, expected, "{spec:?} truncated went unnoticed")
                    }
                }
            }
        }
    }

    /// A backup file checked by the digest of its stored bytes ([`ExpectedDigest::Stored`])
    /// relies on the codec to refuse a wrong decoding of intact bytes: for zstd, the frame's
    /// content checksum, which the encoder writes and the decoder must check.
    #[test]
    fn a_zstd_frame_whose_content_checksum_is_wrong_is_refused() {
        let zstd = Compression::new(CompressionAlgorithm::Zstd, 1).unwrap();
        let spec = Encoder::<Vec<u8>>::spec(zstd, None);
        let data = sample(300_000);
        let (stored, _) = encode(&data, zstd, None);
        assert_eq!(decode(&stored, spec, None).unwrap().0, data);
        // The frame ends with the checksum: the low 32 bits of the content's XXH64.
        for position in stored.len() - 4..stored.len() {
            let mut damaged = stored.clone();
            damaged[position] ^= 0x10;
            let err = decode(&damaged, spec, None).unwrap_err();
            assert!(err.contains("checksum"), "at {position}: {err}");
        }
    }

    #[test]
    fn wrong_key_is_reported_as_such() {
        let (stored, _) = encode(b"secret wal", Compression::NONE, Some(&test_key()));
        let spec = CodecSpec {
            compression: CompressionAlgorithm::None,
            encrypted: true,
        };
        let err = decode(&stored, spec, Some(&test_key())).unwrap_err();
        assert_eq!(err, "the object was encrypted with a different key");
        let err = decode(&stored, spec, None).unwrap_err();
        assert!(err.contains("no key"), "{err}");
    }

    #[test]
    fn suffixes_round_trip() {
        for compression in CompressionAlgorithm::NAMES {
            for encrypted in [false, true] {
                let spec = CodecSpec {
                    compression: compression.parse().unwrap(),
                    encrypted,
                };
                assert_eq!(CodecSpec::from_suffix(&spec.suffix()), Some(spec));
            }
        }
        assert_eq!(CodecSpec::from_suffix(".lz4"), None);
        assert_eq!(CodecSpec::from_suffix(".age.zst"), None);
    }

    #[test]
    fn wrapped_key_needs_the_passphrase() {
        let key = test_key();
        let wrapped = key.wrap(&Secret::new("right"), Some(10)).unwrap();
        let unwrapped = RepositoryKey::unwrap_key(&wrapped, &Secret::new("right")).unwrap();
        assert_eq!(unwrapped.recipient_string(), key.recipient_string());
        assert!(matches!(
            RepositoryKey::unwrap_key(&wrapped, &Secret::new("wrong")),
            Err(keys::KeyError::WrongPassphrase)
        ));
    }

    /// A process pays scrypt once per key file and passphrase; another passphrase or another
    /// key file is not answered from what it kept.
    #[test]
    fn a_process_unwraps_a_key_once() {
        let key = test_key();
        let right = Secret::new("right");
        let wrapped = key.wrap(&right, Some(10)).unwrap();
        assert!(keys::already_unwrapped(&wrapped, &right).is_none());
        let first = RepositoryKey::unwrap_key_once(&wrapped, &right).unwrap();
        assert_eq!(first.recipient_string(), key.recipient_string());
        let kept = keys::already_unwrapped(&wrapped, &right).expect("kept after the first");
        assert_eq!(kept.recipient_string(), key.recipient_string());
        assert!(matches!(
            RepositoryKey::unwrap_key_once(&wrapped, &Secret::new("wrong")),
            Err(keys::KeyError::WrongPassphrase)
        ));
        let rewrapped = key.wrap(&right, Some(10)).unwrap();
        assert!(keys::already_unwrapped(&rewrapped, &right).is_none());
    }

    /// A new repository's key costs the same scrypt everywhere (age's header line
    /// `-> scrypt <salt> <log2 N>`), not what the wrapping machine's speed would pick.
    #[test]
    fn a_new_key_is_wrapped_at_the_fixed_work_factor() {
        let key = test_key();
        let wrapped = key.wrap(&Secret::new("right"), None).unwrap();
        let header = String::from_utf8_lossy(&wrapped[..wrapped.len().min(200)]).into_owned();
        let stanza = header
            .lines()
            .find(|line| line.starts_with("-> scrypt "))
            .unwrap_or_else(|| panic!("no scrypt stanza in {header:?}"));
        assert_eq!(
            stanza.split(' ').nth(3),
            Some(keys::KEY_WRAP_WORK_FACTOR.to_string().as_str()),
            "{stanza}"
        );
        let unwrapped = RepositoryKey::unwrap_key(&wrapped, &Secret::new("right")).unwrap();
        assert_eq!(unwrapped.recipient_string(), key.recipient_string());
    }
}
