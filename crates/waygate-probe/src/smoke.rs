//! The post-deploy smoke check of seed 000: health → register a device → list contains it →
//! WebSocket register/ack on its `wsEndpoint` → delete. Delete runs whenever a device was
//! registered, even after a later step failed, so a failed check leaves nothing behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{CheckError, ms, ws};

/// How the smoke check authenticates.
#[derive(Clone)]
pub enum SmokeAuth {
    /// A `Cookie` header value (`waygate_session=…`); a bare value is taken as `waygate_session`.
    Cookie(String),
    /// `POST /api/auth/login` first.
    Login { email: String, password: String },
}

impl std::fmt::Debug for SmokeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmokeAuth::Cookie(_) => f.write_str("Cookie(<redacted>)"),
            SmokeAuth::Login { email, .. } => write!(f, "Login {{ email: {email:?}, password: <redacted> }}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmokeOptions {
    /// `http(s)://host[:port]`, without a trailing path.
    pub base_url: String,
    pub auth: SmokeAuth,
    /// Bound for each HTTP request and each WebSocket step.
    pub timeout: Duration,
    /// Accept any TLS certificate.
    pub insecure: bool,
    /// Name of the device the check registers.
    pub device_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Ok,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub status: StepStatus,
    pub ms: f64,
    /// What was checked, or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The server's error envelope when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SmokeReport {
    pub ok: bool,
    #[serde(rename = "baseUrl")]
    pub base_url: String,
    #[serde(rename = "failedStep")]
    pub failed_step: Option<&'static str>,
    #[serde(rename = "deviceId")]
    pub device_id: Option<String>,
    pub steps: Vec<Step>,
}

/// The step names, in order.
pub const STEPS: [&str; 6] = ["login", "health", "register", "list", "ws", "delete"];

struct StepFailure {
    detail: String,
    http_status: Option<u16>,
    error: Option<Value>,
}

impl From<CheckError> for StepFailure {
    fn from(e: CheckError) -> Self {
        let (http_status, error) = match &e {
            CheckError::Upgrade { status, envelope } => (Some(*status), envelope.clone()),
            _ => (None, None),
        };
        StepFailure { detail: e.to_string(), http_status, error }
    }
}

struct Client {
    http: waygate_http::HttpClient,
    base: String,
    auth: Option<(http::HeaderName, String)>,
    timeout: Duration,
}

impl Client {
    async fn call(&self, method: http::Method, path: &str, body: Option<Value>) -> Result<(u16, Value), StepFailure> {
        let mut req = http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some((name, value)) = &self.auth {
            req = req.header(name, value);
        }
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).map_err(|e| {
            StepFailure::from(CheckError::Url { url: format!("{}{path}", self.base), reason: e.to_string() })
        })?;
        let (status, bytes) = waygate_http::send_within(&self.http, req, 1 << 20, self.timeout)
            .await
            .map_err(|e| StepFailure::from(CheckError::from(e)))?;
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok((status.as_u16(), value))
    }

    /// `call` expecting `expected`; any other status fails with the envelope.
    async fn expect(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
        expected: u16,
    ) -> Result<Value, StepFailure> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        if status == expected {
            return Ok(value);
        }
        let error = value.get("error").map(|_| value.clone());
        let summary = error
            .as_ref()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["error"]["code"].as_str().unwrap_or("?"),
                    e["error"]["message"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_else(|| "no error envelope".to_owned());
        Err(StepFailure {
            detail: format!("{method} {path}: HTTP {status} (expected {expected}): {summary}"),
            http_status: Some(status),
            error,
        })
    }
}

