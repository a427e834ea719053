//! Evacuating a host: every container (or those chosen) moves to one of several destinations.
//! The decisions live here: the order (largest memory last, or as given), every preflight
//! first, the destination with the most room left as the preflights report it, skipping what
//! no destination takes, N moves at a time, and stopping after a failed move unless told to
//! keep going. The moving itself goes through a [`Mover`] (ssh and the migration for real, a
//! fake in the unit tests).

use crate::migration::report::MigrationReport;
use ferry_runtime::exit::ErrorClass;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A container to move.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub ctid: String,
    pub running: bool,
    /// Memory in use (0 when stopped).
    pub memory: u64,
}

/// What a destination's preflight reported free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Room {
    pub free_memory: u64,
    pub free_disk: u64,
}

/// A move that failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
}

/// How containers move: a preflight only (nothing changes), or the migration.
pub trait Mover: Sync {
    fn preflight(&self, ct: &Candidate, dest: &str) -> Result<Room, Failure>;
    fn migrate(&self, ct: &Candidate, dest: &str) -> Result<MigrationReport, Failure>;
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// Moves at a time (at least 1).
    pub parallel: usize,
    /// Go on with the others after a failed move.
    pub keep_going: bool,
    /// Preflights only: say what would move where.
    pub dry_run: bool,
    /// Keep the order the containers were given in (else largest memory last).
    pub keep_order: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { parallel: 1, keep_going: false, dry_run: false, keep_order: false }
    }
}

/// What became of one container.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// It runs (or sits, stopped) on `destination` now.
    Moved { destination: String, mode: String, frozen_ms: u64, total_ms: u64 },
    /// Dry run: it would go to `destination`.
    WouldMove { destination: String },
    /// Every destination's preflight refused it: it stays, untouched.
    Skipped { refused: Vec<Refusal> },
    /// Its move failed and was rolled back: it is here as it was.
    Failed { destination: String, class: ErrorClass, message: String },
    /// Not tried: an earlier failure stopped the evacuation.
    NotTried,
}

/// One destination's preflight saying no.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    pub destination: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub ctid: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub entries: Vec<Entry>,
}

impl Summary {
    pub fn moved(&self) -> usize {
        self.entries.iter().filter(|e| matches!(e.outcome, Outcome::Moved { .. } | Outcome::WouldMove { .. })).count()
    }

    /// The class the exit code comes from when not everything moved (None: all did).
    pub fn failure_class(&self) -> Option<ErrorClass> {
        let classes = self.entries.iter().filter_map(|e| match &e.outcome {
            Outcome::Moved { .. } | Outcome::WouldMove { .. } => None,
            Outcome::Failed { class, .. } => Some(*class),
            Outcome::Skipped { .. } => Some(ErrorClass::MigrationRefused),
            Outcome::NotTried => Some(ErrorClass::MigrationFailed),
        });
        ErrorClass::most_urgent(classes)
    }
}

/// Largest memory last (a stable sort: equal ones keep their order), unless `keep_order`.
pub fn order(mut cts: Vec<Candidate>, keep_order: bool) -> Vec<Candidate> {
    if !keep_order {
        cts.sort_by_key(|c| c.memory);
    }
    cts
}

/// The destination among those whose preflight passed: the most memory left after
/// what was already given to each (then the most disk, then the first given).
pub fn choose<'a>(passed: &[(&'a str, Room)], given: &HashMap<&str, u64>) -> Option<&'a str> {
    passed
        .iter()
        .enumerate()
        .max_by_key(|(i, (d, r))| (r.free_memory.saturating_sub(given.get(d).copied().unwrap_or(0)), r.free_disk, std::cmp::Reverse(*i)))
        .map(|(_, (d, _))| *d)
}

