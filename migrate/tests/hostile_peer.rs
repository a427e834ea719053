//! A peer on the wire that plays the attacker against the destination of a migration: a Config
//! for a container the destination already has.

use std::path::Path;
use std::time::Duration;

use ferry_transfer::proto::{self, Body, ConfigMsg, ConnectionOptions, Preflight};

const LIMIT: Duration = Duration::from_secs(30);

fn quick() -> ConnectionOptions {
    ConnectionOptions { idle_timeout: Duration::from_secs(10), ping_interval: Duration::from_millis(500), ..Default::default() }
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// The destination of a migration re-checks at Config what preflight checked: a source that
/// goes on although preflight said the container exists there (or its private area does) is
/// refused, and what the destination had stays as it was, also after the source's Abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_for_a_container_that_exists_here_is_refused_and_it_stays_intact() {
    use ferry_runtime::{ContainerConfig, Ctid, Host};
    for config_too in [true, false] {
        let tmp = tempfile::Builder::new().prefix("ferry-t-hp").tempdir().unwrap();
        let host = Host::new(tmp.path().join("data"), tmp.path().join("run"), format!("ferry-t-hp{}", std::process::id()));
        let ct = Ctid::new("101").unwrap();
        let cfg = ContainerConfig::new(ct.clone());
        if config_too {
            std::fs::create_dir_all(host.config_path(&ct).parent().unwrap()).unwrap();
            cfg.save(&host.config_path(&ct)).unwrap();
        }
        write(&host.private_dir(&ct).join("etc/precious"), b"the container's own files");
        let (c, s) = proto::Connection::pair(1 << 20, quick(), quick()).await.unwrap();
        let h = host.clone();
        let dest = tokio::spawn(async move {
            let r = ferry_migrate::migration::dest::serve(&h, &s).await;
            // As `ferry migrate-receive` does: the last answer reaches the source.
            let _ = s.close().await;
            r
        });
        let toml = cfg.to_toml();
        let pre = c
            .request(Body::Preflight(Preflight { ctid: "101".into(), config_toml: toml.clone(), online: false, ..Default::default() }))
            .await
            .unwrap();
        let Body::PreflightResult(pre) = pre else { panic!("expected PreflightResult") };
        assert!(!pre.ok, "preflight saw no problem: {pre:?}");
        // The source ignores the problems and goes on.
        let err = c.request(Body::Config(ConfigMsg { ctid: "101".into(), config_toml: toml })).await.expect_err("Config accepted");
        let msg = err.to_string();
        assert!(msg.contains("101") && msg.contains("untouched"), "{msg}");
        let _ = c.request(Body::Abort(proto::Abort { reason: "hostile".into() })).await;
        let _ = c.close().await;
        let served = tokio::time::timeout(LIMIT, dest).await.expect("the destination hung").unwrap();
        assert!(served.is_err());
        assert_eq!(std::fs::read(host.private_dir(&ct).join("etc/precious")).unwrap(), b"the container's own files", "config too: {config_too}");
        assert_eq!(host.config_path(&ct).exists(), config_too);
        assert!(!ferry_migrate::migration::dest::staging_config(&host, &ct).exists());
    }
}
