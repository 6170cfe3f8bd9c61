//! Several brokers on one database: two nodes on Postgres list each other, hold each name once
//! across both, and a node killed with `kill -9` loses its names within its lease; a SQLite
//! file serves one node, and a second is refused with the first one's name.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::{Api, Cred, token};
use crate::client::get;
use crate::harness::{
    DEADLINE, Db, Options, Ssh, TestBroker, answers, eventually, label_of, serve_as,
};
use crate::origin::Origin;

/// Short, so that the test waits for a lease to run out in seconds.
const LEASE_SECS: &str = "2";

/// `broker nodes --json`, by name.
fn nodes(broker: &TestBroker) -> Result<Vec<Value>> {
    let out = broker.cli_ok(&["nodes", "--json"])?;
    let all: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    all.as_array().cloned().context("a JSON array of nodes")
}

fn node<'a>(all: &'a [Value], name: &str) -> Option<&'a Value> {
    all.iter().find(|n| n["name"] == name)
}

/// `spec` (a forward of `app`) asked of `node` with `key`: refused with the words one node uses.
async fn refused_app(node: &TestBroker, key: &std::path::Path, spec: &str) -> Result<()> {
    let refused = Ssh::spawn(node, key, &["-o", "ExitOnForwardFailure=no", "-R", spec])?;
    refused
        .line("name \"app\" is in use by another user")
        .await?;
    Ok(())
}

/// One attempt of `bob` to forward `spec` through `broker`: the session when it was granted,
/// `None` when it was refused (ssh exits: `ExitOnForwardFailure`).
async fn attempt(broker: &TestBroker, key: &std::path::Path, spec: &str) -> Option<Ssh> {
    attempt_port(broker.ssh_port, key, spec).await
}

/// [`attempt`] through whatever listens on `port` (a load balancer).
async fn attempt_port(port: u16, key: &std::path::Path, spec: &str) -> Option<Ssh> {
    let ssh = Ssh::spawn_port(port, key, &["-R", spec]).ok()?;
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let out = ssh.out.lock().ok()?.clone();
        let err = ssh.err.lock().ok()?.clone();
        if out.iter().any(|l| l.contains(" -> forward ")) {
            return Some(ssh);
        }
        if out
            .iter()
            .chain(&err)
            .any(|l| l.contains("in use by another user") || l.contains("forwarding failed"))
        {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_hold_each_name_once() -> Result<()> {
    let n1 = TestBroker::start_with(
        Db::Postgres,
        &[
            "--node-name",
            "n1",
            "--node-lease-secs",
            LEASE_SECS,
            "--cluster-addr",
            "10.0.0.1:7000",
            // Announced as above (a private network's address), listened for here.
            "--cluster-listen",
            "127.0.0.1:0",
        ],
    )
    .await?;
    let n2 = n1
        .beside(&[
            "--node-name",
            "n2",
            "--node-lease-secs",
            LEASE_SECS,
            "--cluster-addr",
            "10.0.0.2:7000",
            "--cluster-listen",
            "127.0.0.1:0",
        ])
        .await?;

    // Both announce themselves, with their addresses.
    let all = nodes(&n1)?;
    for (b, name, cluster) in [(&n1, "n1", "10.0.0.1:7000"), (&n2, "n2", "10.0.0.2:7000")] {
        let n = node(&all, name).with_context(|| format!("{name} in {all:?}"))?;
        assert_eq!(n["alive"], true, "{n}");
        assert_eq!(n["cluster_addr"], cluster, "{n}");
        assert_eq!(n["public_addr"], format!("127.0.0.1:{}", b.ssh_port), "{n}");
    }
    let text = n2.cli_ok(&["nodes"])?;
    assert!(
        text.lines().filter(|l| l.contains(" alive ")).count() == 2,
        "{text}"
    );

    // alice serves `app` on n1. The operator then hands the name over (releases her
    // reservation) while her tunnel is live: from then on only the live hold keeps it hers,
    // as a live random name is kept on one node.
    let alice = n1.user_with_key("alice")?;
    let bob = n1.user_with_key("bob")?;
    let (_alice_origin, _alice_ssh, url) = serve_as(&n1, &alice, "app", "alice").await?;
    assert_eq!(get(&url).await?.body, "hello from alice");
    n1.cli_ok(&["release", "app"])?;

    // bob asks n2 for it: refused with the words one node uses, and nothing written for him.
    let bob_origin = Origin::start("bob").await?;
    let spec = format!("app:80:{}", bob_origin.target());
    refused_app(&n2, &bob, &spec).await?;
    assert!(
        !n1.cli_ok(&["names"])?.contains("app"),
        "a refused claim left a reservation"
    );
    eventually("n1 reports its tunnel", DEADLINE, || async {
        let all = nodes(&n2).ok()?;
        (node(&all, "n1")?["tunnels"] == 1).then_some(())
    })
    .await?;

    // kill -9 n1: no leave, no release. Within its lease, n2 grants `app` to bob.
    let mut n1 = n1;
    n1.kill();
    let killed = Instant::now();
    let mut tries = 0;
    let _bob_ssh = eventually("n2 grants app to bob", DEADLINE, || {
        tries += 1;
        attempt(&n2, &bob, &spec)
    })
    .await?;
    let took = killed.elapsed();
    println!(
        "lease expiry: `app` granted on n2 {:.2} s after kill -9 of n1 (lease {LEASE_SECS} s, {tries} attempts)",
        took.as_secs_f64()
    );
    let served = answers("bob's app on n2", DEADLINE, &n2.url("app"), 200).await?;
    assert_eq!(served.body, "hello from bob");
    let all = nodes(&n2)?;
    assert_eq!(node(&all, "n1").context("n1")?["alive"], false, "{all:?}");

    // The API lists the same, to admins only.
    n2.cli_ok(&["user", "add", "root", "--admin"])?;
    let admin = token(&n2, "root", "ops", "admin")?;
    let api = Api::of(&n2);
    let listed = api.call("GET", "/api/v1/nodes", Cred::Token(&admin), None)?;
    assert_eq!(listed.status, 200, "{}", listed.raw);
    let names: Vec<&str> = listed
        .body
        .as_array()
        .context("array")?
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["n1", "n2"]);
    let bobs = token(&n2, "bob", "w", "write")?;
    let denied = api.call("GET", "/api/v1/nodes", Cred::Token(&bobs), None)?;
    assert_eq!(denied.status, 403, "{}", denied.raw);

    // SIGTERM is a clean leave: n2's row goes at once, not after a lease.
    let mut n2 = n2;
    n2.stop();
    let all = nodes(&n1)?;
    assert!(node(&all, "n2").is_none(), "{all:?}");
    Ok(())
}

/// `broker serve` on `first`'s database with `extra` flags, to its exit (it must be refused).
async fn serve_beside_to_exit(first: &TestBroker, extra: &[&str]) -> Result<Output> {
    let dir = tempfile::tempdir()?;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_broker"));
    cmd.env_remove("BROKER_CONFIG")
        .env("BROKER_DATA_DIR", dir.path())
        .env("BROKER_DATABASE_URL", &first.db_url)
        .args(["--ssh-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--https-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(extra)
        .arg("serve")
        .kill_on_drop(true);
    tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .context("a second broker on the same SQLite file kept running")?
        .context("run broker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_serves_one_node() -> Result<()> {
    let mut first = TestBroker::start_with(Db::Sqlite, &["--node-name", "solo"]).await?;
    for name in ["other", "solo"] {
        let out = serve_beside_to_exit(&first, &["--node-name", name]).await?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a second node ran: {err}");
        let expected = if name == "solo" {
            "a broker named \"solo\" is running already"
        } else {
            "the SQLite database is in use by broker node \"solo\""
        };
        assert!(err.contains(expected), "{err}");
        assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    }
    // kill -9 leaves the row behind; the next start on this machine sees its process gone and
    // takes over at once rather than waiting out the lease.
    first.kill();
    let started = Instant::now();
    let second = first.beside(&["--node-name", "solo"]).await?;
    println!(
        "sqlite: restarted {:.2} s after kill -9 (lease 10 s)",
        started.elapsed().as_secs_f64()
    );
    let all = nodes(&second)?;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["pid"], second.pid(), "{all:?}");
    Ok(())
}

/// GET `path` from `host` on `port` of 127.0.0.1, connecting from `source` (any 127.0.0.0/8
/// address is this machine's): status, and the body (the head too, with `/headers`).
async fn get_from(source: &str, port: u16, host: &str, path: &str) -> Result<(u16, String)> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(format!("{source}:0").parse()?)?;
    let mut s = sock.connect(([127, 0, 0, 1], port).into()).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut all = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut all)).await??;
    let text = String::from_utf8_lossy(&all).into_owned();
    let status = crate::client::status_of(&text).with_context(|| text.clone())?;
    Ok((status, text))
}

