//! What the archived WAL can recover to: the newest transaction time in a WAL segment.
//!
//! Recovery to a time stops at the first commit or abort record whose time passes the target
//! (xlogrecovery.c, `recoveryStopsBefore` / `getRecordTimestamp`). When no archived record
//! does, PostgreSQL replays everything and then refuses to start ("recovery ended before
//! configured recovery target was reached"), which a restore can predict: it reads the newest
//! archived segments and takes the latest commit or abort time in them.
//!
//! The scanner is a `Write` sink: a segment streams through it while it is decoded and
//! verified, page by page, and only transaction records are kept (bounded). It follows
//! PostgreSQL's WAL layout, unchanged from 15 to 18 (access/xlog_internal.h,
//! access/xlogrecord.h, access/xact.h; the page magic changes per major and is not checked):
//! pages of `XLOG_BLCKSZ` bytes, each with a page header (the first of a segment a long one),
//! records 8-byte aligned, each an `XLogRecord` header, block and data headers, block data,
//! then the main data; records continue across pages after the next page's header. A commit's
//! or abort's main data starts with its `TimestampTz` (microseconds since 2000-01-01 UTC).
//!
//! Scanning stops where valid WAL stops: a zero length (the zeroed rest of a segment after a
//! switch), a record whose `xl_prev` does not point at the previous record, or a page whose
//! address is not the next one (a recycled segment's old contents).

use std::io::{self, Write};

use chrono::{DateTime, Utc};

use crate::pg::lsn::Lsn;

const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const RECORD_HEADER: usize = 24;
const RM_XACT_ID: u8 = 1;
const XLOG_XACT_OPMASK: u8 = 0x70;
/// Commit, abort, commit prepared, abort prepared: the records a time target stops at.
const XACT_WITH_TIME: [u8; 4] = [0x00, 0x20, 0x30, 0x40];
const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10;
/// Transaction records larger than this (thousands of subtransactions or invalidations) are
/// skipped rather than held in memory.
const MAX_KEPT_RECORD: u32 = 16 << 20;
/// PostgreSQL's epoch, 2000-01-01 00:00:00 UTC, in Unix microseconds.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentScan {
    /// The latest commit or abort time, in microseconds since 2000-01-01 UTC.
    pub newest_transaction: Option<i64>,
    /// Commit and abort records seen.
    pub transactions: u64,
    /// The end of the last complete record (where replay of this segment can reach).
    pub end_of_records: Option<Lsn>,
}

impl SegmentScan {
    pub fn newest_transaction_time(&self) -> Option<DateTime<Utc>> {
        self.newest_transaction.and_then(postgres_time)
    }
}

/// A `TimestampTz` as a UTC time.
pub fn postgres_time(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros.checked_add(POSTGRES_EPOCH_MICROS)?)
}

/// A UTC time as a `TimestampTz`.
pub fn to_postgres_time(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros() - POSTGRES_EPOCH_MICROS
}

/// A record being read.
struct InRecord {
    lsn: u64,
    total_length: u32,
    taken: u32,
    header: [u8; RECORD_HEADER],
    /// The whole record, for the transaction records we read.
    kept: Option<Vec<u8>>,
}

/// Reads one WAL segment written into it; see the module documentation.
pub struct SegmentScanner {
    page_size: usize,
    page: Vec<u8>,
    pages_done: u64,
    first_page_address: u64,
    record: Option<InRecord>,
    /// Bytes of a record that began in the previous segment, to skip.
    skip: u32,
    previous_record: Option<u64>,
    stopped: bool,
    scan: SegmentScan,
}

impl Default for SegmentScanner {
    fn default() -> Self {
        SegmentScanner::new()
    }
}

impl SegmentScanner {
    pub fn new() -> SegmentScanner {
        SegmentScanner {
            // The long header of the first page says the real size; until then, the default.
            page_size: 8192,
            page: Vec::with_capacity(8192),
            pages_done: 0,
            first_page_address: 0,
            record: None,
            skip: 0,
            previous_record: None,
            stopped: false,
            scan: SegmentScan::default(),
        }
    }

    /// What was found in the bytes written so far.
    pub fn finish(self) -> SegmentScan {
        self.scan
    }

    fn process_page(&mut self) {
        let page = std::mem::take(&mut self.page);
        self.read_page(&page);
        self.page = page;
        self.page.clear();
        self.pages_done += 1;
    }

