/*!
The `data` of every successful answer, typed, for both ends: the server
encodes an [`Answer`] ([`Answer::encode`]), the client library decodes the
`data` of the op it asked ([`Answer::decode`]). The shapes are the ones
llxprt-code's client and adapter read: lists wrapped in an object
(`{"providers":[...]}`), both spellings where its server and adapter differ
(`verification_url` and `verification_uri`; a completed poll's flat token
fields and `token`), `pollIntervalMs` beside `interval`.
*/
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::names::FlowType;

/// The data of a successful answer. Its `Debug` names the kind only: a
/// token, a key or a session id must not reach a log through it.
#[derive(Clone, PartialEq)]
pub enum Answer {
    /// `save_token`, `remove_token`, `oauth_cancel`: `{}`.
    Done,
    /// `get_token`, `refresh_token`, `oauth_exchange`: a sanitized token's
    /// fields, flat.
    Token(Map<String, Value>),
    /// `list_providers`: `{"providers":[...]}`.
    Providers(Vec<String>),
    /// `list_buckets`: `{"buckets":[...]}`.
    Buckets(Vec<String>),
    /// `list_api_keys`: `{"keys":[...]}`.
    Keys(Vec<String>),
    /// `get_bucket_stats`.
    Stats {
        /// The bucket.
        bucket: String,
        /// Requests counted.
        request_count: u64,
        /// Share of the requests.
        percentage: f64,
    },
    /// `get_api_key`: `{"key":...}`.
    Key(String),
    /// `has_api_key`: `{"exists":bool}`.
    Exists(bool),
    /// `cancel`: `{"cancelled":bool}`.
    Cancelled(bool),
    /// `oauth_initiate`.
    Initiated(Initiation),
    /// `oauth_poll`.
    Polled(PollState),
    /// `github`: the operation's shaped result.
    Github(Map<String, Value>),
}

/// A started login as the sandbox sees it (`Debug` leaves out the session id).
#[derive(Clone, PartialEq, Eq)]
pub struct Initiation {
    /// The session id.
    pub session_id: String,
    /// The flow.
    pub flow: FlowType,
    /// The URL the user opens.
    pub auth_url: String,
    /// How often to poll.
    pub poll_interval: Duration,
    /// Seconds until the session expires.
    pub expires_in: u64,
    /// Device flow: the code the user types.
    pub user_code: Option<String>,
    /// Device flow: the verification page.
    pub verification_uri: Option<String>,
    /// Device flow: the page with the code filled in.
    pub verification_uri_complete: Option<String>,
}

/// Where a polled login stands (`Debug` leaves out the token).
#[derive(Clone, PartialEq)]
pub enum PollState {
    /// Not yet; poll again after this.
    Pending(Duration),
    /// Logged in: the sanitized token's fields.
    Complete(Map<String, Value>),
    /// The flow ended without a token: its code and fixed text.
    Failed {
        /// `ACCESS_DENIED`, `EXPIRED_TOKEN`, ...
        code: String,
        /// The fixed text.
        message: String,
    },
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Token(t) | Answer::Github(t) => {
                write!(f, "Answer {{ fields: {:?}, values: <redacted> }}", t.keys().collect::<Vec<_>>())
            }
            Answer::Key(_) => f.write_str("Answer::Key(<redacted>)"),
            Answer::Initiated(i) => write!(f, "Answer::Initiated({i:?})"),
            Answer::Polled(p) => write!(f, "Answer::Polled({p:?})"),
            Answer::Done => f.write_str("Answer::Done"),
            Answer::Providers(l) => write!(f, "Answer::Providers({l:?})"),
            Answer::Buckets(l) => write!(f, "Answer::Buckets({l:?})"),
            Answer::Keys(l) => write!(f, "Answer::Keys({l:?})"),
            Answer::Stats { bucket, request_count, percentage } => {
                write!(f, "Answer::Stats({bucket}, {request_count}, {percentage})")
            }
            Answer::Exists(e) => write!(f, "Answer::Exists({e})"),
            Answer::Cancelled(c) => write!(f, "Answer::Cancelled({c})"),
        }
    }
}

impl std::fmt::Debug for Initiation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiation")
            .field("session_id", &"<redacted>")
            .field("flow", &self.flow)
            .field("user_code", &self.user_code)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PollState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollState::Pending(d) => write!(f, "Pending({d:?})"),
            PollState::Complete(_) => f.write_str("Complete(<redacted>)"),
            PollState::Failed { code, message } => write!(f, "Failed({code}: {message})"),
        }
    }
}

/// `data` that does not have the shape its op answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn strings(data: &Map<String, Value>, field: &str) -> Result<Vec<String>, Malformed> {
    let Some(Value::Array(items)) = data.get(field) else { return Err(Malformed("no list")) };
    items
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or(Malformed("a list entry is not a string")))
        .collect()
}