/// One round trip through a raw TCP tunnel's port on `ip`.
async fn tcp_get(ip: &str, port: u16) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect((ip, port)).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: whatever\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The forwards alice's reconnect loop asks for, in this order: a named HTTP tunnel first (a
/// refusal ends the session before the others are granted), a random one, a TLS passthrough
/// and a raw TCP port.
fn alice_forwards(http: &Origin, tls: &Origin) -> Vec<String> {
    vec![
        "-R".into(),
        format!("app:80:{}", http.target()),
        "-R".into(),
        format!("0:{}", http.target()),
        "-R".into(),
        format!("secure:443:{}", tls.target()),
        "-R".into(),
        format!("tcp:0:{}", http.target()),
    ]
}

/// One attempt of alice's reconnect loop on `node`: the session and its URLs once every
/// forward (each `-R` in `forwards`) is granted, `None` when it was refused.
async fn alice_attempt(
    node: &TestBroker,
    key: &std::path::Path,
    forwards: &[String],
) -> Option<(Ssh, Vec<String>)> {
    let mut args: Vec<&str> = vec!["-v"];
    args.extend(forwards.iter().map(String::as_str));
    let ssh = Ssh::spawn(node, key, &args).ok()?;
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let out = ssh.out.lock().ok()?.clone();
        let urls: Vec<String> = out
            .iter()
            .filter(|l| l.contains(" -> forward "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        if urls.len() == forwards.iter().filter(|a| *a == "-R").count() {
            return Some((ssh, urls));
        }
        let err = ssh.err.lock().ok()?.clone();
        if err.iter().any(|l| l.contains("forwarding failed")) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Nodes `n1`, `n2`, `n3` on one fresh Postgres, each with the cluster's own flags (its name,
/// the short lease, a cluster listener on a free port) and `extra(i)` for node i. Keep them in
/// this order: the database goes with `n1`, which must be dropped last.
async fn three_nodes(extra: impl Fn(usize) -> Vec<String>) -> Result<[TestBroker; 3]> {
    let flags = |i: usize| -> Vec<String> {
        let mut f = node_flags(i);
        f.extend(extra(i));
        f
    };
    let n1 = TestBroker::start_with(Db::Postgres, &as_refs(&flags(1))).await?;
    let n2 = n1.beside(&as_refs(&flags(2))).await?;
    let n3 = n1.beside(&as_refs(&flags(3))).await?;
    Ok([n1, n2, n3])
}

/// Nodes `n1` and `n2` on one fresh Postgres, with the cluster's own flags. Keep them in this
/// order: the database goes with `n1`, which must be dropped last.
async fn two_nodes() -> Result<[TestBroker; 2]> {
    let n1 = TestBroker::start_with(Db::Postgres, &as_refs(&node_flags(1))).await?;
    let n2 = n1.beside(&as_refs(&node_flags(2))).await?;
    Ok([n1, n2])
}

/// The cluster's own flags for node `i`: its name `n{i}`, the short lease, a cluster listener
/// on a free port.
fn node_flags(i: usize) -> Vec<String> {
    vec![
        "--node-name".to_owned(),
        format!("n{i}"),
        "--node-lease-secs".to_owned(),
        LEASE_SECS.to_owned(),
        "--cluster-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ]
}

/// Flags for a node serving HTTPS with the operator's certificate `cert` and key `key`, without
/// redirecting plain HTTP.
fn operator_tls(cert: &std::path::Path, key: &std::path::Path) -> Vec<String> {
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    strings(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--https-redirect",
        "false",
    ])
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A visitor on `node` gets `want` for `host`.
async fn served(node: &TestBroker, host: &str, want: u16) -> Result<String> {
    let port = node.http_port;
    eventually(
        &format!("{host} answers {want} on node :{port}"),
        DEADLINE,
        || async move {
            let (status, text) = get_from("127.0.0.1", port, host, "/").await.ok()?;
            (status == want).then_some(text)
        },
    )
    .await
}

/// The issue's three-node test: an `ssh -R` to node 1 is served by nodes 2 and 3 over HTTP,
/// HTTPS (terminated where the visitor landed), TLS passthrough and a raw TCP port, with the
/// visitor's address carried to node 1; a second owner's claim on node 3 is refused; `kill -9`
/// of node 1 gives visitors 503 with `Retry-After`, the owner's reconnect loop lands on node 2
/// with the same random and named names, and visitors on node 3 reach them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_each_others_tunnels_and_survive_a_kill() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let (cert, cert_key) =
        crate::https::self_signed(certs.path(), "edge", &["app.localhost", "localhost"])?;
    let [n1, n2, n3] = three_nodes(|i| {
        let mut f = operator_tls(&cert, &cert_key);
        f.extend(strings(&["--tcp-ports", "22000-22999"]));
        // Each node's raw TCP ports on an address of its own: one machine, one port each.
        f.extend(["--tcp-addr".to_owned(), format!("127.0.0.{i}")]);
        f
    })
    .await?;

    let alice = n1.user_with_key("alice")?;
    let bob = n1.user_with_key("bob")?;
    let http = Origin::start("alice").await?;
    let owner_tls = Origin::start_tls_self_signed(
        "alice's TLS",
        "secure.localhost",
        &certs.path().join("owner.crt"),
    )
    .await?;
    let forwards = alice_forwards(&http, &owner_tls);

    // alice on node 1; each other node serves her names within a second of the claims.
    let bound = Instant::now();
    let (ssh1, urls) = alice_attempt(&n1, &alice, &forwards)
        .await
        .context("node 1 grants alice's forwards")?;
    let random = label_of(&urls[1])?;
    let tcp_port: u16 = urls[3].rsplit(':').next().context("port")?.parse()?;
    for node in [&n2, &n3] {
        served(node, "app.localhost", 200).await?;
        println!(
            "route propagation: app served on node :{} {} ms after node 1 granted it",
            node.http_port,
            bound.elapsed().as_millis()
        );
    }
    let host = format!("{random}.localhost");
    let (_, body) = get_from("127.0.0.1", n3.http_port, &host, "/").await?;
    assert!(body.ends_with("hello from alice"), "{body}");
    // The visitor's own address, seen by node 2's edge (X-Forwarded-For).
    let (status, headers) =
        get_from("127.0.0.2", n2.http_port, "app.localhost", "/headers").await?;
    assert_eq!(status, 200, "{headers}");
    assert!(headers.contains("x-forwarded-for: 127.0.0.2"), "{headers}");
    // alice's terminal on node 1 shows that request, which node 2 served.
    ssh1.line("GET /headers 200").await?;
    // HTTPS terminated on node 3 with the operator's certificate.
    let (_, code, body) =
        crate::https::curl("app.localhost", n3.https_port, "/", &cert, &["--http1.1"]).await?;
    assert_eq!((code, body.as_str()), (200, "hello from alice"));
    // TLS passthrough through node 2: curl trusts only alice's own certificate. Its visitor
    // address is carried to node 1 (PROXY v2), which gives it to alice's ssh as the channel's
    // originator (a passthrough connection is a channel of its own, never a pooled one).
    let (_, code, body) = crate::https::curl(
        "secure.localhost",
        n2.https_port,
        "/",
        &certs.path().join("owner.crt"),
        &["--interface", "127.0.0.3"],
    )
    .await?;
    assert_eq!((code, body.as_str()), (200, "hello from alice's TLS"));
    ssh1.err_line("originator 127.0.0.3").await?;
    // The raw TCP port, open on every node's address.
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let text = eventually(
            &format!("tcp port {tcp_port} on {ip}"),
            DEADLINE,
            || async move {
                tcp_get(ip, tcp_port)
                    .await
                    .ok()
                    .filter(|t| t.ends_with("hello from alice"))
            },
        )
        .await?;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }

    // alice's API token, asked on node 2: her tunnels are listed with the node that holds
    // them (a disconnect asked there: a_disconnect_asked_on_another_node_…).
    let api = crate::api::Api::of(&n2);
    let token = crate::api::token(&n2, "alice", "cluster", "write")?;
    let listed = api.call(
        "GET",
        "/api/v1/tunnels",
        crate::api::Cred::Token(&token),
        None,
    )?;
    assert_eq!(listed.status, 200, "{}", listed.raw);
    let app = listed
        .body
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "app"))
        .with_context(|| listed.raw.clone())?;
    assert_eq!(app["node"], "n1", "{}", listed.raw);
    served(&n2, "app.localhost", 200).await?;

    // bob asks node 3 for `app`: refused as one node would.
    let bob_origin = Origin::start("bob").await?;
    let spec = format!("app:80:{}", bob_origin.target());
    refused_app(&n3, &bob, &spec).await?;

    // kill -9 node 1: visitors on node 3 are asked to retry, not shown an error page.
    let mut n1 = n1;
    n1.kill();
    drop(ssh1);
    let killed = Instant::now();
    let text = served(&n3, "app.localhost", 503).await?;
    println!(
        "node loss: node 3 answered 503 {} ms after kill -9 of node 1",
        killed.elapsed().as_millis()
    );
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");

    // alice's reconnect loop lands on node 2 and gets her names back once node 1's lease ends.
    let mut tries = 0;
    let (_ssh2, again) = eventually("node 2 grants alice's forwards again", DEADLINE, || {
        tries += 1;
        alice_attempt(&n2, &alice, &forwards)
    })
    .await?;
    println!(
        "reconnect: alice's forwards granted on node 2 {:.2} s after the kill (lease {LEASE_SECS} s, {tries} attempts)",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(label_of(&again[0])?, "app");
    assert_eq!(
        label_of(&again[1])?,
        random,
        "the same random name, on another node"
    );
    for name in ["app.localhost", host.as_str()] {
        let text = served(&n3, name, 200).await?;
        assert!(text.ends_with("hello from alice"), "{text}");
    }
    println!(
        "recovery: node 3 served alice again {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    Ok(())
}

/// alice's token asks node 2 to disconnect `app`, which her session on node 1 serves: node 1
/// carries it out (her terminal says who did it), lets go of the name, and node 2 answers 204
/// once it no longer sends visitors there. A name nobody serves is 404 there as anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_asked_on_another_node_is_carried_out_by_the_holder() -> Result<()> {
    let [n1, n2] = two_nodes().await?;
    let alice = n1.user_with_key("alice")?;
    let origin = Origin::start("alice").await?;
    let ssh = Ssh::spawn(&n1, &alice, &["-R", &format!("app:80:{}", origin.target())])?;
    served(&n2, "app.localhost", 200).await?;

    let api = crate::api::Api::of(&n2);
    let token = crate::api::token(&n2, "alice", "cluster", "write")?;
    let asked = Instant::now();
    let kicked = api.call(
        "DELETE",
        "/api/v1/tunnels/app",
        crate::api::Cred::Token(&token),
        None,
    )?;
    assert_eq!(kicked.status, 204, "{}", kicked.raw);
    println!(
        "remote disconnect: node 2 answered 204 {} ms after it was asked",
        asked.elapsed().as_millis()
    );
    ssh.line("tunnel app was disconnected by alice/token:cluster")
        .await?;
    // Gone from both nodes: node 1 parks it for its grace (503, Retry-After), and node 2,
    // which no longer has a holder to send visitors to, does the same.
    for node in [&n1, &n2] {
        let text = served(node, "app.localhost", 503).await?;
        assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    }
    let listed = api.call(
        "GET",
        "/api/v1/tunnels",
        crate::api::Cred::Token(&token),
        None,
    )?;
    assert_eq!(listed.status, 200, "{}", listed.raw);
    assert!(
        listed
            .body
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t["name"] != "app")),
        "{}",
        listed.raw
    );
    // A second disconnect finds nothing to disconnect.
    let again = api.call(
        "DELETE",
        "/api/v1/tunnels/app",
        crate::api::Cred::Token(&token),
        None,
    )?;
    assert_eq!(again.status, 404, "{}", again.raw);
    drop(ssh);
    Ok(())
}