/// Runs the check; `on_step` sees each step as it finishes. Never returns early: a failure is
/// recorded in the report.
pub async fn run(opts: &SmokeOptions, mut on_step: impl FnMut(&Step)) -> SmokeReport {
    let mut report = SmokeReport {
        ok: false,
        base_url: opts.base_url.clone(),
        failed_step: None,
        device_id: None,
        steps: Vec::new(),
    };
    let base = opts.base_url.trim_end_matches('/').to_owned();
    let tls = match crate::tls_config(opts.insecure) {
        Ok(tls) => tls,
        Err(e) => {
            record(&mut report, &mut on_step, "health", Instant::now(), Err(e.into()));
            return report;
        }
    };
    let mut client =
        Client { http: waygate_http::http_client(tls.clone(), 2), base, auth: None, timeout: opts.timeout };

    // login (only with email + password)
    match &opts.auth {
        SmokeAuth::Cookie(c) => {
            let value = if c.contains('=') { c.clone() } else { format!("waygate_session={c}") };
            client.auth = Some((http::header::COOKIE, value));
        }
        SmokeAuth::Login { email, password } => {
            let started = Instant::now();
            let outcome = client
                .expect(http::Method::POST, "/api/auth/login", Some(json!({"email": email, "password": password})), 200)
                .await
                .and_then(|v| match v["token"].as_str() {
                    Some(token) => {
                        client.auth = Some((http::header::AUTHORIZATION, format!("Bearer {token}")));
                        Ok(format!("logged in as {email}"))
                    }
                    None => Err(StepFailure {
                        detail: "login answer has no token".into(),
                        http_status: Some(200),
                        error: None,
                    }),
                });
            let failed = outcome.is_err();
            record(&mut report, &mut on_step, "login", started, outcome);
            if failed {
                return finish(report);
            }
        }
    }

    // health
    let started = Instant::now();
    let outcome = client.expect(http::Method::GET, "/api/gateway/health", None, 200).await.and_then(|v| {
        if v["gateway"]["dispatchQueue"].is_object() {
            Ok(format!(
                "instance {} · {} devices connected",
                v["instanceId"].as_str().unwrap_or("?"),
                v["gateway"]["connectedDevices"]
            ))
        } else {
            Err(StepFailure {
                detail: format!("gateway.dispatchQueue missing in {v}"),
                http_status: Some(200),
                error: None,
            })
        }
    });
    let failed = outcome.is_err();
    record(&mut report, &mut on_step, "health", started, outcome);
    if failed {
        for name in ["register", "list", "ws", "delete"] {
            skip(&mut report, &mut on_step, name);
        }
        return finish(report);
    }

    // register
    let started = Instant::now();
    let body = json!({"name": opts.device_name, "platform": "smoke", "capabilities": ["smoke.check"]});
    let registered = client.expect(http::Method::POST, "/api/gateway/devices", Some(body), 201).await.and_then(|v| {
        let id = v["deviceId"].as_str().map(str::to_owned);
        let endpoint = v["wsEndpoint"].as_str().map(str::to_owned);
        let token = v["sessionToken"].as_str().map(str::to_owned);
        match (id, endpoint, token) {
            (Some(id), Some(endpoint), Some(token)) => Ok((id, endpoint, token)),
            _ => Err(StepFailure {
                detail: format!("register answer lacks deviceId/wsEndpoint/sessionToken: {v}"),
                http_status: Some(201),
                error: None,
            }),
        }
    });
    let (device_id, endpoint, token) = match registered {
        Ok((id, endpoint, token)) => {
            record(&mut report, &mut on_step, "register", started, Ok(format!("device {id} · wsEndpoint {endpoint}")));
            (id, endpoint, token)
        }
        Err(f) => {
            record(&mut report, &mut on_step, "register", started, Err(f));
            for name in ["list", "ws", "delete"] {
                skip(&mut report, &mut on_step, name);
            }
            return finish(report);
        }
    };
    report.device_id = Some(device_id.clone());

    // list, then ws (skipped once something failed), then delete regardless
    let started = Instant::now();
    let outcome = client.expect(http::Method::GET, "/api/gateway", None, 200).await.and_then(|v| {
        let n = v["devices"].as_array().map_or(0, Vec::len);
        let found = v["devices"].as_array().into_iter().flatten().any(|d| d["id"] == device_id.as_str());
        if found {
            Ok(format!("{n} devices, includes {device_id}"))
        } else {
            Err(StepFailure {
                detail: format!("{device_id} not among {n} devices"),
                http_status: Some(200),
                error: None,
            })
        }
    });
    let listed = outcome.is_ok();
    record(&mut report, &mut on_step, "list", started, outcome);

    if listed {
        let started = Instant::now();
        let outcome = ws_register(&endpoint, &device_id, &token, &tls, opts.timeout).await;
        record(&mut report, &mut on_step, "ws", started, outcome);
    } else {
        skip(&mut report, &mut on_step, "ws");
    }

    let started = Instant::now();
    let outcome = client
        .expect(http::Method::DELETE, &format!("/api/gateway/devices/{device_id}"), None, 204)
        .await
        .map(|_| format!("deleted {device_id}"));
    record(&mut report, &mut on_step, "delete", started, outcome);
    finish(report)
}

fn record(
    report: &mut SmokeReport,
    on_step: &mut dyn FnMut(&Step),
    name: &'static str,
    started: Instant,
    outcome: Result<String, StepFailure>,
) {
    let ms = ms(started.elapsed());
    let step = match outcome {
        Ok(detail) => Step { name, status: StepStatus::Ok, ms, detail: Some(detail), http_status: None, error: None },
        Err(f) => {
            report.failed_step.get_or_insert(name);
            Step {
                name,
                status: StepStatus::Fail,
                ms,
                detail: Some(f.detail),
                http_status: f.http_status,
                error: f.error,
            }
        }
    };
    on_step(&step);
    report.steps.push(step);
}

fn skip(report: &mut SmokeReport, on_step: &mut dyn FnMut(&Step), name: &'static str) {
    let step = Step { name, status: StepStatus::Skip, ms: 0.0, detail: None, http_status: None, error: None };
    on_step(&step);
    report.steps.push(step);
}

fn finish(mut report: SmokeReport) -> SmokeReport {
    report.ok = report.failed_step.is_none();
    report
}

async fn ws_register(
    endpoint: &str,
    device_id: &str,
    token: &str,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<String, StepFailure> {
    let (mut stream, handshake) = ws::connect(endpoint, tls, timeout).await?;
    let register = json!({"type": "register", "deviceId": device_id, "sessionToken": token, "protocolVersion": 1});
    ws::send_json(&mut stream, &register, timeout).await?;
    let result = loop {
        let msg = ws::next_json(&mut stream, timeout, "register ack").await?;
        match msg["type"].as_str() {
            Some("welcome") => continue,
            Some("ack") if msg["deviceId"] == device_id => {
                break Ok(format!(
                    "ack session {} after {:.1} ms handshake",
                    msg["sessionId"].as_str().unwrap_or("?"),
                    ms(handshake)
                ));
            }
            Some("error") => {
                let code = msg["error"]["code"].as_str().unwrap_or("?").to_owned();
                break Err(StepFailure {
                    detail: format!("error frame {code} instead of ack"),
                    http_status: None,
                    error: Some(msg),
                });
            }
            _ => {
                break Err(StepFailure { detail: format!("expected ack, got {msg}"), http_status: None, error: None });
            }
        }
    };
    ws::close(stream, Duration::from_secs(2).min(timeout)).await;
    result
}
