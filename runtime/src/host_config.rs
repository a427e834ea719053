//! The host's own settings: the host config file (`/etc/ferry/ferry.toml`), environment
//! variables and command-line flags, merged into one [`HostSettings`].
//!
//! Precedence, for every key: a flag, else its `FERRY_*` environment variable, else the file,
//! else the built-in default. The file is TOML with one key per setting; an unknown key is
//! refused with its line, so a typo never silently falls back to a default. The file's path
//! is `--host-config FILE`, else `FERRY_HOST_CONFIG`, else `/etc/ferry/ferry.toml`; only the
//! default path may be missing (a host without a file runs on the defaults).
//!
//! Adding a setting is one line in the `host_settings!` table below: its name (the TOML key),
//! type, default and environment variable. The type implements [`SettingValue`] (how a flag
//! or an environment variable spells it; the file uses serde).

use crate::cgroups::CgroupModeSetting;
use crate::error::{Error, Result};
use crate::host::{Host, DEFAULT_CGROUP_PARENT, DEFAULT_DATA_DIR, DEFAULT_RUN_DIR};
use crate::userns::pool::IdPoolSetting;
use crate::userns::Userns;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the host config file is unless `--host-config` or `FERRY_HOST_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/ferry/ferry.toml";
/// The environment variable naming the host config file.
pub const PATH_ENV: &str = "FERRY_HOST_CONFIG";

/// How a value of a setting is spelled on the command line and in the environment.
pub trait SettingValue: DeserializeOwned + Serialize + Sized {
    fn parse_text(s: &str) -> std::result::Result<Self, String>;
}

impl SettingValue for PathBuf {
    fn parse_text(s: &str) -> std::result::Result<Self, String> {
        Ok(PathBuf::from(s))
    }
}

impl SettingValue for CgroupModeSetting {
    fn parse_text(s: &str) -> std::result::Result<Self, String> {
        s.parse().map_err(|e: Error| e.to_string())
    }
}

impl SettingValue for String {
    fn parse_text(s: &str) -> std::result::Result<Self, String> {
        Ok(s.to_string())
    }
}

impl SettingValue for IdPoolSetting {
    fn parse_text(s: &str) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl SettingValue for Userns {
    fn parse_text(s: &str) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// What `ferry stop --all` (the host's shutdown) does with running containers (vzctl's
/// VE_STOP_MODE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopMode {
    /// Stop them; `start --all` starts them afresh at the next boot.
    #[default]
    Stop,
    /// Checkpoint them to disk (processes and memory); `start --all` restores them.
    Suspend,
}

impl SettingValue for StopMode {
    fn parse_text(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "stop" => Ok(StopMode::Stop),
            "suspend" => Ok(StopMode::Suspend),
            other => Err(format!("unknown stop mode {other:?}: use stop or suspend")),
        }
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    Environment,
    File,
    Default,
}

/// One key of the table: its TOML name, environment variable and description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingKey {
    pub name: &'static str,
    pub env: &'static str,
    pub doc: &'static str,
}

macro_rules! host_settings {
    ($( #[doc = $doc:literal] $key:ident : $ty:ty = $default:expr, $env:literal; )*) => {
        /// The host's settings, merged from flags, environment, file and defaults.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct HostSettings {
            $( #[doc = $doc] pub $key: $ty, )*
        }

        /// The file: every key optional, nothing else allowed.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileSettings {
            $( #[serde(default)] $key: Option<$ty>, )*
        }

        /// Every setting: TOML key, environment variable, description.
        pub const KEYS: &[SettingKey] = &[ $( SettingKey { name: stringify!($key), env: $env, doc: $doc.trim_ascii() }, )* ];

        impl HostSettings {
            fn merge(file: FileSettings, pick: &mut Picker<'_>) -> Result<HostSettings> {
                Ok(HostSettings { $( $key: pick.value(stringify!($key), $env, file.$key, || $default)?, )* })
            }
        }
    };
}

host_settings! {
    /// Where configs, private areas and roots live (`--data-dir`).
    data_dir: PathBuf = PathBuf::from(DEFAULT_DATA_DIR), "FERRY_DATA_DIR";
    /// Where the state of running containers lives (`--run-dir`).
    run_dir: PathBuf = PathBuf::from(DEFAULT_RUN_DIR), "FERRY_RUN_DIR";
    /// The cgroup, relative to each hierarchy's root, that holds this host's containers (`--cgroup-parent`).
    cgroup_parent: String = DEFAULT_CGROUP_PARENT.to_string(), "FERRY_CGROUP_PARENT";
    /// What `ferry stop --all` does at shutdown: `stop`, or `suspend` (checkpoint to disk; `start --all` restores them at boot).
    stop_mode: StopMode = StopMode::Stop, "FERRY_STOP_MODE";
    /// Which cgroups containers get: `auto` (v2 when /sys/fs/cgroup is cgroup2, else v1), `v1`, or `v2` (the cgroup2 hierarchy wherever it is mounted) (`--cgroup-mode`).
    cgroup_mode: CgroupModeSetting = CgroupModeSetting::Auto, "FERRY_CGROUP_MODE";
    /// Whether `ferry create` gives a new container a user namespace of its own when `--userns` is not given: `on` (unprivileged: its root is an unprivileged user on the host) or `off` (privileged).
    userns: Userns = DEFAULT_USERNS, "FERRY_USERNS";
    /// The host IDs unprivileged containers get their ranges of 65536 from: `auto` (root's entry in /etc/subuid and /etc/subgid, else 1000000:1000000000) or `FIRST:COUNT`.
    userns_pool: IdPoolSetting = IdPoolSetting::Auto, "FERRY_USERNS_POOL";
}

/// What `create` does without `--userns` (the host setting `userns` changes it): new
/// containers are unprivileged unless asked otherwise.
pub const DEFAULT_USERNS: Userns = Userns::On;

/// Values given on the command line, by setting name.
#[derive(Debug, Clone, Default)]
pub struct Flags(Vec<(&'static str, String)>);

impl Flags {
    /// `name` must be a key of [`KEYS`].
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        debug_assert!(KEYS.iter().any(|k| k.name == name), "{name} is no host setting");
        self.0.push((name, value.into()));
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Settings as loaded, with where each value came from and which file was read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Loaded {
    pub settings: HostSettings,
    /// The file read (None: the default path, which does not exist).
    pub file: Option<PathBuf>,
    /// The path looked at (read or not): sample configs are in `samples/` beside it.
    pub path: PathBuf,
    pub sources: Vec<(&'static str, Source)>,
}

impl Loaded {
    pub fn source(&self, name: &str) -> Option<Source> {
        self.sources.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// Where `--applyconfig NAME` finds `NAME.toml`: `samples/` beside the host config file.
    pub fn samples_dir(&self) -> PathBuf {
        self.path.parent().unwrap_or(Path::new("/")).join("samples")
    }
}

struct Picker<'a> {
    flags: &'a Flags,
    env: &'a dyn Fn(&str) -> Option<String>,
    sources: Vec<(&'static str, Source)>,
}

impl Picker<'_> {
    fn value<T: SettingValue>(&mut self, name: &'static str, env: &'static str, file: Option<T>, default: impl FnOnce() -> T) -> Result<T> {
        let text = |v: &str, from: String| T::parse_text(v).map_err(|e| Error::Invalid(format!("{from}: {e}")));
        let (v, src) = if let Some(v) = self.flags.get(name) {
            (text(v, format!("--{}", name.replace('_', "-")))?, Source::Flag)
        } else if let Some(v) = (self.env)(env).filter(|v| !v.is_empty()) {
            (text(&v, format!("{env}={v}"))?, Source::Environment)
        } else if let Some(v) = file {
            (v, Source::File)
        } else {
            (default(), Source::Default)
        };
        self.sources.push((name, src));
        Ok(v)
    }
}

/// The host config file to read: `flag`, else the environment's [`PATH_ENV`], else the
/// default; the bool says whether it was named (and so must exist).
pub fn config_path(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> (PathBuf, bool) {
    match (flag, env(PATH_ENV).filter(|v| !v.is_empty())) {
        (Some(f), _) => (f.to_path_buf(), true),
        (None, Some(e)) => (PathBuf::from(e), true),
        (None, None) => (PathBuf::from(DEFAULT_PATH), false),
    }
}

/// Parse the file's text; an error names the line and the key or value at fault.
fn parse_file(path: &Path, text: &str) -> Result<FileSettings> {
    let f: FileSettings = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let keys: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        let msg = e.message().trim().to_string();
        let msg = match line {
            Some(l) => format!("line {l}: {msg}"),
            None => msg,
        };
        Error::HostConfig { path: path.to_path_buf(), msg: format!("{msg} (the keys are {}; see docs/host-config.md)", keys.join(", ")) }
    })?;
    for (key, p) in [("data_dir", &f.data_dir), ("run_dir", &f.run_dir)] {
        if let Some(p) = p.as_ref().filter(|p| !p.is_absolute()) {
            return Err(Error::HostConfig { path: path.to_path_buf(), msg: format!("{key} = {:?}: use an absolute path", p.display()) });
        }
    }
    Ok(f)
}

/// Load the host's settings: the file at `path` (`named`: it must exist), `env` for the
/// environment, `flags` from the command line.
pub fn load(path: &Path, named: bool, flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded> {
    let (file, read) = match std::fs::read_to_string(path) {
        Ok(text) => (parse_file(path, &text)?, Some(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => (FileSettings::default(), None),
        Err(e) => {
            let hint = if named { format!("; unset {PATH_ENV} or drop --host-config to use {DEFAULT_PATH}") } else { String::new() };
            return Err(Error::HostConfig { path: path.to_path_buf(), msg: format!("{e}{hint}") });
        }
    };
    let mut pick = Picker { flags, env, sources: Vec::new() };
    let settings = HostSettings::merge(file, &mut pick)?;
    if settings.cgroup_parent.trim_matches('/').is_empty() || settings.cgroup_parent.split('/').any(|c| c == "..") {
        return Err(Error::Invalid(format!("cgroup_parent {:?}: use a relative cgroup path such as ferry or hostA/ferry", settings.cgroup_parent)));
    }
    Ok(Loaded { settings, file: read, path: path.to_path_buf(), sources: pick.sources })
}

/// The built-in defaults alone (no file, no environment, no flag).
pub fn defaults() -> Loaded {
    let mut pick = Picker { flags: &Flags::default(), env: &|_| None, sources: Vec::new() };
    let settings = HostSettings::merge(FileSettings::default(), &mut pick).expect("the defaults are valid");
    Loaded { settings, file: None, path: PathBuf::from(DEFAULT_PATH), sources: pick.sources }
}

impl HostSettings {
    /// The paths and cgroup parent every command works with.
    pub fn host(&self) -> Host {
        Host::new(&self.data_dir, &self.run_dir, self.cgroup_parent.clone()).with_cgroup_mode(self.cgroup_mode).with_userns_pool(self.userns_pool)
    }
}

/// The process environment, for [`load`] and [`config_path`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn flag_beats_environment_beats_file_beats_default() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ferry.toml");
        std::fs::write(&p, "# a host\ndata_dir = \"/file/data\"\nrun_dir = \"/file/run\"\ncgroup_parent = \"file\"\n").unwrap();
        let env = env_of(&[("FERRY_DATA_DIR", "/env/data"), ("FERRY_RUN_DIR", "/env/run")]);
        let mut flags = Flags::default();
        flags.set("data_dir", "/flag/data");
        let l = load(&p, true, &flags, &env).unwrap();
        let s = &l.settings;
        assert_eq!(s.data_dir, PathBuf::from("/flag/data"));
        assert_eq!(s.run_dir, PathBuf::from("/env/run"));
        assert_eq!(s.cgroup_parent, "file");
        assert_eq!(s.stop_mode, StopMode::Stop);
        let src: Vec<Source> = ["data_dir", "run_dir", "cgroup_parent", "stop_mode"].iter().map(|k| l.source(k).unwrap()).collect();
        assert_eq!(src, [Source::Flag, Source::Environment, Source::File, Source::Default]);
        assert_eq!(l.file.as_deref(), Some(p.as_path()));
        // An empty variable counts as unset.
        let l = load(&p, true, &Flags::default(), &env_of(&[("FERRY_DATA_DIR", "")])).unwrap();
        assert_eq!(l.settings.data_dir, PathBuf::from("/file/data"));
    }

    #[test]
    fn missing_default_file_means_defaults_but_a_named_one_must_exist() {
        let d = tempfile::tempdir().unwrap();
        let none = env_of(&[]);
        let l = load(&d.path().join("absent.toml"), false, &Flags::default(), &none).unwrap();
        assert_eq!(l.settings.host(), Host::default());
        assert_eq!(l.file, None);
        let e = load(&d.path().join("absent.toml"), true, &Flags::default(), &none).unwrap_err();
        assert!(matches!(e, Error::HostConfig { .. }) && e.to_string().contains("absent.toml"), "{e}");
        assert_eq!(config_path(None, &none), (PathBuf::from(DEFAULT_PATH), false));
        assert_eq!(config_path(None, &env_of(&[("FERRY_HOST_CONFIG", "/x.toml")])), (PathBuf::from("/x.toml"), true));
        assert_eq!(config_path(Some(Path::new("/f.toml")), &env_of(&[("FERRY_HOST_CONFIG", "/x.toml")])), (PathBuf::from("/f.toml"), true));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ferry.toml");
        let none = env_of(&[]);
        std::fs::write(&p, "data_dir = \"/d\"\n\n# comment\ndata_dri = \"/typo\"\n").unwrap();
        let e = load(&p, true, &Flags::default(), &none).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("data_dri") && e.contains(p.to_str().unwrap()), "{e}");
        std::fs::write(&p, "stop_mode = \"sleep\"\n").unwrap();
        let e = load(&p, true, &Flags::default(), &none).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("sleep"), "{e}");
        std::fs::write(&p, "data_dir = \"relative/dir\"\n").unwrap();
        assert!(load(&p, true, &Flags::default(), &none).unwrap_err().to_string().contains("absolute"));
        std::fs::write(&p, "stop_mode = \"suspend\"\n").unwrap();
        assert_eq!(load(&p, true, &Flags::default(), &none).unwrap().settings.stop_mode, StopMode::Suspend);
        let e = load(&p, true, &Flags::default(), &env_of(&[("FERRY_STOP_MODE", "nap")])).unwrap_err().to_string();
        assert!(e.contains("FERRY_STOP_MODE=nap"), "{e}");
        std::fs::write(&p, "cgroup_parent = \"../escape\"\n").unwrap();
        assert!(load(&p, true, &Flags::default(), &none).is_err());
    }

    #[test]
    fn every_key_has_a_variable_and_a_description() {
        for k in KEYS {
            assert!(k.env.starts_with("FERRY_") && !k.doc.is_empty(), "{k:?}");
        }
        for k in ["data_dir", "run_dir", "cgroup_parent", "stop_mode"] {
            assert!(KEYS.iter().any(|x| x.name == k), "{k}");
        }
    }
}
