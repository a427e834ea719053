//! Small helpers shared by the runtime: atomic file writes, directories and files closed to
//! other host users, running host tools.

use crate::error::{Error, IoContext, Result, ToolError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Write `data` to `path` atomically: a temp file in the same directory, fsync, rename, fsync
/// of the directory. Readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, None)
}

/// [`write_atomic`] with the file's `mode` (else the umask's).
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: Option<u32>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    replace_file(path, &dir.join(format!(".{name}.tmp.{}", std::process::id())), data, mode).map_err(|(what, p, e)| Error::io(what, p, e))
}

/// The one temp-file-then-rename writer ([`write_atomic`] on the host, [`write_replace`] in a
/// container's root): `tmp` (a stale one unlinked) created exclusively without following a
/// link, with `mode` when given (else the umask's), written, fsynced, renamed over `path`
/// (a symlink there is replaced, never followed), then the directory fsynced so that the
/// rename outlives a crash. On failure `tmp` is removed; the error names the step and file.
fn replace_file(path: &Path, tmp: &Path, data: &[u8], mode: Option<u32>) -> std::result::Result<(), (&'static str, PathBuf, std::io::Error)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = std::fs::remove_file(tmp);
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.unwrap_or(0o666))
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(tmp)
            .map_err(|e| ("create", tmp.to_path_buf(), e))?;
        f.write_all(data).map_err(|e| ("write", tmp.to_path_buf(), e))?;
        if let Some(mode) = mode {
            // The umask may have cut the mode.
            f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| ("chmod", tmp.to_path_buf(), e))?;
        }
        f.sync_all().map_err(|e| ("fsync", tmp.to_path_buf(), e))?;
        std::fs::rename(tmp, path).map_err(|e| ("rename into place", path.to_path_buf(), e))?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    res
}

/// Make `dir` (and missing parents) a directory only root enters: created 0700, or its group
/// and other bits cleared when it exists. A symlink or non-directory there is refused.
pub fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().recursive(false).mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).ctx("create directory", parent)?;
            }
            return match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::io("create directory", dir, e)),
                _ => private_dir(dir),
            };
        }
        Err(e) => return Err(Error::io("create directory", dir, e)),
    }
    let md = std::fs::symlink_metadata(dir).ctx("stat", dir)?;
    if !md.is_dir() {
        return Err(Error::NotADirectory(dir.to_path_buf()));
    }
    if md.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).ctx("close to other users", dir)?;
    }
    Ok(())
}

/// A new file in `dir` that holds a container's memory or files: mode 0600 from its creation,
/// an unpredictable name starting with `.prefix`, created exclusively (never an existing file
/// or symlink). Renamed into place with `persist`; removed when dropped otherwise.
pub fn private_temp_file(dir: &Path, prefix: &str) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!(".{prefix}."))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .ctx("create a private temporary file in", dir)
}

/// A new directory in `dir` (mode 0700, unpredictable name starting with `.prefix`),
/// removed when dropped.
pub fn private_temp_dir(dir: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!(".{prefix}."))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(dir)
        .ctx("create a private temporary directory in", dir)
}

/// Replace the file `path` of the current root (a process inside a container's namespaces or
/// chroot) with `text` ([`replace_file`] through `path.ferry-tmp`). A symlink at `path` is
/// replaced, never followed.
pub fn write_replace(path: &str, text: &str, mode: u32) -> std::result::Result<(), String> {
    let tmp = format!("{path}.ferry-tmp");
    replace_file(Path::new(path), Path::new(&tmp), text.as_bytes(), Some(mode)).map_err(|(what, p, e)| format!("{what} {}: {e}", p.display()))
}

