//! Faults injected into a running broker: the database going away under live tunnels. The
//! broker reaches Postgres through a TCP proxy the test cuts and restores, so one test can lose
//! its database while the others (same Postgres server) keep theirs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::client::get;
use crate::harness::{DEADLINE, Db, Options, Ssh, TestBroker, eventually, label_of, serve_as};
use crate::origin::Origin;

/// A TCP proxy to Postgres that can drop every connection and refuse new ones.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut visitor, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(visitor);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut visitor, &mut server).await;
                    }
                });
                conns2.lock().expect("lock").push(task.abort_handle());
            }
        });
        Ok(Self { port, up, conns })
    }

    /// The database is gone: every connection closes, new ones are refused.
    pub(crate) fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().expect("lock").drain(..) {
            c.abort();
        }
    }

    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_stops_no_live_tunnel_and_loses_nothing() -> Result<()> {
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], 5432))).await?;
    let broker = TestBroker::start_opts(
        Db::Postgres,
        &[],
        Options {
            pg_port: Some(proxy.port),
            ..Options::default()
        },
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["reserve", "alice", "chat"])?;
    // The owner's session has a control socket, so it can ask for another forward later.
    let origin = Origin::start("A").await?;
    let (ssh, ctl_opt) = Ssh::spawn_master(
        &broker,
        &key,
        &["-R", &format!("chat:80:{}", origin.target())],
    )?;
    let url = ssh.url(0).await?;
    assert_eq!(get(&url).await?.body, "hello from A");

    proxy.cut();
    // The live tunnel keeps serving: routes are in memory, no visitor waits on the database.
    for _ in 0..20 {
        let resp = get(&url).await?;
        assert_eq!((resp.status, resp.body.as_str()), (200, "hello from A"));
    }
    // An admin write fails with a clear error, and says so at once, not after a long hang.
    let started = std::time::Instant::now();
    let out = broker.cli(&["reserve", "alice", "later"])?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "a write without a database succeeded"
    );
    assert!(
        stderr.starts_with("error: ") && stderr.contains("database"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    // An owner connecting meanwhile is told why, in words (the key cannot be looked up).
    let origin_b = Origin::start("B").await?;
    let waiting = Ssh::spawn(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("0:{}", origin_b.target()),
        ],
    )?;
    let said = waiting
        .err_line("Warren: the broker cannot check keys right now; try again shortly.")
        .await;
    // The owner already connected asks for one more forward: refused, with the reason in
    // their session, and counted for the operator as the store's failure.
    let more = Ssh::mux(
        broker.ssh_port,
        &ctl_opt,
        "forward",
        &format!("0:{}", origin.target()),
    )
    .await?;
    assert!(
        !more.status.success(),
        "a forward was granted without a database: {}",
        String::from_utf8_lossy(&more.stdout)
    );
    ssh.line("refused -R localhost:0: the broker cannot reach its database; try again shortly")
        .await?;
    let scrape = get(&format!("http://127.0.0.1:{}/metrics", broker.api_port))
        .await?
        .body;
    assert!(
        scrape.contains("warren_ssh_forwards_refused_total{reason=\"store_error\"} 1\n"),
        "{scrape}"
    );

    proxy.restore();
    // Writes work again, and nothing written before the outage is lost.
    eventually("the database back for admin writes", DEADLINE, || async {
        broker
            .cli(&["reserve", "alice", "later"])
            .ok()
            .filter(|o| o.status.success())
    })
    .await?;
    let names = broker.cli_ok(&["names"])?;
    assert!(names.contains("chat") && names.contains("later"), "{names}");
    assert!(broker.cli_ok(&["key", "list"])?.contains("alice"));
    // New tunnels come up again.
    let again = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin_b.target())])?;
    let url_b = again.url(0).await?;
    assert_eq!(get(&url_b).await?.body, "hello from B");
    assert_eq!(get(&url).await?.body, "hello from A");
    said?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_gives_a_reconnecting_owner_their_names_back() -> Result<()> {
    let mut broker = TestBroker::start_with(Db::Sqlite, &[]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let forwards = [
        "-R".to_owned(),
        format!("0:{}", origin.target()),
        "-R".to_owned(),
        format!("chat:80:{}", origin.target()),
    ];
    let forwards: Vec<&str> = forwards.iter().map(String::as_str).collect();
    let first = {
        let ssh = Ssh::spawn(&broker, &key, &forwards)?;
        let (random, named) = (ssh.url(0).await?, ssh.url(1).await?);
        assert_eq!(label_of(&named)?, "chat");
        assert_eq!(get(&random).await?.body, "hello from A");
        // Configuration made while it runs: an access rule on the named tunnel.
        broker.cli_ok(&["rules", "chat", "deny", "192.0.2.0/24"])?;
        broker.kill();
        random
    };
    broker.restart()?;
    // Nothing configured is lost: the user, the claimed name and its rule.
    assert!(broker.cli_ok(&["user", "list"])?.contains("alice"));
    assert!(broker.cli_ok(&["rules", "chat"])?.contains("192.0.2.0/24"));
    // The owner's reconnect loop comes back with the same key and the same forwards.
    let ssh = Ssh::spawn(&broker, &key, &forwards)?;
    let again = ssh.url(0).await?;
    assert_eq!(label_of(&again)?, label_of(&first)?, "{first} then {again}");
    assert_eq!(get(&again).await?.body, "hello from A");
    assert_eq!(label_of(&ssh.url(1).await?)?, "chat");
    assert_eq!(get(&broker.url("chat")).await?.body, "hello from A");
    // Another user's random forward gets a name of its own, and `chat` stays alice's.
    let bob = broker.user_with_key("bob")?;
    let other = Ssh::spawn(
        &broker,
        &bob,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("0:{}", origin.target()),
            "-R",
            &format!("chat:80:{}", origin.target()),
        ],
    )?;
    assert_ne!(label_of(&other.url(0).await?)?, label_of(&first)?);
    other.line("chat").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_nothing_is_corrupted() -> Result<()> {
    let broker = TestBroker::start_opts(
        Db::Sqlite,
        &[],
        Options {
            small_disk_mib: Some(16),
            ..Options::default()
        },
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["reserve", "alice", "chat"])?;
    let (_origin, _ssh, url) = serve_as(&broker, &key, "chat", "A").await?;
    // Fill the disk to the last byte.
    let filler = broker.dir.path().join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status()?;
    // Writes fail, saying why; the live tunnel keeps serving.
    let mut failures = 0;
    for i in 0..50 {
        let out = broker.cli(&["reserve", "alice", &format!("n{i}")])?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                stderr.starts_with("error: ") && stderr.contains("full"),
                "{stderr}"
            );
            failures += 1;
            break;
        }
    }
    assert_eq!(failures, 1, "writes kept succeeding on a full disk");
    assert_eq!(get(&url).await?.body, "hello from A");
    // Space back: writes succeed again, and the database is whole.
    std::fs::remove_file(&filler)?;
    eventually("writes succeed once space returns", DEADLINE, || async {
        broker
            .cli(&["reserve", "alice", "after"])
            .ok()
            .filter(|o| o.status.success())
    })
    .await?;
    let names = broker.cli_ok(&["names"])?;
    assert!(names.contains("chat") && names.contains("after"), "{names}");
    let check = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])")
        .arg(broker.dir.path().join("warren.db"))
        .output()?;
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok");
    assert_eq!(get(&url).await?.body, "hello from A");
    Ok(())
}
