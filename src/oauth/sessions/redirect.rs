/*!
The browser-redirect login's background thread: the loopback listener
waits for the browser's callback, reads every connection without blocking
(each with its own deadline), refuses what is not this login's callback,
and on the code exchanges it, stores the token and tells the browser how
it went.
*/
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::REDIRECT_TIMEOUT;
use super::control::{Control, Outcome};
use super::store::CodeGrant;
use super::table::Inner;
use crate::oauth::login::{self, Callback, CallbackConn, CallbackRead, FlowError};
use crate::oauth::provider::Provider;
use crate::protocol::message::FlowFailure;
use crate::secret::SecretString;

/// How often the loopback listener checks for cancellation and reads the
/// browser connections it holds.
const LISTENER_NAP: Duration = Duration::from_millis(20);
/// Connections one redirect listener reads at once; a new one beyond this
/// drops the oldest.
const MAX_CALLBACK_CONNECTIONS: usize = 16;
/// A browser connection must send its whole request within this.
const CALLBACK_DEADLINE: Duration = Duration::from_secs(5);

impl Inner {
    /// The browser-redirect thread: waits for the callback until an
    /// outcome, the timeout or cancel. It reads every browser connection
    /// without blocking, each with its own deadline, so a connection that
    /// trickles bytes holds up nothing; the listener itself lives in the
    /// session's [`Control`], where ending the session closes it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_listener(
        &self,
        provider: Provider,
        bucket: Option<String>,
        state: SecretString,
        verifier: SecretString,
        redirect_uri: String,
        control: Arc<Control>,
        tag: String,
    ) {
        let deadline = Instant::now() + self.timing.scaled(REDIRECT_TIMEOUT).min(self.ttl);
        let path = provider.login.redirect_path.clone();
        let mut conns: Vec<CallbackConn> = Vec::new();
        let outcome = 'serve: loop {
            if control.cancelled() {
                break None;
            }
            let now = Instant::now();
            if now >= deadline {
                break Some(Outcome::Failed(FlowError::new(
                    FlowFailure::CallbackTimeout,
                    "no callback before the deadline",
                )));
            }
            let accepted = match control.listener().as_ref() {
                None => break None,
                Some(l) => l.accept_ready(MAX_CALLBACK_CONNECTIONS),
            };
            match accepted {
                Ok(streams) => {
                    for stream in streams {
                        if conns.len() >= MAX_CALLBACK_CONNECTIONS {
                            crate::log_info!(
                                "oauth {tag}: too many browser connections; the oldest is dropped"
                            );
                            conns.remove(0);
                        }
                        match CallbackConn::new(stream, now + CALLBACK_DEADLINE) {
                            Ok(c) => conns.push(c),
                            Err(e) => crate::log_warn!("oauth {tag}: a browser connection failed: {e}"),
                        }
                    }
                }
                Err(e) => crate::log_warn!("oauth {tag}: accept failed: {e}"),
            }
            let mut i = 0;
            while i < conns.len() {
                match conns[i].read(now) {
                    CallbackRead::Waiting => i += 1,
                    CallbackRead::Dropped => {
                        conns.swap_remove(i);
                    }
                    CallbackRead::Complete => {
                        let (mut stream, callback) = conns.swap_remove(i).finish(&path, state.expose());
                        match callback {
                            Callback::Ignored => crate::log_info!(
                                "oauth {tag}: a request that is not this login's callback was refused"
                            ),
                            Callback::Denied(code) => {
                                login::respond(&mut stream, 200, "Login cancelled. You can close this tab.");
                                break 'serve Some(Outcome::Failed(FlowError::new(
                                    FlowFailure::AccessDenied,
                                    format!("the callback carried error={code}"),
                                )));
                            }
                            Callback::Code(code) => {
                                break 'serve self.finish_browser(
                                    &provider,
                                    bucket.as_deref(),
                                    &mut stream,
                                    code,
                                    &verifier,
                                    &redirect_uri,
                                    &control,
                                );
                            }
                        }
                    }
                }
            }
            if control.nap(LISTENER_NAP) {
                break None;
            }
        };
        drop(conns);
        control.close_listener();
        self.report(&tag, outcome, &control);
    }

    /// The browser came back with a code: the listener closes, the code is
    /// exchanged and the token stored, and the browser is told how it went.
    #[allow(clippy::too_many_arguments)]
    fn finish_browser(
        &self,
        provider: &Provider,
        bucket: Option<&str>,
        stream: &mut std::net::TcpStream,
        code: SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
        control: &Control,
    ) -> Option<Outcome> {
        if control.cancelled() {
            login::respond(stream, 400, "This login was cancelled.");
            return None;
        }
        control.close_listener();
        let result = self.finish_code(
            provider,
            bucket,
            CodeGrant { code: code.expose(), verifier: verifier.expose(), redirect_uri, state: None },
            control,
        );
        let page = if result.is_ok() {
            (200, "Login complete. You can close this tab and return to llxprt.")
        } else {
            (400, "Login failed. Return to llxprt for details.")
        };
        login::respond(stream, page.0, page.1);
        Some(match result {
            Ok(t) => Outcome::Complete(t),
            Err(e) => Outcome::Failed(e),
        })
    }
}
