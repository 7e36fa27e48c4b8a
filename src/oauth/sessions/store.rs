/*!
How a finished login ends up on the host: the authorization code is
exchanged ([`CodeGrant`]) and the new token stored under the refresh lock,
unless the session was cancelled meanwhile or (for a login from the
sandbox) the bucket holds another account's login.
*/
#![forbid(unsafe_code)]

use super::LoginOrigin;
use super::control::Control;
use super::table::Inner;
use crate::oauth::login::{self, FlowError};
use crate::oauth::provider::Provider;
use crate::protocol::message::FlowFailure;
use crate::store::Change;
use crate::token::OAuthToken;

/// What an authorization code is exchanged with.
pub(super) struct CodeGrant<'a> {
    pub(super) code: &'a str,
    pub(super) verifier: &'a str,
    pub(super) redirect_uri: &'a str,
    pub(super) state: Option<&'a str>,
}

impl Inner {
    /// Stores a new login's token under the refresh lock. A login replaces
    /// the stored record (a new login is not merged into the old one). A
    /// login from the sandbox ([`LoginOrigin::Sandbox`]) is stored only
    /// into an empty bucket or over a login of the same account (SPEC
    /// §11.3); otherwise `ACCOUNT_MISMATCH` and nothing is stored. A
    /// session cancelled meanwhile (by `oauth_cancel`, expiry, shutdown or a
    /// narrowed scope) stores nothing.
    pub(super) fn store(
        &self,
        provider: &str,
        bucket: Option<&str>,
        token: &OAuthToken,
        control: &Control,
    ) -> Result<OAuthToken, FlowError> {
        let target = format!("{provider}:{}", bucket.unwrap_or(crate::store::names::DEFAULT_BUCKET));
        let failed = |e: crate::error::Error| {
            crate::log_error!("oauth {target}: cannot store the new token: {e}");
            FlowError::new(FlowFailure::StoreFailed, "the store failed (logged above)")
        };
        let wait = crate::store::LockWait::up_to(self.timing.lock_wait);
        let stored = crate::store::update_token(self.tokens.as_ref(), provider, bucket, &wait, |stored| {
            if control.cancelled() {
                crate::log_info!("oauth {target}: the login was cancelled; nothing stored");
                let e = FlowError::new(FlowFailure::Cancelled, "cancelled before the token was stored");
                return (Change::Keep, Err(e));
            }
            let other_account = match self.origin {
                LoginOrigin::Sandbox => match stored.get() {
                    Ok(stored) => stored.is_some_and(|stored| !OAuthToken::same_account(&stored, token)),
                    Err(e) => return (Change::Keep, Err(failed(e))),
                },
                _ => false,
            };
            if other_account {
                crate::log_warn!(
                    "oauth {target}: a login from the sandbox would replace another account's login; \
                     nothing stored (switch accounts on the host: llxprt-cred login)"
                );
                let e = FlowError::new(FlowFailure::AccountMismatch, "the bucket holds another account");
                return (Change::Keep, Err(e));
            }
            (Change::Save(token.clone()), Ok(()))
        });
        match stored {
            Ok(Ok(())) => Ok(token.clone()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(failed(e.into_error())),
        }
    }

    /// Exchanges a code and stores the token; the flow outcome.
    pub(super) fn finish_code(
        &self,
        provider: &Provider,
        bucket: Option<&str>,
        grant: CodeGrant<'_>,
        control: &Control,
    ) -> Result<OAuthToken, FlowError> {
        let token = login::exchange_code(
            &self.http,
            provider,
            grant.code,
            grant.verifier,
            grant.redirect_uri,
            grant.state,
            self.timing.http_timeout,
        )?;
        self.store(&provider.name, bucket, &token, control)
    }
}
