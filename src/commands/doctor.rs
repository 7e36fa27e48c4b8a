/*!
`llxprt-cred doctor`: what the host store, the machine secret, the lock
directories, `gh`, the sockets and the daemons running look like, and the
scope a profile would serve; every problem and note comes with what to do
about it, and problems make the exit status 1.
*/
#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::store_cmds::unsearched_keyring;
use super::{expiry_text, out};
use crate::cli::{EXIT_FAILURE, EXIT_OK};
use crate::error::Result;
use crate::store::keyring::KeyringStatus;
use crate::store::{Backend, HostStore, KeyStore, TokenStore};
use crate::token::now_unix_seconds;

/// What `doctor` found: problems count toward the exit status; every
/// problem and note comes with what to do about it.
struct Findings {
    problems: usize,
}

impl Findings {
    fn line(&self, text: impl AsRef<str>) -> Result<()> {
        out(text)
    }

    fn problem(&mut self, text: impl AsRef<str>, fix: impl AsRef<str>) -> Result<()> {
        self.problems += 1;
        out(format!("{}\n  fix: {}", text.as_ref(), fix.as_ref()))
    }

    fn note(&self, text: impl AsRef<str>, advice: impl AsRef<str>) -> Result<()> {
        out(format!("{}\n  note: {}", text.as_ref(), advice.as_ref()))
    }
}

/// The daemon named by `LLXPRT_CREDENTIAL_SOCKET`, the sockets left in the
/// default socket directory, and the daemons running.
fn doctor_sockets(f: &mut Findings) -> Result<()> {
    use std::os::unix::net::UnixStream;
    /// Whether a daemon listens at `path`, or why not.
    fn probe(path: &std::path::Path) -> std::result::Result<(), io::Error> {
        UnixStream::connect(path).map(drop)
    }
    match std::env::var_os(crate::client::SOCKET_ENV).filter(|v| !v.is_empty()) {
        None => f.line(format!("{}: not set", crate::client::SOCKET_ENV))?,
        Some(raw) => {
            let path = PathBuf::from(&raw);
            let name = format!("{}={}", crate::client::SOCKET_ENV, path.display());
            match probe(&path) {
                Ok(()) => f.line(format!("{name}: a daemon listens there"))?,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => f.problem(
                    format!("{name}: stale: no daemon listens there any more"),
                    format!(
                        "unset {} (or start a daemon: eval \"$(llxprt-credd --profile NAME)\"), and remove \
                         the leftover file: rm {}",
                        crate::client::SOCKET_ENV,
                        path.display()
                    ),
                )?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => f.problem(
                    format!("{name}: no socket there"),
                    format!(
                        "unset {} or start a daemon and use the socket it names",
                        crate::client::SOCKET_ENV
                    ),
                )?,
                Err(e) => f.problem(
                    format!("{name}: cannot connect ({e})"),
                    "run as the daemon's user, or start the daemon with --allow-uid UID",
                )?,
            }
        }
    }
    if let Ok(dir) = crate::server::socket::default_socket_dir_path() {
        let mut stale: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .filter(|p| probe(p).is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused))
            .collect();
        stale.sort();
        if stale.is_empty() {
            f.line(format!("socket directory: {} (no stale sockets)", dir.display()))?;
        } else {
            let list: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
            f.note(
                format!(
                    "socket directory: {}: stale sockets (no daemon listens): {}",
                    dir.display(),
                    list.join(" ")
                ),
                format!("remove them: rm {}", list.join(" ")),
            )?;
        }
    }
    let running = crate::daemon::running::running_daemons();
    if running.is_empty() {
        f.line("daemons running: none")?;
    }
    for d in running {
        f.line(format!("daemon running: pid {}: {}", d.pid, d.command_line()))?;
    }
    Ok(())
}

