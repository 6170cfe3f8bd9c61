//! Tunnel alerts over webhooks, and `broker status`, against a real HTTP receiver: signatures a
//! receiver can check with the secret shown at creation, the flap damper, retries with their
//! delivery log, the SSRF guard at registration and at delivery, and another tenant's hooks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::api::{Api, Cred, token};
use crate::harness::{DEADLINE, Db, Ssh, TestBroker, eventually};
use crate::origin::Origin;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    headers: HeaderMap,
    body: String,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A webhook receiver on 127.0.0.1:0 that records every request and answers the queued
/// statuses in turn (200 once they run out).
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start() -> Result<Self> {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let answers: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let app = axum::Router::new().fallback({
            let (hits, answers) = (hits.clone(), answers.clone());
            move |headers: HeaderMap, body: String| {
                let (hits, answers) = (hits.clone(), answers.clone());
                async move {
                    hits.lock().expect("lock").push(Hit { headers, body });
                    let status = answers.lock().expect("lock").pop_front().unwrap_or(200);
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
                }
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, hits, answers })
    }

    fn answer(&self, statuses: &[u16]) {
        self.answers.lock().expect("lock").extend(statuses);
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("lock").clone()
    }

    fn events(&self) -> Vec<String> {
        self.hits()
            .iter()
            .map(|h| h.header("x-warren-event").to_owned())
            .collect()
    }

    /// Waits until `n` requests arrived; returns them.
    async fn wait_for(&self, n: usize, what: &str) -> Result<Vec<Hit>> {
        eventually(what, DEADLINE, || async {
            let hits = self.hits();
            (hits.len() >= n).then_some(hits)
        })
        .await
        .with_context(|| format!("the receiver got {:?}", self.events()))
    }
}

/// What a receiver runs to check a delivery: HMAC-SHA256 of `timestamp.body` with the
/// secret, hex, after `sha256=`.
fn verifies(secret: &str, hit: &Hit) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(hit.header("x-warren-timestamp").as_bytes());
    mac.update(b".");
    mac.update(hit.body.as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    hit.header("x-warren-signature") == expected
}

/// A broker whose webhooks may reach the test's loopback receiver, with short windows.
async fn broker(db: Db, extra: &[&str]) -> Result<TestBroker> {
    let mut flags = vec![
        "--webhook-allow-private",
        "true",
        "--alert-down-after-secs",
        "3",
        "--webhook-backoff-ms",
        "200",
    ];
    flags.extend_from_slice(extra);
    TestBroker::start_with(db, &flags).await
}

/// Registers a global webhook with the admin CLI; returns its secret.
fn add_global_hook(broker: &TestBroker, url: &str) -> Result<String> {
    let out = broker.cli_ok(&[
        "--webhook-allow-private",
        "true",
        "webhooks",
        "add",
        "--global",
        url,
    ])?;
    let secret = out.lines().last().unwrap_or_default().trim().to_owned();
    assert!(secret.starts_with("whsec_"), "{out}");
    Ok(secret)
}

