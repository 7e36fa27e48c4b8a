/*!
Starting a login ([`Logins::initiate`]): the provider and flow are
checked, a slot is reserved against the caps, the flow's first step runs
(the code-paste URL, the device code, or the loopback listener) with its
background thread, and the session is recorded.
*/
#![forbid(unsafe_code)]

use std::time::Instant;

use super::control::Control;
use super::table::{PasteSecrets, Phase, Reservation, Session};
use super::{
    BROWSER_POLL_INTERVAL, Initiated, LoginError, Logins, MAX_BROWSER_LOGINS, MAX_OPEN_SESSIONS, MAX_RECORDS,
    Owner, short_id, spawn,
};
use crate::oauth::login::{self, Pkce};
use crate::oauth::provider::FlowType;

impl Logins {
    /// Starts a login of `provider:bucket` for `owner`, with `flow` or the
    /// provider's default.
    pub fn initiate(
        &self,
        owner: Owner,
        provider: &str,
        bucket: Option<&str>,
        flow: Option<FlowType>,
    ) -> Result<Initiated, LoginError> {
        let inner = &self.inner;
        let def = inner
            .providers
            .get(provider)
            .filter(|p| !p.login.flows.is_empty())
            .ok_or(LoginError::UnknownProvider)?;
        let flow = match flow {
            None => def.login.flows[0],
            Some(f) if def.login.flows.contains(&f) => f,
            Some(f) => return Err(LoginError::FlowNotOffered(f)),
        };
        let browser = flow == FlowType::BrowserRedirect;
        let mut reservation = {
            let mut table = inner.table();
            if table.stopped {
                return Err(LoginError::start("the daemon is shutting down"));
            }
            inner.collect(&mut table);
            let open = table.sessions.values().filter(|s| s.phase == Phase::Open);
            let (open, open_browser) =
                open.fold((0, 0), |(n, b), s| (n + 1, b + usize::from(s.flow == FlowType::BrowserRedirect)));
            if open + table.reserved >= MAX_OPEN_SESSIONS {
                return Err(LoginError::TooMany);
            }
            if browser && open_browser + table.reserved_browser >= MAX_BROWSER_LOGINS {
                return Err(LoginError::TooManyBrowser);
            }
            table.reserved += 1;
            if browser {
                table.reserved_browser += 1;
            }
            Reservation { inner, browser, held: true }
        };
        let random = |e: std::io::Error| LoginError::start(format!("The OS random generator failed: {e}"));
        let id = crate::random::hex(16).map_err(random)?;
        let tag = format!(
            "{provider}:{} session={}",
            bucket.unwrap_or(crate::store::names::DEFAULT_BUCKET),
            short_id(&id)
        );
        let expires_in = inner.ttl;
        let mut paste = None;
        let (initiated, control) = match flow {
            FlowType::PkceRedirect => {
                let pkce = Pkce::new(def.login.verifier_bytes).map_err(random)?;
                let state = login::new_state().map_err(random)?;
                let redirect_uri = def.login.paste_redirect_uri.clone().unwrap_or_default();
                let auth_url = login::authorize_url(def, &redirect_uri, &pkce.challenge, state.expose());
                paste = Some(PasteSecrets { verifier: pkce.verifier, state, redirect_uri });
                let interval = inner.client_interval(login::DEFAULT_DEVICE_INTERVAL);
                let initiated = Initiated::url_only(id.clone(), flow, auth_url, interval, expires_in);
                (initiated, Control::new(interval, false))
            }
            FlowType::DeviceCode => {
                let device = def.login.device.as_ref().ok_or(LoginError::FlowNotOffered(flow))?;
                let start = login::device_start(&inner.http, def, device, inner.timing.http_timeout)
                    .map_err(|e| {
                        crate::log_warn!("oauth {tag}: {e}");
                        LoginError::Flow(e)
                    })?;
                let interval = inner.client_interval(start.interval);
                let initiated = Initiated {
                    session_id: id.clone(),
                    flow,
                    auth_url: start.verification_uri.clone(),
                    user_code: Some(start.user_code.clone()),
                    verification_uri: Some(start.verification_uri.clone()),
                    verification_uri_complete: start.verification_uri_complete.clone(),
                    poll_interval: interval,
                    expires_in: expires_in.min(start.expires_in),
                };
                let control = Control::new(interval, true);
                let (me, c, p, b, t) =
                    (inner.clone(), control.clone(), def.clone(), bucket.map(str::to_owned), tag.clone());
                spawn(&tag, &control, move || me.run_device(p, b, start, c, t))?;
                (initiated, control)
            }
            FlowType::BrowserRedirect => {
                let listener = login::bind_redirect_listener(&def.login.redirect_ports).map_err(|e| {
                    crate::log_warn!("oauth {tag}: cannot listen for the browser: {e}");
                    LoginError::start(format!("cannot listen for the browser on the host's loopback: {e}"))
                })?;
                let port = listener.port();
                let redirect_uri = format!("http://localhost:{port}{}", def.login.redirect_path);
                let pkce = Pkce::new(def.login.verifier_bytes).map_err(random)?;
                let state = login::new_state().map_err(random)?;
                let auth_url = login::authorize_url(def, &redirect_uri, &pkce.challenge, state.expose());
                let interval = inner.client_interval(BROWSER_POLL_INTERVAL);
                let initiated = Initiated::url_only(id.clone(), flow, auth_url, interval, expires_in);
                let control = Control::new(interval, true);
                *control.listener() = Some(listener);
                let (me, c, p, b, t) =
                    (inner.clone(), control.clone(), def.clone(), bucket.map(str::to_owned), tag.clone());
                let verifier = pkce.verifier;
                spawn(&tag, &control, move || me.run_listener(p, b, state, verifier, redirect_uri, c, t))?;
                crate::log_debug!("oauth {tag}: listening for the browser on 127.0.0.1 and ::1 port {port}");
                (initiated, control)
            }
        };
        let session = Session {
            provider: provider.to_owned(),
            bucket: bucket.map(str::to_owned),
            flow,
            owner,
            created: Instant::now(),
            phase: Phase::Open,
            control,
            paste,
        };
        let mut table = inner.table();
        if table.stopped {
            let mut session = session;
            session.close(Phase::Expired);
            return Err(LoginError::start("the daemon is shutting down"));
        }
        reservation.recorded(&mut table);
        if table.sessions.len() >= MAX_RECORDS {
            let oldest = table
                .sessions
                .iter()
                .filter(|(_, s)| s.phase != Phase::Open)
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                table.sessions.remove(&k);
            }
        }
        table.sessions.insert(id, session);
        crate::log_info!("oauth {tag}: {} login started", flow.as_str());
        Ok(initiated)
    }
}
