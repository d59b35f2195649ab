//! Which table each `COPY ... FROM stdin;` of a plain-format dump fills, read from the SQL as
//! it streams into psql. Paired in order with psql's `COPY <n>` command tags, it gives the rows
//! `restore-dump` restored per table without counting them again afterwards (a `count(*)` of
//! every table, seconds on a large one). The scan is a check, not a parser of SQL: the caller
//! uses it only when the number of statements equals the number of tags and the tables equal
//! the database's, and counts the rows otherwise.
//!
//! Memory is bounded: a statement line is kept up to [`LINE_LIMIT`] bytes, and inside COPY
//! data only the last bytes of each write are kept, to find the `\.` line that ends it.

use std::io::{self, Write};

use memchr::{memchr, memmem};

/// A `COPY` line longer than this (a column list of thousands of names) makes the scan unusable
/// rather than unbounded.
pub const LINE_LIMIT: usize = 64 * 1024;

/// The end of COPY data: a line holding `\.` alone.
const END_OF_DATA: &[u8] = b"\n\\.\n";

/// A table a COPY statement names: as written (`public."Odd Name"`, what `format('%I.%I')`
/// gives) and as shown (`public.Odd Name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedTable {
    pub quoted: String,
    pub shown: String,
}

/// Forwards everything to `inner`, noting each COPY statement outside COPY data.
pub struct CopyScan<W> {
    inner: W,
    in_data: bool,
    /// Statement mode: the current line so far (up to LINE_LIMIT). Data mode: the last bytes
    /// seen, starting with the newline before the data, to find END_OF_DATA across writes.
    pending: Vec<u8>,
    line_too_long: bool,
    tables: Vec<CopiedTable>,
    /// A COPY line the scan could not read: its result is not to be used.
    unreadable: bool,
}

impl<W: Write> CopyScan<W> {
    pub fn new(inner: W) -> Self {
        CopyScan {
            inner,
            in_data: false,
            pending: Vec::new(),
            line_too_long: false,
            tables: Vec::new(),
            unreadable: false,
        }
    }

    /// The tables in COPY order, or `None` when the scan cannot be trusted (a COPY line it could
    /// not read, or the input ended inside COPY data).
    pub fn tables(&self) -> Option<&[CopiedTable]> {
        (!self.unreadable && !self.in_data).then_some(self.tables.as_slice())
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.in_data {
                // Search the kept tail and this write together, without copying the write.
                let keep = END_OF_DATA.len() - 1;
                let head_len = bytes.len().min(keep);
                let mut joined = std::mem::take(&mut self.pending);
                joined.extend_from_slice(&bytes[..head_len]);
                if let Some(at) = memmem::find(&joined, END_OF_DATA) {
                    let consumed = at + END_OF_DATA.len() - (joined.len() - head_len);
                    self.in_data = false;
                    bytes = &bytes[consumed..];
                    continue;
                }
                if let Some(at) = memmem::find(bytes, END_OF_DATA) {
                    self.in_data = false;
                    bytes = &bytes[at + END_OF_DATA.len()..];
                    continue;
                }
                let tail_from = bytes.len().saturating_sub(keep);
                if bytes.len() >= keep {
                    self.pending = bytes[tail_from..].to_vec();
                } else {
                    joined.drain(..joined.len().saturating_sub(keep));
                    self.pending = joined;
                }
                return;
            }
            match memchr(b'\n', bytes) {
                Some(newline) => {
                    self.take_line_part(&bytes[..newline]);
                    let line = std::mem::take(&mut self.pending);
                    let too_long = std::mem::replace(&mut self.line_too_long, false);
                    self.end_of_line(&line, too_long);
                    bytes = &bytes[newline + 1..];
                }
                None => {
                    self.take_line_part(bytes);
                    return;
                }
            }
        }
    }

    fn take_line_part(&mut self, part: &[u8]) {
        let room = LINE_LIMIT.saturating_sub(self.pending.len());
        if part.len() > room {
            self.line_too_long = true;
        }
        self.pending
            .extend_from_slice(&part[..part.len().min(room)]);
    }

    fn end_of_line(&mut self, line: &[u8], too_long: bool) {
        if !line.starts_with(b"COPY ") {
            return;
        }
        if too_long {
            self.unreadable = true;
            return;
        }
        if !line.ends_with(b" FROM stdin;") {
            return; // a COPY that reads no inline data (none in pg_dump's output)
        }
        match std::str::from_utf8(&line[5..]).ok().and_then(copied_table) {
            Some(table) => self.tables.push(table),
            None => self.unreadable = true,
        }
        self.in_data = true;
        // The data starts at a line start: a table without rows ends at once with `\.`.
        self.pending = b"\n".to_vec();
    }
}

