//! The rollback paths of a migration's source and destination, without root: both hosts in
//! this process with recording fakes of their host operations (`testkit`). Each fault the
//! integration tests inject into a real ferry (`FERRY_TEST_FAULT`, tests/migrate.rs) has its
//! test here, and so have the failures they cannot cause (a dump, a rollback's restore, a
//! commit that fails, a config that cannot be staged).

use super::dest;
use super::fault::{Fault, Faults};
use super::hostops::fake::Op;
use super::image_stream::{ChannelKind, DataChannel};
use super::journal::{Journal, Stage};
use super::recovery::{recover_journal_with, Recovered};
use super::testkit::{migrate, options, Interfere, TestHost};
use crate::error::Error;
use crate::stale::{thaw_stale_with, Notice};
use ferry_transfer::proto::{Body, ConfigMsg, Connection, ConnectionOptions, Preflight, Restore};

/// Exactly one host runs the container, and it is `here`.
fn runs_only_on(here: &TestHost, there: &TestHost) {
    let ct = here.ct();
    assert!(here.ops.running(&ct), "the container does not run where it should");
    assert!(!there.ops.running(&ct), "the container runs on both hosts");
}

fn assert_rolled_back(src: &TestHost, dst: &TestHost, err: &str) {
    assert!(err.contains("was restored and runs here again"), "not rolled back: {err}");
    assert_eq!(src.ops.calls().iter().filter(|o| **o == Op::Restore).count(), 1, "{:?}", src.ops.calls());
    assert!(src.ops.called(Op::LetTrafficThrough));
    runs_only_on(src, dst);
    assert!(src.has_config() && src.has_private());
    assert_eq!(Journal::read(&src.host, &src.ct()).unwrap(), None, "the journal is left");
    assert!(!src.host.dump_dir(&src.ct()).join("migration").exists(), "the dump is left");
    dst.assert_clean();
}

fn tcp() -> DataChannel {
    DataChannel { kind: ChannelKind::Tcp, ..Default::default() }
}

// --- the whole way, for comparison ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_migration_moves_the_container_and_leaves_nothing_here() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    let out = migrate(&src, &dst, options(), Interfere::default()).await;
    assert_eq!(
        out.stages,
        [
            "connecting",
            "preflight",
            "sync pass 1",
            "freeze and dump",
            "final sync",
            "image transfer",
            "restore on the destination",
            "announce",
            "source cleanup"
        ]
    );
    let report = out.result.expect("not killed").expect("migrated");
    assert_eq!(report.mode, "online");
    assert_eq!(src.ops.calls(), vec![Op::DrainBacklogs, Op::Dump, Op::Blackhole, Op::ReleaseSource, Op::LetTrafficThrough, Op::RemoveSource]);
    let d = dst.ops.calls();
    assert_eq!(&d[..4], &[Op::PrepareReceiveArea, Op::RestoreUnannounced, Op::InstallConfig, Op::Announce], "{d:?}");
    runs_only_on(&dst, &src);
    assert!(dst.has_config() && !dst.has_staged());
    assert_eq!(std::fs::read(dst.host.private_dir(&dst.ct()).join("root/etc/hostname")).unwrap(), b"ct101\n");
    assert!(!src.has_config() && !src.has_private());
    assert_eq!(Journal::read(&src.host, &src.ct()).unwrap(), None);
    assert!(out.dest.expect("the receiver ended").is_ok());
}

// --- before the freeze: the container was never touched -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_preflight_changes_nothing_on_either_host() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    dst.container(false); // the destination has a container 101 already
    let out = migrate(&src, &dst, options(), Interfere::default()).await;
    assert!(matches!(out.cause(), Error::Preflight { .. }), "{}", out.err());
    assert!(out.err().contains("already exists"), "{}", out.err());
    assert!(src.ops.calls().is_empty(), "{:?}", src.ops.calls());
    assert!(dst.ops.calls().is_empty(), "{:?}", dst.ops.calls());
    assert!(dst.has_config() && dst.has_private() && !dst.has_staged());
    runs_only_on(&src, &dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_during_the_live_sync_leaves_the_container_running_and_the_destination_clean() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    let out = migrate(&src, &dst, options(), Interfere { cut_at: Some("sync pass 1"), ..Default::default() }).await;
    let err = out.err();
    assert!(!err.contains("restored"), "a rollback where nothing was frozen: {err}");
    assert!(!src.ops.called(Op::Dump), "{:?}", src.ops.calls());
    runs_only_on(&src, &dst);
    assert_eq!(Journal::read(&src.host, &src.ct()).unwrap(), None);
    dst.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dump_lets_the_traffic_through_again_and_the_destination_undoes_its_part() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    src.ops.fail(Op::Dump);
    let out = migrate(&src, &dst, options(), Interfere::default()).await;
    assert!(out.err().contains("Dump failed"), "{}", out.err());
    assert_eq!(src.ops.calls(), vec![Op::DrainBacklogs, Op::Dump, Op::LetTrafficThrough]);
    runs_only_on(&src, &dst);
    assert_eq!(Journal::read(&src.host, &src.ct()).unwrap(), None);
    assert!(!src.host.dump_dir(&src.ct()).join("migration").exists());
    dst.assert_clean();
    assert!(dst.ops.called(Op::RemoveArea) && !dst.ops.called(Op::KillAndTeardown));
}

