//! Error classes and the exit code of each: one table for every command (docs/exit-codes.md).
//! Where vzctl had a code for the same class, ferry uses it, so an OpenVZ admin's scripts keep
//! their checks; classes vzctl never had take codes vzctl never used. `exec` and `enter` are
//! the exception: they exit with the command's own status and use [`EXEC_OWN_FAILURE`] for
//! ferry's own failures (as `podman exec`).

use serde::{Deserialize, Serialize};

/// `exec`/`enter`: ferry itself failed (the command never ran).
pub const EXEC_OWN_FAILURE: u8 = 125;
/// `exec`/`enter`: the command exists but cannot be run (not executable), as a shell says.
pub const EXEC_CANNOT_RUN: u8 = 126;
/// `exec`/`enter`: no such command in the container, as a shell says.
pub const EXEC_NOT_FOUND: u8 = 127;

/// What kind of failure ended a command. The runtime's and the pipelines' typed errors say
/// which (`Error::class`); the CLI maps the class to the exit code and to `--json` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// Anything not in a class below (vzctl used 1 for a limit it could not set; so does ferry).
    Failed,
    /// A bad command line: unknown option, missing argument (vzctl 20).
    Usage,
    /// A value ferry cannot use: a size without a unit, a bad hostname or address (vzctl 21).
    InvalidValue,
    /// The host config file is missing, unreadable or wrong (vzctl 10: vz.conf not found).
    HostConfig,
    /// Another operation holds the container's lock (vzctl 9).
    Locked,
    /// No container with this CTID or name on this host (vzctl 14: config not found).
    NotFound,
    /// A container with this CTID or name exists already (vzctl 44).
    Exists,
    /// The container must run for this and does not (vzctl 31).
    NotRunning,
    /// The container must be stopped for this and runs (vzctl 32).
    AlreadyRunning,
    /// Its root is not mounted (vzctl 40).
    NotMounted,
    /// Its root is mounted already (vzctl 41).
    AlreadyMounted,
    /// CRIU could not dump it; it keeps running as before (vzctl 16: error during suspend).
    CheckpointFailed,
    /// CRIU could not restore it; nothing of it runs (vzctl 17: error during resume).
    RestoreFailed,
    /// An action script (CTID.mount, vps.mount, ...) failed (vzctl 79).
    ActionScript,
    /// The destination refused the migration in its preflight; nothing changed anywhere.
    MigrationRefused,
    /// The migration failed; the container is on this host as it was (never touched, or
    /// restored here after the freeze).
    MigrationFailed,
    /// The migration failed and could not put things back: the message says what to do.
    MigrationNeedsAction,
}

impl ErrorClass {
    /// Every class, in the order of the documented table.
    pub const ALL: [ErrorClass; 17] = [
        ErrorClass::Failed,
        ErrorClass::Usage,
        ErrorClass::InvalidValue,
        ErrorClass::HostConfig,
        ErrorClass::Locked,
        ErrorClass::NotFound,
        ErrorClass::Exists,
        ErrorClass::NotRunning,
        ErrorClass::AlreadyRunning,
        ErrorClass::NotMounted,
        ErrorClass::AlreadyMounted,
        ErrorClass::CheckpointFailed,
        ErrorClass::RestoreFailed,
        ErrorClass::ActionScript,
        ErrorClass::MigrationRefused,
        ErrorClass::MigrationFailed,
        ErrorClass::MigrationNeedsAction,
    ];

    /// The process exit code of this class.
    pub fn code(self) -> u8 {
        match self {
            ErrorClass::Failed => 1,
            ErrorClass::Usage => 20,
            ErrorClass::InvalidValue => 21,
            ErrorClass::HostConfig => 10,
            ErrorClass::Locked => 9,
            ErrorClass::NotFound => 14,
            ErrorClass::Exists => 44,
            ErrorClass::NotRunning => 31,
            ErrorClass::AlreadyRunning => 32,
            ErrorClass::NotMounted => 40,
            ErrorClass::AlreadyMounted => 41,
            ErrorClass::CheckpointFailed => 16,
            ErrorClass::RestoreFailed => 17,
            ErrorClass::ActionScript => 79,
            ErrorClass::MigrationRefused => 112,
            ErrorClass::MigrationFailed => 113,
            ErrorClass::MigrationNeedsAction => 114,
        }
    }

    /// The name in `--json` output and in the docs (kebab-case).
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Failed => "failed",
            ErrorClass::Usage => "usage",
            ErrorClass::InvalidValue => "invalid-value",
            ErrorClass::HostConfig => "host-config",
            ErrorClass::Locked => "locked",
            ErrorClass::NotFound => "not-found",
            ErrorClass::Exists => "exists",
            ErrorClass::NotRunning => "not-running",
            ErrorClass::AlreadyRunning => "already-running",
            ErrorClass::NotMounted => "not-mounted",
            ErrorClass::AlreadyMounted => "already-mounted",
            ErrorClass::CheckpointFailed => "checkpoint-failed",
            ErrorClass::RestoreFailed => "restore-failed",
            ErrorClass::ActionScript => "action-script",
            ErrorClass::MigrationRefused => "migration-refused",
            ErrorClass::MigrationFailed => "migration-failed",
            ErrorClass::MigrationNeedsAction => "migration-needs-action",
        }
    }

    /// Of several failures (a batch such as `start --all`), the one whose class matters most
    /// to the admin: what needs a hand first, then what is most specific.
    pub fn most_urgent(classes: impl IntoIterator<Item = ErrorClass>) -> Option<ErrorClass> {
        classes.into_iter().min_by_key(|c| match c {
            ErrorClass::MigrationNeedsAction => 0,
            ErrorClass::Failed => 2,
            _ => 1,
        })
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_clear_of_exec_and_signals() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorClass::ALL {
            assert!(seen.insert(c.code()), "{c} shares code {}", c.code());
            assert!(c.code() != 0 && c.code() < EXEC_OWN_FAILURE, "{c}: {} collides with exec's or a signal's", c.code());
            assert_eq!(serde_json::to_value(c).unwrap(), c.name());
        }
        assert_eq!(ErrorClass::most_urgent([ErrorClass::Failed, ErrorClass::NotRunning]), Some(ErrorClass::NotRunning));
        assert_eq!(ErrorClass::most_urgent([ErrorClass::MigrationFailed, ErrorClass::MigrationNeedsAction]), Some(ErrorClass::MigrationNeedsAction));
        assert_eq!(ErrorClass::most_urgent([]), None);
    }
}
