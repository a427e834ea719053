//! `list`: one line per container, vzlist style: fields chosen with -o (-L lists them), sorted
//! with -s, filtered by CTID or name, status (-a, -S) and patterns; --json (-j) for programs.

use super::exit::usage;
use anyhow::Result;
use ferry_runtime::boot::ctid_order;
use ferry_runtime::container::{self, Status};
use ferry_runtime::{Ctid, Host};
use serde::Serialize;
use serde_json::Value;
use std::cmp::Ordering;

/// How a field's value reads in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    /// Bytes (or bytes per second): `--human` shows them with a unit.
    Bytes,
    /// Seconds: `--human` shows days, hours, minutes.
    Seconds,
}

/// One field: its name, kind and meaning (`list -L`, `list --help`).
struct Field {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

const fn f(name: &'static str, kind: Kind, help: &'static str) -> Field {
    Field { name, kind, help }
}

/// Every field, in `--json` order. A new one is one entry here and one in [`Row`].
const FIELDS: &[Field] = &[
    f("ctid", Kind::Text, "the container's ID"),
    f("name", Kind::Text, "its name (set --name)"),
    f("status", Kind::Text, "running, mounted or stopped"),
    f("suspended", Kind::Text, "yes when a suspend image waits for resume"),
    f("pid", Kind::Number, "its PID 1 as the host sees it"),
    f("hostname", Kind::Text, "its hostname"),
    f("description", Kind::Text, "its description (set --description)"),
    f("ip", Kind::Text, "venet addresses (the live ones while running)"),
    f("storage", Kind::Text, "disk backend: dir, btrfs or image"),
    f("onboot", Kind::Text, "yes, no, or - (unset: starts at boot if it ran before the shutdown)"),
    f("bootorder", Kind::Number, "boot priority, higher starts first"),
    f("stoptimeout", Kind::Number, "seconds stop waits for init to halt (- : the default, 10)"),
    f("uptime", Kind::Seconds, "seconds since its PID 1 started"),
    f("cputime", Kind::Text, "CPU seconds used by all its processes since start"),
    f("cpu", Kind::Text, "average CPU use since start, % of one CPU (= cputime / uptime)"),
    f("cpuunits", Kind::Number, "CPU weight (OpenVZ scale)"),
    f("cpulimit", Kind::Number, "CPU cap, % of one CPU"),
    f("cpus", Kind::Number, "CPUs' worth of time at most"),
    f("cpumask", Kind::Text, "CPUs it may run on"),
    f("memory", Kind::Bytes, "memory in use"),
    f("ram", Kind::Bytes, "memory limit"),
    f("swap", Kind::Bytes, "swap in use"),
    f("swaplimit", Kind::Bytes, "swap limit (on top of ram)"),
    f("numproc", Kind::Number, "processes and threads"),
    f("numproclimit", Kind::Number, "their limit"),
    f("numfiles", Kind::Number, "open descriptors of all its processes together"),
    f("numfileslimit", Kind::Number, "open files per process (RLIMIT_NOFILE)"),
    f("diskspace", Kind::Bytes, "bytes used on its disk (btrfs, image; - for dir)"),
    f("disklimit", Kind::Bytes, "the disk limit"),
    f("ioread", Kind::Bytes, "bytes read through its cgroup since start"),
    f("iowrite", Kind::Bytes, "bytes written through its cgroup since start"),
    f("ioprio", Kind::Number, "disk I/O weight 0-7"),
    f("iolimit", Kind::Bytes, "disk bandwidth cap, bytes per second"),
    f("iopslimit", Kind::Number, "disk operations per second cap"),
    f("capability", Kind::Text, "capabilities granted (NAME:on) or taken (NAME:off) beyond the defaults"),
    f("features", Kind::Text, "container features turned on or off (set --features)"),
    f("userns", Kind::Text, "an unprivileged container's ID mapping INSIDE:HOST:COUNT (0:1000000:65536); - for a privileged one"),
];

const DEFAULT_FIELDS: [&str; 6] = ["ctid", "status", "pid", "numproc", "ip", "hostname"];

fn fields_help() -> String {
    let mut s = String::from(
        "Fields to show, comma separated (`-L` lists them). Usage fields show \"-\" when the container is \
         not running; limit fields show \"-\" when unlimited. Sizes are bytes unless --human.\n",
    );
    for fl in FIELDS {
        s.push_str(&format!("  {:<14} {}\n", fl.name, fl.help));
    }
    s
}

#[derive(Debug, Default, clap::Args)]
#[command(after_long_help = fields_help())]
pub struct ListArgs {
    /// Only these containers (CTIDs or names), whatever their status unless -S.
    #[arg(value_name = "CTID|NAME")]
    pub ctids: Vec<String>,
    /// All containers, stopped ones too.
    #[arg(short = 'a', long = "all", conflicts_with = "stopped")]
    pub all: bool,
    /// Only containers that do not run (mounted and suspended ones included).
    #[arg(short = 'S', long = "stopped")]
    pub stopped: bool,
    /// No header line.
    #[arg(short = 'H', long = "no-header")]
    pub no_header: bool,
    /// Fields to show, comma separated (-L lists them).
    #[arg(short = 'o', long = "output", value_delimiter = ',', conflicts_with = "ids_only")]
    pub output: Vec<String>,
    /// Only the CTIDs, one per line (= -H -o ctid).
    #[arg(short = '1')]
    pub ids_only: bool,
    /// The name field instead of the hostname in the default fields.
    #[arg(short = 'n', long = "name")]
    pub show_name: bool,
    /// Sort by FIELD, descending with a leading '-' (default: by CTID).
    #[arg(short = 's', long = "sort", value_name = "[-]FIELD", allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// JSON array of objects (all fields unless -o).
    #[arg(short = 'j', long)]
    pub json: bool,
    /// List the fields and what they mean.
    #[arg(short = 'L', long = "list")]
    pub list_fields: bool,
    /// Sizes with a unit (64M), times as days, hours and minutes.
    #[arg(long)]
    pub human: bool,
    /// Accepted for vzlist's sake: ferry never trims a field.
    #[arg(short = 't', long = "no-trim")]
    pub no_trim: bool,
    /// Only containers whose hostname matches PATTERN (shell wildcards *, ?, [...]).
    #[arg(long = "hostname", value_name = "PATTERN")]
    pub hostname_filter: Option<String>,
    /// Only containers whose name matches PATTERN.
    #[arg(short = 'N', long = "name_filter", value_name = "PATTERN")]
    pub name_filter: Option<String>,
    /// Only containers whose description matches PATTERN.
    #[arg(short = 'd', long = "description", value_name = "PATTERN")]
    pub description_filter: Option<String>,
}

/// One container's line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    pub ctid: String,
    pub name: Option<String>,
    pub status: String,
    pub suspended: bool,
    pub pid: Option<i32>,
    pub hostname: String,
    pub description: Option<String>,
    pub ip: Vec<String>,
    pub storage: String,
    pub onboot: Option<bool>,
    pub bootorder: Option<u32>,
    pub stoptimeout: Option<u64>,
    /// Seconds since PID 1 started.
    pub uptime: Option<u64>,
    /// CPU time used, in seconds.
    pub cputime: Option<f64>,
    /// Average CPU use since start, percent of one CPU.
    pub cpu: Option<f64>,
    pub cpuunits: Option<u64>,
    pub cpulimit: Option<u64>,
    pub cpus: Option<u64>,
    pub cpumask: Option<String>,
    /// Memory in use, in bytes.
    pub memory: Option<u64>,
    pub ram: Option<u64>,
    pub swap: Option<u64>,
    pub swaplimit: Option<u64>,
    pub numproc: Option<u64>,
    pub numproclimit: Option<u64>,
    pub numfiles: Option<u64>,
    pub numfileslimit: Option<u64>,
    pub diskspace: Option<u64>,
    pub disklimit: Option<u64>,
    pub ioread: Option<u64>,
    pub iowrite: Option<u64>,
    pub ioprio: Option<u8>,
    pub iolimit: Option<u64>,
    pub iopslimit: Option<u64>,
    pub capability: Vec<String>,
    pub features: Vec<String>,
    /// An unprivileged container's mapping, `0:HOST:COUNT`.
    pub userns: Option<String>,
}