// --- after the dump: restored here from the dump ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_in_the_final_sync_restores_the_container_here() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    let out = migrate(&src, &dst, options(), Interfere { cut_at: Some("final sync"), ..Default::default() }).await;
    assert!(matches!(out.cause(), Error::RolledBack { .. }), "{}", out.err());
    assert_rolled_back(&src, &dst, &out.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_during_the_image_or_the_restore_restores_the_container_here() {
    for stage in ["image transfer", "restore on the destination"] {
        let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
        src.container(true);
        let out = migrate(&src, &dst, options(), Interfere { cut_at: Some(stage), ..Default::default() }).await;
        assert_rolled_back(&src, &dst, &out.err());
    }
}

/// FERRY_TEST_FAULT=damage-image over either channel: the destination's reader refuses the
/// image, says why, and the source takes the container back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_image_is_refused_and_the_container_restored_here() {
    for channel in [DataChannel::default(), tcp()] {
        let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
        src.container(true);
        src.ops.set_faults(Faults::of(&[Fault::DamageImage]));
        let mut opts = options();
        opts.compress = 0;
        opts.data_channel = channel;
        let out = migrate(&src, &dst, opts, Interfere::default()).await;
        let err = out.err();
        assert!(err.contains("digest mismatch"), "{channel:?}: {err}");
        assert!(!dst.ops.called(Op::RestoreUnannounced), "a damaged image was restored");
        assert_rolled_back(&src, &dst, &err);
    }
}

/// FERRY_TEST_FAULT=cut-data, wrong-token (source) and refuse-data (destination) on the
/// direct data channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_channel_failures_restore_the_container_here() {
    for (src_fault, dst_fault, says) in [
        (Some(Fault::CutData), None, "cut on purpose"),
        (Some(Fault::WrongToken), None, "token not accepted"),
        (None, Some(Fault::RefuseData), "refused"),
    ] {
        let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
        src.container(true);
        src.ops.set_faults(Faults::of(&src_fault.into_iter().collect::<Vec<_>>()));
        dst.ops.set_faults(Faults::of(&dst_fault.into_iter().collect::<Vec<_>>()));
        let mut opts = options();
        opts.data_channel = tcp();
        opts.compress = 0; // the cut strikes in the middle of the dump's bytes
        let t0 = std::time::Instant::now();
        let out = migrate(&src, &dst, opts, Interfere::default()).await;
        assert!(out.result.as_ref().is_some_and(|r| r.is_err()), "{src_fault:?}{dst_fault:?}: the migration succeeded");
        let err = out.err();
        assert!(err.contains(says), "{src_fault:?}{dst_fault:?}: {err}");
        assert!(matches!(out.cause(), Error::RolledBack { .. }), "{err}");
        // Neither end waits out the listener's deadline while the container is frozen.
        assert!(t0.elapsed() < std::time::Duration::from_secs(25), "took {:?}", t0.elapsed());
        assert_rolled_back(&src, &dst, &err);
    }
}

/// FERRY_TEST_FAULT=die-mid-image and die-after-image: the receiver dies (a killed task; the
/// fault itself, which ends the receiver's process in a real ferry); the source restores the
/// container and removes what the dead receiver left (migrate-cleanup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_dies_mid_image_or_after_it_is_cleaned_up_after() {
    let mid_image = Interfere { kill_dest_at: Some("image transfer"), ..Default::default() };
    for (channel, fault, interfere) in [
        (tcp(), Faults::NONE, mid_image),
        (DataChannel::default(), Faults::of(&[Fault::DieAfterImage]), Interfere::default()),
        (tcp(), Faults::of(&[Fault::DieAfterImage]), Interfere::default()),
    ] {
        let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
        src.container(true);
        dst.ops.set_faults(fault);
        let mut opts = options();
        opts.data_channel = channel;
        let out = migrate(&src, &dst, opts, interfere).await;
        assert_rolled_back(&src, &dst, &out.err());
        // The dead receiver undid nothing itself: the cleanup the source ran did.
        assert!(dst.ops.called(Op::RemoveArea), "{channel:?}: {:?}", dst.ops.calls());
        assert!(!dst.ops.called(Op::RestoreUnannounced), "{channel:?}: {:?}", dst.ops.calls());
    }
}

