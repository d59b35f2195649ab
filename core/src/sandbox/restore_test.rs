//! The restore test (the playbook's monthly one; `sc-backup verify --restore`, the scheduler's
//! `sc_backup.verify_schedule`, the extension's restore_test.rs): the backup restored into a
//! sandbox to its consistency point, started, and every database checked.
//!
//! In each database: `amcheck`'s `bt_index_check` on every valid B-tree index and
//! `verify_heapam` on every table, materialized view and TOAST table (system catalogs
//! included), and every user table read in full (`count(*)`), its rows reported. Each check
//! traps its own error, so one damaged relation is named and the others still checked. A page
//! whose checksum fails (data checksums on) is caught by both. The databases and tables found
//! are compared with the catalog snapshot `sc_backup()` took while the backup ran: a table in
//! both of its snapshots (after `pg_backup_start` and before `pg_backup_stop`) but not in the
//! restored cluster is a failure; one in only one snapshot was created or dropped during the
//! backup and is reported, not failed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backup::{CatalogSnapshot, DatabaseTables};
use crate::error::Result;
use crate::sandbox::Sandbox;

/// One database's findings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DatabaseReport {
    pub database: String,
    pub tables: u64,
    pub rows: u64,
    pub indexes_checked: u64,
    pub relations_checked: u64,
    /// (schema.table, rows) of every user table.
    pub table_rows: Vec<(String, u64)>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RestoreTestReport {
    pub backup: String,
    pub databases: Vec<DatabaseReport>,
    /// Failures found by comparing with the backup's catalog snapshot.
    pub missing: Vec<String>,
    /// Created or dropped during the backup window: reported, not failures.
    pub changed_during_backup: Vec<String>,
    /// Whether the backup carried a catalog snapshot to compare with.
    pub compared_with_snapshot: bool,
    pub seconds_checking: f64,
}

impl RestoreTestReport {
    /// The figures the audit trail records for a restore test: tables, rows, problems.
    pub fn audit_figures(&self) -> Vec<(String, f64)> {
        vec![
            (
                "tables".into(),
                self.databases.iter().map(|d| d.tables as f64).sum(),
            ),
            (
                "rows".into(),
                self.databases.iter().map(|d| d.rows as f64).sum(),
            ),
            ("problems".into(), self.problem_count() as f64),
        ]
    }

    pub fn problem_count(&self) -> usize {
        self.missing.len()
            + self
                .databases
                .iter()
                .map(|d| d.problems.len())
                .sum::<usize>()
    }

    pub fn ok(&self) -> bool {
        self.problem_count() == 0
    }
}

/// The checks of one database, as one psql command: each relation's check returns NULL or
/// the error it raised, and tables their row count.
const CHECK_SQL: &str = r#"
CREATE EXTENSION IF NOT EXISTS amcheck;
CREATE FUNCTION pg_temp.sc_check(kind text, rel regclass) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE problem text;
BEGIN
    IF kind = 'index' THEN
        PERFORM bt_index_check(rel);
    ELSE
        SELECT string_agg(format('block %s, offset %s: %s', blkno, offnum, msg), '; ')
          INTO problem
          FROM (SELECT * FROM verify_heapam(rel, on_error_stop => false) LIMIT 5) found;
    END IF;
    RETURN problem;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLERRM;
END $f$;
CREATE FUNCTION pg_temp.sc_count(rel regclass) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s', rel) INTO n;
    RETURN n::text;
EXCEPTION WHEN OTHERS THEN
    RETURN 'error: ' || SQLERRM;
END $f$;
SELECT 'index', n.nspname || '.' || c.relname, coalesce(pg_temp.sc_check('index', c.oid), '')
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_am a ON a.oid = c.relam
 WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't'
UNION ALL
SELECT 'heap', n.nspname || '.' || c.relname, coalesce(pg_temp.sc_check('heap', c.oid), '')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't'
UNION ALL
SELECT 'rows', n.nspname || '.' || c.relname, pg_temp.sc_count(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%';
"#;

/// The user tables of one database, as the catalog snapshot lists them.
pub const TABLES_SQL: &str = "SELECT n.nspname || '.' || c.relname FROM pg_class c \
    JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r', 'p', 'm') AND c.relpersistence <> 't' \
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
      AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
    ORDER BY 1";

/// Checks every database of a started sandbox; see the module documentation.
pub fn check_restored(
    sandbox: &Sandbox,
    backup: &str,
    snapshot: Option<&CatalogSnapshot>,
) -> Result<RestoreTestReport> {
    let started = Instant::now();
    let databases: Vec<String> = sandbox
        .psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
        )?
        .lines()
        .map(str::to_string)
        .collect();
    let mut report = RestoreTestReport {
        backup: backup.to_string(),
        compared_with_snapshot: snapshot.is_some(),
        ..Default::default()
    };
    let mut found = Vec::new();
    for database in &databases {
        let mut findings = DatabaseReport {
            database: database.clone(),
            ..Default::default()
        };
        match sandbox.psql(database, CHECK_SQL) {
            Ok(output) => read_findings(&output, &mut findings),
            Err(error) => findings.problems.push(error.to_string()),
        }
        let tables = sandbox
            .psql(database, TABLES_SQL)
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default();
        found.push(DatabaseTables {
            database: database.clone(),
            tables,
        });
        report.databases.push(findings);
    }
    if let Some(snapshot) = snapshot {
        compare(snapshot, &found, &mut report);
    }
    report.seconds_checking = started.elapsed().as_secs_f64();
    Ok(report)
}

