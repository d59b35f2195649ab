//! Schedule settings' values: times of day, weekdays and cron rules, each refused with the
//! setting's name when malformed.

use std::str::FromStr;

use chrono::{NaiveTime, Weekday};
use croner::Cron;

use super::ConfigError;

pub(crate) fn calendar(pattern: &str) -> Result<Cron, String> {
    pattern.parse::<Cron>().map_err(|e| e.to_string())
}

/// "HH:MM" (24-hour, UTC).
pub fn parse_time_of_day(setting: &'static str, value: &str) -> Result<NaiveTime, ConfigError> {
    NaiveTime::parse_from_str(value.trim(), "%H:%M").map_err(|_| ConfigError::InvalidSchedule {
        setting,
        value: value.to_string(),
        reason: "expected a UTC time of day as HH:MM, like 02:00".into(),
    })
}

pub fn parse_weekday(setting: &'static str, value: &str) -> Result<Weekday, ConfigError> {
    Weekday::from_str(value.trim()).map_err(|_| ConfigError::InvalidSchedule {
        setting,
        value: value.to_string(),
        reason: "expected a day of the week, like sunday or sun".into(),
    })
}

pub fn parse_cron(setting: &'static str, value: &str) -> Result<Cron, ConfigError> {
    calendar(value.trim()).map_err(|reason| ConfigError::InvalidSchedule {
        setting,
        value: value.to_string(),
        reason: format!(
            "not a cron expression ({reason}); use five fields, minute hour day-of-month month day-of-week, like '0 2 * * *'"
        ),
    })
}
