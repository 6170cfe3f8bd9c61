//! How the broker lives under a service manager: logs a journal or shipper can read, secrets
//! from files, systemd's readiness protocol, and a SIGTERM that lets requests in flight finish.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::net::{TcpStream, UnixDatagram};

use crate::client::get;
use crate::harness::{DEADLINE, Db, Options, Ssh, TestBroker, eventually};
use crate::origin::Origin;

fn capturing() -> Options {
    Options {
        capture_stderr: true,
        ..Options::default()
    }
}

/// Serves one tunnel and one request through it, then stops the broker with SIGTERM: enough
/// for a few log lines of each kind (start, SSH session, shutdown).
async fn exercise(broker: &mut TestBroker) -> Result<()> {
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("logs").await?;
    let ssh = Ssh::spawn(broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    assert_eq!(get(&url).await?.status, 200);
    broker.signal("TERM")?;
    let status = broker.wait_exit(DEADLINE).await?;
    assert!(status.success(), "{status:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() -> Result<()> {
    let mut broker =
        TestBroker::start_opts(Db::Sqlite, &["--log-format", "json"], capturing()).await?;
    exercise(&mut broker).await?;
    let lines = broker.stderr_lines();
    assert!(lines.len() >= 3, "too few log lines: {lines:?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line:?}"))?;
        assert!(v["level"].is_string(), "no level: {line}");
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
        assert!(v["timestamp"].is_string(), "no timestamp: {line}");
    }
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split("\"message\":\"").nth(1))
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("listening")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("shutting down")),
        "{messages:?}"
    );
    Ok(())
}

/// A line about a visitor of a tunnel says whose tunnel, which, and who visited, as fields a
/// log shipper can index: a request that fails at the tunnel is logged inside the visitor's
/// span, which carries `tenant`, `tunnel` and `visitor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_about_a_visitor_carry_tenant_tunnel_and_visitor() -> Result<()> {
    let broker = TestBroker::start_opts(
        Db::Sqlite,
        &["--log-format", "json"],
        Options {
            log: Some("warn,warren_edge=debug".into()),
            ..capturing()
        },
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    let alice_id = broker
        .cli_ok(&["user", "list", "--json"])
        .ok()
        .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        .and_then(|v| v.as_array()?.iter().find(|u| u["name"] == "alice")?["id"].as_i64())
        .context("alice's id")?;
    // An origin that is gone: the visitor gets a 502 and the broker logs why.
    let port = crate::public::pebble::free_port().port();
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("chat:80:127.0.0.1:{port}")])?;
    ssh.url(0).await?;
    assert_eq!(get(&broker.url("chat")).await?.status, 502);
    let line = eventually("the failed request in the log", DEADLINE, || {
        let lines = broker.stderr_lines();
        async move {
            lines
                .into_iter()
                .find(|l| l.contains("\"tunnel request failed\""))
        }
    })
    .await?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    let span = &v["span"];
    assert_eq!(
        (
            span["tenant"].as_i64(),
            span["tunnel"].as_str(),
            span["visitor"].as_str()
        ),
        (Some(alice_id), Some("chat"), Some("127.0.0.1")),
        "{line}"
    );
    assert_eq!(v["fields"]["status"], 502, "{line}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_pipe_have_no_colour_codes() -> Result<()> {
    let mut broker = TestBroker::start_opts(Db::Sqlite, &[], capturing()).await?;
    exercise(&mut broker).await?;
    let lines = broker.stderr_lines();
    assert!(
        lines.iter().any(|l| l.contains("listening")),
        "the text log said nothing: {lines:?}"
    );
    for line in &lines {
        assert!(!line.contains("\x1b["), "ANSI code on a pipe: {line:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_url_comes_from_a_file_and_its_password_stays_out_of_the_log() -> Result<()> {
    let mut broker = TestBroker::start_opts(
        Db::Postgres,
        &[],
        Options {
            capture_stderr: true,
            url_in_file: true,
            ..Options::default()
        },
    )
    .await?;
    let password = broker
        .db_password
        .clone()
        .context("the URL file has a password")?;
    // The broker serves from that database: a user the CLI adds there can open a tunnel.
    exercise(&mut broker).await?;
    let lines = broker.stderr_lines();
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains(&password)),
        "the password is in the log: {lines:?}"
    );
    Ok(())
}

