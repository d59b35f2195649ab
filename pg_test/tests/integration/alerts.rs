//! docs/alerts.yml: valid Prometheus rules (`promtool check rules`), behaving as documented
//! (`promtool test rules docs/alerts_test.yml`), over metrics the worker really exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use sc_backup_core::ops::metrics::{BackupFigures, RecoveryFigures, Status, WalFigures};
use sc_backup_core::pg::archive_status::ArchiveBacklog;

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(docs())
        .output()
        .expect("promtool (apt-get install prometheus; scripts/install-deps.sh does)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(checked.contains("SUCCESS: 10 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let everything = Status {
        backups: vec![BackupFigures {
            kind: "physical".into(),
            backup_type: "hourly".into(),
            database: None,
            last_success_timestamp: Some(1.0),
            last_duration_seconds: Some(1.0),
            last_size_bytes: Some(1.0),
            failures_total: 1,
        }],
        wal: WalFigures {
            archived_total: 1,
            last_archived_segment: Some("000000010000000000000001".into()),
            last_archived_timestamp: Some(1.0),
            archive_failures_total: 1,
            last_failure_timestamp: Some(1.0),
            backlog: ArchiveBacklog {
                ready_segments: 1,
                oldest_ready_age_seconds: 1.0,
            },
        },
        recovery: RecoveryFigures {
            last_verified_timestamp: Some(1.0),
            verify_scheduled: true,
            last_drill_timestamp: Some(1.0),
            drill_rto_seconds: Some(1.0),
            drill_rpo_seconds: Some(1.0),
        },
        scheduler_running: true,
        backup_interval_seconds: Some(3600.0),
        health: Vec::new(),
        repositories: vec![sc_backup_core::ops::catch_up::RepositoryLag {
            backlog: Some(1),
            caught_up_at: chrono::DateTime::from_timestamp(1, 0),
            backups_behind: Some(1),
            newest_backup_at: chrono::DateTime::from_timestamp(1, 0),
            ..sc_backup_core::ops::catch_up::RepositoryLag::new(
                sc_backup_core::config::repositories::RepositoryNumber::new(2).unwrap(),
                "s3://offsite/pg".into(),
            )
        }],
    };
    let exported: BTreeSet<String> = everything
        .render()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let rules = std::fs::read_to_string(docs().join("alerts.yml")).unwrap();
    let document: serde_yaml::Value = serde_yaml::from_str(&rules).unwrap();
    let mut used = BTreeSet::new();
    for rule in document["groups"][0]["rules"].as_sequence().unwrap() {
        let expr = rule["expr"].as_str().unwrap();
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("sc_backup_") {
                used.insert(word.to_string());
            }
        }
        assert!(rule["labels"]["severity"].as_str().is_some(), "{rule:?}");
        assert!(
            rule["annotations"]["summary"].as_str().is_some(),
            "{rule:?}"
        );
    }
    assert!(used.len() >= 5, "{used:?}");
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "alerts.yml uses metrics nobody exports: {unknown:?}"
    );
}
