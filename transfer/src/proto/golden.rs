//! The wire contract of every control message, pinned: each message type with every field set
//! encodes (in its Envelope) to the bytes written here, and those bytes decode back to it. A
//! renumbered tag, a changed field type or a variant moved to another tag changes the bytes
//! and fails its test; a new Body variant does not compile here until it has its own test.

use super::messages::*;
use prost::Message;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(m: M, golden: &str) {
    let bytes = m.encode_to_vec();
    assert_eq!(hex(&bytes), golden, "the encoding of {m:?} changed: the wire contract broke");
    assert_eq!(M::decode(bytes.as_slice()).expect("decodes"), m);
}

/// The tag each Body variant has on the wire. Exhaustive: a new variant needs its line here,
/// and its golden test below.
fn tag(b: &Body) -> u32 {
    match b {
        Body::Ok(_) => 10,
        Body::Error(_) => 11,
        Body::Abort(_) => 12,
        Body::Cleanup(_) => 13,
        Body::SyncBegin(_) => 20,
        Body::SyncBeginAck(_) => 21,
        Body::Mkdir(_) => 22,
        Body::PutFile(_) => 23,
        Body::FileCommit(_) => 24,
        Body::Symlink(_) => 25,
        Body::Mknod(_) => 26,
        Body::Hardlink(_) => 27,
        Body::SetMeta(_) => 28,
        Body::Delete(_) => 29,
        Body::GetSignature(_) => 30,
        Body::SignatureReply(_) => 31,
        Body::LinkFrom(_) => 32,
        Body::SyncEnd(_) => 33,
        Body::Preflight(_) => 40,
        Body::PreflightResult(_) => 41,
        Body::Config(_) => 42,
        Body::ImageBegin(_) => 50,
        Body::ImageEnd(_) => 51,
        Body::Restore(_) => 60,
        Body::Restored(_) => 61,
        Body::Announce(_) => 62,
        Body::Handover(_) => 63,
        Body::Done(_) => 70,
        Body::SyncEndAck(_) => 71,
        Body::ImageSection(_) => 72,
        Body::DataChannelOpen(_) => 80,
        Body::DataChannelReady(_) => 81,
        Body::PutFiles(_) => 100,
    }
}

/// The Body in an Envelope (id 7, replying to 5) encodes to `golden`, and its tag is the
/// one [`tag`] names (the key of a length-delimited field: tag << 3 | 2, as a varint).
fn body(b: Body, golden: &str) {
    let t = tag(&b);
    let env = Envelope { id: 7, reply_to: 5, body: Some(b) };
    let bytes = env.encode_to_vec();
    let mut key = Vec::new();
    prost::encoding::encode_varint(u64::from(t << 3 | 2), &mut key);
    assert_eq!(&bytes[4..4 + key.len()], key.as_slice(), "{} is not at tag {t}", env.body.as_ref().unwrap().name());
    check(env, golden);
}

fn entry() -> FileEntry {
    FileEntry {
        path: b"etc/x".to_vec(),
        kind: FileKind::Regular as i32,
        mode: 0o4755,
        uid: 1000,
        gid: 100,
        mtime_ns: -2,
        size: 300,
        rdev: 0x0801,
        symlink_target: b"t".to_vec(),
        xattrs: vec![Xattr { name: b"user.a".to_vec(), value: b"v".to_vec() }],
        xattr_digest: vec![0xaa; 2],
        ino: 42,
        in_link_dest: true,
    }
}

macro_rules! golden {
    ($($name:ident: $body:expr => $bytes:literal;)*) => {
        $(
            #[test]
            fn $name() {
                body($body, $bytes);
            }
        )*
    };
}