/// alice's tunnel on node 1 seems stuck (her laptop changed networks, say) and her reconnect
/// lands on node 2: the newer session takes `app` over at once, as on one node, instead of
/// waiting for node 1 to notice the old one is gone. Node 1 tells the old session, and its
/// visitors reach the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_newer_session_on_another_node_takes_the_name_over() -> Result<()> {
    let [n1, n2] = two_nodes().await?;
    let alice = n1.user_with_key("alice")?;
    let bob = n1.user_with_key("bob")?;
    let (first, second) = (
        Origin::start("first").await?,
        Origin::start("second").await?,
    );
    let old = Ssh::spawn(&n1, &alice, &["-R", &format!("app:80:{}", first.target())])?;
    answers_with(&n2, "hello from first").await?;

    // Another user still cannot have it, on either node.
    let bob_origin = Origin::start("bob").await?;
    refused_app(&n2, &bob, &format!("app:80:{}", bob_origin.target())).await?;

    let asked = Instant::now();
    let spec = strings(&["-R", &format!("app:80:{}", second.target())]);
    let (_new, _) = alice_attempt(&n2, &alice, &spec)
        .await
        .context("node 2 grants alice's newer session at once")?;
    println!(
        "takeover: node 2 granted app to alice's newer session {} ms after she asked",
        asked.elapsed().as_millis()
    );
    old.line("app was taken over by a newer session of yours, on node n2")
        .await?;
    for node in [&n1, &n2] {
        answers_with(node, "hello from second").await?;
    }
    println!(
        "takeover: both nodes served the newer session {} ms after she asked",
        asked.elapsed().as_millis()
    );
    Ok(())
}

