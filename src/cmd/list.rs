//! `list`: one line per container, vzlist style; fields chosen with -o; --json for programs.

use anyhow::{bail, Result};
use ferry_runtime::container::{self, Status};
use ferry_runtime::Host;
use serde::Serialize;

pub const FIELDS: [&str; 22] = [
    "ctid",
    "status",
    "pid",
    "hostname",
    "ip",
    "storage",
    "cputime",
    "cpu",
    "cpuunits",
    "cpulimit",
    "memory",
    "ram",
    "swap",
    "swaplimit",
    "numproc",
    "numproclimit",
    "numfiles",
    "numfileslimit",
    "diskspace",
    "disklimit",
    "ioread",
    "iowrite",
];
/// `ferry list --help` for -o: every field and what it means.
const FIELDS_HELP: &str = "Fields to show, comma separated. Usage fields show \"-\" when the container is not
running; limit fields show \"-\" when unlimited. Sizes are bytes.
  ctid, status, pid, hostname
  ip             venet addresses (the live ones while running)
  storage        disk backend: dir, btrfs or image
  cputime        CPU seconds used by all its processes since start
  cpu            average CPU use since start, % of one CPU (= cputime / time running)
  cpuunits       CPU weight (OpenVZ scale)
  cpulimit       CPU cap, % of one CPU
  memory, ram    memory in use / its limit
  swap, swaplimit  swap in use / its limit (on top of ram)
  numproc, numproclimit  processes and threads / their limit
  numfiles, numfileslimit  open descriptors of all its processes together / limit per process
  diskspace, disklimit  bytes used on its disk (btrfs, image; \"-\" for dir) / the disk limit
  ioread, iowrite  bytes read and written through its cgroup since start";
const DEFAULT_FIELDS: [&str; 6] = ["ctid", "status", "pid", "numproc", "ip", "hostname"];

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// All containers, stopped ones too.
    #[arg(short = 'a', long = "all")]
    pub all: bool,
    /// No header line.
    #[arg(short = 'H', long = "no-header")]
    pub no_header: bool,
    /// Fields to show, comma separated (`--help` lists them).
    #[arg(short = 'o', long = "output", value_delimiter = ',', long_help = FIELDS_HELP)]
    pub output: Vec<String>,
    /// JSON array of objects (all fields unless -o).
    #[arg(long)]
    pub json: bool,
}

/// One container's line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    pub ctid: String,
    pub status: String,
    pub pid: Option<i32>,
    pub hostname: String,
    pub ip: Vec<String>,
    pub storage: String,
    pub numproc: Option<u64>,
    /// CPU time used, in seconds.
    pub cputime: Option<f64>,
    /// Average CPU use since start, percent of one CPU.
    pub cpu: Option<f64>,
    pub cpuunits: Option<u64>,
    pub cpulimit: Option<u64>,
    /// Memory in use, in bytes.
    pub memory: Option<u64>,
    pub ram: Option<u64>,
    pub swap: Option<u64>,
    pub swaplimit: Option<u64>,
    pub numproclimit: Option<u64>,
    pub numfiles: Option<u64>,
    pub numfileslimit: Option<u64>,
    pub diskspace: Option<u64>,
    pub disklimit: Option<u64>,
    pub ioread: Option<u64>,
    pub iowrite: Option<u64>,
}

pub use ferry_runtime::config::format_size as human;

impl Row {
    fn cell(&self, field: &str) -> String {
        let dash = || "-".to_string();
        match field {
            "ctid" => self.ctid.clone(),
            "status" => self.status.clone(),
            "pid" => self.pid.map_or_else(dash, |p| p.to_string()),
            "hostname" => self.hostname.clone(),
            "ip" => {
                if self.ip.is_empty() {
                    dash()
                } else {
                    self.ip.join(",")
                }
            }
            "storage" => self.storage.clone(),
            "cputime" => self.cputime.map_or_else(dash, |c| format!("{c:.2}")),
            "cpu" => self.cpu.map_or_else(dash, |c| format!("{c:.1}")),
            _ => {
                let v = serde_json::to_value(self).ok().and_then(|v| v.get(field).and_then(|x| x.as_u64()));
                v.map_or_else(dash, |n| n.to_string())
            }
        }
    }

    fn json(&self, fields: &[String]) -> serde_json::Value {
        let full = serde_json::to_value(self).expect("row serializes");
        let mut out = serde_json::Map::new();
        for f in fields {
            out.insert(f.clone(), full.get(f).cloned().unwrap_or(serde_json::Value::Null));
        }
        serde_json::Value::Object(out)
    }
}

/// Check `-o` fields against the known ones.
pub fn check_fields(fields: &[String]) -> Result<()> {
    for f in fields {
        if !FIELDS.contains(&f.as_str()) {
            bail!("unknown field {f:?} for -o: use {}", FIELDS.join(","));
        }
    }
    Ok(())
}

