/*!
Sending a request upstream with the real credential: once, and once more
after one refresh when the provider answers 401 to an OAuth token before
anything reached the client.
*/
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::credential::{NoCredential, real_credential, refresh_failure, token_headers, upstream_headers};
use super::errors::{error_response, reauth, refuse};
use super::stream::stream_back;
use super::watch::ClientWatch;
use super::{Audit, InjectConfig};
use crate::inject::request::{self, Head};
use crate::inject::routes::Route;
use crate::inject::sentinel::Credential;
use crate::inject::upstream;
use crate::server::Shared;

/// Sends the request upstream (once more after a 401 on an OAuth token)
/// and streams the answer back. Returns whether the connection goes on.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    shared: &Shared,
    inject: &InjectConfig,
    route: &'static Route,
    head: &Head,
    body: &[u8],
    credential: Credential,
    writer: &mut UnixStream,
    audit: &mut Audit,
) -> bool {
    let upstream_error = |writer: &mut UnixStream, audit: &mut Audit, status: u16, text: &str| {
        audit.status = status;
        audit.outcome = "upstream-error".into();
        let _ = writer.write_all(&error_response(Some(route), status, text, head.close));
        !head.close
    };
    let mut real = match real_credential(shared, route, &credential) {
        Ok(r) => r,
        Err(NoCredential::Gone) => {
            return refuse(writer, Some(route), request::NO_SENTINEL, audit, head.close);
        }
        Err(NoCredential::Reauth) => return reauth(writer, route, &credential, audit, head.close),
        Err(NoCredential::Failed) => {
            return upstream_error(
                writer,
                audit,
                502,
                "llxprt-credd: the credential could not be read on the host",
            );
        }
    };
    let origin = inject.origin(route);
    let target = match &head.query {
        Some(q) => format!("{}?{q}", head.path),
        None => head.path.clone(),
    };
    let started = Instant::now();
    let mut retried = false;
    // From the moment the provider is connected, a sandbox that goes away
    // shuts the request down (a non-streaming answer can take minutes).
    let mut watch: Option<ClientWatch> = None;
    let exchange = loop {
        let headers = upstream_headers(head, route, &real);
        let client: &UnixStream = writer;
        let sent = upstream::send(&origin, &head.method, &target, &headers, body, &mut |socket| {
            watch = Some(ClientWatch::start(client, socket));
        });
        let exchange = match sent {
            Ok(e) => e,
            Err(_) if watch.take().is_some_and(ClientWatch::stop) => {
                audit.outcome = "aborted-by-client".into();
                return false;
            }
            Err(e) => {
                crate::log_warn!("proxy {}: upstream failed: {e}", route.host);
                let status = if matches!(e, upstream::UpstreamError::Timeout) { 504 } else { 502 };
                return upstream_error(
                    writer,
                    audit,
                    status,
                    "llxprt-credd: the provider could not be reached",
                );
            }
        };
        if exchange.status != 401 || retried {
            break exchange;
        }
        let (Credential::Token { provider, bucket }, Some(used)) = (&credential, real.access_token.as_ref())
        else {
            break exchange;
        };
        // One refresh (shared with every request that saw this token
        // rejected), one retry; the same token again means pass the 401 on.
        match shared.oauth.refresh_rejected(provider, Some(bucket), used) {
            Ok(token) if token.access_token() != used.as_str() => {
                if let Some(w) = watch.take() {
                    w.stop();
                }
                exchange.abort();
                real = token_headers(route, &token);
                retried = true;
                audit.outcome = "refreshed-and-retried".into();
            }
            Ok(_) => break exchange,
            Err(e) => match refresh_failure(e) {
                NoCredential::Reauth => {
                    exchange.abort();
                    return reauth(writer, route, &credential, audit, head.close);
                }
                _ => break exchange,
            },
        }
    };
    audit.ttfb = Some(started.elapsed());
    let watch = watch.unwrap_or_else(|| ClientWatch::start(writer, &exchange.socket));
    stream_back(exchange, writer, audit, head.close, crate::inject::scrub::Scrubber::new(&real.secret), watch)
}
