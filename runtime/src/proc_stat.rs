//! What `/proc/PID/stat` says about a process: its state and start time (which tells it from
//! a later process with its pid).

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

/// Parse /proc/PID/stat: the command may hold spaces and parentheses, so fields are counted
/// after the last ')'.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // f[0] is field 3 (state); field 22 is f[19].
    Some(ProcStat { state: f.first()?.chars().next()?, start_time: f.get(19)?.parse().ok()? })
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let t = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1234 56 0";
        let s = parse_proc_stat(t).unwrap();
        assert_eq!(s, ProcStat { state: 'S', start_time: 987654 });
        let me = proc_stat(std::process::id() as i32).unwrap();
        assert!(me.state != 'Z' && me.start_time > 0);
    }
}
