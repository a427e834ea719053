//! Records the git commit ferry is built from, for `ferry --version`. `FERRY_GIT_COMMIT` in the
//! environment wins (a packager building from a tarball knows it); else the checkout's HEAD;
//! else (a tarball without .git) "unknown".

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FERRY_GIT_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let commit =
        std::env::var("FERRY_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty()).or_else(|| head_commit(&dir)).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FERRY_GIT_COMMIT={}", commit.trim());
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

/// HEAD of the repository whose top is `dir`; None outside git (no git, no .git, or `dir` is a
/// tarball unpacked inside some other repository, whose commit is not ours).
fn head_commit(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    // Build again when HEAD moves: HEAD itself, the branch it names, the packed refs.
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watch.extend(git(dir, &["symbolic-ref", "-q", "HEAD"]));
    for name in watch {
        if let Some(p) = git(dir, &["rev-parse", "--git-path", &name]) {
            let p = dir.join(p);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    Some(commit)
}
