//! exec, enter, runscript, console/logs. exec, enter and runscript exit with the command's
//! own status; ferry's own failures exit 125 (see `cmd::Command::own_failure_code`).

use anyhow::{Context, Result};
use ferry_runtime::container;
use ferry_runtime::Host;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

pub fn exec(h: &Host, ct: &str, cmd: &[String]) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    container::load_config(h, &ct)?;
    super::notices::warn(ferry_migrate::stale::thaw_stale_unlocked(h, &ct));
    let code = container::exec(h, &ct, cmd)?;
    Ok(code.clamp(0, 255) as u8)
}

pub fn enter(h: &Host, ct: &str, cmd: &[String]) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    container::load_config(h, &ct)?;
    let code = container::enter_with(h, &ct, cmd)?;
    Ok(code.clamp(0, 255) as u8)
}

/// vzctl's runscript: a shell script from the host, run inside by `/bin/sh -c`.
pub fn runscript(h: &Host, ct: &str, script: &std::path::Path) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    container::load_config(h, &ct)?;
    let text = std::fs::read_to_string(script).with_context(|| format!("container {ct}: runscript: read {}", script.display()))?;
    let code = container::exec(h, &ct, &["/bin/sh".into(), "-c".into(), text])?;
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
    let ct = super::ctid(h, ct)?;
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

/// `console --attach`: the running system container's console on this terminal.
pub fn console_attach(h: &Host, ct: &str) -> Result<u8> {
    let ct = super::ctid(h, ct)?;
    container::load_config(h, &ct)?;
    let st = container::running_state(h, &ct, "console")?;
    let Some(sys) = st.system.as_ref() else {
        let msg = format!("it has no console to attach to (only system containers have one); `ferry enter {ct}` gives a shell");
        return Err(ferry_runtime::Error::ct(ct.as_str(), "console", msg).into());
    };
    ferry_runtime::sysenv::console::attach(ct.as_str(), &sys.console_socket)?;
    Ok(0)
}
