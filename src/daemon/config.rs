/*!
The daemon's settings, built from the command line and the environment:
where the scope comes from ([`ScopeSource`], read again on SIGHUP), inject
mode's settings and proxy socket, the GitHub broker's settings, the
server's timeouts, and the capability token's file or descriptor.
*/
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::Cleanup;
use crate::cli::credd::Args;
use crate::error::{Error, Result};
use crate::profile::{self, Scope};
use crate::secret::SecretString;
use crate::server::{self, socket};
use crate::sys::UserId;

pub(super) fn write_capability_file(path: &std::path::Path, token: &SecretString) -> Result<()> {
    let content = zeroize::Zeroizing::new(format!("{}={}\n", crate::env::CAPABILITY_TOKEN, token.expose()));
    crate::store::secure::atomic_write(path, content.as_bytes())
        .map_err(|e| Error::io(format!("cannot write capability file {}", path.display()), e))
}

/// Writes the bare token and a newline (the content llxprt-code's client
/// reads from `LLXPRT_CAPABILITY_FD`) to descriptor `fd` and closes it.
pub(super) fn write_capability_fd(mut file: File, fd: i32, token: &SecretString) -> Result<()> {
    let what = || format!("cannot write the capability token to descriptor {fd}");
    let line = zeroize::Zeroizing::new(format!("{}\n", token.expose()));
    file.write_all(line.as_bytes()).map_err(|e| Error::io(what(), e))
}

pub(super) fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(format!("bad path {}", path.display()), e))
}

/// Where the scope comes from: the profile and the `--allow`/`--allow-key`
/// flags. Read at start and again on SIGHUP.
pub(super) struct ScopeSource {
    pub(super) profile: Option<String>,
    pub(super) allow: Vec<String>,
    pub(super) keys: Vec<String>,
    pub(super) profiles_dir: PathBuf,
}

impl ScopeSource {
    pub(super) fn load(&self) -> Result<Scope> {
        let mut scope = match &self.profile {
            Some(name) => profile::load_scope(&self.profiles_dir, name)?,
            None => Scope::default(),
        };
        for spec in &self.allow {
            scope.allow(spec)?;
        }
        for key in &self.keys {
            scope.allow_key(key)?;
        }
        Ok(scope)
    }
}

/// Inject mode's settings and its bound proxy socket: `--proxy-socket`,
/// else `NAME.proxy.sock` beside the credential socket (one directory
/// mount gives a container both). The test overrides of upstream origins
/// must be loopback, or the daemon does not start.
pub(super) fn inject_config(
    args: &Args,
    socket_path: &std::path::Path,
    routes: &[crate::oauth::provider::RouteEntry],
    cleanup: &mut Cleanup,
) -> Result<(Option<crate::inject::InjectConfig>, Option<std::os::unix::net::UnixListener>)> {
    if !args.inject {
        return Ok((None, None));
    }
    let path = match &args.proxy_socket {
        Some(p) => absolute(p)?,
        None => {
            let stem = socket_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            socket_path.with_file_name(format!("{stem}.proxy.sock"))
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        socket::ensure_private_dir(dir)?;
    }
    crate::inject::routes::install(routes);
    for route in routes {
        crate::log_info!(
            "inject: route {} ({} API{}) for the keys of {}",
            route.host,
            route.api,
            route.prefix,
            route.providers.join(", ")
        );
    }
    let overrides =
        crate::inject::InjectConfig::overrides_from(|name| std::env::var(name).ok()).map_err(Error::Usage)?;
    for (host, origin) in &overrides {
        crate::log_warn!(
            "inject: requests for {host} go to http://{}:{} (a test override)",
            origin.host,
            origin.port
        );
    }
    for provider in &args.reveal {
        crate::log_warn!("inject: --reveal {provider}: the sandbox gets {provider}'s real access tokens");
    }
    let listener = socket::bind(&path)?;
    cleanup.proxy_socket = Some(path.clone());
    if !args.allow_uids.is_empty() {
        let uids: Vec<UserId> = args.allow_uids.iter().map(|&u| UserId(u)).collect();
        socket::admit_uids(&path, &uids)?;
    }
    crate::log_info!("inject mode: sentinels only; proxy socket {}", path.display());
    let config = crate::inject::InjectConfig {
        max_body: args.proxy_max_body,
        allow_mcp: args.allow_mcp,
        reveal: args.reveal.iter().cloned().collect(),
        overrides,
    };
    Ok((Some(config), Some(listener)))
}

/// The GitHub broker's settings: bodies go to a private directory beside
/// the capability file's (never the tmpdir or the socket's directory, which
/// a sandbox may see).
pub(super) fn github_config(
    args: &Args,
    cwd: PathBuf,
    cleanup: &mut Cleanup,
) -> Result<crate::github::GithubConfig> {
    let mut config = crate::github::GithubConfig {
        enabled: !args.no_github,
        repos: args.github_repos.clone(),
        cwd,
        ..Default::default()
    };
    if !config.enabled {
        return Ok(config);
    }
    match socket::default_capability_dir() {
        Ok(dir) => {
            if dir.temporary {
                cleanup.dirs.push(dir.path.clone());
            }
            config.body_dir = Some(dir.path);
        }
        Err(e) => {
            crate::log_warn!("github: no private directory for body files ({e}); operations with a body fail")
        }
    }
    if let Some(ms) = std::env::var(crate::env::GH_TIMEOUT_MS).ok().and_then(|v| v.parse::<u64>().ok()) {
        config.call_timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(scale) = std::env::var(crate::oauth::TIME_SCALE_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
    {
        config.time_scale = scale;
    }
    Ok(config)
}

/// The idle timeout; `LLXPRT_CREDD_IDLE_TIMEOUT_SECS` overrides it (tests).
pub(super) fn idle_timeout() -> Duration {
    std::env::var(crate::env::IDLE_TIMEOUT_SECS)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(server::IDLE_TIMEOUT)
}

/// The write timeout of a response; `LLXPRT_CREDD_WRITE_TIMEOUT_MS`
/// overrides it (tests: a client that never reads its responses).
pub(super) fn write_timeout() -> Duration {
    std::env::var(crate::env::WRITE_TIMEOUT_MS)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&ms: &u64| ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(server::WRITE_TIMEOUT)
}
