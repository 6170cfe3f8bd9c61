//! The visitor: plain HTTP/1.1 over a fresh TCP connection, and raw bytes for hostile input.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// GET `url` (`http://HOST:PORT/path`; `*.localhost` goes to 127.0.0.1).
pub async fn get(url: &str) -> Result<Resp> {
    get_with(url, &[]).await
}

pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Result<Resp> {
    let uri: hyper::Uri = url.parse()?;
    let port = uri.port_u16().unwrap_or(80);
    let host = uri.authority().context("authority")?.as_str().to_owned();
    let sock = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock)).await?;
    tokio::spawn(conn);
    let mut req =
        Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(30),
        send.send_request(req.body(Empty::<Bytes>::new())?),
    )
    .await
    .context("response timed out")??;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Writes `bytes` to the HTTP port and returns what comes back until the server closes or
/// `wait` passes.
pub async fn raw(port: u16, bytes: &[u8], wait: Duration) -> Result<String> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await?;
    sock.write_all(bytes).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, sock.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The status code of a raw HTTP response, if it is one.
pub fn status_of(raw: &str) -> Option<u16> {
    let rest = raw
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| raw.strip_prefix("HTTP/1.0 "))?;
    rest.get(..3)?.parse().ok()
}
