//! When to stop the live sync passes and freeze: vzmigrate's rule, made explicit. Pure logic.

/// What one live sync pass changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassChange {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvergePolicy {
    /// Passes at most before freezing (`--max-iterations`), counting the first full pass.
    pub max_passes: u32,
    /// Freeze once a pass moved no more than this many bytes...
    pub small_bytes: u64,
    /// ...and no more than this many files.
    pub small_files: u64,
}

impl Default for ConvergePolicy {
    fn default() -> Self {
        ConvergePolicy { max_passes: 5, small_bytes: 4 << 20, small_files: 64 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    AnotherPass,
    /// Freeze now; the reason is shown in `--times`.
    Freeze(&'static str),
}

/// Decide after each pass (history in order, the first pass first).
pub fn next_step(policy: &ConvergePolicy, history: &[PassChange]) -> Next {
    let Some(last) = history.last() else { return Next::AnotherPass };
    if history.len() as u32 >= policy.max_passes {
        return Next::Freeze("reached --max-iterations");
    }
    if last.bytes <= policy.small_bytes && last.files <= policy.small_files {
        return Next::Freeze("change set below threshold");
    }
    if history.len() >= 2 {
        let prev = history[history.len() - 2];
        if last.bytes >= prev.bytes && last.files >= prev.files {
            return Next::Freeze("change set stopped shrinking");
        }
    }
    Next::AnotherPass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(files: u64, bytes: u64) -> PassChange {
        PassChange { files, bytes }
    }

    #[test]
    fn stops_when_small_or_not_shrinking_or_max() {
        let pol = ConvergePolicy { max_passes: 4, small_bytes: 1000, small_files: 10 };
        assert_eq!(next_step(&pol, &[]), Next::AnotherPass);
        assert_eq!(next_step(&pol, &[p(5000, 1 << 30)]), Next::AnotherPass);
        assert_eq!(next_step(&pol, &[p(5000, 1 << 30), p(3, 900)]), Next::Freeze("change set below threshold"));
        assert_eq!(next_step(&pol, &[p(5000, 1 << 30), p(100, 1 << 20), p(120, 2 << 20)]), Next::Freeze("change set stopped shrinking"));
        assert_eq!(next_step(&pol, &[p(5000, 1 << 30), p(100, 1 << 20), p(50, 1 << 19)]), Next::AnotherPass);
        assert_eq!(next_step(&pol, &[p(5000, 1 << 30), p(100, 1 << 20), p(50, 1 << 19), p(20, 1 << 18)]), Next::Freeze("reached --max-iterations"));
        let one = ConvergePolicy { max_passes: 1, ..pol };
        assert_eq!(next_step(&one, &[p(5000, 1 << 30)]), Next::Freeze("reached --max-iterations"));
    }
}
