/*!
Where llxprt-code keeps its files, resolved the same way it resolves them
(env-paths with the name `llxprt-code`), so both programs share one store.

- data: `LLXPRT_DATA_HOME` > `LLXPRT_CONFIG_HOME` > platform default
- log/state: `LLXPRT_LOG_HOME` > `LLXPRT_CONFIG_HOME` > platform default
- config: `LLXPRT_CONFIG_HOME` > platform default

An override counts only when it is a non-empty absolute path, as in
llxprt-code. The paths are read once, when [`Paths::from_env`] runs.
*/
#![forbid(unsafe_code)]

use std::env;
use std::path::{Path, PathBuf};

use super::error::{StoreError, StoreErrorKind, StoreResult};

const APP_NAME: &str = "llxprt-code";

/// The resolved roots and the fixed locations under them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Data root: fallback files and the machine secret.
    pub data: PathBuf,
    /// Log/state root: lock files.
    pub log: PathBuf,
    /// Config root: profiles.
    pub config: PathBuf,
}

/// An environment to resolve the roots in: this process's, or another's
/// (a running daemon's, read from `/proc`).
type Lookup<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

fn absolute_var(env: Lookup, name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env(name)?);
    (path.is_absolute()).then_some(path)
}

fn home_dir(env: Lookup) -> StoreResult<PathBuf> {
    if let Some(home) = absolute_var(env, "HOME") {
        return Ok(home);
    }
    crate::sys::passwd_entry(crate::sys::current_uid())
        .map(|p| PathBuf::from(p.home))
        .filter(|p| p.is_absolute())
        .ok_or_else(|| {
            StoreError::new(StoreErrorKind::Unavailable, "cannot find the home directory (HOME is unset)")
        })
}

impl Paths {
    /// Resolves the roots from the environment.
    pub fn from_env() -> StoreResult<Paths> {
        Self::resolve(&|name| env::var_os(name))
    }

    /// Resolves the roots from the environment `env` gives (a home
    /// directory not named there is this process user's).
    pub fn resolve(env: Lookup) -> StoreResult<Paths> {
        let config_override = absolute_var(env, crate::env::CONFIG_HOME);
        let (data_default, log_default, config_default) = platform_defaults(env)?;
        Ok(Paths {
            data: absolute_var(env, crate::env::DATA_HOME)
                .or_else(|| config_override.clone())
                .unwrap_or(data_default),
            log: absolute_var(env, crate::env::LOG_HOME)
                .or_else(|| config_override.clone())
                .unwrap_or(log_default),
            config: config_override.unwrap_or(config_default),
        })
    }

    /// Fallback directory of a secure-store service (`{data}/secure-store/{service}`).
    pub fn secure_store_dir(&self, service: &str) -> PathBuf {
        self.data.join("secure-store").join(service)
    }

    /// Fallback directory of the API keys (`{data}/provider-keys`).
    pub fn provider_keys_dir(&self) -> PathBuf {
        self.data.join("provider-keys")
    }

    /// The machine secret file (`{data}/machine_secret`).
    pub fn machine_secret_file(&self) -> PathBuf {
        self.data.join("machine_secret")
    }

    /// OAuth refresh/auth lock directory (`{log}/oauth/locks`).
    pub fn oauth_lock_dir(&self) -> PathBuf {
        self.log.join("oauth").join("locks")
    }

    /// Credential write lock directory (`{log}/secure-store/locks`).
    pub fn credential_lock_dir(&self) -> PathBuf {
        self.log.join("secure-store").join("locks")
    }

    /// Profile directory (`{config}/profiles`).
    pub fn profiles_dir(&self) -> PathBuf {
        self.config.join("profiles")
    }
}

#[cfg(target_os = "macos")]
fn platform_defaults(env: Lookup) -> StoreResult<(PathBuf, PathBuf, PathBuf)> {
    let lib = home_dir(env)?.join("Library");
    Ok((
        lib.join("Application Support").join(APP_NAME),
        lib.join("Logs").join(APP_NAME),
        lib.join("Preferences").join(APP_NAME),
    ))
}

#[cfg(not(target_os = "macos"))]
fn platform_defaults(env: Lookup) -> StoreResult<(PathBuf, PathBuf, PathBuf)> {
    let xdg = |var: &str, fallback: &[&str]| -> StoreResult<PathBuf> {
        match absolute_var(env, var) {
            Some(p) => Ok(p.join(APP_NAME)),
            None => {
                let mut p = home_dir(env)?;
                p.extend(fallback);
                Ok(p.join(APP_NAME))
            }
        }
    };
    Ok((
        xdg("XDG_DATA_HOME", &[".local", "share"])?,
        xdg("XDG_STATE_HOME", &[".local", "state"])?,
        xdg("XDG_CONFIG_HOME", &[".config"])?,
    ))
}

/// Creates `dir` and its parents with mode 0700 for the parts we create.
pub fn create_private_dir(dir: &Path) -> StoreResult<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::io(format!("cannot create {}", dir.display()), &e))
}
