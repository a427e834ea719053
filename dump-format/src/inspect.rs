//! A readable (and JSON) description of an image, in the spirit of CRIU's crit and
//! checkpointctl.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use serde::Serialize;

use crate::error::Result;
use crate::manifest::Summary;
use crate::reader::Reader;
use crate::utc::UtcTime;
use crate::SectionKind;

/// Where each part of the report comes from. rust-criu 0.6 only carries CRIU's RPC messages,
/// not its image messages, so CRIU's image files are listed but not decoded.
pub const SOURCES_NOTE: &str = "process tree, TCP connections, addresses and memory come from \
the summary ferry recorded at dump time; CRIU's image files are listed with their sizes but not \
decoded (the rust-criu crate has no types for CRIU's image messages; use `crit` on an extracted \
image for those)";

/// The container config, reduced to what a person checks first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConfigSummary {
    pub ctid: Option<String>,
    pub hostname: Option<String>,
    pub ipadd: Vec<String>,
    pub init: Vec<String>,
    /// The `[resources]` table, key → value as written.
    pub limits: BTreeMap<String, String>,
}

/// One section of the image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SectionReport {
    pub kind: String,
    pub name: String,
    pub optional: bool,
    pub size: u64,
    pub stored: u64,
    /// size / stored (1.0 for empty sections).
    pub ratio: f64,
}

/// What `ferry image inspect` shows. Produced only for an image that verified completely.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inspection {
    pub format_version: String,
    pub image_id: String,
    pub parent_image_id: Option<String>,
    pub ctid: String,
    pub ferry_version: String,
    pub criu_version: String,
    pub source_host: String,
    pub kernel_release: String,
    pub architecture: String,
    pub cgroup_mode: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub config: Option<ConfigSummary>,
    /// Why the config could not be summarized, when it could not.
    pub config_error: Option<String>,
    pub summary: Option<Summary>,
    pub sections: Vec<SectionReport>,
    pub total_size: u64,
    pub total_stored: u64,
    /// Bytes of the whole image file.
    pub image_bytes: u64,
    pub sources: String,
}

/// Reads (and so verifies) a whole image and describes it.
pub fn inspect(r: impl Read) -> Result<Inspection> {
    let mut reader = Reader::open(r)?;
    while let Some(payload) = reader.next_section()? {
        drop(payload);
    }
    let manifest = reader.manifest().clone();
    let sections: Vec<SectionReport> = reader
        .sections_read()
        .iter()
        .map(|entry| SectionReport {
            kind: SectionKind::from_code(u16::try_from(entry.kind).unwrap_or(0)).label(),
            name: entry.name.clone(),
            optional: entry.optional,
            size: entry.uncompressed_len,
            stored: entry.stored_len,
            ratio: ratio(entry.uncompressed_len, entry.stored_len),
        })
        .collect();
    let (config, config_error) = match summarize_config(&manifest.config_toml) {
        Ok(config) => (config, None),
        Err(why) => (None, Some(why)),
    };
    Ok(Inspection {
        format_version: reader.version().to_string(),
        image_id: manifest.image_id.clone(),
        parent_image_id: (!manifest.parent_image_id.is_empty()).then(|| manifest.parent_image_id.clone()),
        ctid: manifest.ctid.clone(),
        ferry_version: manifest.ferry_version.clone(),
        criu_version: manifest.criu_version.clone(),
        source_host: manifest.source_host.clone(),
        kernel_release: manifest.kernel_release.clone(),
        architecture: manifest.architecture.clone(),
        cgroup_mode: manifest.cgroup_mode.clone(),
        created: UtcTime::from_unix(manifest.created_unix_secs).rfc3339(manifest.created_nanos),
        config,
        config_error,
        summary: manifest.summary.clone(),
        total_size: sections.iter().map(|s| s.size).sum(),
        total_stored: sections.iter().map(|s| s.stored).sum(),
        image_bytes: reader.bytes_read(),
        sections,
        sources: SOURCES_NOTE.to_string(),
    })
}

fn ratio(size: u64, stored: u64) -> f64 {
    if stored == 0 {
        1.0
    } else {
        size as f64 / stored as f64
    }
}

