//! Hooks for tests that play the attacker at a chosen moment (feature `test-hooks`, never in a
//! shipped build): a race made deterministic.

use std::path::Path;
use std::sync::Mutex;

type Hook = Box<dyn Fn(&Path) + Send + Sync>;

static AFTER_SCAN: Mutex<Option<Hook>> = Mutex::new(None);

/// Run `f(tree)` in every sync pass of this process after the source scanned its tree and
/// before it reads any file: what `f` changes there is what a container changes between the
/// scan and the reads. `None` removes the hook.
pub fn set_after_scan(f: Option<Hook>) {
    *AFTER_SCAN.lock().unwrap_or_else(|p| p.into_inner()) = f;
}

pub(crate) fn after_scan(tree: &Path) {
    if let Some(f) = AFTER_SCAN.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        f(tree);
    }
}