/// What goes where: each container's destination, or every destination's refusal.
pub fn plan(mover: &dyn Mover, cts: &[Candidate], dests: &[String]) -> Vec<Result<String, Vec<Refusal>>> {
    let mut given: HashMap<&str, u64> = HashMap::new();
    cts.iter()
        .map(|ct| {
            let mut passed = Vec::new();
            let mut refused = Vec::new();
            for d in dests {
                match mover.preflight(ct, d) {
                    Ok(room) => {
                        // Never more than a destination has free, counting what this
                        // evacuation already sends it (0: a peer too old to say; its preflight
                        // decides).
                        let left = room.free_memory.saturating_sub(given.get(d.as_str()).copied().unwrap_or(0));
                        if room.free_memory > 0 && left < ct.memory {
                            let reason = format!("not enough memory: {left} bytes free after what this evacuation sends there, {} needed", ct.memory);
                            refused.push(Refusal { destination: d.clone(), reason });
                        } else {
                            passed.push((d.as_str(), room));
                        }
                    }
                    Err(f) => refused.push(Refusal { destination: d.clone(), reason: f.message }),
                }
            }
            match choose(&passed, &given) {
                Some(d) => {
                    *given.entry(d).or_default() += ct.memory;
                    Ok(d.to_string())
                }
                None => Err(refused),
            }
        })
        .collect()
}

