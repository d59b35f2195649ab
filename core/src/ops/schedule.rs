//! When scheduled backups are due.
//!
//! Pure computation over an injected clock: the scheduler worker and `sc_schedule()` call the
//! same functions with the same history (read from the audit table), so what SQL shows is what
//! the worker does.
//!
//! Rules, as a DBA would expect them:
//! - `hourly` runs every `hourly_interval` after the start of the last successful hourly
//!   backup (so the grid does not drift by the backups' durations);
//! - `daily`, `weekly` and `cron` run at calendar times, in UTC (no daylight-saving jumps);
//! - a cron expression (`sc_backup.schedule`), when set, replaces the three built-in
//!   schedules: one explicit rule is easier to reason about than a union;
//! - with no history, calendar schedules wait for their next time and the interval schedule
//!   for one interval after the worker started; a run missed while the server was down runs
//!   once when it is back, not once per missed slot;
//! - after a failure the schedule stays due and is retried after `retry_delay`, doubling per
//!   consecutive failure, at most an hour apart;
//! - several schedules due at once take one backup, labelled with the rarest of them
//!   (weekly, then daily, then cron, then hourly), which counts as a run of each.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;

use crate::config::schedule::{built_in_calendar, ScheduleRules, ScheduleSettings};

/// The built-in schedules, from the most to the least frequent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScheduleKind {
    Hourly,
    Cron,
    Daily,
    Weekly,
}

impl ScheduleKind {
    /// Also the backup type of the backups it takes.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Hourly => "hourly",
            ScheduleKind::Cron => "cron",
            ScheduleKind::Daily => "daily",
            ScheduleKind::Weekly => "weekly",
        }
    }

    pub fn from_name(name: &str) -> Option<ScheduleKind> {
        [
            ScheduleKind::Hourly,
            ScheduleKind::Cron,
            ScheduleKind::Daily,
            ScheduleKind::Weekly,
        ]
        .into_iter()
        .find(|kind| kind.name() == name)
    }
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
enum Rule {
    Every(Duration),
    Calendar(Box<Cron>),
}

/// One schedule: what it is called, its rule, and the rule as the DBA wrote it.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub description: String,
    rule: Rule,
}

impl Schedule {
    /// The first time at or after which this schedule is due, given the start of its last
    /// successful run (or, with none, the time the scheduler started).
    pub fn next_run(
        &self,
        last_success: Option<DateTime<Utc>>,
        scheduler_started: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let after = last_success.unwrap_or(scheduler_started);
        match &self.rule {
            Rule::Every(interval) => {
                after + chrono::Duration::from_std(*interval).unwrap_or(chrono::Duration::MAX)
            }
            Rule::Calendar(cron) => cron
                .find_next_occurrence(&after, false)
                // No next occurrence (a date that never comes, like February 30): never due.
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }
}

/// When a cron-scheduled task (the restore test) is next due: the first occurrence after its
/// last start, or after the scheduler started when it never ran. `None`: never.
pub fn next_occurrence(
    cron: &Cron,
    last_start: Option<DateTime<Utc>>,
    scheduler_started: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&last_start.unwrap_or(scheduler_started), false)
        .ok()
}

/// The longest wait between retries of a failing backup.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// The schedules in force.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub schedules: Vec<Schedule>,
    pub retry_delay: Duration,
}

impl Scheduler {
    /// The shortest time between two scheduled base backups, measured from `now` (two
    /// successive runs of each schedule); `None` when no schedule takes backups. An alert on
    /// a backup's age compares with it: two hours mean trouble for an hourly schedule, not
    /// for a daily one.
    pub fn shortest_interval(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        self.schedules
            .iter()
            .filter_map(|schedule| {
                let first = schedule.next_run(Some(now), now);
                let second = schedule.next_run(Some(first), now);
                (second > first && second != DateTime::<Utc>::MAX_UTC).then(|| second - first)
            })
            .min()
    }

