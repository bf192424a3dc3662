//! Cluster mode: several real instances on one PostgreSQL schema and one Redis namespace,
//! talking to real device sockets. Skipped loudly without PostgreSQL/Redis (fails under CI=true).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use waygate_testkit::{CutProxy, PgSchema, RedisNs};

struct Cluster {
    pg: PgSchema,
    redis: RedisNs,
}

impl Cluster {
    async fn new() -> Option<Cluster> {
        let pg = PgSchema::create().await?;
        let redis = RedisNs::create().await?;
        Some(Cluster { pg, redis })
    }

    async fn instance(&self, name: &str, extra: &[(&str, &str)]) -> TestApp {
        self.instance_with(name, extra, None).await
    }

    async fn instance_with(&self, name: &str, extra: &[(&str, &str)], file: Option<std::path::PathBuf>) -> TestApp {
        let mut pairs = vec![
            ("DATABASE_URL", self.pg.url.as_str()),
            ("REDIS_URL", self.redis.url.as_str()),
            ("WAYGATE_REDIS_PREFIX", self.redis.prefix.as_str()),
            ("WAYGATE_CLUSTER", "true"),
            ("WAYGATE_INSTANCE_ID", name),
        ];
        pairs.extend_from_slice(extra);
        spawn_app_layers(tempfile::tempdir().unwrap(), &pairs, file).await
    }
}

