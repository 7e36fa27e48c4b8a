/*!
The proxy's own answers: refusals and upstream failures shaped like the
route's provider's errors, the 401 that asks for a login on the host, and
the reason phrases of status lines.
*/
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::net::UnixStream;

use super::Audit;
use crate::inject::request::Refusal;
use crate::inject::routes::{Api, Route};
use crate::inject::sentinel::Credential;

/// Answers a refusal in the route's error shape. Returns whether the
/// connection goes on.
pub(super) fn refuse(
    writer: &mut UnixStream,
    route: Option<&Route>,
    refusal: Refusal,
    audit: &mut Audit,
    close: bool,
) -> bool {
    let close = close || refusal.close;
    audit.status = refusal.status;
    audit.outcome = format!("denied:{}", refusal.rule);
    let message = format!("llxprt-credd: {}", refusal.message);
    let _ = writer.write_all(&error_response(route, refusal.status, &message, close));
    !close
}

pub(super) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Overloaded",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// A complete error answer shaped like the provider's own errors.
pub(super) fn error_response(route: Option<&Route>, status: u16, message: &str, close: bool) -> Vec<u8> {
    let body = match route.map(|r| r.api) {
        Some(Api::Anthropic) => {
            let kind = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                500.. => "api_error",
                _ => "invalid_request_error",
            };
            serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Some(Api::Gemini) => {
            let kind = match status {
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                501 => "UNIMPLEMENTED",
                502 | 504 => "UNAVAILABLE",
                _ => "INVALID_ARGUMENT",
            };
            serde_json::json!({"error": {"code": status, "message": message, "status": kind}})
        }
        _ => {
            let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
            serde_json::json!({"error": {"message": message, "type": kind, "code": null}})
        }
    }
    .to_string();
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

/// The provider-shaped 401 for a login that is gone: log in on the host.
pub(super) fn reauth(
    writer: &mut UnixStream,
    route: &Route,
    credential: &Credential,
    audit: &mut Audit,
    close: bool,
) -> bool {
    let provider = match credential {
        Credential::Token { provider, .. } => provider.as_str(),
        Credential::Key { .. } => "-",
    };
    audit.status = 401;
    audit.outcome = "reauth-required".into();
    let message = format!(
        "llxprt-credd: the {} login needs renewing: log in again on the host (llxprt-cred login {})",
        printable_provider(provider),
        printable_provider(provider)
    );
    let _ = writer.write_all(&error_response(Some(route), 401, &message, close));
    !close
}

fn printable_provider(p: &str) -> &str {
    if crate::store::names::is_valid_provider_name(p) { p } else { "?" }
}