    fn read_page(&mut self, page: &[u8]) {
        let info = u16_at(page, 2);
        let address = u64_at(page, 8);
        let remaining_length = u32_at(page, 16);
        let header_size = if self.pages_done == 0 {
            if info & XLP_LONG_HEADER == 0 {
                return self.stop();
            }
            self.first_page_address = address;
            LONG_PAGE_HEADER
        } else {
            if address != self.first_page_address + self.pages_done * self.page_size as u64 {
                return self.stop();
            }
            SHORT_PAGE_HEADER
        };
        let continues = info & XLP_FIRST_IS_CONTRECORD != 0;
        if self.pages_done == 0 {
            if continues {
                self.skip = remaining_length;
            }
        } else if let Some(record) = &self.record {
            // The record we are in must go on here, with as many bytes left as we expect.
            if !continues || remaining_length != record.total_length - record.taken {
                return self.stop();
            }
        } else if self.skip > 0 && (!continues || remaining_length != self.skip) {
            return self.stop();
        }
        let mut position = header_size;
        while position < self.page_size && !self.stopped {
            if self.skip > 0 {
                let n = (self.skip as usize).min(self.page_size - position);
                self.skip -= n as u32;
                position += n;
                if self.skip == 0 {
                    position = align8(position);
                }
                continue;
            }
            if self.record.is_some() {
                position = self.take(page, position);
                continue;
            }
            // A new record; its length field is always on this page (records are aligned).
            let total_length = u32_at(page, position);
            if (total_length as usize) < RECORD_HEADER {
                // Zero: the rest of the segment is empty (after a switch, or not written yet).
                return self.stop();
            }
            self.record = Some(InRecord {
                lsn: address + position as u64,
                total_length,
                taken: 0,
                header: [0; RECORD_HEADER],
                kept: None,
            });
            position = self.take(page, position);
        }
    }

    /// Feeds the current record from `page[position..]`; returns the position after it.
    fn take(&mut self, page: &[u8], position: usize) -> usize {
        let record = self.record.as_mut().expect("in a record");
        let wanted = (record.total_length - record.taken) as usize;
        let n = wanted.min(self.page_size - position);
        let bytes = &page[position..position + n];
        let header_part = (RECORD_HEADER - (record.taken as usize).min(RECORD_HEADER)).min(n);
        if header_part > 0 {
            let at = record.taken as usize;
            record.header[at..at + header_part].copy_from_slice(&bytes[..header_part]);
        }
        let header_was_complete = record.taken as usize >= RECORD_HEADER;
        record.taken += n as u32;
        if let Some(kept) = &mut record.kept {
            kept.extend_from_slice(bytes);
        }
        if !header_was_complete && record.taken as usize >= RECORD_HEADER {
            // The header just completed: check the chain, decide whether to keep the record.
            let previous = u64_at(&record.header, 8);
            if self.previous_record.is_some_and(|p| p != previous) {
                self.stop();
                return self.page_size;
            }
            let rmid = record.header[17];
            let info = record.header[16];
            if rmid == RM_XACT_ID
                && XACT_WITH_TIME.contains(&(info & XLOG_XACT_OPMASK))
                && record.total_length <= MAX_KEPT_RECORD
            {
                let mut kept = Vec::with_capacity(record.total_length as usize);
                kept.extend_from_slice(&record.header);
                kept.extend_from_slice(&bytes[header_part..]);
                record.kept = Some(kept);
            }
        }
        let end = position + n;
        if record.taken == record.total_length {
            let done = self.record.take().expect("in a record");
            self.previous_record = Some(done.lsn);
            self.scan.end_of_records = Some(Lsn(done.lsn + done.total_length as u64));
            if let Some(time) = done.kept.as_deref().and_then(transaction_time) {
                self.scan.transactions += 1;
                self.scan.newest_transaction =
                    Some(self.scan.newest_transaction.map_or(time, |t| t.max(time)));
            }
            return align8(end);
        }
        end
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.record = None;
    }
}

impl Write for SegmentScanner {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let written = buf.len();
        while !buf.is_empty() && !self.stopped {
            let n = (self.page_size - self.page.len()).min(buf.len());
            self.page.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.pages_done == 0 && self.page.len() >= LONG_PAGE_HEADER {
                // XLogLongPageHeaderData.xlp_xlog_blcksz: the page size of this cluster.
                let size = u32_at(&self.page, 36) as usize;
                if !(1024..=65536).contains(&size) || !size.is_power_of_two() {
                    self.stop();
                    break;
                }
                self.page_size = size;
            }
            if self.page.len() == self.page_size {
                self.process_page();
            }
        }
        // After the end of valid WAL the rest is read and ignored (the stream is verified).
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The time of a commit or abort record (`kept` holds it whole), from its main data.
fn transaction_time(record: &[u8]) -> Option<i64> {
    let mut position = RECORD_HEADER;
    let main_length = loop {
        let id = *record.get(position)?;
        position += 1;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => break *record.get(position)? as usize,
            XLR_BLOCK_ID_DATA_LONG => {
                break u32_at(record.get(position..position + 4)?, 0) as usize
            }
            XLR_BLOCK_ID_ORIGIN => position += 2,
            XLR_BLOCK_ID_TOPLEVEL_XID => position += 4,
            id if id <= XLR_MAX_BLOCK_ID => {
                let fork_flags = *record.get(position)?;
                position += 3; // fork_flags, data_length
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let image_info = *record.get(position + 4)?;
                    position += 5; // length, hole_offset, bimg_info
                    if image_info & BKPIMAGE_COMPRESSED != 0 && image_info & BKPIMAGE_HAS_HOLE != 0
                    {
                        position += 2; // hole_length
                    }
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    position += 12; // RelFileLocator
                }
                position += 4; // BlockNumber
            }
            _ => return None,
        }
    };
    // The main data comes last; a commit's or abort's begins with its time.
    let start = record.len().checked_sub(main_length)?;
    if main_length < 8 {
        return None;
    }
    Some(i64::from_le_bytes(
        record[start..start + 8].try_into().ok()?,
    ))
}

