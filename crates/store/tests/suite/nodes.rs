//! Nodes and name holds on both backends: joining (and being blocked), heartbeats on the
//! database's clock, claims that one live node wins and a dead node loses, leaving.

use warren_store::{Claim, Join, NewNode, NodeStore};

use super::*;

fn node(name: &str, lease_ms: i64) -> NewNode {
    NewNode {
        name: name.to_owned(),
        incarnation: rand::random::<i64>(),
        public_addr: format!("{name}.example:2222"),
        cluster_addr: Some(format!("{name}.internal:7000")),
        host: "box".to_owned(),
        pid: 42,
        lease_ms,
    }
}

fn claim(node: &str, session: i64, user_id: i64) -> Claim<'_> {
    Claim {
        node,
        session,
        user_id,
        kind: "http",
        sticky: None,
    }
}

async fn join(s: &dyn NodeStore, n: &NewNode, exclusive: bool) -> Join {
    s.join_node(n, exclusive).await.expect("join")
}

both!(nodes_join_beat_claim_and_leave, |fx| {
    let s = fx.store.as_ref();
    let one = node("n1", 60_000);
    let Join::Joined(row) = join(s, &one, false).await else {
        panic!("n1 could not join an empty database");
    };
    assert!(row.alive(), "{row:?}");
    assert_eq!(row.cluster_addr.as_deref(), Some("n1.internal:7000"));
    // The same name again while n1 is alive: blocked, whoever asks.
    let again = node("n1", 60_000);
    assert!(matches!(join(s, &again, false).await, Join::Blocked(r) if r.name == "n1"));
    // Exclusive (a SQLite file): any live node blocks.
    assert!(matches!(join(s, &node("n2", 60_000), true).await, Join::Blocked(r) if r.name == "n1"));
    let two = node("n2", 60_000);
    assert!(matches!(join(s, &two, false).await, Join::Joined(_)));
    assert!(s.heartbeat("n1", one.incarnation, 3).await.expect("beat"));
    assert!(
        !s.heartbeat("n1", again.incarnation, 0).await.expect("beat"),
        "not n1's incarnation"
    );
    let nodes = s.list_nodes().await.expect("nodes");
    assert_eq!(
        nodes
            .iter()
            .map(|n| (n.name.as_str(), n.tunnels))
            .collect::<Vec<_>>(),
        [("n1", 3), ("n2", 0)]
    );
    assert!(
        nodes.iter().all(|n| n.alive() && n.silent_ms() < 30_000),
        "{nodes:?}"
    );

    // Claims: the first wins, another live node loses, the holder's node decides its own.
    let alice = s
        .create_user("cli", "alice", false)
        .await
        .expect("alice")
        .id;
    let bob = s.create_user("cli", "bob", false).await.expect("bob").id;
    assert_eq!(
        s.claim_hold("app", &claim("n1", 7, alice))
            .await
            .expect("claim"),
        None
    );
    let held = s
        .claim_hold("app", &claim("n2", 9, bob))
        .await
        .expect("claim")
        .expect("n1 holds it");
    assert_eq!(
        (held.node.as_str(), held.session, held.user_id),
        ("n1", 7, alice)
    );
    assert_eq!(
        s.claim_hold("app", &claim("n1", 8, alice))
            .await
            .expect("claim"),
        None
    );
    assert!(
        !s.release_hold("app", "n1", 7).await.expect("release"),
        "session 8 holds it now"
    );
    // The same owner's session on another live node takes it over (a newer session wins,
    // as on one node), and can give it back.
    assert_eq!(
        s.claim_hold("app", &claim("n2", 5, alice))
            .await
            .expect("claim"),
        None
    );
    assert_eq!(s.list_holds().await.expect("holds")[0].node, "n2");
    assert!(!s.release_hold("app", "n1", 8).await.expect("release"));
    assert_eq!(
        s.claim_hold("app", &claim("n1", 8, alice))
            .await
            .expect("claim"),
        None
    );
    assert!(s.release_hold("app", "n1", 8).await.expect("release"));
    assert_eq!(
        s.claim_hold("app", &claim("n2", 9, bob))
            .await
            .expect("claim"),
        None
    );
    assert_eq!(s.list_holds().await.expect("holds")[0].node, "n2");
    // What another node needs to reach it, and a version that moves with every change.
    let v1 = s.holds_version().await.expect("version");
    let tcp = Claim {
        kind: "tcp",
        sticky: Some("SHA256:k|localhost|0"),
        ..claim("n1", 3, alice)
    };
    assert_eq!(s.claim_hold("tcp:20001", &tcp).await.expect("claim"), None);
    let v2 = s.holds_version().await.expect("version");
    assert_ne!(v1, v2);
    let route = s
        .hold_routes_of(&["tcp:20001".to_owned()])
        .await
        .expect("route")
        .pop()
        .expect("held");
    assert_eq!(
        (
            route.node.as_str(),
            route.kind.as_str(),
            route.user_id,
            route.alive
        ),
        ("n1", "tcp", alice, true)
    );
    assert_eq!(route.cluster_addr.as_deref(), Some("n1.internal:7000"));
    assert_eq!(s.hold_routes().await.expect("routes").len(), 2);
    let some = s
        .hold_routes_of(&["tcp:20001".to_owned(), "gone".to_owned()])
        .await
        .expect("routes of");
    assert_eq!(
        some.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["tcp:20001"]
    );
    let sticky = s
        .sticky_holds("SHA256:k|localhost|0")
        .await
        .expect("sticky");
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    assert_eq!(
        (sticky[0].name.as_str(), sticky[0].session),
        ("tcp:20001", 3)
    );
    assert!(
        s.sticky_holds("SHA256:other")
            .await
            .expect("sticky")
            .is_empty()
    );
    assert!(s.release_hold("tcp:20001", "n1", 3).await.expect("release"));
    assert_ne!(s.holds_version().await.expect("version"), v2);
    assert!(
        s.hold_routes_of(&["tcp:20001".to_owned()])
            .await
            .expect("route")
            .is_empty()
    );

    // Leaving takes the node's holds with it; only its own incarnation may remove it.
    assert!(!s.forget_node("n2", one.incarnation).await.expect("forget"));
    assert!(s.forget_node("n2", two.incarnation).await.expect("forget"));
    assert!(s.list_holds().await.expect("holds").is_empty());
    assert_eq!(s.list_nodes().await.expect("nodes").len(), 1);
});