/// The next notification the broker sends, within `DEADLINE`.
async fn next_notice(socket: &UnixDatagram) -> Result<String> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(DEADLINE, socket.recv(&mut buf))
        .await
        .context("no notification from the broker")??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_is_told_ready_reloading_and_stopping() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path)?;
    let mut broker = TestBroker::start_opts(
        Db::Sqlite,
        &[],
        Options {
            env: vec![("NOTIFY_SOCKET".into(), path.display().to_string())],
            ..Options::default()
        },
    )
    .await?;
    let ready = next_notice(&socket).await?;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // Ready means serving: the listeners answer.
    TcpStream::connect(("127.0.0.1", broker.http_port)).await?;

    broker.signal("HUP")?;
    let reloading = next_notice(&socket).await?;
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1")
            && reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let ready = next_notice(&socket).await?;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");

    broker.signal("TERM")?;
    let stopping = next_notice(&socket).await?;
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(broker.wait_exit(DEADLINE).await?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_and_refuses_new_ones() -> Result<()> {
    let grace = Duration::from_secs(10);
    let mut broker = TestBroker::start_with(Db::Sqlite, &["--shutdown-grace-secs", "10"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("drain").await?;
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    assert_eq!(get(&url).await?.status, 200);

    let before = origin.requests();
    let visitor = tokio::spawn({
        let url = format!("{url}/slow?ms=4000");
        async move { get(&url).await }
    });
    eventually("the slow request reaches the origin", DEADLINE, || async {
        (origin.requests() > before).then_some(())
    })
    .await?;
    let term = Instant::now();
    broker.signal("TERM")?;

    // New visitors are refused while the request is still in flight.
    let port = broker.http_port;
    eventually("new connections refused", DEADLINE, || async move {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await?;
    assert!(
        !visitor.is_finished(),
        "the slow response came before the listener closed; the test proves nothing"
    );
    // The owner is told, in their session, while it is still up.
    ssh.line("The broker is shutting down").await?;
    // The admin listener still answers, and says it is not ready: a load balancer's health
    // check sends new visitors elsewhere during the drain.
    let ready = get(&format!("http://127.0.0.1:{}/readyz", broker.api_port)).await?;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (
            503,
            "not ready: shutting down: draining the requests in flight\n"
        )
    );
    assert!(
        !visitor.is_finished(),
        "the slow response came before /readyz was asked; the test proves nothing"
    );

    let resp = visitor.await??;
    assert_eq!((resp.status, resp.body.as_str()), (200, "slow"));
    let status = broker.wait_exit(grace).await?;
    assert!(status.success(), "{status:?}");
    assert!(term.elapsed() < grace, "took {:?}", term.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_grace_is_a_deadline() -> Result<()> {
    let mut broker = TestBroker::start_with(Db::Sqlite, &["--shutdown-grace-secs", "1"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("too slow").await?;
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    let before = origin.requests();
    let visitor = tokio::spawn({
        let url = format!("{url}/slow?ms=15000");
        async move { get(&url).await }
    });
    eventually("the slow request reaches the origin", DEADLINE, || async {
        (origin.requests() > before).then_some(())
    })
    .await?;
    let term = Instant::now();
    broker.signal("TERM")?;
    let status = broker.wait_exit(DEADLINE).await?;
    let took = term.elapsed();
    assert!(status.success(), "{status:?}");
    if took > Duration::from_secs(8) {
        bail!("the broker waited {took:?} for a request past its 1 s grace");
    }
    // The visitor's connection was closed, not answered.
    assert!(visitor.await?.is_err());
    Ok(())
}

/// The shipped unit as systemd reads it: `systemd-analyze verify` says nothing (an unknown or
/// misspelt key is only a warning to systemd, so silence is the test), and the sandbox keeps
/// its "OK" exposure rating. The binary's path is the one just built, so verify can check it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_unit_verifies_clean_and_stays_sandboxed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/warren.service"),
    )?
    .replace("/usr/local/bin/broker", env!("CARGO_BIN_EXE_broker"));
    let path = dir.path().join("warren.service");
    std::fs::write(&path, unit)?;
    let verify = tokio::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .await
        .context("systemd-analyze (package systemd)")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
    let security = tokio::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .await?;
    let report = String::from_utf8_lossy(&security.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for warren.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .context("no exposure level")?
        .parse()?;
    assert!(level <= 2.0, "exposure {level}: {report}");
    Ok(())
}

/// `systemctl reload` after an edit: what cannot change live is named in the log, so nobody
/// believes it took effect, and the tunnel lives through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_names_the_settings_that_wait_for_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("broker.toml");
    std::fs::write(&file, "grace_secs = 600\nmax_tunnel_connections = 64\n")?;
    let file_arg = file.display().to_string();
    let broker = TestBroker::start_opts(Db::Sqlite, &["--config", &file_arg], capturing()).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(&broker, &key, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    std::fs::write(&file, "grace_secs = 5\nmax_tunnel_connections = 64\n")?;
    broker.signal("HUP")?;
    let line = eventually("the reload's warning", DEADLINE, || {
        let lines = broker.stderr_lines();
        async move {
            lines
                .into_iter()
                .find(|l| l.contains("take effect only at the next restart"))
        }
    })
    .await?;
    assert!(
        line.contains("grace") && !line.contains("max_tunnel_connections"),
        "{line}"
    );
    assert_eq!(get(&url).await?.body, "hello from A");
    Ok(())
}