impl<W: Write> Write for CopyScan<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.scan(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `schema.table` at the start of `text` (identifiers quoted as pg_dump quotes them), up to the
/// column list or FROM.
fn copied_table(text: &str) -> Option<CopiedTable> {
    let (schema, rest) = identifier(text)?;
    let rest = rest.strip_prefix('.')?;
    let (table, rest) = identifier(rest)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let quoted_len = text.len() - rest.len();
    Some(CopiedTable {
        quoted: text[..quoted_len].to_string(),
        shown: format!("{schema}.{table}"),
    })
}

/// One identifier, `"quoted"` (with `""` inside) or bare; its name and what follows it.
fn identifier(text: &str) -> Option<(String, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.char_indices();
        while let Some((at, c)) = chars.next() {
            if c != '"' {
                name.push(c);
                continue;
            }
            if quoted[at + 1..].starts_with('"') {
                name.push('"');
                chars.next();
                continue;
            }
            return Some((name, &quoted[at + 1..]));
        }
        None
    } else {
        let end = text.find(['.', ' ']).unwrap_or(text.len());
        (end > 0).then(|| (text[..end].to_string(), &text[end..]))
    }
}

/// The row counts of psql's `COPY <n>` command tags, in order, from its standard output.
pub fn copy_tags(psql_output: &str) -> Vec<u64> {
    psql_output
        .lines()
        .filter_map(|line| line.strip_prefix("COPY ")?.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "SET client_encoding = 'UTF8';\n\
        CREATE TABLE public.t (id integer);\n\
        COPY public.t (id) FROM stdin;\n\
        1\n\
        COPY public.t (id) FROM stdin;\n\
        \\.x\n\
        2\n\
        \\.\n\
        \n\
        COPY public.\"Odd \"\"Name. (x\" (a, b) FROM stdin;\n\
        \\.\n\
        COPY \"my schema\".empty FROM stdin;\n\
        \\.\n\
        SELECT pg_catalog.setval('public.s', 3, true);\n\
        COPY data.last (v) FROM stdin;\n\
        a\tb\n\
        \\.\n";

    fn scan_in_chunks(input: &[u8], chunk: usize) -> (Vec<u8>, Option<Vec<CopiedTable>>) {
        let mut scan = CopyScan::new(Vec::new());
        for part in input.chunks(chunk) {
            scan.write_all(part).unwrap();
        }
        let tables = scan.tables().map(<[_]>::to_vec);
        (scan.inner, tables)
    }

    #[test]
    fn finds_every_copy_whatever_the_write_boundaries() {
        let expected = vec![
            ("public.t", "public.t"),
            ("public.\"Odd \"\"Name. (x\"", "public.Odd \"Name. (x"),
            ("\"my schema\".empty", "my schema.empty"),
            ("data.last", "data.last"),
        ];
        for chunk in 1..=DUMP.len() {
            let (forwarded, tables) = scan_in_chunks(DUMP.as_bytes(), chunk);
            assert_eq!(forwarded, DUMP.as_bytes(), "chunk {chunk}");
            let tables = tables.unwrap_or_else(|| panic!("chunk {chunk}: unreadable"));
            let found: Vec<(&str, &str)> = tables
                .iter()
                .map(|t| (t.quoted.as_str(), t.shown.as_str()))
                .collect();
            assert_eq!(found, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn input_ending_inside_copy_data_or_a_long_copy_line_is_not_trusted() {
        let cut = "COPY public.t (id) FROM stdin;\n1\n2\n";
        assert_eq!(scan_in_chunks(cut.as_bytes(), 7).1, None);
        let long = format!(
            "COPY public.t ({}) FROM stdin;\n\\.\n",
            "c, ".repeat(LINE_LIMIT)
        );
        assert_eq!(scan_in_chunks(long.as_bytes(), 4096).1, None);
        // A long line that is not a COPY is only skipped.
        let other = format!(
            "SELECT '{}';\nCOPY a.b FROM stdin;\n\\.\n",
            "x".repeat(LINE_LIMIT)
        );
        let tables = scan_in_chunks(other.as_bytes(), 1000).1.unwrap();
        assert_eq!(tables.len(), 1);
    }

    #[test]
    fn psql_copy_tags_in_order() {
        let output = "SET\nCREATE TABLE\nCOPY 3\nALTER TABLE\n setval \n--------\n 3\n(1 row)\n\nCOPY 0\nCOMMIT\n";
        assert_eq!(copy_tags(output), vec![3, 0]);
    }
}
