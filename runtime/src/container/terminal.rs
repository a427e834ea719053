//! The terminal of a command that proxies a pty (exec and enter, the console): raw mode for
//! stdin, output written through at once.

use std::io::Write;

/// Put stdin (a terminal) in raw mode; the settings to restore.
pub(crate) fn make_raw() -> Option<nix::sys::termios::Termios> {
    let saved = nix::sys::termios::tcgetattr(std::io::stdin()).ok()?;
    let mut raw = saved.clone();
    nix::sys::termios::cfmakeraw(&mut raw);
    nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
    Some(saved)
}

/// Write `data` to stdout at once (a terminal proxy's output).
pub(crate) fn to_stdout(data: &[u8]) {
    let mut out = std::io::stdout();
    let _ = out.write_all(data);
    let _ = out.flush();
}
