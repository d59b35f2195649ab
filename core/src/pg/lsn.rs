//! WAL positions and segment names, as PostgreSQL prints and computes them.

use std::fmt;
use std::str::FromStr;

/// A WAL position (`XLogRecPtr`), written `X/Y` in hexadecimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(text: &str) -> Result<Lsn, String> {
        let invalid = || {
            format!(
                "\"{text}\" is not a WAL location (expected X/Y in hexadecimal, like 0/16B3748)"
            )
        };
        let (high, low) = text.trim().split_once('/').ok_or_else(invalid)?;
        if high.is_empty() || low.is_empty() || high.len() > 8 || low.len() > 8 {
            return Err(invalid());
        }
        let high = u64::from_str_radix(high, 16).map_err(|_| invalid())?;
        let low = u64::from_str_radix(low, 16).map_err(|_| invalid())?;
        Ok(Lsn((high << 32) | low))
    }
}

/// The name of the WAL segment holding `lsn` on `timeline` (XLogFileName).
pub fn segment_name(timeline: u32, lsn: Lsn, segment_size: u64) -> String {
    let segment = lsn.0 / segment_size;
    let per_id = 0x1_0000_0000 / segment_size;
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segment / per_id,
        segment % per_id
    )
}

/// Every segment from the one holding `start` to the one holding the last byte before `stop`.
pub fn segments_between(timeline: u32, start: Lsn, stop: Lsn, segment_size: u64) -> Vec<String> {
    let first = start.0 / segment_size;
    let last = stop.0.saturating_sub(1).max(start.0) / segment_size;
    (first..=last)
        .map(|segment| segment_name(timeline, Lsn(segment * segment_size), segment_size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB16: u64 = 16 << 20;

    #[test]
    fn parse_and_print() {
        let lsn: Lsn = "0/16B3748".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16B3748));
        assert_eq!(lsn.to_string(), "0/16B3748");
        assert_eq!("A/0".parse::<Lsn>().unwrap().to_string(), "A/0");
        for bad in ["", "0", "/1", "x/1", "1/", "123456789/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn segment_names_match_postgres() {
        assert_eq!(
            segment_name(1, "0/16B3748".parse().unwrap(), MIB16),
            "000000010000000000000001"
        );
        assert_eq!(
            segment_name(2, "1/FF000000".parse().unwrap(), MIB16),
            "0000000200000001000000FF"
        );
        // 1 MiB segments: 4096 per "log id".
        assert_eq!(
            segment_name(1, Lsn(0x2E << 20), 1 << 20),
            "00000001000000000000002E"
        );
        assert_eq!(
            segment_name(1, Lsn(0x1002 << 20), 1 << 20),
            "000000010000000100000002"
        );
        assert_eq!(
            segments_between(
                1,
                "0/2000028".parse().unwrap(),
                "0/4000000".parse().unwrap(),
                MIB16
            ),
            ["000000010000000000000002", "000000010000000000000003"]
        );
        assert_eq!(
            segments_between(
                1,
                "0/2000028".parse().unwrap(),
                "0/2000100".parse().unwrap(),
                MIB16
            ),
            ["000000010000000000000002"]
        );
    }
}
