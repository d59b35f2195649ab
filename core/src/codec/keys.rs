//! The repository key.
//!
//! Deriving a key from a passphrase (age's scrypt recipient) deliberately costs time and
//! memory ([`KEY_WRAP_WORK_FACTOR`]). Paying that per WAL segment would cap archiving, so each
//! encrypted repository has one X25519 key pair instead: objects are encrypted to its public
//! key (fast), and its private key is stored in the repository as `keys/repository.key.age`,
//! itself an age file encrypted with the passphrase. A process unwraps it once and keeps it
//! ([`RepositoryKey::unwrap_key_once`]).
//!
//! Everything is standard age, so an operator can decrypt by hand:
//! `age -d -o key.txt keys/repository.key.age` (asks for the passphrase), then
//! `age -d -i key.txt OBJECT.zst.age | zstd -d > FILE`.

use std::io::{self, Read, Write};
use std::iter;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use age::secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::DecodeError;
use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("the key file is damaged: {0}")]
    Damaged(String),
    #[error("could not encrypt the key: {0}")]
    Encrypt(String),
}

#[derive(Clone)]
pub struct RepositoryKey {
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
    /// Whether the repository's metadata must carry a MAC made with this key
    /// ([`crate::codec::authentication`]): recorded inside the key file, which only the
    /// passphrase opens, so that nobody can turn it off. Keys made before it existed
    /// (repositories created by older versions) do not require one.
    authenticates: bool,
}

/// The line of a key file (inside its encryption) that says the repository's metadata is
/// authenticated; age's identity-file reader skips it as a comment.
const AUTHENTICATES_MARKER: &str = "# sc_backup: metadata is authenticated with this key (1)";

impl std::fmt::Debug for RepositoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepositoryKey({})", self.recipient)
    }
}

/// scrypt's work factor (log2 of N) for wrapping a new repository's key: 2^16 × 1 KiB (r = 8)
/// = 64 MiB, the same on every machine. age's own default is calibrated to a second on the
/// machine that wraps, which here meant up to 2^20 (1 GiB) in every backend that opened the
/// repository, and a repository made on a fast server could then be refused, or exhaust
/// memory, on a small restore host. The passphrase should be long and random
/// (docs/design.md): then the work factor is not what protects it.
pub const KEY_WRAP_WORK_FACTOR: u8 = 16;

/// The largest work factor accepted when unwrapping, whatever this machine's speed: keys
/// wrapped with age's calibrated default (before the fixed factor) still open. age's own limit
/// is the local calibration plus 4, which refuses a fast machine's key on a slow one.
pub const KEY_UNWRAP_MAX_WORK_FACTOR: u8 = 22;

/// The keys this process has unwrapped, by [`unwrap_id`]: a backend's next `sc_backup()`, the
/// scheduler's next run and the archiver reopen the repository without another scrypt. The
/// process holds the passphrase itself (its setting), so the cache holds nothing it could not
/// derive again; only a successful unwrap is kept, and the key file is still read and its
/// public key checked against repository.json at every open.
static UNWRAPPED: Mutex<Vec<([u8; 32], RepositoryKey)>> = Mutex::new(Vec::new());
/// Repositories (or passphrases) one process opens: a handful at most.
const UNWRAPPED_KEPT: usize = 8;

/// What a cached key answers for: this key file's exact bytes with this passphrase.
fn unwrap_id(wrapped: &[u8], passphrase: &Secret) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update((wrapped.len() as u64).to_le_bytes());
    digest.update(wrapped);
    digest.update(passphrase.expose().as_bytes());
    digest.finalize().into()
}

/// The key this process already unwrapped from `wrapped` with `passphrase`, if any.
pub fn already_unwrapped(wrapped: &[u8], passphrase: &Secret) -> Option<RepositoryKey> {
    let id = unwrap_id(wrapped, passphrase);
    let kept = UNWRAPPED.lock().unwrap_or_else(PoisonError::into_inner);
    kept.iter()
        .find(|(kept_id, _)| *kept_id == id)
        .map(|(_, key)| key.clone())
}

impl RepositoryKey {
    /// [`RepositoryKey::unwrap_key`], paid once per process for one key file and passphrase.
    pub fn unwrap_key_once(wrapped: &[u8], passphrase: &Secret) -> Result<Self, KeyError> {
        if let Some(key) = already_unwrapped(wrapped, passphrase) {
            return Ok(key);
        }
        let key = Self::unwrap_key(wrapped, passphrase)?;
        key.keep_unwrapped(wrapped, passphrase);
        Ok(key)
    }

    /// Records that `wrapped` with `passphrase` opens to this key, as a successful unwrap
    /// would: for the process that wrapped it and stored `wrapped` as the repository's key
    /// file. Without it, that process (a backend whose `sc_backup()` created the repository,
    /// the archiver) paid scrypt again at its next open of the repository.
    pub fn keep_unwrapped(&self, wrapped: &[u8], passphrase: &Secret) {
        let id = unwrap_id(wrapped, passphrase);
        let mut kept = UNWRAPPED.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.iter().any(|(kept_id, _)| *kept_id == id) {
            return;
        }
        if kept.len() == UNWRAPPED_KEPT {
            kept.remove(0);
        }
        kept.push((id, self.clone()));
    }