/// Node 1 of a cluster on a fresh Postgres database, reaching it through a proxy the test can
/// cut (`crate::faults::Proxy`): the proxy and the node.
async fn node_one_through_a_proxy() -> Result<(crate::faults::Proxy, TestBroker)> {
    let proxy = crate::faults::Proxy::start(([127, 0, 0, 1], 5432).into()).await?;
    let n1 = TestBroker::start_opts(
        Db::Postgres,
        &as_refs(&node_flags(1)),
        Options {
            pg_port: Some(proxy.port),
            ..Options::default()
        },
    )
    .await?;
    Ok((proxy, n1))
}

/// Node 1 alone loses the database, and alice's second session, on node 2, takes `app` over.
/// Cut off, node 1 cannot hear of it and goes on serving her first session (it cannot tell
/// this from an outage of the database, which must stop no tunnel). Once it reaches the
/// database again it finds the name held on node 2, stops serving it itself, tells the first
/// session, and sends its visitors to node 2's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_database_gives_up_names_taken_meanwhile() -> Result<()> {
    let (proxy, n1) = node_one_through_a_proxy().await?;
    // Node 2 reaches Postgres directly: only node 1 is cut off.
    let direct = n1
        .db_url
        .replacen(&format!(":{}/", proxy.port), ":5432/", 1);
    let n2 = TestBroker::start_opts(
        Db::Postgres,
        &as_refs(&node_flags(2)),
        Options {
            database: Some(direct),
            ..Options::default()
        },
    )
    .await?;
    let alice = n1.user_with_key("alice")?;
    let (first, second) = (
        Origin::start("first").await?,
        Origin::start("second").await?,
    );
    let ssh1 = Ssh::spawn(&n1, &alice, &["-R", &format!("app:80:{}", first.target())])?;
    answers_with(&n2, "hello from first").await?;

    proxy.cut();
    let cut = Instant::now();
    let spec = strings(&["-R", &format!("app:80:{}", second.target())]);
    let _ssh2 = eventually(
        "alice's second session takes app on node 2",
        DEADLINE,
        || alice_attempt(&n2, &alice, &spec),
    )
    .await?;
    println!(
        "cut off: node 2 granted app {:.2} s after node 1 lost the database",
        cut.elapsed().as_secs_f64()
    );
    answers_with(&n2, "hello from second").await?;
    // The split this test is about: node 1 still serves the first session.
    let (_, body) = get_from("127.0.0.1", n1.http_port, "app.localhost", "/").await?;
    assert!(body.ends_with("hello from first"), "{body}");

    proxy.restore();
    let back = Instant::now();
    ssh1.line("app was taken over by a newer session of yours, on node n2")
        .await?;
    answers_with(&n1, "hello from second").await?;
    println!(
        "healed: node 1 served the second session {:.2} s after it reached the database again",
        back.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until `app.localhost` on `node` answers 200 with a body ending in `want`.
async fn answers_with(node: &TestBroker, want: &str) -> Result<()> {
    let port = node.http_port;
    eventually(
        &format!("{want:?} on node :{port}"),
        DEADLINE,
        || async move {
            let (status, body) = get_from("127.0.0.1", port, "app.localhost", "/")
                .await
                .ok()?;
            (status == 200 && body.ends_with(want)).then_some(())
        },
    )
    .await
}

/// What a visitor on another node gets is what the holder's owner set up: HTTPS landing on
/// node 2 is served over HTTP/1.1 and HTTP/2 alike (each request on to node 1), and a password
/// rule saved through node 1 is asked for on node 3, where the right one lets the visitor in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_on_other_nodes_get_http2_and_the_owners_rules() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let (cert, cert_key) = crate::https::self_signed(certs.path(), "edge", &["app.localhost"])?;
    let [n1, n2, n3] = three_nodes(|_| operator_tls(&cert, &cert_key)).await?;
    let alice = n1.user_with_key("alice")?;
    let http = Origin::start("alice").await?;
    let _ssh = Ssh::spawn(&n1, &alice, &["-R", &format!("app:80:{}", http.target())])?;
    served(&n2, "app.localhost", 200).await?;
    served(&n3, "app.localhost", 200).await?;
    for extra in [&["--http1.1"][..], &["--http2"][..]] {
        let (_, code, body) =
            crate::https::curl("app.localhost", n2.https_port, "/", &cert, extra).await?;
        assert_eq!(
            (code, body.as_str()),
            (200, "hello from alice"),
            "{extra:?}"
        );
    }

    // A password on the name: asked on node 3, and the right one lets the visitor in there.
    let out = n1.cli_input(&["rules", "app", "auth", "add", "guest"], "pw-1234567890\n")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    served(&n3, "app.localhost", 401).await?;
    let text = crate::client::raw(
        n3.http_port,
        b"GET / HTTP/1.1\r\nHost: app.localhost\r\nAuthorization: Basic Z3Vlc3Q6cHctMTIzNDU2Nzg5MA==\r\nConnection: close\r\n\r\n",
        DEADLINE,
    )
    .await?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello from alice"), "{text}");
    Ok(())
}

