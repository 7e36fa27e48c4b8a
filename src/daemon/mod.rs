/*!
The daemon's composition root: what `llxprt-credd` does once its command
line is parsed. [`run`] takes the descriptors it inherited (`inherit`),
sets up the log, goes to the background (`readiness`), hardens the
process, blocks the signals it handles, builds the store, the scope and
the server's, OAuth's, the injecting proxy's and the GitHub broker's
settings (`config`), makes the socket and the capability token, says it
is ready, starts exec mode's command (`exec`), serves until a signal
(`signals`) and cleans up. [`kill`] is `-k`, which stops another daemon
(`running`).

`unsafe` is denied here; the one exception is where the daemon takes the
descriptors it inherited (`inherit`), before it opens any of its own.
*/
#![deny(unsafe_code)]

mod config;
mod exec;
mod inherit;
mod readiness;
pub(crate) mod running;
mod signals;

use std::path::PathBuf;

use crate::cli::credd::{Announce, Args};
use crate::cli::{EXIT_FAILURE, EXIT_OK};
use crate::error::{Error, Result};
use crate::log;
use crate::secret::SecretString;
use crate::server::{Server, ServerConfig, socket};
use crate::store::{HostStore, resolve_backend};
use crate::sys::{self, UserId};
use config::{
    ScopeSource, absolute, github_config, idle_timeout, inject_config, write_capability_fd,
    write_capability_file, write_timeout,
};
use exec::exec_log_path;
use inherit::{Inherited, claim_inherited};
use readiness::{Readiness, announce, daemonize};
use running::{shell_is_csh, warn_of_another_daemon};

// The variables the daemon sets for its clients (by `-s`/`-c` and in exec
// mode), by the names its modules use.
use crate::env::{
    CAPABILITY_FILE as CAPABILITY_FILE_ENV, CREDD_PID as PID_ENV, CREDENTIAL_SOCKET as SOCKET_ENV,
};

/// How long info lines (the audit) may wait to be written together:
/// [`LOG_FLUSH_MS`](crate::log::LOG_FLUSH_MS) by default,
/// `LLXPRT_CREDD_LOG_FLUSH_MS` when set (0: each line at once).
fn log_flush_interval() -> std::time::Duration {
    let ms = std::env::var(crate::env::LOG_FLUSH_MS).ok().and_then(|v| v.parse::<u64>().ok());
    std::time::Duration::from_millis(ms.unwrap_or(log::LOG_FLUSH_MS).min(1000))
}

/// `-k`: stop the daemon named by the environment, print the unset commands.
pub(crate) fn kill(args: &Args) -> Result<i32> {
    let pid = running::kill_from_env()?;
    let csh = match args.announce {
        Announce::Csh => true,
        Announce::Sh => false,
        _ => shell_is_csh(),
    };
    print!("{}", running::unset_text(csh, pid));
    Ok(EXIT_OK)
}

/// Sends the log to `--log-file` ([`log::set_file_at`]: never through a
/// symbolic link, close-on-exec, mode 0600, rotated at 10 MiB).
fn open_log_file(path: &std::path::Path) -> Result<()> {
    log::set_file_at(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            Error::Usage(format!("--log-file {} is a symbolic link; name the file itself", path.display()))
        } else {
            Error::io(format!("cannot open log file {}", path.display()), e)
        }
    })
}

