//! Hostile visitors and clients: each gets a status code (or a closed connection), never a
//! hang, and the broker keeps serving everyone else.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{get, raw, status_of};
use crate::harness::{Db, Ssh, TestBroker};
use crate::origin::Origin;

const WAIT: Duration = Duration::from_secs(10);

async fn broker_with_tunnel() -> Result<(TestBroker, Ssh, Origin)> {
    let broker = TestBroker::start_with(Db::Sqlite, &["--header-timeout-secs", "2"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("app:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    Ok((broker, ssh, origin))
}

async fn still_serves(broker: &TestBroker) -> Result<()> {
    let resp = get(&broker.url("app")).await?;
    assert_eq!((resp.status, resp.body.as_str()), (200, "hello from A"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_hosts_get_400_or_404() -> Result<()> {
    let (broker, _ssh, _origin) = broker_with_tunnel().await?;
    let p = broker.http_port;
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (format!("app.localhost:{p}:80").into_bytes(), 400),
        (b"app.localhost:abc".to_vec(), 400),
        (b"app.localhost:99999".to_vec(), 400),
        (b"evil@app.localhost".to_vec(), 400),
        (b"app.localhost@evil.com".to_vec(), 400),
        (b"app\xff.localhost".to_vec(), 400),
        (b"app..localhost".to_vec(), 400),
        (b"nope.localhost".to_vec(), 404),
        (b"a.b.localhost".to_vec(), 404),
        (b"example.com".to_vec(), 404),
    ];
    for (host, want) in cases {
        let mut req = b"GET / HTTP/1.1\r\nHost: ".to_vec();
        req.extend_from_slice(&host);
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let resp = raw(p, &req, WAIT).await?;
        assert_eq!(
            status_of(&resp),
            Some(want),
            "Host {:?} -> {resp}",
            String::from_utf8_lossy(&host)
        );
    }
    // Case, trailing dot and port are ignored.
    let req = format!("GET / HTTP/1.1\r\nHost: APP.LocalHost.:{p}\r\nConnection: close\r\n\r\n");
    let resp = raw(p, req.as_bytes(), WAIT).await?;
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    // The 404 page names the host.
    let resp = get(&format!("http://nope.localhost:{p}/")).await?;
    assert!(resp.body.contains("nope.localhost"), "{}", resp.body);
    // No Host at all.
    let resp = raw(p, b"GET / HTTP/1.0\r\n\r\n", WAIT).await?;
    assert_eq!(status_of(&resp), Some(400), "{resp}");
    still_serves(&broker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_numerous_headers_get_431() -> Result<()> {
    let (broker, _ssh, _origin) = broker_with_tunnel().await?;
    let p = broker.http_port;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    assert_eq!(status_of(&raw(p, big.as_bytes(), WAIT).await?), Some(431));
    // Just over the head limit (32 KiB) and far under what one read may take in (an upload's
    // body is read in larger pieces): the head limit still holds.
    let over = format!(
        "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(33 * 1024)
    );
    assert_eq!(status_of(&raw(p, over.as_bytes(), WAIT).await?), Some(431));
    let mut many = String::from("GET / HTTP/1.1\r\nHost: app.localhost\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status_of(&raw(p, many.as_bytes(), WAIT).await?), Some(431));
    // Over the count limit (100) while well under the size limit.
    let mut count = String::from("GET / HTTP/1.1\r\nHost: app.localhost\r\n");
    for i in 0..150 {
        count.push_str(&format!("X-{i}: v\r\n"));
    }
    count.push_str("\r\n");
    assert_eq!(status_of(&raw(p, count.as_bytes(), WAIT).await?), Some(431));
    assert_eq!(
        status_of(&raw(p, b"NOT HTTP AT ALL\r\n\r\n", WAIT).await?),
        Some(400)
    );
    still_serves(&broker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_gets_408_while_others_are_served() -> Result<()> {
    let (broker, _ssh, _origin) = broker_with_tunnel().await?;
    let p = broker.http_port;
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", p)).await?;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-A: ")
        .await?;
    // While it dribbles, others are served.
    still_serves(&broker).await?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let _ = slow.write_all(b"a").await;
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(500), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "slowloris connection was never closed");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&text), Some(408), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    still_serves(&broker).await
}

/// The edge peeks at a visitor's first bytes to pick the tunnel's thread; a head that arrives
/// in pieces (Host not in the first one) must still be answered, and a visitor who sends
/// nothing must still get its 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_in_pieces_is_answered_and_silence_gets_408() -> Result<()> {
    let (broker, _ssh, _origin) = broker_with_tunnel().await?;
    let p = broker.http_port;
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", p)).await?;
    for piece in [
        &b"GET / HTTP/1.1\r\nHo"[..],
        b"st: app.loc",
        b"alhost\r\nConnection: close\r\n\r\n",
    ] {
        sock.write_all(piece).await?;
        // Separate segments: the first peek sees only the first piece.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, sock.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&text), Some(200), "{text}");
    assert!(text.ends_with("hello from A"), "{text}");

    let started = Instant::now();
    let text = raw(p, b"", WAIT).await?;
    assert_eq!(status_of(&text), Some(408), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "408 after {:?}",
        started.elapsed()
    );
    still_serves(&broker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_ssh_port_changes_nothing() -> Result<()> {
    let (broker, _ssh, _origin) = broker_with_tunnel().await?;
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"SSH-2.0-x\r\n\x00\x00\x00\x05garbage-packet",
        &[0xffu8; 4096][..],
    ] {
        let resp = raw(broker.ssh_port, junk, WAIT).await?;
        // The server identifies itself (its banner comes first, whatever the client sends)
        // and then hangs up; it never crashes.
        assert!(resp.starts_with("SSH-2.0-warren"), "{resp:?}");
    }
    // A connection that never speaks is closed by the auth timeout rather than held forever;
    // meanwhile the real tunnel keeps working.
    still_serves(&broker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_closed_but_tunnels_outlive_the_deadline() -> Result<()> {
    let broker = TestBroker::start_with(Db::Sqlite, &["--auth-timeout-secs", "2"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("app:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    // A client that connects and never authenticates is hung up on.
    let started = Instant::now();
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", broker.ssh_port)).await?;
    idle.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await?;
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), idle.read_to_end(&mut sink)).await??;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "closed too early: {waited:?}"
    );
    // The authenticated tunnel, older than the deadline, still serves.
    still_serves(&broker).await
}
