//! Transports: how the source reaches a ferry on the destination. Both spawn a child process
//! whose stdin/stdout become the protocol's byte stream; the child's stderr is collected so an
//! early failure ("ferry: command not found", "Permission denied (publickey)") can be shown.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::error::{Error, Result};
use crate::proto::{Connection, ConnectionOptions};

/// Where and how to start `ferry migrate-receive` on the destination over ssh.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// `host` or `user@host`.
    pub destination: String,
    /// Extra ssh options, passed through word by word (`--ssh-opts`).
    pub ssh_opts: Vec<String>,
    /// The ferry command on the destination (`--remote-ferry`), default "ferry".
    pub remote_ferry: String,
    /// The ssh client binary, default "ssh".
    pub ssh_program: String,
}

impl SshTarget {
    pub fn new(destination: impl Into<String>) -> Self {
        SshTarget { destination: destination.into(), ssh_opts: Vec::new(), remote_ferry: "ferry".into(), ssh_program: "ssh".into() }
    }

    /// The full ssh command line for `remote_args` (e.g. `["migrate-receive", "101"]`).
    pub fn command_line(&self, remote_args: &[String]) -> Vec<String> {
        let mut argv = vec![self.ssh_program.clone(), "-o".into(), "BatchMode=yes".into()];
        argv.extend(self.ssh_opts.iter().cloned());
        // "--" keeps a destination that starts with '-' from being read as an option.
        argv.push("--".into());
        argv.push(self.destination.clone());
        // ssh joins the remote words with spaces and hands them to the remote shell: quote them.
        let mut remote = vec![self.remote_ferry.clone()];
        remote.extend(remote_args.iter().map(|a| shell_quote(a)));
        argv.push(remote.join(" "));
        argv
    }
}

/// Quote one word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A running child process that carries the connection.
pub struct Transport {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr_text: Arc<Mutex<String>>,
    description: String,
}

impl Transport {
    /// `ssh -o BatchMode=yes [opts] -- [user@]host REMOTE_FERRY remote_args...`
    pub fn ssh(target: &SshTarget, remote_args: &[String]) -> Result<Transport> {
        let argv = target.command_line(remote_args);
        Self::spawn(&argv, &format!("ssh to {}", target.destination))
    }

    /// Run a local command directly (tests; same-host migration and snapshots).
    pub fn local(argv: &[String]) -> Result<Transport> {
        Self::spawn(argv, &format!("local command {}", argv.first().map(String::as_str).unwrap_or("?")))
    }

    fn spawn(argv: &[String], description: &str) -> Result<Transport> {
        let (prog, args) = argv.split_first().ok_or_else(|| Error::Transport("empty command line".into()))?;
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn { program: prog.clone(), description: description.to_string(), source })?;
        let stderr_text = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let sink = stderr_text.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    tracing::debug!(target: "ferry::transport", "{}", text.trim_end());
                    let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                    // Keep the first 64 KiB: enough to explain a failure.
                    if s.len() < 64 << 10 {
                        s.push_str(&text);
                    }
                }
            });
        }
        Ok(Transport { stdin: child.stdin.take(), stdout: child.stdout.take(), child, stderr_text, description: description.to_string() })
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_text.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Do the handshake over the child's stdio. On failure the error includes the child's
    /// stderr (ssh's or the remote ferry's own message).
    pub async fn connect(&mut self, opts: ConnectionOptions) -> Result<Connection> {
        let (Some(stdin), Some(stdout)) = (self.stdin.take(), self.stdout.take()) else {
            return Err(Error::Transport(format!("{}: already connected", self.description)));
        };
        match Connection::client_split(stdout, stdin, opts).await {
            Ok(c) => Ok(c),
            Err(e) => {
                // Give the child a moment to exit and its stderr to drain.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.child.wait()).await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let said = self.stderr().trim().to_string();
                Err(Error::Connect { description: self.description.clone(), source: Box::new(e), said })
            }
        }
    }

    /// Wait for the child to exit (after the connection is closed).
    pub async fn wait(&mut self) -> Result<std::process::ExitStatus> {
        self.child.wait().await.map_err(|source| Error::Child { description: self.description.clone(), what: "waiting for the child", source })
    }

    /// Kill the child (the peer sees its connection cut).
    pub async fn kill(&mut self) -> Result<()> {
        self.child.kill().await.map_err(|source| Error::Child { description: self.description.clone(), what: "kill", source })
    }
}