pub use ferry_runtime::config::format_size as human;

/// Seconds as vzlist's uptime reads: `3d 04:05:06`, `04:05:06`.
fn human_secs(s: u64) -> String {
    let (d, h, m, sec) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

impl Row {
    fn value(&self, name: &str) -> Value {
        serde_json::to_value(self).ok().and_then(|v| v.get(name).cloned()).unwrap_or(Value::Null)
    }

    fn cell(&self, name: &str, human_units: bool) -> String {
        let dash = || "-".to_string();
        let kind = field(name).map_or(Kind::Text, |f| f.kind);
        match (name, self.value(name)) {
            ("cputime", Value::Number(n)) => format!("{:.2}", n.as_f64().unwrap_or(0.0)),
            ("cpu", Value::Number(n)) => format!("{:.1}", n.as_f64().unwrap_or(0.0)),
            ("onboot" | "suspended", Value::Bool(b)) => if b { "yes" } else { "no" }.into(),
            (_, Value::Null) => dash(),
            (_, Value::Array(a)) if a.is_empty() => dash(),
            (_, Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","),
            (_, Value::String(s)) if s.is_empty() => dash(),
            (_, Value::String(s)) => s,
            (_, Value::Number(n)) if human_units && kind == Kind::Bytes => n.as_u64().map_or_else(dash, human),
            (_, Value::Number(n)) if human_units && kind == Kind::Seconds => n.as_u64().map_or_else(dash, human_secs),
            (_, v) => v.to_string(),
        }
    }

    fn json(&self, fields: &[String]) -> Value {
        let full = serde_json::to_value(self).expect("row serializes");
        let mut out = serde_json::Map::new();
        for f in fields {
            out.insert(f.clone(), full.get(f).cloned().unwrap_or(Value::Null));
        }
        Value::Object(out)
    }
}

/// Check field names against the known ones.
pub fn check_fields(fields: &[String], opt: &str) -> Result<()> {
    for f in fields {
        if field(f).is_none() {
            usage!("unknown field {f:?} for {opt}: `ferry list -L` lists them");
        }
    }
    Ok(())
}

/// A left-aligned table; numeric columns right-aligned; the last column not padded.
pub fn format_table(rows: &[Row], fields: &[String], header: bool, human_units: bool) -> String {
    let mut lines: Vec<Vec<String>> = Vec::new();
    if header {
        lines.push(fields.iter().map(|f| f.to_uppercase()).collect());
    }
    for r in rows {
        lines.push(fields.iter().map(|f| r.cell(f, human_units)).collect());
    }
    let widths: Vec<usize> = (0..fields.len()).map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0)).collect();
    let numeric = |f: &str| field(f).is_some_and(|f| f.kind != Kind::Text) || matches!(f, "cputime" | "cpu");
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

