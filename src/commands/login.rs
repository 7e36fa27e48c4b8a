/*!
`llxprt-cred login` and `logout`: through the daemon when one is named,
else on the host store (logins then run in this process, as the user on
the host, who may switch accounts). The login UI shows the URL to open and
the code to type, then reads the pasted code or waits with an indicator.
*/
#![forbid(unsafe_code)]

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;

use serde_json::Value;

use super::daemon_cmds::{daemon_client, daemon_named};
use super::out;
use crate::cli::EXIT_OK;
use crate::cli::cred::Args;
use crate::client::{LoginDriver, LoginPoll, LoginStart, ProxyOAuthAdapter, ProxyTokenStore};
use crate::error::{Error, Result};
use crate::oauth::{FlowType, LoginError, Logins, Owner};
use crate::store::lock::REFRESH_LOCK_WAIT;
use crate::store::names::{DEFAULT_BUCKET, check_bucket, check_provider};
use crate::store::{Change, HostStore, LockWait, TokenStore, resolve_backend, update_token};
use crate::token::now_unix_seconds;

/// Logins run in this process, on the host store.
struct HostLogins {
    logins: Logins,
}

fn host_error(e: LoginError) -> Error {
    let code = crate::server::wire::login_code(&e);
    Error::Remote { code: crate::error::RemoteCode::Known(code), message: e.to_string() }
}

impl LoginDriver for HostLogins {
    fn initiate(&self, provider: &str, bucket: Option<&str>, flow: Option<FlowType>) -> Result<LoginStart> {
        check_provider(provider)?;
        if let Some(b) = bucket {
            check_bucket(b)?;
        }
        let i = self.logins.initiate(Owner::local(), provider, bucket, flow).map_err(host_error)?;
        Ok(LoginStart::from(&i))
    }

    fn exchange(&self, session_id: &str, code: &str) -> Result<serde_json::Map<String, Value>> {
        let token = self.logins.exchange(Owner::local(), session_id, code).map_err(host_error)?;
        Ok(token.sanitize().into_map())
    }

    fn poll(&self, session_id: &str) -> Result<LoginPoll> {
        LoginPoll::from_host(self.logins.poll(Owner::local(), session_id).map_err(host_error)?)
    }

    fn cancel(&self, session_id: &str) -> Result<()> {
        self.logins.cancel(Owner::local(), session_id).map_err(host_error)
    }
}

/// `login`: through the daemon when one is named, else on the host.
pub(super) fn login(args: &Args, provider: &str, bucket: Option<&str>) -> Result<i32> {
    let target = format!("{provider}:{}", bucket.unwrap_or(DEFAULT_BUCKET));
    let token = if daemon_named(args) {
        let adapter = ProxyOAuthAdapter::new(Arc::new(daemon_client(args)?));
        run_login(&adapter, provider, bucket, args.flow)?
    } else {
        let host = HostStore::open(resolve_backend(args.store)?)?;
        let mut config = crate::oauth::OAuthConfig::load(None)?;
        config.login_origin = crate::oauth::LoginOrigin::Host;
        let driver = HostLogins { logins: config.logins(host.tokens.clone())? };
        run_login(&driver, provider, bucket, args.flow)?
    };
    let expiry = token.get("expiry").and_then(Value::as_f64).unwrap_or(0.0);
    let left = ((expiry - now_unix_seconds()) / 60.0).floor().max(0.0);
    out(format!("Logged in: {target} (access token valid for {left} min)"))?;
    Ok(EXIT_OK)
}

/// Shows what the user must do, then completes the login: reads the
/// pasted code (code-paste flow) or polls, with a waiting indicator on a
/// terminal.
fn run_login(
    driver: &dyn LoginDriver,
    provider: &str,
    bucket: Option<&str>,
    flow: Option<FlowType>,
) -> Result<serde_json::Map<String, Value>> {
    let start = driver.initiate(provider, bucket, flow)?;
    out("Open this URL in a browser and sign in:")?;
    out(format!("  {}", start.auth_url))?;
    if let Some(code) = &start.user_code {
        out(format!("and enter the code: {code}"))?;
    }
    if start.flow == FlowType::PkceRedirect {
        if crate::sys::stdin_is_tty() {
            eprint!("Paste the code shown after you sign in: ");
        } else {
            out("Paste the code shown after you sign in:")?;
        }
        let mut line = String::new();
        io::stdin().read_line(&mut line).map_err(|e| Error::io("reading the pasted code", e))?;
        return driver.exchange(&start.session_id, line.trim());
    }
    let _ = io::stdout().flush();
    let live = io::stderr().is_terminal();
    let frames = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    let result = driver.wait(&start, &mut |spent| {
        if live {
            tick += 1;
            eprint!(
                "\r{} waiting for the login to finish ({} s) ",
                frames[tick % frames.len()],
                spent.as_secs()
            );
        }
        true
    });
    if live {
        eprintln!();
    }
    result
}

/// `logout`: through the daemon when one is named (which removes under
/// the refresh lock), else on the host under the same lock.
pub(super) fn logout(args: &Args, provider: &str, bucket: Option<&str>) -> Result<i32> {
    let target = format!("{provider}:{}", bucket.unwrap_or(DEFAULT_BUCKET));
    if daemon_named(args) {
        ProxyTokenStore::new(Arc::new(daemon_client(args)?)).remove_token(provider, bucket)?;
    } else {
        let host = HostStore::open(resolve_backend(args.store)?)?;
        let wait = LockWait::up_to(REFRESH_LOCK_WAIT);
        update_token(host.tokens.as_ref(), provider, bucket, &wait, |_| (Change::Remove, ()))?;
    }
    out(format!("Logged out: {target}"))?;
    Ok(EXIT_OK)
}