/// FERRY_TEST_FAULT=fail-restore: the destination says why, undoes its part, and the source
/// restores the container; with --keep-dst the synced files (and the staged config that marks
/// them as a kept receive) stay there for a retry, which sends only what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_on_the_destination_restores_the_container_here() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    dst.ops.set_faults(Faults::of(&[Fault::FailRestore]));
    let out = migrate(&src, &dst, options(), Interfere::default()).await;
    let err = out.err();
    assert!(err.contains("reported an error: restore failed on purpose"), "{err}");
    assert_rolled_back(&src, &dst, &err);
    assert!(matches!(out.dest, Some(Err(_))), "the receiver did not end with the restore's error");
    // What a failed restore may have left (a forked restore that died midway) is torn down.
    assert!(dst.ops.called(Op::KillAndTeardown), "{:?}", dst.ops.calls());

    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    dst.ops.fail(Op::RestoreUnannounced);
    let mut opts = options();
    opts.keep_dst = true;
    let out = migrate(&src, &dst, opts.clone(), Interfere::default()).await;
    assert!(out.err().contains("RestoreUnannounced failed"), "{}", out.err());
    runs_only_on(&src, &dst);
    assert!(dst.has_private() && dst.has_staged() && !dst.has_config(), "--keep-dst kept no files");
    assert!(!dst.ops.called(Op::RemoveArea));
    // The retry finds the kept files and sends only what changed.
    let dst2 = dst.with_fresh_ops();
    let out = migrate(&src, &dst2, opts, Interfere::default()).await;
    let report = out.result.unwrap().expect("the retry migrated");
    assert!(report.passes[0].files < 3, "the retry sent {} files again", report.passes[0].files);
    runs_only_on(&dst2, &src);
}

/// Past the restore, before the commit: the commit fails on the destination (its config
/// cannot be installed). It kills the copy it restored, and the source takes the container
/// back: never two copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_on_the_destination_restores_the_container_here() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    dst.ops.fail(Op::InstallConfig);
    let out = migrate(&src, &dst, options(), Interfere::default()).await;
    let err = out.err();
    assert!(err.contains("InstallConfig failed"), "{err}");
    assert!(dst.ops.called(Op::KillAndTeardown), "{:?}", dst.ops.calls());
    assert_rolled_back(&src, &dst, &err);
}

/// A cut connection after the destination restored the container, before the commit: its copy
/// is killed there (links down first), the source's is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_at_the_commit_kills_the_destinations_copy() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    let out = migrate(&src, &dst, options(), Interfere { cut_at: Some("announce"), ..Default::default() }).await;
    assert!(dst.ops.called(Op::RestoreUnannounced) && dst.ops.called(Op::KillAndTeardown), "{:?}", dst.ops.calls());
    assert_rolled_back(&src, &dst, &out.err());
}

/// The rollback's own restore fails: the error says what to do, and the dump and the journal
/// stay, so that the next command restores the container from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_whose_restore_fails_keeps_the_dump_for_the_next_command() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    dst.ops.set_faults(Faults::of(&[Fault::FailRestore]));
    src.ops.fail(Op::Restore);
    let out = migrate(&src, &dst, options(), Interfere::default()).await;
    assert!(matches!(out.cause(), Error::NeedsAction { .. }), "{}", out.err());
    assert!(out.err().contains("ferry restore 101"), "{}", out.err());
    let j = Journal::read(&src.host, &src.ct()).unwrap().expect("the journal");
    assert_eq!(j.stage, Stage::Dumped);
    assert!(j.image_dir.as_ref().unwrap().join("inventory.img").exists(), "the dump is gone");
    assert!(!src.ops.running(&src.ct()) && !dst.ops.running(&dst.ct()));
    dst.assert_clean();
    // The next command that takes the lock restores it from the dump.
    let fixed = super::hostops::fake::Recording::new();
    let r = recover_journal_with(&src.host, &src.lock(), fixed.as_ref()).unwrap().expect("recovered");
    assert!(matches!(r, Recovered::RestoredFromDump { .. }), "{r}");
    assert!(r.to_string().contains("restored here"), "{r}");
    assert!(fixed.running(&src.ct()));
    assert_eq!(Journal::read(&src.host, &src.ct()).unwrap(), None);
}

