//! Memory that must not grow with what the broker has done: only with what it holds now.

use anyhow::{Result, ensure};

use crate::client::get_with;
use crate::harness::{TestBroker, serve_as};

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
