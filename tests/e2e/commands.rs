//! `ssh tunnel@host COMMAND`: a tenant manages their part with their key alone, through the
//! real OpenSSH client, in text and in JSON.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::api::{Api, Cred};
use crate::harness::{Db, Ssh, TestBroker, keygen};

/// What one command printed and its exit status.
pub(crate) struct Ran {
    pub(crate) out: String,
    pub(crate) err: String,
    pub(crate) code: i32,
}

pub(crate) async fn run(
    broker: &TestBroker,
    key: &Path,
    cmd: &[&str],
    stdin: &[u8],
) -> Result<Ran> {
    let mut c = Ssh::command(broker.ssh_port, key, &[]);
    c.args(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn()?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin).await?;
    drop(input);
    let out = tokio::time::timeout(crate::harness::DEADLINE, child.wait_with_output()).await??;
    let err = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("Warning: Permanently added"))
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Ran {
        out: String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"),
        err,
        code: out.status.code().unwrap_or(-1),
    })
}

pub(crate) async fn ok(broker: &TestBroker, key: &Path, cmd: &[&str]) -> Result<String> {
    let r = run(broker, key, cmd, b"").await?;
    assert_eq!(r.code, 0, "{cmd:?}: stdout {:?} stderr {:?}", r.out, r.err);
    Ok(r.out)
}

pub(crate) async fn json(broker: &TestBroker, key: &Path, cmd: &[&str]) -> Result<Value> {
    let out = ok(broker, key, cmd).await?;
    serde_json::from_str(&out).with_context(|| format!("{cmd:?} printed {out:?}"))
}

