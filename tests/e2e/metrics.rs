//! The operator's endpoints on the admin listener: `/metrics` counts what visitors and owners
//! did, `/healthz` and `/readyz` say whether the broker lives and can serve; none of them is
//! reachable through the edge's console host.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::client::{get, raw, status_of};
use crate::harness::{DEADLINE, Db, Ssh, TestBroker, eventually, keygen};
use crate::origin::Origin;

/// GET `path` on the broker's admin listener.
async fn admin(broker: &TestBroker, path: &str) -> Result<crate::client::Resp> {
    get(&format!("http://127.0.0.1:{}{path}", broker.api_port)).await
}

/// The value of one series (`name{labels}` exactly as rendered) in a scrape.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `value`, or a failure that shows the whole scrape.
fn must(scrape: &str, series: &str) -> Result<f64> {
    value(scrape, series).with_context(|| format!("no series {series} in:\n{scrape}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_tunnels_requests_refusals_and_limits() -> Result<()> {
    // Pairing off: the stranger below is refused (and counted) instead of waiting for a code.
    let broker = TestBroker::start_with(
        Db::Sqlite,
        &["--max-tunnel-connections", "1", "--pairing", "false"],
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("metered").await?;
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("m:80:{}", origin.target())])?;
    ssh.url(0).await?;

    // Three requests on one keep-alive connection, which holds the tunnel's only slot...
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", broker.http_port)).await?;
    let (mut held, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock)).await?;
    tokio::spawn(conn);
    let mut body_bytes = 0;
    for _ in 0..3 {
        let req = hyper::Request::get("/")
            .header("host", format!("m.localhost:{}", broker.http_port))
            .body(Empty::<Bytes>::new())?;
        held.ready().await?;
        let resp = held.send_request(req).await?;
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body()).await?;
        body_bytes += body.to_bytes().len();
    }
    // ... so a second visitor connection is refused by the limit: 503.
    assert_eq!(get(&broker.url("m")).await?.status, 503);
    // Two requests for a name nobody serves: 404.
    for _ in 0..2 {
        assert_eq!(get(&broker.url("nobody")).await?.status, 404);
    }
    // A request head past max_header_bytes (32 KiB): hyper's 431, counted as a limit.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: m.localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let answer = raw(
        broker.http_port,
        big.as_bytes(),
        std::time::Duration::from_secs(5),
    )
    .await?;
    assert_eq!(status_of(&answer), Some(431), "{answer}");
    // A key nobody registered.
    let stranger = keygen(broker.dir.path(), "stranger", "ed25519")?;
    let mut refused = Ssh::spawn(&broker, &stranger, &["-R", "0:localhost:9"])?;
    assert!(!refused.exit(DEADLINE).await?.success());

    let resp = admin(&broker, "/metrics").await?;
    assert_eq!(resp.status, 200);
    let content_type = resp
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let m = resp.body;
    for (series, want) in [
        ("warren_tunnels_live{kind=\"http\"}", 1.0),
        ("warren_tunnels_live{kind=\"tcp\"}", 0.0),
        ("warren_ssh_sessions_live", 1.0),
        ("warren_ssh_connections_total", 2.0),
        ("warren_ssh_logins_total", 1.0),
        (
            "warren_ssh_auth_failures_total{reason=\"unknown_key\"}",
            1.0,
        ),
        (
            "warren_ssh_auth_failures_total{reason=\"disabled_user\"}",
            0.0,
        ),
        ("warren_http_requests_total{class=\"2xx\"}", 3.0),
        ("warren_http_requests_total{class=\"4xx\"}", 2.0),
        ("warren_http_requests_total{class=\"5xx\"}", 1.0),
        ("warren_http_requests_total{class=\"3xx\"}", 0.0),
        // The keep-alive connection, the refused one, two 404s, the 431.
        ("warren_visitor_connections_total{listener=\"http\"}", 5.0),
        // Only the held keep-alive connection has a slot (the console route counts none).
        ("warren_visitor_connections_live", 1.0),
        (
            "warren_limit_hits_total{limit=\"max_tunnel_connections\"}",
            1.0,
        ),
        ("warren_limit_hits_total{limit=\"max_header_bytes\"}", 1.0),
        (
            "warren_limit_hits_total{limit=\"max_claims_per_hour\"}",
            0.0,
        ),
        ("warren_http_request_duration_seconds_count", 6.0),
        (
            "warren_http_request_duration_seconds_bucket{le=\"+Inf\"}",
            6.0,
        ),
        ("warren_acme_orders_total{result=\"issued\"}", 0.0),
        ("warren_certificates", 0.0),
    ] {
        assert_eq!(must(&m, series)?, want, "{series} in:\n{m}");
    }
    // Bodies from the origin to the visitor, and the 503 page the tunnel's visitor got.
    let out = must(&m, "warren_visitor_bytes_total{direction=\"out\"}")?;
    assert!(out >= body_bytes as f64, "{out} < {body_bytes}");
    assert!(m.contains("# HELP warren_http_requests_total "), "{m}");
    assert!(
        m.contains("# TYPE warren_http_request_duration_seconds histogram"),
        "{m}"
    );

    // Alive and ready.
    let health = admin(&broker, "/healthz").await?;
    assert_eq!(health.status, 200);
    let ready = admin(&broker, "/readyz").await?;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    // None of it through the edge: the console host serves the API to visitors, not these.
    let console = broker.url("console");
    assert_eq!(
        get(&format!("{console}/api/v1/openapi.json")).await?.status,
        200
    );
    for path in ["/metrics", "/healthz", "/readyz"] {
        // The console route has this broker's one connection slot too; the last request's
        // connection frees it a moment after the client closed it.
        let url = format!("{console}{path}");
        let resp = eventually("a free console slot", DEADLINE, || {
            let url = url.clone();
            async move { get(&url).await.ok().filter(|r| r.status != 503) }
        })
        .await?;
        assert_eq!(
            resp.status, 404,
            "{path} on the console host: {}",
            resp.body
        );
    }
    drop(held);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_sqlite_file_is_gone() -> Result<()> {
    let broker = TestBroker::start().await?;
    assert_eq!(admin(&broker, "/readyz").await?.status, 200);
    // Moved away, the file still answers through the open connections, but whatever the
    // broker wrote from now on would be lost at its next start.
    let file = broker.dir.path().join("warren.db");
    let aside = broker.dir.path().join("warren.db.aside");
    std::fs::rename(&file, &aside)?;
    let resp = admin(&broker, "/readyz").await?;
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert!(resp.body.contains("database file"), "{}", resp.body);
    assert_eq!(admin(&broker, "/healthz").await?.status, 200, "still alive");
    std::fs::rename(&aside, &file)?;
    assert_eq!(admin(&broker, "/readyz").await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_postgres_database_is_dropped() -> Result<()> {
    use sqlx::Connection;
    let broker = TestBroker::start_with(Db::Postgres, &[]).await?;
    assert_eq!(admin(&broker, "/readyz").await?.status, 200);
    // The broker's own database, dropped under it (its connections terminated): the
    // shared Postgres server cannot be stopped for one test.
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let db = broker
        .db_url
        .rsplit('/')
        .next()
        .context("database name")?
        .to_owned();
    let mut c = sqlx::PgConnection::connect(&admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {db} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await?;
    let resp = eventually("readyz says the database is gone", DEADLINE, || async {
        admin(&broker, "/readyz")
            .await
            .ok()
            .filter(|r| r.status == 503)
    })
    .await?;
    assert!(
        resp.body.starts_with("not ready: database"),
        "{}",
        resp.body
    );
    assert_eq!(admin(&broker, "/healthz").await?.status, 200, "still alive");
    Ok(())
}
