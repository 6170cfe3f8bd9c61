//! Custom domains for real: a tenant's zone served by Knot, the broker checking it with its own
//! resolver pointed there, Pebble (asking the same Knot) issuing the domain's certificate over
//! HTTP-01, and curl reaching the tunnel by Host over HTTP and by SNI over HTTPS. A second
//! tenant cannot take the verified domain; removing its TXT record makes it fail and, after
//! the grace period, stops it being served.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::api::{Api, Cred};
use crate::harness::{Db, Ssh, TestBroker, eventually};
use crate::origin::Origin;
use crate::public::pebble;
use crate::zone::Zone;

/// What an SSH command printed and how it ended.
struct Ran {
    out: String,
    err: String,
    code: i32,
}

async fn ssh(broker: &TestBroker, key: &Path, cmd: &[&str]) -> Result<Ran> {
    let mut c = Ssh::command(broker.ssh_port, key, &[]);
    c.args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::time::timeout(crate::harness::DEADLINE, c.output()).await??;
    Ok(Ran {
        out: String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"),
        err: String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("Warning: Permanently added"))
            .collect::<Vec<_>>()
            .join("\n"),
        code: out.status.code().unwrap_or(-1),
    })
}

async fn ssh_ok(broker: &TestBroker, key: &Path, cmd: &[&str]) -> Result<String> {
    let r = ssh(broker, key, cmd).await?;
    if r.code != 0 {
        bail!("ssh {cmd:?} exited {}: {} {}", r.code, r.out, r.err);
    }
    Ok(r.out)
}

/// curl with `args`; returns (status, body).
async fn curl(args: &[&str]) -> Result<(u16, String)> {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-S", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((status.trim().parse().unwrap_or(0), body.to_owned()))
}

/// The domain's row in `broker domains --json`.
fn listed(broker: &TestBroker, domain: &str) -> Result<Value> {
    let out = broker.cli_ok(&["domains", "--json"])?;
    let all: Vec<Value> = serde_json::from_str(&out).with_context(|| out.clone())?;
    all.into_iter()
        .find(|d| d["domain"] == domain)
        .with_context(|| format!("{domain} not in {out}"))
}

/// Waits until `broker domains --json` shows `domain` in `state`.
async fn state(broker: &TestBroker, domain: &str, want: &str) -> Result<Value> {
    eventually(
        &format!("{domain} {want}"),
        Duration::from_secs(30),
        || async { listed(broker, domain).ok().filter(|d| d["state"] == want) },
    )
    .await
    .with_context(|| format!("{:?}", listed(broker, domain).map(|d| d.to_string())))
}

