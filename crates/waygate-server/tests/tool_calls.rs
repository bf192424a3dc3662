//! Tool calls end to end: a real device on a real socket, every outcome and the counter it moves.

mod common;

use common::*;
use serde_json::{Value, json};

async fn online_device(app: &TestApp, user: &TestUser, caps: &[&str]) -> (String, Ws) {
    let reg = app.register_device(user, caps).await;
    let id = reg["deviceId"].as_str().unwrap().to_owned();
    let ws = device_online(&app.ws_url("/api/gateway/ws"), &id, reg["sessionToken"].as_str().unwrap()).await;
    (id, ws)
}

/// Starts a tool call whose HTTP request waits for the device; the handle yields the response.
fn call_in_background(app: &TestApp, user: &TestUser, body: Value) -> tokio::task::JoinHandle<reqwest::Response> {
    let (client, url, token) = (app.client.clone(), app.url("/api/gateway/tool-calls"), user.token.clone());
    tokio::spawn(async move { client.post(url).bearer_auth(token).json(&body).send().await.unwrap() })
}

#[tokio::test]
async fn a_call_reaches_the_device_and_returns_its_result() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    let (device_id, mut ws) = online_device(&app, &user, &["desktop"]).await;
    let call =
        call_in_background(&app, &user, json!({"capability": "desktop", "tool": "screenshot", "args": {"scale": 2}}));
    let msg = recv_json(&mut ws).await;
    assert_eq!(msg["type"], "tool_call");
    assert_eq!(msg["tool"], "screenshot");
    assert_eq!(msg["args"], json!({"scale": 2}));
    let deadline = humantime::parse_rfc3339(msg["deadline"].as_str().unwrap()).expect("RFC 3339 deadline");
    let left = deadline.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left.as_secs() <= 30 && left.as_secs() >= 25, "default timeout is 30 s, {left:?} left");
    send_json(&mut ws, json!({"type": "tool_result", "callId": msg["callId"], "ok": true, "result": {"png": "abc"}}))
        .await;

    let res = call.await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"id": msg["callId"], "status": "completed", "result": {"png": "abc"}}));

    let view: Value = app
        .get(&user, &format!("/api/gateway/tool-calls/{}", msg["callId"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "completed");
    assert_eq!(view["deviceId"], device_id);
    assert!(view["finishedAt"].is_string());
    let c = app.counters().await;
    assert_eq!(
        (c["completedLastHour"].as_u64(), c["pending"].as_u64(), c["processing"].as_u64()),
        (Some(1), Some(0), Some(0))
    );
    assert_eq!(metric(&app.metrics().await, "waygate_gateway_tool_calls_total{outcome=\"completed\"}"), 1.0);
    app.stop().await;
}

#[tokio::test]
async fn wait_false_answers_202_and_the_result_can_be_fetched() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    let (_, ws) = online_device(&app, &user, &["desktop"]).await;
    let device = serve_device(ws, |tool, args| json!({"ok": true, "result": {"tool": tool, "echo": args}}));
    let res = app
        .post(
            &user,
            "/api/gateway/tool-calls",
            json!({"capability": "desktop", "tool": "echo", "args": [1], "wait": false}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    let path = format!("/api/gateway/tool-calls/{}", body["id"].as_str().unwrap());
    eventually("call completes", || async {
        app.get(&user, &path).await.json::<Value>().await.unwrap()["status"] == "completed"
    })
    .await;
    let view: Value = app.get(&user, &path).await.json().await.unwrap();
    assert_eq!(view["result"], json!({"tool": "echo", "echo": [1]}));
    let other = app.user("other@example.com").await;
    assert_eq!(app.get(&other, &path).await.status(), 404, "another user's call is invisible");
    app.stop().await;
    device.abort();
}

#[tokio::test]
async fn no_registered_capable_device_is_an_immediate_409_without_a_row() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    app.register_device(&user, &["desktop"]).await;
    let res = app.post(&user, "/api/gateway/tool-calls", json!({"capability": "gpu", "tool": "x"})).await;
    assert_eq!(res.status(), 409);
    assert_envelope(&res.json().await.unwrap(), "no_capable_device");
    let c = app.counters().await;
    assert_eq!((c["pending"].as_u64(), c["failedLastHour"].as_u64()), (Some(0), Some(0)), "no row recorded");
    app.stop().await;
}

#[tokio::test]
async fn an_offline_device_fails_fast_when_asked_and_is_recorded() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    app.register_device(&user, &["desktop"]).await;
    let res = app
        .post(&user, "/api/gateway/tool-calls", json!({"capability": "desktop", "tool": "x", "waitForDevice": false}))
        .await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_envelope(&body, "no_capable_device");
    assert!(body["error"]["details"]["callId"].is_string());
    assert_eq!(app.counters().await["failedLastHour"], 1);
    app.stop().await;
}

