//! Access rules at the edge, with a real `ssh -R` tunnel and curl as the visitor: basic auth,
//! htpasswd imports, IP lists (behind a trusted proxy too), share links, live changes, and the
//! refusals on TLS and TCP names.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{DEADLINE, Db, Ssh, TestBroker, eventually, serve_as};
use crate::origin::Origin;

const PASSWORD: &str = "correct horse battery";

/// What curl saw of the last response.
pub(crate) struct Seen {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: String,
}

/// `curl -sS ARGS URL`, following nothing unless asked: the final status, headers, body.
pub(crate) async fn curl(args: &[&str], url: &str) -> Result<Seen> {
    let dir = tempfile::tempdir()?;
    let (body, head) = (dir.path().join("body"), dir.path().join("head"));
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "curl {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Seen {
        status: String::from_utf8_lossy(&out.stdout).trim().parse()?,
        headers: std::fs::read_to_string(&head)?,
        body: std::fs::read_to_string(&body).unwrap_or_default(),
    })
}

/// Waits until `url` answers `status` to curl with `args`.
pub(crate) async fn until(what: &str, url: &str, args: &[&str], status: u16) -> Result<Seen> {
    eventually(what, DEADLINE, || async move {
        curl(args, url).await.ok().filter(|s| s.status == status)
    })
    .await
}

/// A broker with user alice (key), the HTTP name `chat` reserved for her and live through a
/// real `ssh -R` tunnel to an origin.
pub(crate) struct Site {
    pub(crate) broker: TestBroker,
    pub(crate) ssh: Ssh,
    pub(crate) url: String,
    /// Alice's key.
    pub(crate) key: std::path::PathBuf,
    _origin: Origin,
}

pub(crate) async fn site(db: Db, extra: &[&str]) -> Result<Site> {
    let broker = TestBroker::start_with(db, extra).await?;
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["reserve", "alice", "chat"])?;
    let (origin, ssh, _) = serve_as(&broker, &key, "chat", "A").await?;
    let url = broker.url("chat");
    assert_eq!(curl(&[], &url).await?.status, 200);
    Ok(Site {
        broker,
        ssh,
        url,
        key,
        _origin: origin,
    })
}