/// Postgres goes away under a two-node cluster for three leases: both nodes keep serving the
/// tunnel (node 1 its own, node 2 through the hop) from memory the whole time, an owner
/// connecting meanwhile is told why, and once the database is back nothing was lost: the
/// tunnel is still served on both nodes, and a new claim on node 2 is served on node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_stops_no_tunnel_in_the_cluster() -> Result<()> {
    let (proxy, n1) = node_one_through_a_proxy().await?;
    let n2 = n1.beside(&as_refs(&node_flags(2))).await?;
    let alice = n1.user_with_key("alice")?;
    let http = Origin::start("alice").await?;
    let _ssh = Ssh::spawn(&n1, &alice, &["-R", &format!("app:80:{}", http.target())])?;
    served(&n2, "app.localhost", 200).await?;

    // Every request on both nodes answered by alice's service, for `span`.
    async fn always_served(nodes: [&TestBroker; 2], span: Duration) -> Result<usize> {
        let end = Instant::now() + span;
        let mut n = 0;
        while Instant::now() < end {
            for node in nodes {
                let (status, body) =
                    get_from("127.0.0.1", node.http_port, "app.localhost", "/").await?;
                assert_eq!(status, 200, "node :{}: {body}", node.http_port);
                assert!(body.ends_with("hello from alice"), "{body}");
                n += 1;
            }
        }
        Ok(n)
    }
    let bob = n1.user_with_key("bob")?;
    let origin_b = Origin::start("bob").await?;
    let lease = Duration::from_secs(LEASE_SECS.parse()?);
    proxy.cut();
    let during = always_served([&n1, &n2], 3 * lease).await?;
    println!(
        "outage: {during} requests over both nodes in {:?}, all 200",
        3 * lease
    );
    // An owner connecting meanwhile is told why.
    let waiting = Ssh::spawn(
        &n2,
        &bob,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("blog:80:{}", origin_b.target()),
        ],
    )?;
    waiting
        .err_line("Warren: the broker cannot check keys right now; try again shortly.")
        .await?;

    proxy.restore();
    // Back: the tunnel never stops (no node takes the other for dead on stale heartbeats), and
    // claims work again, served across the nodes.
    let after = always_served([&n1, &n2], 3 * lease).await?;
    println!(
        "after the outage: {after} requests in {:?}, all 200",
        3 * lease
    );
    let again = eventually("bob's claim on node 2 after the outage", DEADLINE, || {
        let (n2, bob, origin_b) = (&n2, &bob, &origin_b);
        async move {
            let ssh =
                Ssh::spawn(n2, bob, &["-R", &format!("blog:80:{}", origin_b.target())]).ok()?;
            ssh.url(0).await.ok().map(|_| ssh)
        }
    })
    .await?;
    let text = served(&n1, "blog.localhost", 200).await?;
    assert!(text.ends_with("hello from bob"), "{text}");
    drop(again);
    Ok(())
}

