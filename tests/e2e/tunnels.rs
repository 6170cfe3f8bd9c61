//! The core flow: `ssh -R` becomes a URL that serves the origin.

use std::time::Duration;

use anyhow::Result;

use crate::client::get;
use crate::harness::{DEADLINE, Db, Ssh, TestBroker, answers, eventually};
use crate::origin::Origin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_forward_prints_a_url_that_serves_the_origin() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("alice's app").await?;
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    assert!(
        url.starts_with("http://") && url.ends_with(&format!(".localhost:{}", broker.http_port)),
        "{url}"
    );
    // OpenSSH got an allocated port, as RFC 4254 wants for port 0.
    ssh.err_line("Allocated port").await?;
    let resp = get(&format!("{url}/")).await?;
    assert_eq!(
        (resp.status, resp.body.as_str()),
        (200, "hello from alice's app")
    );
    // The owner sees the request in the session.
    let line = ssh.line("GET / 200").await?;
    assert!(line.ends_with("ms"), "{line}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_and_random_forwards_in_one_session() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let (a, b) = (Origin::start("A").await?, Origin::start("B").await?);
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-R",
            &format!("chat:80:{}", a.target()),
            "-R",
            &format!("0:{}", b.target()),
        ],
    )?;
    let first = ssh.url(0).await?;
    let second = ssh.url(1).await?;
    let urls = [first, second];
    let chat = broker.url("chat");
    assert!(urls.contains(&chat), "{urls:?}");
    let random = urls
        .iter()
        .find(|u| **u != chat)
        .cloned()
        .unwrap_or_default();
    assert_eq!(get(&chat).await?.body, "hello from A");
    assert_eq!(get(&random).await?.body, "hello from B");
    // The name was claimed for alice.
    assert!(broker.cli_ok(&["names"])?.contains("chat"));
    // Keep-alive: several requests on one visitor connection are each answered.
    for _ in 0..3 {
        assert_eq!(get(&format!("{chat}/")).await?.status, 200);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_end_unbinds_and_visitors_see_why() -> Result<()> {
    // Grace 0: after the session ends the random name is simply gone.
    let broker = TestBroker::start_with(crate::harness::Db::Sqlite, &["--grace-secs", "0"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let mut ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-R",
            &format!("0:{}", origin.target()),
            "-R",
            &format!("named:80:{}", origin.target()),
        ],
    )?;
    let url = ssh.url(0).await?;
    ssh.url(1).await?;
    let named = broker.url("named");
    assert_eq!(get(&url).await?.status, 200);
    ssh.kill().await;
    answers("random name unbound", DEADLINE, &url, 404).await?;
    // A reserved name without its owner is "offline", not unknown.
    let resp = get(&named).await?;
    assert_eq!(resp.status, 502, "{}", resp.body);
    assert!(resp.body.contains("not connected"), "{}", resp.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_grace_visitors_get_503_and_the_same_key_gets_the_same_name() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let spec = format!("0:{}", origin.target());
    let mut first = Ssh::spawn(&broker, &key, &["-R", &spec])?;
    let url = first.url(0).await?;
    first.kill().await;
    let resp = answers("503 while the owner is away", DEADLINE, &url, 503).await?;
    let retry: u64 = resp
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    assert!(retry >= 1, "Retry-After {retry}");
    let second = Ssh::spawn(&broker, &key, &["-R", &spec])?;
    assert_eq!(second.url(0).await?, url, "reconnect got a different name");
    assert_eq!(get(&url).await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_of_the_owner_takes_over_a_stale_one() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let (old_origin, new_origin) = (Origin::start("old").await?, Origin::start("new").await?);
    let old = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("app:80:{}", old_origin.target())],
    )?;
    old.url(0).await?;
    let url = broker.url("app");
    assert_eq!(get(&url).await?.body, "hello from old");
    let new = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("app:80:{}", new_origin.target())],
    )?;
    new.url(0).await?;
    assert_eq!(get(&url).await?.body, "hello from new");
    old.line("taken over").await?;
    // The old session ending later does not unbind the new one. Its end is seen in the audit
    // log (the broker records the forwards of a session that ended); only then is the check
    // meaningful.
    drop(old);
    eventually("the old session's end recorded", DEADLINE, || {
        let events = broker
            .cli_ok(&["events", "--limit", "20"])
            .unwrap_or_default();
        let ended = events.lines().any(|l| {
            l.contains("tunnel.unbind") && l.contains("app") && l.contains("session ended")
        });
        async move { ended.then_some(()) }
    })
    .await?;
    assert_eq!(get(&url).await?.body, "hello from new");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_reserved_name_is_refused_on_sqlite() -> Result<()> {
    tenant_isolation(crate::harness::Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_reserved_name_is_refused_on_postgres() -> Result<()> {
    tenant_isolation(crate::harness::Db::Postgres).await
}

async fn tenant_isolation(db: crate::harness::Db) -> Result<()> {
    let broker = TestBroker::start_with(db, &[]).await?;
    let alice = broker.user_with_key("alice")?;
    let bob = broker.user_with_key("bob")?;
    broker.cli_ok(&["reserve", "bob", "shop"])?;
    let origin = Origin::start("alice").await?;
    let mut ssh = Ssh::spawn(
        &broker,
        &alice,
        &["-R", &format!("shop:80:{}", origin.target())],
    )?;
    // ExitOnForwardFailure: the refusal reaches scripts as a non-zero exit.
    let status = ssh.exit(DEADLINE).await?;
    assert!(!status.success());
    // The exit can be seen before the stderr reader has the line: wait for it.
    ssh.err_line("remote port forwarding failed").await?;
    // Bob's name is still offline-but-his, not alice's (the CLI's change reaches the
    // running broker through the audit log within a second or so).
    answers("shop offline", DEADLINE, &broker.url("shop"), 502).await?;
    // In a session without ExitOnForwardFailure the reason is printed.
    let ssh = Ssh::spawn(
        &broker,
        &alice,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("shop:80:{}", origin.target()),
        ],
    )?;
    ssh.line("reserved by another user").await?;
    // Bob can use it.
    let bob_origin = Origin::start("bob").await?;
    let b = Ssh::spawn(
        &broker,
        &bob,
        &["-R", &format!("shop:80:{}", bob_origin.target())],
    )?;
    b.url(0).await?;
    assert_eq!(get(&broker.url("shop")).await?.body, "hello from bob");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_and_unsupported_ports_are_refused_with_reasons() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let t = origin.target();
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("www:80:{t}"),
            "-R",
            &format!("Bad_Name:80:{t}"),
            "-R",
            &format!("x:8443:{t}"),
            "-R",
            &format!("xn--pypal-4ve:80:{t}"),
        ],
    )?;
    ssh.line("\"www\" is reserved by the operator").await?;
    ssh.line("may only use lowercase letters").await?;
    ssh.line("named tunnels use port 80").await?;
    // A look-alike (`pаypal` with a Cyrillic `а`) is refused by name, and never bound.
    ssh.line("\"xn--pypal-4ve\" is refused: punycode (xn--)")
        .await?;
    assert_eq!(get(&broker.url("xn--pypal-4ve")).await?.status, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_console_host_cannot_be_bound_or_reserved_by_a_tenant() -> Result<()> {
    let broker = TestBroker::start_with(
        crate::harness::Db::Sqlite,
        &["--console-host", "dash.localhost"],
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("dash:80:{}", origin.target()),
            "-R",
            &format!("console:80:{}", origin.target()),
        ],
    )?;
    ssh.line("\"dash\" is reserved by the operator").await?;
    ssh.line("\"console\" is reserved by the operator").await?;
    // The console's page, not alice's origin.
    let page = get(&broker.url("dash")).await?;
    assert!(
        page.status == 200 && !page.body.contains("hello from A"),
        "{} {}",
        page.status,
        page.body
    );
    // The operator's CLI, reading the same settings, refuses it too.
    let out = broker.cli(&[
        "--console-host",
        "dash.localhost",
        "reserve",
        "alice",
        "dash",
    ])?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("\"dash\" is kept for the broker itself"),
        "{said}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_claim_off_requires_a_reservation() -> Result<()> {
    let broker =
        TestBroker::start_with(crate::harness::Db::Sqlite, &["--auto-claim", "false"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("chat:80:{}", origin.target()),
        ],
    )?;
    ssh.line("not reserved for you; ask the operator: broker reserve alice chat")
        .await?;
    broker.cli_ok(&["reserve", "alice", "chat"])?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("chat:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    assert_eq!(get(&broker.url("chat")).await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_tcpip_forward_unbinds_one_forward() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let (ssh, ctl_opt) = Ssh::spawn_master(
        &broker,
        &key,
        &[
            "-R",
            &format!("one:80:{}", origin.target()),
            "-R",
            &format!("two:80:{}", origin.target()),
        ],
    )?;
    ssh.url(1).await?;
    assert_eq!(get(&broker.url("one")).await?.status, 200);
    let out = Ssh::mux(
        broker.ssh_port,
        &ctl_opt,
        "cancel",
        &format!("one:80:{}", origin.target()),
    )
    .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ssh.line("closed http://one.").await?;
    // Parked for the owner (grace), not served; the other forward still works.
    assert_eq!(get(&broker.url("one")).await?.status, 503);
    assert_eq!(get(&broker.url("two")).await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_the_session_closes_the_tunnels() -> Result<()> {
    let broker = TestBroker::start_with(crate::harness::Db::Sqlite, &["--grace-secs", "0"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let mut ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    ssh.line("Ctrl-C").await?;
    ssh.send(&[3]).await?;
    let status = ssh.exit(DEADLINE).await?;
    assert!(status.success(), "{status:?} {}", ssh.all_output());
    answers("unbound after Ctrl-C", DEADLINE, &url, 404).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_dash_n_works_and_nothing_is_printed() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-N", "-R", &format!("quiet:80:{}", origin.target())],
    )?;
    let url = broker.url("quiet");
    let resp = answers("-N tunnel serves", DEADLINE, &url, 200).await?;
    assert_eq!(resp.body, "hello from A");
    assert!(ssh.out.lock().map(|o| o.is_empty()).unwrap_or(false));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_refusing_is_a_502_that_says_so_and_the_owner_is_told() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    // A port nobody listens on (nor is given by `bind(0)` to a test running beside this one).
    let port = crate::public::pebble::free_port().port();
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:localhost:{port}")])?;
    let url = ssh.url(0).await?;
    let resp = get(&url).await?;
    assert_eq!(resp.status, 502);
    assert!(resp.body.contains("connection refused"), "{}", resp.body);
    ssh.line("is your local service running?").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_too_slow_to_answer_is_a_504_and_the_owner_is_told() -> Result<()> {
    let broker = TestBroker::start_with(Db::Sqlite, &["--origin-timeout-secs", "1"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    let started = std::time::Instant::now();
    let resp = get(&format!("{url}/slow?ms=5000")).await?;
    assert_eq!(resp.status, 504, "{}", resp.body);
    assert!(
        resp.body
            .contains("The tunnel&#39;s service did not answer within 1 s."),
        "{}",
        resp.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    ssh.line("(the local service did not answer within 1 s)")
        .await?;
    // The limit is on the response head: a quick answer is untouched.
    assert_eq!(get(&url).await?.body, "hello from A");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_and_visitor_values_not_trusted() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("hdr:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    let url = format!("{}/headers", broker.url("hdr"));
    let seen = get_headers(
        &url,
        &[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")],
    )
    .await?;
    assert_eq!(
        seen.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        seen.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    let public_host = format!("hdr.localhost:{}", broker.http_port);
    assert_eq!(seen.get("x-forwarded-host"), Some(&public_host));
    assert_eq!(
        seen["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{public_host}\"")
    );
    assert_eq!(seen.get("x-real-ip").map(String::as_str), Some("127.0.0.1"));
    assert!(!seen["forwarded"].contains("6.6.6.6"));
    assert_eq!(seen.get("host"), Some(&public_host));

    // From a trusted proxy the chain is extended instead.
    drop(ssh);
    let broker = TestBroker::start_with(
        crate::harness::Db::Sqlite,
        &["--trusted-proxies", "127.0.0.1"],
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("hdr:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    let url = format!("{}/headers", broker.url("hdr"));
    let seen = get_headers(
        &url,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await?;
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
    Ok(())
}

async fn get_headers(
    url: &str,
    extra: &[(&str, &str)],
) -> Result<std::collections::HashMap<String, String>> {
    let resp = crate::client::get_with(url, extra).await?;
    assert_eq!(resp.status, 200, "{}", resp.body);
    Ok(resp
        .body
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// A tunnel of alice's with `slots` visitor connections held answers the next visitor 503.
async fn connection_limit(flags: &[&str], quota: Option<&str>, slots: usize) -> Result<()> {
    let broker = TestBroker::start_with(crate::harness::Db::Sqlite, flags).await?;
    let key = broker.user_with_key("alice")?;
    if let Some(n) = quota {
        broker.cli_ok(&["user", "quota", "alice", "--max-visitor-connections", n])?;
    }
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("busy:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    // Keep-alive visitor connections hold every slot.
    let mut held = Vec::new();
    for _ in 0..slots {
        let sock = tokio::net::TcpStream::connect(("127.0.0.1", broker.http_port)).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(sock)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/")
            .header("host", format!("busy.localhost:{}", broker.http_port))
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let resp = send.send_request(req).await?;
        assert_eq!(resp.status(), 200);
        held.push(send);
    }
    let resp = get(&broker.url("busy")).await?;
    assert_eq!(resp.status, 503);
    assert!(resp.headers.contains_key("retry-after"));
    drop(held);
    answers("slot freed", DEADLINE, &broker.url("busy"), 200).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tunnel_connection_limit_answers_503() -> Result<()> {
    connection_limit(&["--max-tunnel-connections", "2"], None, 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_visitor_connection_quota_replaces_the_brokers_limit() -> Result<()> {
    connection_limit(&["--max-tunnel-connections", "4"], Some("1"), 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_client_is_noticed_and_its_names_unbound() -> Result<()> {
    // Keepalive every second, dead after 2 missed: a stopped client is gone within seconds
    // (the default, 15 s x 4, notices within about a minute).
    let broker = TestBroker::start_with(
        crate::harness::Db::Sqlite,
        &[
            "--keepalive-secs",
            "1",
            "--keepalive-max",
            "2",
            "--grace-secs",
            "0",
        ],
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    assert_eq!(get(&url).await?.status, 200);
    let pid = ssh.pid().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()?;
    let result = answers("frozen client dropped", Duration::from_secs(30), &url, 404).await;
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()?;
    result?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_visitor_connections_reuse_idle_connections_to_the_local_service() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("pool:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    let url = format!("{}/peer", broker.url("pool"));
    // Visitors one after the other, each on a new TCP connection: once the first has gone, a
    // later one is served over the connection it left idle (like nginx's upstream keepalive).
    let first = get(&url).await?.body;
    eventually(
        "a later visitor reuses the first visitor's connection",
        DEADLINE,
        || {
            let (url, first) = (url.clone(), first.clone());
            async move { get(&url).await.ok().filter(|r| r.body == first) }
        },
    )
    .await?;
    // A visitor who abandons a body half-way does not leave a broken connection in the pool.
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", broker.http_port)).await?;
    tokio::io::AsyncWriteExt::write_all(
        &mut sock,
        format!(
            "GET /bytes/{} HTTP/1.1\r\nHost: pool.localhost\r\n\r\n",
            50 << 20
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = [0u8; 4096];
    tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await?;
    drop(sock);
    for _ in 0..3 {
        assert_eq!(
            get(&format!("{}/", broker.url("pool"))).await?.body,
            "hello from A"
        );
    }
    // Idle connections are not kept for ever: the owner's ssh client pays for each open
    // channel on every turn of its loop. Once no visitor has used them for a while, they close.
    eventually(
        "idle connections to the local service close",
        DEADLINE,
        || {
            let open = origin.open_connections();
            async move { (open == 0).then_some(()) }
        },
    )
    .await?;
    assert_eq!(
        get(&format!("{}/", broker.url("pool"))).await?.body,
        "hello from A",
        "a new visitor is still served"
    );
    Ok(())
}
