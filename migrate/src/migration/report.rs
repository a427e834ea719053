//! The stage table of a migration (`--times`, vzmigrate -t) and its JSON form (`--json`).

use ferry_runtime::config::format_size;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncPassReport {
    pub pass: u32,
    pub files: u64,
    /// Of `files`, those that had only grown, sent as their new tail.
    pub appended: u64,
    pub bytes_on_wire: u64,
    pub ms: u64,
}

impl SyncPassReport {
    fn detail(&self) -> String {
        let grown = if self.appended > 0 { format!(" ({} grown, sent as their tail)", self.appended) } else { String::new() };
        format!("{} files{grown}, {} on the wire", self.files, format_size(self.bytes_on_wire))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrationReport {
    pub ctid: String,
    pub destination: String,
    /// "online" or "offline".
    pub mode: String,
    pub preflight_ms: u64,
    pub passes: Vec<SyncPassReport>,
    /// Why the live passes stopped.
    pub converged: String,
    /// How the memory went over (online only): one full dump while frozen, and why not
    /// iterative pre-copy.
    pub memory_copy: String,
    /// Freeze to resumed on the destination (online only).
    pub frozen_ms: u64,
    pub dump_ms: u64,
    pub final_sync: Option<SyncPassReport>,
    pub image_bytes: u64,
    pub image_wire_bytes: u64,
    pub image_transfer_ms: u64,
    pub restore_ms: u64,
    pub announce_ms: u64,
    pub cleanup_ms: u64,
    pub total_ms: u64,
    /// The destination's verification that the neighbours reach the container there (online
    /// only; None: the destination did not say).
    pub handover: Option<HandoverReport>,
    /// What the destination's preflight said it has free (memory available, disk).
    pub dest_free_memory: u64,
    pub dest_free_disk: u64,
}

/// How the handover went: confirmed when every neighbour probed from the destination answered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HandoverReport {
    pub confirmed: bool,
    /// When it was confirmed, in ms after the restore.
    pub confirmed_ms: Option<u64>,
    /// Announce rounds sent (the first at the commit, then with back-off).
    pub announces: u32,
    pub neighbours: u32,
    pub unanswered: Vec<String>,
}

impl From<ferry_transfer::proto::messages::Handover> for HandoverReport {
    fn from(h: ferry_transfer::proto::messages::Handover) -> Self {
        HandoverReport {
            confirmed: h.confirmed,
            confirmed_ms: h.confirmed.then_some(h.confirmed_after_ms),
            announces: h.announces,
            // The destination's words: addresses only, as many as it may probe, never its text.
            unanswered: h.unanswered.iter().filter_map(|a| a.parse::<std::net::IpAddr>().ok()).take(64).map(|a| a.to_string()).collect(),
            neighbours: h.neighbours,
        }
    }
}

impl HandoverReport {
    fn detail(&self) -> String {
        if self.confirmed {
            format!("confirmed by {} neighbours after {} announces (ms after the restore)", self.neighbours, self.announces)
        } else if self.neighbours == 0 {
            format!("not confirmed: no neighbour to probe ({} announces)", self.announces)
        } else {
            format!("not confirmed: no answer from {} after {} announces", self.unanswered.join(", "), self.announces)
        }
    }
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "migration of {} to {} ({})", self.ctid, self.destination, self.mode)?;
        writeln!(f, "  {:<28} {:>9}  detail", "stage", "ms")?;
        writeln!(f, "  {:<28} {:>9}", "preflight", self.preflight_ms)?;
        for p in &self.passes {
            writeln!(f, "  {:<28} {:>9}  {}", format!("sync pass {}", p.pass), p.ms, p.detail())?;
        }
        if !self.converged.is_empty() {
            writeln!(f, "  {:<28} {:>9}  {}", "  passes stopped", "", self.converged)?;
        }
        if self.mode == "online" {
            writeln!(f, "  {:<28} {:>9}  {}", "dump", self.dump_ms, self.memory_copy)?;
        }
        if let Some(p) = &self.final_sync {
            writeln!(f, "  {:<28} {:>9}  {}", "final sync", p.ms, p.detail())?;
        }
        if self.mode == "online" {
            writeln!(
                f,
                "  {:<28} {:>9}  {} image, {} on the wire",
                "image transfer",
                self.image_transfer_ms,
                format_size(self.image_bytes),
                format_size(self.image_wire_bytes)
            )?;
        }
        writeln!(f, "  {:<28} {:>9}", if self.mode == "online" { "restore" } else { "start" }, self.restore_ms)?;
        writeln!(f, "  {:<28} {:>9}", "announce", self.announce_ms)?;
        if self.mode == "online" {
            writeln!(f, "  {:<28} {:>9}  freeze to running on the destination", "frozen", self.frozen_ms)?;
        }
        writeln!(f, "  {:<28} {:>9}", "source cleanup", self.cleanup_ms)?;
        if let Some(h) = &self.handover {
            let at = h.confirmed_ms.map_or("-".to_string(), |m| m.to_string());
            writeln!(f, "  {:<28} {:>9}  {}", "handover", at, h.detail())?;
        }
        write!(f, "  {:<28} {:>9}", "total", self.total_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destinations_handover_report_is_taken_as_addresses_only() {
        let h = ferry_transfer::proto::messages::Handover {
            unanswered: [vec!["198.18.0.1".to_string(), "\x1b[2J".to_string()], vec!["2001:2::1".to_string(); 10_000]].concat(),
            neighbours: 3,
            ..Default::default()
        };
        let r = HandoverReport::from(h);
        assert_eq!(r.unanswered.len(), 64);
        assert_eq!(r.unanswered[0], "198.18.0.1");
        assert!(r.unanswered.iter().all(|a| a.parse::<std::net::IpAddr>().is_ok()), "{:?}", &r.unanswered[..3]);
    }

    #[test]
    fn table_and_json() {
        let r = MigrationReport {
            ctid: "101".into(),
            destination: "root@h2".into(),
            mode: "online".into(),
            passes: vec![SyncPassReport { pass: 1, files: 10, appended: 0, bytes_on_wire: 3 << 20, ms: 120 }],
            frozen_ms: 321,
            memory_copy: "one full dump".into(),
            total_ms: 999,
            handover: Some(HandoverReport { confirmed: true, confirmed_ms: Some(57), announces: 2, neighbours: 1, unanswered: vec![] }),
            ..Default::default()
        };
        let t = r.to_string();
        assert!(t.contains("sync pass 1"), "{t}");
        assert!(t.contains("3M on the wire"), "{t}");
        assert!(t.contains("frozen") && t.contains("321"), "{t}");
        assert!(t.contains("one full dump"), "{t}");
        let j: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(j["frozen_ms"], 321);
        assert_eq!(j["passes"][0]["files"], 10);
        assert!(t.contains("handover") && t.contains("57") && t.contains("confirmed by 1"), "{t}");
        assert_eq!(j["handover"]["confirmed"], true);
        assert_eq!(j["handover"]["confirmed_ms"], 57);
        let mut r = r;
        r.handover =
            Some(HandoverReport { confirmed: false, confirmed_ms: None, announces: 6, neighbours: 1, unanswered: vec!["198.18.0.101".into()] });
        let t = r.to_string();
        assert!(t.contains("not confirmed: no answer from 198.18.0.101 after 6 announces"), "{t}");
    }
}