/// A left-aligned table; numeric columns right-aligned; the last column not padded.
pub fn format_table(rows: &[Row], fields: &[String], header: bool) -> String {
    let mut lines: Vec<Vec<String>> = Vec::new();
    if header {
        lines.push(fields.iter().map(|f| f.to_uppercase()).collect());
    }
    for r in rows {
        lines.push(fields.iter().map(|f| r.cell(f)).collect());
    }
    let widths: Vec<usize> = (0..fields.len()).map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0)).collect();
    let numeric = |f: &str| !matches!(f, "ctid" | "status" | "hostname" | "ip" | "storage");
    let mut out = String::new();
    for l in &lines {
        let mut s = String::new();
        for (i, c) in l.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            let last = i + 1 == l.len();
            if numeric(&fields[i]) {
                s.push_str(&format!("{c:>w$}", w = widths[i]));
            } else if last {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}", w = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    }
    out
}

fn row(h: &Host, ct: &ferry_runtime::Ctid) -> Result<Row> {
    let cfg = container::load_config(h, ct)?;
    let (st, state) = container::status(h, ct)?;
    let state = state.filter(|_| st == Status::Running);
    let u = state.as_ref().and_then(|s| container::usage(h, &cfg, s).ok());
    let live_ips = state.as_ref().and_then(|s| s.net_objects.as_ref()).and_then(|n| n.venet.as_ref()).map(|v| v.addrs.clone());
    let ips = match live_ips {
        Some(v) => v,
        None if state.is_some() => Vec::new(),
        None => cfg.net.ipadd.clone(),
    };
    let res = container::effective_resources(&cfg, state.as_ref());
    let r = &res;
    Ok(Row {
        ctid: ct.to_string(),
        status: st.to_string(),
        pid: state.as_ref().map(|s| s.pid),
        hostname: cfg.effective_hostname().to_string(),
        ip: ips.iter().map(|a| a.to_string()).collect(),
        storage: format!("{:?}", cfg.storage.kind).to_lowercase(),
        numproc: u.as_ref().map(|s| s.numproc),
        cputime: u.as_ref().map(|s| s.cputime),
        cpu: u.as_ref().map(|s| s.cpu_percent),
        cpuunits: r.cpuunits,
        cpulimit: r.cpulimit,
        memory: u.as_ref().map(|s| s.memory),
        ram: r.ram,
        swap: u.as_ref().map(|s| s.swap),
        swaplimit: r.swap,
        numproclimit: r.numproc,
        numfiles: u.as_ref().map(|s| s.numfiles),
        numfileslimit: r.numfiles,
        diskspace: u.as_ref().and_then(|s| s.disk_used),
        disklimit: u.as_ref().and_then(|s| s.disk_limit).or(r.diskspace),
        ioread: u.as_ref().map(|s| s.io_read),
        iowrite: u.as_ref().map(|s| s.io_write),
    })
}

pub fn list(h: &Host, a: ListArgs) -> Result<u8> {
    check_fields(&a.output)?;
    let mut rows = Vec::new();
    for ct in h.list_ctids().map_err(|e| anyhow::anyhow!("read {}: {e}", h.conf_dir().display()))? {
        super::migrate::recover_if_interrupted(h, &ct);
        if !h.config_path(&ct).exists() {
            continue; // it had migrated away; the recovery finished removing it
        }
        let r = match row(h, &ct) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ferry: {e}");
                continue;
            }
        };
        if a.all || r.status == "running" {
            rows.push(r);
        }
    }
    if a.json {
        let fields: Vec<String> = if a.output.is_empty() { FIELDS.iter().map(|s| s.to_string()).collect() } else { a.output.clone() };
        let v: Vec<_> = rows.iter().map(|r| r.json(&fields)).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let fields: Vec<String> = if a.output.is_empty() { DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect() } else { a.output.clone() };
        print!("{}", format_table(&rows, &fields, !a.no_header));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        vec![
            Row {
                ctid: "101".into(),
                status: "running".into(),
                pid: Some(4242),
                hostname: "web".into(),
                ip: vec!["198.18.0.10".into()],
                numproc: Some(3),
                cputime: Some(1.5),
                memory: Some(1048576),
                ram: Some(64 << 20),
                ..Default::default()
            },
            Row { ctid: "long-name".into(), status: "stopped".into(), hostname: "db".into(), ..Default::default() },
        ]
    }

    #[test]
    fn table_and_no_header() {
        let f: Vec<String> = ["ctid", "status", "pid", "ip"].iter().map(|s| s.to_string()).collect();
        let t = format_table(&rows(), &f, true);
        assert_eq!(t, "CTID      STATUS   PID IP\n101       running 4242 198.18.0.10\nlong-name stopped    - -\n");
        let f: Vec<String> = ["ctid", "memory", "ram", "numproclimit"].iter().map(|s| s.to_string()).collect();
        assert_eq!(format_table(&rows()[..1], &f, false), "101 1048576 67108864 -\n");
        let only: Vec<String> = vec!["ctid".into()];
        assert_eq!(format_table(&rows(), &only, false), "101\nlong-name\n");
    }

    #[test]
    fn json_selects_fields() {
        let f: Vec<String> = vec!["ctid".into(), "cputime".into(), "pid".into()];
        let v = rows()[1].json(&f);
        assert_eq!(v, serde_json::json!({"ctid": "long-name", "cputime": null, "pid": null}));
        assert!(check_fields(&["bogus".to_string()]).unwrap_err().to_string().contains("unknown field"));
    }
}