/// Order two rows by `field`: numbers as numbers, CTIDs as vzlist does, text as text;
/// unset values last.
fn compare(a: &Row, b: &Row, field: &str) -> Ordering {
    if field == "ctid" {
        return match (Ctid::new(&a.ctid), Ctid::new(&b.ctid)) {
            (Ok(x), Ok(y)) => ctid_order(&x, &y),
            _ => a.ctid.cmp(&b.ctid),
        };
    }
    match (a.value(field), b.value(field)) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (Value::Number(x), Value::Number(y)) => x.as_f64().unwrap_or(0.0).total_cmp(&y.as_f64().unwrap_or(0.0)),
        (x, y) => a_str(&x).cmp(&a_str(&y)),
    }
}

fn a_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sort by `-s [-]FIELD`, then by CTID; unset values stay last either way.
pub fn sort_rows(rows: &mut [Row], spec: Option<&str>) -> Result<()> {
    let (desc, name) = match spec {
        Some(s) => match s.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, s),
        },
        None => (false, "ctid"),
    };
    check_fields(&[name.to_string()], "-s")?;
    rows.sort_by(|a, b| {
        let nulls = (a.value(name).is_null(), b.value(name).is_null());
        let o = match nulls {
            (false, false) if desc => compare(b, a, name),
            _ => compare(a, b, name),
        };
        o.then_with(|| compare(a, b, "ctid"))
    });
    Ok(())
}

