//! Visiting a whole tree, parents before children, each directory listed through its own fd
//! (opened relative to its parent's with O_NOFOLLOW, checked to be the directory listed), and
//! never leaving the root's filesystem (a mount point is visited, not entered).

use std::io;
use std::rc::Rc;

use crate::dir::{gone, Dir};
use crate::stat::{Kind, Stat};

/// One entry met by [`walk`].
pub struct Entry<'a> {
    /// Path relative to the root, '/'-separated (`""` for the root itself).
    pub rel: &'a [u8],
    /// Its directory and its name there (for the root: the root and `""`).
    pub dir: &'a Dir,
    pub name: &'a [u8],
    pub stat: &'a Stat,
}

/// `parent/name`, or `name` at the top.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
    v.extend_from_slice(parent);
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

/// A directory seen in its parent's listing, not listed itself yet. Its parent is held open
/// (`None`: the root) until all of its subdirectories are done: at most one fd per level.
struct Pending {
    rel: Vec<u8>,
    parent: Option<Rc<Dir>>,
    name: Vec<u8>,
    stat: Stat,
}

type Skip<'a> = &'a mut dyn FnMut(&Dir, &[u8]) -> bool;
type Visit<'a> = &'a mut dyn FnMut(&Entry<'_>) -> io::Result<()>;

/// Visit `root` and everything below it: the root first, then each directory's entries
/// together, names sorted, directories in pre-order. Entries that vanish meanwhile are passed
/// over (the tree may be in use), and so is a directory that is no longer the one listed (a
/// later look at the tree sees what took its place). `skip(dir, name)` may leave names out.
pub fn walk(root: &Dir, skip: Skip<'_>, visit: Visit<'_>) -> io::Result<()> {
    let root_stat = root.stat()?;
    if root_stat.kind() != Kind::Directory {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    visit(&Entry { rel: b"", dir: root, name: b"", stat: &root_stat })?;
    let mut stack: Vec<Pending> = Vec::new();
    let first = list(root, None, b"", root_stat.dev, skip, visit)?;
    stack.extend(first.into_iter().rev());
    while let Some(p) = stack.pop() {
        let parent = p.parent.as_deref().unwrap_or(root);
        let dir = match parent.child_dir(&p.name) {
            Ok(d) => d,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        if !dir.stat()?.same_inode(&p.stat) {
            continue;
        }
        let dir = Rc::new(dir);
        let subdirs = list(&dir, Some(&dir), &p.rel, root_stat.dev, skip, visit)?;
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// Visit the entries of `dir` (at `rel`), returning its subdirectories on `dev`.
fn list(dir: &Dir, held: Option<&Rc<Dir>>, rel: &[u8], dev: u64, skip: Skip<'_>, visit: Visit<'_>) -> io::Result<Vec<Pending>> {
    let mut names = match dir.names() {
        Ok(n) => n,
        Err(e) if gone(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    names.sort_unstable();
    let mut subdirs = Vec::new();
    for name in names {
        if skip(dir, &name) {
            continue;
        }
        let stat = match dir.stat_at(&name) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let r = join(rel, &name);
        visit(&Entry { rel: &r, dir, name: &name, stat: &stat })?;
        if stat.kind() == Kind::Directory && stat.dev == dev {
            subdirs.push(Pending { rel: r, parent: held.cloned(), name, stat });
        }
    }
    Ok(subdirs)
}
