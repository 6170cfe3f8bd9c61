//! Going public for real: the broker's built-in DNS server, Pebble as the ACME CA, and a
//! visitor (curl) reaching `https://NAME.zone` through a live tunnel with a certificate the
//! broker ordered by itself: HTTP-01 for a reserved name, DNS-01 for the wildcard that
//! serves random names, TLS-ALPN-01 on request.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::harness::{Db, Ssh, TestBroker, eventually};
use crate::origin::Origin;

#[path = "../../crates/acme/tests/harness/pebble.rs"]
#[allow(dead_code)]
mod pebble;

const ZONE: &str = "test.warren";

struct Public {
    broker: TestBroker,
    pebble: pebble::Pebble,
    dir: tempfile::TempDir,
    dns_port: u16,
}

/// Pebble first (it must know where to validate), then the broker on those very ports with
/// its built-in DNS server, which Pebble asks for every name.
async fn start(challenge: &str) -> Result<Public> {
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

    /// `broker certs list` shows `name` with an expiry (issued).
    async fn issued(&self, name: &str) -> Result<String> {
        let broker = &self.broker;
        eventually(
            &format!("certificate for {name}"),
            Duration::from_secs(60),
            || {
                let listing = broker.cli_ok(&["certs", "list"]).unwrap_or_default();
                let line = listing
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some(name))
                    .map(str::to_owned);
                async move { line.filter(|l| l.contains(" in ")) }
            },
        )
        .await
        .with_context(|| format!("pebble log:\n{}", self.pebble.log()))
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
async fn reserved_name_gets_http01_cert_and_random_names_the_dns01_wildcard() -> Result<()> {
    let env = start("http-01").await?;
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
    env.issued(&format!("app.{ZONE}")).await?;
    env.issued(&format!("*.{ZONE}")).await?;
    let ca = env.issuing_root().await?;
    let (body, subject) = env.curl(&format!("app.{ZONE}"), &ca).await?;
    assert_eq!(body, "hello from A");
    assert!(subject.contains(&format!("app.{ZONE}")), "{subject}");
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
    let (body, _) = env.curl(&random_host, &ca).await?;
    assert_eq!(body, "hello from A");
    // The built-in DNS server publishes the bound names (checked with a real resolver).
    let out = tokio::process::Command::new("kdig")
        .args([
            "@127.0.0.1",
            "-p",
            &env.dns_port.to_string(),
            "+short",
            &format!("app.{ZONE}"),
            "A",
        ])
        .output()
        .await?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.1");
    // Plain HTTP now redirects.
    let resp = crate::client::get(&format!("http://app.{ZONE}:{}/", env.broker.http_port)).await?;
    assert_eq!(resp.status, 308);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_through_the_https_listener() -> Result<()> {
    let env = start("tls-alpn-01").await?;
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
    let broker = TestBroker::start_with(
        Db::Sqlite,
        &[
            "--domain",
            ZONE,
            "--dns-provider",
            "rfc2136",
            "--rfc2136-server",
            &dead.to_string(),
            "--rfc2136-key-name",
            "warren",
            "--rfc2136-secret",
            "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
            "--public-ipv4",
            "127.0.0.1",
        ],
    )
    .await?;
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
    // The name still works as a tunnel name: DNS trouble never blocks the data path.
    assert_eq!(
        crate::client::get(&format!("http://shop.{ZONE}:{}/", broker.http_port))
            .await?
            .status,
        502
    );
    Ok(())
}