// --- the source's ferry killed: the next command puts the container right ---------------------

/// FERRY_TEST_FAULT=hang-before-restore, then the source killed: the receiver sees its
/// connection end and removes its part; the next command on the source restores the container
/// from the dump the journal names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_killed_during_the_restore_is_restored_from_its_dump_by_the_next_command() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    dst.ops.set_faults(Faults::of(&[Fault::HangBeforeRestore]));
    let out = migrate(&src, &dst, options(), Interfere { kill_source_at: Some("restore on the destination"), ..Default::default() }).await;
    assert!(out.result.is_none(), "the source was not killed");
    assert!(out.dest.expect("the receiver ended").is_err());
    dst.assert_clean();
    assert!(!src.ops.running(&src.ct()), "the dumped container still runs");
    let notices = thaw_stale_with(&src.host, &src.lock(), src.ops.as_ref());
    assert!(matches!(notices.as_slice(), [Notice::Recovered(Recovered::RestoredFromDump { .. })]), "{notices:?}");
    assert!(notices[0].to_string().contains("interrupted after the dump"), "{}", notices[0]);
    runs_only_on(&src, &dst);
    assert_eq!(Journal::read(&src.host, &src.ct()).unwrap(), None);
}

/// Killed during the live sync: the container was never touched; the next command says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_killed_during_the_sync_leaves_the_container_untouched() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    let out = migrate(&src, &dst, options(), Interfere { kill_source_at: Some("sync pass 1"), ..Default::default() }).await;
    assert!(out.result.is_none());
    dst.assert_clean();
    let r = recover_journal_with(&src.host, &src.lock(), src.ops.as_ref()).unwrap().expect("recovered");
    assert!(matches!(r, Recovered::Untouched { .. }), "{r}");
    assert!(r.to_string().contains("interrupted before the freeze"), "{r}");
    runs_only_on(&src, &dst);
}

/// FERRY_TEST_FAULT=die-after-commit: the destination runs the container; the next command on
/// the source finishes the cleanup it owed and never starts it here again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_killed_after_the_commit_is_removed_here_by_the_next_command() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    src.ops.set_faults(Faults::of(&[Fault::DieAfterCommit]));
    let out = migrate(&src, &dst, options(), Interfere::default()).await;
    assert!(out.result.is_none());
    assert!(dst.has_config() && dst.ops.running(&dst.ct()), "the destination did not commit");
    assert_eq!(Journal::read(&src.host, &src.ct()).unwrap().map(|j| j.stage), Some(Stage::Committed));
    let r = recover_journal_with(&src.host, &src.lock(), src.ops.as_ref()).unwrap().expect("recovered");
    assert!(matches!(r, Recovered::RemovedHere { .. }), "{r}");
    assert!(!src.has_config() && !src.has_private());
    runs_only_on(&dst, &src);
}

/// The journal's other stages: frozen (thawed), frozen with a complete dump (restored), a dump
/// that did not complete (the container needs a start), and a cleanup after the commit that
/// fails (the error names the way out).
#[test]
fn each_journal_stage_is_put_right() {
    let journal = |stage, image_dir| Journal { stage, destination: "root@198.18.0.2".into(), pid: 0x7fff_fff0, image_dir, remove_area: true };
    let src = TestHost::new("a");
    src.container(true);
    src.ops.set_frozen(&src.ct());
    journal(Stage::Frozen, None).write(&src.host, &src.ct()).unwrap();
    let r = recover_journal_with(&src.host, &src.lock(), src.ops.as_ref()).unwrap().unwrap();
    assert!(matches!(r, Recovered::Thawed { .. }), "{r}");

    let src = TestHost::new("a");
    src.container(false);
    let dump = src.host.dump_dir(&src.ct()).join("migration");
    super::hostops::fake::write_dump(&dump, &src.container(false));
    journal(Stage::Frozen, Some(dump.clone())).write(&src.host, &src.ct()).unwrap();
    let r = recover_journal_with(&src.host, &src.lock(), src.ops.as_ref()).unwrap().unwrap();
    assert!(matches!(r, Recovered::RestoredFromDump { .. }), "{r}");
    assert!(src.ops.running(&src.ct()) && !dump.exists());

    let src = TestHost::new("a");
    src.container(false);
    journal(Stage::Frozen, Some(src.host.dump_dir(&src.ct()).join("migration"))).write(&src.host, &src.ct()).unwrap();
    let r = recover_journal_with(&src.host, &src.lock(), src.ops.as_ref()).unwrap().unwrap();
    assert!(matches!(r, Recovered::DumpIncomplete { .. }), "{r}");
    assert!(r.to_string().contains("ferry start 101"), "{r}");
    assert!(!src.ops.running(&src.ct()));

    let src = TestHost::new("a");
    src.container(false);
    src.ops.fail(Op::RemoveSource);
    journal(Stage::Committed, None).write(&src.host, &src.ct()).unwrap();
    let notices = thaw_stale_with(&src.host, &src.lock(), src.ops.as_ref());
    let text = notices.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(matches!(notices.as_slice(), [Notice::RecoveryFailed { .. }]), "{text}");
    assert!(text.contains("ferry destroy 101") && text.contains("RemoveSource failed"), "{text}");
    assert!(Journal::read(&src.host, &src.ct()).unwrap().is_some(), "the journal went with the failure");
}

