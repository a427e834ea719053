//! A recording [`NetTools`] for unit tests: every call is kept as one line of text, the
//! answers come from a script (by the start of the line), and the host's links are a set the
//! test fills. Nothing reaches the host.
//!
//! The lines: `ip ARGS`, `[ns] ip ARGS` (inside the container's netns), `ip -batch: LINE`
//! (one per batch line; `ip -force -batch:` and `[ns] ip -batch:` alike), `iptables ARGS`,
//! `ip6tables ARGS`, `iptables-restore: LINE` (likewise), `sysctl a/b/c=VALUE`. The path of a
//! container's netns shows as `NS`, the host's as `HOSTNS`.

use super::tools::{CtNetns, NetTools};
use crate::error::{Error, Result, ToolError};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;

#[derive(Default)]
pub struct FakeNetTools {
    calls: RefCell<Vec<String>>,
    /// (start of a call line, answer, once): the first that matches answers.
    script: RefCell<Vec<(String, Answer, bool)>>,
    links: RefCell<BTreeSet<String>>,
}

#[derive(Clone)]
enum Answer {
    Out(String),
    /// The tool fails with this on stderr.
    Fail(String),
}

impl FakeNetTools {
    pub fn new() -> FakeNetTools {
        FakeNetTools::default()
    }

    /// A call starting with `prefix` prints `out`.
    pub fn answer(&self, prefix: &str, out: &str) -> &Self {
        self.on(prefix, Answer::Out(out.to_string()), false)
    }

    /// The next call starting with `prefix` prints `out`; later ones go on.
    pub fn answer_once(&self, prefix: &str, out: &str) -> &Self {
        self.on(prefix, Answer::Out(out.to_string()), true)
    }

    /// A call starting with `prefix` fails, saying `stderr`.
    pub fn fail(&self, prefix: &str, stderr: &str) -> &Self {
        self.on(prefix, Answer::Fail(stderr.to_string()), false)
    }

    /// The next call starting with `prefix` fails, saying `stderr`; later ones go on.
    pub fn fail_once(&self, prefix: &str, stderr: &str) -> &Self {
        self.on(prefix, Answer::Fail(stderr.to_string()), true)
    }

    fn on(&self, prefix: &str, answer: Answer, once: bool) -> &Self {
        self.script.borrow_mut().push((prefix.to_string(), answer, once));
        self
    }

    /// `name` exists on the host.
    pub fn link(&self, name: &str) -> &Self {
        self.links.borrow_mut().insert(name.to_string());
        self
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    /// The calls after the first that starts with `prefix` (that one excluded).
    pub fn calls_after(&self, prefix: &str) -> Vec<String> {
        let calls = self.calls();
        let at = calls.iter().position(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"));
        calls[at + 1..].to_vec()
    }

    fn call(&self, line: String, input: Option<&str>) -> Result<String> {
        let line = redact_ns(&line);
        self.calls.borrow_mut().push(line.clone());
        let mut script = self.script.borrow_mut();
        let Some(i) = script.iter().position(|(p, _, _)| line.starts_with(p.as_str())) else { return Ok(String::new()) };
        let answer = script[i].1.clone();
        if script[i].2 {
            script.remove(i);
        }
        match answer {
            Answer::Out(o) => Ok(o),
            Answer::Fail(stderr) => Err(Error::NetTool(ToolError::Failed {
                cmd: line,
                status: std::process::ExitStatus::from_raw(1 << 8),
                stderr,
                input: input.map(str::to_string),
            })),
        }
    }

    /// A batch: each line recorded (and answered) on its own, stopping at the first failure
    /// unless `all`.
    fn batch(&self, head: &str, lines: &[String], all: bool) -> Result<()> {
        let mut first_err = None;
        for l in lines {
            if let Err(e) = self.call(format!("{head}: {l}"), Some(&lines.join("\n"))) {
                if !all {
                    return Err(e);
                }
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// `/proc/<pid>/fd/<n>` (a [`CtNetns`] path) as `NS`.
fn redact_ns(line: &str) -> String {
    line.split(' ')
        .map(|w| {
            let fd = w.strip_prefix("/proc/").and_then(|r| r.split_once("/fd/"));
            match fd {
                Some((pid, n)) if pid.bytes().all(|b| b.is_ascii_digit()) && n.bytes().all(|b| b.is_ascii_digit()) => "NS",
                _ => w,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl NetTools for FakeNetTools {
    fn ip(&self, args: &[&str]) -> Result<String> {
        self.call(format!("ip {}", args.join(" ")), None)
    }
    fn ip_in(&self, _ns: &CtNetns, args: &[&str]) -> Result<String> {
        self.call(format!("[ns] ip {}", args.join(" ")), None)
    }
    fn ip_batch(&self, lines: &[String]) -> Result<()> {
        self.batch("ip -batch", lines, false)
    }
    fn ip_batch_all(&self, lines: &[String]) -> Result<()> {
        self.batch("ip -force -batch", lines, true)
    }
    fn ip_batch_in(&self, _ns: &CtNetns, lines: &[String]) -> Result<()> {
        self.batch("[ns] ip -batch", lines, false)
    }
    fn iptables(&self, v6: bool, args: &[&str]) -> Result<String> {
        self.call(format!("{} {}", if v6 { "ip6tables" } else { "iptables" }, args.join(" ")), None)
    }
    fn iptables_restore(&self, v6: bool, script: &str) -> Result<()> {
        let lines: Vec<String> = script.lines().map(str::to_string).collect();
        self.batch(if v6 { "ip6tables-restore" } else { "iptables-restore" }, &lines, false)
    }
    fn sysctl_set(&self, parts: &[&str], value: &str) -> Result<()> {
        self.call(format!("sysctl {}={value}", parts.join("/")), None).map(drop)
    }
    fn link_exists(&self, name: &str) -> bool {
        self.links.borrow().contains(name)
    }
    fn own_netns_path(&self) -> String {
        "HOSTNS".to_string()
    }
}