    pub fn new(settings: &ScheduleSettings) -> Scheduler {
        let schedules = match &settings.rules {
            ScheduleRules::Cron(cron) => vec![Schedule {
                kind: ScheduleKind::Cron,
                description: cron.written.clone(),
                rule: Rule::Calendar(cron.rule.clone()),
            }],
            ScheduleRules::BuiltIn {
                hourly_every,
                daily_at,
                weekly_on,
            } => {
                let hourly = hourly_every.map(|every| Schedule {
                    kind: ScheduleKind::Hourly,
                    description: format!("every {}", human_interval(every.as_secs())),
                    rule: Rule::Every(every),
                });
                let daily = daily_at.map(|at| Schedule {
                    kind: ScheduleKind::Daily,
                    description: format!("daily at {} UTC", at.format("%H:%M")),
                    rule: Rule::Calendar(Box::new(built_in_calendar(None, at))),
                });
                let weekly = weekly_on.map(|(day, at)| Schedule {
                    kind: ScheduleKind::Weekly,
                    description: format!("weekly on {day} at {} UTC", at.format("%H:%M")),
                    rule: Rule::Calendar(Box::new(built_in_calendar(Some(day), at))),
                });
                [hourly, daily, weekly].into_iter().flatten().collect()
            }
        };
        Scheduler {
            schedules,
            retry_delay: settings.retry_delay,
        }
    }

    /// Delay before retry number `failures` (1 for the first retry).
    pub fn retry_backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.retry_delay.saturating_mul(factor).min(MAX_RETRY_DELAY)
    }

    /// When each schedule is due next.
    pub fn upcoming(
        &self,
        history: &BTreeMap<ScheduleKind, ScheduleHistory>,
        scheduler_started: DateTime<Utc>,
    ) -> Vec<(ScheduleKind, DateTime<Utc>)> {
        self.schedules
            .iter()
            .map(|schedule| {
                let past = history.get(&schedule.kind).cloned().unwrap_or_default();
                let mut due = schedule.next_run(past.last_success, scheduler_started);
                if past.consecutive_failures > 0 {
                    if let Some(failed) = past.last_failure {
                        let retry = failed
                            + chrono::Duration::from_std(
                                self.retry_backoff(past.consecutive_failures),
                            )
                            .unwrap_or(chrono::Duration::MAX);
                        due = due.max(retry);
                    }
                }
                (schedule.kind, due)
            })
            .collect()
    }

    /// The schedules due at `now` (one backup serves them all), rarest first; empty when
    /// nothing is due.
    pub fn due(
        &self,
        history: &BTreeMap<ScheduleKind, ScheduleHistory>,
        scheduler_started: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Vec<ScheduleKind> {
        let mut due: Vec<ScheduleKind> = self
            .upcoming(history, scheduler_started)
            .into_iter()
            .filter(|(_, at)| *at <= now)
            .map(|(kind, _)| kind)
            .collect();
        due.sort_by(|a, b| b.cmp(a));
        due
    }

    /// The earliest time anything is due.
    pub fn next_wakeup(
        &self,
        history: &BTreeMap<ScheduleKind, ScheduleHistory>,
        scheduler_started: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.upcoming(history, scheduler_started)
            .into_iter()
            .map(|(_, at)| at)
            .min()
    }
}

fn human_interval(seconds: u64) -> String {
    match seconds {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}min", s / 60),
        s => format!("{s}s"),
    }
}

/// What the audit trail says about one schedule's past runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleHistory {
    /// Start of the last successful run.
    pub last_success: Option<DateTime<Utc>>,
    /// Start of the last failed run.
    pub last_failure: Option<DateTime<Utc>>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
}

impl ScheduleHistory {
    /// Folds one run into the history; runs come oldest first.
    pub fn record(&mut self, started: DateTime<Utc>, succeeded: bool, error: Option<String>) {
        if succeeded {
            self.last_success = Some(started);
            self.consecutive_failures = 0;
        } else {
            self.last_failure = Some(started);
            self.consecutive_failures += 1;
        }
        self.last_outcome = Some(if succeeded { "succeeded" } else { "failed" }.into());
        self.last_error = error;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule::RawScheduleSettings;
    use crate::config::ConfigError;

    fn parsed(raw: &RawScheduleSettings) -> Result<Scheduler, ConfigError> {
        Ok(Scheduler::new(&ScheduleSettings::from_raw(raw)?))
    }
    use chrono::{Datelike, Weekday};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn defaults() -> RawScheduleSettings {
        RawScheduleSettings {
            hourly_interval_seconds: 3600,
            daily_time: "02:00".into(),
            weekly_day: String::new(),
            weekly_time: "02:00".into(),
            cron: String::new(),
            retry_delay: Duration::from_secs(60),
        }
    }

    fn history(entries: &[(ScheduleKind, &str, bool)]) -> BTreeMap<ScheduleKind, ScheduleHistory> {
        let mut map: BTreeMap<ScheduleKind, ScheduleHistory> = BTreeMap::new();
        for (kind, started, ok) in entries {
            map.entry(*kind).or_default().record(
                at(started),
                *ok,
                (!ok).then(|| "boom".to_string()),
            );
        }
        map
    }

    #[test]
    fn defaults_are_hourly_and_daily_at_two() {
        let scheduler = parsed(&defaults()).unwrap();
        let kinds: Vec<_> = scheduler.schedules.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, vec![ScheduleKind::Hourly, ScheduleKind::Daily]);
        let started = at("2026-11-24T10:15:00Z");
        let upcoming = scheduler.upcoming(&BTreeMap::new(), started);
        assert_eq!(
            upcoming[0],
            (ScheduleKind::Hourly, at("2026-11-24T11:15:00Z"))
        );
        assert_eq!(
            upcoming[1],
            (ScheduleKind::Daily, at("2026-11-25T02:00:00Z"))
        );
    }

