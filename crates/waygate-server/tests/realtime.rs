//! Realtime channels over real sockets: pub/sub with offsets, recovery, presence, the push
//! API, JWT connect auth and slow-consumer isolation.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn publish_reaches_every_subscriber_with_offsets_and_acks_by_id() {
    let app = spawn_app().await;
    let (mut a, _) = connect_welcomed(&app.ws_url("/ws")).await;
    let (mut b, _) = connect_welcomed(&app.ws_url("/websocket")).await;
    for ws in [&mut a, &mut b] {
        send_json(ws, json!({"action": "subscribe", "channel": "room.1", "id": "s"})).await;
        let r = recv_json(ws).await;
        assert_eq!(
            (r["type"].as_str(), r["channel"].as_str(), r["id"].as_str()),
            (Some("subscribed"), Some("room.1"), Some("s"))
        );
        assert_eq!(r["offset"], 0);
        assert!(r.get("recovered").is_none(), "only answered when asked with since");
    }
    let (mut p, _) = connect_welcomed(&app.ws_url("/ws/test")).await;
    send_json(&mut p, json!({"action": "publish", "channel": "room.1", "data": {"text": "hi"}, "id": 9})).await;
    assert_eq!(recv_json(&mut p).await, json!({"type": "published", "id": 9, "channel": "room.1", "offset": 1}));
    for ws in [&mut a, &mut b] {
        assert_eq!(
            recv_json(ws).await,
            json!({"type": "message", "channel": "room.1", "data": {"text": "hi"}, "offset": 1})
        );
    }
    // Without an id there is no acknowledgement; subscribers still get it.
    send_json(&mut p, json!({"action": "publish", "channel": "room.1", "data": 2})).await;
    assert_eq!(recv_json(&mut a).await["offset"], 2);
    assert_eq!(recv_json(&mut b).await["offset"], 2);
    send_json(&mut p, json!({"action": "ping", "id": "after"})).await;
    assert_eq!(recv_json(&mut p).await["id"], "after", "no published frame came first");

    send_json(&mut a, json!({"action": "unsubscribe", "channel": "room.1", "id": "u"})).await;
    assert_eq!(recv_json(&mut a).await, json!({"type": "unsubscribed", "channel": "room.1", "id": "u"}));
    send_json(&mut p, json!({"action": "publish", "channel": "room.1", "data": 3})).await;
    assert_eq!(recv_json(&mut b).await["offset"], 3);
    send_json(&mut a, json!({"action": "ping"})).await;
    assert_eq!(recv_json(&mut a).await["type"], "pong", "nothing more for the unsubscribed client");
    app.stop().await;
}

