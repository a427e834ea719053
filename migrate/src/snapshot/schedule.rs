//! Snapshot schedules and retention: pure functions over snapshot times, with the clock passed
//! in so `snapshot run-due` can be tested without waiting.

use std::collections::BTreeSet;

/// Parse durations such as "30s", "15m", "1h", "1d", "1h30m" into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let err = || format!("invalid duration {s:?}: use a number with s, m, h or d, e.g. 15m or 1h30m");
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(err()),
        };
        let n: u64 = num.parse().map_err(|_| err())?;
        total = total.checked_add(n.checked_mul(unit).ok_or_else(err)?).ok_or_else(err)?;
        num.clear();
    }
    if !num.is_empty() {
        // A bare number means seconds.
        total = total.checked_add(num.parse::<u64>().map_err(|_| err())?).ok_or_else(err)?;
    }
    if total == 0 {
        return Err(format!("invalid duration {s:?}: must be greater than zero"));
    }
    Ok(total)
}

/// Is a scheduled snapshot due at `now`, given the newest scheduled snapshot's time?
pub fn is_due(every_secs: u64, last: Option<i64>, now: i64) -> bool {
    match last {
        None => true,
        Some(t) => now.saturating_sub(t) >= every_secs as i64,
    }
}

/// One snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// Taken by the schedule (only those are pruned; named, manual snapshots are kept).
    pub auto: bool,
}

/// Which scheduled snapshots to delete: keep the newest `keep`, plus the newest one of each of
/// the `keep_daily` most recent days (UTC) that have any.
pub fn to_prune(cands: &[Candidate], keep: u32, keep_daily: u32) -> Vec<String> {
    let mut auto: Vec<&Candidate> = cands.iter().filter(|c| c.auto).collect();
    auto.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    let mut kept: BTreeSet<&str> = auto.iter().take(keep as usize).map(|c| c.id.as_str()).collect();
    let mut days_seen = BTreeSet::new();
    for c in &auto {
        if days_seen.len() >= keep_daily as usize {
            break;
        }
        let day = c.created.div_euclid(86400);
        if days_seen.insert(day) {
            kept.insert(c.id.as_str());
        }
    }
    auto.iter().filter(|c| !kept.contains(c.id.as_str())).map(|c| c.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), 30);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("2d").unwrap(), 172800);
        assert_eq!(parse_duration("90").unwrap(), 90);
        for bad in ["", "0m", "1x", "h", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn due() {
        assert!(is_due(3600, None, 0));
        assert!(!is_due(3600, Some(1000), 4599));
        assert!(is_due(3600, Some(1000), 4600));
    }

    fn c(id: &str, created: i64, auto: bool) -> Candidate {
        Candidate { id: id.into(), created, auto }
    }

    #[test]
    fn keeps_newest_and_dailies_and_manual() {
        let day = 86400;
        let cands = vec![
            c("a", 0, true),
            c("b", 3600, true),
            c("c", day + 10, true),
            c("d", day + 20, true),
            c("e", 2 * day + 5, true),
            c("f", 2 * day + 6, true),
            c("manual", 1, false),
        ];
        // keep 2 newest (f, e) + newest of 3 days (f for day 2, d for day 1, b for day 0).
        let mut p = to_prune(&cands, 2, 3);
        p.sort();
        assert_eq!(p, vec!["a", "c"]);
        let mut p = to_prune(&cands, 1, 0);
        p.sort();
        assert_eq!(p, vec!["a", "b", "c", "d", "e"]);
        assert!(to_prune(&cands, 10, 0).is_empty());
    }
}