/// Shell wildcards: `*`, `?`, `[abc]`, `[a-z]`, `[!a]`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        let mut i = 1;
        let negate = matches!(p.get(1), Some('!' | '^'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let start = i;
        while i < p.len() && (p[i] != ']' || i == start) {
            if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                matched |= p[i] <= c && c <= p[i + 2];
                i += 3;
            } else {
                matched |= p[i] == c;
                i += 1;
            }
        }
        (i < p.len()).then_some((matched != negate, i + 1))
    }
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some('[') if !t.is_empty() => match class(p, t[0]) {
                Some((true, n)) => go(&p[n..], &t[1..]),
                Some((false, _)) => false,
                None => t[0] == '[' && go(&p[1..], &t[1..]),
            },
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

pub fn row(h: &Host, ct: &Ctid) -> Result<Row> {
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
    let sec = &cfg.security;
    Ok(Row {
        ctid: ct.to_string(),
        name: cfg.name.clone(),
        status: st.to_string(),
        suspended: st != Status::Running && h.suspend_image(ct).exists(),
        pid: state.as_ref().map(|s| s.pid),
        hostname: cfg.effective_hostname().to_string(),
        description: cfg.description.clone(),
        ip: ips.iter().map(|a| a.to_string()).collect(),
        storage: format!("{:?}", cfg.storage.kind).to_lowercase(),
        onboot: cfg.boot.onboot,
        bootorder: cfg.boot.bootorder,
        stoptimeout: cfg.boot.stop_timeout,
        uptime: state.as_ref().and_then(container::uptime).map(|s| s as u64),
        numproc: u.as_ref().map(|s| s.numproc),
        cputime: u.as_ref().map(|s| s.cputime),
        cpu: u.as_ref().map(|s| s.cpu_percent),
        cpuunits: r.cpuunits,
        cpulimit: r.cpulimit,
        cpus: r.cpus,
        cpumask: r.cpumask.clone(),
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
        ioprio: r.ioprio,
        iolimit: r.iolimit,
        iopslimit: r.iopslimit,
        capability: sec.cap_add.iter().map(|c| format!("{c}:on")).chain(sec.cap_drop.iter().map(|c| format!("{c}:off"))).collect(),
        features: if sec.nesting { vec!["nesting:on".to_string()] } else { Vec::new() },
        userns: sec.id_map.filter(|_| sec.kind.has_userns()).map(|m| m.to_string()),
    })
}

