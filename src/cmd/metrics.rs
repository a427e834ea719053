//! `ferry metrics`: the host's and its containers' figures in Prometheus's text format, printed,
//! written atomically to a file (node_exporter's textfile collector), or served over HTTP.

use anyhow::{Context, Result};
use clap::Args;
use ferry_runtime::container::Usage;
use ferry_runtime::metrics::{render, ContainerSample, HostSample};
use ferry_runtime::Host;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write to FILE instead of stdout, replacing it atomically (for node_exporter's textfile
    /// collector, which must never read half a file).
    #[arg(long, value_name = "FILE", conflicts_with = "listen")]
    pub output: Option<PathBuf>,
    /// Serve the figures over HTTP on ADDR (e.g. 127.0.0.1:9469), gathered anew for each
    /// request, until killed.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

pub fn metrics(h: &Host, a: MetricsArgs) -> Result<u8> {
    // Asked of CRIU once (it runs criu), not per request.
    let criu_version = ferry_migrate::migration::hostops::RuntimeOps::shared().criu_version().unwrap_or_default();
    if let Some(addr) = &a.listen {
        return serve(h, addr, &criu_version);
    }
    // A host whose containers cannot be listed publishes nothing (never a file that says it
    // has none): the old file stays, the exit code says why.
    let text = gather(h, &criu_version)?;
    match &a.output {
        Some(p) => {
            ferry_runtime::util::write_atomic_mode(p, text.as_bytes(), Some(0o644)).with_context(|| format!("metrics: write {}", p.display()))?
        }
        None => print!("{text}"),
    }
    Ok(0)
}

/// Every container (as `ferry list -a` reports it) and the host's figures, rendered.
fn gather(h: &Host, criu_version: &str) -> Result<String> {
    let criu_version = criu_version.to_string();
    let totals = ferry_runtime::events::totals(h).unwrap_or_else(|e| {
        tracing::warn!("cannot read the event journal: {e}");
        Default::default()
    });
    let host = HostSample { ferry_version: env!("CARGO_PKG_VERSION").to_string(), criu_version, totals };
    let mut cts = Vec::new();
    for ct in h.list_ctids().with_context(|| format!("metrics: list the containers in {}", h.conf_dir().display()))? {
        super::notices::warn(ferry_migrate::stale::recover_if_interrupted(h, &ct));
        let Ok(r) = super::list::row(h, &ct) else { continue };
        let usage = (r.status == "running").then(|| Usage {
            cputime: r.cputime.unwrap_or(0.0),
            cpu_percent: r.cpu.unwrap_or(0.0),
            memory: r.memory.unwrap_or(0),
            swap: r.swap.unwrap_or(0),
            numproc: r.numproc.unwrap_or(0),
            numfiles: r.numfiles.unwrap_or(0),
            disk_used: r.diskspace,
            disk_limit: r.disklimit,
            io_read: r.ioread.unwrap_or(0),
            io_write: r.iowrite.unwrap_or(0),
        });
        cts.push(ContainerSample {
            ctid: r.ctid,
            name: r.name,
            status: r.status,
            usage,
            memory_limit: r.ram,
            processes_limit: r.numproclimit,
            disk_limit: r.disklimit,
        });
    }
    Ok(render(&host, &cts))
}

/// Requests answered at once; more are refused until one ends.
const MAX_CLIENTS: usize = 8;

/// A tiny HTTP/1.0 server: `GET /metrics` (or `/`) gets the figures, anything else 404. Each
/// request in a thread of its own with short timeouts, at most [`MAX_CLIENTS`] at once, so a
/// slow or silent peer neither keeps others waiting nor piles up threads.
fn serve(h: &Host, addr: &str, criu_version: &str) -> Result<u8> {
    let listener = TcpListener::bind(addr).with_context(|| format!("metrics: listen on {addr}"))?;
    eprintln!("ferry: serving metrics on http://{}/metrics", listener.local_addr()?);
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: the peer sees the connection close
        }
        let (h, busy, criu_version) = (h.clone(), busy.clone(), criu_version.to_string());
        std::thread::spawn(move || {
            if let Err(e) = answer(&h, conn, &criu_version) {
                tracing::debug!("metrics: a request failed: {e}");
            }
            busy.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(0)
}

fn answer(h: &Host, mut conn: TcpStream, criu_version: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(std::io::Read::take(&conn, 16 << 10));
    let mut first = String::new();
    reader.read_line(&mut first)?;
    // The rest of the head up to its blank line (16 KiB at most).
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line != "\r\n" && line != "\n" {
        line.clear();
    }
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics" | "/") => match gather(h, criu_version) {
            Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
            Err(e) => ("500 Internal Server Error", "text/plain", format!("{e:#}\n")),
        },
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "not found: the figures are at /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
    };
    write!(conn, "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
    if method != "HEAD" {
        conn.write_all(body.as_bytes())?;
    }
    conn.flush()
}