/// Evacuate: order, preflight everything, then move `policy.parallel` at a time.
/// `on_event` hears each move start and end (for a progress line).
pub fn evacuate(mover: &dyn Mover, cts: Vec<Candidate>, dests: &[String], policy: &Policy, on_event: &(dyn Fn(&str) + Sync)) -> Summary {
    let cts = order(cts, policy.keep_order);
    let planned = plan(mover, &cts, dests);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; cts.len()];
    let mut queue = VecDeque::new();
    for (i, p) in planned.iter().enumerate() {
        match p {
            Err(refused) => outcomes[i] = Some(Outcome::Skipped { refused: refused.clone() }),
            Ok(d) if policy.dry_run => outcomes[i] = Some(Outcome::WouldMove { destination: d.clone() }),
            Ok(d) => queue.push_back((i, d.clone())),
        }
    }
    let queue = Mutex::new(queue);
    let stopped = std::sync::atomic::AtomicBool::new(false);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..policy.parallel.max(1) {
            s.spawn(|| loop {
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Some((i, dest)) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else { return };
                let ct = &cts[i];
                on_event(&format!("moving {} to {dest}", ct.ctid));
                let out = match mover.migrate(ct, &dest) {
                    Ok(r) => {
                        on_event(&format!("moved {} to {dest} ({}, frozen {} ms)", ct.ctid, r.mode, r.frozen_ms));
                        Outcome::Moved { destination: dest, mode: r.mode, frozen_ms: r.frozen_ms, total_ms: r.total_ms }
                    }
                    Err(f) => {
                        on_event(&format!("{} did not move to {dest}: {}", ct.ctid, f.message));
                        if !policy.keep_going || f.class == ErrorClass::MigrationNeedsAction {
                            stopped.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        Outcome::Failed { destination: dest, class: f.class, message: f.message }
                    }
                };
                results.lock().unwrap_or_else(|e| e.into_inner()).push((i, out));
            });
        }
    });
    for (i, out) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        outcomes[i] = Some(out);
    }
    let entries = cts.into_iter().zip(outcomes).map(|(c, o)| Entry { ctid: c.ctid, outcome: o.unwrap_or(Outcome::NotTried) }).collect();
    Summary { entries }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Destinations with fixed room; `refuse` lists (ctid, dest) preflights that fail,
    /// `fail` the CTIDs whose move fails. Records every call.
    #[derive(Default)]
    struct Fake {
        rooms: Vec<(&'static str, Room)>,
        refuse: Vec<(&'static str, &'static str)>,
        fail: Vec<&'static str>,
        calls: Mutex<Vec<String>>,
    }

    impl Mover for Fake {
        fn preflight(&self, ct: &Candidate, dest: &str) -> Result<Room, Failure> {
            self.calls.lock().unwrap().push(format!("preflight {} {dest}", ct.ctid));
            if self.refuse.iter().any(|(c, d)| *c == ct.ctid && *d == dest) {
                return Err(Failure { class: ErrorClass::MigrationRefused, message: format!("{} exists on {dest}", ct.ctid) });
            }
            Ok(self.rooms.iter().find(|(d, _)| *d == dest).map(|(_, r)| *r).unwrap())
        }
        fn migrate(&self, ct: &Candidate, dest: &str) -> Result<MigrationReport, Failure> {
            self.calls.lock().unwrap().push(format!("migrate {} {dest}", ct.ctid));
            if self.fail.contains(&ct.ctid.as_str()) {
                return Err(Failure { class: ErrorClass::MigrationFailed, message: "restore failed".into() });
            }
            Ok(MigrationReport { mode: "online".into(), frozen_ms: 42, ..Default::default() })
        }
    }

    fn ct(id: &str, memory: u64) -> Candidate {
        Candidate { ctid: id.into(), running: true, memory }
    }
    const GIB: u64 = 1 << 30;
    fn room(mem: u64) -> Room {
        Room { free_memory: mem * GIB, free_disk: 100 * GIB }
    }
    fn dests() -> Vec<String> {
        vec!["h1".into(), "h2".into()]
    }
    fn quiet(_: &str) {}

    #[test]
    fn largest_memory_last_unless_the_order_is_given() {
        let cts = vec![ct("a", 3), ct("b", 1), ct("c", 2), ct("d", 1)];
        let ids = |v: Vec<Candidate>| v.into_iter().map(|c| c.ctid).collect::<Vec<_>>();
        assert_eq!(ids(order(cts.clone(), false)), ["b", "d", "c", "a"]);
        assert_eq!(ids(order(cts, true)), ["a", "b", "c", "d"]);
    }

    #[test]
    fn each_goes_where_most_memory_is_left() {
        let fake = Fake { rooms: vec![("h1", room(4)), ("h2", room(3))], ..Default::default() };
        // 2 GiB to h1 (4 free) leaves 2; then 2 GiB to h2 (3 free) leaves 1; then 1 GiB to h1.
        let cts = vec![ct("a", 2 * GIB), ct("b", 2 * GIB), ct("c", GIB)];
        let p = plan(&fake, &cts, &dests());
        assert_eq!(p, vec![Ok("h1".into()), Ok("h2".into()), Ok("h1".into())]);
    }

    #[test]
    fn no_destination_gets_more_than_it_has_free() {
        // 3 GiB free on each: the first 2 GiB container fits on h1, the second on h2, the
        // third nowhere (1 GiB left on each) and is refused naming memory, never overcommitted.
        let fake = Fake { rooms: vec![("h1", room(3)), ("h2", room(3))], ..Default::default() };
        let p = plan(&fake, &[ct("a", 2 * GIB), ct("b", 2 * GIB), ct("c", 2 * GIB)], &dests());
        assert_eq!(p[..2], [Ok("h1".into()), Ok("h2".into())]);
        let refused = p[2].clone().unwrap_err();
        assert!(refused.len() == 2 && refused.iter().all(|r| r.reason.contains("not enough memory")), "{refused:?}");
        // A peer too old to report its memory (0) is left to its own preflight.
        let fake = Fake {
            rooms: vec![("h1", Room { free_memory: 0, free_disk: GIB }), ("h2", Room { free_memory: 0, free_disk: GIB })],
            ..Default::default()
        };
        assert_eq!(plan(&fake, &[ct("a", 2 * GIB)], &dests()), vec![Ok("h1".into())]);
    }

    #[test]
    fn a_tie_in_memory_goes_by_disk_then_by_the_order_given() {
        let fake = Fake { rooms: vec![("h1", room(4)), ("h2", Room { free_memory: 4 * GIB, free_disk: 200 * GIB })], ..Default::default() };
        assert_eq!(plan(&fake, &[ct("a", 0)], &dests()), vec![Ok("h2".into())]);
        let fake = Fake { rooms: vec![("h1", room(4)), ("h2", room(4))], ..Default::default() };
        assert_eq!(plan(&fake, &[ct("a", 0)], &dests()), vec![Ok("h1".into())]);
    }

    #[test]
    fn refused_everywhere_is_skipped_and_the_others_move() {
        let fake = Fake { rooms: vec![("h1", room(4)), ("h2", room(8))], refuse: vec![("b", "h1"), ("b", "h2"), ("a", "h2")], ..Default::default() };
        let s = evacuate(&fake, vec![ct("a", 1), ct("b", 2), ct("c", 3)], &dests(), &Policy::default(), &quiet);
        assert_eq!(s.entries[0].ctid, "a");
        assert!(matches!(&s.entries[0].outcome, Outcome::Moved { destination, .. } if destination == "h1"), "{s:?}");
        match &s.entries[1].outcome {
            Outcome::Skipped { refused } => {
                assert_eq!(refused.len(), 2);
                assert!(refused[0].reason.contains("b exists on h1"), "{refused:?}");
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(&s.entries[2].outcome, Outcome::Moved { destination, .. } if destination == "h2"), "{s:?}");
        assert_eq!(s.moved(), 2);
        assert_eq!(s.failure_class(), Some(ErrorClass::MigrationRefused));
        let calls = fake.calls.lock().unwrap();
        let first_move = calls.iter().position(|c| c.starts_with("migrate")).unwrap();
        assert!(calls[..first_move].len() == 6 && calls[first_move..].iter().all(|c| c.starts_with("migrate")), "all preflights first: {calls:?}");
        assert!(!calls.iter().any(|c| c == "migrate b h1" || c == "migrate b h2"), "{calls:?}");
    }

    #[test]
    fn a_failed_move_stops_the_rest_unless_keep_going() {
        let rooms = vec![("h1", room(4)), ("h2", room(4))];
        let fake = Fake { rooms: rooms.clone(), fail: vec!["b"], ..Default::default() };
        let s = evacuate(&fake, vec![ct("a", 1), ct("b", 2), ct("c", 3)], &dests(), &Policy::default(), &quiet);
        let kinds: Vec<&str> = s
            .entries
            .iter()
            .map(|e| match e.outcome {
                Outcome::Moved { .. } => "moved",
                Outcome::Failed { .. } => "failed",
                Outcome::NotTried => "not-tried",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["moved", "failed", "not-tried"]);
        assert_eq!(s.failure_class(), Some(ErrorClass::MigrationFailed));
        assert!(!fake.calls.lock().unwrap().iter().any(|c| c.starts_with("migrate c")));

        let fake = Fake { rooms, fail: vec!["b"], ..Default::default() };
        let s = evacuate(&fake, vec![ct("a", 1), ct("b", 2), ct("c", 3)], &dests(), &Policy { keep_going: true, ..Default::default() }, &quiet);
        assert!(matches!(s.entries[2].outcome, Outcome::Moved { .. }), "{s:?}");
        assert_eq!(s.moved(), 2);
    }

    #[test]
    fn dry_run_moves_nothing_and_parallel_moves_all() {
        let fake = Fake { rooms: vec![("h1", room(4)), ("h2", room(4))], ..Default::default() };
        let s = evacuate(&fake, vec![ct("a", 1), ct("b", 2)], &dests(), &Policy { dry_run: true, ..Default::default() }, &quiet);
        assert!(s.entries.iter().all(|e| matches!(e.outcome, Outcome::WouldMove { .. })), "{s:?}");
        assert!(!fake.calls.lock().unwrap().iter().any(|c| c.starts_with("migrate")));
        assert_eq!(s.failure_class(), None);

        let cts: Vec<Candidate> = (0..7).map(|i| ct(&format!("c{i}"), i)).collect();
        let s = evacuate(&fake, cts, &dests(), &Policy { parallel: 3, ..Default::default() }, &quiet);
        assert_eq!(s.moved(), 7, "{s:?}");
        assert_eq!(serde_json::to_value(&s).unwrap()["entries"][0]["result"], "moved");
    }
}
