//! Several brokers on one database: two nodes on Postgres list each other, hold each name once
//! across both, and a node killed with `kill -9` loses its names within its lease; a SQLite
//! file serves one node, and a second is refused with the first one's name.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::api::{Api, Cred, token};
use crate::client::get;
use crate::harness::{DEADLINE, Db, Ssh, TestBroker, answers, eventually, serve_as};
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

/// One attempt of `bob` to forward `spec` through `broker`: the session when it was granted,
/// `None` when it was refused (ssh exits: `ExitOnForwardFailure`).
async fn attempt(broker: &TestBroker, key: &std::path::Path, spec: &str) -> Option<Ssh> {
    let ssh = Ssh::spawn(broker, key, &["-R", spec]).ok()?;
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
    let refused = Ssh::spawn(&n2, &bob, &["-o", "ExitOnForwardFailure=no", "-R", &spec])?;
    refused
        .line("name \"app\" is in use by another user")
        .await?;
    assert!(
        !n1.cli_ok(&["names"])?.contains("app"),
        "a refused claim left a reservation"
    );
    drop(refused);
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