#[tokio::test]
async fn a_call_waits_for_a_device_to_come_online() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    let reg = app.register_device(&user, &["desktop"]).await;
    let call = call_in_background(&app, &user, json!({"capability": "desktop", "tool": "late", "timeoutMs": 10_000}));
    eventually("call queued", || async { app.counters().await["pending"] == 1 }).await;
    let ws =
        device_online(&app.ws_url("/ws"), reg["deviceId"].as_str().unwrap(), reg["sessionToken"].as_str().unwrap())
            .await;
    let device = serve_device(ws, |_, _| json!({"ok": true, "result": "finally"}));
    let res = call.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["result"], "finally");
    app.stop().await;
    device.abort();
}

#[tokio::test]
async fn no_device_before_the_deadline_is_409_recorded_as_failed() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    app.register_device(&user, &["desktop"]).await;
    let res = app
        .post(&user, "/api/gateway/tool-calls", json!({"capability": "desktop", "tool": "x", "timeoutMs": 300}))
        .await;
    assert_eq!(res.status(), 409);
    assert_envelope(&res.json().await.unwrap(), "no_capable_device");
    let c = app.counters().await;
    assert_eq!((c["failedLastHour"].as_u64(), c["expiredLastHour"].as_u64()), (Some(1), Some(0)));
    app.stop().await;
}

#[tokio::test]
async fn a_silent_device_times_out_with_504_and_counts_as_expired() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    let (_, mut ws) = online_device(&app, &user, &["desktop"]).await;
    let call = call_in_background(&app, &user, json!({"capability": "desktop", "tool": "slow", "timeoutMs": 500}));
    let msg = recv_json(&mut ws).await;
    assert_eq!(msg["type"], "tool_call");
    let res = call.await.unwrap();
    assert_eq!(res.status(), 504);
    assert_envelope(&res.json().await.unwrap(), "tool_call_timeout");
    let c = app.counters().await;
    assert_eq!((c["expiredLastHour"].as_u64(), c["processing"].as_u64()), (Some(1), Some(0)));
    // A late answer changes nothing and is told so.
    send_json(&mut ws, json!({"type": "tool_result", "callId": msg["callId"], "ok": true, "result": 1})).await;
    let view: Value = app
        .get(&user, &format!("/api/gateway/tool-calls/{}", msg["callId"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "expired");
    assert_eq!(view["error"]["code"], "tool_call_timeout");
    assert_eq!(metric(&app.metrics().await, "waygate_gateway_tool_calls_total{outcome=\"expired\"}"), 1.0);
    app.stop().await;
}

#[tokio::test]
async fn losing_the_socket_mid_call_is_502_device_disconnected() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    let (_, mut ws) = online_device(&app, &user, &["desktop"]).await;
    let call = call_in_background(&app, &user, json!({"capability": "desktop", "tool": "x"}));
    assert_eq!(recv_json(&mut ws).await["type"], "tool_call");
    drop(ws); // the device vanishes without answering
    let res = call.await.unwrap();
    assert_eq!(res.status(), 502);
    assert_envelope(&res.json().await.unwrap(), "device_disconnected");
    assert_eq!(app.counters().await["failedLastHour"], 1);
    app.stop().await;
}

#[tokio::test]
async fn a_device_error_is_502_tool_call_failed_with_its_error() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    let (_, ws) = online_device(&app, &user, &["desktop"]).await;
    let device =
        serve_device(ws, |_, _| json!({"ok": false, "error": {"code": "EACCES", "message": "permission denied"}}));
    let res = app.post(&user, "/api/gateway/tool-calls", json!({"capability": "desktop", "tool": "read"})).await;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    assert_envelope(&body, "tool_call_failed");
    assert_eq!(body["error"]["message"], "permission denied");
    assert_eq!(body["error"]["details"]["deviceError"], json!({"code": "EACCES", "message": "permission denied"}));
    assert_eq!(app.counters().await["failedLastHour"], 1);
    app.stop().await;
    device.abort();
}

