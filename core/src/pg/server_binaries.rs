//! Finding the PostgreSQL server programs of one major version.
//!
//! A physical backup starts only with the server of the major version that wrote it (the
//! catalog, the control file and the WAL format all change between majors), so whatever
//! restores or starts a data directory needs that version's `postgres` and `pg_ctl`. A host
//! often has several majors installed; they are looked for where packagers put them, and
//! each candidate is asked its version (`postgres --version`) rather than trusted by its path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `scripts/install-deps.sh` puts PostgreSQL 16, 17 and 18 (`<root>/<major>/bin`).
pub const SC_BACKUP_POSTGRESQL_ROOT: &str = "/opt/sc_backup/postgresql";

/// The major version of a `PG_VERSION_NUM` (150018 → 15).
pub fn major_of(version_num: u32) -> u32 {
    version_num / 10000
}

/// One installation's server programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBinaries {
    bindir: PathBuf,
    major: u32,
    /// As `postgres --version` printed it, e.g. "17.6".
    version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerBinariesError {
    #[error("no PostgreSQL {major} server found (looked in {looked}){others}", looked = .looked.join(", "), others = describe_others(.others))]
    NotFound {
        major: u32,
        looked: Vec<String>,
        /// Other majors seen on the way: (major, bindir).
        others: Vec<(u32, String)>,
    },

    #[error("{bindir} holds PostgreSQL {found}, but PostgreSQL {wanted} is needed")]
    WrongMajor {
        bindir: String,
        found: String,
        wanted: u32,
    },

    #[error("no PostgreSQL installation found (looked in {looked})", looked = .looked.join(", "))]
    NoneInstalled { looked: Vec<String> },

    #[error("{bindir} holds no usable PostgreSQL server: {reason}")]
    Unusable { bindir: String, reason: String },
}

fn describe_others(others: &[(u32, String)]) -> String {
    if others.is_empty() {
        return String::new();
    }
    let list: Vec<String> = others
        .iter()
        .map(|(major, bindir)| format!("{major} in {bindir}"))
        .collect();
    format!("; found PostgreSQL {}", list.join(", "))
}

impl ServerBinariesError {
    /// The major a backup needs, when that is what was missing (the front end words the hint).
    pub fn wanted_major(&self) -> Option<u32> {
        match self {
            ServerBinariesError::NotFound { major, .. } => Some(*major),
            ServerBinariesError::WrongMajor { wanted, .. } => Some(*wanted),
            ServerBinariesError::Unusable { .. } | ServerBinariesError::NoneInstalled { .. } => {
                None
            }
        }
    }
}

impl fmt::Display for ServerBinaries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PostgreSQL {} in {}",
            self.version,
            self.bindir.display()
        )
    }
}

impl ServerBinaries {
    /// The installation whose programs are in `bindir`, whatever its version.
    pub fn at(bindir: &Path) -> Result<ServerBinaries, ServerBinariesError> {
        let unusable = |reason: String| ServerBinariesError::Unusable {
            bindir: bindir.display().to_string(),
            reason,
        };
        let postgres = bindir.join("postgres");
        if !postgres.is_file() {
            return Err(unusable("there is no postgres program".into()));
        }
        // `--version` is answered before the server's refusal to run as root.
        let output = Command::new(&postgres)
            .arg("--version")
            .output()
            .map_err(|e| unusable(format!("could not run postgres --version: {e}")))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = parse_version(&text)
            .ok_or_else(|| unusable(format!("postgres --version printed {:?}", text.trim())))?;
        let major = version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| unusable(format!("cannot read the version {version:?}")))?;
        Ok(ServerBinaries {
            bindir: bindir.to_path_buf(),
            major,
            version,
        })
    }

    /// PostgreSQL `major`'s programs: in `explicit` if given (refused if it is another
    /// major), else the first installation of that major in [`candidate_directories`].
    pub fn find(
        major: u32,
        explicit: Option<&Path>,
    ) -> Result<ServerBinaries, ServerBinariesError> {
        if let Some(bindir) = explicit {
            let found = ServerBinaries::at(bindir)?;
            return if found.major == major {
                Ok(found)
            } else {
                Err(ServerBinariesError::WrongMajor {
                    bindir: bindir.display().to_string(),
                    found: found.version,
                    wanted: major,
                })
            };
        }
        let mut looked = Vec::new();
        for bindir in candidate_directories(major) {
            if looked.contains(&bindir.display().to_string()) {
                continue;
            }
            looked.push(bindir.display().to_string());
            if let Ok(found) = ServerBinaries::at(&bindir) {
                if found.major == major {
                    return Ok(found);
                }
            }
        }
        // Not there: say what is installed instead, which is usually the real story.
        let mut others: Vec<(u32, String)> = Vec::new();
        for bindir in installations() {
            if let Ok(found) = ServerBinaries::at(&bindir) {
                let entry = (found.major, bindir.display().to_string());
                if !others.contains(&entry) {
                    others.push(entry);
                }
            }
        }
        Err(ServerBinariesError::NotFound {
            major,
            looked,
            others,
        })
    }

    /// The newest installation found (in `explicit` if given): enough to ask a running server
    /// its version before choosing the programs of that version.
    pub fn newest(explicit: Option<&Path>) -> Result<ServerBinaries, ServerBinariesError> {
        if let Some(bindir) = explicit {
            return ServerBinaries::at(bindir);
        }
        installations()
            .iter()
            .filter_map(|bindir| ServerBinaries::at(bindir).ok())
            .max_by_key(|found| found.major)
            .ok_or_else(|| ServerBinariesError::NoneInstalled {
                looked: installations()
                    .iter()
                    .map(|dir| dir.display().to_string())
                    .collect(),
            })
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A program of this installation (`pg_ctl`, `initdb`, `psql`, ...).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// Where PostgreSQL `major` is looked for, in order: the packagers' version-specific
/// directories (Debian and Ubuntu, the PGDG RPMs, scripts/install-deps.sh), then the
/// unversioned ones, whose version is checked like every other's.
pub fn candidate_directories(major: u32) -> Vec<PathBuf> {
    let mut dirs = vec![
        PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
        PathBuf::from(format!("/usr/pgsql-{major}/bin")),
        PathBuf::from(format!("{SC_BACKUP_POSTGRESQL_ROOT}/{major}/bin")),
    ];
    dirs.extend(unversioned_directories());
    dirs
}

/// A source install's default, the bindir of `pg_config` on PATH, and PATH itself.
fn unversioned_directories() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/local/pgsql/bin")];
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        if output.status.success() {
            let bindir = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if !bindir.is_empty() {
                dirs.push(PathBuf::from(bindir));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path).filter(|dir| dir.join("postgres").is_file()));
    }
    dirs
}

