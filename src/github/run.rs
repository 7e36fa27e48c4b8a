/*!
Running `gh`: no shell, a fresh minimal environment, stdin from
`/dev/null`, both output streams capped, a time limit per call, and the
request's [`CancelFlag`] checked while it runs (a cancelled call's child
is killed). A failed call is classified into a code from `gh`'s JSON
errors or its stderr; the words themselves go only to the host log,
redacted.
*/
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::GithubConfig;
use crate::protocol::message::ErrorCode;
use crate::server::concurrent::CancelFlag;

/// Largest stdout or stderr kept from one call (8 MiB); more kills it.
pub const MAX_OUTPUT: usize = 8 * 1024 * 1024;
/// Variables copied into `gh`'s environment when the daemon has them.
pub const PASSED_ENV: [&str; 11] = [
    "PATH",
    "HOME",
    "GH_CONFIG_DIR",
    "XDG_CONFIG_HOME",
    "GH_HOST",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];
/// Settings given to every `git` that `gh` runs (`GIT_CONFIG_COUNT`
/// overrides the repository's own configuration): a `.git/config` the
/// sandbox wrote cannot make the host run a program.
pub const GIT_OVERRIDES: [(&str, &str); 7] = [
    ("GIT_CONFIG_COUNT", "3"),
    ("GIT_CONFIG_KEY_0", "core.fsmonitor"),
    ("GIT_CONFIG_VALUE_0", "false"),
    ("GIT_CONFIG_KEY_1", "core.hooksPath"),
    ("GIT_CONFIG_VALUE_1", "/dev/null"),
    ("GIT_CONFIG_KEY_2", "protocol.ext.allow"),
    ("GIT_CONFIG_VALUE_2", "never"),
];
/// How often a running call checks for cancellation and its deadline.
const TICK: Duration = Duration::from_millis(20);

