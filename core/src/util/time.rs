//! Times as PostgreSQL and people write them.

/// Parses the timestamps PostgreSQL and people write: RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f]`
/// with a `+HH[:MM]`/`Z` offset. An offset is required: a restore must not depend on the
/// time zone of the machine it runs on.
pub fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let normalized = text.replacen(' ', "T", 1);
    let with_minutes = match normalized.rfind(['+', '-']) {
        Some(pos) if pos > 10 && normalized[pos + 1..].len() == 2 => format!("{normalized}:00"),
        _ => normalized,
    };
    chrono::DateTime::parse_from_rfc3339(&with_minutes)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_an_offset() {
        let expected = parse_time("2026-11-24T10:41:00Z").unwrap();
        for text in [
            "2026-11-24 10:41:00+00",
            "2026-11-24 10:41:00+00:00",
            "2026-11-24 12:41:00+02",
            "2026-11-24T10:41:00.000+00:00",
        ] {
            assert_eq!(parse_time(text), Some(expected), "{text}");
        }
        assert!(parse_time("2026-11-24 10:41:00.123456+00").is_some());
        assert_eq!(parse_time("2026-11-24 10:41:00"), None);
        assert_eq!(parse_time("yesterday"), None);
    }
}