/// One ACME client for the cluster: three nodes on one Postgres with their built-in DNS and
/// Pebble, which asks node 3's DNS and validates HTTP-01 on node 3's port. Node 1 holds the
/// ACME lease (it started first) and orders `app`'s certificate when alice binds it there;
/// node 3 answers the challenge from what node 1 published; every node then serves the
/// certificate, sealed with the key the cluster keeps in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_orders_every_node_answers_and_serves_the_certificate() -> Result<()> {
    use crate::public::pebble;
    let dir = tempfile::tempdir()?;
    let (http3, https3, dns3) = (
        pebble::free_port(),
        pebble::free_port(),
        pebble::free_port(),
    );
    let pebble = pebble::Pebble::start(dir.path(), dns3, http3.port(), https3.port()).await;
    let listener_ca = dir.path().join("pebble-listener-ca.pem");
    std::fs::write(&listener_ca, &pebble.listener_ca_pem)?;
    let zone = "test.warren";
    let root_ca = listener_ca.display().to_string();
    let [n1, n2, n3] = three_nodes(|i| {
        // Node 3 on the ports Pebble validates and asks DNS on; the others anywhere.
        let (http, https, dns) = if i == 3 {
            (http3.to_string(), https3.to_string(), dns3.to_string())
        } else {
            let any = "127.0.0.1:0".to_owned();
            (any.clone(), any, pebble::free_port().to_string())
        };
        strings(&[
            "--http-addr",
            &http,
            "--https-addr",
            &https,
            "--domain",
            zone,
            "--dns-provider",
            "builtin",
            "--dns-addr",
            &dns,
            "--public-ipv4",
            "127.0.0.1",
            "--acme-directory",
            &pebble.directory_url,
            "--acme-root-ca",
            &root_ca,
            "--acme-challenge",
            "http-01",
            "--acme-wildcard",
            "false",
            "--https-redirect",
            "false",
        ])
    })
    .await?;

    let alice = n1.user_with_key("alice")?;
    let origin = Origin::start("alice").await?;
    let ssh = Ssh::spawn(&n1, &alice, &["-R", &format!("app:80:{}", origin.target())])?;
    ssh.url(0).await?;
    // Issued by node 1 (the only one ordering), validated through node 3.
    let host = format!("app.{zone}");
    let issued = eventually(
        "app's certificate issued",
        Duration::from_secs(60),
        || async {
            let out = n2.cli_ok(&["certs", "list"]).ok()?;
            out.lines()
                .find(|l| l.starts_with(&host) && l.contains("Pebble"))
                .map(str::to_owned)
        },
    )
    .await
    .with_context(|| format!("pebble log:\n{}", pebble.log()))?;
    println!("issued: {issued}");
    let root = dir.path().join("issuing-root.pem");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&listener_ca)
        .arg(format!("https://{}/roots/0", pebble.mgmt_addr))
        .output()
        .await?;
    std::fs::write(&root, &out.stdout)?;
    for node in [&n1, &n2, &n3] {
        let port = node.https_port;
        let (host, root) = (host.clone(), root.clone());
        let (_, code, body) = eventually(&format!("https on :{port}"), DEADLINE, || {
            let (host, root) = (host.clone(), root.clone());
            async move { crate::https::curl(&host, port, "/", &root, &[]).await.ok() }
        })
        .await?;
        assert_eq!((code, body.as_str()), (200, "hello from alice"));
    }
    // Node 1 took the ACME lease (it started first), and node 3, which the CA reached, did
    // not: it answered from what node 1 published.
    let mut leaders = Vec::new();
    for node in [&n1, &n2, &n3] {
        leaders.push(crate::flood::metric(node, "warren_cluster_acme_leader").await?);
    }
    assert_eq!(leaders, [1.0, 0.0, 0.0]);
    // One order in all: a second ordering node would have stored a second issue.
    let events = n1.cli_ok(&["events", "--limit", "500"])?;
    let issues = events
        .lines()
        .filter(|l| l.contains("cert.issue") && l.contains(&host))
        .count();
    assert_eq!(issues, 1, "{events}");
    drop(ssh);
    Ok(())
}

/// Where HAProxy connects to the nodes from; they take PROXY headers from it.
const HAPROXY_SOURCE: &str = "127.0.0.2";

/// deploy/cluster/haproxy.cfg with its three `warren-N` servers at `nodes`' ports on this
/// machine and its frontends on free ports: (config text, ssh port, http port).
fn haproxy_config(nodes: &[&TestBroker]) -> Result<(String, u16, u16)> {
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/cluster/haproxy.cfg"
    ))?;
    let free = || crate::public::pebble::free_port().port();
    let (ssh, http, https) = (free(), free(), free());
    let mut out = String::new();
    for line in template.lines() {
        let t = line.trim_start();
        let line = if let Some(rest) = t.strip_prefix("server warren-") {
            let i: usize = rest[..1].parse()?;
            let node = nodes.get(i - 1).context("a node per server line")?;
            let port = if rest.contains(":2222") {
                node.ssh_port
            } else if rest.contains(":80 ") {
                node.http_port
            } else {
                node.https_port
            };
            // The deployed options (send-proxy-v2), from an address of HAProxy's own that the
            // nodes list as a PROXY source, so that visitors (127.0.0.1) differ from it.
            let proxy = if rest.contains("send-proxy-v2") {
                "send-proxy-v2 "
            } else {
                ""
            };
            format!(
                "    server warren-{i} 127.0.0.1:{port} {proxy}source {HAPROXY_SOURCE} check inter 500ms fall 2 rise 2"
            )
        } else if t.starts_with("maxconn ") {
            // Two descriptors per connection: the deployed figure needs a higher open-file
            // limit than a test process has.
            "    maxconn 4000".to_owned()
        } else if t == "bind :2222" {
            format!("    bind 127.0.0.1:{ssh}")
        } else if t == "bind :80" {
            format!("    bind 127.0.0.1:{http}")
        } else if t == "bind :443" {
            format!("    bind 127.0.0.1:{https}")
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok((out, ssh, http))
}

/// The deployed HAProxy layout, run for real: three nodes behind deploy/cluster/haproxy.cfg
/// (its servers pointed at this machine's ports). The owner connects through HAProxy to
/// whichever node it picks, visitors through HAProxy are spread over all three (two of them
/// forwarding to the holder), and after `kill -9` of the holder the owner's reconnect loop
/// comes back through HAProxy on a live node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_spreads_owners_and_visitors_over_the_nodes() -> Result<()> {
    let [n1, n2, n3] = three_nodes(|_| strings(&["--proxy-protocol-from", HAPROXY_SOURCE])).await?;
    let (config, ssh_port, http_port) = haproxy_config(&[&n1, &n2, &n3])?;
    let dir = tempfile::tempdir()?;
    let _haproxy = crate::balancer::spawn_haproxy(dir.path(), &config)?;

    let alice = n1.user_with_key("alice")?;
    let origin = Origin::start("alice").await?;
    let spec = format!("app:80:{}", origin.target());
    let owner = eventually("alice through HAProxy", DEADLINE, || {
        attempt_port(ssh_port, &alice, &spec)
    })
    .await?;
    // Twelve visitors through HAProxy, round-robin over the three nodes: every one served.
    for _ in 0..12 {
        served_through(http_port, 200).await?;
    }
    // Its PROXY header names the visitor, whichever node it reached and whichever holds the
    // tunnel: three in a row, one per node.
    for _ in 0..3 {
        let (status, text) = get_from("127.0.0.1", http_port, "app.localhost", "/headers").await?;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("x-forwarded-for: 127.0.0.1\n"), "{text}");
    }
    let mut holder = None;
    for (i, node) in [&n1, &n2, &n3].into_iter().enumerate() {
        if crate::flood::metric(node, "warren_tunnels_live{kind=\"http\"}").await? >= 1.0 {
            holder = Some(i);
        }
    }
    let holder = holder.context("one node holds alice's tunnel")?;
    let mut nodes = [Some(n1), Some(n2), Some(n3)];
    let mut dead = nodes[holder].take().context("holder")?;
    dead.kill();
    drop(owner);
    let killed = Instant::now();
    let mut tries = 0;
    let _back = eventually("alice back through HAProxy", DEADLINE, || {
        tries += 1;
        attempt_port(ssh_port, &alice, &spec)
    })
    .await?;
    println!(
        "haproxy: alice back through HAProxy {:.2} s after kill -9 of node {} ({tries} attempts, lease {LEASE_SECS} s)",
        killed.elapsed().as_secs_f64(),
        holder + 1
    );
    for _ in 0..6 {
        served_through(http_port, 200).await?;
    }
    drop(nodes);
    drop(dead);
    Ok(())
}