fn add_user(broker: &TestBroker, name: &str, user: &str, password: &str) -> Result<()> {
    let out = broker.cli_input(
        &["rules", name, "auth", "add", user],
        &format!("{password}\n"),
    )?;
    if !out.status.success() {
        bail!("auth add: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn failure(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn basic_auth(db: Db) -> Result<()> {
    let s = site(db, &[]).await?;
    add_user(&s.broker, "chat", "bob", PASSWORD)?;
    let asked = until("a password asked", &s.url, &[], 401).await?;
    assert!(
        asked
            .headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"chat.localhost\""),
        "{}",
        asked.headers
    );
    assert!(
        asked
            .body
            .contains("chat.localhost asks for a user name and password"),
        "{}",
        asked.body
    );
    let wrong = curl(&["-u", "bob:not the password"], &s.url).await?;
    assert_eq!(wrong.status, 401);
    let nobody = curl(&["-u", &format!("eve:{PASSWORD}")], &s.url).await?;
    assert_eq!(nobody.status, 401);
    let bob = format!("bob:{PASSWORD}");
    let ok = curl(&["-u", &bob], &s.url).await?;
    assert_eq!((ok.status, ok.body.as_str()), (200, "hello from A"));
    // Cached now: again, and on a kept-alive connection.
    let again = curl(&["-u", &bob], &format!("{}/headers", s.url)).await?;
    assert_eq!(again.status, 200);
    let seen = again.body.to_ascii_lowercase();
    assert!(seen.contains("host: chat.localhost"), "{seen}");
    assert!(
        !seen.contains("authorization"),
        "the origin saw the password: {seen}"
    );
    // The operator's view, text and JSON; the hash is never shown.
    let shown = s.broker.cli_ok(&["rules", "chat"])?;
    assert!(shown.contains("auth   bob (argon2)"), "{shown}");
    assert!(!shown.contains("$argon2"), "{shown}");
    let json: serde_json::Value =
        serde_json::from_str(&s.broker.cli_ok(&["rules", "chat", "--json"])?)?;
    assert_eq!(json["basic_users"][0]["username"], "bob");
    assert_eq!(json["kind"], "http");
    // Removing the user opens the site again.
    s.broker.cli_ok(&["rules", "chat", "auth", "rm", "bob"])?;
    let open = until("the site open again", &s.url, &[], 200).await?;
    assert_eq!(open.body, "hello from A");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_asks_then_lets_in_sqlite() -> Result<()> {
    basic_auth(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_asks_then_lets_in_postgres() -> Result<()> {
    basic_auth(Db::Postgres).await
}

pub(crate) fn htpasswd(args: &[&str]) -> Result<()> {
    let st = std::process::Command::new("htpasswd")
        .args(args)
        .status()
        .context("htpasswd (Debian: apache2-utils)")?;
    if !st.success() {
        bail!("htpasswd {args:?} failed");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_htpasswd_file_made_by_htpasswd_b_imports_as_is() -> Result<()> {
    let s = site(Db::Sqlite, &[]).await?;
    let file = s.broker.dir.path().join("htpasswd");
    let f = file.to_str().context("path")?;
    htpasswd(&["-cbB", f, "carol", "carol's secret"])?;
    htpasswd(&["-bB", f, "dave", "dave's secret"])?;
    let out = s.broker.cli_ok(&["rules", "chat", "auth", "import", f])?;
    assert!(out.contains("imported 2 users: carol, dave"), "{out}");
    until("a password asked", &s.url, &[], 401).await?;
    for (user, pw) in [("carol", "carol's secret"), ("dave", "dave's secret")] {
        let ok = curl(&["-u", &format!("{user}:{pw}")], &s.url).await?;
        assert_eq!(
            (ok.status, ok.body.as_str()),
            (200, "hello from A"),
            "{user}"
        );
    }
    assert_eq!(
        curl(&["-u", "carol:dave's secret"], &s.url).await?.status,
        401
    );
    let shown = s.broker.cli_ok(&["rules", "chat"])?;
    assert!(shown.contains("auth   carol (bcrypt)"), "{shown}");

    // An MD5 line (htpasswd -m) refuses the whole file, naming the line and why.
    let weak = s.broker.dir.path().join("weak");
    let w = weak.to_str().context("path")?;
    htpasswd(&["-cbB", w, "erin", "erin's secret"])?;
    htpasswd(&["-bm", w, "frank", "frank's secret"])?;
    let err = failure(&s.broker.cli(&["rules", "chat", "auth", "import", w])?);
    assert!(
        err.contains("line 2: user \"frank\": Apache MD5 ($apr1$)"),
        "{err}"
    );
    assert!(err.contains("htpasswd -B"), "{err}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        curl(&["-u", "erin:erin's secret"], &s.url).await?.status,
        401,
        "nothing imported"
    );
    // From stdin too.
    let out = s.broker.cli_input(
        &["rules", "chat", "auth", "import", "-"],
        std::fs::read_to_string(&weak)?
            .lines()
            .next()
            .unwrap_or_default(),
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until("erin let in", &s.url, &["-u", "erin:erin's secret"], 200).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_lists_answer_403_on_the_real_visitor_address() -> Result<()> {
    // The visitor's proxy is 127.0.0.1: its X-Forwarded-For names the real visitor.
    let s = site(Db::Sqlite, &["--trusted-proxies", "127.0.0.1/32"]).await?;
    s.broker
        .cli_ok(&["rules", "chat", "deny", "203.0.113.0/24"])?;
    let xff = |ip: &str| format!("X-Forwarded-For: {ip}");
    let denied = until(
        "203.0.113.9 kept out",
        &s.url,
        &["-H", &xff("203.0.113.9")],
        403,
    )
    .await?;
    assert!(
        denied
            .body
            .contains("Visitors from 203.0.113.9 may not open chat.localhost"),
        "{}",
        denied.body
    );
    assert!(denied.headers.contains("text/html"), "{}", denied.headers);
    // The leftmost entry is whatever the visitor wrote: the proxy's own hop decides.
    let spoofed = curl(&["-H", &xff("198.51.100.1, 203.0.113.9")], &s.url).await?;
    assert_eq!(spoofed.status, 403);
    let other = curl(&["-H", &xff("198.51.100.1")], &s.url).await?;
    assert_eq!((other.status, other.body.as_str()), (200, "hello from A"));
    // An allow list keeps out everyone it does not name, v4 and v6 alike.
    s.broker
        .cli_ok(&["rules", "chat", "allow", "2001:db8::/32"])?;
    until(
        "v4 outside the allow list",
        &s.url,
        &["-H", &xff("198.51.100.1")],
        403,
    )
    .await?;
    assert_eq!(
        curl(&["-H", &xff("2001:db8::5")], &s.url).await?.status,
        200
    );
    // The proxy itself (no header) is an address like any other.
    assert_eq!(curl(&[], &s.url).await?.status, 403);
    s.broker.cli_ok(&["rules", "chat", "rm", "2001:db8::/32"])?;
    until("allow list gone", &s.url, &[], 200).await?;
    let err = failure(&s.broker.cli(&["rules", "chat", "deny", "10.1.2.3/8"])?);
    assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
    Ok(())
}

/// The link's path and query (the test talks to the broker's real port, not the public one).
pub(crate) fn link_path(link: &str) -> Result<String> {
    let rest = link.split_once("://").context("scheme")?.1;
    Ok(rest[rest.find('/').context("path")?..].to_owned())
}

async fn share_links(db: Db) -> Result<()> {
    let s = site(db, &[]).await?;
    let out = failure(&s.broker.cli(&["share", "chat", "--expires", "2h"])?);
    assert!(
        out.contains("asks no password, so a share link would open nothing"),
        "{out}"
    );
    add_user(&s.broker, "chat", "bob", PASSWORD)?;
    until("a password asked", &s.url, &[], 401).await?;
    let out = s
        .broker
        .cli_ok(&["share", "chat", "--expires", "2h", "--uses", "1"])?;
    let link = out.lines().last().context("link line")?;
    assert!(link.contains("/.well-known/warren-share/"), "{out}");
    let path = link_path(link)?;
    let dir = tempfile::tempdir()?;
    let jar = |n: &str| dir.path().join(n).display().to_string();
    let (j1, j2) = (jar("one"), jar("two"));
    // First visitor: the link redirects to the path after the token, with the cookie.
    let first = curl(
        &["-L", "-c", &j1, "-b", &j1],
        &format!("{}{path}/headers?x=1", s.url),
    )
    .await?;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.headers.contains("303"), "{}", first.headers);
    let cookie = first
        .headers
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: warren_share=")
        })
        .context("share cookie")?
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(
        !cookie.to_ascii_lowercase().contains("domain="),
        "host-only: {cookie}"
    );
    assert!(
        !first.body.contains("warren_share"),
        "the origin saw the cookie: {}",
        first.body
    );
    assert!(
        first.body.contains("host: chat.localhost"),
        "{}",
        first.body
    );
    // The cookie keeps working.
    let back = curl(&["-b", &j1], &s.url).await?;
    assert_eq!((back.status, back.body.as_str()), (200, "hello from A"));
    // A second visitor with a fresh jar: the link is used up.
    let second = curl(&["-L", "-c", &j2, "-b", &j2], &format!("{}{path}", s.url)).await?;
    assert_eq!(second.status, 403);
    assert!(
        second.body.contains("Share link not valid"),
        "{}",
        second.body
    );
    assert_eq!(curl(&["-b", &j2], &s.url).await?.status, 401);

    // An unlimited link, revoked: its cookie stops working, and so does the link.
    let out = s.broker.cli_ok(&["share", "chat", "--expires", "1h"])?;
    let path2 = link_path(out.lines().last().context("link")?)?;
    let j3 = jar("three");
    let opened = curl(&["-L", "-c", &j3, "-b", &j3], &format!("{}{path2}", s.url)).await?;
    assert_eq!((opened.status, opened.body.as_str()), (200, "hello from A"));
    let list = s.broker.cli_ok(&["share", "chat", "list"])?;
    let id = list
        .lines()
        .find(|l| l.contains("unlimited"))
        .and_then(|l| l.split_whitespace().next())
        .context("the unlimited link in the list")?
        .to_owned();
    assert!(list.contains("used up"), "{list}");
    s.broker.cli_ok(&["share", "chat", "revoke", &id])?;
    until(
        "the revoked link's cookie refused",
        &s.url,
        &["-b", &j3],
        401,
    )
    .await?;
    let j4 = jar("four");
    let again = curl(&["-L", "-c", &j4, "-b", &j4], &format!("{}{path2}", s.url)).await?;
    assert_eq!(again.status, 403);
    let json: serde_json::Value =
        serde_json::from_str(&s.broker.cli_ok(&["share", "chat", "list", "--json"])?)?;
    assert_eq!(json[1]["state"], "revoked");
    // A made-up token never reaches the origin.
    let fake = curl(&[], &format!("{}/.well-known/warren-share/nope", s.url)).await?;
    assert_eq!(fake.status, 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_link_works_once_then_no_more_sqlite() -> Result<()> {
    share_links(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_link_works_once_then_no_more_postgres() -> Result<()> {
    share_links(Db::Postgres).await
}

/// Polls until `url` answers `status`, returning how long after `since` it first did.
async fn delay_until(url: &str, status: u16, since: Instant) -> Result<Duration> {
    eventually(
        &format!("{url} answering {status}"),
        DEADLINE,
        || async move {
            crate::client::get(url)
                .await
                .ok()
                .filter(|r| r.status == status)
                .map(|_| since.elapsed())
        },
    )
    .await
}

async fn live_change(db: Db) -> Result<()> {
    let s = site(db, &[]).await?;
    let started = Instant::now();
    s.broker.cli_ok(&["rules", "chat", "deny", "127.0.0.0/8"])?;
    let saved = Instant::now();
    let denied = delay_until(&s.url, 403, saved).await?;
    println!(
        "{db:?}: deny applied {} ms after the CLI returned ({} ms after it started)",
        denied.as_millis(),
        (saved - started + denied).as_millis()
    );
    let saved = Instant::now();
    s.broker.cli_ok(&["rules", "chat", "clear"])?;
    let cleared = delay_until(&s.url, 200, saved).await?;
    println!(
        "{db:?}: clear applied {} ms after the CLI started",
        cleared.as_millis()
    );
    assert!(denied < Duration::from_secs(1), "deny took {denied:?}");
    assert!(
        cleared < Duration::from_secs(1) + Duration::from_millis(500),
        "clear took {cleared:?}"
    );
    // The same tunnel throughout: one bind, the client still connected.
    let binds = s
        .ssh
        .out
        .lock()
        .map(|o| o.iter().filter(|l| l.contains(" -> forward ")).count());
    assert_eq!(binds.unwrap_or(0), 1, "{}", s.ssh.all_output());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_a_live_tunnel_applies_within_a_second_sqlite() -> Result<()> {
    live_change(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_on_a_live_tunnel_applies_within_a_second_postgres() -> Result<()> {
    live_change(Db::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_shares_on_tls_and_tcp_names_are_refused_with_why() -> Result<()> {
    let broker = TestBroker::start().await?;
    broker.user_with_key("alice")?;
    broker.cli_ok(&["reserve", "alice", "secure", "--kind", "tls"])?;
    broker.cli_ok(&["reserve", "alice", "tcp:20444", "--kind", "tcp"])?;
    let out = broker.cli_input(
        &["rules", "secure", "auth", "add", "bob"],
        "correct horse battery\n",
    )?;
    let err = failure(&out);
    assert!(
        err.contains(
            "secure is a tls reservation: basic auth and share links apply to HTTP routes only"
        ),
        "{err}"
    );
    assert!(err.contains("TLS passthrough"), "{err}");
    let err = failure(&broker.cli(&["share", "secure", "--expires", "2h"])?);
    assert!(err.contains("secure is a tls reservation"), "{err}");
    let err = failure(&broker.cli_input(
        &["rules", "tcp:20444", "auth", "import", "-"],
        "a:$2y$05$YG1Cm8iA0H8fFOZBVTAeZeXzxDailDOfKf/jIdca5lVHgcjeOnb3.\n",
    )?);
    assert!(err.contains("tcp:20444 is a tcp reservation"), "{err}");
    assert!(err.contains("raw TCP tunnel"), "{err}");
    // IP lists work on every kind.
    broker.cli_ok(&["rules", "secure", "deny", "192.0.2.0/24"])?;
    broker.cli_ok(&["rules", "tcp:20444", "allow", "::1"])?;
    let err = failure(&broker.cli(&["rules", "nowhere"])?);
    assert!(err.contains("no reservation named \"nowhere\""), "{err}");
    let err = failure(&broker.cli(&["reserve", "alice", "tcp:x", "--kind", "tcp"])?);
    assert!(err.contains("tcp:PORT"), "{err}");
    Ok(())
}

/// Connects to a raw TCP port, says something, and returns what came back before the close
/// (`None` when nothing did: refused, reset or closed at once).
async fn tcp_exchange(port: u16) -> Option<String> {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let _ = sock
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out)).await;
    match read {
        Ok(_) if !out.is_empty() => Some(String::from_utf8_lossy(&out).into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_tunnel_with_a_deny_rule_closes_connections() -> Result<()> {
    let port = 24000 + (rand::random::<u16>() % 1000);
    let range = "24000-24999";
    let broker = TestBroker::start_with(Db::Sqlite, &["--tcp-ports", range]).await?;
    let key = broker.user_with_key("alice")?;
    let name = format!("tcp:{port}");
    broker.cli_ok(&["reserve", "alice", &name, "--kind", "tcp"])?;
    let origin = Origin::start("raw").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("tcp:{port}:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    let open = tcp_exchange(port)
        .await
        .context("the open tunnel answered nothing")?;
    assert!(open.ends_with("hello from raw"), "{open}");
    broker.cli_ok(&["rules", &name, "deny", "127.0.0.1"])?;
    eventually("connections closed", DEADLINE, || async move {
        tcp_exchange(port).await.is_none().then_some(())
    })
    .await?;
    // Closed before the owner's service is asked: the owner is told why.
    ssh.line("refused by the IP rules").await?;
    assert!(tcp_exchange(port).await.is_none());
    broker.cli_ok(&["rules", &name, "clear"])?;
    let back = eventually("connections served again", DEADLINE, || async move {
        tcp_exchange(port).await
    })
    .await?;
    assert!(back.ends_with("hello from raw"), "{back}");
    Ok(())
}
