//! How the source reaches the destination's ferry: over ssh ([`SshLink`], `ferry
//! migrate-receive` there), or, in the unit tests, a receiver in the same process.

use crate::error::Result;
use ferry_transfer::proto::{Connection, ConnectionOptions};
use ferry_transfer::transport::{SshTarget, Transport};
use std::future::Future;
use std::time::Duration;

/// The source's way to the destination, besides the protocol itself.
pub trait Link: Send {
    /// Start the destination's receiver; the connection to it.
    fn connect(&mut self) -> impl Future<Output = Result<Connection>> + Send;
    /// The migration is over: let the receiver go. After a failure, what it said on its way
    /// out (its error, usually why).
    fn finish(&mut self, failed: bool) -> impl Future<Output = Option<String>> + Send;
    /// After a failure, make sure the destination holds nothing half-made even if its receiver
    /// died (`ferry migrate-cleanup CTID` there; best effort).
    fn cleanup(&self, ctid: &str, keep_files: bool) -> impl Future<Output = ()> + Send;
}

/// `ferry migrate-receive` on the destination, over the system's ssh client.
pub struct SshLink {
    target: SshTarget,
    transport: Option<Transport>,
}

impl SshLink {
    pub fn new(target: SshTarget) -> SshLink {
        SshLink { target, transport: None }
    }
}

impl Link for SshLink {
    async fn connect(&mut self) -> Result<Connection> {
        let mut t = Transport::ssh(&self.target, &["migrate-receive".to_string()])?;
        let conn = t.connect(ConnectionOptions::default()).await?;
        self.transport = Some(t);
        Ok(conn)
    }

    async fn finish(&mut self, failed: bool) -> Option<String> {
        let t = self.transport.as_mut()?;
        if !failed {
            // The destination's ferry may stay a little for its last announcements (up to a
            // second); it needs nothing more from here, and without a terminal on the ssh
            // session it outlives the ssh client.
            if tokio::time::timeout(Duration::from_millis(300), t.wait()).await.is_err() {
                let _ = t.kill().await;
            }
            return None;
        }
        // The receiver removes its half of the work when the connection ends; make sure it
        // ends even if the source's error did not come from the connection. What it printed
        // on its way out usually says why.
        let _ = tokio::time::timeout(Duration::from_secs(5), t.wait()).await;
        let _ = t.kill().await;
        let said = t.stderr();
        let said = said.trim();
        (!said.is_empty()).then(|| said.to_string())
    }

    async fn cleanup(&self, ctid: &str, keep_files: bool) {
        let mut args = vec!["migrate-cleanup".to_string(), ctid.to_string()];
        if keep_files {
            args.push("--keep-files".into());
        }
        let argv = self.target.command_line(&args);
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let _ = tokio::time::timeout(Duration::from_secs(60), cmd.status()).await;
    }
}
