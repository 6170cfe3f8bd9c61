//! Going public for real: the broker's built-in DNS server, Pebble as the ACME CA, and a
//! visitor (curl) reaching `https://NAME.zone` through a live tunnel with a certificate the
//! broker ordered by itself: DNS-01 for the wildcard that serves every name (reserved ones
//! included, with no order of their own), and without the wildcard HTTP-01 or TLS-ALPN-01 per
//! name, within the weekly order budget.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::api::{Api, Cred, token};
use crate::harness::{DEADLINE, Db, Ssh, TestBroker, eventually};
use crate::origin::Origin;

#[path = "../../crates/acme/tests/harness/pebble.rs"]
#[allow(dead_code)]
pub(crate) mod pebble;

const ZONE: &str = "test.warren";

struct Public {
    broker: TestBroker,
    pebble: pebble::Pebble,
    dir: tempfile::TempDir,
    dns_port: u16,
}

/// Pebble first (it must know where to validate), then the broker on those very ports with
/// its built-in DNS server, which Pebble asks for every name. The ports are picked free before
/// either starts, so another test may take one in between: the broker then cannot listen, and
/// the whole start is tried again on new ports.
async fn start(challenge: &str, extra: &[&str]) -> Result<Public> {
    let mut attempt = 1;
    loop {
        match start_once(challenge, extra).await {
            Ok(public) => return Ok(public),
            Err(e) if attempt < 3 => {
                eprintln!("public: start attempt {attempt} failed ({e:#}); new ports");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn start_once(challenge: &str, extra: &[&str]) -> Result<Public> {
    let dir = tempfile::tempdir()?;
    let (http, https, dns) = (
        pebble::free_port(),
        pebble::free_port(),
        pebble::free_port(),
    );
    let pebble = pebble::Pebble::start(dir.path(), dns, http.port(), https.port()).await;
    let root_ca = dir.path().join("pebble-listener-ca.pem");
    std::fs::write(&root_ca, &pebble.listener_ca_pem)?;
    let args: Vec<String> = vec![
        "--http-addr".into(),
        http.to_string(),
        "--https-addr".into(),
        https.to_string(),
        "--domain".into(),
        ZONE.into(),
        "--dns-provider".into(),
        "builtin".into(),
        "--dns-addr".into(),
        dns.to_string(),
        "--public-ipv4".into(),
        "127.0.0.1".into(),
        "--acme-directory".into(),
        pebble.directory_url.clone(),
        "--acme-root-ca".into(),
        root_ca.display().to_string(),
        "--acme-challenge".into(),
        challenge.into(),
    ];
    let args: Vec<String> = args
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = TestBroker::start_with(Db::Sqlite, &args).await?;
    Ok(Public {
        broker,
        pebble,
        dir,
        dns_port: dns.port(),
    })
}

impl Public {
    /// Pebble's issuing root as PEM, for curl.
    async fn issuing_root(&self) -> Result<std::path::PathBuf> {
        let listener_ca = self.dir.path().join("listener-ca.pem");
        std::fs::write(&listener_ca, &self.pebble.listener_ca_pem)?;
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&listener_ca)
            .arg(format!("https://{}/roots/0", self.pebble.mgmt_addr))
            .output()
            .await?;
        if !out.status.success() {
            bail!("roots: {}", String::from_utf8_lossy(&out.stderr));
        }
        let path = self.dir.path().join("issuing-root.pem");
        std::fs::write(&path, &out.stdout)?;
        Ok(path)
    }

    /// `broker certs list` shows `name` issued by Pebble, with an expiry.
    async fn issued(&self, name: &str) -> Result<String> {
        self.cert_line(name, "certificate", |l| {
            l.contains("Pebble") && l.contains(" in ")
        })
        .await
    }

    /// `broker certs list` shows `name` waiting for the order budget.
    async fn waiting(&self, name: &str) -> Result<String> {
        self.cert_line(name, "wait for the order budget", |l| {
            l.contains("waiting for the weekly order budget")
        })
        .await
    }

    /// `name`'s line in `broker certs list`, once `ready` holds for it.
    async fn cert_line(&self, name: &str, what: &str, ready: fn(&str) -> bool) -> Result<String> {
        let broker = &self.broker;
        eventually(
            &format!("{what} for {name}"),
            Duration::from_secs(60),
            || {
                let line = self.cert_listing_line(name);
                async move { line.filter(|l| ready(l)) }
            },
        )
        .await
        .with_context(|| {
            format!(
                "certs:\n{}\npebble log:\n{}",
                broker.cli_ok(&["certs", "list"]).unwrap_or_default(),
                self.pebble.log()
            )
        })
    }

    /// The built-in DNS server answers `name` with 127.0.0.1 (asked with kdig).
    async fn published(&self, name: &str) -> Result<()> {
        let port = self.dns_port.to_string();
        eventually(
            &format!("A record for {name}"),
            Duration::from_secs(20),
            || {
                let port = port.clone();
                async move {
                    let out = tokio::process::Command::new("kdig")
                        .args(["@127.0.0.1", "-p", &port, "+short", name, "A"])
                        .output()
                        .await
                        .ok()?;
                    (String::from_utf8_lossy(&out.stdout).trim() == "127.0.0.1").then_some(())
                }
            },
        )
        .await
    }

    fn cert_listing_line(&self, name: &str) -> Option<String> {
        let listing = self.broker.cli_ok(&["certs", "list"]).unwrap_or_default();
        listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(str::to_owned)
    }

    /// curl `https://host/` trusting only Pebble's root; returns (body, certificate subject line).
    async fn curl(&self, host: &str, ca: &Path) -> Result<(String, String)> {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-v", "--max-time", "10", "--cacert"])
            .arg(ca)
            .args([
                "--resolve",
                &format!("{host}:{}:127.0.0.1", self.broker.https_port),
            ])
            .arg(format!("https://{host}:{}/", self.broker.https_port))
            .output()
            .await?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("curl {host}: {err}");
        }
        let subject = err
            .lines()
            .find(|l| l.contains("subjectAltName") || l.contains("subject:"))
            .unwrap_or("")
            .to_owned();
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), subject))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns01_wildcard_serves_reserved_and_random_names_with_no_order_of_their_own()
-> Result<()> {
    let env = start("http-01", &[]).await?;
    let key = env.broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &env.broker,
        &key,
        &[
            "-R",
            &format!("app:80:{}", origin.target()),
            "-R",
            &format!("0:{}", origin.target()),
        ],
    )?;
    let first = ssh.url(0).await?;
    let second = ssh.url(1).await?;
    assert!(
        first.starts_with("https://") && second.starts_with("https://"),
        "{first} {second}"
    );
    env.issued(&format!("*.{ZONE}")).await?;
    let ca = env.issuing_root().await?;
    let (body, subject) = env.curl(&format!("app.{ZONE}"), &ca).await?;
    assert_eq!(body, "hello from A");
    assert!(subject.contains(&format!("*.{ZONE}")), "{subject}");
    let random = [first, second]
        .into_iter()
        .find(|u| !u.contains("//app."))
        .context("random url")?;
    let random_host = random
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (body, subject) = env.curl(&random_host, &ca).await?;
    assert_eq!(body, "hello from A");
    assert!(subject.contains(&format!("*.{ZONE}")), "{subject}");
    // The built-in DNS server publishes the bound names (checked with a real resolver), which
    // shows the broker has seen the reservation and the bind.
    env.published(&format!("app.{ZONE}")).await?;
    // A name reserved from the CLI (no tunnel yet) is covered too.
    env.broker.cli_ok(&["reserve", "alice", "shop"])?;
    env.published(&format!("shop.{ZONE}")).await?;
    let (_, subject) = env.curl(&format!("shop.{ZONE}"), &ca).await?;
    assert!(subject.contains(&format!("*.{ZONE}")), "{subject}");
    // Their owner sees the records' state through the API: the reserved name, the bound one
    // and the random one, all published; another tenant sees none of them.
    let api = Api::of(&env.broker);
    let alice = token(&env.broker, "alice", "dns", "read")?;
    let random_label = random_host.split('.').next().unwrap_or_default().to_owned();
    let mut want = vec!["app".to_owned(), random_label, "shop".to_owned()];
    want.sort();
    let dns = eventually("every name published in the API", DEADLINE, || {
        let r = api.call("GET", "/api/v1/dns", Cred::Token(&alice), None);
        let want = want.clone();
        async move {
            let r = r.ok()?;
            let rows = r.body.as_array()?.clone();
            let names: Vec<&str> = rows.iter().filter_map(|d| d["name"].as_str()).collect();
            (r.status == 200 && names == want && rows.iter().all(|d| d["state"] == "published"))
                .then_some(rows)
        }
    })
    .await?;
    let shop = dns
        .iter()
        .find(|d| d["name"] == "shop")
        .context("shop's row")?;
    assert_eq!(shop["fqdn"], format!("shop.{ZONE}"));
    assert!(shop["since"].as_i64().is_some() && shop["last_error"].is_null());
    env.broker.cli_ok(&["user", "add", "bob"])?;
    let bob = token(&env.broker, "bob", "dns", "read")?;
    let r = api.call("GET", "/api/v1/dns", Cred::Token(&bob), None)?;
    assert_eq!((r.status, r.body.clone()), (200, serde_json::json!([])));
    // Only the wildcard was ordered: no reserved or random name has a certificate of its own.
    let listing = env.broker.cli_ok(&["certs", "list"])?;
    let names: Vec<&str> = listing
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, [format!("*.{ZONE}")], "{listing}");
    // `broker status` shows it, expiring in weeks, with no error; the metrics count it.
    let status = env.broker.cli_ok(&["status"])?;
    let cert_line = status
        .lines()
        .skip_while(|l| !l.starts_with("CERTIFICATES (1)"))
        .find(|l| l.starts_with(&format!("*.{ZONE}")))
        .with_context(|| format!("no wildcard under CERTIFICATES:\n{status}"))?;
    assert!(
        cert_line.trim_end().ends_with(" -"),
        "an error shown: {cert_line}"
    );
    assert!(
        cert_line.contains("in ") && cert_line.contains('d'),
        "expiry: {cert_line}"
    );
    let metric = |series: &'static str| crate::flood::metric(&env.broker, series);
    assert_eq!(
        metric("warren_acme_orders_total{result=\"issued\"}").await?,
        1.0
    );
    assert_eq!(metric("warren_certificates ").await?, 1.0);
    let expiry = metric("warren_certificate_expiry_earliest_seconds ").await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    assert!(expiry > now + 86_400.0, "expiry {expiry}, now {now}");
    // Plain HTTP now redirects.
    let resp = crate::client::get(&format!("http://app.{ZONE}:{}/", env.broker.http_port)).await?;
    assert_eq!(resp.status, 308);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_wildcard_names_get_their_own_certificates_within_the_weekly_budget() -> Result<()>
{
    // Two orders a week, one per user: alice's second name waits, bob's is issued.
    let env = start(
        "http-01",
        &[
            "--acme-wildcard",
            "false",
            "--acme-orders-per-week",
            "2",
            "--acme-orders-per-user-per-week",
            "1",
        ],
    )
    .await?;
    let key = env.broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &env.broker,
        &key,
        &["-R", &format!("app:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    env.issued(&format!("app.{ZONE}")).await?;
    let ca = env.issuing_root().await?;
    let (body, subject) = env.curl(&format!("app.{ZONE}"), &ca).await?;
    assert_eq!(body, "hello from A");
    assert!(subject.contains(&format!("app.{ZONE}")), "{subject}");

    env.broker.cli_ok(&["reserve", "alice", "more"])?;
    let line = env.waiting(&format!("more.{ZONE}")).await?;
    // Its next look: when alice's first issuance leaves the 7-day window.
    assert!(
        line.contains("share") && (line.contains("in 6d") || line.contains("in 7d")),
        "{line}"
    );
    env.broker.cli_ok(&["user", "add", "bob"])?;
    env.broker.cli_ok(&["reserve", "bob", "shop"])?;
    env.issued(&format!("shop.{ZONE}")).await?;
    // Alice's name still waits: nothing was ordered for it.
    let line = env
        .cert_listing_line(&format!("more.{ZONE}"))
        .context("more is listed")?;
    assert!(
        line.contains("waiting for the weekly order budget") && !line.contains("Pebble"),
        "{line}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_through_the_https_listener() -> Result<()> {
    let env = start("tls-alpn-01", &["--acme-wildcard", "false"]).await?;
    let key = env.broker.user_with_key("alice")?;
    let origin = Origin::start("B").await?;
    let ssh = Ssh::spawn(
        &env.broker,
        &key,
        &["-R", &format!("alpn:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    env.issued(&format!("alpn.{ZONE}")).await?;
    let ca = env.issuing_root().await?;
    let (body, subject) = env.curl(&format!("alpn.{ZONE}"), &ca).await?;
    assert_eq!(body, "hello from B");
    assert!(subject.contains(&format!("alpn.{ZONE}")), "{subject}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_provider_down_is_reported_and_retried() -> Result<()> {
    // An RFC 2136 server that is not there: every change fails, visibly, and keeps being retried.
    let dead = pebble::free_port();
    let flags = rfc2136_flags(ZONE, dead);
    let broker = TestBroker::start_with(Db::Sqlite, &as_strs(&flags)).await?;
    broker.cli_ok(&["user", "add", "alice"])?;
    broker.cli_ok(&["reserve", "alice", "shop"])?;
    let events = eventually(
        "dns.error in the audit log",
        Duration::from_secs(20),
        || {
            let listing = broker.cli_ok(&["events"]).unwrap_or_default();
            async move { listing.contains("dns.error").then_some(listing) }
        },
    )
    .await?;
    let line = events
        .lines()
        .find(|l| l.contains("dns.error"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("shop.{ZONE}")) && line.contains("rfc2136"),
        "{line}"
    );
    // The owner sees it failing, with the provider's reason, through the API.
    let alice = token(&broker, "alice", "dns", "read")?;
    let r = Api::of(&broker).call("GET", "/api/v1/dns", Cred::Token(&alice), None)?;
    assert_eq!(r.status, 200, "{}", r.raw);
    let row = &r.body[0];
    assert_eq!(
        (
            row["name"].as_str(),
            row["fqdn"].as_str(),
            row["state"].as_str()
        ),
        (
            Some("shop"),
            Some(&*format!("shop.{ZONE}")),
            Some("failing")
        ),
        "{}",
        r.raw
    );
    let reason = row["last_error"].as_str().unwrap_or_default();
    assert!(reason.starts_with("set via rfc2136: "), "{reason}");
    // Counted for the operator's alerting, by provider.
    let errors =
        crate::flood::metric(&broker, "warren_dns_errors_total{provider=\"rfc2136\"}").await?;
    assert!(errors >= 1.0, "{errors} DNS errors counted");
    // The name still works as a tunnel name: DNS trouble never blocks the data path.
    assert_eq!(
        crate::client::get(&format!("http://shop.{ZONE}:{}/", broker.http_port))
            .await?
            .status,
        502
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_provider_that_hangs_does_not_delay_a_user_disable() -> Result<()> {
    // An RFC 2136 server that accepts and never answers: each change waits out the provider's
    // 10 s timeout. Disabling a user meanwhile must still drop their tunnel within a second or
    // two, not after the DNS call gives up.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = silent.local_addr()?;
    let (asked_tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
            let _ = asked_tx.send(());
        }
    });
    let flags = rfc2136_flags(ZONE, addr);
    let broker = TestBroker::start_with(Db::Sqlite, &as_strs(&flags)).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let mut ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("shop:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    // The provider has been asked (for `shop`), and is not answering.
    tokio::time::timeout(Duration::from_secs(10), asked.recv())
        .await
        .context("the broker never asked the DNS provider")?;
    let asked_at = std::time::Instant::now();
    broker.cli_ok(&["user", "disable", "alice"])?;
    ssh.exit(Duration::from_secs(4))
        .await
        .context("the disabled user's tunnel outlived a hanging DNS call")?;
    assert!(
        asked_at.elapsed() < Duration::from_secs(6),
        "took {:?}",
        asked_at.elapsed()
    );
    // Read by polling: the client's last line may reach the reader thread just after exit.
    ssh.err_line("your account was disabled").await?;
    Ok(())
}

/// The TSIG key a keyed Knot zone (`Zone::start_keyed`) and the broker share.
const TSIG_SECRET: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0";

/// A Knot zone that takes updates signed with [`TSIG_SECRET`], and the broker flags that make
/// it the broker's RFC 2136 provider.
async fn keyed_zone() -> Result<(crate::zone::Zone, Vec<String>)> {
    let zone = crate::zone::Zone::start_keyed(Some(("warren", TSIG_SECRET))).await?;
    let flags = rfc2136_flags(&zone.name, zone.addr);
    Ok((zone, flags))
}

/// The broker flags that make the RFC 2136 server at `server` (keyed with [`TSIG_SECRET`])
/// the DNS provider of `domain`, whose names point at 127.0.0.1.
pub(crate) fn rfc2136_flags(domain: &str, server: impl std::fmt::Display) -> Vec<String> {
    [
        "--domain",
        domain,
        "--dns-provider",
        "rfc2136",
        "--rfc2136-server",
        &server.to_string(),
        "--rfc2136-key-name",
        "warren",
        "--rfc2136-secret",
        TSIG_SECRET,
        "--public-ipv4",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Borrowed views of owned flags, as `TestBroker::start_with` takes them.
pub(crate) fn as_strs(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_names_released_while_the_broker_was_down_are_withdrawn_at_start() -> Result<()>
{
    let (zone, flags) = keyed_zone().await?;
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut broker = TestBroker::start_with(Db::Sqlite, &flags).await?;
    broker.cli_ok(&["user", "add", "alice"])?;
    for name in ["shop", "keep"] {
        broker.cli_ok(&["reserve", "alice", name])?;
    }
    for name in ["shop", "keep"] {
        let fqdn = zone.fqdn(name);
        eventually(&format!("{fqdn} published"), DEADLINE, || async {
            (zone.dig(&fqdn, "A").await == "127.0.0.1").then_some(())
        })
        .await?;
    }
    // Released from the CLI while no broker runs: nobody withdraws its record then.
    broker.stop();
    broker.cli_ok(&["release", "shop"])?;
    assert_eq!(zone.dig(&zone.fqdn("shop"), "A").await, "127.0.0.1");
    broker.restart()?;
    let shop = zone.fqdn("shop");
    eventually("the released name's record withdrawn", DEADLINE, || async {
        zone.dig(&shop, "A").await.is_empty().then_some(())
    })
    .await?;
    assert_eq!(zone.dig(&zone.fqdn("keep"), "A").await, "127.0.0.1");
    let events = broker.cli_ok(&["events"])?;
    assert!(
        events
            .lines()
            .any(|l| l.contains("dns.remove") && l.contains(&shop)),
        "{events}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns01_wildcard_through_rfc2136_waits_for_the_record_at_the_server() -> Result<()> {
    // Knot holds the zone and Pebble asks Knot: the broker writes the TXT record by a signed
    // update, sees it answer at the server, and only then tells the CA to look.
    let dir = tempfile::tempdir()?;
    let (http, https) = (pebble::free_port(), pebble::free_port());
    let (zone, flags) = keyed_zone().await?;
    let pebble = pebble::Pebble::start(dir.path(), zone.addr, http.port(), https.port()).await;
    let root_ca = dir.path().join("pebble-listener-ca.pem");
    std::fs::write(&root_ca, &pebble.listener_ca_pem)?;
    let root = root_ca.display().to_string();
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend([
        "--acme-directory",
        &pebble.directory_url,
        "--acme-root-ca",
        &root,
    ]);
    let broker = TestBroker::start_with(Db::Sqlite, &flags).await?;
    let env = Public {
        broker,
        pebble,
        dir,
        dns_port: zone.addr.port(),
    };
    let wildcard = format!("*.{}", zone.name);
    env.issued(&wildcard).await?;
    // The challenge record is gone once the order is done.
    let challenge = zone.fqdn("_acme-challenge");
    eventually("the challenge record removed", DEADLINE, || async {
        zone.dig(&challenge, "TXT").await.is_empty().then_some(())
    })
    .await?;
    Ok(())
}
