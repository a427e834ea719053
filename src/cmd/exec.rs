//! exec, enter, console/logs.

use anyhow::{Context, Result};
use ferry_runtime::container;
use ferry_runtime::Host;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

pub fn exec(h: &Host, ct: &str, cmd: &[String]) -> Result<u8> {
    let ct = super::ctid(ct)?;
    container::load_config(h, &ct)?;
    super::checkpoint::thaw_stale_unlocked(h, &ct);
    let code = container::exec(h, &ct, cmd)?;
    Ok(code.clamp(0, 255) as u8)
}

pub fn enter(h: &Host, ct: &str) -> Result<u8> {
    let ct = super::ctid(ct)?;
    container::load_config(h, &ct)?;
    let code = container::enter(h, &ct)?;
    Ok(code.clamp(0, 255) as u8)
}

/// Open `rel` below `root` resolving every symlink as if `root` were `/`, so a link in the
/// container cannot make the host read one of its own files.
fn open_in_root(root: &std::path::Path, rel: &str) -> std::io::Result<std::fs::File> {
    let dir = std::fs::File::open(root)?;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let how = OpenHow { flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64, mode: 0, resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    let path = std::ffi::CString::new(rel).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: openat2 with a valid directory fd, a NUL-terminated path and a correctly sized
    // open_how structure.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, std::os::fd::AsRawFd::as_raw_fd(&dir), path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that we now own.
    Ok(unsafe { std::fs::File::from_raw_fd(fd as i32) })
}

pub fn console(h: &Host, ct: &str, follow: bool) -> Result<u8> {
    let ct = super::ctid(ct)?;
    container::load_config(h, &ct)?;
    let rel = container::CONSOLE_LOG.trim_start_matches('/');
    let mut f = match open_in_root(&h.private_dir(&ct), rel) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !follow => {
            eprintln!("ferry: container {ct} has no console log yet (it is written once the container starts)");
            return Ok(0);
        }
        Err(e) => return Err(e).with_context(|| format!("container {ct}: open console log {}", container::CONSOLE_LOG)),
    };
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = f.read(&mut buf).context("read console log")?;
        if n == 0 {
            if !follow {
                break;
            }
            out.flush()?;
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        }
        if out.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    Ok(0)
}
