//! A TCP load balancer in front of the broker (HAProxy, for real) that names each client
//! with a PROXY protocol header (`proxy_protocol_from`): IP rules, `X-Forwarded-For` and the
//! SSH log see the visitor and the owner, not the balancer; a listed source that sends no
//! header is closed and counted, and a header from anyone else is not believed.
//!
//! Every address here is on the loopback: HAProxy connects from 127.0.0.2 (the listed
//! source), the clients from 127.0.0.1 and 127.0.0.3, so the broker can only tell them apart
//! by the headers.

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::flood::metric;
use crate::harness::{DEADLINE, Db, Options, Ssh, TestBroker, eventually};
use crate::origin::Origin;
use crate::rules::curl;

const BALANCER: &str = "127.0.0.2";
const VISITOR: &str = "127.0.0.3";

/// HAProxy with TCP frontends on free ports for the broker's SSH (PROXY v1) and HTTP
/// (PROXY v2) listeners, connecting from [`BALANCER`]: (process, ssh port, http port).
fn haproxy(
    broker: &TestBroker,
    dir: &std::path::Path,
) -> Result<(tokio::process::Child, u16, u16)> {
    let free = || crate::public::pebble::free_port().port();
    let (ssh, http) = (free(), free());
    let config = format!(
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\
         frontend ssh\n    bind 127.0.0.1:{ssh}\n    bind {VISITOR}:{ssh}\n    default_backend ssh\n\
         backend ssh\n    server b 127.0.0.1:{} send-proxy source {BALANCER} check inter 500ms\n\
         frontend http\n    bind 127.0.0.1:{http}\n    bind {VISITOR}:{http}\n    default_backend http\n\
         backend http\n    server b 127.0.0.1:{} send-proxy-v2 source {BALANCER} check inter 500ms\n",
        broker.ssh_port, broker.http_port,
    );
    Ok((spawn_haproxy(dir, &config)?, ssh, http))
}

/// HAProxy in the foreground with `config` (written to `dir`), killed when dropped.
pub(crate) fn spawn_haproxy(dir: &std::path::Path, config: &str) -> Result<tokio::process::Child> {
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, config)?;
    tokio::process::Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("haproxy (Debian package haproxy)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_names_visitors_and_owners_with_the_proxy_protocol() -> Result<()> {
    let opts = Options {
        capture_stderr: true,
        ..Options::default()
    };
    let broker =
        TestBroker::start_opts(Db::Sqlite, &["--proxy-protocol-from", BALANCER], opts).await?;
    let dir = tempfile::tempdir()?;
    let (_haproxy, ssh_port, http_port) = haproxy(&broker, dir.path())?;
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["reserve", "alice", "chat"])?;
    let origin = Origin::start("A").await?;

    // The owner, from 127.0.0.3, through HAProxy's PROXY v1 line, once HAProxy listens.
    eventually("HAProxy listening", DEADLINE, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", ssh_port))
            .await
            .ok()
    })
    .await?;
    let spec = format!("chat:80:{}", origin.target());
    let ssh = Ssh::spawn_port(ssh_port, &key, &["-b", VISITOR, "-R", &spec])?;
    ssh.url(0).await?;
    let logged = broker
        .stderr_lines()
        .into_iter()
        .filter(|l| {
            l.contains("authenticated user=alice") && l.contains(&format!("peer={VISITOR}:"))
        })
        .count();
    assert!(
        logged > 0,
        "the SSH log names the owner, not HAProxy:\n{}",
        broker.stderr_lines().join("\n")
    );

    // Visitors through HAProxy's PROXY v2 header: the rule and the origin see who they are.
    broker.cli_ok(&["rules", "chat", "allow", &format!("{VISITOR}/32")])?;
    let via = |from: &'static str, path: &'static str| {
        let url = format!("http://chat.localhost:{http_port}{path}");
        async move { curl(&["--interface", from], &url).await }
    };
    let kept_out = eventually("127.0.0.1 kept out through HAProxy", DEADLINE, || async {
        via("127.0.0.1", "/").await.ok().filter(|s| s.status == 403)
    })
    .await?;
    assert!(
        kept_out
            .body
            .contains("Visitors from 127.0.0.1 may not open chat.localhost"),
        "{}",
        kept_out.body
    );
    let let_in = via(VISITOR, "/headers").await?;
    assert_eq!(let_in.status, 200, "{}", let_in.body);
    assert!(
        let_in
            .body
            .contains(&format!("x-forwarded-for: {VISITOR}\n")),
        "{}",
        let_in.body
    );

    // The balancer's address without a header: closed, and counted.
    let refused = "warren_proxy_headers_refused_total{listener=\"http\"}";
    let before = metric(&broker, refused).await?;
    let direct = format!("http://chat.localhost:{}/", broker.http_port);
    let err = curl(&["--interface", BALANCER], &direct)
        .await
        .err()
        .context("a listed source without a PROXY header is answered")?;
    // Closed with its request unread: a reset (or, had it been slower to send, an empty reply).
    let err = err.to_string();
    assert!(
        err.contains("reset by peer") || err.contains("Empty reply"),
        "{err}"
    );
    eventually("the refusal counted", DEADLINE, || async {
        metric(&broker, refused)
            .await
            .ok()
            .filter(|n| *n == before + 1.0)
    })
    .await?;

    // A header from anyone else is part of their request, not their address.
    let mut forged = tokio::net::TcpStream::connect(("127.0.0.1", broker.http_port)).await?;
    forged
        .write_all(
            format!(
                "PROXY TCP4 {VISITOR} 127.0.0.1 5000 80\r\nGET / HTTP/1.1\r\nHost: chat.localhost\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, forged.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Nor did it count against the balancer: HAProxy's health checks (connect, close) neither.
    assert_eq!(metric(&broker, refused).await?, before + 1.0);
    assert_eq!(
        metric(
            &broker,
            "warren_proxy_headers_refused_total{listener=\"ssh\"}"
        )
        .await?,
        0.0
    );
    drop(ssh);
    Ok(())
}
