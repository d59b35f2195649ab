//! Authenticated metadata in an encrypted repository.
//!
//! Encryption alone does not stop forgery: objects are encrypted to the repository's public
//! key, which repository.json publishes, and `backup.json` carried only a plain SHA-256, so
//! anyone who can write the bucket could make a backup (or change one) that verifies. So the
//! documents that everything else is checked against, a backup's `backup.json` and a dump's
//! `.meta`, carry a MAC: HMAC-SHA256 with a key derived from the repository's private key
//! (which needs the passphrase), over the object's key and the document. The manifest and the
//! catalog are checked against digests `backup.json` records, and every file against digests
//! the manifest records, so one MAC vouches for the whole backup. Binding the object's key
//! refuses a document moved to another name (one backup's metadata under another backup's
//! name).
//!
//! The MAC is the document's last field, `"metadata_mac": "<hex>"`, added to the text as
//! written (so the document's own checksum, over the text without it, keeps its meaning) and
//! removed before checking. A repository whose key file says it authenticates (every one
//! created since) refuses a document without a valid MAC; older repositories accept one
//! without, and refuse a wrong one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::RepositoryKey;

const FIELD: &str = "metadata_mac";

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthenticationError {
    #[error("it carries no MAC, but this repository's metadata is authenticated: it was not written with the repository's key")]
    Missing,
    #[error("its MAC does not match: it was changed, or written, by someone without the repository's key, or moved from another name")]
    Mismatch,
}

fn mac(key: &RepositoryKey, object: &str, document: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.authentication_key())
        .expect("HMAC takes a key of any length");
    mac.update(b"sc_backup metadata, version 1\0");
    mac.update(object.as_bytes());
    mac.update(b"\0");
    mac.update(document);
    mac.finalize().into_bytes().into()
}

/// `document` (a JSON object as serde_json's pretty printer writes it) stored as `object`,
/// with its MAC added as the last field.
pub fn seal(key: &RepositoryKey, object: &str, document: &[u8]) -> Vec<u8> {
    let tag = hex::encode(mac(key, object, document));
    let body = document
        .strip_suffix(b"\n}")
        .expect("a pretty-printed JSON object ends with a newline and a brace");
    let mut sealed = body.to_vec();
    sealed.extend_from_slice(format!(",\n  \"{FIELD}\": \"{tag}\"\n}}").as_bytes());
    sealed
}

/// The document stored as `object` without its MAC, once the MAC is checked with `key` (the
/// repository's; `None` for an unencrypted repository, which has nothing to check with).
pub fn open<'d>(
    key: Option<&RepositoryKey>,
    object: &str,
    stored: &'d [u8],
) -> Result<std::borrow::Cow<'d, [u8]>, AuthenticationError> {
    let (document, tag) = match split(stored) {
        Some((document, tag)) => (document, Some(tag)),
        None => (std::borrow::Cow::Borrowed(stored), None),
    };
    let Some(key) = key else {
        return Ok(document);
    };
    match tag {
        Some(tag) if hex::decode(tag).is_ok_and(|tag| tag == mac(key, object, &document)) => {
            Ok(document)
        }
        Some(_) => Err(AuthenticationError::Mismatch),
        None if key.authenticates() => Err(AuthenticationError::Missing),
        None => Ok(document),
    }
}

/// The document without its trailing MAC field, and the MAC's text, if it ends with one.
fn split(stored: &[u8]) -> Option<(std::borrow::Cow<'_, [u8]>, &str)> {
    let text = std::str::from_utf8(stored).ok()?;
    let prefix = format!(",\n  \"{FIELD}\": \"");
    let start = text.rfind(&prefix)?;
    let tag = text[start + prefix.len()..].strip_suffix("\"\n}")?;
    if tag.len() != 64 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut document = text[..start].to_string();
    document.push_str("\n}");
    Some((std::borrow::Cow::Owned(document.into_bytes()), tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Vec<u8> {
        serde_json::to_vec_pretty(&serde_json::json!({"backup_name": "b", "size": 3})).unwrap()
    }

    #[test]
    fn a_sealed_document_opens_only_with_its_key_and_name() {
        let key = RepositoryKey::generate();
        let sealed = seal(&key, "backups/b/backup.json", &document());
        let parsed: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(parsed["size"], 3);
        assert_eq!(
            open(Some(&key), "backups/b/backup.json", &sealed).unwrap(),
            document().as_slice()
        );
        // Another key (a forger's), another name (a swap), a changed byte.
        let other = RepositoryKey::generate();
        assert_eq!(
            open(Some(&other), "backups/b/backup.json", &sealed),
            Err(AuthenticationError::Mismatch)
        );
        assert_eq!(
            open(Some(&key), "backups/c/backup.json", &sealed),
            Err(AuthenticationError::Mismatch)
        );
        let changed = String::from_utf8(sealed.clone()).unwrap().replace("3", "4");
        assert_eq!(
            open(Some(&key), "backups/b/backup.json", changed.as_bytes()),
            Err(AuthenticationError::Mismatch)
        );
        // Without a MAC: refused where the key says metadata is authenticated.
        assert_eq!(
            open(Some(&key), "backups/b/backup.json", &document()),
            Err(AuthenticationError::Missing)
        );
        // An unencrypted repository has nothing to check with.
        assert!(open(None, "backups/b/backup.json", &document()).is_ok());
    }

    #[test]
    fn a_key_made_before_authentication_accepts_unsealed_documents_but_not_wrong_ones() {
        let key = RepositoryKey::generate();
        let legacy_text = key
            .identity_file()
            .lines()
            .filter(|line| !line.contains("authenticated"))
            .collect::<Vec<_>>()
            .join("\n");
        let legacy = RepositoryKey::from_identity_file(&legacy_text).unwrap();
        assert!(!legacy.authenticates());
        assert!(RepositoryKey::from_identity_file(&key.identity_file())
            .unwrap()
            .authenticates());
        assert!(open(Some(&legacy), "x", &document()).is_ok());
        let forged = seal(&RepositoryKey::generate(), "x", &document());
        assert_eq!(
            open(Some(&legacy), "x", &forged),
            Err(AuthenticationError::Mismatch)
        );
    }
}
