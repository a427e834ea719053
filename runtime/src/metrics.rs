//! ferry's figures in the Prometheus text exposition format (version 0.0.4): per container
//! its state, usage and limits, per host the versions and the counts of the event journal
//! ([`crate::events`]). Rendering only: the caller gathers the samples.

use crate::container::Usage;
use crate::events::{Counts, Totals, BUCKETS_MS};
use std::fmt::Write;

/// The states a container is reported in (one series each, 1 for the current one).
pub const STATES: [&str; 3] = ["running", "mounted", "stopped"];

/// One container as `ferry list` sees it.
#[derive(Debug, Clone, Default)]
pub struct ContainerSample {
    pub ctid: String,
    pub name: Option<String>,
    /// running, mounted or stopped.
    pub status: String,
    /// Present while it runs.
    pub usage: Option<Usage>,
    pub memory_limit: Option<u64>,
    pub processes_limit: Option<u64>,
    pub disk_limit: Option<u64>,
}

/// The host's own figures.
#[derive(Debug, Clone, Default)]
pub struct HostSample {
    pub ferry_version: String,
    /// Empty when CRIU is missing.
    pub criu_version: String,
    pub totals: Totals,
}

/// A label value with `\`, `"` and newlines escaped as the format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
        }
    }
    /// A gauge or counter with one series per container that has a value.
    fn per_container<T: std::fmt::Display>(
        &mut self,
        cts: &[ContainerSample],
        name: &str,
        kind: &str,
        help: &str,
        f: impl Fn(&ContainerSample) -> Option<T>,
    ) {
        let values: Vec<(String, T)> = cts.iter().filter_map(|c| f(c).map(|v| (ct_label(c), v))).collect();
        if values.is_empty() {
            return;
        }
        self.head(name, kind, help);
        for (l, v) in values {
            self.sample(name, &l, v);
        }
    }
    fn counts(&mut self, what: &str, c: &Counts) {
        let name = format!("ferry_{what}s_total");
        self.head(&name, "counter", &format!("{what}s finished on this host, by result (from the event journal)"));
        self.sample(&name, "result=\"done\"", c.done);
        self.sample(&name, "result=\"failed\"", c.failed);
        let h = format!("ferry_{what}_frozen_seconds");
        self.head(&h, "histogram", &format!("how long containers were frozen by successful {what}s"));
        let cum = c.cumulative();
        for (b, n) in BUCKETS_MS.iter().zip(&cum) {
            self.sample(&format!("{h}_bucket"), &format!("le=\"{}\"", *b as f64 / 1000.0), n);
        }
        self.sample(&format!("{h}_bucket"), "le=\"+Inf\"", cum.last().copied().unwrap_or(0));
        self.sample(&format!("{h}_sum"), "", c.frozen_sum_ms as f64 / 1000.0);
        self.sample(&format!("{h}_count"), "", c.frozen_count());
    }
}

fn ct_label(c: &ContainerSample) -> String {
    format!("ctid=\"{}\"", esc(&c.ctid))
}