/// Runs the daemon for a parsed command line (not `-k`, `--help` or
/// `--version`) until it stops; the exit code.
pub(crate) fn run(args: &Args) -> Result<i32> {
    let exec_mode = !args.command.is_empty();
    let background = !args.foreground && !exec_mode;
    let Inherited { activated, ready, capability: capability_file } = claim_inherited(args, background)?;
    // gh runs where the daemon was started (the project checkout), even
    // after a background daemon has moved to /.
    let start_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    log::set_max_level(args.log_level);
    let logs_to_file = args.log_file.is_some() || (exec_mode && !args.log_stderr && !args.foreground);
    if let Some(path) = &args.log_file {
        open_log_file(path)?;
    } else if logs_to_file {
        // The command owns the terminal (an interactive llxprt-code screen):
        // the daemon's lines go to a file. Start-up errors still reach
        // stderr through main.
        open_log_file(&exec_log_path()?)?;
    }
    let mut readiness = Readiness { close_stdout: !exec_mode, fds: ready.into_iter().collect() };
    let announce_how = match args.announce {
        Announce::None if background && shell_is_csh() => Announce::Csh,
        Announce::None if background => Announce::Sh,
        other => other,
    };
    if let Some(name) = &args.profile {
        warn_of_another_daemon(name, logs_to_file);
    }
    if background {
        match daemonize()? {
            Ok(pipe) => readiness.fds.push(pipe),
            Err(code) => return Ok(code),
        }
    }
    sys::harden_process().map_err(|e| Error::io("cannot disable core dumps", e))?;
    sys::tune_allocator();
    let mut watched = vec![libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    if exec_mode {
        watched.push(libc::SIGCHLD);
    }
    let signals = sys::SignalSet::block(&watched).map_err(|e| Error::io("cannot block signals", e))?;
    // after the fork and the signal mask: the logger's thread inherits it
    log::buffer_lines(log_flush_interval());
    let mut cleanup = Cleanup::default();
    let socket_path = match (&activated, &args.socket) {
        (Some(a), Some(flag)) if absolute(flag)? != a.path => {
            return Err(Error::Usage(format!(
                "--socket {} but the socket passed by the service manager is {}",
                flag.display(),
                a.path.display()
            )));
        }
        (Some(a), _) => a.path.clone(),
        (None, Some(p)) => absolute(p)?,
        (None, None) => {
            let dir = socket::default_socket_dir()?;
            if dir.temporary {
                cleanup.dirs.push(dir.path.clone());
            }
            socket::socket_path_in(&dir.path)?
        }
    };
    let capability_path = match (&args.capability_file, args.capability_fd, args.no_capability) {
        (Some(file), _, _) => Some(absolute(file)?),
        (None, Some(_), _) | (None, None, true) => None,
        (None, None, false) => {
            let dir = socket::default_capability_dir()?;
            if dir.temporary {
                cleanup.dirs.push(dir.path.clone());
            }
            let name = socket_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Some(dir.path.join(format!("{name}.env")))
        }
    };
    let store = HostStore::open(resolve_backend(args.store)?)?;
    let scope_source = ScopeSource {
        profile: args.profile.clone(),
        allow: args.allow.clone(),
        keys: args.allow_keys.clone(),
        profiles_dir: store.paths.profiles_dir(),
    };
    let scope = scope_source.load()?;
    if scope.is_empty() {
        return Err(Error::Usage(format!(
            "profile {:?} names nothing this daemon can serve (no auth of type oauth, no \
             ephemeralSettings auth-key-name); log in with OAuth or store a key (llxprt-cred key set NAME) \
             and name it in the profile, or start with --allow PROVIDER[:BUCKET] / --allow-key NAME",
            args.profile.as_deref().unwrap_or_default()
        )));
    }
    let unread = store.paths.config.join(crate::oauth::provider::PROVIDERS_FILE_NAME);
    if unread.exists() && args.providers_file.as_deref() != Some(unread.as_path()) {
        crate::log_warn!(
            "{} is not read: llxprt-code's config directory can be written by a sandbox; \
             name a providers file with --providers-file if you meant it",
            unread.display()
        );
    }
    let oauth = crate::oauth::OAuthConfig::load(args.providers_file.as_deref())?;
    let github = github_config(args, start_dir, &mut cleanup)?;
    let allow_uids: Vec<UserId> = args.allow_uids.iter().map(|&u| UserId(u)).collect();
    // A socket passed by the service manager is its to keep: never removed.
    let listener = match activated {
        Some(a) => a.listener,
        None => {
            let listener = socket::bind(&socket_path)?;
            cleanup.socket = Some(socket_path.clone());
            if !allow_uids.is_empty() {
                socket::admit_uids(&socket_path, &allow_uids)?;
            }
            listener
        }
    };
    cleanup.capability = capability_path.clone();
    let capability_token = if args.no_capability {
        None
    } else {
        let token = SecretString::new(crate::random::hex(32).map_err(|e| Error::io("random", e))?);
        if let Some(path) = &capability_path {
            write_capability_file(path, &token)?;
        }
        if let (Some(file), Some(fd)) = (capability_file, args.capability_fd) {
            write_capability_fd(file, fd, &token)?;
        }
        Some(token)
    };
    let (inject, proxy_listener) = inject_config(args, &socket_path, &oauth.providers.routes, &mut cleanup)?;
    crate::log_info!(
        "listening on {} (store {}, scope {}, sandbox may {}{})",
        socket_path.display(),
        store.backend.name(),
        scope.describe(),
        args.permits.describe(),
        if capability_token.is_some() { ", capability token required" } else { ", no capability token" }
    );
    let config = ServerConfig {
        max_connections: args.max_connections,
        rate_limit: (args.rate_limit > 0).then_some(args.rate_limit),
        daemon_rate_limit: (args.daemon_rate_limit > 0).then_some(args.daemon_rate_limit),
        allow_uids,
        capability_token,
        scope,
        idle_timeout: idle_timeout(),
        write_timeout: write_timeout(),
        oauth,
        permits: args.permits.clone(),
        github,
        inject,
    };
    let server = Server::new(listener, config, store)?;
    if let Some(listener) = proxy_listener {
        server.serve_proxy(listener)?;
    }
    let handle = server.handle();
    announce(announce_how, &socket_path, capability_path.as_deref())?;
    // the start-up lines reach stderr before a background daemon lets it go
    log::flush();
    readiness.ready(&socket_path);
    if background {
        // Logs go to --log-file or nowhere: a terminal or a pipe held open
        // by a daemon would hang whoever waits for it to close.
        let _ = sys::detach_stderr();
        let _ = std::env::set_current_dir("/");
    }
    let child = if exec_mode {
        match exec::spawn_command(&args.command, &socket_path, capability_path.as_deref()) {
            Ok(child) => Some(child),
            Err(e) => {
                let name = args.command[0].to_string_lossy();
                crate::log_error!("cannot run {name}: {e}");
                eprintln!("llxprt-credd: cannot run {}: {e}", crate::log::printable(&name));
                return Ok(exec::spawn_failure_code(&e));
            }
        }
    } else {
        None
    };
    let watcher = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || signals::watch_signals(&signals, &handle, child, &scope_source))
        .map_err(|e| Error::io("cannot start the signal thread", e))?;
    server.run();
    let _ = readiness::sd_notify("STOPPING=1");
    drop(cleanup);
    let code = watcher.join().unwrap_or(EXIT_FAILURE);
    crate::log_info!("stopped");
    Ok(code)
}

/// Removes the socket, the capability file and the private directories
/// made for them when the daemon ends.
#[derive(Default)]
struct Cleanup {
    socket: Option<PathBuf>,
    pub(super) proxy_socket: Option<PathBuf>,
    capability: Option<PathBuf>,
    pub(super) dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in [&self.socket, &self.proxy_socket].into_iter().flatten() {
            let _ = std::fs::remove_file(s);
        }
        if let Some(c) = &self.capability {
            let _ = std::fs::remove_file(c);
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}