/// A visitor through HAProxy's HTTP frontend gets `want` from alice's tunnel.
async fn served_through(port: u16, want: u16) -> Result<()> {
    let (status, text) = eventually("a visitor through HAProxy", DEADLINE, || async move {
        get_from("127.0.0.1", port, "app.localhost", "/")
            .await
            .ok()
            .filter(|(s, _)| *s == want)
    })
    .await?;
    assert!(
        status == 200 && text.ends_with("hello from alice"),
        "{text}"
    );
    Ok(())
}

/// Each node says at start whether Postgres can take every live node's connections at once
/// (`database_pool` + 2 each): node 1 at the default pool fits, and node 2, joining with a pool
/// no Postgres allows (its max_connections stops at 262,143), is told what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_warns_when_postgres_cannot_take_every_nodes_connections() -> Result<()> {
    let n1 = TestBroker::start_opts(
        Db::Postgres,
        &as_refs(&node_flags(1)),
        Options {
            capture_stderr: true,
            ..Options::default()
        },
    )
    .await?;
    let lines = n1.stderr_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Postgres connections suffice") && l.contains("need=18")),
        "{lines:?}"
    );
    let mut flags = node_flags(2);
    flags.extend(strings(&["--database-pool", "200000"]));
    let n2 = TestBroker::start_opts(
        Db::Postgres,
        &as_refs(&flags),
        Options {
            capture_stderr: true,
            database: Some(n1.db_url.clone()),
            ..Options::default()
        },
    )
    .await?;
    let lines = n2.stderr_lines();
    let warning = lines
        .iter()
        .find(|l| l.contains("WARN") && l.contains("max_connections"))
        .with_context(|| format!("no warning about Postgres's connections: {lines:?}"))?;
    assert!(
        warning.contains(
            "2 node(s) with database_pool = 200000 may open 400004 (200002 each: the pool, the \
             LISTEN and the ACME lease): raise Postgres's max_connections, or lower \
             database_pool on every node"
        ),
        "{warning}"
    );
    // It still serves: the warning is about a storm to come, not a reason to refuse.
    let alice = n2.user_with_key("alice")?;
    let origin = Origin::start("pooled").await?;
    let _ssh = Ssh::spawn(&n2, &alice, &["-R", &format!("app:80:{}", origin.target())])?;
    served(&n1, "app.localhost", 200).await?;
    Ok(())
}

/// A tunnel's bandwidth limit is its owner's across the cluster: a visitor on each of two
/// nodes share it (the holding node paces the hop's streams in the same bucket as its own
/// visitors), where before each node gave its visitors the whole limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnels_bandwidth_limit_holds_across_nodes() -> Result<()> {
    use crate::limits::{RATE, SIZE, download};
    let limited = |i: usize| {
        let mut flags = node_flags(i);
        flags.extend(strings(&["--max-tunnel-bytes-per-sec", &RATE.to_string()]));
        flags
    };
    let n1 =
        TestBroker::start_opts(Db::Postgres, &as_refs(&limited(1)), Options::default()).await?;
    let n2 = TestBroker::start_opts(
        Db::Postgres,
        &as_refs(&limited(2)),
        Options {
            database: Some(n1.db_url.clone()),
            ..Options::default()
        },
    )
    .await?;
    let alice = n1.user_with_key("alice")?;
    let origin = Origin::start("bw").await?;
    let ssh = Ssh::spawn(&n1, &alice, &["-R", &format!("bw:80:{}", origin.target())])?;
    served(&n2, "bw.localhost", 200).await?;
    let started = Instant::now();
    let (direct, hop) = tokio::join!(
        download(n1.http_port, "bw.localhost"),
        download(n2.http_port, "bw.localhost")
    );
    let ((direct_len, direct), (hop_len, hop)) = (direct?, hop?);
    assert_eq!((direct_len, hop_len), (SIZE, SIZE));
    let both = started.elapsed();
    println!(
        "bandwidth across nodes: 1 MB on node 1 took {direct:?} and 1 MB through node 2 \
         {hop:?} at once, {both:?} in all, at {RATE} B/s"
    );
    // Two megabytes at 200 kB/s after a 200 kB burst take about 9 s; with a bucket per node,
    // both downloads ended in about 4.
    assert!(
        direct.max(hop) >= Duration::from_secs(7),
        "the two nodes gave more than {RATE} B/s: {direct:?} and {hop:?}"
    );
    ssh.line("bw download held to 200000 bytes/s (max_tunnel_bytes_per_sec)")
        .await?;
    Ok(())
}

