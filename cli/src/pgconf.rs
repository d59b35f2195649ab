//! Reads settings from a cluster's configuration files the way PostgreSQL does, so that the
//! CLI (notably as `restore_command`) uses the very `sc_backup.*` values the server uses:
//! `postgresql.conf` with its `include`, `include_if_exists` and `include_dir` directives, then
//! `postgresql.auto.conf` (ALTER SYSTEM). Later assignments win.

use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfFileError {
    #[error("could not read configuration file \"{path}\": {reason}")]
    Read { path: String, reason: String },
    #[error("syntax error in configuration file \"{path}\", line {line}: {reason}")]
    Syntax {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("configuration file includes nest too deeply at \"{0}\"")]
    TooDeep(String),
}

/// `name = value` assignments in the order PostgreSQL would apply them; names lowercased.
pub type Assignments = Vec<(String, String)>;

const MAX_DEPTH: usize = 10;

pub fn read_file(path: &Path, out: &mut Assignments) -> Result<(), ConfFileError> {
    read_at_depth(path, out, 0)
}

fn read_at_depth(path: &Path, out: &mut Assignments, depth: usize) -> Result<(), ConfFileError> {
    if depth > MAX_DEPTH {
        return Err(ConfFileError::TooDeep(path.display().to_string()));
    }
    let text = fs::read_to_string(path).map_err(|e| ConfFileError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("/"));
    for (index, line) in text.lines().enumerate() {
        let syntax = |reason: &str| ConfFileError::Syntax {
            path: path.display().to_string(),
            line: index + 1,
            reason: reason.to_string(),
        };
        let Some((name, value)) =
            sc_backup_core::config::parse_conf_line(line).map_err(|reason| syntax(&reason))?
        else {
            continue;
        };
        let relative = |value: &str| -> PathBuf {
            let target = Path::new(value);
            if target.is_absolute() {
                target.to_path_buf()
            } else {
                base.join(target)
            }
        };
        match name.as_str() {
            "include" => read_at_depth(&relative(&value), out, depth + 1)?,
            "include_if_exists" => {
                let target = relative(&value);
                if target.exists() {
                    read_at_depth(&target, out, depth + 1)?;
                }
            }
            "include_dir" => {
                let dir = relative(&value);
                let mut files: Vec<PathBuf> = fs::read_dir(&dir)
                    .map_err(|e| ConfFileError::Read {
                        path: dir.display().to_string(),
                        reason: e.to_string(),
                    })?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|p| {
                        let name = p
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        !name.starts_with('.') && name.ends_with(".conf") && p.is_file()
                    })
                    .collect();
                files.sort();
                for file in files {
                    read_at_depth(&file, out, depth + 1)?;
                }
            }
            _ => out.push((name, value)),
        }
    }
    Ok(())
}

/// The server's configuration file for a data directory: the `config_file` the running (or
/// last) postmaster was started with, as recorded in `postmaster.opts` (Debian's layout keeps
/// postgresql.conf in /etc), else `postgresql.conf` in the data directory.
pub fn config_file_of(data_directory: &Path) -> PathBuf {
    if let Ok(opts) = fs::read_to_string(data_directory.join("postmaster.opts")) {
        for token in split_postmaster_opts(&opts) {
            for prefix in ["config_file=", "--config-file=", "--config_file="] {
                if let Some(path) = token.strip_prefix(prefix) {
                    return PathBuf::from(path);
                }
            }
        }
    }
    data_directory.join("postgresql.conf")
}

/// postmaster.opts holds the command line with each argument in double quotes.
fn split_postmaster_opts(opts: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in opts.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let cases = [
            ("", None),
            ("   # comment", None),
            ("port = 5432", Some(("port", "5432"))),
            ("Port 5433 # trailing", Some(("port", "5433"))),
            (
                "sc_backup.repository = '/srv/repo'",
                Some(("sc_backup.repository", "/srv/repo")),
            ),
            ("a='it''s'", Some(("a", "it's"))),
            (
                r"a='back\\slash \'q\' \101'",
                Some(("a", r"back\slash 'q' A")),
            ),
            ("a = '' # empty", Some(("a", ""))),
        ];
        for (line, expected) in cases {
            let parsed = sc_backup_core::config::parse_conf_line(line).unwrap();
            assert_eq!(
                parsed,
                expected.map(|(n, v)| (n.to_string(), v.to_string())),
                "{line}"
            );
        }
        for bad in ["a = 'open", "a =", "a = b c", "= b"] {
            assert!(
                sc_backup_core::config::parse_conf_line(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn includes_and_auto_conf_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("conf.d")).unwrap();
        fs::write(
            dir.path().join("postgresql.conf"),
            "sc_backup.repository = '/first'\ninclude 'extra.conf'\ninclude_if_exists 'absent.conf'\ninclude_dir 'conf.d'\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("extra.conf"),
            "sc_backup.compression = gzip\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("conf.d/10-a.conf"),
            "sc_backup.repository = '/second'\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("conf.d/.hidden.conf"),
            "sc_backup.repository = '/hidden'\n",
        )
        .unwrap();
        let mut out = Vec::new();
        read_file(&dir.path().join("postgresql.conf"), &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                ("sc_backup.repository".to_string(), "/first".to_string()),
                ("sc_backup.compression".to_string(), "gzip".to_string()),
                ("sc_backup.repository".to_string(), "/second".to_string()),
            ]
        );
        fs::write(dir.path().join("loop.conf"), "include 'loop.conf'\n").unwrap();
        let err = read_file(&dir.path().join("loop.conf"), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, ConfFileError::TooDeep(_)));
    }

    #[test]
    fn config_file_from_postmaster_opts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            config_file_of(dir.path()),
            dir.path().join("postgresql.conf")
        );
        fs::write(
            dir.path().join("postmaster.opts"),
            "/usr/lib/postgresql/15/bin/postgres \"-D\" \"/var/lib/postgresql/15/main\" \"-c\" \"config_file=/etc/postgresql/15/main/postgresql.conf\"\n",
        )
        .unwrap();
        assert_eq!(
            config_file_of(dir.path()),
            PathBuf::from("/etc/postgresql/15/main/postgresql.conf")
        );
    }
}
