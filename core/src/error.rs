//! Errors of the core crate. Every variant's message is written for a DBA: it names the
//! object or setting involved and, through [`Error::hint`], what to do about it, worded for
//! the front end that shows it (a CLI flag there, a setting or an SQL function here). Front
//! ends turn them into `ereport` (message + hint) or one CLI line; none of them ever contains
//! a secret. Messages name no front end's knob: only requests the CLI alone can make (restore
//! targets, `--table` patterns) quote the words they were asked in.

use std::io;

use crate::config::ConfigError;
use crate::pg::server_binaries::ServerBinariesError;
use crate::storage::StorageError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who shows an error to the operator, so that its hint names what can be done there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// SQL functions, the scheduler and the archive module, inside PostgreSQL: settings and
    /// functions.
    Sql,
    /// `sc-backup`: its flags and environment variables.
    Cli,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error(transparent)]
    ServerBinaries(#[from] ServerBinariesError),

    #[error("no sc_backup repository at {location}: {reason}")]
    NotARepository { location: String, reason: String },

    #[error("repository {location} belongs to another cluster: its system identifier is {repository}, this cluster's is {cluster}")]
    SystemIdentifierMismatch {
        location: String,
        repository: u64,
        cluster: u64,
    },

    #[error(
        "repository {location} is {repository_mode}, but sc_backup.encryption is {configured_mode}"
    )]
    EncryptionMismatch {
        location: String,
        repository_mode: String,
        configured_mode: String,
    },

    #[error("wrong passphrase for the key of repository {location}")]
    WrongPassphrase { location: String },

    #[error("object \"{object}\" was encrypted with a different key than this repository's")]
    WrongKey { object: String },

    #[error("integrity check failed for object \"{object}\": {reason}")]
    Decode { object: String, reason: String },

    #[error("integrity check failed for object \"{object}\": checksum mismatch (expected SHA-256 {expected}, got {actual})")]
    ChecksumMismatch {
        object: String,
        expected: String,
        actual: String,
    },

    #[error(
        "\"{0}\" is not a WAL file name (expected a segment, .history, .backup or .partial file)"
    )]
    InvalidWalFileName(String),

    #[error("WAL file \"{0}\" is not in the repository")]
    WalNotFound(String),

    #[error("WAL file \"{wal_file}\" is already archived with different content (stored SHA-256 {stored}, this file {offered}); the archived copy is kept")]
    WalContentMismatch {
        wal_file: String,
        stored: String,
        offered: String,
    },

    #[error("WAL file \"{wal_file}\" is stored more than once in the repository ({objects})")]
    WalAmbiguous { wal_file: String, objects: String },

    #[error("could not {action} \"{path}\": {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("backup \"{0}\" is not in the repository")]
    BackupNotFound(String),

    #[error("interrupted")]
    Interrupted,

    #[error("could not restore \"{path}\": {source}")]
    RestoreFile { path: String, source: Box<Error> },

    #[error("{0}")]
    InvalidTarget(String),

    /// Where a restore, extract or dump would write already holds something (or cannot take
    /// it); nothing was written.
    #[error("{0}")]
    DestinationInUse(String),

    /// The sandbox could not be made, started or queried.
    #[error("{0}")]
    Sandbox(String),

    /// The directory chosen for sandboxes cannot hold one (not private, too small, too long
    /// a path); nothing was started.
    #[error("{0}")]
    SandboxPlace(String),

    /// The live cluster refused or failed a query of ours.
    #[error("{0}")]
    LiveCluster(String),

    /// A request that cannot be carried out as asked (a name, a pattern, an argument).
    #[error("{0}")]
    InvalidRequest(String),

    /// pg_dump, pg_dumpall or psql could not do their part of a dump.
    #[error("{0}")]
    DumpTool(String),

    /// Loading a dump stopped at an error; nothing was committed.
    #[error("{0}")]
    DumpLoad(String),

    /// PostgreSQL's low-level backup API (pg_backup_start, pg_backup_stop) failed or answered
    /// what it should not.
    #[error("{0}")]
    BackupStop(String),

    #[error("data directory {pgdata} holds a PostgreSQL {found} cluster, but backup \"{backup}\" is from PostgreSQL {backup_major}; nothing was written")]
    DataDirectoryOfAnotherVersion {
        pgdata: String,
        found: String,
        backup: String,
        backup_major: u32,
    },

    #[error("database \"{0}\" already exists; nothing was restored")]
    DatabaseExists(String),

    #[error("checksum mismatch, nothing was restored: {0}")]
    DumpChecksumMismatch(String),

    #[error("invalid repository metadata \"{object}\": {reason}")]
    InvalidMetadata { object: String, reason: String },

    #[error("repository object \"{object}\" is refused: {reason}")]
    NotAuthenticated {
        object: String,
        #[source]
        reason: crate::codec::authentication::AuthenticationError,
    },

    #[error(
        "backup \"{backup}\" cannot be read: it depends on backup \"{parent}\", which {reason}"
    )]
    BrokenChain {
        backup: String,
        parent: String,
        reason: String,
    },

    #[error("backup \"{backup}\" is the parent of {}: deleting it alone would make them unrestorable; nothing was deleted", dependents.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", "))]
    BackupHasDependents {
        backup: String,
        dependents: Vec<String>,
    },
}