    #[test]
    fn interval_follows_the_last_success_not_the_clock() {
        let scheduler = parsed(&defaults()).unwrap();
        let started = at("2026-11-24T09:30:00Z");
        let past = history(&[(ScheduleKind::Hourly, "2026-11-24T10:00:07Z", true)]);
        assert!(scheduler
            .due(&past, started, at("2026-11-24T11:00:06Z"))
            .is_empty());
        assert_eq!(
            scheduler.due(&past, started, at("2026-11-24T11:00:07Z")),
            vec![ScheduleKind::Hourly]
        );
    }

    #[test]
    fn month_ends_and_leap_days() {
        let settings = RawScheduleSettings {
            cron: "30 23 L * *".into(), // the last day of each month
            ..defaults()
        };
        let scheduler = parsed(&settings).unwrap();
        let schedule = &scheduler.schedules[0];
        assert_eq!(
            scheduler.schedules.len(),
            1,
            "cron replaces the built-in schedules"
        );
        assert_eq!(
            schedule.next_run(Some(at("2028-01-31T23:30:00Z")), at("2028-01-01T00:00:00Z")),
            at("2028-02-29T23:30:00Z")
        );
        assert_eq!(
            schedule.next_run(Some(at("2026-11-30T23:30:00Z")), at("2026-01-01T00:00:00Z")),
            at("2026-12-31T23:30:00Z")
        );
        let daily = parsed(&RawScheduleSettings {
            hourly_interval_seconds: 0,
            ..defaults()
        })
        .unwrap();
        assert_eq!(
            daily.schedules[0]
                .next_run(Some(at("2026-12-31T02:00:00Z")), at("2026-01-01T00:00:00Z")),
            at("2027-01-01T02:00:00Z")
        );
    }

    #[test]
    fn weekly_day_and_time() {
        let scheduler = parsed(&RawScheduleSettings {
            hourly_interval_seconds: 0,
            daily_time: String::new(),
            weekly_day: "Sunday".into(),
            weekly_time: "03:30".into(),
            ..defaults()
        })
        .unwrap();
        assert_eq!(scheduler.schedules.len(), 1);
        assert_eq!(
            scheduler.schedules[0].description,
            "weekly on Sun at 03:30 UTC"
        );
        // 2026-11-24 is a Tuesday; the next Sunday is the 29th.
        let next = scheduler.schedules[0].next_run(None, at("2026-11-24T10:00:00Z"));
        assert_eq!(next, at("2026-11-29T03:30:00Z"));
        assert_eq!(next.weekday(), Weekday::Sun);
        // Exactly at the time: the next one is a week later.
        assert_eq!(
            scheduler.schedules[0].next_run(Some(next), at("2026-11-24T10:00:00Z")),
            at("2026-12-06T03:30:00Z")
        );
    }