    pub fn generate() -> Self {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        RepositoryKey {
            identity,
            recipient,
            authenticates: true,
        }
    }

    /// Whether metadata without a valid MAC made with this key must be refused.
    pub fn authenticates(&self) -> bool {
        self.authenticates
    }

    /// The key metadata MACs are made with: derived from the private key, so that making one
    /// needs the passphrase (the public key, in repository.json, is known to anyone who can
    /// read the repository, and encrypting to it proves nothing).
    pub(crate) fn authentication_key(&self) -> [u8; 32] {
        let mut digest = Sha256::new();
        digest.update(b"sc_backup metadata authentication key, version 1\0");
        digest.update(self.identity.to_string().expose_secret().as_bytes());
        digest.finalize().into()
    }

    /// The public key, `age1...`: safe to print.
    pub fn recipient_string(&self) -> String {
        self.recipient.to_string()
    }

    /// The private key in age's identity-file format, encrypted with `passphrase` by age's
    /// scrypt recipient at [`KEY_WRAP_WORK_FACTOR`]. `work_factor` (log2 of scrypt's N) is only
    /// lowered by tests.
    pub fn wrap(&self, passphrase: &Secret, work_factor: Option<u8>) -> Result<Vec<u8>, KeyError> {
        let mut recipient =
            age::scrypt::Recipient::new(SecretString::from(passphrase.expose().to_owned()));
        recipient.set_work_factor(work_factor.unwrap_or(KEY_WRAP_WORK_FACTOR));
        let encryptor =
            age::Encryptor::with_recipients(iter::once(&recipient as &dyn age::Recipient))
                .map_err(|e| KeyError::Encrypt(e.to_string()))?;
        let mut out = Vec::new();
        let write = |out: &mut Vec<u8>| -> io::Result<()> {
            let mut writer = encryptor.wrap_output(out)?;
            writer.write_all(self.identity_file().as_bytes())?;
            writer.finish()?;
            Ok(())
        };
        write(&mut out).map_err(|e| KeyError::Encrypt(e.to_string()))?;
        Ok(out)
    }

    pub fn unwrap_key(wrapped: &[u8], passphrase: &Secret) -> Result<Self, KeyError> {
        let decryptor =
            age::Decryptor::new(wrapped).map_err(|e| KeyError::Damaged(e.to_string()))?;
        let mut identity =
            age::scrypt::Identity::new(SecretString::from(passphrase.expose().to_owned()));
        identity.set_max_work_factor(KEY_UNWRAP_MAX_WORK_FACTOR);
        let mut reader = decryptor
            .decrypt(iter::once(&identity as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                    KeyError::WrongPassphrase
                }
                other => KeyError::Damaged(other.to_string()),
            })?;
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|e| KeyError::Damaged(e.to_string()))?;
        let key = RepositoryKey::from_identity_file(&text);
        crate::config::wipe(&mut text);
        key
    }

    /// The private key in age's plain identity-file format (`age -d -i FILE` reads it).
    pub fn identity_file(&self) -> String {
        let marker = if self.authenticates {
            format!("{AUTHENTICATES_MARKER}\n")
        } else {
            String::new()
        };
        format!(
            "# sc_backup repository key; public key: {}\n{marker}{}\n",
            self.recipient,
            self.identity.to_string().expose_secret()
        )
    }

    /// Reads what [`RepositoryKey::identity_file`] wrote.
    pub fn from_identity_file(text: &str) -> Result<Self, KeyError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with("AGE-SECRET-KEY-"))
            .ok_or_else(|| KeyError::Damaged("no AGE-SECRET-KEY line".into()))?;
        let identity =
            age::x25519::Identity::from_str(line).map_err(|e| KeyError::Damaged(e.to_string()))?;
        let recipient = identity.to_public();
        let authenticates = text.lines().any(|line| line.trim() == AUTHENTICATES_MARKER);
        Ok(RepositoryKey {
            identity,
            recipient,
            authenticates,
        })
    }

    pub(super) fn encryptor(&self) -> age::Encryptor {
        age::Encryptor::with_recipients(iter::once(&self.recipient as &dyn age::Recipient))
            .expect("an X25519 recipient always wraps a file key")
    }

    pub(super) fn decrypt<R: Read>(
        &self,
        source: R,
    ) -> Result<age::stream::StreamReader<R>, DecodeError> {
        let decryptor = age::Decryptor::new(source)
            .map_err(|e| DecodeError::Corrupt(format!("age header: {e}")))?;
        decryptor
            .decrypt(iter::once(&self.identity as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => DecodeError::WrongKey,
                other => DecodeError::Corrupt(format!("age: {other}")),
            })
    }
}