fn align8(position: usize) -> usize {
    (position + 7) & !7
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 8192;

    /// Builds WAL the way PostgreSQL lays it out, for the parser's edge cases: records are
    /// placed at 8-byte aligned positions and split across pages after each page's header.
    struct WalBuilder {
        bytes: Vec<u8>,
        start: u64,
        previous: u64,
        /// Page addresses are written by `finish`; contrecord lengths as records are placed.
        continuation: Vec<(usize, u32)>,
    }

    impl WalBuilder {
        fn new(start: u64) -> WalBuilder {
            let mut bytes = vec![0u8; LONG_PAGE_HEADER];
            bytes[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
            WalBuilder {
                bytes,
                start,
                previous: 0,
                continuation: Vec::new(),
            }
        }

        /// Appends data bytes, inserting a page header wherever a page begins.
        fn push(&mut self, mut data: &[u8]) {
            while !data.is_empty() {
                if self.bytes.len().is_multiple_of(PAGE) {
                    let remaining = data.len() as u32;
                    self.continuation.push((self.bytes.len(), remaining));
                    self.bytes.extend_from_slice(&[0u8; SHORT_PAGE_HEADER]);
                }
                let room = PAGE - self.bytes.len() % PAGE;
                let n = room.min(data.len());
                self.bytes.extend_from_slice(&data[..n]);
                data = &data[n..];
            }
        }

        /// A record of resource manager `rmid` with `info`, `blocks` block-data bytes in one
        /// block reference (if any) and the given main data.
        fn record(&mut self, rmid: u8, info: u8, blocks: usize, main: &[u8]) -> u64 {
            let mut body = Vec::new();
            if blocks > 0 {
                body.push(0u8); // block id 0
                body.push(0x20); // HAS_DATA, main fork
                body.extend_from_slice(&(blocks as u16).to_le_bytes());
                body.extend_from_slice(&[0u8; 12]); // RelFileLocator
                body.extend_from_slice(&7u32.to_le_bytes()); // BlockNumber
            }
            if main.len() < 256 {
                body.push(XLR_BLOCK_ID_DATA_SHORT);
                body.push(main.len() as u8);
            } else {
                body.push(XLR_BLOCK_ID_DATA_LONG);
                body.extend_from_slice(&(main.len() as u32).to_le_bytes());
            }
            body.extend(std::iter::repeat_n(0xAB, blocks));
            body.extend_from_slice(main);
            let total = (RECORD_HEADER + body.len()) as u32;
            let padding = align8(self.bytes.len()) - self.bytes.len();
            self.bytes.extend(std::iter::repeat_n(0, padding));
            if self.bytes.len().is_multiple_of(PAGE) {
                self.bytes.extend_from_slice(&[0u8; SHORT_PAGE_HEADER]);
            }
            let lsn = self.start + self.bytes.len() as u64;
            let mut header = Vec::new();
            header.extend_from_slice(&total.to_le_bytes());
            header.extend_from_slice(&0u32.to_le_bytes()); // xid
            header.extend_from_slice(&self.previous.to_le_bytes());
            header.push(info);
            header.push(rmid);
            header.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding, crc
            let mut record = header;
            record.extend_from_slice(&body);
            self.push(&record);
            self.previous = lsn;
            lsn
        }

        fn commit(&mut self, time: i64, blocks: usize) -> u64 {
            let mut main = time.to_le_bytes().to_vec();
            main.extend_from_slice(&[0u8; 4]);
            self.record(RM_XACT_ID, 0x00, blocks, &main)
        }

        /// A whole segment of `pages` pages (zero-filled after the records).
        fn finish(mut self, pages: usize) -> Vec<u8> {
            self.bytes.resize(pages * PAGE, 0);
            for page in 0..pages {
                let at = page * PAGE;
                self.bytes[at + 8..at + 16]
                    .copy_from_slice(&(self.start + at as u64).to_le_bytes());
            }
            for (at, remaining) in self.continuation {
                let info = u16_at(&self.bytes, at) | XLP_FIRST_IS_CONTRECORD;
                self.bytes[at + 2..at + 4].copy_from_slice(&info.to_le_bytes());
                self.bytes[at + 16..at + 20].copy_from_slice(&remaining.to_le_bytes());
            }
            // The first page's long header: the page size.
            self.bytes[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
            self.bytes
        }
    }

    fn scan(bytes: &[u8], chunk: usize) -> SegmentScan {
        let mut scanner = SegmentScanner::new();
        for piece in bytes.chunks(chunk) {
            scanner.write_all(piece).unwrap();
        }
        scanner.finish()
    }

    #[test]
    fn finds_the_newest_commit_across_pages_whatever_the_write_sizes() {
        let start = 0x0300_0000;
        let mut wal = WalBuilder::new(start);
        wal.record(10, 0x00, 100, &[1u8; 20]); // a heap record
        wal.commit(1_000, 0);
        // A commit whose block data makes it span three pages.
        wal.commit(3_000, 2 * PAGE);
        wal.record(RM_XACT_ID, 0x20, 0, &2_000i64.to_le_bytes()); // an abort, older
        let last = wal.record(10, 0x00, 50, &[2u8; 30]);
        let segment = wal.finish(8);
        for chunk in [1, 7, 4096, PAGE, 3 * PAGE + 5, segment.len()] {
            let found = scan(&segment, chunk);
            assert_eq!(found.newest_transaction, Some(3_000), "chunk {chunk}");
            assert_eq!(found.transactions, 3, "chunk {chunk}");
            assert!(found.end_of_records.unwrap().0 > last, "chunk {chunk}");
        }
    }

    #[test]
    fn a_record_header_split_by_a_page_boundary_is_reassembled() {
        let mut wal = WalBuilder::new(0x0100_0000);
        // Fill the first page so that the next record starts 8 bytes before its end.
        let first_record_room = PAGE - LONG_PAGE_HEADER - 8;
        let main_length = first_record_room - RECORD_HEADER - 5; // data long header
        wal.record(10, 0x00, 0, &vec![3u8; main_length]);
        assert_eq!(wal.bytes.len(), PAGE - 8);
        wal.commit(42, 0);
        let found = scan(&wal.finish(2), 100);
        assert_eq!(found.newest_transaction, Some(42));
    }

    #[test]
    fn stops_at_the_end_of_valid_wal() {
        // A broken xl_prev chain: what follows is not this segment's WAL.
        let mut wal = WalBuilder::new(0x0100_0000);
        wal.commit(10, 0);
        wal.previous = 12345;
        wal.commit(20, 0);
        assert_eq!(scan(&wal.finish(1), PAGE).newest_transaction, Some(10));

        // A page from another position (a recycled segment's old contents).
        let mut wal = WalBuilder::new(0x0100_0000);
        wal.commit(10, 0);
        wal.commit(20, PAGE);
        let mut segment = wal.finish(3);
        segment[PAGE + 8..PAGE + 16].copy_from_slice(&0x0900_0000u64.to_le_bytes());
        assert_eq!(scan(&segment, 100).newest_transaction, Some(10));

        // Nothing after a zeroed length; an empty segment has no transaction.
        assert_eq!(
            scan(&WalBuilder::new(0).finish(2), PAGE),
            SegmentScan::default()
        );
        // Not WAL at all.
        assert_eq!(scan(&[0xFFu8; 3 * PAGE], PAGE), SegmentScan::default());
    }

    #[test]
    fn a_record_continued_from_the_previous_segment_is_skipped() {
        let mut wal = WalBuilder::new(0x0200_0000);
        // The first page continues 100 bytes of a record begun in the previous segment.
        wal.bytes.extend(std::iter::repeat_n(0xCD, 100));
        wal.continuation.push((0, 100));
        wal.commit(77, 0);
        let mut segment = wal.finish(1);
        let info = u16_at(&segment, 0) | XLP_FIRST_IS_CONTRECORD | XLP_LONG_HEADER;
        segment[2..4].copy_from_slice(&info.to_le_bytes());
        assert_eq!(scan(&segment, 500).newest_transaction, Some(77));
    }

    #[test]
    fn times_convert_from_postgres_epoch() {
        let at = postgres_time(0).unwrap();
        assert_eq!(at.to_rfc3339(), "2000-01-01T00:00:00+00:00");
        assert_eq!(to_postgres_time(at), 0);
    }
}
