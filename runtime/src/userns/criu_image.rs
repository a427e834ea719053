//! The user namespace in a CRIU checkpoint: `userns-N.img`, the one image that holds host IDs.
//!
//! CRIU stores everything else of an unprivileged container (its processes' credentials,
//! file owners of ghost files, IPC objects, socket permissions, mount options) in the IDs the
//! container sees, and writes the mapping it dumped into this image; a restore makes the new
//! user namespace with that mapping. To restore a container under another range (a migration
//! to a host that gave it another one, a clone, a changed pool), ferry writes a copy of the
//! image with the new range and hands CRIU a directory that links every other image file
//! ([`images_for`]).
//!
//! Format (CRIU's images/userns.proto, written by `pb_write_one`): the magics
//! `IMG_COMMON_MAGIC` and `USERNS_MAGIC` (two u32, little-endian), then one entry: its length
//! (u32) and the protobuf message `userns_entry { repeated uid_gid_extent uid_map = 1;
//! repeated uid_gid_extent gid_map = 2; }` with `uid_gid_extent { required uint32 first = 1;
//! required uint32 lower_first = 2; required uint32 count = 3; }`.

use super::id_pool::LOWEST_POOL_ID;
use super::{IdMap, CONTAINER_IDS};
use crate::error::{Error, Result};
use prost::Message;
use std::path::{Path, PathBuf};

const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
const USERNS_MAGIC: u32 = 0x5547_4906;
/// Far more than any mapping needs (the kernel allows 340 extents per map).
const MAX_ENTRY: usize = 64 << 10;

#[derive(Clone, PartialEq, Message)]
pub struct UidGidExtent {
    #[prost(uint32, required, tag = "1")]
    pub first: u32,
    #[prost(uint32, required, tag = "2")]
    pub lower_first: u32,
    #[prost(uint32, required, tag = "3")]
    pub count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct UsernsEntry {
    #[prost(message, repeated, tag = "1")]
    pub uid_map: Vec<UidGidExtent>,
    #[prost(message, repeated, tag = "2")]
    pub gid_map: Vec<UidGidExtent>,
}

impl UsernsEntry {
    /// The entry of a namespace ferry made: one extent from 0, the same for uids and gids.
    pub fn of(map: &IdMap) -> UsernsEntry {
        let e = UidGidExtent { first: 0, lower_first: map.host_first, count: map.count };
        UsernsEntry { uid_map: vec![e.clone()], gid_map: vec![e] }
    }