/// The whole exposition: host figures first, then per-container ones.
pub fn render(host: &HostSample, cts: &[ContainerSample]) -> String {
    let mut o = Out(String::new());
    o.head("ferry_build_info", "gauge", "the ferry and CRIU versions of this host (criu is empty when CRIU is missing)");
    o.sample("ferry_build_info", &format!("version=\"{}\",criu=\"{}\"", esc(&host.ferry_version), esc(&host.criu_version)), 1);
    o.counts("migration", &host.totals.migration);
    o.counts("checkpoint", &host.totals.checkpoint);
    if !cts.is_empty() {
        o.head("ferry_container_info", "gauge", "one series per container, with its name");
        for c in cts {
            o.sample("ferry_container_info", &format!("{},name=\"{}\"", ct_label(c), esc(c.name.as_deref().unwrap_or(""))), 1);
        }
        o.head("ferry_container_state", "gauge", "1 for the state the container is in (running, mounted or stopped)");
        for c in cts {
            for s in STATES {
                o.sample("ferry_container_state", &format!("{},state=\"{s}\"", ct_label(c)), u8::from(c.status == s));
            }
        }
    }
    o.per_container(cts, "ferry_container_cpu_seconds_total", "counter", "CPU time of all its processes since it started", |c| {
        c.usage.as_ref().map(|u| u.cputime)
    });
    o.per_container(cts, "ferry_container_memory_bytes", "gauge", "memory in use", |c| c.usage.as_ref().map(|u| u.memory));
    o.per_container(cts, "ferry_container_memory_limit_bytes", "gauge", "memory limit (absent when unlimited)", |c| c.memory_limit);
    o.per_container(cts, "ferry_container_swap_bytes", "gauge", "swap in use", |c| c.usage.as_ref().map(|u| u.swap));
    o.per_container(cts, "ferry_container_processes", "gauge", "processes and threads", |c| c.usage.as_ref().map(|u| u.numproc));
    o.per_container(cts, "ferry_container_processes_limit", "gauge", "limit of processes and threads (absent when unlimited)", |c| c.processes_limit);
    o.per_container(cts, "ferry_container_disk_bytes", "gauge", "bytes used on its disk (btrfs and image storage only)", |c| {
        c.usage.as_ref().and_then(|u| u.disk_used)
    });
    o.per_container(cts, "ferry_container_disk_limit_bytes", "gauge", "disk limit (absent when unlimited)", |c| c.disk_limit);
    o.per_container(cts, "ferry_container_io_read_bytes_total", "counter", "bytes read through its cgroup since it started", |c| {
        c.usage.as_ref().map(|u| u.io_read)
    });
    o.per_container(cts, "ferry_container_io_write_bytes_total", "counter", "bytes written through its cgroup since it started", |c| {
        c.usage.as_ref().map(|u| u.io_write)
    });
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Kind};

    #[test]
    fn renders_hosts_and_containers() {
        let mut totals = Totals::default();
        totals.add(&Event::now(Kind::Migration, "101", true, Some(300)));
        totals.add(&Event::now(Kind::Migration, "101", false, None));
        let host = HostSample { ferry_version: "0.1.0".into(), criu_version: "4.2.1".into(), totals };
        let running = ContainerSample {
            ctid: "101".into(),
            name: Some("we\"b".into()),
            status: "running".into(),
            usage: Some(Usage { cputime: 1.5, memory: 4096, numproc: 3, io_read: 7, ..Default::default() }),
            memory_limit: Some(1 << 30),
            processes_limit: None,
            disk_limit: None,
        };
        let stopped = ContainerSample { ctid: "102".into(), status: "stopped".into(), ..Default::default() };
        let t = render(&host, &[running, stopped]);
        assert!(t.contains("ferry_build_info{version=\"0.1.0\",criu=\"4.2.1\"} 1\n"), "{t}");
        assert!(t.contains("ferry_migrations_total{result=\"done\"} 1\n"), "{t}");
        assert!(t.contains("ferry_migrations_total{result=\"failed\"} 1\n"), "{t}");
        assert!(t.contains("ferry_migration_frozen_seconds_bucket{le=\"0.25\"} 0\n"), "{t}");
        assert!(t.contains("ferry_migration_frozen_seconds_bucket{le=\"0.5\"} 1\n"), "{t}");
        assert!(t.contains("ferry_migration_frozen_seconds_sum 0.3\n"), "{t}");
        assert!(t.contains("ferry_container_info{ctid=\"101\",name=\"we\\\"b\"} 1\n"), "{t}");
        assert!(t.contains("ferry_container_state{ctid=\"102\",state=\"stopped\"} 1\n"), "{t}");
        assert!(t.contains("ferry_container_state{ctid=\"102\",state=\"running\"} 0\n"), "{t}");
        assert!(t.contains("ferry_container_cpu_seconds_total{ctid=\"101\"} 1.5\n"), "{t}");
        assert!(t.contains("ferry_container_memory_limit_bytes{ctid=\"101\"} 1073741824\n"), "{t}");
        assert!(!t.contains("ferry_container_memory_bytes{ctid=\"102\"}"), "a stopped container has no usage: {t}");
        assert!(!t.contains("ferry_container_processes_limit"), "no limit, no series: {t}");
    }
}