golden! {
    ok: Body::Ok(OkReply {}) => "080710055200";
    error: Body::Error(ErrorReply { message: "no".into() }) => "080710055a040a026e6f";
    abort: Body::Abort(Abort { reason: "why".into() }) => "0807100562050a03776879";
    cleanup: Body::Cleanup(Cleanup { ctid: "101".into(), keep_files: true }) => "080710056a070a033130311001";
    sync_begin: Body::SyncBegin(SyncBegin { pass: 2, ctid: "101".into(), xattrs: true, no_summary: true, extent_records: true }) => "08071005a2010d08021203313031180120012801";
    sync_begin_ack: Body::SyncBeginAck(SyncBeginAck {
        manifest_stream: 3, entries: 4, compression: "zstd".into(), put_files: true, summary_skipped: true, extent_records: true, summary_bytes: 500,
    }) => "08071005aa0113080310041a047a73746420012801300138f403";
    mkdir: Body::Mkdir(entry()) => "08071005b2013a0a056574632f78100118ed1320e807286430feffffffffffffffff0138ac024081104a0174520b0a06757365722e611201765a02aaaa602a6801";
    put_file: Body::PutFile(PutFile {
        entry: Some(entry()), stream: 9, extents: vec![Extent { offset: 4096, len: 8192 }], delta: true, data: b"d".to_vec(), blake3: vec![0xbb; 2],
    }) => "08071005ba014f0a3a0a056574632f78100118ed1320e807286430feffffffffffffffff0138ac024081104a0174520b0a06757365722e611201765a02aaaa602a680110091a0608802010804020012a01643202bbbb";
    file_commit: Body::FileCommit(FileCommit { path: b"a".to_vec(), blake3: vec![0xcc; 2] }) => "08071005c201070a01611202cccc";
    symlink: Body::Symlink(FileEntry { kind: FileKind::Symlink as i32, ..entry() }) => "08071005ca013a0a056574632f78100318ed1320e807286430feffffffffffffffff0138ac024081104a0174520b0a06757365722e611201765a02aaaa602a6801";
    mknod: Body::Mknod(FileEntry { kind: FileKind::CharDevice as i32, ..entry() }) => "08071005d2013a0a056574632f78100418ed1320e807286430feffffffffffffffff0138ac024081104a0174520b0a06757365722e611201765a02aaaa602a6801";
    hardlink: Body::Hardlink(Hardlink { path: b"a".to_vec(), target: b"b".to_vec() }) => "08071005da01060a0161120162";
    set_meta: Body::SetMeta(FileEntry { kind: FileKind::Directory as i32, ..entry() }) => "08071005e2013a0a056574632f78100218ed1320e807286430feffffffffffffffff0138ac024081104a0174520b0a06757365722e611201765a02aaaa602a6801";
    delete: Body::Delete(Delete { path: b"gone".to_vec() }) => "08071005ea01060a04676f6e65";
    get_signature: Body::GetSignature(GetSignature { path: b"a".to_vec(), block_size: 2048 }) => "08071005f201060a0161108010";
    signature_reply: Body::SignatureReply(SignatureReply { signature: vec![1, 2, 3] }) => "08071005fa01050a03010203";
    link_from: Body::LinkFrom(FileEntry { kind: FileKind::Fifo as i32, ..entry() }) => "0807100582023a0a056574632f78100618ed1320e807286430feffffffffffffffff0138ac024081104a0174520b0a06757365722e611201765a02aaaa602a6801";
    sync_end: Body::SyncEnd(SyncEnd { pass: 2, entries_scanned: 10, files_sent: 3, bytes_data: 1 << 20 }) => "080710058a020a0802100a180320808040";
    preflight: Body::Preflight(Preflight {
        ctid: "101".into(), config_toml: "a=1".into(), ips: vec!["198.18.0.5".into()], needed_disk_bytes: 1 << 30,
        criu_version: "4.2.1".into(), cpuinfo: vec![9], online: true, network_mode: "venet".into(),
    }) => "08071005c2022f0a033130311203613d311a0a3139382e31382e302e352080808080042a05342e322e313201093801420576656e6574";
    preflight_result: Body::PreflightResult(PreflightResult {
        ok: false, problems: vec!["p".into()], private_dir: "/d".into(), free_memory_bytes: 7, free_disk_bytes: 8,
    }) => "08071005ca020b1201701a022f6420072808";
    config: Body::Config(ConfigMsg { ctid: "101".into(), config_toml: "a=1".into() }) => "08071005d2020a0a033130311203613d31";
    image_begin: Body::ImageBegin(ImageBegin { ctid: "101".into(), stream: 5, size_hint: 1000, compression: "zstd".into(), tail_digest: true }) => "080710059203120a03313031100518e80722047a7374642801";
    image_end: Body::ImageEnd(ImageEnd { size: 1000, blake3: vec![0xdd; 2] }) => "080710059a030708e8071202dddd";
    restore: Body::Restore(Restore { ctid: "101".into(), from_image: true }) => "08071005e203070a033130311001";
    restored: Body::Restored(Restored { pid: -1 }) => "08071005ea030b08ffffffffffffffffff01";
    announce: Body::Announce(Announce { ctid: "101".into(), ips: vec!["198.18.0.5".into(), "2001:2::5".into()] }) => "08071005f2031c0a03313031120a3139382e31382e302e351209323030313a323a3a35";
    done: Body::Done(Done { ctid: "101".into(), report_handover: false }) => "08071005b204050a03313031";
    handover: Body::Handover(Handover { confirmed: true, confirmed_after_ms: 12, announces: 2, neighbours: 1, unanswered: vec![] }) => "08071005fa03080801100c18022001";
    sync_end_ack: Body::SyncEndAck(SyncEndAck { files_written: 3, bytes_written: 300, deleted: 1 }) => "08071005ba0407080310ac021801";
    image_section: Body::ImageSection(ImageSection { name: "pages-1.img".into(), size: 4096 }) => "08071005c204100a0b70616765732d312e696d67108020";
    data_channel_open: Body::DataChannelOpen(DataChannelOpen { ctid: "101".into(), port_first: 40000, port_last: 40010 }) => "0807100582050d0a0331303110c0b80218cab802";
    data_channel_ready: Body::DataChannelReady(DataChannelReady { address: "198.18.0.2:40001".into(), token: vec![0xee; 2] }) => "080710058a05160a103139382e31382e302e323a34303030311202eeee";
    put_files: Body::PutFiles(PutFiles {
        entries: vec![FileEntry { path: b"f".to_vec(), kind: FileKind::Regular as i32, size: 2, ..Default::default() }],
        data: prost::bytes::Bytes::from_static(b"hi"),
        blake3: vec![0xff; 2],
    }) => "08071005a206110a070a016610013802120268691a02ffff";
}

/// The handshake's messages, before any frame.
#[test]
fn hello() {
    check(
        Hello { proto_major: 1, proto_minor: 1, ferry_version: "0.1.0".into(), features: vec!["zstd".into()] },
        "080110011a05302e312e3022047a737464",
    );
}

#[test]
fn hello_ack() {
    check(
        HelloAck { proto_major: 1, proto_minor: 1, ferry_version: "0.1.0".into(), features: vec!["zstd".into()], error: "e".into() },
        "080110011a05302e312e3022047a7374642a0165",
    );
}

/// An empty Envelope (a message with every field at its default) is empty on the wire, and
/// the file kinds keep their numbers.
#[test]
fn defaults_and_file_kinds() {
    check(Envelope::default(), "");
    let kinds = [
        FileKind::Unknown,
        FileKind::Regular,
        FileKind::Directory,
        FileKind::Symlink,
        FileKind::CharDevice,
        FileKind::BlockDevice,
        FileKind::Fifo,
        FileKind::Socket,
    ];
    assert_eq!(kinds.map(|k| k as i32), [0, 1, 2, 3, 4, 5, 6, 7]);
}
