//! A real instance is SIGKILLed while it holds a claimed tool call: the call is failed with a
//! clear error once its lease lapses (never lost, never run twice, one terminal state), and
//! the device carries on through another instance.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("frame in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

async fn device(http: &str, id: &str, token: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/api/gateway/ws")).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws.send(Message::text(json!({"type": "register", "deviceId": id, "sessionToken": token}).to_string()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "ack");
    ws
}

#[tokio::test]
async fn a_killed_claimer_fails_its_call_once_after_the_lease() {
    let Some(pg) = waygate_testkit::PgSchema::create().await else { return };
    let Some(redis) = waygate_testkit::RedisNs::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = |name: &'static str| {
        vec![
            ("DATABASE_URL", pg.url.clone()),
            ("REDIS_URL", redis.url.clone()),
            ("WAYGATE_REDIS_PREFIX", redis.prefix.clone()),
            ("WAYGATE_CLUSTER", "true".into()),
            ("WAYGATE_INSTANCE_ID", name.into()),
            ("GATEWAY_DISPATCH_LEASE_MS", "2000".into()),
            ("TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS", "1".into()),
        ]
    };
    let start = |name| {
        let vars = env(name);
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start(dir.path(), &pairs)
    };
    let a = start("a");
    let mut b = start("b");

    let client = reqwest::Client::new();
    let token = a.new_user_token(dir.path(), "kill@example.com", &[("DATABASE_URL", &pg.url)]).await;
    let (id, session) = a.register_device(&token, "d").await;

    let mut on_b = device(&b.http, &id, &session).await;
    let call = {
        let (client, url, token) = (client.clone(), a.url("/api/gateway/tool-calls"), token.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"capability": "desktop", "tool": "long", "timeoutMs": 60_000}))
                .send()
                .await
                .unwrap()
        })
    };
    let delivered = next_json(&mut on_b).await;
    assert_eq!(delivered["type"], "tool_call");
    let call_id = delivered["callId"].as_str().unwrap().to_owned();

    b.signal(libc::SIGKILL);
    b.wait_exit(Duration::from_secs(5));

    // A fails the call once B's lease lapses: a clear error, well before the 60 s deadline.
    let res = call.await.unwrap();
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "device_disconnected");
    assert_eq!(body["error"]["details"]["callId"], call_id.as_str());

    // The device reconnects through A: the failed call is not delivered again, and a late
    // result for it changes nothing.
    let mut on_a = device(&a.http, &id, &session).await;
    on_a.send(Message::text(
        json!({"type": "tool_result", "callId": call_id, "ok": true, "result": "late"}).to_string(),
    ))
    .await
    .unwrap();
    let reply = next_json(&mut on_a).await;
    assert_eq!(reply["error"]["code"], "not_found", "{reply}");
    let view: Value = client
        .get(a.url(&format!("/api/gateway/tool-calls/{call_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (view["status"].as_str(), view["error"]["code"].as_str()),
        (Some("failed"), Some("device_disconnected"))
    );
    let health: Value = client.get(a.url("/api/gateway/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["gateway"]["dispatchQueue"]["failedLastHour"], 1);
    assert_eq!(health["gateway"]["dispatchQueue"]["processing"], 0);

    // New work flows through the surviving instance.
    let next = {
        let (client, url, token) = (client.clone(), a.url("/api/gateway/tool-calls"), token.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"capability": "desktop", "tool": "after"}))
                .send()
                .await
                .unwrap()
        })
    };
    let msg = next_json(&mut on_a).await;
    assert_eq!(msg["tool"], "after");
    assert_ne!(msg["callId"], call_id.as_str());
    on_a.send(Message::text(
        json!({"type": "tool_result", "callId": msg["callId"], "ok": true, "result": 1}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next.await.unwrap().status(), 200);
    drop(a);
}

/// `$disconnect` is owed for every connection of a killed instance; a live instance delivers
/// them once the dead one's heartbeat lapses.
#[tokio::test]
async fn a_killed_instance_disconnects_are_delivered_by_a_survivor() {
    let Some(pg) = waygate_testkit::PgSchema::create().await else { return };
    let Some(redis) = waygate_testkit::RedisNs::create().await else { return };
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let rec = received.clone();
    let hook = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let rec = rec.clone();
        async move {
            rec.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/disconnect", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("routes.toml"),
        format!("[[routes]]\naction = \"$disconnect\"\ntarget = \"{hook_url}\"\n"),
    )
    .unwrap();
    let start = |name: &str| {
        let vars = [
            ("DATABASE_URL", pg.url.as_str()),
            ("REDIS_URL", redis.url.as_str()),
            ("WAYGATE_REDIS_PREFIX", redis.prefix.as_str()),
            ("WAYGATE_INSTANCE_ID", name),
            ("WAYGATE_CONFIG", "routes.toml"),
        ];
        Server::start(dir.path(), &vars)
    };
    let mut doomed = start("doomed");
    let _survivor = start("survivor");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", doomed.http)).await.unwrap();
    let welcome = next_json(&mut ws).await;
    let id = welcome["connectionId"].as_str().unwrap().to_owned();
    doomed.signal(libc::SIGKILL);
    doomed.wait_exit(Duration::from_secs(5));

    // Staleness (15 s) plus a maintenance round: well within a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = received.lock().unwrap().iter().find(|v| v["connectionId"] == id.as_str()).cloned();
        if let Some(v) = found {
            assert_eq!(v["action"], "$disconnect");
            assert_eq!(v["body"]["code"], 1006);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the survivor never delivered the $disconnect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
