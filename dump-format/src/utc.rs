//! Unix time as a UTC civil date and time, without a date library (Howard Hinnant's
//! days-to-civil algorithm). The one date routine of ferry: image manifests, snapshot lists.

/// A moment in UTC, to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl UtcTime {
    pub fn from_unix(secs: i64) -> UtcTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime { year, month: month as u32, day: day as u32, hour: (rem / 3600) as u32, minute: (rem % 3600 / 60) as u32, second: (rem % 60) as u32 }
    }

    /// RFC 3339 ("2023-11-14T22:13:20Z"), with milliseconds when `nanos` has any.
    pub fn rfc3339(&self, nanos: u32) -> String {
        let UtcTime { year, month, day, hour, minute, second } = *self;
        if nanos == 0 {
            format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
        } else {
            format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z", nanos / 1_000_000)
        }
    }
}

/// "2023-11-14 22:13:20": for tables.
impl std::fmt::Display for UtcTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let UtcTime { year, month, day, hour, minute, second } = *self;
        write!(f, "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::UtcTime;

    #[test]
    fn known_dates() {
        assert_eq!(UtcTime::from_unix(0).rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(UtcTime::from_unix(1_700_000_000).rfc3339(0), "2023-11-14T22:13:20Z");
        assert_eq!(UtcTime::from_unix(951_782_400).rfc3339(5_000_000), "2000-02-29T00:00:00.005Z");
        assert_eq!(UtcTime::from_unix(-1).rfc3339(0), "1969-12-31T23:59:59Z");
        assert_eq!(UtcTime::from_unix(0).to_string(), "1970-01-01 00:00:00");
        assert_eq!(UtcTime::from_unix(1_700_000_000).to_string(), "2023-11-14 22:13:20");
    }
}