/// Parses the config TOML generically (this crate knows nothing of ferry's config types).
fn summarize_config(bytes: &[u8]) -> std::result::Result<Option<ConfigSummary>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "config is not UTF-8".to_string())?;
    let table: toml::Table = text.parse().map_err(|e| format!("config is not valid TOML: {e}"))?;
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let list = |value: Option<&toml::Value>| -> Vec<String> {
        match value {
            Some(toml::Value::Array(items)) => items.iter().map(scalar).collect(),
            Some(other) => vec![scalar(other)],
            None => Vec::new(),
        }
    };
    let net = table.get("net").and_then(toml::Value::as_table);
    let limits = table
        .get("resources")
        .and_then(toml::Value::as_table)
        .map(|resources| resources.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
        .unwrap_or_default();
    Ok(Some(ConfigSummary {
        ctid: table.get("ctid").map(scalar),
        hostname: table.get("hostname").map(scalar),
        ipadd: list(net.and_then(|n| n.get("ipadd"))),
        init: list(table.get("init")),
        limits,
    }))
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "(unknown)"
    } else {
        s
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Image {}  (ferry image format {})", self.image_id, self.format_version)?;
        if let Some(parent) = &self.parent_image_id {
            writeln!(f, "  incremental to:  {parent}")?;
        }
        writeln!(f, "  container:       {}", or_unknown(&self.ctid))?;
        writeln!(f, "  created:         {}", self.created)?;
        writeln!(f, "  source host:     {}", or_unknown(&self.source_host))?;
        writeln!(
            f,
            "  kernel:          {} ({}), cgroup {}",
            or_unknown(&self.kernel_release),
            or_unknown(&self.architecture),
            or_unknown(&self.cgroup_mode)
        )?;
        writeln!(f, "  written by:      ferry {}, CRIU {}", or_unknown(&self.ferry_version), or_unknown(&self.criu_version))?;

        writeln!(f, "\nConfig")?;
        match (&self.config, &self.config_error) {
            (Some(config), _) => {
                writeln!(f, "  ctid:            {}", config.ctid.as_deref().unwrap_or("(unset)"))?;
                writeln!(f, "  hostname:        {}", config.hostname.as_deref().unwrap_or("(unset)"))?;
                let ips = if config.ipadd.is_empty() { "(none)".to_string() } else { config.ipadd.join(", ") };
                writeln!(f, "  ipadd:           {ips}")?;
                let init = if config.init.is_empty() { "(built-in)".to_string() } else { config.init.join(" ") };
                writeln!(f, "  init:            {init}")?;
                if config.limits.is_empty() {
                    writeln!(f, "  limits:          (none)")?;
                } else {
                    let limits: Vec<String> = config.limits.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    writeln!(f, "  limits:          {}", limits.join(", "))?;
                }
            }
            (None, Some(why)) => writeln!(f, "  (cannot summarize: {why})")?,
            (None, None) => writeln!(f, "  (no config recorded)")?,
        }

        match &self.summary {
            None => writeln!(f, "\nNo dump-time summary recorded (processes, connections, addresses unknown)")?,
            Some(summary) => {
                writeln!(f, "\nProcesses ({})", summary.processes.len())?;
                write_tree(f, &summary.processes)?;
                writeln!(f, "\nTCP connections ({})", summary.tcp_connections.len())?;
                for conn in &summary.tcp_connections {
                    writeln!(f, "  {:<24} -> {:<24} {}", conn.local, conn.remote, conn.state)?;
                }
                writeln!(f, "\nAddresses")?;
                for addr in &summary.addresses {
                    let mac = if addr.mac.is_empty() { "-" } else { addr.mac.as_str() };
                    writeln!(f, "  {:<10} mac {:<17} {}", addr.interface, mac, addr.ips.join(", "))?;
                }
                writeln!(f, "\nMemory: {} ({} bytes)", human(summary.memory_bytes), summary.memory_bytes)?;
            }
        }

        writeln!(f, "\nSections ({})", self.sections.len())?;
        writeln!(f, "  {:<13} {:<32} {:>12} {:>12} {:>7}", "KIND", "NAME", "SIZE", "STORED", "RATIO")?;
        for s in &self.sections {
            let optional = if s.optional { " (optional)" } else { "" };
            writeln!(f, "  {:<13} {:<32} {:>12} {:>12} {:>6.2}x{optional}", s.kind, s.name, human(s.size), human(s.stored), s.ratio)?;
        }
        writeln!(
            f,
            "  total: {} in {} ({:.2}x); image file {}",
            human(self.total_size),
            human(self.total_stored),
            ratio(self.total_size, self.total_stored),
            human(self.image_bytes)
        )?;
        writeln!(f, "\nNote: {}", self.sources)
    }
}

