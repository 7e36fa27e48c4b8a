/*!
The device-code login's background thread: polls the provider at the
interval it asked for (longer after each `slow_down`), until the user
approves or denies, the code or the session expires, too many polls in a
row fail, or the session is cancelled; then stores the token.
*/
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use super::MAX_TRANSIENT_POLL_FAILURES;
use super::control::{Control, Outcome};
use super::store::CodeGrant;
use super::table::Inner;
use crate::oauth::login::{self, DevicePoll, DeviceStart, FlowError};
use crate::oauth::provider::Provider;
use crate::protocol::message::FlowFailure;

impl Inner {
    /// The device-code thread: polls until an outcome, expiry or cancel.
    pub(super) fn run_device(
        &self,
        provider: Provider,
        bucket: Option<String>,
        start: DeviceStart,
        control: Arc<Control>,
        tag: String,
    ) {
        let Some(device) = provider.login.device.clone() else { return };
        let deadline = Instant::now() + start.expires_in.min(self.ttl);
        let mut interval = start.interval;
        let mut failures = 0u32;
        let outcome = loop {
            if control.nap(self.timing.scaled(interval)) {
                break None;
            }
            if Instant::now() >= deadline {
                break Some(Outcome::Failed(FlowError::new(
                    FlowFailure::ExpiredToken,
                    "the session's deadline passed while polling",
                )));
            }
            match login::device_poll(&self.http, &provider, &device, &start, self.timing.http_timeout) {
                DevicePoll::Pending => failures = 0,
                DevicePoll::SlowDown => {
                    interval += login::SLOW_DOWN_STEP;
                    control.set_interval(self.client_interval(interval));
                    crate::log_debug!("oauth {tag}: slow_down, polling every {} s now", interval.as_secs());
                }
                DevicePoll::Denied => {
                    break Some(Outcome::Failed(FlowError::new(
                        FlowFailure::AccessDenied,
                        "the provider answered access_denied",
                    )));
                }
                DevicePoll::Expired => {
                    break Some(Outcome::Failed(FlowError::new(
                        FlowFailure::ExpiredToken,
                        "the provider answered expired_token",
                    )));
                }
                DevicePoll::Transient(e) => {
                    failures += 1;
                    crate::log_info!("oauth {tag}: poll failed ({e}), {failures} in a row");
                    if failures >= MAX_TRANSIENT_POLL_FAILURES {
                        break Some(Outcome::Failed(FlowError::new(
                            FlowFailure::PollFailed,
                            format!("{failures} polls in a row failed, the last: {e}"),
                        )));
                    }
                }
                DevicePoll::Failed(e) => break Some(Outcome::Failed(e)),
                DevicePoll::Token(token) => {
                    if control.cancelled() {
                        break None;
                    }
                    break Some(match self.store(&provider.name, bucket.as_deref(), &token, &control) {
                        Ok(t) => Outcome::Complete(t),
                        Err(e) => Outcome::Failed(e),
                    });
                }
                DevicePoll::Approved { code, verifier } => {
                    if control.cancelled() {
                        break None;
                    }
                    let redirect = device.exchange_redirect_uri.as_deref().unwrap_or_default();
                    break Some(
                        match self.finish_code(
                            &provider,
                            bucket.as_deref(),
                            CodeGrant {
                                code: code.expose(),
                                verifier: verifier.expose(),
                                redirect_uri: redirect,
                                state: None,
                            },
                            &control,
                        ) {
                            Ok(t) => Outcome::Complete(t),
                            Err(e) => Outcome::Failed(e),
                        },
                    );
                }
            }
        };
        self.report(&tag, outcome, &control);
    }
}
