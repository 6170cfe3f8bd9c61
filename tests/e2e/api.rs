//! The REST API, driven by curl against the real broker: who may call what, sessions and
//! CSRF, tokens and their revocation, quotas, and live tunnels.

use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::harness::{DEADLINE, Db, Ssh, TestBroker, answers, keygen};
use crate::origin::Origin;

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Cred<'a> {
    None,
    Token(&'a str),
    /// Session cookie jar file and CSRF token (`None`: send no CSRF header).
    Cookie(&'a str, Option<&'a str>),
}

/// The admin listener's API, called with curl.
pub struct Api {
    base: String,
}

/// A response: status, headers (lowercase names), JSON body (Null when empty or not JSON).
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Value,
    pub raw: String,
}

impl Api {
    pub fn of(broker: &TestBroker) -> Self {
        Self {
            base: format!("http://127.0.0.1:{}", broker.api_port),
        }
    }

    pub fn via(base: String) -> Self {
        Self { base }
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        cred: Cred,
        body: Option<&Value>,
    ) -> Result<Reply> {
        self.call_with(method, path, cred, body, &[])
    }

    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        cred: Cred,
        body: Option<&Value>,
        extra: &[&str],
    ) -> Result<Reply> {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-S", "-D", "-", "-X", method, "--max-time", "20"]);
        match cred {
            Cred::None => {}
            Cred::Token(t) => {
                cmd.args(["-H", &format!("authorization: Bearer {t}")]);
            }
            Cred::Cookie(jar, csrf) => {
                cmd.args(["-b", jar, "-c", jar]);
                if let Some(c) = csrf {
                    cmd.args(["-H", &format!("x-csrf-token: {c}")]);
                }
            }
        }
        if let Some(b) = body {
            cmd.args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                &b.to_string(),
            ]);
        }
        cmd.args(extra);
        cmd.arg(format!("{}{path}", self.base));
        let out = cmd.output().context("curl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, raw) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| {
                format!(
                    "{method} {path}: no status in {text:?} ({})",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        Ok(Reply {
            status,
            headers: head.to_ascii_lowercase(),
            body: serde_json::from_str(raw).unwrap_or(Value::Null),
            raw: raw.to_owned(),
        })
    }
}

