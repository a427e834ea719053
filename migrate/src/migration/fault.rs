//! Faults injected on purpose, so that tests can reach the rollback paths of a migration at
//! chosen moments. The integration tests set them in a real ferry with `FERRY_TEST_FAULT=a,b`
//! (on either side); that switch exists only in a build with the cargo feature
//! `fault-injection` (scripts/test.sh builds with it). A release build, the package, the demo
//! and the benchmarks are built without it: there the switch, its names and its effects are
//! not compiled at all, and [`Faults::from_env`] is always empty.
//!
//! The unit tests (`cfg(test)`) set faults through the fake host operations instead of the
//! environment; the faults that end the process (`die-*`) act only in a build with the feature
//! (the unit tests end the receiver's task instead).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

/// One fault, and the side that acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Destination: the process exits once the image arrived, as if killed.
    DieAfterImage,
    /// Destination: the process exits 16 MiB into an image on the data channel.
    DieMidImage,
    /// Destination: the source is sent to a port where nothing listens for the image.
    RefuseData,
    /// Destination: the restore fails.
    FailRestore,
    /// Destination: the restore never answers; the receiver waits for the connection to end
    /// and then cleans up, as when the source dies mid-migration.
    HangBeforeRestore,
    /// Source: its ferry exits right after the destination took the container over, before
    /// cleaning up here.
    DieAfterCommit,
    /// Source: the data channel's connection breaks halfway through the image.
    CutData,
    /// Source: a wrong token is presented on the data channel.
    WrongToken,
    /// Source: a byte in the middle of the image it sends is flipped (either channel).
    DamageImage,
}

/// A set of [`Fault`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults(u16);

impl Faults {
    pub const NONE: Faults = Faults(0);

    /// The faults `FERRY_TEST_FAULT` names; always none in a build without `fault-injection`.
    pub fn from_env() -> Faults {
        #[cfg(feature = "fault-injection")]
        {
            injection::from_env()
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            Faults::NONE
        }
    }

    #[cfg(test)]
    pub fn of(faults: &[Fault]) -> Faults {
        Faults(faults.iter().fold(0, |m, f| m | bit(*f)))
    }

    pub fn has(self, f: Fault) -> bool {
        self.0 & bit(f) != 0
    }
}

fn bit(f: Fault) -> u16 {
    1 << f as u16
}

#[cfg(feature = "fault-injection")]
mod injection {
    use super::{bit, Fault, Faults};

    /// The variable the integration tests set on either side.
    const ENV: &str = "FERRY_TEST_FAULT";

    const NAMES: [(Fault, &str); 9] = [
        (Fault::DieAfterImage, "die-after-image"),
        (Fault::DieMidImage, "die-mid-image"),
        (Fault::RefuseData, "refuse-data"),
        (Fault::FailRestore, "fail-restore"),
        (Fault::HangBeforeRestore, "hang-before-restore"),
        (Fault::DieAfterCommit, "die-after-commit"),
        (Fault::CutData, "cut-data"),
        (Fault::WrongToken, "wrong-token"),
        (Fault::DamageImage, "damage-image"),
    ];

    pub fn from_env() -> Faults {
        let v = std::env::var(ENV).unwrap_or_default();
        Faults(v.split(',').filter_map(|w| NAMES.iter().find(|(_, n)| *n == w)).fold(0, |m, (f, _)| m | bit(*f)))
    }

    // The unit tests' die_if panics instead of exiting, and names no fault.
    #[cfg_attr(test, allow(dead_code))]
    pub fn name(f: Fault) -> &'static str {
        NAMES.iter().find(|(g, _)| *g == f).map(|(_, n)| *n).unwrap_or("?")
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn every_fault_has_a_name_of_its_own() {
            let mut names: Vec<&str> = super::NAMES.iter().map(|(_, n)| *n).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), super::NAMES.len());
        }
    }
}

/// End this process now, as if killed (the `die-*` faults); without the feature, nothing. In
/// the unit tests the side that dies panics instead: their harness runs each side in a task
/// of its own and takes a panicked one for a killed process (nothing of it is undone).
pub fn die_if(faults: Faults, f: Fault) {
    #[cfg(test)]
    if faults.has(f) {
        panic!("dying on purpose ({f:?}), as a killed process would");
    }
    #[cfg(all(feature = "fault-injection", not(test)))]
    if faults.has(f) {
        tracing::warn!("exiting on purpose ({}={})", "FERRY_TEST_FAULT", injection::name(f));
        std::process::exit(137);
    }
    #[cfg(not(any(test, feature = "fault-injection")))]
    let _ = (faults, f);
}

/// `fail-restore`: the error the destination reports instead of restoring.
pub fn restore_fault(faults: Faults) -> Option<crate::Error> {
    #[cfg(any(test, feature = "fault-injection"))]
    if faults.has(Fault::FailRestore) {
        return Some(crate::Error::Migration("restore failed on purpose (FERRY_TEST_FAULT=fail-restore)".into()));
    }
    let _ = faults;
    None
}

/// `hang-before-restore`: the destination never answers the restore; it serves nothing more
/// until the connection ends (and then cleans up).
pub async fn hang_if(faults: Faults, conn: &ferry_transfer::proto::Connection) -> ferry_transfer::Result<()> {
    #[cfg(any(test, feature = "fault-injection"))]
    if faults.has(Fault::HangBeforeRestore) {
        loop {
            conn.recv().await?;
        }
    }
    let _ = (faults, conn);
    Ok(())
}

