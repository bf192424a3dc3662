use crate::testing::backends;
use crate::{CallOutcome, NewToolCall, QueueEvent, Store};

async fn setup(store: &Store) -> (String, String) {
    let u = store.create_user("a@x", "pw", 1).await.unwrap();
    let (d, _) = store.create_device(&u.id, "n", "p", &["desktop".into()], 1).await.unwrap();
    store.heartbeat_instance("i1", 1_000, false).await.unwrap();
    (u.id, d.id)
}

fn call(user: &str, now: i64, ttl: i64) -> NewToolCall {
    NewToolCall {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user.into(),
        capability: "desktop".into(),
        tool: "echo".into(),
        args: serde_json::json!({"x": 1}),
        device_id: None,
        accepted_by: "i1".into(),
        now,
        expires_at: now + ttl,
    }
}

#[tokio::test]
async fn claim_needs_a_local_capable_device_and_is_fenced() {
    for (store, _guard) in backends().await {
        let (user, dev) = setup(&store).await;
        let mut events = store.subscribe();
        let row = store.insert_tool_call(&call(&user, 1_000, 30_000)).await.unwrap();
        assert_eq!(
            events.recv().await.unwrap(),
            QueueEvent::NewCall { user_id: user.clone(), capability: "desktop".into() }
        );

        assert!(store.claim_tool_calls("i1", 1_001, 10_000, 10).await.unwrap().is_empty(), "device not connected here");
        store.mark_device_connected(&dev, "i1", 1_001).await.unwrap();
        assert!(
            store.claim_tool_calls("i2", 1_001, 10_000, 10).await.unwrap().is_empty(),
            "other instance has no device"
        );
        let claimed = store.claim_tool_calls("i1", 1_002, 10_000, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!((claimed[0].id.as_str(), claimed[0].attempt), (row.id.as_str(), 1));
        assert!(store.claim_tool_calls("i1", 1_003, 10_000, 10).await.unwrap().is_empty(), "claimed once");

        let c = store.queue_counters(1_003).await.unwrap();
        assert_eq!((c.pending, c.processing), (0, 1));

        let done = CallOutcome::Completed { result: serde_json::json!("ok") };
        assert!(!store.finish_claimed(&row.id, 0, "i1", Some(&dev), &done, 1_004).await.unwrap(), "stale attempt");
        assert!(!store.finish_claimed(&row.id, 1, "i2", Some(&dev), &done, 1_004).await.unwrap(), "wrong claimer");
        assert!(store.finish_claimed(&row.id, 1, "i1", Some(&dev), &done, 1_004).await.unwrap());
        assert!(!store.finish_claimed(&row.id, 1, "i1", Some(&dev), &done, 1_005).await.unwrap(), "only once");
        assert_eq!(store.expire_tool_call(&row.id, 1_006).await.unwrap(), None, "finished calls do not expire");
        assert_eq!(events.recv().await.unwrap(), QueueEvent::Finished { call_id: row.id.clone() });

        let got = store.get_tool_call(&user, &row.id).await.unwrap().unwrap();
        assert_eq!(got.status, "completed");
        assert_eq!(got.result.as_deref(), Some("\"ok\""));
        assert_eq!(got.assigned_device_id.as_deref(), Some(dev.as_str()));
        assert!(store.get_tool_call("someone-else", &row.id).await.unwrap().is_none());
        let c = store.queue_counters(1_006).await.unwrap();
        assert_eq!((c.processing, c.completed_last_hour), (0, 1));
        assert_eq!(store.queue_counters(1_006 + 3_600_000).await.unwrap().completed_last_hour, 0, "an hour later");
    }
}

#[tokio::test]
async fn targeted_calls_only_go_to_their_device() {
    for (store, _guard) in backends().await {
        let (user, dev) = setup(&store).await;
        let (other, _) = store.create_device(&user, "n2", "p", &["desktop".into()], 1).await.unwrap();
        store.mark_device_connected(&other.id, "i1", 1_000).await.unwrap();
        let mut c = call(&user, 1_000, 30_000);
        c.device_id = Some(dev.clone());
        store.insert_tool_call(&c).await.unwrap();
        assert!(store.claim_tool_calls("i1", 1_001, 10_000, 10).await.unwrap().is_empty());
        store.mark_device_connected(&dev, "i2", 1_001).await.unwrap();
        assert_eq!(
            store.claim_tool_calls("i2", 1_002, 10_000, 10).await.unwrap()[0].device_id.as_deref(),
            Some(dev.as_str())
        );
    }
}

#[tokio::test]
async fn expiry_distinguishes_no_device_from_timeout() {
    for (store, _guard) in backends().await {
        let (user, dev) = setup(&store).await;
        let never_claimed = store.insert_tool_call(&call(&user, 1_000, 100)).await.unwrap();
        store.mark_device_connected(&dev, "i1", 1_000).await.unwrap();
        let claimed = store.insert_tool_call(&call(&user, 1_000, 5_000)).await.unwrap();
        // Only the second is still claimable at 1_200 (the first has passed its deadline).
        let got = store.claim_tool_calls("i1", 1_200, 10_000, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, claimed.id);
        assert_eq!(store.sweep_expired(1_200).await.unwrap(), [(never_claimed.id.clone(), "failed".to_owned())]);
        assert_eq!(store.sweep_expired(6_000).await.unwrap(), [(claimed.id.clone(), "expired".to_owned())]);
        let a = store.get_tool_call(&user, &never_claimed.id).await.unwrap().unwrap();
        let b = store.get_tool_call(&user, &claimed.id).await.unwrap().unwrap();
        assert_eq!((a.status.as_str(), a.error_code.as_deref()), ("failed", Some("no_capable_device")));
        assert_eq!((b.status.as_str(), b.error_code.as_deref()), ("expired", Some("tool_call_timeout")));
        let c = store.queue_counters(6_000).await.unwrap();
        assert_eq!((c.failed_last_hour, c.expired_last_hour), (1, 1));
        assert_eq!(store.prune_tool_calls(6_001).await.unwrap(), 2);
    }
}

#[tokio::test]
async fn lapsed_leases_fail_once_and_renewal_keeps_them() {
    for (store, _guard) in backends().await {
        let (user, dev) = setup(&store).await;
        store.mark_device_connected(&dev, "i1", 1_000).await.unwrap();
        let row = store.insert_tool_call(&call(&user, 1_000, 60_000)).await.unwrap();
        store.claim_tool_calls("i1", 1_000, 1_000, 10).await.unwrap();
        assert_eq!(store.renew_leases("i1", 1_900, 1_000).await.unwrap(), 1);
        assert!(store.fail_lapsed_leases(2_000).await.unwrap().is_empty(), "renewed to 2_900");
        assert_eq!(store.fail_lapsed_leases(2_900).await.unwrap(), vec![row.id.clone()]);
        let done = CallOutcome::Completed { result: serde_json::json!(1) };
        assert!(
            !store.finish_claimed(&row.id, 1, "i1", None, &done, 3_000).await.unwrap(),
            "late writer changes nothing"
        );
        let got = store.get_tool_call(&user, &row.id).await.unwrap().unwrap();
        assert_eq!((got.status.as_str(), got.error_code.as_deref()), ("failed", Some("device_disconnected")));
    }
}

#[tokio::test]
async fn released_claims_return_to_the_queue_once() {
    for (store, _guard) in backends().await {
        let (user, dev) = setup(&store).await;
        store.mark_device_connected(&dev, "i1", 1_000).await.unwrap();
        let row = store.insert_tool_call(&call(&user, 1_000, 60_000)).await.unwrap();
        let c = store.claim_tool_calls("i1", 1_001, 10_000, 10).await.unwrap();
        assert!(!store.release_claim(&row.id, c[0].attempt, "i2").await.unwrap(), "only the claimer releases");
        assert!(store.release_claim(&row.id, c[0].attempt, "i1").await.unwrap());
        assert!(!store.release_claim(&row.id, c[0].attempt, "i1").await.unwrap());
        let again = store.claim_tool_calls("i1", 1_002, 10_000, 10).await.unwrap();
        assert_eq!(again[0].attempt, 2, "a new claim gets a new fencing token");
        let failed = CallOutcome::Failed {
            code: "tool_call_failed".into(),
            message: "boom".into(),
            detail: Some(serde_json::json!({"code": "E1"})),
        };
        assert!(store.finish_claimed(&row.id, 2, "i1", Some(&dev), &failed, 1_003).await.unwrap());
        let got = store.get_tool_call(&user, &row.id).await.unwrap().unwrap();
        assert_eq!(got.result.as_deref(), Some(r#"{"code":"E1"}"#));
    }
}

#[tokio::test]
async fn postgres_events_reach_other_instances_but_not_the_sender_twice() {
    let Some((a, _guard)) = crate::testing::postgres().await else { return };
    let url = match &_guard {
        crate::testing::Guard::Postgres(s) => s.url.clone(),
        crate::testing::Guard::Sqlite(_) => unreachable!(),
    };
    let b = Store::connect(&url).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let (a2, b2) = (a.clone(), b.clone());
    let (s1, s2) = (stop.clone(), stop.clone());
    let ta = tokio::spawn(async move { a2.run_events("inst-a", s1).await });
    let tb = tokio::spawn(async move { b2.run_events("inst-b", s2).await });
    let mut on_a = a.subscribe();
    let mut on_b = b.subscribe();
    // Both listeners announce themselves with a Resync once LISTEN is active.
    assert_eq!(on_a.recv().await.unwrap(), QueueEvent::Resync);
    assert_eq!(on_b.recv().await.unwrap(), QueueEvent::Resync);

    let (user, _dev) = setup(&a).await;
    let row = a.insert_tool_call(&call(&user, 1_000, 30_000)).await.unwrap();
    let expected = QueueEvent::NewCall { user_id: user.clone(), capability: "desktop".into() };
    assert_eq!(on_a.recv().await.unwrap(), expected, "local delivery");
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), on_b.recv()).await.unwrap().unwrap();
    assert_eq!(got, expected, "NOTIFY reached the other instance");

    assert!(b.expire_tool_call(&row.id, 40_000).await.unwrap().is_some());
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), on_a.recv()).await.unwrap().unwrap();
    assert_eq!(got, QueueEvent::Finished { call_id: row.id.clone() });
    // Instance A does not hear its own NOTIFY echoed back.
    a.insert_tool_call(&call(&user, 2_000, 30_000)).await.unwrap();
    assert!(matches!(on_a.recv().await.unwrap(), QueueEvent::NewCall { .. }));
    assert!(tokio::time::timeout(std::time::Duration::from_millis(300), on_a.recv()).await.is_err(), "no echo");
    stop.cancel();
    ta.await.unwrap();
    tb.await.unwrap();
}
