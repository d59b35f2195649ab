//! The live cluster, reached through `psql` and libpq's usual parameters (`--dbname`, the
//! `PG*` environment), as the operator's own tools reach it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};
use crate::pg::quote::quote_conninfo_value;

/// The live cluster, through `psql` and libpq's usual parameters.
#[derive(Debug, Clone)]
pub struct Live {
    pub psql: PathBuf,
    /// A database name, `key=value` connection string or URI (`--dbname`); empty: the
    /// environment (PGHOST, PGPORT, PGUSER, PGDATABASE...).
    pub conninfo: String,
}

impl Live {
    /// The same connection, to database `database` instead.
    pub fn for_database(&self, database: &str) -> Live {
        Live {
            psql: self.psql.clone(),
            conninfo: with_database(&self.conninfo, database),
        }
    }

    /// `psql` connected, stopping at the first error, without reading ~/.psqlrc.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.psql);
        command.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
        if !self.conninfo.is_empty() {
            command.arg("-d").arg(&self.conninfo);
        }
        command
    }

    /// Runs one query with `name` bound to psql's variable `name` (quoted by psql), and
    /// returns its unaligned output.
    pub fn query(&self, sql: &str, name: &str) -> Result<String> {
        let output = self
            .command()
            .args(["-A", "-t", "-v"])
            .arg(format!("name={name}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                // Through stdin: psql interpolates variables there, not in -c.
                child
                    .stdin
                    .take()
                    .expect("piped")
                    .write_all(sql.as_bytes())?;
                child.wait_with_output()
            })
            .map_err(|e| Error::io("run", self.psql.display(), e))?;
        self.succeeded(&output)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Whether this `psql` has `\restrict` (which refuses every other meta-command until
    /// `\unrestrict` with the same key): the releases of August 2025 and later (13.22, 14.19,
    /// 15.14, 16.10, 17.6, 18).
    pub fn psql_restricts(&self) -> Result<bool> {
        let output = Command::new(&self.psql)
            .arg("--version")
            .output()
            .map_err(|e| Error::io("run", self.psql.display(), e))?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(parse_psql_version(&text).is_some_and(|(major, minor)| {
            major >= 18
                || matches!(
                    (major, minor),
                    (17, 6..) | (16, 10..) | (15, 14..) | (14, 19..) | (13, 22..)
                )
        }))
    }

    /// Runs each statement on its own (`psql -c` per statement: `DROP DATABASE` and friends
    /// cannot run inside the implicit transaction of a multi-statement string).
    pub fn run_separately(&self, statements: &[String]) -> Result<()> {
        let mut command = self.command();
        for statement in statements {
            command.arg("-c").arg(statement);
        }
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("run", self.psql.display(), e))?;
        self.succeeded(&output)?;
        Ok(())
    }

    /// psql's own message when it failed: it names the server's error, or why it could not connect.
    fn succeeded(&self, output: &Output) -> Result<()> {
        if output.status.success() {
            return Ok(());
        }
        Err(Error::LiveCluster(format!(
            "the live cluster{}: {}",
            self.describe(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }

    /// " (the connection string)" for messages, password hidden; empty for the environment.
    pub fn describe(&self) -> String {
        if self.conninfo.is_empty() {
            String::new()
        } else {
            format!(" ({})", redact_password(&self.conninfo))
        }
    }
}

/// `(major, minor)` of `psql --version`'s "psql (PostgreSQL) 17.6 (Debian 17.6-1)".
fn parse_psql_version(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().nth(2)?;
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// A connection string with its database replaced: libpq takes the last `dbname=` of a
/// keyword string; a URI gets its path replaced; a bare name is replaced.
pub fn with_database(conninfo: &str, database: &str) -> String {
    let quoted = quote_conninfo_value(database);
    if conninfo.starts_with("postgresql://") || conninfo.starts_with("postgres://") {
        let (base, query) = conninfo.split_once('?').unwrap_or((conninfo, ""));
        let scheme_end = base.find("://").expect("checked") + 3;
        let authority_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |i| scheme_end + i);
        let mut uri = format!("{}/{}", &base[..authority_end], percent_encode(database));
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(query);
        }
        uri
    } else if conninfo.contains('=') {
        format!("{conninfo} dbname={quoted}")
    } else {
        format!("dbname={quoted}")
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Refuses a connection string that holds a password: it would be on our command line and on
/// psql's and pg_dump's, where any local user's `ps` reads it. libpq's password file
/// (`~/.pgpass`, `PGPASSFILE`) or `PGPASSWORD` keep it out of process lists.
pub fn refuse_password(conninfo: &str) -> Result<()> {
    if holds_password(conninfo) {
        return Err(Error::InvalidRequest(
            "--dbname holds a password, which process lists would show (ours, psql's and pg_dump's); put it in ~/.pgpass (or PGPASSFILE) or PGPASSWORD instead".into(),
        ));
    }
    Ok(())
}

fn is_uri(conninfo: &str) -> bool {
    conninfo.starts_with("postgresql://") || conninfo.starts_with("postgres://")
}

/// Whether a connection string gives a password: a `password` keyword (however spaced or
/// quoted), a `password` URI parameter (however percent-encoded), or `user:password@`.
fn holds_password(conninfo: &str) -> bool {
    if is_uri(conninfo) {
        let rest = &conninfo[conninfo.find("://").expect("a URI") + 3..];
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let in_userinfo = authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'));
        let in_query = rest.split_once('?').is_some_and(|(_, query)| {
            query.split('&').any(|pair| {
                let name = pair.split('=').next().unwrap_or("");
                percent_decode(name).trim() == "password"
            })
        });
        return in_userinfo || in_query;
    }
    match keywords(conninfo) {
        Some(pairs) => pairs.iter().any(|(keyword, _)| keyword == "password"),
        // Not a connection string libpq would accept: look for the word.
        None => conninfo.contains("password"),
    }
}

/// The `keyword = value` pairs of a connection string as libpq reads them (conninfo_parse:
/// spaces around `=`, values quoted with '...' and backslash escapes); `None` when it is not
/// one (a bare database name is not).
fn keywords(conninfo: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(pairs);
        }
        let mut keyword = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            keyword.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((keyword, value));
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[index + 1..index + 3], 16) {
                out.push(byte);
                index += 3;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection string for messages: passwords never appear.
fn redact_password(conninfo: &str) -> String {
    if is_uri(conninfo) {
        let scheme_end = conninfo.find("://").expect("a URI") + 3;
        let (base, query) = conninfo.split_once('?').unwrap_or((conninfo, ""));
        let mut out = base.to_string();
        let authority_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |at| scheme_end + at);
        if let Some((userinfo, _)) = base[scheme_end..authority_end].rsplit_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                out = format!(
                    "{}{user}:***{}",
                    &base[..scheme_end],
                    &base[scheme_end + userinfo.len()..]
                );
            }
        }
        if !query.is_empty() {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| {
                    let name = pair.split('=').next().unwrap_or("");
                    if percent_decode(name).trim() == "password" {
                        format!("{name}=***")
                    } else {
                        pair.to_string()
                    }
                })
                .collect();
            out = format!("{out}?{}", pairs.join("&"));
        }
        return out;
    }
    match keywords(conninfo) {
        Some(pairs) => pairs
            .iter()
            .map(|(keyword, value)| {
                if keyword == "password" {
                    format!("{keyword}=***")
                } else if value.is_empty()
                    || value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\')
                {
                    format!("{keyword}={}", quote_conninfo_value(value))
                } else {
                    format!("{keyword}={value}")
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        None if conninfo.contains("password") => "***".into(),
        None => conninfo.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_versions_are_read() {
        assert_eq!(
            parse_psql_version("psql (PostgreSQL) 17.6 (Debian 17.6-1.pgdg120+1)\n"),
            Some((17, 6))
        );
        assert_eq!(
            parse_psql_version("psql (PostgreSQL) 18.6\n"),
            Some((18, 6))
        );
        assert_eq!(
            parse_psql_version("psql (PostgreSQL) 19devel\n"),
            Some((19, 0))
        );
        assert_eq!(parse_psql_version("nonsense"), None);
    }

    #[test]
    fn the_database_of_a_connection_string_is_replaced() {
        assert_eq!(with_database("", "app"), "dbname='app'");
        assert_eq!(with_database("postgres", "app"), "dbname='app'");
        assert_eq!(
            with_database("host=/run/pg port=5433 dbname=postgres", "new_db"),
            "host=/run/pg port=5433 dbname=postgres dbname='new_db'"
        );
        assert_eq!(
            with_database("postgresql://u@h:5432/postgres?sslmode=require", "a b"),
            "postgresql://u@h:5432/a%20b?sslmode=require"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn passwords_in_connection_strings_are_refused() {
        for bad in [
            "host=h password=secret",
            "host=h password = secret",
            "host=h password= 'two words'",
            "postgresql://u:secret@h/db",
            "postgresql://u@h/db?sslmode=require&password=secret",
            "postgresql://u@h/db?pass%77ord=secret",
        ] {
            assert!(refuse_password(bad).is_err(), "{bad}");
        }
        for good in [
            "",
            "app",
            "host=/run/pg user=u dbname=app",
            "postgresql://u@h:5432/db",
        ] {
            refuse_password(good).unwrap();
        }
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_password("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(
            redact_password("postgresql://u:secret@h/db"),
            "postgresql://u:***@h/db"
        );
        for spaced in [
            "host=h password = secret user=u",
            "host=h password= 'secret' user=u",
        ] {
            let shown = redact_password(spaced);
            assert!(!shown.contains("secret"), "{spaced}: {shown}");
        }
        let shown = redact_password("postgresql://u@h/db?pass%77ord=secret&sslmode=require");
        assert!(
            !shown.contains("secret") && shown.contains("sslmode=require"),
            "{shown}"
        );
    }
}
