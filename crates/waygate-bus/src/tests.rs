use std::time::Duration;

use super::*;

async fn next(rx: &mut mpsc::Receiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("delivery in time").expect("open")
}

async fn nothing(rx: &mut mpsc::Receiver<Delivery>) {
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err(), "unexpected delivery");
}

fn msg(topic: Topic, payload: &'static [u8]) -> Delivery {
    Delivery::Message { topic, payload: Bytes::from_static(payload) }
}

#[tokio::test]
async fn local_bus_delivers_what_is_for_this_instance() {
    let bus = Bus::local("me");
    let mut rx = bus.take_deliveries().unwrap();
    assert!(bus.take_deliveries().is_none(), "one receiver only");
    bus.publish(Topic::Instance("me".into()), Bytes::from_static(b"1")).await.unwrap();
    bus.publish(Topic::Instance("other".into()), Bytes::from_static(b"2")).await.unwrap();
    bus.publish(Topic::All, Bytes::from_static(b"3")).await.unwrap();
    bus.publish(Topic::Channel("c".into()), Bytes::from_static(b"4")).await.unwrap();
    assert_eq!(next(&mut rx).await, msg(Topic::Instance("me".into()), b"1"));
    assert_eq!(next(&mut rx).await, msg(Topic::All, b"3"));
    assert_eq!(next(&mut rx).await, msg(Topic::Channel("c".into()), b"4"));
    bus.ping().await.unwrap();
}

#[tokio::test]
async fn redis_bus_routes_between_instances() {
    let Some(ns) = waygate_testkit::RedisNs::create().await else { return };
    let a = Bus::redis(&ns.url, &ns.prefix, "a").await.unwrap();
    let b = Bus::redis(&ns.url, &ns.prefix, "b").await.unwrap();
    let (mut ra, mut rb) = (a.take_deliveries().unwrap(), b.take_deliveries().unwrap());
    a.publish(Topic::Instance("b".into()), Bytes::from_static(b"to-b")).await.unwrap();
    assert_eq!(next(&mut rb).await, msg(Topic::Instance("b".into()), b"to-b"));
    a.publish(Topic::All, Bytes::from_static(b"all")).await.unwrap();
    assert_eq!(next(&mut ra).await, msg(Topic::All, b"all"));
    assert_eq!(next(&mut rb).await, msg(Topic::All, b"all"));

    b.subscribe_channel("room").await.unwrap();
    b.subscribe_channel("room").await.unwrap();
    a.publish(Topic::Channel("room".into()), Bytes::from_static(b"hi")).await.unwrap();
    assert_eq!(next(&mut rb).await, msg(Topic::Channel("room".into()), b"hi"));
    nothing(&mut ra).await;
    b.unsubscribe_channel("room").await.unwrap();
    a.publish(Topic::Channel("room".into()), Bytes::from_static(b"gone")).await.unwrap();
    nothing(&mut rb).await;

    // Another deployment's prefix is not heard.
    let other = Bus::redis(&ns.url, &format!("{}x", ns.prefix), "b").await.unwrap();
    other.publish(Topic::All, Bytes::from_static(b"elsewhere")).await.unwrap();
    nothing(&mut rb).await;
}

#[tokio::test]
async fn redis_bus_recovers_after_the_link_is_cut() {
    let Some(ns) = waygate_testkit::RedisNs::create().await else { return };
    let target = ns.url.trim_start_matches("redis://").trim_end_matches('/').parse().unwrap();
    let proxy = waygate_testkit::CutProxy::start(target).await;
    let via_proxy = format!("redis://{}", proxy.addr);
    let a = Bus::redis(&via_proxy, &ns.prefix, "a").await.unwrap();
    let sender = Bus::redis(&ns.url, &ns.prefix, "s").await.unwrap();
    let mut ra = a.take_deliveries().unwrap();

    proxy.cut();
    let mut saw_failure = false;
    for _ in 0..50 {
        if a.ping().await.is_err() {
            saw_failure = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_failure, "ping fails while the link is cut");
    proxy.restore();
    let mut back = false;
    for _ in 0..100 {
        if a.ping().await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "ping recovers by itself");
    assert_eq!(next(&mut ra).await, Delivery::Reconnected);
    // The resubscription is in place again: directed messages arrive.
    let mut got = None;
    for _ in 0..50 {
        sender.publish(Topic::Instance("a".into()), Bytes::from_static(b"again")).await.unwrap();
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(100), ra.recv()).await {
            got = Some(d);
            break;
        }
    }
    assert_eq!(got, Some(msg(Topic::Instance("a".into()), b"again")));
}