/// The first non-empty string among `names`.
fn text(data: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| data.get(*n).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Answer {
    /// The `data` object sent (consumes the answer: a token's fields move
    /// into it rather than being copied).
    pub fn encode(self) -> Map<String, Value> {
        match self {
            Answer::Done => Map::new(),
            Answer::Token(t) | Answer::Github(t) => t,
            Answer::Providers(l) => object(json!({ "providers": l })),
            Answer::Buckets(l) => object(json!({ "buckets": l })),
            Answer::Keys(l) => object(json!({ "keys": l })),
            Answer::Stats { bucket, request_count, percentage } => {
                object(json!({"bucket": bucket, "requestCount": request_count, "percentage": percentage}))
            }
            Answer::Key(k) => object(json!({ "key": k })),
            Answer::Exists(e) => object(json!({ "exists": e })),
            Answer::Cancelled(c) => object(json!({ "cancelled": c })),
            Answer::Initiated(i) => {
                let mut data = object(json!({
                    "session_id": i.session_id,
                    "flow_type": i.flow.as_str(),
                    "auth_url": i.auth_url,
                    "pollIntervalMs": i.poll_interval.as_millis() as u64,
                    "expires_in": i.expires_in,
                }));
                if i.flow == FlowType::DeviceCode {
                    data.insert("user_code".into(), json!(i.user_code));
                    data.insert("verification_url".into(), json!(i.verification_uri));
                    data.insert("verification_uri".into(), json!(i.verification_uri));
                    if let Some(c) = &i.verification_uri_complete {
                        data.insert("verification_uri_complete".into(), json!(c));
                    }
                }
                data
            }
            Answer::Polled(PollState::Pending(interval)) => object(json!({
                "status": "pending",
                "pollIntervalMs": interval.as_millis() as u64,
                "interval": interval.as_secs_f64().ceil().max(1.0) as u64,
            })),
            Answer::Polled(PollState::Complete(token)) => {
                let mut data = token.clone();
                data.insert("status".into(), json!("complete"));
                data.insert("token".into(), Value::Object(token));
                data
            }
            Answer::Polled(PollState::Failed { code, message }) => {
                object(json!({"status": "error", "code": code, "error": message}))
            }
        }
    }

    /// Reads the `data` of an answer to `op` (the wire name); lenient
    /// where llxprt-code's server and adapter differ.
    pub fn decode(op: &str, mut data: Map<String, Value>) -> Result<Answer, Malformed> {
        Ok(match op {
            "save_token" | "remove_token" | "oauth_cancel" => Answer::Done,
            "get_token" | "refresh_token" | "oauth_exchange" => Answer::Token(data),
            "github" => Answer::Github(data),
            "list_providers" => Answer::Providers(strings(&data, "providers")?),
            "list_buckets" => Answer::Buckets(strings(&data, "buckets")?),
            "list_api_keys" => Answer::Keys(strings(&data, "keys")?),
            "get_bucket_stats" => Answer::Stats {
                bucket: text(&data, &["bucket"]).unwrap_or_default(),
                request_count: data.get("requestCount").and_then(Value::as_u64).unwrap_or(0),
                percentage: data.get("percentage").and_then(Value::as_f64).unwrap_or(0.0),
            },
            "get_api_key" => match data.remove("key") {
                Some(Value::String(k)) => Answer::Key(k),
                _ => return Err(Malformed("no key")),
            },
            "has_api_key" => {
                Answer::Exists(data.get("exists").and_then(Value::as_bool).ok_or(Malformed("no exists"))?)
            }
            "cancel" => Answer::Cancelled(data.get("cancelled").and_then(Value::as_bool).unwrap_or(false)),
            "oauth_initiate" => {
                let session_id =
                    text(&data, &["session_id", "sessionId"]).ok_or(Malformed("no session_id"))?;
                let flow = text(&data, &["flow_type", "mode"])
                    .and_then(|f| FlowType::parse(&f))
                    .ok_or(Malformed("no known flow_type"))?;
                let auth_url = text(&data, &["auth_url", "verification_url", "verification_uri"])
                    .ok_or(Malformed("no URL to open"))?;
                let default = if flow == FlowType::BrowserRedirect { 2000 } else { 5000 };
                Answer::Initiated(Initiation {
                    session_id,
                    flow,
                    auth_url,
                    poll_interval: Duration::from_millis(
                        data.get("pollIntervalMs").and_then(Value::as_u64).unwrap_or(default),
                    ),
                    expires_in: data.get("expires_in").and_then(Value::as_u64).unwrap_or(0),
                    user_code: text(&data, &["user_code"]),
                    verification_uri: text(&data, &["verification_uri", "verification_url"]),
                    verification_uri_complete: text(&data, &["verification_uri_complete"]),
                })
            }
            "oauth_poll" => Answer::Polled(match data.get("status").and_then(Value::as_str) {
                Some("pending") => {
                    let ms = data.get("pollIntervalMs").and_then(Value::as_u64);
                    let secs = data.get("interval").and_then(Value::as_u64).map(|s| s * 1000);
                    PollState::Pending(Duration::from_millis(ms.or(secs).unwrap_or(2000)))
                }
                Some("complete") => PollState::Complete(match data.remove("token") {
                    Some(Value::Object(t)) => t,
                    _ => {
                        data.remove("status");
                        data
                    }
                }),
                Some("error") => PollState::Failed {
                    code: text(&data, &["code"]).unwrap_or_else(|| "UNKNOWN".into()),
                    message: text(&data, &["error"]).unwrap_or_default(),
                },
                _ => return Err(Malformed("no known status")),
            }),
            _ => return Err(Malformed("an unknown operation")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(op: &str, a: Answer, wire: &str) {
        let data = a.clone().encode();
        assert_eq!(Value::Object(data.clone()), serde_json::from_str::<Value>(wire).unwrap(), "{op} encodes");
        assert_eq!(Answer::decode(op, data).unwrap(), a, "{op} decodes");
    }

    #[test]
    fn fixed_vectors_of_every_answer() {
        round_trip("remove_token", Answer::Done, "{}");
        round_trip("list_providers", Answer::Providers(vec!["codex".into()]), r#"{"providers":["codex"]}"#);
        round_trip(
            "list_buckets",
            Answer::Buckets(vec!["default".into(), "work".into()]),
            r#"{"buckets":["default","work"]}"#,
        );
        round_trip("list_api_keys", Answer::Keys(vec![]), r#"{"keys":[]}"#);
        round_trip(
            "get_bucket_stats",
            Answer::Stats { bucket: "default".into(), request_count: 0, percentage: 0.0 },
            r#"{"bucket":"default","requestCount":0,"percentage":0.0}"#,
        );
        round_trip("get_api_key", Answer::Key("sk-x".into()), r#"{"key":"sk-x"}"#);
        round_trip("has_api_key", Answer::Exists(true), r#"{"exists":true}"#);
        round_trip("cancel", Answer::Cancelled(false), r#"{"cancelled":false}"#);
        let token = object(json!({"access_token":"at","expiry":1.0,"token_type":"Bearer"}));
        round_trip(
            "get_token",
            Answer::Token(token.clone()),
            r#"{"access_token":"at","expiry":1.0,"token_type":"Bearer"}"#,
        );
        round_trip(
            "oauth_initiate",
            Answer::Initiated(Initiation {
                session_id: "s".into(),
                flow: FlowType::DeviceCode,
                auth_url: "https://v".into(),
                poll_interval: Duration::from_millis(5000),
                expires_in: 900,
                user_code: Some("AB-12".into()),
                verification_uri: Some("https://v".into()),
                verification_uri_complete: None,
            }),
            r#"{"session_id":"s","flow_type":"device_code","auth_url":"https://v","pollIntervalMs":5000,"expires_in":900,
               "user_code":"AB-12","verification_url":"https://v","verification_uri":"https://v"}"#,
        );
        round_trip(
            "oauth_poll",
            Answer::Polled(PollState::Pending(Duration::from_millis(1500))),
            r#"{"status":"pending","pollIntervalMs":1500,"interval":2}"#,
        );
        round_trip(
            "oauth_poll",
            Answer::Polled(PollState::Complete(token)),
            r#"{"status":"complete","access_token":"at","expiry":1.0,"token_type":"Bearer",
               "token":{"access_token":"at","expiry":1.0,"token_type":"Bearer"}}"#,
        );
        round_trip(
            "oauth_poll",
            Answer::Polled(PollState::Failed {
                code: "ACCESS_DENIED".into(),
                message: "The login was denied".into(),
            }),
            r#"{"status":"error","code":"ACCESS_DENIED","error":"The login was denied"}"#,
        );
    }

    #[test]
    fn llxprt_codes_other_spellings_are_read() {
        let a = Answer::decode(
            "oauth_initiate",
            object(json!({"sessionId":"s","mode":"pkce","verification_url":"https://u"})),
        )
        .unwrap();
        let Answer::Initiated(i) = a else { panic!() };
        assert_eq!(
            (i.session_id.as_str(), i.flow, i.auth_url.as_str()),
            ("s", FlowType::PkceRedirect, "https://u")
        );
        let flat =
            Answer::decode("oauth_poll", object(json!({"status":"complete","access_token":"at"}))).unwrap();
        assert_eq!(flat, Answer::Polled(PollState::Complete(object(json!({"access_token":"at"})))));
        assert_eq!(
            Answer::decode("list_providers", object(json!({"providers":"x"}))),
            Err(Malformed("no list"))
        );
        assert_eq!(Answer::decode("get_api_key", Map::new()), Err(Malformed("no key")));
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let token = object(json!({"access_token":"at-SECRET"}));
        let shown = format!(
            "{:?} {:?} {:?}",
            Answer::Token(token.clone()),
            Answer::Key("sk-SECRET".into()),
            Answer::Polled(PollState::Complete(token))
        );
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}