// --- offline -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_migration_whose_stop_fails_leaves_the_container_running() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    src.ops.fail(Op::Stop);
    let mut opts = options();
    opts.online = Some(false);
    let out = migrate(&src, &dst, opts, Interfere::default()).await;
    assert!(out.err().contains("Stop failed"), "{}", out.err());
    runs_only_on(&src, &dst);
    dst.assert_clean();
}

/// The sync or the start on the destination fails: the container starts here again; when that
/// fails too the error says to start it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_migration_that_fails_starts_the_container_here_again() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    let mut opts = options();
    opts.online = Some(false);
    let out = migrate(&src, &dst, opts.clone(), Interfere { cut_at: Some("start on the destination"), ..Default::default() }).await;
    assert!(matches!(out.cause(), Error::RolledBack { .. }), "{}", out.err());
    assert_eq!(src.ops.calls(), vec![Op::Stop, Op::Start]);
    runs_only_on(&src, &dst);
    dst.assert_clean();

    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(true);
    dst.ops.fail(Op::Start);
    src.ops.fail(Op::Start);
    let out = migrate(&src, &dst, opts, Interfere::default()).await;
    assert!(matches!(out.cause(), Error::NeedsAction { .. }), "{}", out.err());
    assert!(out.err().contains("ferry start 101"), "{}", out.err());
    assert!(!src.ops.running(&src.ct()) && !dst.ops.running(&dst.ct()));
    dst.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_migration_of_a_stopped_container_commits_without_a_restore() {
    let (src, dst) = (TestHost::new("a"), TestHost::new("b"));
    src.container(false);
    let out = migrate(&src, &dst, options(), Interfere::default()).await;
    assert_eq!(out.result.unwrap().expect("migrated").mode, "offline");
    assert_eq!(dst.ops.calls(), vec![Op::PrepareReceiveArea, Op::InstallConfig]);
    assert!(dst.has_config() && !src.has_config());
    assert!(!src.ops.running(&src.ct()) && !dst.ops.running(&dst.ct()));
}

// --- the receiver on its own ---------------------------------------------------------------------

async fn receiver(dst: &TestHost) -> (Connection, tokio::task::JoinHandle<crate::Result<()>>) {
    let quick = ConnectionOptions { idle_timeout: std::time::Duration::from_secs(10), ..Default::default() };
    let (c, s) = Connection::pair(1 << 20, quick.clone(), quick).await.unwrap();
    let (host, ops) = (dst.host.clone(), dst.ops());
    let task = tokio::spawn(async move {
        let r = dest::serve_with(&host, &s, ops).await;
        let _ = s.close().await;
        r
    });
    (c, task)
}

fn preflight_and_config() -> (Body, Body) {
    let cfg = ferry_runtime::ContainerConfig::new(ferry_runtime::Ctid::new("101").unwrap());
    (
        Body::Preflight(Preflight { ctid: "101".into(), config_toml: cfg.to_toml(), ..Default::default() }),
        Body::Config(ConfigMsg { ctid: "101".into(), config_toml: cfg.to_toml() }),
    )
}

