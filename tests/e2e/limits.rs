//! Limits on what one stranger or one tunnel can take: failed SSH authentications per address
//! (`ssh_auth_failures_per_minute_per_ip`) and bandwidth per tunnel (`max_tunnel_bytes_per_sec`).
//! As in flood.rs, loopback is all of 127.0.0.0/8: other source addresses are 127.0.0.2 and
//! up, and the brokers exempt nobody that takes part.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::flood::metric;
use crate::harness::{Db, Ssh, TestBroker, keygen};
use crate::origin::Origin;

/// An address nobody in these tests connects from: the default exemption (127.0.0.1) is off.
const NOBODY: &str = "127.0.0.9";
const REFUSED: &str = "Warren: too many failed authentications from your address (ssh_auth_failures_per_minute_per_ip); try again in ";

fn limit_hits(limit: &str) -> String {
    format!("warren_limit_hits_total{{limit=\"{limit}\"}}")
}

/// `ssh ARGS -i KEY … help` (a command that exits), stdin closed: its exit status and stderr.
async fn run_ssh(
    broker: &TestBroker,
    key: &std::path::Path,
    args: &[&str],
) -> Result<(bool, String)> {
    let out = crate::harness::Ssh::command(broker.ssh_port, key, args)
        .arg("help")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn broker_with_auth_limit(max: &str) -> Result<TestBroker> {
    TestBroker::start_with(
        Db::Sqlite,
        &[
            "--limit-exempt",
            NOBODY,
            // An unknown key would otherwise be offered a pairing code and wait (pairing.rs);
            // such a key counts all the same, but the client would not exit.
            "--pairing",
            "false",
            "--ssh-auth-failures-per-minute-per-ip",
            max,
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_failed_too_often_is_refused_even_with_a_good_key_and_others_log_in()
-> Result<()> {
    let broker = broker_with_auth_limit("3").await?;
    let alice = broker.user_with_key("alice")?;
    // Before any failure the owner logs in from 127.0.0.1.
    let (ok, err) = run_ssh(&broker, &alice, &[]).await?;
    assert!(ok, "{err}");
    let stranger = keygen(broker.dir.path(), "stranger", "ed25519")?;
    for i in 0..2 {
        let (ok, err) = run_ssh(&broker, &stranger, &[]).await?;
        assert!(
            !ok && err.contains("is not registered"),
            "attempt {i}: {err}"
        );
        assert!(
            !err.contains(REFUSED),
            "attempt {i} is within the limit: {err}"
        );
    }
    // The third failure reaches the limit: that client is told at once (nothing more refused
    // yet, so the limit-hit count stays 0).
    let (ok, err) = run_ssh(&broker, &stranger, &[]).await?;
    assert!(!ok && err.contains(REFUSED), "attempt 2: {err}");
    assert_eq!(
        metric(&broker, &limit_hits("ssh_auth_failures_per_minute_per_ip")).await?,
        0.0
    );
    assert_eq!(
        metric(
            &broker,
            "warren_ssh_auth_failures_total{reason=\"unknown_key\"}"
        )
        .await?,
        3.0
    );
    // Now a registered key from the same address is refused at once, before any key
    // exchange, with the reason (`-v` shows lines sent before the version).
    let (ok, err) = run_ssh(&broker, &alice, &["-v"]).await?;
    assert!(!ok, "{err}");
    assert!(
        err.contains(REFUSED) && err.contains("Connection closed by remote host"),
        "{err}"
    );
    assert!(
        !err.contains("Authenticated to"),
        "no authentication was even tried: {err}"
    );
    assert_eq!(
        metric(&broker, &limit_hits("ssh_auth_failures_per_minute_per_ip")).await?,
        1.0
    );
    // Another address is not affected.
    let (ok, err) = run_ssh(&broker, &alice, &["-b", "127.0.0.2"]).await?;
    assert!(ok, "from 127.0.0.2: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_guessed_in_one_connection_count_and_the_good_one_after_them_is_refused_with_the_reason()
-> Result<()> {
    let broker = broker_with_auth_limit("3").await?;
    let alice = broker.user_with_key("alice")?;
    let guesses: Vec<String> = (0..3)
        .map(|i| keygen(broker.dir.path(), &format!("guess{i}"), "ed25519"))
        .map(|k| k.map(|p| p.display().to_string()))
        .collect::<Result<_>>()?;
    // OpenSSH offers the `-i` keys in order: three unknown ones, then alice's.
    let mut args = vec!["-b", "127.0.0.3"];
    for g in &guesses {
        args.extend(["-i", g.as_str()]);
    }
    let (ok, err) = run_ssh(&broker, &alice, &args).await?;
    assert!(!ok, "{err}");
    // Shown without `-v`: keyboard-interactive's instructions.
    assert!(err.contains(REFUSED), "{err}");
    assert_eq!(
        metric(
            &broker,
            "warren_ssh_auth_failures_total{reason=\"unknown_key\"}"
        )
        .await?,
        3.0
    );
    // Alice's key, offered after the guesses, is the one thing refused by the limit.
    assert_eq!(
        metric(&broker, &limit_hits("ssh_auth_failures_per_minute_per_ip")).await?,
        1.0
    );
    // The address stays refused for its minute; 127.0.0.1 logs in.
    let (ok, err) = run_ssh(&broker, &alice, &["-v", "-b", "127.0.0.3"]).await?;
    assert!(!ok && err.contains(REFUSED), "{err}");
    let (ok, err) = run_ssh(&broker, &alice, &[]).await?;
    assert!(ok, "{err}");
    Ok(())
}

/// `max_tunnel_bytes_per_sec` in the bandwidth tests, and the download they time.
pub(crate) const RATE: u64 = 200_000;
pub(crate) const SIZE: usize = 1_000_000;
const HELD: &str = "held to 200000 bytes/s (max_tunnel_bytes_per_sec)";

/// `GET /bytes/SIZE` over a plain socket to `port` (the HTTP listener with `host`, or a raw TCP
/// tunnel's port): the body's length and how long the whole response took.
pub(crate) async fn download(port: u16, host: &str) -> Result<(usize, Duration)> {
    let started = Instant::now();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await?;
    sock.write_all(
        format!("GET /bytes/{SIZE} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut all = Vec::with_capacity(SIZE + 1024);
    tokio::time::timeout(Duration::from_secs(60), sock.read_to_end(&mut all))
        .await
        .context("the download did not end within 60 s")??;
    let took = started.elapsed();
    let head = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no response head")?;
    let status = String::from_utf8_lossy(all.get(..12).unwrap_or_default()).into_owned();
    assert_eq!(
        status,
        "HTTP/1.1 200",
        "{}",
        String::from_utf8_lossy(&all[..head])
    );
    Ok((all.len() - head - 4, took))
}

/// One broker (with `extra` flags), an owner with an HTTP tunnel and a raw TCP tunnel to the
/// same origin; the time of a 1 MB download through each.
async fn time_both(extra: &[&str]) -> Result<(Duration, Duration, Ssh, TestBroker)> {
    let broker = TestBroker::start_with(Db::Sqlite, extra).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("bw").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-R",
            &format!("bw:80:{}", origin.target()),
            "-R",
            &format!("tcp:0:{}", origin.target()),
        ],
    )?;
    ssh.url(0).await?;
    let tcp_url = ssh.url(1).await?;
    let tcp_port: u16 = tcp_url.rsplit(':').next().context("port")?.parse()?;
    let (http_len, http) = download(
        broker.http_port,
        &format!("bw.localhost:{}", broker.http_port),
    )
    .await?;
    let (tcp_len, tcp) = download(tcp_port, "whatever").await?;
    assert_eq!((http_len, tcp_len), (SIZE, SIZE));
    drop(origin);
    Ok((http, tcp, ssh, broker))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_held_to_its_bandwidth_serves_slower_and_its_owner_is_told_once() -> Result<()> {
    let (free_http, free_tcp, free_ssh, _free) = time_both(&[]).await?;
    let (held_http, held_tcp, ssh, broker) =
        time_both(&["--max-tunnel-bytes-per-sec", &RATE.to_string()]).await?;
    println!(
        "1 MB download: HTTP tunnel {free_http:?} without a limit, {held_http:?} at {RATE} B/s; \
         TCP tunnel {free_tcp:?} without, {held_tcp:?} at {RATE} B/s"
    );
    // At 200 kB/s after a one-second burst, 1 MB takes about 4 s; what is asserted is the limit.
    for (what, took) in [("HTTP", held_http), ("TCP", held_tcp)] {
        assert!(
            took >= Duration::from_secs(3),
            "{what} at {RATE} B/s took {took:?}"
        );
    }
    for (what, took) in [("HTTP", free_http), ("TCP", free_tcp)] {
        assert!(
            took < Duration::from_secs(2),
            "{what} without a limit took {took:?}"
        );
    }
    // One line per tunnel for its whole download, not one per chunk.
    ssh.line(&format!("bw download {HELD}")).await?;
    ssh.line(&format!("download {HELD}")).await?;
    let told: Vec<String> = ssh
        .out
        .lock()
        .map(|l| l.iter().filter(|l| l.contains(HELD)).cloned().collect())
        .unwrap_or_default();
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told.iter().any(|l| l.contains("tcp:")), "{told:?}");
    let unheld = free_ssh.all_output();
    assert!(!unheld.contains("max_tunnel_bytes_per_sec"), "{unheld}");
    assert_eq!(
        metric(&broker, &limit_hits("max_tunnel_bytes_per_sec")).await?,
        2.0
    );
    Ok(())
}

/// A 1 MB download through an HTTP tunnel `name` of the owner with `key`: how long it took,
/// and the owner's session (for what it was told).
async fn time_http(broker: &TestBroker, key: &Path, name: &str) -> Result<(Duration, Ssh)> {
    let origin = Origin::start(name).await?;
    let ssh = Ssh::spawn(
        broker,
        key,
        &["-R", &format!("{name}:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    let (len, took) = download(
        broker.http_port,
        &format!("{name}.localhost:{}", broker.http_port),
    )
    .await?;
    assert_eq!(len, SIZE);
    Ok((took, ssh))
}

/// An admin's per-user bandwidth quota holds that owner's tunnels and no one else's, names
/// itself in the owner's notice, and is refused out of range naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bandwidth_quota_holds_one_owners_tunnels_and_not_anothers() -> Result<()> {
    let broker = TestBroker::start().await?;
    let alice = broker.user_with_key("alice")?;
    let bob = broker.user_with_key("bob")?;
    let out = broker.cli_ok(&[
        "user",
        "quota",
        "alice",
        "--tunnel-bytes-per-sec",
        &RATE.to_string(),
    ])?;
    assert!(
        out.contains(&format!("max_tunnel_bytes_per_sec {RATE}")),
        "{out}"
    );
    let bad = broker.cli(&["user", "quota", "bob", "--tunnel-bytes-per-sec=-1"])?;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("max_tunnel_bytes_per_sec"),
        "{err}"
    );
    let (held, alice_ssh) = time_http(&broker, &alice, "qa").await?;
    let (free, bob_ssh) = time_http(&broker, &bob, "qb").await?;
    println!("1 MB download: {held:?} at alice's quota of {RATE} B/s, {free:?} for bob");
    assert!(
        held >= Duration::from_secs(3),
        "alice's tunnel took {held:?}"
    );
    assert!(free < Duration::from_secs(2), "bob's tunnel took {free:?}");
    alice_ssh
        .line(&format!(
            "qa download held to {RATE} bytes/s (quota max_tunnel_bytes_per_sec)"
        ))
        .await?;
    let unheld = bob_ssh.all_output();
    assert!(!unheld.contains("max_tunnel_bytes_per_sec"), "{unheld}");
    // Back to the broker's setting (none here): alice's next tunnel is free.
    let out = broker.cli_ok(&[
        "user",
        "quota",
        "alice",
        "--tunnel-bytes-per-sec",
        "default",
    ])?;
    assert!(out.contains("max_tunnel_bytes_per_sec 0"), "{out}");
    drop(alice_ssh);
    let (again, _ssh) = time_http(&broker, &alice, "qc").await?;
    assert!(
        again < Duration::from_secs(2),
        "alice's tunnel took {again:?} after the reset"
    );
    Ok(())
}