/// An SSE reader of `path` on `node`'s API: connected and answered 200 before this returns (so
/// it follows everything recorded afterwards); what it reads piles up in the returned text.
async fn follow(
    node: &TestBroker,
    path: &str,
    token: &str,
) -> Result<std::sync::Arc<std::sync::Mutex<String>>> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", node.api_port)).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await??;
        anyhow::ensure!(
            n > 0,
            "the stream closed: {}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "{text}");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(text));
    let pile = seen.clone();
    tokio::spawn(async move {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if let Ok(mut p) = pile.lock() {
                p.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    Ok(seen)
}

/// A tunnel's request log and counts are the cluster's: alice's tunnel on node 1 is visited on
/// both nodes, and on either node her request list and her live view (what the console shows)
/// have both visits with each visitor's own address, in the order they were made (node 2 reads
/// them from node 1, which keeps them), and her tunnel list the same counts. Bob sees nothing
/// of it on either node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnels_request_log_and_counts_have_every_nodes_visitors() -> Result<()> {
    let [n1, n2] = two_nodes().await?;
    let alice = n1.user_with_key("alice")?;
    n1.cli_ok(&["user", "add", "bob"])?;
    let origin = Origin::start("alice").await?;
    let _ssh = Ssh::spawn(&n1, &alice, &["-R", &format!("app:80:{}", origin.target())])?;
    served(&n2, "app.localhost", 200).await?;
    let alice_t = token(&n2, "alice", "log", "read")?;
    let bob_t = token(&n2, "bob", "log", "read")?;
    let live = "/api/v1/tunnels/app/requests/live";
    let (live1, live2) = (
        follow(&n1, live, &alice_t).await?,
        follow(&n2, live, &alice_t).await?,
    );
    // Each visit shows in both live views before the next is made: an entry made on node 2
    // reaches node 1 a moment after its response, and the order checked below is the visits'.
    let shown = |want: &'static str| {
        let views = [("node 1", live1.clone()), ("node 2", live2.clone())];
        async move {
            for (node, seen) in views {
                eventually(
                    &format!("{want} in the live view on {node}"),
                    DEADLINE,
                    || async { seen.lock().ok()?.contains(want).then_some(()) },
                )
                .await?;
            }
            anyhow::Ok(())
        }
    };
    let via2 = get_from(
        "127.0.0.2",
        n2.http_port,
        "app.localhost",
        "/bytes/2?k=secret",
    )
    .await?;
    assert_eq!(via2.0, 200, "{}", via2.1);
    shown("/bytes/2?k=…").await?;
    let via1 = get_from("127.0.0.3", n1.http_port, "app.localhost", "/bytes/1").await?;
    assert_eq!(via1.0, 200, "{}", via1.1);
    shown("/bytes/1").await?;
    for seen in [&live1, &live2] {
        let text = seen
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        assert!(text.contains("event: request"), "{text}");
        assert!(!text.contains("secret"), "a query value went out: {text}");
        assert!(text.contains("\"visitor\":\"127.0.0.2\""), "{text}");
        assert!(text.contains("\"visitor\":\"127.0.0.3\""), "{text}");
    }
    let started = Instant::now();
    let mut logged = 0;
    for node in [&n1, &n2] {
        let r = Api::of(node).call(
            "GET",
            "/api/v1/tunnels/app/requests",
            Cred::Token(&alice_t),
            None,
        )?;
        assert_eq!(r.status, 200, "{}", r.raw);
        // Every request the tunnel answered, the visits made to see it up included.
        logged = r.body.as_array().map_or(0, Vec::len) as u64;
        let rows: Vec<(String, String, u64)> = r
            .body
            .as_array()
            .context("a list")?
            .iter()
            // The visits made to see the tunnel up first are there too.
            .filter(|e| e["path"] != "/")
            .map(|e| {
                (
                    e["path"].as_str().unwrap_or_default().to_owned(),
                    e["visitor"].as_str().unwrap_or_default().to_owned(),
                    e["status"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("/bytes/2?k=…".to_owned(), "127.0.0.2".to_owned(), 200),
                ("/bytes/1".to_owned(), "127.0.0.3".to_owned(), 200),
            ],
            "{}",
            r.raw
        );
        let r = Api::of(node).call(
            "GET",
            "/api/v1/tunnels/app/requests",
            Cred::Token(&bob_t),
            None,
        )?;
        assert_eq!(r.status, 404, "{}", r.raw);
        assert!(!r.raw.contains("/bytes/"), "{}", r.raw);
    }
    println!(
        "cluster request log: both nodes listed it in {} ms",
        started.elapsed().as_millis()
    );
    // The tunnel list's counters are the cluster's on both nodes, one request per entry in the
    // log: node 2 reports its visitors to node 1 (each second) and asks node 1 for them.
    let row = |node: &TestBroker| -> Option<(u64, u64, Option<String>)> {
        let r = Api::of(node)
            .call("GET", "/api/v1/tunnels", Cred::Token(&alice_t), None)
            .ok()?;
        let t = r.body.as_array()?.iter().find(|t| t["name"] == "app")?;
        Some((
            t["requests"].as_u64()?,
            t["bytes_out"].as_u64()?,
            t["node"].as_str().map(str::to_owned),
        ))
    };
    let (on1, on2) = eventually("the same counts on both nodes", DEADLINE, || async {
        let (on1, on2) = (row(&n1)?, row(&n2)?);
        (on1.0 == logged && (on1.0, on1.1) == (on2.0, on2.1)).then_some((on1, on2))
    })
    .await?;
    assert_eq!((on1.2.as_deref(), on2.2.as_deref()), (None, Some("n1")));
    println!(
        "cluster counts: {} requests, {} bytes out on both nodes",
        on1.0, on1.1
    );
    Ok(())
}

/// Visitor connections to `host` on `node`, each waiting for a slow answer (a minute), so
/// that each holds one of the tunnel's slots until the returned set is dropped (which closes
/// them).
fn hold(node: &TestBroker, host: &str, n: usize) -> tokio::task::JoinSet<()> {
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (port, host) = (node.http_port, host.to_owned());
        held.spawn(async move {
            let _ = get_from("127.0.0.1", port, &host, "/slow?ms=60000").await;
        });
    }
    held
}

/// A tunnel's cap on concurrent visitor connections (`max_tunnel_connections = 2`) holds
/// across the nodes, a second or so behind: two visitors waiting on node 2 make node 1, which
/// holds the tunnel, answer 503 with `Retry-After`; two waiting on node 1 make node 2 do the
/// same once it has heard of them; each serves again once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnels_connection_cap_holds_across_nodes() -> Result<()> {
    let flags = |i: usize| {
        let mut f = node_flags(i);
        f.extend(strings(&["--max-tunnel-connections", "2"]));
        f
    };
    let n1 = TestBroker::start_with(Db::Postgres, &as_refs(&flags(1))).await?;
    let n2 = n1.beside(&as_refs(&flags(2))).await?;
    let alice = n1.user_with_key("alice")?;
    let origin = Origin::start("alice").await?;
    let _ssh = Ssh::spawn(
        &n1,
        &alice,
        &["-R", &format!("busy:80:{}", origin.target())],
    )?;
    served(&n2, "busy.localhost", 200).await?;

    for (full, other) in [(&n2, &n1), (&n1, &n2)] {
        let held = hold(full, "busy.localhost", 2);
        let started = Instant::now();
        let text = served(other, "busy.localhost", 503).await?;
        assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
        println!(
            "cluster cap: node :{} refused a third visitor {} ms after two were held on node :{}",
            other.http_port,
            started.elapsed().as_millis(),
            full.http_port
        );
        drop(held);
        served(other, "busy.localhost", 200).await?;
    }
    Ok(())
}
