//! Memory that must not grow with what the broker has done: only with what it holds now.

use std::time::Duration;

use anyhow::{Result, ensure};

use crate::client::get_with;
use crate::harness::{Db, Ssh, TestBroker, eventually, serve_as};

/// `n` visitor requests to `/close`, eight at a time: a new visitor connection each
/// (`Connection: close`), and an origin that closes too, so each request opens and closes an
/// SSH channel (a pooled upstream connection would otherwise carry them all).
async fn closing_requests(url: &str, n: usize) -> Result<()> {
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let url = url.to_owned();
        workers.spawn(async move {
            for i in (w..n).step_by(8) {
                let resp = get_with(&url, &[("connection", "close")]).await?;
                ensure!(resp.status == 200, "request {i}: {}", resp.status);
                ensure!(resp.body == "hello from A", "request {i}: {}", resp.body);
            }
            Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

/// Every closed channel used to stay in russh's session map: when the origin closes, OpenSSH
/// sends EOF, the broker closes the channel, and OpenSSH's CHANNEL_CLOSE in reply was dropped
/// before it reached the map (vendor/russh/PATCHES.md). ~1.2 KiB per request, for as long as
/// the owner stayed connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_visitor_connections_leave_nothing_behind() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let (_origin, _ssh, url) = serve_as(&broker, &key, "mem", "A").await?;
    let url = format!("{url}/close");
    // Warm up: the allocator's arenas, the request log's ring and the pools reach their size.
    closing_requests(&url, 4_000).await?;
    let (before, _) = broker.memory_kib()?;
    let requests = 20_000;
    closing_requests(&url, requests).await?;
    let (after, _) = broker.memory_kib()?;
    let per_request = after.saturating_sub(before) * 1024 / requests as u64;
    eprintln!(
        "broker RSS {before} KiB → {after} KiB over {requests} requests: {per_request} B each"
    );
    assert!(
        per_request < 200,
        "the broker kept {per_request} B per closed visitor connection ({before} → {after} KiB)"
    );
    Ok(())
}

/// What 300 tunnels' sessions freed goes back to the kernel once they are gone: the broker
/// trims the allocator's free pages every 10 s (broker/src/malloc.rs), where glibc alone
/// returns only the top of each heap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_gone_tunnels_is_given_back() -> Result<()> {
    let broker = TestBroker::start_with(
        Db::Sqlite,
        &[
            "--max-forwards-per-user",
            "1000",
            "--max-names-per-user",
            "1000",
        ],
    )
    .await?;
    let key = broker.user_with_key("alice")?;
    let origin = crate::origin::Origin::start("A").await?;
    let (before, _) = broker.memory_kib()?;
    let mut tunnels = Vec::new();
    // Twenty at a time: the per-address cap on logins in progress stays out of it.
    for _ in 0..15 {
        let start = tunnels.len();
        for _ in 0..20 {
            let forward = format!("80:{}", origin.target());
            tunnels.push(Ssh::spawn(&broker, &key, &["-R", &forward])?);
        }
        for ssh in &tunnels[start..] {
            ssh.url(0).await?;
        }
    }
    let (held, _) = broker.memory_kib()?;
    drop(tunnels);
    // Half of what the tunnels took, at least, within a trim period or two. What stays is the
    // parked names and sticky entries of the grace period, and heap the allocator keeps.
    let target = before + (held - before) / 2;
    let gone = std::time::Instant::now();
    let low = eventually("RSS to fall by half", Duration::from_secs(30), || {
        let rss = broker.memory_kib().map(|m| m.0).unwrap_or(u64::MAX);
        async move { (rss < target).then_some(rss) }
    })
    .await;
    let (now, _) = broker.memory_kib()?;
    eprintln!(
        "broker RSS before {before} KiB, 300 tunnels {held} KiB, {now} KiB {:.1} s after they left",
        gone.elapsed().as_secs_f64()
    );
    ensure!(
        low.is_ok(),
        "RSS stayed at {now} KiB after 300 tunnels left (before them {before} KiB, with them {held} KiB)"
    );
    Ok(())
}
