//! Cross-instance tool-call dispatch (issue 4): devices held by instance B, calls POSTed to
//! instance A with `wait=true` at a fixed rate; one event is one completed call, its latency the
//! HTTP request's round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::drive::{self, ReportBase};
use crate::error::BenchError;
use crate::report::{Recorder, Report};
use crate::ws::{self, Ws};

/// How to reach the two instances and what load to put on them.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// `http://host:port` of the instance that accepts the calls (A).
    pub accept_url: String,
    /// `http://host:port` of the instance the devices connect to (B).
    pub device_url: String,
    /// A session token; else `email` + `password` log in on A.
    pub token: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub devices: usize,
    /// Calls per second (open loop).
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    /// `timeoutMs` of each call.
    pub call_timeout: Duration,
    /// Calls outstanding at once; a tick that finds none free is counted as skipped.
    pub max_in_flight: usize,
    pub server_pid: Option<u32>,
    pub progress: bool,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        DispatchOptions {
            accept_url: "http://127.0.0.1:8080".into(),
            device_url: "http://127.0.0.1:8081".into(),
            token: None,
            email: None,
            password: None,
            devices: 4,
            rate: 500.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            call_timeout: Duration::from_secs(10),
            max_in_flight: 2_000,
            server_pid: None,
            progress: true,
        }
    }
}

fn http_err(what: &'static str) -> impl FnOnce(reqwest::Error) -> BenchError {
    move |source| BenchError::Http { what, source }
}

async fn json_ok(res: reqwest::Response, what: &'static str) -> Result<Value, BenchError> {
    let status = res.status();
    if !status.is_success() {
        let body = res.text().await.unwrap_or_default();
        return Err(BenchError::HttpStatus { what, status: status.as_u16(), body });
    }
    if status == reqwest::StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    res.json().await.map_err(http_err(what))
}

pub async fn run(opts: DispatchOptions, cancel: CancellationToken) -> Result<Report, BenchError> {
    if !(opts.rate > 0.0 && opts.rate.is_finite()) || opts.devices == 0 || opts.max_in_flight == 0 {
        return Err(BenchError::Options("--rate, --devices and --max-in-flight must be positive".into()));
    }
    let a = opts.accept_url.trim_end_matches('/').to_owned();
    let b = opts.device_url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.max_in_flight)
        .timeout(opts.call_timeout + Duration::from_secs(5))
        .build()
        .map_err(http_err("client"))?;
    let token = match (&opts.token, &opts.email, &opts.password) {
        (Some(t), _, _) => t.clone(),
        (None, Some(email), Some(password)) => {
            let res = client
                .post(format!("{a}/api/auth/login"))
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .map_err(http_err("login"))?;
            let body = json_ok(res, "login").await?;
            body["token"].as_str().unwrap_or_default().to_owned()
        }
        _ => return Err(BenchError::Options("dispatch needs --token or --email and --password".into())),
    };
    let auth = format!("Bearer {token}");

    // A capability of its own, so only this run's devices are candidates.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let capability = format!("bench.{}-{}", std::process::id(), nanos % 1_000_000_000);
    let rec = Arc::new(Recorder::new());
    let mut device_ids = Vec::new();
    let executed = Arc::new(AtomicU64::new(0));
    let stop_devices = cancel.child_token();
    let mut device_tasks = JoinSet::new();
    let ws_base = b.replacen("http", "ws", 1);
    let result = async {
        for i in 0..opts.devices {
            let res = client
                .post(format!("{a}/api/gateway/devices"))
                .header("authorization", &auth)
                .json(&json!({"name": format!("bench-{i}"), "platform": "bench", "capabilities": [capability]}))
                .send()
                .await
                .map_err(http_err("register device"))?;
            let reg = json_ok(res, "register device").await?;
            let id = reg["deviceId"].as_str().unwrap_or_default().to_owned();
            let session = reg["sessionToken"].as_str().unwrap_or_default().to_owned();
            device_ids.push(id.clone());
            let socket = device_online(&format!("{ws_base}/api/gateway/ws"), &id, &session, &rec).await?;
            rec.connections_opened.fetch_add(1, Ordering::Relaxed);
            device_tasks.spawn(device(socket, executed.clone(), stop_devices.clone()));
        }
        calls(&opts, &client, &a, &auth, &capability, &rec, &cancel).await
    }
    .await;
    stop_devices.cancel();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), async { while device_tasks.join_next().await.is_some() {} }).await;
    device_tasks.shutdown().await;
    for id in &device_ids {
        let _ = client.delete(format!("{a}/api/gateway/devices/{id}")).header("authorization", &auth).send().await;
    }
    let (phase, skipped) = result?;
    let events = rec.measured.load(Ordering::Relaxed);
    let server = drive::server_stats(opts.server_pid, &phase, events);
    let sent = rec.sent.load(Ordering::Relaxed);
    let mut notes = vec![
        format!(
            "calls POSTed to {a} with wait=true; {} devices (capability {capability}) held by {b}; devices executed {} calls",
            opts.devices,
            executed.load(Ordering::Relaxed)
        ),
        "one event = one completed call (HTTP 200); latency = the POST's round trip".into(),
    ];
    if skipped > 0 {
        notes.push(format!("{skipped} calls were not sent: {} already in flight", opts.max_in_flight));
    }
    let base = ReportBase {
        workload: "dispatch",
        target: &a,
        connections: opts.devices,
        rate: Some(opts.rate),
        payload: 0,
        warmup: opts.warmup,
        event: "calls",
    };
    // Calls that neither completed nor failed with an answer (the welcomes of the devices are
    // in `received` too).
    let answered = rec.received.load(Ordering::Relaxed).saturating_sub(opts.devices as u64)
        + rec.error_frames.load(Ordering::Relaxed);
    let lost = sent.saturating_sub(answered);
    Ok(drive::build_report(base, &rec, &phase, server, lost, notes))
}