pub(super) fn doctor(host: &HostStore, profile: Option<&str>) -> Result<i32> {
    let mut f = Findings { problems: 0 };
    f.line(format!("backend setting: {}", host.backend.name()))?;
    let mut keyring_live = false;
    match &host.keyring {
        None => f.line("live backend: encrypted file (the keyring is not used)")?,
        Some(k) => match k.status() {
            KeyringStatus::Ready => {
                keyring_live = true;
                f.line(format!("live backend: OS keyring: {}", k.describe()))?
            }
            KeyringStatus::Unavailable(why) if host.backend == Backend::Keyring => f.problem(
                format!("live backend: none: the OS keyring is unavailable ({why})"),
                "start or unlock a Secret Service (gnome-keyring, KeePassXC) reachable on \
                 DBUS_SESSION_BUS_ADDRESS, or use --store file",
            )?,
            KeyringStatus::Unavailable(why) => f.note(
                format!("live backend: encrypted file (OS keyring unavailable: {why})"),
                "llxprt-code falls back the same way; if llxprt-code on this host uses a keyring, \
                 make the same Secret Service reachable here (DBUS_SESSION_BUS_ADDRESS)",
            )?,
            KeyringStatus::Latched(why) => f.note(
                format!("live backend: encrypted file ({why})"),
                "unlock the keyring's default collection (log in to the desktop session) and run again",
            )?,
        },
    }
    if keyring_live {
        f.line("persists: yes (default keyring collection)")?;
    } else {
        f.line(format!("persists: yes, in {}", host.paths.data.display()))?;
    }
    let encrypted_files = count_encrypted_files(host);
    match host.machine_secret.get() {
        Some((_, crate::store::machine_secret::SecretSource::Keyring)) => {
            f.line("machine secret: in the OS keyring")?
        }
        Some((_, crate::store::machine_secret::SecretSource::File)) => {
            f.line(format!("machine secret: {}", host.machine_secret.file().display()))?
        }
        None if encrypted_files > 0 => f.problem(
            format!(
                "machine secret: not found, but {encrypted_files} encrypted files exist (they may be \
                 unreadable)"
            ),
            format!(
                "if llxprt-code keeps its machine secret in your keyring, use --store auto with the \
                 keyring reachable; else restore {}",
                host.machine_secret.file().display()
            ),
        )?,
        None => f.line("machine secret: none yet (created on the first encrypted-file write)")?,
    }
    for (what, dir) in
        [("oauth locks", host.paths.oauth_lock_dir()), ("write locks", host.paths.credential_lock_dir())]
    {
        match lock_dir_report(&dir) {
            Ok(report) => f.line(format!("{what}: {} ({report})", dir.display()))?,
            Err((report, fix)) => f.problem(format!("{what}: {} ({report})", dir.display()), fix)?,
        }
    }
    legacy_claude_note(host, &f)?;
    match crate::github::run::host_gh() {
        crate::github::run::HostGh::Ready(v) => {
            f.line(format!("github: {v}, logged in (the github op can serve)"))?
        }
        crate::github::run::HostGh::LoggedOut(v) => f.note(
            format!("github: {v}, not logged in: the github op answers HOST_AUTH_REQUIRED"),
            "run on the host: gh auth login",
        )?,
        crate::github::run::HostGh::Missing => f.note(
            "github: gh is not on PATH: the github op answers HOST_GH_UNAVAILABLE",
            "install GitHub CLI (https://cli.github.com) to let sandboxes use llxprt-code's github tool",
        )?,
    }
    f.line(format!("oauth fallback dir: {}", host.tokens.secure_store().dir().display()))?;
    f.line(format!("api key fallback dir: {}", host.keys.secure_store().dir().display()))?;
    doctor_sockets(&mut f)?;
    if let Some(name) = profile {
        doctor_profile(host, name, &mut f)?;
    }
    if f.problems == 0 {
        f.line("no problems found")?;
        Ok(EXIT_OK)
    } else {
        f.line(format!("{} problem(s) found", f.problems))?;
        Ok(EXIT_FAILURE)
    }
}

/// A Claude subscription login stored only under the name older
/// llxprt-code releases used (`anthropic:*`): current llxprt-code asks for
/// `claudecode` and will not use it.
fn legacy_claude_note(host: &HostStore, f: &Findings) -> Result<()> {
    use crate::oauth::provider::{CLAUDE_SUBSCRIPTION, CLAUDE_SUBSCRIPTION_LEGACY};
    let providers = host.tokens.list_providers().unwrap_or_default();
    if providers.iter().any(|p| p == CLAUDE_SUBSCRIPTION)
        || !providers.iter().any(|p| p == CLAUDE_SUBSCRIPTION_LEGACY)
    {
        return Ok(());
    }
    let buckets = host.tokens.list_buckets(CLAUDE_SUBSCRIPTION_LEGACY).unwrap_or_default();
    let logins: Vec<String> = buckets.iter().map(|b| format!("{CLAUDE_SUBSCRIPTION_LEGACY}:{b}")).collect();
    f.note(
        format!(
            "Claude subscription login stored as {} only: llxprt-code releases since its July 2026 split \
             of Claude Code OAuth from Anthropic API access look for {CLAUDE_SUBSCRIPTION}:BUCKET and will \
             not use it (older releases still do)",
            logins.join(" ")
        ),
        format!("log in again for current llxprt-code: llxprt-cred login {CLAUDE_SUBSCRIPTION} (add --bucket NAME for a named bucket)"),
    )
}

