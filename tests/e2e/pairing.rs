//! Device pairing: an unknown key's session shows a code and a link; a signed-in user approves
//! it through the API and the waiting forwards come up in the same ssh process, or rejects it
//! and the process is told and ends.

use std::path::Path;

use anyhow::{Context, Result};

use crate::api::{Api, Cred, token};
use crate::client::get;
use crate::harness::{DEADLINE, Db, Ssh, TestBroker, answers, keygen};
use crate::origin::Origin;

/// The link and the code the session printed (`…/pair/ABCD-EFGH`).
async fn code_of(ssh: &Ssh) -> Result<(String, String)> {
    let line = ssh.any_line("/pair/").await?;
    let link = line
        .split_whitespace()
        .find(|w| w.contains("/pair/"))
        .context("link")?
        .to_owned();
    let code = link.rsplit('/').next().context("code")?.to_owned();
    assert_eq!(code.len(), 9, "{line}");
    assert_eq!(&code[4..5], "-", "{line}");
    assert!(
        link.starts_with("http://console.localhost:"),
        "the link is the console's: {line}"
    );
    Ok((link, code))
}

/// `SHA256:…` of `key`, as `ssh-keygen -lf` prints it.
fn fingerprint(key: &Path) -> Result<String> {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(format!("{}.pub", key.display()))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .nth(1)
        .context("fingerprint")?
        .to_owned())
}

