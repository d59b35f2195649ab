//! Quoting as PostgreSQL reads it: SQL identifiers, and values in a `key=value` connection
//! string.

/// An SQL identifier as PostgreSQL's `quote_ident()` writes it: bare when it is a plain
/// lower-case name, double-quoted otherwise.
pub fn quote_ident(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A value quoted for a `key=value` connection string: a database named `host=/elsewhere
/// dbname=postgres` stays a database name instead of becoming parameters.
pub fn quote_conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}