/// The TXT value of a domain shown by the service.
fn txt(d: &Value) -> Result<String> {
    d["records"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["type"] == "TXT"))
        .and_then(|r| r["value"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no TXT record in {d}"))
}

async fn custom_domains(db: Db) -> Result<()> {
    let zone = Zone::start().await?;
    let dir = tempfile::tempdir()?;
    let (http, https) = (pebble::free_port(), pebble::free_port());
    let ca = pebble::Pebble::start(dir.path(), zone.addr, http.port(), https.port()).await;
    let root_ca = dir.path().join("pebble-listener-ca.pem");
    std::fs::write(&root_ca, &ca.listener_ca_pem)?;
    let (http_s, https_s, resolver) = (http.to_string(), https.to_string(), zone.addr.to_string());
    let root_s = root_ca.display().to_string();
    let broker = TestBroker::start_with(
        db,
        &[
            "--http-addr",
            &http_s,
            "--https-addr",
            &https_s,
            "--acme-directory",
            &ca.directory_url,
            "--acme-root-ca",
            &root_s,
            "--acme-challenge",
            "http-01",
            "--public-ipv4",
            "127.0.0.1",
            "--dns-resolvers",
            &resolver,
            "--domain-pending-secs",
            "1",
            "--domain-recheck-secs",
            "1",
            "--domain-grace-secs",
            "1",
        ],
    )
    .await?;
    let alice = broker.user_with_key("alice")?;
    broker.cli_ok(&["reserve", "alice", "chat"])?;
    let origin = Origin::start("A").await?;
    let tunnel = Ssh::spawn(
        &broker,
        &alice,
        &["-N", "-R", &format!("chat:80:{}", origin.target())],
    )?;
    let api = Api::of(&broker);
    let alice_token = broker.cli_ok(&["token", "create", "alice", "w"])?;
    let alice_token = alice_token.lines().last().unwrap_or_default().trim();

    // app: attached over SSH, proven by an A record equal to the broker's public address.
    let app = zone.fqdn("app");
    let added = ssh_ok(&broker, &alice, &["domains", "add", "chat", &app]).await?;
    assert!(
        added.contains(&format!("{app} on chat: pending")),
        "{added}"
    );
    assert!(
        added.contains(&format!("CNAME {app} → chat.localhost")),
        "{added}"
    );
    assert!(
        added.contains(&format!("TXT   _warren-challenge.{app} →")),
        "{added}"
    );
    assert!(
        added.lines().all(|l| l.chars().count() <= 80),
        "wider than 80 columns: {added}"
    );
    let app_row = listed(&broker, &app)?;
    assert_eq!(
        (app_row["state"].as_str(), app_row["serving"].as_bool()),
        (Some("pending"), Some(false)),
        "{app_row}"
    );
    let app_token = txt(&app_row)?;
    assert!(
        added.contains(&app_token),
        "the token is shown whole: {added}"
    );

    // www: attached through the API, proven by a CNAME to the reservation's host.
    let www = zone.fqdn("www");
    let r = api.call(
        "POST",
        "/api/v1/reservations/chat/domains",
        Cred::Token(alice_token),
        Some(&json!({ "domain": www })),
    )?;
    assert_eq!(r.status, 201, "{}", r.raw);
    assert_eq!(r.body["state"], "pending");
    let cname = r.body["records"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "CNAME"))
        .cloned()
        .context("CNAME record")?;
    assert_eq!(
        (cname["name"].as_str(), cname["value"].as_str()),
        (Some(www.as_str()), Some("chat.localhost"))
    );
    let www_token = txt(&r.body)?;
    // Names that are not a tenant's to attach name the field.
    for bad in ["chat.localhost", "console.localhost", "10.0.0.1", "x"] {
        let r = api.call(
            "POST",
            "/api/v1/reservations/chat/domains",
            Cred::Token(alice_token),
            Some(&json!({ "domain": bad })),
        )?;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (422, Some("domain")),
            "{bad}: {}",
            r.raw
        );
    }

    // Not proven yet: the check says what is missing, and nothing is served.
    let pending = state(&broker, &www, "pending").await?;
    let (status, _) = curl(&["-H", &format!("Host: {www}"), &format!("http://{http}/")]).await?;
    assert_eq!(status, 404, "a pending domain is not served ({pending})");

    zone.update(&[
        format!("update add {app}. 1 A 127.0.0.1"),
        format!("update add _warren-challenge.{app}. 1 TXT \"{app_token}\""),
        format!("update add {www}. 1 CNAME chat.localhost."),
        format!("update add _warren-challenge.{www}. 1 TXT \"{www_token}\""),
    ])
    .await?;
    let v = state(&broker, &app, "verified").await?;
    assert_eq!(v["serving"], true, "{v}");
    state(&broker, &www, "verified").await?;

    // By Host over HTTP: www has no certificate, so it is served, not sent to HTTPS.
    let host_www = format!("Host: {www}");
    let (status, body) = eventually("www served by Host", Duration::from_secs(10), || async {
        curl(&["-H", &host_www, &format!("http://{http}/")])
            .await
            .ok()
            .filter(|(s, _)| *s == 200)
    })
    .await?;
    assert_eq!((status, body.as_str()), (200, "hello from A"));

    // app gets its own certificate (HTTP-01: Pebble finds app's A record in the zone and asks
    // the broker), and is then served by SNI over HTTPS, and redirected there from HTTP.
    eventually(
        &format!("certificate for {app}"),
        Duration::from_secs(60),
        || async {
            let certs = broker.cli_ok(&["certs", "list"]).unwrap_or_default();
            certs
                .lines()
                .find(|l| l.split_whitespace().next() == Some(app.as_str()))
                .filter(|l| l.contains("Pebble"))
                .map(str::to_owned)
        },
    )
    .await
    .with_context(|| {
        format!(
            "certs:\n{}\npebble:\n{}",
            broker.cli_ok(&["certs", "list"]).unwrap_or_default(),
            ca.log()
        )
    })?;
    let roots = dir.path().join("issuing-root.pem");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--cacert", &root_s])
        .arg(format!("https://{}/roots/0", ca.mgmt_addr))
        .output()
        .await?;
    std::fs::write(&roots, &out.stdout)?;
    let resolve = format!("{app}:{}:127.0.0.1", https.port());
    let (status, body) = curl(&[
        "--cacert",
        &roots.display().to_string(),
        "--resolve",
        &resolve,
        &format!("https://{app}:{}/", https.port()),
    ])
    .await?;
    assert_eq!((status, body.as_str()), (200, "hello from A"));
    let (status, _) = curl(&["-H", &format!("Host: {app}"), &format!("http://{http}/")]).await?;
    assert_eq!(status, 308, "with its certificate in, HTTP goes to HTTPS");
    // The tunnel's own request log has them, as for its own name.
    let requests = ssh_ok(&broker, &alice, &["requests", "chat", "--json"]).await?;
    assert!(requests.matches("\"GET\"").count() >= 2, "{requests}");

    // Another tenant cannot take the verified domain.
    broker.cli_ok(&["user", "add", "bob"])?;
    broker.cli_ok(&["reserve", "bob", "shop"])?;
    let bob_token = broker.cli_ok(&["token", "create", "bob", "w"])?;
    let bob_token = bob_token.lines().last().unwrap_or_default().trim();
    let r = api.call(
        "POST",
        "/api/v1/reservations/shop/domains",
        Cred::Token(bob_token),
        Some(&json!({ "domain": app })),
    )?;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.raw);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("verified for another user")),
        "{}",
        r.raw
    );
    // Nor see alice's.
    let r = api.call(
        "GET",
        &format!("/api/v1/reservations/chat/domains/{app}"),
        Cred::Token(bob_token),
        None,
    )?;
    assert_eq!(r.status, 404, "{}", r.raw);

    // SSH: the list in text (80 columns) and JSON; errors are one line and a non-zero exit.
    let text = ssh_ok(&broker, &alice, &["domains"]).await?;
    assert!(text.contains(&app) && text.contains("verified"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    let listed_json: Value =
        serde_json::from_str(&ssh_ok(&broker, &alice, &["domains", "--json"]).await?)?;
    assert_eq!(
        listed_json.as_array().map(Vec::len),
        Some(2),
        "{listed_json}"
    );
    let verify = ssh_ok(&broker, &alice, &["domains", "verify", &www, "--json"]).await?;
    let verify: Value = serde_json::from_str(&verify)?;
    assert_eq!(verify["state"], "verified", "{verify}");
    let bad = ssh(&broker, &alice, &["domains", "rm", "nope.example.org"]).await?;
    assert_ne!(bad.code, 0);
    assert_eq!(bad.err.lines().count(), 1, "{}", bad.err);
    assert!(bad.err.contains("no custom domain"), "{}", bad.err);

    // The proof goes: app fails, and after the grace period (1 s here) is no longer served.
    zone.update(&[format!("update delete _warren-challenge.{app}. TXT")])
        .await?;
    let failing = state(&broker, &app, "failing").await?;
    assert!(
        failing["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("_warren-challenge")),
        "{failing}"
    );
    eventually("app no longer served", Duration::from_secs(20), || async {
        let r = curl(&["-H", &format!("Host: {app}"), &format!("http://{http}/")]).await;
        r.ok().filter(|(s, _)| *s == 404)
    })
    .await?;
    // www, still proven, is still served.
    let (status, _) = curl(&["-H", &host_www, &format!("http://{http}/")]).await?;
    assert_eq!(status, 200);

    // Removing a domain stops it at once, and is audited.
    let removed = ssh_ok(&broker, &alice, &["domains", "rm", &www]).await?;
    assert!(
        removed.contains(&format!("removed {www} from chat")),
        "{removed}"
    );
    eventually("www no longer served", Duration::from_secs(10), || async {
        let r = curl(&["-H", &host_www, &format!("http://{http}/")]).await;
        r.ok().filter(|(s, _)| *s == 404)
    })
    .await?;
    let events = broker.cli_ok(&["events", "--limit", "200"])?;
    for action in [
        "domain.add",
        "domain.verify",
        "domain.fail",
        "domain.remove",
    ] {
        assert!(events.contains(action), "no {action} in {events}");
    }
    drop(tunnel);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_domain_verified_through_knot_served_by_host_and_sni_refused_for_a_second_tenant()
-> Result<()> {
    custom_domains(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_domain_verified_through_knot_served_by_host_and_sni_refused_for_a_second_tenant_postgres()
-> Result<()> {
    custom_domains(Db::Postgres).await
}