impl Reply {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub(crate) fn token(broker: &TestBroker, user: &str, name: &str, scope: &str) -> Result<String> {
    let out = broker.cli_ok(&["token", "create", user, name, "--scope", scope])?;
    let t = out.lines().last().unwrap_or_default().trim().to_owned();
    if !t.starts_with("wrn_") {
        bail!("token create printed {out:?}");
    }
    Ok(t)
}

/// Signs in with the first-run setup link as admin `root`; returns the cookie jar and CSRF.
fn setup_admin(broker: &TestBroker, api: &Api) -> Result<(String, String)> {
    let jar = broker.dir.path().join("admin.jar").display().to_string();
    let t = broker
        .setup_token
        .clone()
        .context("serve printed no setup link")?;
    let r = api.call(
        "POST",
        "/api/v1/setup",
        Cred::Cookie(&jar, None),
        Some(&json!({"token": t, "name": "root", "password": "correct horse battery"})),
    )?;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(
        r.headers.contains("set-cookie: warren_session="),
        "{}",
        r.headers
    );
    assert!(
        r.headers.contains("httponly") && r.headers.contains("samesite=strict"),
        "{}",
        r.headers
    );
    let csrf = r.body["csrf_token"]
        .as_str()
        .context("csrf_token")?
        .to_owned();
    Ok((jar, csrf))
}

/// For one operation of the OpenAPI document: what bob (another tenant, write token) and a
/// read token of alice's get. Every documented operation must have a row, so a new route
/// cannot ship without its authorization being tested.
fn expected(method: &str, path: &str) -> Option<(u16, u16)> {
    // (bob's write token on alice's objects, alice's read token)
    Some(match (method, path) {
        ("post", "/api/v1/session") | ("post", "/api/v1/setup") => return None,
        ("get", "/api/v1/session") => (404, 404),
        ("delete", "/api/v1/session") => (404, 404),
        ("post", "/api/v1/session/logout-all") => (204, 403),
        ("get", "/api/v1/me") => (200, 200),
        ("put", "/api/v1/me/password") => (204, 403),
        ("get", "/api/v1/users") => (403, 403),
        ("post", "/api/v1/users") => (403, 403),
        ("get", "/api/v1/users/{name}") => (404, 200),
        ("post", "/api/v1/users/{name}/disable") => (403, 403),
        ("post", "/api/v1/users/{name}/enable") => (403, 403),
        ("put", "/api/v1/users/{name}/quotas") => (403, 403),
        ("put", "/api/v1/users/{name}/password") => (404, 403),
        ("get", "/api/v1/keys") => (404, 200),
        ("post", "/api/v1/keys") => (404, 403),
        ("delete", "/api/v1/keys/{fingerprint}") => (404, 403),
        // The code is the secret: anyone with write scope may look, a read token may not.
        ("get", "/api/v1/pairings/{code}") => (404, 403),
        ("post", "/api/v1/pairings/{code}/approve") => (404, 403),
        ("post", "/api/v1/pairings/{code}/reject") => (404, 403),
        ("get", "/api/v1/tokens") => (404, 200),
        ("post", "/api/v1/tokens") => (404, 403),
        ("delete", "/api/v1/tokens/{id}") => (404, 403),
        ("get", "/api/v1/reservations") => (403, 200),
        ("post", "/api/v1/reservations") => (404, 403),
        ("get", "/api/v1/reservations/{name}") => (404, 200),
        ("delete", "/api/v1/reservations/{name}") => (404, 403),
        ("get", "/api/v1/reservations/{name}/rules") => (404, 200),
        ("delete", "/api/v1/reservations/{name}/rules") => (404, 403),
        ("put", "/api/v1/reservations/{name}/rules/auth/{user}") => (404, 403),
        ("delete", "/api/v1/reservations/{name}/rules/auth/{user}") => (404, 403),
        ("post", "/api/v1/reservations/{name}/rules/htpasswd") => (404, 403),
        ("post", "/api/v1/reservations/{name}/rules/ip") => (404, 403),
        ("delete", "/api/v1/reservations/{name}/rules/ip") => (404, 403),
        ("get", "/api/v1/reservations/{name}/shares") => (404, 200),
        ("post", "/api/v1/reservations/{name}/shares") => (404, 403),
        ("delete", "/api/v1/reservations/{name}/shares/{id}") => (404, 403),
        ("get", "/api/v1/tunnels") => (403, 200),
        ("get", "/api/v1/live/tunnels") => (403, 200),
        ("get", "/api/v1/server") => (200, 200),
        ("delete", "/api/v1/tunnels/{name}") => (404, 403),
        ("get", "/api/v1/tunnels/{name}/requests") => (404, 404),
        ("get", "/api/v1/tunnels/{name}/requests/live") => (404, 404),
        ("get", "/api/v1/events") => (403, 200),
        ("get", "/api/v1/certificates") => (403, 200),
        ("get", "/api/v1/dns") => (403, 200),
        ("get", "/api/v1/domains") => (403, 200),
        ("get", "/api/v1/reservations/{name}/domains") => (404, 200),
        ("post", "/api/v1/reservations/{name}/domains") => (404, 403),
        ("get", "/api/v1/reservations/{name}/domains/{domain}") => (404, 404),
        ("delete", "/api/v1/reservations/{name}/domains/{domain}") => (404, 403),
        ("post", "/api/v1/reservations/{name}/domains/{domain}/verify") => (404, 403),
        ("get", "/api/v1/webhooks") => (403, 200),
        ("post", "/api/v1/webhooks") => (404, 403),
        ("delete", "/api/v1/webhooks/{id}") => (404, 403),
        ("get", "/api/v1/webhooks/{id}/deliveries") => (404, 200),
        ("post", "/api/v1/webhooks/{id}/test") => (404, 403),
        ("get", "/api/v1/nodes") => (403, 403),
        _ => return Some((0, 0)),
    })
}

async fn authorization_of_every_route(db: Db) -> Result<()> {
    let broker = TestBroker::start_with(db, &[]).await?;
    let api = Api::of(&broker);
    broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "add", "bob"])?;
    broker.cli_ok(&["reserve", "alice", "alice-site"])?;
    let alice_w = token(&broker, "alice", "w", "write")?;
    let alice_r = token(&broker, "alice", "r", "read")?;
    let bob = token(&broker, "bob", "w", "write")?;
    let keys = api.call("GET", "/api/v1/keys", Cred::Token(&alice_w), None)?;
    let fp = keys.body[0]["fingerprint"]
        .as_str()
        .context("alice's key")?
        .to_owned();
    let toks = api.call("GET", "/api/v1/tokens", Cred::Token(&alice_w), None)?;
    let tok_id = toks
        .body
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "r"))
        .map(|t| t["id"].clone())
        .context("token r")?;
    // A public receiver (an address literal: no DNS needed), never called in this test.
    let hook = api.call(
        "POST",
        "/api/v1/webhooks",
        Cred::Token(&alice_w),
        Some(&json!({"url": "https://203.0.114.7/alices-hook"})),
    )?;
    assert_eq!(hook.status, 201, "{}", hook.raw);
    let hook_id = hook.body["id"].as_i64().context("webhook id")?;
    // Secrets that bob must never see in any answer.
    let alices = ["alice-site", fp.as_str(), "\"r\"", "alices-hook"];
    let spare = keygen(broker.dir.path(), "spare", "ed25519")?;
    let spare = std::fs::read_to_string(format!("{}.pub", spare.display()))?;

    let doc = api.call("GET", "/api/v1/openapi.json", Cred::None, None)?;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().context("paths")?;
    let mut checked = 0;
    for (path, ops) in paths {
        for (method, _) in ops.as_object().context("ops")? {
            let Some((bob_status, read_status)) = expected(method, path) else {
                continue;
            };
            assert_ne!(
                (bob_status, read_status),
                (0, 0),
                "no authorization row for {method} {path}"
            );
            let concrete = |who: &str| {
                path.replace(
                    "{name}",
                    if path.starts_with("/api/v1/users") {
                        who
                    } else {
                        "alice-site"
                    },
                )
                .replace("{fingerprint}", &fp.replace('/', "%2F").replace('+', "%2B"))
                .replace(
                    "{id}",
                    &if path.starts_with("/api/v1/webhooks") {
                        hook_id.to_string()
                    } else {
                        tok_id.to_string()
                    },
                )
                .replace("{user}", "bob")
                .replace("{code}", "ABCD-EFGH")
                .replace("{domain}", "app.alice.example")
            };
            let m = method.to_uppercase();
            // A body that would be valid if bob were allowed: it names alice's objects.
            let body = match (method.as_str(), path.as_str()) {
                ("post", "/api/v1/keys") => {
                    Some(json!({"public_key": spare.trim(), "user": "alice"}))
                }
                ("post", "/api/v1/tokens") => Some(json!({"name": "sneaky", "user": "alice"})),
                ("post", "/api/v1/reservations") => {
                    Some(json!({"name": "bobs-try", "user": "alice"}))
                }
                ("post", "/api/v1/users") => Some(json!({"name": "mallory"})),
                ("post", "/api/v1/webhooks") => {
                    Some(json!({"url": "https://203.0.114.7/bobs-try", "user": "alice"}))
                }
                ("post", "/api/v1/reservations/{name}/domains") => {
                    Some(json!({"domain": "app.alice.example"}))
                }
                ("put", "/api/v1/users/{name}/quotas") => Some(json!({"max_tunnels": 1})),
                ("put", "/api/v1/users/{name}/password") => {
                    Some(json!({"password": "0123456789abc"}))
                }
                ("put", "/api/v1/reservations/{name}/rules/auth/{user}") => {
                    Some(json!({"password": "bob's try"}))
                }
                ("post", "/api/v1/reservations/{name}/rules/htpasswd") => Some(
                    json!({"htpasswd": "bob:$2y$05$abcdefghijklmnopqrstuu5s2v8.jKj2ZfQx0nQ6Zz1bYqD5rN0C"}),
                ),
                ("post", "/api/v1/reservations/{name}/rules/ip") => {
                    Some(json!({"action": "deny", "cidr": "10.0.0.0/8"}))
                }
                ("post", "/api/v1/reservations/{name}/shares") => Some(json!({"expires": "2h"})),
                ("put", "/api/v1/me/password") => {
                    Some(json!({"current_password": "x", "password": "0123456789abc"}))
                }
                (_, _) if method != "get" && method != "delete" => Some(json!({})),
                _ => None,
            };
            let query = match path.as_str() {
                "/api/v1/keys" | "/api/v1/tokens" if method == "get" => "?user=alice",
                "/api/v1/reservations/{name}/rules/ip" if method == "delete" => "?cidr=10.0.0.0/8",
                "/api/v1/reservations"
                | "/api/v1/tunnels"
                | "/api/v1/live/tunnels"
                | "/api/v1/events"
                | "/api/v1/certificates"
                | "/api/v1/dns"
                | "/api/v1/domains"
                | "/api/v1/webhooks"
                    if method == "get" =>
                {
                    "?all=true"
                }
                _ => "",
            };
            // No credentials: 401 in the one error shape.
            let r = api.call(
                &m,
                &format!("{}{query}", concrete("alice")),
                Cred::None,
                body.as_ref(),
            )?;
            assert_eq!(r.status, 401, "{m} {path} without credentials: {}", r.raw);
            assert_eq!(r.code(), "unauthorized", "{m} {path}: {}", r.raw);
            // Bob's write token on alice's objects: 404 (or 403 for admin routes), and no data.
            let url = format!("{}{query}", concrete("alice"));
            let r = api.call(&m, &url, Cred::Token(&bob), body.as_ref())?;
            assert_eq!(
                r.status, bob_status,
                "{m} {path} with bob's token: {}",
                r.raw
            );
            let asked = format!(
                "{path} {}",
                body.as_ref().map(Value::to_string).unwrap_or_default()
            );
            for secret in alices.iter().filter(|s| {
                !asked.contains(**s) && !url.contains(&s.replace('/', "%2F").replace('+', "%2B"))
            }) {
                assert!(
                    !r.raw.contains(secret),
                    "{m} {path} showed bob {secret}: {}",
                    r.raw
                );
            }
            // Alice's read token on her own things: 403 on every route that changes something.
            let own_query = if query == "?all=true" { "" } else { query };
            // A live stream that is allowed answers 200 and goes on: its head is enough.
            let stream = ["--max-time", "2"];
            let r = api.call_with(
                &m,
                &format!("{}{own_query}", concrete("alice")),
                Cred::Token(&alice_r),
                body.as_ref(),
                if path.ends_with("/live") {
                    &stream
                } else {
                    &[]
                },
            )?;
            assert_eq!(
                r.status, read_status,
                "{m} {path} with alice's read token: {}",
                r.raw
            );
            if read_status == 403 {
                assert_eq!(r.code(), "forbidden", "{}", r.raw);
            }
            checked += 1;
        }
    }
    assert!(checked >= 35, "only {checked} operations checked");
    let rules = api.call(
        "GET",
        "/api/v1/reservations/alice-site/rules",
        Cred::Token(&alice_w),
        None,
    )?;
    for list in ["basic_users", "allow", "deny", "shares"] {
        assert_eq!(rules.body[list], json!([]), "{list}: {}", rules.raw);
    }
    // Nothing bob or the read token tried changed alice's things.
    let mine = api.call("GET", "/api/v1/reservations", Cred::Token(&alice_w), None)?;
    assert_eq!(mine.body.as_array().map(Vec::len), Some(1), "{}", mine.raw);
    let keys = api.call("GET", "/api/v1/keys", Cred::Token(&alice_w), None)?;
    assert_eq!(keys.body[0]["fingerprint"], fp.as_str());
    let toks = api.call("GET", "/api/v1/tokens", Cred::Token(&alice_w), None)?;
    assert_eq!(toks.body.as_array().map(Vec::len), Some(2), "{}", toks.raw);
    let hooks = api.call("GET", "/api/v1/webhooks", Cred::Token(&alice_w), None)?;
    assert_eq!(
        hooks.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        hooks.raw
    );
    assert_eq!(hooks.body[0]["url"], "https://203.0.114.7/alices-hook");
    let users = broker.cli_ok(&["user", "list"])?;
    assert!(
        !users.contains("mallory") && !users.contains("disabled"),
        "{users}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_strangers_other_tenants_and_read_tokens() -> Result<()> {
    authorization_of_every_route(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_strangers_other_tenants_and_read_tokens_postgres() -> Result<()> {
    authorization_of_every_route(Db::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_link_sessions_csrf_and_logout() -> Result<()> {
    let broker = TestBroker::start().await?;
    let api = Api::of(&broker);
    // Before setup nothing answers without credentials.
    assert_eq!(api.call("GET", "/api/v1/me", Cred::None, None)?.status, 401);
    let (jar, csrf) = setup_admin(&broker, &api)?;
    // The link is single-use.
    let again = api.call(
        "POST",
        "/api/v1/setup",
        Cred::None,
        Some(&json!({"token": broker.setup_token, "name": "eve", "password": "correct horse battery"})),
    )?;
    assert_eq!(again.status, 409, "{}", again.raw);
    let me = api.call("GET", "/api/v1/me", Cred::Cookie(&jar, None), None)?;
    assert_eq!(
        (me.status, me.body["name"].as_str()),
        (200, Some("root")),
        "{}",
        me.raw
    );
    assert_eq!(me.body["is_admin"], true);
    // A state change with the cookie but without the CSRF token is refused, and changes nothing.
    let r = api.call(
        "POST",
        "/api/v1/users",
        Cred::Cookie(&jar, None),
        Some(&json!({"name": "alice"})),
    )?;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.raw);
    let r = api.call(
        "POST",
        "/api/v1/users",
        Cred::Cookie(&jar, Some("0".repeat(48).as_str())),
        Some(&json!({"name": "alice"})),
    )?;
    assert_eq!(r.status, 403, "{}", r.raw);
    assert!(!broker.cli_ok(&["user", "list"])?.contains("alice"));
    let r = api.call(
        "POST",
        "/api/v1/users",
        Cred::Cookie(&jar, Some(&csrf)),
        Some(&json!({"name": "alice", "password": "alice's long password"})),
    )?;
    assert_eq!(r.status, 201, "{}", r.raw);
    // Invalid input names the field.
    let r = api.call(
        "POST",
        "/api/v1/users",
        Cred::Cookie(&jar, Some(&csrf)),
        Some(&json!({"name": "Bad Name"})),
    )?;
    assert_eq!(
        (r.status, r.code(), r.body["error"]["field"].as_str()),
        (422, "invalid", Some("name")),
        "{}",
        r.raw
    );
    let r = api.call(
        "POST",
        "/api/v1/users",
        Cred::Cookie(&jar, Some(&csrf)),
        Some(&json!({"name": "alice"})),
    )?;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.raw);
    // A forged cookie (signed with another key) is refused.
    let forged = broker.dir.path().join("forged.jar");
    std::fs::write(
        &forged,
        format!(
            "127.0.0.1\tFALSE\t/\tFALSE\t0\twarren_session\t{}\n",
            forged_jwt()
        ),
    )?;
    let r = api.call(
        "GET",
        "/api/v1/me",
        Cred::Cookie(&forged.display().to_string(), None),
        None,
    )?;
    assert_eq!(r.status, 401, "{}", r.raw);
    // Alice signs in; the same answer for a wrong password and an unknown user.
    let ajar = broker.dir.path().join("alice.jar").display().to_string();
    let wrong = api.call(
        "POST",
        "/api/v1/session",
        Cred::Cookie(&ajar, None),
        Some(&json!({"name": "alice", "password": "nope nope nope"})),
    )?;
    let unknown = api.call(
        "POST",
        "/api/v1/session",
        Cred::Cookie(&ajar, None),
        Some(&json!({"name": "zed", "password": "nope nope nope"})),
    )?;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.body, unknown.body);
    let ok = api.call(
        "POST",
        "/api/v1/session",
        Cred::Cookie(&ajar, None),
        Some(&json!({"name": "alice", "password": "alice's long password"})),
    )?;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    let acsrf = ok.body["csrf_token"].as_str().context("csrf")?.to_owned();
    assert_eq!(
        api.call("GET", "/api/v1/me", Cred::Cookie(&ajar, None), None)?
            .body["name"],
        "alice"
    );
    // Alice is no admin: 403 on admin routes through her session too.
    assert_eq!(
        api.call("GET", "/api/v1/users", Cred::Cookie(&ajar, None), None)?
            .status,
        403
    );
    // Logging out ends the session at once, even for a copy of the cookie kept elsewhere.
    let copy = broker.dir.path().join("alice-copy.jar");
    std::fs::copy(&ajar, &copy)?;
    let out = api.call(
        "DELETE",
        "/api/v1/session",
        Cred::Cookie(&ajar, Some(&acsrf)),
        None,
    )?;
    assert_eq!(out.status, 204, "{}", out.raw);
    let r = api.call(
        "GET",
        "/api/v1/me",
        Cred::Cookie(&copy.display().to_string(), None),
        None,
    )?;
    assert_eq!(r.status, 401, "a logged-out cookie still works: {}", r.raw);
    // Log out everywhere: both of the admin's sessions end.
    let jar2 = broker.dir.path().join("admin2.jar").display().to_string();
    let r = api.call(
        "POST",
        "/api/v1/session",
        Cred::Cookie(&jar2, None),
        Some(&json!({"name": "root", "password": "correct horse battery"})),
    )?;
    assert_eq!(r.status, 200);
    let r = api.call(
        "POST",
        "/api/v1/session/logout-all",
        Cred::Cookie(&jar, Some(&csrf)),
        None,
    )?;
    assert_eq!(r.status, 204, "{}", r.raw);
    assert_eq!(
        api.call("GET", "/api/v1/me", Cred::Cookie(&jar2, None), None)?
            .status,
        401
    );
    Ok(())
}

/// A JWT with the right shape and claims, signed with a key the broker never had.
fn forged_jwt() -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let head = b64.encode(br#"{"alg":"HS256","typ":"JWT","kid":"1"}"#);
    let claims = b64.encode(format!(
        r#"{{"sub":1,"sid":"x","csrf":"y","exp":{},"iat":0}}"#,
        4_000_000_000u64
    ));
    let sig = b64.encode([7u8; 32]);
    format!("{head}.{claims}.{sig}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_rate_limited_with_retry_after() -> Result<()> {
    let broker = TestBroker::start().await?;
    let api = Api::of(&broker);
    broker.cli_ok(&["user", "add", "alice"])?;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = api.call(
            "POST",
            "/api/v1/session",
            Cred::None,
            Some(&json!({"name": "alice", "password": "guess guess guess"})),
        )?;
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(r.code(), "rate_limited", "{}", r.raw);
            let retry: u64 = r
                .headers
                .lines()
                .find_map(|l| l.strip_prefix("retry-after: "))
                .and_then(|v| v.trim().parse().ok())
                .context("Retry-After")?;
            assert!((1..=60).contains(&retry), "retry-after {retry}");
            return Ok(());
        }
        assert_eq!(r.status, 401);
    }
    bail!("no 429 after {statuses:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_and_disabled_users_stop_at_the_next_request() -> Result<()> {
    let broker = TestBroker::start().await?;
    let api = Api::of(&broker);
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "add", "root", "--admin"])?;
    let root = token(&broker, "root", "ops", "admin")?;
    let t1 = token(&broker, "alice", "one", "write")?;
    let t2 = token(&broker, "alice", "two", "write")?;
    assert_eq!(
        api.call("GET", "/api/v1/me", Cred::Token(&t1), None)?
            .status,
        200
    );
    // Revoked by id through the API: the very next request is refused.
    let list = api.call("GET", "/api/v1/tokens", Cred::Token(&t1), None)?;
    let id = list
        .body
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "one"))
        .map(|t| t["id"].clone())
        .context("id")?;
    assert!(!list.raw.contains(&t1), "a token list showed a secret");
    let r = api.call(
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        Cred::Token(&t2),
        None,
    )?;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = api.call("GET", "/api/v1/me", Cred::Token(&t1), None)?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{}", r.raw);
    // A live tunnel of alice's, listed by the API with its URL.
    let origin = Origin::start("A").await?;
    let mut ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    let tunnels = api.call("GET", "/api/v1/tunnels", Cred::Token(&t2), None)?;
    assert_eq!(
        tunnels.body[0]["url"].as_str(),
        Some(url.as_str()),
        "{}",
        tunnels.raw
    );
    assert_eq!(tunnels.body[0]["user"], "alice");
    // Disabling her (admin token): her token dies on the next request, her tunnel at once.
    let r = api.call(
        "POST",
        "/api/v1/users/alice/disable",
        Cred::Token(&root),
        None,
    )?;
    assert_eq!(
        (r.status, r.body["disabled"].as_bool()),
        (200, Some(true)),
        "{}",
        r.raw
    );
    let r = api.call("GET", "/api/v1/me", Cred::Token(&t2), None)?;
    assert_eq!(r.status, 401, "{}", r.raw);
    answers("tunnel of a disabled user", DEADLINE, &url, 404).await?;
    ssh.exit(DEADLINE).await?;
    // The audit log names who did it.
    let events = api.call(
        "GET",
        "/api/v1/events?all=true&limit=50",
        Cred::Token(&root),
        None,
    )?;
    let actions: Vec<(String, String)> = events.body["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["actor"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("user.disable".into(), "root/token:ops".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("token.revoke".into(), "alice/token:two".into())),
        "{actions:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_quotas_and_the_console_host() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "add", "root", "--admin"])?;
    let root = token(&broker, "root", "ops", "admin")?;
    let alice = token(&broker, "alice", "w", "write")?;
    // Through the edge, on the console host, like a browser would.
    let api = Api::via(format!("http://127.0.0.1:{}", broker.http_port));
    let host = ["-H", "host: console.localhost"];
    let r = api.call_with(
        "POST",
        "/api/v1/reservations",
        Cred::Token(&alice),
        Some(&json!({"name": "chat"})),
        &host,
    )?;
    assert_eq!(r.status, 201, "{}", r.raw);
    assert_eq!(
        r.body["url"],
        format!("http://chat.localhost:{}", broker.http_port)
    );
    let r = api.call_with(
        "PUT",
        "/api/v1/users/alice/quotas",
        Cred::Token(&root),
        Some(&json!({"max_reservations": 1})),
        &host,
    )?;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = api.call_with(
        "POST",
        "/api/v1/reservations",
        Cred::Token(&alice),
        Some(&json!({"name": "blog"})),
        &host,
    )?;
    assert_eq!((r.status, r.code()), (409, "quota"), "{}", r.raw);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_reservations"),
        "{}",
        r.raw
    );
    // With no DNS provider the broker publishes nothing: the operator's records serve names.
    let r = api.call_with("GET", "/api/v1/dns", Cred::Token(&alice), None, &host)?;
    assert_eq!(
        (r.status, r.body.clone()),
        (
            200,
            json!([{"name": "chat", "fqdn": "chat.localhost", "state": "unmanaged",
                    "since": null, "last_error": null}])
        )
    );
    // Kinds: a tcp reservation names a port of the range; a bad kind is a 422 naming `kind`.
    let r = api.call_with(
        "POST",
        "/api/v1/reservations",
        Cred::Token(&alice),
        Some(&json!({"name": "x", "kind": "udp"})),
        &host,
    )?;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("kind")),
        "{}",
        r.raw
    );
    // The console's own name can be neither reserved nor bound by a tenant.
    let r = api.call_with(
        "POST",
        "/api/v1/reservations",
        Cred::Token(&root),
        Some(&json!({"name": "console"})),
        &host,
    )?;
    assert_eq!(r.status, 422, "{}", r.raw);
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("console:80:{}", origin.target()),
        ],
    )?;
    ssh.line("\"console\" is reserved by the operator").await?;
    let r = api.call_with("GET", "/api/v1/me", Cred::None, None, &host)?;
    assert_eq!(
        (r.status, r.code()),
        (401, "unauthorized"),
        "the console host no longer answers: {}",
        r.raw
    );
    // Unknown API paths and methods answer in the same shape.
    let r = api.call_with("GET", "/api/v1/nope", Cred::Token(&alice), None, &host)?;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.raw);
    let r = api.call_with("PATCH", "/api/v1/me", Cred::Token(&alice), None, &host)?;
    assert_eq!(
        (r.status, r.code()),
        (405, "method_not_allowed"),
        "{}",
        r.raw
    );
    let r = api.call_with(
        "POST",
        "/api/v1/reservations",
        Cred::Token(&alice),
        None,
        &[
            "-H",
            "host: console.localhost",
            "-H",
            "content-type: application/json",
            "--data-binary",
            "{not json",
        ],
    )?;
    assert_eq!((r.status, r.code()), (422, "invalid"), "{}", r.raw);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_added_through_the_api_connect_and_removed_ones_drop() -> Result<()> {
    let broker = TestBroker::start().await?;
    let api = Api::of(&broker);
    broker.cli_ok(&["user", "add", "alice"])?;
    let t = token(&broker, "alice", "w", "write")?;
    let key = keygen(broker.dir.path(), "laptop", "ed25519")?;
    let line = std::fs::read_to_string(format!("{}.pub", key.display()))?;
    let r = api.call(
        "POST",
        "/api/v1/keys",
        Cred::Token(&t),
        Some(&json!({"public_key": line.trim()})),
    )?;
    assert_eq!(r.status, 201, "{}", r.raw);
    let fp = r.body["fingerprint"].as_str().context("fp")?.to_owned();
    let r = api.call(
        "POST",
        "/api/v1/keys",
        Cred::Token(&t),
        Some(&json!({"public_key": "ssh-ed25519 garbage"})),
    )?;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("public_key")),
        "{}",
        r.raw
    );
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    answers("tunnel", DEADLINE, &url, 200).await?;
    let path = format!(
        "/api/v1/keys/{}",
        fp.replace('/', "%2F").replace('+', "%2B")
    );
    let r = api.call("DELETE", &path, Cred::Token(&t), None)?;
    assert_eq!(r.status, 200, "{}", r.raw);
    ssh.err_line("your key was removed").await?;
    let r = api.call("GET", "/api/v1/keys", Cred::Token(&t), None)?;
    assert_eq!(r.body.as_array().map(Vec::len), Some(0), "{}", r.raw);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_kinds_are_enforced_at_bind_time() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "quota", "alice", "--max-tunnels", "1"])?;
    broker.cli_ok(&["reserve", "alice", "db", "--kind", "tls"])?;
    let origin = Origin::start("A").await?;
    let t = origin.target();
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("db:80:{t}"),
            "-R",
            &format!("0:{t}"),
            "-R",
            &format!("0:{}", t.replace("localhost", "127.0.0.1")),
        ],
    )?;
    // A tls reservation is not served as HTTP; the session says how to ask for it.
    ssh.line("\"db\" is reserved as tls: use -R db:443:")
        .await?;
    let url = ssh.url(0).await?;
    answers("the one tunnel the quota allows", DEADLINE, &url, 200).await?;
    ssh.line("quota max_tunnels = 1").await?;
    // The operator's CLI shows and resets it.
    let out = broker.cli_ok(&["user", "quota", "alice", "--max-tunnels", "default"])?;
    assert!(out.contains("max_tunnels 25"), "{out}");
    Ok(())
}