impl Error {
    pub fn io(action: &'static str, path: impl std::fmt::Display, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_string(),
            source,
        }
    }

    /// Whether trying again later may succeed: the repository's store was unreachable or
    /// overloaded, or a connection to it broke. A damaged object, a wrong key, a missing
    /// repository or a refusal stay as they are.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Storage(e) => e.is_transient(),
            Error::RestoreFile { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// What the operator can do about it, when there is something useful to say, in the
    /// words of `front_end`.
    pub fn hint(&self, front_end: FrontEnd) -> Option<String> {
        match self {
            Error::Config(e) => e.hint(),
            Error::Storage(e) => e.hint(),
            Error::ServerBinaries(e) => Some(server_binaries_hint(e, front_end)),
            Error::NotARepository { .. } => Some(
                "Check sc_backup.repository; a new repository is created by the first archived WAL file or backup."
                    .into(),
            ),
            Error::SystemIdentifierMismatch { .. } => Some(
                "Each cluster needs its own repository: point sc_backup.repository at an empty location.".into(),
            ),
            Error::EncryptionMismatch { .. } => Some(
                "The encryption mode is fixed when a repository is created; set sc_backup.encryption to match it, or use a new repository."
                    .into(),
            ),
            Error::WrongPassphrase { .. } => {
                Some("Set sc_backup.encryption_passphrase to the passphrase the repository was created with.".into())
            }
            Error::RestoreFile { source, .. } => source.hint(front_end),
            Error::SandboxPlace(_) => Some(match front_end {
                FrontEnd::Cli => "Choose another place with --sandbox-dir DIR.".into(),
                FrontEnd::Sql => "Set sc_backup.verify_directory to another directory: private to the server's user, with room for the backup, and a short path.".into(),
            }),
            Error::DataDirectoryOfAnotherVersion { .. } => Some(
                "Restore into another directory; if this cluster really is to be replaced, remove its data directory first. A physical backup cannot change major version: use pg_upgrade after restoring, or a logical dump."
                    .into(),
            ),
            Error::DatabaseExists(_) => Some(
                "Restore into a new database (--database another_name), or replace this one with --force: it is replaced only once the restored copy is complete, and its connections are ended then."
                    .into(),
            ),
            Error::DumpChecksumMismatch(_) => Some(
                "The stored dump is corrupt or was changed; restore an older dump, or pass --skip-verify to load it anyway (psql still stops at the first error, and nothing is committed unless all of it loads)."
                    .into(),
            ),
            Error::BrokenChain { .. } => Some(
                "An incremental or differential backup needs every backup it was taken against: restore an older backup whose chain is complete, or the chain's full backup itself."
                    .into(),
            ),
            Error::BackupHasDependents { .. } => Some(format!(
                "Delete them with it ({}), or let expiry remove whole chains once they are past retention.",
                match front_end {
                    FrontEnd::Cli => "sc-backup delete NAME --with-dependents",
                    FrontEnd::Sql => "sc_delete_backup(name, with_dependents => true)",
                }
            )),
            Error::WrongKey { .. } => Some("The object does not belong to this repository.".into()),
            Error::NotAuthenticated { .. } => Some(
                "Someone who can write to the repository, but does not know its passphrase, made or changed it: do not use it. Restore another backup, and find out who can write there."
                    .into(),
            ),
            Error::Decode { .. } | Error::ChecksumMismatch { .. } => Some(
                "The stored object is corrupt or truncated; restore it from another copy of the repository, or use an older backup."
                    .into(),
            ),
            Error::WalContentMismatch { .. } => Some(
                "Two clusters may be archiving into one repository, or the repository holds WAL of an earlier incarnation of this cluster. Investigate before removing anything."
                    .into(),
            ),
            _ => None,
        }
    }
}

/// What to do when the server binaries a restore needs are missing, in each front end's words.
fn server_binaries_hint(error: &ServerBinariesError, front_end: FrontEnd) -> String {
    let Some(wanted) = error.wanted_major() else {
        return match front_end {
            FrontEnd::Cli => "Pass the bin directory of a PostgreSQL installation (the one holding postgres and pg_ctl) with --pg-bindir DIR (SC_BACKUP_PG_BINDIR).".into(),
            FrontEnd::Sql => "The server's own bin directory must hold postgres, pg_ctl and initdb: reinstall its server package.".into(),
        };
    };
    let install = format!("Install PostgreSQL {wanted}'s server (Debian/Ubuntu: postgresql-{wanted}; RHEL: postgresql{wanted}-server)");
    match front_end {
        FrontEnd::Cli => format!(
            "A physical backup starts only with the server of its own major version. {install} or pass --pg-bindir DIR (SC_BACKUP_PG_BINDIR). To move to another major version, restore with PostgreSQL {wanted} and then run pg_upgrade, or use a logical dump."
        ),
        FrontEnd::Sql => format!(
            "A physical backup starts only with the server of its own major version, and inside the server only its own is used: test a backup of another major with sc-backup verify --restore and --pg-bindir. {install} to test it here."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each front end's hint names what can be done there, and nothing of the other's.
    #[test]
    fn hints_are_worded_for_the_front_end_that_shows_them() {
        let cases = [
            (
                Error::SandboxPlace("no room".into()),
                "--sandbox-dir",
                "sc_backup.verify_directory",
            ),
            (
                Error::BackupHasDependents {
                    backup: "f".into(),
                    dependents: vec!["i".into()],
                },
                "sc-backup delete",
                "sc_delete_backup(",
            ),
            (
                Error::ServerBinaries(ServerBinariesError::NotFound {
                    major: 17,
                    looked: Vec::new(),
                    others: Vec::new(),
                }),
                "--pg-bindir",
                "sc-backup verify --restore",
            ),
        ];
        for (error, cli_words, sql_words) in cases {
            let cli = error.hint(FrontEnd::Cli).unwrap();
            let sql = error.hint(FrontEnd::Sql).unwrap();
            assert!(cli.contains(cli_words) && !cli.contains(sql_words), "{cli}");
            assert!(
                sql.contains(sql_words) && !sql.contains("--sandbox-dir"),
                "{sql}"
            );
        }
    }
}