#[tokio::test]
async fn targeted_calls_run_on_the_named_device_only() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    let (a_id, a) = online_device(&app, &user, &["desktop"]).await;
    let (b_id, b) = online_device(&app, &user, &["desktop"]).await;
    let a_task = serve_device(a, |_, _| json!({"ok": true, "result": "a"}));
    let b_task = serve_device(b, |_, _| json!({"ok": true, "result": "b"}));
    for _ in 0..3 {
        let res = app
            .post(&user, "/api/gateway/tool-calls", json!({"capability": "desktop", "tool": "x", "deviceId": b_id}))
            .await;
        assert_eq!(res.json::<Value>().await.unwrap()["result"], "b");
    }
    let res = app
        .post(&user, "/api/gateway/tool-calls", json!({"capability": "desktop", "tool": "x", "deviceId": a_id}))
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["result"], "a");
    app.stop().await;
    a_task.abort();
    b_task.abort();
}

#[tokio::test]
async fn invalid_tool_calls_are_400() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    for body in [
        json!({"capability": "desktop"}),
        json!({"capability": "Desk Top", "tool": "x"}),
        json!({"capability": "desktop", "tool": "x", "timeoutMs": 0}),
        json!({"capability": "desktop", "tool": ""}),
    ] {
        let res = app.post(&user, "/api/gateway/tool-calls", body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        assert_envelope(&res.json().await.unwrap(), "bad_request");
    }
    let anon = app
        .client
        .post(app.url("/api/gateway/tool-calls"))
        .json(&json!({"capability": "d", "tool": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn results_for_unknown_calls_get_an_error_frame() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    let (_, mut ws) = online_device(&app, &user, &["desktop"]).await;
    send_json(&mut ws, json!({"type": "tool_result", "callId": "nope", "ok": true, "id": 5})).await;
    let err = recv_json(&mut ws).await;
    assert_envelope(&err, "not_found");
    assert_eq!(err["id"], 5);
    let (mut anon, _) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut anon, json!({"type": "tool_result", "callId": "nope", "ok": true})).await;
    assert_envelope(&recv_json(&mut anon).await, "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn calls_spread_across_a_users_devices_and_each_runs_once() {
    let app = spawn_app().await;
    let user = app.user("t@example.com").await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (_, ws) = online_device(&app, &user, &["desktop"]).await;
        tasks.push(serve_device(ws, |_, args| json!({"ok": true, "result": args})));
    }
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let (client, url, token) = (app.client.clone(), app.url("/api/gateway/tool-calls"), user.token.clone());
            tokio::spawn(async move {
                let res = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"capability": "desktop", "tool": "n", "args": i}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let v: Value = res.json().await.unwrap();
                assert_eq!(v["result"], i);
                v["id"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for c in calls {
        ids.push(c.await.unwrap());
    }
    app.stop().await;
    let mut executed = Vec::new();
    let mut busy = 0;
    for t in tasks {
        let ran = t.await.unwrap();
        busy += usize::from(!ran.is_empty());
        executed.extend(ran);
    }
    executed.sort();
    ids.sort();
    assert_eq!(executed, ids, "every call executed exactly once");
    assert!(busy >= 2, "work was spread over the devices");
}

/// The message rate limit protects the server from clients; a device's results answer calls the
/// server sent at its own pace, so a busy device is never refused its results (that would
/// expire calls the device really ran).
#[tokio::test]
async fn a_busy_device_is_not_rate_limited_on_its_results() {
    let app = spawn_app_with(&[("WAYGATE_MESSAGES_PER_SECOND", "2")]).await;
    let user = app.user("t@example.com").await;
    let (_, mut ws) = online_device(&app, &user, &["desktop"]).await;
    let mut ids = Vec::new();
    for n in 0..30 {
        let body = json!({"capability": "desktop", "tool": "echo", "args": {"n": n}, "wait": false});
        let res = app.post(&user, "/api/gateway/tool-calls", body).await;
        assert_eq!(res.status(), 202);
        ids.push(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    for _ in 0..30 {
        let msg = recv_json(&mut ws).await;
        assert_eq!(msg["type"], "tool_call", "{msg}");
        send_json(&mut ws, json!({"type": "tool_result", "callId": msg["callId"], "ok": true, "result": msg["args"]}))
            .await;
    }
    for id in &ids {
        let path = format!("/api/gateway/tool-calls/{id}");
        eventually("every result recorded", || async {
            app.get(&user, &path).await.json::<Value>().await.unwrap()["status"] == "completed"
        })
        .await;
    }
    assert_eq!(metric(&app.metrics().await, "waygate_gateway_tool_calls_total{outcome=\"completed\"}"), 30.0);
    // Results for calls it is not running are still charged: a flood of them is refused and,
    // sustained, closes the socket with 1008 like any other flood.
    for _ in 0..10 {
        send_json(&mut ws, json!({"type": "tool_result", "callId": "nope", "ok": true})).await;
    }
    assert_eq!(recv_close(&mut ws).await.0, 1008);
    app.stop().await;
}