fn read_findings(output: &str, findings: &mut DatabaseReport) {
    for line in output.lines() {
        let mut fields = line.split('\u{1f}');
        let (Some(kind), Some(name), Some(result)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        match kind {
            "index" => {
                findings.indexes_checked += 1;
                if !result.is_empty() {
                    findings.problems.push(format!("index {name}: {result}"));
                }
            }
            "heap" => {
                findings.relations_checked += 1;
                if !result.is_empty() {
                    findings.problems.push(format!("table {name}: {result}"));
                }
            }
            "rows" => match result.parse::<u64>() {
                Ok(rows) => {
                    findings.tables += 1;
                    findings.rows += rows;
                    findings.table_rows.push((name.to_string(), rows));
                }
                Err(_) => findings.problems.push(format!(
                    "table {name}: reading it failed: {}",
                    result.trim_start_matches("error: ")
                )),
            },
            _ => {}
        }
    }
}

/// Classifies the differences between the backup's snapshots and what was restored.
fn compare(snapshot: &CatalogSnapshot, found: &[DatabaseTables], report: &mut RestoreTestReport) {
    let as_map = |list: &[DatabaseTables]| -> BTreeMap<String, BTreeSet<String>> {
        list.iter()
            .map(|d| (d.database.clone(), d.tables.iter().cloned().collect()))
            .collect()
    };
    let (start, stop, restored) = (
        as_map(&snapshot.at_start),
        as_map(&snapshot.before_stop),
        as_map(found),
    );
    let empty = BTreeSet::new();
    let databases: BTreeSet<&String> = start.keys().chain(stop.keys()).collect();
    for database in databases {
        let (in_start, in_stop) = (start.get(database), stop.get(database));
        let Some(restored_tables) = restored.get(database) else {
            if in_start.is_some() && in_stop.is_some() {
                report.missing.push(format!(
                    "database {database} is in the backup's catalog but was not restored"
                ));
            } else {
                report
                    .changed_during_backup
                    .push(format!("database {database}"));
            }
            continue;
        };
        let (in_start, in_stop) = (in_start.unwrap_or(&empty), in_stop.unwrap_or(&empty));
        for table in in_start.union(in_stop) {
            let in_both = in_start.contains(table) && in_stop.contains(table);
            if in_both && !restored_tables.contains(table) {
                report.missing.push(format!(
                    "table {database}.{table} is in the backup's catalog but not in the restored cluster"
                ));
            } else if !in_both {
                report
                    .changed_during_backup
                    .push(format!("table {database}.{table}"));
            }
        }
        for table in restored_tables {
            if !in_start.contains(table) && !in_stop.contains(table) {
                report
                    .changed_during_backup
                    .push(format!("table {database}.{table}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(database: &str, names: &[&str]) -> DatabaseTables {
        DatabaseTables {
            database: database.into(),
            tables: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn findings_are_read_from_psql_output() {
        let output = "index\u{1f}public.t_pkey\u{1f}\n\
                      index\u{1f}public.u_idx\u{1f}item order invariant violated\n\
                      heap\u{1f}public.t\u{1f}\n\
                      heap\u{1f}public.u\u{1f}invalid page in block 3 of relation base/5/16390\n\
                      rows\u{1f}public.t\u{1f}1000\n\
                      rows\u{1f}public.u\u{1f}error: invalid page in block 3\n";
        let mut findings = DatabaseReport::default();
        read_findings(output, &mut findings);
        assert_eq!(findings.indexes_checked, 2);
        assert_eq!(findings.relations_checked, 2);
        assert_eq!((findings.tables, findings.rows), (1, 1000));
        assert_eq!(findings.problems.len(), 3);
        assert!(findings.problems[0].starts_with("index public.u_idx: item order"));
        assert!(findings.problems[2].contains("reading it failed: invalid page"));
    }

    #[test]
    fn tables_changed_during_the_backup_are_reported_and_lost_ones_fail() {
        let snapshot = CatalogSnapshot {
            at_start: vec![tables(
                "app",
                &["public.kept", "public.dropped_during", "public.lost"],
            )],
            before_stop: vec![
                tables(
                    "app",
                    &["public.kept", "public.created_during", "public.lost"],
                ),
                tables("gone", &["public.x"]),
            ],
        };
        let restored = vec![tables(
            "app",
            &[
                "public.kept",
                "public.created_during",
                "public.created_after_snapshot",
            ],
        )];
        let mut report = RestoreTestReport::default();
        compare(&snapshot, &restored, &mut report);
        assert_eq!(
            report.missing,
            vec![
                "table app.public.lost is in the backup's catalog but not in the restored cluster"
            ]
        );
        assert_eq!(
            report.changed_during_backup,
            vec![
                "table app.public.created_during",
                "table app.public.dropped_during",
                "table app.public.created_after_snapshot",
                "database gone",
            ]
        );
    }
}
