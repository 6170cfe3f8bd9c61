//! Webhooks on both backends: owners and global hooks, the delivery queue, give-ups audited,
//! pruning, cascades.

use warren_store::{DeliveryAttempt, StoreError, WebhookFilter};

use super::*;

fn attempt(state: &str, status: Option<i64>, next: i64) -> DeliveryAttempt {
    DeliveryAttempt {
        at: 1,
        status,
        error: (state != "delivered").then(|| "the receiver answered 500".to_owned()),
        state: state.to_owned(),
        next_attempt_ms: next,
    }
}

both!(webhooks_queue_deliveries_and_prune_them, |fx| {
    let s = &fx.store;
    let alice = s.create_user("cli", "alice", false).await.expect("alice");
    let bob = s.create_user("cli", "bob", false).await.expect("bob");
    let a = s
        .create_webhook(
            "alice/token:w",
            Some(alice.id),
            "https://h.example/T0K3N",
            "whsec_a",
        )
        .await
        .expect("alice's hook");
    assert_eq!(
        (a.user_name.as_deref(), a.secret.as_str()),
        (Some("alice"), "whsec_a")
    );
    let g = s
        .create_webhook("cli", None, "https://ops.example/hook", "whsec_g")
        .await
        .expect("global hook");
    assert_eq!(g.user_name, None);
    s.create_webhook("cli", Some(bob.id), "https://b.example/", "whsec_b")
        .await
        .expect("bob's hook");
    let ids = |v: Vec<warren_store::Webhook>| v.into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s
            .list_webhooks(WebhookFilter::EventsOf(alice.id))
            .await
            .expect("list")),
        [a.id, g.id]
    );
    assert_eq!(
        ids(s.list_webhooks(WebhookFilter::Global).await.expect("list")),
        [g.id]
    );
    assert_eq!(
        ids(s
            .list_webhooks(WebhookFilter::User(alice.id))
            .await
            .expect("list")),
        [a.id]
    );
    assert_eq!(
        s.list_webhooks(WebhookFilter::All)
            .await
            .expect("list")
            .len(),
        3
    );

    // The queue: due at once, retried later, given up (audited on the owner).
    let d = s
        .enqueue_delivery(a.id, "tunnel.down", "{}")
        .await
        .expect("queue");
    assert_eq!((d.state.as_str(), d.attempts), ("pending", 0));
    assert_eq!(s.pending_deliveries(a.id).await.expect("count"), 1);
    let due = s
        .due_deliveries(warren_store::now_ms(), 10)
        .await
        .expect("due");
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [d.id]);
    let later = warren_store::now_ms() + 60_000;
    s.record_attempt(d.id, &attempt("pending", Some(500), later))
        .await
        .expect("retry");
    assert!(
        s.due_deliveries(warren_store::now_ms(), 10)
            .await
            .expect("due")
            .is_empty()
    );
    s.record_attempt(d.id, &attempt("failed", Some(500), 0))
        .await
        .expect("give up");
    let log = s.deliveries(a.id, 10).await.expect("log");
    assert_eq!(
        (log[0].state.as_str(), log[0].attempts, log[0].last_status),
        ("failed", 2, Some(500))
    );
    let events = s.events_since(0, 100).await.expect("events");
    let give_up = events
        .iter()
        .find(|e| e.action == "webhook.give_up")
        .expect("give-up audited");
    assert_eq!(give_up.user_id, Some(alice.id));
    assert!(
        give_up.detail.contains("after 2 attempts"),
        "{}",
        give_up.detail
    );
    let created = events
        .iter()
        .find(|e| e.action == "webhook.create")
        .expect("audited");
    assert!(
        !created.detail.contains("T0K3N"),
        "the URL's path is not audited: {}",
        created.detail
    );

    // Pruning keeps the newest finished rows per hook and every pending one.
    for _ in 0..4 {
        let d = s.enqueue_delivery(a.id, "ping", "{}").await.expect("queue");
        s.record_attempt(d.id, &attempt("delivered", Some(200), 0))
            .await
            .expect("ok");
    }
    let pending = s.enqueue_delivery(a.id, "ping", "{}").await.expect("queue");
    s.enqueue_delivery(g.id, "ping", "{}").await.expect("queue");
    let gone = s.prune_deliveries(0, 2).await.expect("prune");
    assert_eq!(gone, 4, "the 2 newest of alice's 6 rows are kept");
    let log = s.deliveries(a.id, 10).await.expect("log");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].id, pending.id);
    assert_eq!(log[1].state, "delivered");
    assert_eq!(s.deliveries(g.id, 10).await.expect("log").len(), 1);

    // Deleting a hook takes its deliveries; another delete is a clear error.
    s.delete_webhook("cli", a.id).await.expect("delete");
    assert!(s.deliveries(a.id, 10).await.expect("log").is_empty());
    assert!(matches!(
        s.delete_webhook("cli", a.id).await,
        Err(StoreError::NoSuchWebhook(id)) if id == a.id
    ));
    assert!(matches!(
        s.enqueue_delivery(a.id, "ping", "{}").await,
        Err(StoreError::NoSuchWebhook(_))
    ));
});
