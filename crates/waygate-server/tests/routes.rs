//! Action routing to a real webhook and real RabbitMQ queues, `$default`, `$connect`,
//! `$disconnect` (at least once), failures answered with `route_failed`, and reload.

mod common;

use common::*;
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use serde_json::{Value, json};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn amqp() -> Option<lapin::Channel> {
    let url = std::env::var("WAYGATE_TEST_AMQP_URL").unwrap_or_else(|_| AMQP.to_owned());
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        lapin::Connection::connect(&url, lapin::ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(c)) => Some(c.create_channel().await.unwrap()),
        other => {
            assert!(!waygate_testkit::in_ci(), "RabbitMQ unreachable at {url} under CI=true: {other:?}");
            eprintln!("\n*** SKIP: RabbitMQ unreachable at {url} ***\n");
            None
        }
    }
}

fn unique(name: &str) -> String {
    format!("wgt.{name}.{:08x}", rand::random::<u32>())
}

#[tokio::test]
async fn a_webhook_route_relays_its_json_reply_with_the_request_id() {
    let hook = Webhook::start(|v| (200, json!({"echo": v["body"]["text"], "seen": v["action"]}))).await;
    let (app, _) = spawn_app_with_routes(&[("dev", &hook.url)], &[]).await;
    let (mut ws, welcome) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut ws, json!({"action": "dev", "text": "build it", "id": "r1"})).await;
    let reply = recv_json(&mut ws).await;
    assert_eq!(
        reply,
        json!({"type": "response", "action": "dev", "id": "r1", "data": {"echo": "build it", "seen": "dev"}})
    );
    let env = &hook.bodies()[0];
    assert_eq!(env["connectionId"], welcome["connectionId"]);
    assert_eq!(env["userId"], Value::Null);
    assert!(env["receivedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(env["body"], json!({"action": "dev", "text": "build it", "id": "r1"}), "the client's whole message");
    app.stop().await;
}

#[tokio::test]
async fn failing_targets_answer_route_failed_never_silence() {
    let hook = Webhook::start(|_| (500, json!({"oops": true}))).await;
    let (app, _) = spawn_app_with_routes(
        &[("broken", &hook.url), ("gone", "http://127.0.0.1:9/nothing-listens"), ("queue", "amqp://wgt.never")],
        &[("AMQP_URL", "amqp://guest:guest@127.0.0.1:9/%2f")],
    )
    .await;
    let (mut ws, _) = connect_welcomed(&app.ws_url("/ws")).await;
    for (action, id) in [("broken", 1), ("gone", 2), ("queue", 3)] {
        send_json(&mut ws, json!({"action": action, "id": id})).await;
        let err = recv_json(&mut ws).await;
        assert_envelope(&err, "route_failed");
        assert_eq!(err["id"], id, "{err}");
    }
    assert!(metric(&app.metrics().await, "waygate_route_failures_total") >= 3.0);
    send_json(&mut ws, json!({"action": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong", "the connection stays open");
    app.stop().await;
}

#[tokio::test]
async fn routed_actions_reach_a_real_rabbitmq_queue_after_the_broker_confirms() {
    let Some(channel) = amqp().await else { return };
    let queue = unique("agents.pm");
    let target = format!("amqp://{queue}");
    let (app, _) = spawn_app_with_routes(&[("pm", &target)], &[("AMQP_URL", AMQP)]).await;
    let ready: Value = app.client.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["amqp"], "ok");
    let (mut ws, welcome) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut ws, json!({"action": "pm", "task": "plan", "id": 7})).await;
    assert_eq!(recv_json(&mut ws).await, json!({"type": "routed", "action": "pm", "id": 7}));
    send_json(&mut ws, json!({"action": "pm", "task": "no id"})).await; // confirmed, not acknowledged
    send_json(&mut ws, json!({"action": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");

    let mut got = Vec::new();
    for _ in 0..100 {
        match channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            Some(m) => got.push(serde_json::from_slice::<Value>(&m.delivery.data).unwrap()),
            None if got.len() == 2 => break,
            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["connectionId"], welcome["connectionId"]);
    assert_eq!(got[0]["body"], json!({"action": "pm", "task": "plan", "id": 7}));
    assert_eq!(got[1]["body"]["task"], "no id");
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn default_route_takes_unknown_actions_and_built_ins_stay_built_in() {
    let hook = Webhook::start(|v| (200, json!({"handled": v["action"]}))).await;
    let (app, _) = spawn_app_with_routes(&[("$default", &hook.url)], &[]).await;
    let (mut ws, _) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut ws, json!({"action": "anything", "id": 1})).await;
    assert_eq!(recv_json(&mut ws).await["data"], json!({"handled": "anything"}));
    send_json(&mut ws, json!({"action": "ping", "id": 2})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
    assert_eq!(hook.bodies().len(), 1, "ping never reaches $default");
    app.stop().await;
}

#[tokio::test]
async fn connect_route_decides_before_the_upgrade() {
    let hook = Webhook::start(|v| {
        let allowed = !v["body"]["userAgent"].as_str().is_some_and(|ua| ua.contains("blocked"));
        if allowed { (200, json!({})) } else { (403, json!({"reason": "no"})) }
    })
    .await;
    let (app, _) = spawn_app_with_routes(&[("$connect", &hook.url)], &[]).await;
    let (_ok, welcome) = connect_welcomed(&app.ws_url("/ws/room")).await;
    let seen = &hook.bodies()[0];
    assert_eq!(seen["action"], "$connect");
    assert_eq!(seen["connectionId"], welcome["connectionId"], "the id decided before the upgrade is the one used");
    assert_eq!(seen["body"]["path"], "/ws/room");
    assert_eq!(seen["body"]["sourceIp"], "127.0.0.1");

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = app.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut().insert("User-Agent", "blocked-client/1.0".parse().unwrap());
    let (status, body) = refused_upgrade_with(req).await;
    assert_eq!(status, 403);
    assert_envelope(&body, "forbidden");
    app.stop().await;
}

#[tokio::test]
async fn disconnect_is_delivered_at_least_once_even_when_the_target_was_down() {
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = up.clone();
    let hook = Webhook::start(move |_| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) { (200, json!({})) } else { (503, json!({})) }
    })
    .await;
    let (app, _) =
        spawn_app_with_routes(&[("$disconnect", &hook.url)], &[("WAYGATE_INSTANCE_ID", "routes-test")]).await;
    let (ws, welcome) = connect_welcomed(&app.ws_url("/ws")).await;
    let id = welcome["connectionId"].as_str().unwrap().to_owned();
    drop(ws);
    eventually("the first attempt fails", || async { !hook.bodies().is_empty() }).await;
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    // Maintenance retries every few seconds until the target takes it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let bodies = hook.bodies();
        if bodies.len() >= 2 {
            let last = bodies.last().unwrap();
            assert_eq!(
                (last["action"].as_str(), last["connectionId"].as_str()),
                (Some("$disconnect"), Some(id.as_str()))
            );
            assert_eq!(last["body"]["code"], 1006, "the client vanished without a close frame");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no retry delivered the $disconnect");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let store = waygate_store::Store::connect(&app.db_url).await.unwrap();
    eventually("the record is forgotten once delivered", || async {
        store.owed_disconnects("routes-test", 10).await.unwrap().is_empty()
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn routes_change_with_config_reload() {
    let first = Webhook::start(|_| (200, json!("first"))).await;
    let second = Webhook::start(|_| (200, json!("second"))).await;
    let (app, file) = spawn_app_with_routes(&[("ask", &first.url)], &[("AGENT_CONTROL_PLANE_TOKEN", "ctl")]).await;
    let (mut ws, _) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut ws, json!({"action": "ask"})).await;
    assert_eq!(recv_json(&mut ws).await["data"], "first");
    write_routes(&file, &[("ask", &second.url)]);
    let res: Value = app
        .client
        .post(app.url("/api/gateway/control"))
        .bearer_auth("ctl")
        .json(&json!({"command": "config.reload"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["changed"], json!(["routes"]));
    send_json(&mut ws, json!({"action": "ask"})).await;
    assert_eq!(recv_json(&mut ws).await["data"], "second", "the open connection uses the new route");
    app.stop().await;
}
