//! What the benchmark prints and writes: tables of figures, each beside the others measured
//! in the same run, and the ratio to the pgBackRest anchor.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use serde_json::{json, Value};

use crate::measure::*;
use crate::pgbackrest::*;
use crate::*;

pub(crate) type Figures = Vec<(&'static str, Value)>;

/// One row of a result table.
pub(crate) struct Row {
    pub(crate) method: String,
    pub(crate) figures: BTreeMap<&'static str, Value>,
}

pub(crate) struct Table {
    pub(crate) title: String,
    pub(crate) columns: Vec<&'static str>,
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
}

impl Table {
    pub(crate) fn new(title: &str, columns: &[&'static str]) -> Table {
        Table {
            title: title.into(),
            columns: columns.to_vec(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, method: &str, figures: &[(&'static str, Value)]) {
        let row = Row {
            method: method.into(),
            figures: figures.iter().cloned().collect(),
        };
        println!("  {:<44} {}", row.method, render_figures(&row.figures));
        self.rows.push(row);
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n| method |", self.title);
        for column in &self.columns {
            out.push_str(&format!(" {column} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(self.columns.len()));
        out.push('\n');
        for row in &self.rows {
            // A shell pipeline's "|" would end the cell.
            out.push_str(&format!("| {} |", row.method.replace('|', "\\|")));
            for column in &self.columns {
                let cell = row.figures.get(column).map(cell).unwrap_or_default();
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(&format!("\n{note}\n"));
        }
        out
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "title": self.title,
            "notes": self.notes,
            "rows": self.rows.iter().map(|row| {
                let mut object = serde_json::Map::new();
                object.insert("method".into(), json!(row.method));
                for (name, value) in &row.figures {
                    object.insert((*name).into(), value.clone());
                }
                Value::Object(object)
            }).collect::<Vec<_>>(),
        })
    }
}

pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 && f.abs() < 10.0 => format!("{f:.2}"),
            Some(f) if f.fract() != 0.0 => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn render_figures(figures: &BTreeMap<&'static str, Value>) -> String {
    figures
        .iter()
        .map(|(name, value)| format!("{name}={}", cell(value)))
        .collect::<Vec<_>>()
        .join("  ")
}

/// A row of a tool timed with [`measure`]: (method, figures, backup seconds, restore + sync
/// seconds).
pub(crate) fn measured_row(
    label: &str,
    pgdata_mib: f64,
    mb: f64,
    backup: &Measured,
    restore: &Measured,
    stored_bytes: u64,
) -> (String, Figures, f64, f64) {
    (
        label.to_string(),
        backup_figures(
            pgdata_mib,
            mb,
            (backup.seconds, backup.peak_rss_mib),
            restore,
            stored_bytes,
        ),
        backup.seconds,
        restore.seconds + restore.sync_seconds,
    )
}

/// One backup-and-restore row's figures; `mb` is PGDATA in MB (10^6 bytes).
pub(crate) fn backup_figures(
    pgdata_mib: f64,
    mb: f64,
    backup: (f64, f64),
    restore: &Measured,
    stored_bytes: u64,
) -> Figures {
    let (backup_seconds, backup_peak_mib) = backup;
    vec![
        ("PGDATA MiB", round1(pgdata_mib)),
        ("backup s", round2(backup_seconds)),
        ("backup MB/s", round1(mb / backup_seconds)),
        ("restore s", round2(restore.seconds)),
        ("restore MB/s", round1(mb / restore.seconds)),
        (
            "restore + sync s",
            round2(restore.seconds + restore.sync_seconds),
        ),
        ("stored MiB", round1(stored_bytes as f64 / MIB)),
        ("backup peak RSS MiB", round1(backup_peak_mib)),
        ("restore peak RSS MiB", round1(restore.peak_rss_mib)),
    ]
}

pub(crate) fn round1(x: f64) -> Value {
    json!((x * 10.0).round() / 10.0)
}

pub(crate) fn round2(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

impl Bench {
    /// The pgBackRest rate to compare with: this major's if measured (it becomes the anchor
    /// for later majors of the run), else the one measured on an earlier major.
    pub(crate) fn anchor(
        &mut self,
        kind: &'static str,
        measured_rate: Option<f64>,
    ) -> Option<(u32, f64)> {
        if let Some(rate) = measured_rate {
            self.pgbackrest_anchor
                .insert(kind, (self.server.major(), rate));
            return Some((self.server.major(), rate));
        }
        self.pgbackrest_anchor.get(kind).copied()
    }

    /// "1.32×", or "1.32× (vs 15)" against pgBackRest measured on another major.
    pub(crate) fn ratio(&self, anchor_major: u32, ratio: f64) -> Value {
        if anchor_major == self.server.major() {
            json!(format!("{ratio:.2}×"))
        } else {
            json!(format!("{ratio:.2}× (vs {anchor_major})"))
        }
    }

    pub(crate) fn note_skipped(
        &self,
        table: &mut Table,
        skipped: &[String],
        anchor: Option<(u32, f64)>,
    ) {
        if skipped.is_empty() {
            return;
        }
        let compared = match anchor {
            Some((major, _)) if major != self.server.major() => format!(
                " Ratios marked \"(vs {major})\" compare with pgBackRest measured on PostgreSQL {major} in the same run."
            ),
            _ => String::new(),
        };
        table.notes.push(format!(
            "Not run on PostgreSQL {major}: {} ({} does not support PostgreSQL {major}).{compared}",
            skipped.join(", "),
            pgbackrest_version(),
            major = self.server.major(),
        ));
    }

    pub(crate) fn write(&self, machine: &str, elapsed: Duration) {
        fs::create_dir_all(&self.args.out).unwrap();
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let mut markdown = format!(
            "## sc_backup benchmark, {}\n\nMachine: {machine}. Whole run: {:.1} min.\n\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            elapsed.as_secs_f64() / 60.0
        );
        for table in &self.tables {
            markdown.push_str(&table.markdown());
            markdown.push('\n');
        }
        let json = json!({
            "machine": machine,
            "command": command,
            "minutes": elapsed.as_secs_f64() / 60.0,
            "tables": self.tables.iter().map(Table::json).collect::<Vec<_>>(),
        });
        fs::write(self.args.out.join("results.md"), &markdown).unwrap();
        fs::write(
            self.args.out.join("results.json"),
            serde_json::to_string_pretty(&json).unwrap(),
        )
        .unwrap();
        println!("\n{markdown}");
        println!(
            "written to {} and {}",
            self.args.out.join("results.md").display(),
            self.args.out.join("results.json").display()
        );
    }
}
