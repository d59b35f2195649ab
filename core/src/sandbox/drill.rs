//! The DR drill (the playbook's quarterly drill): the newest backup restored into a sandbox,
//! every archived WAL file replayed, the cluster promoted, and the recovery time and recovery
//! point measured against the objectives (1 hour and 15 minutes by default).
//!
//! RTO is what a real recovery on this host would take: from the start of the command to a
//! promoted cluster that accepts a write, split into restore, replay and promotion (the
//! sandbox keeps full durability for a drill). RPO is what a loss right now would cost: the
//! age of the newest transaction the replay applied (`pg_last_xact_replay_timestamp()`, which
//! stays at that value after promotion), and, from the archive itself, the age of its newest
//! archived transaction; the larger of the two is judged.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::sandbox::Sandbox;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objectives {
    pub rto: Duration,
    pub rpo: Duration,
}

impl Default for Objectives {
    fn default() -> Self {
        Objectives {
            rto: Duration::from_secs(3600),
            rpo: Duration::from_secs(900),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DrillReport {
    pub backup: String,
    pub started_at: String,
    pub restore_seconds: f64,
    pub replay_seconds: f64,
    pub promote_seconds: f64,
    /// Start of the command to a promoted, writable cluster.
    pub rto_seconds: f64,
    pub rto_objective_seconds: f64,
    /// The newest transaction the replay applied, and its age at the start of the drill.
    pub newest_replayed: Option<String>,
    pub replayed_age_seconds: Option<f64>,
    /// The newest transaction in the archive, and its age at the start of the drill.
    pub newest_archived: Option<String>,
    pub archived_age_seconds: Option<f64>,
    /// The larger of the two ages: what the drill judges.
    pub rpo_seconds: Option<f64>,
    pub rpo_objective_seconds: f64,
    pub rto_met: bool,
    pub rpo_met: bool,
}

impl DrillReport {
    pub fn met(&self) -> bool {
        self.rto_met && self.rpo_met
    }
}

/// Measures a promoted sandbox. `started_at` is when the drill began; `elapsed` the time
/// since then; `newest_archived` what the archive's newest transaction is.
pub fn measure(
    sandbox: &Sandbox,
    backup: &str,
    started_at: DateTime<Utc>,
    newest_archived: Option<DateTime<Utc>>,
    objectives: Objectives,
    elapsed: impl Fn() -> Duration,
) -> Result<DrillReport> {
    // Queryable and writable: what "recovered" means for an application.
    sandbox.psql(
        "postgres",
        "CREATE TEMPORARY TABLE sc_backup_drill_probe (x int); INSERT INTO sc_backup_drill_probe VALUES (1)",
    )?;
    let rto = elapsed();
    let replayed = sandbox.psql(
        "postgres",
        "SELECT to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )?;
    let newest_replayed = DateTime::parse_from_rfc3339(replayed.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc));
    let age = |at: Option<DateTime<Utc>>| {
        at.map(|at| ((started_at - at).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0))
    };
    let replayed_age = age(newest_replayed);
    let archived_age = age(newest_archived);
    let rpo = match (replayed_age, archived_age) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let timings = sandbox.timings;
    let text =
        |at: Option<DateTime<Utc>>| at.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
    Ok(DrillReport {
        backup: backup.to_string(),
        started_at: started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        restore_seconds: timings.restore.as_secs_f64(),
        replay_seconds: timings.replay.as_secs_f64(),
        promote_seconds: timings.promote.as_secs_f64(),
        rto_seconds: rto.as_secs_f64(),
        rto_objective_seconds: objectives.rto.as_secs_f64(),
        newest_replayed: text(newest_replayed),
        replayed_age_seconds: replayed_age,
        newest_archived: text(newest_archived),
        archived_age_seconds: archived_age,
        rpo_seconds: rpo,
        rpo_objective_seconds: objectives.rpo.as_secs_f64(),
        rto_met: rto <= objectives.rto,
        // No transaction at all to measure from: nothing recovered can be judged recent.
        rpo_met: rpo.is_some_and(|rpo| rpo <= objectives.rpo.as_secs_f64()),
    })
}