both!(a_dead_nodes_holds_are_taken_over, |fx| {
    let s = fx.store.as_ref();
    let alice = s
        .create_user("cli", "alice", false)
        .await
        .expect("alice")
        .id;
    let bob = s.create_user("cli", "bob", false).await.expect("bob").id;
    // n1's lease is so short that it is dead by the time n2 asks (no clock to wait on: the
    // database's own clock moves on).
    let one = node("n1", 1);
    assert!(matches!(join(s, &one, false).await, Join::Joined(_)));
    assert!(matches!(
        join(s, &node("n2", 60_000), false).await,
        Join::Joined(_)
    ));
    assert_eq!(
        s.claim_hold("app", &claim("n1", 1, alice))
            .await
            .expect("claim"),
        None
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let nodes = s.list_nodes().await.expect("nodes");
    assert!(!nodes[0].alive() && nodes[1].alive(), "{nodes:?}");
    assert_eq!(
        s.claim_hold("app", &claim("n2", 2, bob))
            .await
            .expect("claim"),
        None,
        "n1 is dead"
    );
    // A dead node blocks no one, even its own name's next start; a long-silent row is reaped.
    let restart = node("n1", 60_000);
    assert!(matches!(join(s, &restart, false).await, Join::Joined(_)));
    assert!(
        s.forget_node("n1", restart.incarnation)
            .await
            .expect("forget")
    );
    assert!(matches!(join(s, &one, false).await, Join::Joined(_)));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(matches!(
        join(s, &node("n3", 60_000), false).await,
        Join::Joined(_)
    ));
    assert_eq!(
        s.reap_nodes(300).await.expect("reap"),
        2,
        "n1 and n2 were silent"
    );
    let names: Vec<String> = s
        .list_nodes()
        .await
        .expect("nodes")
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["n3"]);
});

both!(the_cluster_ca_is_the_first_one_stored, |fx| {
    let s = fx.store.as_ref();
    let first = s.cluster_ca(("cert-1", "key-1")).await.expect("ca");
    let second = s.cluster_ca(("cert-2", "key-2")).await.expect("ca");
    assert_eq!(first, ("cert-1".to_owned(), "key-1".to_owned()));
    assert_eq!(second, first, "a later node gets the first CA, not its own");
});

async fn next(events: &mut Box<dyn warren_store::HoldEvents>) -> Option<String> {
    tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .expect("a notification within 10 s")
        .expect("listen")
}

