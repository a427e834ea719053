//! The host's journal of finished migrations and checkpoints, read by `ferry metrics`: one
//! JSON line per event appended to `<data>/events.jsonl`. When the file grows past
//! [`MAX_BYTES`], the oldest events are folded into one totals line at its top, so it stays
//! small while its counts never go down (Prometheus counters must not).
//!
//! Writing it never fails the operation it records: a journal that cannot be written is
//! logged and skipped.

use crate::host::Host;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Upper bounds of the frozen-time histogram, milliseconds (the last bucket, +Inf, is implied).
pub const BUCKETS_MS: [u64; 10] = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000];
/// Past this size the journal is compacted.
pub const MAX_BYTES: u64 = 256 << 10;
/// Events kept one per line after a compaction; older ones live on only in the totals.
pub const KEEP_EVENTS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Migration,
    Checkpoint,
}

/// One finished operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: Kind,
    pub ctid: String,
    pub ok: bool,
    /// How long the container was frozen (online migrations and checkpoints that succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_ms: Option<u64>,
    /// Unix seconds.
    pub at: u64,
}

impl Event {
    pub fn now(kind: Kind, ctid: &str, ok: bool, frozen_ms: Option<u64>) -> Event {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Event { kind, ctid: ctid.to_string(), ok, frozen_ms, at }
    }
}

/// The counts of one kind of operation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub done: u64,
    pub failed: u64,
    /// Events per histogram bucket (not cumulative): `BUCKETS_MS.len() + 1` entries, the last
    /// for longer than every bound.
    pub frozen_buckets: Vec<u64>,
    pub frozen_sum_ms: u64,
}

impl Counts {
    fn add(&mut self, e: &Event) {
        if e.ok {
            self.done += 1;
        } else {
            self.failed += 1;
        }
        if let (true, Some(ms)) = (e.ok, e.frozen_ms) {
            self.frozen_buckets.resize(BUCKETS_MS.len() + 1, 0);
            let i = BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(BUCKETS_MS.len());
            self.frozen_buckets[i] += 1;
            self.frozen_sum_ms += ms;
        }
    }

    fn merge(&mut self, o: &Counts) {
        self.done += o.done;
        self.failed += o.failed;
        self.frozen_sum_ms += o.frozen_sum_ms;
        self.frozen_buckets.resize(BUCKETS_MS.len() + 1, 0);
        for (a, b) in self.frozen_buckets.iter_mut().zip(&o.frozen_buckets) {
            *a += b;
        }
    }

    /// Frozen-time observations in all.
    pub fn frozen_count(&self) -> u64 {
        self.frozen_buckets.iter().sum()
    }

    /// The cumulative count at each bound of [`BUCKETS_MS`], then +Inf.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut acc = 0;
        (0..=BUCKETS_MS.len())
            .map(|i| {
                acc += self.frozen_buckets.get(i).copied().unwrap_or(0);
                acc
            })
            .collect()
    }
}

/// Everything the journal holds, summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub migration: Counts,
    pub checkpoint: Counts,
}

impl Totals {
    pub fn add(&mut self, e: &Event) {
        match e.kind {
            Kind::Migration => self.migration.add(e),
            Kind::Checkpoint => self.checkpoint.add(e),
        }
    }
    fn merge(&mut self, o: &Totals) {
        self.migration.merge(&o.migration);
        self.checkpoint.merge(&o.checkpoint);
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    Event(Event),
    Totals(Totals),
}

pub fn path(host: &Host) -> PathBuf {
    host.data_dir.join("events.jsonl")
}

fn lock(host: &Host) -> std::io::Result<Flock<File>> {
    let locks = host.data_dir.join("locks");
    std::fs::create_dir_all(&locks)?;
    let f = OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(locks.join("+events.lock"))?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))
}

/// Append `e` (best effort: a failure is logged, never returned).
pub fn record(host: &Host, e: &Event) {
    if let Err(err) = try_record(host, e) {
        tracing::warn!("cannot write the event journal {}: {err}", path(host).display());
    }
}

fn try_record(host: &Host, e: &Event) -> std::io::Result<()> {
    if !host.data_dir.is_dir() {
        return Ok(()); // no data dir, no containers: nothing to record into
    }
    let _guard = lock(host)?;
    let p = path(host);
    let mut line = serde_json::to_string(&Line::Event(e.clone())).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut f = OpenOptions::new().append(true).create(true).mode(0o600).open(&p)?;
    f.write_all(line.as_bytes())?;
    if f.metadata()?.len() > MAX_BYTES {
        compact(&p, KEEP_EVENTS)?;
    }
    Ok(())
}

