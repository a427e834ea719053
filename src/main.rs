//! `ferry`: run Linux containers and move them between hosts while they run.
//!
//! One subcommand per verb; each verb group lives in `cmd/`. Errors print as
//! `ferry: <message>` and exit 1. The process stays single-threaded: `start` clones and
//! `exec`/`enter` call setns, which both need that.

mod cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cmd::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).without_time().init();
    match cmd::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::from(1)
        }
    }
}