    #[test]
    fn cron_expressions() {
        let scheduler = parsed(&RawScheduleSettings {
            cron: "*/15 9-17 * * mon-fri".into(),
            ..defaults()
        })
        .unwrap();
        let schedule = &scheduler.schedules[0];
        // Friday 17:45 → Monday 09:00.
        assert_eq!(
            schedule.next_run(Some(at("2026-11-27T17:45:00Z")), at("2026-11-01T00:00:00Z")),
            at("2026-11-30T09:00:00Z")
        );
        assert_eq!(
            schedule.next_run(Some(at("2026-11-30T09:00:00Z")), at("2026-11-01T00:00:00Z")),
            at("2026-11-30T09:15:00Z")
        );
        for bad in ["every day", "61 * * * *", "0 2 * *", "0 25 * * *"] {
            let err = parsed(&RawScheduleSettings {
                cron: bad.into(),
                ..defaults()
            })
            .unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("invalid value for sc_backup.schedule"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bad_times_and_days_are_named() {
        let err = parsed(&RawScheduleSettings {
            daily_time: "2am".into(),
            ..defaults()
        })
        .unwrap_err();
        assert!(err.to_string().contains("sc_backup.daily_time"), "{err}");
        assert!(err.to_string().contains("HH:MM"), "{err}");
        let err = parsed(&RawScheduleSettings {
            weekly_day: "caturday".into(),
            ..defaults()
        })
        .unwrap_err();
        assert!(err.to_string().contains("sc_backup.weekly_day"), "{err}");
    }

    #[test]
    fn missed_runs_after_downtime_run_once() {
        let scheduler = parsed(&defaults()).unwrap();
        // Down from Monday 09:30 until Thursday 11:00: two daily and ~70 hourly slots missed.
        let mut past = history(&[
            (ScheduleKind::Hourly, "2026-11-23T09:00:00Z", true),
            (ScheduleKind::Daily, "2026-11-23T02:00:00Z", true),
        ]);
        let back = at("2026-11-26T11:00:00Z");
        let due = scheduler.due(&past, back, back);
        assert_eq!(due, vec![ScheduleKind::Daily, ScheduleKind::Hourly]);
        // One backup serves both; afterwards nothing is due until the next slots.
        for kind in &due {
            past.get_mut(kind).unwrap().record(back, true, None);
        }
        assert!(scheduler
            .due(&past, back, back + chrono::Duration::minutes(59))
            .is_empty());
        assert_eq!(
            scheduler.upcoming(&past, back),
            vec![
                (ScheduleKind::Hourly, at("2026-11-26T12:00:00Z")),
                (ScheduleKind::Daily, at("2026-11-27T02:00:00Z")),
            ]
        );
    }

    #[test]
    fn failures_are_retried_with_backoff() {
        let scheduler = parsed(&defaults()).unwrap();
        let started = at("2026-11-24T00:00:00Z");
        let mut past = history(&[(ScheduleKind::Hourly, "2026-11-24T09:00:00Z", true)]);
        let hourly = past.get_mut(&ScheduleKind::Hourly).unwrap();
        hourly.record(at("2026-11-24T10:00:00Z"), false, Some("disk full".into()));
        assert_eq!(hourly.consecutive_failures, 1);
        assert_eq!(hourly.last_error.as_deref(), Some("disk full"));
        // First retry after retry_delay (60 s), then 120 s, 240 s, ...
        let next = |past: &BTreeMap<_, _>| scheduler.upcoming(past, started)[0].1;
        assert_eq!(next(&past), at("2026-11-24T10:01:00Z"));
        past.get_mut(&ScheduleKind::Hourly).unwrap().record(
            at("2026-11-24T10:01:00Z"),
            false,
            None,
        );
        assert_eq!(next(&past), at("2026-11-24T10:03:00Z"));
        for _ in 0..20 {
            past.get_mut(&ScheduleKind::Hourly).unwrap().record(
                at("2026-11-24T10:03:00Z"),
                false,
                None,
            );
        }
        assert_eq!(next(&past), at("2026-11-24T11:03:00Z"), "capped at an hour");
        // A success resets the count; the next run is an interval after it.
        past.get_mut(&ScheduleKind::Hourly)
            .unwrap()
            .record(at("2026-11-24T10:30:00Z"), true, None);
        let hourly = &past[&ScheduleKind::Hourly];
        assert_eq!(hourly.consecutive_failures, 0);
        assert_eq!(hourly.last_outcome.as_deref(), Some("succeeded"));
        assert_eq!(next(&past), at("2026-11-24T11:30:00Z"));
    }

    #[test]
    fn history_counts_failures_since_the_last_success() {
        let mut history = ScheduleHistory::default();
        history.record(at("2026-11-24T08:00:00Z"), false, None);
        history.record(at("2026-11-24T09:00:00Z"), true, None);
        history.record(at("2026-11-24T10:00:00Z"), false, Some("x".into()));
        assert_eq!(history.consecutive_failures, 1);
        assert_eq!(history.last_success, Some(at("2026-11-24T09:00:00Z")));
        assert_eq!(history.last_failure, Some(at("2026-11-24T10:00:00Z")));
        assert_eq!(history.last_outcome.as_deref(), Some("failed"));
        assert_eq!(history.last_error.as_deref(), Some("x"));
    }

    #[test]
    fn turning_everything_off_leaves_no_schedule() {
        let scheduler = parsed(&RawScheduleSettings {
            hourly_interval_seconds: 0,
            daily_time: " ".into(),
            ..defaults()
        })
        .unwrap();
        assert!(scheduler.schedules.is_empty());
        assert_eq!(scheduler.next_wakeup(&BTreeMap::new(), Utc::now()), None);
    }
}
