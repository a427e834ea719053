//! `ferry`: run Linux containers and move them between hosts while they run.
//!
//! One subcommand per verb; each verb group lives in `cmd/`. Errors print as
//! `ferry: <message>` and exit with the code of their class (docs/exit-codes.md; `--json`
//! commands also print the error as JSON). The process stays single-threaded: `start` clones
//! and `exec`/`enter` call setns, which both need that.

mod cmd;
mod version;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cmd::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version print and succeed; a bad command line is a usage error.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { cmd::exit::clap_class(&e).code() } else { 0 });
        }
    };
    if cli.cmd.only_prints() {
        // `ferry image inspect F | head`: a reader that goes away ends the output quietly, as for any
        // Unix filter. Commands that change things keep SIGPIPE ignored, so a broken pipe to
        // CRIU or a peer is an error they handle (thawing, rolling back), never a sudden death.
        // SAFETY: SIG_DFL installs no handler; this runs before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).without_time().init();
    let json = cli.cmd.json();
    let own_failure = cli.cmd.own_failure_code();
    match cmd::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => ExitCode::from(cmd::exit::report(&e, json, own_failure)),
    }
}
