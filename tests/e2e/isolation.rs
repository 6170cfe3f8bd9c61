//! One tenant must not be able to hurt another through the SSH side: forwards that outlive
//! their session, names taken from under their holder, limits on what one tenant holds, and
//! what the server tells a client that has not proven who it is.

use anyhow::{Context, Result};

use crate::client::get;
use crate::harness::{DEADLINE, Db, Ssh, TestBroker, answers, eventually};
use crate::origin::Origin;

/// Forward lines printed so far.
fn urls(ssh: &Ssh) -> Vec<String> {
    ssh.out
        .lock()
        .map(|v| {
            v.iter()
                .filter(|l| l.contains(" -> forward "))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A further key for an existing user.
fn another_key(broker: &TestBroker, user: &str) -> Result<std::path::PathBuf> {
    let key = crate::harness::keygen(broker.dir.path(), user, "ed25519")?;
    broker.cli_ok(&["key", "add", user, &format!("{}.pub", key.display())])?;
    Ok(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_forward_is_refused_and_nothing_outlives_the_session() -> Result<()> {
    let broker = TestBroker::start_with(Db::Sqlite, &["--grace-secs", "1"]).await?;
    let key = broker.user_with_key("alice")?;
    let (a, b) = (Origin::start("A").await?, Origin::start("B").await?);
    let mut ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("80:{}", a.target()),
            "-R",
            &format!("80:{}", b.target()),
        ],
    )?;
    ssh.line("refused -R localhost:80: localhost:80 is forwarded already in this session")
        .await?;
    let url = ssh.url(0).await?;
    assert_eq!(urls(&ssh).len(), 1, "{}", ssh.all_output());
    let resp = get(&url).await?;
    assert_eq!((resp.status, resp.body.as_str()), (200, "hello from A"));
    ssh.kill().await;
    // Every route went with the session: after the grace period the name is unknown.
    answers("the name gone after grace", DEADLINE, &url, 404).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_twice_in_a_session_is_refused_and_cancelling_it_keeps_the_first() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let second = format!("chat.localhost:80:{}", origin.target());
    let (ssh, ctl_opt) = Ssh::spawn_master(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &format!("chat:80:{}", origin.target()),
            "-R",
            &second,
        ],
    )?;
    ssh.line("refused -R chat.localhost:80: \"chat\" is forwarded already in this session")
        .await?;
    assert_eq!(get(&broker.url("chat")).await?.status, 200);
    // Cancelling the refused spelling must not touch the live one. (OpenSSH's master answers
    // a cancel before the server does; a forward added after it is the barrier that shows the
    // server has handled the cancel.)
    Ssh::mux(broker.ssh_port, &ctl_opt, "cancel", &second).await?;
    let later = format!("later:80:{}", origin.target());
    let out = Ssh::mux(broker.ssh_port, &ctl_opt, "forward", &later).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ssh.line("http://later.").await?;
    let resp = get(&broker.url("chat")).await?;
    assert_eq!((resp.status, resp.body.as_str()), (200, "hello from A"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_random_name_cannot_be_claimed_by_another_tenant_on_sqlite() -> Result<()> {
    random_name_is_not_claimable(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_random_name_cannot_be_claimed_by_another_tenant_on_postgres() -> Result<()> {
    random_name_is_not_claimable(Db::Postgres).await
}

async fn random_name_is_not_claimable(db: Db) -> Result<()> {
    let broker = TestBroker::start_with(db, &[]).await?;
    let alice = broker.user_with_key("alice")?;
    let carol = broker.user_with_key("carol")?;
    let origin = Origin::start("alice").await?;
    let mut ssh = Ssh::spawn(&broker, &alice, &["-R", &format!("0:{}", origin.target())])?;
    let url = ssh.url(0).await?;
    let name = url
        .strip_prefix("http://")
        .and_then(|u| u.split('.').next())
        .context("random name in URL")?
        .to_owned();
    let claim = format!("{name}:80:{}", origin.target());
    let carol_claims = || {
        Ssh::spawn(
            &broker,
            &carol,
            &["-o", "ExitOnForwardFailure=no", "-R", &claim],
        )
    };
    let c = carol_claims()?;
    c.line(&format!("name {name:?} is in use by another user"))
        .await?;
    // The refusal wrote nothing: no reservation for carol.
    let names = broker.cli_ok(&["names"])?;
    assert!(
        !names.contains(&name),
        "refused claim left a reservation: {names}"
    );
    // Parked for alice: carol still cannot take it, and alice's reconnect gets it back.
    ssh.kill().await;
    answers("parked", DEADLINE, &url, 503).await?;
    let c2 = carol_claims()?;
    c2.line("is in use by another user").await?;
    let again = Ssh::spawn(&broker, &alice, &["-R", &format!("0:{}", origin.target())])?;
    assert_eq!(again.url(0).await?, url);
    assert_eq!(get(&url).await?.body, "hello from alice");
    assert!(!broker.cli_ok(&["names"])?.contains(&name));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_per_session_and_per_user_are_bounded() -> Result<()> {
    let broker = TestBroker::start_with(
        Db::Sqlite,
        &[
            "--max-forwards-per-session",
            "3",
            "--max-forwards-per-user",
            "4",
        ],
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    // OpenSSH drops a repeated identical -R, so each forward names another local port.
    let r = |i: u16| format!("0:127.0.0.1:{}", origin.port + i);
    let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
    let first = Ssh::spawn(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &r0,
            "-R",
            &r1,
            "-R",
            &r2,
            "-R",
            &r3,
        ],
    )?;
    first
        .line("this session already has 3 forwards, the most this broker allows (max_forwards_per_session)")
        .await?;
    first.url(2).await?;
    assert_eq!(urls(&first).len(), 3);
    // Another key of hers: the same key's random forwards would take over its own names
    // (the reconnect rule) rather than add new ones.
    let key = another_key(&broker, "alice")?;
    // A second session: one more fits under the per-user limit (4), the next does not; with
    // ExitOnForwardFailure the refusal makes ssh exit non-zero.
    let mut second = Ssh::spawn(&broker, &key, &["-R", &r0, "-R", &r1])?;
    let status = second.exit(DEADLINE).await?;
    assert!(!status.success(), "{}", second.all_output());
    second.err_line("remote port forwarding failed").await?;
    // Another tenant is not affected.
    let bob = broker.user_with_key("bob")?;
    let b = Ssh::spawn(&broker, &bob, &["-R", &r0])?;
    assert_eq!(get(&b.url(0).await?).await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_past_the_live_tunnel_limit_is_told_which_limit() -> Result<()> {
    let broker = TestBroker::start_with(Db::Sqlite, &["--max-forwards-per-user", "2"]).await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let r = |i: u16| format!("0:127.0.0.1:{}", origin.port + i);
    let one = Ssh::spawn(&broker, &key, &["-R", &r(0), "-R", &r(1)])?;
    one.url(1).await?;
    let key = another_key(&broker, "alice")?;
    let two = Ssh::spawn(
        &broker,
        &key,
        &["-o", "ExitOnForwardFailure=no", "-R", &r(2)],
    )?;
    two.line("you already have 2 live tunnels, the most this broker allows per user (max_forwards_per_user)")
        .await?;
    assert!(urls(&two).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_ports_per_user_are_bounded_including_parked_ones() -> Result<()> {
    // Its own slice of ports, away from https.rs's 21000-21999, so parallel tests do not meet.
    let base = 23000 + (rand::random::<u16>() % 4000);
    let range = format!("{base}-{}", base + 20);
    let broker = TestBroker::start_with(
        Db::Sqlite,
        &["--max-tcp-ports-per-user", "1", "--tcp-ports", &range],
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let t = format!("tcp:0:{}", origin.target());
    let t2 = format!("tcp:0:127.0.0.1:{}", origin.port + 1);
    let mut ssh = Ssh::spawn(
        &broker,
        &key,
        &["-o", "ExitOnForwardFailure=no", "-R", &t, "-R", &t2],
    )?;
    ssh.line("you already hold 1 TCP ports, the most this broker allows per user (max_tcp_ports_per_user)")
        .await?;
    let url = ssh.url(0).await?;
    assert!(url.starts_with("tcp://"), "{url}");
    ssh.kill().await;
    // The port is parked for alice (the grace period): a new session may not take a second.
    let again = Ssh::spawn(
        &broker,
        &key,
        &["-o", "ExitOnForwardFailure=no", "-R", &t, "-R", &t2],
    )?;
    // The first forward gets the parked port back (sticky), the second is refused.
    assert_eq!(again.url(0).await?, url);
    again.line("(max_tcp_ports_per_user)").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_held_and_claims_per_hour_are_bounded() -> Result<()> {
    let broker = TestBroker::start_with(
        Db::Sqlite,
        &["--max-names-per-user", "2", "--max-claims-per-hour", "3"],
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let named = |n: &str| format!("{n}:80:{}", origin.target());
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &named("one"),
            "-R",
            &named("two"),
            "-R",
            &named("three"),
        ],
    )?;
    ssh.line("refused -R three:80: you already hold 2 names, the most this broker allows per user (max_names_per_user)")
        .await?;
    assert!(!broker.cli_ok(&["names"])?.contains("three"));
    drop(ssh);
    // Releasing makes room under the held limit, but the hourly claim budget (3) is spent
    // after one more claim.
    broker.cli_ok(&["release", "one"])?;
    broker.cli_ok(&["release", "two"])?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &[
            "-o",
            "ExitOnForwardFailure=no",
            "-R",
            &named("four"),
            "-R",
            &named("five"),
        ],
    )?;
    ssh.line("refused -R five:80: you claimed 3 names within the last hour, the most this broker allows (max_claims_per_hour)")
        .await?;
    let names = broker.cli_ok(&["names"])?;
    assert!(names.contains("four") && !names.contains("five"), "{names}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_users_name_is_told_only_to_the_key_holder() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    broker.cli_ok(&["user", "disable", "alice"])?;
    // Someone with only alice's public key (it is public: GitHub lists it).
    let stranger_dir = tempfile::tempdir()?;
    let pub_only = stranger_dir.path().join("stranger.pub");
    std::fs::copy(format!("{}.pub", key.display()), &pub_only)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pub_only, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut stranger = Ssh::spawn(&broker, &pub_only, &["-N"])?;
    let status = stranger.exit(DEADLINE).await?;
    assert!(!status.success());
    stranger.any_line("Permission denied").await?;
    let said = stranger.all_output();
    assert!(!said.contains("alice"), "the user's name leaked: {said}");
    assert!(
        !said.contains("disabled"),
        "the account state leaked: {said}"
    );
    // The key's holder is told why.
    let holder = Ssh::spawn(&broker, &key, &["-N"])?;
    holder.any_line("user \"alice\" is disabled").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_want_a_reply_get_one() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let ssh = |extra: &[&str]| {
        let mut cmd = Ssh::command(broker.ssh_port, &key, extra);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    // A subsystem (sftp) is refused at once: ssh says so and exits, instead of hanging.
    let mut sftp = ssh(&["-s"]);
    let out = tokio::time::timeout(DEADLINE, sftp.arg("sftp").output())
        .await
        .context("ssh -s hung: the subsystem request got no reply")??;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("subsystem request failed"), "{err}");
    // X11 forwarding (`ssh -Y`): refused with a reply, so ssh warns and the session goes on.
    // Trusted (-Y): without xauth on the box OpenSSH still asks, with fake cookie data.
    let mut x11 = ssh(&["-Y"]);
    let mut child = x11.env("DISPLAY", ":93").spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut rd = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(l)) = rd.next_line().await {
            sink.lock().expect("lock").push(l);
        }
    });
    eventually("X11 refusal reported by ssh", DEADLINE, || {
        let found = lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains("X11 forwarding request failed"));
        async move { found.then_some(()) }
    })
    .await
    .with_context(|| format!("ssh -X said: {:?}", lines.lock().map(|l| l.clone())))?;
    // ...and the session is still up (the refusal did not end it).
    assert!(
        child.try_wait()?.is_none(),
        "ssh -X exited after the refusal"
    );
    let _ = child.kill().await;
    Ok(())
}