/// The API fuzzed from its own OpenAPI document by Schemathesis (PyPI `schemathesis`, which
/// `scripts/test` installs): no 5xx, every status, content type, header and body as documented,
/// and schema-invalid input refused. Left out: `positive_data_acceptance` (a string of the
/// documented shape is not a valid SSH key or a free name, and the server rightly says 422) and
/// `ignored_auth` (the run's bearer token rides along on its "invalid auth" cases). Revoking
/// tokens is left out so the run keeps its own credential, and the live list of tunnels, an
/// event stream that never ends by itself, so the run does not wait on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_api_true_to_its_document() -> Result<()> {
    let broker = TestBroker::start().await?;
    broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "add", "root", "--admin"])?;
    broker.cli_ok(&["reserve", "alice", "chat"])?;
    let root = token(&broker, "root", "fuzz", "admin")?;
    let out = tokio::process::Command::new("st")
        .current_dir(broker.dir.path())
        .args([
            "run",
            &format!("http://127.0.0.1:{}/api/v1/openapi.json", broker.api_port),
            "-H",
            &format!("Authorization: Bearer {root}"),
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,ignored_auth",
            "--exclude-path-regex",
            "/tokens/\\{id\\}|/live/tunnels",
            "--max-examples",
            "20",
            "--seed",
            "1",
        ])
        .output()
        .await
        .context(
            "schemathesis (`st`) is not installed: pip install schemathesis (scripts/test does)",
        )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = text.lines().filter(|l| l.contains(" generated")).collect();
    println!("schemathesis: {}", summary.join(" | "));
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.iter().any(|l| l.contains("passed")), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_requests_are_listed_and_streamed_live() -> Result<()> {
    let broker = TestBroker::start().await?;
    let api = Api::of(&broker);
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "add", "bob"])?;
    let alice = token(&broker, "alice", "r", "read")?;
    let bob = token(&broker, "bob", "r", "read")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("logged:80:{}", origin.target())],
    )?;
    let url = ssh.url(0).await?;
    answers("tunnel", DEADLINE, &url, 200).await?;
    // Live first: a curl reading the SSE stream. Its first event is one of the recent
    // requests (`answers` made them); the visit made after it arrived can only come live.
    use tokio::io::AsyncBufReadExt;
    let mut live = tokio::process::Command::new("curl")
        .args(["-sN", "-H", &format!("authorization: Bearer {alice}")])
        .arg(format!(
            "http://127.0.0.1:{}/api/v1/tunnels/logged/requests/live",
            broker.api_port
        ))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(live.stdout.take().context("curl's stdout")?).lines();
    let first = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .context("no first event")??;
    assert_eq!(first.as_deref(), Some("event: request"));
    let visit = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-A",
            "probe/1.0",
            "-H",
            "host: logged.localhost",
        ])
        .arg(format!(
            "http://127.0.0.1:{}/?q=secret&page=2",
            broker.http_port
        ))
        .output()?;
    assert_eq!(String::from_utf8_lossy(&visit.stdout), "200");
    let mut stream = String::new();
    let came = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            stream.push_str(&line);
            stream.push('\n');
            if line.contains("/?q=…&page=…") {
                return Ok(true);
            }
        }
        anyhow::Ok(false)
    })
    .await;
    assert!(
        matches!(came, Ok(Ok(true))),
        "the visit never came live: {stream}"
    );
    assert!(
        !stream.contains("secret"),
        "a query value reached the stream: {stream}"
    );
    drop(live);
    // Then the list.
    let r = api.call(
        "GET",
        "/api/v1/tunnels/logged/requests?limit=10",
        Cred::Token(&alice),
        None,
    )?;
    assert_eq!(r.status, 200, "{}", r.raw);
    let last = r
        .body
        .as_array()
        .and_then(|a| a.last())
        .context("an entry")?;
    assert_eq!(
        (
            last["method"].as_str(),
            last["path"].as_str(),
            last["status"].as_u64()
        ),
        (Some("GET"), Some("/?q=…&page=…"), Some(200)),
        "{last}"
    );
    assert_eq!(last["visitor"], "127.0.0.1");
    assert_eq!(last["user_agent"], "probe/1.0");
    assert!(last["bytes_out"].as_u64().unwrap_or(0) > 0, "{last}");
    // Bob gets 404 and nothing.
    let r = api.call(
        "GET",
        "/api/v1/tunnels/logged/requests",
        Cred::Token(&bob),
        None,
    )?;
    assert_eq!(r.status, 404, "{}", r.raw);
    assert!(!r.raw.contains("page="));
    // The tunnel list carries the live counters.
    let t = api.call("GET", "/api/v1/tunnels", Cred::Token(&alice), None)?;
    let row = &t.body[0];
    assert!(
        row["requests"].as_u64().unwrap_or(0) >= 2 && row["bytes_out"].as_u64().unwrap_or(0) > 0,
        "{row}"
    );
    assert!(row["since"].as_u64().unwrap_or(0) > 1_700_000_000, "{row}");
    Ok(())
}

