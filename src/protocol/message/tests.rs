//! Unit tests of the message layer: handshake, requests and response envelopes.
#![forbid(unsafe_code)]

use serde_json::{Map, Value, json};

use super::*;

fn req(s: &str) -> Result<Request, RequestError> {
    parse_request(s.as_bytes())
}

#[test]
fn the_handshake_a_client_sends_is_what_the_server_reads() {
    let h = parse_handshake(&encode_handshake(1, 2, Some("ab"))).unwrap();
    assert_eq!((h.version, h.capability_token.as_deref()), (2, Some("ab")));
    assert_eq!(
        serde_json::from_slice::<Value>(&encode_handshake(1, 2, None)).unwrap(),
        json!({"v":2,"op":"handshake","payload":{"minVersion":1,"maxVersion":2}})
    );
}

#[test]
fn every_error_envelope_decodes_as_sent() {
    for (bytes, code, text, retry) in [
        (
            error_response("i", ErrorCode::RateLimited, "Too many requests", Some(1)),
            "RATE_LIMITED",
            "Too many requests",
            Some(1),
        ),
        (
            error_response("i", ErrorCode::Cancelled, "Operation cancelled", None),
            "CANCELLED",
            "Operation cancelled",
            None,
        ),
        (error_response("i", ErrorCode::ResponseTooLarge, "x", None), "RESPONSE_TOO_LARGE", "x", None),
    ] {
        let f = decode_response(&bytes).unwrap();
        assert_eq!(f.id.as_deref(), Some("i"));
        assert_eq!(f.response, Response::Err { code: code.into(), message: text.into(), retry_after: retry });
    }
    let f = decode_response(&ok_response("j", Map::new())).unwrap();
    assert_eq!((f.id.as_deref(), f.response), (Some("j"), Response::Ok(Map::new())));
    assert_eq!(decode_response(br#"{"ok":"yes"}"#).unwrap_err(), MalformedResponse);
}

#[test]
fn every_request_encodes_to_what_the_parser_reads_back() {
    let token: Map<String, Value> = serde_json::from_value(
        json!({"access_token":"at","expiry": (crate::token::now_unix_seconds() + 60.0).floor(),"token_type":"Bearer"}),
    )
    .unwrap();
    let ops = [
        Op::GetToken { provider: "codex".into(), bucket: None },
        Op::SaveToken { provider: "codex".into(), bucket: Some("work".into()), token },
        Op::RemoveToken { provider: "codex".into(), bucket: Some("w".into()) },
        Op::ListProviders,
        Op::ListBuckets { provider: "codex".into() },
        Op::GetBucketStats { provider: "codex".into(), bucket: None },
        Op::GetApiKey { name: "K".into() },
        Op::ListApiKeys,
        Op::HasApiKey { name: "K".into() },
        Op::RefreshToken { provider: "codex".into(), bucket: None },
        Op::OauthInitiate { provider: "codex".into(), bucket: None, flow_type: Some(FlowType::DeviceCode) },
        Op::OauthExchange { session_id: "s".into(), code: "c#s".into() },
        Op::OauthPoll { session_id: "s".into() },
        Op::OauthCancel { session_id: "s".into() },
        Op::Cancel { target_id: "t".into() },
        Op::Github { op: "issue.view".into(), params: serde_json::from_value(json!({"number":7})).unwrap() },
    ];
    for op in ops {
        let req = Request { id: "r1".into(), op };
        let bytes = encode_request(2, &req);
        assert_eq!(parse_request(&bytes).unwrap(), req, "{}", String::from_utf8_lossy(&bytes));
    }
    let fixed = encode_request(
        1,
        &Request { id: "a".into(), op: Op::GetToken { provider: "p".into(), bucket: Some("b".into()) } },
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&fixed).unwrap(),
        json!({"v":1,"id":"a","op":"get_token","payload":{"provider":"p","bucket":"b"}})
    );
}

#[test]
fn handshake_negotiates_the_highest_common_version() {
    let ok = |s: &str| parse_handshake(s.as_bytes());
    let one = ok(r#"{"v":1,"op":"handshake","payload":{"minVersion":1,"maxVersion":1}}"#).unwrap();
    assert_eq!((one.capability_token, one.version), (None, 1));
    let h =
        ok(r#"{"v":2,"op":"handshake","payload":{"minVersion":1,"maxVersion":2,"capabilityToken":"ab"}}"#)
            .unwrap();
    assert_eq!((h.capability_token.as_deref(), h.version), (Some("ab"), 2));
    for (range, version) in [((2, 3), 2), ((1, 9), 2), ((2, 2), 2), ((0, 1), 1)] {
        let text = format!(
            r#"{{"op":"handshake","payload":{{"minVersion":{},"maxVersion":{}}}}}"#,
            range.0, range.1
        );
        assert_eq!(ok(&text).unwrap().version, version, "{range:?}");
    }
    for bad in [
        r#"{"op":"handshake","payload":{"minVersion":3,"maxVersion":4}}"#,
        r#"{"op":"handshake","payload":{"minVersion":0,"maxVersion":0}}"#,
        r#"{"op":"handshake","payload":{"minVersion":1}}"#,
        r#"{"op":"handshake","payload":{"minVersion":"1","maxVersion":1}}"#,
        r#"{"op":"handshake","payload":{"minVersion":1.5,"maxVersion":2}}"#,
        r#"{"op":"handshake","payload":{"minVersion":2,"maxVersion":1}}"#,
        r#"{"op":"handshake"}"#,
    ] {
        assert_eq!(ok(bad).unwrap_err().code, ErrorCode::UnknownVersion, "{bad}");
    }
    assert_eq!(ok(r#"{"v":1,"id":"1","op":"get_token"}"#).unwrap_err().code, ErrorCode::InvalidRequest);
    assert_eq!(ok("[]").unwrap_err().code, ErrorCode::InvalidRequest);
}

#[test]
fn requests_are_typed_and_validated() {
    assert_eq!(
        req(r#"{"v":1,"id":"a","op":"get_token","payload":{"provider":"anthropic"}}"#).unwrap(),
        Request { id: "a".into(), op: Op::GetToken { provider: "anthropic".into(), bucket: None } }
    );
    assert_eq!(req(r#"{"id":"b","op":"list_providers"}"#).unwrap().op, Op::ListProviders);
    assert_eq!(
        req(r#"{"id":"c","op":"oauth_initiate","payload":{"provider":"codex","flow_type":"device_code","redirect_uri":"x"}}"#)
            .unwrap()
            .op,
        Op::OauthInitiate { provider: "codex".into(), bucket: None, flow_type: Some(FlowType::DeviceCode) }
    );
    let cases = [
        ("null", "unknown", "Frame must be a JSON object"),
        ("\"x\"", "unknown", "Frame must be a JSON object"),
        ("[1]", "unknown", "Frame must be a JSON object"),
        ("{", "unknown", "Frame is not valid JSON"),
        (r#"{"op":"get_token"}"#, "unknown", "Missing request id or op"),
        (r#"{"id":"","op":"get_token"}"#, "unknown", "Missing request id or op"),
        (r#"{"id":"i","op":""}"#, "i", "Missing request id or op"),
        (r#"{"id":"i","op":"nope"}"#, "i", "Unknown operation: nope"),
        (r#"{"id":"i","op":"get_token","payload":[]}"#, "i", "payload must be an object"),
        (r#"{"id":"i","op":"get_token","payload":{}}"#, "i", "Missing provider"),
        (r#"{"id":"i","op":"get_token","payload":{"provider":7}}"#, "i", "provider must be a string"),
        (r#"{"id":"i","op":"get_token","payload":{"provider":"../x"}}"#, "i", "Invalid provider name"),
        (
            r#"{"id":"i","op":"get_token","payload":{"provider":"a","bucket":1}}"#,
            "i",
            "bucket must be a string",
        ),
        (r#"{"id":"i","op":"get_api_key","payload":{"name":"a@b"}}"#, "i", "Invalid key name"),
        (
            r#"{"id":"i","op":"save_token","payload":{"provider":"a","token":"t"}}"#,
            "i",
            "token must be an object",
        ),
        (r#"{"id":"i","op":"cancel","payload":{}}"#, "i", "Missing targetId"),
        (
            r#"{"id":"i","op":"oauth_initiate","payload":{"provider":"codex","flow_type":"magic"}}"#,
            "i",
            "Unknown flow_type",
        ),
        (r#"{"id":"i","op":"oauth_exchange","payload":{"session_id":"s"}}"#, "i", "Missing code"),
        (r#"{"id":"i","op":"oauth_poll","payload":{"session_id":5}}"#, "i", "session_id must be a string"),
    ];
    for (input, id, message) in cases {
        let e = req(input).unwrap_err();
        assert_eq!(
            (e.id.as_str(), e.code, e.message.as_str()),
            (id, ErrorCode::InvalidRequest, message),
            "{input}"
        );
    }
    assert_eq!(parse_request(b"\xff\xfe").unwrap_err().message, "Frame is not valid UTF-8");
}

#[test]
fn responses_have_the_envelope_and_object_data() {
    let ok: Value = serde_json::from_slice(&ok_response("x", Map::new())).unwrap();
    assert_eq!(ok, json!({"v":1,"id":"x","ok":true,"data":{}}));
    let e: Value =
        serde_json::from_slice(&error_response("x", ErrorCode::RateLimited, "slow down", Some(1))).unwrap();
    assert_eq!(
        e,
        json!({"v":1,"id":"x","ok":false,"code":"RATE_LIMITED","error":"slow down","retryAfter":1})
    );
    let h: Value = serde_json::from_slice(&handshake_ok(1)).unwrap();
    assert_eq!(h, json!({"v":1,"op":"handshake","ok":true,"data":{"version":1}}));
    let h: Value = serde_json::from_slice(&handshake_ok(2)).unwrap();
    assert_eq!(h, json!({"v":2,"op":"handshake","ok":true,"data":{"version":2}}));
    let two: Value =
        serde_json::from_slice(&for_version(error_response("x", ErrorCode::Cancelled, "c", Some(1)), 2))
            .unwrap();
    assert_eq!(two, json!({"v":2,"id":"x","ok":false,"code":"CANCELLED","error":"c","retryAfter":1}));
    let two: Value = serde_json::from_slice(&for_version(ok_response("y", Map::new()), 2)).unwrap();
    assert_eq!(two, json!({"v":2,"id":"y","ok":true,"data":{}}));
}