async fn approved_forward_serves_in_the_same_session(db: Db) -> Result<()> {
    let broker = TestBroker::start_with(db, &[]).await?;
    let api = Api::of(&broker);
    broker.user_with_key("alice")?;
    let alice = token(&broker, "alice", "w", "write")?;
    let origin = Origin::start("the new laptop").await?;
    let laptop = keygen(broker.dir.path(), "laptop", "ed25519")?;
    let fp = fingerprint(&laptop)?;
    let ssh = Ssh::spawn(
        &broker,
        &laptop,
        &["-N", "-R", &format!("chat:80:{}", origin.target())],
    )?;
    let (_, code) = code_of(&ssh).await?;
    assert!(
        ssh.any_line(&fp).await.is_ok(),
        "the session names the key: {}",
        ssh.all_output()
    );

    // The approver sees the key and, once the client has asked, its forward.
    let path = format!("/api/v1/pairings/{code}");
    let look = crate::harness::eventually("the forward in the pairing", DEADLINE, || {
        let r = api.call("GET", &path, Cred::Token(&alice), None).ok();
        async move {
            r.filter(|r| r.status == 200 && r.body["forwards"] == serde_json::json!(["chat:80"]))
        }
    })
    .await?;
    assert_eq!(look.body["fingerprint"], fp.as_str(), "{}", look.raw);
    assert_eq!(look.body["algorithm"], "ssh-ed25519", "{}", look.raw);
    assert_eq!(look.body["peer"], "127.0.0.1", "{}", look.raw);
    assert_eq!(look.body["code"], code.as_str(), "{}", look.raw);
    assert!(
        look.body["expires_at"].as_i64().unwrap_or(0) > 0,
        "{}",
        look.raw
    );
    // Nothing serves it yet.
    let before = get(&broker.url("chat")).await?;
    assert_ne!(before.body, "hello from the new laptop");

    let ok = api.call(
        "POST",
        &format!("{path}/approve"),
        Cred::Token(&alice),
        None,
    )?;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    assert_eq!(ok.body["fingerprint"], fp.as_str(), "{}", ok.raw);
    assert_eq!(ok.body["user"], "alice", "{}", ok.raw);

    // The same ssh process, never restarted, now serves visitors.
    let resp = answers("the paired forward", DEADLINE, &broker.url("chat"), 200).await?;
    assert_eq!(resp.body, "hello from the new laptop");
    let listing = broker.cli_ok(&["key", "list", "--user", "alice"])?;
    assert!(listing.contains(&fp), "{listing}");
    let keys = api.call("GET", "/api/v1/keys", Cred::Token(&alice), None)?;
    assert!(keys.raw.contains(&fp), "{}", keys.raw);
    let events = broker.cli_ok(&["events", "--limit", "20"])?;
    assert!(
        events.contains("pairing.approve") && events.contains("paired to alice"),
        "{events}"
    );

    // Single use: the code is spent.
    let again = api.call(
        "POST",
        &format!("{path}/approve"),
        Cred::Token(&alice),
        None,
    )?;
    assert_eq!(again.status, 404, "{}", again.raw);
    assert_eq!(again.code(), "not_found");
    let look = api.call("GET", &path, Cred::Token(&alice), None)?;
    assert_eq!(look.status, 404, "{}", look.raw);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_forward_serves_in_the_same_session_sqlite() -> Result<()> {
    approved_forward_serves_in_the_same_session(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_forward_serves_in_the_same_session_postgres() -> Result<()> {
    approved_forward_serves_in_the_same_session(Db::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_pairing_ends_the_session_with_who_said_no() -> Result<()> {
    let broker = TestBroker::start().await?;
    let api = Api::of(&broker);
    broker.user_with_key("alice")?;
    let alice = token(&broker, "alice", "w", "write")?;
    let origin = Origin::start("A").await?;
    let laptop = keygen(broker.dir.path(), "laptop", "ed25519")?;
    // OpenSSH's own keepalives, every second, one unanswered allowed: the wait must not stall
    // the session loop.
    let mut ssh = Ssh::spawn(
        &broker,
        &laptop,
        &[
            "-o",
            "ServerAliveInterval=1",
            "-o",
            "ServerAliveCountMax=1",
            "-N",
            "-R",
            &format!("0:{}", origin.target()),
        ],
    )?;
    let (_, code) = code_of(&ssh).await?;
    // Not a synchronisation: the time a person takes to decide, several keepalives long.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(
        ssh.exit(std::time::Duration::from_millis(10))
            .await
            .is_err(),
        "the waiting client hung up: {}",
        ssh.all_output()
    );
    let path = format!("/api/v1/pairings/{code}");
    let no = api.call("POST", &format!("{path}/reject"), Cred::Token(&alice), None)?;
    assert_eq!(no.status, 204, "{}", no.raw);
    ssh.any_line("pairing rejected by alice").await?;
    let status = ssh.exit(DEADLINE).await?;
    assert!(!status.success(), "{}", ssh.all_output());
    // Spent either way, and the key stays unknown.
    let again = api.call(
        "POST",
        &format!("{path}/approve"),
        Cred::Token(&alice),
        None,
    )?;
    assert_eq!(again.status, 404, "{}", again.raw);
    let fp = fingerprint(&laptop)?;
    assert!(!broker.cli_ok(&["key", "list"])?.contains(&fp));
    let events = broker.cli_ok(&["events", "--limit", "20"])?;
    assert!(events.contains("pairing.reject"), "{events}");
    // A code nobody issued.
    let unknown = api.call(
        "GET",
        "/api/v1/pairings/ABCD-EFGH",
        Cred::Token(&alice),
        None,
    )?;
    assert_eq!(unknown.status, 404, "{}", unknown.raw);
    assert_eq!(unknown.code(), "not_found", "{}", unknown.raw);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_off_refuses_unknown_keys_as_before() -> Result<()> {
    let broker = TestBroker::start_with(Db::Sqlite, &["--pairing", "false"]).await?;
    let api = Api::of(&broker);
    broker.user_with_key("alice")?;
    let alice = token(&broker, "alice", "w", "write")?;
    let laptop = keygen(broker.dir.path(), "laptop", "ed25519")?;
    let mut ssh = Ssh::spawn(&broker, &laptop, &["-N", "-R", "0:localhost:9"])?;
    ssh.any_line("is not registered. Ask the operator to run: broker key add")
        .await?;
    let status = ssh.exit(DEADLINE).await?;
    assert!(!status.success(), "{}", ssh.all_output());
    assert!(!ssh.all_output().contains("/pair/"), "{}", ssh.all_output());
    let r = api.call(
        "GET",
        "/api/v1/pairings/ABCD-EFGH",
        Cred::Token(&alice),
        None,
    )?;
    assert_eq!(r.status, 404, "{}", r.raw);
    Ok(())
}

/// Pairing does not launder names: a key approved into alice's account asks for a name bob
/// reserved, and is refused it with the usual reason, while its random-name forward (in a
/// session with a terminal, `ssh -R 0:…`) comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_key_gets_no_name_reserved_by_someone_else() -> Result<()> {
    let broker = TestBroker::start().await?;
    let api = Api::of(&broker);
    broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "add", "bob"])?;
    broker.cli_ok(&["reserve", "bob", "bobs"])?;
    let alice = token(&broker, "alice", "w", "write")?;
    let origin = Origin::start("A").await?;
    let laptop = keygen(broker.dir.path(), "laptop", "ed25519")?;
    let ssh = Ssh::spawn(
        &broker,
        &laptop,
        &[
            "-R",
            &format!("bobs:80:{}", origin.target()),
            "-R",
            &format!("0:{}", origin.target()),
        ],
    )?;
    let (link, code) = code_of(&ssh).await?;
    // With a terminal the wait is said there too.
    ssh.line(&format!("waiting for approval of code {code} at {link}"))
        .await?;
    let path = format!("/api/v1/pairings/{code}");
    crate::harness::eventually("both forwards in the pairing", DEADLINE, || {
        let r = api.call("GET", &path, Cred::Token(&alice), None).ok();
        async move { r.filter(|r| r.body["forwards"].as_array().is_some_and(|f| f.len() == 2)) }
    })
    .await?;
    let ok = api.call(
        "POST",
        &format!("{path}/approve"),
        Cred::Token(&alice),
        None,
    )?;
    assert_eq!(ok.status, 200, "{}", ok.raw);
    ssh.line("pairing approved by alice").await?;
    ssh.line("refused -R bobs:80: name \"bobs\" is reserved by another user")
        .await?;
    let random = ssh.url(0).await?;
    let resp = answers("the random-name forward", DEADLINE, &random, 200).await?;
    assert_eq!(resp.body, "hello from A");
    let bobs = get(&broker.url("bobs")).await?;
    assert_ne!(
        bobs.body, "hello from A",
        "bob's name serves alice's origin"
    );
    Ok(())
}

/// The operator registered the key while its pairing waited: approving says so (409) and the
/// session is told to reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_registered_meanwhile_cannot_be_paired() -> Result<()> {
    let broker = TestBroker::start().await?;
    let api = Api::of(&broker);
    broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "add", "bob"])?;
    let alice = token(&broker, "alice", "w", "write")?;
    let laptop = keygen(broker.dir.path(), "laptop", "ed25519")?;
    let mut ssh = Ssh::spawn(&broker, &laptop, &["-N", "-R", "0:localhost:9"])?;
    let (_, code) = code_of(&ssh).await?;
    broker.cli_ok(&["key", "add", "bob", &format!("{}.pub", laptop.display())])?;
    let path = format!("/api/v1/pairings/{code}/approve");
    let r = api.call("POST", &path, Cred::Token(&alice), None)?;
    assert_eq!(r.status, 409, "{}", r.raw);
    assert_eq!(r.code(), "conflict", "{}", r.raw);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already registered")),
        "{}",
        r.raw
    );
    assert!(!r.raw.contains("bob"), "the holder is not named: {}", r.raw);
    ssh.any_line("registered to an account meanwhile; reconnect")
        .await?;
    assert!(!ssh.exit(DEADLINE).await?.success());
    let again = api.call("POST", &path, Cred::Token(&alice), None)?;
    assert_eq!(again.status, 404, "{}", again.raw);
    Ok(())
}