/// `refuse-data`: the destination sends the source where nothing listens.
pub fn data_address(faults: Faults, address: SocketAddr) -> SocketAddr {
    if cfg!(any(test, feature = "fault-injection")) && faults.has(Fault::RefuseData) {
        SocketAddr::new(address.ip(), 1)
    } else {
        address
    }
}

/// `wrong-token`: the source presents another token than the one it was given.
pub fn token(faults: Faults, mut token: Vec<u8>) -> Vec<u8> {
    if cfg!(any(test, feature = "fault-injection")) && faults.has(Fault::WrongToken) && !token.is_empty() {
        token[0] ^= 1;
    }
    token
}

/// Where the source's image faults strike: at half the size of the CRIU files in `dir`
/// (inside the pages when stored uncompressed; nowhere when compression made the image
/// smaller than that).
#[cfg(any(test, feature = "fault-injection"))]
fn strike_at(faults: Faults, f: Fault, dir: &Path) -> Option<u64> {
    faults.has(f).then(|| crate::checkpoint::dir_size(dir) / 2)
}

/// `damage-image`: the image's writer, flipping one byte on the way.
#[cfg(any(test, feature = "fault-injection"))]
pub fn damaged<W: Write>(faults: Faults, dir: &Path, inner: W) -> impl Write {
    Damage { inner, at: strike_at(faults, Fault::DamageImage, dir), offset: 0 }
}

#[cfg(not(any(test, feature = "fault-injection")))]
pub fn damaged<W: Write>(_: Faults, _: &Path, inner: W) -> impl Write {
    inner
}

/// `cut-data`: the data socket, shut down halfway through the image.
#[cfg(any(test, feature = "fault-injection"))]
pub fn cut<'a>(faults: Faults, dir: &Path, s: &'a TcpStream) -> impl Write + 'a {
    CutAfter { s, left: strike_at(faults, Fault::CutData, dir) }
}

#[cfg(not(any(test, feature = "fault-injection")))]
pub fn cut<'a>(_: Faults, _: &Path, s: &'a TcpStream) -> impl Write + 'a {
    s
}

/// `die-mid-image`: the destination's data socket, which ends this process 16 MiB in.
#[cfg(feature = "fault-injection")]
pub fn dying<R: Read>(faults: Faults, inner: R) -> impl Read {
    DieAfter { inner, left: faults.has(Fault::DieMidImage).then_some(16 << 20) }
}

#[cfg(not(feature = "fault-injection"))]
pub fn dying<R: Read>(_: Faults, inner: R) -> impl Read {
    inner
}

/// A writer that flips the byte at offset `at`.
#[cfg(any(test, feature = "fault-injection"))]
struct Damage<W> {
    inner: W,
    at: Option<u64>,
    offset: u64,
}

#[cfg(any(test, feature = "fault-injection"))]
impl<W: Write> Write for Damage<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match self.at {
            Some(at) if (self.offset..self.offset + buf.len() as u64).contains(&at) => {
                let mut copy = buf.to_vec();
                copy[(at - self.offset) as usize] ^= 0x10;
                self.at = None;
                self.inner.write_all(&copy)?;
                buf.len()
            }
            _ => self.inner.write(buf)?,
        };
        self.offset += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The data socket, shut down after `left` bytes.
#[cfg(any(test, feature = "fault-injection"))]
struct CutAfter<'a> {
    s: &'a TcpStream,
    left: Option<u64>,
}

#[cfg(any(test, feature = "fault-injection"))]
impl Write for CutAfter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(left) = &mut self.left {
            if *left < buf.len() as u64 {
                let mut s = self.s;
                s.write_all(&buf[..*left as usize])?;
                let _ = s.shutdown(std::net::Shutdown::Both);
                return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "data connection cut on purpose (FERRY_TEST_FAULT=cut-data)"));
            }
            *left -= buf.len() as u64;
        }
        let mut s = self.s;
        s.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reader that ends this process after `left` bytes.
#[cfg(feature = "fault-injection")]
struct DieAfter<R> {
    inner: R,
    left: Option<u64>,
}

#[cfg(feature = "fault-injection")]
impl<R: Read> Read for DieAfter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(n as u64);
            if *left == 0 {
                std::process::exit(137);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_what_it_was_given() {
        let f = Faults::of(&[Fault::CutData, Fault::DamageImage]);
        assert!(f.has(Fault::CutData) && f.has(Fault::DamageImage));
        assert!(!f.has(Fault::WrongToken) && !Faults::NONE.has(Fault::CutData));
    }

    /// A build without the feature has no switch: the variable changes nothing.
    #[cfg(not(feature = "fault-injection"))]
    #[test]
    fn without_the_feature_the_variable_is_ignored() {
        std::env::set_var("FERRY_TEST_FAULT", "fail-restore,damage-image,die-after-commit");
        assert_eq!(Faults::from_env(), Faults::NONE);
    }

    #[cfg(feature = "fault-injection")]
    #[test]
    fn with_the_feature_the_variable_names_the_faults() {
        std::env::set_var("FERRY_TEST_FAULT", "fail-restore,nonsense,damage-image");
        assert_eq!(Faults::from_env(), Faults::of(&[Fault::FailRestore, Fault::DamageImage]));
    }
}
