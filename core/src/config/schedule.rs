//! The backup schedule's settings: as the server holds them ([`RawScheduleSettings`]) and as
//! parsed, once, here ([`ScheduleSettings`]), with the same checks that refuse a bad value when
//! it is set.

use std::time::Duration;

use chrono::{NaiveTime, Weekday};
use croner::Cron;

use super::calendar::{calendar, parse_cron, parse_time_of_day, parse_weekday};
use super::{names, ConfigError};

/// The schedule settings as the server holds them: text, as the DBA wrote it.
#[derive(Debug, Clone, Default)]
pub struct RawScheduleSettings {
    /// Seconds between hourly backups; 0 turns the schedule off.
    pub hourly_interval_seconds: u64,
    /// "HH:MM", or empty for off.
    pub daily_time: String,
    /// A day of the week, or empty for off.
    pub weekly_day: String,
    pub weekly_time: String,
    /// A cron expression; when set it replaces the three schedules above.
    pub cron: String,
    /// Delay before the first retry of a failed backup.
    pub retry_delay: Duration,
}

/// A calendar rule and the text it was written as (shown by `sc_schedule()`).
#[derive(Debug, Clone)]
pub struct CalendarRule {
    pub written: String,
    pub rule: Box<Cron>,
}

/// The schedule settings, parsed.
#[derive(Debug, Clone)]
pub enum ScheduleRules {
    /// `sc_backup.schedule`: one cron rule replaces the built-in schedules.
    Cron(CalendarRule),
    BuiltIn {
        hourly_every: Option<Duration>,
        daily_at: Option<NaiveTime>,
        weekly_on: Option<(Weekday, NaiveTime)>,
    },
}

#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    pub rules: ScheduleRules,
    /// At least a second.
    pub retry_delay: Duration,
}

impl ScheduleSettings {
    pub fn from_raw(raw: &RawScheduleSettings) -> Result<ScheduleSettings, ConfigError> {
        let rules = if !raw.cron.trim().is_empty() {
            ScheduleRules::Cron(CalendarRule {
                written: raw.cron.trim().to_string(),
                rule: Box::new(parse_cron(names::SCHEDULE, &raw.cron)?),
            })
        } else {
            ScheduleRules::BuiltIn {
                hourly_every: (raw.hourly_interval_seconds > 0)
                    .then(|| Duration::from_secs(raw.hourly_interval_seconds)),
                daily_at: match raw.daily_time.trim() {
                    "" => None,
                    text => Some(parse_time_of_day(names::DAILY_TIME, text)?),
                },
                weekly_on: match raw.weekly_day.trim() {
                    "" => None,
                    day => Some((
                        parse_weekday(names::WEEKLY_DAY, day)?,
                        parse_time_of_day(names::WEEKLY_TIME, &raw.weekly_time)?,
                    )),
                },
            }
        };
        Ok(ScheduleSettings {
            rules,
            retry_delay: raw.retry_delay.max(Duration::from_secs(1)),
        })
    }
}

/// The calendar rule of a built-in schedule: every day at `at`, or every `weekday` at `at`.
pub fn built_in_calendar(weekday: Option<Weekday>, at: NaiveTime) -> Cron {
    let day_of_week = weekday.map_or("*".to_string(), |d| d.num_days_from_sunday().to_string());
    calendar(&format!("{} * * {day_of_week}", at.format("%M %H"))).expect("a valid pattern")
}
