//! The admin CLI against the same database, live changes, and restarts on both backends.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::client::get;
use crate::harness::{DEADLINE, Db, Ssh, TestBroker, answers, eventually, keygen};
use crate::origin::Origin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_rejects_bad_input_with_clear_errors_and_changes_nothing() -> Result<()> {
    let broker = TestBroker::start().await?;
    broker.cli_ok(&["user", "add", "alice"])?;
    let junk = broker.dir.path().join("junk.pub");
    std::fs::write(&junk, "this is not a key\n")?;
    let private = keygen(broker.dir.path(), "x", "ed25519")?;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["user", "add", "alice"], "already exists"),
        (vec!["user", "add", "Bad Name"], "user name"),
        (vec!["user", "disable", "nobody"], "no user named"),
        (
            vec!["key", "add", "alice", junk.to_str().unwrap_or("")],
            "not an OpenSSH public key",
        ),
        (
            vec!["key", "add", "alice", private.to_str().unwrap_or("")],
            "private key",
        ),
        (
            vec!["key", "add", "alice", "/nonexistent.pub"],
            "cannot read",
        ),
        (vec!["key", "rm", "SHA256:nope"], "no key with fingerprint"),
        (vec!["reserve", "alice", "www"], "reserved by the operator"),
        (vec!["reserve", "alice", "UPPER"], "lowercase"),
        (vec!["reserve", "nobody", "chat"], "no user named"),
        (vec!["release", "chat"], "not reserved"),
    ];
    for (args, want) in cases {
        let out = broker.cli(&args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let pubkey = format!(
        "{}.pub",
        keygen(broker.dir.path(), "bob", "ed25519")?.display()
    );
    broker.cli_ok(&["user", "add", "bob"])?;
    broker.cli_ok(&["key", "add", "bob", &pubkey])?;
    let out = broker.cli(&["key", "add", "alice", &pubkey])?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("already registered to user \"bob\""));
    broker.cli_ok(&["reserve", "bob", "chat"])?;
    let out = broker.cli(&["reserve", "alice", "chat"])?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("already reserved by bob"));
    let users = broker.cli_ok(&["user", "list"])?;
    assert_eq!(users.lines().count(), 3, "{users}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("broker.toml");
    std::fs::write(&cfg, "ssh_adr = \"127.0.0.1:1\"\n")?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--config", cfg.to_str().unwrap_or(""), "user", "list"])
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ssh_adr"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .env("BROKER_HTTP_ADDR", "not-an-address")
        .args(["user", "list"])
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--http-addr"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_refused_with_one_line_that_says_how_to_register() -> Result<()> {
    // With pairing on (the default) the key would get a pairing code instead (e2e pairing.rs).
    let broker = TestBroker::start_with(Db::Sqlite, &["--pairing", "false"]).await?;
    let stranger = keygen(broker.dir.path(), "stranger", "ed25519")?;
    let mut ssh = Ssh::spawn(&broker, &stranger, &["-R", "0:localhost:9"])?;
    let status = ssh.exit(DEADLINE).await?;
    assert!(!status.success());
    let errs = ssh.err.lock().map(|e| e.clone()).unwrap_or_default();
    let told: Vec<_> = errs
        .iter()
        .filter(|l| l.contains("is not registered"))
        .collect();
    assert_eq!(told.len(), 1, "{errs:?}");
    assert!(told[0].contains("broker key add"), "{errs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_and_ecdsa_keys_work() -> Result<()> {
    let broker = TestBroker::start().await?;
    broker.cli_ok(&["user", "add", "carol"])?;
    let origin = Origin::start("C").await?;
    for kind in ["rsa", "ecdsa"] {
        let key = keygen(broker.dir.path(), "carol", kind)?;
        broker.cli_ok(&["key", "add", "carol", &format!("{}.pub", key.display())])?;
        let ssh = Ssh::spawn(
            &broker,
            &key,
            &["-R", &format!("{kind}-app:80:{}", origin.target())],
        )?;
        ssh.url(0).await?;
        assert_eq!(get(&broker.url(&format!("{kind}-app"))).await?.status, 200);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_drops_their_tunnels_live() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let mut ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    assert_eq!(get(&url).await?.status, 200);
    broker.cli_ok(&["user", "disable", "alice"])?;
    ssh.exit(DEADLINE).await?;
    assert_eq!(get(&url).await?.status, 404);
    // And they cannot come back.
    let mut again = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    assert!(!again.exit(DEADLINE).await?.success());
    // The exit can be seen before the output readers have the line: wait for it.
    again.any_line("is disabled").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_key_drops_its_sessions() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let mut ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    let listing = broker.cli_ok(&["key", "list", "--user", "alice"])?;
    let fp = listing
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_default()
        .to_owned();
    assert!(fp.starts_with("SHA256:"), "{listing}");
    broker.cli_ok(&["key", "rm", &fp])?;
    let status = ssh.exit(DEADLINE).await?;
    assert!(!status.success());
    // OpenSSH prints the server's disconnect reason.
    ssh.err_line("your key was removed").await?;
    // Its tunnel went with it (parked for the owner's reconnect: 503, not served).
    answers("tunnel gone", DEADLINE, &url, 503).await?;
    Ok(())
}

async fn survives_restart(db: Db) -> Result<()> {
    let mut broker = TestBroker::start_with(db, &[]).await?;
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "add", "bob", "--admin"])?;
    broker.cli_ok(&["reserve", "alice", "chat"])?;
    let origin = Origin::start("A").await?;
    {
        let ssh = Ssh::spawn(
            &broker,
            &key,
            &["-R", &format!("auto:80:{}", origin.target())],
        )?;
        ssh.url(0).await?;
    }
    broker.restart()?;
    let users = broker.cli_ok(&["user", "list"])?;
    assert!(users.contains("alice") && users.contains("bob"), "{users}");
    assert!(broker.cli_ok(&["key", "list"])?.contains("alice"));
    let names = broker.cli_ok(&["names"])?;
    assert!(names.contains("chat") && names.contains("auto"), "{names}");
    // Reserved names answer "offline" right after the restart, and the same key works.
    assert_eq!(get(&broker.url("chat")).await?.status, 502);
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("chat:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    assert_eq!(get(&broker.url("chat")).await?.body, "hello from A");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_on_sqlite() -> Result<()> {
    survives_restart(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_on_postgres() -> Result<()> {
    survives_restart(Db::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_serves_tunnels_and_sees_cli_changes() -> Result<()> {
    let broker = TestBroker::start_with(Db::Postgres, &[]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let mut ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("pg:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    assert_eq!(get(&broker.url("pg")).await?.status, 200);
    broker.cli_ok(&["reserve", "alice", "later"])?;
    answers(
        "reservation seen by the running broker",
        DEADLINE,
        &broker.url("later"),
        502,
    )
    .await?;
    broker.cli_ok(&["user", "disable", "alice"])?;
    ssh.exit(Duration::from_secs(20)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_key_from_stdin() -> Result<()> {
    let broker = TestBroker::start().await?;
    assert!(broker.cli_ok(&["migrate"])?.contains("migrations applied"));
    broker.cli_ok(&["user", "add", "dana"])?;
    let key = keygen(broker.dir.path(), "dana", "ed25519")?;
    let pubkey = std::fs::read(format!("{}.pub", key.display()))?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .env("BROKER_DATA_DIR", broker.dir.path())
        .env("BROKER_DATABASE_URL", &broker.db_url)
        .args(["key", "add", "dana", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
        stdin.write_all(&pubkey)?;
    }
    let out = child.wait_with_output()?;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("added ssh-ed25519 SHA256:"));
    let origin = Origin::start("D").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("dana:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_and_unbinds_are_audited() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("erin")?;
    let origin = Origin::start("E").await?;
    let mut ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    let name = crate::harness::label_of(&url)?;
    ssh.kill().await;
    let store = warren_store::open(&broker.db_url).await?;
    eventually("unbind audited", DEADLINE, || {
        let store = store.clone();
        let name = name.clone();
        async move {
            let events = store.events_since(0, 1000).await.ok()?;
            let bound = events
                .iter()
                .any(|e| e.action == "tunnel.bind" && e.subject == name && e.actor == "ssh:erin");
            let unbound = events
                .iter()
                .any(|e| e.action == "tunnel.unbind" && e.subject == name);
            (bound && unbound).then_some(())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_never_create_a_database() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .env_remove("BROKER_CONFIG")
            .env_remove("BROKER_DATABASE_URL")
            .env("BROKER_DATA_DIR", dir.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
    };
    // Run in the wrong place (no --config): a clear refusal, and no empty database left behind.
    let out = cli(&["user", "add", "alice"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no database at"), "{err}");
    assert!(err.contains("broker migrate"), "{err}");
    assert!(!dir.path().join("warren.db").exists());
    // `broker migrate` is the deliberate way to create one; then admin commands work.
    assert!(cli(&["migrate"])?.status.success());
    let out = cli(&["user", "add", "alice"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_raises_its_open_file_limit_to_the_hard_limit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A soft limit as low as systemd's default, under whatever hard limit this box has.
    let mut child = std::process::Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_broker"))
        .env_remove("BROKER_CONFIG")
        .env("BROKER_DATA_DIR", dir.path())
        .args([
            "--ssh-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "127.0.0.1:0",
            "--log",
            "warn",
            "serve",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let ready = lines.by_ref().any(|l| l.is_ok_and(|l| l.contains("ready")));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()))?;
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "the broker did not start");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-file line")?;
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums.len(), 2, "{line}");
    assert_ne!(nums[0], "256", "soft limit not raised: {line}");
    assert_eq!(nums[0], nums[1], "soft limit not at the hard limit: {line}");
    Ok(())
}

/// Every operator list takes `--json` and prints the API's objects, so a script reads the same
/// fields from `broker … --json` as from `/api/v1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operator_list_prints_the_apis_json() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["reserve", "alice", "chat"])?;
    let json = |args: &[&str]| -> Result<serde_json::Value> {
        let out = broker.cli_ok(args)?;
        serde_json::from_str(&out).with_context(|| format!("{args:?} is not JSON: {out}"))
    };
    let users = json(&["user", "list", "--json"])?;
    let alice = users
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "alice"))
        .with_context(|| format!("{users}"))?;
    assert!(
        alice["id"].as_i64().is_some() && alice["disabled"] == false,
        "{alice}"
    );
    assert!(alice["quotas"].is_object(), "{alice}");
    let fingerprint = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()?;
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let keys = json(&["key", "list", "--json"])?;
    assert_eq!(keys[0]["fingerprint"], fingerprint.as_str(), "{keys}");
    assert_eq!(keys[0]["user"], "alice", "{keys}");
    let names = json(&["names", "--json"])?;
    assert_eq!(
        (names[0]["name"].as_str(), names[0]["user"].as_str()),
        (Some("chat"), Some("alice")),
        "{names}"
    );
    assert_eq!(json(&["certs", "list", "--json"])?, serde_json::json!([]));
    let events = json(&["events", "--json", "--limit", "2"])?;
    let items = events["items"].as_array().context("items")?;
    assert_eq!(items.len(), 2, "{events}");
    assert_eq!(items[0]["action"], "name.reserve", "newest first: {events}");
    Ok(())
}
