//! From an error to the exit code and the printed message (docs/exit-codes.md): the class
//! comes from the typed errors in the chain (the runtime's, the pipelines', clap's), never
//! from the message text.

use ferry_runtime::exit::ErrorClass;

/// A command line that is incomplete or contradictory, found after clap parsed it.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error whose class the command knows better than the error's own type (a migration's
/// failure means the container stayed here as it was).
#[derive(Debug)]
pub struct Classified {
    pub class: ErrorClass,
    pub inner: anyhow::Error,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&message(&self.inner))
    }
}

impl std::error::Error for Classified {}

/// `return Err(UsageError(...))` with a formatted message.
macro_rules! usage {
    ($($t:tt)*) => { return Err($crate::cmd::exit::UsageError(format!($($t)*)).into()) };
}
pub(crate) use usage;

/// `ferry_runtime::Error::Invalid` with a formatted message (a value ferry cannot use).
macro_rules! invalid {
    ($($t:tt)*) => { anyhow::Error::from(ferry_runtime::Error::Invalid(format!($($t)*))) };
}
pub(crate) use invalid;

/// `return Err(invalid!(...))`.
macro_rules! bail_invalid {
    ($($t:tt)*) => { return Err($crate::cmd::exit::invalid!($($t)*)) };
}
pub(crate) use bail_invalid;

/// The class of one error of a chain, when its type says.
fn class_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorClass> {
    if let Some(c) = e.downcast_ref::<Classified>() {
        return Some(c.class);
    }
    if e.downcast_ref::<UsageError>().is_some() {
        return Some(ErrorClass::Usage);
    }
    if let Some(c) = e.downcast_ref::<clap::Error>() {
        return Some(clap_class(c));
    }
    if let Some(r) = e.downcast_ref::<ferry_runtime::Error>() {
        return Some(r.class());
    }
    if let Some(m) = e.downcast_ref::<ferry_migrate::Error>() {
        return Some(m.class());
    }
    if let Some(c) = e.downcast_ref::<ferry_migrate::checkpoint::Error>() {
        return Some(c.class());
    }
    None
}

/// The first error in the chain whose type has a class decides; else `Failed`.
pub fn classify(e: &anyhow::Error) -> ErrorClass {
    e.chain().find_map(class_of).unwrap_or(ErrorClass::Failed)
}

/// clap's errors: a bad value is `InvalidValue`, anything else about the command line `Usage`.
pub fn clap_class(e: &clap::Error) -> ErrorClass {
    use clap::error::ErrorKind as K;
    match e.kind() {
        K::InvalidValue | K::ValueValidation => ErrorClass::InvalidValue,
        _ => ErrorClass::Usage,
    }
}

/// What a failed command prints: `ferry: MESSAGE` on stderr, and with `--json` the error as
/// JSON on stdout (`{"error": {"class", "code", "message"}}`). Returns the exit code.
pub fn report(e: &anyhow::Error, json: bool, code_override: Option<u8>) -> u8 {
    let class = classify(e);
    let code = code_override.unwrap_or_else(|| class.code());
    eprintln!("ferry: {}", message(e));
    if json {
        println!("{}", error_json(class, code, &message(e)));
    }
    code
}

/// An error and its causes on one line, each cause said once.
pub fn message(e: &anyhow::Error) -> String {
    ferry_migrate::error::chain(e.as_ref())
}

pub fn error_json(class: ErrorClass, code: u8, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "class": class, "code": code, "message": message } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_documented_table_is_the_codes() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/exit-codes.md")).unwrap();
        for c in ErrorClass::ALL {
            let row = format!("| {:<4} | `{}`", c.code(), c.name());
            assert!(doc.lines().any(|l| l.starts_with(&row)), "docs/exit-codes.md has no row {row:?}");
        }
        for code in [ferry_runtime::exit::EXEC_OWN_FAILURE, ferry_runtime::exit::EXEC_CANNOT_RUN, ferry_runtime::exit::EXEC_NOT_FOUND] {
            assert!(doc.lines().any(|l| l.starts_with(&format!("| {code:<4} |"))), "no row for {code}");
        }
    }

    #[test]
    fn the_typed_error_in_the_chain_decides() {
        let e: anyhow::Error = ferry_runtime::Error::not_running("101", "exec").into();
        assert_eq!(classify(&e), ErrorClass::NotRunning);
        // Context on top does not hide it.
        let e = Err::<(), _>(e).context("while doing something").unwrap_err();
        assert_eq!(classify(&e), ErrorClass::NotRunning);
        // Through the pipelines' wrappers.
        let m = ferry_migrate::Error::Runtime(ferry_runtime::Error::Locked { ctid: "1".into(), holder: "migrate".into(), pid: 1 });
        assert_eq!(classify(&m.into()), ErrorClass::Locked);
        let rb = ferry_migrate::Error::RolledBack { ctid: "1".into(), cause: Box::new(ferry_migrate::Error::protocol("x")) };
        assert_eq!(classify(&rb.into()), ErrorClass::MigrationFailed);
        assert_eq!(classify(&UsageError("x".into()).into()), ErrorClass::Usage);
        assert_eq!(classify(&invalid!("--ram x")), ErrorClass::InvalidValue);
        assert_eq!(classify(&anyhow::anyhow!("plain")), ErrorClass::Failed);
        let c = Classified { class: ErrorClass::MigrationFailed, inner: anyhow::anyhow!("x") };
        assert_eq!(classify(&c.into()), ErrorClass::MigrationFailed);
        let j = error_json(ErrorClass::NotFound, 14, "no such container");
        assert_eq!(j["error"]["class"], "not-found");
        assert_eq!(j["error"]["code"], 14);
    }
}