async fn tenant_commands(db: Db) -> Result<()> {
    let broker = TestBroker::start_with(db, &[]).await?;
    let key = broker.user_with_key("alice")?;
    let bob = broker.user_with_key("bob")?;
    let port = broker.http_port;

    let help = ok(&broker, &key, &["help"]).await?;
    assert!(
        help.contains("reserve NAME") && help.lines().all(|l| l.chars().count() <= 80),
        "{help}"
    );
    assert!(
        ok(&broker, &key, &["ls"])
            .await?
            .contains("No reserved names")
    );

    let out = ok(&broker, &key, &["reserve", "chat"]).await?;
    assert_eq!(
        out.trim(),
        format!("reserved chat (http): http://chat.localhost:{port}")
    );
    let r = json(&broker, &key, &["reserve", "db", "--kind", "tls", "--json"]).await?;
    assert_eq!(
        (r["name"].as_str(), r["kind"].as_str()),
        (Some("db"), Some("tls")),
        "{r}"
    );
    // Refusals: one line on stderr, a non-zero status, and nothing changed.
    let r = run(&broker, &bob, &["reserve", "chat"], b"").await?;
    assert_eq!(r.code, 1, "{:?}", r.out);
    assert_eq!(r.err.trim(), "error: name \"chat\" is taken");
    let r = run(&broker, &key, &["reserve", "www"], b"").await?;
    assert_eq!(r.code, 1);
    assert!(r.err.contains("reserved by the operator"), "{}", r.err);
    let r = run(&broker, &key, &["reserve"], b"").await?;
    assert_eq!(
        (r.code, r.err.trim()),
        (
            2,
            "error: usage: reserve NAME [--kind http|tls|tcp] [--json]"
        )
    );
    let r = run(&broker, &key, &["frobnicate"], b"").await?;
    assert_eq!(r.code, 2);
    assert!(
        r.err.contains("unknown command \"frobnicate\"") && r.out.contains("Commands"),
        "{} {}",
        r.out,
        r.err
    );
    let r = run(&broker, &key, &["release", "chat'"], b"").await?;
    assert_eq!(r.code, 2, "{}", r.err);
    assert!(r.err.contains("cannot read the command"), "{}", r.err);

    let ls = json(&broker, &key, &["ls", "--json"]).await?;
    let names: Vec<&str> = ls["reservations"]
        .as_array()
        .context("reservations")?
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["chat", "db"]);
    let text = ok(&broker, &key, &["ls"]).await?;
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(
        text.contains(&format!("http://chat.localhost:{port}")),
        "{text}"
    );
    // Bob sees none of it.
    let theirs = json(&broker, &bob, &["ls", "--json"]).await?;
    assert_eq!(
        theirs["reservations"].as_array().map(Vec::len),
        Some(0),
        "{theirs}"
    );

    // Keys: add one from stdin, list, remove.
    let laptop = keygen(broker.dir.path(), "laptop", "ed25519")?;
    let line = std::fs::read(format!("{}.pub", laptop.display()))?;
    let added = run(&broker, &key, &["keys", "add"], &line).await?;
    assert_eq!(added.code, 0, "{}", added.err);
    assert!(
        added.out.starts_with("added ssh-ed25519 SHA256:"),
        "{}",
        added.out
    );
    let keys = json(&broker, &key, &["keys", "--json"]).await?;
    assert_eq!(keys.as_array().map(Vec::len), Some(2), "{keys}");
    // The new key works at once, as alice.
    assert!(ok(&broker, &laptop, &["ls"]).await?.contains("chat"));
    let r = run(
        &broker,
        &key,
        &["keys", "add"],
        b"-----BEGIN OPENSSH PRIVATE KEY-----\n",
    )
    .await?;
    assert_eq!(r.code, 2);
    assert!(r.err.contains("private key"), "{}", r.err);
    let r = added;
    let fp = r
        .out
        .split_whitespace()
        .nth(2)
        .context("fingerprint")?
        .to_owned();
    assert!(keys.to_string().contains(&fp), "{keys}");
    let r = run(&broker, &bob, &["keys", "rm", &fp], b"").await?;
    assert_eq!(
        (r.code, r.err.trim()),
        (1, format!("error: no key with fingerprint {fp}").as_str())
    );
    assert_eq!(
        ok(&broker, &key, &["keys", "rm", &fp]).await?.trim(),
        format!("removed {fp}")
    );

    // Tokens: created over SSH, working against the API, revoked over SSH.
    let out = ok(
        &broker,
        &key,
        &["tokens", "create", "ci", "--scope", "read"],
    )
    .await?;
    let token = out.lines().last().unwrap_or_default().trim().to_owned();
    assert!(token.starts_with("wrn_"), "{out}");
    let api = Api::of(&broker);
    let me = api.call("GET", "/api/v1/me", Cred::Token(&token), None)?;
    assert_eq!(me.body["name"], "alice", "{}", me.raw);
    let list = json(&broker, &key, &["tokens", "--json"]).await?;
    assert_eq!(list[0]["scope"], "read");
    assert!(
        !list.to_string().contains(&token),
        "a token list showed the secret"
    );
    let id = list[0]["id"].to_string();
    ok(&broker, &key, &["tokens", "revoke", &id]).await?;
    assert_eq!(
        api.call("GET", "/api/v1/me", Cred::Token(&token), None)?
            .status,
        401
    );

    // A QR code of the URL, for a phone.
    let qr = ok(&broker, &key, &["qr", "chat"]).await?;
    assert!(
        qr.contains('█') || qr.contains('▀') || qr.contains('▄'),
        "{qr}"
    );
    assert!(
        qr.trim_end()
            .ends_with(&format!("http://chat.localhost:{port}")),
        "{qr}"
    );
    assert_eq!(
        json(&broker, &key, &["qr", "chat", "--json"]).await?["url"],
        format!("http://chat.localhost:{port}")
    );

    // Recent requests of a live tunnel, over SSH.
    let origin = crate::origin::Origin::start("A").await?;
    let tunnel = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("chat:80:{}", origin.target())],
    )?;
    let url = tunnel.url(0).await?;
    crate::harness::answers(
        "chat",
        crate::harness::DEADLINE,
        &format!("{url}/?token=hunter2"),
        200,
    )
    .await?;
    let reqs = ok(&broker, &key, &["requests", "chat"]).await?;
    assert!(
        reqs.contains("GET") && reqs.contains("/?token=…") && !reqs.contains("hunter2"),
        "{reqs}"
    );
    let r = run(&broker, &bob, &["requests", "chat"], b"").await?;
    assert_eq!(
        (r.code, r.err.trim()),
        (1, "error: no request log for a tunnel named \"chat\"")
    );
    drop(tunnel);
    assert_eq!(
        ok(&broker, &key, &["release", "chat"]).await?.trim(),
        "released chat"
    );
    let r = run(&broker, &key, &["release", "chat"], b"").await?;
    assert_eq!(
        (r.code, r.err.trim()),
        (1, "error: no reservation named \"chat\"")
    );
    // Every change is in the audit log under the ssh actor.
    let events = broker.cli_ok(&["events", "--limit", "100"])?;
    for needle in [
        "ssh:alice",
        "name.reserve",
        "key.add",
        "key.remove",
        "token.create",
        "token.revoke",
        "name.release",
    ] {
        assert!(events.contains(needle), "{needle} missing from:\n{events}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_manage_names_keys_and_tokens_over_ssh() -> Result<()> {
    tenant_commands(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_manage_names_keys_and_tokens_over_ssh_postgres() -> Result<()> {
    tenant_commands(Db::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_still_shows_the_tunnel_log() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let ssh = Ssh::spawn(&broker, &key, &[])?;
    ssh.line("no tunnels requested").await?;
    ssh.line("ssh … help").await?;
    Ok(())
}