/// Every installation in the version-specific places, and the unversioned candidates.
fn installations() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for (parent, prefix, suffix) in [
        ("/usr/lib/postgresql", "", "bin"),
        ("/usr", "pgsql-", "bin"),
        (SC_BACKUP_POSTGRESQL_ROOT, "", "bin"),
    ] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path().join(suffix))
            .filter(|bindir| bindir.join("postgres").is_file())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    dirs.extend(unversioned_directories());
    dirs
}

/// "17.6" from "postgres (PostgreSQL) 17.6", "postgres (PostgreSQL) 15.18 (Debian
/// 15.18-0+deb12u1)" or "postgres (PostgreSQL) 18beta1".
fn parse_version(text: &str) -> Option<String> {
    let rest = text.trim().strip_prefix("postgres (PostgreSQL) ")?;
    let version = rest.split_whitespace().next()?;
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then(|| version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn versions_are_read_from_what_postgres_prints() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 17.6\n").as_deref(),
            Some("17.6")
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").as_deref(),
            Some("15.18")
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 18beta1").as_deref(),
            Some("18beta1")
        );
        assert_eq!(parse_version("psql (PostgreSQL) 17.6"), None);
        assert_eq!(parse_version(""), None);
        assert_eq!(major_of(150018), 15);
        assert_eq!(major_of(180006), 18);
    }

    /// A bin directory whose `postgres` prints `version_line`.
    fn fake_bindir(dir: &Path, version_line: &str) -> PathBuf {
        let bindir = dir.join("bin");
        std::fs::create_dir_all(&bindir).unwrap();
        let script = bindir.join("postgres");
        std::fs::write(&script, format!("#!/bin/sh\necho '{version_line}'\n")).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        bindir
    }

    #[test]
    fn an_explicit_directory_of_another_major_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let bindir = fake_bindir(dir.path(), "postgres (PostgreSQL) 15.18");
        let found = ServerBinaries::find(15, Some(&bindir)).unwrap();
        assert_eq!((found.major(), found.version()), (15, "15.18"));
        assert_eq!(found.program("pg_ctl"), bindir.join("pg_ctl"));
        let error = ServerBinaries::find(17, Some(&bindir)).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("holds PostgreSQL 15.18"), "{message}");
        assert!(message.contains("PostgreSQL 17 is needed"), "{message}");
        assert_eq!(error.wanted_major(), Some(17));
    }

    #[test]
    fn a_directory_without_a_server_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let error = ServerBinaries::at(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("there is no postgres program"),
            "{error}"
        );
        let bindir = fake_bindir(dir.path(), "something else");
        let error = ServerBinaries::at(&bindir).unwrap_err();
        assert!(error.to_string().contains("printed"), "{error}");
    }

    #[test]
    fn not_found_lists_where_it_looked_and_what_it_saw() {
        let error = ServerBinariesError::NotFound {
            major: 17,
            looked: vec![
                "/usr/lib/postgresql/17/bin".into(),
                "/usr/pgsql-17/bin".into(),
            ],
            others: vec![(15, "/usr/lib/postgresql/15/bin".into())],
        };
        assert_eq!(
            error.to_string(),
            "no PostgreSQL 17 server found (looked in /usr/lib/postgresql/17/bin, /usr/pgsql-17/bin); found PostgreSQL 15 in /usr/lib/postgresql/15/bin"
        );
    }
}
