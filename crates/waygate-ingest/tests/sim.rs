//! The simulator speaks the Discord gateway protocol to a plain WebSocket client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use waygate_ingest::sim::{SimConfig, Simulator};

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Close(f))) => return json!({"close": f.map(|f| u16::from(f.code))}),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

async fn connect(sim: &Simulator) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/?v=10&encoding=json", sim.addr())).await.unwrap();
    ws
}

#[tokio::test]
async fn rest_identify_dispatch_resume_and_close_codes() {
    let sim = Simulator::start(SimConfig {
        messages: 5,
        rate: 0.0,
        token: Some("tok".into()),
        heartbeat_interval: Duration::from_secs(5),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let res = client
        .get(format!("{}/api/v10/gateway/bot", sim.http_url()))
        .header("Authorization", "Bot tok")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let bot: Value = res.json().await.unwrap();
    assert_eq!(bot["url"], format!("ws://{}", sim.addr()));
    assert_eq!(bot["session_start_limit"]["max_concurrency"], 1);
    let me = client
        .get(format!("{}/api/v10/users/@me", sim.http_url()))
        .header("Authorization", "Bot tok")
        .send()
        .await
        .unwrap();
    assert_eq!(me.headers()["content-type"], "application/json");
    assert_eq!(me.json::<Value>().await.unwrap()["bot"], true);
    let denied = client
        .get(format!("{}/api/v10/gateway/bot", sim.http_url()))
        .header("Authorization", "Bot no")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    // Hello, identify, READY, guilds, the messages; heartbeat ACK.
    let mut ws = connect(&sim).await;
    let hello = next_json(&mut ws).await;
    assert_eq!((hello["op"].as_u64(), hello["d"]["heartbeat_interval"].as_u64()), (Some(10), Some(5000)));
    ws.send(Message::text(json!({"op": 2, "d": {"token": "tok", "intents": 513, "properties": {}}}).to_string()))
        .await
        .unwrap();
    let ready = next_json(&mut ws).await;
    assert_eq!((ready["t"].as_str(), ready["s"].as_u64()), (Some("READY"), Some(1)));
    let session = ready["d"]["session_id"].as_str().unwrap().to_owned();
    let mut last = 1;
    // READY, two GUILD_CREATE, five MESSAGE_CREATE.
    while last < 8 {
        let ev = next_json(&mut ws).await;
        last = ev["s"].as_u64().unwrap();
    }
    ws.send(Message::text(json!({"op": 1, "d": last}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["op"], 11);
    drop(ws);

    // Resume from seq 3: everything after it is replayed, then RESUMED.
    let mut ws = connect(&sim).await;
    next_json(&mut ws).await;
    ws.send(Message::text(json!({"op": 6, "d": {"token": "tok", "session_id": session, "seq": 3}}).to_string()))
        .await
        .unwrap();
    let mut replayed = Vec::new();
    loop {
        let ev = next_json(&mut ws).await;
        if ev["t"] == "RESUMED" {
            break;
        }
        replayed.push(ev["s"].as_u64().unwrap());
    }
    assert_eq!(replayed, vec![4, 5, 6, 7, 8]);
    assert!(replayed.windows(2).all(|w| w[1] == w[0] + 1), "{replayed:?}");
    drop(ws);

    // Wrong token: 4004. Second identify within 5 s in one bucket: 4008. Unknown session: op 9.
    let mut ws = connect(&sim).await;
    next_json(&mut ws).await;
    ws.send(Message::text(json!({"op": 2, "d": {"token": "bad", "intents": 0}}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["close"], 4004);
    let mut ws = connect(&sim).await;
    next_json(&mut ws).await;
    ws.send(Message::text(json!({"op": 2, "d": {"token": "tok", "intents": 0}}).to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["close"], 4008);
    let mut ws = connect(&sim).await;
    next_json(&mut ws).await;
    ws.send(Message::text(json!({"op": 6, "d": {"token": "tok", "session_id": "nope", "seq": 1}}).to_string()))
        .await
        .unwrap();
    let invalid = next_json(&mut ws).await;
    assert_eq!((invalid["op"].as_u64(), invalid["d"].as_bool()), (Some(9), Some(false)));
    let mut ws = connect(&sim).await;
    next_json(&mut ws).await;
    ws.send(Message::text(r#"{"op":42}"#)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["close"], 4001);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/?v=9&encoding=json", sim.addr())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["close"], 4012);
    let stats = sim.stats();
    assert_eq!((stats.identifies, stats.resumes, stats.rate_limited), (1, 1, 1));
    sim.stop().await;
}
