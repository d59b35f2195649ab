//! How the CLI fails: the error of every command, and the exit status and one line each
//! becomes: 0 success, 1 not found, 2 an error, 130 interrupted (wal-fetch answers
//! PostgreSQL with its own statuses, commands/wal_fetch.rs).

use std::process::ExitCode;

use crate::pgconf;
use sc_backup_core::error::FrontEnd;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Core(#[from] sc_backup_core::Error),
    #[error(transparent)]
    Config(#[from] sc_backup_core::config::ConfigError),
    #[error(transparent)]
    ConfFile(#[from] pgconf::ConfFileError),
    #[error("{0}")]
    Message(String),
    /// A core error, and what it leaves behind (a data directory that cannot be started): the
    /// core's hint, transience and exit status stay.
    #[error("{source}; {consequence}")]
    CoreThen {
        source: Box<sc_backup_core::Error>,
        consequence: String,
    },
    /// Not an error for the operator: the requested object does not exist.
    #[error("not found")]
    QuietNotFound,
}

impl CliError {
    pub fn hint(&self) -> Option<String> {
        match self {
            CliError::Core(e) => e.hint(FrontEnd::Cli),
            CliError::CoreThen { source, .. } => source.hint(FrontEnd::Cli),
            CliError::Config(e) => e.hint(),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (the repository's store was unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            CliError::Core(e) => e.is_transient(),
            CliError::CoreThen { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

pub fn report(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::QuietNotFound) => ExitCode::from(1),
        Err(CliError::Core(sc_backup_core::Error::Interrupted)) => {
            eprintln!("sc-backup: interrupted; nothing was left behind");
            ExitCode::from(130)
        }
        Err(CliError::CoreThen {
            source,
            consequence,
        }) if matches!(*source, sc_backup_core::Error::Interrupted) => {
            eprintln!("sc-backup: interrupted; {consequence}");
            ExitCode::from(130)
        }
        Err(error) => {
            // One line, for logs: the message, then what to do about it.
            match error.hint() {
                Some(hint) => eprintln!("sc-backup: error: {error}. Hint: {hint}"),
                None => eprintln!("sc-backup: error: {error}"),
            }
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_error_with_its_consequence_keeps_hint_transience_and_exit_status() {
        let damaged = CliError::CoreThen {
            source: Box::new(damaged_core()),
            consequence: "the data directory /d is incomplete".into(),
        };
        assert_eq!(damaged.hint(), damaged_core().hint(FrontEnd::Cli));
        assert!(damaged.hint().is_some());
        assert!(damaged
            .to_string()
            .ends_with("; the data directory /d is incomplete"));
        assert_eq!(report(Err(damaged)), ExitCode::from(2));
        let interrupted = CliError::CoreThen {
            source: Box::new(sc_backup_core::Error::Interrupted),
            consequence: "the data directory /d is incomplete".into(),
        };
        assert_eq!(report(Err(interrupted)), ExitCode::from(130));
    }

    fn damaged_core() -> sc_backup_core::Error {
        sc_backup_core::Error::Decode {
            object: "backups/b/data/1.zst".into(),
            reason: "truncated".into(),
        }
    }
}