#[tokio::test]
async fn a_call_accepted_on_a_runs_on_a_device_held_by_b() {
    let Some(c) = Cluster::new().await else { return };
    let a = c.instance("a", &[]).await;
    let b = c.instance("b", &[]).await;
    let user = a.user("x@example.com").await;
    let reg = a.register_device(&user, &["desktop"]).await;
    let id = reg["deviceId"].as_str().unwrap().to_owned();
    let ws = device_online(&b.ws_url("/api/gateway/ws"), &id, reg["sessionToken"].as_str().unwrap()).await;
    let device = serve_device(ws, |tool, args| json!({"ok": true, "result": {"tool": tool, "args": args}}));

    // The session minted on A is valid on B, and A sees the device online through B's heartbeat.
    let on_a: Value = a.get(&user, &format!("/api/gateway/devices/{id}")).await.json().await.unwrap();
    assert_eq!(on_a["status"], "online");
    assert_eq!(b.get(&user, "/api/gateway").await.status(), 200);

    let res =
        a.post(&user, "/api/gateway/tool-calls", json!({"capability": "desktop", "tool": "t", "args": [1]})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["result"], json!({"tool": "t", "args": [1]}));

    // Counters are cluster-wide: both instances report the same queue.
    let (ca, cb) = (a.counters().await, b.counters().await);
    assert_eq!(ca, cb);
    assert_eq!(ca["completedLastHour"], 1);
    let ha: Value = a.client.get(a.url("/api/gateway/health")).send().await.unwrap().json().await.unwrap();
    let hb: Value = b.client.get(b.url("/api/gateway/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (ha["gateway"]["connectedDevices"].as_u64(), hb["gateway"]["connectedDevices"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!((ha["instanceId"].as_str(), hb["instanceId"].as_str()), (Some("a"), Some("b")));
    let ready: Value = a.client.get(a.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"], json!({"database": "ok", "redis": "ok"}));
    device.abort();
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn timeouts_and_disconnects_across_instances_are_clear_and_counted() {
    let Some(c) = Cluster::new().await else { return };
    let a = c.instance("a", &[]).await;
    let b = c.instance("b", &[]).await;
    let user = a.user("x@example.com").await;
    let reg = a.register_device(&user, &["desktop"]).await;
    let (id, token) = (reg["deviceId"].as_str().unwrap().to_owned(), reg["sessionToken"].as_str().unwrap().to_owned());

    let mut ws = device_online(&b.ws_url("/ws"), &id, &token).await;
    let call = {
        let (client, url, t) = (a.client.clone(), a.url("/api/gateway/tool-calls"), user.token.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(t)
                .json(&json!({"capability": "desktop", "tool": "slow", "timeoutMs": 800}))
                .send()
                .await
                .unwrap()
        })
    };
    assert_eq!(recv_json(&mut ws).await["type"], "tool_call", "delivered through B");
    let res = call.await.unwrap();
    assert_eq!(res.status(), 504);
    assert_envelope(&res.json().await.unwrap(), "tool_call_timeout");
    assert_eq!(b.counters().await["expiredLastHour"], 1);

    let call = {
        let (client, url, t) = (a.client.clone(), a.url("/api/gateway/tool-calls"), user.token.clone());
        tokio::spawn(async move {
            client.post(url).bearer_auth(t).json(&json!({"capability": "desktop", "tool": "x"})).send().await.unwrap()
        })
    };
    assert_eq!(recv_json(&mut ws).await["type"], "tool_call");
    drop(ws);
    let res = call.await.unwrap();
    assert_eq!(res.status(), 502);
    assert_envelope(&res.json().await.unwrap(), "device_disconnected");
    let counters = a.counters().await;
    assert_eq!((counters["failedLastHour"].as_u64(), counters["pending"].as_u64()), (Some(1), Some(0)));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn deleting_a_device_on_a_closes_its_socket_on_b() {
    let Some(c) = Cluster::new().await else { return };
    let a = c.instance("a", &[]).await;
    let b = c.instance("b", &[]).await;
    let user = a.user("x@example.com").await;
    let reg = a.register_device(&user, &["desktop"]).await;
    let id = reg["deviceId"].as_str().unwrap();
    let mut ws = device_online(&b.ws_url("/ws"), id, reg["sessionToken"].as_str().unwrap()).await;
    assert_eq!(a.delete(&user, &format!("/api/gateway/devices/{id}")).await.status(), 204);
    assert_eq!(recv_close(&mut ws).await, (4404, "device deleted".to_owned()));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn config_reload_on_one_instance_applies_on_every_instance() {
    let Some(c) = Cluster::new().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("waygate.toml");
    std::fs::write(&file, "waygate_max_connections = 100\n").unwrap();
    let extra = [("AGENT_CONTROL_PLANE_TOKEN", "ctl")];
    let a = c.instance_with("a", &extra, Some(file.clone())).await;
    let b = c.instance_with("b", &extra, Some(file.clone())).await;
    let (_held, _) = connect_welcomed(&b.ws_url("/ws")).await;
    std::fs::write(&file, "waygate_max_connections = 1\n").unwrap();
    let res = a
        .client
        .post(a.url("/api/gateway/control"))
        .bearer_auth("ctl")
        .json(&json!({"command": "config.reload"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"reloaded": true, "changed": ["WAYGATE_MAX_CONNECTIONS"]}));
    // B applies it too: with one connection open it now refuses the next upgrade.
    let url = b.ws_url("/ws");
    eventually("B applied the reload", || {
        let url = url.clone();
        async move { matches!(tokio_tungstenite::connect_async(url).await, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503) }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn readiness_turns_503_when_redis_is_lost_and_recovers_by_itself() {
    let Some(c) = Cluster::new().await else { return };
    let target = c.redis.url.trim_start_matches("redis://").trim_end_matches('/').parse().unwrap();
    let proxy = CutProxy::start(target).await;
    let via_proxy = format!("redis://{}", proxy.addr);
    let a = c.instance("a", &[("REDIS_URL", via_proxy.as_str())]).await;
    let status = |app: &TestApp| {
        let (client, url) = (app.client.clone(), app.url("/readyz"));
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&a).await, 200);
    proxy.cut();
    eventually("readiness fails without redis", || async { status(&a).await == 503 }).await;
    let body: Value = a.client.get(a.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_envelope(&body, "service_unavailable");
    assert_eq!(body["error"]["details"]["checks"]["redis"], "unreachable");
    proxy.restore();
    eventually("readiness recovers", || async { status(&a).await == 200 }).await;
    a.stop().await;
}

/// 2,000 calls spread over 3 instances and 30 devices: each call completes exactly once, as
/// recorded by the devices themselves.
#[tokio::test]
async fn two_thousand_calls_across_three_instances_each_run_exactly_once() {
    let Some(c) = Cluster::new().await else { return };
    let apps = Arc::new(vec![c.instance("a", &[]).await, c.instance("b", &[]).await, c.instance("c", &[]).await]);
    let user = apps[0].user("load@example.com").await;
    let mut devices = Vec::new();
    for i in 0..30 {
        let reg = apps[0].register_device(&user, &["desktop"]).await;
        let holder = &apps[i % 3];
        let ws = device_online(
            &holder.ws_url("/api/gateway/ws"),
            reg["deviceId"].as_str().unwrap(),
            reg["sessionToken"].as_str().unwrap(),
        )
        .await;
        devices.push(serve_device(ws, |_, args| json!({"ok": true, "result": args})));
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(48));
    let mut calls = Vec::new();
    for n in 0..2000u32 {
        let (apps, token, sem) = (apps.clone(), user.token.clone(), sem.clone());
        calls.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let app = &apps[(n % 3) as usize];
            let res = app
                .client
                .post(app.url("/api/gateway/tool-calls"))
                .bearer_auth(token)
                .json(&json!({"capability": "desktop", "tool": "n", "args": n, "timeoutMs": 60_000}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "call {n}");
            let v: Value = res.json().await.unwrap();
            assert_eq!(v["result"], n, "call {n} got its own result");
            v["id"].as_str().unwrap().to_owned()
        }));
    }
    let mut accepted = BTreeSet::new();
    for call in calls {
        assert!(accepted.insert(call.await.unwrap()), "call ids are unique");
    }
    let apps = Arc::try_unwrap(apps).ok().unwrap();
    for app in apps {
        app.stop().await;
    }
    let mut executed: HashMap<String, usize> = HashMap::new();
    for d in devices {
        for id in d.await.unwrap() {
            *executed.entry(id).or_default() += 1;
        }
    }
    assert_eq!(executed.len(), 2000, "every call reached a device");
    assert!(executed.values().all(|&n| n == 1), "no call ran twice");
    assert_eq!(executed.keys().cloned().collect::<BTreeSet<_>>(), accepted);
}

#[tokio::test]
async fn channels_presence_and_push_work_across_instances() {
    let Some(c) = Cluster::new().await else { return };
    let key = [("WAYGATE_API_KEY", "k"), ("WAYGATE_HISTORY_SIZE", "10")];
    let a = c.instance("a", &key).await;
    let b = c.instance("b", &key).await;
    let (mut on_b, welcome) = connect_welcomed(&b.ws_url("/ws")).await;
    let (mut on_a, _) = connect_welcomed(&a.ws_url("/ws")).await;
    for ws in [&mut on_a, &mut on_b] {
        send_json(ws, json!({"action": "subscribe", "channel": "global"})).await;
        assert_eq!(recv_json(ws).await["type"], "subscribed");
    }
    // A client on A publishes; both instances deliver, with one order and one offset.
    send_json(&mut on_a, json!({"action": "publish", "channel": "global", "data": "x", "id": 1})).await;
    let mut got_a = [recv_json(&mut on_a).await, recv_json(&mut on_a).await];
    got_a.sort_by_key(|v| v["type"].as_str().unwrap().to_owned());
    assert_eq!(got_a[0]["type"], "message");
    assert_eq!(got_a[1], json!({"type": "published", "id": 1, "channel": "global", "offset": 1}));
    assert_eq!(recv_json(&mut on_b).await, json!({"type": "message", "channel": "global", "data": "x", "offset": 1}));

    // The HTTP publish on B reaches A's subscriber too.
    let res =
        b.client.post(b.url("/api/channels/global/publish")).bearer_auth("k").json(&json!(2)).send().await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["offset"], 2);
    assert_eq!(recv_json(&mut on_a).await["offset"], 2);
    assert_eq!(recv_json(&mut on_b).await["offset"], 2);

    // Presence sees both instances' members.
    send_json(&mut on_a, json!({"action": "presence", "channel": "global"})).await;
    assert_eq!(recv_json(&mut on_a).await["count"], 2);

    // Recovery reads the shared history: a client reconnecting to A gets what it missed.
    let (mut late, _) = connect_welcomed(&a.ws_url("/ws")).await;
    send_json(&mut late, json!({"action": "subscribe", "channel": "global", "since": 0})).await;
    let r = recv_json(&mut late).await;
    assert_eq!((r["recovered"].as_bool(), r["offset"].as_u64()), (Some(true), Some(2)));
    assert_eq!(recv_json(&mut late).await["offset"], 1);
    assert_eq!(recv_json(&mut late).await["offset"], 2);

    // The push API on A reaches the connection held by B, and closes it.
    let id = welcome["connectionId"].as_str().unwrap();
    let res = a
        .client
        .post(a.url(&format!("/api/connections/{id}")))
        .bearer_auth("k")
        .body(r#"{"direct":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(recv_json(&mut on_b).await, json!({"direct": true}));
    let info: Value = a
        .client
        .get(a.url(&format!("/api/connections/{id}")))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["instanceId"], "b");
    let res = a.client.delete(a.url(&format!("/api/connections/{id}"))).bearer_auth("k").send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(recv_close(&mut on_b).await.0, 1000);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn readiness_turns_503_when_the_database_is_lost_and_recovers_by_itself() {
    let Some(c) = Cluster::new().await else { return };
    let proxy = CutProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let url = c.pg.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    let a = c.instance("a", &[("DATABASE_URL", url.as_str())]).await;
    let status = |app: &TestApp| {
        let (client, url) = (app.client.clone(), app.url("/readyz"));
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&a).await, 200);
    proxy.cut();
    eventually("readiness fails without the database", || async { status(&a).await == 503 }).await;
    let body: Value = a.client.get(a.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["error"]["details"]["checks"]["database"], "unreachable");
    proxy.restore();
    eventually("readiness recovers", || async { status(&a).await == 200 }).await;
    a.stop().await;
}
