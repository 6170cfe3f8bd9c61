//! Bodies and upgrades: WebSocket round trips, and 200 MB each way with flat broker memory.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Ssh, TestBroker};
use crate::origin::{Origin, chunk, pattern_sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_tunnel() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("ws:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    let url = format!("ws://ws.localhost:{}/ws", broker.http_port);
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", broker.http_port)).await?;
    let (mut ws, resp) = tokio_tungstenite::client_async(url.as_str(), sock).await?;
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await?;
        let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await?
            .context("closed")??;
        assert_eq!(got.into_text()?.as_str(), text);
    }
    let blob: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    ws.send(Message::binary(blob.clone())).await?;
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await?
        .context("closed")??;
    assert_eq!(got.into_data().as_ref(), blob.as_slice());
    // No idle cut: quiet for a while, then still alive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ws.send(Message::text("still here")).await?;
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await?
        .context("closed")??;
    assert_eq!(got.into_text()?.as_str(), "still here");
    ssh.line("GET /ws 101").await?;
    Ok(())
}

const BIG: u64 = 200 * 1024 * 1024;

/// `GET /bytes/{BIG}` on a visitor connection of its own; returns once the head is in, the body
/// unread (a test may leave it so).
async fn big_download(broker: &TestBroker, host: &str) -> Result<hyper::Response<Incoming>> {
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", broker.http_port)).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("/bytes/{BIG}"))
        .header("host", host)
        .body(Empty::<Bytes>::new())?;
    Ok(send.send_request(req).await?)
}

/// Reads a whole body: its length and hex SHA-256.
async fn length_and_sha256(mut body: Incoming) -> Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            n += d.len() as u64;
            h.update(d);
        }
    }
    Ok((n, hex::encode(h.finalize())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_megabytes_each_way_arrive_intact_with_flat_memory() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("big:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    let host = format!("big.localhost:{}", broker.http_port);
    // Warm up, then take the baseline.
    assert_eq!(
        crate::client::get(&format!("http://{host}/")).await?.status,
        200
    );
    let (rss_before, _) = broker.memory_kib()?;

    // Download.
    let resp = big_download(&broker, &host).await?;
    assert_eq!(resp.status(), 200);
    let (n, sha) = length_and_sha256(resp.into_body()).await?;
    assert_eq!(n, BIG);
    let expected = pattern_sha256(BIG);
    assert_eq!(sha, expected, "download corrupted");

    // Upload, streamed.
    let stream = futures::stream::unfold(0u64, |off| async move {
        if off >= BIG {
            return None;
        }
        let len = (BIG - off).min(256 * 1024) as usize;
        Some((
            Ok::<_, std::convert::Infallible>(Frame::data(chunk(off, len))),
            off + len as u64,
        ))
    });
    let req = hyper::Request::post("/upload")
        .header("host", &host)
        .header("content-length", BIG)
        .body(StreamBody::new(stream))?;
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", broker.http_port)).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock)).await?;
    tokio::spawn(conn);
    let resp = send.send_request(req).await?;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(resp.into_body().collect().await?.to_bytes().to_vec())?;
    assert_eq!(text, format!("{BIG} {expected}"), "upload corrupted");

    let (_, peak) = broker.memory_kib()?;
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "broker RSS before {} MiB, peak {} MiB",
        rss_before / 1024,
        peak / 1024
    );
    assert!(
        growth_mib < 64,
        "broker memory grew by {growth_mib} MiB moving 400 MB"
    );
    Ok(())
}

/// One visitor who stops reading must not stall the owner's other visitors. russh (0.65) handed
/// channel data to a bounded queue from the session loop and re-opened the SSH window on receipt,
/// so one full queue stopped every channel of the session. Our patched russh (vendor/russh)
/// re-opens a channel's window as its reader consumes: the stalled channel stops its own sender.
/// The stalled visitor, once it reads again, gets every byte, in order, and the broker holds
/// no more than the window meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_who_stops_reading_does_not_stall_the_others() -> Result<()> {
    let broker = TestBroker::start().await?;
    let key = broker.user_with_key("alice")?;
    let origin = Origin::start("A").await?;
    let ssh = Ssh::spawn(
        &broker,
        &key,
        &["-R", &format!("hol:80:{}", origin.target())],
    )?;
    ssh.url(0).await?;
    let host = format!("hol.localhost:{}", broker.http_port);
    assert_eq!(crate::client::get(&broker.url("hol")).await?.status, 200);
    let (rss_before, _) = broker.memory_kib()?;

    // Visitor A asks for 200 MB, takes the head, and then does not read the body.
    let resp = big_download(&broker, &host).await?;
    assert_eq!(resp.status(), 200);

    // Meanwhile visitor B, on the same tunnel, is answered again and again for two seconds.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    let mut answered = 0;
    while std::time::Instant::now() < until {
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            crate::client::get(&broker.url("hol")),
        )
        .await;
        assert!(
            matches!(&resp, Ok(Ok(r)) if r.status == 200),
            "B stalled behind A after {answered} answers: {:?}",
            resp.as_ref().map(|r| r.as_ref().map(|r| r.status))
        );
        answered += 1;
    }
    let (_, peak) = broker.memory_kib()?;
    let held_mib = peak.saturating_sub(rss_before) / 1024;
    assert!(
        held_mib < 64,
        "the broker buffered {held_mib} MiB for a visitor who does not read"
    );

    // A reads again and gets all 200 MB, in order.
    let (n, sha) = length_and_sha256(resp.into_body()).await?;
    assert_eq!(n, BIG);
    assert_eq!(sha, pattern_sha256(BIG), "A's download corrupted");
    Ok(())
}
