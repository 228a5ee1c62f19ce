//! Protocol-level stubs of Twilio's REST API (IncomingPhoneNumbers) and
//! LiveKit's SIP Twirp service, for the PhoneNumber tests. They check what
//! the real services check (Basic auth, form encoding, the JWT's signature
//! and `sip.admin` grant) and answer in the vendors' documented formats,
//! errors included (Twilio `{code, message, more_info, status}`, Twirp
//! `{code, msg}`).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use livekit_api::access_token::TokenVerifier;
use livekit_protocol as proto;
use serde_json::{Value, json};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Standard base64 (for the expected Basic auth header).
fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------- Twilio

/// One request the Twilio stub received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwilioRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The form body of a POST, decoded.
    pub form: BTreeMap<String, String>,
}

#[derive(Default)]
struct TwilioState {
    account_sid: String,
    auth_token: String,
    /// IncomingPhoneNumbers by SID, as Twilio's JSON.
    numbers: BTreeMap<String, Value>,
    requests: Vec<TwilioRequest>,
    /// Status codes to answer the next requests with.
    fail: VecDeque<u16>,
}

/// The Twilio stub.
#[derive(Clone)]
pub struct TwilioStub {
    state: Arc<Mutex<TwilioState>>,
    /// Its base URL (`http://127.0.0.1:port`).
    pub url: String,
}

fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl TwilioStub {
    /// Serves account `account_sid` with auth token `auth_token`.
    pub async fn start(account_sid: &str, auth_token: &str) -> Self {
        let state = Arc::new(Mutex::new(TwilioState {
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            ..TwilioState::default()
        }));
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json",
                get(list_numbers),
            )
            .route(
                "/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{file}",
                get(get_number).post(update_number),
            )
            .with_state(Arc::clone(&state));
        let addr = serve(app).await;
        TwilioStub {
            state,
            url: format!("http://{addr}"),
        }
    }

    /// Adds a number to the account; returns its SID.
    pub fn add_number(&self, number: &str, voice_url: Option<&str>, voice_method: &str) -> String {
        let mut s = lock(&self.state);
        let sid = format!("PN{:032x}", s.numbers.len() + 0xabc0);
        let account = s.account_sid.clone();
        s.numbers.insert(
            sid.clone(),
            json!({
                "sid": sid,
                "account_sid": account,
                "phone_number": number,
                "friendly_name": number,
                "voice_url": voice_url,
                "voice_method": voice_method,
                "voice_fallback_url": null,
                "status_callback": "",
                "status_callback_method": "POST",
                "uri": format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{sid}.json"),
            }),
        );
        sid
    }

    /// Removes a number from the account (released in the console).
    pub fn remove_number(&self, sid: &str) {
        lock(&self.state).numbers.remove(sid);
    }

    /// The number `sid` as Twilio would return it.
    pub fn number(&self, sid: &str) -> Value {
        lock(&self.state)
            .numbers
            .get(sid)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TwilioRequest> {
        lock(&self.state).requests.clone()
    }

    /// Requests with `method` so far.
    pub fn count(&self, method: &str) -> usize {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    /// Answers the next `times` requests with `status`.
    pub fn fail_next(&self, status: u16, times: usize) {
        lock(&self.state)
            .fail
            .extend(std::iter::repeat_n(status, times));
    }

    /// Changes the auth token the account accepts (a rotated token).
    pub fn set_auth_token(&self, token: &str) {
        lock(&self.state).auth_token = token.into();
    }
}

/// Checks the account, auth and injected failures; records the request.
fn twilio_gate(
    s: &mut TwilioState,
    headers: &HeaderMap,
    account: &str,
    request: TwilioRequest,
) -> Option<Response> {
    s.requests.push(request);
    let want = format!(
        "Basic {}",
        base64(format!("{}:{}", s.account_sid, s.auth_token).as_bytes())
    );
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(want.as_str()) || account != s.account_sid {
        return Some(twilio_error(401, 20003, "Authenticate"));
    }
    if let Some(code) = s.fail.pop_front() {
        return Some(twilio_error(
            code,
            20500,
            "An internal server error has occurred",
        ));
    }
    None
}

async fn list_numbers(
    State(state): State<Arc<Mutex<TwilioState>>>,
    Path(account): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = lock(&state);
    let path = format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers.json");
    let request = TwilioRequest {
        method: "GET".into(),
        path: path.clone(),
        form: query.clone().into_iter().collect(),
    };
    if let Some(r) = twilio_gate(&mut s, &headers, &account, request) {
        return r;
    }
    // Twilio matches partial numbers: "+1555123" finds "+15551230142".
    let filter = query.get("PhoneNumber").cloned().unwrap_or_default();
    let items: Vec<Value> = s
        .numbers
        .values()
        .filter(|n| {
            n["phone_number"]
                .as_str()
                .is_some_and(|p| p.contains(filter.as_str()))
        })
        .cloned()
        .collect();
    let body = json!({
        "incoming_phone_numbers": items,
        "page": 0, "page_size": 50, "start": 0, "end": items.len().saturating_sub(1),
        "first_page_uri": path, "next_page_uri": null, "previous_page_uri": null, "uri": path,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn sid_of(file: &str) -> Option<&str> {
    file.strip_suffix(".json")
}

async fn get_number(
    State(state): State<Arc<Mutex<TwilioState>>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut s = lock(&state);
    let path = format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{file}");
    let request = TwilioRequest {
        method: "GET".into(),
        path: path.clone(),
        form: BTreeMap::new(),
    };
    if let Some(r) = twilio_gate(&mut s, &headers, &account, request) {
        return r;
    }
    match sid_of(&file).and_then(|sid| s.numbers.get(sid)) {
        Some(n) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            n.to_string(),
        )
            .into_response(),
        None => twilio_error(
            404,
            20404,
            &format!("The requested resource {path} was not found"),
        ),
    }
}

async fn update_number(
    State(state): State<Arc<Mutex<TwilioState>>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    let path = format!("/2010-04-01/Accounts/{account}/IncomingPhoneNumbers/{file}");
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let form: BTreeMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let request = TwilioRequest {
        method: "POST".into(),
        path: path.clone(),
        form: form.clone(),
    };
    if let Some(r) = twilio_gate(&mut s, &headers, &account, request) {
        return r;
    }
    if !is_form {
        return twilio_error(
            400,
            20001,
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    for (k, v) in &form {
        match k.as_str() {
            "VoiceUrl" | "StatusCallback" => {
                if !(v.is_empty() || v.starts_with("https://") || v.starts_with("http://")) {
                    return twilio_error(400, 21502, &format!("{k} is not a valid URL: {v}"));
                }
            }
            "VoiceMethod" | "StatusCallbackMethod" => {
                if !matches!(v.as_str(), "GET" | "POST") {
                    return twilio_error(400, 21501, &format!("{k} must be GET or POST"));
                }
            }
            _ => return twilio_error(400, 20001, &format!("unknown parameter {k}")),
        }
    }
    let Some(n) = sid_of(&file).and_then(|sid| s.numbers.get_mut(sid)) else {
        return twilio_error(
            404,
            20404,
            &format!("The requested resource {path} was not found"),
        );
    };
    for (k, field) in [
        ("VoiceUrl", "voice_url"),
        ("VoiceMethod", "voice_method"),
        ("StatusCallback", "status_callback"),
        ("StatusCallbackMethod", "status_callback_method"),
    ] {
        if let Some(v) = form.get(k) {
            n[field] = json!(v);
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        n.to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------- LiveKit

#[derive(Default)]
struct LiveKitState {
    api_key: String,
    api_secret: String,
    trunks: BTreeMap<String, proto::SipInboundTrunkInfo>,
    rules: BTreeMap<String, proto::SipDispatchRuleInfo>,
    next_id: u32,
    /// Methods called, in order.
    calls: Vec<String>,
    /// The JSON bodies of the calls, in order.
    bodies: Vec<(String, Value)>,
    fail: VecDeque<u16>,
}

/// The LiveKit SIP stub.
#[derive(Clone)]
pub struct LiveKitStub {
    state: Arc<Mutex<LiveKitState>>,
    /// Its base URL (`http://127.0.0.1:port`).
    pub url: String,
}

fn twirp_error(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"code": code, "msg": msg}).to_string(),
    )
        .into_response()
}

fn twirp_ok<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => twirp_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
    }
}

impl LiveKitStub {
    /// Serves a project with `api_key` / `api_secret`.
    pub async fn start(api_key: &str, api_secret: &str) -> Self {
        let state = Arc::new(Mutex::new(LiveKitState {
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            ..LiveKitState::default()
        }));
        let app = Router::new()
            .route("/twirp/livekit.SIP/{method}", post(sip))
            .with_state(Arc::clone(&state));
        let addr = serve(app).await;
        LiveKitStub {
            state,
            url: format!("http://{addr}"),
        }
    }

    /// The inbound trunks.
    pub fn trunks(&self) -> Vec<proto::SipInboundTrunkInfo> {
        lock(&self.state).trunks.values().cloned().collect()
    }

    /// The dispatch rules.
    pub fn rules(&self) -> Vec<proto::SipDispatchRuleInfo> {
        lock(&self.state).rules.values().cloned().collect()
    }

    /// Methods called so far.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    /// The JSON bodies `method` was called with so far, as received.
    pub fn bodies(&self, method: &str) -> Vec<Value> {
        lock(&self.state)
            .bodies
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Adds an inbound trunk (as if made with the `lk` CLI or by an older
    /// operator); returns its id.
    pub fn add_trunk(&self, mut trunk: proto::SipInboundTrunkInfo) -> String {
        let mut s = lock(&self.state);
        s.next_id += 1;
        trunk.sip_trunk_id = format!("ST_{:06}", s.next_id);
        s.trunks.insert(trunk.sip_trunk_id.clone(), trunk.clone());
        trunk.sip_trunk_id
    }

    /// Deletes everything (as if removed with the `lk` CLI).
    pub fn wipe(&self) {
        let mut s = lock(&self.state);
        s.trunks.clear();
        s.rules.clear();
    }

    /// Answers the next `times` requests with `status`.
    pub fn fail_next(&self, status: u16, times: usize) {
        lock(&self.state)
            .fail
            .extend(std::iter::repeat_n(status, times));
    }
}

fn decode<T: for<'de> serde::Deserialize<'de>>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(twirp_error(
            StatusCode::BAD_REQUEST,
            "malformed",
            &format!("the json request could not be decoded: {e}"),
        ))
    })
}

async fn sip(
    State(state): State<Arc<Mutex<LiveKitState>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    s.calls.push(method.clone());
    let received = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.bodies.push((method.clone(), received));
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !is_json {
        return twirp_error(
            StatusCode::BAD_REQUEST,
            "malformed",
            "unexpected Content-Type",
        );
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return twirp_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "no authorization header",
        );
    };
    let claims = match TokenVerifier::with_api_key(&s.api_key, &s.api_secret).verify(token) {
        Ok(c) => c,
        Err(e) => {
            return twirp_error(StatusCode::UNAUTHORIZED, "unauthenticated", &e.to_string());
        }
    };
    if !claims.sip.admin {
        return twirp_error(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "requires SIP admin permission",
        );
    }
    if let Some(code) = s.fail.pop_front() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return twirp_error(status, "internal", "injected failure");
    }
    match method.as_str() {
        "CreateSIPInboundTrunk" => {
            let r: proto::CreateSipInboundTrunkRequest = match decode(&body) {
                Ok(r) => r,
                Err(e) => return *e,
            };
            let Some(mut trunk) = r.trunk else {
                return twirp_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "trunk is required",
                );
            };
            if trunk.numbers.is_empty() {
                return twirp_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "numbers are required",
                );
            }
            s.next_id += 1;
            trunk.sip_trunk_id = format!("ST_{:06}", s.next_id);
            s.trunks.insert(trunk.sip_trunk_id.clone(), trunk.clone());
            twirp_ok(&trunk)
        }
        "ListSIPInboundTrunk" => {
            let r: proto::ListSipInboundTrunkRequest = match decode(&body) {
                Ok(r) => r,
                Err(e) => return *e,
            };
            let items: Vec<proto::SipInboundTrunkInfo> = s
                .trunks
                .values()
                .filter(|t| {
                    r.numbers.is_empty()
                        || t.numbers.is_empty()
                        || t.numbers.iter().any(|n| r.numbers.contains(n))
                })
                .cloned()
                .collect();
            twirp_ok(&proto::ListSipInboundTrunkResponse { items })
        }
        "UpdateSIPInboundTrunk" => {
            let r: proto::UpdateSipInboundTrunkRequest = match decode(&body) {
                Ok(r) => r,
                Err(e) => return *e,
            };
            if r.sip_trunk_id.is_empty() {
                return twirp_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "trunk id must be set",
                );
            }
            let Some(proto::update_sip_inbound_trunk_request::Action::Replace(mut trunk)) =
                r.action
            else {
                return twirp_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "replace is required",
                );
            };
            if !trunk.sip_trunk_id.is_empty() && trunk.sip_trunk_id != r.sip_trunk_id {
                return twirp_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "trunk id in the info must be empty or match the id in the update",
                );
            }
            if trunk.numbers.is_empty() {
                return twirp_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "numbers are required",
                );
            }
            if !s.trunks.contains_key(&r.sip_trunk_id) {
                return twirp_error(StatusCode::NOT_FOUND, "not_found", "trunk not found");
            }
            trunk.sip_trunk_id = r.sip_trunk_id.clone();
            s.trunks.insert(r.sip_trunk_id, trunk.clone());
            twirp_ok(&trunk)
        }
        "DeleteSIPTrunk" => {
            let r: proto::DeleteSipTrunkRequest = match decode(&body) {
                Ok(r) => r,
                Err(e) => return *e,
            };
            match s.trunks.remove(&r.sip_trunk_id) {
                Some(t) => twirp_ok(&proto::SipTrunkInfo {
                    sip_trunk_id: t.sip_trunk_id,
                    ..Default::default()
                }),
                None => twirp_error(StatusCode::NOT_FOUND, "not_found", "trunk not found"),
            }
        }
        "CreateSIPDispatchRule" => {
            let r: proto::CreateSipDispatchRuleRequest = match decode(&body) {
                Ok(r) => r,
                Err(e) => return *e,
            };
            let Some(mut rule) = r.dispatch_rule else {
                return twirp_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "dispatch_rule is required",
                );
            };
            if rule.trunk_ids.iter().any(|t| !s.trunks.contains_key(t)) {
                return twirp_error(StatusCode::BAD_REQUEST, "invalid_argument", "unknown trunk");
            }
            s.next_id += 1;
            rule.sip_dispatch_rule_id = format!("SDR_{:06}", s.next_id);
            s.rules
                .insert(rule.sip_dispatch_rule_id.clone(), rule.clone());
            twirp_ok(&rule)
        }
        "ListSIPDispatchRule" => {
            let r: proto::ListSipDispatchRuleRequest = match decode(&body) {
                Ok(r) => r,
                Err(e) => return *e,
            };
            let items: Vec<proto::SipDispatchRuleInfo> = s
                .rules
                .values()
                .filter(|x| {
                    r.trunk_ids.is_empty()
                        || x.trunk_ids.is_empty()
                        || x.trunk_ids.iter().any(|t| r.trunk_ids.contains(t))
                })
                .cloned()
                .collect();
            twirp_ok(&proto::ListSipDispatchRuleResponse { items })
        }
        "UpdateSIPDispatchRule" => {
            let r: proto::UpdateSipDispatchRuleRequest = match decode(&body) {
                Ok(r) => r,
                Err(e) => return *e,
            };
            let Some(proto::update_sip_dispatch_rule_request::Action::Replace(mut rule)) = r.action
            else {
                return twirp_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    "replace is required",
                );
            };
            if !s.rules.contains_key(&r.sip_dispatch_rule_id) {
                return twirp_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "dispatch rule not found",
                );
            }
            rule.sip_dispatch_rule_id = r.sip_dispatch_rule_id.clone();
            s.rules.insert(r.sip_dispatch_rule_id, rule.clone());
            twirp_ok(&rule)
        }
        "DeleteSIPDispatchRule" => {
            let r: proto::DeleteSipDispatchRuleRequest = match decode(&body) {
                Ok(r) => r,
                Err(e) => return *e,
            };
            match s.rules.remove(&r.sip_dispatch_rule_id) {
                Some(rule) => twirp_ok(&rule),
                None => twirp_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "dispatch rule not found",
                ),
            }
        }
        other => twirp_error(
            StatusCode::NOT_FOUND,
            "bad_route",
            &format!("no handler for path \"/twirp/livekit.SIP/{other}\""),
        ),
    }
}

#[test]
fn base64_matches_the_rfc_vectors() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}
