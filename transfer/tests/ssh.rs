//! One sync pass over the real ssh transport: sshd from Debian in a network namespace, the
//! system ssh client, and this test binary as the receiving peer on the other side.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use ferry_transfer::proto::Body;
use ferry_transfer::sync::{self, ReceiveOptions, SyncOptions};
use ferry_transfer::transport::{self, SshTarget, Transport};

const HELPER_ENV: &str = "FERRY_SSH_HELPER_DIR";
const ADDR: &str = "198.18.200.1";

/// Removes the namespace and stops our sshd, even when the test fails.
struct Host {
    netns: String,
    sshd: Option<Child>,
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}

fn run(argv: &[&str]) {
    let st = Command::new(argv[0]).args(&argv[1..]).status().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(st.success(), "{argv:?} failed: {st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_over_ssh_into_a_network_namespace() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespace, sshd)");
        return;
    }
    for tool in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen", "/usr/bin/nsenter"] {
        if !Path::new(tool).exists() {
            eprintln!("skipped: {tool} missing (scripts/install-deps.sh installs openssh)");
            return;
        }
    }
    let tmp = tempdir();
    let t = tmp.path();
    let netns = format!("fyt{}-ssh", std::process::id() % 100_000);
    let mut host = Host { netns: netns.clone(), sshd: None };
    run(&["ip", "netns", "add", &netns]);
    let ns = format!("--net=/run/netns/{netns}");
    run(&["nsenter", &ns, "ip", "link", "set", "lo", "up"]);
    run(&["nsenter", &ns, "ip", "addr", "add", &format!("{ADDR}/32"), "dev", "lo"]);
    let (hostkey, clientkey) = (t.join("hostkey"), t.join("clientkey"));
    for k in [&hostkey, &clientkey] {
        run(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k.to_str().unwrap()]);
    }
    std::fs::copy(t.join("clientkey.pub"), t.join("authorized_keys")).unwrap();
    let cfg = t.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port 2222\nListenAddress {ADDR}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\n",
            hostkey.display(),
            t.join("sshd.pid").display(),
            t.join("authorized_keys").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    host.sshd =
        Some(Command::new("nsenter").args([ns.as_str(), "/usr/sbin/sshd", "-D", "-e", "-f", cfg.to_str().unwrap()]).spawn().expect("start sshd"));
    let started = Instant::now();
    while !t.join("sshd.pid").exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "sshd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The ssh client runs inside the namespace too.
    let wrapper = t.join("ssh-in-netns");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec nsenter --net=/run/netns/{netns} ssh \"$@\"\n")).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let (src, dst) = (t.join("src"), t.join("dst"));
    write(&src.join("etc/hostname"), b"ct101\n");
    write(&src.join("var/data.bin"), &noise(3 << 20, 4));
    std::os::unix::fs::symlink("../etc/hostname", src.join("var/link")).unwrap();

    // The remote side: this test binary running the helper below, its protocol output on fd 3
    // (the harness prints to stdout, which goes to stderr there).
    let exe = std::env::current_exe().unwrap();
    let mut target = SshTarget::new(format!("root@{ADDR}"));
    target.ssh_program = wrapper.display().to_string();
    target.ssh_opts = [
        "-p",
        "2222",
        "-i",
        clientkey.to_str().unwrap(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    target.remote_ferry = format!("exec 3>&1 1>&2; {HELPER_ENV}={} exec {} --exact helper_ssh_receiver --nocapture", dst.display(), exe.display());
    let mut transport = Transport::ssh(&target, &[]).unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(30), transport.connect(quick()))
        .await
        .expect("ssh handshake hung")
        .unwrap_or_else(|e| panic!("ssh transport: {e}"));
    let stats = tokio::time::timeout(Duration::from_secs(60), sync::sync_pass(&conn, &src, &SyncOptions::default()))
        .await
        .expect("sync over ssh hung")
        .unwrap();
    conn.close().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), transport.wait()).await.expect("ssh did not exit").unwrap();
    assert!(status.success(), "remote side failed: {status}; stderr: {}", transport.stderr());
    assert_eq!(stats.files_sent, 2, "{stats:?}");
    assert!(stats.bytes_on_wire > 3 << 20);
    assert_same_tree(&src, &dst);
}

/// Not a test on its own: the receiving peer that `sync_over_ssh_into_a_network_namespace`
/// starts on the other side of ssh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helper_ssh_receiver() {
    let Ok(dir) = std::env::var(HELPER_ENV) else {
        eprintln!("helper for sync_over_ssh_into_a_network_namespace (run through ssh by it); nothing to do alone");
        return;
    };
    // The remote command line saved the ssh channel on fd 3: put it back as stdout, as ferry
    // migrate-receive would find it.
    nix::unistd::dup2(3, 1).unwrap();
    nix::unistd::close(3).unwrap();
    let conn = transport::accept_stdio(quick()).await.unwrap();
    let begin = conn.recv().await.unwrap();
    assert!(matches!(begin.body, Some(Body::SyncBegin(_))));
    sync::receive_pass(&conn, &begin, Path::new(&dir), &ReceiveOptions { fsync: true, ..Default::default() }).await.unwrap();
    // Wait for the source's goodbye.
    let _ = conn.recv().await;
    std::process::exit(0);
}