fn read_lines(p: &Path) -> std::io::Result<Vec<Line>> {
    let f = match File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // A torn or foreign line is skipped, not fatal: the journal only feeds figures.
    Ok(BufReader::new(f).lines().map_while(|l| l.ok()).filter_map(|l| serde_json::from_str(&l).ok()).collect())
}

/// Fold all but the last `keep` events into one totals line (the caller holds the lock).
fn compact(p: &Path, keep: usize) -> std::io::Result<()> {
    let lines = read_lines(p)?;
    let events: Vec<&Event> = lines.iter().filter_map(|l| if let Line::Event(e) = l { Some(e) } else { None }).collect();
    let cut = events.len().saturating_sub(keep);
    let mut totals = Totals::default();
    for l in &lines {
        if let Line::Totals(t) = l {
            totals.merge(t);
        }
    }
    for e in &events[..cut] {
        totals.add(e);
    }
    let mut out = serde_json::to_string(&Line::Totals(totals)).map_err(std::io::Error::other)?;
    out.push('\n');
    for e in &events[cut..] {
        out.push_str(&serde_json::to_string(&Line::Event((*e).clone())).map_err(std::io::Error::other)?);
        out.push('\n');
    }
    // Through the one atomic writer (fsynced, and its directory): the totals line must
    // outlive a crash, or the counters would go down.
    crate::util::write_atomic_mode(p, out.as_bytes(), Some(0o600)).map_err(std::io::Error::other)
}

/// The sums of everything the journal of `host` holds (all zero when there is none).
pub fn totals(host: &Host) -> std::io::Result<Totals> {
    totals_of(&path(host))
}

fn totals_of(p: &Path) -> std::io::Result<Totals> {
    let mut t = Totals::default();
    for l in read_lines(p)? {
        match l {
            Line::Event(e) => t.add(&e),
            Line::Totals(s) => t.merge(&s),
        }
    }
    Ok(t)
}

/// The events still kept one per line, oldest first.
pub fn events(host: &Host) -> std::io::Result<Vec<Event>> {
    Ok(read_lines(&path(host))?.into_iter().filter_map(|l| if let Line::Event(e) = l { Some(e) } else { None }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(d: &Path) -> Host {
        Host::new(d, d.join("run"), "ferry-test")
    }

    #[test]
    fn counts_and_histogram() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        record(&h, &Event::now(Kind::Migration, "101", true, Some(80)));
        record(&h, &Event::now(Kind::Migration, "102", true, Some(700)));
        record(&h, &Event::now(Kind::Migration, "103", false, None));
        record(&h, &Event::now(Kind::Checkpoint, "101", true, Some(120_000)));
        let t = totals(&h).unwrap();
        assert_eq!((t.migration.done, t.migration.failed), (2, 1));
        assert_eq!(t.migration.frozen_sum_ms, 780);
        let c = t.migration.cumulative();
        assert_eq!(c[0], 0, "50 ms bucket");
        assert_eq!(c[1], 1, "100 ms bucket");
        assert_eq!(c[4], 2, "1 s bucket");
        assert_eq!(*c.last().unwrap(), 2);
        assert_eq!(t.checkpoint.cumulative()[BUCKETS_MS.len() - 1], 0, "two minutes is past every bound");
        assert_eq!(t.checkpoint.frozen_count(), 1);
        assert_eq!(events(&h).unwrap().len(), 4);
    }

    #[test]
    fn compaction_keeps_counts_and_bounds_the_file() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        let n = 6000;
        for i in 0..n {
            record(&h, &Event::now(Kind::Checkpoint, &format!("{}", 100 + i % 7), i % 10 != 0, Some((i % 300) as u64)));
        }
        let len = std::fs::metadata(path(&h)).unwrap().len();
        assert!(len <= MAX_BYTES + 200, "journal is {len} bytes");
        let t = totals(&h).unwrap();
        assert_eq!(t.checkpoint.done + t.checkpoint.failed, n as u64);
        assert_eq!(t.checkpoint.failed, (n / 10) as u64);
        assert_eq!(t.checkpoint.frozen_count(), t.checkpoint.done);
        let kept = events(&h).unwrap().len();
        assert!((KEEP_EVENTS..n as usize).contains(&kept), "{kept} events kept");
    }

    #[test]
    fn a_torn_line_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        record(&h, &Event::now(Kind::Migration, "101", true, Some(10)));
        std::fs::OpenOptions::new().append(true).open(path(&h)).unwrap().write_all(b"{\"event\":{\"kin").unwrap();
        std::fs::OpenOptions::new().append(true).open(path(&h)).unwrap().write_all(b"\n").unwrap();
        record(&h, &Event::now(Kind::Migration, "102", false, None));
        let t = totals(&h).unwrap();
        assert_eq!((t.migration.done, t.migration.failed), (1, 1));
    }
}