/// A user's live streams are capped (each costs a list build a second): the 17th is a 429
/// with `Retry-After`, and a place comes back when a stream's client goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_are_capped_per_user() -> Result<()> {
    use tokio::io::AsyncBufReadExt;
    let broker = TestBroker::start().await?;
    broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "add", "bob"])?;
    let alice = token(&broker, "alice", "r", "read")?;
    let bob = token(&broker, "bob", "r", "read")?;
    let url = format!("http://127.0.0.1:{}/api/v1/live/tunnels", broker.api_port);
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut child = tokio::process::Command::new("curl")
            .args(["-sN", "-H", &format!("authorization: Bearer {alice}"), &url])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let out = child.stdout.take().context("curl's stdout")?;
        let mut lines = tokio::io::BufReader::new(out).lines();
        // Open for sure: its first event has arrived.
        let first = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .context("no first event")??;
        assert_eq!(first.as_deref(), Some("event: tunnels"));
        held.push((child, lines));
    }
    let api = Api::of(&broker);
    let stream = ["--max-time", "2"];
    let r = api.call_with(
        "GET",
        "/api/v1/live/tunnels",
        Cred::Token(&alice),
        None,
        &stream,
    )?;
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "{}", r.raw);
    assert!(r.headers.contains("retry-after: "), "{}", r.headers);
    // Another user is not affected.
    let r = api.call_with(
        "GET",
        "/api/v1/live/tunnels",
        Cred::Token(&bob),
        None,
        &stream,
    )?;
    assert_eq!(r.status, 200, "{}", r.raw);
    // One client goes: its place comes back.
    drop(held.pop());
    crate::harness::eventually("a place back", DEADLINE, || async {
        let r = api
            .call_with(
                "GET",
                "/api/v1/live/tunnels",
                Cred::Token(&alice),
                None,
                &stream,
            )
            .ok()?;
        (r.status == 200).then_some(())
    })
    .await?;
    Ok(())
}