/// Registers a webhook through the API; returns (id, secret).
fn add_hook(api: &Api, tok: &str, url: &str) -> Result<(i64, String)> {
    let r = api.call(
        "POST",
        "/api/v1/webhooks",
        Cred::Token(tok),
        Some(&json!({ "url": url })),
    )?;
    assert_eq!(r.status, 201, "{}", r.raw);
    let id = r.body["id"].as_i64().context("id")?;
    let secret = r.body["secret"].as_str().context("secret")?.to_owned();
    Ok((id, secret))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_alerts_are_signed_and_a_quick_reconnect_sends_nothing() -> Result<()> {
    let broker = broker(Db::Sqlite, &[]).await?;
    let api = Api::of(&broker);
    let key = broker.user_with_key("alice")?;
    let alice = token(&broker, "alice", "w", "write")?;
    let receiver = Receiver::start().await?;
    let (id, secret) = add_hook(&api, &alice, &receiver.url)?;
    assert!(secret.starts_with("whsec_"), "{secret}");
    // The secret is shown once: never in a listing.
    let list = api.call("GET", "/api/v1/webhooks", Cred::Token(&alice), None)?;
    assert_eq!(list.body[0]["id"], id, "{}", list.raw);
    assert_eq!(list.body[0]["url"], receiver.url.as_str());
    assert!(!list.raw.contains(&secret), "{}", list.raw);

    let origin = Origin::start("alerts").await?;
    let forward = format!("chat:80:{}", origin.target());
    let mut ssh = Ssh::spawn(&broker, &key, &["-R", &forward])?;
    ssh.url(0).await?;
    let hits = receiver.wait_for(1, "tunnel.up").await?;
    let up = &hits[0];
    assert_eq!(up.header("x-warren-event"), "tunnel.up");
    assert_eq!(up.header("content-type"), "application/json");
    assert!(
        up.header("x-warren-delivery").parse::<i64>().is_ok(),
        "{up:?}"
    );
    let ts: i64 = up.header("x-warren-timestamp").parse()?;
    let body = up.json();
    assert_eq!(body["event"], "tunnel.up");
    assert_eq!(body["name"], "chat");
    assert_eq!(body["user"], "alice");
    assert_eq!(body["kind"], "http");
    assert_eq!(
        body["url"],
        format!("http://chat.localhost:{}", broker.http_port)
    );
    assert!((body["at"].as_i64().unwrap_or(0) - ts).abs() <= 5, "{body}");
    assert!(
        verifies(&secret, up),
        "the signature must verify with the secret"
    );
    assert!(!verifies("whsec_another", up), "and with no other secret");

    // Gone and back within alert_down_after_secs (3 s): nothing is sent.
    ssh.kill().await;
    let mut ssh = Ssh::spawn(&broker, &key, &["-R", &forward])?;
    ssh.url(0).await?;
    // Gone for good: exactly one tunnel.down, after the window.
    ssh.kill().await;
    let hits = receiver.wait_for(2, "tunnel.down").await?;
    let down = &hits[1];
    assert_eq!(down.json()["event"], "tunnel.down");
    assert_eq!(down.json()["name"], "chat");
    assert!(
        down.json()["down_since"].as_i64().is_some(),
        "{}",
        down.body
    );
    assert!(
        down.json()["at"].as_i64().unwrap_or(0) - down.json()["down_since"].as_i64().unwrap_or(0)
            >= 3,
        "down only after the window: {}",
        down.body
    );
    assert!(verifies(&secret, down));
    // A ping queued now arrives after anything queued before it: no second down, and the
    // reconnect sent neither down nor up.
    let r = api.call(
        "POST",
        &format!("/api/v1/webhooks/{id}/test"),
        Cred::Token(&alice),
        None,
    )?;
    assert_eq!(r.status, 202, "{}", r.raw);
    receiver.wait_for(3, "ping").await?;
    assert_eq!(receiver.events(), ["tunnel.up", "tunnel.down", "ping"]);
    let log = api.call(
        "GET",
        &format!("/api/v1/webhooks/{id}/deliveries"),
        Cred::Token(&alice),
        None,
    )?;
    let events: Vec<&str> = log
        .body
        .as_array()
        .context("log")?
        .iter()
        .filter_map(|d| d["event"].as_str())
        .collect();
    assert_eq!(events, ["ping", "tunnel.down", "tunnel.up"], "{}", log.raw);
    Ok(())
}

async fn retries(db: Db) -> Result<()> {
    let broker = broker(db, &["--webhook-max-attempts", "3"]).await?;
    let api = Api::of(&broker);
    broker.user_with_key("alice")?;
    let alice = token(&broker, "alice", "w", "write")?;
    let receiver = Receiver::start().await?;
    receiver.answer(&[500, 500]);
    let (id, secret) = add_hook(&api, &alice, &receiver.url)?;
    let r = api.call(
        "POST",
        &format!("/api/v1/webhooks/{id}/test"),
        Cred::Token(&alice),
        None,
    )?;
    assert_eq!(
        (r.status, r.body["event"].as_str()),
        (202, Some("ping")),
        "{}",
        r.raw
    );
    let delivery = r.body["id"].as_i64().context("delivery id")?;
    let log = eventually("the ping delivered", DEADLINE, || async {
        let log = api
            .call(
                "GET",
                &format!("/api/v1/webhooks/{id}/deliveries"),
                Cred::Token(&alice),
                None,
            )
            .ok()?;
        (log.body[0]["state"] == "delivered").then_some(log)
    })
    .await?;
    let d = &log.body[0];
    assert_eq!(d["id"], delivery);
    assert_eq!(d["attempts"], 3, "{}", log.raw);
    assert_eq!(d["last_status"], 200, "{}", log.raw);
    assert_eq!(d["last_error"], Value::Null);
    assert!(d["delivered_at"].as_i64().is_some());
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    for h in &hits {
        assert_eq!(h.header("x-warren-delivery"), delivery.to_string());
        assert!(verifies(&secret, h));
        assert_eq!(h.json()["webhook"], id);
    }

    // A receiver that never says yes: given up after webhook_max_attempts, audited, counted.
    let dead = Receiver::start().await?;
    dead.answer(&[503, 503, 503]);
    let (dead_id, _) = add_hook(&api, &alice, &dead.url)?;
    api.call(
        "POST",
        &format!("/api/v1/webhooks/{dead_id}/test"),
        Cred::Token(&alice),
        None,
    )?;
    let log = eventually("the ping given up", DEADLINE, || async {
        let log = api
            .call(
                "GET",
                &format!("/api/v1/webhooks/{dead_id}/deliveries"),
                Cred::Token(&alice),
                None,
            )
            .ok()?;
        (log.body[0]["state"] == "failed").then_some(log)
    })
    .await?;
    assert_eq!(log.body[0]["attempts"], 3, "{}", log.raw);
    assert_eq!(log.body[0]["last_status"], 503);
    assert_eq!(log.body[0]["last_error"], "the receiver answered 503");
    assert_eq!(dead.hits().len(), 3);
    let events = broker.cli_ok(&["events"])?;
    assert!(events.contains("webhook.give_up"), "{events}");
    let metrics = Api::of(&broker).call("GET", "/metrics", Cred::None, None)?;
    for line in [
        "warren_webhook_deliveries_total{result=\"ok\"} 1",
        "warren_webhook_deliveries_total{result=\"failed\"} 4",
        "warren_webhook_deliveries_total{result=\"given_up\"} 1",
    ] {
        assert!(metrics.raw.contains(line), "{line} in {}", metrics.raw);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_and_logged() -> Result<()> {
    retries(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_and_logged_postgres() -> Result<()> {
    retries(Db::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_cannot_reach_private_addresses() -> Result<()> {
    // The operator has not allowed private receivers.
    let broker = TestBroker::start_with(Db::Sqlite, &["--webhook-max-attempts", "1"]).await?;
    let api = Api::of(&broker);
    broker.user_with_key("alice")?;
    let alice = token(&broker, "alice", "w", "write")?;
    let admin_api = format!("http://127.0.0.1:{}/api/v1/users", broker.api_port);
    for url in [
        admin_api.as_str(),
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9090/",
        "http://localhost:9090/",
    ] {
        let r = api.call(
            "POST",
            "/api/v1/webhooks",
            Cred::Token(&alice),
            Some(&json!({ "url": url })),
        )?;
        assert_eq!((r.status, r.code()), (422, "invalid"), "{url}: {}", r.raw);
        assert_eq!(r.body["error"]["field"], "url", "{}", r.raw);
        assert!(r.raw.contains("public"), "{url}: {}", r.raw);
    }
    let r = api.call(
        "POST",
        "/api/v1/webhooks",
        Cred::Token(&alice),
        Some(&json!({ "url": "ftp://hooks.example.com/" })),
    )?;
    assert_eq!(r.status, 422, "{}", r.raw);
    assert!(r.raw.contains("http:// or https://"), "{}", r.raw);
    let list = api.call("GET", "/api/v1/webhooks", Cred::Token(&alice), None)?;
    assert_eq!(list.body, json!([]), "nothing was registered: {}", list.raw);
    let out = broker.cli(&["webhooks", "add", "alice", "http://192.168.1.1/x"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("url:") && err.contains("192.168.1.1"), "{err}");

    // Checked again at delivery: a name registered while it looked fine (here by an admin CLI
    // that allowed private receivers) that now resolves to loopback gets no connection.
    let receiver = Receiver::start().await?;
    let sneaky = receiver.url.replace("127.0.0.1", "localhost");
    let out = broker.cli_ok(&[
        "--webhook-allow-private",
        "true",
        "webhooks",
        "add",
        "alice",
        &sneaky,
    ])?;
    let id: i64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.trim_end_matches(':').parse().ok())
        .context(out.clone())?;
    broker.cli_ok(&["webhooks", "test", &id.to_string()])?;
    let log = eventually("the ping refused", DEADLINE, || async {
        let log = api
            .call(
                "GET",
                &format!("/api/v1/webhooks/{id}/deliveries"),
                Cred::Token(&alice),
                None,
            )
            .ok()?;
        (log.body[0]["state"] == "failed").then_some(log)
    })
    .await?;
    assert!(
        log.body[0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("non-public"),
        "{}",
        log.raw
    );
    assert_eq!(log.body[0]["last_status"], Value::Null);
    assert!(receiver.hits().is_empty(), "the receiver was reached");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_webhooks_do_not_exist_for_them() -> Result<()> {
    let broker = broker(Db::Sqlite, &[]).await?;
    let api = Api::of(&broker);
    broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "add", "bob"])?;
    let alice = token(&broker, "alice", "w", "write")?;
    let alice_r = token(&broker, "alice", "r", "read")?;
    let bob = token(&broker, "bob", "w", "write")?;
    let receiver = Receiver::start().await?;
    let (id, _) = add_hook(&api, &alice, &receiver.url)?;
    for (m, path) in [
        ("GET", format!("/api/v1/webhooks/{id}/deliveries")),
        ("POST", format!("/api/v1/webhooks/{id}/test")),
        ("DELETE", format!("/api/v1/webhooks/{id}")),
    ] {
        let r = api.call(m, &path, Cred::Token(&bob), None)?;
        assert_eq!(
            (r.status, r.code()),
            (404, "not_found"),
            "{m} {path}: {}",
            r.raw
        );
        assert!(!r.raw.contains(&receiver.url), "{}", r.raw);
    }
    let r = api.call("GET", "/api/v1/webhooks", Cred::Token(&bob), None)?;
    assert_eq!(r.body, json!([]), "{}", r.raw);
    let r = api.call("GET", "/api/v1/webhooks?all=true", Cred::Token(&bob), None)?;
    assert_eq!(r.status, 403, "{}", r.raw);
    // A read token sees but cannot create, test or delete.
    let r = api.call(
        "POST",
        "/api/v1/webhooks",
        Cred::Token(&alice_r),
        Some(&json!({ "url": receiver.url })),
    )?;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.raw);
    let r = api.call(
        "DELETE",
        &format!("/api/v1/webhooks/{id}"),
        Cred::Token(&alice_r),
        None,
    )?;
    assert_eq!(r.status, 403, "{}", r.raw);
    // Only an admin makes global hooks.
    let r = api.call(
        "POST",
        "/api/v1/webhooks",
        Cred::Token(&alice),
        Some(&json!({ "url": receiver.url, "global": true })),
    )?;
    assert_eq!(r.status, 403, "{}", r.raw);
    // Nothing was sent or removed; the owner deletes it, audited.
    assert!(receiver.hits().is_empty());
    let r = api.call(
        "DELETE",
        &format!("/api/v1/webhooks/{id}"),
        Cred::Token(&alice),
        None,
    )?;
    assert_eq!(r.status, 200, "{}", r.raw);
    let events = broker.cli_ok(&["events"])?;
    assert!(
        events.contains("webhook.create") && events.contains("webhook.delete"),
        "{events}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_hooks_get_every_tunnel() -> Result<()> {
    let broker = broker(Db::Sqlite, &[]).await?;
    let key = broker.user_with_key("alice")?;
    let receiver = Receiver::start().await?;
    let secret = add_global_hook(&broker, &receiver.url)?;
    let list = broker.cli_ok(&["webhooks", "list"])?;
    assert!(
        list.contains("(global)") && !list.contains(&secret),
        "{list}"
    );
    let origin = Origin::start("global").await?;
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    let hits = receiver.wait_for(1, "tunnel.up to the global hook").await?;
    assert_eq!(hits[0].json()["url"], url.as_str());
    assert_eq!(hits[0].json()["user"], "alice");
    assert!(verifies(&secret, &hits[0]));
    Ok(())
}

/// The broker's own trouble reaches the operator's global hook: a DNS provider that is not
/// there gives a signed `dns.error` naming the record and the provider's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_errors_go_to_the_global_hook() -> Result<()> {
    let dead = crate::public::pebble::free_port();
    let flags = crate::public::rfc2136_flags("tunnel.test", dead);
    let broker = broker(Db::Sqlite, &crate::public::as_strs(&flags)).await?;
    let receiver = Receiver::start().await?;
    let secret = add_global_hook(&broker, &receiver.url)?;
    broker.cli_ok(&["user", "add", "alice"])?;
    broker.cli_ok(&["reserve", "alice", "shop"])?;
    let hits = receiver.wait_for(1, "dns.error to the global hook").await?;
    let hit = hits
        .iter()
        .find(|h| h.json()["event"] == "dns.error")
        .context("no dns.error among the deliveries")?;
    assert_eq!(hit.json()["name"], "shop.tunnel.test", "{}", hit.body);
    let error = hit.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("rfc2136"), "{error}");
    assert!(verifies(&secret, hit));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_status_asks_the_running_broker() -> Result<()> {
    let mut broker = broker(Db::Sqlite, &["--webhook-max-attempts", "1"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("status").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("chat:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    // A webhook given up shows among the recent errors.
    let dead = Receiver::start().await?;
    dead.answer(&[500]);
    broker.cli_ok(&[
        "--webhook-allow-private",
        "true",
        "webhooks",
        "add",
        "alice",
        &dead.url,
    ])?;
    broker.cli_ok(&["webhooks", "test", "1"])?;
    dead.wait_for(1, "the ping").await?;
    let text = eventually("status with the give-up", DEADLINE, || async {
        let out = broker.cli_ok(&["status"]).ok()?;
        out.contains("webhook.give_up").then_some(out)
    })
    .await?;
    assert!(text.contains("TUNNELS (1)"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("chat "))
        .context(text.clone())?;
    assert!(
        line.contains("http") && line.contains("alice") && line.contains("chat.localhost"),
        "{line}"
    );
    assert!(
        !text.contains("console"),
        "the console is not a tunnel: {text}"
    );
    let json: Value = serde_json::from_str(&broker.cli_ok(&["status", "--json"])?)?;
    assert_eq!(json["tunnels"][0]["name"], "chat");
    assert_eq!(json["tunnels"][0]["user"], "alice");
    assert_eq!(json["errors"][0]["action"], "webhook.give_up");
    // The token is needed.
    let r = Api::of(&broker).call("GET", "/status", Cred::None, None)?;
    assert_eq!(r.status, 401);

    broker.stop();
    let out = broker.cli(&["status"])?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: no running broker"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart() -> Result<()> {
    let mut broker = broker(Db::Sqlite, &[]).await?;
    broker.user_with_key("alice")?;
    let receiver = Receiver::start().await?;
    broker.cli_ok(&[
        "--webhook-allow-private",
        "true",
        "webhooks",
        "add",
        "alice",
        &receiver.url,
    ])?;
    // Queued while no broker runs: the row waits in the store.
    broker.stop();
    let out = broker.cli_ok(&["webhooks", "test", "1"])?;
    assert!(out.contains("ping queued as delivery"), "{out}");
    let log = broker.cli_ok(&["webhooks", "deliveries", "1"])?;
    assert!(log.contains("pending"), "{log}");
    broker.restart()?;
    let hits = receiver.wait_for(1, "the ping after the restart").await?;
    assert_eq!(hits[0].header("x-warren-event"), "ping");
    let log = eventually("the delivery logged", DEADLINE, || async {
        let log = broker.cli_ok(&["webhooks", "deliveries", "1"]).ok()?;
        log.contains("delivered").then_some(log)
    })
    .await?;
    assert!(log.contains("ping"), "{log}");
    Ok(())
}

/// Two nodes on one Postgres both read the audit log and the delivery queue, yet each alert
/// arrives once: only the node holding the cluster's lease queues and sends. alice's tunnel on
/// node 2 (node 1, started first, holds the lease) goes up, down and up again; the global hook
/// gets exactly those three (a second copy of the first would have come long before the
/// third).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_sends_each_alert_once() -> Result<()> {
    let node = |i: usize| {
        let name = format!("n{i}");
        let flags: Vec<String> = [
            "--webhook-allow-private",
            "true",
            "--alert-down-after-secs",
            "3",
            "--webhook-backoff-ms",
            "200",
            "--node-name",
            &name,
            "--node-lease-secs",
            "2",
            "--cluster-listen",
            "127.0.0.1:0",
        ]
        .map(str::to_owned)
        .to_vec();
        flags
    };
    let (f1, f2) = (node(1), node(2));
    let (r1, r2): (Vec<&str>, Vec<&str>) = (
        f1.iter().map(String::as_str).collect(),
        f2.iter().map(String::as_str).collect(),
    );
    let n1 = TestBroker::start_with(Db::Postgres, &r1).await?;
    let n2 = n1.beside(&r2).await?;
    let receiver = Receiver::start().await?;
    add_global_hook(&n1, &receiver.url)?;
    let key = n1.user_with_key("alice")?;
    let origin = Origin::start("alice").await?;
    let spec = format!("app:80:{}", origin.target());
    let ssh = Ssh::spawn(&n2, &key, &["-R", &spec])?;
    ssh.url(0).await?;
    receiver.wait_for(1, "tunnel.up").await?;
    drop(ssh);
    receiver.wait_for(2, "tunnel.down").await?;
    let ssh = Ssh::spawn(&n2, &key, &["-R", &spec])?;
    ssh.url(0).await?;
    receiver.wait_for(3, "tunnel.up again").await?;
    assert_eq!(receiver.events(), ["tunnel.up", "tunnel.down", "tunnel.up"]);
    drop(ssh);
    drop(n2);
    Ok(())
}