/// The destination's side: speak the protocol on this process's stdin and stdout (what ssh
/// connects to `ferry migrate-receive`). Stdout is moved out of the way first — fd 1 then
/// points to stderr — so that a stray print can never corrupt the stream.
pub async fn accept_stdio(opts: ConnectionOptions) -> Result<Connection> {
    use std::os::unix::io::FromRawFd;
    let sys = |what: &'static str, source: nix::Error| Error::Sys { what, source };
    let input = nix::unistd::dup(0).map_err(|e| sys("dup stdin", e))?;
    let output = nix::unistd::dup(1).map_err(|e| sys("dup stdout", e))?;
    nix::unistd::dup2(2, 1).map_err(|e| sys("redirect stdout to stderr", e))?;
    // SAFETY: both descriptors were just created by dup and are owned by nothing else.
    let (r, w) = unsafe { (std::fs::File::from_raw_fd(input), std::fs::File::from_raw_fd(output)) };
    Connection::server_split(stdio_reader(r), stdio_writer(w), opts).await
}

type BoxedReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
type BoxedWriter = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Our stdin as an async reader. Pipes and sockets (what ssh gives us) are read non-blocking
/// through the reactor; `tokio::fs::File` would hand every read to a blocking thread and back,
/// which cost several round trips per file of a sync. Anything epoll refuses (a regular file)
/// falls back to `tokio::fs::File`.
fn stdio_reader(f: std::fs::File) -> BoxedReader {
    match PipeFd::new(f) {
        Ok(p) => Box::new(p),
        Err(f) => Box::new(tokio::fs::File::from_std(f)),
    }
}

/// Our stdout as an async writer; see [`stdio_reader`].
fn stdio_writer(f: std::fs::File) -> BoxedWriter {
    match PipeFd::new(f) {
        Ok(p) => Box::new(p),
        Err(f) => Box::new(tokio::fs::File::from_std(f)),
    }
}

impl tokio::io::AsyncRead for PipeFd {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read;
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                // Not readable after all: the guard cleared readiness; wait again.
                Err(_) => continue,
            }
        }
    }
}

impl tokio::io::AsyncWrite for PipeFd {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, data: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        use std::io::Write;
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().write(data)) {
                Ok(r) => return std::task::Poll::Ready(r),
                Err(_) => continue,
            }
        }
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        // Writes go straight to the descriptor: nothing is held back.
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        // The peer sees EOF when the descriptor is closed (on drop).
        std::task::Poll::Ready(Ok(()))
    }
}

/// A pipe or socket descriptor in non-blocking mode, driven by tokio's reactor.
struct PipeFd(tokio::io::unix::AsyncFd<std::fs::File>);

impl PipeFd {
    /// Gives the file back when the reactor cannot watch it (or it cannot be made non-blocking).
    fn new(f: std::fs::File) -> std::result::Result<PipeFd, std::fs::File> {
        use std::os::unix::io::AsRawFd;
        let fd = f.as_raw_fd();
        // SAFETY: F_GETFL on a descriptor we own; it reads flags only.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(f);
        }
        // SAFETY: a std File owns its descriptor: it stays open, the same one, until the
        // AsyncFd (which owns the File) is dropped or gives it back.
        let async_fd = match unsafe { tokio::io::unix::AsyncFd::register(f) } {
            Ok(a) => a,
            Err(e) => return Err(e.into_parts().0),
        };
        // SAFETY: F_SETFL on a descriptor we own, adding O_NONBLOCK to the flags just read.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(async_fd.into_inner());
        }
        Ok(PipeFd(async_fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_line_quotes_remote_words() {
        let mut t = SshTarget::new("root@198.18.0.2");
        t.ssh_opts = vec!["-p".into(), "2222".into()];
        t.remote_ferry = "/opt/ferry/bin/ferry".into();
        let argv = t.command_line(&["migrate-receive".into(), "it's".into()]);
        assert_eq!(
            argv,
            vec!["ssh", "-o", "BatchMode=yes", "-p", "2222", "--", "root@198.18.0.2", "/opt/ferry/bin/ferry migrate-receive 'it'\\''s'"]
        );
    }
}