#[tokio::test]
async fn reconnecting_clients_recover_missed_messages_from_history() {
    let app = spawn_app_with(&[("WAYGATE_HISTORY_SIZE", "5")]).await;
    let (mut sub, _) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut sub, json!({"action": "subscribe", "channel": "feed"})).await;
    let epoch = recv_json(&mut sub).await["epoch"].as_str().unwrap().to_owned();
    let publish = |n: i64| {
        let (client, url) = (app.client.clone(), app.url("/api/channels/feed/publish"));
        async move { client.post(url).bearer_auth("backend-key").json(&json!(n)).send().await.unwrap() }
    };
    assert_eq!(publish(1).await.status(), 401, "the push API needs a key or a session");
    drop(sub);
    app.stop().await;

    let app = spawn_app_with(&[("WAYGATE_HISTORY_SIZE", "5"), ("WAYGATE_API_KEY", "backend-key")]).await;
    let (mut sub, _) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut sub, json!({"action": "subscribe", "channel": "feed"})).await;
    let epoch2 = recv_json(&mut sub).await["epoch"].as_str().unwrap().to_owned();
    assert_ne!(epoch, epoch2, "a new server is a new epoch");
    let publish = |n: i64| {
        let (client, url) = (app.client.clone(), app.url("/api/channels/feed/publish"));
        async move {
            let r: Value =
                client.post(url).bearer_auth("backend-key").json(&json!(n)).send().await.unwrap().json().await.unwrap();
            r["offset"].as_u64().unwrap()
        }
    };
    assert_eq!(publish(1).await, 1);
    assert_eq!(recv_json(&mut sub).await["data"], 1);
    drop(sub); // the client goes away having seen offset 1
    for n in 2..=4 {
        publish(n).await;
    }
    let (mut back, _) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut back, json!({"action": "subscribe", "channel": "feed", "since": 1, "epoch": epoch2})).await;
    let r = recv_json(&mut back).await;
    assert_eq!((r["recovered"].as_bool(), r["offset"].as_u64()), (Some(true), Some(4)));
    for n in 2..=4 {
        let m = recv_json(&mut back).await;
        assert_eq!((m["data"].as_i64(), m["offset"].as_i64()), (Some(n), Some(n)), "replayed in order");
    }
    publish(5).await;
    assert_eq!(recv_json(&mut back).await["offset"], 5, "then live");

    for n in 6..=12 {
        publish(n).await;
    }
    let (mut late, _) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut late, json!({"action": "subscribe", "channel": "feed", "since": 2})).await;
    let r = recv_json(&mut late).await;
    assert_eq!(r["recovered"], false, "offset 3 fell out of the 5-message history: {r}");
    send_json(&mut late, json!({"action": "ping"})).await;
    assert_eq!(recv_json(&mut late).await["type"], "pong", "nothing replayed");
    send_json(&mut late, json!({"action": "subscribe", "channel": "feed", "since": 11, "epoch": "stale"})).await;
    assert_eq!(recv_json(&mut late).await["recovered"], false, "another epoch cannot be recovered");
    app.stop().await;
}

