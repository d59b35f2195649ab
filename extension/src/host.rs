//! What this backend knows of the cluster it runs in: sc_backup's settings (raised as an
//! ERROR when unusable), the cluster's identity (the archive module's, so that both name the
//! repository alike), its data directory, and the repository those settings open.

use std::ffi::CStr;
use std::path::PathBuf;

use pgrx::prelude::*;
use sc_backup_core::repository::ClusterIdentity;
use sc_backup_core::{Error, Repository};

use crate::guc;
use crate::raise::raise;

pub fn settings() -> sc_backup_core::Settings {
    guc::settings()
        .unwrap_or_else(|e| raise(&Error::Config(e), PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR))
}

/// The identity the archive module stores WAL under: this cluster's system identifier and
/// major.
pub fn cluster_identity() -> ClusterIdentity {
    sc_backup_archive_module::cluster_identity()
}

pub fn data_directory() -> PathBuf {
    // Safety: DataDir is set for the postmaster's lifetime.
    PathBuf::from(
        unsafe { CStr::from_ptr(pg_sys::DataDir) }
            .to_string_lossy()
            .into_owned(),
    )
}

pub fn open_repository() -> Repository {
    Repository::open(&settings())
        .unwrap_or_else(|e| raise(&e, PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION))
}

/// The backup schedules in force, from the settings.
pub fn scheduler(
) -> Result<sc_backup_core::ops::schedule::Scheduler, sc_backup_core::config::ConfigError> {
    crate::guc::schedule_settings()
        .map(|settings| sc_backup_core::ops::schedule::Scheduler::new(&settings))
}
