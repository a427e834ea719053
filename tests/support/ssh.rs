//! A real sshd (Debian's /usr/sbin/sshd) in a simulated host's network namespace, key-only for
//! root, with its host key, the client key and its pid file in a directory of the test's. The
//! daemon is killed on Drop.
//!
//! Use from a test file: `#[path = "support/ssh.rs"] mod ssh;`
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    pub dir: PathBuf,
    /// The private key a client uses to log in as root.
    pub client_key: PathBuf,
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ferry-test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(st.success(), "ssh-keygen {}", path.display());
}

/// Whether the programs this needs exist (the caller prints why it skips otherwise).
pub fn available() -> bool {
    Path::new("/usr/sbin/sshd").exists()
        && ["ssh", "ssh-keygen"]
            .iter()
            .all(|t| Command::new("sh").arg("-c").arg(format!("command -v {t}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success()))
}

impl Sshd {
    /// Start sshd on port 22 in the netns at `netns_path`; waits until it listens.
    pub fn start(netns_path: &str, dir: &Path) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        // Privilege separation directory sshd insists on.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host_key = dir.join("host_key");
        let client_key = dir.join("id_ed25519");
        keygen(&host_key);
        keygen(&client_key);
        std::fs::copy(client_key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "Port 22\nListenAddress 0.0.0.0\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {pid}\n\
                 MaxStartups 50\nMaxSessions 50\nLogLevel ERROR\n",
                hk = host_key.display(),
                ak = dir.join("authorized_keys").display(),
                pid = dir.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={netns_path}"))
            .args(["/usr/sbin/sshd", "-D", "-e", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sshd");
        let s = Sshd { child, dir: dir.to_path_buf(), client_key };
        let t0 = Instant::now();
        loop {
            let out = Command::new("nsenter").arg(format!("--net={netns_path}")).args(["ss", "-Hltn", "sport = :22"]).output().unwrap();
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "sshd in {netns_path} does not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// Options for the ssh client (ferry's `--ssh-opts`).
    pub fn ssh_opts(&self) -> String {
        format!(
            "-i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5 \
             -o ServerAliveInterval=2 -o ServerAliveCountMax=3",
            self.client_key.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