/// Read the file `path` of the current root without following a symlink there (a link reads
/// as missing).
pub fn read_nofollow(path: &str) -> std::io::Result<Option<String>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path) {
        Ok(mut f) => {
            let mut s = String::new();
            f.read_to_string(&mut s)?;
            Ok(Some(s))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Run a host tool, returning its stdout; a failure carries the command line and its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|source| not_run(cmd, source))?;
    if !out.status.success() {
        return Err(failed(cmd, &out, None));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`run`], feeding `input` to the command's stdin (batch input for `ip -batch -`,
/// `iptables-restore`).
pub fn run_with_input(cmd: &mut Command, input: &str) -> Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|source| not_run(cmd, source))?;
    // Batch inputs are small (well below a pipe's buffer), so writing before reading the
    // output cannot deadlock.
    let wrote = child.stdin.take().map(|mut stdin| stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(|source| ToolError::Wait { cmd: describe(cmd), source })?;
    if !out.status.success() {
        return Err(failed(cmd, &out, Some(input)));
    }
    if let Some(Err(source)) = wrote {
        return Err(ToolError::Input { cmd: describe(cmd), source }.into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn not_run(cmd: &Command, source: std::io::Error) -> Error {
    ToolError::NotRun { program: format!("{:?}", cmd.get_program()), source }.into()
}

fn failed(cmd: &Command, out: &std::process::Output, input: Option<&str>) -> Error {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    ToolError::Failed { cmd: describe(cmd), status: out.status, stderr, input: input.map(|i| i.trim_end().to_string()) }.into()
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_tool_is_typed_and_keeps_what_it_said() {
        let e = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        match &e {
            Error::Tool(ToolError::Failed { cmd, status, stderr, input: None }) => {
                assert_eq!((cmd.as_str(), status.code(), stderr.as_str()), ("sh -c echo oops >&2; exit 3", Some(3), "oops"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.to_string(), "sh -c echo oops >&2; exit 3 failed (exit status: 3): oops");
        let e = run_with_input(Command::new("sh").args(["-c", "cat >/dev/null; exit 1"]), "a\nb\n").unwrap_err();
        assert!(e.to_string().ends_with("failed (exit status: 1): \ninput was:\na\nb"), "{e}");
        let e = run(&mut Command::new("/nonexistent/ferry-tool")).unwrap_err();
        assert!(matches!(&e, Error::Tool(ToolError::NotRun { .. })), "{e:?}");
        let cause = std::error::Error::source(&e).expect("the spawn error is kept");
        assert_eq!(cause.downcast_ref::<std::io::Error>().map(|io| io.kind()), Some(std::io::ErrorKind::NotFound));
        assert!(e.to_string().starts_with("cannot run \"/nonexistent/ferry-tool\": "), "{e}");
        assert_eq!(e.class(), crate::exit::ErrorClass::Failed);
    }

    #[test]
    fn private_dirs_and_files() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        private_dir(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o700);
        std::os::unix::fs::symlink("/tmp", d.path().join("link")).unwrap();
        assert!(private_dir(&d.path().join("link")).is_err());
        // umask cannot widen a private file, and two never share a name.
        let f1 = private_temp_file(&p, "img").unwrap();
        let f2 = private_temp_file(&p, "img").unwrap();
        assert_ne!(f1.path(), f2.path());
        assert_eq!(std::fs::metadata(f1.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(f1.path().file_name().unwrap().to_str().unwrap().starts_with(".img."));
        let t = private_temp_dir(&p, "work").unwrap();
        assert_eq!(std::fs::metadata(t.path()).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn write_replace_replaces_a_symlink_and_never_writes_through_one() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let target = d.path().join("resolv.conf");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        // A planted temp-file link is not followed either.
        let tmp = format!("{}.ferry-tmp", target.display());
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let t = target.to_str().unwrap();
        assert_eq!(read_nofollow(t).unwrap(), None);
        write_replace(t, "nameserver 198.18.0.53\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(std::fs::symlink_metadata(&target).unwrap().file_type().is_file());
        assert_eq!(read_nofollow(t).unwrap().as_deref(), Some("nameserver 198.18.0.53\n"));
        assert!(!std::path::Path::new(&tmp).exists());
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/x.toml");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
