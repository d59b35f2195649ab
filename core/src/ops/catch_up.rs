//! Keeping repositories 2 to 4 up to date with repository 1's WAL. PostgreSQL waits for
//! repository 1 only (a file is reported archived once durable there); every further repository
//! is then caught up from repository 1 by [`copy_wal`], in order and verified, so an outage of
//! an offsite store never holds back `pg_wal`: the queue is simply what repository 1 holds and
//! the other lacks, and its length is each repository's backlog.

use chrono::{DateTime, Utc};

use crate::config::repositories::RepositoryNumber;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::repository::{ClusterIdentity, Repository};
use crate::wal::copy::{copy_wal_via_scratch, wal_backlog};

/// How one further repository stands after a pass.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryLag {
    pub number: RepositoryNumber,
    pub location: String,
    /// WAL files of repository 1 this one still lacks (0 after a complete pass); `None` when it
    /// could not be listed.
    pub backlog: Option<u64>,
    /// Files copied in this pass.
    pub copied: u64,
    /// When a pass last left it holding all of repository 1's WAL.
    pub caught_up_at: Option<DateTime<Utc>>,
    /// Why this pass did not complete.
    pub error: Option<String>,
}

/// The cluster identity repository 1 records: a new further repository is created for it.
fn identity_of(repository: &Repository) -> Result<ClusterIdentity> {
    let info = repository.info();
    Ok(ClusterIdentity {
        system_identifier: info
            .system_identifier
            .parse()
            .map_err(|_| Error::InvalidMetadata {
                object: crate::repository::INFO_KEY.into(),
                reason: format!("bad system_identifier {:?}", info.system_identifier),
            })?,
        pg_version_num: info.pg_version_num,
    })
}

/// Repository `settings` opened for writing by the cluster `first` belongs to: created, with
/// its own key, when the location is new; refused when it is another cluster's.
pub fn open_further(first: &Repository, settings: &Settings) -> Result<Repository> {
    let settings = settings.clone().for_writing()?;
    Repository::open_for_cluster(&settings, &identity_of(first)?)
}

/// One pass: copies into each further repository the WAL it lacks (see
/// [`copy_wal_via_scratch`]). A failing repository stops only its own copy; `previous` carries
/// each one's last catch-up time forward.
pub fn catch_up_pass(
    first: &Repository,
    further: &[(RepositoryNumber, Settings)],
    previous: &[RepositoryLag],
    interrupted: &dyn Fn() -> bool,
) -> Vec<RepositoryLag> {
    further
        .iter()
        .map(|(number, settings)| {
            let location = settings.repository.to_string();
            let mut lag = RepositoryLag {
                number: *number,
                backlog: None,
                copied: 0,
                caught_up_at: previous
                    .iter()
                    .find(|p| p.number == *number && p.location == location)
                    .and_then(|p| p.caught_up_at),
                error: None,
                location,
            };
            let outcome = open_further(first, settings).and_then(|target| {
                copy_wal_via_scratch(first, &target, interrupted).inspect_err(|_| {
                    // How far behind it is, if it can still be listed.
                    lag.backlog = wal_backlog(first, &target).ok();
                })
            });
            match outcome {
                Ok(report) => {
                    lag.copied = report.copied;
                    lag.backlog = Some(0);
                    lag.caught_up_at = Some(Utc::now());
                }
                Err(error) => lag.error = Some(error.to_string()),
            }
            lag
        })
        .collect()
}