/// `gh argv` with the broker's environment: built from scratch, only
/// [`PASSED_ENV`] copied, prompts and update notices off; stdin from
/// `/dev/null`, stdout and stderr piped.
fn gh_command(argv: &[String]) -> Command {
    let mut cmd = Command::new("gh");
    cmd.args(argv).env_clear();
    for name in PASSED_ENV {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.envs([
        ("GH_PROMPT_DISABLED", "1"),
        ("GH_NO_UPDATE_NOTIFIER", "1"),
        ("GH_NO_EXTENSION_UPDATE_NOTIFIER", "1"),
    ]);
    // gh runs git in the project checkout, whose .git/config a sandbox can
    // write: no filesystem monitor, hooks or ext:: transport from there.
    cmd.envs(GIT_OVERRIDES.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// What `llxprt-cred doctor` reports about the host's `gh`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostGh {
    /// Not on `PATH`.
    Missing,
    /// Installed (its version line) but not logged in.
    LoggedOut(String),
    /// Installed (its version line) and logged in.
    Ready(String),
}

/// Runs `gh --version` and `gh auth status` as the broker would.
pub fn host_gh() -> HostGh {
    let run = |args: &[&str]| {
        let argv: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        gh_command(&argv).output()
    };
    let version = match run(&["--version"]) {
        Ok(o) if o.status.success() => {
            String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("gh").trim().to_owned()
        }
        _ => return HostGh::Missing,
    };
    match run(&["auth", "status"]) {
        Ok(o) if o.status.success() => HostGh::Ready(version),
        _ => HostGh::LoggedOut(version),
    }
}

/// Why a call failed: the code only (the details were logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GhError {
    /// The wire code.
    pub code: ErrorCode,
}

fn fail(code: ErrorCode) -> GhError {
    GhError { code }
}

/// `text` with GitHub token shapes (`ghp_…`, `gho_…`, `ghu_…`, `ghs_…`,
/// `ghr_…`, `ghx_…` with 20 or more characters after the prefix, and
/// `github_pat_…`) replaced by `[REDACTED]`.
pub fn redact(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let token_len = |prefix_len: usize, extra: &[u8]| {
            let n = rest[prefix_len..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || extra.contains(b))
                .count();
            (n >= 20).then_some(prefix_len + n)
        };
        let found = if rest.starts_with(b"github_pat_") {
            token_len(11, b"_")
        } else if rest.len() > 4 && rest.starts_with(b"gh") && b"pousrx".contains(&rest[2]) && rest[3] == b'_'
        {
            token_len(4, b"")
        } else {
            None
        };
        match found {
            Some(len) => {
                out.push_str("[REDACTED]");
                i += len;
            }
            None => {
                let ch = text[i..].chars().next().expect("a char at a char boundary");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// The code of a failed call from `gh`'s words: its JSON `errors` (GraphQL),
/// else its stderr, as llxprt-code's broker sorts them.
pub fn classify(stdout: &str, stderr: &str) -> ErrorCode {
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(stdout) {
        if let Some(code) = graphql_error(&o) {
            return code;
        }
    }
    let e = stderr.to_ascii_lowercase();
    if e.contains("rate limit") {
        ErrorCode::RateLimited
    } else if e.contains("could not resolve to a") || e.contains("not found") {
        ErrorCode::NotFound
    } else if e.contains("gh auth login") || e.contains("authentication") {
        ErrorCode::HostAuthRequired
    } else if e.contains("http 403") {
        ErrorCode::PermissionDenied
    } else {
        ErrorCode::GithubError
    }
}

/// The code of a GraphQL answer's first error, when it has any.
fn graphql_error(o: &serde_json::Map<String, Value>) -> Option<ErrorCode> {
    let first = o.get("errors")?.as_array()?.first()?;
    Some(match first.get("type").and_then(Value::as_str) {
        Some("NOT_FOUND") => ErrorCode::NotFound,
        Some("FORBIDDEN") => ErrorCode::PermissionDenied,
        Some("RATE_LIMITED") => ErrorCode::RateLimited,
        Some("UNAUTHORIZED") => ErrorCode::HostAuthRequired,
        _ => ErrorCode::GithubError,
    })
}

/// One call's result.
struct Output {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

/// The `gh` runner of one request.
pub struct Gh<'a> {
    config: &'a GithubConfig,
    cancel: &'a CancelFlag,
}

impl<'a> Gh<'a> {
    /// A runner for one request.
    pub fn new(config: &'a GithubConfig, cancel: &'a CancelFlag) -> Gh<'a> {
        Gh { config, cancel }
    }

    /// Whether the request can be cancelled (version 2).
    pub fn cancellable(&self) -> bool {
        self.cancel.is_cancellable()
    }

    /// Whether the request was cancelled.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Sleeps up to `d`; whether the request was cancelled meanwhile.
    pub fn nap(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if self.cancelled() {
                return true;
            }
            std::thread::sleep(TICK.min(deadline.saturating_duration_since(Instant::now())));
        }
        self.cancelled()
    }

    fn command(&self, argv: &[String]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = gh_command(argv);
        // its own process group, so a cancel reaches the git it may run too
        cmd.current_dir(&self.config.cwd).process_group(0);
        cmd
    }

    /// Runs `gh argv` to its end, the deadline or a cancel.
    fn call(&self, argv: &[String]) -> Result<Output, GhError> {
        if self.cancelled() {
            return Err(fail(ErrorCode::Cancelled));
        }
        let sub = argv.iter().take(2).map(String::as_str).collect::<Vec<_>>().join(" ");
        let mut child = self.command(argv).spawn().map_err(|e| {
            crate::log_warn!("github: cannot run gh: {e}");
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    fail(ErrorCode::HostGhUnavailable)
                }
                _ => fail(ErrorCode::GithubError),
            }
        })?;
        let reader = |stream: Option<Box<dyn Read + Send>>| {
            std::thread::Builder::new().name("gh-output".into()).spawn(move || {
                let mut buf = Vec::new();
                if let Some(s) = stream {
                    let _ = s.take(MAX_OUTPUT as u64 + 1).read_to_end(&mut buf);
                }
                buf
            })
        };
        let readers =
            reader(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>)).and_then(|out| {
                reader(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>)).map(|err| (out, err))
            });
        let (out, err) = match readers {
            Ok(r) => r,
            Err(e) => {
                crate::log_warn!("github: no thread to read gh {sub}: {e}");
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(ErrorCode::GithubError));
            }
        };
        let deadline = Instant::now()
            .checked_add(self.config.call_timeout)
            .unwrap_or_else(|| Instant::now() + super::CALL_TIMEOUT);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => {
                    crate::log_warn!("github: waiting for gh {sub}: {e}");
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(ErrorCode::GithubError));
                }
            }
            let (cancelled, late) = (self.cancelled(), Instant::now() >= deadline);
            if cancelled || late {
                let group = crate::sys::ProcessId(-(child.id() as i32));
                let _ = crate::sys::send_signal(group, libc::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                let _ = (out.join(), err.join());
                if cancelled {
                    crate::log_info!("github: gh {sub} killed: the request was cancelled");
                    return Err(fail(ErrorCode::Cancelled));
                }
                crate::log_warn!("github: gh {sub} killed after {} s", self.config.call_timeout.as_secs());
                return Err(fail(ErrorCode::GithubError));
            }
            std::thread::sleep(TICK);
        };
        let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
        if stdout.len() > MAX_OUTPUT || stderr.len() > MAX_OUTPUT {
            crate::log_warn!("github: gh {sub} wrote more than 8 MiB");
            return Err(fail(ErrorCode::GithubError));
        }
        Ok(Output {
            success: status.success(),
            status: status.to_string(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    fn failed(&self, argv: &[String], o: &Output) -> GhError {
        let code = classify(&o.stdout, &o.stderr);
        let sub = argv.iter().take(2).map(String::as_str).collect::<Vec<_>>().join(" ");
        let words: String = o.stderr.trim().chars().take(500).collect();
        crate::log_info!("github: gh {sub} failed ({}, {}): {}", o.status, code.as_str(), redact(&words));
        fail(code)
    }

    /// Plain text output; a non-zero exit is a failure.
    pub fn text(&self, argv: &[String]) -> Result<String, GhError> {
        let o = self.call(argv)?;
        if !o.success {
            return Err(self.failed(argv, &o));
        }
        Ok(o.stdout)
    }

    /// JSON output; a non-zero exit is a failure, and so is output that
    /// is not JSON.
    pub fn json(&self, argv: &[String]) -> Result<Value, GhError> {
        let o = self.call(argv)?;
        if !o.success {
            return Err(self.failed(argv, &o));
        }
        parse(&o.stdout)
    }

    /// JSON output; a non-zero exit is fine when the output parses
    /// (`gh pr checks` exits 8 while checks are pending, 1 when some failed).
    pub fn json_tolerant(&self, argv: &[String]) -> Result<Value, GhError> {
        let o = self.call(argv)?;
        match serde_json::from_str::<Value>(&o.stdout) {
            Ok(v) => Ok(v),
            Err(_) if !o.success => Err(self.failed(argv, &o)),
            Err(_) => parse(&o.stdout),
        }
    }

    /// A GraphQL call (`gh api graphql`): JSON whose `errors`, if any, make
    /// it a failure even next to partial `data`.
    pub fn graphql(&self, argv: &[String]) -> Result<Value, GhError> {
        let o = self.call(argv)?;
        if !o.success {
            return Err(self.failed(argv, &o));
        }
        let v = parse(&o.stdout)?;
        if let Some(code) = v.as_object().and_then(graphql_error) {
            crate::log_info!("github: GraphQL error ({})", code.as_str());
            return Err(fail(code));
        }
        Ok(v)
    }
}

fn parse(stdout: &str) -> Result<Value, GhError> {
    serde_json::from_str(stdout).map_err(|_| {
        crate::log_info!("github: gh produced non-JSON output");
        fail(ErrorCode::GithubError)
    })
}

/// A body passed to `gh --body-file`: `body.md` (0600) in a fresh 0700
/// directory under the daemon's private directory, both removed on drop.
pub struct BodyFile {
    dir: PathBuf,
    file: PathBuf,
}

impl BodyFile {
    /// Writes `text` under `root`.
    pub fn write(root: Option<&Path>, text: &str) -> std::io::Result<BodyFile> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let root = root.ok_or_else(|| std::io::Error::other("no private directory for body files"))?;
        let dir = root.join(format!("gh-body-{}", crate::random::hex(8)?));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let file = dir.join("body.md");
        let body = BodyFile { dir, file };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&body.file)?;
        f.write_all(text.as_bytes())?;
        Ok(body)
    }

    /// The file's path, as `gh` gets it.
    pub fn path_str(&self) -> &str {
        self.file.to_str().unwrap_or_default()
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shapes_are_redacted() {
        let t =
            "ghp_0123456789abcdefghijKLMN and gho_short and github_pat_11AAAA_bbbbbbbbbbbbbbbbbbbbbbbb end é";
        assert_eq!(redact(t), "[REDACTED] and gho_short and [REDACTED] end é");
        assert_eq!(redact("ghx_abcdefghijklmnopqrstu!"), "[REDACTED]!");
        assert_eq!(redact("no tokens"), "no tokens");
    }

    #[test]
    fn failures_are_classified_as_llxprt_codes_broker_does() {
        assert_eq!(classify("", "HTTP 403: API rate limit exceeded"), ErrorCode::RateLimited);
        assert_eq!(
            classify("", "GraphQL: Could not resolve to an Issue with the number of 9."),
            ErrorCode::NotFound
        );
        assert_eq!(classify("", "HTTP 404: Not Found (https://api.github.com/x)"), ErrorCode::NotFound);
        assert_eq!(
            classify("", "To get started with GitHub CLI, please run:  gh auth login"),
            ErrorCode::HostAuthRequired
        );
        assert_eq!(
            classify("", "HTTP 403: Resource not accessible by integration"),
            ErrorCode::PermissionDenied
        );
        assert_eq!(classify("", "HTTP 401: Bad credentials"), ErrorCode::GithubError);
        assert_eq!(
            classify(r#"{"errors":[{"type":"FORBIDDEN","message":"x"}]}"#, ""),
            ErrorCode::PermissionDenied
        );
    }
}