/// Prints processes as a tree by ppid; processes whose parent is not listed are roots.
/// Linear in the number of processes and safe with cycles or duplicate pids (hostile input).
fn write_tree(f: &mut fmt::Formatter<'_>, processes: &[crate::manifest::Process]) -> fmt::Result {
    use std::collections::HashMap;
    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut index_of: HashMap<u32, usize> = HashMap::new();
    for (i, p) in processes.iter().enumerate() {
        index_of.entry(p.pid).or_insert(i);
    }
    for (i, p) in processes.iter().enumerate() {
        if p.ppid != p.pid && index_of.contains_key(&p.ppid) {
            children.entry(p.ppid).or_default().push(i);
        }
    }
    let mut shown = vec![false; processes.len()];
    // Roots first, then anything only reachable through a cycle.
    let roots = processes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.ppid == p.pid || !index_of.contains_key(&p.ppid))
        .map(|(i, _)| i)
        .chain(0..processes.len())
        .collect::<Vec<_>>();
    for root in roots {
        let mut stack = vec![(root, 0usize)];
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut shown[i], true) {
                continue;
            }
            let p = &processes[i];
            writeln!(f, "  {}{:<6} {}", "  ".repeat(depth.min(32)), p.pid, p.command)?;
            // Only the first process with a pid owns its children (duplicate pids are hostile).
            if index_of.get(&p.pid) == Some(&i) {
                for &child in children.get(&p.pid).into_iter().flatten().rev() {
                    stack.push((child, depth + 1));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_summary_reads_generic_toml() {
        let toml = br#"
ctid = "101"
hostname = "web"
init = ["/bin/sh", "-c", "sleep 1"]
[net]
ipadd = ["198.18.0.5"]
[resources]
ram = 268435456
numproc = 100
"#;
        let summary = summarize_config(toml).unwrap().unwrap();
        assert_eq!(summary.ctid.as_deref(), Some("101"));
        assert_eq!(summary.hostname.as_deref(), Some("web"));
        assert_eq!(summary.ipadd, vec!["198.18.0.5"]);
        assert_eq!(summary.init, vec!["/bin/sh", "-c", "sleep 1"]);
        assert_eq!(summary.limits.get("ram").map(String::as_str), Some("268435456"));
        assert!(summarize_config(b"not = [toml").is_err());
        assert!(summarize_config(b"ctid = 101\n[net]\nipadd = \"198.18.0.1\"").is_ok());
        assert_eq!(summarize_config(b"").unwrap(), None);
    }
}

#[cfg(test)]
mod tree_tests {
    use super::*;
    use crate::manifest::Process;

    struct Tree(Vec<Process>);

    impl fmt::Display for Tree {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_tree(f, &self.0)
        }
    }

    fn p(pid: u32, ppid: u32, command: &str) -> Process {
        Process { pid, ppid, command: command.into() }
    }

    #[test]
    fn tree_nests_children_under_parents() {
        let text = Tree(vec![p(1, 0, "init"), p(3, 2, "grandchild"), p(2, 1, "child")]).to_string();
        assert_eq!(text, "  1      init\n    2      child\n      3      grandchild\n");
    }

    #[test]
    fn hostile_trees_terminate_and_show_everyone() {
        let cycle = Tree(vec![p(1, 2, "a"), p(2, 1, "b"), p(2, 2, "dup")]).to_string();
        assert_eq!(cycle.lines().count(), 3, "{cycle}");
        let chain: Vec<Process> = (1..200_000).map(|i| p(i, i - 1, "x")).collect();
        let start = std::time::Instant::now();
        let text = Tree(chain).to_string();
        assert_eq!(text.lines().count(), 199_999);
        // A guard against quadratic walks (hours for this chain), not a speed target: generous
        // for a loaded machine.
        assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
    }
}
