//! OAuth logins run by the real daemon on behalf of the sandbox, against a
//! real provider on 127.0.0.1 ([`FakeProvider`]): Anthropic's PKCE
//! code-paste, Codex's device code and browser redirect. For each flow:
//! success, denial, expiry, `slow_down` (device), wrong state (PKCE,
//! browser), replay, expired and unknown sessions, cancel, concurrent
//! sessions, another peer identity, a provider outside the profile; and the
//! canary: no verifier, state, device code, authorization code, full
//! session id or refresh token in any answer (beyond the URL the user must
//! open) or debug log line. Then `llxprt-cred login`/`logout`, through the
//! daemon and directly on the host.
//!
//! Time: `LLXPRT_CREDD_TIME_SCALE=0.01` makes the device poll interval
//! 50 ms (5 s scaled), a `slow_down` add 50 ms, and the browser listener
//! give up after 3 s (300 s scaled).

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_provider::{FakeProvider, Reply, browser_get, query_param};
use crate::harness::*;
use crate::host_store::*;
use crate::needs::*;

const USERCODE: &str = "/api/accounts/deviceauth/usercode";
const DEVICE_TOKEN: &str = "/api/accounts/deviceauth/token";

fn env_for(fake: &FakeProvider) -> Vec<(String, String)> {
    let b = &fake.base;
    [
        ("LLXPRT_CREDD_ANTHROPIC_TOKEN_URL", format!("{b}/oauth/token")),
        ("LLXPRT_CREDD_ANTHROPIC_AUTHORIZE_URL", format!("{b}/authorize")),
        ("LLXPRT_CREDD_CODEX_TOKEN_URL", format!("{b}/oauth/token")),
        ("LLXPRT_CREDD_CODEX_AUTHORIZE_URL", format!("{b}/authorize")),
        ("LLXPRT_CREDD_CODEX_DEVICE_CODE_URL", format!("{b}{USERCODE}")),
        ("LLXPRT_CREDD_CODEX_DEVICE_POLL_URL", format!("{b}{DEVICE_TOKEN}")),
        ("LLXPRT_CREDD_CODEX_REDIRECT_PORT", "0".into()),
        ("LLXPRT_CREDD_TIME_SCALE", "0.01".into()),
        ("ALL_PROXY", "http://127.0.0.1:9".into()),
        ("HTTPS_PROXY", "http://127.0.0.1:9".into()),
        ("HTTP_PROXY", "http://127.0.0.1:9".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn daemon_with(
    dir: &TestDir,
    fake: &FakeProvider,
    extra_env: &[(&str, &str)],
    extra_args: &[&str],
) -> Daemon {
    let env = env_for(fake);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra_env);
    let mut args = vec!["--permit", "login", "--allow", "anthropic", "--allow", "codex", "--allow", "gemini"];
    args.extend_from_slice(extra_args);
    dir.daemon_with_env(&args, &env)
}

fn daemon(dir: &TestDir, fake: &FakeProvider) -> Daemon {
    daemon_with(dir, fake, &[], &[])
}

/// A handshaken connection that keeps every answer, and the secrets it
/// learns, for the canary check.
struct Client {
    raw: Raw,
    seen: Vec<Value>,
    secrets: Vec<String>,
}

impl Client {
    fn new(d: &Daemon) -> Client {
        let mut raw = d.connect();
        raw.handshake();
        Client { raw, seen: vec![], secrets: vec![] }
    }

    fn ask(&mut self, op: &str, payload: Value) -> Value {
        let r = self.raw.request(op, payload);
        self.seen.push(r.clone());
        r
    }

    /// `oauth_initiate`; its data (the session id and state become secrets).
    fn initiate(&mut self, provider: &str, bucket: Option<&str>, flow: Option<&str>) -> Value {
        let mut p = json!({ "provider": provider });
        if let Some(b) = bucket {
            p["bucket"] = b.into();
        }
        if let Some(f) = flow {
            p["flow_type"] = f.into();
        }
        let r = self.ask("oauth_initiate", p);
        assert_eq!(r["ok"], true, "{r}");
        let data = r["data"].clone();
        let sid = data["session_id"].as_str().unwrap().to_owned();
        assert_eq!(sid.len(), 32, "16 bytes as hex");
        assert!(sid.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        self.secrets.push(plant(sid, Exposure::Served));
        if let Some(state) = query_param(data["auth_url"].as_str().unwrap(), "state") {
            self.secrets.push(plant(state, Exposure::Served));
        }
        data
    }

    fn exchange(&mut self, sid: &str, code: &str) -> Value {
        self.ask("oauth_exchange", json!({ "session_id": sid, "code": code }))
    }

    fn poll(&mut self, sid: &str) -> Value {
        self.ask("oauth_poll", json!({ "session_id": sid }))
    }

    fn cancel(&mut self, sid: &str) -> Value {
        self.ask("oauth_cancel", json!({ "session_id": sid }))
    }

    /// Polls until the status is not pending; that answer.
    fn poll_until_done(&mut self, sid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.poll(sid);
            if r["ok"] != true || r["data"]["status"] != "pending" {
                return r;
            }
            assert!(Instant::now() < deadline, "the login never finished");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn sid(data: &Value) -> String {
    data["session_id"].as_str().unwrap().to_owned()
}

fn code_of(r: &Value) -> &str {
    r["code"].as_str().unwrap_or("")
}

/// The canary: no answer carries a secret beyond the session id and URL of
/// its own `oauth_initiate`, and no log line carries any.
fn assert_no_leaks(d: &Daemon, answers: &[Value], secrets: &[String]) {
    for a in answers {
        let mut a = a.clone();
        if let Some(data) =
            a.get_mut("data").and_then(Value::as_object_mut).filter(|d| d.contains_key("flow_type"))
        {
            data.remove("session_id");
            data.remove("auth_url");
        }
        let text = a.to_string();
        assert!(!text.contains("CANARY") && !text.contains("refresh_token"), "an answer leaked: {text}");
        for s in secrets {
            assert!(!text.contains(s.as_str()), "an answer leaked {s}: {text}");
        }
    }
    let log = d.log_text();
    assert!(log.contains("debug:"), "the log is at debug level");
    assert!(!log.contains("CANARY"), "the log leaked a code or token:\n{log}");
    for s in secrets {
        assert!(!log.contains(s.as_str()), "the log leaked {s}:\n{log}");
    }
}

/// The verifier the daemon sent with an exchange (a secret from then on).
fn verifier_of(fake: &FakeProvider, nth: usize) -> String {
    let calls: Vec<_> = fake
        .calls_to("/oauth/token")
        .into_iter()
        .filter(|c| c.field("grant_type").as_deref() == Some("authorization_code"))
        .collect();
    plant(calls[nth].field("code_verifier").unwrap(), Exposure::Never)
}

fn s256(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

// ---------------------------------------------------------------- PKCE code-paste (Anthropic)

#[test]
fn pkce_code_paste_logs_in_and_the_session_is_single_use() {
    let dir = TestDir::new("lg-pkce");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    let data = c.initiate("anthropic", None, None);
    assert_eq!(data["flow_type"], "pkce_redirect");
    let url = data["auth_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/authorize?code=true&", fake.base)), "{url}");
    for (k, v) in [
        ("client_id", "9d1c250a-e61b-44d9-88ed-5944d1962f5e"),
        ("response_type", "code"),
        ("redirect_uri", "https://console.anthropic.com/oauth/code/callback"),
        ("scope", "org:create_api_key user:profile user:inference"),
        ("code_challenge_method", "S256"),
    ] {
        assert_eq!(query_param(url, k).as_deref(), Some(v), "{k}");
    }
    let state = query_param(url, "state").unwrap();
    assert!(state.len() >= 43);
    // the user signs in; the provider's page shows code#state
    let (status, _, pasted) = browser_get(url).unwrap();
    assert_eq!(status, 200);
    assert!(pasted.ends_with(&format!("#{state}")), "{pasted}");
    c.secrets.push(plant(pasted.split('#').next().unwrap(), Exposure::Never));
    let r = c.exchange(&sid(&data), &pasted);
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["data"]["access_token"].as_str().unwrap().starts_with("at-refreshed-"));
    assert!(r["data"].get("token").is_none() && r["data"].get("refresh_token").is_none());
    // what the provider got: a JSON exchange with the verifier whose S256 is the challenge
    let call = fake.calls_to("/oauth/token").pop().unwrap();
    assert_eq!(call.content_type, "application/json");
    assert_eq!(call.field("grant_type").as_deref(), Some("authorization_code"));
    assert_eq!(call.field("state").as_deref(), Some(state.as_str()));
    assert_eq!(
        call.field("redirect_uri").as_deref(),
        Some("https://console.anthropic.com/oauth/code/callback")
    );
    let verifier = verifier_of(&fake, 0);
    assert_ne!(verifier, state, "the state is not the verifier");
    assert_eq!(query_param(url, "code_challenge").unwrap(), s256(&verifier));
    c.secrets.push(verifier);
    // stored on the host in full, served sanitized
    let s = dir.stored_token("anthropic", None).expect("stored");
    assert!(s["refresh_token"].as_str().unwrap().contains("CANARY"));
    assert_eq!(s["access_token"], r["data"]["access_token"]);
    let got = c.ask("get_token", json!({"provider":"anthropic"}));
    assert_eq!(got["data"]["access_token"], r["data"]["access_token"]);
    // replay
    let again = c.exchange(&sid(&data), &pasted);
    assert_eq!((again["ok"].clone(), code_of(&again)), (json!(false), "SESSION_ALREADY_USED"));
    assert_eq!(fake.calls_to("/oauth/token").len(), 1, "a replay never reaches the provider");
    // the audit line names the session by a short prefix only
    assert!(d.log_text().contains(&format!("session={}", &sid(&data)[..6])));
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

#[test]
fn pkce_wrong_state_denial_wrong_op_unknown_session_and_cancel() {
    let dir = TestDir::new("lg-pkce-bad");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    // wrong state: refused on the host, the provider is never called, the session is used up
    let a = c.initiate("anthropic", None, None);
    let r = c.exchange(&sid(&a), "ac-CANARY-x#not-the-state");
    assert_eq!(code_of(&r), "EXCHANGE_FAILED", "{r}");
    assert!(r["error"].as_str().unwrap().contains("state mismatch"));
    assert_eq!(code_of(&c.exchange(&sid(&a), "x#y")), "SESSION_ALREADY_USED");
    // a paste without #state is refused too
    let b = c.initiate("anthropic", None, None);
    assert_eq!(code_of(&c.exchange(&sid(&b), "ac-CANARY-nostate")), "EXCHANGE_FAILED");
    assert_eq!(fake.calls_to("/oauth/token").len(), 0);
    // the user denied / the provider refuses the code
    fake.script_at("/oauth/token", [Reply::oauth_error(400, "access_denied")]);
    let e = c.initiate("anthropic", None, None);
    let state = query_param(e["auth_url"].as_str().unwrap(), "state").unwrap();
    let r = c.exchange(&sid(&e), &format!("ac-CANARY-denied#{state}"));
    assert_eq!(code_of(&r), "EXCHANGE_FAILED", "{r}");
    assert_eq!(r["error"], "The provider refused the authorization code", "fixed text: {r}");
    assert!(d.log_text().contains("access_denied"), "the provider's code is in the host log");
    assert!(dir.stored_token("anthropic", None).is_none());
    c.secrets.push(verifier_of(&fake, 0));
    // wrong op for the flow
    let f = c.initiate("anthropic", None, None);
    let r = c.poll(&sid(&f));
    assert_eq!(code_of(&r), "INVALID_REQUEST");
    assert_eq!(
        r["error"],
        "Operation oauth_poll is not valid for flow type pkce_redirect. Use oauth_exchange instead."
    );
    // cancel: the session is over
    assert_eq!(c.cancel(&sid(&f)), json!({"v":1,"id":c.seen.last().unwrap()["id"],"ok":true,"data":{}}));
    assert_eq!(code_of(&c.exchange(&sid(&f), "x#y")), "SESSION_ALREADY_USED");
    // unknown sessions
    for op in ["oauth_exchange", "oauth_poll", "oauth_cancel"] {
        let r = c.ask(op, json!({"session_id":"00112233445566778899aabbccddeeff","code":"x#y"}));
        assert_eq!(code_of(&r), "SESSION_NOT_FOUND", "{op}: {r}");
    }
    assert_eq!(fake.calls_to("/oauth/token").len(), 1);
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

#[test]
fn two_code_paste_sessions_are_independent() {
    let dir = TestDir::new("lg-pkce-two");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    let one = c.initiate("anthropic", None, None);
    let two = c.initiate("anthropic", Some("second"), None);
    assert_ne!(sid(&one), sid(&two));
    let (_, _, paste_one) = browser_get(one["auth_url"].as_str().unwrap()).unwrap();
    let (_, _, paste_two) = browser_get(two["auth_url"].as_str().unwrap()).unwrap();
    assert_ne!(paste_one, paste_two, "each session has its own state");
    let r2 = c.exchange(&sid(&two), &paste_two);
    assert_eq!(r2["ok"], true, "{r2}");
    let r1 = c.exchange(&sid(&one), &paste_one);
    assert_eq!(r1["ok"], true, "{r1}");
    let s1 = dir.stored_token("anthropic", None).unwrap();
    let s2 = dir.stored_token("anthropic", Some("second")).unwrap();
    assert_eq!(
        (s1["access_token"].clone(), s2["access_token"].clone()),
        (r1["data"]["access_token"].clone(), r2["data"]["access_token"].clone())
    );
    assert_ne!(s1["access_token"], s2["access_token"]);
    // a third session cannot take another session's paste
    let three = c.initiate("anthropic", None, None);
    assert_eq!(code_of(&c.exchange(&sid(&three), &paste_one)), "EXCHANGE_FAILED");
    c.secrets.extend([verifier_of(&fake, 0), verifier_of(&fake, 1)]);
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

// ---------------------------------------------------------------- device code (Codex)

#[test]
fn device_code_polls_on_the_host_honouring_interval_and_slow_down() {
    let dir = TestDir::new("lg-dev");
    let fake = FakeProvider::start();
    fake.script_at(
        DEVICE_TOKEN,
        [
            Reply::Status(403, "{}".into()),
            Reply::Status(404, "{}".into()),
            Reply::oauth_error(400, "slow_down"),
        ],
    );
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    let data = c.initiate("codex", None, Some("device_code"));
    assert_eq!(data["flow_type"], "device_code");
    assert_eq!(data["user_code"], "WXYZ-1234");
    assert_eq!(data["verification_url"], "https://auth.openai.com/deviceauth/callback");
    assert_eq!(data["verification_uri"], data["verification_url"]);
    assert_eq!(data["auth_url"], data["verification_uri"]);
    assert_eq!(
        data["verification_uri_complete"],
        "https://auth.openai.com/deviceauth/callback?user_code=WXYZ-1234"
    );
    assert_eq!(data["pollIntervalMs"], 100, "5 s scaled, at least 100 ms");
    // a wrong op
    let r = c.exchange(&sid(&data), "x");
    assert_eq!(
        r["error"],
        "Operation oauth_exchange is not valid for flow type device_code. Use oauth_poll instead."
    );
    let done = c.poll_until_done(&sid(&data));
    assert_eq!(done["ok"], true, "{done}");
    let t = &done["data"];
    assert_eq!(t["status"], "complete");
    assert!(t["access_token"].as_str().unwrap().starts_with("at-refreshed-"));
    assert_eq!(t["token"]["access_token"], t["access_token"]);
    assert_eq!(t["token"]["expiry"], t["expiry"]);
    // the upstream conversation: usercode (JSON client_id), polls with the real user code, then the exchange
    let start = &fake.calls_to(USERCODE)[0];
    assert_eq!(start.field("client_id").as_deref(), Some("app_EMoamEEZ73f0CkXaXp7hrann"));
    let polls = fake.calls_to(DEVICE_TOKEN);
    assert_eq!(polls.len(), 4, "pending, pending, slow_down, approved");
    assert!(polls.iter().all(|p| p.field("user_code").as_deref() == Some("WXYZ-1234")));
    let device_code = polls[0].field("device_auth_id").unwrap();
    assert!(device_code.contains("CANARY"));
    let gap = |i: usize| polls[i + 1].at.duration_since(polls[i].at);
    assert!(gap(0) >= Duration::from_millis(45), "interval 5 s scaled: {:?}", gap(0));
    assert!(gap(2) >= Duration::from_millis(95), "slow_down adds 5 s scaled: {:?}", gap(2));
    let exchange = fake.calls_to("/oauth/token").pop().unwrap();
    assert_eq!(exchange.content_type, "application/x-www-form-urlencoded");
    assert_eq!(exchange.field("grant_type").as_deref(), Some("authorization_code"));
    assert!(exchange.field("code").unwrap().starts_with("ac-CANARY-device-"));
    assert!(
        exchange.field("code_verifier").unwrap().starts_with("ver-CANARY-server-"),
        "the server's verifier"
    );
    assert_eq!(
        exchange.field("redirect_uri").as_deref(),
        Some("https://auth.openai.com/deviceauth/callback")
    );
    assert!(dir.stored_token("codex", None).unwrap()["refresh_token"].as_str().unwrap().contains("CANARY"));
    // single use
    assert_eq!(code_of(&c.poll(&sid(&data))), "SESSION_ALREADY_USED");
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

#[test]
fn device_code_denial_expiry_and_cancel_mid_poll() {
    let dir = TestDir::new("lg-dev-bad");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    // denial
    fake.script_at(DEVICE_TOKEN, [Reply::Status(403, "{}".into()), Reply::oauth_error(400, "access_denied")]);
    let a = c.initiate("codex", None, Some("device_code"));
    let r = c.poll_until_done(&sid(&a));
    assert_eq!(
        (r["ok"].clone(), r["data"]["status"].clone(), r["data"]["code"].clone()),
        (json!(true), json!("error"), json!("ACCESS_DENIED")),
        "{r}"
    );
    assert_eq!(code_of(&c.poll(&sid(&a))), "SESSION_ALREADY_USED");
    // the provider says the device code expired
    fake.script_at(DEVICE_TOKEN, [Reply::oauth_error(400, "expired_token")]);
    let b = c.initiate("codex", None, Some("device_code"));
    let r = c.poll_until_done(&sid(&b));
    assert_eq!(r["data"]["code"], "EXPIRED_TOKEN", "{r}");
    assert!(dir.stored_token("codex", None).is_none());
    // cancel mid-poll: no further upstream call
    fake.script_at(DEVICE_TOKEN, (0..1000).map(|_| Reply::Status(403, "{}".into())));
    let e = c.initiate("codex", None, Some("device_code"));
    let before = fake.calls_to(DEVICE_TOKEN).len();
    assert!(fake.wait_for(fake.count() + 3, Duration::from_secs(5)), "polling runs in the background");
    assert_eq!(c.poll(&sid(&e))["data"]["status"], "pending");
    assert_eq!(c.cancel(&sid(&e))["ok"], true);
    let at_cancel = fake.calls_to(DEVICE_TOKEN).len();
    assert!(at_cancel > before + 2);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(fake.calls_to(DEVICE_TOKEN).len(), at_cancel, "no poll after cancel");
    assert_eq!(code_of(&c.poll(&sid(&e))), "SESSION_ALREADY_USED");
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

#[test]
fn two_device_sessions_run_independently() {
    let dir = TestDir::new("lg-dev-two");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    fake.script_at(DEVICE_TOKEN, (0..4).map(|_| Reply::Status(403, "{}".into())));
    let one = c.initiate("codex", None, Some("device_code"));
    let two = c.initiate("codex", Some("work"), Some("device_code"));
    assert_ne!(sid(&one), sid(&two));
    assert_eq!(c.cancel(&sid(&one))["ok"], true);
    let r = c.poll_until_done(&sid(&two));
    assert_eq!(r["data"]["status"], "complete", "{r}");
    assert!(dir.stored_token("codex", Some("work")).is_some());
    assert!(dir.stored_token("codex", None).is_none(), "the cancelled session stored nothing");
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

// ---------------------------------------------------------------- browser redirect (Codex)

/// The browser: opens the auth URL at the provider, follows its redirect to
/// the daemon's listener; what the listener answered.
fn browse(auth_url: &str) -> (u16, String) {
    let (status, location, _) = browser_get(auth_url).expect("the provider answers");
    assert_eq!(status, 302);
    let (status, _, body) = browser_get(&location.unwrap()).expect("the listener answers");
    (status, body)
}

#[test]
fn browser_redirect_logs_in_through_the_loopback_listener() {
    let dir = TestDir::new("lg-br");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    let data = c.initiate("codex", None, None);
    assert_eq!(data["flow_type"], "browser_redirect", "codex's default");
    let url = data["auth_url"].as_str().unwrap().to_owned();
    let redirect = query_param(&url, "redirect_uri").unwrap();
    assert!(redirect.starts_with("http://localhost:") && redirect.ends_with("/auth/callback"), "{redirect}");
    for (k, v) in [
        ("client_id", "app_EMoamEEZ73f0CkXaXp7hrann"),
        ("scope", "openid profile email offline_access"),
        ("code_challenge_method", "S256"),
        ("originator", "codex_cli_rs"),
        ("codex_cli_simplified_flow", "true"),
    ] {
        assert_eq!(query_param(&url, k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(c.poll(&sid(&data))["data"]["status"], "pending");
    // a request with a wrong state is refused and the login keeps waiting
    let (st, _, _) = browser_get(&format!("{redirect}?code=ac-CANARY-forged&state=forged")).unwrap();
    assert_eq!(st, 400);
    let (st, _, _) = browser_get(&redirect.replace("/auth/callback", "/favicon.ico")).unwrap();
    assert_eq!(st, 404);
    assert_eq!(c.poll(&sid(&data))["data"]["status"], "pending");
    let (status, page) = browse(&url);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Login complete"));
    let r = c.poll_until_done(&sid(&data));
    assert_eq!(r["data"]["status"], "complete", "{r}");
    let exchange = fake.calls_to("/oauth/token").pop().unwrap();
    assert_eq!(exchange.field("redirect_uri").as_deref(), Some(redirect.as_str()));
    let verifier = exchange.field("code_verifier").unwrap();
    assert_eq!(verifier.len(), 86, "64 bytes");
    assert_eq!(query_param(&url, "code_challenge").unwrap(), s256(&verifier));
    assert_eq!(fake.calls_to("/oauth/token").len(), 1, "the forged code was never exchanged");
    c.secrets.push(plant(verifier, Exposure::Never));
    // the listener is gone
    assert!(browser_get(&redirect).is_none(), "the port is closed");
    assert_eq!(code_of(&c.poll(&sid(&data))), "SESSION_ALREADY_USED");
    let r = c.exchange(&sid(&data), "x");
    assert_eq!(
        r["error"],
        "Operation oauth_exchange is not valid for flow type browser_redirect. Use oauth_poll instead."
    );
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

#[test]
fn browser_redirect_denial_timeout_cancel_and_two_at_once() {
    let dir = TestDir::new("lg-br-bad");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    // two at once, each with its own listener; the second is denied
    let one = c.initiate("codex", None, Some("browser_redirect"));
    let two = c.initiate("codex", Some("work"), Some("browser_redirect"));
    let (r1, r2) = (
        query_param(one["auth_url"].as_str().unwrap(), "redirect_uri").unwrap(),
        query_param(two["auth_url"].as_str().unwrap(), "redirect_uri").unwrap(),
    );
    assert_ne!(r1, r2);
    fake.script_at("/authorize", [Reply::Authorize(false)]);
    let (status, _) = browse(two["auth_url"].as_str().unwrap());
    assert_eq!(status, 200);
    let r = c.poll_until_done(&sid(&two));
    assert_eq!(r["data"]["code"], "ACCESS_DENIED", "{r}");
    assert_eq!(c.poll(&sid(&one))["data"]["status"], "pending", "the other session is untouched");
    // cancel closes the listener before it answers
    assert_eq!(c.cancel(&sid(&one))["ok"], true);
    assert!(browser_get(&r1).is_none(), "the listener is closed at once");
    // timeout: 300 s scaled is 3 s
    let three = c.initiate("codex", None, Some("browser_redirect"));
    let r3 = query_param(three["auth_url"].as_str().unwrap(), "redirect_uri").unwrap();
    std::thread::sleep(Duration::from_millis(3300));
    let r = c.poll_until_done(&sid(&three));
    assert_eq!(r["data"]["code"], "CALLBACK_TIMEOUT", "{r}");
    assert!(browser_get(&r3).is_none());
    assert_eq!(fake.calls_to("/oauth/token").len(), 0);
    assert!(dir.stored_token("codex", None).is_none() && dir.stored_token("codex", Some("work")).is_none());
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

// ---------------------------------------------------------------- sessions

#[test]
fn sessions_expire_after_the_configured_ttl() {
    let dir = TestDir::new("lg-ttl");
    let fake = FakeProvider::start();
    fake.script_at(DEVICE_TOKEN, (0..1000).map(|_| Reply::Status(403, "{}".into())));
    let d = daemon_with(&dir, &fake, &[("LLXPRT_OAUTH_SESSION_TIMEOUT_SECONDS", "1")], &[]);
    let mut c = Client::new(&d);
    let p = c.initiate("anthropic", None, None);
    assert_eq!(p["expires_in"], 1);
    let dev = c.initiate("codex", None, Some("device_code"));
    let br = c.initiate("codex", Some("b"), Some("browser_redirect"));
    let listener = query_param(br["auth_url"].as_str().unwrap(), "redirect_uri").unwrap();
    let (_, _, pasted) = browser_get(p["auth_url"].as_str().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(code_of(&c.exchange(&sid(&p), &pasted)), "SESSION_EXPIRED");
    assert_eq!(code_of(&c.poll(&sid(&dev))), "SESSION_EXPIRED");
    assert_eq!(code_of(&c.poll(&sid(&br))), "SESSION_EXPIRED");
    assert_eq!(code_of(&c.poll(&sid(&dev))), "SESSION_EXPIRED", "stays expired");
    let polls = fake.calls_to(DEVICE_TOKEN).len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fake.calls_to(DEVICE_TOKEN).len(), polls, "an expired session polls no more");
    assert!(browser_get(&listener).is_none(), "an expired session's listener is closed");
    assert_eq!(fake.calls_to("/oauth/token").len(), 0);
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

#[test]
fn a_session_belongs_to_the_peer_identity_that_started_it() {
    if !require_root("to connect as another uid") {
        return;
    }
    let dir = TestDir::new("lg-peer");
    let fake = FakeProvider::start();
    fake.script_at(DEVICE_TOKEN, (0..1000).map(|_| Reply::Status(403, "{}".into())));
    let d = daemon_with(&dir, &fake, &[], &["--allow-uid", "65534"]);
    d.loosen_socket(&dir.root);
    let mut c = Client::new(&d);
    let p = c.initiate("anthropic", None, None);
    let dev = c.initiate("codex", None, Some("device_code"));
    let (_, _, pasted) = browser_get(p["auth_url"].as_str().unwrap()).unwrap();
    let req = |n: usize, op: &str, sid: &str| json!({"v":1,"id":format!("n{n}"),"op":op,"payload":{"session_id":sid,"code":pasted}});
    let mut answers = as_nobody(
        &d.socket,
        &[
            req(1, "oauth_exchange", &sid(&p)),
            req(2, "oauth_cancel", &sid(&p)),
            req(3, "oauth_poll", &sid(&dev)),
            req(4, "oauth_cancel", &sid(&dev)),
        ],
    )
    .expect("uid 65534 is admitted with --allow-uid");
    answers.remove(0); // the handshake's
    assert_eq!(answers.len(), 4);
    for a in &answers {
        assert_eq!(code_of(a), "UNAUTHORIZED", "{a}");
    }
    assert!(d.log_text().contains("uid=65534"));
    // the owner's sessions are untouched
    assert_eq!(c.poll(&sid(&dev))["data"]["status"], "pending");
    let r = c.exchange(&sid(&p), &pasted);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(c.cancel(&sid(&dev))["ok"], true);
    c.secrets.push(verifier_of(&fake, 0));
    let mut seen = c.seen.clone();
    seen.extend(answers);
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &seen, &secrets);
}

#[test]
fn logins_outside_the_profile_or_without_a_flow_are_refused() {
    let dir = TestDir::new("lg-scope");
    let fake = FakeProvider::start();
    let d = daemon_with(&dir, &fake, &[], &["--allow", "codex:default"]);
    let mut c = Client::new(&d);
    let ask = |c: &mut Client, p: Value| c.ask("oauth_initiate", p);
    let r = ask(&mut c, json!({"provider":"acme"}));
    assert_eq!((code_of(&r), r["error"].as_str().unwrap()), ("UNAUTHORIZED", "Access denied"));
    assert_eq!(code_of(&ask(&mut c, json!({"provider":"qwen","bucket":"x"}))), "UNAUTHORIZED");
    assert_eq!(
        code_of(&ask(&mut c, json!({"provider":"gemini"}))),
        "PROVIDER_NOT_FOUND",
        "in scope but no login"
    );
    let r = ask(&mut c, json!({"provider":"anthropic","flow_type":"device_code"}));
    assert_eq!(code_of(&r), "INVALID_REQUEST");
    assert_eq!(r["error"], "This provider does not offer the device_code login flow");
    assert_eq!(code_of(&ask(&mut c, json!({"provider":"codex","flow_type":"warp"}))), "INVALID_REQUEST");
    assert_eq!(fake.count(), 0, "nothing reached the provider");
    // a bucket outside the scope
    let dir2 = TestDir::new("lg-scope2");
    let d2 = dir2.daemon_with_env(&["--permit", "login", "--allow", "codex:default"], &[]);
    let mut c2 = Client::new(&d2);
    assert_eq!(
        code_of(&c2.ask("oauth_initiate", json!({"provider":"codex","bucket":"work"}))),
        "UNAUTHORIZED"
    );
    assert_no_leaks(&d, &c.seen, &[]);
}

#[test]
fn shutdown_stops_pollers_and_listeners() {
    let dir = TestDir::new("lg-stop");
    let fake = FakeProvider::start();
    fake.script_at(DEVICE_TOKEN, (0..1000).map(|_| Reply::Status(403, "{}".into())));
    let mut d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    let _dev = c.initiate("codex", None, Some("device_code"));
    let br = c.initiate("codex", Some("b"), Some("browser_redirect"));
    let listener = query_param(br["auth_url"].as_str().unwrap(), "redirect_uri").unwrap();
    assert!(fake.wait_for(3, Duration::from_secs(5)));
    drop(c);
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    let polls = fake.calls_to(DEVICE_TOKEN).len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fake.calls_to(DEVICE_TOKEN).len(), polls, "no poll after shutdown");
    assert!(browser_get(&listener).is_none());
}

// ---------------------------------------------------------------- llxprt-cred login / logout

/// `llxprt-cred ARGS` with the fake provider's environment, stdin piped.
fn cred(dir: &TestDir, fake: &FakeProvider, args: &[&str]) -> std::process::Child {
    let mut cmd = dir.cred(None);
    for (k, v) in env_for(fake) {
        cmd.env(k, v);
    }
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

#[test]
fn cred_login_through_the_daemon_and_on_the_host() {
    let dir = TestDir::new("lg-cli");
    let fake = FakeProvider::start();
    fake.script_at(DEVICE_TOKEN, [Reply::Status(403, "{}".into()), Reply::Status(403, "{}".into())]);
    let d = daemon_with(&dir, &fake, &[], &["--permit", "write"]);
    let socket = d.socket.to_str().unwrap();
    // device code through the daemon: shows the URL and the user code, waits, reports
    let out = cred(
        &dir,
        &fake,
        &["--socket", socket, "login", "codex", "--bucket", "work", "--flow", "device_code"],
    )
    .wait_with_output()
    .unwrap();
    let text = ok(out);
    assert!(
        text.contains("https://auth.openai.com/deviceauth/callback") && text.contains("WXYZ-1234"),
        "{text}"
    );
    assert!(text.contains("Logged in: codex:work"), "{text}");
    assert!(!text.contains("CANARY") && !text.contains("refresh_token"));
    assert!(dir.stored_token("codex", Some("work")).is_some());
    // code-paste on the host (no daemon named): the user pastes code#state
    let mut child = cred(&dir, &fake, &["--store", "file", "login", "anthropic"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = first_url(&mut lines);
    let (_, _, pasted) = browser_get(&url).unwrap();
    writeln!(child.stdin.take().unwrap(), "{pasted}").unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("Logged in: anthropic:default")), "{rest:?}");
    let s = dir.stored_token("anthropic", None).unwrap();
    assert!(s["refresh_token"].as_str().unwrap().contains("CANARY"));
    assert!(s["expiry"].as_f64().unwrap() > now() + 3000.0);
    // logout through the daemon, and on the host
    ok(cred(&dir, &fake, &["--socket", socket, "logout", "codex:work"]).wait_with_output().unwrap());
    assert!(dir.stored_token("codex", Some("work")).is_none());
    ok(cred(&dir, &fake, &["--store", "file", "logout", "anthropic"]).wait_with_output().unwrap());
    assert!(dir.stored_token("anthropic", None).is_none());
    // a login the daemon refuses
    let out = cred(&dir, &fake, &["--socket", socket, "login", "acme"]).wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("UNAUTHORIZED"), "{}", stderr(&out));
    assert!(!d.log_text().contains("CANARY"));
}

#[test]
fn a_provider_from_the_config_file_logs_in_with_rfc_8628() {
    let dir = TestDir::new("lg-rfc");
    let fake = FakeProvider::start();
    let file = dir.root.join("providers.json");
    let defs = json!({"providers": {"acme": {"token_url": fake.token_url(), "client_id": "acme-cli",
        "device_code_url": format!("{}/device/code", fake.base), "scope": "openid offline_access"}}});
    std::fs::write(&file, defs.to_string()).unwrap();
    fake.script_at(
        "/oauth/token",
        [
            Reply::oauth_error(400, "authorization_pending"),
            Reply::oauth_error(400, "slow_down"),
            Reply::token(),
        ],
    );
    let d = daemon_with(
        &dir,
        &fake,
        &[("LLXPRT_CREDD_PROVIDERS_FILE", file.to_str().unwrap())],
        &["--allow", "acme"],
    );
    let mut c = Client::new(&d);
    let data = c.initiate("acme", None, None);
    assert_eq!(data["flow_type"], "device_code");
    assert_eq!(
        (data["user_code"].clone(), data["verification_uri"].clone()),
        (json!("RFC-4242"), json!("https://idp.example/device"))
    );
    let r = c.poll_until_done(&sid(&data));
    assert_eq!(r["data"]["status"], "complete", "{r}");
    let start = &fake.calls_to("/device/code")[0];
    assert_eq!(
        (start.field("client_id").as_deref(), start.field("scope").as_deref()),
        (Some("acme-cli"), Some("openid offline_access"))
    );
    let polls = fake.calls_to("/oauth/token");
    assert_eq!(polls.len(), 3);
    for p in &polls {
        assert_eq!(p.field("grant_type").as_deref(), Some("urn:ietf:params:oauth:grant-type:device_code"));
        assert!(p.field("device_code").unwrap().starts_with("dev-CANARY-rfc-"));
    }
    assert!(polls[2].at.duration_since(polls[1].at) >= Duration::from_millis(95), "slow_down honoured");
    assert!(dir.stored_token("acme", None).unwrap()["refresh_token"].as_str().unwrap().contains("CANARY"));
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

#[test]
fn at_most_sixteen_logins_run_at_once() {
    let dir = TestDir::new("lg-cap");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    let first = c.initiate("anthropic", None, None);
    for _ in 1..16 {
        c.initiate("anthropic", None, None);
    }
    let r = c.ask("oauth_initiate", json!({"provider":"anthropic"}));
    assert_eq!((code_of(&r), r["retryAfter"].clone()), ("RATE_LIMITED", json!(60)), "{r}");
    assert_eq!(c.cancel(&sid(&first))["ok"], true);
    c.initiate("anthropic", None, None);
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

// ---------------------------------------------------------------- hardening

#[test]
fn concurrent_starts_cannot_pass_the_sixteen_logins_cap() {
    let dir = TestDir::new("lg-cap-race");
    let fake = FakeProvider::start();
    // the device-code start takes 300 ms at the provider: the window in
    // which a check that reserves nothing lets every start through
    fake.set_delay(Duration::from_millis(300));
    let d = daemon_with(&dir, &fake, &[], &["--rate-limit", "0"]);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(48));
    let answers: Vec<Value> = (0..48)
        .map(|_| {
            let mut raw = d.connect();
            raw.handshake();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                raw.request("oauth_initiate", json!({"provider":"codex","flow_type":"device_code"}))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let started = answers.iter().filter(|r| r["ok"] == true).count();
    let refused = answers.iter().filter(|r| r["code"] == "RATE_LIMITED").count();
    assert_eq!((started, refused), (16, 32), "{answers:?}");
    assert_eq!(fake.calls_to(USERCODE).len(), 16, "no provider call for a refused start");
}

#[test]
fn browser_logins_are_capped_and_each_holds_both_loopback_addresses() {
    let dir = TestDir::new("lg-br-cap");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    let mut ports = Vec::new();
    for b in ["a", "b", "c", "d"] {
        let data = c.initiate("codex", Some(b), Some("browser_redirect"));
        let redirect = query_param(data["auth_url"].as_str().unwrap(), "redirect_uri").unwrap();
        let port: u16 = redirect.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
        // nobody else can take the port on either address
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        assert!(std::net::TcpListener::bind(("::1", port)).is_err(), "[::1]:{port} is ours too");
        ports.push((sid(&data), port));
    }
    let r = c.ask("oauth_initiate", json!({"provider":"codex","bucket":"e","flow_type":"browser_redirect"}));
    assert_eq!(code_of(&r), "RATE_LIMITED", "{r}");
    assert!(r["error"].as_str().unwrap().contains("Too many browser logins"), "{r}");
    // other flows are not held up by the browser cap
    c.initiate("codex", Some("e"), Some("device_code"));
    // a cancelled one frees its slot and its port at once
    let (first, port) = ports.remove(0);
    assert_eq!(c.cancel(&first)["ok"], true);
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} is free after cancel");
    c.initiate("codex", Some("f"), Some("browser_redirect"));
}

#[test]
fn a_squatter_on_the_ipv6_loopback_fails_the_login_instead_of_receiving_the_code() {
    let dir = TestDir::new("lg-br-v6");
    let fake = FakeProvider::start();
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    let squatter = std::net::TcpListener::bind(("::1", port)).expect("this machine has an IPv6 loopback");
    let port_text = port.to_string();
    let d = daemon_with(&dir, &fake, &[("LLXPRT_CREDD_CODEX_REDIRECT_PORT", &port_text)], &[]);
    let mut c = Client::new(&d);
    let r = c.ask("oauth_initiate", json!({"provider":"codex","flow_type":"browser_redirect"}));
    assert_eq!((r["ok"].clone(), code_of(&r)), (json!(false), "INTERNAL_ERROR"), "{r}");
    assert_eq!(r["error"], "The login could not start on the host");
    assert!(
        d.log_text().contains(&format!("[::1] port {port} is held by another program")),
        "{}",
        d.log_text()
    );
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "nothing left bound on 127.0.0.1");
    drop(squatter);
    let data = c.initiate("codex", None, Some("browser_redirect"));
    assert!(data["auth_url"].as_str().unwrap().contains(&format!("localhost%3A{port}")), "{data}");
}

#[test]
fn slow_browser_connections_do_not_hold_up_the_callback_or_the_cancel() {
    let dir = TestDir::new("lg-br-slow");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    let data = c.initiate("codex", None, Some("browser_redirect"));
    let url = data["auth_url"].as_str().unwrap().to_owned();
    let redirect = query_param(&url, "redirect_uri").unwrap();
    let port: u16 = redirect.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
    // three local connections that send part of a request and then nothing
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            std::io::Write::write_all(&mut s, b"GET /auth/callback?co").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let (status, page) = browse(&url);
    assert_eq!(status, 200, "{page}");
    assert!(started.elapsed() < Duration::from_secs(2), "served at once: {:?}", started.elapsed());
    assert_eq!(c.poll_until_done(&sid(&data))["data"]["status"], "complete");
    drop(slow);
    // cancel, with a slow connection open, frees the port at once
    let other = c.initiate("codex", Some("work"), Some("browser_redirect"));
    let redirect = query_param(other["auth_url"].as_str().unwrap(), "redirect_uri").unwrap();
    let port: u16 = redirect.split(':').nth(2).unwrap().split('/').next().unwrap().parse().unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut s, b"GET /").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.cancel(&sid(&other))["ok"], true);
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "the listener closed with the cancel");
    let secrets = c.secrets.clone();
    assert_no_leaks(&d, &c.seen, &secrets);
}

#[test]
fn used_login_secrets_do_not_stay_in_the_daemons_memory() {
    if !require_root("to read the daemon's memory") {
        return;
    }
    let dir = TestDir::new("lg-wipe");
    let fake = FakeProvider::start();
    let d = daemon(&dir, &fake);
    let mut c = Client::new(&d);
    // code paste (anthropic: a JSON exchange body)
    let data = c.initiate("anthropic", None, None);
    let (_, _, pasted) = browser_get(data["auth_url"].as_str().unwrap()).unwrap();
    assert_eq!(c.exchange(&sid(&data), &pasted)["ok"], true);
    // browser redirect (codex: a form exchange body)
    let data = c.initiate("codex", Some("work"), Some("browser_redirect"));
    assert_eq!(browse(data["auth_url"].as_str().unwrap()).0, 200);
    assert_eq!(c.poll_until_done(&sid(&data))["data"]["status"], "complete");
    let calls = fake.calls_to("/oauth/token");
    let mut used: Vec<String> = calls.iter().filter_map(|call| call.field("code_verifier")).collect();
    used.extend(calls.iter().filter_map(|call| call.field("code")));
    assert_eq!(used.len(), 4, "two verifiers and two codes: {used:?}");
    for _ in 0..10 {
        assert_eq!(c.ask("get_token", json!({"provider":"codex","bucket":"work"}))["ok"], true);
    }
    for secret in &used {
        let held = memory_holding(d.pid(), secret.as_bytes());
        assert!(held.is_empty(), "{secret} is still in memory at:\n{}", held.join("\n"));
    }
    let path = d.socket.to_str().unwrap().as_bytes().to_vec();
    assert!(!memory_holding(d.pid(), &path).is_empty(), "the scan reads the daemon's memory");
}