#[tokio::test]
async fn postgres_tells_listeners_of_every_change_to_holds() {
    let fx = super::postgres().await;
    let s = fx.store.as_ref();
    assert!(
        super::sqlite()
            .await
            .store
            .hold_events()
            .await
            .expect("sqlite")
            .is_none(),
        "SQLite has nothing to hear"
    );
    let mut events = s.hold_events().await.expect("listen").expect("postgres");
    let alice = s
        .create_user("cli", "alice", false)
        .await
        .expect("alice")
        .id;
    assert!(matches!(
        join(s, &node("n1", 60_000), false).await,
        Join::Joined(_)
    ));
    s.claim_hold("app", &claim("n1", 1, alice))
        .await
        .expect("claim");
    assert_eq!(next(&mut events).await.as_deref(), Some("app"));
    s.claim_hold("app", &claim("n1", 2, alice))
        .await
        .expect("claim");
    assert_eq!(
        next(&mut events).await.as_deref(),
        Some("app"),
        "taken over"
    );
    s.release_hold("app", "n1", 2).await.expect("release");
    assert_eq!(next(&mut events).await.as_deref(), Some("app"), "released");
}

#[tokio::test]
async fn sqlite_has_no_connection_limit() {
    let fx = sqlite().await;
    assert_eq!(fx.store.connection_limit().await.expect("limit"), None);
}

/// `database_pool` bounds the connections a node opens, and the limit it is weighed against is
/// Postgres's own, less the places kept for superusers.
#[tokio::test]
async fn postgres_pools_keep_to_their_size_and_read_the_servers_limit() {
    use sqlx::Connection;
    let fx = postgres().await;
    let (_, db) = fx.pg_drop.clone().expect("a Postgres fixture");
    let store = warren_store::open_pooled(&fx.url, 2)
        .await
        .expect("open with a pool of 2");
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut c = sqlx::PgConnection::connect(&admin).await.expect("admin");
    let (max, superuser, reserved): (String, String, Option<String>) = sqlx::query_as(
        "SELECT current_setting('max_connections'), \
         current_setting('superuser_reserved_connections'), \
         current_setting('reserved_connections', true)",
    )
    .fetch_one(&mut c)
    .await
    .expect("settings");
    let want = max.parse::<i64>().expect("int")
        - superuser.parse::<i64>().expect("int")
        - reserved.map_or(0, |r| r.parse::<i64>().expect("int"));
    assert_eq!(store.connection_limit().await.expect("limit"), Some(want));

    // Twenty queries at once over a pool of two: they queue, none opens a third connection.
    let mut busy = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        busy.spawn(async move { store.list_nodes().await.map(|_| ()) });
    }
    while let Some(r) = busy.join_next().await {
        r.expect("joined").expect("list nodes");
    }
    let (open,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(&db)
            .fetch_one(&mut c)
            .await
            .expect("count");
    // The fixture's own pool (opened with the default size) did nothing meanwhile, but may
    // keep the connection its migrations used.
    assert!(open <= 3, "{open} connections to {db}");
}

/// Holds and challenges are heard on one connection: a node spends one of Postgres's
/// connections on notifications, however many channels it listens to.
#[tokio::test]
async fn one_connection_hears_every_channel() {
    use sqlx::Connection;
    let fx = postgres().await;
    let (_, db) = fx.pg_drop.clone().expect("a Postgres fixture");
    let s = fx.store.as_ref();
    let mut holds = s.hold_events().await.expect("listen").expect("postgres");
    let mut challenges = s
        .challenge_events()
        .await
        .expect("listen")
        .expect("postgres");
    let mut again = s.hold_events().await.expect("listen").expect("postgres");

    let alice = s
        .create_user("cli", "alice", false)
        .await
        .expect("alice")
        .id;
    assert!(matches!(
        join(s, &node("n1", 60_000), false).await,
        Join::Joined(_)
    ));
    s.claim_hold("app", &claim("n1", 1, alice))
        .await
        .expect("claim");
    s.put_challenge("http-01", "token", "answer")
        .await
        .expect("publish");
    assert_eq!(next(&mut holds).await.as_deref(), Some("app"));
    assert_eq!(
        next(&mut again).await.as_deref(),
        Some("app"),
        "every reader hears it"
    );
    assert!(
        next(&mut challenges).await.is_some(),
        "the challenge was heard"
    );

    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut c = sqlx::PgConnection::connect(&admin).await.expect("admin");
    let (listening,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(&db)
    .fetch_one(&mut c)
    .await
    .expect("count");
    assert_eq!(listening, 1, "connections listening to {db}");
}