pub fn list(h: &Host, a: ListArgs) -> Result<u8> {
    if a.list_fields {
        for fl in FIELDS {
            println!("{:<14} {}", fl.name, fl.help);
        }
        return Ok(0);
    }
    check_fields(&a.output, "-o")?;
    // Named containers must exist; every container otherwise.
    let named = !a.ctids.is_empty();
    let cts: Vec<Ctid> = if named {
        a.ctids.iter().map(|w| super::ctid(h, w)).collect::<Result<_>>()?
    } else {
        h.list_ctids().map_err(|e| anyhow::anyhow!("read {}: {e}", h.conf_dir().display()))?
    };
    let mut rows = Vec::new();
    for ct in cts {
        super::notices::warn(ferry_migrate::stale::recover_if_interrupted(h, &ct));
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
        let running = r.status == "running";
        let by_status = if a.stopped { !running } else { a.all || named || running };
        let matches = |pat: &Option<String>, v: Option<&str>| pat.as_ref().is_none_or(|p| glob_match(p, v.unwrap_or("")));
        if by_status
            && matches(&a.hostname_filter, Some(&r.hostname))
            && matches(&a.name_filter, r.name.as_deref())
            && matches(&a.description_filter, r.description.as_deref())
        {
            rows.push(r);
        }
    }
    sort_rows(&mut rows, a.sort.as_deref())?;
    if a.ids_only {
        for r in &rows {
            println!("{}", r.ctid);
        }
        return Ok(0);
    }
    if a.json {
        let fields: Vec<String> = if a.output.is_empty() { FIELDS.iter().map(|f| f.name.to_string()).collect() } else { a.output.clone() };
        let v: Vec<_> = rows.iter().map(|r| r.json(&fields)).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let fields: Vec<String> = if a.output.is_empty() {
            DEFAULT_FIELDS.iter().map(|f| if a.show_name && *f == "hostname" { "name" } else { f }.to_string()).collect()
        } else {
            a.output.clone()
        };
        print!("{}", format_table(&rows, &fields, !a.no_header, a.human));
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
                uptime: Some(90061),
                bootorder: Some(5),
                onboot: Some(true),
                capability: vec!["SYS_TIME:on".into()],
                ..Default::default()
            },
            Row { ctid: "long-name".into(), status: "stopped".into(), hostname: "db".into(), ..Default::default() },
        ]
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn table_and_no_header() {
        let t = format_table(&rows(), &strings(&["ctid", "status", "pid", "ip"]), true, false);
        assert_eq!(t, "CTID      STATUS   PID IP\n101       running 4242 198.18.0.10\nlong-name stopped    - -\n");
        let f = strings(&["ctid", "memory", "ram", "numproclimit"]);
        assert_eq!(format_table(&rows()[..1], &f, false, false), "101 1048576 67108864 -\n");
        assert_eq!(format_table(&rows()[..1], &f, false, true), "101 1M 64M -\n");
        assert_eq!(format_table(&rows(), &strings(&["ctid"]), false, false), "101\nlong-name\n");
        let f = strings(&["uptime", "onboot", "bootorder", "capability", "name"]);
        assert_eq!(format_table(&rows()[..1], &f, false, true), "1d 01:01:01 yes 5 SYS_TIME:on -\n");
        assert_eq!(format_table(&rows()[..1], &f, false, false), "90061 yes 5 SYS_TIME:on -\n");
    }

    #[test]
    fn json_selects_fields() {
        let v = rows()[1].json(&strings(&["ctid", "cputime", "pid"]));
        assert_eq!(v, serde_json::json!({"ctid": "long-name", "cputime": null, "pid": null}));
        assert!(check_fields(&["bogus".to_string()], "-o").unwrap_err().to_string().contains("unknown field"));
        // Every field of the table is in a row, and every row field is in the table.
        let row = serde_json::to_value(Row::default()).unwrap();
        let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), FIELDS.len());
        for f in FIELDS {
            assert!(row.get(f.name).is_some(), "{} is no Row field", f.name);
        }
    }

    #[test]
    fn sorting() {
        let mk = |ct: &str, order: Option<u32>, mem: Option<u64>| Row { ctid: ct.into(), bootorder: order, memory: mem, ..Default::default() };
        let mut r = vec![mk("20", Some(1), None), mk("101", None, Some(5)), mk("3", Some(9), Some(7)), mk("web", Some(1), Some(1))];
        let ids = |r: &[Row]| r.iter().map(|x| x.ctid.clone()).collect::<Vec<_>>();
        sort_rows(&mut r, None).unwrap();
        assert_eq!(ids(&r), ["3", "20", "101", "web"], "CTIDs as numbers");
        sort_rows(&mut r, Some("-bootorder")).unwrap();
        assert_eq!(ids(&r), ["3", "20", "web", "101"], "unset last, ties by CTID");
        sort_rows(&mut r, Some("memory")).unwrap();
        assert_eq!(ids(&r), ["web", "101", "3", "20"]);
        assert!(sort_rows(&mut r, Some("-nope")).is_err());
    }

    #[test]
    fn globs() {
        for (p, t) in [("web*", "web1"), ("*", ""), ("w?b", "web"), ("[a-c]x", "bx"), ("[!a]x", "bx"), ("a*b*c", "aXbYc"), ("db", "db")] {
            assert!(glob_match(p, t), "{p} {t}");
        }
        for (p, t) in [("web*", "db"), ("w?b", "wb"), ("[a-c]x", "dx"), ("[!a]x", "ax"), ("db", "db2")] {
            assert!(!glob_match(p, t), "{p} {t}");
        }
    }
}
