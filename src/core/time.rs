//! Time as PASETO writes it: RFC 3339 timestamps, and durations as the CLI takes them.
//!
//! Times are whole Unix seconds (`i64`). The decision core never reads the clock:
//! callers pass `now` in, so tests and fuzzers control time.

use std::fmt;

/// Seconds since the Unix epoch, now (the one place the wall clock is read).
pub fn unix_now() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Parses an RFC 3339 date-time (`2039-01-01T00:00:00Z`, `…+02:00`, fractions allowed)
/// into Unix seconds. Fractions of a second are truncated toward the past.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    parse_rfc3339_parts(s).map(|(secs, _)| secs)
}

/// The whole seconds, truncated, and whether a non-zero fraction was cut off: with
/// it, the first whole second at or after the moment (an `iat` compared with the
/// whole second of a revocation: `12:00:00.5` is after `12:00:00`).
pub fn parse_rfc3339_parts(s: &str) -> Option<(i64, bool)> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(r)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // Leap seconds (60) are accepted and counted as the next second, as most libraries do.
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut fraction = false;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            fraction |= b[i] != b'0';
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    Some((secs, fraction))
}

/// A `Display` adapter that writes Unix seconds as RFC 3339 UTC without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339(pub i64);

impl Rfc3339 {
    /// The text, for a four-digit year (all real ones): `None` otherwise. Written by
    /// hand: `write!` with padding is ~10x the cost, and this runs per first-message
    /// session (the `authenticated` frame) and three times per ticket.
    pub fn ascii(self) -> Option<[u8; 20]> {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return None;
        }
        let (h, min, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let mut b = *b"0000-00-00T00:00:00Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, m);
        put(8, 2, d);
        put(11, 2, h);
        put(14, 2, min);
        put(17, 2, s);
        Some(b)
    }

    /// Appends the text to `out`.
    pub fn push_to(self, out: &mut Vec<u8>) {
        match self.ascii() {
            Some(b) => out.extend_from_slice(&b),
            None => {
                use std::io::Write as _;
                let _ = write!(out, "{self}");
            }
        }
    }
}

/// A time claim's text, kept when writing its Unix seconds back would not give it
/// (an `exp` is shown as issued, `docs/protocol.md#which-exp`): a fraction, an offset,
/// a lower-case `t` or `z`, a leap second. `None` for the form [`Rfc3339`] writes. For
/// text that [`parse_rfc3339`] read: such text needs no JSON escape.
pub fn text_unless_canonical(text: &str) -> Option<Box<str>> {
    let b = text.as_bytes();
    let canonical = b.len() == 20 && b[10] == b'T' && b[19] == b'Z' && &b[17..19] != b"60";
    // Longer than any real one (nanoseconds and an offset: 35 bytes) is shown as
    // written by us: a ticket carries the text, and must stay under 8 KiB.
    (!canonical && b.len() <= 40).then(|| text.into())
}

/// Appends a time as issued: its kept `text` (see [`text_unless_canonical`]), else
/// `unix` as [`Rfc3339`] writes it.
pub fn push_as_issued(out: &mut String, unix: i64, text: Option<&str>) {
    if let Some(t) = text {
        return out.push_str(t);
    }
    match Rfc3339(unix).ascii() {
        // Only ASCII digits were written into an ASCII template.
        Some(b) => out.push_str(std::str::from_utf8(&b).unwrap_or_default()),
        None => {
            use std::fmt::Write as _;
            let _ = write!(out, "{}", Rfc3339(unix));
        }
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(b) = self.ascii() {
            // Only ASCII digits were written into an ASCII template.
            return f.write_str(std::str::from_utf8(&b).unwrap_or_default());
        }
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (h, min, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
    }
}

/// Parses a duration as the CLI takes it: `90` (seconds), `30s`, `15m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mul)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-date algorithms (public domain).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_rfc3339(t: i64) -> String {
        Rfc3339(t).to_string()
    }

    /// `push_to` writes what `Display` writes, on both sides of the four-digit years.
    #[test]
    fn push_to_writes_the_display_text() {
        for t in [
            0,
            1,
            86_399,
            951_782_400,
            2_000_000_000,
            253_402_300_799,
            253_402_300_800,
            -62_167_219_201,
            -1,
        ] {
            let mut out = Vec::new();
            Rfc3339(t).push_to(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format_rfc3339(t), "{t}");
        }
    }

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2022-01-01T00:00:00+00:00"),
            Some(1_640_995_200)
        );
        assert_eq!(
            parse_rfc3339("2022-01-01T02:00:00+02:00"),
            Some(1_640_995_200)
        );
        assert_eq!(
            parse_rfc3339("2021-12-31T23:00:00-01:00"),
            Some(1_640_995_200)
        );
        assert_eq!(
            parse_rfc3339("2022-01-01T00:00:00.999Z"),
            Some(1_640_995_200)
        );
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        // Rounded up: a fraction that is not zero is the next whole second.
        let up = |s| parse_rfc3339_parts(s).map(|(secs, f)| secs + i64::from(f));
        assert_eq!(up("2022-01-01T00:00:00.001Z"), Some(1_640_995_201));
        assert_eq!(up("2022-01-01T02:00:00.5+02:00"), Some(1_640_995_201));
        assert_eq!(up("2022-01-01T00:00:00.000Z"), Some(1_640_995_200));
        assert_eq!(up("2022-01-01T00:00:00Z"), Some(1_640_995_200));
        assert_eq!(up("2022-01-01T00:00:00.Z"), None);
    }

    #[test]
    fn times_are_shown_as_issued() {
        for canonical in ["2022-01-01T00:00:00Z", "2039-12-31T23:59:59Z"] {
            assert_eq!(text_unless_canonical(canonical), None);
        }
        for kept in [
            "2022-01-01T00:00:00.250Z",
            "2022-01-01T02:00:00+02:00",
            "2022-01-01t00:00:00z",
            "2022-01-01 00:00:00Z",
            "2016-12-31T23:59:60Z",
        ] {
            assert_eq!(text_unless_canonical(kept).as_deref(), Some(kept));
        }
        // Longer than any real time's text: not kept (a ticket carries it).
        let long = format!("2022-01-01T00:00:00.{}Z", "1".repeat(30));
        assert_eq!(text_unless_canonical(&long), None);
        let mut out = String::new();
        push_as_issued(&mut out, 1_640_995_200, None);
        out.push(' ');
        push_as_issued(&mut out, 1_640_995_200, Some("2022-01-01T02:00:00+02:00"));
        assert_eq!(out, "2022-01-01T00:00:00Z 2022-01-01T02:00:00+02:00");
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "",
            "2022-01-01",
            "2022-01-01T00:00:00",
            "2022-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2022-01-01T24:00:00Z",
            "2022-01-01T00:00:00.Z",
            "2022-01-01T00:00:00+0000",
            "2022-01-01T00:00:00Zjunk",
            "२०२२-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_and_round_trips() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(1_709_209_845), "2024-02-29T12:30:45Z");
        assert_eq!(format_rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        // Outside four-digit years: the general path.
        assert_eq!(format_rfc3339(253_402_300_800), "10000-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(-62_167_219_201), "-001-12-31T23:59:59Z");
        for t in [
            -86_401,
            0,
            951_782_400,
            1_709_164_800,
            4_102_444_800,
            253_402_300_799,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(30));
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("1d"), Some(86_400));
        assert_eq!(parse_duration("45"), Some(45));
        for bad in ["", "m", "15x", "-5s", "1.5h", "99999999999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