fn count_encrypted_files(host: &HostStore) -> usize {
    [host.tokens.secure_store().dir(), host.keys.secure_store().dir()]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".enc"))
        .count()
}

/// The scope `llxprt-credd --profile NAME` would serve, and whether each
/// of its credentials is there to be served.
fn doctor_profile(host: &HostStore, name: &str, f: &mut Findings) -> Result<()> {
    let dir = host.paths.profiles_dir();
    let scope = match crate::profile::load_scope(&dir, name) {
        Ok(scope) => scope,
        Err(e) => {
            return f.problem(
                format!("profile {name}: {e}"),
                format!("save the profile with llxprt-code (it keeps profiles in {})", dir.display()),
            );
        }
    };
    f.line(format!("profile {name}: {}", scope.describe()))?;
    f.line(format!(
        "profile {name}: a sandbox of llxprt-credd --profile {name} may read this scope only; \
         refresh_token, logins and save/remove need --permit refresh|login|write"
    ))?;
    if scope.oauth.is_empty() && scope.keys.is_empty() {
        f.problem(
            format!("profile {name}: serves nothing"),
            "give the profile OAuth auth or an auth-key-name, or start the daemon with --allow/--allow-key",
        )?;
    }
    let now = now_unix_seconds();
    for (provider, buckets) in &scope.oauth {
        let buckets: Vec<String> = match buckets {
            Some(set) => set.iter().cloned().collect(),
            None => host.tokens.list_buckets(provider)?,
        };
        for bucket in buckets {
            let login = format!(
                "log in to {provider} (bucket {bucket}) with llxprt-code, or run \
                 llxprt-cred login {provider} --bucket {bucket}"
            );
            match host.tokens.get_token(provider, Some(&bucket))? {
                None => f.problem(
                    format!("  token {provider}:{bucket}: not stored"),
                    unsearched_keyring(host).unwrap_or(login),
                )?,
                Some(t) if t.expiry() <= now && t.refresh_token().is_none() => f.problem(
                    format!("  token {provider}:{bucket}: expired, and it has no refresh token"),
                    &login,
                )?,
                Some(t) => {
                    let when = expiry_text(&t, now);
                    let refresh = if t.refresh_token().is_some() {
                        "refreshed on the host"
                    } else {
                        "not refreshable: log in again when it expires"
                    };
                    f.line(format!("  token {provider}:{bucket}: stored, {when}, {refresh}"))?
                }
            }
        }
    }
    for key in &scope.keys {
        if host.keys.has_key(key)? {
            f.line(format!("  api key {key}: stored"))?;
        } else {
            f.problem(
                format!("  api key {key}: not stored"),
                unsearched_keyring(host).unwrap_or_else(|| format!("llxprt-cred key set {key}")),
            )?;
        }
    }
    Ok(())
}

/// The state of a lock directory: `Ok(report)`, or `Err((problem, fix))`.
fn lock_dir_report(dir: &std::path::Path) -> std::result::Result<String, (String, String)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok("not created yet".into()),
        Err(e) => {
            return Err((
                format!("cannot read it: {e}"),
                format!("make {} a directory you own (mode 0700)", dir.display()),
            ));
        }
    };
    let held: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    if held.is_empty() {
        return Ok("no lock held".into());
    }
    let age = |n: &String| {
        std::fs::metadata(dir.join(n)).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
    };
    let old: Vec<&String> =
        held.iter().filter(|n| age(n).is_some_and(|a| a > Duration::from_secs(300))).collect();
    if old.is_empty() {
        Ok(format!("{} held now", held.len()))
    } else {
        Err((
            format!(
                "held for over 5 minutes: {}",
                old.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "if no llxprt-code or llxprt-credd process is running, delete them".into(),
        ))
    }
}
