//! One line of a PostgreSQL configuration file, as PostgreSQL's own lexer reads it
//! (guc-file.l): the CLI reads the cluster's postgresql.conf with it, and the secrets file
//! ([`super::secrets`]) has the same syntax.

/// Parses one line: `name [=] value [# comment]`. `Ok(None)` for blank and comment lines.
pub fn parse_conf_line(line: &str) -> Result<Option<(String, String)>, String> {
    let mut chars = line.trim_start().chars().peekable();
    let mut name = String::new();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
            name.push(c.to_ascii_lowercase());
            chars.next();
        } else {
            break;
        }
    }
    if name.is_empty() {
        return match chars.peek() {
            None | Some('#') => Ok(None),
            Some(c) => Err(format!("unexpected character {c:?}")),
        };
    }
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    if chars.peek() == Some(&'=') {
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    }
    let value = if chars.peek() == Some(&'\'') {
        chars.next();
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err("unterminated quoted string".into()),
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                Some('\'') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('r') => value.push('\r'),
                    Some('b') => value.push('\u{8}'),
                    Some('f') => value.push('\u{c}'),
                    Some(d @ '0'..='7') => {
                        let mut code = d.to_digit(8).unwrap();
                        for _ in 0..2 {
                            match chars.peek().and_then(|c| c.to_digit(8)) {
                                Some(next) => {
                                    code = code * 8 + next;
                                    chars.next();
                                }
                                None => break,
                            }
                        }
                        value.push(char::from_u32(code).unwrap_or('?'));
                    }
                    Some(other) => value.push(other),
                    None => return Err("unterminated quoted string".into()),
                },
                Some(c) => value.push(c),
            }
        }
        value
    } else {
        let mut value = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '#' {
                break;
            }
            value.push(c);
            chars.next();
        }
        if value.is_empty() {
            return Err(format!("missing value for \"{name}\""));
        }
        value
    };
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    match chars.peek() {
        None | Some('#') => Ok(Some((name, value))),
        Some(c) => Err(format!(
            "unexpected character {c:?} after the value of \"{name}\""
        )),
    }
}
