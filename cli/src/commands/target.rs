//! The recovery target flags, the same for `restore`, `extract` and PostgreSQL's five kinds.

use clap::{ArgGroup, Args, ValueEnum};
use sc_backup_core::pg::lsn::Lsn;
use sc_backup_core::restore::RecoveryTarget;

use crate::error::CliError;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Target {
    /// Stop as soon as the backup is consistent
    Immediate,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("recovery_target").multiple(false)
    .args(["target_time", "target_lsn", "target_xid", "target_name", "target"])))]
pub struct TargetArgs {
    /// Recover to this time (ISO 8601 with a time zone, e.g. "2026-11-24 10:41:00+00")
    #[arg(long)]
    pub target_time: Option<String>,

    /// Recover to this WAL location (e.g. 0/3000060)
    #[arg(long)]
    pub target_lsn: Option<String>,

    /// Recover to (and including) this transaction ID
    #[arg(long)]
    pub target_xid: Option<String>,

    /// Recover to this restore point (pg_create_restore_point)
    #[arg(long)]
    pub target_name: Option<String>,

    /// Recover only to consistency
    #[arg(long, value_enum)]
    pub target: Option<Target>,
}

impl TargetArgs {
    /// For `restore`: with no target flag, SC_BACKUP_TARGET_TIME (or, in the
    /// sc_backup image, the playbook's TARGET_TIME) is the target time.
    pub fn target_or_env(&self) -> Result<RecoveryTarget, CliError> {
        match self.target()? {
            RecoveryTarget::EndOfWal => Ok(std::env::var("SC_BACKUP_TARGET_TIME")
                .ok()
                .filter(|time| !time.trim().is_empty())
                .map(RecoveryTarget::Time)
                .unwrap_or(RecoveryTarget::EndOfWal)),
            target => Ok(target),
        }
    }

    /// The target; none of the flags: the end of the archived WAL.
    pub fn target(&self) -> Result<RecoveryTarget, CliError> {
        Ok(if let Some(time) = &self.target_time {
            RecoveryTarget::Time(time.clone())
        } else if let Some(lsn) = &self.target_lsn {
            RecoveryTarget::Lsn(lsn.parse::<Lsn>().map_err(CliError::Message)?)
        } else if let Some(xid) = &self.target_xid {
            if xid.parse::<u64>().is_err() {
                return Err(CliError::Message(format!(
                    "--target-xid \"{xid}\" is not a transaction ID"
                )));
            }
            RecoveryTarget::Xid(xid.clone())
        } else if let Some(name) = &self.target_name {
            RecoveryTarget::Name(name.clone())
        } else if self.target.is_some() {
            RecoveryTarget::Immediate
        } else {
            RecoveryTarget::EndOfWal
        })
    }
}