#[tokio::test]
async fn presence_lists_subscribers_and_bad_requests_are_clear() {
    let app = spawn_app().await;
    let (mut a, wa) = connect_welcomed(&app.ws_url("/ws")).await;
    let (mut b, wb) = connect_welcomed(&app.ws_url("/ws")).await;
    for ws in [&mut a, &mut b] {
        send_json(ws, json!({"action": "subscribe", "channel": "lobby"})).await;
        recv_json(ws).await;
    }
    send_json(&mut a, json!({"action": "presence", "channel": "lobby", "id": 1})).await;
    let p = recv_json(&mut a).await;
    assert_eq!((p["type"].as_str(), p["count"].as_u64(), p["id"].as_i64()), (Some("presence"), Some(2), Some(1)));
    let mut ids: Vec<&str> =
        p["members"].as_array().unwrap().iter().map(|m| m["connectionId"].as_str().unwrap()).collect();
    ids.sort();
    let mut expected = vec![wa["connectionId"].as_str().unwrap(), wb["connectionId"].as_str().unwrap()];
    expected.sort();
    assert_eq!(ids, expected);
    drop(b);
    let mut left = false;
    for _ in 0..200 {
        send_json(&mut a, json!({"action": "presence", "channel": "lobby"})).await;
        if recv_json(&mut a).await["count"] == 1 {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(left, "b leaves presence when it disconnects");

    for (msg, code) in [
        (json!({"action": "subscribe"}), "bad_request"),
        (json!({"action": "subscribe", "channel": "has space"}), "bad_request"),
        (json!({"action": "subscribe", "channel": "x".repeat(129)}), "bad_request"),
        (json!({"action": "publish", "channel": "lobby"}), "bad_request"),
    ] {
        send_json(&mut a, msg.clone()).await;
        assert_envelope(&recv_json(&mut a).await, code);
    }
    app.stop().await;
}

#[tokio::test]
async fn the_push_api_reaches_one_connection_and_respects_ownership() {
    let app = spawn_app_with(&[("WAYGATE_API_KEY", "backend-key"), ("WAYGATE_JWT_SECRET", "jwt-secret")]).await;
    let ada = app.user("ada@example.com").await;
    let ada_id = app.get(&ada, "/api/auth/me").await.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let token = jwt_hs256("jwt-secret", json!({"sub": ada_id}));
    let mut req = app.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let id = recv_json(&mut ws).await["connectionId"].as_str().unwrap().to_owned();
    let path = format!("/api/connections/{id}");

    let res = app
        .client
        .post(app.url(&path))
        .bearer_auth("backend-key")
        .body(r#"{"hello":"from backend"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(recv_json(&mut ws).await, json!({"hello": "from backend"}));
    let res = app.post(&ada, &path, json!({"mine": true})).await;
    assert_eq!(res.status(), 204, "a user reaches their own connections");
    assert_eq!(recv_json(&mut ws).await, json!({"mine": true}));

    send_json(&mut ws, json!({"action": "subscribe", "channel": "a.b"})).await;
    recv_json(&mut ws).await;
    let info: Value =
        app.client.get(app.url(&path)).bearer_auth("backend-key").send().await.unwrap().json().await.unwrap();
    assert_eq!((info["userId"].as_str(), info["channels"].clone()), (Some(ada_id.as_str()), json!(["a.b"])));

    let bob = app.user("bob@example.com").await;
    assert_eq!(app.post(&bob, &path, json!(1)).await.status(), 404, "another user's connection is invisible");
    assert_eq!(app.get(&bob, &path).await.status(), 404);
    assert_eq!(app.client.get(app.url(&path)).send().await.unwrap().status(), 401);
    assert_eq!(
        app.client.get(app.url("/api/connections/nope")).bearer_auth("backend-key").send().await.unwrap().status(),
        404
    );

    let res = app.client.delete(app.url(&path)).bearer_auth("backend-key").send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(recv_close(&mut ws).await, (1000, "disconnected by the server".to_owned()));
    app.stop().await;
}

fn jwt_hs256(secret: &str, mut claims: Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = json!(waygate_telemetry::now_millis() / 1000 + 600);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn jwt_connect_auth_refuses_before_the_upgrade_and_limits_channels() {
    let app = spawn_app_with(&[("WAYGATE_JWT_SECRET", "jwt-secret")]).await;
    let (status, body) = refused_upgrade(&app.ws_url("/ws")).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "unauthorized");

    let with_bearer = |token: String| {
        let mut req = app.ws_url("/ws").into_client_request().unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    let (status, body) = refused_upgrade_with(with_bearer(jwt_hs256("wrong-secret", json!({"sub": "u"})))).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "token_invalid");
    let expired = jwt_hs256("jwt-secret", json!({"sub": "u", "exp": waygate_telemetry::now_millis() / 1000 - 3600}));
    let (status, body) = refused_upgrade_with(with_bearer(expired)).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "token_expired");

    let good = jwt_hs256("jwt-secret", json!({"sub": "u1"}));
    let (status, body) = refused_upgrade(&app.ws_url(&format!("/ws?access_token={good}"))).await;
    assert_eq!(status, 400, "query tokens are refused even when valid");
    assert_envelope(&body, "token_in_query_forbidden");

    // Browsers carry the token in the subprotocol; only the protocol name is echoed.
    let claims = json!({"sub": "u1", "subscribe": ["news", "user.{sub}"], "publish": ["user.{sub}"]});
    let mut req = app.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", format!("waygate.jwt, {}", jwt_hs256("jwt-secret", claims)).parse().unwrap());
    let (mut ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(res.headers()["sec-websocket-protocol"], "waygate.jwt");
    recv_json(&mut ws).await;
    for (msg, ok) in [
        (json!({"action": "subscribe", "channel": "news"}), true),
        (json!({"action": "subscribe", "channel": "user.u1"}), true),
        (json!({"action": "subscribe", "channel": "user.u2"}), false),
        (json!({"action": "publish", "channel": "news", "data": 1, "id": 1}), false),
        (json!({"action": "publish", "channel": "user.u1", "data": 1, "id": 2}), true),
    ] {
        send_json(&mut ws, msg.clone()).await;
        let mut r = recv_json(&mut ws).await;
        if r["type"] == "message" {
            r = recv_json(&mut ws).await;
        }
        if ok {
            assert_ne!(r["type"], "error", "{msg} → {r}");
        } else {
            assert_envelope(&r, "forbidden");
        }
    }
    // Device paths authenticate devices by their session token, not by JWT.
    assert!(tokio_tungstenite::connect_async(app.ws_url("/api/gateway/ws")).await.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_the_public_key_file() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    for (public, private, alg, encoding) in [
        ("rsa_public.pem", "rsa_private.pem", jsonwebtoken::Algorithm::RS256, "rsa"),
        ("ec_public.pem", "ec_private_pk8.pem", jsonwebtoken::Algorithm::ES256, "ec"),
    ] {
        let public_path = format!("{fixtures}/{public}");
        let app = spawn_app_with(&[("WAYGATE_JWT_PUBLIC_KEY_FILE", public_path.as_str())]).await;
        let pem = std::fs::read(format!("{fixtures}/{private}")).unwrap();
        let key = match encoding {
            "rsa" => jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let claims = json!({"sub": "k", "exp": waygate_telemetry::now_millis() / 1000 + 60});
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap();
        let mut req = app.ws_url("/ws").into_client_request().unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(recv_json(&mut ws).await["type"], "welcome");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_closed_while_others_keep_receiving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&[("WAYGATE_SEND_QUEUE", "8"), ("WAYGATE_API_KEY", "k")]).await;
    let (mut good, _) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut good, json!({"action": "subscribe", "channel": "firehose"})).await;
    recv_json(&mut good).await;

    // The stalled client subscribes, then never reads again.
    // A small receive buffer turns off autotuning (up to 32 MB here), so the backlog reaches
    // the server's outbox instead of hiding in the kernel.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(app.http).await.unwrap();
    stalled
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                app.http
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let sub = br#"{"action":"subscribe","channel":"firehose"}"#;
    let mut frame = vec![0x81, 0x80 | sub.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(sub);
    stalled.write_all(&frame).await.unwrap();
    eventually("both subscribed", || async {
        let p: Value =
            app.client.get(app.url("/metrics")).send().await.unwrap().text().await.map(|_| json!(1)).unwrap();
        let _ = p;
        let (mut probe, _) = connect_welcomed(&app.ws_url("/ws")).await;
        send_json(&mut probe, json!({"action": "presence", "channel": "firehose"})).await;
        recv_json(&mut probe).await["count"] == 2
    })
    .await;

    // As soon as the server gives up on the stalled client, it reads again: everything the
    // kernel held, then the 1013 close frame (the unsent backlog was dropped, not queued).
    let (client, metrics_url) = (app.client.clone(), app.url("/metrics"));
    let stalled_reader = tokio::spawn(async move {
        loop {
            let text = client.get(&metrics_url).send().await.unwrap().text().await.unwrap();
            if metric(&text, "waygate_ws_slow_consumer_total") >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut all)).await.unwrap().unwrap();
        all
    });
    let big = "x".repeat(60_000);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 300 {
            match tokio::time::timeout(WAIT, good.next()).await.unwrap() {
                Some(Ok(Message::Text(_))) => n += 1,
                Some(Ok(_)) => {}
                other => panic!("good subscriber lost its connection: {other:?}"),
            }
        }
        n
    });
    for i in 0..300 {
        let res = app
            .client
            .post(app.url("/api/channels/firehose/publish"))
            .bearer_auth("k")
            .json(&json!({"i": i, "pad": big}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(reader.await.unwrap(), 300, "the healthy subscriber got everything");
    let all = stalled_reader.await.unwrap();
    let tail = &all[all.len().saturating_sub(64)..];
    let close = tail.windows(4).rposition(|w| w[0] == 0x88).expect("a close frame at the end");
    let code = u16::from_be_bytes([tail[close + 2], tail[close + 3]]);
    assert_eq!(code, 1013);
    assert!(String::from_utf8_lossy(&tail[close + 4..]).contains("slow_consumer"));
    assert!(metric(&app.metrics().await, "waygate_ws_slow_consumer_total") >= 1.0);
    app.stop().await;
}
