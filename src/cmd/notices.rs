//! What putting a container right did before a command (`ferry_migrate::stale`), shown as
//! warnings.

use ferry_migrate::stale::Notice;

pub fn warn(notices: impl IntoIterator<Item = Notice>) {
    for n in notices {
        eprintln!("ferry: warning: {n}");
    }
}
