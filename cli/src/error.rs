//! How the CLI fails: the error of every command, and the exit status and one line each
//! becomes: 0 success, 1 not found, 2 an error, 130 interrupted (wal-fetch answers
//! PostgreSQL with its own statuses, commands/wal_fetch.rs).

use std::process::ExitCode;

use crate::pgconf;

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
    /// Not an error for the operator: the requested object does not exist.
    #[error("not found")]
    QuietNotFound,
}

impl CliError {
    pub fn hint(&self) -> Option<String> {
        match self {
            CliError::Core(e) => e.hint(),
            CliError::Config(e) => e.hint(),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (the repository's store was unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            CliError::Core(e) => e.is_transient(),
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