/// Paces the calls for warm-up + duration; returns the measured phase and the skipped ticks.
async fn calls(
    opts: &DispatchOptions,
    client: &reqwest::Client,
    a: &str,
    auth: &str,
    capability: &str,
    rec: &Arc<Recorder>,
    cancel: &CancellationToken,
) -> Result<(drive::Phase, u64), BenchError> {
    let stop = cancel.child_token();
    let permits = Arc::new(Semaphore::new(opts.max_in_flight));
    let url = format!("{a}/api/gateway/tool-calls");
    let body = serde_json::to_vec(&json!({
        "capability": capability, "tool": "echo", "args": {"n": 1},
        "timeoutMs": opts.call_timeout.as_millis() as u64
    }))
    .expect("static JSON");
    let mut skipped = 0u64;
    let mut inflight = JoinSet::new();
    let pacer = async {
        let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate));
        iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = iv.tick() => {}
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                skipped += 1;
                continue;
            };
            while inflight.try_join_next().is_some() {}
            let req = client
                .post(&url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .body(body.clone());
            let rec = rec.clone();
            rec.sent.fetch_add(1, Ordering::Relaxed);
            inflight.spawn(async move {
                let t0 = Instant::now();
                let res = req.send().await;
                let outcome = match res {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => {
                        let _ = r.bytes().await;
                        Ok(())
                    }
                    Ok(r) => {
                        let status = r.status();
                        Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
                    }
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => {
                        rec.received.fetch_add(1, Ordering::Relaxed);
                        rec.record(t0.elapsed());
                    }
                    Err(e) => rec.error(e),
                }
                drop(permit);
            });
        }
    };
    let measure = async {
        let phase =
            drive::measure(rec, opts.warmup, opts.duration, opts.server_pid, opts.progress, "dispatch", cancel).await;
        stop.cancel();
        phase
    };
    let (phase, ()) = tokio::join!(measure, pacer);
    let drained = tokio::time::timeout(opts.call_timeout + Duration::from_secs(5), async {
        while inflight.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        rec.timeouts.fetch_add(inflight.len() as u64, Ordering::Relaxed);
        inflight.shutdown().await;
    }
    Ok((phase?, skipped))
}

/// Connects a device to `url`, registers it and waits for the ack.
async fn device_online(url: &str, id: &str, session: &str, rec: &Recorder) -> Result<Ws, BenchError> {
    let timeout = Duration::from_secs(10);
    let mut socket = ws::connect(url, rec, timeout).await?;
    let register = json!({"type": "register", "deviceId": id, "sessionToken": session, "protocolVersion": 1});
    socket.send(Message::text(register.to_string())).await?;
    loop {
        let text = ws::next_text(&mut socket, timeout, "ack").await?;
        match ws::frame_type(&text) {
            Some("ack") => return Ok(socket),
            Some("error") => return Err(BenchError::Protocol { expected: "ack", got: text }),
            _ => {}
        }
    }
}

/// Answers every tool call at once with `{"ok":true}`.
async fn device(mut socket: Ws, executed: Arc<AtomicU64>, stop: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = socket.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            _ => return,
        };
        if ws::frame_type(&text) != Some("tool_call") {
            continue;
        }
        let Some(call_id) = string_field(&text, "\"callId\":\"") else { continue };
        let reply = format!(r#"{{"type":"tool_result","callId":"{call_id}","ok":true,"result":{{"ok":true}}}}"#);
        if socket.send(Message::text(reply)).await.is_err() {
            return;
        }
        executed.fetch_add(1, Ordering::Relaxed);
    }
    ws::close(socket).await;
}

fn string_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}