    /// The [`IdMap`] this entry is, when it is one ferry makes: one extent from 0, the same
    /// for uids and gids, a container's [`CONTAINER_IDS`] IDs from a range above the host's own
    /// users. A checkpoint comes from another host (a migration peer, an image file): its
    /// mapping decides which owners a restore moves, so no other is taken.
    pub fn id_map(&self) -> Option<IdMap> {
        match (self.uid_map.as_slice(), self.gid_map.as_slice()) {
            ([u], [g])
                if u == g
                    && u.first == 0
                    && u.count == CONTAINER_IDS
                    && u.lower_first >= LOWEST_POOL_ID
                    && u.lower_first.checked_add(u.count).is_some() =>
            {
                Some(IdMap { host_first: u.lower_first, count: u.count })
            }
            _ => None,
        }
    }
}

pub fn encode(e: &UsernsEntry) -> Vec<u8> {
    let body = e.encode_to_vec();
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
    out.extend_from_slice(&USERNS_MAGIC.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn decode(data: &[u8]) -> std::result::Result<UsernsEntry, String> {
    let word = |i: usize| data.get(i..i + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    if word(0) != Some(IMG_COMMON_MAGIC) || word(4) != Some(USERNS_MAGIC) {
        return Err("not a CRIU user namespace image (wrong magic)".into());
    }
    let len = word(8).ok_or("truncated")? as usize;
    if len > MAX_ENTRY {
        return Err(format!("entry of {len} bytes is larger than any mapping"));
    }
    let body = data.get(12..12 + len).ok_or("truncated")?;
    UsernsEntry::decode(body).map_err(|e| e.to_string())
}

/// The `userns-N.img` files of an image directory.
fn userns_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))? {
        let e = e.map_err(|err| Error::io("read", dir, err))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("userns-") && n.ends_with(".img") {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

/// The mapping of the user namespace a checkpoint holds: None for a container without one
/// (privileged); an error for a mapping ferry does not make.
pub fn dumped_map(dir: &Path) -> Result<Option<IdMap>> {
    let imgs = userns_images(dir)?;
    let Some(p) = imgs.first() else { return Ok(None) };
    if imgs.len() > 1 {
        return Err(Error::Criu(format!("{} holds {} user namespaces; ferry restores containers with one", dir.display(), imgs.len())));
    }
    let data = std::fs::read(p).map_err(|e| Error::io("read", p, e))?;
    let e = decode(&data).map_err(|m| Error::Criu(format!("{}: {m}; the checkpoint is damaged", p.display())))?;
    e.id_map().map(Some).ok_or_else(|| Error::Criu(format!("{}: a mapping ferry does not make ({e:?})", p.display())))
}

/// The directory CRIU should restore from so that the container gets `map`, for images in
/// `dir` dumped with `dumped` ([`dumped_map`]): `dir` itself when that is `map` already (None
/// returned), else a new directory beside it holding a hard link to each image of `dir` and a
/// rewritten user namespace image (removed when the returned guard is dropped). `dir` is only
/// read.
pub fn images_for(dir: &Path, dumped: IdMap, map: &IdMap) -> Result<Option<tempfile::TempDir>> {
    if dumped == *map {
        return Ok(None);
    }
    let imgs = userns_images(dir)?;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let shadow = crate::util::private_temp_dir(parent, "ferry-userns")?;
    for e in std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))? {
        let e = e.map_err(|err| Error::io("read", dir, err))?;
        if imgs.contains(&e.path()) {
            continue;
        }
        // Hard links: a symlink would send CRIU's restored tasks through the directories
        // above, which are closed to them.
        let link = shadow.path().join(e.file_name());
        std::fs::hard_link(e.path(), &link).map_err(|err| Error::io("link", &link, err))?;
    }
    for p in imgs {
        let to = shadow.path().join(p.file_name().expect("a file name"));
        crate::util::write_atomic(&to, &encode(&UsernsEntry::of(map)))?;
    }
    Ok(Some(shadow))
}

/// Make the image directory `dir` readable by CRIU's restored tasks of a container mapped
/// with `map`. Its root task reads images (the time namespace's) in the new user namespace
/// before the namespace has its mapping, as host root; later ones (pages, files, ttys) once
/// they are the container's root, a host ID of the range, with no power over files of the
/// host's root. So the directory and its files stay host root's and get the range's first ID
/// as their group, readable by that group (0750 and 0640; never following a link). Their
/// parents stay closed to everyone but host root: only the CRIU restoring the container
/// reaches them (through the directory fd it holds).
pub fn open_to(dir: &Path, map: &IdMap) -> Result<()> {
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{fchmod, fstatat, Mode, SFlag};
    let gid = Some(nix::unistd::Gid::from_raw(map.host_first));
    let root = Some(nix::unistd::Uid::from_raw(0));
    let err = |what: &'static str, p: &Path, e: nix::errno::Errno| Error::io(what, p, e.into());
    // The directory and each file through a descriptor opened without following a link: a
    // link in their place is refused, never what it points at opened to the range.
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut d = nix::dir::Dir::open(dir, flags, Mode::empty()).map_err(|e| err("open", dir, e))?;
    let dfd = std::os::fd::AsRawFd::as_raw_fd(&d);
    nix::unistd::fchown(dfd, root, gid).map_err(|e| err("open to the container's root", dir, e))?;
    fchmod(dfd, Mode::from_bits_truncate(0o750)).map_err(|e| err("open to the container's root", dir, e))?;
    let names: Vec<std::ffi::CString> =
        d.iter().filter_map(|e| e.ok()).map(|e| e.file_name().to_owned()).filter(|n| n.to_bytes() != b"." && n.to_bytes() != b"..").collect();
    for name in names {
        let p = dir.join(name.to_string_lossy().as_ref());
        let st = fstatat(Some(dfd), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| err("stat", &p, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG || (st.st_gid == map.host_first && st.st_mode & 0o777 == 0o640) {
            continue;
        }
        let fd =
            nix::fcntl::openat(Some(dfd), name.as_c_str(), OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| err("open", &p, e))?;
        // SAFETY: openat just returned this descriptor; it is owned here and closed on drop.
        let f = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let f = std::os::fd::AsRawFd::as_raw_fd(&f);
        nix::unistd::fchown(f, root, gid).map_err(|e| err("open to the container's root", &p, e))?;
        fchmod(f, Mode::from_bits_truncate(0o640)).map_err(|e| err("open to the container's root", &p, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let m = IdMap { host_first: 1_065_536, count: 65_536 };
        let data = encode(&UsernsEntry::of(&m));
        assert_eq!(&data[..8], &[0x19, 0x43, 0x56, 0x54, 0x06, 0x49, 0x47, 0x55]);
        let e = decode(&data).unwrap();
        assert_eq!(e.id_map(), Some(m));
        assert!(decode(&data[..10]).is_err());
        assert!(decode(&[0u8; 16]).unwrap_err().contains("magic"));
        let mut big = data.clone();
        big[8..12].copy_from_slice(&(1u32 << 30).to_le_bytes());
        assert!(decode(&big).unwrap_err().contains("larger"));
        // Two extents, or uids unlike gids: not ferry's.
        let mut two = UsernsEntry::of(&m);
        two.uid_map.push(UidGidExtent { first: 65_536, lower_first: 5, count: 1 });
        assert_eq!(two.id_map(), None);
        let mut apart = UsernsEntry::of(&m);
        apart.gid_map[0].lower_first += 1;
        assert_eq!(apart.id_map(), None);
    }

    #[test]
    fn restores_under_another_range_from_linked_images() {
        let d = tempfile::tempdir().unwrap();
        let imgs = d.path().join("imgs");
        std::fs::create_dir(&imgs).unwrap();
        let old = IdMap { host_first: 1_000_000, count: 65_536 };
        std::fs::write(imgs.join("userns-11.img"), encode(&UsernsEntry::of(&old))).unwrap();
        std::fs::write(imgs.join("pages-1.img"), b"pages").unwrap();
        assert_eq!(dumped_map(&imgs).unwrap(), Some(old));
        assert!(images_for(&imgs, old, &old).unwrap().is_none(), "same range: the images as they are");
        let new = IdMap { host_first: 2_000_000, count: 65_536 };
        let shadow = images_for(&imgs, old, &new).unwrap().expect("a rewritten directory");
        assert_eq!(dumped_map(shadow.path()).unwrap(), Some(new));
        assert_eq!(std::fs::read(shadow.path().join("pages-1.img")).unwrap(), b"pages");
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&shadow.path().join("pages-1.img")), ino(&imgs.join("pages-1.img")), "linked, not copied");
        assert_eq!(dumped_map(&imgs).unwrap(), Some(old), "the original images are untouched");
        let p = shadow.path().to_path_buf();
        drop(shadow);
        assert!(!p.exists());
        // A checkpoint without a user namespace.
        std::fs::remove_file(imgs.join("userns-11.img")).unwrap();
        assert_eq!(dumped_map(&imgs).unwrap(), None);
    }

    #[test]
    fn a_mapping_ferry_does_not_make_is_refused() {
        let ext = |lower_first, count| {
            let e = UidGidExtent { first: 0, lower_first, count };
            UsernsEntry { uid_map: vec![e.clone()], gid_map: vec![e] }
        };
        assert_eq!(ext(1_000_000, CONTAINER_IDS).id_map(), Some(IdMap { host_first: 1_000_000, count: CONTAINER_IDS }));
        // The host's own users (root's files would be moved to the container), a range that
        // runs past the largest ID, a size ferry never gives.
        assert_eq!(ext(0, CONTAINER_IDS).id_map(), None);
        assert_eq!(ext(u32::MAX - 10, CONTAINER_IDS).id_map(), None);
        assert_eq!(ext(1_000_000, 1).id_map(), None);
    }

    #[test]
    fn opening_images_to_the_range_never_follows_a_link() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (chown)");
            return;
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let map = IdMap { host_first: 1_300_000, count: CONTAINER_IDS };
        let d = tempfile::tempdir().unwrap();
        let imgs = d.path().join("imgs");
        std::fs::create_dir(&imgs).unwrap();
        std::fs::write(imgs.join("pages-1.img"), b"pages").unwrap();
        let host_file = d.path().join("host-file");
        std::fs::write(&host_file, b"host").unwrap();
        std::fs::set_permissions(&host_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&host_file, imgs.join("inventory.img")).unwrap();
        open_to(&imgs, &map).unwrap();
        let md = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        assert_eq!((md(&imgs).gid(), md(&imgs).mode() & 0o777), (map.host_first, 0o750));
        let img = md(&imgs.join("pages-1.img"));
        assert_eq!((img.gid(), img.mode() & 0o777), (map.host_first, 0o640));
        assert_eq!((md(&host_file).gid(), md(&host_file).mode() & 0o777), (0, 0o600), "a link's target was opened to the range");
        // The directory itself a link: refused, its target untouched.
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(open_to(&link, &map).is_err());
        assert_eq!(md(&elsewhere).gid(), 0);
    }
}
