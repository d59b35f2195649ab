//! Secrets kept where only the PostgreSQL OS user can read them.
//!
//! A setting, even `GUC_SUPERUSER_ONLY`, is readable by every member of
//! `pg_read_all_settings`, so by every `pg_monitor` account; and what ALTER SYSTEM writes lands
//! in `postgresql.auto.conf`, which every base backup copies. So secrets live in a file of
//! their own, as pgBackRest keeps them in its own configuration: `sc_backup.secrets_file`
//! names it (the setting is only a path), the archiver, the backends and the CLI read it, and
//! it must be a regular file of the user reading it (or read by root) that nobody else may
//! read. Its syntax is postgresql.conf's:
//!
//! ```text
//! encryption_passphrase = 'correct horse battery staple'
//! s3_access_key_id = 'AKIA...'
//! s3_secret_access_key = '...'
//! repository2_encryption_passphrase = '...'     # repository 2's own, if it has one
//! ```

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::repositories::FURTHER_REPOSITORY_NAMES;
use super::{names, parse_conf_line, ConfigError, RawSettings};

/// The most a secrets file may hold: a few lines.
const MAX_SIZE: u64 = 64 << 10;

/// The settings a secrets file may hold, by the names it uses (with or without `sc_backup.`).
const SECRET_NAMES: &[&str] = &[
    names::ENCRYPTION_PASSPHRASE,
    names::S3_ACCESS_KEY_ID,
    names::S3_SECRET_ACCESS_KEY,
    FURTHER_REPOSITORY_NAMES[0].encryption_passphrase,
    FURTHER_REPOSITORY_NAMES[1].encryption_passphrase,
    FURTHER_REPOSITORY_NAMES[2].encryption_passphrase,
];

/// The settings whose values are secrets, which must never be stored in a backup's copy of the
/// configuration nor shown to anyone.
pub const SECRET_SETTINGS: &[&str] = &[
    names::ENCRYPTION_PASSPHRASE,
    names::S3_SECRET_ACCESS_KEY,
    FURTHER_REPOSITORY_NAMES[0].encryption_passphrase,
    FURTHER_REPOSITORY_NAMES[1].encryption_passphrase,
    FURTHER_REPOSITORY_NAMES[2].encryption_passphrase,
];

/// Reads the secrets file at `path`: refused unless it is a regular file owned by this user
/// (any owner when this user is root) that neither group nor others may read or write.
pub fn read_secrets_file(path: &Path) -> Result<RawSettings, ConfigError> {
    let refuse = |reason: String| ConfigError::SecretsFile {
        path: path.display().to_string(),
        reason,
    };
    let meta = fs::symlink_metadata(path).map_err(|e| refuse(e.to_string()))?;
    // Safety: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() {
        return Err(refuse("not a regular file".into()));
    }
    if meta.uid() != euid && euid != 0 {
        return Err(refuse(format!(
            "owned by uid {}, not by the user reading it (uid {euid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {:o} lets others read or change it; chmod 600 it",
            meta.mode() & 0o777
        )));
    }
    if meta.len() > MAX_SIZE {
        return Err(refuse(format!("larger than {MAX_SIZE} bytes")));
    }
    let text = fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
    let mut raw = RawSettings::default();
    for (index, line) in text.lines().enumerate() {
        let Some((name, value)) = parse_conf_line(line)
            .map_err(|reason| refuse(format!("line {}: {reason}", index + 1)))?
        else {
            continue;
        };
        let full = if name.starts_with("sc_backup.") {
            name.clone()
        } else {
            format!("sc_backup.{name}")
        };
        if !SECRET_NAMES.contains(&full.as_str()) {
            return Err(refuse(format!(
                "line {}: \"{name}\" is not a secret it may hold (encryption_passphrase, s3_access_key_id, s3_secret_access_key, repository2_encryption_passphrase to repository4_encryption_passphrase)",
                index + 1
            )));
        }
        raw.set(&full, value);
    }
    Ok(raw)
}

/// `postgresql.auto.conf` (or any configuration file's text) without its assignments of secret
/// settings, each replaced by a comment naming it; and the names removed. A base backup stores
/// this, so that a secret set with ALTER SYSTEM never travels into the repository.
pub fn without_secret_settings(text: &str) -> (String, Vec<&'static str>) {
    let mut removed = Vec::new();
    let mut kept = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let secret = parse_conf_line(line.trim_end_matches(['\n', '\r']))
            .ok()
            .flatten()
            .and_then(|(name, _)| SECRET_SETTINGS.iter().find(|s| **s == name).copied());
        match secret {
            Some(name) => {
                kept.push_str(&format!(
                    "# {name} removed by sc_backup: secrets are never stored in a backup\n"
                ));
                removed.push(name);
            }
            None => kept.push_str(line),
        }
    }
    (kept, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("secrets.conf");
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_private_file_of_secrets_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "# comment\nencryption_passphrase = 'it''s long'\nsc_backup.s3_secret_access_key = x\n",
            0o600,
        );
        let raw = read_secrets_file(&path).unwrap();
        assert_eq!(raw.encryption_passphrase.unwrap().expose(), "it's long");
        assert_eq!(raw.s3_secret_access_key.unwrap().expose(), "x");
    }

    #[test]
    fn a_file_others_can_read_a_link_or_an_unknown_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "encryption_passphrase = 'p'\n", 0o640);
        let error = read_secrets_file(&path).unwrap_err().to_string();
        assert!(error.contains("mode 640"), "{error}");
        assert!(!error.contains("'p'"), "{error}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let error = read_secrets_file(&link).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
        let path = write(dir.path(), "repository = '/x'\n", 0o600);
        let error = read_secrets_file(&path).unwrap_err().to_string();
        assert!(error.contains("not a secret it may hold"), "{error}");
    }

    #[test]
    fn secrets_are_removed_from_a_configuration_files_text() {
        let text = "# Do not edit\nsc_backup.repository = '/r'\nsc_backup.encryption_passphrase = 'hunter2'\nsc_backup.s3_secret_access_key='k' # x\nwork_mem = '4MB'\n";
        let (kept, removed) = without_secret_settings(text);
        assert_eq!(
            removed,
            [names::ENCRYPTION_PASSPHRASE, names::S3_SECRET_ACCESS_KEY]
        );
        assert!(!kept.contains("hunter2") && !kept.contains("'k'"), "{kept}");
        assert!(kept.contains("sc_backup.repository = '/r'\n"));
        assert!(kept.contains("work_mem = '4MB'\n"));
        assert_eq!(kept.lines().count(), text.lines().count());
    }
}
