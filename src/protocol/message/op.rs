/*!
The operations a request can ask for, with their validated arguments, the
permission class of each, and the payload a client sends for one.
*/
#![forbid(unsafe_code)]

use serde_json::{Map, Value, json};

use super::FlowType;
use super::to_bytes;

/// A validated request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The client's id, echoed in the response.
    pub id: String,
    /// What is asked.
    pub op: Op,
}

/// The operations, with their validated arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `get_token`
    GetToken { provider: String, bucket: Option<String> },
    /// `save_token`
    SaveToken { provider: String, bucket: Option<String>, token: Map<String, Value> },
    /// `remove_token`
    RemoveToken { provider: String, bucket: Option<String> },
    /// `list_providers`
    ListProviders,
    /// `list_buckets`
    ListBuckets { provider: String },
    /// `get_bucket_stats`
    GetBucketStats { provider: String, bucket: Option<String> },
    /// `get_api_key`
    GetApiKey { name: String },
    /// `list_api_keys`
    ListApiKeys,
    /// `has_api_key`
    HasApiKey { name: String },
    /// `refresh_token`
    RefreshToken { provider: String, bucket: Option<String> },
    /// `oauth_initiate` (`flow_type` absent: the provider's default flow)
    OauthInitiate { provider: String, bucket: Option<String>, flow_type: Option<FlowType> },
    /// `oauth_exchange`
    OauthExchange { session_id: String, code: String },
    /// `oauth_poll`
    OauthPoll { session_id: String },
    /// `oauth_cancel`
    OauthCancel { session_id: String },
    /// `cancel`
    Cancel { target_id: String },
    /// `github`: `payload.op` and the other keys of the payload as its
    /// parameters (checked by the broker, not here).
    Github { op: String, params: Map<String, Value> },
}

impl Op {
    /// The wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::GetToken { .. } => "get_token",
            Op::SaveToken { .. } => "save_token",
            Op::RemoveToken { .. } => "remove_token",
            Op::ListProviders => "list_providers",
            Op::ListBuckets { .. } => "list_buckets",
            Op::GetBucketStats { .. } => "get_bucket_stats",
            Op::GetApiKey { .. } => "get_api_key",
            Op::ListApiKeys => "list_api_keys",
            Op::HasApiKey { .. } => "has_api_key",
            Op::RefreshToken { .. } => "refresh_token",
            Op::OauthInitiate { .. } => "oauth_initiate",
            Op::OauthExchange { .. } => "oauth_exchange",
            Op::OauthPoll { .. } => "oauth_poll",
            Op::OauthCancel { .. } => "oauth_cancel",
            Op::Cancel { .. } => "cancel",
            Op::Github { .. } => "github",
        }
    }
}

/// What an operation does to the host, for the permission check (SPEC
/// §11.1): a sandbox may only read unless the host permits a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpClass {
    /// Reads: always permitted.
    Read,
    /// `refresh_token`.
    Refresh,
    /// `oauth_initiate`, `oauth_exchange`, `oauth_poll`, `oauth_cancel`.
    Login,
    /// `save_token`, `remove_token`.
    Write,
    /// The mutating operations of `github`.
    GithubWrite,
}

impl OpClass {
    /// The classes a host can permit, by their `--permit` names.
    pub const PERMITTABLE: [OpClass; 4] =
        [OpClass::Refresh, OpClass::Login, OpClass::Write, OpClass::GithubWrite];

    /// The name `--permit` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            OpClass::Read => "read",
            OpClass::Refresh => "refresh",
            OpClass::Login => "login",
            OpClass::GithubWrite => "github-write",
            OpClass::Write => "write",
        }
    }
}

impl Op {
    /// The permission class of this operation.
    pub fn class(&self) -> OpClass {
        match self {
            Op::RefreshToken { .. } => OpClass::Refresh,
            Op::OauthInitiate { .. }
            | Op::OauthExchange { .. }
            | Op::OauthPoll { .. }
            | Op::OauthCancel { .. } => OpClass::Login,
            Op::SaveToken { .. } | Op::RemoveToken { .. } => OpClass::Write,
            Op::Github { op, .. } if crate::protocol::github::spec(op).is_some_and(|s| s.mutating) => {
                OpClass::GithubWrite
            }
            Op::Github { .. } => OpClass::Read,
            Op::GetToken { .. }
            | Op::ListProviders
            | Op::ListBuckets { .. }
            | Op::GetBucketStats { .. }
            | Op::GetApiKey { .. }
            | Op::ListApiKeys
            | Op::HasApiKey { .. }
            | Op::Cancel { .. } => OpClass::Read,
        }
    }
}

impl Op {
    /// The request's `payload`, as a client sends it (the inverse of
    /// [`parse_request`](super::parse_request); an absent bucket or flow is left out).
    pub fn payload(&self) -> Map<String, Value> {
        let mut p = Map::new();
        let mut put = |k: &str, v: Value| {
            p.insert(k.to_owned(), v);
        };
        let target = |put: &mut dyn FnMut(&str, Value), provider: &str, bucket: &Option<String>| {
            put("provider", json!(provider));
            if let Some(b) = bucket {
                put("bucket", json!(b));
            }
        };
        match self {
            Op::GetToken { provider, bucket }
            | Op::RemoveToken { provider, bucket }
            | Op::GetBucketStats { provider, bucket }
            | Op::RefreshToken { provider, bucket } => target(&mut put, provider, bucket),
            Op::SaveToken { provider, bucket, token } => {
                target(&mut put, provider, bucket);
                put("token", Value::Object(token.clone()));
            }
            Op::OauthInitiate { provider, bucket, flow_type } => {
                target(&mut put, provider, bucket);
                if let Some(f) = flow_type {
                    put("flow_type", json!(f.as_str()));
                }
            }
            Op::ListBuckets { provider } => put("provider", json!(provider)),
            Op::GetApiKey { name } | Op::HasApiKey { name } => put("name", json!(name)),
            Op::ListProviders | Op::ListApiKeys => {}
            Op::OauthExchange { session_id, code } => {
                put("session_id", json!(session_id));
                put("code", json!(code));
            }
            Op::OauthPoll { session_id } | Op::OauthCancel { session_id } => {
                put("session_id", json!(session_id))
            }
            Op::Cancel { target_id } => put("targetId", json!(target_id)),
            Op::Github { op, params } => {
                put("op", json!(op));
                for (k, v) in params {
                    put(k, v.clone());
                }
            }
        }
        p
    }
}

/// A request frame's body for protocol `version`.
pub fn encode_request(version: u64, req: &Request) -> Vec<u8> {
    to_bytes(
        json!({"v": version, "id": req.id, "op": req.op.name(), "payload": Value::Object(req.op.payload())}),
    )
}
