//! `sc-backup drill`: the DR drill (`sc_backup_core::sandbox::drill`): the newest backup restored into
//! a sandbox, all archived WAL replayed, promoted; RTO and RPO measured, reported, recorded,
//! and judged against the objectives (non-zero exit when one is missed).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use sc_backup_core::backup::find_backup;
use sc_backup_core::restore::RecoveryTarget;
use sc_backup_core::sandbox::drill::{measure, DrillReport, Objectives};
use sc_backup_core::{Repository, Settings};

use super::sandbox::{self, SandboxArgs};
use super::{audit_start, audited};
use crate::error::CliError;

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Backup to start from (default: the newest)
    #[arg(long, default_value = "latest")]
    pub backup: String,

    /// Recovery time objective, e.g. 1h, 30min, 90s
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub rto_target: Duration,

    /// Recovery point objective, e.g. 15min
    #[arg(long, default_value = "15min", value_parser = parse_duration)]
    pub rpo_target: Duration,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// "90s", "15min", "1h" or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration (like 90s, 15min, 1h)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "min" | "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit \"{other}\" (use s, min or h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

pub fn run(
    settings: &Settings,
    args: &DrillArgs,
    cancel: &Arc<AtomicBool>,
) -> Result<(), CliError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let repository = Repository::open(settings)?;
    let mut timer = audit_start("drill");
    timer.details().target = Some("end of archived WAL, in a sandbox".into());
    let result = (|| {
        let metadata = find_backup(&repository, &args.backup)?;
        timer.details().backup = Some(metadata.playbook.backup_name.clone());
        timer.details().backup_type = Some(metadata.playbook.backup_type.clone());
        let mut sandbox = sandbox::open(
            settings,
            &repository,
            &metadata,
            RecoveryTarget::EndOfWal,
            &args.sandbox,
            cancel,
            false,
        )?;
        let archived = repository
            .archive_end(None)?
            .and_then(|end| end.newest_transaction)
            .map(|(time, _)| time);
        let report = measure(
            &sandbox,
            &metadata.playbook.backup_name,
            started_at,
            archived,
            Objectives {
                rto: args.rto_target,
                rpo: args.rpo_target,
            },
            || started.elapsed(),
        )?;
        sandbox::keep_if_asked(&mut sandbox, &args.sandbox, "postgres");
        drop(sandbox);
        let figures = &mut timer.details().figures;
        figures.insert("rto_seconds".into(), report.rto_seconds);
        figures.insert("restore_seconds".into(), report.restore_seconds);
        figures.insert("replay_seconds".into(), report.replay_seconds);
        figures.insert("promote_seconds".into(), report.promote_seconds);
        if let Some(rpo) = report.rpo_seconds {
            figures.insert("rpo_seconds".into(), rpo);
        }
        figures.insert("rto_objective_seconds".into(), report.rto_objective_seconds);
        figures.insert("rpo_objective_seconds".into(), report.rpo_objective_seconds);
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("report serializes")
            );
        } else {
            print_report(&report);
        }
        if report.met() {
            Ok(())
        } else {
            Err(CliError::Message(missed(&report)))
        }
    })();
    audited(&repository, &timer, result)
}

fn missed(report: &DrillReport) -> String {
    let mut missed = Vec::new();
    if !report.rto_met {
        missed.push(format!(
            "RTO {:.1}s is over the objective of {:.0}s",
            report.rto_seconds, report.rto_objective_seconds
        ));
    }
    if !report.rpo_met {
        missed.push(match report.rpo_seconds {
            Some(rpo) => format!(
                "RPO {rpo:.1}s is over the objective of {:.0}s",
                report.rpo_objective_seconds
            ),
            None => "no transaction was replayed or archived to measure the recovery point from"
                .to_string(),
        });
    }
    format!(
        "drill of backup {} missed its objectives: {}",
        report.backup,
        missed.join("; ")
    )
}

fn print_report(report: &DrillReport) {
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "DR drill from backup {} (started {}):",
        report.backup, report.started_at
    );
    println!(
        "  RTO {:.1}s (objective {:.0}s): {}",
        report.rto_seconds,
        report.rto_objective_seconds,
        verdict(report.rto_met)
    );
    println!(
        "    restore {:.1}s, WAL replay {:.1}s, promotion {:.1}s, the rest starting and checking",
        report.restore_seconds, report.replay_seconds, report.promote_seconds
    );
    match report.rpo_seconds {
        Some(rpo) => println!(
            "  RPO {rpo:.1}s (objective {:.0}s): {}",
            report.rpo_objective_seconds,
            verdict(report.rpo_met)
        ),
        None => println!("  RPO unknown: no transaction replayed or archived: MISSED"),
    }
    if let (Some(at), Some(age)) = (&report.newest_replayed, report.replayed_age_seconds) {
        println!("    newest replayed transaction {at} ({age:.1}s before the drill)");
    }
    if let (Some(at), Some(age)) = (&report.newest_archived, report.archived_age_seconds) {
        println!("    newest archived transaction {at} ({age:.1}s before the drill)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_units_people_write() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15min").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