/// A message the state does not expect is refused naming the state, and what the receive made
/// is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_out_of_place_is_refused_and_the_receive_undone() {
    let dst = TestHost::new("b");
    let (c, task) = receiver(&dst).await;
    let (pre, config) = preflight_and_config();
    let err = c.request(Body::Restore(Restore { ctid: "101".into(), from_image: true })).await.unwrap_err().to_string();
    assert!(err.contains("unexpected Restore message (connected)"), "{err}");
    assert!(task.await.unwrap().is_err());
    dst.assert_clean();

    let (c, task) = receiver(&dst).await;
    c.request(pre).await.unwrap();
    c.request(config).await.unwrap();
    assert!(dst.has_private() && dst.has_staged());
    // An offline migration of a stopped container commits without a restore.
    c.request(Body::Announce(Default::default())).await.expect("Announce after Config");
    c.request(Body::Done(Default::default())).await.expect("Done");
    assert!(task.await.unwrap().is_ok());
    assert!(dst.has_config() && !dst.has_staged());
}

/// A restore that failed ends the receive with its error at the source's Abort; Done before the
/// commit and a connection that ends undo the receive too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receive_ends_undone_on_abort_done_or_a_lost_connection() {
    let dst = TestHost::new("b");
    dst.ops.fail(Op::Start);
    let (c, task) = receiver(&dst).await;
    let (pre, config) = preflight_and_config();
    c.request(pre).await.unwrap();
    c.request(config).await.unwrap();
    let err = c.request(Body::Restore(Restore { ctid: "101".into(), from_image: false })).await.unwrap_err().to_string();
    assert!(err.contains("Start failed"), "{err}");
    c.request(Body::Abort(Default::default())).await.unwrap();
    let served = task.await.unwrap().unwrap_err().to_string();
    assert!(served.contains("Start failed"), "{served}");
    dst.assert_clean();

    for end in ["done", "eof"] {
        let dst = TestHost::new("b");
        let (c, task) = receiver(&dst).await;
        let (pre, config) = preflight_and_config();
        c.request(pre).await.unwrap();
        c.request(config).await.unwrap();
        c.request(Body::Restore(Restore { ctid: "101".into(), from_image: false })).await.unwrap();
        assert!(dst.ops.running(&dst.ct()));
        match end {
            "done" => drop(c.request(Body::Done(Default::default())).await.unwrap()),
            _ => drop(c),
        }
        let _ = task.await.unwrap();
        assert!(dst.ops.called(Op::KillAndTeardown), "{end}: {:?}", dst.ops.calls());
        dst.assert_clean();
    }
}

/// A config that cannot be staged takes the area made for it along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_cannot_be_staged_leaves_no_area() {
    let dst = TestHost::new("b");
    std::fs::create_dir_all(&dst.host.data_dir).unwrap();
    std::fs::write(dst.host.data_dir.join("migrating"), b"in the way").unwrap();
    let (c, task) = receiver(&dst).await;
    let (pre, config) = preflight_and_config();
    c.request(pre).await.unwrap();
    let err = c.request(config).await.unwrap_err().to_string();
    assert!(err.contains("migrating"), "{err}");
    assert!(task.await.unwrap().is_err());
    assert_eq!(dst.ops.calls(), vec![Op::PrepareReceiveArea, Op::RemoveArea]);
    assert!(!dst.has_private());
}

/// migrate-cleanup: a receive left staged by a dead receiver goes (its files stay with
/// --keep-files); a committed container is never touched.
#[test]
fn migrate_cleanup_removes_a_half_received_container_only() {
    let dst = TestHost::new("b");
    let cfg = ferry_runtime::ContainerConfig::new(dst.ct());
    cfg.save(&dest::staging_config(&dst.host, &dst.ct())).unwrap();
    std::fs::create_dir_all(dst.host.private_dir(&dst.ct())).unwrap();
    assert!(dest::cleanup_stale_with(&dst.host, &dst.ct(), true, dst.ops.as_ref()).unwrap());
    assert!(dst.has_private() && dst.has_staged(), "--keep-files removed the files");
    assert!(dest::cleanup_stale_with(&dst.host, &dst.ct(), false, dst.ops.as_ref()).unwrap());
    dst.assert_clean();
    assert_eq!(dst.ops.calls(), vec![Op::KillAndTeardown, Op::KillAndTeardown, Op::RemoveArea]);

    let dst = TestHost::new("b");
    dst.container(true);
    assert!(!dest::cleanup_stale_with(&dst.host, &dst.ct(), false, dst.ops.as_ref()).unwrap());
    assert!(dst.has_config() && dst.ops.running(&dst.ct()) && dst.ops.calls().is_empty());
}
