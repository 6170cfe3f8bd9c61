//! A tenant protects and shares their own name with their key alone (`ssh HOST rules …`,
//! `ssh HOST share …`) and with an API token, against a live `ssh -R` tunnel and curl as the
//! visitor; another tenant can neither see nor change the rules.

use anyhow::{Context, Result};
use serde_json::json;

use crate::api::{Api, Cred, token};
use crate::commands::{json, ok, run};
use crate::harness::Db;
use crate::rules::{curl, htpasswd, link_path, site, until};

const PW: &str = "bob's long password";

async fn over_ssh(db: Db) -> Result<()> {
    let s = site(db, &[]).await?;
    let (b, key) = (&s.broker, s.key.as_path());
    let shown = ok(b, key, &["rules", "chat"]).await?;
    assert!(shown.contains("open: no password, no IP rules"), "{shown}");

    // A password comes on stdin, never on the command line.
    let r = run(b, key, &["rules", "chat", "auth", "add", "bob"], b"").await?;
    assert_eq!(r.code, 2, "{}", r.out);
    assert!(r.err.contains("give the password on stdin"), "{}", r.err);
    let r = run(
        b,
        key,
        &["rules", "chat", "auth", "add", "bob"],
        format!("{PW}\n").as_bytes(),
    )
    .await?;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "chat: basic-auth user bob set\n"),
        "{}",
        r.err
    );
    until("a password asked", &s.url, &[], 401).await?;
    let bob = format!("bob:{PW}");
    let seen = curl(&["-u", &bob], &s.url).await?;
    assert_eq!((seen.status, seen.body.as_str()), (200, "hello from A"));
    let v = json(b, key, &["rules", "chat", "--json"]).await?;
    assert_eq!(v["basic_users"][0]["username"], "bob", "{v}");
    assert_eq!(v["basic_users"][0]["scheme"], "argon2", "{v}");
    assert!(v.to_string().find("$argon2").is_none(), "a hash shown: {v}");

    // An htpasswd file from the tenant's machine, on stdin.
    let file = b.dir.path().join("htpasswd");
    let f = file.to_str().context("path")?;
    htpasswd(&["-cbB", f, "dave", "dave's secret"])?;
    let r = run(
        b,
        key,
        &["rules", "chat", "auth", "import", "-"],
        std::fs::read(&file)?.as_slice(),
    )
    .await?;
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "chat: imported 1 users: dave\n"),
        "{}",
        r.err
    );
    until("dave let in", &s.url, &["-u", "dave:dave's secret"], 200).await?;
    let r = run(b, key, &["rules", "chat", "auth", "import", f], b"").await?;
    assert_eq!(r.code, 2);
    assert!(r.err.contains("the file is on your machine"), "{}", r.err);

    // A share link: its last line is the link; it works once, in a fresh cookie jar.
    let out = ok(b, key, &["share", "chat", "--expires", "2h", "--uses", "1"]).await?;
    let link = out.lines().last().context("link line")?;
    assert!(link.contains("/.well-known/warren-share/"), "{out}");
    assert!(
        out.lines().rev().skip(1).all(|l| l.chars().count() <= 80),
        "{out}"
    );
    assert!(out.contains(" live     1 left     expires in 2h"), "{out}");
    let path = link_path(link)?;
    let dir = tempfile::tempdir()?;
    let jar = |n: &str| dir.path().join(n).display().to_string();
    let (j1, j2) = (jar("one"), jar("two"));
    let first = curl(&["-L", "-c", &j1, "-b", &j1], &format!("{}{path}", s.url)).await?;
    assert_eq!((first.status, first.body.as_str()), (200, "hello from A"));
    let second = curl(&["-L", "-c", &j2, "-b", &j2], &format!("{}{path}", s.url)).await?;
    assert_eq!(second.status, 403, "{}", second.body);
    let links = json(b, key, &["share", "chat", "list", "--json"]).await?;
    assert_eq!(links[0]["state"], "used up", "{links}");
    let id = links[0]["id"].to_string();
    let out = ok(b, key, &["share", "chat", "revoke", &id]).await?;
    assert_eq!(out, format!("chat: share link {id} revoked\n"));
    until("the link's cookie refused", &s.url, &["-b", &j1], 401).await?;
    let r = run(b, key, &["share", "chat"], b"").await?;
    assert_eq!(r.code, 2);
    assert!(
        r.err.contains("usage: share NAME --expires 2h"),
        "{}",
        r.err
    );

    // IP lists: the visitor here is 127.0.0.1.
    let out = ok(b, key, &["rules", "chat", "deny", "127.0.0.1"]).await?;
    assert_eq!(out, "chat: deny 127.0.0.1/32\n");
    let denied = until("127.0.0.1 denied", &s.url, &["-u", &bob], 403).await?;
    assert!(
        denied.body.contains("IP rules keep them out"),
        "{}",
        denied.body
    );
    let r = run(b, key, &["rules", "chat", "allow", "10.1.2.3/8"], b"").await?;
    assert_eq!(r.code, 1);
    assert!(r.err.contains("did you mean 10.0.0.0/8"), "{}", r.err);
    ok(b, key, &["rules", "chat", "rm", "127.0.0.1"]).await?;
    until("127.0.0.1 let in again", &s.url, &["-u", &bob], 200).await?;

    // Another tenant: the same answer as for a name that does not exist, and nothing changes.
    let mallory = b.user_with_key("mallory")?;
    for cmd in [
        &["rules", "chat"][..],
        &["rules", "chat", "allow", "0.0.0.0/0"],
        &["rules", "chat", "clear"],
        &["rules", "chat", "auth", "rm", "bob"],
        &["share", "chat", "--expires", "1h"],
        &["share", "chat", "list"],
    ] {
        let r = run(b, &mallory, cmd, b"").await?;
        assert_eq!(r.code, 1, "{cmd:?}: {}", r.out);
        assert_eq!(
            r.err.trim(),
            "error: no reservation named \"chat\"",
            "{cmd:?}"
        );
    }
    assert_eq!(curl(&[], &s.url).await?.status, 401);

    let out = ok(b, key, &["rules", "chat", "clear"]).await?;
    assert_eq!(out, "chat: 2 rules removed; anyone may visit\n");
    until("open again", &s.url, &[], 200).await?;
    let r = run(b, key, &["rules", "chat", "frobnicate"], b"").await?;
    assert_eq!(r.code, 2);
    assert!(r.err.contains("usage: rules NAME [ACTION]"), "{}", r.err);
    drop(s.ssh);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sets_rules_and_shares_over_ssh_sqlite() -> Result<()> {
    over_ssh(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sets_rules_and_shares_over_ssh_postgres() -> Result<()> {
    over_ssh(Db::Postgres).await
}

async fn over_the_api(db: Db) -> Result<()> {
    let s = site(db, &[]).await?;
    let b = &s.broker;
    let api = Api::of(b);
    let alice = token(b, "alice", "w", "write")?;
    let me = Cred::Token(&alice);
    let rules = "/api/v1/reservations/chat/rules";

    let r = api.call(
        "PUT",
        &format!("{rules}/auth/erin"),
        me,
        Some(&json!({"password": PW})),
    )?;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["basic_users"][0]["username"], "erin", "{}", r.raw);
    until("a password asked", &s.url, &[], 401).await?;
    until("erin let in", &s.url, &["-u", &format!("erin:{PW}")], 200).await?;
    let r = api.call(
        "PUT",
        &format!("{rules}/auth/a:b"),
        me,
        Some(&json!({"password": PW})),
    )?;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("username")),
        "{}",
        r.raw
    );

    let r = api.call(
        "POST",
        &format!("{rules}/ip"),
        me,
        Some(&json!({"action": "deny", "cidr": "10.1.2.3/8"})),
    )?;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("cidr"))
    );
    assert!(r.raw.contains("did you mean 10.0.0.0/8"), "{}", r.raw);
    let r = api.call(
        "POST",
        &format!("{rules}/ip"),
        me,
        Some(&json!({"action": "allow", "cidr": "2001:db8::/32"})),
    )?;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["allow"], json!(["2001:db8::/32"]), "{}", r.raw);
    until(
        "127.0.0.1 not on the allow list",
        &s.url,
        &["-u", &format!("erin:{PW}")],
        403,
    )
    .await?;
    let r = api.call(
        "DELETE",
        &format!("{rules}/ip?cidr=2001:db8::/32"),
        me,
        None,
    )?;
    assert_eq!((r.status, &r.body["allow"]), (200, &json!([])), "{}", r.raw);
    until("the allow list gone", &s.url, &[], 401).await?;

    let shares = "/api/v1/reservations/chat/shares";
    let r = api.call(
        "POST",
        shares,
        me,
        Some(&json!({"expires": "2h", "uses": 2})),
    )?;
    assert_eq!(r.status, 201, "{}", r.raw);
    let url = r.body["url"].as_str().context("url")?;
    assert!(url.starts_with("http://chat.localhost:"), "{url}");
    assert_eq!(r.body["share"]["uses_left"], 2);
    let id = r.body["share"]["id"].clone();
    let jar = b.dir.path().join("jar").display().to_string();
    let opened = curl(
        &["-L", "-c", &jar, "-b", &jar],
        &format!("{}{}", s.url, link_path(url)?),
    )
    .await?;
    assert_eq!((opened.status, opened.body.as_str()), (200, "hello from A"));
    let r = api.call("POST", shares, me, Some(&json!({"expires": "1y"})))?;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("expires"))
    );
    let r = api.call("GET", shares, me, None)?;
    assert_eq!(r.body[0]["uses_left"], 1, "{}", r.raw);
    let r = api.call("DELETE", &format!("{shares}/{id}"), me, None)?;
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("revoked")));

    let r = api.call(
        "POST",
        &format!("{rules}/htpasswd"),
        me,
        Some(&json!({"htpasswd": "frank:$apr1$abc$defghijklmnopqrstuvwx1"})),
    )?;
    assert_eq!(r.status, 422, "{}", r.raw);
    assert!(r.raw.contains("htpasswd -B"), "{}", r.raw);

    // Another tenant's token: 404, as for a name that does not exist.
    let mallory = {
        b.cli_ok(&["user", "add", "mallory"])?;
        token(b, "mallory", "w", "write")?
    };
    let r = api.call("DELETE", rules, Cred::Token(&mallory), None)?;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.raw);
    assert_eq!(curl(&[], &s.url).await?.status, 401);

    let r = api.call("DELETE", &format!("{rules}/auth/erin"), me, None)?;
    assert_eq!(
        (r.status, &r.body["basic_users"]),
        (200, &json!([])),
        "{}",
        r.raw
    );
    until("open again", &s.url, &[], 200).await?;

    // Basic auth on a TLS passthrough name: 422, saying why.
    b.cli_ok(&["reserve", "alice", "db", "--kind", "tls"])?;
    let r = api.call(
        "PUT",
        "/api/v1/reservations/db/rules/auth/erin",
        me,
        Some(&json!({"password": PW})),
    )?;
    assert_eq!(r.status, 422, "{}", r.raw);
    assert!(r.raw.contains("apply to HTTP routes only"), "{}", r.raw);
    drop(s.ssh);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sets_rules_and_shares_over_the_api_sqlite() -> Result<()> {
    over_the_api(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sets_rules_and_shares_over_the_api_postgres() -> Result<()> {
    over_the_api(Db::Postgres).await
}
